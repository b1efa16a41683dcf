"""The index folder format (version 2, and version 1 of the previous release) and its checks on load.

What a manifest must say, which files and arrays it calls for (with their exact dtypes and shapes, known
before a byte of data is read), and what every loaded value must satisfy for search to rely on it:
finite numbers, indices inside their range, lengths that add up, unique ids. Every failure is an
:class:`~m3_integrations.IndexLoadError` naming the file; a different model gives a message starting
"model mismatch". :mod:`m3_integrations.index.persistence` reads and writes the folders.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m3_integrations.bm25 import CJK_MODES
from m3_integrations.errors import IndexLoadError
from m3_integrations.index.colbert_codecs import COLBERT_STORAGES, POOL_FACTOR
from m3_integrations.index.folder_reader import MANIFEST, ArraySpec
from m3_integrations.index.folder_writer import VERSION_DIR_RE, FolderFormat

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

__all__ = [
    "ARRAYS_FILE",
    "DOCUMENTS_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INDEX_FOLDER",
    "LOCK_FILE",
    "READABLE_VERSIONS",
    "SEGMENTS_VERSION",
    "VOCAB_FILE",
    "Layout",
    "check_arrays",
    "check_documents",
    "check_manifest",
    "check_vocab",
]

FORMAT_NAME = "m3-index"
FORMAT_VERSION = 2  # what a save of the whole index writes; an incremental save writes SEGMENTS_VERSION
SEGMENTS_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

LOCK_FILE = ".m3-index.lock"
ARRAYS_FILE = "arrays.npz"
DOCUMENTS_FILE = "documents.json"
VOCAB_FILE = "bm25_vocab.json"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Per npz member: local header, central directory entry (both with zip64 extras) and the npy header.
_NPZ_MEMBER_OVERHEAD = 1024
MAX_COUNT = 1 << 48  # far above any index that fits in memory; keeps size arithmetic meaningful
BM25_PARAMETER_RANGES = {"k1": (0.0, 100.0), "b": (0.0, 1.0), "epsilon": (0.0, 1.0)}

INDEX_FOLDER = FolderFormat(
    name=FORMAT_NAME,
    versions=READABLE_VERSIONS,
    noun="M3Index",
    what="the index",
    folder_noun="index folder",
    verb="save",
    writer="M3Index.save",
    lock_file=LOCK_FILE,
    # Format 1 kept its data files beside the manifest; a save converts the folder and removes them.
    legacy_entries={ARRAYS_FILE: False, DOCUMENTS_FILE: False, VOCAB_FILE: False},
    # The previous release wrote into a sibling ``.NAME.tmp-XXXXXXXX`` (tempfile.mkdtemp) and moved the
    # old folder to ``.NAME.old-PID`` between two renames; a killed save left them behind.
    old_release_files=frozenset({MANIFEST, ARRAYS_FILE, DOCUMENTS_FILE, VOCAB_FILE}),
)


@dataclass(frozen=True)
class Layout:
    """What a checked manifest calls for: the files to read and the arrays they must hold."""

    version: int
    data: str | None  # the data folder (format 2); None: files beside the manifest (format 1)
    count: int
    files: dict[str, tuple[int, str, int]]  # name -> (declared bytes, sha256, most bytes allowed)
    arrays: dict[str, ArraySpec]
    bm25_columns: int | None  # None: the vocabulary's length (format 1)


def check_manifest(manifest: Any, label: Path, model: M3Model, *, codec_arrays: bool = True) -> Layout:
    """Validate every manifest field the load relies on; the model check comes before any data is read.

    For format 3 this checks the newest segment (the manifest's own ``data``, ``files`` and counts);
    :func:`check_segments` gives the manifest of each older one. ``codec_arrays=False``: the segment holds
    no compact ColBERT codec (only the oldest segment of a format-3 index does).
    """
    if not isinstance(manifest, dict):
        msg = f"{label} is not an M3Index manifest (a JSON {type(manifest).__name__}, not an object)"
        raise IndexLoadError(msg)
    if manifest.get("format") != FORMAT_NAME:
        msg = f'{label} is not an M3Index manifest (no "format": "{FORMAT_NAME}")'
        raise IndexLoadError(msg)
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        msg = (
            f"unknown M3Index format version {version!r} in {label} "
            f"(this library reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
        raise IndexLoadError(msg)
    _check_model(manifest, model, label)
    _choice(manifest, "dense_dtype", ("float32", "float16"), label)
    _choice(manifest, "colbert_dtype", ("float16", "int8"), label)
    _choice(manifest, "store_colbert", (True, False), label)
    codec = _check_colbert_storage(manifest, label)
    _choice(manifest, "lexical", ("m3", "bm25"), label)
    tokenizer = _choice(manifest, "bm25_tokenizer", ("model", "word"), label)
    if manifest["lexical"] == "m3" and not model.has_sparse:
        msg = (
            f"model mismatch: {label} records M3 lexical weights, and the model "
            f"{model.model_name_or_path!r} has no sparse head"
        )
        raise IndexLoadError(msg)
    _check_bm25_settings(manifest, label)
    n = _count(manifest, "count", label)
    colbert_vectors = _count(manifest, "colbert_vectors", label) if manifest["store_colbert"] else 0
    dense_dtype = np.dtype(manifest["dense_dtype"])
    arrays = {"dense": ArraySpec(dense_dtype, (n, model.dense_dim))}
    nnz: dict[str, int | None] = {"lexical_nnz": None, "bm25_nnz": None}
    bm25_columns: int | None = model.vocab_size if tokenizer == "model" else None
    if version >= 2:
        nnz = {key: _count(manifest, key, label) for key in nnz}
        columns = _count(manifest, "bm25_columns", label)
        if tokenizer == "model" and columns != model.vocab_size:
            msg = f"{label}: bm25_columns is {columns}, expected the vocabulary size {model.vocab_size}"
            raise IndexLoadError(msg)
        bm25_columns = columns
    int64, float32 = np.dtype("<i8"), np.dtype("<f4")
    if manifest["lexical"] == "m3":
        arrays |= {
            "lex_data": ArraySpec(float32, (nnz["lexical_nnz"],)),
            "lex_indices": ArraySpec(int64, (nnz["lexical_nnz"],)),
            "lex_indptr": ArraySpec(int64, (n + 1,)),
        }
    if manifest["store_colbert"] and codec is not None:
        bits, dim = codec["bits"], model.colbert_dim
        arrays |= {
            "colbert": ArraySpec(np.dtype(np.float16), (0, dim)),
            "colbert_scale": ArraySpec(float32, (0,)),
            "colbert_len": ArraySpec(int64, (n,)),
            "colbert_ids": ArraySpec(np.dtype("<u2"), (colbert_vectors,)),
            "colbert_residual": ArraySpec(np.dtype("u1"), (colbert_vectors, math.ceil(dim * bits / 8))),
        }
        if codec_arrays:
            arrays |= {
                "colbert_centroids": ArraySpec(float32, (codec["centroids"], dim)),
                "colbert_cutoffs": ArraySpec(float32, ((1 << bits) - 1, dim)),
                "colbert_values": ArraySpec(float32, (1 << bits, dim)),
            }
    elif manifest["store_colbert"]:
        int8 = manifest["colbert_dtype"] == "int8"
        arrays |= {
            "colbert": ArraySpec(np.dtype(manifest["colbert_dtype"]), (colbert_vectors, model.colbert_dim)),
            "colbert_scale": ArraySpec(float32, (colbert_vectors if int8 else 0,)),
            "colbert_len": ArraySpec(int64, (n,)),
        }
    arrays |= {
        "bm25_data": ArraySpec(float32, (nnz["bm25_nnz"],)),
        "bm25_indices": ArraySpec(int64, (nnz["bm25_nnz"],)),
        "bm25_indptr": ArraySpec(int64, (n + 1,)),
        "bm25_doc_len": ArraySpec(np.dtype("<f8"), (n,)),
    }
    known = sum(
        math.prod(d for d in spec.shape if d is not None) * spec.dtype.itemsize for spec in arrays.values()
    )
    exact = all(None not in spec.shape for spec in arrays.values())
    overhead = _NPZ_MEMBER_OVERHEAD * (len(arrays) + 1)
    expected_files = {ARRAYS_FILE: known + overhead if exact else None, DOCUMENTS_FILE: None}
    if tokenizer == "word":
        expected_files[VOCAB_FILE] = None
    files = _check_files_table(manifest, label, expected_files)
    declared_arrays = files[ARRAYS_FILE][0]
    if declared_arrays < known:
        msg = (
            f"{label}: {ARRAYS_FILE} is declared with {declared_arrays} bytes, but the manifest's counts "
            f"({n} documents, {colbert_vectors} ColBERT vectors) need at least {known}"
        )
        raise IndexLoadError(msg)
    data = None
    if version >= 2:
        data = manifest.get("data")
        if not isinstance(data, str) or not VERSION_DIR_RE.fullmatch(data):
            msg = f"{label}: data is {data!r}, expected the name of a data folder like 'v-<32 hex digits>'"
            raise IndexLoadError(msg)
    return Layout(version, data, n, files, arrays, bm25_columns)


def colbert_storage_of(manifest: Mapping[str, Any]) -> str:
    """The manifest's ``colbert_storage``; folders written before it existed follow ``colbert_dtype``."""
    storage = manifest.get("colbert_storage")
    if storage is None:
        return "int8" if manifest.get("colbert_dtype") == "int8" else "exact"
    return str(storage)


def _check_colbert_storage(manifest: Mapping[str, Any], label: Path) -> dict[str, Any] | None:
    """``colbert_storage`` (optional) and, for ``"compact"``, the ``colbert_codec`` it records (or None)."""
    if manifest.get("colbert_storage") is not None:
        _choice(manifest, "colbert_storage", COLBERT_STORAGES, label)
    storage = colbert_storage_of(manifest)
    if (storage == "int8") != (manifest["colbert_dtype"] == "int8"):
        msg = f"{label}: colbert_storage {storage!r} contradicts colbert_dtype {manifest['colbert_dtype']!r}"
        raise IndexLoadError(msg)
    if storage != "compact" or not manifest["store_colbert"]:
        return None
    codec = manifest.get("colbert_codec")
    if codec is None:
        return None
    expected = {"kind", "pool_factor", "bits", "centroids", "train_error", "drift_sum", "drift_count"}
    if not isinstance(codec, dict) or set(codec) != expected:
        msg = f"{label}: colbert_codec is not an object with the keys {', '.join(sorted(expected))}"
        raise IndexLoadError(msg)
    _choice(codec, "kind", ("residual",), label)
    _choice(codec, "pool_factor", (POOL_FACTOR,), label)
    _choice(codec, "bits", (1, 2), label)
    centroids = codec["centroids"]
    if type(centroids) is not int or not 1 <= centroids <= 1 << 16:
        msg = f"{label}: colbert_codec centroids is {centroids!r}, expected an integer in [1, 65536]"
        raise IndexLoadError(msg)
    for key in ("train_error", "drift_sum"):
        value = codec[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            msg = f"{label}: colbert_codec {key} is {value!r}, expected a finite non-negative number"
            raise IndexLoadError(msg)
    _count(codec, "drift_count", label)
    return codec


def _check_model(manifest: Mapping[str, Any], model: M3Model, label: Path) -> None:
    for key, actual in (
        ("dense_dim", model.dense_dim),
        ("colbert_dim", model.colbert_dim),
        ("vocab_size", model.vocab_size),
    ):
        recorded = manifest.get(key)
        if recorded != actual or isinstance(recorded, bool):
            msg = (
                f"model mismatch: {label} records {key}={recorded!r}, "
                f"the model {model.model_name_or_path!r} has {actual}"
            )
            raise IndexLoadError(msg)
    identity = manifest.get("model")
    if not isinstance(identity, dict):
        msg = f"{label}: model is {type(identity).__name__}, expected the model identity (an object)"
        raise IndexLoadError(msg)
    saved = identity.get("fingerprint")
    if saved != model.fingerprint:
        msg = (
            f"model mismatch: {label} was built with {identity.get('model_name_or_path')!r} "
            f"(fingerprint {saved!r}), the model given is {model.model_name_or_path!r} "
            f"(fingerprint {model.fingerprint})"
        )
        raise IndexLoadError(msg)


def _choice(manifest: Mapping[str, Any], key: str, allowed: tuple[Any, ...], label: Path) -> Any:
    value = manifest.get(key)
    if not any(value is option or (type(value) is type(option) and value == option) for option in allowed):
        msg = f"{label}: {key} is {value!r}, expected one of {', '.join(map(repr, allowed))}"
        raise IndexLoadError(msg)
    return value


def _count(manifest: Mapping[str, Any], key: str, label: Path) -> int:
    value = manifest.get(key)
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        msg = f"{label}: {key} is {value!r}, expected a non-negative integer"
        raise IndexLoadError(msg)
    return value


def _check_bm25_settings(manifest: Mapping[str, Any], label: Path) -> None:
    params = manifest.get("bm25")
    if not isinstance(params, dict) or set(params) != set(BM25_PARAMETER_RANGES):
        msg = f"{label}: bm25 is {params!r}, expected {{'k1', 'b', 'epsilon'}} numbers"
        raise IndexLoadError(msg)
    for key, (low, high) in BM25_PARAMETER_RANGES.items():
        value = params[key]
        if type(value) not in (int, float) or not (math.isfinite(value) and low <= value <= high):
            msg = f"{label}: bm25 {key} is {value!r}, expected a finite number in [{low}, {high}]"
            raise IndexLoadError(msg)
    words = manifest.get("bm25_words") or {}  # absent from indexes saved before stemming existed
    stopwords = words.get("stopwords") if isinstance(words, dict) else None
    if (
        not isinstance(words, dict)
        or set(words) - {"stemmer", "stopwords", "cjk"}
        or not isinstance(words.get("stemmer"), str | None)
        or words.get("cjk", "chars") not in CJK_MODES
        or not (
            stopwords is None or (isinstance(stopwords, list) and all(isinstance(w, str) for w in stopwords))
        )
    ):
        expected = "{'stemmer': name|null, 'stopwords': [...]|null, 'cjk'?: mode}"
        msg = f"{label}: bm25_words is {words!r}, expected {expected}"
        raise IndexLoadError(msg)


def _check_files_table(
    manifest: Mapping[str, Any], label: Path, expected: Mapping[str, int | None]
) -> dict[str, tuple[int, str, int]]:
    table = manifest.get("files")
    if not isinstance(table, dict):
        msg = f"{label} has no files table (the size and SHA-256 of every data file); refused"
        raise IndexLoadError(msg)
    for name in table:
        if not _plain_name(name):
            msg = f"{label}: the files table names {name!r}, which is not a plain file name inside the index"
            raise IndexLoadError(msg)
    if set(table) != set(expected):
        msg = f"{label}: the files table names {sorted(table)}, expected {sorted(expected)}"
        raise IndexLoadError(msg)
    files: dict[str, tuple[int, str, int]] = {}
    for name, limit in expected.items():
        info = table[name]
        size = info.get("bytes") if isinstance(info, dict) else None
        digest = info.get("sha256") if isinstance(info, dict) else None
        if (
            type(size) is not int
            or size < 0
            or not isinstance(digest, str)
            or not _SHA256_RE.fullmatch(digest)
        ):
            msg = f"{label}: the files table entry of {name} is {info!r}, expected bytes and sha256"
            raise IndexLoadError(msg)
        most = size if limit is None else limit
        if size > most:
            msg = f"{label}: {name} is declared with {size} bytes, more than the {most} its counts allow"
            raise IndexLoadError(msg)
        files[name] = (size, digest, most)
    return files


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and ":" not in name


def check_documents(
    documents: Any, n: int, label: Path, *, unique: bool = True
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``documents.json``'s ids, texts and metadata: ``n`` of each, of the right types, ids unique.

    ``unique=False`` for a format-3 segment, which may keep a deleted row beside its id's new one (the
    loader checks that the live ids are unique).
    """
    if not isinstance(documents, dict):
        msg = f"{label} is a JSON {type(documents).__name__}, expected an object with ids, texts, metadatas"
        raise IndexLoadError(msg)
    columns = []
    for key in ("ids", "texts", "metadatas"):
        values = documents.get(key)
        if not isinstance(values, list) or len(values) != n:
            got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
            msg = f"{label}: {key} holds {got}, expected a list of {n} (the manifest's count)"
            raise IndexLoadError(msg)
        columns.append(values)
    ids, texts, metadatas = columns
    for key, values, kind in (("ids", ids, str), ("texts", texts, str), ("metadatas", metadatas, dict)):
        for i, value in enumerate(values):
            if not isinstance(value, kind):
                msg = f"{label}: {key}[{i}] is {type(value).__name__}, expected {kind.__name__}"
                raise IndexLoadError(msg)
    if unique and len(set(ids)) != n:
        repeated = next(doc_id for doc_id, count in _counts(ids).items() if count > 1)
        msg = f"{label}: the id {repeated!r} occurs more than once"
        raise IndexLoadError(msg)
    return ids, texts, metadatas


def _counts(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def check_vocab(vocab: Any, columns: int | None, label: Path) -> list[str]:
    """``bm25_vocab.json``: unique strings, one per BM25 column."""
    if not isinstance(vocab, list) or not all(isinstance(word, str) for word in vocab):
        msg = f"{label} is not a list of strings"
        raise IndexLoadError(msg)
    if len(set(vocab)) != len(vocab):
        msg = f"{label} repeats a word (each word must name one column)"
        raise IndexLoadError(msg)
    if columns is not None and len(vocab) != columns:
        msg = f"{label} holds {len(vocab)} words, the manifest's bm25_columns says {columns}"
        raise IndexLoadError(msg)
    return vocab


def check_arrays(
    arrays: dict[str, np.ndarray],
    manifest: Mapping[str, Any],
    *,
    n: int,
    bm25_columns: int,
    vocab_size: int,
    label: Path,
) -> None:
    """The values search relies on: finite numbers, indices inside their range, lengths that add up."""
    _require(_all_finite(arrays["dense"]), label, "dense holds NaN or infinite values")
    if manifest["lexical"] == "m3":
        _check_csr(arrays, "lex", n, vocab_size, label)
        data = arrays["lex_data"]
        _require(
            bool(np.isfinite(data).all() and (data >= 0).all()),
            label,
            "lex_data holds negative or non-finite weights",
        )
    if manifest["store_colbert"]:
        colbert, scale, lengths = arrays["colbert"], arrays["colbert_scale"], arrays["colbert_len"]
        _require(bool((lengths >= 0).all()), label, "colbert_len holds negative lengths")
        stored = arrays.get("colbert_ids", colbert)
        _require(
            int(lengths.sum()) == len(stored),
            label,
            f"colbert_len adds up to {int(lengths.sum())}, not {len(stored)}",
        )
        if "colbert_ids" in arrays:
            centroids = arrays["colbert_centroids"]
            _require(
                int(stored.max(initial=0)) < len(centroids),
                label,
                f"colbert_ids point outside the {len(centroids)} centroids",
            )
            for name in ("colbert_centroids", "colbert_cutoffs", "colbert_values"):
                _require(bool(np.isfinite(arrays[name]).all()), label, f"{name} holds NaN or infinite values")
        if colbert.dtype.kind == "f":
            _require(_all_finite(colbert), label, "colbert holds NaN or infinite values")
        _require(
            bool(np.isfinite(scale).all() and (scale > 0).all()),
            label,
            "colbert_scale holds non-positive or non-finite scales",
        )
    _check_csr(arrays, "bm25", n, bm25_columns, label)
    tf, doc_len = arrays["bm25_data"], arrays["bm25_doc_len"]
    _require(
        bool(np.isfinite(tf).all() and (tf > 0).all()),
        label,
        "bm25_data holds non-positive or non-finite term frequencies",
    )
    _require(
        bool(np.isfinite(doc_len).all() and (doc_len >= 0).all()),
        label,
        "bm25_doc_len holds negative or non-finite lengths",
    )


def _all_finite(array: np.ndarray, block_bytes: int = 16 << 20) -> bool:
    """Whether every value is finite, checked block by block (no temporary the size of the array)."""
    rows = max(1, block_bytes // max(1, array[:1].nbytes))
    return all(bool(np.isfinite(array[begin : begin + rows]).all()) for begin in range(0, len(array), rows))


def _check_csr(arrays: Mapping[str, np.ndarray], prefix: str, n: int, columns: int, label: Path) -> None:
    data, indices, indptr = (arrays[f"{prefix}_{part}"] for part in ("data", "indices", "indptr"))
    _require(len(data) == len(indices), label, f"{prefix}_data and {prefix}_indices differ in length")
    _require(
        len(indptr) == n + 1
        and indptr[0] == 0
        and indptr[-1] == len(indices)
        and bool((np.diff(indptr) >= 0).all()),
        label,
        f"{prefix}_indptr does not add up to {len(indices)} entries over {n} rows",
    )
    if len(indices):
        _require(
            int(indices.min()) >= 0 and int(indices.max()) < columns,
            label,
            f"{prefix}_indices point outside the {columns} columns",
        )


def _require(condition: bool, label: Path, problem: str) -> None:
    if not condition:
        msg = f"{label}: {problem}"
        raise IndexLoadError(msg)
