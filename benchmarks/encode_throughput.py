"""Tokens/s of ``M3Model.encode`` (dense + lexical + ColBERT) against the bare ``AutoModel`` forward.

Both sides get the same texts, the same length-sorted batches and the same tokenizer call; the bare side
stops at ``last_hidden_state`` (moved to the host), the M3 side also runs both heads, pooling,
normalisation and the per-text post-processing. Target: M3 >= 0.95 x bare.

Models (``--model``):
- a folder in the bge-m3 layout (``BAAI/bge-m3`` itself where it can be downloaded);
- ``e5-small`` (default): the multilingual-e5-small folder from ``../shared/tools`` with random heads
  added (12 layers, 384 wide, XLM-R vocabulary);
- ``large-random``: an XLM-R-large-shaped encoder (24 layers, 1024 wide: bge-m3's shape) with random
  weights and the e5 tokenizer; for GPU runs where the real model is out of reach.

Examples:
    python benchmarks/encode_throughput.py --quick
    python benchmarks/encode_throughput.py --model large-random --device cuda --fp16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from m3_integrations import M3Model

WORDS = (
    "retrieval dense sparse lexical vector index query passage model language search hybrid score "
    "document token weight fusion rank capital city river science history music energy water system "
    "서울 검색 문서 모델 北京 检索 文档 模型 Suche Dokument Modell recherche modèle"
).split()
E5_SCRIPT = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "build-multilingual-e5-small.sh"


def make_texts(n: int, seed: int = 0) -> list[str]:
    """A realistic mix: mostly short passages, some medium, a few long documents."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        bucket = rng.random()
        if bucket < 0.70:
            length = int(rng.integers(15, 90))
        elif bucket < 0.95:
            length = int(rng.integers(150, 400))
        else:
            length = int(rng.integers(900, 2500))
        texts.append(" ".join(rng.choice(WORDS, size=length)))
    return texts


def e5_folder() -> Path:
    default = Path.home() / ".cache" / "m3-models" / "multilingual-e5-small"
    if (default / "config.json").is_file():
        return default
    out = subprocess.run(["bash", str(E5_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def with_random_heads(encoder: Path, hidden: int, workdir: Path) -> Path:
    """A bge-m3-layout folder: links to the encoder's files plus random fp16 heads."""
    folder = workdir / "m3-layout"
    folder.mkdir(parents=True, exist_ok=True)
    for item in encoder.iterdir():
        if item.is_file() and not (folder / item.name).exists():
            os.symlink(item.resolve(), folder / item.name)
    torch.manual_seed(0)
    for name, out_features in (("colbert_linear.pt", hidden), ("sparse_linear.pt", 1)):
        head = torch.nn.Linear(hidden, out_features)
        torch.save({k: v.half() for k, v in head.state_dict().items()}, folder / name)
    return folder


def large_random(workdir: Path, tokenizer_from: str | None) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    tokenizer_src = Path(tokenizer_from) if tokenizer_from else e5_folder()
    folder = workdir / "large-random"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_src / name).is_file():
            (folder / name).write_bytes((tokenizer_src / name).read_bytes())
    config = XLMRobertaConfig(
        vocab_size=250002,
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=8194,
        type_vocab_size=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(str(folder))
    return with_random_heads(folder, 1024, workdir)


def resolve_model(name: str, workdir: Path, tokenizer_from: str | None) -> Path | str:
    if name == "e5-small":
        return with_random_heads(e5_folder(), 384, workdir)
    if name == "large-random":
        return large_random(workdir, tokenizer_from)
    return name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(model: M3Model, texts: list[str], max_length: int, batch_size: int) -> int:
    """Tokenise, batch exactly as M3Model does, run the encoder; return the number of real tokens."""
    input_ids, _ = model._tokenize(texts, max_length)
    lengths = np.asarray([len(ids) for ids in input_ids])
    order = np.argsort(-lengths, kind="stable")
    with torch.inference_mode():
        for batch in model._batches(order, lengths, batch_size):
            rows = [input_ids[i] for i in batch]
            longest = max(len(r) for r in rows)
            ids = np.full((len(rows), longest), model._pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for j, r in enumerate(rows):
                ids[j, : len(r)] = r
                mask[j, : len(r)] = 1
            hidden = model.model(
                input_ids=torch.from_numpy(ids).to(model.device),
                attention_mask=torch.from_numpy(mask).to(model.device),
            ).last_hidden_state
            hidden.cpu()
    sync(model.device)
    return int(lengths.sum())


def m3_encode(model: M3Model, texts: list[str], max_length: int, batch_size: int) -> int:
    out = model.encode(
        texts,
        return_dense=True,
        return_sparse=True,
        return_colbert=True,
        max_length=max_length,
        batch_size=batch_size,
    )
    sync(model.device)
    return int(sum(out.num_tokens))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="e5-small", help="folder, hub id, 'e5-small' or 'large-random'")
    parser.add_argument("--device", default=None)
    parser.add_argument("--fp16", action="store_true", help="half precision (CUDA)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 texts, 2 repeats")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--tokenizer-from", default=None, help="tokenizer folder for large-random (default e5)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.repeats = 64, 2

    workdir = Path(tempfile.mkdtemp(prefix="m3-throughput-"))
    path = resolve_model(args.model, workdir, args.tokenizer_from)
    model = M3Model(path, device=args.device, use_fp16=args.fp16, passage_max_length=args.max_length)
    texts = make_texts(args.texts)
    # one full warm-up pass of each: allocator, kernel selection for every batch shape
    bare_forward(model, texts, args.max_length, args.batch_size)
    m3_encode(model, texts, args.max_length, args.batch_size)

    timings: dict[str, list[float]] = {"bare forward": [], "M3Model.encode (3 outputs)": []}
    tokens = 0
    for _ in range(args.repeats):  # interleaved so drift hits both sides alike
        start = time.perf_counter()
        tokens = bare_forward(model, texts, args.max_length, args.batch_size)
        timings["bare forward"].append(time.perf_counter() - start)
        start = time.perf_counter()
        m3_encode(model, texts, args.max_length, args.batch_size)
        timings["M3Model.encode (3 outputs)"].append(time.perf_counter() - start)

    bare = statistics.median(timings["bare forward"])
    print(
        f"model={args.model} device={model.device} dtype={model.dtype} texts={len(texts)} tokens={tokens} "
        f"max_length={args.max_length} batch_size={args.batch_size} repeats={args.repeats}"
    )
    hardware = (
        torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else f"{os.cpu_count()} CPUs"
    )
    print(f"torch {torch.__version__}, {platform.machine()}, {hardware}")
    print(f"{'path':30s} {'median s':>10s} {'tokens/s':>12s} {'vs bare':>8s}")
    results = {}
    for name, values in timings.items():
        median = statistics.median(values)
        results[name] = {"median_s": median, "tokens_per_s": tokens / median, "ratio": bare / median}
        print(f"{name:30s} {median:10.3f} {tokens / median:12.0f} {bare / median:8.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "tokens": tokens, "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
