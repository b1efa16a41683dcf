"""Check M3Model against FlagEmbedding's BGEM3FlagModel (fp32, CPU) on the same checkpoint.

FlagEmbedding 1.4.2 imports only with transformers<5, so the reference runs in a separate virtual
environment; this script drives it as a subprocess and compares here (any transformers version).

Setup of the reference environment (once):

    python -m venv .venv-flag
    .venv-flag/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    .venv-flag/bin/pip install "flagembedding==1.4.2" "transformers<5"

Run (builds a tiny random checkpoint unless --model names a folder in the bge-m3 layout):

    python benchmarks/parity_flagembedding.py --flag-python .venv-flag/bin/python

Exit status 0 when every output agrees within --atol (default 1e-5), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TEXTS = [
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "北京是中国的首都。检索增强生成使用向量数据库。",
    "hello",
    "Hybrid retrieval fuses dense similarity with lexical matching and late interaction. " * 12,
    "Wie spät ist es? Der Hund läuft schnell über die Straße.",
    "capital capital capital of France",
]
PAIRS = [
    ("capital of France", TEXTS[0]),
    ("sleeping cat", TEXTS[1]),
    ("서울", TEXTS[2]),
    ("数据库", TEXTS[3]),
]


def _reference(model_path: str, out_path: str, max_length: int) -> None:
    """Runs inside the FlagEmbedding environment: write its outputs as npz + JSON."""
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(model_path, use_fp16=False, devices="cpu", batch_size=3)
    out = model.encode(
        TEXTS,
        batch_size=3,
        max_length=max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
    )
    colbert = [np.asarray(v, dtype=np.float32) for v in out["colbert_vecs"]]
    scores = model.compute_score(
        PAIRS,
        batch_size=2,
        max_query_length=max_length,
        max_passage_length=max_length,
        weights_for_different_modes=[0.4, 0.2, 0.4],
    )
    np.savez(
        out_path,
        dense=np.asarray(out["dense_vecs"], dtype=np.float32),
        colbert=np.concatenate(colbert),
        offsets=np.concatenate([[0], np.cumsum([len(c) for c in colbert])]),
    )
    lexical = [{str(k): float(v) for k, v in w.items()} for w in out["lexical_weights"]]
    payload = {"lexical": lexical, "scores": {k: [float(x) for x in v] for k, v in scores.items()}}
    Path(out_path + ".json").write_text(json.dumps(payload), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flag-python", default=".venv-flag/bin/python", help="python of the reference venv")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: a tiny random one)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--reference-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.reference_out:  # child mode, inside the FlagEmbedding venv
        _reference(args.model, args.reference_out, args.max_length)
        return 0

    from m3_integrations import M3Model
    from m3_integrations.testing import build_tiny_checkpoint

    workdir = Path(tempfile.mkdtemp(prefix="m3-parity-"))
    model_path = args.model or build_tiny_checkpoint(workdir / "tiny")
    ref_path = str(workdir / "reference.npz")
    cmd = [args.flag_python, __file__, "--model", model_path, "--reference-out", ref_path]
    cmd += ["--max-length", str(args.max_length)]
    subprocess.run(cmd, check=True)
    ref = np.load(ref_path, allow_pickle=False)
    ref_json = json.loads(Path(ref_path + ".json").read_text(encoding="utf-8"))

    model = M3Model(model_path, device="cpu", use_fp16=False, batch_size=3)
    out = model.encode(TEXTS, max_length=args.max_length, return_colbert=True)
    assert out.dense is not None and out.lexical_weights is not None and out.colbert_vecs is not None
    rows: list[tuple[str, float]] = []
    rows.append(("dense max |Δ|", float(np.abs(out.dense - ref["dense"]).max())))

    lex_diff, key_mismatch = 0.0, 0
    for ours, theirs in zip(out.lexical_weights, ref_json["lexical"], strict=True):
        theirs_int = {int(k): v for k, v in theirs.items()}
        key_mismatch += len(set(ours) ^ set(theirs_int))
        for k in set(ours) & set(theirs_int):
            lex_diff = max(lex_diff, abs(ours[k] - theirs_int[k]))
    rows.append(("lexical max |Δ|", lex_diff))
    rows.append(("lexical token-id mismatches", float(key_mismatch)))

    offsets = ref["offsets"]
    col_diff, len_mismatch = 0.0, 0
    for i, ours in enumerate(out.colbert_vecs):
        theirs = ref["colbert"][offsets[i] : offsets[i + 1]]
        if ours.shape != theirs.shape:
            len_mismatch += 1
            continue
        col_diff = max(col_diff, float(np.abs(ours - theirs).max()))
    rows.append(("colbert max |Δ|", col_diff))
    rows.append(("colbert shape mismatches", float(len_mismatch)))

    scores = model.compute_score(
        PAIRS, weights=(0.4, 0.2, 0.4), max_query_length=args.max_length, max_passage_length=args.max_length
    )
    for name, values in ref_json["scores"].items():
        rows.append(
            (f"compute_score[{name}] max |Δ|", float(np.abs(np.asarray(scores[name]) - values).max()))
        )

    ok = True
    print(f"{'check':40s} {'value':>12s}  status")
    for name, value in rows:
        passed = value == 0 if "mismatch" in name else value <= args.atol
        ok &= passed
        print(f"{name:40s} {value:12.3e}  {'ok' if passed else 'FAIL'}")
    print(f"model: {model_path}  texts: {len(TEXTS)}  pairs: {len(PAIRS)}  atol: {args.atol}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
