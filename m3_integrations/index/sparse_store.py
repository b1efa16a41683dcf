"""One sparse store for every lexical representation: M3's lexical weights and BM25's term frequencies.

A :class:`SparseStore` is a ``(n_rows, width)`` float32 matrix, one row per document, appended in chunks
and merged into one CSR matrix when read; its CSC copy, built lazily, is the inverted index (one posting
list per column), so a query touches only the postings of its terms. It knows which rows are alive (the
owner's tombstones) and, from that, each column's live document frequency and a query's term coverage.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from m3_integrations import scoring

__all__ = ["SparseStore"]


class SparseStore:
    """Sparse rows (documents × columns) with a lazily built inverted index and live document frequencies.

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
        self._chunks: list[sp.csr_matrix] = []
        self._csr: sp.csr_matrix | None = None
        self._csc: sp.csc_matrix | None = None
        self._rows = 0
        self.alive = np.zeros(0, dtype=bool)
        self._df: np.ndarray | None = None

    def __len__(self) -> int:
        return self._rows

    @property
    def width(self) -> int:
        """The number of columns."""
        return self._width

    def set_width(self, width: int) -> None:
        """Change the number of columns (rows keep their entries; none may lie beyond the new width)."""
        width = max(int(width), 1)
        if width != self._width:
            self._width = width
            self._invalidate()

    def _invalidate(self) -> None:
        self._csr = self._csc = None
        self._df = None

    # ------------------------------------------------------------------ changing
    def append(self, chunk: sp.spmatrix) -> None:
        """Add rows at the end, alive (a CSR chunk of at most :attr:`width` columns)."""
        chunk = sp.csr_matrix(chunk)
        self._chunks.append(chunk)
        self._rows += chunk.shape[0]
        self.alive = np.concatenate([self.alive, np.ones(chunk.shape[0], dtype=bool)])
        self._invalidate()

    def set_alive(self, alive: np.ndarray) -> None:
        """Which rows count as documents (the owner's tombstones).

        Raises:
            ValueError: the mask does not have one entry per row.
        """
        alive = np.asarray(alive, dtype=bool)
        if alive.shape != (self._rows,):
            msg = f"alive mask has {alive.shape[0]} rows, the sparse store {self._rows}"
            raise ValueError(msg)
        self.alive = alive.copy()
        self._df = None

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
        """Replace the rows with ``matrix`` (all alive unless ``alive`` says otherwise)."""
        self._chunks = [matrix]
        self._rows = matrix.shape[0]
        self.alive = np.ones(self._rows, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
        self._invalidate()

    # ------------------------------------------------------------------ reading
    def matrix(self) -> sp.csr_matrix:
        """All rows as one CSR matrix ``(n_rows, width)`` (dead rows included)."""
        if self._csr is None:
            chunks = [
                sp.csr_matrix((c.data, c.indices, c.indptr), shape=(c.shape[0], self._width))
                for c in self._chunks
            ]
            self._csr = (
                sp.csr_matrix(sp.vstack(chunks, format="csr"))
                if chunks
                else sp.csr_matrix((0, self._width), dtype=np.float32)
            )
            self._chunks = [self._csr]
        return self._csr

    def inverted(self) -> sp.csc_matrix:
        """The CSC copy of :meth:`matrix`: one posting list (rows, sorted) per column."""
        if self._csc is None:
            self._csc = self.matrix().tocsc()
            self._csc.sort_indices()
        return self._csc

    def scores(self, query_weights: Mapping[int, float]) -> np.ndarray:
        """``Σ_t w_q,t · x_row,t`` for every row (dead rows too; the owner masks them), float64.

        Through the posting lists of the query's columns (:func:`m3_integrations.scoring.lexical_scores`).
        """
        return scoring.lexical_scores(query_weights, self.inverted(), dtype=np.float64)

    def document_frequency(self) -> np.ndarray:
        """Per column, how many live rows hold an entry (float64; cached until the rows change)."""
        if self._df is None:
            matrix = self.matrix()
            rows_of_entries = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
            self._df = np.bincount(
                matrix.indices,
                weights=self.alive[rows_of_entries].astype(np.float64),
                minlength=matrix.shape[1],
            )
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
        """Bytes of the CSR matrix and its CSC copy (the copy counted as the same size)."""
        matrix = self.matrix()
        return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) * 2

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """``{prefix}_data``, ``{prefix}_indices``, ``{prefix}_indptr`` (float32, int64, int64)."""
        matrix = self.matrix()
        return {
            f"{prefix}_data": matrix.data.astype(np.float32, copy=False),
            f"{prefix}_indices": matrix.indices.astype(np.int64),
            f"{prefix}_indptr": matrix.indptr.astype(np.int64),
        }
