"""The encoding half of :class:`~m3_integrations.M3Model`: tokenizing, batching, one forward pass, pooling.

Texts are sorted by length and cut into batches within ``batch_size`` texts and ``max_batch_tokens``;
while the device runs batch i, the host turns batch i-1's copies into the per-text outputs.
:class:`M3Output` and :class:`Tokenized` are importable from :mod:`m3_integrations.model`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from m3_integrations._checkpoint import SPARSE_HEAD_FILE
from m3_integrations._utils import validate_texts

# The log of M3Model, whichever of its parts writes.
logger = logging.getLogger("m3_integrations.model")

__all__ = ["EncodingMethods", "M3Output", "Tokenized"]


@dataclass
class M3Output:
    """What :meth:`M3Model.encode` returns, in input order.

    Attributes:
        dense: float32 ``(n, d)`` L2-normalised CLS (or mean-pooled) vectors, or ``None``.
        lexical_weights: per text, token id → weight (special tokens and zeros dropped), or ``None``.
        colbert_vecs: per text, float32 ``(len_i - 1, d)`` L2-normalised token vectors, or ``None``.
        num_tokens: per text, the number of tokens after truncation (special tokens included).
    """

    dense: np.ndarray | None = None
    lexical_weights: list[dict[int, float]] | None = None
    colbert_vecs: list[np.ndarray] | None = None
    num_tokens: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.num_tokens)


class Tokenized(NamedTuple):
    """What :meth:`M3Model.tokenize` returns, in input order.

    Attributes:
        input_ids: per text, its token ids (after truncation).
        offsets: per text, the ``(start, end)`` character span of each token in the text (special
            tokens get ``(0, 0)``), or ``None`` unless asked for.
        num_truncated: how many texts were longer than ``max_length`` and were cut.
    """

    input_ids: list[list[int]]
    offsets: list[list[tuple[int, int]]] | None
    num_truncated: int


class EncodingMethods:
    """Encoding methods of :class:`~m3_integrations.M3Model` (a mixin over its tokenizer, encoder, heads)."""

    model_name_or_path: str
    tokenizer: Any
    model: Any
    colbert_linear: torch.nn.Linear | None
    sparse_linear: torch.nn.Linear | None
    device: torch.device
    dtype: torch.dtype
    pooling: str
    normalize_embeddings: bool
    batch_size: int
    max_batch_tokens: int
    model_max_length: int | None
    passage_max_length: int
    show_progress: bool
    dense_dim: int
    colbert_dim: int
    _tokenizer_lock: threading.Lock
    _unused_token_ids: np.ndarray
    _pad_id: int

    @property
    def has_sparse(self) -> bool:
        """Whether the checkpoint has ``sparse_linear.pt`` (lexical weights available)."""
        return self.sparse_linear is not None

    @property
    def has_colbert_head(self) -> bool:
        """Whether ColBERT vectors come from a trained ``colbert_linear.pt`` (else identity projection)."""
        return self.colbert_linear is not None

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = True,
        return_colbert: bool = False,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        instruction: str | None = None,
    ) -> M3Output:
        """Encode texts into any of the three representations with one forward pass per batch.

        Texts are sorted by length so each batch pads only to its own longest text; the output is in
        input order. Texts longer than ``max_length`` tokens are truncated with one warning per call.

        Args:
            texts: a string or a list of strings (empty strings are allowed).
            return_dense: compute the dense vectors.
            return_sparse: compute the lexical weights (needs ``sparse_linear.pt``).
            return_colbert: compute the ColBERT token vectors.
            max_length: token limit, default ``passage_max_length``.
            batch_size: texts per forward pass, default ``self.batch_size``.
            show_progress: tqdm progress bar, default ``self.show_progress``.
            instruction: a prefix prepended to every text (e5's ``"query: "``, say).

        Returns:
            An :class:`M3Output`; fields not asked for are ``None``.

        Raises:
            TypeError: a text is ``None`` or not a string (the message names its index).
            ValueError: ``return_sparse=True`` on a model without a sparse head, or bad sizes.

        Example:
            >>> from m3_integrations import M3Model  # doctest: +SKIP
            >>> out = M3Model().encode(["hello"], return_colbert=True)  # doctest: +SKIP
            >>> out.dense.shape  # doctest: +SKIP
            (1, 1024)
        """
        texts = validate_texts(texts)
        if return_sparse and not self.has_sparse:
            msg = (
                f"lexical weights are unavailable: {self.model_name_or_path!r} has no {SPARSE_HEAD_FILE}. "
                "Pass return_sparse=False, or use BM25 as the lexical signal in M3Index."
            )
            raise ValueError(msg)
        max_length = self._clamp_length(max_length or self.passage_max_length, "max_length")
        batch_size = batch_size or self.batch_size
        if batch_size <= 0:
            msg = f"batch_size must be positive, got {batch_size}"
            raise ValueError(msg)
        show = self.show_progress if show_progress is None else show_progress

        n = len(texts)
        dense = np.zeros((n, self.dense_dim), dtype=np.float32) if return_dense else None
        lexical: list[dict[int, float]] | None = [{} for _ in range(n)] if return_sparse else None
        colbert: list[np.ndarray] | None = (
            [np.zeros((0, self.colbert_dim), dtype=np.float32)] * n if return_colbert else None
        )
        if n == 0:
            return M3Output(dense=dense, lexical_weights=lexical, colbert_vecs=colbert, num_tokens=[])

        if instruction:
            texts = [instruction + t for t in texts]
        input_ids, _, truncated = self.tokenize(texts, max_length=max_length)
        if truncated:
            logger.warning(
                "%d of %d texts exceeded max_length=%d tokens and were truncated", truncated, n, max_length
            )
        lengths = np.asarray([len(ids) for ids in input_ids], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")

        progress = tqdm(total=n, desc="Encoding", unit="text", disable=not show)
        outputs = _Outputs(dense=dense, lexical=lexical, colbert=colbert)
        pending: _PendingBatch | None = None
        try:
            for batch_idx in self._batches(order, lengths, batch_size):
                # Launch batch i on the device, then post-process batch i-1 on the host while it runs.
                launched = self._launch_batch([input_ids[i] for i in batch_idx], batch_idx, outputs)
                if pending is not None:
                    self._collect_batch(pending, outputs)
                    progress.update(len(pending.positions))
                pending = launched
            if pending is not None:
                self._collect_batch(pending, outputs)
                progress.update(len(pending.positions))
        finally:
            progress.close()
        return M3Output(
            dense=dense, lexical_weights=lexical, colbert_vecs=colbert, num_tokens=lengths.tolist()
        )

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_offsets: bool = False,
    ) -> Tokenized:
        """Token ids of ``texts`` with the model's tokenizer; safe to call from many threads.

        Use this rather than calling ``model.tokenizer`` directly from several threads: a fast
        tokenizer's truncation setting lives in one shared object that every call changes.

        Args:
            texts: a string or a list of strings.
            max_length: cut each text to this many tokens (special tokens included); ``None`` keeps
                every token.
            add_special_tokens: add ``<s>``/``</s>`` (or the model's own) around each text.
            return_offsets: also return each token's character span (needs a fast tokenizer).

        Returns:
            A :class:`Tokenized` with the ids, optional offsets and the number of truncated texts.

        Raises:
            TypeError: a text is not a string.
            ValueError: ``return_offsets`` with a slow (Python) tokenizer, or a bad ``max_length``.

        Example:
            >>> from m3_integrations import M3Model  # doctest: +SKIP
            >>> M3Model().tokenize(["hello world"], add_special_tokens=False).input_ids  # doctest: +SKIP
            [[33600, 31, 8999]]
        """
        texts = validate_texts(texts)
        if max_length is not None and (not isinstance(max_length, int) or max_length <= 0):
            msg = f"max_length must be a positive integer or None, got {max_length!r}"
            raise ValueError(msg)
        if return_offsets and not getattr(self.tokenizer, "is_fast", False):
            msg = "return_offsets needs a fast tokenizer (tokenizer.json); this checkpoint has a slow one"
            raise ValueError(msg)
        if not texts:
            return Tokenized(input_ids=[], offsets=[] if return_offsets else None, num_truncated=0)
        with self._tokenizer_lock:
            encoded = self.tokenizer(
                texts,
                add_special_tokens=add_special_tokens,
                truncation=max_length is not None,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                return_offsets_mapping=return_offsets,
                verbose=False,
            )
            input_ids: list[list[int]] = [list(ids) for ids in encoded["input_ids"]]
            truncated = 0
            if max_length is not None:
                encodings = getattr(encoded, "encodings", None)
                if encodings:
                    truncated = sum(1 for enc in encodings if enc.overflowing)
                else:  # slow tokenizers: count by re-tokenising one token past the limit
                    longer = self.tokenizer(
                        texts,
                        add_special_tokens=add_special_tokens,
                        truncation=True,
                        max_length=max_length + 1,
                        padding=False,
                        verbose=False,
                    )
                    truncated = sum(1 for ids in longer["input_ids"] if len(ids) > max_length)
        offsets = (
            [[(int(a), int(b)) for a, b in spans] for spans in encoded["offset_mapping"]]
            if return_offsets
            else None
        )
        return Tokenized(input_ids=input_ids, offsets=offsets, num_truncated=truncated)

    def _batches(self, order: np.ndarray, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Split length-sorted indices into batches within ``batch_size`` texts and ``max_batch_tokens``."""
        batches: list[np.ndarray] = []
        start = 0
        while start < len(order):
            longest = int(lengths[order[start]])
            size = max(1, min(batch_size, self.max_batch_tokens // max(longest, 1)))
            batches.append(order[start : start + size])
            start += size
        return batches

    @torch.inference_mode()
    def _launch_batch(
        self, batch_ids: list[list[int]], positions: np.ndarray, outputs: _Outputs
    ) -> _PendingBatch:
        """Run the encoder and heads on one padded batch; device→host copies are queued, not awaited."""
        longest = max(len(ids) for ids in batch_ids)
        ids_np = np.full((len(batch_ids), longest), self._pad_id, dtype=np.int64)
        mask_np = np.zeros((len(batch_ids), longest), dtype=np.int64)
        for row, ids in enumerate(batch_ids):
            ids_np[row, : len(ids)] = ids
            mask_np[row, : len(ids)] = 1
        on_device = self.device.type != "cpu"
        asynchronous = self.device.type == "cuda"  # other backends: plain blocking copies
        input_ids = torch.from_numpy(ids_np).to(self.device, non_blocking=asynchronous)
        attention_mask = torch.from_numpy(mask_np).to(self.device, non_blocking=asynchronous)
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True
        ).last_hidden_state

        results: dict[str, torch.Tensor] = {}
        if outputs.dense is not None:
            results["dense"] = self._pool(hidden, attention_mask)
        if outputs.lexical is not None and self.sparse_linear is not None:
            results["lexical"] = torch.relu(self.sparse_linear(hidden)).squeeze(-1).float()
        if outputs.colbert is not None:
            tokens = hidden[:, 1:]
            vecs = self.colbert_linear(tokens) if self.colbert_linear is not None else tokens
            vecs = vecs * attention_mask[:, 1:, None].to(vecs.dtype)
            vecs = torch.nn.functional.normalize(vecs.float(), dim=-1)
            if on_device:
                # Half the bytes over the bus, widened on the host: the copy, not the heads, is what
                # costs on a GPU (the vectors are already unit length, so fp16 loses ~1e-3 at most).
                vecs = vecs.to(self.dtype)
            results["colbert"] = vecs
        event = None
        if on_device:
            results = {k: v.to("cpu", non_blocking=asynchronous) for k, v in results.items()}
            if asynchronous:
                event = torch.cuda.Event()
                event.record()
        return _PendingBatch(
            ids=ids_np,
            lengths=[len(ids) for ids in batch_ids],
            positions=positions,
            results=results,
            event=event,
        )

    def _collect_batch(self, pending: _PendingBatch, outputs: _Outputs) -> None:
        """Wait for one batch's copies and turn them into the per-text outputs."""
        if pending.event is not None:
            pending.event.synchronize()
        results = pending.results
        if outputs.dense is not None:
            outputs.dense[pending.positions] = results["dense"].numpy()
        if outputs.lexical is not None:
            weights = results["lexical"].numpy()
            for row, pos in enumerate(pending.positions):
                n_tok = pending.lengths[row]
                outputs.lexical[pos] = self._lexical_dict(pending.ids[row, :n_tok], weights[row, :n_tok])
        if outputs.colbert is not None:
            vecs = results["colbert"].float().numpy()
            for row, pos in enumerate(pending.positions):
                # a C-contiguous prefix of one row: a view, no copy
                outputs.colbert[pos] = vecs[row, : pending.lengths[row] - 1]

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        pooled = pooled.float()
        if self.normalize_embeddings:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def _lexical_dict(self, ids: np.ndarray, weights: np.ndarray) -> dict[int, float]:
        keep = (weights > 0) & ~np.isin(ids, self._unused_token_ids)
        if not keep.any():
            return {}
        ids, weights = ids[keep], weights[keep]
        unique_ids, inverse = np.unique(ids, return_inverse=True)
        best = np.zeros(len(unique_ids), dtype=np.float32)
        np.maximum.at(best, inverse, weights)  # a repeated token keeps its largest weight
        return dict(zip(unique_ids.tolist(), best.tolist(), strict=True))

    def _clamp_length(self, value: int, name: str) -> int:
        if not isinstance(value, int) or value <= 0:
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)
        if self.model_max_length is not None and value > self.model_max_length:
            logger.info(
                "%s=%d exceeds the model's %d positions; using %d",
                name,
                value,
                self.model_max_length,
                self.model_max_length,
            )
            return self.model_max_length
        return value


@dataclass
class _Outputs:
    dense: np.ndarray | None
    lexical: list[dict[int, float]] | None
    colbert: list[np.ndarray] | None


@dataclass
class _PendingBatch:
    ids: np.ndarray
    lengths: list[int]
    positions: np.ndarray
    results: dict[str, torch.Tensor]
    event: Any
