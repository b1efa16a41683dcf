"""Document metadata, and the metadata filter language of ``M3Index.search``.

**Metadata** is JSON: a dict with string keys whose values are ``None``, ``bool``, ``int``, ``float``
(finite), ``str``, lists and dicts of these, nested at most :data:`MAX_METADATA_DEPTH` levels.
:func:`normalize_metadata` checks that at the door and returns a private deep copy (tuples become lists),
so a stored value and a filter mean the same before and after a save and load.

**Filters** are dicts in the style of MongoDB, Chroma and Pinecone. :func:`parse_filter` checks one
once per search and turns it into a small immutable expression (:class:`Compare`, :class:`Exists`,
:class:`Empty`, :class:`And`, :class:`Or`, :class:`Not`), which :func:`evaluate` runs over the rows
through a per-key value index (:class:`KeyIndex`) and which other stores can translate into their own
filter languages. The semantics, precisely:

- Types are JSON's: ``null``, booleans, numbers (``1 == 1.0``), strings, lists and objects are
  distinct; ``True`` is not ``1`` and ``"1"`` is not ``1``. A comparison between two types never matches.
- The *values* of a key are the stored value and, when it is a list, each of its elements (MongoDB's
  rule). Every positive operator (``$eq``, ``$in``, ``$all``, ``$contains``, ``$gt``, ``$gte``,
  ``$lt``, ``$lte``, ``$text``, ``$itext``) matches when one of the values satisfies it, so
  ``{"tags": "rag"}`` matches ``{"tags": ["geo", "rag"]}``. A missing key has no values: no positive
  operator matches it.
- ``$ne`` and ``$nin`` are exactly ``$not`` of ``$eq`` and ``$in``: they match a missing key, ``None``
  and values of another type.
- ``{"k": None}`` matches a stored ``None`` (or a list holding one), not a missing key; use
  ``{"k": {"$exists": False}}`` or ``{"k": {"$empty": True}}`` for those.
- Several keys in one dict, and several operators on one key, must all match (each operator on its own:
  on a list, ``{"$gt": 1, "$lt": 5}`` can be met by two different elements, as in MongoDB).

Operators (``k`` a metadata key; a "value of ``k``" as defined above):

- ``{"k": v}`` or ``{"k": {"$eq": v}}``: a value of ``k`` equals ``v`` (deep equality for lists and
  dicts). ``$ne: v``: not ``$eq``.
- ``$gt``, ``$gte``, ``$lt``, ``$lte`` with a number or a string ``b``: a value of ``k`` of the same
  kind compares so with ``b`` (strings by code point).
- ``$in: [v, ...]``: a value of ``k`` equals one of the list's (an empty list matches nothing).
  ``$nin``: not ``$in``. ``$all: [v, ...]`` (non-empty): every item equals a value of ``k``.
- ``$contains: v``: ``$eq`` for a scalar ``v``; it reads better on list fields (tags contains "rag").
- ``$text: s``: a string value of ``k`` contains the substring ``s``; ``$itext: s``: the same after
  case folding (``str.casefold``).
- ``$exists: true`` / ``false``: the key is present (with any value, ``None`` included) / absent.
- ``$empty: true`` / ``false``: the key is missing or holds ``None``, ``""``, ``[]`` or ``{}`` / not.
- ``$and: [f, ...]``, ``$or: [f, ...]`` (non-empty lists of filters); ``$not: f``. On a key,
  ``{"k": {"$not": x}}`` is ``{"$not": {"k": x}}``. The empty filter ``{}`` matches everything.

A dict value whose keys all start with ``$`` is an operator dict; one without ``$`` keys is a literal
object to compare; a mix, an unknown operator, a value of the wrong shape or a non-string key raises
``ValueError`` naming the key and the operator. Keys are matched literally (a dot is part of a key).

Example:
    >>> expr = parse_filter({"lang": "ko", "year": {"$gte": 2020}})
    >>> expr
    And(parts=(Compare(key='lang', op='eq', value='ko'), Compare(key='year', op='gte', value=2020)))
    >>> metadatas = [{"lang": "ko", "year": 2021}, {"lang": "en", "year": 2024}, {"lang": "ko"}]
    >>> evaluate(expr, metadatas, {}).tolist()
    [True, False, False]
    >>> evaluate(parse_filter({"tags": {"$nin": ["a"]}}), [{"tags": ["a", "b"]}, {}], {}).tolist()
    [False, True]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np

from m3_integrations._utils import check_surrogates

__all__ = [
    "MAX_METADATA_DEPTH",
    "OPERATORS",
    "And",
    "Compare",
    "Empty",
    "Exists",
    "FilterExpr",
    "JsonObject",
    "KeyIndex",
    "Not",
    "Or",
    "copy_metadata",
    "evaluate",
    "normalize_json",
    "normalize_metadata",
    "parse_filter",
    "thaw",
]

MAX_METADATA_DEPTH = 32
COMPARE_OPS = ("eq", "in", "gt", "gte", "lt", "lte", "text", "itext")
CompareOp: TypeAlias = Literal["eq", "in", "gt", "gte", "lt", "lte", "text", "itext"]
FIELD_OPERATORS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$all",
    "$contains",
    "$text",
    "$itext",
    "$exists",
    "$empty",
    "$not",
)
LOGICAL_OPERATORS = ("$and", "$or", "$not")
OPERATORS = tuple(dict.fromkeys(FIELD_OPERATORS + LOGICAL_OPERATORS))
_RANGE_OPS = ("gt", "gte", "lt", "lte")


# ---------------------------------------------------------------------------------------------- values
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


def _freeze(value: Any) -> Any:
    """A normalised JSON value made immutable: lists become tuples, dicts :class:`JsonObject`."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return JsonObject(tuple(sorted((key, _freeze(item)) for key, item in value.items())))
    return value


def thaw(value: Any) -> Any:
    """A filter expression's value as plain JSON (tuples → lists, :class:`JsonObject` → dicts)."""
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    if isinstance(value, JsonObject):
        return {key: thaw(item) for key, item in value.items}
    return value


def _json_equal(stored: Any, target: Any) -> bool:
    """JSON equality of a stored value and a frozen filter value (bools apart from numbers)."""
    if isinstance(target, tuple):
        return (
            isinstance(stored, list)
            and len(stored) == len(target)
            and all(_json_equal(a, b) for a, b in zip(stored, target, strict=True))
        )
    if isinstance(target, JsonObject):
        return (
            isinstance(stored, dict)
            and len(stored) == len(target.items)
            and all(key in stored and _json_equal(stored[key], item) for key, item in target.items)
        )
    kind = _SCALAR_KINDS.get(type(target))
    return kind is not None and _SCALAR_KINDS.get(type(stored)) == kind and stored == target


# JSON's scalar types (metadata and filter values are normalised to exactly these types). ``int`` and
# ``float`` are one kind, so 1 == 1.0; ``bool`` is its own, so True != 1 although Python says equal.
_SCALAR_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
}
_MISSING = object()


def _is_nan(value: Any) -> bool:
    """NaN can only come from files saved before metadata was checked; it equals nothing."""
    return type(value) is float and math.isnan(value)


# ------------------------------------------------------------------------------------------ expressions
@dataclass(frozen=True, slots=True)
class Compare:
    """One comparison of a key's values with a constant (see the module docstring for each ``op``).

    Attributes:
        key: the metadata key.
        op: ``eq``, ``in`` (``value`` is a tuple), ``gt``, ``gte``, ``lt``, ``lte`` (a number or a
            string), ``text`` or ``itext`` (a string).
        value: the constant, frozen (lists are tuples, dicts :class:`JsonObject`).
    """

    key: str
    op: CompareOp
    value: Any

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {self.key: {f"${self.op}": thaw(self.value)}}


@dataclass(frozen=True, slots=True)
class Exists:
    """The key is present (with any value, ``None`` included)."""

    key: str

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {self.key: {"$exists": True}}


@dataclass(frozen=True, slots=True)
class Empty:
    """The key is missing, or holds ``None``, ``""``, ``[]`` or ``{}``."""

    key: str

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {self.key: {"$empty": True}}


@dataclass(frozen=True, slots=True)
class And:
    """Every part matches (no parts: every document matches)."""

    parts: tuple[FilterExpr, ...]

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {"$and": [p.to_dict() for p in self.parts]} if self.parts else {}


@dataclass(frozen=True, slots=True)
class Or:
    """At least one part matches."""

    parts: tuple[FilterExpr, ...]

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {"$or": [p.to_dict() for p in self.parts]}


@dataclass(frozen=True, slots=True)
class Not:
    """The part does not match."""

    part: FilterExpr

    def to_dict(self) -> dict[str, Any]:
        """The expression in the dict syntax."""
        return {"$not": self.part.to_dict()}


FilterExpr: TypeAlias = Compare | Exists | Empty | And | Or | Not


# ---------------------------------------------------------------------------------------------- parsing
def parse_filter(filter_: Mapping[str, Any]) -> FilterExpr:
    """Check a dict filter and turn it into an immutable expression.

    Raises:
        TypeError: ``filter_`` is not a dict.
        ValueError: an unknown operator, a value of the wrong shape (``$in`` without a list, ``$gt``
            with a list, ...), an operator dict mixed with plain keys, a non-string key or a value that
            is not JSON; the message names the key and the operator.

    Example:
        >>> parse_filter({"$or": [{"lang": "ko"}, {"tags": {"$contains": "rag"}}]})
        Or(parts=(Compare(key='lang', op='eq', value='ko'), Compare(key='tags', op='eq', value='rag')))
        >>> parse_filter({"year": {"$in": 2020}})
        Traceback (most recent call last):
        ...
        ValueError: filter on key 'year': $in needs a list of values, got 2020
    """
    if not isinstance(filter_, Mapping):
        msg = f"a filter must be a dict, got {type(filter_).__name__}"
        raise TypeError(msg)
    return _parse_document(filter_, "filter")


def _parse_document(filter_: Any, where: str) -> FilterExpr:
    if not isinstance(filter_, Mapping):
        msg = f"{where} must be a dict, got {filter_!r}"
        raise ValueError(msg)
    parts: list[FilterExpr] = []
    for key, condition in filter_.items():
        if not isinstance(key, str):
            msg = f"{where}: key {key!r} is {type(key).__name__}, filter keys must be strings"
            raise ValueError(msg)
        if key.startswith("$"):
            parts.append(_parse_logical(key, condition, where))
        else:
            parts.append(_parse_field(key, condition))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _parse_logical(operator: str, operand: Any, where: str) -> FilterExpr:
    if operator == "$not":
        return Not(_parse_document(operand, f"{where}: $not"))
    if operator in ("$and", "$or"):
        if not isinstance(operand, list | tuple) or not operand:
            msg = f"{where}: {operator} needs a non-empty list of filters, got {operand!r}"
            raise ValueError(msg)
        parts = tuple(_parse_document(item, f"{where}: {operator}[{i}]") for i, item in enumerate(operand))
        return And(parts) if operator == "$and" else Or(parts)
    msg = (
        f"{where}: unknown operator {operator!r} (top-level operators: {', '.join(LOGICAL_OPERATORS)}; "
        "a metadata key starting with '$' can only be filtered with a callable)"
    )
    raise ValueError(msg)


def _is_operator_dict(condition: Any, key: str) -> bool:
    if not isinstance(condition, Mapping) or not condition:
        return False
    dollars = [isinstance(k, str) and k.startswith("$") for k in condition]
    if all(dollars):
        return True
    if any(dollars):
        msg = (
            f"filter on key {key!r}: {dict(condition)!r} mixes operators and plain keys; write "
            f"{{{key!r}: {{'$eq': {{...}}}}}} to compare with an object whose keys start with '$'"
        )
        raise ValueError(msg)
    return False


def _parse_field(key: str, condition: Any) -> FilterExpr:
    if not _is_operator_dict(condition, key):
        return Compare(key, "eq", _filter_value(condition, key, "$eq"))
    parts = [_parse_operator(key, operator, operand) for operator, operand in condition.items()]
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _filter_value(value: Any, key: str, operator: str) -> Any:
    try:
        return _freeze(normalize_json(value, f"filter on key {key!r}", path=operator))
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from err


def _value_list(value: Any, key: str, operator: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        msg = f"filter on key {key!r}: {operator} needs a list of values, got {value!r}"
        raise ValueError(msg)
    return tuple(_filter_value(item, key, f"{operator}[{i}]") for i, item in enumerate(value))


def _flag(value: Any, key: str, operator: str) -> bool:
    if not isinstance(value, bool):
        msg = f"filter on key {key!r}: {operator} needs true or false, got {value!r}"
        raise ValueError(msg)
    return value


def _parse_operator(key: str, operator: str, operand: Any) -> FilterExpr:
    if operator in ("$eq", "$ne"):
        equal = Compare(key, "eq", _filter_value(operand, key, operator))
        return equal if operator == "$eq" else Not(equal)
    if operator in ("$in", "$nin"):
        member = Compare(key, "in", _value_list(operand, key, operator))
        return member if operator == "$in" else Not(member)
    if operator == "$all":
        values = _value_list(operand, key, operator)
        if not values:
            msg = f"filter on key {key!r}: $all needs at least one value"
            raise ValueError(msg)
        equals: tuple[FilterExpr, ...] = tuple(Compare(key, "eq", v) for v in values)
        return equals[0] if len(equals) == 1 else And(equals)
    if operator == "$contains":
        value = _filter_value(operand, key, operator)
        if type(value) not in _SCALAR_KINDS:
            msg = f"filter on key {key!r}: $contains needs a string, number, bool or None, got {operand!r}"
            raise ValueError(msg)
        return Compare(key, "eq", value)
    if operator in ("$gt", "$gte", "$lt", "$lte"):
        value = _filter_value(operand, key, operator)
        if _SCALAR_KINDS.get(type(value)) not in ("number", "string"):
            msg = f"filter on key {key!r}: {operator} needs a number or a string, got {operand!r}"
            raise ValueError(msg)
        return Compare(key, operator[1:], value)  # type: ignore[arg-type]
    if operator in ("$text", "$itext"):
        value = _filter_value(operand, key, operator)
        if not isinstance(value, str):
            msg = f"filter on key {key!r}: {operator} needs a string, got {operand!r}"
            raise ValueError(msg)
        return Compare(key, operator[1:], value)  # type: ignore[arg-type]
    if operator == "$exists":
        return Exists(key) if _flag(operand, key, operator) else Not(Exists(key))
    if operator == "$empty":
        return Empty(key) if _flag(operand, key, operator) else Not(Empty(key))
    if operator == "$not":
        return Not(_parse_field(key, operand))
    expected = ", ".join(FIELD_OPERATORS)
    msg = f"filter on key {key!r}: unknown operator {operator!r}; expected one of {expected}"
    raise ValueError(msg)


# ------------------------------------------------------------------------------------------- evaluation
class KeyIndex:
    """The rows of one metadata key by value, so that a filter looks rows up instead of looping.

    Rows are only appended between compactions (deletes are tombstones the caller masks), so the index
    catches up with new rows on each use; the caller drops it when rows are renumbered. Scalar values
    (and the scalar elements of stored lists) are kept by kind and value: equality and ``$in`` are hash
    lookups. Ranges bisect the kind's distinct values, sorted by Python's exact comparison (an int
    beyond 2**53 is not rounded) after rows were added, and take the rows of a slice at once. Text
    matching tests each distinct string once, not each row.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.covered = 0
        self._present: list[int] = []
        self._empty: list[int] = []
        self._by_kind: dict[str, dict[Any, list[int]]] = {kind: {} for kind in set(_SCALAR_KINDS.values())}
        self._containers: list[tuple[int, Any]] = []  # stored lists and dicts: compared one by one
        self._sorted: dict[str, tuple[list[Any], np.ndarray, np.ndarray]] = {}
        self._equal_rows: dict[tuple[str, Any], np.ndarray] = {}  # arrays of looked-up values

    def catch_up(self, metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Index the rows added since the last call."""
        if self.covered == len(metadatas):
            return
        key, kinds, by_kind = self.key, _SCALAR_KINDS, self._by_kind
        for row in range(self.covered, len(metadatas)):
            value = metadatas[row].get(key, _MISSING)
            if value is _MISSING:
                continue
            self._present.append(row)
            kind = kinds.get(type(value))
            if kind is None:  # a list or a dict
                if not value:
                    self._empty.append(row)
                self._containers.append((row, value))
                for item in value if isinstance(value, list) else ():
                    item_kind = kinds.get(type(item))
                    if item_kind is not None and not _is_nan(item):
                        by_kind[item_kind].setdefault(item, []).append(row)
                continue
            if value is None or value == "":
                self._empty.append(row)
            if not _is_nan(value):
                bucket = by_kind[kind]
                rows = bucket.get(value)
                if rows is None:
                    bucket[value] = [row]
                else:
                    rows.append(row)
        self.covered = len(metadatas)
        self._sorted, self._equal_rows = {}, {}

    def present(self) -> np.ndarray:
        """Rows that have the key."""
        return np.asarray(self._present, dtype=np.int64)

    def empty(self) -> np.ndarray:
        """Rows whose value is ``None``, ``""``, ``[]`` or ``{}``."""
        return np.asarray(self._empty, dtype=np.int64)

    def equal(self, value: Any) -> np.ndarray:
        """Rows with a value equal to the frozen ``value`` (itself, or an element of a stored list)."""
        kind = _SCALAR_KINDS.get(type(value))
        if kind is not None:
            rows = self._equal_rows.get((kind, value))
            if rows is None:
                rows = np.asarray(self._by_kind[kind].get(value, ()), dtype=np.int64)
                self._equal_rows[kind, value] = rows
            return rows
        rows = [
            row
            for row, stored in self._containers
            if _json_equal(stored, value)
            or (isinstance(stored, list) and any(_json_equal(item, value) for item in stored))
        ]
        return np.asarray(rows, dtype=np.int64)

    def text(self, needle: str, *, fold: bool) -> np.ndarray:
        """Rows with a string value containing ``needle`` (after ``casefold`` when ``fold``)."""
        if fold:
            needle = needle.casefold()
        rows: list[int] = []
        for stored, value_rows in self._by_kind["string"].items():
            if needle in (stored.casefold() if fold else stored):
                rows.extend(value_rows)
        return np.asarray(rows, dtype=np.int64)

    def compare(self, op: str, bound: float | str) -> np.ndarray:
        """Rows with a value of ``bound``'s kind that compares to it as ``op`` (gt, gte, lt or lte)."""
        values, offsets, rows = self._sorted_kind("string" if isinstance(bound, str) else "number")
        if op in ("gt", "gte"):
            start = (bisect.bisect_right if op == "gt" else bisect.bisect_left)(values, bound)
            return rows[offsets[start] :]
        stop = (bisect.bisect_left if op == "lt" else bisect.bisect_right)(values, bound)
        return rows[: offsets[stop]]

    def _sorted_kind(self, kind: str) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """The kind's distinct values in order, and their rows laid out in that order with offsets."""
        if kind not in self._sorted:
            bucket = self._by_kind[kind]
            values = sorted(bucket)
            sizes = np.fromiter((len(bucket[v]) for v in values), dtype=np.int64, count=len(values))
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            rows = np.fromiter(
                (row for v in values for row in bucket[v]), dtype=np.int64, count=int(offsets[-1])
            )
            self._sorted[kind] = (values, offsets, rows)
        return self._sorted[kind]


def evaluate(
    expr: FilterExpr,
    metadatas: Sequence[Mapping[str, Any]],
    indexes: MutableMapping[str, KeyIndex],
) -> np.ndarray:
    """Which rows of ``metadatas`` match ``expr``, as a boolean mask.

    Args:
        expr: a parsed filter (:func:`parse_filter`).
        metadatas: the rows' metadata; rows may only have been appended since the last call with the
            same ``indexes``.
        indexes: the per-key indexes (:class:`KeyIndex`), created here on first use of a key and kept
            by the caller; pass a new dict when rows were renumbered.

    Returns:
        ``(len(metadatas),)`` bool array.
    """
    n = len(metadatas)
    if isinstance(expr, And):
        mask = np.ones(n, dtype=bool)
        for part in expr.parts:
            if not mask.any():
                break
            mask &= evaluate(part, metadatas, indexes)
        return mask
    if isinstance(expr, Or):
        mask = np.zeros(n, dtype=bool)
        for part in expr.parts:
            mask |= evaluate(part, metadatas, indexes)
        return mask
    if isinstance(expr, Not):
        return ~evaluate(expr.part, metadatas, indexes)
    index = indexes.get(expr.key)
    if index is None:
        index = indexes[expr.key] = KeyIndex(expr.key)
    index.catch_up(metadatas)
    mask = np.zeros(n, dtype=bool)
    if isinstance(expr, Exists):
        mask[index.present()] = True
    elif isinstance(expr, Empty):
        mask[:] = True
        mask[index.present()] = False
        mask[index.empty()] = True
    elif expr.op == "eq":
        mask[index.equal(expr.value)] = True
    elif expr.op == "in":
        for value in expr.value:
            mask[index.equal(value)] = True
    elif expr.op in _RANGE_OPS:
        mask[index.compare(expr.op, expr.value)] = True
    else:
        mask[index.text(expr.value, fold=expr.op == "itext")] = True
    return mask
