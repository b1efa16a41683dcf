from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_integrations import CrossEncoderReranker, M3Index, M3Model, M3ScoreReranker
from tests.common import INDEX_TEXTS

QUERY = "capital of France"
PASSAGES = [*INDEX_TEXTS[:6], "capital " * 200, ""]


@pytest.fixture(scope="module")
def cross_encoder(tiny_reranker_checkpoint: str) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", max_length=48, batch_size=3)


def naive_cross_scores(reranker: CrossEncoderReranker, query: str, passages: list[str]) -> list[float]:
    out = []
    for passage in passages:
        # Lists, not strings: a lone ("q", "") call drops the empty second text instead of pairing it.
        enc = reranker.tokenizer(
            [query], [passage], truncation="only_second", max_length=48, return_tensors="pt"
        )
        with torch.no_grad():
            out.append(float(reranker.model(**enc).logits[0, 0]))
    return out


def test_cross_encoder_equals_naive_per_pair_forward(cross_encoder: CrossEncoderReranker) -> None:
    scores = cross_encoder.score(QUERY, PASSAGES)
    assert scores.dtype == np.float32 and scores.shape == (len(PASSAGES),)
    # Logits are not bounded by 1: relative above 1, absolute near 0.
    np.testing.assert_allclose(
        scores, naive_cross_scores(cross_encoder, QUERY, PASSAGES), rtol=1e-5, atol=1e-5
    )
    assert len(set(np.round(scores, 5).tolist())) > 3  # a random model still separates passages
    ranked = cross_encoder.rerank(QUERY, PASSAGES, top_n=3)
    assert [i for i, _ in ranked] == np.argsort(-scores, kind="stable")[:3].tolist()
    assert cross_encoder.score(QUERY, []).shape == (0,)


def test_cross_encoder_normalize_and_long_query(tiny_reranker_checkpoint: str) -> None:
    reranker = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", max_length=48, normalize=True)
    raw = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu", max_length=48)
    np.testing.assert_allclose(
        reranker.score(QUERY, PASSAGES), 1 / (1 + np.exp(-raw.score(QUERY, PASSAGES))), atol=1e-6
    )
    assert np.isfinite(raw.score("capital " * 100, PASSAGES[:2])).all()  # query cut, passage kept
    with pytest.raises(ValueError, match="query is empty"):
        raw.score(" ", PASSAGES)


def test_m3_score_reranker_equals_compute_score(tiny_model: M3Model) -> None:
    reranker = M3ScoreReranker(tiny_model, weights=(0.4, 0.2, 0.4))
    signals = reranker.score_all(QUERY, PASSAGES)
    reference = tiny_model.compute_score([(QUERY, p) for p in PASSAGES])
    # The query encoded alone vs in (query, passage) batches: the sparse score (3.4 here) sums products of
    # lexical weights that each carry ~1e-5 of float32 noise (tests/common.py), so relative tolerances.
    for name in ("dense", "sparse", "colbert"):
        np.testing.assert_allclose(signals[name], reference[name], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(signals["fused"], reference["colbert+sparse+dense"], rtol=1e-4, atol=1e-5)
    # Exact on purpose: score() is score_all()'s fused column, the same computation.
    np.testing.assert_allclose(reranker.score(QUERY, PASSAGES), signals["fused"])
    with pytest.raises(ValueError, match="weights"):
        M3ScoreReranker(tiny_model, weights=(1, 1))


def test_search_with_cross_encoder_rerank(tiny_model: M3Model, cross_encoder: CrossEncoderReranker) -> None:
    index = M3Index(tiny_model)
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    fused = index.search(QUERY, k=6)
    hits = index.search(QUERY, k=3, rerank=cross_encoder, rerank_top_n=6)
    expected = cross_encoder.score(QUERY, [h.text for h in fused])
    order = np.argsort(-expected, kind="stable")[:3]
    assert [h.id for h in hits] == [fused[i].id for i in order]
    for hit, i in zip(hits, order, strict=True):
        # The same texts in the same order through the same cross-encoder batches: identical up to 1e-6.
        assert hit.score == hit.scores["rerank"] == pytest.approx(float(expected[i]))
        assert hit.scores["dense"] == fused[i].scores["dense"]


def test_cross_encoder_bad_input_is_named(tiny_reranker_checkpoint: str, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CrossEncoderReranker(str(tmp_path / "no-reranker"), device="cpu")
    reranker = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu")
    with pytest.raises(TypeError, match=r"passages\[1\] must be a string, got NoneType"):
        reranker.score("query", ["fine", None])
    assert reranker.score("query", []).shape == (0,)
