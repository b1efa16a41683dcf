"""Memory-mapped ColBERT (``M3Index.load(..., mmap=True)``) against a load into memory (issue 16).

Builds one index of synthetic BGE-M3-shaped documents with all three signals (dense d=1024, 30-150
lexical weights over a 250k vocabulary, 64-512 ColBERT vectors of d=1024 drawn from a pool: see
``search_scaling.py``) in ``colbert_storage="compact"``, saves it under ``benchmarks/out/``, then loads
it twice, each time in a fresh process: into memory and memory-mapped. Per load it reports the load
time, the process's resident memory after the load (anonymous and file-backed pages apart, from
``/proc/self/status``), ``memory_bytes()``, the p50/p95 latency of a few search modes (engine only),
and the resident memory after those queries. The folder's bytes per document per representation come
from the npz members' sizes.

The ColBERT vectors are encoded by the real codec (k-means on a sample, then each pooled vector's
centroid and residual bits): they come from a pool of 32,768 "token" vectors, so pooled vectors repeat
more than in real text; the bytes per vector and the work per query do not depend on that.

Usage::

    python benchmarks/mmap_load.py --docs 100000            # build (once), then measure both loads
    python benchmarks/mmap_load.py --docs 20000 --queries 30
    # 1M: ColBERT from 4,096 pool documents encoded once each; only the mapped load; ANN built
    python benchmarks/mmap_load.py --docs 1000000 --pool-docs 4096 --batch 10000 --queries 30 \
        --loads mmap --ann true
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_scaling import DENSE_DIM, OUT, Synthetic, fake_model, time_mode

from m3_integrations import M3Index

MODES = {
    "dense": {"mode": "dense"},
    "dense+sparse": {"mode": "dense+sparse"},
    "hybrid (c=100, <=200 cand.)": {"mode": "hybrid", "candidates": 100},
    "hybrid (c=50), filter 1 in 10": {"mode": "hybrid", "candidates": 50, "filter": {"tenant": 3}},
}
REPRESENTATIONS = {
    "dense": ("dense",),
    "sparse": ("lex_",),
    "colbert": ("colbert",),
    "bm25": ("bm25_",),
}


def folder_of(n_docs: int, pool_docs: int = 0) -> Path:
    return OUT / (f"mmap_index_{n_docs}" if not pool_docs else f"mmap_index_{n_docs}_pool{pool_docs}")


class PooledColbert:
    """ColBERT matrices drawn from ``pool_docs`` documents, each pooled and encoded once (``--pool-docs``).

    At 1M documents, pooling and encoding every document's matrix takes hours here (about 35 ms per
    document); the issue allows synthetic vectors drawn from a pool and compressed once per pool item.
    Each pool document is made like ``Synthetic.colbert`` (64-512 vectors of the token pool), pooled and
    encoded by the real codec (trained on the pool's pooled vectors); a corpus document gets one pool
    document's codes. The store's ``prepare`` and ``append`` are replaced for the build (the engine's own
    reading, saving, loading and scoring are untouched): they take the codes by the array's identity and
    skip the drift measure (decoding every added vector). Bytes per document and work per query are
    those of real compact documents; pooled vectors repeat across documents.
    """

    def __init__(self, synth: Synthetic, pool_docs: int) -> None:
        from m3_integrations.index.colbert_codecs import TRAIN_SAMPLE, ResidualCodec, pool_tokens

        started = time.perf_counter()
        self.matrices = synth.colbert(pool_docs)
        pooled = [pool_tokens(m.astype(np.float32)) for m in self.matrices]
        flat = np.concatenate(pooled)
        sample = flat[np.random.default_rng(0).choice(len(flat), min(len(flat), TRAIN_SAMPLE), replace=False)]
        self.codec = ResidualCodec.train(sample)
        ids, residual = self.codec.encode(flat)
        bounds = np.cumsum([0] + [len(p) for p in pooled])
        self.codes = [(ids[a:b], residual[a:b]) for a, b in itertools.pairwise(bounds)]
        self.by_identity = {id(m): j for j, m in enumerate(self.matrices)}
        self.seconds = time.perf_counter() - started

    def draw(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        return [self.matrices[j] for j in rng.integers(0, len(self.matrices), n)]

    def install(self) -> None:
        from m3_integrations.index import compact_store

        pool = self

        def prepare(store: compact_store.CompactColbertStore, vectors, n_new):
            picked = [pool.codes[pool.by_identity[id(v)]] for v in vectors]
            lengths = np.asarray([len(ids) for ids, _ in picked], dtype=np.int64)
            codes = (np.concatenate([i for i, _ in picked]), np.concatenate([r for _, r in picked]))
            return compact_store.PreparedCompact(
                np.zeros((0, store.dim), np.float32), lengths, store.codec, codes
            )

        def append(store: compact_store.CompactColbertStore, prepared) -> None:
            used = store.n_vectors
            store._ids.append(prepared.codes[0])
            store._residual.append(prepared.codes[1])
            starts = used + np.cumsum(prepared.lengths) - prepared.lengths
            store._starts = np.concatenate([store._starts, starts.astype(np.int64)])
            store._lengths = np.concatenate([store._lengths, prepared.lengths])
            store._max_norm = None

        compact_store.CompactColbertStore.prepare = prepare  # type: ignore[method-assign]
        compact_store.CompactColbertStore.append = append  # type: ignore[method-assign]


def build_pooled(n_docs: int, batch: int, pool_docs: int, save_every: int) -> None:
    """Build with :class:`PooledColbert`; save every ``save_every`` documents, then reload memory-mapped."""
    folder = folder_of(n_docs, pool_docs)
    if (folder / "manifest.json").exists():
        print(f"using {folder} (delete it to rebuild)", flush=True)
        return
    synth = Synthetic(DENSE_DIM)
    pool = PooledColbert(synth, pool_docs)
    print(f"pool of {pool_docs:,} documents pooled and encoded in {pool.seconds:.0f} s", flush=True)
    pool.install()
    model = fake_model(DENSE_DIM)
    index = M3Index(model, colbert_storage="compact", language=None, ann=False)  # type: ignore[arg-type]
    store = index._stores.colbert  # the codec trained on the pool (the build's one reach inside)
    store.restore([], np.zeros(0, np.int64), codec=pool.codec, codes=([], []))
    started, saving = time.perf_counter(), 0.0
    for start in range(0, n_docs, batch):
        size = min(batch, n_docs - start)
        output, tf, rows = synth.batch(start, size, colbert=False)
        output.colbert_vecs = pool.draw(synth.rng, size)
        index.add_encoded(output, [""] * size, bm25_tokens=tf, **rows)
        if (start + size) % save_every == 0 or start + size == n_docs:
            t0 = time.perf_counter()
            index.save(folder)
            del index
            gc.collect()  # an M3Index holds reference cycles: without this, old ones pile up (OOM at 1M)
            index = M3Index.load(folder, model=model, mmap=True, ann=False)  # type: ignore[arg-type]
            saving += time.perf_counter() - t0
            print(f"  {start + size:,} documents, {time.perf_counter() - started:.0f} s", flush=True)
    (folder.parent / f"{folder.name}.build.json").write_text(
        json.dumps(
            {"build_s": time.perf_counter() - started, "save_and_reload_s": saving, "pool_s": pool.seconds}
        )
    )


def build(n_docs: int, batch: int) -> None:
    """Build and save the index (skipped when the folder already holds one of that size)."""
    folder = folder_of(n_docs)
    if (folder / "manifest.json").exists():
        print(f"using {folder} (delete it to rebuild)", flush=True)
        return
    synth = Synthetic(DENSE_DIM)
    index = M3Index(fake_model(DENSE_DIM), colbert_storage="compact", language=None)  # type: ignore[arg-type]
    started = time.perf_counter()
    for start in range(0, n_docs, batch):
        size = min(batch, n_docs - start)
        output, tf, rows = synth.batch(start, size, colbert=True)
        index.add_encoded(output, [""] * size, bm25_tokens=tf, **rows)
        if (start // batch) % 10 == 0:
            print(f"  {start + size:,} documents, {time.perf_counter() - started:.0f} s", flush=True)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    index.save(folder)
    save_s = time.perf_counter() - started
    (folder.parent / f"{folder.name}.build.json").write_text(
        json.dumps({"build_s": build_s, "save_s": save_s})
    )
    print(f"built {n_docs:,} documents in {build_s:.0f} s, saved in {save_s:.1f} s", flush=True)


def disk_bytes_per_document(n_docs: int, pool_docs: int = 0) -> dict[str, float]:
    folder = folder_of(n_docs, pool_docs)
    manifest = json.loads((folder / "manifest.json").read_text())
    sizes = dict.fromkeys(REPRESENTATIONS, 0)
    documents = 0
    for data in [manifest["data"], *(entry["data"] for entry in manifest.get("segments", []))]:
        with zipfile.ZipFile(folder / data / "arrays.npz") as archive:
            for member in archive.infolist():
                for name, prefixes in REPRESENTATIONS.items():
                    if member.filename.startswith(prefixes):
                        sizes[name] += member.file_size
        documents += (folder / data / "documents.json").stat().st_size
    return {**{k: v / n_docs for k, v in sizes.items()}, "documents.json": documents / n_docs}


def rss() -> dict[str, int]:
    """Resident memory of this process in bytes: total, anonymous and file-backed."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def measure(n_docs: int, mmap: bool, n_queries: int, pool_docs: int = 0, ann: str = "false") -> dict:
    """One load and its queries (run in a fresh process by ``main``)."""
    setting = {"false": False, "true": True, "auto": "auto"}[ann]
    before = rss()
    started = time.perf_counter()
    index = M3Index.load(folder_of(n_docs, pool_docs), model=fake_model(DENSE_DIM), mmap=mmap, ann=setting)  # type: ignore[arg-type]
    load_s = time.perf_counter() - started
    after_load = rss()
    ann_s = 0.0
    if setting is not False:
        started = time.perf_counter()
        index.build_ann()
        ann_s = time.perf_counter() - started
    synth = Synthetic(DENSE_DIM, seed=1)
    latencies = {name: time_mode(index, synth, n_queries, **options) for name, options in MODES.items()}
    return {
        "mmap": mmap,
        "load_s": load_s,
        "ann": ann,
        "ann_build_s": ann_s,
        "ann_stats": index.ann_stats(),
        "rss_after_ann": rss(),
        "rss_before": before,
        "rss_after_load": after_load,
        "rss_after_queries": rss(),
        "memory_bytes": index.memory_bytes(),
        "latency_ms": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--pool-docs", type=int, default=0, help="ColBERT from this many pool documents, encoded once each"
    )
    parser.add_argument("--save-every", type=int, default=100_000, help="with --pool-docs: save and reload")
    parser.add_argument("--loads", nargs="+", choices=["memory", "mmap"], default=["memory", "mmap"])
    parser.add_argument("--ann", choices=["false", "true", "auto"], default="false", help="the loads' ann=")
    parser.add_argument("--measure", choices=["memory", "mmap"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.docs, args.measure == "mmap", args.queries, args.pool_docs, args.ann)))
        return

    if args.pool_docs:
        build_pooled(args.docs, args.batch, args.pool_docs, args.save_every)
    else:
        build(args.docs, args.batch)
    results = []
    for kind in args.loads:
        child = [sys.executable, __file__, "--docs", str(args.docs), "--queries", str(args.queries)]
        child += ["--pool-docs", str(args.pool_docs), "--ann", args.ann]
        done = subprocess.run([*child, "--measure", kind], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"measured the load {'memory-mapped' if kind == 'mmap' else 'into memory'}", flush=True)
    disk = disk_bytes_per_document(args.docs, args.pool_docs)
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = f"_pool{args.pool_docs}" if args.pool_docs else ""
    out = OUT / f"mmap_load_{args.docs}{suffix}_ann-{args.ann}.json"
    out.write_text(json.dumps({"docs": args.docs, "disk_bytes_per_doc": disk, "loads": results}, indent=2))

    gib = 1 << 30
    print(f"\n{args.docs:,} documents, colbert_storage='compact', ColBERT d=1024; folder bytes per document:")
    print(", ".join(f"{k} {v:,.0f}" for k, v in disk.items()))
    print(
        "\n| load | load s | RSS after load GiB (anon / file) | ColBERT in RAM MiB | ann build s | "
        "RSS after ANN GiB | RSS after queries GiB (anon / file) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        after, queried, memory = r["rss_after_load"], r["rss_after_queries"], r["memory_bytes"]
        resident_colbert = (memory["colbert"] - memory["colbert_mapped"]) / (1 << 20)
        print(
            f"| {'mmap=True' if r['mmap'] else 'into memory'} | {r['load_s']:.1f} | "
            f"{after['VmRSS'] / gib:.2f} ({after['RssAnon'] / gib:.2f} / {after['RssFile'] / gib:.2f}) | "
            f"{resident_colbert:,.0f} | {r['ann_build_s']:.0f} | {r['rss_after_ann']['VmRSS'] / gib:.2f} | "
            f"{queried['VmRSS'] / gib:.2f} "
            f"({queried['RssAnon'] / gib:.2f} / {queried['RssFile'] / gib:.2f}) |"
        )
        print(f"ann_stats: {r['ann_stats']}")
    print("\n| mode | " + " | ".join(f"p50 / p95 ms, {kind}" for kind in args.loads) + " |")
    print("|---|" + "---:|" * len(results))
    for name in MODES:
        cells = [f"{r['latency_ms'][name][0]:.1f} / {r['latency_ms'][name][1]:.1f}" for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()
