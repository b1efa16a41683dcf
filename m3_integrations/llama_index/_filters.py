"""Translate LlamaIndex ``MetadataFilters`` into the callable metadata filter of ``M3Index.search``."""

from __future__ import annotations

import operator as op
from collections.abc import Callable, Mapping
from typing import Any

from llama_index.core.vector_stores.types import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

MetadataPredicate = Callable[[Mapping[str, Any]], bool]

_MISSING = object()
_ORDERING = {
    FilterOperator.GT: op.gt,
    FilterOperator.GTE: op.ge,
    FilterOperator.LT: op.lt,
    FilterOperator.LTE: op.le,
}
_LIST_VALUED = {FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL}
_TEXT = {FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE}


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


def _matches(operator: FilterOperator, expected: Any, actual: Any) -> bool:
    """One condition on one metadata value; ``actual`` is ``_MISSING`` when the key is absent."""
    if operator == FilterOperator.IS_EMPTY:
        return actual is _MISSING or actual is None or actual in ("", [])
    # Like LlamaIndex's in-memory stores, an absent key differs from every value (so NE / NIN match it)
    # but is not ordered, contained or equal.
    if actual is _MISSING:
        return operator in (FilterOperator.NE, FilterOperator.NIN)
    if operator == FilterOperator.EQ:
        return actual == expected
    if operator == FilterOperator.NE:
        return actual != expected
    if operator in _ORDERING:
        try:
            return bool(_ORDERING[operator](actual, expected))
        except TypeError:  # e.g. a str stored where the filter compares numbers: no match
            return False
    if operator == FilterOperator.IN:
        return any(item in expected for item in _as_list(actual))
    if operator == FilterOperator.NIN:
        return not any(item in expected for item in _as_list(actual))
    if operator == FilterOperator.CONTAINS:
        return expected in _as_list(actual)
    if operator == FilterOperator.ANY:
        return any(item in _as_list(actual) for item in expected)
    if operator == FilterOperator.ALL:
        return all(item in _as_list(actual) for item in expected)
    if operator in _TEXT:
        if not isinstance(actual, str):
            return False
        if operator == FilterOperator.TEXT_MATCH_INSENSITIVE:
            return expected.lower() in actual.lower()
        return expected in actual
    msg = f"internal error: operator {operator} has no rule"  # pragma: no cover - _compile_one checks
    raise AssertionError(msg)


def _compile_one(item: MetadataFilter | ExactMatchFilter) -> MetadataPredicate:
    operator = getattr(item, "operator", FilterOperator.EQ)
    try:
        operator = FilterOperator(operator)
    except ValueError as err:
        supported = ", ".join(o.name for o in FilterOperator)
        msg = f"unsupported filter operator {operator!r} on key {item.key!r}; supported: {supported}"
        raise ValueError(msg) from err
    value = item.value
    if operator in _LIST_VALUED and not isinstance(value, list):
        msg = f"filter {operator.name} on key {item.key!r} needs a list value, got {value!r}"
        raise ValueError(msg)
    if operator in _ORDERING and not isinstance(value, int | float | str):
        msg = f"filter {operator.name} on key {item.key!r} needs a number or string value, got {value!r}"
        raise ValueError(msg)
    if operator in _TEXT and not isinstance(value, str):
        msg = f"filter {operator.name} on key {item.key!r} needs a string value, got {value!r}"
        raise ValueError(msg)
    key = item.key

    def predicate(metadata: Mapping[str, Any]) -> bool:
        return _matches(operator, value, metadata.get(key, _MISSING))

    return predicate


def compile_metadata_filters(filters: MetadataFilters) -> MetadataPredicate:
    """Turn (possibly nested) ``MetadataFilters`` into ``metadata -> bool``.

    Every :class:`FilterOperator` is supported and the ``and`` / ``or`` / ``not`` conditions combine
    them (``not`` matches when none of its filters does). Structural mistakes raise at once, naming
    the key, so a bad filter fails when it is set, not silently at search time.

    Raises:
        TypeError: ``filters`` or one of its items is not a LlamaIndex filter object.
        ValueError: an unsupported operator or condition, or a value of the wrong shape.
    """
    if not isinstance(filters, MetadataFilters):
        msg = f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
        raise TypeError(msg)
    parts: list[MetadataPredicate] = []
    for i, item in enumerate(filters.filters):
        if isinstance(item, MetadataFilters):
            parts.append(compile_metadata_filters(item))
        elif isinstance(item, MetadataFilter | ExactMatchFilter):
            parts.append(_compile_one(item))
        else:
            kind = type(item).__name__
            msg = f"filters.filters[{i}] must be a MetadataFilter or MetadataFilters, got {kind}"
            raise TypeError(msg)
    condition = filters.condition or FilterCondition.AND
    try:
        condition = FilterCondition(condition)
    except ValueError as err:
        msg = f"unsupported filter condition {condition!r}; supported: and, or, not"
        raise ValueError(msg) from err

    if condition == FilterCondition.AND:
        return lambda metadata: all(p(metadata) for p in parts)
    if condition == FilterCondition.OR:
        return lambda metadata: any(p(metadata) for p in parts)
    return lambda metadata: not any(p(metadata) for p in parts)
