"""The previous release's ``M3Index.save`` (format 1: data files directly in the index folder).

Kept only so the tests can build the folders that release wrote and check that they still load and can
be saved over. It writes the way that release did: a temporary sibling folder swapped in by two renames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from m3_integrations import M3Index


def save_format1(index: M3Index, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to ``path`` exactly as format 1 did (manifest, arrays.npz, JSON files)."""
    with index._lock:
        index.compact()
        stores = index._stores
        table = stores.documents
        documents = {"ids": table.ids, "texts": table.texts, "metadatas": table.metadatas}
        n = table.n_rows
        arrays: dict[str, np.ndarray] = {"dense": stores.dense.vectors}
        if index.lexical == "m3":
            lex = stores.lexical_weights.matrix()
            arrays |= {
                "lex_data": lex.data,
                "lex_indices": lex.indices.astype(np.int64),
                "lex_indptr": lex.indptr.astype(np.int64),
            }
        if index.store_colbert:
            arrays |= stores.colbert.to_arrays()
        bm25 = stores.bm25
        arrays |= bm25.to_arrays()
        vocab = list(bm25.vocab) if index.bm25_tokenizer == "word" else None
        words = index.bm25_word_settings
        manifest: dict[str, Any] = {
            "format": "m3-index",
            "format_version": 1,
            "model": index.model.identity,
            "count": n,
            "dense_dim": index.dense_dim,
            "colbert_dim": index.colbert_dim,
            "vocab_size": index.vocab_size,
            "dense_dtype": index.dense_dtype,
            "colbert_dtype": index.colbert_dtype,
            "store_colbert": index.store_colbert,
            "lexical": index.lexical,
            "bm25_tokenizer": index.bm25_tokenizer,
            "bm25_words": words,
            "bm25": {"k1": bm25.k1, "b": bm25.b, "epsilon": bm25.epsilon},
            "colbert_vectors": index.colbert_vectors,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        with open(tmp / "arrays.npz", "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        (tmp / "documents.json").write_text(json.dumps(documents, ensure_ascii=False), "utf-8")
        if vocab is not None:
            (tmp / "bm25_vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
        manifest["files"] = {
            name: {
                "sha256": hashlib.sha256((tmp / name).read_bytes()).hexdigest(),
                "bytes": (tmp / name).stat().st_size,
            }
            for name in sorted(p.name for p in tmp.iterdir())
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), "utf-8")
        backup = None
        if target.exists():
            backup = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, backup)
        os.replace(tmp, target)
        if backup is not None:
            shutil.rmtree(backup)
