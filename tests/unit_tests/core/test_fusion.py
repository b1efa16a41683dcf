from __future__ import annotations

import numpy as np
import pytest

from m3_integrations.fusion import competition_ranks, effective_weights, fuse, peak_zscore
from tests.common import naive_fuse, naive_min_max_average, naive_peak_z

RNG = np.random.default_rng(0)
SCORES = {
    "dense": RNG.uniform(0.2, 0.9, 12).astype(np.float32),
    "sparse": np.where(RNG.uniform(size=12) > 0.5, RNG.uniform(0, 0.4, 12), 0).astype(np.float32),
    "colbert": RNG.uniform(0.3, 0.95, 12).astype(np.float32),
    "bm25": np.where(RNG.uniform(size=12) > 0.4, RNG.uniform(0, 25, 12), 0).astype(np.float32),
}
WEIGHTS = {"dense": 0.4, "sparse": 0.2, "colbert": 0.4, "bm25": 0.3}
PLAIN_SCORES = {name: [float(v) for v in values] for name, values in SCORES.items()}


def naive_ranks(values: list[float]) -> list[int]:
    return [1 + sum(1 for other in values if other > v) for v in values]


def test_weighted_matches_flagembedding_formula_with_bm25_max_normalised() -> None:
    fused = fuse(SCORES, WEIGHTS, method="weighted")
    bm25_max = max(SCORES["bm25"])
    for i in range(12):
        num = sum(WEIGHTS[s] * float(SCORES[s][i]) for s in ("dense", "sparse", "colbert"))
        num += WEIGHTS["bm25"] * float(SCORES["bm25"][i]) / bm25_max
        assert fused[i] == pytest.approx(num / sum(WEIGHTS.values()), rel=1e-5)


def test_rrf_formula_k60_ranks_from_one_ties_share_rank() -> None:
    scores = {"dense": np.array([0.9, 0.5, 0.5, 0.1]), "sparse": np.array([0.0, 2.0, 0.0, 1.0])}
    fused = fuse(scores, {"dense": 1.0, "sparse": 1.0}, method="rrf")
    expected = [
        1 / 61 / 2,  # dense rank 1; sparse 0 = not retrieved
        (1 / 62 + 1 / 61) / 2,
        1 / 62 / 2,  # tie with row 1 on dense: same rank 2
        (1 / 64 + 1 / 62) / 2,
    ]
    assert fused.tolist() == pytest.approx(expected, rel=1e-6)
    values = [3.0, 1.0, 3.0, 2.0, 1.0]
    assert competition_ranks(np.array(values)).tolist() == naive_ranks(values)


def test_relative_score_is_min_max_then_weighted() -> None:
    fused = fuse(SCORES, WEIGHTS, method="relative_score")
    expected = naive_min_max_average(PLAIN_SCORES, WEIGHTS)
    assert fused.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_confidence_is_min_max_with_weights_scaled_by_squared_peak_z() -> None:
    fused = fuse(SCORES, WEIGHTS, method="confidence")
    scaled = {s: w * naive_peak_z(PLAIN_SCORES[s]) ** 2 for s, w in WEIGHTS.items()}
    assert fused.tolist() == pytest.approx(naive_min_max_average(PLAIN_SCORES, scaled), rel=1e-5, abs=1e-6)
    # Unlike relative_score, the result depends on each signal's shape, not only its order.
    assert not np.allclose(fused, fuse(SCORES, WEIGHTS, method="relative_score"))


def test_confidence_lets_a_peaked_signal_overrule_flat_noise() -> None:
    flat = np.array([0.80, 0.81, 0.79, 0.80, 0.81, 0.79, 0.80, 0.80])  # top row 1 by a hair
    peaked = np.array([12.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0])  # one clear match: row 0
    weights = {"dense": 0.8, "bm25": 0.2}
    scores = {"dense": flat, "bm25": peaked}
    assert int(np.argmax(fuse(scores, weights, method="relative_score"))) == 1
    assert int(np.argmax(fuse(scores, weights, method="confidence"))) == 0
    # Invariant to an affine rescaling of a signal (BM25 scores have no fixed scale).
    rescaled = fuse({"dense": flat, "bm25": 3 * peaked + 2}, weights, method="confidence")
    assert rescaled.tolist() == pytest.approx(fuse(scores, weights, method="confidence").tolist(), abs=1e-6)


@pytest.mark.parametrize("method", ["weighted", "rrf", "relative_score", "confidence"])
def test_constant_signal_is_dropped_or_harmless(method: str) -> None:
    alone = fuse({"dense": SCORES["dense"]}, {"dense": 1.0}, method=method)
    with_constant = fuse(
        {"dense": SCORES["dense"], "colbert": np.full(12, 0.5)}, {"dense": 1.0, "colbert": 1.0}, method=method
    )
    assert np.argsort(-with_constant, kind="stable").tolist() == np.argsort(-alone, kind="stable").tolist()


@pytest.mark.parametrize("method", ["weighted", "rrf", "relative_score", "confidence"])
def test_signal_without_evidence_is_dropped(method: str) -> None:
    dense_only = fuse({"dense": SCORES["dense"]}, {"dense": 0.4}, method=method)
    with_empty = fuse(
        {"dense": SCORES["dense"], "sparse": np.zeros(12), "bm25": np.zeros(12)},
        {"dense": 0.4, "sparse": 0.2, "bm25": 0.5},
        method=method,
    )
    assert with_empty.tolist() == pytest.approx(dense_only.tolist())
    assert effective_weights({"a": np.zeros(3), "b": np.ones(3)}, {"a": 1, "b": 0}) == {}
    assert fuse({"a": np.zeros(3)}, {"a": 1.0}, method=method).tolist() == [0, 0, 0]


def test_bad_fusion_input() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse(SCORES, WEIGHTS, method="max")


@pytest.mark.parametrize("method", ["weighted", "rrf", "relative_score", "confidence"])
def test_bad_weights_and_shapes_are_named(method: str) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        fuse(SCORES, {"dense": -1.0}, method=method)
    with pytest.raises(ValueError, match="non-negative"):
        fuse(SCORES, {"dense": float("nan")}, method=method)
    with pytest.raises(ValueError, match="one score per candidate"):
        fuse({"dense": np.ones(3), "sparse": np.ones(4)}, {"dense": 1.0}, method=method)


def test_peak_zscore_edge_cases() -> None:
    assert peak_zscore(np.array([])) == 0.0
    assert peak_zscore(np.full(5, 0.7)) == 0.0  # constant: no peak
    values = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert peak_zscore(np.array(values)) == pytest.approx(naive_peak_z(values))


def test_confidence_coverage_scales_the_weight_and_zero_drops_the_signal() -> None:
    coverage = {"bm25": 0.25, "sparse": 0.5}
    fused = fuse(SCORES, WEIGHTS, method="confidence", coverage=coverage)
    scaled = {s: w * coverage.get(s, 1.0) * naive_peak_z(PLAIN_SCORES[s]) ** 2 for s, w in WEIGHTS.items()}
    assert fused.tolist() == pytest.approx(naive_min_max_average(PLAIN_SCORES, scaled), rel=1e-5, abs=1e-6)
    assert not np.allclose(fused, fuse(SCORES, WEIGHTS, method="confidence"))
    # No coverage at all: the signal is dropped, as if it had no evidence.
    without_bm25 = {s: v for s, v in SCORES.items() if s != "bm25"}
    dropped = fuse(SCORES, WEIGHTS, method="confidence", coverage={"bm25": 0.0})
    other_weights = {s: w for s, w in WEIGHTS.items() if s != "bm25"}
    assert dropped.tolist() == pytest.approx(fuse(without_bm25, other_weights, method="confidence").tolist())
    full = fuse(SCORES, WEIGHTS, method="confidence", coverage={"bm25": 1.0})
    # Exact on purpose: a coverage of 1 multiplies a weight by 1.0, which changes no bit.
    assert full.tolist() == fuse(SCORES, WEIGHTS, method="confidence").tolist()


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan")])
def test_bad_coverage_is_named(share: float) -> None:
    with pytest.raises(ValueError, match="coverage of 'bm25'"):
        fuse(SCORES, WEIGHTS, method="confidence", coverage={"bm25": share})


def test_coverage_for_a_signal_without_scores_is_named() -> None:
    with pytest.raises(ValueError, match="'typo'"):
        fuse(SCORES, WEIGHTS, method="confidence", coverage={"typo": 0.5})


@pytest.mark.parametrize("method", ["weighted", "rrf", "relative_score"])
def test_coverage_with_another_fusion_is_an_error(method: str) -> None:
    with pytest.raises(ValueError, match="confidence' only"):
        fuse(SCORES, WEIGHTS, method=method, coverage={"bm25": 0.5})


@pytest.mark.parametrize("method", ["weighted", "rrf", "relative_score", "confidence"])
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 7.0, 1e30])
def test_every_fusion_is_invariant_to_a_common_weight_scale(method: str, scale: float) -> None:
    # M3Index divides the weights by the largest one; this is why that changes no ranking or score.
    expected = naive_fuse(PLAIN_SCORES, WEIGHTS, method)
    scaled = fuse(SCORES, {s: w * scale for s, w in WEIGHTS.items()}, method=method)
    assert scaled.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert len(set(np.round(expected, 6))) == len(expected)  # a strict ranking: order is checked too
