"""Ingest throughput and query latency of QdrantM3Store and MilvusM3Store (local modes) against M3Index.

Synthetic representations from ``benchmarks/search_scaling.py``'s generator (no model, no encoding):
unit dense vectors (d=1024), 30-150 M3 lexical weights over a Zipf vocabulary, and ColBERT vectors
(``--colbert-vectors`` per document, d=``--colbert-dim``; fewer and smaller than real ones so that 100k
documents fit the local modes' memory). Queries: dense, 8-20 lexical weights, 16 ColBERT vectors;
hybrid search, k=10, 100 candidates per signal (at most 200 candidates).

Reported per backend and size: ingest documents/s (writes only), p50/p95 query latency, the per-stage
p50 (prefetch, score fetch, fusion, hit fetch: ``store.last_timings``) and the **client-side
overhead**: a query's time minus the time spent inside the client's methods (measured by a proxy
around the client), i.e. what our code adds around the database's own work. In local mode the
"server" runs in this process (Qdrant: Python; Milvus Lite: an embedded server over a local socket),
so its share says nothing about a real server; the overhead does. For Milvus the overhead includes
the candidates' ColBERT MaxSim, computed here (Qdrant computes it on the server): reported on its own
as ``maxsim`` (the time in ``scoring.colbert_scores_stored``), with the overhead without it.

``--ingest-only`` measures the ingest and runs no query (sizes whose queries would take too long in a
local mode); ``--threads`` sets torch's threads (the MaxSim kernel; on a shared 2-core VM two threads
wait on each other). Each row records the load average before and after.

Usage:
    python benchmarks/store_backends.py                     # 10k and 100k documents
    python benchmarks/store_backends.py --sizes 2000 --queries 20
    python benchmarks/store_backends.py --sizes 1000 --queries 21 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_scaling
from search_scaling import DENSE_DIM, VOCAB, Synthetic

from m3_integrations import M3Index, M3Output, scoring
from m3_integrations.stores.remote import StoredDocument

OUT = Path(__file__).parent / "out"


def fake_model(colbert_dim: int) -> SimpleNamespace:
    """search_scaling's stand-in model, with what a store records of a model's identity."""
    model = search_scaling.fake_model(colbert_dim)
    model.has_colbert_head = True
    model.identity |= {"dense_dim": DENSE_DIM, "colbert_dim": colbert_dim, "vocab_size": VOCAB}
    return model


class Stopwatch:
    """Adds up the seconds spent in the functions it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


class TimedClient(Stopwatch):
    """Forwards to a client and adds up the seconds spent in its methods."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return self.wrap(attribute) if callable(attribute) else attribute


class TimedMaxSim(Stopwatch):
    """Replaces ``scoring.colbert_scores_stored`` while active and adds up the seconds spent in it."""

    def __enter__(self) -> TimedMaxSim:
        self._original = scoring.colbert_scores_stored
        scoring.colbert_scores_stored = self.wrap(self._original)
        return self

    def __exit__(self, *exc: object) -> None:
        scoring.colbert_scores_stored = self._original


def batches(synth: Synthetic, n: int, batch: int, vectors: int) -> Any:
    for start in range(0, n, batch):
        size = min(batch, n - start)
        weights, _ = synth.lexical(size)
        dense = synth.dense(size)
        colbert = [synth.pool[synth.rng.integers(0, len(synth.pool), vectors)] for _ in range(size)]
        yield start, size, dense, weights, colbert


def build_store(backend: str, n: int, args: argparse.Namespace, folder: Path) -> tuple[Any, float]:
    model = fake_model(args.colbert_dim)
    if backend == "qdrant":
        from qdrant_client import QdrantClient

        from m3_integrations.stores.qdrant import QdrantM3Store

        store: Any = QdrantM3Store(model, QdrantClient(":memory:"), collection_name=f"b{n}")  # type: ignore[arg-type]
    else:
        from pymilvus import MilvusClient

        from m3_integrations.stores.milvus import MilvusM3Store

        client = MilvusClient(str(folder / f"m{n}.db"))
        store = MilvusM3Store(model, client, collection_name=f"b{n}", dense_index="FLAT")  # type: ignore[arg-type]
    store._check_or_create(create=True)
    store._exists = True
    synth = Synthetic(args.colbert_dim)
    seconds = 0.0
    for start, size, dense, weights, colbert in batches(synth, n, args.batch, args.colbert_vectors):
        seqs = store._next_seqs(size)
        documents = []
        for i in range(size):
            row = weights.getrow(i)
            documents.append(
                StoredDocument(
                    id=f"d{start + i}",
                    text="",
                    metadata={"tenant": (start + i) % 10},
                    seq=seqs[i],
                    dense=dense[i],
                    lexical=dict(zip(row.indices.tolist(), row.data.tolist(), strict=True)),
                    colbert=colbert[i].astype(np.float32),
                    metadata_keys=["tenant"],
                )
            )
        t0 = time.perf_counter()
        store._write(documents)
        seconds += time.perf_counter() - t0
    return store, seconds


def build_index(n: int, args: argparse.Namespace) -> tuple[M3Index, float]:
    index = M3Index(fake_model(args.colbert_dim))  # type: ignore[arg-type]
    synth = Synthetic(args.colbert_dim)
    seconds = 0.0
    for start, size, dense, weights, colbert in batches(synth, n, args.batch, args.colbert_vectors):
        output = M3Output(dense=dense, lexical_weights=weights, colbert_vecs=colbert, num_tokens=[0] * size)  # type: ignore[arg-type]
        ids = [f"d{i}" for i in range(start, start + size)]
        metadatas = [{"tenant": i % 10} for i in range(start, start + size)]
        t0 = time.perf_counter()
        index.add_encoded(output, [""] * size, ids=ids, metadatas=metadatas, bm25_tokens=[[]] * size)
        seconds += time.perf_counter() - t0
    return index, seconds


def time_queries(target: Any, args: argparse.Namespace, timed: TimedClient | None) -> dict[str, float]:
    synth = Synthetic(args.colbert_dim, seed=1)
    queries = [synth.query() for _ in range(args.queries + 2)]
    totals, overheads, maxsims, stages = [], [], [], {}
    for number, query in enumerate(queries):
        overhead = maxsim_seconds = 0.0
        if timed is not None:
            options = target.search_options(10, candidates=100)
            timed.seconds = 0.0
            with TimedMaxSim() as maxsim:
                t0 = time.perf_counter()
                target.search_encoded(query, options)
                total = time.perf_counter() - t0
            overhead, maxsim_seconds = total - timed.seconds, maxsim.seconds
        else:
            t0 = time.perf_counter()
            target.search_encoded(query, k=10, candidates=100)
            total = time.perf_counter() - t0
        if number < 2:
            continue  # warm-up
        totals.append(total * 1000)
        overheads.append(overhead * 1000)
        maxsims.append(maxsim_seconds * 1000)
        for stage, seconds in getattr(target, "last_timings", {}).items():
            stages.setdefault(stage, []).append(seconds * 1000)
    row = {
        "queries": len(totals),
        "p50_ms": float(np.percentile(totals, 50)),
        "p95_ms": float(np.percentile(totals, 95)),
    }
    if timed is not None:
        without = np.subtract(overheads, maxsims)
        row["overhead_p50_ms"] = float(np.percentile(overheads, 50))
        row["overhead_p95_ms"] = float(np.percentile(overheads, 95))
        row["maxsim_p50_ms"] = float(np.percentile(maxsims, 50))
        row["overhead_without_maxsim_p50_ms"] = float(np.percentile(without, 50))
        row["overhead_without_maxsim_p95_ms"] = float(np.percentile(without, 95))
        row |= {f"{stage}_p50_ms": float(np.percentile(v, 50)) for stage, v in stages.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["m3index", "qdrant", "milvus"])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--colbert-vectors", type=int, default=32)
    parser.add_argument("--colbert-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--ingest-only", action="store_true", help="measure the ingest, run no query")
    parser.add_argument("--out", type=Path, default=OUT / "store_backends.json")
    args = parser.parse_args()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for backend in args.backends:
                load_before = os.getloadavg()[0]
                if backend == "m3index":
                    target, seconds = build_index(n, args)
                    timed = None
                else:
                    target, seconds = build_store(backend, n, args, Path(tmp))
                    timed = TimedClient(target.client)
                    target.client = timed
                row = {"backend": backend, "documents": n, "ingest_docs_per_s": n / seconds}
                if not args.ingest_only:
                    row |= time_queries(target, args, timed)
                row |= {"threads": args.threads, "load_before": load_before, "load_after": os.getloadavg()[0]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del target
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print()
    print(
        "| backend | docs | ingest docs/s | p50 ms | p95 ms | prefetch | scores | fusion | fetch "
        "| overhead p50 / p95 | MaxSim p50 | overhead without MaxSim p50 / p95 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "p50_ms" not in r:
            print(f"| {r['backend']} | {r['documents']:,} | {r['ingest_docs_per_s']:,.0f} |" + " – |" * 9)
            continue
        stages = " | ".join(
            f"{r[f'{s}_p50_ms']:.1f}" if f"{s}_p50_ms" in r else "–"
            for s in ("prefetch", "scores", "fusion", "fetch")
        )
        overhead = maxsim = without = "–"
        if "overhead_p50_ms" in r:
            overhead = f"{r['overhead_p50_ms']:.2f} / {r['overhead_p95_ms']:.2f}"
            maxsim = f"{r['maxsim_p50_ms']:.2f}"
            without = f"{r['overhead_without_maxsim_p50_ms']:.2f} / {r['overhead_without_maxsim_p95_ms']:.2f}"
        print(
            f"| {r['backend']} | {r['documents']:,} | {r['ingest_docs_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {stages} | {overhead} | {maxsim} | {without} |"
        )


if __name__ == "__main__":
    main()
