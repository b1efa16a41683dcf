"""``colbert_storage="compact"``: token pooling + residual codes, against naive references.

The codec (:mod:`m3_integrations.index.colbert_codecs`) is checked against a per-vector, per-dimension
numpy reference; the index with compact storage against an exact one on the tiny checkpoint; the
pruning bound, persistence (codebooks saved, reused by later adds, old folders) and retraining.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import pdist

from m3_integrations import IndexLoadError, M3Index, M3Model, M3Output, scoring
from m3_integrations.index import colbert_codecs, compact_store
from m3_integrations.index.colbert_codecs import ResidualCodec, kmeans, pool_tokens
from m3_integrations.index.compact_store import CompactColbertStore
from m3_integrations.index.search import SearchEngine
from m3_integrations.index.types import EncodedQuery
from m3_integrations.testing import TRAINING_SENTENCES
from tests.common import naive_colbert_score
from tests.legacy_format1 import save_format1

WORDS = [w for s in TRAINING_SENTENCES for w in re.findall(r"\w+", s)]
RNG = np.random.default_rng(11)
TEXTS = [" ".join(RNG.choice(WORDS, size=int(RNG.integers(4, 30)))) for _ in range(400)]
IDS = [f"d{i}" for i in range(len(TEXTS))]
QUERIES = ["quick brown fox", "hybrid search", " ".join(WORDS[:5]), " ".join(WORDS[10:14])]
# The tiny model's ~12k token vectors pool into ~6k: train at 1,500 so the codec is trained here.
TRAIN_AT = 1500


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32) * np.linspace(3, 0.5, d, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---------------------------------------------------------------------------- naive references
def _assert_same_best(x: np.ndarray, centroids: np.ndarray, got, want) -> None:
    """The same best centroid per row, except a near-tie (dot products within 1e-5, relative), where
    summation order (GEMM blocking, dot vs matmul) may pick either on a different CPU."""
    got, want = np.asarray(got), np.asarray(want)
    dots = np.asarray(x, dtype=np.float64) @ np.asarray(centroids, dtype=np.float64).T
    rows = np.arange(len(x))
    gap = np.abs(dots[rows, got] - dots[rows, want])
    assert np.all((got == want) | (gap <= 1e-5 * np.maximum(np.abs(dots[rows, want]), 1e-3)))
    assert np.mean(got == want) >= 0.95  # ties are rare: most rows must agree exactly


def naive_encode(codec: ResidualCodec, vectors: np.ndarray) -> tuple[list[int], list[list[int]]]:
    """Per vector: the centroid of largest dot product, and per dimension the bucket of its residual."""
    ids, buckets = [], []
    for x in vectors:
        best = max(range(len(codec.centroids)), key=lambda c: float(np.dot(x, codec.centroids[c])))
        ids.append(best)
        residual = x - codec.centroids[best]
        buckets.append([sum(int(residual[k] >= cut[k]) for cut in codec.cutoffs) for k in range(len(x))])
    return ids, buckets


def naive_pack(buckets: list[list[int]], bits: int) -> np.ndarray:
    """Bit strings, first dimension first, cut into bytes (zero padded)."""
    rows = []
    for row in buckets:
        text = "".join(format(b, f"0{bits}b") for b in row)
        text += "0" * (-len(text) % 8)
        rows.append([int(text[i : i + 8], 2) for i in range(0, len(text), 8)])
    return np.asarray(rows, dtype=np.uint8)


def naive_decode(codec: ResidualCodec, ids: list[int], buckets: list[list[int]]) -> np.ndarray:
    return np.asarray(
        [
            [codec.centroids[i][k] + codec.values[b][k] for k, b in enumerate(row)]
            for i, row in zip(ids, buckets, strict=True)
        ],
        dtype=np.float64,
    )


# ---------------------------------------------------------------------------- the codec
@pytest.mark.parametrize(("bits", "dim"), [(1, 24), (2, 24), (1, 19), (2, 21)])
def test_codec_round_trip_equals_naive_reference(bits: int, dim: int) -> None:
    rng = np.random.default_rng(bits * 100 + dim)
    sample = _unit(rng, 800, dim)
    codec = ResidualCodec.train(sample, bits=bits, n_centroids=12, seed=3)
    vectors = _unit(rng, 40, dim)
    ids, packed = codec.encode(vectors)
    naive_ids, naive_buckets = naive_encode(codec, vectors)
    assert ids.dtype == np.uint16
    _assert_same_best(vectors, codec.centroids, ids, naive_ids)
    if ids.tolist() == naive_ids:  # a float near-tie on another BLAS may pick the other centroid
        np.testing.assert_array_equal(packed, naive_pack(naive_buckets, bits))
    assert packed.shape == (40, math.ceil(dim * bits / 8)) and codec.code_bytes == 2 + packed.shape[1]
    np.testing.assert_allclose(
        codec.decode(ids, packed), naive_decode(codec, naive_ids, naive_buckets), rtol=1e-6, atol=1e-7
    )
    # Buckets decode to their training means, so reconstructions are closer than the centroid alone.
    decoded = codec.decode(ids, packed)
    assert ((decoded - vectors) ** 2).sum(1).mean() < ((codec.centroids[ids] - vectors) ** 2).sum(1).mean()


def test_two_bits_reconstruct_better_than_one_and_cutoffs_are_ordered() -> None:
    rng = np.random.default_rng(5)
    sample, held = _unit(rng, 3000, 32), _unit(rng, 500, 32)
    one = ResidualCodec.train(sample, bits=1, n_centroids=32)
    two = ResidualCodec.train(sample, bits=2, n_centroids=32)
    assert two.squared_error(held) < 0.6 * one.squared_error(held)
    assert np.all(np.diff(two.cutoffs, axis=0) >= 0) and np.all(np.diff(two.values, axis=0) > 0)
    # The drift baseline comes from held-out vectors: close to the error of fresh vectors.
    assert 0.8 < two.squared_error(held) / two.train_error < 1.25


def test_kmeans_assigns_every_vector_to_its_best_centroid() -> None:
    rng = np.random.default_rng(2)
    x = _unit(rng, 500, 8)
    centroids, assignment = kmeans(x, 16, seed=1)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
    _assert_same_best(x, centroids, assignment, np.argmax(x @ centroids.T, axis=1))
    assert len(set(assignment.tolist())) == 16  # no empty cluster
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(x[:3], 4)


@pytest.mark.parametrize("bits", [1, 2])
def test_lookup_scores_equal_naive_maxsim_of_reconstructions(bits: int) -> None:
    rng = np.random.default_rng(bits)
    dim = 20
    codec = ResidualCodec.train(_unit(rng, 600, dim), bits=bits, n_centroids=16)
    lengths = rng.integers(0, 9, size=30)
    lengths[4] = 0
    vectors = _unit(rng, int(lengths.sum()), dim)
    ids, packed = codec.encode(vectors)
    decoded = codec.decode(ids, packed)
    starts = np.cumsum(lengths) - lengths
    query = rng.standard_normal((5, dim)).astype(np.float32)  # any query, not only unit vectors
    rows = rng.permutation(30)[:20]
    got = scoring.colbert_scores_lookup(
        codec.query_tables(query),
        (ids, packed),
        codec.code_offsets(),
        starts[rows],
        lengths[rows],
        block_rows=7,
    )
    expected = [
        naive_colbert_score(query, decoded[s : s + n]) if n else 0.0
        for s, n in zip(starts[rows], lengths[rows], strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_norm_bound_bounds_every_reconstruction() -> None:
    rng = np.random.default_rng(9)
    codec = ResidualCodec.train(_unit(rng, 800, 16), bits=2, n_centroids=8)
    # Every centroid with random buckets, and with each dimension's largest bucket value.
    ids = rng.integers(0, 8, size=4000).astype(np.uint16)
    buckets = rng.integers(0, 4, size=(4000, 16)).astype(np.uint8)
    packed = naive_pack(buckets.tolist(), 2)
    norms = np.linalg.norm(codec.decode(ids, packed), axis=1)
    assert norms.max() <= codec.norm_bound()
    assert codec.norm_bound() < 2 * norms.max()  # and it is not vacuous


def test_pool_tokens_averages_clusters_keeps_order_and_windows() -> None:
    rng = np.random.default_rng(4)
    base = _unit(rng, 20, 16)
    pooled = pool_tokens(np.repeat(base, 2, axis=0), 2)  # each pair of equal vectors is one cluster
    np.testing.assert_allclose(pooled, base, atol=1e-6)
    tokens = _unit(rng, 9, 16)
    assert len(pool_tokens(tokens, 2)) == 5 and len(pool_tokens(tokens[:1], 2)) == 1
    np.testing.assert_allclose(np.linalg.norm(pool_tokens(tokens, 2), axis=1), 1.0, rtol=1e-5)
    long = _unit(rng, colbert_codecs.POOL_WINDOW + 77, 8)
    assert len(pool_tokens(long, 2)) == colbert_codecs.POOL_WINDOW // 2 + 39
    # Each pooled vector is the normalised mean of some of the document's vectors.
    small = _unit(rng, 6, 3)
    for vector in pool_tokens(small, 3):
        assert any(
            np.allclose(vector, (m := small[list(s)].sum(0)) / np.linalg.norm(m), atol=1e-6)
            for s in _subsets(6)
        )


def test_pooling_distances_are_scipys_pdist_with_equal_vectors_at_exactly_zero() -> None:
    """Ward linkage is fed distances from one matrix product: the same as pdist up to rounding."""
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 120, 64)
    vectors = np.concatenate([vectors, vectors[:30]])  # repeated tokens: equal vectors
    reference = pdist(vectors.astype(np.float64))
    distances = colbert_codecs._condensed_distances(vectors)
    np.testing.assert_allclose(distances, reference, rtol=1e-9, atol=1e-7)
    assert (distances[reference == 0] == 0).all() and (reference == 0).sum() == 30
    # The clusters (not only their count) match pdist's on vectors without near-ties.
    distinct = _unit(rng, 90, 64)
    merges = linkage(colbert_codecs._condensed_distances(distinct), method="ward")
    np.testing.assert_array_equal(merges[:, :2], linkage(distinct.astype(np.float64), method="ward")[:, :2])


def _subsets(n: int) -> list[tuple[int, ...]]:
    return [tuple(i for i in range(n) if mask >> i & 1) for mask in range(1, 1 << n)]


# ---------------------------------------------------------------------------- the index
@pytest.fixture
def train_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_store, "TRAIN_MIN_VECTORS", TRAIN_AT)


def _compact(model: M3Model, texts: list[str] = TEXTS, ids: list[str] = IDS) -> M3Index:
    index = M3Index(model, colbert_storage="compact")
    index.add(texts, ids=ids, metadatas=[{"n": i % 3} for i in range(len(ids))])
    return index


_SHARED: dict[str, M3Index] = {}


@pytest.fixture
def trained(tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch) -> M3Index:
    """One trained compact index of the 400 texts for the tests that only read it."""
    if "compact" not in _SHARED:
        with monkeypatch.context() as patch:
            patch.setattr(compact_store, "TRAIN_MIN_VECTORS", TRAIN_AT)
            _SHARED["compact"] = _compact(tiny_model)
    return _SHARED["compact"]


def test_bad_colbert_storage_is_refused(tiny_model: M3Model) -> None:
    with pytest.raises(ValueError, match="colbert_storage must be one of 'exact', 'int8', 'compact'"):
        M3Index(tiny_model, colbert_storage="tiny")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colbert_dtype='int8' contradicts colbert_storage='compact'"):
        M3Index(tiny_model, colbert_dtype="int8", colbert_storage="compact")
    assert M3Index(tiny_model, colbert_dtype="int8").colbert_storage == "int8"
    assert M3Index(tiny_model).colbert_storage == "exact"
    with pytest.raises(ValueError, match="retrain_colbert needs colbert_storage='compact'"):
        M3Index(tiny_model).retrain_colbert()


def test_small_index_keeps_pooled_vectors_in_float16(tiny_model: M3Model) -> None:
    index = _compact(tiny_model, TEXTS[:40], IDS[:40])
    store = index._stores.colbert
    assert isinstance(store, CompactColbertStore) and not store.trained
    vectors = tiny_model.encode_passages(
        TEXTS[:40], return_dense=False, return_sparse=False, return_colbert=True
    ).colbert_vecs
    pooled = [pool_tokens(v) for v in vectors]
    assert index.colbert_vectors == sum(len(p) for p in pooled) < sum(len(v) for v in vectors)
    (encoded,) = index.encode_queries([QUERIES[0]])
    got = store.scores(encoded.colbert_vecs, np.arange(40))
    expected = [naive_colbert_score(encoded.colbert_vecs, p.astype(np.float16)) for p in pooled]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_compact_index_ranks_like_exact(tiny_model: M3Model, trained: M3Index) -> None:
    compact = trained
    exact = M3Index(tiny_model)
    exact.add(TEXTS, ids=IDS)
    store = compact._stores.colbert
    assert isinstance(store, CompactColbertStore) and store.trained and store.n_vectors >= TRAIN_AT
    # Bytes: 2 + ceil(32/8) per pooled vector, the offsets and the codec, nothing else.
    codec = store.codec
    assert codec is not None
    expected_bytes = store.n_vectors * codec.code_bytes + 2 * 8 * len(IDS) + codec.model_bytes()
    assert compact.memory_bytes()["colbert"] == expected_bytes
    assert store.n_vectors * codec.code_bytes < exact.memory_bytes()["colbert"] / 20
    # Documented tolerance (docs/engine.md): on this 32-d model, 1-bit codes of pooled vectors keep
    # the hybrid's top 10 within 2 documents of exact, and MaxSim within 0.03 on average.
    for query in QUERIES:
        ours = {h.id for h in compact.search(query, k=10)}
        theirs = {h.id for h in exact.search(query, k=10)}
        assert len(ours & theirs) >= 8, query
    rows = np.arange(len(IDS))
    for encoded in exact.encode_queries(QUERIES):
        difference = store.scores(encoded.colbert_vecs, rows) - exact._stores.colbert.scores(
            encoded.colbert_vecs, rows
        )
        assert np.abs(difference).mean() < 0.03


_PRUNING: dict[str, M3Index] = {}


def _pruning_index(model: M3Model, monkeypatch: pytest.MonkeyPatch) -> M3Index:
    """1,500 documents of synthetic vectors (cheap to add): enough rows for the bound to skip many."""
    if "index" not in _PRUNING:
        rng = np.random.default_rng(21)
        n = 1500
        colbert = [_unit(rng, int(rng.integers(4, 16)), model.colbert_dim) for _ in range(n)]
        lexical = [
            {
                int(t): float(w)
                for t, w in zip(
                    rng.choice(model.vocab_size, size=3, replace=False), rng.random(3), strict=True
                )
            }
            for _ in range(n)
        ]
        # Dense scores against the queries' direction e_0 spread from -0.9 to 1 (most below 0): the
        # bound (max query norm x max stored norm, loose here) then rules most rows out.
        dense = rng.standard_normal((n, model.dense_dim)).astype(np.float32) * 0.05
        dense[:, 0] += rng.exponential(0.1, size=n).astype(np.float32) - 0.12
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        output = M3Output(dense=dense, lexical_weights=lexical, colbert_vecs=colbert, num_tokens=[8] * n)
        with monkeypatch.context() as patch:
            patch.setattr(compact_store, "TRAIN_MIN_VECTORS", TRAIN_AT)
            index = M3Index(model, colbert_storage="compact")
            texts = [" ".join(rng.choice(WORDS, size=5)) for _ in range(n)]
            index.add_encoded(
                output, texts, ids=[f"s{i}" for i in range(n)], metadatas=[{"n": i % 3} for i in range(n)]
            )
        _PRUNING["index"] = index
    return _PRUNING["index"]


@pytest.mark.parametrize("options", [{"k": 5}, {"k": 4, "filter": {"n": 1}}])
def test_pruned_search_on_codes_equals_scoring_every_row(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch, options: dict
) -> None:
    index = _pruning_index(tiny_model, monkeypatch)
    store = index._stores.colbert
    assert store.trained
    np.testing.assert_allclose(store.max_norm(), np.linalg.norm(store.decoded(), axis=1).max(), rtol=1e-6)
    scored = []
    original = SearchEngine._colbert_scores

    def counting(self: SearchEngine, rows: np.ndarray, encoded: object) -> np.ndarray:
        scored.append(len(rows))
        return original(self, rows, encoded)

    rng = np.random.default_rng(3)
    direction = np.eye(tiny_model.dense_dim, dtype=np.float32)[0]
    queries = [
        EncodedQuery(dense=direction, colbert_vecs=_unit(rng, 6, tiny_model.colbert_dim)) for _ in range(4)
    ]
    for encoded in queries:
        with monkeypatch.context() as patch:
            patch.setattr(SearchEngine, "_colbert_scores", counting)
            pruned = index.search_encoded(encoded, candidates=None, fusion="weighted", **options)
        with monkeypatch.context() as patch:
            patch.setattr(SearchEngine, "_pruned_colbert", lambda *a, **k: None)
            full = index.search_encoded(encoded, candidates=None, fusion="weighted", **options)
        assert [(h.id, h.score, h.scores) for h in pruned] == [(h.id, h.score, h.scores) for h in full]
    assert sum(scored) < 0.5 * len(queries) * len(index)  # the bound skipped most rows


def test_codebooks_round_trip_and_later_adds_reuse_them(
    tiny_model: M3Model, trained: M3Index, tmp_path: Path
) -> None:
    index = trained
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["colbert_storage"] == "compact" and manifest["colbert_codec"]["bits"] == 1
    loaded = M3Index.load(tmp_path / "index", tiny_model)
    assert loaded.colbert_storage == "compact"
    before, after = index._stores.colbert, loaded._stores.colbert
    for name, array in before.codec.to_arrays().items():
        np.testing.assert_array_equal(after.codec.to_arrays()[name], array, err_msg=name)
    assert after.codec.train_error == before.codec.train_error
    for query in QUERIES:
        assert [(h.id, h.scores) for h in loaded.search(query, k=8)] == [
            (h.id, h.scores) for h in index.search(query, k=8)
        ]
    # A later add is encoded with the saved codec (not retrained), and tracked by the drift measure.
    codec = after.codec
    new = ["the quick brown fox jumps over the lazy dog again"]
    loaded.add(new, ids=["new"])
    assert after.codec is codec
    vectors = tiny_model.encode_passages(
        new, return_dense=False, return_sparse=False, return_colbert=True
    ).colbert_vecs
    ids, residual = codec.encode(pool_tokens(vectors[0]))
    start = after.n_vectors - len(ids)
    np.testing.assert_array_equal(after._ids.slice(start, after.n_vectors), ids)
    np.testing.assert_array_equal(after._residual.slice(start, after.n_vectors), residual)
    assert loaded.colbert_drift() is not None
    loaded.save(tmp_path / "again")
    again = M3Index.load(tmp_path / "again", tiny_model)
    assert again.colbert_drift() == pytest.approx(loaded.colbert_drift(), rel=1e-9)


def test_untrained_compact_index_round_trips(tiny_model: M3Model, tmp_path: Path) -> None:
    index = _compact(tiny_model, TEXTS[:30], IDS[:30])
    index.save(tmp_path / "small")
    assert json.loads((tmp_path / "small" / "manifest.json").read_text())["colbert_codec"] is None
    loaded = M3Index.load(tmp_path / "small", tiny_model)
    assert not loaded._stores.colbert.trained
    assert [h.scores for h in loaded.search(QUERIES[1], k=5)] == [
        h.scores for h in index.search(QUERIES[1], k=5)
    ]


def test_old_folders_load_with_the_storage_their_dtype_names(tiny_model: M3Model, tmp_path: Path) -> None:
    for dtype, storage in (("float16", "exact"), ("int8", "int8")):
        index = M3Index(tiny_model, colbert_dtype=dtype)
        index.add(TEXTS[:20], ids=IDS[:20])
        save_format1(index, tmp_path / f"format1-{dtype}")
        index.save(tmp_path / dtype)
        manifest_path = tmp_path / dtype / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        del manifest["colbert_storage"]  # as written before compact storage existed
        manifest_path.write_text(json.dumps(manifest))
        for folder in (tmp_path / f"format1-{dtype}", tmp_path / dtype):
            loaded = M3Index.load(folder, tiny_model)
            assert loaded.colbert_storage == storage and loaded.colbert_dtype == dtype
            assert [h.scores for h in loaded.search(QUERIES[0], k=3)] == [
                h.scores for h in index.search(QUERIES[0], k=3)
            ]


def test_hostile_compact_manifests_are_refused(
    tiny_model: M3Model, train_early: None, tmp_path: Path
) -> None:
    _compact(tiny_model).save(tmp_path / "index")
    path = tmp_path / "index" / "manifest.json"
    good = json.loads(path.read_text())
    edits = {
        "unknown storage": ("colbert_storage", "zip"),
        "contradicts int8": ("colbert_dtype", "int8"),
        "bits": ("colbert_codec", {**good["colbert_codec"], "bits": 3}),
        "pool factor": ("colbert_codec", {**good["colbert_codec"], "pool_factor": 5}),
        "centroids": ("colbert_codec", {**good["colbert_codec"], "centroids": 7}),  # arrays disagree
        "train error": ("colbert_codec", {**good["colbert_codec"], "train_error": -1}),
        "extra key": ("colbert_codec", {**good["colbert_codec"], "code": "import os"}),
    }
    for name, (key, value) in edits.items():
        path.write_text(json.dumps({**good, key: value}))
        with pytest.raises(IndexLoadError):
            M3Index.load(tmp_path / "index", tiny_model)
        assert name  # each edit alone is refused
    path.write_text(json.dumps(good))
    assert M3Index.load(tmp_path / "index", tiny_model).colbert_storage == "compact"


def test_drift_and_retrain(tiny_model: M3Model, train_early: None) -> None:
    index = _compact(tiny_model, TEXTS[:300], IDS[:300])
    assert index.colbert_drift() is None  # nothing added since training
    index.add(TEXTS[300:], ids=IDS[300:])
    similar = index.colbert_drift()
    assert similar is not None and 0.5 < similar < 1.5
    # Vectors unlike the training sample (random directions) fit the codec far worse.
    rng = np.random.default_rng(0)
    foreign = [_unit(rng, 12, tiny_model.colbert_dim) for _ in range(100)]
    dense = _unit(rng, 100, tiny_model.dense_dim)
    texts = [f"foreign {i}" for i in range(100)]
    output = M3Output(
        dense=dense, lexical_weights=[{5: 0.5}] * 100, colbert_vecs=foreign, num_tokens=[12] * 100
    )
    index.add_encoded(output, texts)
    assert index.colbert_drift() > similar * 1.5
    old = index._stores.colbert.codec
    index.retrain_colbert()
    store = index._stores.colbert
    assert store.codec is not old and index.colbert_drift() is None
    # Every row re-encoded from its text with the new codec.
    vectors = tiny_model.encode_passages(
        TEXTS[:3], return_dense=False, return_sparse=False, return_colbert=True
    ).colbert_vecs
    ids, residual = store.codec.encode(np.concatenate([pool_tokens(v) for v in vectors]))
    np.testing.assert_array_equal(store._ids.slice(0, len(ids)), ids)
    np.testing.assert_array_equal(store._residual.slice(0, len(ids)), residual)
    assert index.colbert_vectors == int(store.lengths.sum())
    assert len(index.search(QUERIES[0], k=5)) == 5
