"""``M3Index.score_candidates`` and ``CandidateScores.rank``: per-signal scores, fused without rescoring."""

from __future__ import annotations

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.index import FUSION_METHODS, CandidateScores
from tests.common import INDEX_TEXTS, naive_fuse, naive_m3_scores

QUERIES = ["capital of France", "hello world", "서울 수도", "vector databases and numpy"]
# Configurations that share one candidate set (the dense and lexical first stages), as the quality report's.
SHARED = [
    {"mode": "colbert"},
    *({"mode": "hybrid", "fusion": f} for f in FUSION_METHODS),
    *({"mode": "hybrid", "fusion": f, "weights": (1.0, 1.0, 1.0)} for f in FUSION_METHODS),
    *(
        {"mode": "dense+sparse", "fusion": f, "weights": {"dense": 0.4, "sparse": 0.2}}
        for f in FUSION_METHODS
    ),
]


@pytest.fixture(scope="module")
def index(tiny_model: M3Model) -> M3Index:
    index = M3Index(tiny_model)
    index.add(
        INDEX_TEXTS,
        ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))],
        metadatas=[{"even": i % 2 == 0} for i in range(len(INDEX_TEXTS))],
    )
    return index


@pytest.fixture(scope="module")
def bm25_index(tiny_checkpoint: str) -> M3Index:
    """An index of an encoder without M3's heads: BM25 over words, ``confidence`` fusion by default."""
    model = M3Model(tiny_checkpoint, device="cpu", allow_missing_heads=True)
    model.sparse_linear = None
    index = M3Index(model, bm25_tokenizer="word")
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    index.delete(["doc3"])  # a tombstone among the rows: positions and ids must stay paired
    return index


def test_signals_are_the_naive_scores_of_every_candidate(tiny_model: M3Model, index: M3Index) -> None:
    for query in QUERIES:
        naive = naive_m3_scores(tiny_model, query, INDEX_TEXTS)
        scored = index.score_candidates(query, k=5, mode="hybrid", candidates=None)
        assert scored.ids == tuple(f"doc{i}" for i in range(len(INDEX_TEXTS)))  # insertion order
        assert scored.positions.tolist() == list(range(len(INDEX_TEXTS)))
        assert set(scored.signals) == {"dense", "sparse", "colbert"}
        for signal, values in scored.signals.items():
            assert values.dtype == np.float32
            # Sparse scores exceed 1: relative above 1, absolute near 0.
            np.testing.assert_allclose(values, naive[signal], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_rank_with_other_options_is_what_search_returns(index: M3Index, query: str) -> None:
    (encoded,) = index.encode_queries([query])
    for candidates in (3, None):  # a first stage that leaves documents out, and every document
        scored = index.score_candidates(encoded, k=4, mode="hybrid", candidates=candidates)
        if candidates is not None:
            assert len(scored) < len(INDEX_TEXTS)
        for kwargs in SHARED:
            options = index.search_options(4, candidates=candidates, **kwargs)
            hits = index.search_encoded(encoded, k=4, candidates=candidates, **kwargs)
            ranked = scored.rank(options)
            assert [i for i, _ in ranked] == [h.id for h in hits], kwargs
            np.testing.assert_allclose([s for _, s in ranked], [h.score for h in hits], rtol=1e-6, atol=1e-7)


def test_fuse_follows_the_fusion_formulas(index: M3Index) -> None:
    scored = index.score_candidates("capital of France", k=5, mode="hybrid", candidates=None)
    columns = {s: v.astype(np.float64).tolist() for s, v in scored.signals.items()}
    for fusion in ("weighted", "rrf", "relative_score"):
        options = index.search_options(5, mode="hybrid", fusion=fusion, candidates=None)
        expected = naive_fuse(columns, dict(options.weights), fusion)
        np.testing.assert_allclose(scored.fuse(options), expected, rtol=1e-5, atol=1e-6)


def test_bm25_index_with_confidence_and_a_tombstone(bm25_index: M3Index) -> None:
    for query in [*QUERIES, "Paris qqa qqb qqc qqd"]:  # the last: one known word of five
        (encoded,) = bm25_index.encode_queries([query])
        scored = bm25_index.score_candidates(encoded, k=5, mode="hybrid", candidates=4)
        assert "doc3" not in scored.ids
        assert set(scored.signals) == {"dense", "bm25", "colbert"}
        assert scored.coverage == {"bm25": pytest.approx(bm25_index.query_term_coverage(encoded))}
        for kwargs in SHARED:
            options = bm25_index.search_options(5, candidates=4, **kwargs)
            hits = bm25_index.search_encoded(encoded, k=5, candidates=4, **kwargs)
            ranked = scored.rank(options)
            assert [i for i, _ in ranked] == [h.id for h in hits], kwargs
            np.testing.assert_allclose([s for _, s in ranked], [h.score for h in hits], rtol=1e-6, atol=1e-7)


def test_filter_applies_before_the_candidates(index: M3Index) -> None:
    scored = index.score_candidates("capital of France", k=3, candidates=2, filter={"even": True})
    assert scored.ids and all(int(i[3:]) % 2 == 0 for i in scored.ids)
    hits = index.search("capital of France", k=3, candidates=2, filter={"even": True})
    assert [i for i, _ in scored.rank()] == [h.id for h in hits]
    nothing = index.score_candidates("capital of France", k=3, filter={"even": "never"})
    assert len(nothing) == 0 and nothing.rank() == []
    assert all(v.shape == (0,) for v in nothing.signals.values())


def test_rank_refuses_options_that_need_other_candidates_or_signals(index: M3Index) -> None:
    scored = index.score_candidates("capital of France", k=5, mode="dense+sparse", candidates=6)
    # Another fusion or weights, or a candidates value below k (k is the floor), pick the same candidates.
    same = index.search_options(5, mode="dense+sparse", candidates=6, fusion="rrf", weights=(1, 0.5, 0))
    assert len(scored.rank(same)) == 5
    below_k = index.score_candidates("capital of France", k=5, mode="dense+sparse", candidates=3)
    assert below_k.rank(index.search_options(5, mode="dense+sparse", candidates=4)) == below_k.rank()
    with pytest.raises(ValueError, match="other candidates"):
        scored.rank(index.search_options(5, mode="dense+sparse", candidates=7))
    with pytest.raises(ValueError, match="other candidates"):
        scored.rank(index.search_options(6, mode="dense+sparse", candidates=6))
    with pytest.raises(ValueError, match="other candidates"):
        scored.rank(index.search_options(5, mode="dense", candidates=6))
    with pytest.raises(ValueError, match="other candidates"):
        scored.rank(index.search_options(5, mode="dense+sparse", candidates=6, filter={"even": True}))
    with pytest.raises(ValueError, match="without colbert"):
        scored.rank(index.search_options(5, mode="hybrid", candidates=6))
    with pytest.raises(ValueError, match="rerank"):
        scored.rank(index.search_options(5, mode="dense+sparse", candidates=6, rerank="m3", rerank_top_n=5))


def test_score_candidates_checks_its_arguments(index: M3Index, bm25_index: M3Index) -> None:
    options = index.search_options(5)
    assert isinstance(index.score_candidates("capital", options), CandidateScores)
    with pytest.raises(TypeError, match="not both"):
        index.score_candidates("capital", options, k=5)
    with pytest.raises(TypeError, match="SearchOptions"):
        index.score_candidates("capital", {"k": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="another kind of index"):
        bm25_index.score_candidates("capital", options)  # M3's lexical weights: not in a BM25 index
    with pytest.raises(TypeError, match="unexpected keyword"):
        index.score_candidates("capital", k=5, fusions="rrf")
    with pytest.raises(ValueError, match="unknown fusion"):
        index.score_candidates("capital", k=5, fusion="max")
    with pytest.raises(ValueError, match="query is empty"):
        index.score_candidates("  ", k=5)
