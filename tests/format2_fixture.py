"""Index folders saved by the code before the engine restructure (format 2), and what they must answer.

``tests/fixtures/format2/<variant>/`` holds, per variant, an index folder (``index/``) written by
``M3Index.save`` of commit 925c5d0 (the last one before ``m3_integrations/index/`` became a package)
and ``expected.json``: the hits that code returned for :func:`queries` under :data:`SEARCHES`. The
documents and queries are synthetic and seeded (:func:`documents`, :func:`queries`), so a test rebuilds
them exactly; only BM25's model-token variant reads the tiny checkpoint's tokenizer.

Regenerate (with the old code first on the path, from the repository root)::

    git archive 925c5d0 | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before python tests/format2_fixture.py tests/fixtures/format2
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "m3-float16": {},
    "bm25-words-int8": {
        "lexical": "bm25",
        "bm25_tokenizer": "word",
        "bm25_stemmer": "english",
        "bm25_stopwords": "english",
        "colbert_dtype": "int8",
        "dense_dtype": "float16",
    },
    "no-colbert": {"store_colbert": False, "bm25_tokenizer": "word"},
}
# Searches every variant answers (no ColBERT where none is stored: it would be recomputed by the model).
SEARCHES: list[dict[str, Any]] = [
    {"k": 5},
    {"k": 5, "fusion": "rrf"},
    {"k": 5, "fusion": "relative_score", "weights": (0.3, 0.3, 0.4)},
    {"k": 5, "fusion": "confidence"},
    {"k": 5, "weights": {"bm25": 0.3}},
    {"k": 5, "mode": "dense+sparse", "weights": {"dense": 1.0, "sparse": 1.0}},
    {"k": 8, "mode": "sparse"},
    {"k": 5, "mode": "colbert"},
    {"k": 4, "candidates": None},
    {"k": 3, "filter": {"group": {"$in": ["a", "c"]}}},
    {"k": 5, "mode": "dense", "filter": {"year": {"$gte": 2020}}},
]
WORDS = (
    "retrieval dense sparse lexical weights colbert vectors fusion rank query passage index search "
    "flows flowing rivers river capital france paris berlin hybrid model encoder tokens late interaction"
).split()
N_DOCUMENTS = 40
DELETED = ("d3", "d17", "d29")


def documents(dims: tuple[int, int, int]) -> dict[str, Any]:
    """Seeded synthetic documents for a model of ``(dense_dim, colbert_dim, vocab_size)``."""
    dense_dim, colbert_dim, vocab = dims
    rng = np.random.default_rng(2024)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for _ in range(N_DOCUMENTS)]
    dense = rng.normal(size=(N_DOCUMENTS, dense_dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    lexical = [
        {
            int(t): float(w)
            for t, w in zip(rng.choice(vocab, size=6, replace=False), rng.random(6), strict=True)
        }
        for _ in range(N_DOCUMENTS)
    ]
    colbert = []
    for _ in range(N_DOCUMENTS):
        vecs = rng.normal(size=(int(rng.integers(1, 6)), colbert_dim)).astype(np.float32)
        colbert.append(vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    metadatas = [
        {"group": "abc"[i % 3], "year": 2015 + i % 10, "tags": [f"t{i % 4}", "all"]}
        for i in range(N_DOCUMENTS)
    ]
    return {
        "ids": [f"d{i}" for i in range(N_DOCUMENTS)],
        "texts": texts,
        "dense": dense,
        "lexical": lexical,
        "colbert": colbert,
        "metadatas": metadatas,
    }


def queries(dims: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Seeded synthetic query representations (the text is for BM25 tokens only)."""
    dense_dim, colbert_dim, vocab = dims
    rng = np.random.default_rng(7)
    out = []
    for _ in range(4):
        dense = rng.normal(size=dense_dim).astype(np.float32)
        colbert = rng.normal(size=(3, colbert_dim)).astype(np.float32)
        out.append(
            {
                "text": " ".join(rng.choice(WORDS, size=3)),
                "dense": dense / np.linalg.norm(dense),
                "lexical": {
                    int(t): float(w) for t, w in zip(rng.choice(vocab, size=4), rng.random(4), strict=True)
                },
                "colbert": colbert / np.linalg.norm(colbert, axis=1, keepdims=True),
            }
        )
    return out


def encoded_queries(index: Any, dims: tuple[int, int, int]) -> list[Any]:
    """:func:`queries` as the index's ``EncodedQuery`` objects (BM25 tokens from the index's tokenizer)."""
    from m3_integrations.index import EncodedQuery

    # Both the old and the new index tokenise BM25 text the same way; the old one had no public method.
    tokenize = getattr(index, "bm25_tokens", None) or index._bm25_tokens
    return [
        EncodedQuery(
            dense=q["dense"],
            lexical_weights=q["lexical"],
            colbert_vecs=q["colbert"],
            bm25_tokens=tokenize([q["text"]])[0],
        )
        for q in queries(dims)
    ]


def searches_for(variant: str) -> list[dict[str, Any]]:
    """The searches ``variant`` answers: without stored ColBERT, only dense and lexical modes."""
    if VARIANTS[variant].get("store_colbert", True):
        return SEARCHES
    return [
        {**s, "mode": "dense+sparse"} if s.get("mode") is None else s
        for s in SEARCHES
        if s.get("mode") != "colbert"
    ]


def run_searches(index: Any, variant: str, dims: tuple[int, int, int]) -> list[list[list[Any]]]:
    """Per query and search, the hits as ``[id, score, scores]``."""
    results = []
    for encoded in encoded_queries(index, dims):
        per_query = []
        for search in searches_for(variant):
            kwargs = dict(search)
            hits = index.search_encoded(encoded, kwargs.pop("k"), **kwargs)
            per_query.append([[h.id, h.score, h.scores] for h in hits])
        results.append(per_query)
    return results


def build(model: Any, variant: str) -> Any:
    """The variant's index over :func:`documents`, with :data:`DELETED` deleted."""
    from m3_integrations import M3Index, M3Output

    dims = (model.dense_dim, model.colbert_dim, model.vocab_size)
    docs = documents(dims)
    index = M3Index(model, **VARIANTS[variant])
    output = M3Output(dense=docs["dense"], lexical_weights=docs["lexical"], colbert_vecs=docs["colbert"])
    index.add_encoded(output, docs["texts"], ids=docs["ids"], metadatas=docs["metadatas"])
    index.delete(list(DELETED))
    return index


def main(target: str) -> None:
    """Write every variant's index folder and expected hits under ``target``."""
    from m3_integrations import M3Model
    from m3_integrations.testing import build_tiny_checkpoint

    model = M3Model(build_tiny_checkpoint(tempfile.mkdtemp()), device="cpu", batch_size=3)
    dims = (model.dense_dim, model.colbert_dim, model.vocab_size)
    for variant in VARIANTS:
        index = build(model, variant)
        folder = Path(target) / variant
        index.save(folder / "index")
        expected = {"ids": index.ids, "results": run_searches(index, variant, dims)}
        (folder / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
