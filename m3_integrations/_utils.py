"""Small private helpers shared by the core and the adapters."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, MappingView, Sequence
from collections.abc import Set as AbstractSet
from types import ModuleType
from typing import Any


def import_optional(module: str, extra: str | None = None, *, package: str | None = None) -> ModuleType:
    """Import an optional dependency; when it is missing, say what to install.

    Args:
        module: the module to import.
        extra: this package's pip extra that provides it (``pip install "m3-integrations[extra]"``).
        package: otherwise, the pip package that provides it (a LangChain partner package, say).

    Raises:
        ImportError: the module is not installed; the message names the extra or the package.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        install = f'"m3-integrations[{extra}]"' if extra is not None else package or module
        msg = (
            f"`{module}` is required for this feature but is not installed. "
            f"Install it with `pip install {install}`."
        )
        raise ImportError(msg) from err


def check_surrogates(text: str, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the position if ``text`` holds a lone surrogate.

    Such a string is not Unicode text: it cannot be encoded as UTF-8, so it fails later in the
    tokenizer or in a save.
    """
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        msg = (
            f"{what} holds a lone surrogate {text[err.start]!r} at position {err.start}: "
            "not valid Unicode text (it cannot be tokenized or saved)"
        )
        raise ValueError(msg) from None


def validate_texts(texts: Any, *, what: str = "texts", allow_empty_strings: bool = True) -> list[str]:
    """Return ``texts`` as a list of strings, or raise naming the first bad item.

    Accepted: a single string (wrapped in a list), a list, a tuple or another ordered sequence (a numpy
    array or pandas Series of strings), or an iterator or generator (consumed once). Refused with
    ``TypeError``: dicts, sets, frozensets and dict views, whose order is not the caller's (their items
    would be indexed in an arbitrary order, or the keys instead of the values), bytes, ``None``, and
    non-string items (the message gives the index, so a user with 10k documents can find it). A lone
    surrogate in a text raises ``ValueError``.

    Example:
        >>> validate_texts("one")
        ['one']
        >>> validate_texts(t.strip() for t in [" a ", "b"])
        ['a', 'b']
        >>> validate_texts({"a", "b"})
        Traceback (most recent call last):
        ...
        TypeError: texts must be a string or an ordered sequence of strings (list, tuple, iterator), got set
    """
    if isinstance(texts, str):
        texts = [texts]
    elif texts is None or isinstance(texts, bytes | bytearray | Mapping | AbstractSet | MappingView):
        msg = (
            f"{what} must be a string or an ordered sequence of strings (list, tuple, iterator), "
            f"got {type(texts).__name__}"
        )
        raise TypeError(msg)
    elif not isinstance(texts, Sequence):
        try:
            texts = list(texts)
        except TypeError as err:
            msg = f"{what} must be a string or a list of strings, got {type(texts).__name__}"
            raise TypeError(msg) from err
    out: list[str] = []
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            msg = f"{what}[{i}] must be a string, got {type(item).__name__}"
            raise TypeError(msg)
        text = item if type(item) is str else str.__str__(item)  # numpy.str_ etc.: the plain string
        if not allow_empty_strings and not text.strip():
            msg = f"{what}[{i}] is empty"
            raise ValueError(msg)
        check_surrogates(text, f"{what}[{i}]")
        out.append(text)
    return out


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
