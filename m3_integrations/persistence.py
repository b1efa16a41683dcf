"""Saving and loading :class:`~m3_integrations.M3Index` folders: atomic, crash-safe and hardened.

Layout of a saved index (format 2)::

    path/
      manifest.json      what the index is (model, counts, dtypes) and which data folder holds it,
                         with the size and SHA-256 of every file in that folder
      .m3-index.lock     writers hold an exclusive ``flock`` on it while they save
      v-<32 hex>/        one immutable data folder: arrays.npz, documents.json, bm25_vocab.json

``path`` itself is never renamed or removed. A save writes and fsyncs a fresh ``v-*`` folder, then
switches to it with one atomic ``os.replace`` of ``manifest.json`` (written and fsynced next to it
first), then removes every data folder and temporary manifest the new manifest does not name. A crash
at any moment therefore leaves the previous or the new manifest, each naming a complete data folder; the
next save removes what the crash left. Format 1 (the previous release: data files directly in ``path``)
still loads, and saving over it converts it.

A load reads ``manifest.json`` once, then every file it names once (no symlinks, no special files, sizes
checked before reading, bytes hashed and parsed from memory, npz members checked before their data is
read), and validates every value the search relies on. A folder that cannot be loaded raises
:class:`~m3_integrations.IndexLoadError` naming the file. This module reads and writes the index's private
state; :meth:`M3Index.save` and :meth:`M3Index.load` are its public face.

Example:
    .. code-block:: python

        index.save("my_index")  # M3Index.save calls save_index(index, "my_index")
        index = M3Index.load("my_index", model=model)
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from m3_integrations._utils import fsync_folder
from m3_integrations.bm25 import BM25, WordTokenizer
from m3_integrations.errors import IndexLoadError, IndexNotFoundError

try:  # POSIX only; see _writer_lock for what happens without it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from m3_integrations.index import M3Index
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_index", "save_index"]

FORMAT_NAME = "m3-index"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
LOCK_FILE = ".m3-index.lock"
ARRAYS_FILE = "arrays.npz"
DOCUMENTS_FILE = "documents.json"
VOCAB_FILE = "bm25_vocab.json"
_VERSION_DIR_RE = re.compile(r"v-[0-9a-f]{32}")
_MANIFEST_TMP_RE = re.compile(r"\.manifest\.json\.tmp-[0-9a-f]{32}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# The previous release wrote into a sibling ``.NAME.tmp-XXXXXXXX`` (tempfile.mkdtemp) and moved the old
# folder to ``.NAME.old-PID`` between two renames; a killed save left them behind.
_OLD_RELEASE_FILES = frozenset({MANIFEST, ARRAYS_FILE, DOCUMENTS_FILE, VOCAB_FILE})
OLD_RELEASE_STALE_SECONDS = 3600.0
MAX_MANIFEST_BYTES = 64 << 20
# Per npz member: local header, central directory entry (both with zip64 extras) and the npy header.
_NPZ_MEMBER_OVERHEAD = 1024
LOAD_ATTEMPTS = 10
MAX_COUNT = 1 << 48  # far above any index that fits in memory; keeps size arithmetic meaningful
BM25_PARAMETER_RANGES = {"k1": (0.0, 100.0), "b": (0.0, 1.0), "epsilon": (0.0, 1.0)}

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FDS = os.open in os.supports_dir_fd and _O_DIRECTORY != 0

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


# ---------------------------------------------------------------------------- saving
def save_index(index: M3Index, path: str | os.PathLike[str]) -> None:
    """Write ``index`` to the folder ``path`` (see the module docstring for the layout and guarantees).

    Raises:
        FileExistsError: something other than an M3Index folder or an empty folder is at ``path``
            (a folder with other files, a regular file, a symlink); nothing is touched then.
        TypeError: a metadata value is not JSON-serialisable (the message names the id).
    """
    with index._lock:
        index.compact()
        index._bm25.drop_unused_terms()  # compact() keeps the vocabulary when no row was dead
        documents = _documents_bytes(index)
        bm25 = index._bm25
        vocab = (
            json.dumps(bm25.words(), ensure_ascii=False).encode("utf-8")
            if index.bm25_tokenizer == "word"
            else None
        )
        n = len(index._alive)
        arrays: dict[str, np.ndarray] = {"dense": index._dense[:n]}
        lexical_nnz = 0
        if index.lexical == "m3":
            lex = index._lexical_matrix()
            lexical_nnz = int(lex.nnz)
            arrays |= {
                "lex_data": lex.data.astype(np.float32, copy=False),
                "lex_indices": lex.indices.astype(np.int64),
                "lex_indptr": lex.indptr.astype(np.int64),
            }
        if index.store_colbert:
            used = index._colbert_used
            arrays |= {
                "colbert": index._colbert[:used],
                "colbert_scale": index._colbert_scale[:used],
                "colbert_len": index._colbert_len.astype(np.int64, copy=False),
            }
        arrays |= bm25.to_arrays()
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
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
            "bm25_words": index._word_tokenizer.config() if index._word_tokenizer is not None else None,
            "bm25": {"k1": bm25.k1, "b": bm25.b, "epsilon": bm25.epsilon},
            "colbert_vectors": int(index._colbert_used) if index.store_colbert else 0,
            "lexical_nnz": lexical_nnz,
            "bm25_nnz": len(arrays["bm25_data"]),
            "bm25_columns": int(bm25.width),
        }
        files: dict[str, Callable[[BinaryIO], None]] = {
            ARRAYS_FILE: lambda fh: np.savez(fh, **arrays),  # type: ignore[arg-type]
            DOCUMENTS_FILE: lambda fh: fh.write(documents),
        }
        if vocab is not None:
            files[VOCAB_FILE] = lambda fh: fh.write(vocab)
        write_folder(path, manifest, files)


def _documents_bytes(index: M3Index) -> bytes:
    for doc_id, meta in zip(index._row_ids, index._metadatas, strict=True):
        try:
            json.dumps(meta)
        except (TypeError, ValueError, RecursionError) as err:
            msg = f"metadata of document {doc_id!r} is not JSON-serialisable: {err}"
            raise TypeError(msg) from err
    documents = {"ids": index._row_ids, "texts": index._texts, "metadatas": index._metadatas}
    return json.dumps(documents, ensure_ascii=False).encode("utf-8")


def write_folder(
    path: str | os.PathLike[str], manifest: Mapping[str, Any], files: Mapping[str, Callable[[BinaryIO], None]]
) -> None:
    """Write ``files`` into a new data folder of ``path`` and switch ``path/manifest.json`` to it.

    ``manifest`` gains ``data`` (the data folder's name) and ``files`` (size and SHA-256 of each file).
    Writers of one folder are serialised (threads and processes); what no manifest names is removed
    after the switch. Files and folders are created with the process's umask.

    Raises:
        FileExistsError: ``path`` is not an M3Index folder, an empty folder or absent (nothing touched).
    """
    folder = Path(path)
    if _classify_target(folder) == "missing":
        folder.mkdir(parents=True, exist_ok=True)
    with _writer_lock(folder):
        _classify_target(folder)  # again: another process may have changed it before we held the lock
        data_name = f"v-{uuid.uuid4().hex}"
        data_dir = folder / data_name
        os.mkdir(data_dir)
        tmp_manifest: Path | None = None
        try:
            table: dict[str, dict[str, Any]] = {}
            for name, write in files.items():
                with open(data_dir / name, "xb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                table[name] = {
                    "bytes": (data_dir / name).stat().st_size,
                    "sha256": _sha256_file(data_dir / name),
                }
            fsync_folder(data_dir)
            body = {**manifest, "data": data_name, "files": table}
            tmp_manifest = folder / f".{MANIFEST}.tmp-{uuid.uuid4().hex}"
            with open(tmp_manifest, "xb") as fh:
                fh.write(json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_manifest, folder / MANIFEST)  # the one atomic switch
            tmp_manifest = None
            fsync_folder(folder)
        except BaseException:
            _remove(data_dir)
            if tmp_manifest is not None:
                _remove(tmp_manifest)
            raise
        _collect_garbage(folder, keep=data_name)
        _remove_stale_old_release_siblings(folder)


def check_save_target(path: str | os.PathLike[str]) -> None:
    """Raise what :meth:`M3Index.save` would raise for ``path``, without writing anything.

    Lets a caller (the CLI) refuse a destination before the slow work of building an index.

    Raises:
        FileExistsError: ``path`` is a file, a link, or a folder that is neither empty nor an index.
    """
    _classify_target(Path(path))


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
    try:
        root = _Dir.open(folder)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise IndexNotFoundError(_not_found(folder, "no such folder")) from err
    except OSError as err:
        msg = f"{folder} cannot be opened: {err}"
        raise IndexLoadError(msg) from err
    try:
        raw = _read_file(root, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    except _VanishedError as err:
        raise IndexNotFoundError(_not_found(folder, f"{MANIFEST} is missing")) from err
    finally:
        root.close()
    manifest = _parse_json(raw, folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        msg = f"{folder / MANIFEST} is not an M3Index manifest"
        raise IndexLoadError(msg)
    return manifest


def _classify_target(folder: Path) -> str:
    """``"missing"`` or ``"ours"`` (an M3Index folder, an empty one, or one holding only our leftovers).

    Raises:
        FileExistsError: anything else; the message says what is there and what to do.
    """
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(info.st_mode):
        msg = (
            f"cannot save the index to {folder}: it is a symbolic link, and save() never writes through "
            "links; pass the folder it points to, or another path"
        )
        raise FileExistsError(msg)
    if not stat.S_ISDIR(info.st_mode):
        msg = (
            f"cannot save the index to {folder}: a file is there, and save() only replaces an index folder; "
            "choose another path, or move the file away yourself"
        )
        raise FileExistsError(msg)
    names = os.listdir(folder)
    if MANIFEST in names:
        problem = _foreign_manifest(folder)
        if problem is None:
            return "ours"
        msg = (
            f"cannot save the index to {folder}: its {MANIFEST} {problem}, and save() only replaces a folder "
            "written by M3Index.save; choose another path, or empty the folder yourself"
        )
        raise FileExistsError(msg)
    foreign = sorted(name for name in names if not _is_own_entry(name))
    if not foreign:
        return "ours"
    shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    msg = (
        f"cannot save the index to {folder}: the folder holds {len(foreign)} entries that are not an "
        f"M3Index ({shown}), and save() only fills an empty folder or replaces an index; choose another "
        "path, or empty the folder yourself"
    )
    raise FileExistsError(msg)


def _foreign_manifest(folder: Path) -> str | None:
    """Why ``folder/manifest.json`` is not a manifest this library wrote and can replace; None if it is."""
    try:
        directory = _Dir.open(folder)
        try:
            raw = _read_file(directory, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
        finally:
            directory.close()
        manifest = json.loads(raw.decode("utf-8"))
    except (IndexLoadError, _VanishedError, OSError, ValueError, RecursionError) as err:
        return f"cannot be read as an M3Index manifest ({err})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return f'is not an M3Index manifest (no "format": "{FORMAT_NAME}")'
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        return f"has format_version {version!r}, which this release does not know (a newer release?)"
    return None


def _is_own_entry(name: str) -> bool:
    return name == LOCK_FILE or bool(_VERSION_DIR_RE.fullmatch(name) or _MANIFEST_TMP_RE.fullmatch(name))


@contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's writer lock: a per-folder thread lock, then ``flock`` on ``.m3-index.lock``.

    Without ``fcntl`` (Windows) only the thread lock remains: saves from several processes to one folder
    must then not overlap.
    """
    key = os.path.realpath(folder)
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        lock_path = folder / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                msg = f"cannot save the index to {folder}: {LOCK_FILE} is a symbolic link"
                raise FileExistsError(msg) from err
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                msg = f"cannot save the index to {folder}: {LOCK_FILE} is not a regular file"
                raise FileExistsError(msg)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _collect_garbage(folder: Path, *, keep: str) -> None:
    """Remove data folders and temporary manifests no manifest names (called with the writer lock held).

    Holding the lock, no other writer is running, so whatever is unreferenced belongs to dead or finished
    writers. Format-1 data files left in the folder after a conversion go too; nothing else is touched.
    """
    for name in os.listdir(folder):
        if name == keep:
            continue
        entry = folder / name
        legacy = name in (ARRAYS_FILE, DOCUMENTS_FILE, VOCAB_FILE) and not entry.is_dir()
        if _VERSION_DIR_RE.fullmatch(name) or _MANIFEST_TMP_RE.fullmatch(name) or legacy:
            try:
                _remove(entry)
                logger.debug("removed %s (no manifest refers to it)", entry)
            except OSError as err:  # the save itself succeeded; the next one retries
                logger.warning("could not remove leftover %s: %s", entry, err)


def _remove_stale_old_release_siblings(folder: Path) -> None:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-PID`` folders of the previous release's killed saves.

    Only folders holding nothing but that release's four index files qualify, and only when stale: an
    ``.old-PID`` whose process is gone, a ``.tmp-*`` that nothing has modified for an hour.
    """
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(?:tmp-[A-Za-z0-9_]+|old-(\d+))")
    try:
        siblings = os.listdir(folder.parent)
    except OSError:
        return
    now = time.time()
    for name in siblings:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        sibling = folder.parent / name
        try:
            info = os.lstat(sibling)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != _uid():
                continue
            names = os.listdir(sibling)
            children = [os.lstat(sibling / child) for child in names]
            if not set(names) <= _OLD_RELEASE_FILES or not all(stat.S_ISREG(c.st_mode) for c in children):
                continue
            if match.group(1) is not None:
                stale = not _process_alive(int(match.group(1)))
            else:
                newest = max([info.st_mtime, *(c.st_mtime for c in children)])
                stale = now - newest > OLD_RELEASE_STALE_SECONDS
            if stale:
                shutil.rmtree(sibling)
                logger.info("removed %s, left by an interrupted save of an earlier release", sibling)
        except OSError as err:
            logger.warning("could not inspect or remove %s: %s", sibling, err)


def _uid() -> int:
    getuid = getattr(os, "getuid", None)
    return getuid() if getuid is not None else 0


def _process_alive(pid: int) -> bool:
    """False only when no process ``pid`` exists (its folder is then provably stale)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists (another user's), or we cannot tell: keep the folder
    return True


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- reading files safely
class _VanishedError(Exception):
    """A file named by the manifest disappeared: a concurrent save replaced the version. Retry."""


class _Dir:
    """A folder opened once; files are opened relative to it (no path re-resolution) where supported."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, path: Path, *, parent: _Dir | None = None, follow: bool = True) -> _Dir:
        if not _DIR_FDS:
            if not follow and path.is_symlink():
                raise OSError(errno.ELOOP, "is a symbolic link", str(path))
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
            return cls(path, None)
        flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC | (0 if follow else _O_NOFOLLOW)
        if parent is not None and parent.fd is not None:
            return cls(path, os.open(path.name, flags, dir_fd=parent.fd))
        return cls(path, os.open(path, flags))

    def open_file(self, name: str) -> int:
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY
        if self.fd is not None:
            return os.open(name, flags, dir_fd=self.fd)
        if (self.path / name).is_symlink():
            raise OSError(errno.ELOOP, "is a symbolic link", str(self.path / name))
        return os.open(self.path / name, flags)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_file(
    directory: _Dir,
    name: str,
    *,
    max_bytes: int,
    declared: int | None = None,
    sha256: str | None = None,
) -> bytes:
    """Read ``name`` once: a regular file (no link, FIFO or device) of the declared size, hash checked."""
    label = directory.path / name
    try:
        fd = directory.open_file(name)
    except FileNotFoundError as err:
        raise _VanishedError(str(label)) from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            msg = f"{label} is a symbolic link; an index folder must hold its files itself"
        else:
            msg = f"{label} cannot be opened: {err}"
        raise IndexLoadError(msg) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            msg = f"{label} is not a regular file (a folder, FIFO, socket or device); refused"
            raise IndexLoadError(msg)
        size = info.st_size
        if declared is not None and size != declared:
            msg = f"{label} has {size} bytes but the manifest says {declared}: truncated or modified"
            raise IndexLoadError(msg)
        if size > max_bytes:
            msg = f"{label} has {size} bytes, more than the {max_bytes} allowed for it"
            raise IndexLoadError(msg)
        chunks = []
        remaining = size
        while remaining:
            chunk = os.read(fd, min(remaining, 1 << 30))
            if not chunk:
                msg = f"{label} became shorter while it was read (modified during the load)"
                raise IndexLoadError(msg)
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as err:
        msg = f"{label} cannot be read: {err}"
        raise IndexLoadError(msg) from err
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk: no copy
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        msg = f"{label} is truncated or modified (checksum mismatch with the manifest)"
        raise IndexLoadError(msg)
    return data


@contextmanager
def _parsing(label: Path | str) -> Iterator[None]:
    """Report anything that parsing untrusted bytes raises as an ``IndexLoadError`` naming the file."""
    try:
        yield
    except IndexLoadError:
        raise
    except Exception as err:
        msg = f"{label} is damaged: {type(err).__name__}: {err}"
        raise IndexLoadError(msg) from err


@dataclass(frozen=True)
class _ArraySpec:
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: a length the manifest does not give (format 1)


def _read_npz(data: bytes, specs: Mapping[str, _ArraySpec], label: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed npz, each member's npy header checked before its data is read."""
    arrays: dict[str, np.ndarray] = {}
    with _parsing(label), zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        names = [member.filename for member in members]
        expected = {f"{key}.npy" for key in specs}
        unexpected = sorted(set(names) - expected)
        missing = sorted(expected - set(names))
        if unexpected or missing or len(names) != len(set(names)):
            msg = f"{label} holds members {sorted(names)}, expected {sorted(expected)}"
            raise IndexLoadError(msg)
        for member in members:
            key = member.filename[: -len(".npy")]
            if member.compress_type != zipfile.ZIP_STORED:
                msg = (
                    f"{label}: member {key!r} is compressed; an index stores its arrays uncompressed, so "
                    "a compressed member (which could expand far beyond the file) is refused"
                )
                raise IndexLoadError(msg)
            if member.file_size != member.compress_size or member.file_size > len(data):
                msg = f"{label}: member {key!r} declares {member.file_size} bytes, more than the file holds"
                raise IndexLoadError(msg)
            with archive.open(member) as stream:
                arrays[key] = _read_npy(stream, member.file_size, specs[key], f"{label}: array {key!r}")
    return arrays


def _read_npy(stream: BinaryIO, size: int, spec: _ArraySpec, what: str) -> np.ndarray:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        msg = f"{what} has npy format version {version}, expected 1.0 or 2.0"
        raise IndexLoadError(msg)
    if dtype != spec.dtype or fortran_order:
        msg = f"{what} is {dtype}{' (Fortran order)' if fortran_order else ''}, expected {spec.dtype}"
        raise IndexLoadError(msg)
    if len(shape) != len(spec.shape) or any(
        want is not None and got != want for got, want in zip(shape, spec.shape, strict=True)
    ):
        expected = tuple("any" if dim is None else dim for dim in spec.shape)
        msg = f"{what} has shape {shape}, expected {expected}"
        raise IndexLoadError(msg)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - stream.tell():
        msg = f"{what} has shape {shape} ({nbytes} bytes) but its member holds {size - stream.tell()}"
        raise IndexLoadError(msg)
    array = np.empty(shape, dtype=dtype)
    if nbytes:
        view = array.reshape(-1).view(np.uint8)
        if stream.readinto(view) != nbytes:  # type: ignore[attr-defined]
            msg = f"{what} is shorter than its header says"
            raise IndexLoadError(msg)
    return array


def _parse_json(data: bytes, label: Path) -> Any:
    with _parsing(label):
        return json.loads(data.decode("utf-8"))


# ---------------------------------------------------------------------------- loading
def load_index(cls: type[M3Index], path: str | os.PathLike[str], model: M3Model, **kwargs: Any) -> M3Index:
    """Load the index saved at ``path`` (format 1 or 2), checked against ``model``.

    Raises:
        IndexNotFoundError: no index at ``path``.
        IndexLoadError: anything else that keeps the folder from loading (the message names the file);
            a different model gives a message starting "model mismatch".
    """
    folder = Path(path)
    vanished = ""
    for attempt in range(LOAD_ATTEMPTS):
        try:
            return _load_once(cls, folder, model, kwargs)
        except _VanishedError as err:  # a save replaced the data folder between the manifest and its files
            vanished = str(err)
            time.sleep(0.002 * (attempt + 1))
    msg = (
        f"{vanished}, named by {folder / MANIFEST}, is missing ({LOAD_ATTEMPTS} attempts): the index is "
        "damaged, or saves kept replacing it while it was read (then try again)"
    )
    raise IndexLoadError(msg)


def _load_once(cls: type[M3Index], folder: Path, model: M3Model, kwargs: dict[str, Any]) -> M3Index:
    try:
        root = _Dir.open(folder)
    except FileNotFoundError as err:
        raise IndexNotFoundError(_not_found(folder, "no such folder")) from err
    except NotADirectoryError as err:
        raise IndexNotFoundError(_not_found(folder, "it is a file, not a folder")) from err
    except OSError as err:
        msg = f"{folder} cannot be opened: {err}"
        raise IndexLoadError(msg) from err
    data_dir: _Dir | None = None
    manifest_path = folder / MANIFEST
    try:
        try:
            raw = _read_file(root, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
        except _VanishedError as err:
            raise IndexNotFoundError(_not_found(folder, f"{MANIFEST} is missing")) from err
        manifest = _parse_json(raw, manifest_path)
        layout = _check_manifest(manifest, manifest_path, model)
        if layout.data is None:
            data_dir = root
        else:
            try:
                data_dir = _Dir.open(folder / layout.data, parent=root, follow=False)
            except FileNotFoundError as err:
                raise _VanishedError(str(folder / layout.data)) from err
            except OSError as err:
                msg = (
                    f"{folder / layout.data} (named by {manifest_path}) is not a plain folder "
                    f"(a symbolic link or a file?): {err.strerror}"
                )
                raise IndexLoadError(msg) from err
        blobs = {
            name: _read_file(data_dir, name, max_bytes=limit, declared=size, sha256=digest)
            for name, (size, digest, limit) in layout.files.items()
        }
        data_path = data_dir.path
    finally:
        if data_dir is not None and data_dir is not root:
            data_dir.close()
        root.close()
    return _build_index(
        cls,
        model,
        manifest=manifest,
        manifest_label=manifest_path,
        layout=layout,
        blobs=blobs,
        data_dir=data_path,
        kwargs=kwargs,
    )


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


@dataclass(frozen=True)
class _Layout:
    version: int
    data: str | None  # the data folder (format 2); None: files beside the manifest (format 1)
    count: int
    files: dict[str, tuple[int, str, int]]  # name -> (declared bytes, sha256, most bytes allowed)
    arrays: dict[str, _ArraySpec]
    bm25_columns: int | None  # None: the vocabulary's length (format 1)


def _check_manifest(manifest: Any, label: Path, model: M3Model) -> _Layout:
    """Validate every manifest field the load relies on; the model check comes before any data is read."""
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
    arrays = {"dense": _ArraySpec(dense_dtype, (n, model.dense_dim))}
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
            "lex_data": _ArraySpec(float32, (nnz["lexical_nnz"],)),
            "lex_indices": _ArraySpec(int64, (nnz["lexical_nnz"],)),
            "lex_indptr": _ArraySpec(int64, (n + 1,)),
        }
    if manifest["store_colbert"]:
        int8 = manifest["colbert_dtype"] == "int8"
        arrays |= {
            "colbert": _ArraySpec(np.dtype(manifest["colbert_dtype"]), (colbert_vectors, model.colbert_dim)),
            "colbert_scale": _ArraySpec(float32, (colbert_vectors if int8 else 0,)),
            "colbert_len": _ArraySpec(int64, (n,)),
        }
    arrays |= {
        "bm25_data": _ArraySpec(float32, (nnz["bm25_nnz"],)),
        "bm25_indices": _ArraySpec(int64, (nnz["bm25_nnz"],)),
        "bm25_indptr": _ArraySpec(int64, (n + 1,)),
        "bm25_doc_len": _ArraySpec(np.dtype("<f8"), (n,)),
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
        if not isinstance(data, str) or not _VERSION_DIR_RE.fullmatch(data):
            msg = f"{label}: data is {data!r}, expected the name of a data folder like 'v-<32 hex digits>'"
            raise IndexLoadError(msg)
    return _Layout(version, data, n, files, arrays, bm25_columns)


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
        or set(words) - {"stemmer", "stopwords"}
        or not isinstance(words.get("stemmer"), str | None)
        or not (
            stopwords is None or (isinstance(stopwords, list) and all(isinstance(w, str) for w in stopwords))
        )
    ):
        msg = f"{label}: bm25_words is {words!r}, expected {{'stemmer': name|null, 'stopwords': [...]|null}}"
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


def _build_index(
    cls: type[M3Index],
    model: M3Model,
    *,
    manifest: dict[str, Any],
    manifest_label: Path,
    layout: _Layout,
    blobs: dict[str, bytes],
    data_dir: Path,
    kwargs: dict[str, Any],
) -> M3Index:
    arrays_label = data_dir / ARRAYS_FILE
    arrays = _read_npz(blobs.pop(ARRAYS_FILE), layout.arrays, arrays_label)
    documents_label = data_dir / DOCUMENTS_FILE
    ids, texts, metadatas = _check_documents(
        _parse_json(blobs.pop(DOCUMENTS_FILE), documents_label), layout.count, documents_label
    )
    vocab = None
    columns = layout.bm25_columns
    if manifest["bm25_tokenizer"] == "word":
        vocab_label = data_dir / VOCAB_FILE
        vocab = _check_vocab(_parse_json(blobs.pop(VOCAB_FILE), vocab_label), columns, vocab_label)
        columns = len(vocab)
    assert columns is not None
    with _parsing(arrays_label):
        _check_arrays(
            arrays,
            manifest,
            n=layout.count,
            bm25_columns=columns,
            vocab_size=model.vocab_size,
            label=arrays_label,
        )
    words = manifest.get("bm25_words") or {}
    try:  # an unknown stemmer language, or the stemming extra not installed
        WordTokenizer(stemmer=words.get("stemmer"), stopwords=words.get("stopwords"))
    except (ImportError, ValueError) as err:
        msg = f"{manifest_label}: the index's BM25 word settings cannot be used here: {err}"
        raise IndexLoadError(msg) from err
    index = cls(
        model,
        store_colbert=manifest["store_colbert"],
        colbert_dtype=manifest["colbert_dtype"],
        dense_dtype=manifest["dense_dtype"],
        lexical=manifest["lexical"],
        bm25_tokenizer=manifest["bm25_tokenizer"],
        bm25_stemmer=words.get("stemmer"),
        bm25_stopwords=words.get("stopwords"),
        **kwargs,
    )
    with _parsing(arrays_label):
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
                shape=(layout.count, model.vocab_size),
            )
    index._restore(
        ids=ids,
        texts=texts,
        metadatas=metadatas,
        dense=arrays["dense"],
        lexical=lexical,
        colbert=arrays.get("colbert"),
        colbert_scale=arrays.get("colbert_scale"),
        colbert_len=arrays.get("colbert_len"),
        bm25=bm25,
    )
    return index


def _check_documents(
    documents: Any, n: int, label: Path
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
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
    if len(set(ids)) != n:
        repeated = next(doc_id for doc_id, count in _counts(ids).items() if count > 1)
        msg = f"{label}: the id {repeated!r} occurs more than once"
        raise IndexLoadError(msg)
    return ids, texts, metadatas


def _counts(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _check_vocab(vocab: Any, columns: int | None, label: Path) -> list[str]:
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


def _check_arrays(
    arrays: dict[str, np.ndarray],
    manifest: Mapping[str, Any],
    *,
    n: int,
    bm25_columns: int,
    vocab_size: int,
    label: Path,
) -> None:
    """The values search relies on: finite numbers, indices inside their range, lengths that add up."""
    _require(bool(np.isfinite(arrays["dense"]).all()), label, "dense holds NaN or infinite values")
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
        _require(
            int(lengths.sum()) == len(colbert),
            label,
            f"colbert_len adds up to {int(lengths.sum())}, not {len(colbert)}",
        )
        if colbert.dtype.kind == "f":
            _require(bool(np.isfinite(colbert).all()), label, "colbert holds NaN or infinite values")
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
