"""The ColBERT store of ``colbert_storage="compact"``: pooled vectors as residual codes.

Same interface as :class:`~m3_integrations.index.storage.ColbertStore` (``prepare``/``append``,
``scores``, ``max_norm``, ``keep_rows``, ``memory_bytes``, ``to_arrays``/``restore``), over the codec of
:mod:`m3_integrations.index.colbert_codecs`:

- every document's vectors are token-pooled at add time (:func:`~.colbert_codecs.pool_tokens`);
- until the store holds :data:`~.colbert_codecs.TRAIN_MIN_VECTORS` pooled vectors, they are kept in
  float16 (a small index is scored as exactly as ``"exact"`` storage of pooled vectors);
- the add that crosses that size trains a :class:`~.colbert_codecs.ResidualCodec` on a random sample
  (at most :data:`~.colbert_codecs.TRAIN_SAMPLE`) of the stored vectors and converts them all to codes;
  later adds (after a save and load too) are encoded with the same codec;
- :meth:`CompactColbertStore.drift` compares the reconstruction error of the vectors added since
  training with the training sample's: a ratio well above 1 (say 1.5) says the codec no longer fits,
  and :meth:`M3Index.retrain_colbert <m3_integrations.M3Index.retrain_colbert>` re-encodes the documents.

Example:
    >>> import numpy as np
    >>> store = CompactColbertStore(4, train_min_vectors=10**9)  # never trains: pooled float16
    >>> store.append(store.prepare([np.eye(4, dtype=np.float32)], 1))
    >>> store.n_vectors, store.trained  # 4 tokens pooled into 2 vectors
    (2, False)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from m3_integrations import scoring
from m3_integrations.index.colbert_codecs import (
    POOL_FACTOR,
    RESIDUAL_BITS,
    TRAIN_MIN_VECTORS,
    TRAIN_SAMPLE,
    ResidualCodec,
    pool_tokens,
)
from m3_integrations.index.row_parts import RowParts, score_by_part
from m3_integrations.index.storage import _parts, _vector_rows, new_epoch

__all__ = ["CompactColbertStore", "PreparedCompact"]

logger = logging.getLogger(__name__)


class PreparedCompact(NamedTuple):
    """New documents' pooled vectors (float32, back to back), their lengths, and their codes if encoded."""

    pooled: np.ndarray
    lengths: np.ndarray
    codec: ResidualCodec | None
    codes: tuple[np.ndarray, np.ndarray] | None


class CompactColbertStore:
    """Pooled ColBERT vectors of all documents: float16 until the codec is trained, then residual codes.

    Args:
        dim: width of the vectors.
        bits: residual bits per dimension (1 or 2); default :data:`~.colbert_codecs.RESIDUAL_BITS`.
        train_min_vectors: pooled vectors at which the codec is trained (see the module); default
            :data:`~.colbert_codecs.TRAIN_MIN_VECTORS`.
        train_sample: most vectors the codec is trained on; default :data:`~.colbert_codecs.TRAIN_SAMPLE`.
        seed: seed of the training sample and of k-means.
    """

    def __init__(
        self,
        dim: int,
        *,
        bits: int | None = None,
        train_min_vectors: int | None = None,
        train_sample: int | None = None,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        # Defaults read now (not at import), so that a test can lower them for a tiny index.
        self.bits = RESIDUAL_BITS if bits is None else bits
        self.train_min_vectors = TRAIN_MIN_VECTORS if train_min_vectors is None else train_min_vectors
        self.train_sample = TRAIN_SAMPLE if train_sample is None else train_sample
        self.seed = seed
        self.restore(np.zeros((0, dim), dtype=np.float16), np.zeros(0, dtype=np.int64))

    # ------------------------------------------------------------------ state
    def restore(
        self,
        vectors: np.ndarray | Sequence[np.ndarray],
        lengths: np.ndarray,
        *,
        codec: ResidualCodec | None = None,
        codes: tuple[np.ndarray | Sequence[np.ndarray], np.ndarray | Sequence[np.ndarray]] | None = None,
        drift: tuple[float, int] = (0.0, 0),
    ) -> None:
        """Replace the store: float16 ``vectors`` (untrained), or ``codec`` and its ``codes`` (ids, residual).

        Each array may be a list of parts, one per saved segment holding whole documents (mapped parts
        stay mapped). ``drift`` is ``(sum of squared errors, count)`` of the vectors added since training.
        """
        self.codec = codec
        n_bytes = -(-self.dim * self.bits // 8)
        self._vectors = RowParts.from_parts(
            _parts(vectors) if codec is None else [], np.dtype(np.float16), (self.dim,)
        )
        ids, residual = codes if codes is not None else ([], [])
        self._ids = RowParts.from_parts(_parts(ids), np.dtype(np.uint16), ())
        self._residual = RowParts.from_parts(_parts(residual), np.dtype(np.uint8), (n_bytes,))
        self._lengths = np.asarray(lengths, dtype=np.int64)
        self._starts = np.cumsum(self._lengths) - self._lengths
        self._drift_sum, self._drift_count = float(drift[0]), int(drift[1])
        self._max_norm: float | None = None
        self.epoch = new_epoch()

    @property
    def trained(self) -> bool:
        """Whether the vectors are stored as codes (the codec is trained)."""
        return self.codec is not None

    @property
    def n_vectors(self) -> int:
        """How many (pooled) vectors are stored, tombstoned documents' included."""
        return len(self._vectors) if self.codec is None else len(self._ids)

    # ------------------------------------------------------------------ adding
    def prepare(self, vectors: Sequence[np.ndarray] | None, n_new: int) -> PreparedCompact:
        """New documents' vectors, checked and pooled (and encoded when the codec is trained).

        Raises:
            ValueError: not one array per document, arrays of another width, or non-finite values.
        """
        if vectors is None or len(vectors) != n_new:
            msg = "ColBERT vectors are required (one array per document) with store_colbert=True"
            raise ValueError(msg)
        pooled = self.pool(vectors)
        lengths = np.asarray([len(p) for p in pooled], dtype=np.int64)
        flat = np.concatenate(pooled) if n_new else np.zeros((0, self.dim), dtype=np.float32)
        codec = self.codec
        codes = codec.encode(flat) if codec is not None else None
        return PreparedCompact(flat, lengths, codec, codes)

    def pool(self, vectors: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each document's vectors checked and token-pooled (float32).

        Raises:
            ValueError: arrays of another width, or non-finite values.
        """
        pooled = []
        for v in vectors:
            array = np.asarray(v, dtype=np.float32)
            if len(array) and (array.ndim != 2 or array.shape[1] != self.dim):
                msg = f"ColBERT vectors must have {self.dim} columns, got shape {np.shape(v)}"
                raise ValueError(msg)
            if len(array) and not np.isfinite(array).all():
                msg = "ColBERT vectors hold NaN or infinite values"
                raise ValueError(msg)
            pooled.append(
                pool_tokens(array, POOL_FACTOR) if len(array) else np.zeros((0, self.dim), np.float32)
            )
        return pooled

    @property
    def lengths(self) -> np.ndarray:
        """Stored (pooled) vectors per row, tombstones included."""
        return self._lengths

    def append(self, prepared: PreparedCompact) -> None:
        """Add prepared documents at the end; the add that reaches ``train_min_vectors`` trains the codec."""
        used = self.n_vectors
        if self.codec is None:
            self._vectors.append(prepared.pooled.astype(np.float16))
        else:
            codes = prepared.codes
            if prepared.codec is not self.codec or codes is None:  # trained since prepare: encode again
                codes = self.codec.encode(prepared.pooled)
            self._ids.append(codes[0])
            self._residual.append(codes[1])
            errors = ((self.codec.decode(*codes) - prepared.pooled) ** 2).sum(axis=1)
            self._drift_sum += float(errors.sum())
            self._drift_count += len(errors)
        starts = used + np.cumsum(prepared.lengths) - prepared.lengths
        self._starts = np.concatenate([self._starts, starts.astype(np.int64)])
        self._lengths = np.concatenate([self._lengths, prepared.lengths])
        self._max_norm = None
        if self.codec is None and self.n_vectors >= self.train_min_vectors:
            self.train()

    def train(self, sample: np.ndarray | None = None) -> None:
        """Train the codec and convert the stored vectors to codes.

        ``sample`` (exact vectors) defaults to a random sample of the stored float16 vectors. Only an
        untrained store holds vectors to convert; see :meth:`replace_all` for a trained one.

        Raises:
            ValueError: the store is already trained, or there is nothing to train on.
        """
        if self.codec is not None:
            msg = "the ColBERT codec is already trained (retrain through M3Index.retrain_colbert)"
            raise ValueError(msg)
        stored = self._vectors.slice(0, self.n_vectors)
        if sample is None:
            sample = self._sample(stored).astype(np.float32)
        logger.info("training the compact ColBERT codec on %d of %d vectors", len(sample), len(stored))
        codec = ResidualCodec.train(sample, bits=self.bits, seed=self.seed)
        codes = codec.encode(stored.astype(np.float32))
        # Swapped in only now: a failure above leaves the float16 vectors as they were.
        self.restore(stored, self._lengths, codec=codec, codes=codes)

    def _sample(self, vectors: np.ndarray) -> np.ndarray:
        if len(vectors) == 0:
            msg = "no ColBERT vectors are stored to train the codec on"
            raise ValueError(msg)
        rng = np.random.default_rng(self.seed)
        pick = np.sort(rng.choice(len(vectors), size=min(self.train_sample, len(vectors)), replace=False))
        return np.asarray(vectors[pick])

    def replace_all(
        self, codec: ResidualCodec, codes: tuple[np.ndarray, np.ndarray], lengths: np.ndarray
    ) -> None:
        """Install a newly trained codec with the codes of every row (lengths per row, as now)."""
        if len(lengths) != len(self._lengths):
            msg = f"codes for {len(lengths)} documents, the store has {len(self._lengths)}"
            raise ValueError(msg)
        self.restore([], lengths, codec=codec, codes=codes)

    def retrain(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], list[np.ndarray]],
        *,
        batch_size: int,
        show_progress: bool = False,
        seed: int = 0,
    ) -> None:
        """Train a new codec on the documents' vectors encoded again from ``texts``, then re-encode all.

        Codes cannot give back the vectors they approximate, so ``encode`` (texts to ColBERT vectors)
        is called on every stored row's text, in batches of ``batch_size``: first on a random sample of
        rows, enough for ``train_sample`` pooled vectors, which trains the codec, then on the other rows.
        Nothing changes until every row is encoded (:meth:`replace_all`).

        Args:
            texts: one text per stored row, tombstones included.
            encode: the ColBERT vectors of a batch of texts.
            batch_size: texts per call of ``encode``.
            show_progress: show a progress bar.
            seed: seeds the sample of rows and of vectors, and the codec's training.
        """
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        covered = np.cumsum(self.lengths[order])
        sample_rows = np.sort(order[: int(np.searchsorted(covered, self.train_sample)) + 1])
        progress = tqdm(
            total=len(texts) + len(sample_rows), desc="retraining ColBERT", disable=not show_progress
        )
        with progress:
            pooled: dict[int, np.ndarray] = {}
            for begin in range(0, len(sample_rows), batch_size):
                rows = sample_rows[begin : begin + batch_size]
                vectors = self.pool(encode([texts[r] for r in rows]))
                pooled.update(zip(rows.tolist(), vectors, strict=True))
                progress.update(len(rows))
            sample = np.concatenate([pooled[r] for r in sample_rows.tolist()])
            if len(sample) > self.train_sample:
                sample = sample[np.sort(rng.choice(len(sample), size=self.train_sample, replace=False))]
            codec = ResidualCodec.train(sample, bits=self.bits, seed=seed)
            ids, bits, lengths = [], [], []
            for begin in range(0, len(texts), batch_size):
                rows = list(range(begin, min(begin + batch_size, len(texts))))
                missing = [r for r in rows if r not in pooled]
                fresh = dict(zip(missing, self.pool(encode([texts[r] for r in missing])), strict=True))
                for r in rows:
                    vectors = pooled.pop(r) if r in pooled else fresh[r]
                    row_ids, row_bits = codec.encode(vectors)
                    ids.append(row_ids)
                    bits.append(row_bits)
                    lengths.append(len(vectors))
                progress.update(len(rows))
        self.replace_all(
            codec, (np.concatenate(ids), np.concatenate(bits)), np.asarray(lengths, dtype=np.int64)
        )

    def reserve(self, vectors: int) -> None:
        """Room for ``vectors`` more vectors without copying on the way."""
        if self.codec is None:
            self._vectors.reserve(vectors)
        else:
            self._ids.reserve(vectors)
            self._residual.reserve(vectors)

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep only the documents ``rows``, in order, their vectors back to back again (in memory)."""
        lengths = self._lengths[rows]
        keep = _vector_rows(self._starts[rows], lengths)
        drift = (self._drift_sum, self._drift_count)
        if self.codec is None:
            self.restore(self._vectors.take(keep), lengths.copy(), drift=drift)
        else:
            self.restore(
                [],
                lengths.copy(),
                codec=self.codec,
                codes=(self._ids.take(keep), self._residual.take(keep)),
                drift=drift,
            )

    # ------------------------------------------------------------------ reading
    def scores(
        self, query: np.ndarray, rows: np.ndarray, *, workspace: scoring.StagingBuffer | None = None
    ) -> np.ndarray:
        """MaxSim of the exact ``query`` with the documents ``rows`` as stored (decoded codes)."""
        starts, lengths = self._starts[rows], self._lengths[rows]
        if self.codec is None:
            return score_by_part(
                [self._vectors],
                starts,
                lengths,
                lambda arrays, part_starts, part_lengths: scoring.colbert_scores_stored(
                    query, arrays[0], part_starts, part_lengths, workspace=workspace
                ),
            )
        query = np.asarray(query, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            msg = f"dimension mismatch: query has shape {query.shape}, stored vectors have {self.dim} columns"
            raise ValueError(msg)
        tables, code_offsets = self.codec.query_tables(query), self.codec.code_offsets()
        return score_by_part(
            [self._ids, self._residual],
            starts,
            lengths,
            lambda arrays, part_starts, part_lengths: scoring.colbert_scores_lookup(
                tables, arrays, code_offsets, part_starts, part_lengths
            ),
        )

    def decoded(self) -> np.ndarray:
        """Every stored vector as scored, ``(n_vectors, d)`` float32 (tests and diagnostics)."""
        used = self.n_vectors
        if self.codec is None:
            return self._vectors.slice(0, used).astype(np.float32)
        return self.codec.decode(self._ids.slice(0, used), self._residual.slice(0, used))

    def max_norm(self) -> float:
        """The largest norm of a stored vector as scored (its reconstruction); cached until the store changes.

        Computed block by block over the decoded vectors (as the float16 store does over its own):
        the codec's :meth:`~.colbert_codecs.ResidualCodec.norm_bound` also bounds it, but looser, and a
        looser bound lets the exhaustive search skip fewer rows.
        """
        if self._max_norm is None:
            largest = 0.0
            step = 65_536
            for begin in range(0, self.n_vectors, step):
                end = min(begin + step, self.n_vectors)
                if self.codec is None:
                    block = self._vectors.slice(begin, end).astype(np.float32)
                else:
                    block = self.codec.decode(self._ids.slice(begin, end), self._residual.slice(begin, end))
                largest = max(largest, float(np.linalg.norm(block, axis=1).max(initial=0.0)))
            self._max_norm = largest
        return self._max_norm

    def drift(self) -> float | None:
        """Mean squared reconstruction error of the vectors added since training over the training sample's.

        About 1 while new documents resemble the training sample; ``None`` before training or before
        any add after it.
        """
        if self.codec is None or self._drift_count == 0 or self.codec.train_error <= 0:
            return None
        return self._drift_sum / self._drift_count / self.codec.train_error

    def memory_bytes(self) -> int:
        """Bytes of the vectors or codes (mapped ones included), the per-document offsets and the codec."""
        stored = self._vectors.nbytes() + self._ids.nbytes() + self._residual.nbytes()
        codec = self.codec.model_bytes() if self.codec is not None else 0
        return int(stored + self._starts.nbytes + self._lengths.nbytes + codec)

    def mapped_bytes(self) -> int:
        """Bytes of the vectors or codes left in the index folder's files (memory-mapped)."""
        return self._vectors.mapped_bytes() + self._ids.mapped_bytes() + self._residual.mapped_bytes()

    # ------------------------------------------------------------------ persistence
    def to_arrays(self, first_row: int = 0, *, codec: bool = True, pieces: bool = False) -> dict[str, Any]:
        """Plain arrays for persistence (``colbert`` is empty once trained, ``colbert_scale`` always).

        ``colbert`` (float16), ``colbert_scale``, ``colbert_len``, and once trained ``colbert_ids``,
        ``colbert_residual``, and (unless ``codec=False``) the codec's ``colbert_centroids``,
        ``colbert_cutoffs`` and ``colbert_values``. Of the documents from ``first_row`` on. With
        ``pieces``, the stored rows are lists of views of the parts (streamed by the save).
        """
        used = self.n_vectors
        first = int(self._starts[first_row]) if first_row < len(self._starts) else used
        arrays: dict[str, Any] = {
            "colbert": self._vectors.saved(first, used, pieces=pieces),
            "colbert_scale": np.zeros(0, dtype=np.float32),
            "colbert_len": self._lengths[first_row:],
        }
        if self.codec is not None:
            arrays |= {
                "colbert_ids": self._ids.saved(first, used, pieces=pieces),
                "colbert_residual": self._residual.saved(first, used, pieces=pieces),
            }
            if codec:
                arrays |= self.codec.to_arrays()
        return arrays

    def manifest_fields(self) -> dict[str, Any]:
        """The ``colbert_codec`` manifest field: ``None`` before training."""
        if self.codec is None:
            return {"colbert_codec": None}
        return {
            "colbert_codec": {
                "kind": "residual",
                "pool_factor": POOL_FACTOR,
                "bits": self.codec.bits,
                "centroids": len(self.codec.centroids),
                "train_error": self.codec.train_error,
                "drift_sum": self._drift_sum,
                "drift_count": self._drift_count,
            }
        }

    def restore_arrays(
        self, arrays: Mapping[str, np.ndarray], codec_fields: Mapping[str, Any] | None
    ) -> None:
        """Install what :meth:`to_arrays` and :meth:`manifest_fields` saved (checked by the loader)."""
        if codec_fields is None:
            self.restore(arrays["colbert"], arrays["colbert_len"])
            return
        codec = ResidualCodec.from_arrays(arrays, codec_fields["train_error"])
        self.restore(
            [],
            arrays["colbert_len"],
            codec=codec,
            codes=(arrays["colbert_ids"], arrays["colbert_residual"]),
            drift=(codec_fields["drift_sum"], codec_fields["drift_count"]),
        )
