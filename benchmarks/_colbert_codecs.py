"""Reference codecs for compressed ColBERT storage, in numpy and torch (study for issue 16, item 1).

A document's ColBERT vectors ``E (n, d)`` are stored as codes and scored against a query's exact
float32 vectors ``Q (N_q, d)`` by MaxSim over their reconstructions ``Ê``:
``(1/N_q) Σ_i max_j Q[i]·Ê[j]`` (asymmetric: the query is never quantised). Every codec writes this
score as ``Q'[i]·W[j] + c[i]``, where ``Q', c = prepare_query(Q)`` (computed once per query) and
``W = widen(codes)`` is a float32 view of the codes, so the engine's blocked MaxSim kernel
(:func:`m3_integrations.scoring.colbert_scores_stored`) scores float16, int8 and projected int8 codes
unchanged; product-quantised and residual codes are decoded block by block first.

Settings compared by ``benchmarks/colbert_compression.py``:

- :class:`Float32Codec`, :class:`Float16Codec` (today's ``colbert_dtype="float16"``),
  :class:`Int8Codec` (today's ``"int8"``: one float32 scale per vector);
- :class:`PCACodec`: a PCA projection to ``d'`` dimensions trained on a sample of the index's own
  vectors, codes in float16 or int8 with one scale per dimension (no per-vector bytes);
- :class:`PQCodec`: product quantisation, ``m`` sub-vectors × 4 or 8 bits, optionally OPQ-rotated;
- :class:`ResidualCodec`: ColBERTv2-style nearest centroid + 1-bit residual per dimension;
- :class:`SignCodec`: sign bits around the mean with one scale per vector;
- :func:`pool_tokens`: token pooling at index time (cluster a document's vectors, average each
  cluster), combined with any codec by :class:`Storage`.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> docs = [unit(rng.standard_normal((n, 64))) for n in (30, 12, 25)]
    >>> storage = Storage(PCACodec(32, "int8"), pool_factor=2)
    >>> stored = storage.build(docs, sample_size=1000, seed=0)
    >>> stored.lengths.tolist()  # ceil(n / 2) vectors per document after pooling
    [15, 6, 13]
    >>> storage.score(unit(rng.standard_normal((4, 64))), stored).shape
    (3,)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from m3_integrations import scoring
from m3_integrations.index import colbert_codecs as core

__all__ = [
    "Codec",
    "EngineResidualCodec",
    "Float16Codec",
    "Float32Codec",
    "Int8Codec",
    "PCACodec",
    "PQCodec",
    "ResidualCodec",
    "SignCodec",
    "Storage",
    "StoredCorpus",
    "drift_ratio",
    "kmeans",
    "maxsim_reference",
    "nearest",
    "pool_tokens",
    "unit",
]

# Decoding block for codecs scored by reconstruction: ~4 MB of float32 at d=1024, as in scoring.py.
_DECODE_BLOCK_ELEMENTS = 1 << 20


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32.

    Example:
        >>> unit(np.array([[3.0, 4.0], [0.0, 0.0]])).astype(np.float64).round(3).tolist()
        [[0.6, 0.8], [0.0, 0.0]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def maxsim_reference(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """Naive MaxSim of one query against each document, one float64 product per document.

    Example:
        >>> maxsim_reference(np.eye(2), [np.array([[1.0, 0.0]]), np.eye(2)]).tolist()
        [0.5, 1.0]
    """
    query = np.asarray(query, dtype=np.float64)
    return np.asarray(
        [
            float((query @ np.asarray(d, dtype=np.float64).T).max(axis=1).mean()) if len(d) else 0.0
            for d in docs
        ]
    )


def kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    iterations: int = 20,
    seed: int = 0,
    spherical: bool = False,
    backend: Literal["auto", "torch", "faiss"] = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means: ``(centroids (k, d), assignment (n,))``.

    The torch implementation starts from ``k`` distinct random points; an empty cluster takes the
    point farthest from its centroid, so all ``k`` centroids stay in use. ``spherical`` keeps
    centroids at unit length (cosine k-means). ``backend="auto"`` uses ``faiss.Kmeans`` (the same
    algorithm, at most 256 points per centroid) when faiss is installed: on the shared 2-core machine
    torch took 12 s for 256 centroids of 43k 8-d sub-vectors, too slow for 48 sub-spaces per setting.

    Example:
        >>> points = np.array([[0.0], [0.1], [10.0], [10.2]], dtype=np.float32)
        >>> centroids, assignment = kmeans(points, 2, seed=0)
        >>> sorted(round(float(c), 2) for c in centroids[:, 0]), len(set(assignment.tolist()))
        ([0.05, 10.1], 2)
    """
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    n = x.shape[0]
    if not 0 < k <= n:
        msg = f"k must be in [1, {n}] (the number of vectors), got {k}"
        raise ValueError(msg)
    if backend != "torch":
        try:
            import faiss
        except ImportError:
            if backend == "faiss":
                raise
        else:
            trainer = faiss.Kmeans(
                x.shape[1], k, niter=iterations, seed=seed + 1, spherical=spherical, min_points_per_centroid=1
            )
            trainer.train(x.numpy())
            assignment = trainer.index.search(x.numpy(), 1)[1][:, 0]
            return np.asarray(trainer.centroids, dtype=np.float32), assignment.astype(np.int64)
    generator = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(n, generator=generator)[:k]].clone()
    x_sq = (x * x).sum(1)
    assignment = torch.zeros(n, dtype=torch.int64)
    for _ in range(iterations):
        distances = x_sq[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
        best, assignment = distances.min(1)
        counts = torch.bincount(assignment, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        if bool(empty.any()):
            # Re-seed empty clusters with the worst-served points, so no code value is wasted.
            worst = torch.argsort(best, descending=True)[: int(empty.sum())]
            centroids[empty] = x[worst]
        if spherical:
            centroids = torch.nn.functional.normalize(centroids, dim=1)
    distances = x_sq[:, None] - 2 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return centroids.numpy(), distances.argmin(1).numpy()


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of each vector; through faiss when installed.

    Example:
        >>> nearest(np.array([[0.1], [0.9]]), np.array([[0.0], [1.0]])).tolist()
        [0, 1]
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        # 10x faster than torch products of width 8 (measured: 48 sub-spaces of 43k vectors, 1 s vs 13 s).
        flat = faiss.IndexFlatL2(centroids.shape[1])
        flat.add(centroids)
        return flat.search(vectors, 1)[1][:, 0].astype(np.int64)
    c = torch.from_numpy(centroids)
    c_sq = (c * c).sum(1)
    out = np.empty(len(vectors), dtype=np.int64)
    step = max(1, (1 << 24) // len(centroids))
    for begin in range(0, len(vectors), step):
        block = torch.from_numpy(vectors[begin : begin + step])
        out[begin : begin + len(block)] = (c_sq[None, :] - 2 * block @ c.T).argmin(1).numpy()
    return out


def pool_tokens(
    vectors: np.ndarray,
    factor: float,
    *,
    method: Literal["ward", "kmeans"] = "ward",
    renormalize: bool = True,
) -> np.ndarray:
    """Token pooling: cluster a document's vectors into ``ceil(n / factor)`` groups and average each.

    ``ward`` is agglomerative clustering with Ward's criterion on the vectors (for unit vectors the
    squared Euclidean distance is ``2 - 2 cos``); ``kmeans`` is a few rounds of Lloyd's algorithm
    started from evenly spaced tokens (deterministic). ``renormalize`` scales the means back to unit
    length, as the stored vectors were.

    Example:
        >>> v = unit(np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]]))
        >>> pool_tokens(v, 2).astype(np.float64).round(2).tolist()
        [[1.0, 0.05], [0.05, 1.0]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if factor < 1:
        msg = f"pool factor must be >= 1, got {factor}"
        raise ValueError(msg)
    k = max(1, math.ceil(n / factor))
    if n <= 1 or k >= n:
        return vectors.copy()
    if method == "ward":
        labels = fcluster(linkage(vectors.astype(np.float64), method="ward"), t=k, criterion="maxclust") - 1
    elif method == "kmeans":
        centroids = vectors[np.linspace(0, n - 1, k).round().astype(np.int64)]
        for _ in range(10):
            labels = np.argmax(vectors @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, labels, vectors)
            counts = np.bincount(labels, minlength=k)
            centroids = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
        labels = np.argmax(vectors @ centroids.T, axis=1)
    else:
        msg = f"pooling method must be 'ward' or 'kmeans', got {method!r}"
        raise ValueError(msg)
    groups = np.unique(labels, return_inverse=True)[1]
    pooled = np.zeros((groups.max() + 1, vectors.shape[1]), dtype=np.float32)
    np.add.at(pooled, groups, vectors)
    pooled /= np.bincount(groups)[:, None].astype(np.float32)
    return unit(pooled) if renormalize else pooled


# ----------------------------------------------------------------------------- codecs
class Codec:
    """How stored vectors become codes, and how a float32 query scores against them.

    Subclasses set ``name``, implement :meth:`encode`, :meth:`widen` and (when trained)
    :meth:`fit`, and may override :meth:`prepare_query` and :meth:`score`.
    """

    name = "codec"
    trained = False

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        """Train on a sample ``(s, d)`` of the index's own (pooled) vectors; no-op when untrained."""

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """Per-vector code arrays for ``(T, d)`` vectors (first axis T in every array)."""
        raise NotImplementedError

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """``W (T, d_code)`` float32 with ``Q'[i]·W[j] + c[i] = Q[i]·Ê[j]`` (see :meth:`prepare_query`)."""
        raise NotImplementedError

    def prepare_query(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Q', c)``: the query in code space and a per-token offset (zero unless centred)."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        return query, np.zeros(len(query), dtype=np.float32)

    def decode(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        """The reconstructions ``Ê (T, d)`` (float32); by default :meth:`widen` (same space)."""
        return self.widen(codes)

    def bytes_per_vector(self, dim: int) -> float:
        """Stored bytes per vector (codes and per-vector scales) at dimension ``dim``."""
        raise NotImplementedError

    def model_bytes(self) -> int:
        """Bytes of the trained parameters (codebooks, projection, scales), stored once per index."""
        return 0

    def score(
        self, query: np.ndarray, codes: dict[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """MaxSim of ``query (N_q, d)`` against documents stored as rows ``starts[i]:starts[i]+lengths[i]``.

        Default: gather each block of documents, widen it and run the engine's kernel on it.
        """
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        prepared, offset = self.prepare_query(query)
        out = np.zeros(len(starts), dtype=np.float32)
        if len(starts) == 0 or len(prepared) == 0:
            return out
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        dim = max(1, prepared.shape[1])
        block = max(_DECODE_BLOCK_ELEMENTS // dim, int(lengths.max(initial=0)))
        i = 0
        while i < len(starts):
            j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + block, side="right")) - 1)
            rows = np.repeat(starts[i:j] - offsets[i:j], lengths[i:j]) + np.arange(offsets[i], offsets[j])
            widened = self.widen({key: value[rows] for key, value in codes.items()})
            out[i:j] = scoring.colbert_scores_stored(
                prepared, widened, offsets[i:j] - offsets[i], lengths[i:j]
            )
            i = j
        return _add_offset(out, offset, lengths)


def _add_offset(scores: np.ndarray, offset: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Add the query's mean offset to every non-empty document (an empty one scores 0)."""
    if len(offset):
        scores[np.asarray(lengths) > 0] += float(offset.mean())
    return scores


class _DirectCodec(Codec):
    """Codes the engine's kernel widens itself (float32, float16, int8 with a scale per vector)."""

    def score(
        self, query: np.ndarray, codes: dict[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        prepared, offset = self.prepare_query(query)
        out = scoring.colbert_scores_stored(
            prepared, codes["codes"], starts, lengths, scales=codes.get("scale")
        )
        return _add_offset(out, offset, lengths)


class Float32Codec(_DirectCodec):
    """The exact vectors (the reference of the study)."""

    name = "float32"

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return {"codes": np.ascontiguousarray(vectors, dtype=np.float32)}

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return codes["codes"].astype(np.float32, copy=False)

    def bytes_per_vector(self, dim: int) -> float:
        return 4.0 * dim


class Float16Codec(_DirectCodec):
    """Today's ``colbert_dtype="float16"``."""

    name = "float16"

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return {"codes": np.asarray(vectors).astype(np.float16)}

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return codes["codes"].astype(np.float32)

    def bytes_per_vector(self, dim: int) -> float:
        return 2.0 * dim


def _int8_per_vector(vectors: np.ndarray) -> dict[str, np.ndarray]:
    vectors = np.asarray(vectors, dtype=np.float32)
    scale = np.abs(vectors).max(axis=1) / 127.0 if len(vectors) else np.zeros(0, np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
    return {"codes": codes, "scale": scale}


class Int8Codec(_DirectCodec):
    """Today's ``colbert_dtype="int8"``: symmetric int8, one float32 scale per vector (max |x| → 127)."""

    name = "int8"

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        return _int8_per_vector(vectors)

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return codes["codes"].astype(np.float32) * codes["scale"][:, None]

    def bytes_per_vector(self, dim: int) -> float:
        return dim + 4.0


class PCACodec(_DirectCodec):
    """A PCA projection to ``dim`` components, trained on a sample of the index's own vectors.

    ``x ≈ μ + Pᵀ c`` with ``c = P (x - μ)``. Codes are ``c`` in float16, or int8 with one scale per
    component (its ``clip_quantile`` of ``|c_k|`` over the sample / 127; larger values are clipped), so
    no per-vector bytes are stored. The query is projected once: ``Q·x̂ = (P Q ∘ s)·code + Q·μ``, an
    int8 (or float16) matrix product of width ``dim``.
    """

    def __init__(
        self, dim: int, dtype: Literal["int8", "float16"] = "int8", *, clip_quantile: float = 0.9999
    ) -> None:
        if dtype not in ("int8", "float16"):
            msg = f"PCA code dtype must be 'int8' or 'float16', got {dtype!r}"
            raise ValueError(msg)
        self.dim = dim
        self.dtype = dtype
        self.clip_quantile = clip_quantile
        self.name = f"pca{dim}-{'i8' if dtype == 'int8' else 'f16'}"
        self.trained = True
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # (dim, d), orthonormal rows
        self.scale: np.ndarray | None = None  # (dim,) for int8 codes

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        sample = np.asarray(sample, dtype=np.float64)
        if sample.shape[1] < self.dim:
            msg = f"cannot project {sample.shape[1]}-d vectors to {self.dim} dimensions"
            raise ValueError(msg)
        self.mean = sample.mean(axis=0).astype(np.float32)
        centred = sample - self.mean
        eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
        top = np.argsort(eigenvalues)[::-1][: self.dim]
        self.components = np.ascontiguousarray(eigenvectors[:, top].T, dtype=np.float32)
        projected = (centred @ self.components.T.astype(np.float64)).astype(np.float32)
        bound = np.quantile(np.abs(projected), self.clip_quantile, axis=0)
        self.scale = (np.where(bound > 0, bound, 1.0) / 127.0).astype(np.float32)

    def _require(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.mean is None or self.components is None or self.scale is None:
            msg = f"{self.name} is not trained: call fit() on a sample of the index's vectors first"
            raise RuntimeError(msg)
        return self.mean, self.components, self.scale

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``P (x - μ)`` for ``(T, d)`` vectors."""
        mean, components, _ = self._require()
        return (np.asarray(vectors, dtype=np.float32) - mean) @ components.T

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        projected = self.project(vectors)
        if self.dtype == "float16":
            return {"codes": projected.astype(np.float16)}
        scale = self._require()[2]
        return {"codes": np.clip(np.rint(projected / scale), -127, 127).astype(np.int8)}

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return codes["codes"].astype(np.float32)

    def prepare_query(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, components, scale = self._require()
        query = np.asarray(query, dtype=np.float32)
        projected = query @ components.T
        if self.dtype == "int8":
            projected = projected * scale
        return np.ascontiguousarray(projected), query @ mean

    def decode(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        mean, components, scale = self._require()
        coefficients = codes["codes"].astype(np.float32)
        if self.dtype == "int8":
            coefficients = coefficients * scale
        return coefficients @ components + mean

    def bytes_per_vector(self, dim: int) -> float:
        return float(self.dim * (1 if self.dtype == "int8" else 2))

    def model_bytes(self) -> int:
        return 0 if self.components is None else 4 * (self.components.size + 2 * self.dim + len(self.mean))


class PQCodec(Codec):
    """Product quantisation with asymmetric scoring: ``m`` sub-vectors, each one of ``2**bits`` centroids.

    ``opq`` first learns an orthogonal rotation ``R`` that balances the sub-spaces (OPQ, alternating a
    PQ fit and an orthogonal Procrustes step); the query is rotated once, so ``Q·x̂ = (Q R)·ŷ``. Scored
    by decoding blocks of codes (a codebook gather) and one matrix product: the same value as summing
    per-sub-space look-up tables, as :meth:`score_lut` does.
    """

    def __init__(
        self, m: int, bits: int = 8, *, opq: bool = False, iterations: int = 15, opq_rounds: int = 4
    ) -> None:
        if bits not in (4, 8):
            msg = f"PQ bits must be 4 or 8, got {bits}"
            raise ValueError(msg)
        self.m = m
        self.bits = bits
        self.opq = opq
        self.iterations = iterations
        self.opq_rounds = opq_rounds
        self.name = f"{'opq' if opq else 'pq'}{m}x{bits}"
        self.trained = True
        self.codebooks: np.ndarray | None = None  # (m, 2**bits, d / m)
        self.rotation: np.ndarray | None = None  # (d, d) with opq

    def _split(self, vectors: np.ndarray) -> np.ndarray:
        t, d = vectors.shape
        if d % self.m or (self.bits == 4 and self.m % 2):
            msg = f"dimension {d} is not a multiple of m={self.m} (m must be even with 4 bits)"
            raise ValueError(msg)
        return vectors.reshape(t, self.m, d // self.m)

    def _fit_codebooks(self, sample: np.ndarray, seed: int) -> np.ndarray:
        parts = self._split(sample)
        k = 1 << self.bits
        return np.stack(
            [kmeans(parts[:, j], k, iterations=self.iterations, seed=seed + j)[0] for j in range(self.m)]
        )

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        sample = np.asarray(sample, dtype=np.float32)
        if not self.opq:
            self.codebooks = self._fit_codebooks(sample, seed)
            return
        rotation = np.eye(sample.shape[1], dtype=np.float32)
        for step in range(self.opq_rounds):
            rotated = sample @ rotation
            self.codebooks = self._fit_codebooks(rotated, seed + 1000 * step)
            reconstructed = self._decode_rotated(self._assign(rotated))
            # Orthogonal Procrustes: the rotation that best maps the sample onto its reconstruction.
            u, _, vt = np.linalg.svd(sample.T.astype(np.float64) @ reconstructed, full_matrices=False)
            rotation = (u @ vt).astype(np.float32)
        self.rotation = rotation
        self.codebooks = self._fit_codebooks(sample @ rotation, seed)

    def _require(self) -> np.ndarray:
        if self.codebooks is None:
            msg = f"{self.name} is not trained: call fit() on a sample of the index's vectors first"
            raise RuntimeError(msg)
        return self.codebooks

    def _assign(self, vectors: np.ndarray) -> np.ndarray:
        codebooks = self._require()
        parts = self._split(np.asarray(vectors, dtype=np.float32))
        codes = np.empty((len(vectors), self.m), dtype=np.uint8)
        for j in range(self.m):
            codes[:, j] = nearest(np.ascontiguousarray(parts[:, j]), codebooks[j])
        return codes

    def _decode_rotated(self, codes: np.ndarray) -> np.ndarray:
        codebooks = self._require()
        m, k, d_sub = codebooks.shape
        # One row gather from the stacked codebooks (torch: numpy's fancy indexing was 3x slower).
        rows = torch.from_numpy(codes.astype(np.int64)) + torch.arange(m) * k
        table = torch.from_numpy(codebooks.reshape(m * k, d_sub))
        return table.index_select(0, rows.reshape(-1)).reshape(len(codes), m * d_sub).numpy()

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.rotation is not None:
            vectors = vectors @ self.rotation
        codes = self._assign(vectors)
        if self.bits == 4:  # two 4-bit codes per byte
            codes = codes[:, 0::2] | (codes[:, 1::2] << 4)
        return {"codes": codes}

    def _unpack(self, codes: np.ndarray) -> np.ndarray:
        if self.bits == 8:
            return codes
        unpacked = np.empty((len(codes), self.m), dtype=np.uint8)
        unpacked[:, 0::2] = codes & 15
        unpacked[:, 1::2] = codes >> 4
        return unpacked

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return self._decode_rotated(self._unpack(codes["codes"]))

    def prepare_query(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        query = np.asarray(query, dtype=np.float32)
        if self.rotation is not None:
            query = query @ self.rotation
        return np.ascontiguousarray(query), np.zeros(len(query), dtype=np.float32)

    def decode(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        decoded = self.widen(codes)
        return decoded @ self.rotation.T if self.rotation is not None else decoded

    def score_lut(
        self, query: np.ndarray, codes: dict[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """:meth:`score` through per-sub-space look-up tables (ADC as in the PQ paper), for comparison."""
        prepared, _ = self.prepare_query(query)
        codebooks = torch.from_numpy(self._require())
        parts = torch.from_numpy(np.ascontiguousarray(self._split(prepared)))  # (N_q, m, d_sub)
        lut = torch.einsum("qms,mks->mkq", parts, codebooks).contiguous()  # (m, K, N_q)
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        out = np.zeros(len(starts), dtype=np.float32)
        if not len(starts) or not lengths.sum():
            return out
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        rows += np.arange(int(lengths.sum()))
        block = torch.from_numpy(self._unpack(codes["codes"][rows]).astype(np.int64))
        sim = torch.zeros((len(rows), len(prepared)))
        for j in range(self.m):
            sim += lut[j].index_select(0, block[:, j])
        offsets = np.concatenate([[0], np.cumsum(lengths)])[:-1]
        nonempty = lengths > 0
        maxes = np.maximum.reduceat(sim.numpy(), offsets[nonempty], axis=0)
        out[nonempty] = maxes.mean(axis=1)
        return out

    def bytes_per_vector(self, dim: int) -> float:
        return self.m * self.bits / 8.0

    def model_bytes(self) -> int:
        size = 0 if self.codebooks is None else 4 * self.codebooks.size
        return size + (0 if self.rotation is None else 4 * self.rotation.size)


class ResidualCodec(Codec):
    """ColBERTv2-style codes: the nearest of ``n_centroids`` centroids plus a 1-bit residual per dimension.

    The residual's sign picks, per dimension, the mean of the negative or of the positive residuals of
    that dimension over the training sample (two float32 values per dimension).
    """

    def __init__(self, n_centroids: int = 4096) -> None:
        self.n_centroids = n_centroids
        self.name = f"residual{n_centroids}-1b"
        self.trained = True
        self.centroids: np.ndarray | None = None
        self.levels: np.ndarray | None = None  # (2, d): value of bit 0 and of bit 1 per dimension

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        sample = np.asarray(sample, dtype=np.float32)
        k = min(self.n_centroids, len(sample))
        self.centroids, assignment = kmeans(sample, k, iterations=10, seed=seed, spherical=True)
        residual = sample - self.centroids[assignment]
        negative = np.where(residual < 0, residual, 0).sum(0) / np.maximum((residual < 0).sum(0), 1)
        positive = np.where(residual >= 0, residual, 0).sum(0) / np.maximum((residual >= 0).sum(0), 1)
        self.levels = np.stack([negative, positive]).astype(np.float32)

    def _require(self) -> tuple[np.ndarray, np.ndarray]:
        if self.centroids is None or self.levels is None:
            msg = f"{self.name} is not trained: call fit() on a sample of the index's vectors first"
            raise RuntimeError(msg)
        return self.centroids, self.levels

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        centroids, _ = self._require()
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.empty(len(vectors), dtype=np.uint16)
        c = torch.from_numpy(centroids)
        for begin in range(0, len(vectors), 16_384):
            block = torch.from_numpy(vectors[begin : begin + 16_384])
            ids[begin : begin + len(block)] = (block @ c.T).argmax(1).numpy().astype(np.uint16)
        residual = vectors - centroids[ids.astype(np.int64)]
        return {"centroid": ids, "bits": np.packbits(residual >= 0, axis=1)}

    def _byte_table(self) -> torch.Tensor:
        """``(ceil(d/8) * 256, 8)``: the residual of 8 dimensions for each byte position and value."""
        _, levels = self._require()
        if getattr(self, "_table_for", None) is not levels:
            dim = levels.shape[1]
            padded = np.zeros((2, 8 * math.ceil(dim / 8)), dtype=np.float32)
            padded[:, :dim] = levels
            # bit k of byte value v (np.packbits puts the first dimension in the most significant bit)
            bits = (np.arange(256)[:, None] >> np.arange(7, -1, -1)[None, :]) & 1  # (256, 8)
            low = padded[0].reshape(-1, 8)  # (d/8, 8)
            high = padded[1].reshape(-1, 8)
            table = low[:, None, :] + bits[None, :, :] * (high - low)[:, None, :]  # (d/8, 256, 8)
            self._table = torch.from_numpy(np.ascontiguousarray(table.reshape(-1, 8), dtype=np.float32))
            self._table_for = levels
        return self._table

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        centroids, _ = self._require()
        dim = centroids.shape[1]
        # Two row gathers in torch: the centroids, and per byte of residual bits its 8 decoded values
        # (a (d/8 * 256, 8) table): 3x faster than shifting the bits out one by one.
        ids = torch.from_numpy(codes["centroid"].astype(np.int64))
        out = torch.from_numpy(centroids).index_select(0, ids)
        packed = torch.from_numpy(np.ascontiguousarray(codes["bits"])).to(torch.int64)
        index = packed + torch.arange(packed.shape[1]) * 256
        residual = self._byte_table().index_select(0, index.reshape(-1)).reshape(len(packed), -1)
        out += residual[:, :dim]
        return out.numpy()

    def score_tables(self, query: np.ndarray) -> torch.Tensor:
        """``(ceil(d/8) * 256 + K, N_q)``: each stored byte's and centroid's share of ``Q·x̂`` per query token.

        Row ``256 b + v`` is the bits part of byte position ``b`` holding ``v``; row ``ceil(d/8)*256 + c``
        is ``Q·(centroid c + low)``. A vector's scores are the sum of ``ceil(d/8) + 1`` rows.
        """
        centroids, levels = self._require()
        query = np.ascontiguousarray(query, dtype=np.float32)
        n_bytes = math.ceil(centroids.shape[1] / 8)
        padded = np.zeros((len(query), 8 * n_bytes), dtype=np.float32)
        padded[:, : query.shape[1]] = query * (levels[1] - levels[0])
        bits = ((np.arange(256)[:, None] >> np.arange(7, -1, -1)[None, :]) & 1).astype(np.float32)
        # (n_bytes, 256, 8) @ (n_bytes, 8, N_q): one small batched product.
        parts = torch.from_numpy(
            np.ascontiguousarray(padded.reshape(len(query), n_bytes, 8).transpose(1, 2, 0))
        )
        bytes_part = torch.matmul(torch.from_numpy(bits), parts).reshape(n_bytes * 256, len(query))
        centroid_part = torch.from_numpy(centroids @ query.T + (query @ levels[0])[None, :])
        return torch.cat([bytes_part, centroid_part])

    def score(
        self, query: np.ndarray, codes: dict[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        """MaxSim without decoding: per vector, one ``embedding_bag`` sum of :meth:`score_tables` rows."""
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        out = np.zeros(len(starts), dtype=np.float32)
        if len(starts) == 0 or len(query) == 0 or not lengths.sum():
            return out
        tables = self.score_tables(query)
        n_bytes = codes["bits"].shape[1]
        byte_offsets = torch.arange(n_bytes) * 256
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        block = max(65_536, int(lengths.max()))
        i = 0
        while i < len(starts):
            j = max(i + 1, int(np.searchsorted(offsets, offsets[i] + block, side="right")) - 1)
            rows = np.repeat(starts[i:j] - offsets[i:j], lengths[i:j]) + np.arange(offsets[i], offsets[j])
            if len(rows):
                packed = torch.from_numpy(codes["bits"][rows]).to(torch.int64) + byte_offsets
                ids = torch.from_numpy(codes["centroid"][rows].astype(np.int64)) + n_bytes * 256
                sim = torch.nn.functional.embedding_bag(
                    torch.cat([packed, ids[:, None]], 1), tables, mode="sum"
                )
                nonempty = lengths[i:j] > 0
                maxes = np.maximum.reduceat(sim.numpy(), offsets[i:j][nonempty] - offsets[i], axis=0)
                out[i:j][nonempty] = maxes.mean(axis=1)
            i = j
        return out

    def bytes_per_vector(self, dim: int) -> float:
        return 2.0 + math.ceil(dim / 8)

    def model_bytes(self) -> int:
        return 0 if self.centroids is None else 4 * (self.centroids.size + self.levels.size)


class EngineResidualCodec(Codec):
    """The engine's residual codec (:class:`m3_integrations.index.colbert_codecs.ResidualCodec`), 1 or 2 bits.

    Scored as the engine scores it (:func:`m3_integrations.scoring.colbert_scores_lookup`), so the study
    measures the code that ``colbert_storage="compact"`` runs.
    """

    def __init__(self, n_centroids: int = 1024, bits: int = 2) -> None:
        self.n_centroids = n_centroids
        self.bits = bits
        self.name = f"m3res{n_centroids}-{bits}b"
        self.trained = True
        self.codec: core.ResidualCodec | None = None

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        n = min(self.n_centroids, len(sample))
        self.codec = core.ResidualCodec.train(sample, bits=self.bits, n_centroids=n, seed=seed)

    def _require(self) -> core.ResidualCodec:
        if self.codec is None:
            msg = f"{self.name} is not trained: call fit() on a sample of the index's vectors first"
            raise RuntimeError(msg)
        return self.codec

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        ids, residual = self._require().encode(vectors)
        return {"centroid": ids, "residual": residual}

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        return self._require().decode(codes["centroid"], codes["residual"])

    def score(
        self, query: np.ndarray, codes: dict[str, np.ndarray], starts: np.ndarray, lengths: np.ndarray
    ) -> np.ndarray:
        codec = self._require()
        return scoring.colbert_scores_lookup(
            codec.query_tables(query),
            (codes["centroid"], codes["residual"]),
            codec.code_offsets(),
            starts,
            lengths,
        )

    def bytes_per_vector(self, dim: int) -> float:
        return 2.0 + math.ceil(dim * self.bits / 8)

    def model_bytes(self) -> int:
        return 0 if self.codec is None else self._require().model_bytes()


class SignCodec(Codec):
    """Sign bits of ``x - μ`` with one float16 scale per vector: ``x̂ = μ + α · sign(x - μ)``.

    ``α`` is the mean absolute deviation of the vector from ``μ`` (the least-squares scale for signs).
    """

    name = "sign-1b"
    trained = True

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> None:
        self.mean = np.asarray(sample, dtype=np.float32).mean(axis=0)

    def _require(self) -> np.ndarray:
        if self.mean is None:
            msg = f"{self.name} is not trained: call fit() on a sample of the index's vectors first"
            raise RuntimeError(msg)
        return self.mean

    def encode(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        centred = np.asarray(vectors, dtype=np.float32) - self._require()
        return {
            "bits": np.packbits(centred >= 0, axis=1),
            "scale": np.abs(centred).mean(axis=1).astype(np.float16),
        }

    def widen(self, codes: dict[str, np.ndarray]) -> np.ndarray:
        mean = self._require()
        signs = np.unpackbits(codes["bits"], axis=1, count=len(mean)).astype(np.float32) * 2 - 1
        return mean + signs * codes["scale"].astype(np.float32)[:, None]

    def bytes_per_vector(self, dim: int) -> float:
        return math.ceil(dim / 8) + 2.0

    def model_bytes(self) -> int:
        return 0 if self.mean is None else 4 * len(self.mean)


# ----------------------------------------------------------------------------- storage
@dataclass
class StoredCorpus:
    """A corpus's ColBERT codes back to back: document ``i`` is rows ``starts[i]:starts[i]+lengths[i]``."""

    codes: dict[str, np.ndarray]
    starts: np.ndarray
    lengths: np.ndarray
    original_lengths: np.ndarray
    info: dict[str, float] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the per-vector codes (and per-vector scales)."""
        return int(sum(a.nbytes for a in self.codes.values()))


class Storage:
    """A storage setting: optional token pooling at index time, then a codec.

    Example:
        >>> storage = Storage(Float16Codec(), pool_factor=2, renormalize=False)
        >>> storage.name
        'pool2-raw+float16'
    """

    def __init__(
        self,
        codec: Codec,
        *,
        pool_factor: float = 1,
        pool_method: Literal["ward", "kmeans"] = "ward",
        renormalize: bool = True,
    ) -> None:
        self.codec = codec
        self.pool_factor = pool_factor
        self.pool_method = pool_method
        self.renormalize = renormalize

    @property
    def name(self) -> str:
        if self.pool_factor == 1:
            return self.codec.name
        pool = f"pool{self.pool_factor:g}" + ("-km" if self.pool_method == "kmeans" else "")
        return f"{pool}{'' if self.renormalize else '-raw'}+{self.codec.name}"

    def pool(self, docs: list[np.ndarray]) -> list[np.ndarray]:
        """Each document's vectors after token pooling (unchanged without pooling)."""
        if self.pool_factor == 1:
            return docs
        return [
            pool_tokens(d, self.pool_factor, method=self.pool_method, renormalize=self.renormalize)
            for d in docs
        ]

    def build(
        self,
        docs: list[np.ndarray],
        *,
        sample_size: int = 65_536,
        seed: int = 0,
        pooled: list[np.ndarray] | None = None,
    ) -> StoredCorpus:
        """Pool, train the codec on a sample of the pooled vectors, and encode every document.

        ``pooled`` passes the documents already pooled the same way (shared between settings).
        """
        start = time.perf_counter()
        if pooled is None:
            pooled = self.pool(docs)
        pool_seconds = time.perf_counter() - start
        lengths = np.asarray([len(d) for d in pooled], dtype=np.int64)
        flat = np.concatenate([d for d in pooled if len(d)]).astype(np.float32, copy=False)
        start = time.perf_counter()
        if self.codec.trained:
            rng = np.random.default_rng(seed)
            pick = rng.choice(len(flat), size=min(sample_size, len(flat)), replace=False)
            self.codec.fit(flat[np.sort(pick)], seed=seed)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        codes = self.codec.encode(flat)
        encode_seconds = time.perf_counter() - start
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        original = np.asarray([len(d) for d in docs], dtype=np.int64)
        info = {"pool_s": pool_seconds, "fit_s": fit_seconds, "encode_s": encode_seconds}
        return StoredCorpus(codes, starts, lengths, original, info)

    def score(self, query: np.ndarray, stored: StoredCorpus, rows: np.ndarray | None = None) -> np.ndarray:
        """MaxSim of ``query`` against the documents ``rows`` (default: all) of ``stored``."""
        if rows is None:
            return self.codec.score(query, stored.codes, stored.starts, stored.lengths)
        return self.codec.score(query, stored.codes, stored.starts[rows], stored.lengths[rows])

    def bytes_per_document(self, stored: StoredCorpus, n_documents_amortised: int | None = None) -> float:
        """Mean stored bytes per document: codes + per-vector scales + trained parameters amortised."""
        n = len(stored.lengths)
        model = self.codec.model_bytes() / (n_documents_amortised or n)
        return stored.nbytes / n + model


def drift_ratio(codec: Codec, training_sample: np.ndarray, new_vectors: np.ndarray) -> float:
    """Mean squared reconstruction error of ``new_vectors`` over that of the training sample.

    About 1 while new documents look like the ones the codec was trained on; a ratio well above 1
    (the study suggests retraining at 1.5) says the codebooks no longer fit the index.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> data = unit(rng.standard_normal((2000, 16)) * np.r_[np.ones(4) * 5, np.ones(12)])
        >>> codec = PCACodec(4, "float16")
        >>> codec.fit(data[:1000])
        >>> round(drift_ratio(codec, data[:1000], data[1000:]), 1)
        1.0
    """

    def error(vectors: np.ndarray) -> float:
        vectors = np.asarray(vectors, dtype=np.float32)
        return float(((codec.decode(codec.encode(vectors)) - vectors) ** 2).sum(axis=1).mean())

    base = error(training_sample)
    return error(new_vectors) / base if base > 0 else float("inf")
