"""Small private helpers shared by the core and the adapters."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, naming the pip extra that provides it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = (
            f"`{module}` is required for this feature but is not installed. "
            f'Install it with `pip install "m3-integrations[{extra}]"`.'
        )
        raise ImportError(msg) from err


def validate_texts(texts: Any, *, what: str = "texts", allow_empty_strings: bool = True) -> list[str]:
    """Return ``texts`` as a list of strings, or raise naming the first bad item.

    A single string is accepted and wrapped. ``None`` or non-string items raise ``TypeError`` with the
    offending index so that a user with 10k documents can find it.
    """
    if texts is None:
        msg = f"{what} must be a string or a list of strings, got None"
        raise TypeError(msg)
    if isinstance(texts, str):
        texts = [texts]
    elif not isinstance(texts, Sequence) or isinstance(texts, bytes | bytearray):
        try:
            texts = list(texts)
        except TypeError as err:
            msg = f"{what} must be a string or a list of strings, got {type(texts).__name__}"
            raise TypeError(msg) from err
    out: list[str] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            msg = f"{what}[{i}] must be a string, got {type(text).__name__}"
            raise TypeError(msg)
        if not allow_empty_strings and not text.strip():
            msg = f"{what}[{i}] is empty"
            raise ValueError(msg)
        out.append(text)
    return out


@contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling folder that replaces ``target`` only if the block succeeds.

    The previous ``target`` is moved aside and removed only after the new folder is in place. Temporary
    names are unique (two writers never share one) and folders are created with the process's umask.
    Between the two renames ``target`` is briefly absent, so a crash there leaves the old folder in
    ``.NAME.old-*``: :meth:`M3Index.save <m3_integrations.M3Index.save>` uses a manifest switch instead.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    tmp = target.parent / f".{target.name}.tmp-{unique}"
    os.mkdir(tmp)  # not tempfile.mkdtemp: that forces mode 0700 whatever the umask
    try:
        yield tmp
        _fsync_dir(tmp)
        backup: Path | None = None
        if target.exists():
            backup = target.parent / f".{target.name}.old-{unique}"
            os.replace(target, backup)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir() if path.is_dir() else []:
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_folder(path)


def fsync_folder(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk, where supported."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems that cannot sync a folder
        pass
    finally:
        os.close(fd)
