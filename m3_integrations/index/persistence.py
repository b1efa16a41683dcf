"""Saving and loading :class:`~m3_integrations.M3Index` folders: atomic, crash-safe and hardened.

Layout of a saved index (format 2)::

    path/
      manifest.json      what the index is (model, counts, dtypes) and which data folder holds it,
                         with the size and SHA-256 of every file in that folder
      .m3-index.lock     writers hold an exclusive ``flock`` on it while they save
      v-<32 hex>/        one immutable data folder: arrays.npz, documents.json, bm25_vocab.json

``path`` itself is never renamed or removed: a save writes a fresh data folder and switches the manifest
to it with one atomic rename (:mod:`m3_integrations.index.folder_writer`). A save to the folder an index
came from may write only its new rows, as one more data folder (format 3: the manifest then names every
segment; :mod:`m3_integrations.index.saving` writes both formats). Format 1 (the previous release: data
files directly in ``path``) still loads, and saving over it converts it.

A load reads ``manifest.json`` once, then every file it names once
(:mod:`m3_integrations.index.folder_reader`), and validates every value the search relies on
(:mod:`m3_integrations.index.format`). A folder that cannot be loaded raises
:class:`~m3_integrations.IndexLoadError` naming the file. :meth:`M3Index.save` and :meth:`M3Index.load`
are the public face of this module.

Example:
    .. code-block:: python

        index.save("my_index")  # M3Index.save calls save_index (from .saving)
        index = M3Index.load("my_index", model=model)
"""

from __future__ import annotations

import hashlib
import logging
import mmap as mmap_module
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from m3_integrations.bm25 import BM25, WordTokenizer
from m3_integrations.errors import IndexLoadError, IndexNotFoundError
from m3_integrations.index.calibration import Calibration
from m3_integrations.index.compact_store import CompactColbertStore
from m3_integrations.index.folder_reader import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    OpenFolder,
    VanishedError,
    map_file,
    parse_json,
    parsing,
    read_file,
    read_npz,
    release_pages,
)
from m3_integrations.index.format import (
    ARRAYS_FILE,
    DOCUMENTS_FILE,
    FORMAT_NAME,
    SEGMENTS_VERSION,
    VOCAB_FILE,
    Layout,
    check_arrays,
    check_documents,
    check_manifest,
    check_vocab,
    colbert_storage_of,
)
from m3_integrations.index.row_parts import is_mapped
from m3_integrations.index.saving import MAX_DEAD_SHARE, SavedState, check_save_target, save_index
from m3_integrations.index.segments import check_dead_rows, check_segments
from m3_integrations.language import LanguageProfile, analyzer_for

if TYPE_CHECKING:
    from m3_integrations.index.search import IndexStores
    from m3_integrations.model import M3Model

__all__ = [
    "MAX_DEAD_SHARE",
    "LoadedIndex",
    "SavedState",
    "check_save_target",
    "load_index",
    "read_manifest",
    "save_index",
]

logger = logging.getLogger(__name__)

LOAD_ATTEMPTS = 10


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``manifest.json`` of the index folder ``path``, read as :meth:`M3Index.load` reads it.

    A regular file only (no link, FIFO or device), size-bounded, JSON, with this library's format name;
    nothing else in the folder is read. For settings an index records (the model's identity), which the
    caller must still validate: a folder may come from anyone.

    Raises:
        IndexNotFoundError: no folder, or no manifest in it.
        IndexLoadError: the manifest cannot be read or is not an M3Index manifest.
    """
    folder = Path(path)
    root = _open_index_folder(folder)
    try:
        raw = _read_manifest(root, folder)
    finally:
        root.close()
    manifest = parse_json(raw, folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        msg = f"{folder / MANIFEST} is not an M3Index manifest"
        raise IndexLoadError(msg)
    return manifest


# ---------------------------------------------------------------------------- loading
@dataclass
class LoadedIndex:
    """A checked index folder: the settings to build the :class:`M3Index` with, then what to install."""

    settings: dict[str, Any]
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    arrays: dict[str, Any]  # mapped ColBERT arrays of several segments: a list of parts
    lexical: sp.csr_matrix | None
    bm25: BM25
    colbert_codec: dict[str, Any] | None = None  # the manifest's colbert_codec (compact storage)
    language: dict[str, Any] | None = None  # the manifest's checked "language" record
    calibration: Calibration | None = None  # the manifest's checked "calibration" (M3Index.calibrate)
    alive: np.ndarray | None = None  # format 3: which rows are live (the others are tombstones)
    manifest_sha256: str = ""
    segments: tuple[dict[str, Any], ...] = ()  # format 2 and 3: the segments on disk, oldest first

    def install(self, stores: IndexStores) -> None:
        """Put the loaded rows into a new index's (empty) stores."""
        stores.documents.restore(self.ids, self.texts, self.metadatas, self.alive)
        stores.dense.restore(self.arrays["dense"])
        if stores.lexical_weights is not None and self.lexical is not None:
            stores.lexical_weights.restore(self.lexical)
        if isinstance(stores.colbert, CompactColbertStore):
            stores.colbert.restore_arrays(self.arrays, self.colbert_codec)
        elif stores.colbert is not None:
            arrays = self.arrays
            stores.colbert.restore(arrays["colbert"], arrays["colbert_scale"], arrays["colbert_len"])
        stores.bm25 = self.bm25
        stores.set_alive()

    def saved_state(self, path: str | os.PathLike[str], stores: IndexStores) -> SavedState | None:
        """What a save to ``path`` can build on, once :meth:`install` ran (None for a format-1 folder)."""
        if not self.segments:
            return None
        return SavedState(
            folder=os.path.realpath(path),
            manifest_sha256=self.manifest_sha256,
            rows=len(self.ids),
            bm25_columns=int(stores.bm25.width),
            epochs=stores.epochs(),
            segments=self.segments,
        )


def check_language_record(value: Any, label: Path) -> dict[str, Any] | None:
    """The manifest's ``language``: ``{"setting": "auto"|code|null, "profile": {...}|null}``, checked.

    Absent (None) from indexes saved before language detection existed.

    Raises:
        ValueError: anything else (the message names the manifest).
    """
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"setting", "profile"}:
        msg = f"{label}: language is {value!r}, expected {{'setting', 'profile'}}"
        raise ValueError(msg)
    setting = value["setting"]
    if setting is not None and setting != "auto":
        analyzer_for(setting, strict=False)  # checks that it is a language code
    profile = value["profile"]
    if profile is not None:
        profile = LanguageProfile.from_json(profile, label=f"{label}: language profile").to_json()
    return {"setting": setting, "profile": profile}


def load_index(path: str | os.PathLike[str], model: M3Model, *, mmap: bool = False) -> LoadedIndex:
    """Read and check the index saved at ``path`` (format 1, 2 or 3) against ``model``.

    With ``mmap``, the ColBERT arrays (:data:`MAPPED_ARRAYS`) stay in the folder's files, memory-mapped
    (read-only, one part per segment); everything else is read into memory.

    Raises:
        IndexNotFoundError: no index at ``path``.
        IndexLoadError: anything else that keeps the folder from loading (the message names the file);
            a different model gives a message starting "model mismatch".
    """
    folder = Path(path)
    vanished = ""
    for attempt in range(LOAD_ATTEMPTS):
        try:
            return _load_once(folder, model, mmap=mmap)
        except VanishedError as err:  # a save replaced the data folder between the manifest and its files
            vanished = str(err)
            time.sleep(0.002 * (attempt + 1))
    msg = (
        f"{vanished}, named by {folder / MANIFEST}, is missing ({LOAD_ATTEMPTS} attempts): the index is "
        "damaged, or saves kept replacing it while it was read (then try again)"
    )
    raise IndexLoadError(msg)


def _open_index_folder(folder: Path) -> OpenFolder:
    try:
        return OpenFolder.open(folder)
    except FileNotFoundError as err:
        raise IndexNotFoundError(_not_found(folder, "no such folder")) from err
    except NotADirectoryError as err:
        raise IndexNotFoundError(_not_found(folder, "it is a file, not a folder")) from err
    except OSError as err:
        msg = f"{folder} cannot be opened: {err}"
        raise IndexLoadError(msg) from err


def _read_manifest(root: OpenFolder, folder: Path) -> bytes:
    try:
        return read_file(root, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    except VanishedError as err:
        raise IndexNotFoundError(_not_found(folder, f"{MANIFEST} is missing")) from err


def _load_once(folder: Path, model: M3Model, *, mmap: bool) -> LoadedIndex:
    root = _open_index_folder(folder)
    manifest_path = folder / MANIFEST
    try:
        raw = _read_manifest(root, folder)
        manifest = parse_json(raw, manifest_path)
        segmented = isinstance(manifest, dict) and manifest.get("format_version") == SEGMENTS_VERSION
        layout = check_manifest(manifest, manifest_path, model, codec_arrays=not segmented)
        if segmented:
            parts = check_segments(manifest, manifest_path)
            layouts = [
                check_manifest(part, manifest_path, model, codec_arrays=i == 0)
                for i, part in enumerate(parts)
            ]
        else:
            parts, layouts = [manifest], [layout]
        read = [_read_segment(root, folder, part_layout, manifest_path, mmap=mmap) for part_layout in layouts]
    finally:
        root.close()
    mapped = [blobs[ARRAYS_FILE] for blobs, _ in read if isinstance(blobs[ARRAYS_FILE], mmap_module.mmap)]
    try:
        contents = _checked_contents(
            model, manifest=manifest, manifest_label=manifest_path, parts=parts, layouts=layouts, read=read
        )
    finally:
        for buffer in mapped:  # the checks read the mapped arrays once: let those pages go
            release_pages(buffer)
    contents.manifest_sha256 = hashlib.sha256(raw).hexdigest()
    return contents


def _read_segment(
    root: OpenFolder, folder: Path, layout: Layout, manifest_path: Path, *, mmap: bool
) -> tuple[dict[str, bytes | mmap_module.mmap], Path]:
    """Every file of one data folder (or of ``folder`` itself for format 1), checked against ``layout``."""
    data_dir: OpenFolder | None = None
    if layout.data is None:
        data_dir = root
    else:
        try:
            data_dir = OpenFolder.open(folder / layout.data, parent=root, follow=False)
        except FileNotFoundError as err:
            raise VanishedError(str(folder / layout.data)) from err
        except OSError as err:
            msg = (
                f"{folder / layout.data} (named by {manifest_path}) is not a plain folder "
                f"(a symbolic link or a file?): {err.strerror}"
            )
            raise IndexLoadError(msg) from err
    try:
        blobs: dict[str, bytes | mmap_module.mmap] = {
            name: (map_file if mmap and name == ARRAYS_FILE else read_file)(
                data_dir, name, max_bytes=limit, declared=size, sha256=digest
            )
            for name, (size, digest, limit) in layout.files.items()
        }
        return blobs, data_dir.path
    finally:
        if data_dir is not root:
            data_dir.close()


def _not_found(folder: Path, reason: str) -> str:
    hint = ""
    try:
        for name in sorted(os.listdir(folder.parent)):
            if name.startswith(f".{folder.name}.old-") and (folder.parent / name / MANIFEST).is_file():
                hint = (
                    f"; an interrupted save of an earlier release left the previous index in "
                    f"{folder.parent / name}: move it to {folder} to use it"
                )
                break
    except OSError:
        pass
    return f"no M3Index at {folder} ({reason}){hint}"


def _checked_contents(
    model: M3Model,
    *,
    manifest: dict[str, Any],
    manifest_label: Path,
    parts: list[dict[str, Any]],
    layouts: list[Layout],
    read: list[tuple[dict[str, bytes | mmap_module.mmap], Path]],
) -> LoadedIndex:
    segmented = len(parts) > 1 or manifest.get("format_version") == SEGMENTS_VERSION
    segment_arrays: list[dict[str, np.ndarray]] = []
    ids: list[str] = []
    texts: list[str] = []
    metadatas: list[dict[str, Any]] = []
    vocab: list[str] | None = [] if manifest["bm25_tokenizer"] == "word" else None
    columns = 0
    codec_arrays: dict[str, np.ndarray] = {}
    arrays_label = read[-1][1] / ARRAYS_FILE
    for part, layout, (blobs, data_dir) in zip(parts, layouts, read, strict=True):
        arrays_label = data_dir / ARRAYS_FILE
        arrays = read_npz(blobs.pop(ARRAYS_FILE), layout.arrays, arrays_label, mapped=MAPPED_ARRAYS)
        if not codec_arrays:
            codec_arrays = {k: v for k, v in arrays.items() if k in _CODEC_ARRAYS}
        arrays = {**codec_arrays, **arrays}  # later segments are checked against the first one's codec
        documents_label = data_dir / DOCUMENTS_FILE
        part_ids, part_texts, part_metadatas = check_documents(
            parse_json(_bytes(blobs, DOCUMENTS_FILE), documents_label),
            layout.count,
            documents_label,
            unique=not segmented,
        )
        ids += part_ids
        texts += part_texts
        metadatas += part_metadatas
        part_columns = layout.bm25_columns
        if vocab is not None:
            vocab_label = data_dir / VOCAB_FILE
            new_words = None if part_columns is None else part_columns - columns
            if new_words is not None and new_words < 0:
                msg = f"{manifest_label}: bm25_columns shrinks from {columns} to {part_columns} in a segment"
                raise IndexLoadError(msg)
            vocab += check_vocab(parse_json(_bytes(blobs, VOCAB_FILE), vocab_label), new_words, vocab_label)
            part_columns = len(vocab)
        assert part_columns is not None
        columns = part_columns
        with parsing(arrays_label):
            check_arrays(
                arrays,
                part,
                n=layout.count,
                bm25_columns=columns,
                vocab_size=model.vocab_size,
                label=arrays_label,
            )
        segment_arrays.append(arrays)
    count = len(ids)
    arrays = segment_arrays[0] if len(segment_arrays) == 1 else _concatenate(segment_arrays, codec_arrays)
    alive = None
    if segmented:
        alive = np.ones(count, dtype=bool)
        alive[check_dead_rows(manifest.get("dead_rows"), count, manifest_label)] = False
        seen: set[str] = set()
        for row in np.flatnonzero(alive):
            if ids[row] in seen:
                msg = f"{manifest_label}: the id {ids[row]!r} belongs to two live rows"
                raise IndexLoadError(msg)
            seen.add(ids[row])
    if vocab is not None:
        vocab = check_vocab(vocab, columns, manifest_label)  # no word twice across segments
    words = manifest.get("bm25_words") or {}
    try:  # an unknown stemmer language, or the stemming extra not installed
        WordTokenizer(
            stemmer=words.get("stemmer"), stopwords=words.get("stopwords"), cjk=words.get("cjk", "chars")
        )
        language = check_language_record(manifest.get("language"), manifest_label)
    except (ImportError, ValueError) as err:
        msg = f"{manifest_label}: the index's BM25 word settings cannot be used here: {err}"
        raise IndexLoadError(msg) from err
    calibration = None
    if manifest.get("calibration") is not None:
        try:
            calibration = Calibration.from_json(
                manifest["calibration"], label=f"{manifest_label}: calibration"
            )
        except ValueError as err:
            raise IndexLoadError(str(err)) from err
    with parsing(arrays_label):
        bm25 = BM25.from_arrays(
            arrays,
            vocab=vocab,
            num_columns=model.vocab_size if manifest["bm25_tokenizer"] == "model" else None,
            **manifest["bm25"],
        )
        lexical = None
        if manifest["lexical"] == "m3":
            lexical = sp.csr_matrix(
                (arrays["lex_data"], arrays["lex_indices"], arrays["lex_indptr"]),
                shape=(count, model.vocab_size),
            )
    settings = {
        "store_colbert": manifest["store_colbert"],
        "colbert_dtype": manifest["colbert_dtype"],
        "colbert_storage": colbert_storage_of(manifest),
        "dense_dtype": manifest["dense_dtype"],
        "lexical": manifest["lexical"],
        "bm25_tokenizer": manifest["bm25_tokenizer"],
        "bm25_stemmer": words.get("stemmer"),
        "bm25_stopwords": words.get("stopwords"),
        "bm25_cjk": words.get("cjk"),
        # The analyzer is the recorded one (above); the record only says how it was chosen.
        "language": None,
    }
    codec = manifest.get("colbert_codec") if settings["colbert_storage"] == "compact" else None
    segments = tuple(  # what a later incremental save keeps: the first segment and non-empty ones
        {
            "data": layout.data,
            "files": {name: {"bytes": size, "sha256": sha} for name, (size, sha, _) in layout.files.items()},
            "count": layout.count,
            "colbert_vectors": part.get("colbert_vectors") if part["store_colbert"] else 0,
            "lexical_nnz": part.get("lexical_nnz"),
            "bm25_nnz": part.get("bm25_nnz"),
            "bm25_columns": part.get("bm25_columns"),
        }
        for i, (part, layout) in enumerate(zip(parts, layouts, strict=True))
        if layout.data is not None and (layout.count or i == 0)
    )
    return LoadedIndex(
        settings,
        ids,
        texts,
        metadatas,
        arrays,
        lexical,
        bm25,
        codec,
        language,
        calibration,
        alive=alive,
        segments=segments if layouts[-1].data is not None else (),
    )


_CODEC_ARRAYS = ("colbert_centroids", "colbert_cutoffs", "colbert_values")
# What ``mmap=True`` leaves in the files: the ColBERT rows, by far the largest arrays (a list of parts,
# one per segment, once loaded: see :class:`~m3_integrations.index.row_parts.RowParts`).
MAPPED_ARRAYS = frozenset({"colbert", "colbert_scale", "colbert_ids", "colbert_residual"})


def _bytes(blobs: dict[str, bytes | mmap_module.mmap], name: str) -> bytes:
    data = blobs.pop(name)
    assert isinstance(data, bytes)  # only arrays.npz is ever mapped
    return data


def _concatenate(parts: list[dict[str, np.ndarray]], codec_arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The arrays of consecutive segments as the arrays of one (CSR row pointers shifted).

    Mapped arrays are not copied: they stay a list of parts, one per segment.
    """
    merged: dict[str, Any] = dict(codec_arrays)
    for name in parts[0]:
        if name in _CODEC_ARRAYS:
            continue
        if name in MAPPED_ARRAYS and any(is_mapped(part[name]) for part in parts):
            merged[name] = [part[name] for part in parts]
            continue
        if name.endswith("_indptr"):
            pieces, offset = [parts[0][name]], int(parts[0][name][-1])
            for part in parts[1:]:
                pieces.append(part[name][1:] + offset)
                offset += int(part[name][-1])
            merged[name] = np.concatenate(pieces)
        else:
            merged[name] = np.concatenate([part[name] for part in parts])
    return merged
