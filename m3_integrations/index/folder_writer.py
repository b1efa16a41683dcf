"""Replacing a folder's contents atomically: a new immutable data folder, then one manifest switch.

A folder written here holds ``manifest.json`` (what the folder is, which data folder holds it, and the
size and SHA-256 of each of its files), a lock file, and one ``v-<32 hex>/`` data folder. The folder
itself is never renamed or removed. :func:`write_folder` writes and fsyncs a fresh data folder, writes
the new manifest next to the old one and fsyncs it, then switches with one atomic ``os.replace``; a
crash at any moment leaves the previous or the new manifest, each naming a complete data folder. After
the switch, with the writer lock held, whatever no manifest names (failed or killed writers' data
folders and temporary manifests, an earlier layout's files once converted) is removed.

What a folder is, and what of it may be replaced, is a :class:`FolderFormat`: ``M3Index.save`` writes
the index format (:mod:`m3_integrations.index.persistence`), the LlamaIndex retriever's ``persist``
its own. A path holding anything else (a user's files, a link, a file, a newer release's folder) is
refused with ``FileExistsError`` before anything is written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import struct
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from m3_integrations._utils import fsync_folder
from m3_integrations.errors import IndexLoadError
from m3_integrations.index.folder_reader import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    VanishedError,
    read_manifest_file,
)

try:  # POSIX only; see _writer_lock for what happens without it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = ["VERSION_DIR_RE", "FolderFormat", "StaleBaseError", "check_target", "write_folder"]

VERSION_DIR_RE = re.compile(r"v-[0-9a-f]{32}")
_MANIFEST_TMP_RE = re.compile(r"\.manifest\.json\.tmp-[0-9a-f]{32}")
OLD_RELEASE_STALE_SECONDS = 3600.0
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class StaleBaseError(Exception):
    """An incremental write found the folder changed since the save it builds on; write it all instead."""


@dataclass(frozen=True)
class FolderFormat:
    """One kind of folder :func:`write_folder` writes, and what of an existing folder it may replace.

    Attributes:
        name: the manifest's ``"format"``.
        versions: the ``format_version`` values this release reads (a folder of another is refused).
        noun: what the folder is called in messages (``"M3Index"``).
        what: what is written there, in messages (``"the index"``).
        folder_noun: the same as a kind of folder (``"index folder"``).
        verb: the method that writes it (``"save"``), and ``writer`` its full name (``"M3Index.save"``).
        lock_file: the writers' lock file inside the folder.
        legacy_entries: an earlier layout's entries directly in the folder (name → is a folder); removed
            once a save has converted the folder.
        legacy_check: for an earlier layout without a manifest: why ``folder`` is not one (None if it
            is, so it may be replaced). Without it, such entries are someone else's files.
        old_release_files: the files of an earlier release's sibling folders (``.NAME.tmp-*``,
            ``.NAME.old-PID``) that a save may remove once they are provably stale.
    """

    name: str
    versions: tuple[int, ...]
    noun: str
    what: str
    folder_noun: str
    verb: str
    writer: str
    lock_file: str
    legacy_entries: Mapping[str, bool]
    legacy_check: Callable[[Path], str | None] | None = None
    old_release_files: frozenset[str] = frozenset()

    def refusal(self, folder: Path, problem: str) -> FileExistsError:
        """The error for a target that is not this format's."""
        return FileExistsError(f"cannot {self.verb} {self.what} to {folder}: {problem}")


def write_folder(
    path: str | os.PathLike[str],
    fmt: FolderFormat,
    manifest: Mapping[str, Any],
    files: Mapping[str, Callable[[BinaryIO], None]],
    folders: Mapping[str, Callable[[Path], None]] | None = None,
    *,
    base: tuple[str, Sequence[str]] | None = None,
) -> tuple[dict[str, Any], str]:
    """Write ``files`` (and ``folders``) into a new data folder of ``path`` and switch its manifest to it.

    ``manifest`` gains ``data`` (the data folder's name) and ``files`` (size and SHA-256 of each file;
    a subfolder written by ``folders`` carries its own manifest and checksums). Writers of one folder are
    serialised (threads and processes); what no manifest names is removed after the switch. Files and
    folders are created with the process's umask.

    ``base`` (an incremental write): the SHA-256 of the manifest it builds on and the data folders of
    that manifest the new one still names. Checked under the writer lock; those folders are kept.

    Returns:
        The manifest written and its SHA-256 (what a later incremental write names as its base).

    Raises:
        FileExistsError: ``path`` is not a folder of ``fmt``, an empty folder or absent (nothing touched).
        StaleBaseError: with ``base``, the folder's manifest is no longer that one, or a data folder it
            names is gone (nothing written).
    """
    folder = Path(path)
    if check_target(folder, fmt) == "missing":
        if base is not None:
            raise StaleBaseError(str(folder))
        folder.mkdir(parents=True, exist_ok=True)
    with _writer_lock(folder, fmt):
        check_target(folder, fmt)  # again: another process may have changed it before we held the lock
        kept: set[str] = set()
        if base is not None:
            _check_base(folder, *base)
            kept = set(base[1])
        data_name = f"v-{uuid.uuid4().hex}"
        data_dir = folder / data_name
        os.mkdir(data_dir)
        tmp_manifest: Path | None = None
        try:
            for name, write_folder_into in (folders or {}).items():
                write_folder_into(data_dir / name)
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
            encoded = json.dumps(body, indent=2, ensure_ascii=False).encode("utf-8")
            with open(tmp_manifest, "xb") as fh:
                fh.write(encoded)
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
        _collect_garbage(folder, fmt, keep={data_name, *kept})
        if fmt.old_release_files:
            _remove_stale_old_release_siblings(folder, fmt.old_release_files)
    return body, hashlib.sha256(encoded).hexdigest()


def _check_base(folder: Path, manifest_sha256: str, data_folders: Sequence[str]) -> None:
    """Raise :class:`StaleBaseError` unless ``folder``'s manifest and its ``data_folders`` are still there."""
    try:  # no link, FIFO or device: only a regular file is hashed
        fd = os.open(folder / MANIFEST, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StaleBaseError(f"{folder / MANIFEST} is not a regular file")
            with os.fdopen(os.dup(fd), "rb") as fh:
                current = hashlib.sha256(fh.read(MAX_MANIFEST_BYTES + 1)).hexdigest()
        finally:
            os.close(fd)
    except OSError as err:
        raise StaleBaseError(f"{folder / MANIFEST}: {err}") from err
    if current != manifest_sha256:
        raise StaleBaseError(f"{folder / MANIFEST} changed since the save this one builds on")
    for name in data_folders:
        if not VERSION_DIR_RE.fullmatch(name):
            raise StaleBaseError(f"{name!r} is not a data folder name")
        try:
            info = os.lstat(folder / name)
        except OSError as err:
            raise StaleBaseError(f"{folder / name}: {err}") from err
        if not stat.S_ISDIR(info.st_mode):
            raise StaleBaseError(f"{folder / name} is not a folder")


def check_target(folder: Path, fmt: FolderFormat) -> str:
    """``"missing"`` or ``"ours"`` (a folder of ``fmt``, an empty one, or one holding only our leftovers).

    Raises:
        FileExistsError: anything else; the message says what is there and what to do.
    """
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return "missing"
    verb = f"{fmt.verb}()"
    if stat.S_ISLNK(info.st_mode):
        problem = (
            f"it is a symbolic link, and {verb} never writes through links; pass the folder it points to, "
            "or another path"
        )
        raise fmt.refusal(folder, problem)
    if not stat.S_ISDIR(info.st_mode):
        problem = (
            f"a file is there, and {verb} only replaces an {fmt.folder_noun}; choose another path, or move "
            "the file away yourself"
        )
        raise fmt.refusal(folder, problem)
    names = os.listdir(folder)
    if MANIFEST in names:
        problem = _foreign_manifest(folder, fmt)
        if problem is None:
            return "ours"
        problem = (
            f"its {MANIFEST} {problem}, and {verb} only replaces a folder written by {fmt.writer}; choose "
            "another path, or empty the folder yourself"
        )
        raise fmt.refusal(folder, problem)
    legacy_is_ours = fmt.legacy_check is not None and fmt.legacy_check(folder) is None
    foreign = sorted(
        name
        for name in names
        if not _is_own_entry(name, fmt) and not (legacy_is_ours and name in fmt.legacy_entries)
    )
    if not foreign:
        return "ours"
    shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    problem = (
        f"the folder holds {len(foreign)} entries that are not an {fmt.noun} ({shown}), and {verb} only "
        f"fills an empty folder or replaces an {fmt.folder_noun}; choose another path, or empty the folder "
        "yourself"
    )
    raise fmt.refusal(folder, problem)


def _foreign_manifest(folder: Path, fmt: FolderFormat) -> str | None:
    """Why ``folder/manifest.json`` is not a manifest of ``fmt`` this release can replace; None if it is."""
    try:
        manifest = read_manifest_file(folder)
    except (IndexLoadError, VanishedError, OSError, ValueError, RecursionError) as err:
        return f"cannot be read as an {fmt.noun} manifest ({err})"
    if not isinstance(manifest, dict) or manifest.get("format") != fmt.name:
        return f'is not an {fmt.noun} manifest (no "format": "{fmt.name}")'
    version = manifest.get("format_version")
    if version not in fmt.versions or isinstance(version, bool):
        return f"has format_version {version!r}, which this release does not know (a newer release?)"
    return None


def _is_own_entry(name: str, fmt: FolderFormat) -> bool:
    return name == fmt.lock_file or bool(VERSION_DIR_RE.fullmatch(name) or _MANIFEST_TMP_RE.fullmatch(name))


@contextmanager
def _writer_lock(folder: Path, fmt: FolderFormat) -> Iterator[None]:
    """Hold the folder's writer lock: a per-folder thread lock, then ``flock`` on the format's lock file.

    Without ``fcntl`` (Windows) only the thread lock remains: saves from several processes to one folder
    must then not overlap.
    """
    key = os.path.realpath(folder)
    with _THREAD_LOCKS_GUARD:
        thread_lock = _THREAD_LOCKS.setdefault(key, threading.Lock())
    with thread_lock:
        lock_path = folder / fmt.lock_file
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise fmt.refusal(folder, f"{fmt.lock_file} is a symbolic link") from err
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise fmt.refusal(folder, f"{fmt.lock_file} is not a regular file")
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def _collect_garbage(folder: Path, fmt: FolderFormat, *, keep: set[str]) -> None:
    """Remove data folders and temporary manifests no manifest names (called with the writer lock held).

    Holding the lock, no other writer is running, so whatever is unreferenced belongs to dead or finished
    writers. An earlier layout's entries left in the folder after a conversion go too; nothing else is
    touched.
    """
    for name in os.listdir(folder):
        if name in keep:
            continue
        entry = folder / name
        legacy = name in fmt.legacy_entries and fmt.legacy_entries[name] == entry.is_dir()
        if VERSION_DIR_RE.fullmatch(name) or _MANIFEST_TMP_RE.fullmatch(name) or legacy:
            try:
                _remove(entry)
                logger.debug("removed %s (no manifest refers to it)", entry)
            except OSError as err:  # the save itself succeeded; the next one retries
                logger.warning("could not remove leftover %s: %s", entry, err)


def _remove_stale_old_release_siblings(folder: Path, files: frozenset[str]) -> None:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-PID`` folders of an earlier release's killed saves.

    Only folders holding nothing but that release's ``files`` qualify, and only when stale: an
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
            if not set(names) <= files or not all(stat.S_ISREG(c.st_mode) for c in children):
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


# An extra field of the zip local header that only pads (the id Android's zipalign uses for the same).
_PADDING_EXTRA_ID = 0xD935
_ZIP64_EXTRA_BYTES = 20  # what zipfile appends to a local header written with force_zip64
NPY_ALIGNMENT = 64  # numpy pads an npy header to this; the member's start is aligned to it too


def write_npz(fh: BinaryIO, arrays: Mapping[str, np.ndarray | Sequence[np.ndarray]]) -> None:
    """An uncompressed npz (as ``np.savez`` writes) whose arrays' data start at multiples of 64 bytes.

    A loader can then memory-map a member and view it as an aligned array (float16, uint16 and float32
    arrays at an odd offset could not be used in place). The alignment comes from a padding extra field
    in each member's local header; any zip or npz reader ignores it. A value may be a list of arrays
    of one dtype and row shape: they are written one after the other as one array (never joined in
    memory).
    """
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            name = f"{key}.npy"
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            fixed = zipfile.sizeFileHeader + len(name.encode("utf-8")) + _ZIP64_EXTRA_BYTES
            pad = -(fh.tell() + fixed) % NPY_ALIGNMENT
            if pad < 4:  # an extra field is at least its 4-byte header
                pad += NPY_ALIGNMENT
            info.extra = struct.pack("<HH", _PADDING_EXTRA_ID, pad - 4) + bytes(pad - 4)
            with archive.open(info, mode="w", force_zip64=True) as member:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(member, np.ascontiguousarray(value), allow_pickle=False)
                else:
                    _write_pieces(member, list(value))


def _write_pieces(member: BinaryIO, pieces: list[np.ndarray]) -> None:
    """One npy array made of ``pieces`` stacked along their first axis, written piece by piece."""
    first = pieces[0]
    header = {
        "descr": np.lib.format.dtype_to_descr(first.dtype),
        "fortran_order": False,
        "shape": (sum(len(piece) for piece in pieces), *first.shape[1:]),
    }
    np.lib.format.write_array_header_1_0(member, header)
    for piece in pieces:
        if piece.dtype != first.dtype or piece.shape[1:] != first.shape[1:]:
            msg = f"pieces of one array differ: {piece.dtype} {piece.shape} after {first.dtype} {first.shape}"
            raise ValueError(msg)
        block = max(1, (16 << 20) // max(1, piece[:1].nbytes))  # bounded copies of non-contiguous views
        for begin in range(0, len(piece), block):
            member.write(memoryview(np.ascontiguousarray(piece[begin : begin + block])).cast("B"))
