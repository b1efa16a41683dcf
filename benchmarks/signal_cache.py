"""Per-query candidate signals from cached encodings: what the default-selection protocol fuses.

For one encoder × collection (``benchmarks/encode_cache.py`` wrote its vectors), one ``M3Index`` per
kind of BM25 tokens holds the same encodings, and every query's candidates and per-signal scores come
from the engine itself (``M3Index.score_candidates`` in ``hybrid`` mode: the union of the dense and
BM25 first stages, every candidate scored by dense, BM25 and ColBERT, plus the query's term coverage).
Every configuration of ``benchmarks/select_default.py`` is then a fusion of these arrays, exactly what
``M3Index.search`` would rank, without encoding or scoring anything again.

BM25 variants (the ``M3Index`` options they stand for):

- ``words``: ``language=None``, plain lower-cased words (the analyzer of every index before issue 18);
- ``language``: ``language="auto"``, the analyzer of the detected corpus language
  (:func:`m3_integrations.language.analyzer_for`);
- ``subword``: ``bm25_tokenizer="model"``, the model's subword ids.

Stored in ``benchmarks/out/signals/<encoder>/<collection>.<variant>.npz``: plain arrays (no pickle).

Usage::

    python benchmarks/signal_cache.py            # every cached encoding, every variant, when missing
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.encode_cache import ENCODER_PATHS, load_model  # noqa: E402
from benchmarks.encode_cache import OUT as ENCODINGS  # noqa: E402
from m3_integrations import M3Index  # noqa: E402
from m3_integrations.index import EncodedQuery  # noqa: E402
from m3_integrations.model import M3Output  # noqa: E402

logger = logging.getLogger("signal_cache")
OUT = Path(__file__).resolve().parent / "out" / "signals"
K = 100
VARIANTS: dict[str, dict[str, Any]] = {
    "words": {"bm25_tokenizer": "word", "language": None},
    "language": {"language": "auto"},
    "subword": {"bm25_tokenizer": "model", "language": None},
}


@dataclass
class PairSignals:
    """One encoder × collection × BM25 variant: every query's candidates and their signals."""

    encoder: str
    collection: str
    variant: str
    doc_ids: list[str]
    query_ids: list[str]
    offsets: np.ndarray  # (n_queries + 1,): query i's candidates are [offsets[i], offsets[i + 1])
    candidates: np.ndarray  # document positions, insertion order within each query
    signals: dict[str, np.ndarray]  # dense, bm25, colbert: one score per candidate
    coverage: np.ndarray  # (n_queries,) the BM25 query-term coverage
    qrels: dict[str, dict[str, int]]
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.encoder} | {self.collection}"

    def query(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.candidates[lo:hi], {s: v[lo:hi] for s, v in self.signals.items()}, float(self.coverage[i])


def signal_path(encoder: str, collection_file: str, variant: str) -> Path:
    return OUT / encoder / f"{collection_file}.{variant}.npz"


def _unflatten(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]].astype(np.float32) for i in range(len(offsets) - 1)]


def read_encoding(encoding: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of an ``encode_cache.py`` file and its ``info`` record."""
    with np.load(encoding, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays["info"]))


def index_from_encoding(
    model: Any, arrays: dict[str, np.ndarray], info: dict[str, Any], variant: str
) -> M3Index:
    """An ``M3Index`` of one BM25 variant over a cached corpus's vectors and texts (nothing encoded)."""
    doc_ids = [str(d) for d in arrays["doc_ids"]]
    texts = _texts(info, doc_ids)
    index = M3Index(model, **VARIANTS[variant])
    doc_colbert = _unflatten(arrays["doc_colbert"], arrays["doc_colbert_offsets"])
    output = M3Output(
        dense=arrays["doc_dense"], colbert_vecs=doc_colbert, num_tokens=[len(v) + 1 for v in doc_colbert]
    )
    index.add_encoded(output, texts, ids=doc_ids)
    return index


def build(model: Any, encoding: Path, variant: str) -> dict[str, np.ndarray]:
    arrays, info = read_encoding(encoding)
    doc_ids = [str(d) for d in arrays["doc_ids"]]
    index = index_from_encoding(model, arrays, info, variant)
    queries = [str(q) for q in arrays["query_texts"]]
    tokens = index.bm25_tokens(queries)
    q_colbert = _unflatten(arrays["query_colbert"], arrays["query_colbert_offsets"])
    options = index.search_options(K, mode="hybrid")
    scored = [
        index.score_candidates(
            EncodedQuery(dense=arrays["query_dense"][i], colbert_vecs=q_colbert[i], bm25_tokens=query_tokens),
            options,
        )
        for i, query_tokens in enumerate(tokens)
    ]
    qrels = {}
    for q, d, g in zip(arrays["qrels_query"], arrays["qrels_doc"], arrays["qrels_grade"], strict=True):
        qrels.setdefault(str(q), {})[str(d)] = int(g)
    query_ids = [str(q) for q in arrays["query_ids"]]
    return to_arrays(index, scored, doc_ids, query_ids, qrels, info=info, variant=variant)


def to_arrays(
    index: Any,
    scored: Sequence[Any],
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    qrels: dict[str, dict[str, int]],
    *,
    info: dict[str, Any],
    variant: str,
) -> dict[str, np.ndarray]:
    """The file's arrays from each query's ``CandidateScores`` (hybrid mode) on ``index``."""
    position = {d: i for i, d in enumerate(doc_ids)}
    offsets, candidates, coverage = [0], [], []
    signals: dict[str, list[np.ndarray]] = {"dense": [], "bm25": [], "colbert": []}
    for one in scored:
        candidates.append(np.asarray([position[d] for d in one.ids], dtype=np.int32))
        for name, values in signals.items():
            values.append(np.asarray(one.signals[name], dtype=np.float32))
        coverage.append(one.coverage.get("bm25", 1.0))
        offsets.append(offsets[-1] + len(one.ids))
    record = {
        **info,
        "variant": variant,
        "language": index.language,
        "bm25_tokenizer": index.bm25_tokenizer,
        "bm25_words": index.bm25_word_settings,
        "language_profile": None if index.language_profile is None else index.language_profile.to_json(),
    }
    rows = [(q, d, g) for q, grades in qrels.items() for d, g in grades.items()]
    return {
        "doc_ids": np.asarray(list(doc_ids), dtype=str),
        "query_ids": np.asarray(list(query_ids), dtype=str),
        "offsets": np.asarray(offsets, dtype=np.int64),
        "candidates": np.concatenate(candidates) if candidates else np.zeros(0, np.int32),
        **{f"signal_{n}": np.concatenate(v) if v else np.zeros(0, np.float32) for n, v in signals.items()},
        "coverage": np.asarray(coverage, dtype=np.float64),
        "qrels_query": np.asarray([r[0] for r in rows], dtype=str),
        "qrels_doc": np.asarray([r[1] for r in rows], dtype=str),
        "qrels_grade": np.asarray([r[2] for r in rows], dtype=np.int64),
        "info": np.asarray(json.dumps(record, ensure_ascii=False)),
    }


def save(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write a signal file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _texts(info: dict[str, Any], doc_ids: list[str]) -> list[str]:
    """The documents' indexed texts, read again from the collection (the encodings keep no text)."""
    from benchmarks.encode_cache import LOADERS

    data = LOADERS[info["name"]]()
    content = dict(data.documents())
    return [content[d] for d in doc_ids]


def load(path: Path) -> PairSignals:
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    info = json.loads(str(a["info"]))
    qrels: dict[str, dict[str, int]] = {}
    for q, d, g in zip(a["qrels_query"], a["qrels_doc"], a["qrels_grade"], strict=True):
        qrels.setdefault(str(q), {})[str(d)] = int(g)
    return PairSignals(
        encoder=path.parent.name,
        collection=info["name"],
        variant=info["variant"],
        doc_ids=[str(d) for d in a["doc_ids"]],
        query_ids=[str(q) for q in a["query_ids"]],
        offsets=a["offsets"],
        candidates=a["candidates"],
        signals={n: a[f"signal_{n}"] for n in ("dense", "bm25", "colbert")},
        coverage=a["coverage"],
        qrels=qrels,
        info=info,
    )


def load_all(folder: Path = OUT) -> dict[tuple[str, str], dict[str, PairSignals]]:
    """``(encoder, collection) → variant → signals`` for every cached file."""
    pairs: dict[tuple[str, str], dict[str, PairSignals]] = {}
    for path in sorted(folder.glob("*/*.npz")):
        signals = load(path)
        pairs.setdefault((signals.encoder, signals.collection), {})[signals.variant] = signals
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--encoders", nargs="+", default=list(ENCODER_PATHS))
    parser.add_argument("--only", nargs="+", default=None, help="only these encoding files (their stems)")
    parser.add_argument("--reverse", action="store_true", help="last files first (a second worker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("m3_integrations.model").setLevel(logging.WARNING)
    for encoder in args.encoders:
        model = None
        for encoding in sorted((ENCODINGS / encoder).glob("*.npz"), reverse=args.reverse):
            if encoding.name.endswith(".tmp.npz") or (args.only and encoding.stem not in args.only):
                continue
            for variant in args.variants:
                path = signal_path(encoder, encoding.stem, variant)
                if path.is_file() and path.stat().st_mtime >= encoding.stat().st_mtime:
                    continue
                model = model or load_model(encoder)
                start = time.perf_counter()
                arrays = build(model, encoding, variant)
                save(arrays, path)
                info = json.loads(str(arrays["info"]))
                logger.info(
                    "%s / %s / %s: %d queries in %.1fs (language %s, words %s)",
                    encoder,
                    encoding.stem,
                    variant,
                    len(arrays["query_ids"]),
                    time.perf_counter() - start,
                    info["language"],
                    info["bm25_words"],
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
