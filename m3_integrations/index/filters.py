"""The metadata filter language of ``M3Index.search``: dict filters parsed once into an expression.

Metadata is JSON (:mod:`m3_integrations.index.metadata`). **Filters** are dicts in the style of
MongoDB, Chroma and Pinecone. :func:`parse_filter` checks one once per search and turns it into a small
immutable expression (:class:`Compare`, :class:`Exists`, :class:`Empty`, :class:`And`, :class:`Or`,
:class:`Not`), which :func:`m3_integrations.index.filter_index.evaluate` runs over the rows through a
per-key value index, and which other stores can translate into their own filter languages. The
semantics, precisely:

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
    >>> expr.to_dict()
    {'$and': [{'lang': {'$eq': 'ko'}}, {'year': {'$gte': 2020}}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from m3_integrations.index.metadata import SCALAR_KINDS, freeze, normalize_json, thaw

__all__ = [
    "COMPARE_OPS",
    "FIELD_OPERATORS",
    "LOGICAL_OPERATORS",
    "OPERATORS",
    "RANGE_OPS",
    "And",
    "Compare",
    "Empty",
    "Exists",
    "FilterExpr",
    "Not",
    "Or",
    "parse_filter",
]

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
RANGE_OPS = ("gt", "gte", "lt", "lte")


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
        return freeze(normalize_json(value, f"filter on key {key!r}", path=operator))
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
        if type(value) not in SCALAR_KINDS:
            msg = f"filter on key {key!r}: $contains needs a string, number, bool or None, got {operand!r}"
            raise ValueError(msg)
        return Compare(key, "eq", value)
    if operator in ("$gt", "$gte", "$lt", "$lte"):
        value = _filter_value(operand, key, operator)
        if SCALAR_KINDS.get(type(value)) not in ("number", "string"):
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
