"""Translate LlamaIndex ``MetadataFilters`` into the dict filter language of ``M3Index.search``.

Only the translation lives here; what each operator means is defined once, in
:mod:`m3_integrations.filters`.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    ExactMatchFilter,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from m3_integrations import filters as core_filters

# LlamaIndex's IN and ANY both ask whether a value of the key is one of the given values.
_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",
    FilterOperator.ALL: "$all",
    FilterOperator.CONTAINS: "$contains",
    FilterOperator.TEXT_MATCH: "$text",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "$itext",
}
_LIST_VALUED = {FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL}
_ORDERING = {FilterOperator.GT, FilterOperator.GTE, FilterOperator.LT, FilterOperator.LTE}
_TEXT = {FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE}
# A filter no document matches: the negation of the empty filter, which matches every document.
_NOTHING: dict[str, Any] = {"$not": {}}


def _translate_one(item: MetadataFilter | ExactMatchFilter) -> dict[str, Any]:
    operator = getattr(item, "operator", FilterOperator.EQ)
    try:
        operator = FilterOperator(operator)
    except ValueError as err:
        supported = ", ".join(o.name for o in FilterOperator)
        msg = f"unsupported filter operator {operator!r} on key {item.key!r}; supported: {supported}"
        raise ValueError(msg) from err
    value = item.value
    # Checked here too so that the message speaks LlamaIndex (IN, GT...), not the dict syntax.
    if operator in _LIST_VALUED and not isinstance(value, list):
        msg = f"filter {operator.name} on key {item.key!r} needs a list value, got {value!r}"
        raise ValueError(msg)
    if operator in _ORDERING and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        msg = f"filter {operator.name} on key {item.key!r} needs a number or string value, got {value!r}"
        raise ValueError(msg)
    if operator in _TEXT and not isinstance(value, str):
        msg = f"filter {operator.name} on key {item.key!r} needs a string value, got {value!r}"
        raise ValueError(msg)
    if operator == FilterOperator.IS_EMPTY:
        return {item.key: {"$empty": True}}
    return {item.key: {_OPERATORS[operator]: value}}


def _translate(filters: MetadataFilters) -> dict[str, Any]:
    if not isinstance(filters, MetadataFilters):
        msg = f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
        raise TypeError(msg)
    parts: list[dict[str, Any]] = []
    for i, item in enumerate(filters.filters):
        if isinstance(item, MetadataFilters):
            parts.append(_translate(item))
        elif isinstance(item, MetadataFilter | ExactMatchFilter):
            parts.append(_translate_one(item))
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
        return parts[0] if len(parts) == 1 else {"$and": parts} if parts else {}
    either = parts[0] if len(parts) == 1 else {"$or": parts} if parts else _NOTHING
    # LlamaIndex's NOT matches a node when none of its filters does.
    return either if condition == FilterCondition.OR else {"$not": either}


def metadata_filters_to_dict(filters: MetadataFilters) -> dict[str, Any]:
    """Translate (possibly nested) ``MetadataFilters`` into the dict filter of ``M3Index.search``.

    Every :class:`FilterOperator` has a counterpart (``ANY`` is ``$in``, ``IS_EMPTY`` is
    ``$empty``, ``TEXT_MATCH_INSENSITIVE`` is ``$itext``...) and ``and`` / ``or`` / ``not`` become
    ``$and`` / ``$or`` / ``$not`` (``not`` matches when none of its filters does). The result is
    checked by the core at once, so a bad filter fails when it is set, not at search time.

    Raises:
        TypeError: ``filters`` or one of its items is not a LlamaIndex filter object.
        ValueError: an unsupported operator or condition, or a value of the wrong shape (the message
            names the key).

    Example:
        .. code-block:: python

            metadata_filters_to_dict(
                MetadataFilters(
                    filters=[MetadataFilter(key="year", value=2020, operator=FilterOperator.GT)]
                )
            )  # {"year": {"$gt": 2020}}
    """
    translated = _translate(filters)
    core_filters.parse_filter(translated)
    return translated
