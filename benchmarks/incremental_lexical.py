"""Adding documents to a large lexical index: segmented inverted indexes against one rebuilt index.

Issue 16, item 5. A :class:`~m3_integrations.index.sparse_store.SparseStore` of ``--docs`` rows with
BGE-M3's lexical shape (``--nnz`` weights per document over a 250,002-token vocabulary, drawn with a
Zipf-like skew) takes ``--cycles`` rounds of one ``append`` of ``--batch`` documents followed by one
query (``--terms`` query terms). Two policies:

- ``segmented``: the store as shipped (new rows become a small segment; similar sizes merge);
- ``rebuild``: every append merged into one segment, so the next query rebuilds the whole inverted index
  (the store's behaviour before segments: one CSR + a CSC copy dropped on every add).

Reported: per cycle, the p50/p95 of append + query, of the query alone right after the append, and a
query on the unchanged store (no add) for reference; engine only, no model.

Examples:
    python benchmarks/incremental_lexical.py                      # 100,000 documents
    python benchmarks/incremental_lexical.py --docs 1000000 --cycles 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from m3_integrations.index import sparse_store
from m3_integrations.index.sparse_store import SparseStore

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "out"
VOCAB = 250_002


def synthetic_rows(rng: np.random.Generator, rows: int, nnz: int) -> sp.csr_matrix:
    """``rows`` documents with ``nnz`` distinct token ids each (skewed towards frequent ids)."""
    ids = np.minimum((rng.pareto(1.1, size=(rows, nnz * 2)) * 50).astype(np.int64), VOCAB - 1)
    indptr = [0]
    indices = []
    for row in ids:
        uniq = np.unique(row)[:nnz]
        indices.append(uniq)
        indptr.append(indptr[-1] + len(uniq))
    flat = np.concatenate(indices)
    data = rng.random(len(flat)).astype(np.float32) * 0.3
    return sp.csr_matrix((data, flat, np.asarray(indptr)), shape=(rows, VOCAB))


def run(
    policy: str, base: sp.csr_matrix, extra: list[sp.csr_matrix], queries: list[dict[int, float]]
) -> dict:
    store = SparseStore(VOCAB)
    store.restore(base)
    store.scores(queries[0])  # build the first inverted index outside the timings
    sparse_store.MERGE_RATIO = float("inf") if policy == "rebuild" else 2
    cycle_ms, query_ms, steady_ms = [], [], []
    try:
        for i, chunk in enumerate(extra):
            query = queries[i % len(queries)]
            start = time.perf_counter()
            store.append(chunk)
            mid = time.perf_counter()
            store.scores(query)
            end = time.perf_counter()
            store.scores(query)  # the same query again: nothing changed since
            steady = time.perf_counter() - end
            cycle_ms.append((end - start) * 1e3)
            query_ms.append((end - mid) * 1e3)
            steady_ms.append(steady * 1e3)
    finally:
        sparse_store.MERGE_RATIO = 2
    pct = lambda xs, q: float(np.percentile(xs, q))  # noqa: E731
    return {
        "policy": policy,
        "cycle_p50": pct(cycle_ms, 50),
        "cycle_p95": pct(cycle_ms, 95),
        "query_after_add_p50": pct(query_ms, 50),
        "query_steady_p50": pct(steady_ms, 50),
        "segments": store.segments,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--nnz", type=int, default=90)
    parser.add_argument("--terms", type=int, default=20)
    parser.add_argument("--policies", nargs="+", default=["segmented", "rebuild"])
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    base = synthetic_rows(rng, args.docs, args.nnz)
    extra = [synthetic_rows(rng, args.batch, args.nnz) for _ in range(args.cycles)]
    queries = [
        {int(t): float(w) for t, w in zip(row.indices[: args.terms], row.data[: args.terms], strict=True)}
        for row in synthetic_rows(rng, 16, args.terms * 2)
    ]
    results = [run(policy, base, extra, queries) for policy in args.policies]
    print(
        f"{args.docs:,} documents x {args.nnz} lexical weights, "
        f"{args.cycles} cycles of add({args.batch}) + query"
    )
    print(
        "| policy | add + query p50 ms | p95 ms | query right after add p50 ms "
        "| query, no add p50 ms | segments |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['policy']} | {r['cycle_p50']:.2f} | {r['cycle_p95']:.2f} | {r['query_after_add_p50']:.2f} "
            f"| {r['query_steady_p50']:.2f} | {r['segments']} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "machine": platform.processor() or platform.machine(), "results": results}
    path = OUT / f"incremental_lexical_{args.docs}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
