"""Compressed ColBERT storage: token pooling and ColBERTv2-style residual codes.

``M3Index(model, colbert_storage="compact")`` stores each document's ColBERT vectors as chosen by the
study ``benchmarks/colbert_compression.md`` (issue 16):

1. **Token pooling** at index time (:func:`pool_tokens`): a document's ``n`` vectors are clustered into
   ``ceil(n / 2)`` groups (Ward's agglomerative clustering) and each group's mean, re-normalised, is
   stored. Half the vectors; on the study's collections the hybrid's nDCG@10 did not move.
2. **Residual codes** (:class:`ResidualCodec`): each pooled vector is stored as the id of its nearest
   of ``K`` centroids (2 bytes) plus one bit per dimension, the sign of its residual; a bit decodes to
   that dimension's mean negative or mean positive residual. ``2 + d/8`` bytes per pooled vector: with
   pooling, 1/32 of float16 at BGE-M3's d=1024 (``(2 + 128) / 2`` bytes per token instead of 2048).

Scores are asymmetric: the query stays exact and meets the decoded document, ``q · x̂`` with
``x̂ = c_id + low + bits ∘ (high - low)``. It is computed without decoding:
:meth:`ResidualCodec.query_tables` turns the query into one table row per centroid and per (byte
position, byte value), and :func:`m3_integrations.scoring.colbert_scores_lookup` sums ``d/8 + 1`` rows
per stored vector.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> vectors = rng.standard_normal((600, 16)).astype(np.float32)
    >>> vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    >>> codec = ResidualCodec.train(vectors, n_centroids=8, seed=0)
    >>> ids, bits = codec.encode(vectors[:3])
    >>> ids.dtype, bits.shape  # 2 bytes + d/8 bytes per vector
    (dtype('uint16'), (3, 2))
    >>> codec.decode(ids, bits).shape
    (3, 16)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import torch
from scipy.cluster.hierarchy import linkage

__all__ = [
    "COLBERT_STORAGES",
    "MAX_CENTROIDS",
    "POOL_FACTOR",
    "POOL_WINDOW",
    "RESIDUAL_BITS",
    "TRAIN_MIN_VECTORS",
    "TRAIN_SAMPLE",
    "ColbertStorage",
    "ResidualCodec",
    "kmeans",
    "pool_tokens",
]

ColbertStorage: TypeAlias = Literal["exact", "int8", "compact"]
# The named settings of ``M3Index(colbert_storage=...)``.
COLBERT_STORAGES: tuple[ColbertStorage, ...] = ("exact", "int8", "compact")

# Token pooling factor of the compact storage (the study's pool2: half the vectors).
POOL_FACTOR = 2
# Residual bits per dimension of the compact storage.
RESIDUAL_BITS = 1
# The codec is trained once the store holds this many (pooled) vectors, about 110 BGE-M3 documents
# of 288 tokens; before that, the pooled vectors are kept in float16 (they are converted when trained).
TRAIN_MIN_VECTORS = 16_384
# Training sample: at most this many stored vectors, drawn at random (seeded).
TRAIN_SAMPLE = 65_536
# Centroids: one per 16 training vectors, at most this many (the study's 1024; ids fit 2 bytes).
MAX_CENTROIDS = 1024
_VECTORS_PER_CENTROID = 16
# Tokens clustered together at most (longer documents are pooled window by window).
POOL_WINDOW = 512
_KMEANS_ITERATIONS = 10


def pool_tokens(vectors: np.ndarray, factor: float = POOL_FACTOR) -> np.ndarray:
    """Token pooling: ``ceil(n / factor)`` cluster means (Ward linkage) of a document's vectors, unit length.

    Deterministic. Long documents are pooled in windows of :data:`POOL_WINDOW` consecutive tokens (Ward
    linkage costs ``O(n²)`` memory). A document of at most one vector, or ``factor <= 1``, comes back
    unchanged (as float32); zero-length means stay zero.

    Example:
        >>> v = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]], dtype=np.float32)
        >>> v /= np.linalg.norm(v, axis=1, keepdims=True)
        >>> pool_tokens(v, 2).astype(np.float64).round(2).tolist()
        [[1.0, 0.05], [0.05, 1.0]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) > POOL_WINDOW:
        windows = range(0, len(vectors), POOL_WINDOW)
        return np.concatenate([pool_tokens(vectors[i : i + POOL_WINDOW], factor) for i in windows])
    n = len(vectors)
    k = max(1, math.ceil(n / factor)) if factor > 1 else n
    if n <= 1 or k >= n:
        return vectors.copy()
    merges = linkage(_condensed_distances(vectors), method="ward")[:, :2].astype(np.int64)
    # The first n - k merges leave exactly k clusters (fcluster's cut by height may leave fewer on ties).
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for step, (a, b) in enumerate(merges[: n - k]):
        members[n + step] = members.pop(int(a)) + members.pop(int(b))
    # Clusters in order of their first token, so the pooled vectors keep the reading order.
    clusters = sorted(members.values(), key=min)
    pooled = np.stack([vectors[c].sum(axis=0) for c in clusters])
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.where(norms > 0, norms, 1.0)


def _condensed_distances(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances of every pair ``i < j`` (scipy's condensed order), from one float64 product.

    What ``linkage`` would compute with ``pdist``, whose scalar loop took most of an add's time with
    compact storage (34 ms of 45 per 288-token document at d=1024); differences are rounding (~1e-16).
    """
    x = vectors.astype(np.float64)
    squared = np.einsum("ij,ij->i", x, x)
    gram = x @ x.T
    upper = np.triu_indices(len(x), k=1)
    scale = squared[upper[0]] + squared[upper[1]]
    distances = scale - 2.0 * gram[upper]
    # Equal vectors (repeated tokens) get exactly 0, as from pdist, whatever the product's rounding:
    # their ties are then broken by scipy's fixed order, the same on every CPU.
    distances[distances <= 1e-12 * scale] = 0.0
    return np.sqrt(distances)


@functools.cache
def _byte_slots(bits: int) -> np.ndarray:
    """``(256, (8 / bits) * 2**bits)`` float32: 1 where byte value ``v`` holds bucket ``b`` in slot ``t``.

    Slot ``t`` is bits ``8 - bits (t + 1)`` and up of the byte, as :meth:`ResidualCodec.encode` packs them.
    """
    per_byte, buckets = 8 // bits, 1 << bits
    byte_values = np.arange(256)
    slots = np.zeros((256, per_byte * buckets), dtype=np.float32)
    for t in range(per_byte):
        code = (byte_values >> (8 - bits * (t + 1))) & (buckets - 1)
        slots[byte_values, t * buckets + code] = 1.0
    return slots


def kmeans(
    vectors: np.ndarray, k: int, *, iterations: int = _KMEANS_ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (Lloyd's, unit-length centroids): ``(centroids (k, d), assignment (n,))``.

    Starts from ``k`` distinct random vectors; an empty cluster takes the worst-served vector, so
    every centroid stays in use.

    Raises:
        ValueError: ``k`` is not in ``[1, n]``.

    Example:
        >>> points = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
        >>> _, assignment = kmeans(points, 2, seed=0)
        >>> bool(assignment[0] == assignment[1] != assignment[2] == assignment[3])
        True
    """
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    n = x.shape[0]
    if not 0 < k <= n:
        msg = f"k must be in [1, {n}] (the number of training vectors), got {k}"
        raise ValueError(msg)
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.nn.functional.normalize(x[torch.randperm(n, generator=generator)[:k]], dim=1)
    for _ in range(iterations):
        best, assignment = _nearest(x, centroids)
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        empty = counts == 0
        if bool(empty.any()):
            # Re-seed empty clusters with the worst-served vectors, so no id is wasted.
            sums[empty] = x[torch.argsort(best)[: int(empty.sum())]]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids.numpy(), _nearest(x, centroids)[1].numpy()


def _nearest(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vector, the largest dot product with a centroid and its index (blocked: bounded memory)."""
    best = torch.empty(len(x))
    index = torch.empty(len(x), dtype=torch.int64)
    step = max(1, (1 << 22) // max(1, len(centroids)))
    for begin in range(0, len(x), step):
        torch.max(
            x[begin : begin + step] @ centroids.T,
            dim=1,
            out=(best[begin : begin + step], index[begin : begin + step]),
        )
    return best, index


@dataclass(frozen=True)
class ResidualCodec:
    """ColBERTv2-style codes: the nearest centroid's id plus ``bits`` (1 or 2) per dimension of residual.

    Per dimension, the residual ``x - c_id`` falls in one of ``2**bits`` buckets (cut at the training
    residuals' quantiles of that dimension) and decodes to the bucket's mean over the training sample.
    Codes are packed ``8 / bits`` dimensions per byte, the first dimension in the most significant bits.

    Attributes:
        centroids: ``(K, d)`` float32 unit vectors (``K <= 65536``).
        cutoffs: ``(2**bits - 1, d)`` float32 bucket boundaries per dimension (ascending).
        values: ``(2**bits, d)`` float32: what each bucket decodes to, per dimension.
        train_error: mean squared reconstruction error of a held-out tenth of the training sample (the
            drift baseline).
    """

    centroids: np.ndarray
    cutoffs: np.ndarray
    values: np.ndarray
    train_error: float

    @classmethod
    def train(
        cls, sample: np.ndarray, *, bits: int = 1, n_centroids: int | None = None, seed: int = 0
    ) -> ResidualCodec:
        """Fit centroids and residual buckets on ``sample (s, d)`` of the index's own (pooled) vectors.

        A random tenth of the sample (seeded) is held out to measure ``train_error``; ``n_centroids``
        defaults to one per 16 of the other vectors, at most :data:`MAX_CENTROIDS`.

        Raises:
            ValueError: an empty sample, ``bits`` not 1 or 2, or more centroids than training vectors.
        """
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2 or len(sample) == 0:
            msg = f"the codec needs a non-empty (s, d) training sample, got shape {sample.shape}"
            raise ValueError(msg)
        if bits not in (1, 2):
            msg = f"residual bits must be 1 or 2, got {bits!r}"
            raise ValueError(msg)
        # A tenth of the sample is held out: its error is the drift baseline (the training vectors'
        # own error is optimistic, by as much as 1.6x with 16 vectors per centroid).
        held_out = np.random.default_rng(seed).permutation(len(sample))
        held_out, sample = sample[held_out[: len(sample) // 10]], sample[held_out[len(sample) // 10 :]]
        if n_centroids is None:
            n_centroids = max(1, min(MAX_CENTROIDS, len(sample) // _VECTORS_PER_CENTROID))
        centroids, assignment = kmeans(sample, n_centroids, seed=seed)
        residual = sample - centroids[assignment]
        levels = 1 << bits
        # One bit: split at 0 (the sign, as ColBERTv2); two: at the quartiles of each dimension.
        if bits == 1:
            cutoffs = np.zeros((1, sample.shape[1]), dtype=np.float32)
        else:
            cutoffs = np.quantile(residual, np.arange(1, levels) / levels, axis=0).astype(np.float32)
        buckets = _buckets(residual, cutoffs)
        values = np.zeros((levels, sample.shape[1]), dtype=np.float32)
        for b in range(levels):
            inside = buckets == b
            values[b] = np.where(inside, residual, 0).sum(0) / np.maximum(inside.sum(0), 1)
        codec = cls(centroids.astype(np.float32), cutoffs, values, 0.0)
        baseline = codec.squared_error(held_out if len(held_out) else sample)
        return cls(codec.centroids, codec.cutoffs, codec.values, baseline)

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return int(self.centroids.shape[1])

    @property
    def bits(self) -> int:
        """Residual bits per dimension."""
        return len(self.values).bit_length() - 1

    @property
    def code_bytes(self) -> int:
        """Bytes per stored vector: a 2-byte centroid id and ``ceil(d * bits / 8)`` bytes of residual."""
        return 2 + self.residual_bytes

    @property
    def residual_bytes(self) -> int:
        """Bytes of packed residual codes per vector."""
        return math.ceil(self.dim * self.bits / 8)

    def encode(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (T,) uint16, residual (T, residual_bytes) uint8)`` of ``(T, d)`` vectors."""
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        ids = _nearest(x, torch.from_numpy(self.centroids))[1].numpy()
        buckets = _buckets(x.numpy() - self.centroids[ids], self.cutoffs)
        return ids.astype(np.uint16), _pack(buckets, self.bits)

    def decode(self, ids: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """The reconstructions ``(T, d)`` float32 (tests, the drift measure)."""
        buckets = _unpack(residual, self.bits, self.dim)
        return self.centroids[ids.astype(np.int64)] + np.take_along_axis(
            self.values, buckets.astype(np.int64), 0
        )

    def squared_error(self, vectors: np.ndarray) -> float:
        """Mean squared reconstruction error ``mean ||x - x̂||²`` of ``(T, d)`` vectors (0 for none)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(vectors) == 0:
            return 0.0
        return float(((self.decode(*self.encode(vectors)) - vectors) ** 2).sum(axis=1).mean())

    def query_tables(self, query: np.ndarray) -> torch.Tensor:
        """``(residual_bytes * 256 + K, N_q)``: the share of ``q_i · x̂`` of every byte value and centroid.

        Row ``256 p + v`` is ``Σ_t q_i[g p + t] values[code_t(v), g p + t]`` over the ``g = 8 / bits``
        dimensions packed in byte ``p`` when it holds ``v``; row ``256 residual_bytes + c`` is
        ``q_i · centroids[c]``. See :meth:`code_offsets`.
        """
        query = np.ascontiguousarray(query, dtype=np.float32)
        bits, n_bytes, n_query = self.bits, self.residual_bytes, len(query)
        per_byte, buckets = 8 // bits, 1 << bits
        width = n_bytes * per_byte
        # values_q[b, i, dim] = q_i[dim] * values[b, dim], zero-padded to whole bytes.
        values_q = np.zeros((buckets, n_query, width), dtype=np.float32)
        values_q[:, :, : self.dim] = self.values[:, None, :] * query[None, :, :]
        # weights[(t, b), (p, i)]: the share of bucket b in slot t of byte p; a byte value's row is the
        # sum over its slots of its buckets' shares: one product with the byte values' one-hot slots.
        weights = values_q.reshape(buckets, n_query, n_bytes, per_byte).transpose(3, 0, 2, 1)
        weights = np.ascontiguousarray(weights).reshape(per_byte * buckets, n_bytes * n_query)
        rows = (_byte_slots(bits) @ weights).reshape(256, n_bytes, n_query).transpose(1, 0, 2)
        centroid_rows = self.centroids @ query.T
        return torch.from_numpy(np.concatenate([rows.reshape(n_bytes * 256, n_query), centroid_rows]))

    def code_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Offsets into :meth:`query_tables` for ``(ids, residual)``, in the order of :meth:`encode`."""
        return np.array([256 * self.residual_bytes], dtype=np.int64), np.arange(self.residual_bytes) * 256

    def norm_bound(self) -> float:
        """An upper bound on the norm of any reconstruction: ``max ||c|| + ||max_b |values[b]|||``."""
        largest = float(np.linalg.norm(self.centroids, axis=1).max(initial=0.0))
        return largest + float(np.linalg.norm(np.abs(self.values).max(axis=0)))

    def model_bytes(self) -> int:
        """Bytes of the centroids, cutoffs and bucket values (stored once per index)."""
        return int(self.centroids.nbytes + self.cutoffs.nbytes + self.values.nbytes)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``colbert_centroids``, ``colbert_cutoffs`` and ``colbert_values`` for persistence."""
        return {
            "colbert_centroids": self.centroids,
            "colbert_cutoffs": self.cutoffs,
            "colbert_values": self.values,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], train_error: float) -> ResidualCodec:
        """The codec saved by :meth:`to_arrays` (arrays checked by the loader)."""
        return cls(
            *(
                np.ascontiguousarray(arrays[f"colbert_{name}"], dtype=np.float32)
                for name in ("centroids", "cutoffs", "values")
            ),
            float(train_error),
        )


def _buckets(residual: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Per value, how many of its dimension's cutoffs it reaches: the bucket, ``(T, d)`` uint8."""
    buckets = np.zeros(residual.shape, dtype=np.uint8)
    for cutoff in cutoffs:
        buckets += residual >= cutoff
    return buckets


def _pack(buckets: np.ndarray, bits: int) -> np.ndarray:
    """``(T, d)`` bucket numbers, ``8 / bits`` per byte, the first dimension in the high bits."""
    if bits == 1:
        return np.packbits(buckets.astype(bool), axis=1)
    per_byte = 8 // bits
    t, d = buckets.shape
    padded = np.zeros((t, per_byte * math.ceil(d / per_byte)), dtype=np.uint8)
    padded[:, :d] = buckets
    grouped = padded.reshape(t, -1, per_byte)
    packed = np.zeros(grouped.shape[:2], dtype=np.uint8)
    for i in range(per_byte):
        packed |= grouped[:, :, i] << (8 - bits * (i + 1))
    return packed


def _unpack(packed: np.ndarray, bits: int, dim: int) -> np.ndarray:
    """The inverse of :func:`_pack`: ``(T, dim)`` uint8 bucket numbers."""
    if bits == 1:
        return np.unpackbits(packed, axis=1, count=dim)
    per_byte = 8 // bits
    shifts = np.asarray([8 - bits * (i + 1) for i in range(per_byte)], dtype=np.uint8)
    unpacked = (packed[:, :, None] >> shifts) & ((1 << bits) - 1)
    return unpacked.reshape(len(packed), -1)[:, :dim]
