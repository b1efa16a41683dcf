"""Retrieval quality of M3Index configurations vs LangChain and LlamaIndex hybrids, on real data.

For every real encoder (all-MiniLM-L6-v2, multilingual-e5-small; neither has BGE-M3's sparse or
ColBERT heads, so the lexical signal is BM25 and ColBERT uses the identity projection) and every
collection in ``../shared/data``, the corpus is encoded ONCE; one ``M3Index`` per kind of BM25 tokens
holds it and every configuration ranks the same precomputed query representations: each query's
candidates and their per-signal scores are computed once (``M3Index.score_candidates``) and fused per
configuration (``CandidateScores.rank``, what ``M3Index.search_encoded`` returns). The peers reuse the
same dense vectors through caching embedding wrappers, so all rows compare retrieval logic on identical
encodings.

Usage (from the repository root)::

    python benchmarks/run_quality.py                # everything (~45 minutes on 2 cores)
    python benchmarks/run_quality.py --quick        # a subset in under 10 minutes, in benchmarks/out/quick/
    python benchmarks/run_quality.py --resume       # continue a cut run
    python benchmarks/run_quality.py --render-only  # the report again from saved results, nothing encoded

A full run writes the full results to ``benchmarks/out/`` (not committed: ``quality_results.json``, the
per-query values beside it, ``REPORT-full.md`` with every configuration) after every collection, and
the compact ``benchmarks/quality_summary.json``, ``benchmarks/REPORT.md`` and the plots, which are
rendered from that summary alone (``benchmarks/quality_report.py``). ``--render-only`` re-summarises
the full results when they are there, and otherwise re-renders from the committed summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.quality_report import (  # noqa: E402
    BM25_VARIANTS,
    METRICS,
    PER_QUERY,
    dump_summary,
    load_summary,
    render_full,
    render_report,
    summarize,
    write_plots,
)
from m3_integrations import M3Model  # noqa: E402
from m3_integrations.evaluation import (  # noqa: E402
    NO_HEADS_DEFAULTS,
    BeirDataset,
    load_beir,
    load_korquad,
    per_query_metrics,
)

logger = logging.getLogger("run_quality")
DATA = Path(os.environ.get("M3_SHARED_DATA", ROOT.parent / "shared" / "data"))
TOOLS = DATA.parent / "tools"
HERE = Path(__file__).resolve().parent
OUT = HERE / "out"  # full results and tables: not committed
K = 100

# ----------------------------------------------------------------------------- configurations
PAPER = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4}
# A deliberately small grid: the paper's weights, equal weights, and one shift towards each signal.
WEIGHT_GRID = {
    "paper .4/.2/.4": PAPER,
    "equal 1/1/1": {"dense": 1.0, "sparse": 1.0, "colbert": 1.0},
    "lexical .3/.4/.3": {"dense": 0.3, "sparse": 0.4, "colbert": 0.3},
    "colbert .2/.2/.6": {"dense": 0.2, "sparse": 0.2, "colbert": 0.6},
}
FUSIONS = ("weighted", "rrf", "relative_score", "confidence", "agreement")


@dataclass(frozen=True)
class Config:
    name: str
    family: str  # single | dense+lexical | hybrid | rerank | peer
    kwargs: dict[str, Any]
    bm25: str = "subword"  # the BM25 tokens: "subword" (model ids), "words" or "stemmed" (see BM25_VARIANTS)


# BM25 over words, as the peers' BM25 retrievers use: plain lower-cased words (no language needed), and
# for English corpora Snowball-stemmed words without stop words (what LlamaIndex's bm25s does); the
# suffixes these add to configuration names are BM25_VARIANTS.
BM25_SINGLES = {
    "subword": "lexical (BM25, subword)",
    "words": "lexical (BM25, words)",
    "stemmed": "lexical (BM25, stemmed words)",
    "language": "lexical (BM25, language)",
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
    grid = WEIGHT_GRID
    if quick:  # the paper's weights, equal weights and the library's default weights
        keep = {"paper .4/.2/.4", "equal 1/1/1"}
        grid = {k: w for k, w in WEIGHT_GRID.items() if k in keep or w == NO_HEADS_DEFAULTS["weights"]}
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


def library_default(configs: Sequence[Config]) -> str | None:
    """The configuration ``M3Index(model)`` searches with for these encoders (no M3 heads): its default
    fusion and weights over the detected language's BM25 analyzer (``language="auto"``, words for such a
    model: ``bm25_tokenizer="auto"``)."""
    for config in configs:
        if (
            config.family == "hybrid"
            and config.bm25 == "language"
            and config.kwargs["fusion"] == NO_HEADS_DEFAULTS["fusion"]
            and config.kwargs["weights"] == NO_HEADS_DEFAULTS["weights"]
        ):
            return config.name
    logger.warning("the library's default %s is not among the configurations measured", NO_HEADS_DEFAULTS)
    return None


def bm25_options(variant: str, language: str | None) -> dict[str, Any] | None:
    """``M3Index`` options of a BM25 variant on a corpus in ``language``; None where it does not apply
    (``stemmed``, the English analyzer named by hand, needs an English corpus). ``language`` is the
    analyzer ``M3Index(language="auto")`` picks from the text; ``words`` keeps plain words."""
    if variant == "subword":
        return {"bm25_tokenizer": "model", "language": None}
    if variant == "words":
        return {"bm25_tokenizer": "word", "language": None}
    if variant == "language":
        return {"language": "auto"}
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
    # Added for issue 18: collections the defaults were never chosen on. MiniLM reads English only.
    (E5, "tydiqa sw"),
    (E5, "tydiqa id"),
    (E5, "tydiqa fi"),
    (E5, "tydiqa te"),
    (E5, "tydiqa bn"),
    (E5, "jsquad"),
    (MINILM, "scifact"),
    (E5, "scifact"),
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
        # Encoding the corpora is most of the time, so the two larger ones keep the documents judged for
        # the sampled queries plus seeded others (measured: docs/evaluation.md).
        autorag = load_beir(DATA / "autorag-ko" / "page", name="autorag-ko/page")
        return [
            Collection(
                "cranfield", [subsample_corpus(sample(load_beir(DATA / "cranfield"), 50), 400)], "english"
            ),
            Collection("autorag-ko/page", [subsample_corpus(sample(autorag, 50), 250)]),
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
        # Gold passages only (every document is some query's answer): relative comparisons.
        *(
            Collection(
                f"tydiqa {lang}",
                [sample(load_beir(DATA / "tydiqa-goldp-dev" / lang, name=f"tydiqa {lang}"), max_queries)],
            )
            for lang in ("sw", "id", "fi", "te", "bn")
        ),
        Collection("jsquad", [sample(load_beir(DATA / "jsquad-v1.3", name="jsquad"), max_queries or 500)]),
        Collection("scifact", [sample(load_beir(DATA / "scifact"), max_queries)], "english"),
    ]


def subsample_corpus(data: BeirDataset, n_docs: int, *, seed: int = 13) -> BeirDataset:
    """A copy whose corpus holds every document judged for its queries plus seeded others, ``n_docs`` in
    all (or the judged ones alone when they are more): a quick run's cut, easier than the collection."""
    judged = {doc for grades in data.qrels.values() for doc in grades}
    others = [doc for doc in data.corpus if doc not in judged]
    extra = random.Random(seed).sample(others, min(max(0, n_docs - len(judged)), len(others)))
    keep = judged | set(extra)
    return dataclasses.replace(
        data,
        corpus={doc: value for doc, value in data.corpus.items() if doc in keep},
        info={**data.info, "subsampled_corpus": len(keep), "corpus_seed": seed},
    )


# ----------------------------------------------------------------------------- helpers
# Wall and CPU seconds per phase of the run, logged at the end: where the time goes. CPU time counts every
# thread of the process, so on a shared machine it says what the run itself cost.
PHASES: dict[str, list[float]] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        spent = PHASES.setdefault(name, [0.0, 0.0])
        spent[0] += time.perf_counter() - wall
        spent[1] += time.process_time() - cpu


def log_phases() -> None:
    total_wall = sum(w for w, _ in PHASES.values())
    for name, (wall, cpu) in sorted(PHASES.items(), key=lambda kv: -kv[1][0]):
        logger.info(
            "time: %-28s %7.1f s wall %7.1f s CPU (%4.1f%%)", name, wall, cpu, 100 * wall / total_wall
        )


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
# The modes whose candidates are the union of the dense and lexical first stages: they share one candidate
# set per query, whatever the fusion or the weights (``M3Index.score_candidates``).
SHARED_CANDIDATE_MODES = ("colbert", "dense+sparse", "hybrid")


def rank_query(
    index: Any, encoded: Any, options: dict[str, Any], sink: list[Any] | None = None
) -> dict[str, list[str]]:
    """One query's top-``K`` ids under each configuration's options (``M3Index.search_options``).

    ``M3Index.score_candidates`` runs the engine's two stages (every signal on every candidate) and
    ``CandidateScores.rank`` fuses and ranks those scores as ``M3Index.search_encoded`` would. The modes of
    :data:`SHARED_CANDIDATE_MODES` are scored once per query and each configuration only re-fuses; a
    single cheap signal (``dense``, ``sparse``) picks its own candidates and is scored on its own.
    ``sink`` receives the shared candidate scores (``benchmarks/signal_cache.py`` keeps them).
    """
    ranked: dict[str, list[str]] = {}
    shared = None
    for name, config_options in options.items():
        if config_options.mode in SHARED_CANDIDATE_MODES:
            if shared is None:
                shared = index.score_candidates(encoded, index.search_options(K, mode="hybrid"))
            scored = shared
        else:
            scored = index.score_candidates(encoded, config_options)
        ranked[name] = [doc_id for doc_id, _ in scored.rank(config_options)]
    if sink is not None:
        sink.append(
            shared if shared is not None else index.score_candidates(encoded, index.search_options(K))
        )
    return ranked


def save_signals(
    encoder: str, dataset: BeirDataset, ids: list[str], engines: dict[str, Any], sinks: dict[str, list[Any]]
) -> None:
    """Every query's candidates and signals per BM25 variant, in ``benchmarks/out/signals/``."""
    from benchmarks import signal_cache
    from benchmarks.encode_cache import file_stem

    info = {"name": dataset.name, "num_docs": len(ids), "num_queries": len(dataset.queries)}
    for variant in ("words", "language", "subword"):
        if variant in engines:
            arrays = signal_cache.to_arrays(
                engines[variant],
                sinks[variant],
                ids,
                list(dataset.queries),
                dataset.qrels,
                info=info,
                variant=variant,
            )
            signal_cache.save(arrays, signal_cache.signal_path(encoder, file_stem(dataset.name), variant))


def check_against_engine(index: Any, encoded: list[Any], n: int = 20) -> float:
    """Share of (query, config) pairs whose top-10 by :func:`rank_query` is ``M3Index.search_encoded``'s."""
    checks = [{"mode": "hybrid", "fusion": f, "weights": PAPER} for f in FUSIONS] + [
        {"mode": "colbert"},
        {"mode": "dense+sparse", "fusion": "relative_score", "weights": {"dense": 1, "sparse": 1}},
    ]
    options = {str(i): index.search_options(K, **kwargs) for i, kwargs in enumerate(checks)}
    same = total = 0
    for e in encoded[:n]:
        ranked = rank_query(index, e, options)
        for i, kwargs in enumerate(checks):
            engine = [h.id for h in index.search_encoded(e, k=10, **kwargs)]
            same += ranked[str(i)][:10] == engine
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


QUICK_LATENCY_CONFIGS = (
    "dense",
    "lexical (BM25, words)",
    "colbert (identity)",
    "hybrid weighted paper .4/.2/.4",
)


def run_collection(
    encoder: Encoder, model: M3Model, collection: Collection, *, quick: bool, latency_n: int, peers: bool
) -> list[dict[str, Any]]:
    from m3_integrations import M3Index

    docs = collection.query_sets[0].documents()
    ids, texts = [d for d, _ in docs], [t for _, t in docs]
    logger.info("[%s] %s: encoding %d documents", encoder.name, collection.name, len(texts))
    start = time.perf_counter()
    with phase("encode corpus"):
        output = model.encode_passages(texts, return_sparse=False, return_colbert=True, show_progress=False)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    with phase("build indexes"):
        index = M3Index(model, lexical="bm25", bm25_tokenizer="model")
        index.add_encoded(output, texts, ids=ids)
    index_s = time.perf_counter() - start
    build_s = encode_s + index_s
    logger.info(
        "[%s] %s: encoded in %.1fs, indexed in %.1fs", encoder.name, collection.name, encode_s, index_s
    )
    # One more index per BM25 variant over the same encodings.
    engines: dict[str, Any] = {"subword": index}
    for variant in BM25_VARIANTS:
        options = bm25_options(variant, collection.language)
        if options is not None:
            other = M3Index(model, lexical="bm25", **options)
            with phase("build indexes"):
                other.add_encoded(output, texts, ids=ids)
            engines[variant] = other
    cache = DenseCache(model)
    cache.passages.update(zip(texts, output.dense, strict=True))
    del output

    peer_searches: dict[str, tuple[Any, float]] = {}
    if peers:
        start = time.perf_counter()
        with phase("build peers"):
            lc = langchain_peer(cache, ids, texts)
        peer_searches["LangChain EnsembleRetriever (BM25+vector, RRF)"] = (lc, time.perf_counter() - start)
        start = time.perf_counter()
        with phase("build peers"):
            li = llama_index_peers(cache, ids, texts)
        li_s = time.perf_counter() - start
        peer_searches["LlamaIndex QueryFusion reciprocal_rerank"] = (li["reciprocal_rerank"], li_s)
        peer_searches["LlamaIndex QueryFusion relative_score"] = (li["relative_score"], li_s)

    rows: list[dict[str, Any]] = []
    configs = [c for c in our_configs(quick) if c.bm25 in engines]
    for dataset in collection.query_sets:
        qtexts = list(dataset.queries.values())
        start = time.perf_counter()
        with phase("encode queries"):
            encoded = index.encode_queries(qtexts, colbert=True)
        qenc_s = time.perf_counter() - start
        cache.queries = {q: e.dense for q, e in zip(qtexts, encoded, strict=True)}
        logger.info("[%s] %s: %d queries encoded in %.1fs", encoder.name, dataset.name, len(qtexts), qenc_s)
        with phase("check against the engine"):
            agreement = check_against_engine(index, encoded, n=5 if quick else 20)
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
        variant_tokens = {v: engine.bm25_tokens(qtexts) for v, engine in engines.items()}
        variant_options = {
            v: {c.name: engine.search_options(K, **c.kwargs) for c in configs if c.bm25 == v}
            for v, engine in engines.items()
        }
        sinks: dict[str, list[Any]] = {v: [] for v in engines}
        with phase("rank every configuration"):
            for qi, e in enumerate(encoded):
                for variant, engine in engines.items():
                    per_variant = dataclasses.replace(e, bm25_tokens=variant_tokens[variant][qi])
                    ranks = rank_query(engine, per_variant, variant_options[variant], sinks[variant])
                    for name, ids_ in ranks.items():
                        ranked[name].append(ids_)
        if not quick:  # the per-query signals benchmarks/select_default.py chooses the default on
            save_signals(encoder.name, dataset, ids, engines, sinks)
        logger.info(
            "[%s] %s: %d configs scored in %.1fs",
            encoder.name,
            dataset.name,
            len(configs),
            time.perf_counter() - start,
        )
        by_name: dict[str, dict[str, float]] = {}
        default_name = library_default(configs)
        for config in configs:
            metrics = score_run(dataset, ranked[config.name])
            by_name[config.name] = metrics
            latency = None
            # Every confidence configuration with word BM25 too (the default rule may pick any of them);
            # timing is a quarter of a quick run's time, so it times a few and the library's default.
            if quick:
                timed = config.name in QUICK_LATENCY_CONFIGS
            else:
                timed = config.name in LATENCY_CONFIGS or (
                    config.kwargs.get("fusion") == "confidence" and config.bm25 == "words"
                )
            if timed or config.name == default_name:
                engine = engines[config.bm25]
                with phase("latency of our configs"):
                    latency = p50_ms(
                        lambda q, c=config, e=engine: e.search(q, k=K, **c.kwargs), latency_queries
                    )
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
            n_rerank = RERANK_QUERIES // 10 if quick else RERANK_QUERIES
            subset = dataset.subsample_queries(min(n_rerank, len(qtexts)), seed=0)
            keep = [i for i, qid in enumerate(dataset.queries) if qid in subset.queries]
            start = time.perf_counter()
            with phase("rerank"):
                hits = index.search_batch([qtexts[i] for i in keep], k=K, **kwargs)
            logger.info(
                "[%s] %s: rerank run in %.1fs", encoder.name, dataset.name, time.perf_counter() - start
            )
            metrics = score_run(subset, [[h.id for h in per_q] for per_q in hits])
            base_metrics = score_run(subset, [ranked[base_name][i] for i in keep])
            with phase("rerank"):
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
            with phase("peers: search"):
                peer_ranked = [search(q) for q in qtexts]
            metrics = score_run(dataset, peer_ranked)
            cache.use_query_cache = False  # latency includes encoding the query, as ours does
            with phase("peers: latency"):
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
        _write_atomically(target, text)


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


@dataclass(frozen=True)
class OutputPaths:
    """Where a run writes: full results and tables (not committed), the summary, the report and plots."""

    results: Path
    summary: Path
    report: Path

    @property
    def full_report(self) -> Path:
        return self.results.with_name("REPORT-full.md")

    @classmethod
    def for_run(cls, quick: bool) -> OutputPaths:
        # A quick run never overwrites the committed report: everything it writes goes to out/quick/.
        if quick:
            folder = OUT / "quick"
            return cls(folder / "quality_results.json", folder / "quality_summary.json", folder / "REPORT.md")
        return cls(OUT / "quality_results.json", HERE / "quality_summary.json", HERE / "REPORT.md")


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(saved: dict[str, Any] | None, paths: OutputPaths) -> None:
    """Summary (from full results, when given), full tables, plots and REPORT.md (from the summary)."""
    previous = None
    if paths.summary.is_file():
        try:
            previous = load_summary(paths.summary)
        except ValueError as err:
            logger.warning("%s; it will be replaced", err)
    if saved is not None and saved.get("rows"):
        summary = summarize(saved, previous=previous)
        _write_atomically(paths.summary, dump_summary(summary))
        _write_atomically(paths.full_report, render_full(saved))
    elif previous is not None:
        summary = previous
    else:
        msg = f"nothing to render: neither {paths.results} nor {paths.summary} holds results"
        raise SystemExit(msg)
    plots = write_plots(summary, paths.report.parent)
    _write_atomically(paths.report, render_report(summary, plots))
    logger.info("wrote %s, %s and %s", paths.report, paths.summary, ", ".join(plots))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a subset in under 10 minutes (benchmarks/out/quick/)"
    )
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
    parser.add_argument(
        "--latency-queries",
        type=int,
        default=None,
        help="single-query calls timed per config (10; --quick: 5)",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip LangChain/LlamaIndex")
    parser.add_argument("--resume", action="store_true", help="keep saved results and skip what is done")
    parser.add_argument(
        "--render-only",
        "--report-only",
        dest="render_only",
        action="store_true",
        help="summarise the saved full results (or, without them, the committed summary) and render the "
        "report and plots again; nothing is encoded",
    )
    args = parser.parse_args(argv)
    if args.encoders is None:
        args.encoders = [E5] if args.quick else [MINILM, E5]
    if args.latency_queries is None:
        args.latency_queries = 5 if args.quick else 10
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "bm25s", "m3_integrations.model"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    paths = OutputPaths.for_run(args.quick)
    saved: dict[str, Any] | None = None
    if (args.resume or args.render_only) and paths.results.is_file():
        saved = load_results(paths.results)
    if args.render_only:
        if saved is None:
            logger.info("no full results at %s: rendering from %s", paths.results, paths.summary)
        write_outputs(saved, paths)
        return 0
    saved = saved or {"rows": [], "runs": []}
    command = "python benchmarks/run_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    saved.setdefault("runs", []).append(
        {"command": command.strip(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    )
    saved["environment"] = environment()
    saved["library_default"] = library_default(our_configs(args.quick))
    done = {(r["encoder"], r["dataset"]) for r in saved["rows"]}
    encoders = {e.name: e for e in find_encoders(args.encoders)}
    models: dict[str, M3Model] = {}
    with phase("load collections"):
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
            start = time.perf_counter()
            with phase("load model"):
                models[encoder.name] = load_model(encoder)
            logger.info("[%s] model loaded in %.1fs", encoder.name, time.perf_counter() - start)
        saved.setdefault("encoders", {})[encoder.name] = {
            "path": encoder.path,
            "dim": models[encoder.name].dense_dim,
            **encoder.kwargs,
        }
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
        save_results(saved, paths.results)
        with phase("render report"):
            write_outputs(saved, paths)
    log_phases()
    return 0


if __name__ == "__main__":
    sys.exit(main())
