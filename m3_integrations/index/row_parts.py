"""A growable array of rows whose older rows may stay in read-only (memory-mapped) parts.

The ColBERT stores keep every token vector of every document back to back, addressed by a global row.
An index loaded with ``M3Index.load(..., mmap=True)`` leaves those rows in its folder's files, one
read-only part per saved segment, so memory holds only the pages a query touches; rows added later go
to an in-memory tail that grows geometrically. A document's rows never straddle two parts (a segment
holds whole documents and the tail starts after the last one), which lets a scorer work part by part
with part-local offsets (:func:`score_by_part`).

Example:
    >>> import numpy as np
    >>> rows = RowParts.from_parts([np.arange(4).reshape(2, 2)], np.dtype(np.int64), (2,))
    >>> rows.append(np.array([[4, 5]]))
    >>> len(rows), rows.slice(1, 3).tolist(), rows.take(np.array([2, 0])).tolist()
    (3, [[2, 3], [4, 5]], [[4, 5], [0, 1]])
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = ["RowParts", "is_mapped", "prefetch_rows", "score_by_part"]


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (its pages are loaded on demand)."""
    return _mapping(array) is not None


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while isinstance(base, np.ndarray):
        if base.base is None:
            return None
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def prefetch_rows(array: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
    """Ask the kernel to read the pages of rows ``starts[i] : starts[i] + lengths[i]`` of a mapped array.

    One ``madvise(MADV_WILLNEED)`` per document starts all their reads at once, where touching the rows
    one after the other waits for each page fault in turn: on an index whose mapped files exceed the
    page cache, a query's candidates otherwise cost one disk read after another. Nothing happens for an
    array in memory or on a platform without the advice; it never changes what is read.

    Returns:
        How many ranges were advised (0 when the array is not mapped).
    """
    buffer = _mapping(array)
    advice = getattr(mmap, "MADV_WILLNEED", None)
    if buffer is None or advice is None or not len(starts) or array.ndim == 0:
        return 0
    origin = np.frombuffer(buffer, dtype=np.uint8, count=1).ctypes.data
    row_bytes = array.strides[0]
    begin = array.ctypes.data - origin + np.asarray(starts, dtype=np.int64) * row_bytes
    end = begin + np.asarray(lengths, dtype=np.int64) * row_bytes
    rows = end > begin  # an empty document has no pages
    begin, end = begin[rows], end[rows]
    begin -= begin % mmap.PAGESIZE  # madvise wants page-aligned starts
    for advised, (first, last) in enumerate(zip(begin.tolist(), end.tolist(), strict=True)):
        try:
            buffer.madvise(advice, first, min(last, len(buffer)) - first)
        except (OSError, ValueError):  # a closed mapping or a refused advice: reads fault as before
            return advised
    return len(begin)


class RowParts:
    """Rows of one dtype and row shape: frozen parts (never written), then a growable tail.

    Args:
        dtype: the rows' dtype.
        row_shape: the shape of one row (``()`` for scalars, ``(d,)`` for vectors).
    """

    def __init__(self, dtype: np.dtype, row_shape: tuple[int, ...]) -> None:
        self.dtype, self.row_shape = np.dtype(dtype), tuple(row_shape)
        self._parts: list[np.ndarray] = []
        self._tail = np.zeros((0, *self.row_shape), dtype=self.dtype)
        self._tail_used = 0
        self._frozen_rows = 0

    @classmethod
    def from_parts(cls, parts: Sequence[np.ndarray], dtype: np.dtype, row_shape: tuple[int, ...]) -> RowParts:
        """Rows made of ``parts`` (kept as they are, never written: mapped arrays stay mapped).

        A single in-memory part becomes the tail (it may then grow in place); mapped or several parts
        stay frozen.
        """
        rows = cls(dtype, row_shape)
        parts = [np.asarray(part) for part in parts if len(part)]
        if len(parts) == 1 and not is_mapped(parts[0]):
            rows._tail, rows._tail_used = parts[0], len(parts[0])
            return rows
        rows._parts = parts
        rows._frozen_rows = sum(len(part) for part in parts)
        return rows

    def __len__(self) -> int:
        return self._frozen_rows + self._tail_used

    @property
    def tail_start(self) -> int:
        """The first row of the in-memory tail (the rows before it are frozen)."""
        return self._frozen_rows

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, array)`` of each frozen part, then of the tail (when it has rows)."""
        first = 0
        for part in self._parts:
            yield first, part
            first += len(part)
        if self._tail_used:
            yield first, self._tail[: self._tail_used]

    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` at the end of the tail (amortised O(1): the tail grows by half when full)."""
        used = self._tail_used
        need = used + len(rows)
        if need > len(self._tail):
            self._grow(max(need, int(len(self._tail) * 1.5) + 16))
        self._tail[used:need] = rows
        self._tail_used = need

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` more rows in the tail without copying on the way."""
        if self._tail_used + rows > len(self._tail):
            self._grow(self._tail_used + rows)

    def _grow(self, size: int) -> None:
        grown = np.empty((size, *self.row_shape), dtype=self.dtype)
        grown[: self._tail_used] = self._tail[: self._tail_used]
        self._tail = grown

    def pieces(self, begin: int, end: int) -> list[np.ndarray]:
        """Rows ``begin:end`` as views of the parts they lie in, in order (nothing copied)."""
        begin, end = max(0, begin), min(end, len(self))
        return [
            array[max(begin - first, 0) : end - first]
            for first, array in self.chunks()
            if first < end and first + len(array) > begin
        ]

    def slice(self, begin: int, end: int) -> np.ndarray:
        """Rows ``begin:end``: a view when they lie in one part, else a copy."""
        pieces = self.pieces(begin, end)
        if not pieces:
            return np.zeros((0, *self.row_shape), dtype=self.dtype)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def saved(self, begin: int, end: int, *, pieces: bool) -> np.ndarray | list[np.ndarray]:
        """Rows ``begin:end`` for a save: :meth:`pieces` (streamed by ``write_npz``) or one array."""
        if not pieces:
            return self.slice(begin, end)
        return self.pieces(begin, end) or [np.zeros((0, *self.row_shape), dtype=self.dtype)]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (global indexes, any order), gathered into a new array."""
        rows = np.asarray(rows, dtype=np.int64)
        if not self._parts:
            return self._tail[: self._tail_used][rows]
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        for first, array in self.chunks():
            inside = (rows >= first) & (rows < first + len(array))
            if inside.any():
                out[inside] = array[rows[inside] - first]
        return out

    def mapped_bytes(self) -> int:
        """Bytes of the rows held in memory-mapped parts."""
        return int(sum(part.nbytes for part in self._parts if is_mapped(part)))

    def nbytes(self) -> int:
        """Bytes of all rows (mapped parts included; the tail's spare room not)."""
        return int(sum(part.nbytes for part in self._parts) + self._tail[: self._tail_used].nbytes)


def score_by_part(
    columns: Sequence[RowParts],
    starts: np.ndarray,
    lengths: np.ndarray,
    score: Callable[[list[np.ndarray], np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Scores of documents whose rows are ``starts[i] : starts[i] + lengths[i]`` of ``columns``.

    ``columns`` share their part boundaries (a store's vectors and their scales, say). ``score`` gets
    one part's arrays, the documents' part-local starts and their lengths, and returns their scores;
    it is called once per part that holds a document (once in all for an index without parts).
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(len(starts), dtype=np.float32)
    per_column = [list(column.chunks()) for column in columns]
    if not per_column[0] or not len(starts):
        return out
    firsts = np.asarray([first for first, _ in per_column[0]], dtype=np.int64)
    # A document lies inside one part; an empty one may sit at a boundary (it scores 0 anywhere).
    which = np.maximum(np.searchsorted(firsts, starts, side="right") - 1, 0)
    parts = np.unique(which).tolist()
    for number in parts:  # every mapped part's reads start before any is scored
        at = np.flatnonzero(which == number)
        for chunks in per_column:
            prefetch_rows(chunks[number][1], starts[at] - firsts[number], lengths[at])
    if len(firsts) == 1:
        return score([chunks[0][1] for chunks in per_column], starts - firsts[0], lengths)
    for number in parts:
        at = np.flatnonzero(which == number)
        arrays = [chunks[number][1] for chunks in per_column]
        out[at] = score(arrays, starts[at] - firsts[number], lengths[at])
    return out
