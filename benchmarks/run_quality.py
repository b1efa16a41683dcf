"""Retrieval quality of M3Index configurations vs LangChain and LlamaIndex hybrids, on real data.

For every real encoder (all-MiniLM-L6-v2, multilingual-e5-small; neither has BGE-M3's sparse or
ColBERT heads, so the lexical signal is BM25 over the model's subword tokens and ColBERT uses the
identity projection) and every collection in ``../shared/data``, the corpus is encoded ONCE; one
``M3Index`` holds it and every configuration searches the same precomputed query representations
(``M3Index.search_encoded``). The peers reuse the same dense vectors through caching embedding
wrappers, so all rows compare retrieval logic on identical encodings.

Usage (from the repository root)::

    python benchmarks/run_quality.py            # everything, writes benchmarks/REPORT.md + PNGs
    python benchmarks/run_quality.py --quick    # a subset that finishes in minutes
    python benchmarks/run_quality.py --report-only   # re-render REPORT.md from the saved JSON

Results are saved after every collection (``benchmarks/quality_results.json``), so a long run can be
resumed with ``--resume``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3_integrations import M3Model  # noqa: E402
from m3_integrations.evaluation import (  # noqa: E402
    BeirDataset,
    load_beir,
    load_korquad,
    paired_bootstrap_ci,
    per_query_metrics,
)

logger = logging.getLogger("run_quality")
DATA = Path(os.environ.get("M3_SHARED_DATA", ROOT.parent / "shared" / "data"))
TOOLS = DATA.parent / "tools"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "quality_results.json"
K = 100
METRICS = ("ndcg@10", "recall@100", "mrr@10")
# Per-query nDCG@10 of each row: kept in memory under this key, saved beside the results JSON.
PER_QUERY = "ndcg@10 per query"

# ----------------------------------------------------------------------------- configurations
PAPER = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
# A deliberately small grid: the paper's weights, equal weights, and one shift towards each signal.
WEIGHT_GRID = {
    "paper .4/.2/.4": PAPER,
    "equal 1/1/1": {"dense": 1.0, "sparse": 1.0, "colbert": 1.0},
    "lexical .3/.4/.3": {"dense": 0.3, "sparse": 0.4, "colbert": 0.3},
    "colbert .2/.2/.6": {"dense": 0.2, "sparse": 0.2, "colbert": 0.6},
}
FUSIONS = ("weighted", "rrf", "relative_score", "confidence")


@dataclass(frozen=True)
class Config:
    name: str
    family: str  # single | dense+lexical | hybrid | rerank | peer
    kwargs: dict[str, Any]
    bm25: str = "subword"  # the BM25 tokens: "subword" (model ids), "words" or "stemmed" (see BM25_VARIANTS)


# BM25 over words, as the peers' BM25 retrievers use: plain lower-cased words (no language needed), and
# for English corpora Snowball-stemmed words without stop words (what LlamaIndex's bm25s does).
BM25_VARIANTS = {"words": " · word BM25", "stemmed": " · stemmed BM25"}
BM25_SINGLES = {
    "subword": "lexical (BM25, subword)",
    "words": "lexical (BM25, words)",
    "stemmed": "lexical (BM25, stemmed words)",
}


def our_configs(quick: bool) -> list[Config]:
    configs = [
        Config("dense", "single", {"mode": "dense"}),
        Config("lexical (BM25, subword)", "single", {"mode": "sparse"}),
        Config("colbert (identity)", "single", {"mode": "colbert"}),
    ]
    for fusion in FUSIONS:
        configs.append(
            Config(
                f"dense+lexical {fusion} .4/.2",
                "dense+lexical",
                {"mode": "dense+sparse", "fusion": fusion, "weights": {"dense": 0.4, "sparse": 0.2}},
            )
        )
        configs.append(
            Config(
                f"dense+lexical {fusion} 1/1",
                "dense+lexical",
                {"mode": "dense+sparse", "fusion": fusion, "weights": {"dense": 1.0, "sparse": 1.0}},
            )
        )
    grid = {"paper .4/.2/.4": PAPER, "equal 1/1/1": WEIGHT_GRID["equal 1/1/1"]} if quick else WEIGHT_GRID
    for fusion in FUSIONS:
        for label, weights in grid.items():
            configs.append(
                Config(
                    f"hybrid {fusion} {label}",
                    "hybrid",
                    {"mode": "hybrid", "fusion": fusion, "weights": weights},
                )
            )
    # The same fusions (not `weighted`: see the report) with BM25 over words.
    word_configs = []
    for variant, suffix in BM25_VARIANTS.items():
        word_configs.append(Config(BM25_SINGLES[variant], "single", {"mode": "sparse"}, bm25=variant))
        word_configs += [
            Config(c.name + suffix, c.family, c.kwargs, bm25=variant)
            for c in configs
            if c.family in ("dense+lexical", "hybrid") and c.kwargs["fusion"] != "weighted"
        ]
    return configs + word_configs


def bm25_options(variant: str, language: str | None) -> dict[str, Any] | None:
    """``M3Index`` options of a BM25 variant on a corpus in ``language``; None where it does not apply
    (stemming needs a Snowball language: Korean has none)."""
    if variant == "subword":
        return {"bm25_tokenizer": "model"}
    if variant == "words":
        return {"bm25_tokenizer": "word"}
    if language == "english":
        return {"bm25_tokenizer": "word", "bm25_stemmer": "english", "bm25_stopwords": "english"}
    return None


# Most informative first, so that a run cut short still answers the main questions; MiniLM is an
# English model, so its Korean rows come last.
E5, MINILM = "multilingual-e5-small", "all-MiniLM-L6-v2"
JOB_ORDER = (
    (E5, "xquad/en"),
    (E5, "autorag-ko/page"),
    (MINILM, "cranfield"),
    (E5, "autorag-ko/longdoc"),
    (MINILM, "xquad/en"),
    (E5, "cranfield"),
    (E5, "korquad paragraphs"),
    (MINILM, "trec-dl19-subset"),
    (E5, "trec-dl19-subset"),
    (MINILM, "autorag-ko/page"),
    (MINILM, "autorag-ko/longdoc"),
    (MINILM, "korquad paragraphs"),
)
RERANK_BASES = ("hybrid relative_score equal 1/1/1",)
# The engine's rerank path re-scores ColBERT per query; on a shared 2-core machine that is the slowest
# step, so it runs on the first RERANK_QUERIES queries, with the base configuration on the same ones.
RERANK_QUERIES = 100


# ----------------------------------------------------------------------------- encoders and data
@dataclass
class Encoder:
    name: str
    path: str
    kwargs: dict[str, Any]


def find_encoders(names: Sequence[str]) -> list[Encoder]:
    found = []
    scripts = {
        "all-MiniLM-L6-v2": ("get-all-minilm-l6-v2.sh", {}),
        "multilingual-e5-small": (
            "build-multilingual-e5-small.sh",
            {"query_instruction": "query: ", "passage_instruction": "passage: "},
        ),
    }
    for name in names:
        script, extra = scripts[name]
        env_path = os.environ.get("M3_" + name.upper().replace("-", "_") + "_PATH")
        path = env_path or _run_tool(TOOLS / script)
        if not path or not Path(path).is_dir():
            logger.warning("encoder %s not available (%s); skipped", name, path)
            continue
        found.append(Encoder(name, path, extra))
    return found


def _run_tool(script: Path) -> str | None:
    if not script.is_file():
        return None
    try:
        out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as err:
        logger.warning("%s failed: %s", script.name, err)
        return None
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def load_model(encoder: Encoder) -> M3Model:
    return M3Model(
        encoder.path,
        device="cpu",
        pooling="mean",
        allow_missing_heads=True,
        query_max_length=512,
        passage_max_length=512,
        batch_size=32,
        max_batch_tokens=16384,
        **encoder.kwargs,
    )


@dataclass
class Collection:
    """One corpus and the query sets searched against it (XQuAD: en, zh, de queries on the en corpus)."""

    name: str
    query_sets: list[BeirDataset]
    language: str | None = None  # of the corpus, for the word-BM25 stemmer


def collections(quick: bool, max_queries: int | None) -> list[Collection]:
    def sample(data: BeirDataset, n: int | None) -> BeirDataset:
        return data.subsample_queries(n, seed=13) if n else data

    x_en = DATA / "xquad" / "en"
    xquad = [
        load_beir(x_en, queries_folder=DATA / "xquad" / lang, name=f"xquad {lang}→en")
        for lang in ("en", "zh", "de")
    ]
    if quick:
        # One collection per question the report asks: lexical-heavy English, Korean, cross-lingual.
        return [
            Collection("cranfield", [sample(load_beir(DATA / "cranfield"), 50)], "english"),
            Collection("autorag-ko/page", [load_beir(DATA / "autorag-ko" / "page", name="autorag-ko/page")]),
            Collection("xquad/en", [sample(xquad[1], 100)], "english"),
        ]
    korquad = load_korquad(DATA / "korquad-v1-dev" / "KorQuAD_v1.0_dev.json", name="korquad paragraphs")
    return [
        Collection("cranfield", [sample(load_beir(DATA / "cranfield"), max_queries)], "english"),
        Collection("trec-dl19-subset", [load_beir(DATA / "trec-dl19-subset")], "english"),
        Collection("xquad/en", [sample(x, max_queries or 400) for x in xquad], "english"),
        Collection("autorag-ko/page", [load_beir(DATA / "autorag-ko" / "page", name="autorag-ko/page")]),
        Collection(
            "autorag-ko/longdoc", [load_beir(DATA / "autorag-ko" / "longdoc", name="autorag-ko/longdoc")]
        ),
        Collection("korquad paragraphs", [sample(korquad, max_queries or 500)]),
    ]


# ----------------------------------------------------------------------------- helpers
def p50_ms(fn, queries: Sequence[str]) -> float:
    timings = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def score_run(dataset: BeirDataset, ranked: list[list[str]]) -> dict[str, Any]:
    """Mean metrics, plus nDCG@10 per judged query (``PER_QUERY``, in qrels order) for paired tests."""
    run = dict(zip(dataset.queries, ranked, strict=True))
    per_query = per_query_metrics(run, dataset.qrels, METRICS)
    means = {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in per_query.items()}
    return {**means, PER_QUERY: [round(v, 6) for v in per_query["ndcg@10"].values()]}


class DenseCache:
    """Text → dense vector, filled from the one encoding pass; misses are encoded (and timed) for real."""

    def __init__(self, model: M3Model) -> None:
        self.model = model
        self.passages: dict[str, np.ndarray] = {}
        self.queries: dict[str, np.ndarray] = {}
        self.use_query_cache = True

    def passage(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.passages]
        if missing:
            out = self.model.encode_passages(missing, return_sparse=False)
            self.passages.update(zip(missing, out.dense, strict=True))
        return [self.passages[t].tolist() for t in texts]

    def query(self, text: str) -> list[float]:
        if self.use_query_cache and text in self.queries:
            return self.queries[text].tolist()
        return self.model.encode_queries([text], return_sparse=False).dense[0].tolist()


def langchain_peer(cache: DenseCache, ids: list[str], texts: list[str]):
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    class CachedEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return cache.passage(texts)

        def embed_query(self, text: str) -> list[float]:
            return cache.query(text)

    metadatas = [{"doc_id": i} for i in ids]
    store = InMemoryVectorStore(embedding=CachedEmbeddings())
    store.add_texts(texts, metadatas=metadatas, ids=ids)
    bm25 = BM25Retriever.from_texts(texts, metadatas=metadatas, k=K)
    ensemble = EnsembleRetriever(
        retrievers=[bm25, store.as_retriever(search_kwargs={"k": K})], id_key="doc_id"
    )

    def search(query: str) -> list[str]:
        return [d.metadata["doc_id"] for d in ensemble.invoke(query)]

    return search


def llama_index_peers(cache: DenseCache, ids: list[str], texts: list[str]):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.retrievers.bm25 import BM25Retriever

    class CachedEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query: str) -> list[float]:
            return cache.query(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return cache.query(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return cache.passage([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return cache.passage(texts)

    nodes = [TextNode(text=t, id_=i) for i, t in zip(ids, texts, strict=True)]
    index = VectorStoreIndex(nodes, embed_model=CachedEmbedding(model_name="cached", embed_batch_size=256))
    vector = index.as_retriever(similarity_top_k=K)
    bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=K)
    peers = {}
    for mode in ("reciprocal_rerank", "relative_score"):
        fusion = QueryFusionRetriever(
            [vector, bm25], llm=MockLLM(), mode=mode, similarity_top_k=K, num_queries=1, use_async=False
        )
        peers[mode] = _node_ids(fusion)
    return peers


def _node_ids(retriever: Any):
    def search(query: str) -> list[str]:
        return [n.node.node_id for n in retriever.retrieve(query)]

    return search


# ----------------------------------------------------------------------------- one collection
class SignalCache:
    """Per query, every signal the engine would compute, so that each configuration only re-fuses.

    ``M3Index._search`` scores a query in two stages: the union of the top ``candidates`` rows by each
    cheap signal (dense, BM25 > 0) is the candidate set, ColBERT is computed on it, and ``fusion.fuse``
    combines the signals over it. For a fixed query that candidate set is the same for ``colbert``,
    ``dense+sparse`` and ``hybrid`` modes, whatever the fusion or the weights, so the benchmark computes
    it and the three signals once and calls the core's ``fusion.fuse`` per configuration. ColBERT here
    uses the float32 vectors from the one encoding pass (the index stores float16). ``check_against``
    compares the result with ``M3Index.search_encoded`` on a sample.
    """

    def __init__(self, index: Any, colbert_vecs: list[np.ndarray], candidates: int = 100) -> None:
        self.index = index
        self.candidates = candidates
        lengths = np.asarray([len(v) for v in colbert_vecs], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        self.flat = np.concatenate([v for v in colbert_vecs if len(v)]).astype(np.float32, copy=False)

    def signals(self, encoded: Any) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        """Candidate rows, the three signals over them, and the query's lexical term coverage."""
        from m3_integrations import scoring

        index = self.index
        dense = index._full_scores("dense", encoded)  # the engine's own first-stage scores
        bm25 = index._full_scores("bm25", encoded)
        rows_all = np.arange(len(dense))
        top_dense = np.argsort(-dense, kind="stable")[: self.candidates]
        pool = rows_all[bm25 > 0]
        top_bm25 = pool[np.argsort(-bm25[pool], kind="stable")[: self.candidates]]
        rows = np.unique(np.concatenate([top_dense, top_bm25]))
        lengths = self.lengths[rows]
        gather = np.repeat(self.starts[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        gather += np.arange(int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        colbert = scoring.colbert_scores(encoded.colbert_vecs, self.flat[gather], offsets)
        signals = {
            "dense": dense[rows].astype(np.float32),
            "bm25": bm25[rows].astype(np.float32),
            "colbert": colbert,
        }
        return rows, signals, index.query_term_coverage(encoded)


def rank_config(
    rows: np.ndarray,
    signals: dict[str, np.ndarray],
    kwargs: dict[str, Any],
    ids: list[str],
    coverage: float = 1.0,
):
    from m3_integrations import fusion
    from m3_integrations.index import MODES

    names = {"dense": "dense", "lexical": "bm25", "colbert": "colbert"}
    used = [names[s] for s in MODES[kwargs["mode"]]]
    if len(used) == 1:
        fused = signals[used[0]]
    else:
        weights = {("bm25" if k == "sparse" else k): float(v) for k, v in kwargs["weights"].items()}
        # As M3Index._search: confidence scales the lexical weight by the query's term coverage.
        confident = kwargs["fusion"] == "confidence" and "bm25" in used
        extra = {"coverage": {"bm25": coverage}} if confident else {}
        fused = fusion.fuse(
            {s: signals[s] for s in used}, {s: weights[s] for s in used}, method=kwargs["fusion"], **extra
        )
    order = np.lexsort((rows, -fused.astype(np.float64)))[:K]  # ties: insertion order, as the engine
    return [ids[r] for r in rows[order]]


def check_against_engine(
    index: Any, cache: SignalCache, encoded: list[Any], ids: list[str], n: int = 20
) -> float:
    """Share of (query, config) pairs whose top-10 equals ``M3Index.search_encoded``'s."""
    checks = [{"mode": "hybrid", "fusion": f, "weights": PAPER} for f in FUSIONS] + [
        {"mode": "colbert"},
        {"mode": "dense+sparse", "fusion": "relative_score", "weights": {"dense": 1, "sparse": 1}},
    ]
    same = total = 0
    for e in encoded[:n]:
        rows, signals, coverage = cache.signals(e)
        for kwargs in checks:
            ours = rank_config(rows, signals, kwargs, ids, coverage)[:10]
            engine = [h.id for h in index.search_encoded(e, k=10, **kwargs)]
            same += ours == engine
            total += 1
    return same / max(total, 1)


LATENCY_CONFIGS = (
    "dense",
    "lexical (BM25, subword)",
    "colbert (identity)",
    "hybrid weighted paper .4/.2/.4",
    "hybrid rrf paper .4/.2/.4",
    "hybrid relative_score paper .4/.2/.4",
    "hybrid relative_score equal 1/1/1",
    "hybrid relative_score colbert .2/.2/.6",
    "lexical (BM25, words)",
    "hybrid relative_score paper .4/.2/.4" + BM25_VARIANTS["words"],
    "hybrid relative_score colbert .2/.2/.6" + BM25_VARIANTS["words"],
    "hybrid relative_score lexical .3/.4/.3" + BM25_VARIANTS["words"],
    "hybrid confidence paper .4/.2/.4" + BM25_VARIANTS["words"],
    "hybrid confidence colbert .2/.2/.6" + BM25_VARIANTS["words"],
)


def run_collection(
    encoder: Encoder, model: M3Model, collection: Collection, *, quick: bool, latency_n: int, peers: bool
) -> list[dict[str, Any]]:
    from m3_integrations import M3Index

    docs = collection.query_sets[0].documents()
    ids, texts = [d for d, _ in docs], [t for _, t in docs]
    logger.info("[%s] %s: encoding %d documents", encoder.name, collection.name, len(texts))
    start = time.perf_counter()
    output = model.encode_passages(texts, return_sparse=False, return_colbert=True, show_progress=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    index = M3Index(model, lexical="bm25", bm25_tokenizer="model")
    index.add_encoded(output, texts, ids=ids)
    index_s = time.perf_counter() - start
    build_s = encode_s + index_s
    logger.info(
        "[%s] %s: encoded in %.1fs, indexed in %.1fs", encoder.name, collection.name, encode_s, index_s
    )
    signal_cache = SignalCache(index, output.colbert_vecs or [])
    # One more index per BM25 variant over the same encodings; the signal caches share the ColBERT vectors.
    engines: dict[str, tuple[Any, SignalCache]] = {"subword": (index, signal_cache)}
    for variant in BM25_VARIANTS:
        options = bm25_options(variant, collection.language)
        if options is not None:
            other = M3Index(model, lexical="bm25", **options)
            other.add_encoded(output, texts, ids=ids)
            other_cache = copy.copy(signal_cache)
            other_cache.index = other
            engines[variant] = (other, other_cache)
    cache = DenseCache(model)
    cache.passages.update(zip(texts, output.dense, strict=True))
    del output

    peer_searches: dict[str, tuple[Any, float]] = {}
    if peers:
        start = time.perf_counter()
        lc = langchain_peer(cache, ids, texts)
        peer_searches["LangChain EnsembleRetriever (BM25+vector, RRF)"] = (lc, time.perf_counter() - start)
        start = time.perf_counter()
        li = llama_index_peers(cache, ids, texts)
        li_s = time.perf_counter() - start
        peer_searches["LlamaIndex QueryFusion reciprocal_rerank"] = (li["reciprocal_rerank"], li_s)
        peer_searches["LlamaIndex QueryFusion relative_score"] = (li["relative_score"], li_s)

    rows: list[dict[str, Any]] = []
    configs = [c for c in our_configs(quick) if c.bm25 in engines]
    for dataset in collection.query_sets:
        qtexts = list(dataset.queries.values())
        start = time.perf_counter()
        encoded = index.encode_queries(qtexts, colbert=True)
        qenc_s = time.perf_counter() - start
        cache.queries = {q: e.dense for q, e in zip(qtexts, encoded, strict=True)}
        logger.info("[%s] %s: %d queries encoded in %.1fs", encoder.name, dataset.name, len(qtexts), qenc_s)
        agreement = check_against_engine(index, signal_cache, encoded, ids)
        logger.info("[%s] %s: top-10 agreement with the engine %.3f", encoder.name, dataset.name, agreement)
        latency_queries = qtexts[:latency_n]
        base = {
            "encoder": encoder.name,
            "dataset": dataset.name,
            "num_docs": len(ids),
            "num_queries": len(qtexts),
            "engine_agreement": agreement,
        }
        start = time.perf_counter()
        ranked: dict[str, list[list[str]]] = {c.name: [] for c in configs}
        # The same encoded queries with each variant's BM25 tokens (only the tokens differ).
        variant_tokens = {v: engine._bm25_tokens(qtexts) for v, (engine, _) in engines.items()}
        for qi, e in enumerate(encoded):
            per_variant = {v: dataclasses.replace(e, bm25_tokens=variant_tokens[v][qi]) for v in engines}
            fused = {v: engines[v][1].signals(per_variant[v]) for v in engines}
            for config in configs:
                engine, e_ = engines[config.bm25][0], per_variant[config.bm25]
                if config.kwargs["mode"] in ("dense", "sparse"):
                    hits = engine.search_encoded(e_, k=K, **config.kwargs)
                    ranked[config.name].append([h.id for h in hits])
                else:
                    cand_rows, signals, coverage = fused[config.bm25]
                    ranked[config.name].append(rank_config(cand_rows, signals, config.kwargs, ids, coverage))
        logger.info(
            "[%s] %s: %d configs scored in %.1fs",
            encoder.name,
            dataset.name,
            len(configs),
            time.perf_counter() - start,
        )
        by_name: dict[str, dict[str, float]] = {}
        for config in configs:
            metrics = score_run(dataset, ranked[config.name])
            by_name[config.name] = metrics
            latency = None
            # Every confidence configuration with word BM25 too: the default rule may pick any of them.
            if config.name in LATENCY_CONFIGS or (
                config.kwargs.get("fusion") == "confidence" and config.bm25 == "words"
            ):
                engine = engines[config.bm25][0]
                latency = p50_ms(lambda q, c=config, e=engine: e.search(q, k=K, **c.kwargs), latency_queries)
            rows.append(
                {
                    **base,
                    "config": config.name,
                    "family": config.family,
                    "params": config.kwargs,
                    **metrics,
                    "build_s": build_s,
                    "p50_ms": latency,
                }
            )
        for base_name in RERANK_BASES:
            config = next((c for c in configs if c.name == base_name), None)
            if config is None:
                continue
            kwargs = {**config.kwargs, "rerank": "m3"}
            n_rerank = RERANK_QUERIES // 4 if quick else RERANK_QUERIES
            subset = dataset.subsample_queries(min(n_rerank, len(qtexts)), seed=0)
            keep = [i for i, qid in enumerate(dataset.queries) if qid in subset.queries]
            start = time.perf_counter()
            hits = index.search_batch([qtexts[i] for i in keep], k=K, **kwargs)
            logger.info(
                "[%s] %s: rerank run in %.1fs", encoder.name, dataset.name, time.perf_counter() - start
            )
            metrics = score_run(subset, [[h.id for h in per_q] for per_q in hits])
            base_metrics = score_run(subset, [ranked[base_name][i] for i in keep])
            latency = p50_ms(lambda q, kw=kwargs: index.search(q, k=K, **kw), latency_queries)
            rows.append(
                {
                    **base,
                    "num_queries": len(keep),
                    "config": f"{base_name} + M3 rerank",
                    "family": "rerank",
                    "params": kwargs,
                    **metrics,
                    "base_ndcg@10_same_queries": base_metrics["ndcg@10"],
                    "build_s": build_s,
                    "p50_ms": latency,
                }
            )
        for name, (search, peer_build_s) in peer_searches.items():
            start = time.perf_counter()
            cache.use_query_cache = True
            peer_ranked = [search(q) for q in qtexts]
            metrics = score_run(dataset, peer_ranked)
            cache.use_query_cache = False  # latency includes encoding the query, as ours does
            latency = p50_ms(search, latency_queries)
            cache.use_query_cache = True
            logger.info("[%s] %s: %s in %.1fs", encoder.name, dataset.name, name, time.perf_counter() - start)
            rows.append(
                {
                    **base,
                    "config": name,
                    "family": "peer",
                    "params": {},
                    **metrics,
                    "build_s": encode_s + peer_build_s,
                    "p50_ms": latency,
                }
            )
        best = max(by_name.items(), key=lambda item: item[1]["ndcg@10"])
        logger.info(
            "[%s] %s: dense %.3f, lexical %.3f, colbert %.3f; best %s %.3f",
            encoder.name,
            dataset.name,
            by_name["dense"]["ndcg@10"],
            by_name["lexical (BM25, subword)"]["ndcg@10"],
            by_name["colbert (identity)"]["ndcg@10"],
            best[0],
            best[1]["ndcg@10"],
        )
    return rows


# ----------------------------------------------------------------------------- report
KEY_COLUMNS = (
    ("dense", "dense"),
    ("lexical (BM25, subword)", "BM25"),
    ("lexical (BM25, words)", "BM25 words"),
    ("lexical (BM25, stemmed words)", "BM25 stemmed"),
    ("colbert (identity)", "ColBERT"),
)
PEERS = (
    ("LangChain EnsembleRetriever (BM25+vector, RRF)", "LC ensemble"),
    ("LlamaIndex QueryFusion reciprocal_rerank", "LI rrf"),
    ("LlamaIndex QueryFusion relative_score", "LI rel"),
)
BOOTSTRAP_SEED = 13
# The rule that picks the default for encoders without M3 heads (see choose_default).
DEFAULT_FAMILIES = ("hybrid", "dense+lexical")


def _rows_by(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    table: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        table.setdefault((row["encoder"], row["dataset"]), {})[row["config"]] = row
    return table


def best_single(configs: dict[str, dict[str, Any]]) -> str:
    """The single-signal configuration with the highest nDCG@10 on one (encoder, collection) pair."""
    return max((c for c, _ in KEY_COLUMNS if c in configs), key=lambda c: configs[c]["ndcg@10"])


# Keyed on the values themselves: the intervals depend on nothing else (the seed is fixed), and row
# objects come and go between report renderings (a resumed run replaces rows).
_CI_CACHE: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[float, float, float]] = {}


def difference_ci(ours: dict[str, Any], other: dict[str, Any]) -> tuple[float, float, float] | None:
    """nDCG@10 of ``ours`` minus ``other`` on the same queries: (mean, 95% low, 95% high), paired
    bootstrap over the queries; None without per-query values (results from before they were kept)."""
    a, b = ours.get(PER_QUERY), other.get(PER_QUERY)
    if a is None or b is None or len(a) != len(b) or not a:
        return None
    key = (tuple(a), tuple(b))
    if key not in _CI_CACHE:
        _CI_CACHE[key] = paired_bootstrap_ci(a, b, seed=BOOTSTRAP_SEED)
    return _CI_CACHE[key]


def not_below(ours: dict[str, Any], other: dict[str, Any]) -> bool | None:
    """True unless ``ours`` is significantly below ``other`` (the 95% interval lies under 0)."""
    ci = difference_ci(ours, other)
    return None if ci is None else ci[2] >= 0.0


def choose_default(
    rows: list[dict[str, Any]],
) -> tuple[str, list[tuple[str, float, float, int, int | None, int]], list[tuple[str, float, str]]]:
    """Rank fused configurations by mean nDCG@10 over every (encoder, collection) pair.

    Returns the winner; per eligible candidate: (name, mean nDCG@10, worst margin over dense, pairs where
    it is >= the best single signal, pairs where it is not significantly below it (None without
    per-query values), number of pairs); and per excluded one: (name, mean nDCG@10, why).
    A candidate that falls below dense alone by more than 0.01 on a cross-lingual set (no lexical
    evidence) is not eligible.
    """
    table = _rows_by(rows)
    # Stemming needs the corpus language, so a stemmed configuration cannot be a default.
    names = sorted(
        {
            r["config"]
            for r in rows
            if r["family"] in DEFAULT_FAMILIES and not r["config"].endswith(BM25_VARIANTS["stemmed"])
        }
    )
    stats, excluded = [], []
    for name in names:
        values, margins, beats, tied = [], [], 0, []
        failures = []
        for (_, dataset), configs in table.items():
            if name not in configs:
                continue
            value = configs[name]["ndcg@10"]
            dense = configs["dense"]["ndcg@10"]
            single = configs[best_single(configs)]
            values.append(value)
            margins.append(value - dense)
            beats += value >= single["ndcg@10"] - 1e-9
            tied.append(not_below(configs[name], single))
            cross_lingual = "→en" in dataset and not dataset.startswith("xquad en")
            # Only where the encoder reads the query language (dense >= 0.5): an English-only model on
            # Chinese queries scores ~0.1 with every method, and its ranking noise decides nothing.
            if cross_lingual and dense >= 0.5 and value < dense - 0.01:
                failures.append(f"{dataset} {value - dense:+.3f}")
        if values and not failures:
            ties = None if None in tied else sum(tied)
            stats.append((name, float(np.mean(values)), float(min(margins)), beats, ties, len(values)))
        elif values:
            excluded.append((name, float(np.mean(values)), ", ".join(failures)))
    stats.sort(key=lambda s: -s[1])
    excluded.sort(key=lambda s: -s[1])
    return (stats[0][0] if stats else ""), stats, excluded


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_plots(rows: list[dict[str, Any]], default: str, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _rows_by(rows)
    files = []
    series = [*KEY_COLUMNS, (default, "default hybrid"), *PEERS]
    for encoder in sorted({e for e, _ in table}):
        datasets = [d for e, d in table if e == encoder]
        fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(datasets)), 4))
        width = 0.8 / len(series)
        for i, (config, label) in enumerate(series):
            values = [table[(encoder, d)].get(config, {}).get("ndcg@10", np.nan) for d in datasets]
            ax.bar(np.arange(len(datasets)) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2)
        ax.set_xticklabels(datasets, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{encoder}: single signals, our default hybrid, peers")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28))
        fig.tight_layout()
        name = f"quality_{encoder}.png"
        fig.savefig(folder / name, dpi=80)
        plt.close(fig)
        files.append(name)
    fig, ax = plt.subplots(figsize=(7, 4))
    for family, marker in (
        ("single", "o"),
        ("dense+lexical", "s"),
        ("hybrid", "^"),
        ("rerank", "v"),
        ("peer", "x"),
    ):
        pts = [(r["p50_ms"], r["ndcg@10"]) for r in rows if r["family"] == family and r.get("p50_ms")]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, label=family, alpha=0.6, s=18)
    ax.set_xscale("log")
    ax.set_xlabel("query p50 ms (log)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("quality vs single-query latency (all encoders and collections)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "quality_latency.png", dpi=80)
    plt.close(fig)
    files.append("quality_latency.png")
    return files


def write_report(saved: dict[str, Any], path: Path) -> None:
    rows = saved.get("rows", [])
    if not rows:
        logger.warning("no results to report")
        return
    env = saved.get("environment", {})
    table = _rows_by(rows)
    default, stats, excluded = choose_default(rows)
    plots = write_plots(rows, default, path.parent)
    lines = [
        "# Retrieval quality: M3Index vs LangChain and LlamaIndex hybrids",
        "",
        "_Generated by `benchmarks/run_quality.py`; do not edit by hand (narrative: `docs/evaluation.md`)._",
        "",
        "BAAI/bge-m3 cannot be downloaded on the machines that produced this report. Two real pretrained",
        "encoders stand in for it, and **neither has BGE-M3's sparse or ColBERT heads**: the lexical",
        "signal is BM25 and ColBERT uses the identity projection of the last hidden states. BM25 is run",
        'over three kinds of tokens: the model\'s subword ids (`M3Index(lexical="bm25",',
        'bm25_tokenizer="model")`, configurations without suffix), lower-cased words',
        '(`bm25_tokenizer="word"`, `· word BM25`; what `bm25_tokenizer="auto"` picks for these models), and',
        'for English corpora Snowball-stemmed words without stop words (`bm25_stemmer="english",',
        'bm25_stopwords="english"`, `· stemmed BM25`). The multilingual-e5-small weights are',
        "a dequantized 4-bit copy: fine for comparing methods on one model, not for quoting the model's",
        "scores. Every corpus is encoded once per encoder and shared by all rows; the peers use the same",
        "dense vectors through caching embedding wrappers.",
        "",
        "nDCG@10 uses linear graded gains (trec_eval); Recall@100 and MRR@10 count grade > 0 as relevant.",
        "`build s` = encoding the corpus + building the structure; `query p50 ms` = median of single-query",
        "calls (query encoding included) over the first queries of each set. k = 100 everywhere.",
        "",
    ]
    if saved.get("quick"):
        lines += ["**Quick run** (`--quick`): a subset of collections and queries; not the full report.", ""]
    lines += ["## Main result (nDCG@10)", ""]
    # The default's fusion and weights with the other BM25 tokens, where the run has them.
    base = default
    for suffix in BM25_VARIANTS.values():
        base = base.removesuffix(suffix)
    variants = [
        (base + suffix, "default · " + (suffix.split(" · ")[1] if suffix else "subword BM25"))
        for suffix in ("", *BM25_VARIANTS.values())
        if base + suffix != default and any(base + suffix in c for c in table.values())
    ]
    header = [
        "encoder",
        "collection",
        "queries",
        *(label for _, label in KEY_COLUMNS),
        "**default**",
        *(label for _, label in variants),
        *(label for _, label in PEERS),
        "default − best single [95% CI]",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (encoder, dataset), configs in table.items():
        any_row = next(iter(configs.values()))
        cells = [encoder, dataset, str(any_row["num_queries"])]
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in KEY_COLUMNS]
        cells.append("**" + _fmt(configs.get(default, {}).get("ndcg@10")) + "**")
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in variants]
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in PEERS]
        ci = difference_ci(configs[default], configs[best_single(configs)]) if default in configs else None
        below = " **below**" if ci is not None and ci[2] < 0 else ""
        cells.append("" if ci is None else f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]{below}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**default** = `{default}` (chosen by the rule below). The `default · …` columns are the same",
        "fusion and weights with BM25 over other tokens: the model's subword ids, lower-cased words, or",
        "(English corpora only) Snowball-stemmed words without stop words.",
        "",
        "The last column is the default's nDCG@10 minus the best single signal's on the same queries,",
        "with a 95% paired bootstrap interval over the queries (`m3_integrations.evaluation.",
        "paired_bootstrap_ci`, 2,000 draws); **below** marks a difference the query sample cannot",
        "explain. With 43 queries (TREC-DL19) a gap of 0.01 is well inside the noise.",
        "",
        "How often each matches or beats (nDCG@10, over the pairs where both exist), then how often it is",
        "not significantly below (the interval's upper end >= 0):",
        "",
        "| ours | >= best single signal | >= LC ensemble | >= LI rrf | >= LI rel |",
        "|---|---|---|---|---|",
    ]
    for name, label in [(default, "**default**"), *variants]:
        counts = []
        for target in ("best single", *(p for p, _ in PEERS)):
            wins = total = 0
            tied: list[bool | None] = []
            for configs in table.values():
                if name not in configs:
                    continue
                if target == "best single":
                    other = configs[best_single(configs)]
                elif target in configs:
                    other = configs[target]
                else:
                    continue
                wins += configs[name]["ndcg@10"] >= other["ndcg@10"] - 1e-9
                tied.append(not_below(configs[name], other))
                total += 1
            ties = "" if None in tied else f" · {sum(tied)}/{total}"  # type: ignore[arg-type]
            counts.append(f"{wins}/{total}{ties}")
        lines.append(f"| {label} | " + " | ".join(counts) + " |")
    lines += [
        "",
        "## Choosing the default fusion for encoders without M3 heads",
        "",
        "Rule: among the fused configurations, the highest mean nDCG@10 over every (encoder, collection)",
        "pair, excluding any that falls more than 0.01 below dense alone on a cross-lingual query set",
        "(XQuAD zh→en, de→en: the lexical signal has little or no evidence there) where the encoder reads",
        "the query language (dense nDCG@10 >= 0.5; all-MiniLM-L6-v2 on Chinese queries scores about 0.1",
        "with every method). `>= best single` counts the pairs where the configuration matches or beats",
        "the best single signal; `not below` those where it is not significantly below it (95% paired",
        "bootstrap). Both are reported, not used by the rule.",
        "",
        "| configuration | mean nDCG@10 | worst margin vs dense | >= best single | not below best single |",
        "|---|---|---|---|---|",
    ]
    for name, mean, worst, beats, ties, n in stats:
        tie_cell = "" if ties is None else f"{ties}/{n}"
        lines.append(f"| {name} | {mean:.4f} | {worst:+.3f} | {beats}/{n} | {tie_cell} |")
    better = [e for e in excluded if not stats or e[1] > stats[0][1]]
    if better:
        lines += [
            "",
            "Excluded by the cross-lingual condition although their mean is higher than the default's",
            "(nDCG@10 minus dense where they fail):",
            "",
            "| configuration | mean nDCG@10 | fails on |",
            "|---|---|---|",
            *(f"| {name} | {mean:.4f} | {why} |" for name, mean, why in better),
        ]
    lines += [
        "",
        "Why scale-free fusions and not the paper's `weighted` for these encoders: their cosines are",
        "compressed (e5: roughly 0.75-0.9 for every passage), so in a weighted average any other signal",
        "on a [0, 1] scale decides the order. BM25 max-normalised over the candidates always gives its",
        "top document 1.0, even when the match is a stray number or name, so cross-lingual `weighted`",
        "hybrids collapse towards BM25 (see XQuAD zh→en). RRF gives a noise ranking the same credit per",
        "rank as a good one. Min-max (`relative_score`) stretches every signal to [0, 1] over the",
        "candidates and drops a signal with no evidence.",
        "",
        "`confidence` is `relative_score` with each weight multiplied, per query, by the square of the",
        "signal's peak z-score over the candidates (how far its best candidate stands above the rest, in",
        "standard deviations), and the lexical weight also by the query's term coverage (the share of",
        "its distinct words found in the corpus). Fixed weights cannot tell a signal that is noise for",
        "this query (an English-only encoder reading Korean, a long document cut at 512 tokens) from one",
        "that works; the shape of the scores can. Without the coverage factor a cross-lingual query's",
        "few stray matches (names, numbers) looked like the most confident signal, and every",
        "`confidence` configuration failed the cross-lingual condition (docs/evaluation.md).",
        "",
    ]
    done = {(r["encoder"], r["dataset"].split(" ")[0]) for r in rows}
    missing = [
        f"{e} / {c}" for e, c in JOB_ORDER if (e, c.split(" ")[0].replace("xquad/en", "xquad")) not in done
    ]
    if missing and saved.get("quick"):
        lines += [
            "## Left out of the quick subset",
            "",
            "`--quick` runs one encoder on three collections with sampled queries; the full run",
            "(`python benchmarks/run_quality.py`) adds:",
            "",
            *(f"- {m}" for m in missing),
            "",
        ]
    elif missing:
        lines += [
            "## Not measured in this run",
            "",
            "The run stopped before these (a 2-core machine encodes about 200-400 tokens/s);",
            "`python benchmarks/run_quality.py --resume` measures the rest:",
            "",
            *(f"- {m}" for m in missing),
            "",
        ]
    lines += [*(f"![{p}]({p})" for p in plots), "", "## All configurations", ""]
    for (encoder, dataset), configs in table.items():
        any_row = next(iter(configs.values()))
        lines += [
            f"### {encoder} — {dataset} ({any_row['num_docs']} documents, {any_row['num_queries']} queries)",
            "",
            "| configuration | nDCG@10 | Recall@100 | MRR@10 | build s | query p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in configs.items():
            bold = "**" if name == default else ""
            if "base_ndcg@10_same_queries" in row:
                name = (  # noqa: PLW2901 - the label shown for a rerank row
                    f"{name} (first {row['num_queries']} queries; base nDCG@10 on them "
                    f"{row['base_ndcg@10_same_queries']:.3f})"
                )
            lines.append(
                f"| {bold}{name}{bold} | {_fmt(row['ndcg@10'])} | {_fmt(row['recall@100'])} | "
                f"{_fmt(row['mrr@10'])} | {_fmt(row['build_s'], 1)} | {_fmt(row['p50_ms'], 1)} |"
            )
        lines.append("")
    lines += [
        "## Configurations",
        "",
        "- Weights are `(dense, lexical, colbert)`; `fusion` is `M3Index.search(fusion=...)`: `weighted`",
        "  (BM25 max-normalised over the candidates, then the weighted average), `rrf` (k = 60),",
        "  `relative_score` (min-max per signal over the candidates, then the weighted average),",
        "  `confidence` (`relative_score` with each weight times the signal's squared peak z-score).",
        '- `+ M3 rerank`: `rerank="m3"` re-scores the top 100 fused hits with dense and ColBERT (0.4/0.4;',
        "  no M3 lexical weights without the sparse head).",
        "- LangChain: `EnsembleRetriever([BM25Retriever (rank_bm25, whitespace tokens), InMemoryVectorStore",
        "  retriever], weights=[0.5, 0.5], c=60)`, k = 100 each.",
        "- LlamaIndex: `QueryFusionRetriever([VectorIndexRetriever, BM25Retriever (bm25s, English stemmer",
        "  and",
        "  stop words)], num_queries=1, mode=reciprocal_rerank | relative_score, similarity_top_k=100)`,",
        "  `MockLLM` (no query generation).",
        "",
        "## Reproduce",
        "",
        "```bash",
    ]
    for run in saved.get("runs", []):
        lines.append(f"{run['command']}   # started {run['started']}")
    lines += [
        "```",
        "",
        "Encoders (folders printed by `../shared/tools/get-all-minilm-l6-v2.sh` and",
        "`../shared/tools/build-multilingual-e5-small.sh`), loaded with",
        '`M3Model(path, pooling="mean", allow_missing_heads=True, query_max_length=512,',
        'passage_max_length=512)` plus `query_instruction="query: ", passage_instruction="passage: "`',
        "for e5.",
        'Documents are `title + "\\n" + text` (title skipped when the text starts with it); passages longer',
        "than 512 tokens (autorag-ko/longdoc, many autorag-ko pages) are truncated: the encoders' limit.",
        "KorQuAD paragraphs are converted in memory (licence: no derivatives); 500 seeded questions.",
        "The e5 build script needs a Python with `safetensors`: run with the project's `.venv/bin` first",
        "on `PATH`, or point `M3_MULTILINGUAL_E5_SMALL_PATH` at the built folder.",
        "",
        "## Machine and versions",
        "",
        f"- {env.get('cpu', '?')}, {env.get('cpu_count', '?')} CPUs (a VM whose neighbours vary: "
        "latencies are indicative), torch threads "
        f"{env.get('torch_threads', '?')}; Python {env.get('python', '?')}; {env.get('platform', '?')}",
        "- " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"- m3-integrations commit {env.get('git', '?')}",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s and %s", path, ", ".join(plots))


def per_query_path(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + "_per_query.json")


def _row_key(row: dict[str, Any]) -> str:
    return f"{row['encoder']} | {row['dataset']} | {row['config']}"


def save_results(saved: dict[str, Any], path: Path) -> None:
    """The results JSON (readable, one metric per line) and, beside it, the per-query values (compact)."""
    rows, per_query = [], {}
    for row in saved["rows"]:
        row = dict(row)  # noqa: PLW2901 - a copy without the per-query list
        values = row.pop(PER_QUERY, None)
        if values is not None:
            per_query[_row_key(row)] = values
        rows.append(row)
    for target, text in (
        (per_query_path(path), json.dumps(per_query, ensure_ascii=False, separators=(",", ":"))),
        (path, json.dumps({**saved, "rows": rows}, indent=1, ensure_ascii=False)),
    ):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)


def load_results(path: Path) -> dict[str, Any]:
    saved = json.loads(path.read_text(encoding="utf-8"))
    extra = per_query_path(path)
    per_query = json.loads(extra.read_text(encoding="utf-8")) if extra.is_file() else {}
    for row in saved.get("rows", []):
        if _row_key(row) in per_query:
            row[PER_QUERY] = per_query[_row_key(row)]
    return saved


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in (
        "torch",
        "transformers",
        "numpy",
        "scipy",
        "langchain-core",
        "langchain-community",
        "langchain-classic",
        "rank-bm25",
        "llama-index-core",
        "llama-index-retrievers-bm25",
        "bm25s",
        "matplotlib",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "not installed"
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True
        )
        rev = commit.stdout.strip()
    except OSError:
        rev = "?"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": __import__("torch").get_num_threads(),
        "versions": versions,
        "git": rev,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that finishes in minutes")
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=None,
        help="encoders to run (default: both; --quick: multilingual-e5-small only)",
    )
    parser.add_argument(
        "--only", nargs="+", default=None, help="only these collections (names as in the report)"
    )
    parser.add_argument("--max-queries", type=int, default=None, help="seeded query sample per collection")
    parser.add_argument("--latency-queries", type=int, default=10, help="single-query calls timed per config")
    parser.add_argument("--no-peers", action="store_true", help="skip LangChain/LlamaIndex")
    parser.add_argument("--resume", action="store_true", help="keep saved results and skip what is done")
    parser.add_argument("--report-only", action="store_true", help="re-render the report from saved results")
    parser.add_argument("--results", default=str(RESULTS), help="results JSON")
    parser.add_argument("--report", default=str(HERE / "REPORT.md"), help="report Markdown")
    args = parser.parse_args(argv)
    if args.encoders is None:
        args.encoders = [E5] if args.quick else [MINILM, E5]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "bm25s", "m3_integrations.model"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    results_path = Path(args.results)
    saved: dict[str, Any] = {"rows": [], "runs": []}
    if (args.resume or args.report_only) and results_path.is_file():
        saved = load_results(results_path)
    if not args.report_only:
        command = "python benchmarks/run_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        saved.setdefault("runs", []).append(
            {"command": command.strip(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        )
        saved["environment"] = environment()
        done = {(r["encoder"], r["dataset"]) for r in saved["rows"]}
        encoders = {e.name: e for e in find_encoders(args.encoders)}
        models: dict[str, M3Model] = {}
        by_name = {c.name: c for c in collections(args.quick, args.max_queries)}
        for encoder_name, collection_name in JOB_ORDER:
            if encoder_name not in encoders or collection_name not in by_name:
                continue
            if args.only and collection_name not in args.only:
                continue
            encoder, collection = encoders[encoder_name], by_name[collection_name]
            if all((encoder.name, d.name) in done for d in collection.query_sets):
                logger.info("skip %s / %s (done)", encoder.name, collection.name)
                continue
            if encoder.name not in models:
                models[encoder.name] = load_model(encoder)
            saved.setdefault("encoders", {})[encoder.name] = {"path": encoder.path, **encoder.kwargs}
            rows = run_collection(
                encoder,
                models[encoder.name],
                collection,
                quick=args.quick,
                latency_n=args.latency_queries,
                peers=not args.no_peers,
            )
            names = {d.name for d in collection.query_sets}
            saved["rows"] = [
                r for r in saved["rows"] if not (r["encoder"] == encoder.name and r["dataset"] in names)
            ] + rows
            saved["quick"] = args.quick
            save_results(saved, results_path)
            write_report(saved, Path(args.report))
    write_report(saved, Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
