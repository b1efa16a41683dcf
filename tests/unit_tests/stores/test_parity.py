"""The stores against M3Index on the same tiny-checkpoint data: same hits, same per-signal scores."""

from __future__ import annotations

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model

from .conftest import QUERIES, build_store, corpus, local_client

BACKENDS = ["qdrant", "milvus"]
FUSIONS = ["weighted", "rrf", "relative_score", "confidence"]
MODES = ["hybrid", "dense+sparse", "dense", "sparse", "colbert"]


@pytest.fixture(scope="module", params=BACKENDS)
def store(request: pytest.FixtureRequest, tiny_model: M3Model, milvus_client: object) -> object:
    backend = request.param
    # One batch, as M3Index.add encodes: the model pads each text with the same neighbours, so the
    # stored vectors are the same floats (other batches move them by float32 noise, about 1e-6).
    store = build_store(backend, tiny_model, local_client(backend, milvus_client), batch_size=64)
    texts, ids, metadatas = corpus()
    store.add(texts, ids=ids, metadatas=metadatas)
    return store


def assert_same_hits(expected: list, actual: list) -> None:
    assert [h.id for h in actual] == [h.id for h in expected]
    for want, got in zip(expected, actual, strict=True):
        assert got.text == want.text
        assert got.metadata == want.metadata
        assert set(got.scores) == set(want.scores)
        for signal, value in want.scores.items():
            np.testing.assert_allclose(got.scores[signal], value, rtol=1e-5, atol=1e-7, err_msg=signal)
        np.testing.assert_allclose(got.score, want.score, rtol=1e-5, atol=1e-7)


def test_corpus_has_no_near_ties(reference_index: M3Index) -> None:
    # The parity below compares orders: it would be fragile if two documents scored within float noise.
    for query in QUERIES:
        scored = reference_index.score_candidates(query, k=10, mode="hybrid", candidates=None)
        for signal, values in scored.signals.items():
            positive = np.sort(values[values > 0])
            gaps = np.diff(positive) / np.maximum(positive[1:], 1e-9)
            assert gaps.size == 0 or gaps.min() > 1e-5 or signal == "sparse", signal


def test_dense_top10_is_identical(store: object, reference_index: M3Index) -> None:
    for query in QUERIES:
        assert_same_hits(
            reference_index.search(query, k=10, mode="dense"), store.search(query, k=10, mode="dense")
        )


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", MODES)
def test_exhaustive_search_is_identical(
    store: object, reference_index: M3Index, fusion: str, mode: str
) -> None:
    for query in QUERIES[:2]:
        expected = reference_index.search(query, k=10, mode=mode, fusion=fusion, candidates=None)
        assert_same_hits(expected, store.search(query, k=10, mode=mode, fusion=fusion, candidates=None))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_two_stage_search_is_identical(store: object, reference_index: M3Index, fusion: str) -> None:
    # 8 candidates per signal out of 48 documents: the union is a real subset, the same in both.
    for query in QUERIES:
        expected = reference_index.search(query, k=5, fusion=fusion, candidates=8)
        assert_same_hits(expected, store.search(query, k=5, fusion=fusion, candidates=8))


def test_weights_rerank_and_fill_up_are_identical(store: object, reference_index: M3Index) -> None:
    options = [
        {"weights": (0.1, 0.7, 0.2)},
        {"weights": {"colbert": 0.0}, "fusion": "rrf"},
        {"rerank": "m3", "rerank_top_n": 12},
        # No query term in the lexical vocabulary of most documents: sparse mode fills up in insertion order.
        {"mode": "sparse", "candidates": 3},
    ]
    for kwargs in options:
        for query in [*QUERIES, "zzz"]:
            assert_same_hits(
                reference_index.search(query, k=10, **kwargs), store.search(query, k=10, **kwargs)
            )


FILTERS = [
    {"lang": "ko"},
    {"lang": {"$ne": "ko"}},
    {"tags": "t2"},
    {"tags": {"$all": ["all", "t1"]}},
    {"lang": {"$in": ["de", "ko"]}},
    {"lang": {"$nin": ["de", "ko"]}},
    {"tags": {"$contains": "t3"}},
    {"n": 10},
    {"score": 5},  # stored 5.0: numbers compare by value
    {"n": {"$gt": 10, "$lte": 30}},
    {"n": {"$gte": 40}, "lang": "en"},
    {"n": {"$lt": 3}},
    {"score": {"$gte": 10.5}},
    {"flag": True},
    {"flag": False},
    {"flag": {"$ne": True}},
    {"note": None},
    {"note": {"$exists": True}},
    {"note": {"$exists": False}},
    {"empty": {"$empty": True}},
    {"empty": {"$empty": False}},
    {"title": {"$text": "of the"}},
    {"$or": [{"lang": "ko"}, {"n": {"$lt": 4}}]},
    {"$not": {"tags": "t0"}},
    {"n": {"$not": {"$gt": 5}}},
    {"$and": [{"lang": {"$in": []}}]},
    {},
]


@pytest.mark.parametrize("filter_", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_select_the_same_documents(store: object, reference_index: M3Index, filter_: dict) -> None:
    expected = reference_index.search("apple market", k=48, mode="dense", filter=filter_)
    assert_same_hits(expected, store.search("apple market", k=48, mode="dense", filter=filter_))
    # With a small k the filter applies before the top-k: k hits whenever k documents match.
    expected = reference_index.search("apple market", k=3, filter=filter_, candidates=2)
    assert_same_hits(expected, store.search("apple market", k=3, filter=filter_, candidates=2))


def test_get_and_len_match_the_index(store: object, reference_index: M3Index) -> None:
    assert len(store) == len(reference_index) == 48
    ids = ["doc-7", "doc-0", "doc-7"]
    for want, got in zip(reference_index.get(ids), store.get(ids), strict=True):
        assert (got.id, got.text, got.metadata, got.scores) == (want.id, want.text, want.metadata, {})
        assert np.isnan(got.score)
