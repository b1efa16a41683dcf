"""Saving an :class:`~m3_integrations.M3Index` to a folder: whole (format 2) or one new segment (format 3).

A whole save compacts the index and writes every row into one new data folder; an incremental save,
to the folder the index was last saved to or loaded from, writes only the rows added since (and, with
``purge_deleted=False``, the deleted rows as tombstones) beside the data folders already there. Either
way the manifest is switched with one atomic rename (:mod:`m3_integrations.index.folder_writer`).
:mod:`m3_integrations.index.persistence` reads the folders back; ``docs/engine.md`` ("Persistence
format") describes both formats.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from m3_integrations.index.compact_store import CompactColbertStore
from m3_integrations.index.folder_writer import StaleBaseError, check_target, write_folder, write_npz
from m3_integrations.index.format import (
    ARRAYS_FILE,
    DOCUMENTS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_FOLDER,
    SEGMENTS_VERSION,
    VOCAB_FILE,
)
from m3_integrations.index.segments import SEGMENT_KEYS

if TYPE_CHECKING:
    from m3_integrations.index.index import M3Index
    from m3_integrations.index.search import IndexStores

__all__ = ["MAX_DEAD_SHARE", "MAX_SEGMENTS_KEPT", "SavedState", "check_save_target", "save_index"]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- saving
# An incremental save adds one segment; beyond these, the save writes the whole index again (compacted,
# one segment), which is also what merges segments.
MAX_SEGMENTS_KEPT = 32
MAX_DEAD_SHARE = 0.25


@dataclass(frozen=True)
class SavedState:
    """What an index last saved to (or loaded from) a folder: enough to add a segment to that save.

    Attributes:
        folder: the folder's real path.
        manifest_sha256: the SHA-256 of the manifest then written (or read).
        rows: the rows (tombstones included) then on disk, all still in memory as rows ``0 .. rows-1``.
        bm25_columns: the BM25 columns then on disk (word vocabularies only grow between compactions).
        epochs: the stores' epochs then (:meth:`IndexStores.epochs`): any rewrite of a row changes them.
        segments: the non-empty segments then on disk, oldest first (:data:`~.format.SEGMENT_KEYS`).
    """

    folder: str
    manifest_sha256: str
    rows: int
    bm25_columns: int
    epochs: tuple[int, ...]
    segments: tuple[dict[str, Any], ...]


def save_index(
    index: M3Index,
    stores: IndexStores,
    path: str | os.PathLike[str],
    saved: SavedState | None,
    *,
    purge_deleted: bool = True,
) -> SavedState:
    """Write ``index`` (under its lock) to the folder ``path``; returns what the next save can build on.

    When ``saved`` describes the last save to this folder and none of its rows was rewritten since,
    only the rows added since and the list of deleted rows are written (a new segment, format 3).
    Otherwise the index is compacted and written whole (format 2). With ``purge_deleted`` (the
    default) any deleted row makes the save whole, so that nothing of a deleted document stays on disk.

    Raises:
        FileExistsError: something other than an M3Index folder or an empty folder is at ``path``
            (a folder with other files, a regular file, a symlink); nothing is touched then.
        TypeError: a metadata value is not JSON-serialisable (the message names the id).
    """
    base = _incremental_base(stores, path, saved)
    if purge_deleted and stores.documents.dead_rows:
        base = None
    if base is not None:
        try:
            return _write(index, stores, path, base)
        except StaleBaseError as err:
            logger.info("saving the whole index to %s: %s", path, err)
    index.compact()
    stores.bm25.drop_unused_terms()  # compact() keeps the vocabulary when no row was dead
    return _write(index, stores, path, None)


def _incremental_base(
    stores: IndexStores, path: str | os.PathLike[str], saved: SavedState | None
) -> SavedState | None:
    if saved is None or os.path.realpath(path) != saved.folder or saved.epochs != stores.epochs():
        return None
    table = stores.documents
    if (
        table.n_rows < saved.rows
        or stores.bm25.width < saved.bm25_columns
        or len(saved.segments) >= MAX_SEGMENTS_KEPT
        or table.dead_rows > MAX_DEAD_SHARE * table.n_rows
    ):
        return None
    return saved


def _write(
    index: M3Index, stores: IndexStores, path: str | os.PathLike[str], base: SavedState | None
) -> SavedState:
    """Write the rows from ``base.rows`` on as a new segment over ``base``, or everything (no base)."""
    first = 0 if base is None else base.rows
    first_column = 0 if base is None else base.bm25_columns
    documents = _documents_bytes(stores, first)
    bm25 = stores.bm25
    vocab = (
        json.dumps(bm25.words()[first_column:], ensure_ascii=False).encode("utf-8")
        if index.bm25_tokenizer == "word"
        else None
    )
    arrays: dict[str, Any] = stores.dense.to_arrays(first)  # ColBERT rows: lists of pieces, streamed
    lexical_nnz = 0
    if stores.lexical_weights is not None:
        arrays |= stores.lexical_weights.to_arrays("lex", first)
        lexical_nnz = len(arrays["lex_data"])
    colbert_vectors = 0
    if isinstance(stores.colbert, CompactColbertStore):  # the codec is saved with the first segment only
        arrays |= stores.colbert.to_arrays(first, codec=base is None, pieces=True)
    elif stores.colbert is not None:
        arrays |= stores.colbert.to_arrays(first, pieces=True)
    if stores.colbert is not None:
        stored = arrays["colbert_ids"] if "colbert_ids" in arrays else arrays["colbert"]
        colbert_vectors = sum(len(piece) for piece in stored)
    arrays |= bm25.to_arrays(first)
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION if base is None else SEGMENTS_VERSION,
        "model": index.model.identity,
        "count": stores.documents.n_rows - first,
        "dense_dim": index.dense_dim,
        "colbert_dim": index.colbert_dim,
        "vocab_size": index.vocab_size,
        "dense_dtype": index.dense_dtype,
        "colbert_dtype": index.colbert_dtype,
        "colbert_storage": index.colbert_storage,
        "store_colbert": index.store_colbert,
        "lexical": index.lexical,
        "bm25_tokenizer": index.bm25_tokenizer,
        "bm25_words": index.bm25_word_settings,
        "bm25": {"k1": bm25.k1, "b": bm25.b, "epsilon": bm25.epsilon},
        "colbert_vectors": colbert_vectors if index.store_colbert else 0,
        "lexical_nnz": lexical_nnz,
        "bm25_nnz": len(arrays["bm25_data"]),
        "bm25_columns": int(bm25.width),
    }
    if isinstance(stores.colbert, CompactColbertStore):
        manifest |= stores.colbert.manifest_fields()
    if index.language_record is not None:  # absent from indexes saved before language detection
        manifest["language"] = index.language_record
    if index.calibration is not None:  # absent from indexes never calibrated (M3Index.calibrate)
        manifest["calibration"] = index.calibration.to_json()
    if base is not None:
        manifest["segments"] = list(base.segments)
        manifest["dead_rows"] = np.flatnonzero(~stores.documents.alive).tolist()
    files: dict[str, Callable[[BinaryIO], None]] = {
        ARRAYS_FILE: lambda fh: write_npz(fh, arrays),
        DOCUMENTS_FILE: lambda fh: fh.write(documents),
    }
    if vocab is not None:
        files[VOCAB_FILE] = lambda fh: fh.write(vocab)
    written, digest = write_folder(
        path,
        INDEX_FOLDER,
        manifest,
        files,
        base=None if base is None else (base.manifest_sha256, [entry["data"] for entry in base.segments]),
    )
    newest = {key: written[key] for key in SEGMENT_KEYS}
    older = () if base is None else base.segments
    return SavedState(
        folder=os.path.realpath(path),
        manifest_sha256=digest,
        rows=stores.documents.n_rows,
        bm25_columns=int(bm25.width),
        epochs=stores.epochs(),
        segments=(*older, newest) if newest["count"] or base is None else older,
    )


def _documents_bytes(stores: IndexStores, first: int) -> bytes:
    """``documents.json`` of the rows from ``first`` on; a deleted row keeps only its id."""
    table = stores.documents
    ids, texts, metadatas = table.ids[first:], list(table.texts[first:]), list(table.metadatas[first:])
    for row in np.flatnonzero(~table.alive[first:]):  # deleted before this save: nothing of it is written
        texts[row], metadatas[row] = "", {}
    for doc_id, meta in zip(ids, metadatas, strict=True):
        try:
            json.dumps(meta)
        except (TypeError, ValueError, RecursionError) as err:
            msg = f"metadata of document {doc_id!r} is not JSON-serialisable: {err}"
            raise TypeError(msg) from err
    documents = {"ids": ids, "texts": texts, "metadatas": metadatas}
    return json.dumps(documents, ensure_ascii=False).encode("utf-8")


def check_save_target(path: str | os.PathLike[str]) -> None:
    """Raise what :meth:`M3Index.save` would raise for ``path``, without writing anything.

    Lets a caller (the CLI) refuse a destination before the slow work of building an index.

    Raises:
        FileExistsError: ``path`` is a file, a link, or a folder that is neither empty nor an index.
    """
    check_target(Path(path), INDEX_FOLDER)
