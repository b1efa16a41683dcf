"""Vectorised scores against naive loops."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from m3_integrations import scoring
from tests.common import naive_colbert_score, naive_lexical_score

rng = np.random.default_rng(0)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_dense_scores_one_and_many() -> None:
    q = _unit(rng.normal(size=(3, 8)))
    p = _unit(rng.normal(size=(5, 8)))
    many = scoring.dense_scores(q, p)
    assert many.shape == (3, 5)
    for i in range(3):
        for j in range(5):
            assert many[i, j] == pytest.approx(float(np.dot(q[i], p[j])), abs=1e-6)
    np.testing.assert_allclose(scoring.dense_scores(q[0], p), many[0], atol=1e-6)
    with pytest.raises(ValueError, match="dimension mismatch"):
        scoring.dense_scores(q[0, :4], p)


def test_lexical_scores_dicts_and_csr_agree_with_naive() -> None:
    passages = [
        {int(t): float(rng.random()) for t in rng.choice(50, size=rng.integers(0, 10), replace=False)}
        for _ in range(20)
    ]
    query = {3: 0.5, 7: 1.2, 49: 0.1, 1000: 2.0}
    naive = [naive_lexical_score(query, p) for p in passages]
    np.testing.assert_allclose(scoring.lexical_scores(query, passages), naive, atol=1e-6)
    csr = scoring.lexical_weights_to_csr(passages, num_columns=60)
    assert sp.issparse(csr) and csr.shape == (20, 60)
    np.testing.assert_allclose(scoring.lexical_scores(query, csr), naive, atol=1e-6)
    np.testing.assert_allclose(scoring.lexical_scores({}, csr), 0.0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        scoring.lexical_weights_to_csr([{70: 1.0}], num_columns=60)


def test_colbert_scores_list_and_contiguous_agree_with_naive() -> None:
    q = _unit(rng.normal(size=(4, 6)))
    passages = [_unit(rng.normal(size=(n, 6))) for n in (1, 7, 3, 12)]
    naive = [naive_colbert_score(q, p) for p in passages]
    np.testing.assert_allclose(scoring.colbert_scores(q, passages), naive, atol=1e-6)
    for p, ref in zip(passages, naive, strict=True):
        assert scoring.colbert_score(q, p) == pytest.approx(ref, abs=1e-6)
    flat = np.concatenate(passages).astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in passages])])
    np.testing.assert_allclose(scoring.colbert_scores(q, flat, offsets), naive, atol=2e-3)


def test_colbert_scores_handles_empty_passages() -> None:
    q = _unit(rng.normal(size=(2, 4)))
    p = [
        np.zeros((0, 4), dtype=np.float32),
        _unit(rng.normal(size=(3, 4))),
        np.zeros((0, 4), dtype=np.float32),
    ]
    got = scoring.colbert_scores(q, p)
    assert got[0] == 0 and got[2] == 0
    assert got[1] == pytest.approx(naive_colbert_score(q, p[1]), abs=1e-6)


def test_colbert_scores_with_int8_scales() -> None:
    q = _unit(rng.normal(size=(3, 5)))
    p = _unit(rng.normal(size=(6, 5)))
    scale = np.abs(p).max(axis=1) / 127.0
    quant = np.round(p / scale[:, None]).astype(np.int8)
    got = scoring.colbert_scores(q, quant, np.array([0, 2, 6]), scales=scale)
    ref = [naive_colbert_score(q, p[:2]), naive_colbert_score(q, p[2:])]
    np.testing.assert_allclose(got, ref, atol=2e-2)


def test_combine_scores() -> None:
    s = {"dense": np.array([0.5, 1.0]), "sparse": np.array([0.2, 0.0]), "colbert": np.array([0.3, 0.4])}
    got = scoring.combine_scores(s, {"dense": 0.4, "sparse": 0.2, "colbert": 0.4})
    np.testing.assert_allclose(got, [(0.2 + 0.04 + 0.12), (0.4 + 0.16)], atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        scoring.combine_scores(s, {"dense": 0.0})


@pytest.mark.parametrize("narrow_dim", [0, 1 << 20])  # both product layouts
@pytest.mark.parametrize("block_elements", [16, 1 << 20])
def test_colbert_scores_stored_matches_naive(
    monkeypatch: pytest.MonkeyPatch, block_elements: int, narrow_dim: int
) -> None:
    # A tiny block forces many blocks and passages longer than a block (the buffer must grow).
    monkeypatch.setattr(scoring, "_BLOCK_ELEMENTS", block_elements)
    monkeypatch.setattr(scoring, "_NARROW_DIM", narrow_dim)
    dim = 8
    lengths = [3, 0, 5, 1, 7, 0, 2]
    passages = [_unit(rng.normal(size=(n, dim))).astype(np.float16) for n in lengths]
    store = np.concatenate([p for p in passages if len(p)])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    q = _unit(rng.normal(size=(4, dim)))
    # Adjacent rows (one copied run), a scattered order, and a repeated row.
    order = np.array([6, 0, 2, 3, 1, 4, 5, 2])
    workspace = scoring.StagingBuffer()
    for rows in (np.arange(len(lengths)), order):
        got = scoring.colbert_scores_stored(
            q, store, starts[rows], np.asarray(lengths)[rows], workspace=workspace
        )
        ref = [naive_colbert_score(q, passages[r].astype(np.float32)) if lengths[r] else 0.0 for r in rows]
        np.testing.assert_allclose(got, ref, atol=1e-6)
    # Passages back to back (the copy path) whose empty passages point anywhere: they still score 0.
    odd_starts = starts.copy()
    odd_starts[np.asarray(lengths) == 0] = 10_000
    got = scoring.colbert_scores_stored(q, store, odd_starts, np.asarray(lengths), workspace=workspace)
    ref = [naive_colbert_score(q, p.astype(np.float32)) if len(p) else 0.0 for p in passages]
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("narrow_dim", [0, 1 << 20])
def test_colbert_scores_stored_int8_matches_dequantized(
    monkeypatch: pytest.MonkeyPatch, narrow_dim: int
) -> None:
    monkeypatch.setattr(scoring, "_NARROW_DIM", narrow_dim)
    dim = 6
    p = _unit(rng.normal(size=(9, dim)))
    scale = (np.abs(p).max(axis=1) / 127.0).astype(np.float32)
    quant = np.round(p / scale[:, None]).astype(np.int8)
    q = _unit(rng.normal(size=(3, dim)))
    got = scoring.colbert_scores_stored(q, quant, np.array([4, 0]), np.array([5, 4]), scales=scale)
    dequant = quant.astype(np.float32) * scale[:, None]
    ref = [naive_colbert_score(q, dequant[4:9]), naive_colbert_score(q, dequant[0:4])]
    np.testing.assert_allclose(got, ref, atol=1e-6)
    in_order = scoring.colbert_scores_stored(q, quant, np.array([0, 4]), np.array([4, 5]), scales=scale)
    np.testing.assert_allclose(in_order, ref[::-1], atol=1e-6)


def test_colbert_scores_stored_rejects_wrong_dimension() -> None:
    store = np.zeros((3, 4), dtype=np.float16)
    with pytest.raises(ValueError, match="dimension mismatch"):
        scoring.colbert_scores_stored(np.ones((2, 5)), store, np.array([0]), np.array([3]))


def test_dense_scores_stored_float16_matches_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "_BLOCK_ELEMENTS", 32)  # several blocks, last one partial
    passages = _unit(rng.normal(size=(21, 8))).astype(np.float16)
    q = _unit(rng.normal(size=(8,)))
    got = scoring.dense_scores_stored(q, passages)
    ref = [float(np.dot(q.astype(np.float64), row.astype(np.float64))) for row in passages]
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="dimension mismatch"):
        scoring.dense_scores_stored(np.ones(7), passages)


def test_stored_scorers_fall_back_without_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    # enough rows for the dense product to go through oneDNN (smaller ones use torch.mm directly)
    passages = _unit(rng.normal(size=(scoring._ONEDNN_MIN_ROWS + 5, 8))).astype(np.float32)
    q = _unit(rng.normal(size=(3, 8)))
    starts, lengths = np.array([0, 3]), np.array([3, 4])
    dense = scoring.dense_scores_stored(q[0], passages)
    colbert = scoring.colbert_scores_stored(q, passages, starts, lengths)

    def broken(*args: object) -> None:
        raise RuntimeError("no oneDNN in this build")

    monkeypatch.setitem(scoring._ONEDNN, "linear", True)
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", broken, raising=False)
    np.testing.assert_allclose(scoring.dense_scores_stored(q[0], passages), dense, atol=1e-6)
    assert scoring._ONEDNN["linear"] is False  # the first failure switches to torch.mm for good
    fallback = scoring.colbert_scores_stored(q, passages, starts, lengths)
    np.testing.assert_allclose(fallback, colbert, atol=1e-6)
    np.testing.assert_allclose(dense, passages @ q[0], atol=1e-6)


def test_staging_buffer_reuses_one_buffer_per_width() -> None:
    workspace = scoring.StagingBuffer()
    first = workspace.get(10, 4)
    other_width = workspace.get(5, 8)
    again = workspace.get(8, 4)
    assert again.data_ptr() == first.data_ptr()  # reused although another width came in between
    assert other_width.shape == (5, 8)
    assert workspace.get(20, 4).shape == (20, 4)  # grows when a larger block is needed
    gathered = workspace.get_numpy(3, 4, np.float16)
    assert gathered.dtype == np.float16
    assert workspace.get_numpy(2, 4, np.float16).ctypes.data == gathered.ctypes.data
