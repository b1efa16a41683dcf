"""``agreement`` fusion and ``top_agreement`` against naive re-implementations."""

from __future__ import annotations

import numpy as np
import pytest

from m3_integrations import fusion
from tests.common import naive_agreement, naive_agreement_fusion


def test_top_agreement_matches_the_naive_definition() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        depth = int(rng.integers(1, 15))
        lexical = np.where(rng.random(n) < 0.4, 0.0, rng.integers(0, 6, n).astype(float))  # ties and zeros
        others = [rng.integers(0, 5, n).astype(float) for _ in range(int(rng.integers(1, 3)))]
        got = fusion.top_agreement(lexical, others, depth=depth)
        assert got == pytest.approx(naive_agreement(lexical.tolist(), [o.tolist() for o in others], depth))
    with pytest.raises(ValueError, match="depth must be positive"):
        fusion.top_agreement(np.ones(3), [np.ones(3)], depth=0)


def test_agreement_fusion_matches_the_naive_reference() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        scores = {
            "dense": rng.normal(0.5, 0.1, n).tolist(),
            "colbert": rng.normal(0.6, 0.1, n).tolist(),
            "bm25": np.where(rng.random(n) < 0.5, 0.0, rng.exponential(5.0, n)).tolist(),
        }
        weights = {"dense": float(rng.random()), "colbert": float(rng.random()), "bm25": float(rng.random())}
        coverage = {"bm25": float(rng.random())}
        got = fusion.fuse(scores, weights, method="agreement", coverage=coverage)
        expected = naive_agreement_fusion(scores, weights, coverage, fusion.AGREEMENT_DEPTH)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_a_lexical_signal_that_agrees_with_nobody_cannot_take_over() -> None:
    # BM25's ten matches (rows 20-29) are the ten that dense and ColBERT rank lowest: noise for this query.
    dense = np.linspace(0.9, 0.5, 30)
    colbert = np.linspace(0.8, 0.6, 30)
    bm25 = np.zeros(30)
    bm25[20:] = np.linspace(3.0, 12.0, 10)
    scores = {"dense": dense, "colbert": colbert, "bm25": bm25}
    weights = {"dense": 0.3, "bm25": 0.4, "colbert": 0.3}
    assert int(fusion.fuse(scores, weights, method="confidence").argmax()) == 29
    assert int(fusion.fuse(scores, weights, method="agreement").argmax()) == 0
    # The same BM25 scores on rows the others also rank high: full weight, as confidence gives it.
    scores["bm25"] = bm25[::-1].copy()
    np.testing.assert_allclose(
        fusion.fuse(scores, weights, method="agreement"),
        fusion.fuse(scores, weights, method="confidence"),
        rtol=1e-6,
    )


def test_agreement_without_other_signals_is_confidence_and_coverage_is_checked() -> None:
    scores = {"bm25": np.array([3.0, 0.0, 1.0]), "sparse": np.array([0.2, 0.1, 0.0])}
    weights = {"bm25": 1.0, "sparse": 1.0}
    np.testing.assert_allclose(
        fusion.fuse(scores, weights, method="agreement"), fusion.fuse(scores, weights, method="confidence")
    )
    with pytest.raises(ValueError, match="coverage of 'bm25' must be a share"):
        fusion.fuse(scores, weights, method="agreement", coverage={"bm25": 1.5})
    with pytest.raises(ValueError, match="fusion='agreement' and fusion='confidence' only"):
        fusion.fuse(scores, weights, method="rrf", coverage={"bm25": 0.5})
