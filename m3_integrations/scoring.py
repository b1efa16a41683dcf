"""BGE-M3 relevance scores, in numpy, vectorised over many candidates.

Every score formula of the package lives here, once:

- dense: ``<e_q, e_p>`` of L2-normalised CLS vectors;
- lexical: ``Σ_{t in q∩p} w_q,t · w_p,t`` over token-id weights;
- ColBERT MaxSim: ``(1/N_q) Σ_i max_j E_q[i]·E_p[j]``;
- ``combine_scores``: FlagEmbedding's ``compute_score`` weighting, ``Σ w_i s_i / Σ w_i``.

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

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "colbert_score",
    "colbert_scores",
    "combine_scores",
    "dense_scores",
    "lexical_score",
    "lexical_scores",
    "lexical_weights_to_csr",
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
    query_weights: Mapping[int, float], passage_weights: Sequence[Mapping[int, float]] | sp.spmatrix
) -> np.ndarray:
    """Lexical matching scores of one query against many passages (dicts or a CSR matrix)."""
    if sp.issparse(passage_weights):
        matrix = sp.csr_matrix(passage_weights)
        n_cols = matrix.shape[1]
        ids = np.fromiter((t for t in query_weights if 0 <= t < n_cols), dtype=np.int64)
        if ids.size == 0:
            return np.zeros(matrix.shape[0], dtype=np.float32)
        vals = np.asarray([query_weights[int(t)] for t in ids], dtype=np.float32)
        return np.asarray(matrix[:, ids] @ vals, dtype=np.float32).ravel()
    return np.asarray([lexical_score(query_weights, p) for p in passage_weights], dtype=np.float32)


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
