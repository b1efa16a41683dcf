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

import errno
import hashlib
import io
import json
import math
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
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
    "parse_json",
    "parsing",
    "read_file",
    "read_manifest_file",
    "read_npz",
]

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_DIR_FDS = os.open in os.supports_dir_fd and _O_DIRECTORY != 0


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


def read_npz(data: bytes, specs: Mapping[str, ArraySpec], label: Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed npz, each member's npy header checked before its data is read."""
    arrays: dict[str, np.ndarray] = {}
    with parsing(label), zipfile.ZipFile(io.BytesIO(data)) as archive:
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


def _read_npy(stream: BinaryIO, size: int, spec: ArraySpec, what: str) -> np.ndarray:
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
