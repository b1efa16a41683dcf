"""M3Index engine scaling on synthetic representations (no model, no query encoding).

Documents get realistic shapes: a unit-norm dense vector (d=1024), 30-150 lexical weights over a
250k-token vocabulary with Zipf-distributed token ids, and 64-512 unit-norm ColBERT vectors (drawn from a
pool of "token" vectors, so repeated tokens share vectors as in real text). Queries: a dense vector,
8-20 lexical weights, 16 ColBERT vectors. Every document has ``{"tenant": i % 10}`` as metadata for
the filtered rows. Reported: build time (``add_encoded`` only), bytes per document
per representation, and p50/p95 latency of ``search_encoded`` per mode.

ColBERT at d=1024 costs 2 KB per vector in float16 (~590 KB per 288-vector document), so 100k documents
would need ~59 GB: above 10k documents the ColBERT dimension is reduced (``--colbert-dim-large``, default
128) and said so in the table. The ColBERT stage's cost depends on the candidates, not on the corpus size,
so the 10k row at d=1024 gives its full-size cost.

Usage:
    python benchmarks/search_scaling.py            # 10k (d=1024 ColBERT), 100k, 1M (dense+sparse)
    python benchmarks/search_scaling.py --quick    # 2k and 20k, a few queries
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m3_integrations import M3Index, M3Output
from m3_integrations.index import EncodedQuery

VOCAB = 250_000
DENSE_DIM = 1024
OUT = Path(__file__).parent / "out"


def fake_model(colbert_dim: int) -> SimpleNamespace:
    identity = {"model_name_or_path": "synthetic", "fingerprint": "synthetic"}
    return SimpleNamespace(
        has_sparse=True,
        dense_dim=DENSE_DIM,
        colbert_dim=colbert_dim,
        vocab_size=VOCAB,
        model_name_or_path="synthetic",
        identity=identity,
        fingerprint="synthetic",
    )


class Synthetic:
    def __init__(self, colbert_dim: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.colbert_dim = colbert_dim
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        self.token_cdf = np.cumsum(1.0 / ranks)
        self.token_cdf /= self.token_cdf[-1]
        pool = self.rng.standard_normal((32768, colbert_dim), dtype=np.float32)
        pool /= np.linalg.norm(pool, axis=1, keepdims=True)
        self.pool = pool.astype(np.float16)

    def tokens(self, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.token_cdf, self.rng.random(n)), VOCAB - 1)

    def dense(self, n: int) -> np.ndarray:
        x = self.rng.standard_normal((n, DENSE_DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def lexical(self, n: int, low: int = 30, high: int = 150) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        counts = self.rng.integers(low, high + 1, n)
        rows = np.repeat(np.arange(n), counts)
        cols = self.tokens(int(counts.sum()))
        weights = sp.csr_matrix(
            (self.rng.uniform(0.01, 0.35, len(cols)).astype(np.float32), (rows, cols)), shape=(n, VOCAB)
        )
        weights.sum_duplicates()
        tf = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(n, VOCAB))
        tf.sum_duplicates()
        return weights, tf

    def colbert(self, n: int, low: int = 64, high: int = 512) -> list[np.ndarray]:
        lengths = self.rng.integers(low, high + 1, n)
        return [self.pool[self.rng.integers(0, len(self.pool), size)] for size in lengths]

    def batch(self, start: int, size: int, *, colbert: bool) -> tuple[M3Output, sp.csr_matrix, dict]:
        """Documents ``start .. start + size``: outputs, BM25 term counts, ids and metadata."""
        weights, tf = self.lexical(size)
        output = M3Output(
            dense=self.dense(size),
            lexical_weights=weights,  # type: ignore[arg-type]
            colbert_vecs=self.colbert(size) if colbert else None,
            num_tokens=[0] * size,
        )
        rows = range(start, start + size)
        return output, tf, {"ids": [f"d{i}" for i in rows], "metadatas": [{"tenant": i % 10} for i in rows]}

    def query(self) -> EncodedQuery:
        lex_tokens = np.unique(self.tokens(int(self.rng.integers(8, 21))))
        colbert = self.pool[self.rng.integers(0, len(self.pool), 16)].astype(np.float32)
        return EncodedQuery(
            dense=self.dense(1)[0],
            lexical_weights=dict(
                zip(lex_tokens.tolist(), self.rng.uniform(0.05, 0.3, len(lex_tokens)).tolist(), strict=False)
            ),
            colbert_vecs=colbert,
            bm25_tokens=lex_tokens.tolist(),
        )


def build(
    n: int,
    colbert_dim: int,
    store_colbert: bool,
    batch: int,
    *,
    colbert_dtype: str = "float16",
    dense_dtype: str = "float32",
) -> tuple[M3Index, float, Synthetic]:
    synth = Synthetic(colbert_dim)
    index = M3Index(
        fake_model(colbert_dim),  # type: ignore[arg-type]
        store_colbert=store_colbert,
        colbert_dtype=colbert_dtype,  # type: ignore[arg-type]
        dense_dtype=dense_dtype,  # type: ignore[arg-type]
    )
    index.reserve(n, n * 288 + 4096 if store_colbert else 0)
    elapsed = 0.0
    for start in range(0, n, batch):
        size = min(batch, n - start)
        output, tf, rows = synth.batch(start, size, colbert=store_colbert)
        t0 = time.perf_counter()
        index.add_encoded(output, [""] * size, bm25_tokens=tf, **rows)
        elapsed += time.perf_counter() - t0
        del output
    t0 = time.perf_counter()
    index.search_encoded(synth.query(), k=10, mode="sparse")  # builds the inverted CSC once
    index.search_encoded(synth.query(), k=10, weights={"bm25": 0.2}, mode="dense+sparse")
    elapsed += time.perf_counter() - t0
    return index, elapsed, synth


def time_mode(index: M3Index, synth: Synthetic, n_queries: int, **kwargs: object) -> tuple[float, float]:
    queries = [synth.query() for _ in range(n_queries + 2)]
    for q in queries[:2]:  # warm-up
        index.search_encoded(q, k=10, **kwargs)  # type: ignore[arg-type]
    times = []
    for q in queries[2:]:
        t0 = time.perf_counter()
        index.search_encoded(q, k=10, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


MODES = {
    "dense": {"mode": "dense"},
    "sparse": {"mode": "sparse"},
    "dense+sparse": {"mode": "dense+sparse"},
    "dense+sparse+bm25": {"mode": "dense+sparse", "weights": {"bm25": 0.2}},
    "colbert (c=100)": {"mode": "colbert"},
    "hybrid (c=50, <=100 cand.)": {"mode": "hybrid", "candidates": 50},
    "hybrid (c=100, <=200 cand.)": {"mode": "hybrid", "candidates": 100},
    "hybrid rrf (c=100)": {"mode": "hybrid", "fusion": "rrf"},
    "dense+sparse, filter 1 in 10": {"mode": "dense+sparse", "filter": {"tenant": 3}},
    "hybrid (c=50), filter 1 in 10": {"mode": "hybrid", "candidates": 50, "filter": {"tenant": 3}},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2k and 20k documents, 10 queries")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--colbert-dim-large", type=int, default=128, help="ColBERT d above 10k docs")
    parser.add_argument("--no-million", action="store_true", help="skip the 1M dense+sparse run")
    parser.add_argument("--colbert-dtype", default="float16", choices=["float16", "int8"])
    parser.add_argument("--dense-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument(
        "--sizes", default=None, help="explicit runs, e.g. '10000:1024,100000:128' (docs:ColBERT d; 0 = none)"
    )
    args = parser.parse_args()

    if args.sizes:
        runs = []
        for item in args.sizes.split(","):
            n_docs, dim = (int(x) for x in item.split(":"))
            runs.append((n_docs, dim or DENSE_DIM, dim > 0))
        n_queries = args.queries
    elif args.quick:
        runs = [(2_000, DENSE_DIM, True), (20_000, args.colbert_dim_large, True)]
        n_queries = 10
    else:
        runs = [(10_000, DENSE_DIM, True), (100_000, args.colbert_dim_large, True)]
        if not args.no_million:
            runs.append((1_000_000, DENSE_DIM, False))
        n_queries = args.queries

    rows = []
    for n, colbert_dim, store_colbert in runs:
        index, build_s, synth = build(
            n,
            colbert_dim,
            store_colbert,
            batch=1000 if store_colbert else 50_000,
            colbert_dtype=args.colbert_dtype,
            dense_dtype=args.dense_dtype,
        )
        memory = index.memory_bytes()
        per_doc = {k: v / n for k, v in memory.items()}
        modes = (
            MODES
            if store_colbert
            else {k: v for k, v in MODES.items() if "colbert" not in k and "hybrid" not in k}
        )
        for name, kwargs in modes.items():
            p50, p95 = time_mode(index, synth, n_queries, **kwargs)
            rows.append(
                {
                    "docs": n,
                    "colbert_d": colbert_dim if store_colbert else 0,
                    "mode": name,
                    "p50": p50,
                    "p95": p95,
                    "build_s": build_s,
                    **{f"B/doc {k}": v for k, v in per_doc.items()},
                }
            )
            print(f"{n:>9,d} {name:<28s} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms", flush=True)
        colbert_f32 = index.colbert_vectors * colbert_dim * 4
        if store_colbert:
            print(
                f"{n:>9,d} build {build_s:.1f} s; bytes/doc: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in per_doc.items())
                + f"; ColBERT {args.colbert_dtype} / float32 = {memory['colbert'] / colbert_f32:.3f}",
                flush=True,
            )
        else:
            print(
                f"{n:>9,d} build {build_s:.1f} s; bytes/doc: "
                + ", ".join(f"{k} {v:,.0f}" for k, v in per_doc.items() if k != "colbert"),
                flush=True,
            )
        del index, synth
        gc.collect()

    print()
    print(f"ColBERT dtype: {args.colbert_dtype}; dense dtype: {args.dense_dtype}")
    print("| docs | ColBERT d | mode | p50 ms | p95 ms |")
    print("|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['docs']:,} | {r['colbert_d'] or '-'} | {r['mode']} | {r['p50']:.2f} | {r['p95']:.2f} |")
    print()
    print("| docs | build s | dense B/doc | sparse B/doc (CSR+CSC) | ColBERT B/doc | BM25 B/doc |")
    print("|---:|---:|---:|---:|---:|---:|")
    seen = set()
    for r in rows:
        if r["docs"] in seen:
            continue
        seen.add(r["docs"])
        print(
            f"| {r['docs']:,} | {r['build_s']:.1f} | {r['B/doc dense']:,.0f} | {r['B/doc sparse']:,.0f} | "
            f"{r['B/doc colbert']:,.0f} | {r['B/doc bm25']:,.0f} |"
        )
    plot(rows, f"{args.colbert_dtype}_dense_{args.dense_dtype}")


def plot(rows: list[dict], label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        points = [(r["docs"], r["p50"]) for r in rows if r["mode"] == mode]
        ax.plot(*zip(*points, strict=True), marker="o", label=mode)
        if "colbert" in mode or "hybrid" in mode:  # the ColBERT dimension differs between sizes
            for r in rows:
                if r["mode"] == mode:
                    ax.annotate(f"d={r['colbert_d']}", (r["docs"], r["p50"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents")
    ax.set_ylabel("p50 latency (ms, engine only)")
    ax.axhline(30, color="grey", linestyle="--", linewidth=0.8)
    ax.set_title("M3Index engine latency (synthetic; ColBERT d per point)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = OUT / f"search_scaling_{label}.png"
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
