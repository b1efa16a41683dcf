"""The CPU matrix products under :mod:`m3_integrations.scoring`'s stored-vector scorers.

``_linear`` runs float32 products through oneDNN on a bounded set of row counts (so that an index whose
size changes with every add does not compile a kernel per size), and :class:`StagingBuffer` is the
reusable float32 workspace the blocked scorers widen stored float16/int8 vectors into. Both are
importable from :mod:`m3_integrations.scoring`, whose tests patch ``scoring._ONEDNN`` (the same dict).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

# Logged under the module these kernels serve.
logger = logging.getLogger("m3_integrations.scoring")

__all__ = ["StagingBuffer"]

_ONEDNN = {"linear": True}  # cleared after the first failure (a torch build without oneDNN)
# Below this many rows a product is cheap either way and torch.mm creates nothing per shape.
_ONEDNN_MIN_ROWS = 4096
# Row counts oneDNN sees: 4 per octave (1, 1.25, 1.5, 1.75 x 2^k).
_BUCKETS_PER_OCTAVE = 4


def _row_bucket(rows: int) -> int:
    """The smallest bucket size ``>= rows``, from a geometric series with 4 sizes per octave.

    Example:
        >>> [_row_bucket(n) for n in (4096, 4097, 5121, 8000)]
        [4096, 5120, 6144, 8192]
    """
    octave = 1 << max(0, (rows - 1).bit_length() - 3)  # a step of 1/4 of the power of two below
    return -(-rows // octave) * octave


def _linear(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``inputs @ weight.T`` in float32 on CPU, through oneDNN on a bounded set of shapes.

    Measured on a 2-core AMD EPYC VM: a 100k x 1024 matrix-vector product takes 21 ms with oneDNN,
    38 ms with ``torch.mv`` (MKL picks a slow path on AMD CPUs) and 17 ms with numpy (OpenBLAS), whose
    spinning worker threads then slow the torch work that follows by 2x.

    oneDNN compiles and caches a kernel per matrix shape (about 20 ms and 0.26 MB each, measured; the
    memory stays after the cache evicts), and an index's row count changes with every ``add``: 2,400
    add/search cycles on 5k documents grew a process by 600 MB. So oneDNN only sees bucketed row
    counts: ``weight`` is covered by two products over its first and last ``b`` rows, ``b`` the smallest
    bucket ``>= rows / 2`` (rows in both are computed twice, at most 25% extra work), which bounds the
    shapes to 4 per octave of row counts. Small products (< 4,096 rows, such as a query's candidates)
    use ``torch.mm``.

    Example:
        >>> import torch
        >>> _linear(torch.ones(1, 3), torch.eye(3)).tolist()
        [[1.0, 1.0, 1.0]]
    """
    rows = weight.shape[0]
    if (
        _ONEDNN["linear"]
        and rows >= _ONEDNN_MIN_ROWS
        and inputs.dtype == torch.float32
        and weight.dtype == torch.float32
    ):
        try:
            return _linear_bucketed(inputs, weight)
        except (AttributeError, NotImplementedError, RuntimeError) as error:
            _ONEDNN["linear"] = False
            logger.debug("oneDNN linear unavailable (%s); using torch.mm", error)
    return torch.mm(inputs, weight.T)


def _linear_bucketed(inputs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    rows = weight.shape[0]
    size = _row_bucket(-(-rows // 2))
    product = torch.ops.mkldnn._linear_pointwise
    if size >= rows:
        return product(inputs, weight, None, "none", [], "")
    out = torch.empty((inputs.shape[0], rows), dtype=torch.float32)
    out[:, :size] = product(inputs, weight[:size], None, "none", [], "")
    out[:, size:] = product(inputs, weight[rows - size :], None, "none", [], "")[:, 2 * size - rows :]
    return out


class StagingBuffer:
    """A reusable float32 buffer for the blocked scorers of stored float16/int8 vectors (not thread-safe).

    Allocating a fresh buffer per query costs a page fault per 4 KB; an index keeps one workspace and
    calls under its lock.
    """

    def __init__(self) -> None:
        # One buffer per (dtype, width): dense and ColBERT widths may differ and alternate per query.
        self._tensors: dict[int, torch.Tensor] = {}
        self._arrays: dict[tuple[np.dtype[Any], int], np.ndarray] = {}

    def get(self, rows: int, dim: int) -> torch.Tensor:
        """A ``(rows, dim)`` float32 tensor (contents undefined)."""
        buffer = self._tensors.get(dim)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._tensors[dim] = torch.empty((rows, dim), dtype=torch.float32)
        return buffer[:rows]

    def get_numpy(self, rows: int, dim: int, dtype: np.dtype[Any]) -> np.ndarray:
        """A ``(rows, dim)`` array of ``dtype`` (contents undefined), for gathering stored rows."""
        key = (np.dtype(dtype), dim)
        array = self._arrays.get(key)
        if array is None or array.shape[0] < rows:
            array = self._arrays[key] = np.empty((rows, dim), dtype=dtype)
        return array[:rows]
