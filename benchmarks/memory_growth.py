"""Resident memory of a process that alternates ``add`` and ``search`` on one index (issue 13, item 9).

An index of ``--docs`` short documents (the tiny checkpoint, real encodings) takes ``--cycles`` rounds of
one ``add`` (a new document: the dense store grows by a row) and one hybrid ``search``; the resident set
size (``VmRSS``) is sampled every ``--every`` cycles. Growth that continues through the second half of
the run is a leak-like cost; a bounded process stops growing once its caches are warm.

Examples:
    python benchmarks/memory_growth.py                  # 5,000 documents, 2,400 cycles
    python benchmarks/memory_growth.py --cycles 600 --docs 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from m3_integrations import M3Index, M3Model
from m3_integrations.testing import TRAINING_SENTENCES, build_tiny_checkpoint, resident_memory_mb

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "out"


def documents(n: int, seed: int = 0) -> list[str]:
    words = " ".join(TRAINING_SENTENCES).split()
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=int(rng.integers(8, 30)))) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--cycles", type=int, default=2400)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--label", default="", help="a word for the output file name (before, after)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = M3Model(build_tiny_checkpoint(Path(tmp) / "tiny"), device="cpu")
    texts = documents(args.docs + args.cycles)
    index = M3Index(model)
    index.add(texts[: args.docs])
    queries = index.encode_queries(["capital of France", "hybrid retrieval", "서울 검색"])
    extra = model.encode_passages(texts[args.docs :], return_colbert=True)

    samples: list[tuple[int, float]] = [(0, resident_memory_mb())]
    start = time.perf_counter()
    for cycle in range(1, args.cycles + 1):
        row = args.docs + cycle - 1
        one = type(extra)(
            dense=extra.dense[row - args.docs : row - args.docs + 1],
            lexical_weights=extra.lexical_weights[row - args.docs : row - args.docs + 1],
            colbert_vecs=extra.colbert_vecs[row - args.docs : row - args.docs + 1],
            num_tokens=extra.num_tokens[row - args.docs : row - args.docs + 1],
        )
        index.add_encoded(one, [texts[row]], ids=[f"extra-{cycle}"])
        index.search_encoded(queries[cycle % len(queries)], k=10, mode="hybrid")
        if cycle % args.every == 0:
            samples.append((cycle, resident_memory_mb()))
    seconds = time.perf_counter() - start

    half = len(samples) // 2
    first = samples[half][1] - samples[0][1]
    second = samples[-1][1] - samples[half][1]
    lines = ["| cycles | RSS MB |", "|---:|---:|"] + [f"| {c} | {r:.0f} |" for c, r in samples]
    summary = (
        f"{args.docs} documents, {args.cycles} add+search cycles in {seconds:.1f} s "
        f"({seconds / args.cycles * 1e3:.1f} ms per cycle); "
        f"RSS {samples[0][1]:.0f} -> {samples[-1][1]:.0f} MB, "
        f"growth {first:+.1f} MB in the first half, {second:+.1f} MB in the second"
    )
    print("\n".join(lines))
    print(summary)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "memory_growth" + (f"_{args.label}" if args.label else "")
    header = f"# Memory under alternating add and search ({platform.machine()}, {os.cpu_count()} CPUs)\n\n"
    (OUT / f"{stem}.md").write_text(header + "\n".join(lines) + f"\n\n{summary}\n", encoding="utf-8")
    (OUT / f"{stem}.json").write_text(
        json.dumps({"args": vars(args), "samples": samples, "seconds": seconds}, indent=2), encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
