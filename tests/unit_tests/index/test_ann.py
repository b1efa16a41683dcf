"""The approximate dense first stage (issue 16, item 3): faiss IVF candidates, rescored exactly.

Synthetic documents in loose topic clusters (d=32, the tiny model's width): 3,000 rows, 60 clusters, queries
near a random document. The index gets the default 75 IVF lists (~ 4 sqrt(n), capped at n/40) and
probes 16 of them (about the share the default 64 probes at 100k documents; the default itself would
scan nearly every list here, and test little): the dense top-10 is found for at least 99% of the
positions over 200 queries. What is tested is that tolerance, not equality, because an IVF scan may
skip a list holding a true neighbour. Every dense score a hit carries is recomputed from the stored
vectors, so it equals the exact path's score for the same document.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model, M3Output
from m3_integrations.index import EncodedQuery, ann

pytest.importorskip("faiss")

N_DOCS = 3000
N_QUERIES = 200
PROBES = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _documents(
    rng: np.random.Generator, n: int, dim: int, centers: np.ndarray, noise: float = 0.8
) -> M3Output:
    topics = rng.integers(0, len(centers), n)
    dense = _unit(centers[topics] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))
    lexical = [{int(t): 0.3 for t in rng.integers(5, 380, size=3)} for _ in range(n)]
    # token vectors near their document's vector, as a real encoder's are
    colbert = list(_unit(dense[:, None, :] + rng.standard_normal((n, 2, dim)) / np.sqrt(dim)))
    return M3Output(dense=dense, lexical_weights=lexical, colbert_vecs=colbert, num_tokens=[3] * n)


def _queries(rng: np.random.Generator, dense: np.ndarray, n: int) -> list[EncodedQuery]:
    dim = dense.shape[1]
    near = dense[rng.integers(0, len(dense), n)]
    vectors = _unit(near + 0.6 * rng.standard_normal((n, dim)) / np.sqrt(dim))
    return [
        EncodedQuery(
            dense=v,
            lexical_weights={int(t): 0.4 for t in rng.integers(5, 380, size=2)},
            colbert_vecs=_unit(v + rng.standard_normal((2, dim)) / np.sqrt(dim)),
            bm25_tokens=[],
        )
        for v in vectors
    ]


@pytest.fixture(scope="module")
def corpus(tiny_model: M3Model) -> tuple[M3Output, list[EncodedQuery], np.ndarray]:
    rng = np.random.default_rng(16)
    centers = _unit(rng.standard_normal((60, tiny_model.dense_dim)))
    output = _documents(rng, N_DOCS, tiny_model.dense_dim, centers)
    assert output.dense is not None
    return output, _queries(rng, output.dense, N_QUERIES), centers


def _index(model: M3Model, output: M3Output, **kwargs: object) -> M3Index:
    index = M3Index(model, lexical="m3", **kwargs)  # type: ignore[arg-type]
    n = len(output.dense)  # type: ignore[arg-type]
    index.add_encoded(
        output, [f"text {i}" for i in range(n)], ids=[f"d{i}" for i in range(n)], metadatas=_metas(n)
    )
    return index


def _metas(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"tenant": (start + i) % 10, "rare": (start + i) % 500 == 0} for i in range(n)]


def _ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def _naive_dense_top(dense: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int) -> list[str]:
    scores = dense[rows].astype(np.float64) @ query.astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:k]
    return [f"d{rows[i]}" for i in order]


@pytest.fixture(scope="module")
def approximate(tiny_model: M3Model, corpus: tuple) -> M3Index:
    return _index(tiny_model, corpus[0], ann=True, ann_nprobe=PROBES)


@pytest.fixture(scope="module")
def exact(tiny_model: M3Model, corpus: tuple) -> M3Index:
    return _index(tiny_model, corpus[0], ann=False)


def test_dense_top10_recall_and_exact_scores(approximate: M3Index, exact: M3Index, corpus: tuple) -> None:
    output, queries, _ = corpus
    found = 0
    for query in queries:
        got = approximate.search_encoded(query, k=10, mode="dense")
        want = exact.search_encoded(query, k=10, mode="dense")
        assert _ids(want) == _naive_dense_top(output.dense, query.dense, np.arange(N_DOCS), 10)
        found += len(set(_ids(got)) & set(_ids(want)))
        by_id = {h.id: h.score for h in want}
        for hit in got:
            row = int(hit.id[1:])
            naive = float(output.dense[row].astype(np.float64) @ query.dense.astype(np.float64))
            np.testing.assert_allclose(hit.score, naive, rtol=1e-5)
            if hit.id in by_id:
                np.testing.assert_allclose(hit.score, by_id[hit.id], rtol=1e-6)
    recall = found / (10 * len(queries))
    assert recall >= 0.99, recall
    assert approximate.memory_bytes()["ann"] > 0
    assert exact.memory_bytes()["ann"] == 0


def test_hybrid_hits_keep_the_exact_scores(approximate: M3Index, exact: M3Index, corpus: tuple) -> None:
    _, queries, _ = corpus
    found = 0
    for query in queries[:60]:
        got = approximate.search_encoded(query, k=10)
        want = exact.search_encoded(query, k=10)
        found += len(set(_ids(got)) & set(_ids(want)))
        by_id = {h.id: h for h in want}
        for hit in got:
            if hit.id in by_id:
                for signal, value in hit.scores.items():
                    np.testing.assert_allclose(value, by_id[hit.id].scores[signal], rtol=1e-6)
                np.testing.assert_allclose(hit.score, by_id[hit.id].score, rtol=1e-6)
    assert found >= 0.99 * 600, found


@pytest.mark.parametrize(
    ("filter_", "matches"),
    [({"tenant": 3}, N_DOCS // 10), ({"rare": True}, N_DOCS // 500), ({"tenant": 99}, 0)],
)
def test_filters_return_k_matching_hits(
    approximate: M3Index, corpus: tuple, filter_: dict, matches: int
) -> None:
    output, queries, _ = corpus
    metas = _metas(N_DOCS)
    allowed = np.asarray([all(m[key] == value for key, value in filter_.items()) for m in metas])
    rows = np.flatnonzero(allowed)
    assert len(rows) == matches
    found = 0
    for query in queries[:50]:
        hits = approximate.search_encoded(query, k=10, mode="dense", filter=filter_)
        assert len(hits) == min(10, matches)
        assert all(all(h.metadata[key] == value for key, value in filter_.items()) for h in hits)
        found += len(set(_ids(hits)) & set(_naive_dense_top(output.dense, query.dense, rows, 10)))
    assert found >= 0.99 * 50 * min(10, matches)


def test_fallback_to_the_exact_scan_when_the_lists_come_back_short(
    approximate: M3Index, exact: M3Index, corpus: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, queries, _ = corpus
    calls = []

    def short(*args: object, **kwargs: object) -> None:
        calls.append(1)

    monkeypatch.setattr(ann.DenseANN, "candidates", short)
    for query in queries[:5]:
        got = approximate.search_encoded(query, k=10, filter={"tenant": 4})
        want = exact.search_encoded(query, k=10, filter={"tenant": 4})
        assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want]
    assert len(calls) == 5


def test_ann_stats_count_searches_and_the_short_ones(
    approximate: M3Index, exact: M3Index, corpus: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, queries, _ = corpus
    approximate.build_ann()
    approximate.ann_nprobe = approximate.ann_nprobe  # a change of settings starts the counts again
    stats = approximate.ann_stats()
    assert stats["rows"] == N_DOCS and stats["lists"] > 1 and stats["searches"] == stats["fallbacks"] == 0
    for query in queries[:3]:
        approximate.search_encoded(query, k=10, mode="dense")
    assert approximate.ann_stats()["searches"] == 3

    structure = approximate._stores.dense_ann

    class Empty:  # the real lists, except that a search finds nothing
        def __init__(self, ivf: object) -> None:
            self._ivf = ivf

        def __getattr__(self, name: str) -> object:
            return getattr(self._ivf, name)

        def search(self, query: np.ndarray, k: int, params: object = None) -> tuple:
            return np.zeros((1, k), np.float32), np.full((1, k), -1, np.int64)

    monkeypatch.setattr(structure, "_ivf", Empty(structure._ivf))
    got = approximate.search_encoded(queries[0], k=10, mode="dense")
    assert [h.id for h in got] == [h.id for h in exact.search_encoded(queries[0], k=10, mode="dense")]
    assert approximate.ann_stats() | {"rows": 0} == {
        "rows": 0,
        "lists": stats["lists"],
        "searches": 4,
        "fallbacks": 1,
        "nprobe": PROBES,
        "check_recall": None,
        "declined": False,
    }


def test_deletes_adds_and_compaction(tiny_model: M3Model, corpus: tuple) -> None:
    output, queries, centers = corpus
    index = _index(tiny_model, output, ann=True, ann_nprobe=PROBES)
    query = queries[0]
    first = index.search_encoded(query, k=10, mode="dense")
    built = index._stores.dense_ann.built_rows  # type: ignore[union-attr]
    assert built == N_DOCS
    # tombstones: deleted rows never come back, and k hits still do
    index.delete(_ids(first)[:5])
    after_delete = index.search_encoded(query, k=10, mode="dense")
    assert len(after_delete) == 10
    assert not set(_ids(first)[:5]) & set(_ids(after_delete))
    assert _ids(first)[5:] == _ids(after_delete)[:5]
    # adds go into the existing lists; a new document identical to the query is found first
    rng = np.random.default_rng(3)
    extra = _documents(rng, 40, tiny_model.dense_dim, centers)
    extra.dense[7] = query.dense
    index.add_encoded(extra, [f"new {i}" for i in range(40)], ids=[f"new{i}" for i in range(40)])
    hits = index.search_encoded(query, k=10, mode="dense")
    assert hits[0].id == "new7"
    np.testing.assert_allclose(hits[0].score, 1.0, rtol=1e-6)
    assert index._stores.dense_ann.built_rows == N_DOCS + 40  # type: ignore[union-attr]
    # compaction renumbers rows: the structure is rebuilt, and results still match the exact scan
    index.compact()
    assert index._stores.dense_ann.built_rows == 0  # type: ignore[union-attr]
    approximate_ids = _ids(index.search_encoded(query, k=10, mode="dense"))
    assert index._stores.dense_ann.built_rows == N_DOCS - 5 + 40  # type: ignore[union-attr]
    index.ann = False
    assert index.memory_bytes()["ann"] == 0
    assert approximate_ids == _ids(index.search_encoded(query, k=10, mode="dense"))


def test_growth_retrains_the_lists(tiny_model: M3Model, corpus: tuple) -> None:
    output, _, centers = corpus
    small = M3Output(
        dense=output.dense[:800],
        lexical_weights=output.lexical_weights[:800],
        colbert_vecs=output.colbert_vecs[:800],
        num_tokens=output.num_tokens[:800],
    )
    index = _index(tiny_model, small, ann=True, ann_nprobe=PROBES)
    index.build_ann()
    structure = index._stores.dense_ann
    assert structure is not None
    lists_before = structure._ivf.nlist
    more = _documents(np.random.default_rng(5), 1200, tiny_model.dense_dim, centers)
    index.add_encoded(more, [f"m{i}" for i in range(1200)], ids=[f"m{i}" for i in range(1200)])
    index.build_ann()
    assert structure._trained_rows == 2000
    assert structure._ivf.nlist > lists_before


def test_save_and_load_rebuild_the_structure(
    tiny_model: M3Model, approximate: M3Index, corpus: tuple, tmp_path
) -> None:
    _, queries, _ = corpus
    approximate.save(tmp_path / "idx")
    names = {p.name for p in (tmp_path / "idx").rglob("*") if p.is_file()}
    assert names == {"manifest.json", ".m3-index.lock", "arrays.npz", "documents.json"}
    loaded = M3Index.load(tmp_path / "idx", tiny_model, ann=True, ann_nprobe=approximate.ann_nprobe)
    assert loaded.ann is True
    assert loaded.memory_bytes()["ann"] == 0  # rebuilt lazily
    for query in queries[:20]:
        got = loaded.search_encoded(query, k=10)
        want = approximate.search_encoded(query, k=10)
        assert [(h.id, h.score) for h in got] == [(h.id, h.score) for h in want]
    assert loaded.memory_bytes()["ann"] == approximate.memory_bytes()["ann"]
    # ann is not part of the folder: a load takes the default
    assert M3Index.load(tmp_path / "idx", tiny_model).ann == "auto"
    assert M3Index(tiny_model).ann == "auto"


def test_ann_false_and_auto_below_the_threshold_never_touch_faiss(
    tiny_model: M3Model, exact: M3Index, corpus: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, queries, _ = corpus

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the approximate stage ran")

    monkeypatch.setattr(ann.DenseANN, "candidates", refuse)
    below = _index(tiny_model, output, ann="auto", ann_threshold=N_DOCS + 1)
    for query in queries[:10]:
        for options in ({}, {"mode": "dense"}, {"filter": {"tenant": 2}}, {"mode": "colbert"}):
            want = exact.search_encoded(query, k=10, **options)
            got = below.search_encoded(query, k=10, **options)
            assert [(h.id, h.score, h.scores) for h in got] == [(h.id, h.score, h.scores) for h in want]


def test_auto_above_the_threshold_and_filters_below_it(tiny_model: M3Model, corpus: tuple) -> None:
    output, queries, _ = corpus
    index = _index(tiny_model, output, ann="auto", ann_threshold=1000)
    index.search_encoded(queries[0], k=5, filter={"tenant": 1})  # 300 rows: below, exact
    assert index.memory_bytes()["ann"] == 0
    index.search_encoded(queries[0], k=5)
    assert index.memory_bytes()["ann"] > 0
    index.ann_threshold = 10_000
    assert index.ann_threshold == 10_000


def test_missing_faiss_names_the_extra(
    tiny_model: M3Model, corpus: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    output, queries, _ = corpus
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(ImportError, match=r"m3-integrations\[ann\]"):
        M3Index(tiny_model, ann=True)
    index = _index(tiny_model, output, ann="auto", ann_threshold=10)
    with pytest.raises(ImportError, match=r"m3-integrations\[ann\]"):
        index.ann = True
    with caplog.at_level(logging.WARNING, logger="m3_integrations.index.ann"):
        hits = index.search_encoded(queries[0], k=10, mode="dense")
        index.search_encoded(queries[1], k=10, mode="dense")
    assert _ids(hits) == _naive_dense_top(output.dense, queries[0].dense, np.arange(N_DOCS), 10)
    warnings = [r for r in caplog.records if "m3-integrations[ann]" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ann": "yes"}, "ann must be True, False or 'auto'"),
        ({"ann": 1}, "ann must be True, False or 'auto'"),
        ({"ann_threshold": 0}, "ann_threshold must be a positive integer"),
        ({"ann_nprobe": 2.5}, "ann_nprobe must be a positive integer"),
    ],
)
def test_bad_settings_name_the_argument(tiny_model: M3Model, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M3Index(tiny_model, **kwargs)


def test_ann_true_never_runs_the_self_check(approximate: M3Index) -> None:
    approximate.build_ann()
    stats = approximate.ann_stats()
    assert stats["check_recall"] is None
    assert stats["nprobe"] == PROBES
    assert stats["declined"] is False


def test_auto_checks_itself_and_scans_more_lists_when_one_is_not_enough(tiny_model: M3Model) -> None:
    # Tighter clusters than the module's corpus: the check passes well below a quarter of the lists
    # (4-8 of 75 here), far from its limit, so that no CPU's rounding can tip it into declining.
    rng = np.random.default_rng(16)
    centers = _unit(rng.standard_normal((60, tiny_model.dense_dim)))
    output = _documents(rng, N_DOCS, tiny_model.dense_dim, centers, noise=0.4)
    queries = _queries(rng, output.dense, 100)
    exact = _index(tiny_model, output, ann=False)
    index = _index(tiny_model, output, ann="auto", ann_threshold=1000, ann_nprobe=1)
    index.build_ann()
    stats = index.ann_stats()
    assert stats["check_recall"] >= ann.SELF_CHECK_RECALL
    assert stats["declined"] is False
    # one list of 75 does not hold the pseudo-queries' neighbours: it scanned more
    assert 1 < stats["nprobe"] <= ann.SELF_CHECK_MAX_LIST_SHARE * stats["lists"] + 1
    found = 0
    for query in queries:
        got = index.search_encoded(query, k=10, mode="dense")
        found += len(set(_ids(got)) & set(_ids(exact.search_encoded(query, k=10, mode="dense"))))
    assert found >= 0.98 * 10 * len(queries)  # queries the check never saw
    assert index.ann_stats()["searches"] == len(queries)
    # a new nprobe starts the check again, from there
    index.ann_nprobe = 2
    assert index.ann_stats()["check_recall"] is None
    index.search_encoded(queries[0], k=10)
    assert index.ann_stats()["nprobe"] >= 2
    assert index.ann_stats()["check_recall"] is not None


def _uniform(rng: np.random.Generator, n: int, dim: int) -> M3Output:
    dense = _unit(rng.standard_normal((n, dim)))
    return M3Output(
        dense=dense,
        lexical_weights=[{int(t): 0.3 for t in rng.integers(5, 380, size=3)} for _ in range(n)],
        colbert_vecs=list(_unit(dense[:, None, :] + rng.standard_normal((n, 2, dim)) / np.sqrt(dim))),
        num_tokens=[3] * n,
    )


def test_auto_keeps_the_exact_scan_where_its_check_fails(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Uniform vectors have no cells worth the name: a quarter of the lists misses recall@10 0.99.
    rng = np.random.default_rng(8)
    output = _uniform(rng, N_DOCS, tiny_model.dense_dim)
    trainings = []
    train = ann.DenseANN._trained
    monkeypatch.setattr(ann.DenseANN, "_trained", lambda self, *a: trainings.append(1) or train(self, *a))
    index = _index(tiny_model, output, ann="auto", ann_threshold=1000, ann_nprobe=1)
    plain = _index(tiny_model, output, ann=False)
    queries = _queries(rng, output.dense, 20)
    with caplog.at_level(logging.WARNING, logger="m3_integrations.index.ann"):
        for query in queries:
            for options in ({}, {"mode": "dense"}, {"filter": {"tenant": 2}}):
                got = index.search_encoded(query, k=10, **options)
                want = plain.search_encoded(query, k=10, **options)
                assert [(h.id, h.score, h.scores) for h in got] == [(h.id, h.score, h.scores) for h in want]
    stats = index.ann_stats()
    assert stats["declined"] is True
    assert stats["check_recall"] < ann.SELF_CHECK_RECALL
    assert stats["searches"] == 0
    assert index.memory_bytes()["ann"] == 0  # the structure was dropped
    assert len(trainings) == 1  # and not rebuilt by every search
    assert len([r for r in caplog.records if "the exact scan stays" in r.getMessage()]) == 1
    # once the index has doubled, the check runs again
    more = _uniform(rng, N_DOCS, tiny_model.dense_dim)
    index.add_encoded(more, [f"m{i}" for i in range(N_DOCS)], ids=[f"m{i}" for i in range(N_DOCS)])
    index.search_encoded(queries[0], k=10)
    assert len(trainings) == 2
