"""The segmented sparse store: appends keep older inverted indexes, and nothing a search reads changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from m3_integrations import M3Index, M3Model, M3Output
from m3_integrations.bm25 import BM25
from m3_integrations.index.sparse_store import SparseStore


def _random_chunk(rng: np.random.Generator, rows: int, width: int) -> sp.csr_matrix:
    dense = rng.random((rows, width)) * (rng.random((rows, width)) < 0.2)
    return sp.csr_matrix(dense.astype(np.float32))


def _naive(store_rows: list[np.ndarray], width: int) -> np.ndarray:
    """Every appended row as one dense float64 matrix of the store's current width."""
    out = np.zeros((sum(len(r) for r in store_rows), width))
    at = 0
    for block in store_rows:
        out[at : at + len(block), : block.shape[1]] = block
        at += len(block)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interleaved_appends_deletes_and_growing_width_match_a_dense_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    width = 12
    store = SparseStore(width)
    blocks: list[np.ndarray] = []
    for step in range(60):
        if rng.random() < 0.3:  # a vocabulary that grows, as BM25's words do
            width += int(rng.integers(1, 4))
            store.set_width(width)
        rows = int(rng.integers(1, 6)) if step % 10 else int(rng.integers(20, 40))
        chunk = _random_chunk(rng, rows, width)
        store.append(chunk)
        blocks.append(chunk.toarray().astype(np.float64))
        if rng.random() < 0.3:
            store.set_alive(rng.random(len(store)) < 0.8)
        dense = _naive(blocks, width)
        alive = store.alive
        query = {int(c): float(rng.random()) for c in rng.choice(width + 3, size=5, replace=False)}
        expected = np.zeros(len(dense))
        for column, weight in query.items():
            if column < width:
                expected += dense[:, column] * weight
        np.testing.assert_allclose(store.scores(query), expected, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(store.document_frequency(), (dense[alive] != 0).sum(axis=0))
        columns = np.array(sorted(c for c in query if c < width), dtype=np.int64)
        rows_, which, values = store.postings(columns)
        rebuilt = np.zeros((len(dense), len(columns)))
        rebuilt[rows_, which] = values
        np.testing.assert_array_equal(rebuilt, dense[:, columns])
        covered = np.count_nonzero((dense[alive][:, columns] != 0).any(axis=0)) if alive.any() else 0
        assert store.coverage(columns, len(query)) == pytest.approx(covered / len(query))
        np.testing.assert_array_equal(store.matrix().toarray(), dense)
    # O(log n) segments however the rows came in
    assert store.segments <= 2 * math.log2(len(store)) + 2


def test_an_append_leaves_the_older_inverted_indexes_alone() -> None:
    rng = np.random.default_rng(7)
    store = SparseStore(50)
    store.append(_random_chunk(rng, 1000, 50))
    store.scores({3: 1.0})  # builds the first segment's inverted index
    big = store._segments[0]
    built = big.csc
    assert built is not None
    for _ in range(20):  # small adds, each followed by a search
        store.append(_random_chunk(rng, 3, 50))
        store.scores({3: 1.0, 7: 0.5})
        assert store._segments[0] is big and big.csc is built
    assert store.segments < 8


def test_single_row_appends_keep_few_segments() -> None:
    rng = np.random.default_rng(3)
    store = SparseStore(10)
    for n in range(1, 1025):
        store.append(_random_chunk(rng, 1, 10))
        assert store.segments <= 2 * math.log2(n) + 2


def test_narrowing_below_stored_entries_is_refused() -> None:
    store = SparseStore(4)
    store.append(sp.csr_matrix(np.array([[0, 0, 0, 1.0]], dtype=np.float32)))
    with pytest.raises(ValueError, match="beyond"):
        store.set_width(3)
    with pytest.raises(ValueError, match="columns"):
        store.append(sp.csr_matrix(np.ones((1, 6), dtype=np.float32)))


def test_bm25_from_many_adds_scores_as_one_add() -> None:
    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in range(40)]
    docs = [list(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(300)]
    whole = BM25()
    whole.add(docs)
    pieces = BM25()
    at = 0
    while at < len(docs):
        step = int(rng.integers(1, 9))
        pieces.add(docs[at : at + step])
        pieces.get_scores(["w1"])  # a search between adds
        at += step
    assert pieces.store.segments > 1
    assert whole.words() == pieces.words()
    for query in (["w1", "w2", "w2"], ["w39", "nope"], words[:10]):
        np.testing.assert_allclose(pieces.get_scores(query), whole.get_scores(query), rtol=1e-12)


def _one(output: M3Output, i: int) -> M3Output:
    return M3Output(
        dense=output.dense[i : i + 1],
        lexical_weights=output.lexical_weights[i : i + 1],
        colbert_vecs=output.colbert_vecs[i : i + 1],
        num_tokens=output.num_tokens[i : i + 1],
    )


@pytest.mark.parametrize("lexical", ["m3", "bm25"])
def test_index_fed_one_document_at_a_time_searches_like_one_bulk_add(
    tiny_model: M3Model, lexical: str
) -> None:
    texts = [
        f"note {i}: the {['red', 'blue', 'green'][i % 3]} river runs past town {i % 7}" for i in range(90)
    ]
    ids = [f"n{i}" for i in range(90)]
    output = tiny_model.encode_passages(texts, return_colbert=True)
    bulk = M3Index(tiny_model, lexical=lexical)
    bulk.add_encoded(output, texts, ids=ids)
    fed = M3Index(tiny_model, lexical=lexical)
    (encoded,) = fed.encode_queries(["red river town 3"])
    for i in range(90):
        fed.add_encoded(_one(output, i), texts[i : i + 1], ids=ids[i : i + 1])
        fed.search_encoded(encoded, k=3, mode="sparse")  # each add followed by a search
    fed.delete(ids[::9])
    bulk.delete(ids[::9])
    for mode in ("sparse", "hybrid"):
        a = bulk.search_encoded(encoded, k=20, mode=mode, candidates=None)
        b = fed.search_encoded(encoded, k=20, mode=mode, candidates=None)
        assert [h.id for h in a] == [h.id for h in b]
        for x, y in zip(a, b, strict=True):
            # float32 scores near 0 (dense) may differ in the last bits on another CPU's kernel: abs 1e-6
            assert x.scores == pytest.approx(y.scores, rel=1e-6, abs=1e-6)
