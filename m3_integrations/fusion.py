"""Fusion of per-signal relevance scores into one ranking score — every fusion formula lives here.

Five methods, all over the same candidate set (the rows scored in the second stage):

- ``weighted`` — FlagEmbedding's ``compute_score`` semantics, ``Σ w_i s_i / Σ w_i`` on raw scores.
  Unbounded signals (BM25) are first divided by their maximum over the candidates, so they live on
  the same ``[0, 1]`` scale as the cosine-like M3 scores; raw BM25 (often 10–30) would drown them.
- ``rrf`` — weighted reciprocal rank fusion, ``Σ w_i / (k + rank_i) / Σ w_i`` with ``k = 60`` and ranks
  starting at 1. Tied scores share the best rank of the tie ("1224" competition ranking), so ties do
  not inject insertion order; a candidate scoring exactly 0 on a lexical signal (no shared term) is
  not retrieved by it and gets no contribution from it.
- ``relative_score`` — min-max normalise every signal over the candidates, then ``Σ w_i n_i / Σ w_i``.
- ``confidence`` — ``relative_score`` with per-query weights ``w_i z_i²``, where ``z_i`` is the signal's
  peak z-score over the candidates, ``(max - mean) / std``: how far its best candidate stands out from
  the rest, a signal-to-noise estimate. Squared by analogy with inverse-variance weights (``1/σ²``);
  in ``benchmarks/fusion_study.py`` the square and the cube tie for the best mean, and the square is
  the milder. A signal whose scores are flat noise (an English-only encoder reading Korean text, say)
  then gives way to one with a clear winner; the same weights fixed per query cannot. The index also
  scales the lexical weight by the query's term coverage, the share of its distinct terms found in
  the corpus, so that a few stray matches of a cross-lingual query do not pass for confidence.
- ``agreement`` — ``confidence`` with each lexical weight also scaled by the agreement between the
  lexical signal's top candidates and the other signals' (:func:`top_agreement`): a lexical signal
  whose best candidates nobody else ranks high is noise for that query and cannot drag it down.

A signal with no evidence for the query — every candidate scores 0, as when no query token is known to
the lexical index (cross-lingual queries) — is dropped and the remaining weights are renormalised
(:func:`effective_weights`). Under ``relative_score`` and ``confidence`` a constant signal carries no
information either and is dropped too. If no signal is left, every fused score is 0.

Example:
    >>> import numpy as np
    >>> from m3_integrations.fusion import fuse
    >>> scores = {"dense": np.array([0.9, 0.5]), "sparse": np.array([0.0, 0.0])}
    >>> fuse(scores, {"dense": 0.4, "sparse": 0.2}, method="weighted").tolist()  # sparse has no evidence
    [0.8999999761581421, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from m3_integrations import scoring

__all__ = [
    "AGREEMENT_DEPTH",
    "FUSION_METHODS",
    "LEXICAL_SIGNALS",
    "PAPER_WEIGHTS",
    "RRF_K",
    "UNBOUNDED_SIGNALS",
    "agreement_fusion",
    "competition_ranks",
    "confidence_fusion",
    "effective_weights",
    "fuse",
    "max_normalize",
    "min_max_normalize",
    "peak_zscore",
    "reciprocal_rank_fusion",
    "relative_score_fusion",
    "top_agreement",
    "weighted_fusion",
]

FUSION_METHODS = ("weighted", "rrf", "relative_score", "confidence", "agreement")
# BGE-M3's weights for (dense, lexical, ColBERT) in FlagEmbedding's compute_score: the paper's setting,
# and the weighted fusion's default for a checkpoint with M3's trained heads.
PAPER_WEIGHTS = (0.4, 0.2, 0.4)
RRF_K = 60
# How many of each signal's best candidates ``agreement`` compares.
AGREEMENT_DEPTH = 10
# Signals whose scores are not bounded by 1 and need rescaling before a weighted sum.
UNBOUNDED_SIGNALS = frozenset({"bm25"})
# Signals where 0 means "no shared term", i.e. the document was not retrieved by that signal.
LEXICAL_SIGNALS = frozenset({"sparse", "bm25"})


def _as_arrays(scores: Mapping[str, np.ndarray | Iterable[float]]) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(values, dtype=np.float32) for name, values in scores.items()}
    lengths = {a.shape for a in arrays.values()}
    if len(lengths) > 1:
        msg = f"every signal needs one score per candidate, got shapes {sorted(lengths)}"
        raise ValueError(msg)
    return arrays


def effective_weights(
    scores: Mapping[str, np.ndarray], weights: Mapping[str, float], *, drop_constant: bool = False
) -> dict[str, float]:
    """The weights of the signals that carry evidence for this query (positive weight, some nonzero score).

    Args:
        scores: signal name → scores over the candidates.
        weights: signal name → non-negative weight; names missing from ``scores`` raise ``KeyError``.
        drop_constant: also drop signals whose scores are all equal (no information for a min-max).

    Returns:
        The kept weights (not renormalised: every fusion divides by their sum).
    """
    kept: dict[str, float] = {}
    for name, weight in weights.items():
        values = np.asarray(scores[name])
        if weight <= 0 or values.size == 0 or not np.any(values):
            continue
        if drop_constant and float(values.max()) == float(values.min()):
            continue
        kept[name] = float(weight)
    return kept


def max_normalize(values: np.ndarray) -> np.ndarray:
    """``values / max(values)`` (unchanged when the maximum is not positive)."""
    values = np.asarray(values, dtype=np.float32)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else values


def min_max_normalize(values: np.ndarray) -> np.ndarray:
    """``(values - min) / (max - min)``, or zeros for a constant array."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def competition_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, highest score first; equal scores share the best rank of their tie (1, 2, 2, 4)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    ranks_sorted = np.arange(1, len(values) + 1, dtype=np.int64)
    if len(values) > 1:
        new_group = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
        ranks_sorted = np.maximum.accumulate(np.where(new_group, ranks_sorted, 0))
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = ranks_sorted
    return ranks


def weighted_fusion(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """FlagEmbedding's weighted average over the signals with evidence; BM25 is max-normalised first."""
    arrays = _as_arrays(scores)
    kept = effective_weights(arrays, weights)
    n = len(next(iter(arrays.values()))) if arrays else 0
    if not kept:
        return np.zeros(n, dtype=np.float32)
    used = {name: max_normalize(arrays[name]) if name in UNBOUNDED_SIGNALS else arrays[name] for name in kept}
    return np.asarray(scoring.combine_scores(used, kept), dtype=np.float32)


def reciprocal_rank_fusion(
    scores: Mapping[str, np.ndarray], weights: Mapping[str, float], *, k: int = RRF_K
) -> np.ndarray:
    """Weighted RRF ``Σ w_i / (k + rank_i) / Σ w_i`` (ranks from 1, ties share the best rank)."""
    arrays = _as_arrays(scores)
    kept = effective_weights(arrays, weights)
    n = len(next(iter(arrays.values()))) if arrays else 0
    fused = np.zeros(n, dtype=np.float64)
    if not kept:
        return fused.astype(np.float32)
    for name, weight in kept.items():
        contribution = weight / (k + competition_ranks(arrays[name]))
        if name in LEXICAL_SIGNALS:
            contribution = np.where(arrays[name] > 0, contribution, 0.0)
        fused += contribution
    return (fused / sum(kept.values())).astype(np.float32)


def relative_score_fusion(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Min-max normalise each signal over the candidates, then the weighted average."""
    arrays = _as_arrays(scores)
    kept = effective_weights(arrays, weights, drop_constant=True)
    n = len(next(iter(arrays.values()))) if arrays else 0
    if not kept:
        return np.zeros(n, dtype=np.float32)
    used = {name: min_max_normalize(arrays[name]) for name in kept}
    return np.asarray(scoring.combine_scores(used, kept), dtype=np.float32)


def peak_zscore(values: np.ndarray) -> float:
    """``(max - mean) / std`` of ``values`` (population std), or 0 for a constant or empty array.

    Example:
        >>> round(peak_zscore(np.array([0.0, 0.0, 0.0, 3.0])), 3)
        1.732
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return 0.0
    spread = float(values.std())
    return float((values.max() - values.mean()) / spread) if spread > 0 else 0.0


def confidence_fusion(
    scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    coverage: Mapping[str, float] | None = None,
) -> np.ndarray:
    """``relative_score`` with each weight scaled per query by the square of the signal's peak z-score.

    ``coverage`` optionally scales a signal's weight further by the share of the query it can see at
    all, in ``[0, 1]``. :class:`~m3_integrations.M3Index` passes the lexical signal's query-term
    coverage (:meth:`~m3_integrations.M3Index.query_term_coverage`): a German query against English
    passages shares only a few names and numbers with them, and those stray matches stand far above
    the candidates that share nothing, so the peak z-score alone would trust the lexical signal most
    exactly where it is noise.

    Example: a flat dense signal and a BM25 signal with one clear match; the weights favour dense.

        >>> import numpy as np
        >>> scores = {"dense": np.array([0.80, 0.81, 0.79, 0.80, 0.81, 0.79]),
        ...           "bm25": np.array([9.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
        >>> weights = {"dense": 0.8, "bm25": 0.2}
        >>> int(relative_score_fusion(scores, weights).argmax())  # dense's top row, by a hair
        1
        >>> int(confidence_fusion(scores, weights).argmax())  # BM25's clear match
        0
    """
    arrays = _as_arrays(scores)
    shares = _checked_coverage(coverage or {})
    unknown = sorted(set(shares) - set(arrays))
    if unknown:
        msg = f"coverage names signals without scores: {', '.join(map(repr, unknown))}"
        raise ValueError(msg)
    kept = effective_weights(arrays, weights, drop_constant=True)
    n = len(next(iter(arrays.values()))) if arrays else 0
    scaled = {
        name: weight * shares.get(name, 1.0) * peak_zscore(arrays[name]) ** 2 for name, weight in kept.items()
    }
    scaled = {name: weight for name, weight in scaled.items() if weight > 0}
    if not scaled:
        return np.zeros(n, dtype=np.float32)
    used = {name: min_max_normalize(arrays[name]) for name in scaled}
    return np.asarray(scoring.combine_scores(used, scaled), dtype=np.float32)


def top_agreement(values: np.ndarray, others: Iterable[np.ndarray], *, depth: int = AGREEMENT_DEPTH) -> float:
    """How far a lexical signal's best candidates are also the other signals' best, in ``(0, 1]``.

    ``(|T ∩ U| + 1) / (|T| + 1)``, where ``T`` is the lexical signal's top ``depth`` candidates (those
    with a score above 0 only: a lexical signal retrieves nothing else) and ``U`` the union of every
    other signal's top ``depth``. Ties are broken by position, as a search breaks them. The ``+ 1``
    keeps a signal that agrees with nobody above 0 (and a signal with no match at 1: it has nothing to
    disagree with; its weight is dropped elsewhere).

    Example:
        >>> round(top_agreement(np.array([3.0, 2.0, 0.0, 0.0]), [np.array([0.9, 0.1, 0.8, 0.2])], depth=2), 3)
        0.667
    """
    if depth <= 0:
        msg = f"depth must be positive, got {depth}"
        raise ValueError(msg)
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:depth]
    top = set(order[values[order] > 0].tolist())
    union: set[int] = set()
    for other in others:
        union.update(np.argsort(-np.asarray(other, dtype=np.float64), kind="stable")[:depth].tolist())
    return (len(top & union) + 1) / (len(top) + 1)


def agreement_fusion(
    scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    coverage: Mapping[str, float] | None = None,
    depth: int = AGREEMENT_DEPTH,
) -> np.ndarray:
    """``confidence`` with each lexical weight also scaled by its :func:`top_agreement` with the others.

    A lexical signal whose best candidates no other signal ranks high (stray matches of a
    cross-lingual query, a query whose words are common in the corpus) loses most of its weight for
    that query; where it agrees with dense or ColBERT on even a few candidates, it keeps most of it.
    Signals other than the lexical ones are weighted as in :func:`confidence_fusion`.

    Example:
        >>> import numpy as np
        >>> scores = {"dense": np.array([0.9, 0.8, 0.1, 0.2]), "bm25": np.array([0.0, 0.0, 5.0, 4.0])}
        >>> int(confidence_fusion(scores, {"dense": 1.0, "bm25": 1.0}).argmax())  # BM25 stands out more
        2
        >>> int(agreement_fusion(scores, {"dense": 1.0, "bm25": 1.0}, depth=2).argmax())  # nobody agrees
        0
    """
    arrays = _as_arrays(scores)
    factors = _checked_coverage(coverage or {})
    for name in arrays:
        if name in LEXICAL_SIGNALS:
            others = [values for other, values in arrays.items() if other not in LEXICAL_SIGNALS]
            if others:
                factors[name] = factors.get(name, 1.0) * top_agreement(arrays[name], others, depth=depth)
    return confidence_fusion(arrays, weights, coverage=factors)


def _checked_coverage(coverage: Mapping[str, float]) -> dict[str, float]:
    shares = {name: float(share) for name, share in coverage.items()}
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:  # also rejects NaN
            msg = f"coverage of {name!r} must be a share in [0, 1], got {share}"
            raise ValueError(msg)
    return shares


def fuse(
    scores: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    method: str = "weighted",
    coverage: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Fuse per-signal scores over one candidate set with ``method`` (see the module docstring).

    Args:
        scores: signal name → ``(n,)`` scores; every name in ``weights`` must be present.
        weights: signal name → non-negative weight.
        method: ``"weighted"``, ``"rrf"``, ``"relative_score"``, ``"confidence"`` or ``"agreement"``.
        coverage: ``confidence`` and ``agreement`` only: signal name → share of the query the signal
            can see, in ``[0, 1]`` (see :func:`confidence_fusion`).

    Returns:
        ``(n,)`` float32 fused scores (higher is better).

    Raises:
        ValueError: unknown method, a negative weight, a coverage outside ``[0, 1]``, for a signal
            without scores, or with another method.
    """
    for name, weight in weights.items():
        if not np.isfinite(weight) or weight < 0:
            msg = f"weight of {name!r} must be a finite non-negative number, got {weight}"
            raise ValueError(msg)
    if coverage is not None and method not in ("confidence", "agreement"):
        msg = f"coverage applies to fusion='agreement' and fusion='confidence' only, not {method!r}"
        raise ValueError(msg)
    if method == "weighted":
        return weighted_fusion(scores, weights)
    if method == "rrf":
        return reciprocal_rank_fusion(scores, weights)
    if method == "relative_score":
        return relative_score_fusion(scores, weights)
    if method == "confidence":
        return confidence_fusion(scores, weights, coverage=coverage)
    if method == "agreement":
        return agreement_fusion(scores, weights, coverage=coverage)
    msg = f"unknown fusion {method!r}; expected one of {', '.join(FUSION_METHODS)}"
    raise ValueError(msg)
