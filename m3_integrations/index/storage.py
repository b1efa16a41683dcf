"""The index's rows: the document table and one store per representation.

Rows are in insertion order; a deleted or replaced document leaves a tombstone (its row stays, marked
dead) until a compaction keeps only the live rows, in order. Every store offers the same small interface,
which another storage (memory-mapped segments, say) can implement again:

- ``prepare(...)``: check and convert new rows, before anything is stored (so a refused add stores nothing);
- ``append(prepared)``; ``keep_rows(rows)`` (compaction); ``memory_bytes()``;
- ``to_arrays()`` / ``restore(...)``: plain numpy arrays for persistence.

The stores: :class:`DocumentTable` (ids, texts, metadata, tombstones, the id → row map and the metadata
value indexes), :class:`DenseStore`, :class:`SparseStore` (for M3's lexical weights here, and under
:class:`~m3_integrations.bm25.BM25`'s term frequencies) and :class:`ColbertStore`. None of them locks:
:class:`~m3_integrations.M3Index` calls them under its lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from m3_integrations import scoring
from m3_integrations.index.filter_index import KeyIndex
from m3_integrations.index.row_parts import RowParts, score_by_part
from m3_integrations.index.sparse_store import SparseStore, new_epoch

__all__ = ["ColbertStore", "DenseStore", "DocumentTable", "PreparedColbert", "SparseStore", "new_epoch"]


class DocumentTable:
    """Ids, texts and metadata per row, which rows are alive, and where each live id is.

    Example:
        >>> table = DocumentTable()
        >>> table.append(["a", "b"], ["first", "second"], [{}, {}])
        0
        >>> table.append(["a"], ["first, again"], [{}])  # replaces "a": its old row is a tombstone
        2
        >>> table.live_ids(), table.dead_rows
        (['b', 'a'], 1)
    """

    def __init__(self) -> None:
        self.restore([], [], [])

    def restore(
        self,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        alive: np.ndarray | None = None,
    ) -> None:
        """Replace the table with these rows, all alive unless ``alive`` says otherwise (live ids unique)."""
        self.ids, self.texts, self.metadatas = ids, texts, metadatas
        self.alive = np.ones(len(ids), dtype=bool) if alive is None else np.asarray(alive, dtype=bool).copy()
        self.row_of = {ids[row]: int(row) for row in np.flatnonzero(self.alive)}
        self.epoch = new_epoch()
        # Per metadata key, the rows by value (dict filters); rows are only appended until a compaction.
        self.key_indexes: dict[str, KeyIndex] = {}

    def __len__(self) -> int:
        return len(self.row_of)

    @property
    def n_rows(self) -> int:
        """Rows, tombstones included."""
        return len(self.alive)

    @property
    def dead_rows(self) -> int:
        """Rows of deleted or replaced documents, not yet compacted away."""
        return len(self.alive) - len(self.row_of)

    def live_ids(self) -> list[str]:
        """Ids of the live rows, in insertion order."""
        return [self.ids[row] for row in np.flatnonzero(self.alive)]

    def append(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> int:
        """Add rows at the end (an id already stored tombstones its old row); returns the first new row."""
        replaced = [self.row_of[doc_id] for doc_id in ids if doc_id in self.row_of]
        if replaced:
            self.alive[replaced] = False
        start = len(self.alive)
        self.ids.extend(ids)
        self.texts.extend(texts)
        self.metadatas.extend(metadatas)
        for offset, doc_id in enumerate(ids):
            self.row_of[doc_id] = start + offset
        self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
        return start

    def rows_of(self, ids: Sequence[str]) -> list[int]:
        """The rows of live ids, in order.

        Raises:
            KeyError: an id is not stored (the message names it).
        """
        rows = []
        for doc_id in ids:
            row = self.row_of.get(doc_id)
            if row is None:
                msg = f"no document with id {doc_id!r} in the index"
                raise KeyError(msg)
            rows.append(row)
        return rows

    def delete(self, ids: Sequence[str]) -> None:
        """Tombstone the rows of ``ids``; all or nothing (``KeyError`` naming an unknown id)."""
        rows = self.rows_of(ids)
        for doc_id in ids:
            self.row_of.pop(doc_id, None)
        self.alive[rows] = False

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only ``rows`` (live ones, in order), renumbered from 0."""
        self.restore(
            [self.ids[r] for r in rows], [self.texts[r] for r in rows], [self.metadatas[r] for r in rows]
        )


def _append_rows(buffer: np.ndarray, rows: np.ndarray, used: int) -> np.ndarray:
    """Write ``rows`` at ``buffer[used:]``, growing the buffer geometrically (amortised O(1) appends)."""
    need = used + len(rows)
    if need > len(buffer):
        grown = np.empty((max(need, int(len(buffer) * 1.5) + 16), *buffer.shape[1:]), dtype=buffer.dtype)
        grown[:used] = buffer[:used]
        buffer = grown
    buffer[used:need] = rows
    return buffer


def _reserved(buffer: np.ndarray, used: int, size: int) -> np.ndarray:
    """``buffer`` with room for ``size`` rows (its first ``used`` rows kept)."""
    if size <= len(buffer):
        return buffer
    grown = np.empty((size, *buffer.shape[1:]), dtype=buffer.dtype)
    grown[:used] = buffer[:used]
    return grown


class DenseStore:
    """One ``(n, d)`` float32 (or float16) matrix, one row per document, with room to grow.

    Example:
        >>> store = DenseStore(2, "float32")
        >>> store.append(store.prepare(np.eye(2, dtype=np.float32), 2))
        >>> store.scores(np.array([1.0, 0.0])).tolist()
        [1.0, 0.0]
    """

    def __init__(self, dim: int, dtype: str) -> None:
        self.dim, self.dtype = dim, np.dtype(dtype)
        self.restore(np.zeros((0, dim), dtype=self.dtype))

    def restore(self, vectors: np.ndarray) -> None:
        """Replace the store with ``vectors`` (one row per document)."""
        self._buffer = vectors
        self._rows = len(vectors)
        self.epoch = new_epoch()

    @property
    def vectors(self) -> np.ndarray:
        """The stored ``(n, d)`` vectors (a view)."""
        return self._buffer[: self._rows]

    def prepare(self, vectors: np.ndarray | None, n_new: int) -> np.ndarray:
        """New rows in the stored dtype.

        Raises:
            ValueError: ``vectors`` is missing or not of shape ``(n_new, d)``.
        """
        if vectors is None or vectors.shape != (n_new, self.dim):
            shape = None if vectors is None else vectors.shape
            msg = f"dense vectors must have shape ({n_new}, {self.dim}), got {shape}"
            raise ValueError(msg)
        return vectors.astype(self.dtype)

    def append(self, prepared: np.ndarray) -> None:
        """Add prepared rows at the end."""
        self._buffer = _append_rows(self._buffer, prepared, self._rows)
        self._rows += len(prepared)

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` more rows without copying on the way."""
        self._buffer = _reserved(self._buffer, self._rows, self._rows + rows)

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only ``rows``, in order."""
        self.restore(self._buffer[rows].copy())

    def scores(
        self,
        query: np.ndarray,
        rows: np.ndarray | None = None,
        *,
        exact: bool = True,
        workspace: scoring.StagingBuffer | None = None,
    ) -> np.ndarray:
        """The dense score of every row (or of ``rows``); ``exact=False`` allows float16 products."""
        vectors = self.vectors if rows is None else self._buffer[rows]
        return scoring.dense_scores_stored(query, vectors, workspace=workspace, exact=exact)

    def memory_bytes(self) -> int:
        """Bytes of the stored rows."""
        return int(self.vectors.nbytes)

    def to_arrays(self, first_row: int = 0) -> dict[str, np.ndarray]:
        """``{"dense": (n, d)}`` for persistence (the rows from ``first_row`` on)."""
        return {"dense": self.vectors[first_row:]}


class PreparedColbert(NamedTuple):
    """New documents' ColBERT vectors, quantised and concatenated, with each document's length."""

    vectors: np.ndarray
    scales: np.ndarray
    lengths: np.ndarray


class ColbertStore:
    """Every token vector of every document back to back, float16 (or int8 + scale).

    A document's vectors are rows ``start : start + length``; ``int8`` vectors carry one float32 scale
    each (:func:`m3_integrations.scoring.quantize_vectors`), float16 ones store no scale. The rows are a
    :class:`~m3_integrations.index.row_parts.RowParts`: a loaded index may leave the saved ones
    memory-mapped in its folder (``M3Index.load(..., mmap=True)``), the added ones are in memory.

    Example:
        >>> store = ColbertStore(2, "float16")
        >>> store.append(store.prepare([np.eye(2, dtype=np.float32), np.ones((1, 2), dtype=np.float32)], 2))
        >>> store.scores(np.eye(2, dtype=np.float32), np.array([0, 1])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, dim: int, dtype: str) -> None:
        self.dim, self.dtype = dim, dtype
        self.restore(
            np.zeros((0, dim), dtype=np.float16 if dtype == "float16" else np.int8),
            np.zeros(0, dtype=np.float32),
            np.zeros(0, dtype=np.int64),
        )

    def restore(
        self,
        vectors: np.ndarray | Sequence[np.ndarray],
        scales: np.ndarray | Sequence[np.ndarray] | None,
        lengths: np.ndarray,
    ) -> None:
        """Replace the store: ``vectors`` of all documents back to back, ``lengths`` per document.

        ``vectors`` (and an int8 store's ``scales``) may be a list of parts, one per saved segment, each
        holding whole documents: they are kept as they are (mapped parts stay mapped).
        """
        vector_dtype = np.dtype(np.float16 if self.dtype == "float16" else np.int8)
        self._vectors = RowParts.from_parts(_parts(vectors), vector_dtype, (self.dim,))
        self._scales = RowParts.from_parts(
            _parts(scales) if self.dtype == "int8" and scales is not None else [],
            np.dtype(np.float32),
            (),
        )
        self._lengths = lengths.astype(np.int64, copy=False)
        self._starts = np.cumsum(self._lengths) - self._lengths
        self._max_norm: float | None = None
        self.epoch = new_epoch()

    @property
    def n_vectors(self) -> int:
        """How many vectors are stored (tombstoned documents' included)."""
        return len(self._vectors)

    def prepare(self, vectors: Sequence[np.ndarray] | None, n_new: int) -> PreparedColbert:
        """New documents' vectors, checked, concatenated and quantised.

        Raises:
            ValueError: not one array per document, or arrays of another width.
        """
        if vectors is None or len(vectors) != n_new:
            msg = "ColBERT vectors are required (one array per document) with store_colbert=True"
            raise ValueError(msg)
        lengths = np.asarray([len(v) for v in vectors], dtype=np.int64)
        for v in vectors:
            if len(v) and (np.ndim(v) != 2 or v.shape[1] != self.dim):
                msg = f"ColBERT vectors must have {self.dim} columns, got shape {np.shape(v)}"
                raise ValueError(msg)
        flat = (
            np.concatenate([np.asarray(v, dtype=np.float32) for v in vectors if len(v)])
            if lengths.sum()
            else np.zeros((0, self.dim), dtype=np.float32)
        )
        quantized, scales = scoring.quantize_vectors(flat, self.dtype)
        return PreparedColbert(quantized, scales, lengths)

    def append(self, prepared: PreparedColbert) -> None:
        """Add prepared documents at the end."""
        used = len(self._vectors)
        self._vectors.append(prepared.vectors)
        if self.dtype == "int8":  # float16 rows need no scale: store none
            self._scales.append(prepared.scales)
        starts = used + np.cumsum(prepared.lengths) - prepared.lengths
        self._starts = np.concatenate([self._starts, starts.astype(np.int64)])
        self._lengths = np.concatenate([self._lengths, prepared.lengths])
        self._max_norm = None

    def reserve(self, vectors: int) -> None:
        """Room for ``vectors`` more vectors without copying on the way."""
        self._vectors.reserve(vectors)
        if self.dtype == "int8":
            self._scales.reserve(vectors)

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only the documents ``rows``, in order, their vectors back to back again (in memory)."""
        lengths = self._lengths[rows]
        keep = _vector_rows(self._starts[rows], lengths)
        scales = self._scales.take(keep) if self.dtype == "int8" else np.zeros(0, dtype=np.float32)
        self.restore(self._vectors.take(keep), scales, lengths.copy())

    def scores(
        self, query: np.ndarray, rows: np.ndarray, *, workspace: scoring.StagingBuffer | None = None
    ) -> np.ndarray:
        """MaxSim of ``query`` with the documents ``rows`` (float32)."""
        int8 = self.dtype == "int8"
        columns = [self._vectors, self._scales] if int8 else [self._vectors]

        def score(arrays: list[np.ndarray], starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            return scoring.colbert_scores_stored(
                query, arrays[0], starts, lengths, scales=arrays[1] if int8 else None, workspace=workspace
            )

        return score_by_part(columns, self._starts[rows], self._lengths[rows], score)

    def max_norm(self) -> float:
        """The largest norm of a stored vector (cached until the store changes)."""
        if self._max_norm is None:
            largest = 0.0
            step = 65_536
            for begin in range(0, self.n_vectors, step):
                end = min(begin + step, self.n_vectors)
                norms = np.linalg.norm(self._vectors.slice(begin, end).astype(np.float32), axis=1)
                if self.dtype == "int8":
                    norms *= self._scales.slice(begin, end)
                largest = max(largest, float(norms.max(initial=0.0)))
            self._max_norm = largest
        return self._max_norm

    def memory_bytes(self) -> int:
        """Bytes of the vectors, their scales and the per-document offsets (mapped ones included)."""
        return int(
            self._vectors.nbytes() + self._scales.nbytes() + self._starts.nbytes + self._lengths.nbytes
        )

    def mapped_bytes(self) -> int:
        """Bytes of the vectors and scales left in the index folder's files (memory-mapped)."""
        return self._vectors.mapped_bytes() + self._scales.mapped_bytes()

    def to_arrays(self, first_row: int = 0, *, pieces: bool = False) -> dict[str, Any]:
        """``colbert``, ``colbert_scale`` (empty for float16) and ``colbert_len`` for persistence.

        Of the documents from ``first_row`` on (an incremental save). With ``pieces``, the vectors and
        scales are lists of views of the store's parts (a save streams them: a mapped index is not
        copied into memory to be saved).
        """
        used = self.n_vectors
        first = int(self._starts[first_row]) if first_row < len(self._starts) else used
        return {
            "colbert": self._vectors.saved(first, used, pieces=pieces),
            "colbert_scale": self._scales.saved(first, used, pieces=pieces)
            if self.dtype == "int8"
            else np.zeros(0, dtype=np.float32),
            "colbert_len": self._lengths[first_row:].astype(np.int64, copy=False),
        }


def _parts(arrays: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One array, or a list of parts, as a list of parts."""
    return [arrays] if isinstance(arrays, np.ndarray) else list(arrays)


def _vector_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The vector rows of documents at ``starts`` with ``lengths``, back to back in that order."""
    total = int(lengths.sum())
    return np.repeat(starts, lengths) + (np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths))


def lexical_chunk(weights: Any, n_new: int, vocab_size: int) -> sp.csr_matrix:
    """New documents' M3 lexical weights as one CSR chunk ``(n_new, vocab_size)``.

    ``weights`` is one token-id → weight dict per document, or (bulk loads) one CSR matrix.

    Raises:
        ValueError: weights missing, of the wrong shape or for the wrong number of documents.
    """
    if weights is None or (sp.issparse(weights) and weights.shape != (n_new, vocab_size)):
        msg = "lexical weights are required (one dict per document) with lexical='m3'"
        raise ValueError(msg)
    if sp.issparse(weights):
        return sp.csr_matrix(weights, dtype=np.float32)
    if len(weights) != n_new:
        msg = f"got lexical weights for {len(weights)} documents, expected {n_new}"
        raise ValueError(msg)
    return scoring.lexical_weights_to_csr(weights, vocab_size)
