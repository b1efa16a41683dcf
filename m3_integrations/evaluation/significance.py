"""Is a difference between two runs on the same queries larger than the query sample's noise?

A mean nDCG@10 over 43 queries moves by a few hundredths when other queries are drawn, so "A beats B by
0.002" says little. :func:`paired_bootstrap_ci` resamples the queries (with replacement, the same draw
for both runs) and gives a percentile confidence interval for the mean per-query difference; when the
interval holds 0, the sample cannot tell the runs apart.

Example:
    >>> a = [0.9, 0.7, 0.8, 0.6, 1.0]
    >>> b = [0.8, 0.7, 0.6, 0.6, 0.9]
    >>> mean, low, high = paired_bootstrap_ci(a, b, resamples=1000, seed=0)
    >>> round(mean, 3), low >= 0.0, high <= 0.2
    (0.08, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_bootstrap_ci"]


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its paired percentile-bootstrap confidence interval.

    Args:
        a: per-query values of one run (say nDCG@10), in a fixed query order.
        b: the other run's values for the same queries, in the same order.
        confidence: the interval's coverage, in ``(0, 1)``.
        resamples: bootstrap draws of the query set.
        seed: for the draws (the same seed gives the same interval).

    Returns:
        ``(mean difference, lower bound, upper bound)``.

    Raises:
        ValueError: runs of different lengths, no queries, a non-finite value, or bad options.
    """
    first = np.asarray(a, dtype=np.float64).ravel()
    second = np.asarray(b, dtype=np.float64).ravel()
    if first.shape != second.shape:
        msg = f"paired runs need one value per query each, got {first.size} and {second.size}"
        raise ValueError(msg)
    if first.size == 0:
        msg = "paired runs are empty: no query to compare"
        raise ValueError(msg)
    if not (np.isfinite(first).all() and np.isfinite(second).all()):
        msg = "per-query values must be finite numbers"
        raise ValueError(msg)
    if not 0.0 < confidence < 1.0:
        msg = f"confidence must be in (0, 1), got {confidence}"
        raise ValueError(msg)
    if not isinstance(resamples, int) or isinstance(resamples, bool) or resamples <= 0:
        msg = f"resamples must be a positive integer, got {resamples!r}"
        raise ValueError(msg)
    diff = first - second
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    # In blocks, so that many queries times many draws does not build one huge index array.
    step = max(1, 2_000_000 // diff.size)
    for begin in range(0, resamples, step):
        count = min(step, resamples - begin)
        draws = rng.integers(0, diff.size, size=(count, diff.size))
        means[begin : begin + count] = diff[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diff.mean()), float(low), float(high)
