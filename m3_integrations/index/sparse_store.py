"""One sparse store for every lexical representation: M3's lexical weights and BM25's term frequencies.

A :class:`SparseStore` is a ``(n_rows, width)`` float32 matrix, one row per document, kept as a few
*segments* of consecutive rows. Each segment has a CSR matrix and, built lazily, its CSC copy: the
segment's inverted index (one posting list per column), so a query touches only the postings of its
terms. Adding documents appends a new small segment instead of rebuilding the inverted index of the
whole corpus; segments of similar size are merged (like a log-structured merge tree), so there are
``O(log n)`` of them and every posting is rebuilt ``O(log n)`` times over the life of the index.
A row lies in exactly one segment, so its score is summed in the same order as with one segment:
segmenting changes no score, not even in the last bit.

The store knows which rows are alive (the owner's tombstones) and, from that, each column's live
document frequency (kept up to date on appends) and a query's term coverage.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from m3_integrations import scoring

__all__ = ["SparseStore", "new_epoch"]

_EPOCHS = itertools.count(1)


def new_epoch() -> int:
    """A number no store has had: every store takes one each time its rows are replaced (not appended to).

    An incremental save compares them to know that the rows it wrote before are still the same rows.
    """
    return next(_EPOCHS)


# A new segment is merged into the one before it while that one is at most this many times larger:
# segment sizes then shrink geometrically from the oldest to the newest.
MERGE_RATIO = 2


class _Segment:
    """Rows ``start : start + csr.shape[0]`` of the store, and the lazily built CSC copy."""

    __slots__ = ("csc", "csr", "start")

    def __init__(self, start: int, csr: sp.csr_matrix) -> None:
        self.start, self.csr = start, csr
        self.csc: sp.csc_matrix | None = None

    @property
    def rows(self) -> int:
        return int(self.csr.shape[0])

    def inverted(self) -> sp.csc_matrix:
        if self.csc is None:
            self.csc = self.csr.tocsc()
            self.csc.sort_indices()
        return self.csc


class SparseStore:
    """Sparse rows (documents × columns) with segmented inverted indexes and live document frequencies.

    Args:
        width: the number of columns (a vocabulary's size); BM25 over words grows it with
            :meth:`set_width` as new words arrive.

    Example:
        >>> store = SparseStore(4)
        >>> store.append(sp.csr_matrix(np.array([[0.5, 0, 0, 1.0], [0, 2.0, 0, 0]], dtype=np.float32)))
        >>> store.scores({3: 2.0, 1: 1.0}).tolist()
        [2.0, 2.0]
        >>> store.set_alive(np.array([True, False]))
        >>> store.document_frequency().tolist(), store.coverage(np.array([1, 3]), 3)
        ([1.0, 0.0, 0.0, 1.0], 0.3333333333333333)
    """

    def __init__(self, width: int) -> None:
        self._width = max(int(width), 1)
        self._segments: list[_Segment] = []
        self._csr: sp.csr_matrix | None = None  # every row in one matrix, built when asked
        self._rows = 0
        self.alive = np.zeros(0, dtype=bool)
        self._df: np.ndarray | None = None
        self.epoch = new_epoch()

    def __len__(self) -> int:
        return self._rows

    @property
    def width(self) -> int:
        """The number of columns."""
        return self._width

    @property
    def segments(self) -> int:
        """How many segments hold the rows (``O(log n)``; one after :meth:`restore` or a compaction)."""
        return len(self._segments)

    def set_width(self, width: int) -> None:
        """Change the number of columns (rows keep their entries; none may lie beyond the new width).

        Segments keep the width they were built with: a column beyond it has no entry there.
        """
        width = max(int(width), 1)
        if width == self._width:
            return
        if width < self._width and any(
            s.csr.nnz and int(s.csr.indices.max()) >= width for s in self._segments
        ):
            msg = f"cannot narrow the store to {width} columns: rows hold entries beyond it"
            raise ValueError(msg)
        self._width = width
        self._csr = None
        if self._df is not None:
            df = np.zeros(width, dtype=np.float64)
            keep = min(width, len(self._df))
            df[:keep] = self._df[:keep]
            self._df = df

    # ------------------------------------------------------------------ changing
    def append(self, chunk: sp.spmatrix) -> None:
        """Add rows at the end, alive (a CSR chunk of at most :attr:`width` columns).

        The chunk becomes the newest segment; the inverted indexes of older segments are kept.
        """
        chunk = sp.csr_matrix(chunk)
        if chunk.shape[1] > self._width:
            msg = f"chunk has {chunk.shape[1]} columns, the store {self._width}"
            raise ValueError(msg)
        n_new = chunk.shape[0]
        if n_new == 0:
            return
        self._segments.append(_Segment(self._rows, chunk))
        self._rows += n_new
        self.alive = np.concatenate([self.alive, np.ones(n_new, dtype=bool)])
        if self._df is not None:  # the new rows are alive: their columns gain one document each
            self._df += np.bincount(chunk.indices, minlength=self._width)[: self._width]
        self._csr = None
        self._merge_small_segments()

    def _merge_small_segments(self) -> None:
        segments = self._segments
        while len(segments) >= 2 and segments[-2].rows <= MERGE_RATIO * segments[-1].rows:
            newest = segments.pop()
            older = segments[-1]
            width = max(older.csr.shape[1], newest.csr.shape[1])
            segments[-1] = _Segment(older.start, _stack([older.csr, newest.csr], width))

    def set_alive(self, alive: np.ndarray) -> None:
        """Which rows count as documents (the owner's tombstones).

        Raises:
            ValueError: the mask does not have one entry per row.
        """
        alive = np.asarray(alive, dtype=bool)
        if alive.shape != (self._rows,):
            msg = f"alive mask has {alive.shape[0]} rows, the sparse store {self._rows}"
            raise ValueError(msg)
        if self._df is not None:  # update the frequencies from the rows that changed state only
            flipped = np.flatnonzero(alive != self.alive)
            if len(flipped):
                self._df += self._column_counts(flipped, np.where(alive[flipped], 1.0, -1.0))
        self.alive = alive.copy()

    def _column_counts(self, rows: np.ndarray, signs: np.ndarray) -> np.ndarray:
        """Per column, the sum of ``signs`` over the ``rows`` (ascending) that hold an entry there."""
        counts = np.zeros(self._width, dtype=np.float64)
        starts = np.fromiter((s.start for s in self._segments), dtype=np.int64, count=len(self._segments))
        owner = np.searchsorted(starts, rows, side="right") - 1
        for index in np.unique(owner):
            segment = self._segments[index]
            picked = owner == index
            block = segment.csr[rows[picked] - segment.start]
            entry_rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
            counts[: block.shape[1]] += np.bincount(
                block.indices, weights=signs[picked][entry_rows], minlength=block.shape[1]
            )[: block.shape[1]]
        return counts

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only ``rows``, in that order."""
        self.restore(sp.csr_matrix(self.matrix()[rows]), self.alive[rows])

    def keep_columns(self, keep: np.ndarray) -> None:
        """Keep only the columns where ``keep`` is true, renumbered in order; entries elsewhere go."""
        matrix = self.matrix()
        new_column = np.cumsum(keep) - 1
        kept = keep[matrix.indices]
        rows_of_entries = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        indptr = np.zeros(matrix.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows_of_entries[kept], minlength=matrix.shape[0]), out=indptr[1:])
        self._width = max(int(keep.sum()), 1)
        reduced = sp.csr_matrix(
            (matrix.data[kept], new_column[matrix.indices[kept]].astype(np.int64), indptr),
            shape=(matrix.shape[0], self._width),
        )
        self.restore(reduced, self.alive)

    def restore(self, matrix: sp.csr_matrix, alive: np.ndarray | None = None) -> None:
        """Replace the rows with ``matrix`` (all alive unless ``alive`` says otherwise), one segment."""
        matrix = sp.csr_matrix(matrix)
        self._segments = [_Segment(0, matrix)] if matrix.shape[0] else []
        self._rows = matrix.shape[0]
        self.alive = np.ones(self._rows, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
        self._csr = None
        self._df = None
        self.epoch = new_epoch()

    # ------------------------------------------------------------------ reading
    def matrix(self) -> sp.csr_matrix:
        """All rows as one CSR matrix ``(n_rows, width)`` (dead rows included)."""
        if self._csr is None:
            self._csr = _stack([s.csr for s in self._segments], self._width)
        return self._csr

    def inverted(self) -> sp.csc_matrix:
        """All rows as one CSC matrix: one posting list (rows, sorted) per column.

        Built on each call; search reads the segments' own inverted indexes (:meth:`postings`).
        """
        csc = self.matrix().tocsc()
        csc.sort_indices()
        return csc

    def postings(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries of ``columns`` (distinct, inside the width): ``(rows, which, values)``.

        ``which[e]`` is the position in ``columns`` of entry ``e``'s column. Entries come segment by
        segment, and inside one segment column by column, rows ascending.
        """
        columns = np.asarray(columns, dtype=np.int64)
        rows, which, values = [], [], []
        for segment in self._segments:
            inside = np.flatnonzero(columns < segment.csr.shape[1])
            if not len(inside):
                continue
            sub = segment.inverted()[:, columns[inside]]
            rows.append(sub.indices.astype(np.int64) + segment.start)
            which.append(inside[np.repeat(np.arange(len(inside)), np.diff(sub.indptr))])
            values.append(sub.data)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(rows), np.concatenate(which), np.concatenate(values)

    def scores(self, query_weights: Mapping[int, float]) -> np.ndarray:
        """``Σ_t w_q,t · x_row,t`` for every row (dead rows too; the owner masks them), float64.

        Through each segment's posting lists of the query's columns
        (:func:`m3_integrations.scoring.lexical_scores`).
        """
        out = np.zeros(self._rows, dtype=np.float64)
        for segment in self._segments:
            out[segment.start : segment.start + segment.rows] = scoring.lexical_scores(
                query_weights, segment.inverted(), dtype=np.float64
            )
        return out

    def document_frequency(self) -> np.ndarray:
        """Per column, how many live rows hold an entry (float64; kept up to date on appends)."""
        if self._df is None:
            df = np.zeros(self._width, dtype=np.float64)
            for segment in self._segments:
                csr = segment.csr
                rows_of_entries = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
                alive = self.alive[segment.start : segment.start + segment.rows]
                df[: csr.shape[1]] += np.bincount(
                    csr.indices, weights=alive[rows_of_entries].astype(np.float64), minlength=csr.shape[1]
                )[: csr.shape[1]]
            self._df = df
        return self._df

    def coverage(self, columns: np.ndarray, n_terms: int) -> float:
        """The share of a query's ``n_terms`` distinct terms found in a live row (0 without terms).

        ``columns`` are the known terms' columns; terms outside the store have none.
        """
        if n_terms == 0 or self._rows == 0:
            return 0.0
        columns = np.asarray(columns, dtype=np.int64)
        columns = columns[(columns >= 0) & (columns < self._width)]
        return float(np.count_nonzero(self.document_frequency()[columns] > 0) / n_terms)

    def memory_bytes(self) -> int:
        """Bytes of the segments' CSR matrices and their CSC copies (each copy counted as its CSR's size)."""
        return sum(
            int(s.csr.data.nbytes + s.csr.indices.nbytes + s.csr.indptr.nbytes) * 2 for s in self._segments
        )

    def to_arrays(self, prefix: str, first_row: int = 0) -> dict[str, np.ndarray]:
        """``{prefix}_data``, ``{prefix}_indices``, ``{prefix}_indptr`` (float32, int64, int64).

        Of the rows from ``first_row`` on (an incremental save).
        """
        matrix = self.matrix()
        if first_row:
            matrix = sp.csr_matrix(matrix[first_row:])
        return {
            f"{prefix}_data": matrix.data.astype(np.float32, copy=False),
            f"{prefix}_indices": matrix.indices.astype(np.int64),
            f"{prefix}_indptr": matrix.indptr.astype(np.int64),
        }


def _stack(matrices: list[sp.csr_matrix], width: int) -> sp.csr_matrix:
    """CSR matrices (of at most ``width`` columns) one under the other, as one ``(Σ rows, width)`` CSR."""
    if not matrices:
        return sp.csr_matrix((0, width), dtype=np.float32)
    widened = [sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width)) for m in matrices]
    return sp.csr_matrix(sp.vstack(widened, format="csr"))
