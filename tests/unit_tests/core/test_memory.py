"""Bounded memory under alternating adds and searches (issue 13, item 9), and the products behind it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from m3_integrations import M3Index, M3Model, M3Output
from m3_integrations.scoring import _linear, _row_bucket
from m3_integrations.testing import resident_memory_mb


@pytest.mark.parametrize("rows", [1, 7, 4095, 4096, 4097, 5121, 6000, 8191, 8193, 12345])
@pytest.mark.parametrize("width", [32, 5])
def test_linear_equals_a_naive_product(rows: int, width: int) -> None:
    rng = np.random.default_rng(rows * 100 + width)
    weight = rng.standard_normal((rows, width)).astype(np.float32)
    inputs = rng.standard_normal((3, width)).astype(np.float32)
    got = _linear(torch.from_numpy(inputs), torch.from_numpy(weight)).numpy()
    reference = inputs.astype(np.float64) @ weight.astype(np.float64).T
    assert got.shape == (3, rows)
    # each entry is a sum of `width` products of magnitude ~1: float32 rounding of that sum
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5 * np.sqrt(width))


def test_row_buckets_are_few_and_cover_each_count() -> None:
    counts = range(2048, 1 << 17)
    buckets = {_row_bucket(n) for n in counts}
    assert len(buckets) == 4 * 6 + 1  # four per octave from 2**11 to 2**17
    for n in counts:
        bucket = _row_bucket(n)
        assert n <= bucket <= 1.25 * n


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_alternating_adds_and_searches_keep_memory_bounded(tiny_model: M3Model) -> None:
    """Every add changes the dense store's row count; each new count used to cost oneDNN a kernel."""
    rng = np.random.default_rng(0)
    dim = tiny_model.dense_dim

    def synthetic(n: int) -> M3Output:
        dense = rng.standard_normal((n, dim)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        lexical = [{int(t): 0.5 for t in rng.integers(5, 300, size=4)} for _ in range(n)]
        colbert = [
            v / np.linalg.norm(v, axis=1, keepdims=True)
            for v in rng.standard_normal((n, 3, dim), dtype=np.float32)
        ]
        return M3Output(dense=dense, lexical_weights=lexical, colbert_vecs=colbert, num_tokens=[4] * n)

    index = M3Index(tiny_model, lexical="m3")
    start = 4200  # above the size where the dense scan goes through oneDNN
    index.add_encoded(synthetic(start), [f"doc {i}" for i in range(start)])
    (query,) = index.encode_queries(["capital of France"])
    cycles = 200
    samples = []
    for cycle in range(cycles + 1):
        if cycle in (0, cycles // 2, cycles):
            samples.append(resident_memory_mb())
        index.add_encoded(synthetic(1), [f"extra {cycle}"])
        hits = index.search_encoded(query, k=5, mode="dense")
        assert len(hits) == 5
    first, second = samples[1] - samples[0], samples[2] - samples[1]
    # Unbounded: ~0.26 MB per new row count, the same in both halves (about 26 MB each). Bounded:
    # a few bucket kernels in the first half, array growth only in the second.
    assert second < 0.25 * max(first, 0.0) + 8.0, (first, second)
