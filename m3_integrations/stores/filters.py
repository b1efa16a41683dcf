r"""The core's parsed filter (:mod:`m3_integrations.index.filters`) in Qdrant's and Milvus's filter languages.

Each store keeps, next to a document's metadata, three lists of its metadata keys: all of them, those
holding an empty value (``None``, ``""``, ``[]``, ``{}``) and those holding ``None`` (or a list with
``None``). ``$exists``, ``$empty`` and ``{"k": None}`` then become membership tests, exact on both
engines (neither has a "present, even if null" test).

What each engine cannot express raises ``ValueError`` naming the key and the operator (a post-filter
would return fewer than ``k`` hits without saying so):

========================================  =======================  ==============================
filter                                    Qdrant                   Milvus
========================================  =======================  ==============================
``$eq`` / ``$in`` string, number, bool    yes (list elements too)  yes (list elements too)
``$eq`` with ``None``                     yes                      yes
``$eq`` with a list or an object          refused                  refused
``$gt`` … on numbers                      yes (list elements too)  scalar values only (see below)
``$gt`` … on strings                      refused                  refused
``$text``                                 yes (substring)          ``like`` (no ``%``, ``_``, ``\``)
``$itext``                                refused                  refused
``$exists``, ``$empty``, ``$and/or/not``  yes                      yes
keys with ``.``, ``[``, ``]`` or ``"``    refused                  refused
========================================  =======================  ==============================

Milvus compares JSON booleans and numbers as equal (``true == 1``), so ``{"k": 1}`` also matches a
stored ``True`` there. Milvus compares a JSON key holding a list with a range as a whole, not element
by element: a range on a list-valued key matches no document there (MongoDB's rule, and
``M3Index``'s, would match when one element does). Numbers compare as doubles on both engines
(integers above 2⁵³ lose exactness).
"""

from __future__ import annotations

import json
from typing import Any

from m3_integrations.index.filters import And, Compare, Empty, Exists, FilterExpr, Not, Or
from m3_integrations.index.metadata import SCALAR_KINDS

__all__ = ["METADATA_FIELD", "to_milvus_expression", "to_qdrant_filter"]

METADATA_FIELD = "metadata"
KEYS_FIELD = "metadata_keys"
EMPTY_FIELD = "empty_keys"
NULL_FIELD = "null_keys"


def _refuse(engine: str, key: str, what: str) -> ValueError:
    return ValueError(f"filter on key {key!r}: {engine} cannot express {what}; use M3Index for this filter")


def _check_key(engine: str, key: str) -> None:
    if any(c in key for c in '.[]"\\') or not key:
        msg = (
            f"filter on key {key!r}: {engine} reads '.', '[', ']' and quotes in a key as a path; "
            "filter such keys with M3Index"
        )
        raise ValueError(msg)


def _kind(value: Any) -> str | None:
    return SCALAR_KINDS.get(type(value))


# ---------------------------------------------------------------------------------------------- Qdrant
def to_qdrant_filter(expr: FilterExpr, models: Any) -> Any:
    """A ``qdrant_client.models.Filter`` equivalent to ``expr`` (``models`` is that module).

    Raises:
        ValueError: an operator or value Qdrant cannot express (see the module docstring).
    """
    condition = _qdrant(expr, models)
    return condition if isinstance(condition, models.Filter) else models.Filter(must=[condition])


def _qdrant(expr: FilterExpr, models: Any) -> Any:
    if isinstance(expr, And):
        return models.Filter(must=[_qdrant(p, models) for p in expr.parts])
    if isinstance(expr, Or):
        return models.Filter(should=[_qdrant(p, models) for p in expr.parts])
    if isinstance(expr, Not):
        return models.Filter(must_not=[_qdrant(expr.part, models)])
    _check_key("Qdrant", expr.key)
    if isinstance(expr, Exists):
        return models.FieldCondition(key=KEYS_FIELD, match=models.MatchValue(value=expr.key))
    if isinstance(expr, Empty):
        present = models.FieldCondition(key=KEYS_FIELD, match=models.MatchValue(value=expr.key))
        empty = models.FieldCondition(key=EMPTY_FIELD, match=models.MatchValue(value=expr.key))
        return models.Filter(should=[models.Filter(must_not=[present]), empty])
    return _qdrant_compare(expr, models)


def _qdrant_compare(expr: Compare, models: Any) -> Any:
    key, op, value = f"{METADATA_FIELD}.{expr.key}", expr.op, expr.value
    if op == "in":
        if not value:
            return models.HasIdCondition(has_id=[])  # $in [] matches nothing
        return models.Filter(should=[_qdrant_compare(Compare(expr.key, "eq", v), models) for v in value])
    kind = _kind(value)
    if op == "eq":
        if value is None:
            return models.FieldCondition(key=NULL_FIELD, match=models.MatchValue(value=expr.key))
        if kind == "number":
            # A range matches integers and floats alike (1 == 1.0), never booleans.
            return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
        if kind in ("string", "bool"):
            return models.FieldCondition(key=key, match=models.MatchValue(value=value))
        raise _refuse("Qdrant", expr.key, "equality with a list or an object")
    if op in ("gt", "gte", "lt", "lte"):
        if kind != "number":
            raise _refuse("Qdrant", expr.key, f"${op} on strings")
        return models.FieldCondition(key=key, range=models.Range(**{op: value}))
    if op == "text":
        return models.FieldCondition(key=key, match=models.MatchSubstring(substring=value))
    raise _refuse("Qdrant", expr.key, f"${op}")


# ---------------------------------------------------------------------------------------------- Milvus
def to_milvus_expression(expr: FilterExpr) -> str:
    """A Milvus boolean expression equivalent to ``expr`` (see the module docstring for the limits).

    Example:
        >>> from m3_integrations.index.filters import parse_filter
        >>> to_milvus_expression(parse_filter({"year": {"$gte": 2020}}))
        '(array_contains(metadata_keys, "year") and metadata["year"] >= 2020)'

    Raises:
        ValueError: an operator or value Milvus cannot express.
    """
    if isinstance(expr, And):
        return "(" + " and ".join(to_milvus_expression(p) for p in expr.parts) + ")" if expr.parts else "true"
    if isinstance(expr, Or):
        return "(" + " or ".join(to_milvus_expression(p) for p in expr.parts) + ")"
    if isinstance(expr, Not):
        return f"(not {to_milvus_expression(expr.part)})"
    _check_key("Milvus", expr.key)
    quoted_key = json.dumps(expr.key)
    if isinstance(expr, Exists):
        return f"array_contains({KEYS_FIELD}, {quoted_key})"
    if isinstance(expr, Empty):
        return (
            f"(not array_contains({KEYS_FIELD}, {quoted_key}) or array_contains({EMPTY_FIELD}, {quoted_key}))"
        )
    return _milvus_compare(expr)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _milvus_compare(expr: Compare) -> str:
    # A comparison on a missing JSON key is null in Milvus, and "not null" is null too: guarded by the
    # key list, a missing key compares false, so $ne / $nin / $not match it as in M3Index.
    return f"(array_contains({KEYS_FIELD}, {json.dumps(expr.key)}) and {_milvus_condition(expr)})"


def _milvus_condition(expr: Compare) -> str:
    field = f"{METADATA_FIELD}[{json.dumps(expr.key)}]"
    op, value = expr.op, expr.value
    if op == "in":
        if not value:
            return "false"
        return "(" + " or ".join(_milvus_condition(Compare(expr.key, "eq", v)) for v in value) + ")"
    kind = _kind(value)
    if op == "eq":
        if value is None:
            return f"array_contains({NULL_FIELD}, {json.dumps(expr.key)})"
        if kind in ("string", "number", "bool"):
            literal = _literal(value)
            return f"({field} == {literal} or json_contains({field}, {literal}))"
        raise _refuse("Milvus", expr.key, "equality with a list or an object")
    if op in ("gt", "gte", "lt", "lte"):
        if kind != "number":
            raise _refuse("Milvus", expr.key, f"${op} on strings")
        symbol = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        return f"{field} {symbol} {_literal(value)}"
    if op == "text":
        if any(c in value for c in "%_\\"):
            # Milvus's `like` has no escape for its wildcards.
            raise _refuse("Milvus", expr.key, "$text with '%', '_' or a backslash")
        return f"{field} like {json.dumps('%' + value + '%')}"
    raise _refuse("Milvus", expr.key, f"${op}")
