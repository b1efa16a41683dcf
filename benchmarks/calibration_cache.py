"""What ``M3Index.calibrate()`` chooses on every cached encoder × corpus: the "calibrated" candidate.

For each encoding of ``benchmarks/encode_cache.py`` and each BM25 variant of
``benchmarks/signal_cache.py`` (``words``, ``language``), the index is built from the cached vectors
and texts (``signal_cache.index_from_encoding``: nothing of the corpus is encoded again) and
``index.calibrate()`` runs with its defaults: pseudo-queries made from the corpus alone, no labels,
no real query. Only the pseudo-queries and the remainders of their passages go through the encoder,
once per corpus (a memo shared by the variants). XQuAD's query sets share one corpus, so one
calibration serves all of them.

Stored in ``benchmarks/out/calibration/<encoder>/<collection>.<variant>.json``: the calibration's
record (``Calibration.to_json``), the corpus's digest and the time taken. ``select_default.py`` reads
them and scores each pair's choice on the pair's real queries.

Usage::

    python benchmarks/calibration_cache.py                 # every cached encoding, when missing
    python benchmarks/calibration_cache.py --encoders all-MiniLM-L6-v2 --variants language
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.encode_cache import ENCODER_PATHS, load_model  # noqa: E402
from benchmarks.encode_cache import OUT as ENCODINGS  # noqa: E402
from benchmarks.signal_cache import index_from_encoding, read_encoding  # noqa: E402
from m3_integrations.index import Calibration  # noqa: E402

logger = logging.getLogger("calibration_cache")
OUT = Path(__file__).resolve().parent / "out" / "calibration"
VARIANTS = ("words", "language")


class MemoModel:
    """The encoder with its query and passage encodings remembered (the variants share pseudo-queries)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._memo: dict[tuple[Any, ...], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _cached(self, method: str, texts: Sequence[str], kwargs: dict[str, Any]) -> Any:
        key = (method, tuple(texts), tuple(sorted((k, v) for k, v in kwargs.items() if k != "show_progress")))
        if key not in self._memo:
            self._memo[key] = getattr(self._model, method)(texts, **kwargs)
        return self._memo[key]

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._cached("encode_queries", texts, kwargs)

    def encode_passages(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self._cached("encode_passages", texts, kwargs)


def calibration_path(encoder: str, collection_file: str, variant: str) -> Path:
    return OUT / encoder / f"{collection_file}.{variant}.json"


def corpus_digest(doc_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(doc_ids).encode("utf-8")).hexdigest()[:16]


def load_all(folder: Path = OUT) -> dict[tuple[str, str], dict[str, Calibration]]:
    """``(encoder, collection) → variant → Calibration`` for every cached file."""
    found: dict[tuple[str, str], dict[str, Calibration]] = {}
    for path in sorted(folder.glob("*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        key = (record["encoder"], record["collection"])
        found.setdefault(key, {})[record["variant"]] = Calibration.from_json(record["calibration"])
    return found


def _existing(encoder: str, digest: str, variant: str) -> dict[str, Any] | None:
    """A calibration already made for this corpus (XQuAD's query sets share theirs)."""
    for path in sorted((OUT / encoder).glob(f"*.{variant}.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["corpus_digest"] == digest:
            return record
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODER_PATHS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--only", nargs="+", default=None, help="only these encoding files (their stems)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("m3_integrations.model").setLevel(logging.WARNING)
    for encoder in args.encoders:
        model = None
        for encoding in sorted((ENCODINGS / encoder).glob("*.npz")):
            if encoding.name.endswith(".tmp.npz") or (args.only and encoding.stem not in args.only):
                continue
            arrays, info = read_encoding(encoding)
            digest = corpus_digest([str(d) for d in arrays["doc_ids"]])
            for variant in args.variants:
                path = calibration_path(encoder, encoding.stem, variant)
                if path.is_file():
                    continue
                record = _existing(encoder, digest, variant)
                if record is None:
                    model = model or MemoModel(load_model(encoder))
                    index = index_from_encoding(model, arrays, info, variant)
                    start = time.perf_counter()
                    chosen = index.calibrate(seed=args.seed, show_progress=False)
                    record = {
                        "corpus_digest": digest,
                        "documents": len(index),
                        "calibrate_s": round(time.perf_counter() - start, 1),
                        "calibration": chosen.to_json(),
                    }
                record = {**record, "encoder": encoder, "collection": info["name"], "variant": variant}
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1, ensure_ascii=False), encoding="utf-8")
                os.replace(tmp, path)
                c = record["calibration"]
                logger.info(
                    "%s / %s / %s: %s %s (pseudo nDCG@10 %.3f, built-in default %.3f, %d queries, %.0fs)",
                    encoder,
                    info["name"],
                    variant,
                    c["fusion"],
                    c["weights"],
                    c["score"],
                    c["default_score"],
                    c["queries"],
                    record["calibrate_s"],
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
