"""Document metadata: JSON values, checked at the door, copied on the way out, compared as JSON.

Metadata is a dict with string keys whose values are ``None``, ``bool``, ``int``, ``float`` (finite),
``str``, lists and dicts of these, nested at most :data:`MAX_METADATA_DEPTH` levels.
:func:`normalize_metadata` checks that when a document is added and returns a private deep copy (tuples
become lists), so a stored value and a filter mean the same before and after a save and load;
:func:`copy_metadata` gives the deep copies that hits and ``get`` hand out. The JSON comparison rules
of the filter language (:mod:`m3_integrations.index.filters`) live here too: JSON's types are distinct
(``True`` is not ``1``, ``"1"`` is not ``1``; ``1 == 1.0``), and filter values are frozen
(:class:`JsonObject`) so that expressions are immutable and hashable.

Example:
    >>> normalize_metadata({"year": 2024, "authors": ("Ann", "Bo")}, "metadata of document 'd1'")
    {'year': 2024, 'authors': ['Ann', 'Bo']}
    >>> json_equal([1, 2.0], freeze([1.0, 2])), json_equal(True, freeze(1))
    (True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from m3_integrations._utils import check_surrogates

__all__ = [
    "MAX_METADATA_DEPTH",
    "SCALAR_KINDS",
    "JsonObject",
    "copy_metadata",
    "freeze",
    "is_nan",
    "json_equal",
    "normalize_json",
    "normalize_metadata",
    "thaw",
]

MAX_METADATA_DEPTH = 32


def normalize_json(value: Any, where: str, *, depth: int = 0, path: str = "") -> Any:
    """``value`` as a fresh JSON value (tuples become lists, numpy scalars Python numbers), or raise.

    Args:
        value: the value to check.
        where: what it is, for messages (``"metadata of document 'd1'"``).
        depth: how deep ``value`` already sits (nesting beyond :data:`MAX_METADATA_DEPTH` raises).
        path: its position inside the top-level value, for messages (``'["tags"][2]'``).

    Raises:
        TypeError: a value that is not JSON (a set, bytes, an object) or a non-string dict key.
        ValueError: NaN or infinity, a lone surrogate in a string, or nesting deeper than the limit.

    Example:
        >>> normalize_json({"tags": ("a", "b"), "n": 1}, "metadata")
        {'tags': ['a', 'b'], 'n': 1}
    """
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is str:
        check_surrogates(value, f"{where} at {path or 'top level'}")
        return value
    if kind is float:
        if not math.isfinite(value):
            msg = f"{where} at {path or 'top level'}: {value} is not allowed (JSON has no NaN or infinity)"
            raise ValueError(msg)
        return value
    if isinstance(value, Mapping | list | tuple):
        if depth >= MAX_METADATA_DEPTH:
            msg = f"{where} at {path}: nested deeper than {MAX_METADATA_DEPTH} levels"
            raise ValueError(msg)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    kind = type(key).__name__
                    msg = f"{where} at {path or 'top level'}: key {key!r} is {kind}, keys must be strings"
                    raise TypeError(msg)
                check_surrogates(key, f"{where} at {path or 'top level'}: key")
                out[str.__str__(key)] = normalize_json(item, where, depth=depth + 1, path=f"{path}[{key!r}]")
            return out
        return [
            normalize_json(item, where, depth=depth + 1, path=f"{path}[{i}]") for i, item in enumerate(value)
        ]
    # Subclasses (str enums, int enums, numpy scalars) are stored as the plain JSON type they stand for.
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return normalize_json(str.__str__(value), where, depth=depth, path=path)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return normalize_json(float(value), where, depth=depth, path=path)
    msg = (
        f"{where} at {path or 'top level'}: {type(value).__name__} is not a JSON value "
        "(use str, int, float, bool, None, lists and dicts)"
    )
    raise TypeError(msg)


def normalize_metadata(metadata: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    """A private, JSON-only deep copy of one document's metadata (``None`` gives ``{}``).

    Raises:
        TypeError: ``metadata`` is not a dict, or holds a non-string key or a non-JSON value (the
            message names ``where`` and the key path).
        ValueError: NaN/infinity, a lone surrogate, or nesting deeper than :data:`MAX_METADATA_DEPTH`.

    Example:
        >>> normalize_metadata({"year": 2024, "authors": ("Ann", "Bo")}, "metadata of document 'd1'")
        {'year': 2024, 'authors': ['Ann', 'Bo']}
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        msg = f"{where} must be a dict or None, got {type(metadata).__name__}"
        raise TypeError(msg)
    return normalize_json(metadata, where)


def copy_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of normalised metadata (only lists and dicts are copied; scalars are immutable)."""
    out = dict(metadata)
    for key, value in out.items():
        if type(value) is list or type(value) is dict:
            out[key] = _copy_json(value)
    return out


def _copy_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class JsonObject:
    """An immutable JSON object inside a filter expression: its items sorted by key."""

    items: tuple[tuple[str, Any], ...]


def freeze(value: Any) -> Any:
    """A normalised JSON value made immutable: lists become tuples, dicts :class:`JsonObject`."""
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    if isinstance(value, dict):
        return JsonObject(tuple(sorted((key, freeze(item)) for key, item in value.items())))
    return value


def thaw(value: Any) -> Any:
    """A filter expression's value as plain JSON (tuples → lists, :class:`JsonObject` → dicts)."""
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    if isinstance(value, JsonObject):
        return {key: thaw(item) for key, item in value.items}
    return value


def json_equal(stored: Any, target: Any) -> bool:
    """JSON equality of a stored value and a frozen filter value (bools apart from numbers)."""
    if isinstance(target, tuple):
        return (
            isinstance(stored, list)
            and len(stored) == len(target)
            and all(json_equal(a, b) for a, b in zip(stored, target, strict=True))
        )
    if isinstance(target, JsonObject):
        return (
            isinstance(stored, dict)
            and len(stored) == len(target.items)
            and all(key in stored and json_equal(stored[key], item) for key, item in target.items)
        )
    kind = SCALAR_KINDS.get(type(target))
    return kind is not None and SCALAR_KINDS.get(type(stored)) == kind and stored == target


# JSON's scalar types (metadata and filter values are normalised to exactly these types). ``int`` and
# ``float`` are one kind, so 1 == 1.0; ``bool`` is its own, so True != 1 although Python says equal.
SCALAR_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
}


def is_nan(value: Any) -> bool:
    """NaN can only come from files saved before metadata was checked; it equals nothing."""
    return type(value) is float and math.isnan(value)
