"""BGE-M3 relevance scores, in numpy, vectorised over many candidates.

Every score formula of the package lives here, once:

- dense: ``<e_q, e_p>`` of L2-normalised CLS vectors;
- lexical: ``Σ_{t in q∩p} w_q,t · w_p,t`` over token-id weights;
- ColBERT MaxSim: ``(1/N_q) Σ_i max_j E_q[i]·E_p[j]``, over exact, float16/int8 or compressed
  vectors (:func:`colbert_scores_lookup`: each product a sum of per-query table rows);
- ``combine_scores``: FlagEmbedding's ``compute_score`` weighting, ``Σ w_i s_i / Σ w_i``;
- the numerics around them: stable top-k selection (:func:`top_k_stable`) and the quantisation of
  stored ColBERT vectors (:func:`quantize_vectors`).

Example:
    >>> import numpy as np
    >>> from m3_integrations.scoring import dense_scores, lexical_score, colbert_score
    >>> float(dense_scores(np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))[0])
    1.0
    >>> lexical_score({7: 0.5, 9: 0.1}, {7: 0.4, 3: 1.0})
    0.2
    >>> q = np.eye(2, dtype=np.float32)
    >>> round(colbert_score(q, np.array([[1.0, 0.0]], dtype=np.float32)), 3)
    0.5
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

# The matrix-product kernels live apart; these names stay importable from here (tests patch _ONEDNN).
from m3_integrations._scoring_kernels import (  # noqa: F401
    _ONEDNN,
    _ONEDNN_MIN_ROWS,
    StagingBuffer,
    _linear,
    _row_bucket,
)

# Passage vectors widened per block: about 4 MB of float32, so a block stays in cache between the
# conversion and the matrix product.
_BLOCK_ELEMENTS = 1 << 20
_NARROW_DIM = 128

__all__ = [
    "StagingBuffer",
    "colbert_score",
    "colbert_scores",
    "colbert_scores_lookup",
    "colbert_scores_stored",
    "combine_scores",
    "dense_scores",
    "dense_scores_stored",
    "lexical_score",
    "lexical_scores",
    "lexical_weights_to_csr",
    "quantize_vectors",
    "top_k_stable",
]


def dense_scores(query: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Inner products of one query ``(d,)`` or many ``(m, d)`` with passages ``(n, d)``.

    Returns ``(n,)`` for one query, ``(m, n)`` for many.
    """
    query = np.asarray(query, dtype=np.float32)
    passages = np.asarray(passages)
    if passages.ndim != 2:
        msg = f"passages must be a 2-D array (n, d), got shape {passages.shape}"
        raise ValueError(msg)
    if query.shape[-1] != passages.shape[1]:
        msg = f"dimension mismatch: query has {query.shape[-1]}, passages have {passages.shape[1]}"
        raise ValueError(msg)
    return (passages.astype(np.float32, copy=False) @ query.T).T


def dense_scores_stored(
    query: np.ndarray,
    passages: np.ndarray,
    *,
    workspace: StagingBuffer | None = None,
    exact: bool = True,
) -> np.ndarray:
    """:func:`dense_scores` of one query against a float32 or float16 ``(n, d)`` store, in torch.

    The index scores in torch only: OpenBLAS worker threads left spinning by a numpy product slow
    down the torch ColBERT stage that follows (2x measured on 2 cores). A float16 store is widened
    block by block in a reused buffer (numpy's float16 cast is scalar) and multiplied in float32, so
    the scores equal ``dense_scores(query, passages.astype(np.float32))`` up to summation order.

    ``exact=False`` on a float16 store uses torch's float16 matrix-vector kernel instead: about 2x
    faster than widening (half the bytes of a float32 scan), with the query and the result rounded to
    float16 (about 5e-5 absolute for unit vectors). The index uses it only to pick candidates, and
    rescores them exactly.

    Example:
        >>> import numpy as np
        >>> dense_scores_stored(np.array([1.0, 0.0]), np.eye(2, dtype=np.float16)).tolist()
        [1.0, 0.0]
    """
    query = np.asarray(query, dtype=np.float32)
    if passages.ndim != 2 or query.shape != (passages.shape[1],):
        msg = f"dimension mismatch: query has shape {query.shape}, passages have shape {passages.shape}"
        raise ValueError(msg)
    n, dim = passages.shape
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    with warnings.catch_warnings():  # a loaded, read-only store is only read here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(np.ascontiguousarray(passages))
    query_t = torch.from_numpy(np.ascontiguousarray(query))
    if source.dtype == torch.float32:
        return _linear(query_t[None], source)[0].numpy()
    if not exact and source.dtype == torch.float16:
        return torch.mv(source, query_t.half()).float().numpy()
    out = torch.empty(n, dtype=torch.float32)
    block = max(1, _BLOCK_ELEMENTS // dim)
    buffer = (workspace or StagingBuffer()).get(min(block, n), dim)
    for begin in range(0, n, block):
        end = min(n, begin + block)
        staged = buffer[: end - begin]
        staged.copy_(source[begin:end])
        out[begin:end] = _linear(query_t[None], staged)[0]
    return out.numpy()


def lexical_score(query_weights: Mapping[int, float], passage_weights: Mapping[int, float]) -> float:
    """Lexical matching score of two token-id → weight maps (sum over shared ids of the products)."""
    if len(query_weights) > len(passage_weights):
        query_weights, passage_weights = passage_weights, query_weights
    total = 0.0
    for token_id, weight in query_weights.items():
        other = passage_weights.get(token_id)
        if other is not None:
            total += float(weight) * float(other)
    return total


def lexical_weights_to_csr(
    lexical_weights: Sequence[Mapping[int, float]], num_columns: int | None = None
) -> sp.csr_matrix:
    """Stack token-id → weight maps into a float32 CSR matrix ``(n, vocab)``."""
    indptr = np.zeros(len(lexical_weights) + 1, dtype=np.int64)
    for i, weights in enumerate(lexical_weights):
        indptr[i + 1] = indptr[i] + len(weights)
    indices = np.empty(int(indptr[-1]), dtype=np.int64)
    data = np.empty(int(indptr[-1]), dtype=np.float32)
    for i, weights in enumerate(lexical_weights):
        if weights:
            indices[indptr[i] : indptr[i + 1]] = np.fromiter(
                weights.keys(), dtype=np.int64, count=len(weights)
            )
            data[indptr[i] : indptr[i + 1]] = np.fromiter(
                weights.values(), dtype=np.float32, count=len(weights)
            )
    max_index = int(indices.max()) + 1 if indices.size else 1
    if num_columns is None:
        num_columns = max_index
    elif max_index > num_columns:
        msg = f"token id {max_index - 1} is outside the vocabulary of {num_columns} ids"
        raise ValueError(msg)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(len(lexical_weights), num_columns))
    matrix.sort_indices()
    return matrix


def lexical_scores(
    query_weights: Mapping[int, float],
    passage_weights: Sequence[Mapping[int, float]] | sp.spmatrix,
    *,
    dtype: np.dtype[Any] | type = np.float32,
) -> np.ndarray:
    """Lexical matching scores of one query against many passages: dicts, or a sparse ``(n, vocab)`` matrix.

    With a matrix, only the columns of the query's tokens are read: a CSC matrix (an inverted index)
    gives them as posting lists, so the cost follows the postings of the query's tokens, not the corpus.
    The sums are taken in float64 and returned as ``dtype``. Token ids outside the matrix's columns
    match nothing.

    Example:
        >>> import scipy.sparse as sp
        >>> inverted = sp.csc_matrix(np.array([[0.5, 0.0], [0.0, 2.0]], dtype=np.float32))
        >>> lexical_scores({0: 2.0, 7: 1.0}, inverted).tolist()
        [1.0, 0.0]
    """
    if sp.issparse(passage_weights):
        matrix = (
            passage_weights if passage_weights.format in ("csr", "csc") else sp.csr_matrix(passage_weights)
        )
        n_rows, n_cols = matrix.shape
        known = [(t, w) for t, w in query_weights.items() if 0 <= t < n_cols]
        if not known or n_rows == 0:
            return np.zeros(n_rows, dtype=dtype)
        ids = np.fromiter((t for t, _ in known), dtype=np.int64, count=len(known))
        vals = np.fromiter((w for _, w in known), dtype=np.float64, count=len(known))
        return np.asarray(matrix[:, ids] @ vals, dtype=np.float64).ravel().astype(dtype, copy=False)
    return np.asarray([lexical_score(query_weights, p) for p in passage_weights], dtype=dtype)


def top_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, best first; equal values keep index (insertion) order.

    Example:
        >>> top_k_stable(np.array([0.2, 0.9, 0.2, 0.5]), 3).tolist()
        [1, 3, 0]
    """
    values = np.asarray(values)
    n = len(values)
    if k >= n:
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    threshold = values[part].min()
    selected = np.flatnonzero(values >= threshold)
    return selected[np.argsort(-values[selected], kind="stable")][:k]


def quantize_vectors(vectors: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors as stored: ``float16`` (scale 1), or symmetric ``int8`` with one scale per vector.

    int8 maps each vector's largest absolute value to 127; ``row * scale`` is the vector again, up to
    the rounding (a vector of zeros gets scale 1).

    Example:
        >>> codes, scale = quantize_vectors(np.array([[0.5, -1.0]], dtype=np.float32), "int8")
        >>> codes.tolist(), [round(float(s), 6) for s in scale]
        ([[64, -127]], [0.007874])
    """
    if dtype == "float16":
        return vectors.astype(np.float16), np.ones(len(vectors), dtype=np.float32)
    if dtype != "int8":
        msg = f"vectors are stored as 'float16' or 'int8', not {dtype!r}"
        raise ValueError(msg)
    scale = np.abs(vectors).max(axis=1) / 127.0 if len(vectors) else np.zeros(0, dtype=np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale


def colbert_score(query_vecs: np.ndarray, passage_vecs: np.ndarray) -> float:
    """ColBERT MaxSim of one query ``(N_q, d)`` and one passage ``(N_p, d)``."""
    if len(query_vecs) == 0 or len(passage_vecs) == 0:
        return 0.0
    sim = np.asarray(query_vecs, dtype=np.float32) @ np.asarray(passage_vecs, dtype=np.float32).T
    return float(sim.max(axis=1).sum() / len(query_vecs))


def colbert_scores(
    query_vecs: np.ndarray,
    passage_vecs: Sequence[np.ndarray] | np.ndarray,
    offsets: np.ndarray | None = None,
    *,
    scales: np.ndarray | None = None,
) -> np.ndarray:
    """ColBERT MaxSim of one query against many passages, in one matrix product.

    Args:
        query_vecs: ``(N_q, d)`` query token vectors.
        passage_vecs: a list of ``(N_p, d)`` arrays, or one contiguous ``(T, d)`` array with ``offsets``.
        offsets: ``(n + 1,)`` row offsets into the contiguous array (passage ``i`` is rows
            ``offsets[i]:offsets[i+1]``). Required with a contiguous array.
        scales: optional per-row scale for int8-quantised rows (``row * scale`` is the vector).

    Returns:
        ``(n,)`` float32 scores; a passage without vectors scores 0.
    """
    query_vecs = np.asarray(query_vecs, dtype=np.float32)
    if offsets is None:
        if isinstance(passage_vecs, np.ndarray) and passage_vecs.ndim == 2:
            msg = "offsets are required with a contiguous (T, d) array of passage vectors"
            raise ValueError(msg)
        lengths = np.asarray([len(p) for p in passage_vecs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = (
            np.concatenate([np.asarray(p, dtype=np.float32) for p in passage_vecs if len(p)])
            if lengths.sum()
            else np.zeros((0, query_vecs.shape[-1]), dtype=np.float32)
        )
    else:
        flat = np.asarray(passage_vecs)
        offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.float32)
    if n == 0 or len(query_vecs) == 0 or flat.shape[0] == 0:
        return out
    sim = query_vecs @ flat.astype(np.float32, copy=False).T  # (N_q, T)
    if scales is not None:
        sim *= np.asarray(scales, dtype=np.float32)[None, :]
    lengths = np.diff(offsets)
    nonempty = lengths > 0
    # reduceat needs strictly valid starts; empty segments would return a neighbour's value.
    starts = offsets[:-1][nonempty]
    maxes = np.maximum.reduceat(sim, starts, axis=1)  # (N_q, n_nonempty)
    out[nonempty] = maxes.sum(axis=0) / len(query_vecs)
    return out


def colbert_scores_stored(
    query_vecs: np.ndarray,
    store: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    *,
    scales: np.ndarray | None = None,
    workspace: StagingBuffer | None = None,
) -> np.ndarray:
    """ColBERT MaxSim of one query against passages kept as row ranges of one ``(T, d)`` store.

    The same formula as :func:`colbert_scores`, computed block by block: the passages' rows are copied
    into a float32 buffer of about 4 MB (torch widens float16 and int8 with SIMD; numpy's float16 cast
    is scalar and took most of the time), multiplied with the query in one product per block, and
    reduced by a per-passage max. Nothing proportional to the candidates' total size is allocated.

    Args:
        query_vecs: ``(N_q, d)`` query token vectors.
        store: ``(T, d)`` float16, int8 or float32 passage vectors.
        starts: first row in ``store`` of each passage.
        lengths: number of rows of each passage (0 scores 0).
        scales: per-row scale of an int8 store (``row * scale`` is the vector).
        workspace: a buffer reused across calls.

    Returns:
        ``(n,)`` float32 scores.

    Example:
        >>> import numpy as np
        >>> store = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float16)
        >>> colbert_scores_stored(np.eye(2), store, np.array([0, 2]), np.array([2, 1])).tolist()
        [1.0, 0.5]
    """
    query = np.ascontiguousarray(query_vecs, dtype=np.float32)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(starts)
    out = np.zeros(n, dtype=np.float32)
    if n == 0 or len(query) == 0 or int(lengths.sum()) == 0:
        return out
    if store.ndim != 2 or query.shape[1] != store.shape[1]:
        msg = f"dimension mismatch: query has {query.shape[1]}, stored vectors have shape {store.shape}"
        raise ValueError(msg)
    dim = store.shape[1]
    block = max(_BLOCK_ELEMENTS // dim, int(lengths.max()))
    workspace = workspace or StagingBuffer()
    widened = workspace.get(block, dim)
    gathered = workspace.get_numpy(block, dim, store.dtype)
    with warnings.catch_warnings():  # a loaded, read-only store is only read here
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(store)
    query_t = torch.from_numpy(query)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    # Passages stored back to back in this order (an exhaustive search without tombstones) need no
    # gather; checked per passage, not per vector (630k vectors cost ~2 ms to enumerate).
    nonempty_starts = starts[lengths > 0]
    in_order = bool(np.all(nonempty_starts[1:] == nonempty_starts[:-1] + lengths[lengths > 0][:-1]))
    # Per passage, the shift from its position in the blocks to its rows in the store.
    shift = starts - offsets[:-1]
    scale_array = None if scales is None else np.asarray(scales, dtype=np.float32)
    i = 0
    while i < n:
        # Passages i..j-1 fill this block (a passage is never split across blocks).
        j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + block, side="right")) - 1)
        begin, end = int(offsets[i]), int(offsets[j])
        size = end - begin
        if size:
            rows = None
            if in_order:
                first = begin + int(shift[i:j][lengths[i:j] > 0][0])
                widened[:size].copy_(source[first : first + size])
            else:
                # Store row of every vector of passages i..j-1, in passage order: one vectorised gather.
                rows = np.repeat(shift[i:j], lengths[i:j]) + np.arange(begin, end)
                torch.index_select(source, 0, torch.from_numpy(rows), out=torch.from_numpy(gathered[:size]))
                widened[:size].copy_(torch.from_numpy(gathered[:size]))
            # torch.mm, not oneDNN: block sizes vary per query and oneDNN compiles a kernel per shape.
            # Layout by width (measured): narrow vectors multiply and reduce faster as (N_q, size).
            axis = 1 if dim < _NARROW_DIM else 0
            if axis:
                sim = torch.mm(query_t, widened[:size].T).numpy()  # (N_q, size)
            else:
                sim = torch.mm(widened[:size], query_t.T).numpy()  # (size, N_q)
            if scale_array is not None:
                if rows is None:
                    rows = np.repeat(shift[i:j], lengths[i:j]) + np.arange(begin, end)
                row_scales = scale_array[rows]
                sim *= row_scales[None, :] if axis else row_scales[:, None]
            nonempty = lengths[i:j] > 0
            # reduceat needs valid starts; empty passages would take a neighbour's value.
            block_starts = offsets[i:j][nonempty] - begin
            maxes = np.maximum.reduceat(sim, block_starts, axis=axis)
            out[i:j][nonempty] = maxes.sum(axis=1 - axis) / len(query)
        i = j
    return out


def colbert_scores_lookup(
    tables: torch.Tensor,
    codes: Sequence[np.ndarray],
    code_offsets: Sequence[np.ndarray],
    starts: np.ndarray,
    lengths: np.ndarray,
    *,
    block_rows: int = 65_536,
) -> np.ndarray:
    """ColBERT MaxSim against compressed vectors whose products with the query are sums of table rows.

    A compressed vector ``j`` is a few small integer codes; its product with query token ``i`` is
    ``Σ_c tables[codes_c[j] + code_offsets_c, i]`` (product quantisation and residual codes both have
    this form; :mod:`m3_integrations.index.colbert_codecs` builds the tables once per query). Each
    vector's row of products comes from one ``embedding_bag`` sum, without decoding the vector; the
    MaxSim reduction is :func:`colbert_scores_stored`'s.

    Args:
        tables: ``(R, N_q)`` float32: row ``r`` is one code value's share of the products.
        codes: per code array, ``(T,)`` or ``(T, m)`` unsigned integers, one row per stored vector.
        code_offsets: per code array, ``(m,)`` (or scalar) int64 added to its values to address ``tables``.
        starts: first stored vector of each passage.
        lengths: vectors of each passage (0 scores 0).
        block_rows: vectors gathered per block (bounds the temporary memory).

    Returns:
        ``(n,)`` float32 scores.

    Example:
        >>> import numpy as np, torch
        >>> tables = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])  # 3 code values, 2 query tokens
        >>> codes = [np.array([0, 1, 2], dtype=np.uint8)]
        >>> offsets = [np.zeros(1, dtype=np.int64)]
        >>> colbert_scores_lookup(tables, codes, offsets, np.array([0, 2]), np.array([2, 1])).tolist()
        [1.0, 0.5]
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(starts)
    out = np.zeros(n, dtype=np.float32)
    if n == 0 or tables.shape[1] == 0 or int(lengths.sum()) == 0:
        return out
    code_offsets = [np.asarray(o, dtype=np.int32).reshape(-1) for o in code_offsets]
    widths = [1 if code.ndim == 1 else code.shape[1] for code in codes]
    columns = np.cumsum([0, *widths])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    shift = starts - offsets[:-1]
    block = max(block_rows, int(lengths.max()))
    i = 0
    while i < n:
        j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + block, side="right")) - 1)
        begin, end = int(offsets[i]), int(offsets[j])
        if end > begin:
            rows = np.repeat(shift[i:j], lengths[i:j]) + np.arange(begin, end)
            # One int32 index matrix, filled code array by code array (no int64 copies, no concatenation).
            index = np.empty((end - begin, int(columns[-1])), dtype=np.int32)
            for code, offset, first, last in zip(codes, code_offsets, columns[:-1], columns[1:], strict=True):
                gathered = code[rows].reshape(end - begin, -1)
                np.add(gathered, offset, out=index[:, first:last], casting="unsafe")
            sim = torch.nn.functional.embedding_bag(torch.from_numpy(index), tables, mode="sum").numpy()
            nonempty = lengths[i:j] > 0
            maxes = np.maximum.reduceat(sim, offsets[i:j][nonempty] - begin, axis=0)
            out[i:j][nonempty] = maxes.sum(axis=1) / tables.shape[1]
        i = j
    return out


def combine_scores(
    scores: Mapping[str, np.ndarray | float], weights: Mapping[str, float]
) -> np.ndarray | float:
    """Weighted average ``Σ w_i s_i / Σ w_i`` over the signals named in ``weights`` (FlagEmbedding style)."""
    total_weight = float(sum(weights.values()))
    if total_weight <= 0:
        msg = f"weights must sum to a positive number, got {dict(weights)}"
        raise ValueError(msg)
    combined: np.ndarray | float = 0.0
    for name, weight in weights.items():
        combined = combined + float(weight) * np.asarray(scores[name], dtype=np.float32)
    return combined / total_weight
