"""The per-key value index that evaluates parsed filters over an index's rows without a loop per row.

:func:`evaluate` runs a :data:`~m3_integrations.index.filters.FilterExpr` over the rows' metadata; each
key it meets gets a :class:`KeyIndex`, built on first use and extended as rows are added: equality,
``$in`` and ``$all`` are hash lookups, ranges bisect the key's sorted distinct values, ``$text`` tests
each distinct string once (see "Filters" in ``docs/engine.md`` for measurements).

Example:
    >>> from m3_integrations.index.filters import parse_filter
    >>> expr = parse_filter({"lang": "ko", "year": {"$gte": 2020}})
    >>> metadatas = [{"lang": "ko", "year": 2021}, {"lang": "en", "year": 2024}, {"lang": "ko"}]
    >>> evaluate(expr, metadatas, {}).tolist()
    [True, False, False]
    >>> evaluate(parse_filter({"tags": {"$nin": ["a"]}}), [{"tags": ["a", "b"]}, {}], {}).tolist()
    [False, True]
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from m3_integrations.index.filters import RANGE_OPS, And, Empty, Exists, FilterExpr, Not, Or
from m3_integrations.index.metadata import SCALAR_KINDS, is_nan, json_equal

__all__ = ["KeyIndex", "evaluate"]

_MISSING = object()


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
        self._by_kind: dict[str, dict[Any, list[int]]] = {kind: {} for kind in set(SCALAR_KINDS.values())}
        self._containers: list[tuple[int, Any]] = []  # stored lists and dicts: compared one by one
        self._sorted: dict[str, tuple[list[Any], np.ndarray, np.ndarray]] = {}
        self._equal_rows: dict[tuple[str, Any], np.ndarray] = {}  # arrays of looked-up values

    def catch_up(self, metadatas: Sequence[Mapping[str, Any]]) -> None:
        """Index the rows added since the last call."""
        if self.covered == len(metadatas):
            return
        key, kinds, by_kind = self.key, SCALAR_KINDS, self._by_kind
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
                    if item_kind is not None and not is_nan(item):
                        by_kind[item_kind].setdefault(item, []).append(row)
                continue
            if value is None or value == "":
                self._empty.append(row)
            if not is_nan(value):
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
        kind = SCALAR_KINDS.get(type(value))
        if kind is not None:
            rows = self._equal_rows.get((kind, value))
            if rows is None:
                rows = np.asarray(self._by_kind[kind].get(value, ()), dtype=np.int64)
                self._equal_rows[kind, value] = rows
            return rows
        rows = [
            row
            for row, stored in self._containers
            if json_equal(stored, value)
            or (isinstance(stored, list) and any(json_equal(item, value) for item in stored))
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
    elif expr.op in RANGE_OPS:
        mask[index.compare(expr.op, expr.value)] = True
    else:
        mask[index.text(expr.value, fold=expr.op == "itext")] = True
    return mask
