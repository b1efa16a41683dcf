from __future__ import annotations

import math

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model, SearchHit
from tests.common import (
    INDEX_TEXTS,
    naive_filter_match,
    naive_m3_scores,
    naive_min_max_average,
    naive_peak_z,
    naive_weighted_ranking,
)

QUERIES = ["capital of France", "hello world", "서울 수도", "检索增强生成", "vector databases and numpy"]
MODE_SIGNALS = {
    "dense": {"dense": 1.0},
    "sparse": {"sparse": 1.0},
    "colbert": {"colbert": 1.0},
    "hybrid": {"dense": 0.4, "sparse": 0.2, "colbert": 0.4},
    "dense+sparse": {"dense": 0.4, "sparse": 0.2},
}


@pytest.fixture(scope="module")
def index(tiny_model: M3Model) -> M3Index:
    index = M3Index(tiny_model)
    index.add(
        INDEX_TEXTS,
        ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))],
        metadatas=[{"i": i, "even": i % 2 == 0} for i in range(len(INDEX_TEXTS))],
    )
    return index


@pytest.fixture(scope="module")
def naive(tiny_model: M3Model) -> dict[str, dict[str, list[float]]]:
    return {q: naive_m3_scores(tiny_model, q, INDEX_TEXTS) for q in QUERIES}


def _ids(hits: list[SearchHit]) -> list[str]:
    return [h.id for h in hits]


@pytest.mark.parametrize("mode", list(MODE_SIGNALS))
@pytest.mark.parametrize("query", QUERIES)
def test_exhaustive_search_equals_brute_force(index: M3Index, naive: dict, mode: str, query: str) -> None:
    ranking, fused = naive_weighted_ranking(naive[query], MODE_SIGNALS[mode])
    hits = index.search(query, k=len(INDEX_TEXTS), mode=mode, candidates=None)
    assert _ids(hits) == [f"doc{i}" for i in ranking]
    for hit in hits:
        i = int(hit.id[3:])
        # Sparse scores (and fusions holding them) exceed 1: relative above 1, absolute near 0.
        assert hit.score == pytest.approx(fused[i], rel=1e-5, abs=1e-5)
        for signal in MODE_SIGNALS[mode]:
            assert hit.scores[signal] == pytest.approx(naive[query][signal][i], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("mode", list(MODE_SIGNALS))
def test_two_stage_with_enough_candidates_equals_exhaustive(index: M3Index, mode: str) -> None:
    for query in QUERIES:
        exhaustive = index.search(query, k=5, mode=mode, candidates=None)
        two_stage = index.search(query, k=5, mode=mode, candidates=len(INDEX_TEXTS))
        assert _ids(two_stage) == _ids(exhaustive)


def test_two_stage_scores_only_candidates(index: M3Index) -> None:
    hits = index.search("capital of France", k=2, mode="hybrid", candidates=2)
    dense_top = _ids(index.search("capital of France", k=2, mode="dense"))
    sparse_top = _ids(index.search("capital of France", k=2, mode="sparse"))
    assert set(_ids(hits)) <= set(dense_top) | set(sparse_top)
    assert len(hits) == 2


def test_search_hit_fields_and_search_batch(index: M3Index) -> None:
    batch = index.search_batch(QUERIES[:3], k=3)
    for query, hits in zip(QUERIES[:3], batch, strict=True):
        assert _ids(hits) == _ids(index.search(query, k=3))
        for hit in hits:
            row = int(hit.id[3:])
            assert hit.text == INDEX_TEXTS[row]
            assert hit.metadata == {"i": row, "even": row % 2 == 0}
            assert set(hit.scores) == {"dense", "sparse", "colbert"}


def test_filters_applied_before_top_k(index: M3Index) -> None:
    for flt in ({"even": True}, lambda meta: meta["even"]):
        hits = index.search("capital of France", k=5, filter=flt, candidates=2)
        assert len(hits) == 5
        assert all(h.metadata["even"] for h in hits)
        expected = [
            h.id for h in index.search("capital of France", k=100, candidates=None) if h.metadata["even"]
        ]
        assert _ids(index.search("capital of France", k=5, filter=flt, candidates=None)) == expected[:5]
    assert index.search("capital", k=3, filter={"i": 6}) == index.search("capital", k=3, filter={"i": 6})
    assert _ids(index.search("capital", k=3, filter={"i": 6})) == ["doc6"]  # the empty document
    assert index.search("capital", filter={"missing": 1}) == []


def test_sparse_mode_returns_k_hits_even_without_matches(index: M3Index) -> None:
    (encoded,) = index.encode_queries(["zzzz"])
    encoded.lexical_weights = {}  # no query token known to the lexical index
    hits = index.search_encoded(encoded, k=4, mode="sparse")
    assert len(hits) == 4
    assert all(h.score == 0 for h in hits)
    assert _ids(hits) == ["doc0", "doc1", "doc2", "doc3"]  # ties: insertion order


def test_no_lexical_evidence_leaves_dense_ranking_unchanged(tiny_model: M3Model, index: M3Index) -> None:
    query = "zzzz qqqq"
    (encoded,) = index.encode_queries([query])
    encoded.lexical_weights = {}  # no query token known to the lexical index
    dense = index.search_encoded(encoded, k=8, mode="dense")
    for fusion_method in ("weighted", "rrf", "relative_score", "confidence"):
        fused = index.search_encoded(encoded, k=8, mode="dense+sparse", fusion=fusion_method)
        assert _ids(fused) == _ids(dense)
        if fusion_method == "weighted":
            assert [h.score for h in fused] == pytest.approx([h.score for h in dense])


def naive_lexical_coverage(model: M3Model, query: str, texts: list[str]) -> float:
    """Share of the query's positive-weight token ids that some document's lexical weights contain."""
    (query_weights,) = model.encode_queries([query], return_dense=False, return_sparse=True).lexical_weights
    passages = model.encode_passages(texts, return_dense=False, return_sparse=True).lexical_weights
    terms = [t for t, w in query_weights.items() if w > 0]
    return sum(any(t in p for p in passages) for t in terms) / len(terms)


@pytest.mark.parametrize("query", ["hello world", "capital of France zzqx vvbn"])
def test_confidence_fusion_scores_every_document_by_the_formula(
    tiny_model: M3Model, index: M3Index, query: str
) -> None:
    weights = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
    hits = index.search(query, k=len(index), candidates=None, fusion="confidence", weights=weights)
    assert len(hits) == len(index)
    columns = {name: [h.scores[name] for h in hits] for name in weights}
    coverage = naive_lexical_coverage(tiny_model, query, INDEX_TEXTS)
    assert index.query_term_coverage(index.encode_queries([query])[0]) == pytest.approx(coverage)
    share = {"sparse": coverage}
    scaled = {
        n: w * share.get(n, 1.0) * naive_peak_z(columns[n]) ** 2
        for n, w in weights.items()
        if max(columns[n]) > min(columns[n])
    }
    assert scaled, "the tiny index should give at least one non-constant signal"
    assert [h.score for h in hits] == pytest.approx(naive_min_max_average(columns, scaled), abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_empty_document_stored_and_retrievable(index: M3Index) -> None:
    (hit,) = index.get(["doc6"])
    assert hit.text == ""
    assert math.isnan(hit.score)
    assert hit.scores == {}
    assert "doc6" in _ids(index.search("hello", k=len(INDEX_TEXTS), candidates=None))


def test_add_replace_delete_get(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    ids = index.add(["alpha text", "beta text", "gamma"], metadatas=[{"n": 1}, None, {"n": 3}])
    assert len(ids) == 3 and len(set(ids)) == 3
    assert len(index) == 3 and ids[0] in index and "nope" not in index
    assert index.ids == ids
    index.add(["alpha replaced"], ids=[ids[0]], metadatas=[{"n": 10}])
    assert len(index) == 3
    assert index.ids == [ids[1], ids[2], ids[0]]  # a replaced document counts as new
    (hit,) = index.get([ids[0]])
    assert (hit.text, hit.metadata) == ("alpha replaced", {"n": 10})
    hits = index.search("alpha replaced", k=10, candidates=None)
    assert sorted(_ids(hits)) == sorted(ids)
    assert [h.text for h in hits].count("alpha replaced") == 1
    index.delete([ids[1]])
    assert ids[1] not in index and len(index) == 2
    assert ids[1] not in _ids(index.search("beta text", k=10))
    hit.metadata["n"] = 99  # hits hold copies
    assert index.get([ids[0]])[0].metadata == {"n": 10}


def test_compaction_keeps_order_and_results(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model, colbert_dtype="int8")
    texts = [f"document number {i} about capital cities" for i in range(70)]
    output = tiny_model.encode_passages(texts, return_colbert=True)
    for half in range(2):  # 140 rows from one encoding pass
        index.add_encoded(output, texts, ids=[f"d{half * 70 + i}" for i in range(70)])
    ids = index.ids
    (encoded,) = index.encode_queries(["capital 7"])
    before = index.search_encoded(encoded, k=140, candidates=None)
    index.delete([i for i in ids if int(i[1:]) % 2 == 1])  # 70 dead rows of 140: compaction runs
    assert index._stores.documents.n_rows == 70
    assert index.ids == [i for i in ids if int(i[1:]) % 2 == 0]
    after = index.search_encoded(encoded, k=70, candidates=None)
    survivors = {h.id: h.scores for h in before if int(h.id[1:]) % 2 == 0}
    assert {h.id for h in after} == set(survivors)
    for hit in after:  # same stored vectors, so the same scores (up to BLAS blocking noise)
        assert hit.scores == pytest.approx(survivors[hit.id], rel=1e-6, abs=1e-6)
    assert [h.score for h in after] == sorted((h.score for h in after), reverse=True)


def test_int8_and_float16_storage(tiny_model: M3Model, naive: dict) -> None:
    exact = naive["capital of France"]["colbert"]
    output = tiny_model.encode_passages(INDEX_TEXTS, return_colbert=True)
    ids = [f"doc{i}" for i in range(len(INDEX_TEXTS))]
    for kwargs in ({"colbert_dtype": "int8"}, {"dense_dtype": "float16"}):
        index = M3Index(tiny_model, **kwargs)
        index.add_encoded(output, INDEX_TEXTS, ids=ids)
        hits = index.search("capital of France", k=len(INDEX_TEXTS), mode="colbert", candidates=None)
        for hit in hits:
            assert hit.scores["colbert"] == pytest.approx(exact[int(hit.id[3:])], abs=2e-2)
        if "colbert_dtype" in kwargs:
            assert index._stores.colbert.to_arrays()["colbert"].dtype == np.int8
            assert index.memory_bytes()["colbert"] < 0.3 * sum(len(v) for v in output.colbert_vecs) * 32 * 4
        else:
            assert index._stores.dense.vectors.dtype == np.float16
            assert index._stores.colbert.to_arrays()["colbert"].dtype == np.float16
            float32_bytes = sum(len(v) for v in output.colbert_vecs) * 32 * 4
            assert index.memory_bytes()["colbert"] <= 0.5 * float32_bytes + 16 * len(INDEX_TEXTS)  # + offsets


def test_float16_dense_picks_candidates_fast_and_rescores_exactly(tiny_model: M3Model) -> None:
    output = tiny_model.encode_passages(INDEX_TEXTS, return_colbert=True)
    ids = [f"doc{i}" for i in range(len(INDEX_TEXTS))]
    index = M3Index(tiny_model, dense_dtype="float16")
    index.add_encoded(output, INDEX_TEXTS, ids=ids)
    stored = index._stores.dense.vectors[: len(INDEX_TEXTS)].astype(np.float64)
    for query in QUERIES:
        (encoded,) = index.encode_queries([query])
        exact = stored @ encoded.dense.astype(np.float64)
        for candidates in (None, len(INDEX_TEXTS), 3):
            hits = index.search(query, k=3, mode="hybrid", candidates=candidates)
            # Whatever picked the candidates, the reported dense score is the exact float32 product.
            for hit in hits:
                assert hit.scores["dense"] == pytest.approx(exact[int(hit.id[3:])], abs=1e-6)
        dense_hits = index.search(query, k=len(INDEX_TEXTS), mode="dense", candidates=len(INDEX_TEXTS))
        assert _ids(dense_hits) == _ids(
            index.search(query, k=len(INDEX_TEXTS), mode="dense", candidates=None)
        )


def test_store_colbert_false_recomputes(tiny_model: M3Model, index: M3Index) -> None:
    light = M3Index(tiny_model, store_colbert=False)
    light.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    assert light.memory_bytes()["colbert"] == 0
    for mode in ("colbert", "hybrid"):
        a = light.search("capital of France", k=5, mode=mode)
        b = index.search("capital of France", k=5, mode=mode)
        assert _ids(a) == _ids(b)
        assert [h.scores["colbert"] for h in a] == pytest.approx([h.scores["colbert"] for h in b], abs=2e-3)


def test_weights_tuple_dict_and_bm25_signal(index: M3Index, naive: dict) -> None:
    q = "capital of France"
    ranking, _ = naive_weighted_ranking(naive[q], {"dense": 1.0, "sparse": 0.5, "colbert": 0.0})
    hits = index.search(q, k=len(INDEX_TEXTS), weights=(1.0, 0.5, 0.0), candidates=None)
    assert _ids(hits) == [f"doc{i}" for i in ranking]
    same = index.search(
        q, k=len(INDEX_TEXTS), weights={"dense": 1.0, "sparse": 0.5, "colbert": 0}, candidates=None
    )
    assert _ids(same) == _ids(hits)
    with_bm25 = index.search(q, k=5, weights={"bm25": 0.3})
    assert all(set(h.scores) == {"dense", "sparse", "colbert", "bm25"} for h in with_bm25)
    top = with_bm25[0]
    bm25_max = max(h.scores["bm25"] for h in index.search(q, k=100, weights={"bm25": 0.3}, candidates=None))
    expected = (
        0.4 * top.scores["dense"]
        + 0.2 * top.scores["sparse"]
        + 0.4 * top.scores["colbert"]
        + 0.3 * top.scores["bm25"] / bm25_max
    ) / 1.3
    assert top.score == pytest.approx(expected, rel=1e-5)


def test_bm25_as_lexical_signal(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", allow_missing_heads=True)
    model.sparse_linear = None  # a checkpoint without sparse head
    index = M3Index(model, bm25_tokenizer="word")
    assert index.lexical == "bm25"
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    hits = index.search("capital of France", k=3, mode="sparse")
    assert hits[0].id in {"doc0", "doc15"}
    assert set(hits[0].scores) == {"bm25"}
    hybrid = index.search("capital of France", k=3)
    assert set(hybrid[0].scores) == {"dense", "bm25", "colbert"}
    with pytest.raises(ValueError, match="lexical='m3'"):
        M3Index(model, lexical="m3")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query": ""}, ValueError, "query is empty"),
        ({"query": "   "}, ValueError, "query is empty"),
        ({"k": 0}, ValueError, "k must be"),
        ({"k": -1}, ValueError, "k must be"),
        ({"mode": "bogus"}, ValueError, "unknown mode"),
        ({"fusion": "max"}, ValueError, "unknown fusion"),
        ({"weights": (0.5, 0.5)}, ValueError, "weights must have"),
        ({"weights": (0.5, -0.1, 0.5)}, ValueError, "non-negative"),
        ({"weights": (0, 0, 0)}, ValueError, "all zero"),
        ({"weights": {"dense": 0, "sparse": 0, "colbert": 0}}, ValueError, "all zero"),
        ({"weights": {"dens": 1}}, ValueError, "unknown weight"),
        ({"weights": {"dense": True}}, ValueError, "finite number"),
        ({"weights": {"colbert": -1.0}, "mode": "dense"}, ValueError, "must be >= 0"),  # unused: checked
        ({"candidates": 0}, ValueError, "candidates"),
        ({"filter": 3}, TypeError, "filter"),
        ({"rerank": "nope"}, ValueError, "rerank"),
        ({"rerank": "m3", "k": 5, "rerank_top_n": 2}, ValueError, "rerank_top_n"),
    ],
)
def test_bad_search_input(index: M3Index, kwargs: dict, error: type, match: str) -> None:
    query = kwargs.pop("query", "capital")
    with pytest.raises(error, match=match):
        index.search(query, **kwargs)


def test_bad_add_and_delete_lose_nothing(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    index.add(["one", "two"], ids=["a", "b"], metadatas=[{"x": 1}, {"x": 2}])
    state = (index.ids, [h.text for h in index.get(["a", "b"])])
    with pytest.raises(ValueError, match="duplicate id 'c'"):
        index.add(["x", "y"], ids=["c", "c"])
    with pytest.raises(ValueError, match="metadatas"):
        index.add(["x", "y"], ids=["a", "d"], metadatas=[{}])
    with pytest.raises(ValueError, match="ids"):
        index.add(["x"], ids=["a", "d"])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        index.add(["x", None], ids=["a", "d"])  # type: ignore[list-item]
    with pytest.raises(KeyError, match="zzz"):
        index.delete(["a", "zzz"])
    with pytest.raises(KeyError, match="zzz"):
        index.get(["zzz"])
    assert (index.ids, [h.text for h in index.get(["a", "b"])]) == state
    assert index.add([]) == []


def test_rerank_m3_puts_rerank_score(index: M3Index) -> None:
    hits = index.search("capital of France", k=3, mode="dense", rerank="m3")
    assert len(hits) == 3
    for hit in hits:
        assert hit.score == hit.scores["rerank"]
        assert "dense" in hit.scores
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hybrid = {h.id: h.score for h in index.search("capital of France", k=20, candidates=None)}
    for hit in hits:  # M3 rerank on stored vectors is the default hybrid fusion
        assert hit.score == pytest.approx(hybrid[hit.id], rel=1e-6, abs=1e-6)


def test_add_encoded_bulk_inputs_equal_add(tiny_model: M3Model, index: M3Index) -> None:
    import scipy.sparse as sp

    from m3_integrations.scoring import lexical_weights_to_csr

    texts = INDEX_TEXTS
    output = tiny_model.encode_passages(texts, return_colbert=True)
    output.lexical_weights = lexical_weights_to_csr(output.lexical_weights, tiny_model.vocab_size)
    token_ids = index.bm25_tokens(texts)
    rows = np.repeat(np.arange(len(texts)), [len(t) for t in token_ids])
    tf = sp.csr_matrix(
        (np.ones(len(rows)), (rows, np.concatenate(token_ids))), shape=(len(texts), tiny_model.vocab_size)
    )
    bulk = M3Index(tiny_model)
    bulk.reserve(len(texts), 10_000)
    bulk.add_encoded(output, texts, ids=[f"doc{i}" for i in range(len(texts))], bm25_tokens=tf)
    (encoded,) = index.encode_queries(["capital of France"])
    for kwargs in ({"mode": "hybrid"}, {"mode": "sparse"}, {"weights": {"bm25": 0.5}}):
        expected = index.search_encoded(encoded, k=6, candidates=None, **kwargs)
        got = bulk.search_encoded(encoded, k=6, candidates=None, **kwargs)
        # Exact on purpose: the same encodings stored through another input path must be the same arrays.
        assert [(h.id, h.scores) for h in got] == [(h.id, h.scores) for h in expected]
    with pytest.raises(ValueError, match="texts were given"):
        bulk.add_encoded(output, texts[:2])


def _scored(hits: list[SearchHit]) -> list[tuple[str, float]]:
    # Compared only between two searches taking the same code path (defaults vs the same values given).
    return [(h.id, round(h.score, 6)) for h in hits]


def test_defaults_follow_the_model_heads(tiny_checkpoint: str, index: M3Index) -> None:
    # real BGE-M3 layout: the paper's weighted 0.4 / 0.2 / 0.4
    assert index.default_fusion == "weighted"
    assert index.default_weights == {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
    explicit = index.search("capital of France", k=5, fusion="weighted", weights=(0.4, 0.2, 0.4))
    assert _scored(index.search("capital of France", k=5)) == _scored(explicit)
    # no heads: BM25 lexical, identity ColBERT, the measured confidence 0.3 / 0.4 / 0.3
    plain = M3Model(tiny_checkpoint, device="cpu", allow_missing_heads=True)
    plain.sparse_linear = None
    plain.colbert_linear = None
    bare = M3Index(plain)
    bare.add(INDEX_TEXTS)
    assert bare.default_fusion == "confidence"
    assert bare.default_weights == {"dense": 0.3, "sparse": 0.4, "colbert": 0.3}
    explicit = bare.search(
        "capital of France",
        k=5,
        fusion="confidence",
        weights={"dense": 0.3, "sparse": 0.4, "colbert": 0.3},
    )
    assert _scored(bare.search("capital of France", k=5)) == _scored(explicit)
    for other in ("weighted", "relative_score"):
        assert _scored(bare.search("capital of France", k=5, fusion=other)) != _scored(explicit)


def test_dict_filters_match_the_same_predicate_through_updates(tiny_model: M3Model, tmp_path) -> None:
    # Dict filters use a per-key value index; a callable takes the row-by-row path. They must agree.
    values = [1, True, 1.0, 2, "a", None, [1, 2], [[1, 2]], {"x": 1}, "b"]
    texts = [f"document number {i}" for i in range(len(values) * 2)]
    metas = [{"v": values[i % len(values)], "even": i % 2 == 0} if i % 7 else {} for i in range(len(texts))]
    index = M3Index(tiny_model)
    index.add(texts, ids=[f"d{i}" for i in range(len(texts))], metadatas=metas)

    def check(index: M3Index) -> None:
        for value in [1, 2.0, True, "a", None, [1, 2], {"x": 1}, "missing"]:
            for extra in ({}, {"even": True}):
                conditions = {"v": value, **extra}
                got = index.search("document", k=len(index), mode="dense", filter=conditions)
                expected = index.search(
                    "document",
                    k=len(index),
                    mode="dense",
                    filter=lambda m, c=conditions: naive_filter_match(c, m),
                )
                assert _ids(got) == _ids(expected), conditions

    check(index)
    # Appended rows, a replaced document, a deleted one, then compaction renumbering the rows.
    index.add(["a late document"], ids=["late"], metadatas=[{"v": 1}])
    index.add(["replaced"], ids=["d2"], metadatas=[{"v": "a"}])
    index.delete(["d3"])
    check(index)
    assert "late" in _ids(index.search("document", k=50, mode="dense", filter={"v": 1}))
    assert "d2" not in _ids(index.search("document", k=50, mode="dense", filter={"v": 1.0}))
    index.compact()
    check(index)
    index.save(tmp_path / "idx")
    loaded = M3Index.load(tmp_path / "idx", model=tiny_model)
    check(loaded)


def test_check_search_options_raises_what_search_raises(index: M3Index) -> None:
    index.check_search_options(5, mode="dense+sparse", weights=(1.0, 1.0, 0.0), fusion="rrf")
    index.check_search_options(3, filter={"even": True}, rerank="m3", rerank_top_n=3)
    bad = [
        ({"k": 0}, ValueError, "k must be a positive integer"),
        ({"mode": "bm42"}, ValueError, "unknown mode"),
        ({"fusion": "max"}, ValueError, "unknown fusion"),
        ({"weights": (0.0, 0.0, 0.0)}, ValueError, "weights"),
        ({"candidates": -1}, ValueError, "candidates"),
        ({"filter": "lang=ko"}, TypeError, "filter must be a dict or a callable"),
        ({"k": 5, "rerank": "m3", "rerank_top_n": 2}, ValueError, "rerank_top_n"),
    ]
    for kwargs, error, match in bad:
        with pytest.raises(error, match=match):
            index.check_search_options(**kwargs)
        with pytest.raises(error, match=match):  # the same error search() gives
            index.search("capital of France", **kwargs)


def test_query_term_coverage_with_bm25_words_follows_deletes(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model, lexical="bm25", bm25_tokenizer="word")
    index.add(["red apples and pears", "green pears", "blue sky"], ids=["a", "b", "c"])
    (query,) = index.encode_queries(["Red pears, red kiwis"])  # distinct words: red, pears, kiwis
    assert index.query_term_coverage(query) == pytest.approx(2 / 3)
    index.delete(["a"])  # "red" was only in a
    assert index.query_term_coverage(query) == pytest.approx(1 / 3)
    (unknown,) = index.encode_queries(["zzqx"])
    assert index.query_term_coverage(unknown) == 0.0
    with pytest.raises(TypeError, match="EncodedQuery"):
        index.query_term_coverage("Red pears")  # type: ignore[arg-type]


def test_confidence_discounts_stray_lexical_matches_of_a_mostly_unknown_query(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model, lexical="bm25", bm25_tokenizer="word")
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    query = "Paris qqa qqb qqc qqd qqe qqf qqg qqh qqi"  # one known word of ten
    (encoded,) = index.encode_queries([query])
    weights = {"dense": 0.4, "bm25": 0.2, "colbert": 0.4}
    hits = index.search_encoded(encoded, k=len(index), candidates=None, fusion="confidence", weights=weights)
    columns = {name: [h.scores[name] for h in hits] for name in weights}
    share = {"bm25": 0.1}
    scaled = {n: w * share.get(n, 1.0) * naive_peak_z(columns[n]) ** 2 for n, w in weights.items()}
    assert [h.score for h in hits] == pytest.approx(naive_min_max_average(columns, scaled), abs=1e-5)
    full = {n: w * naive_peak_z(columns[n]) ** 2 for n, w in weights.items()}
    assert not np.allclose([h.score for h in hits], naive_min_max_average(columns, full), atol=1e-4)


def test_confidence_gives_each_lexical_signal_its_own_coverage(tiny_model: M3Model, index: M3Index) -> None:
    query = "capital of France zzqx vvbn"
    (encoded,) = index.encode_queries([query])
    weights = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4, "bm25": 0.3}
    hits = index.search_encoded(encoded, k=len(index), candidates=None, fusion="confidence", weights=weights)
    share = {
        "sparse": naive_lexical_coverage(tiny_model, query, INDEX_TEXTS),
        "bm25": index._stores.bm25.coverage(encoded.bm25_tokens),  # BM25.coverage is checked in test_bm25
    }
    assert share["sparse"] != share["bm25"], "the two signals should see the query differently here"
    columns = {name: [h.scores[name] for h in hits] for name in weights}
    scaled = {
        n: w * share.get(n, 1.0) * naive_peak_z(columns[n]) ** 2
        for n, w in weights.items()
        if max(columns[n]) > min(columns[n])
    }
    assert [h.score for h in hits] == pytest.approx(naive_min_max_average(columns, scaled), abs=1e-5)
