"""The fp16 CUDA path (skipped without a GPU): defaults, head dtypes, agreement with fp32 CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from m3_integrations import M3Model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TEXTS = ["Paris is the capital of France.", "서울은 대한민국의 수도이다", "hello " * 300, ""]


def test_cuda_defaults_to_fp16_and_matches_fp32_cpu(tiny_checkpoint: str) -> None:
    gpu = M3Model(tiny_checkpoint)
    assert gpu.device.type == "cuda"
    assert gpu.use_fp16
    assert next(gpu.model.parameters()).dtype == torch.float16
    assert gpu.colbert_linear is not None
    assert gpu.colbert_linear.weight.dtype == torch.float16
    cpu = M3Model(tiny_checkpoint, device="cpu")
    out = gpu.encode(TEXTS, return_colbert=True)
    ref = cpu.encode(TEXTS, return_colbert=True)
    assert out.dense is not None
    assert ref.dense is not None
    assert out.dense.dtype == np.float32
    np.testing.assert_allclose(out.dense, ref.dense, atol=2e-2)
    assert out.lexical_weights is not None
    assert ref.lexical_weights is not None
    for a, b in zip(out.lexical_weights, ref.lexical_weights, strict=True):
        shared = set(a) & set(b)
        assert len(shared) >= 0.8 * max(len(a), len(b), 1) - 1
        for t in shared:
            assert a[t] == pytest.approx(b[t], abs=5e-2)
    assert out.colbert_vecs is not None
    assert ref.colbert_vecs is not None
    for a, b in zip(out.colbert_vecs, ref.colbert_vecs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=3e-2)


def test_cuda_fp32_matches_cpu_closely(tiny_checkpoint: str) -> None:
    gpu = M3Model(tiny_checkpoint, device="cuda", use_fp16=False)
    cpu = M3Model(tiny_checkpoint, device="cpu")
    a = gpu.encode(TEXTS).dense
    b = cpu.encode(TEXTS).dense
    assert a is not None
    assert b is not None
    np.testing.assert_allclose(a, b, atol=1e-4)
