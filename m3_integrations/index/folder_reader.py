"""Reading an untrusted folder safely: each file once, no links or special files, sizes and hashes checked.

Index folders (and the LlamaIndex retriever's folders) may come from anyone. Files are opened relative
to a folder opened once (:class:`OpenFolder`) with ``O_NOFOLLOW | O_NONBLOCK`` and checked with
``fstat``, so a link, a FIFO or a device is refused without blocking; sizes are compared with what the
manifest declares (and capped) before anything is read; bytes are hashed and parsed from memory; npz
members are checked (stored uncompressed, npy header matching the expected dtype and shape) before
their data is read. Whatever a parser raises becomes an :class:`~m3_integrations.IndexLoadError`
naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import mmap
import os
import stat
import struct
import zipfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from m3_integrations.errors import IndexLoadError

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "ArraySpec",
    "OpenFolder",
    "VanishedError",
    "map_file",
    "parse_json",
    "parsing",
    "read_file",
    "read_manifest_file",
    "read_npz",
    "release_pages",
]

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FDS = os.open in os.supports_dir_fd and _O_DIRECTORY != 0
# The zip local header's fields (zipfile.structFileHeader): file name length and extra field length.
_FH_FILENAME_LENGTH, _FH_EXTRA_FIELD_LENGTH = 10, 11
_MAX_NPY_HEADER = 1 << 16  # npy headers are far shorter; numpy itself refuses longer ones by default


class VanishedError(Exception):
    """A file named by the manifest disappeared: a concurrent save replaced the version. Retry."""


class OpenFolder:
    """A folder opened once; files are opened relative to it (no path re-resolution) where supported."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def open(cls, path: Path, *, parent: OpenFolder | None = None, follow: bool = True) -> OpenFolder:
        """Open the folder ``path`` (relative to ``parent`` when given; ``follow=False`` refuses a link)."""
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
        """A read-only descriptor of the file ``name`` in this folder (never through a link; never blocks)."""
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY
        if self.fd is not None:
            return os.open(name, flags, dir_fd=self.fd)
        if (self.path / name).is_symlink():
            raise OSError(errno.ELOOP, "is a symbolic link", str(self.path / name))
        return os.open(self.path / name, flags)

    def close(self) -> None:
        """Close the folder's descriptor."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open_checked(
    directory: OpenFolder, name: str, *, max_bytes: int, declared: int | None
) -> tuple[int, int]:
    """A descriptor of the regular file ``name`` (no link, FIFO or device) and its size, checked."""
    label = directory.path / name
    try:
        fd = directory.open_file(name)
    except FileNotFoundError as err:
        raise VanishedError(str(label)) from err
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
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def read_file(
    directory: OpenFolder,
    name: str,
    *,
    max_bytes: int,
    declared: int | None = None,
    sha256: str | None = None,
) -> bytes:
    """Read ``name`` once: a regular file (no link, FIFO or device) of the declared size, hash checked."""
    label = directory.path / name
    fd, size = _open_checked(directory, name, max_bytes=max_bytes, declared=declared)
    try:
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


def map_file(
    directory: OpenFolder,
    name: str,
    *,
    max_bytes: int,
    declared: int | None = None,
    sha256: str | None = None,
) -> mmap.mmap:
    """Map ``name`` read-only, checked as :func:`read_file` checks it, without holding its bytes.

    The hash is computed from a streamed read (through the page cache, not this process's memory).
    The mapping shows the file as it is on disk from then on: an index's data files are never
    rewritten by a save (a save writes new ones), and whoever rewrites or truncates them under a
    running process changes what it reads (a truncation makes reads past the end fault).
    """
    label = directory.path / name
    fd, size = _open_checked(directory, name, max_bytes=max_bytes, declared=declared)
    try:
        if size == 0:
            msg = f"{label} is empty"
            raise IndexLoadError(msg)
        buffer = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        if sha256 is not None:
            digest = hashlib.sha256()
            offset = 0
            os.lseek(fd, 0, os.SEEK_SET)
            while offset < size:
                chunk = os.read(fd, min(size - offset, 8 << 20))
                if not chunk:
                    msg = f"{label} became shorter while it was read (modified during the load)"
                    raise IndexLoadError(msg)
                digest.update(chunk)
                offset += len(chunk)
            if digest.hexdigest() != sha256:
                buffer.close()
                msg = f"{label} is truncated or modified (checksum mismatch with the manifest)"
                raise IndexLoadError(msg)
    except OSError as err:
        msg = f"{label} cannot be mapped: {err}"
        raise IndexLoadError(msg) from err
    finally:
        os.close(fd)
    return buffer


def release_pages(buffer: mmap.mmap) -> None:
    """Let the pages of ``buffer`` read so far leave this process's resident memory (best effort).

    They stay in the page cache; a later read maps them again. Used after a load's checks touched a
    mapped file, so that resident memory after a load is what the index keeps, not what it checked.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is not None:
        # A platform without it, or a closed mapping: nothing to release.
        with contextlib.suppress(OSError, ValueError):
            buffer.madvise(advice)


@contextmanager
def parsing(label: Path | str) -> Iterator[None]:
    """Report anything that parsing untrusted bytes raises as an ``IndexLoadError`` naming the file."""
    try:
        yield
    except IndexLoadError:
        raise
    except Exception as err:
        msg = f"{label} is damaged: {type(err).__name__}: {err}"
        raise IndexLoadError(msg) from err


@dataclass(frozen=True)
class ArraySpec:
    """The dtype and shape an npz member must have."""

    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: a length the manifest does not give (format 1)


def read_npz(
    data: bytes | mmap.mmap,
    specs: Mapping[str, ArraySpec],
    label: Path,
    *,
    mapped: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed npz, each member's npy header checked before its data is read.

    With ``data`` a mapping (:func:`map_file`), the members named in ``mapped`` are not read: their
    arrays are read-only views of the mapping (pages are read when used), when their data is aligned
    for their dtype (files written by :func:`~.folder_writer.write_npz` are; others are copied).
    """
    arrays: dict[str, np.ndarray] = {}
    source: Any = _MappedReader(data) if isinstance(data, mmap.mmap) else io.BytesIO(data)
    with parsing(label), zipfile.ZipFile(source) as archive:
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
            what = f"{label}: array {key!r}"
            if key in mapped and isinstance(data, mmap.mmap):
                arrays[key] = _map_npy(data, member, specs[key], what)
                continue
            with archive.open(member) as stream:
                arrays[key] = _read_npy(stream, member.file_size, specs[key], what)
    return arrays


class _MappedReader(io.RawIOBase):
    """A seekable binary stream over a mapping (``mmap`` itself is not an ``io`` stream zipfile accepts)."""

    def __init__(self, buffer: mmap.mmap) -> None:
        super().__init__()
        self._buffer, self._position = buffer, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._buffer)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        chunk = self._buffer[self._position : self._position + len(view)]
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


def _map_npy(buffer: mmap.mmap, member: zipfile.ZipInfo, spec: ArraySpec, what: str) -> np.ndarray:
    """A stored member's array as a read-only view of ``buffer`` (a copy when its data is misaligned)."""
    offset = member.header_offset
    header = buffer[offset : offset + zipfile.sizeFileHeader]
    if len(header) != zipfile.sizeFileHeader:
        msg = f"{what}: its local header lies past the end of the file"
        raise IndexLoadError(msg)
    fields = struct.unpack(zipfile.structFileHeader, header)
    name_bytes, extra_bytes = fields[_FH_FILENAME_LENGTH], fields[_FH_EXTRA_FIELD_LENGTH]
    name_start = offset + zipfile.sizeFileHeader
    if fields[0] != zipfile.stringFileHeader or buffer[name_start : name_start + name_bytes] != (
        member.filename.encode("utf-8")
    ):
        msg = f"{what}: its local header does not match the archive's directory"
        raise IndexLoadError(msg)
    start = name_start + name_bytes + extra_bytes
    end = start + member.file_size
    if end > len(buffer):
        msg = f"{what}: its data runs past the end of the file"
        raise IndexLoadError(msg)
    stream = io.BytesIO(buffer[start : min(end, start + _MAX_NPY_HEADER)])
    shape, dtype, _ = _npy_header(stream, member.file_size, spec, what)
    data_start = start + stream.tell()
    count = math.prod(shape)
    if data_start % dtype.alignment:  # written by np.savez (an older save): used from memory
        return np.frombuffer(buffer, dtype=dtype, count=count, offset=data_start).reshape(shape).copy()
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=data_start).reshape(shape)


def _npy_header(
    stream: BinaryIO, size: int, spec: ArraySpec, what: str
) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data bytes of the npy in ``stream`` (a member of ``size`` bytes), checked."""
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
    return shape, dtype, nbytes


def _read_npy(stream: BinaryIO, size: int, spec: ArraySpec, what: str) -> np.ndarray:
    shape, dtype, nbytes = _npy_header(stream, size, spec, what)
    array = np.empty(shape, dtype=dtype)
    if nbytes:
        view = array.reshape(-1).view(np.uint8)
        if stream.readinto(view) != nbytes:  # type: ignore[attr-defined]
            msg = f"{what} is shorter than its header says"
            raise IndexLoadError(msg)
    return array


def parse_json(data: bytes, label: Path) -> Any:
    """JSON from UTF-8 bytes; any failure is an ``IndexLoadError`` naming ``label``."""
    with parsing(label):
        return json.loads(data.decode("utf-8"))


def read_manifest_file(folder: Path) -> Any:
    """The parsed ``manifest.json`` of ``folder`` (a regular file, size-bounded, JSON); nothing else is read.

    Raises:
        FileNotFoundError: no folder at ``folder`` (or it is a file).
        VanishedError: the folder has no manifest.
        IndexLoadError: the folder or the manifest cannot be opened or parsed.
    """
    try:
        root = OpenFolder.open(folder)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise FileNotFoundError(str(folder)) from err
    except OSError as err:
        msg = f"{folder} cannot be opened: {err}"
        raise IndexLoadError(msg) from err
    try:
        raw = read_file(root, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    finally:
        root.close()
    return parse_json(raw, folder / MANIFEST)
