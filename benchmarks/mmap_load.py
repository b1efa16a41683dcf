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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

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


def folder_of(n_docs: int) -> Path:
    return OUT / f"mmap_index_{n_docs}"


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


def disk_bytes_per_document(n_docs: int) -> dict[str, float]:
    folder = folder_of(n_docs)
    manifest = json.loads((folder / "manifest.json").read_text())
    sizes = dict.fromkeys(REPRESENTATIONS, 0)
    with zipfile.ZipFile(folder / manifest["data"] / "arrays.npz") as archive:
        for member in archive.infolist():
            for name, prefixes in REPRESENTATIONS.items():
                if member.filename.startswith(prefixes):
                    sizes[name] += member.file_size
    documents = (folder / manifest["data"] / "documents.json").stat().st_size
    return {**{k: v / n_docs for k, v in sizes.items()}, "documents.json": documents / n_docs}


def rss() -> dict[str, int]:
    """Resident memory of this process in bytes: total, anonymous and file-backed."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def measure(n_docs: int, mmap: bool, n_queries: int) -> dict:
    """One load and its queries (run in a fresh process by ``main``)."""
    before = rss()
    started = time.perf_counter()
    index = M3Index.load(folder_of(n_docs), model=fake_model(DENSE_DIM), mmap=mmap)  # type: ignore[arg-type]
    load_s = time.perf_counter() - started
    after_load = rss()
    synth = Synthetic(DENSE_DIM, seed=1)
    latencies = {name: time_mode(index, synth, n_queries, **options) for name, options in MODES.items()}
    return {
        "mmap": mmap,
        "load_s": load_s,
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
    parser.add_argument("--measure", choices=["memory", "mmap"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.docs, args.measure == "mmap", args.queries)))
        return

    build(args.docs, args.batch)
    results = []
    for kind in ("memory", "mmap"):
        child = [sys.executable, __file__, "--docs", str(args.docs), "--queries", str(args.queries)]
        done = subprocess.run([*child, "--measure", kind], capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"measured the load {'memory-mapped' if kind == 'mmap' else 'into memory'}", flush=True)
    disk = disk_bytes_per_document(args.docs)
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"mmap_load_{args.docs}.json"
    out.write_text(json.dumps({"docs": args.docs, "disk_bytes_per_doc": disk, "loads": results}, indent=2))

    gib = 1 << 30
    print(f"\n{args.docs:,} documents, colbert_storage='compact', ColBERT d=1024; folder bytes per document:")
    print(", ".join(f"{k} {v:,.0f}" for k, v in disk.items()))
    print(
        "\n| load | load s | RSS after load GiB (anon / file) | ColBERT in RAM MiB | RSS after queries GiB |"
    )
    print("|---|---:|---:|---:|---:|")
    for r in results:
        after, queried, memory = r["rss_after_load"], r["rss_after_queries"], r["memory_bytes"]
        resident_colbert = (memory["colbert"] - memory["colbert_mapped"]) / (1 << 20)
        print(
            f"| {'mmap=True' if r['mmap'] else 'into memory'} | {r['load_s']:.1f} | "
            f"{after['VmRSS'] / gib:.2f} ({after['RssAnon'] / gib:.2f} / {after['RssFile'] / gib:.2f}) | "
            f"{resident_colbert:,.0f} | {queried['VmRSS'] / gib:.2f} |"
        )
    print("\n| mode | p50 / p95 ms, into memory | p50 / p95 ms, mmap=True |")
    print("|---|---:|---:|")
    for name in MODES:
        cells = [f"{r['latency_ms'][name][0]:.1f} / {r['latency_ms'][name][1]:.1f}" for r in results]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\nraw: {out}")


if __name__ == "__main__":
    main()
