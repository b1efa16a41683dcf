"""What an incremental save writes and costs: add 1% to a saved index, save again (issue 16, item 4).

A synthetic index of ``--docs`` documents with BGE-M3 shapes (the generator of ``search_scaling.py``:
dense d=1024, ~90 lexical weights over a 250k vocabulary with BM25 term frequencies, 64–512 ColBERT
vectors per document of d=``--colbert-dim``, float16) is saved whole; then ``--grow`` percent more
documents are added and ``--deleted`` documents deleted, and it is saved again to the same folder
(a new segment) — and, for comparison, whole to a fresh folder. Reported: bytes written by each save
and their share of the folder's bytes, save and load seconds.

Examples:
    python benchmarks/save_incremental.py                     # 10,000 documents, +1%
    python benchmarks/save_incremental.py --docs 50000 --colbert-dim 64
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_scaling import build

from m3_integrations import M3Index, M3Output

OUT = Path(__file__).resolve().parent / "out"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def newest_bytes(folder: Path) -> int:
    """The newest data folder and the manifest: what the last save wrote."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return folder_bytes(folder / manifest["data"]) + (folder / "manifest.json").stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--grow", type=float, default=1.0, help="percent of documents added")
    parser.add_argument("--deleted", type=int, default=10)
    parser.add_argument("--colbert-dim", type=int, default=128)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    index, _, synth = build(args.docs, args.colbert_dim, True, 1000)
    print(f"built {args.docs:,} documents in {time.perf_counter() - t0:.1f} s")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=OUT if OUT.exists() else None) as tmp:
        folder, fresh = Path(tmp) / "index", Path(tmp) / "fresh"
        t0 = time.perf_counter()
        index.save(folder)
        rows.append(
            {"save": "first (whole)", "seconds": time.perf_counter() - t0, "written": newest_bytes(folder)}
        )
        extra = max(1, round(args.docs * args.grow / 100))
        weights, tf = synth.lexical(extra)
        output = M3Output(
            dense=synth.dense(extra), lexical_weights=weights, colbert_vecs=synth.colbert(extra)
        )
        ids = [f"new{i}" for i in range(extra)]
        index.add_encoded(output, [""] * extra, ids=ids, metadatas=[{}] * extra, bm25_tokens=tf)
        index.delete([f"d{i}" for i in range(args.deleted)])
        t0 = time.perf_counter()
        index.save(folder, purge_deleted=False)  # the default would write it all: a row was deleted
        rows.append(
            {
                "save": f"+{args.grow:g}%, {args.deleted} deleted, purge_deleted=False (segment)",
                "seconds": time.perf_counter() - t0,
                "written": newest_bytes(folder),
            }
        )
        total = folder_bytes(folder)
        t0 = time.perf_counter()
        loaded = M3Index.load(folder, model=index.model)
        load_seconds = time.perf_counter() - t0
        assert loaded.ids == index.ids
        t0 = time.perf_counter()
        index.compact()
        index.save(fresh)
        rows.append(
            {
                "save": "the same, whole (compacted)",
                "seconds": time.perf_counter() - t0,
                "written": newest_bytes(fresh),
            }
        )
        shutil.rmtree(fresh)
    print(f"folder after the segment: {total / 1e6:,.1f} MB; load {load_seconds:.2f} s")
    print("| save | MB written | share of the folder | seconds |")
    print("|---|---|---|---|")
    for row in rows:
        row["share"] = row["written"] / total
        print(f"| {row['save']} | {row['written'] / 1e6:,.1f} | {row['share']:.1%} | {row['seconds']:.2f} |")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"save_incremental_{args.docs}.json"
    path.write_text(json.dumps({"args": vars(args), "rows": rows, "folder_bytes": total}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
