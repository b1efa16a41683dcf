"""Second-stage rerankers: a cross-encoder (bge-reranker-v2-m3 style) and M3's own three-signal rerank.

A reranker is anything with ``score(query, passages) -> (n,) array`` (the :class:`Reranker` protocol):
:meth:`M3Index.search <m3_integrations.M3Index.search>` (``rerank=``), the LangChain ``M3Reranker``
and the LlamaIndex ``M3Reranker`` all accept one, and all check its scores the same way
(:func:`checked_scores`). The two rerankers here also offer ``rerank(query, passages, top_n=None)``
(``[(index into passages, score), ...]`` best first, ties in input order; :func:`rerank_passages`).

Example:
    .. code-block:: python

        from m3_integrations import CrossEncoderReranker

        reranker = CrossEncoderReranker("BAAI/bge-reranker-v2-m3", normalize=True)
        reranker.rerank("what is bge-m3?", ["BGE-M3 is an embedding model.", "Paris is in France."])
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

from m3_integrations import fusion, scoring
from m3_integrations._utils import validate_texts

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["CrossEncoderReranker", "M3ScoreReranker", "Reranker", "checked_scores", "rerank_passages"]


@runtime_checkable
class Reranker(Protocol):
    """Anything with ``score(query, passages) -> (n,) array`` (higher is better) can rerank.

    Example:
        >>> import numpy as np
        >>> class ByLength:
        ...     def score(self, query, passages):
        ...         return np.array([len(p) for p in passages], dtype=np.float32)
        >>> isinstance(ByLength(), Reranker)
        True
        >>> rerank_passages(ByLength(), "q", ["a", "abc", "ab"], top_n=2)
        [(1, 3.0), (2, 2.0)]
    """

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance of each passage to the query (higher is better)."""
        ...


def checked_scores(reranker: Reranker, scores: Any, n_passages: int) -> np.ndarray:
    """A reranker's scores as float64, or a ``ValueError`` naming the reranker.

    A NaN, an infinity or a missing score would otherwise reorder or drop hits without a word.

    Raises:
        ValueError: not an array of numbers, the wrong shape, or a value that is not finite.
    """
    name = type(reranker).__qualname__
    try:
        values = np.asarray(scores)
    except (TypeError, ValueError) as err:
        msg = f"reranker {name} returned {type(scores).__name__}, not an array of numbers: {err}"
        raise ValueError(msg) from err
    if values.dtype.kind not in "iuf":
        msg = f"reranker {name} returned {type(scores).__name__} of {values.dtype}, not an array of numbers"
        raise ValueError(msg)
    if values.shape != (n_passages,):
        msg = f"reranker {name} returned scores of shape {values.shape} for {n_passages} passages"
        raise ValueError(msg)
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        msg = f"reranker {name} returned {values[bad[0]]} for passage {int(bad[0])} (scores must be finite)"
        raise ValueError(msg)
    return values


def rerank_passages(
    reranker: Reranker, query: str, passages: Sequence[str], top_n: int | None = None
) -> list[tuple[int, float]]:
    """Passages by descending ``reranker`` score as ``(index, score)`` pairs; at most ``top_n`` of them.

    Ties keep the input order. The scores are checked with :func:`checked_scores`.

    Raises:
        ValueError: ``top_n <= 0``, or scores that are not one finite number per passage.
    """
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n <= 0):
        msg = f"top_n must be a positive integer or None, got {top_n!r}"
        raise ValueError(msg)
    scores = checked_scores(reranker, reranker.score(query, passages), len(passages))
    order = np.argsort(-scores, kind="stable")
    if top_n is not None:
        order = order[:top_n]
    return [(int(i), float(scores[i])) for i in order]


def _check_query(query: str) -> str:
    if not isinstance(query, str):
        msg = f"query must be a string, got {type(query).__name__}"
        raise TypeError(msg)
    if not query.strip():
        msg = "query is empty"
        raise ValueError(msg)
    return query


class _RerankMethod:
    """``rerank()`` for the rerankers of this module, on top of their ``score()``."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """Passages by descending score as ``(index, score)`` pairs; at most ``top_n`` of them.

        Raises:
            ValueError: empty query or ``top_n <= 0``.
        """
        return rerank_passages(self, query, passages, top_n)


class CrossEncoderReranker(_RerankMethod):
    """A sequence-classification cross-encoder such as ``BAAI/bge-reranker-v2-m3`` (XLM-R, one logit).

    Each ``(query, passage)`` pair is tokenised as ``<s> query </s></s> passage </s>`` and truncated on
    the passage side only (a query longer than half of ``max_length`` is cut first). Pairs are sorted by
    length and batched so each batch pads to its own longest pair; the logit is the score, or its
    sigmoid with ``normalize=True``.

    Key init args:
        model_name_or_path: a local folder or a hub id.
        device: default CUDA when available.
        use_fp16: default ``True`` on CUDA.
        max_length: the pair's token limit (512 for bge-reranker-v2-m3).
        batch_size: pairs per forward pass.
        normalize: map logits to ``(0, 1)`` with a sigmoid.

    Example:
        .. code-block:: python

            reranker = CrossEncoderReranker("BAAI/bge-reranker-v2-m3")
            reranker.score("capital of France", ["Paris is the capital of France.", "Berlin is big."])
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = "BAAI/bge-reranker-v2-m3",
        *,
        device: str | torch.device | None = None,
        use_fp16: bool | None = None,
        max_length: int = 512,
        batch_size: int = 32,
        normalize: bool = False,
        local_files_only: bool | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        from m3_integrations import _checkpoint

        for name, value in (("max_length", max_length), ("batch_size", batch_size)):
            if not isinstance(value, int) or value <= 0:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)
        self.model_name_or_path = str(model_name_or_path)
        folder = _checkpoint.resolve_checkpoint(
            self.model_name_or_path,
            local_files_only=local_files_only,
            revision=None,
            cache_dir=None,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "pytorch_model.bin"],
            offline_hint="Offline? Pass the path of a local cross-encoder folder instead.",
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.use_fp16 = self.device.type == "cuda" if use_fp16 is None else bool(use_fp16)
        config = _checkpoint.load_config(folder, trust_remote_code=False)
        self.tokenizer = _checkpoint.load_tokenizer(
            folder, embedding_rows=int(config.vocab_size), trust_remote_code=False
        )
        # The fast tokenizer's truncation setting is shared state that every call changes.
        self._tokenizer_lock = threading.Lock()
        self.model = _checkpoint.load_encoder(
            folder, config, AutoModelForSequenceClassification, trust_remote_code=False
        )
        self.model.to(device=self.device, dtype=torch.float16 if self.use_fp16 else torch.float32)
        self.max_length = max_length
        self.batch_size = batch_size
        self.normalize = normalize

    def _encode_pairs(self, query: str, passages: list[str]) -> list[dict[str, list[int]]]:
        with self._tokenizer_lock:
            return self._encode_pairs_unlocked(query, passages)

    def _encode_pairs_unlocked(self, query: str, passages: list[str]) -> list[dict[str, list[int]]]:
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        query_ids = self.tokenizer(query, add_special_tokens=False)["input_ids"]
        limit = max(1, (self.max_length - specials) // 2)
        if len(query_ids) > limit:
            logger.warning("query of %d tokens cut to %d for the cross-encoder", len(query_ids), limit)
            query = str(self.tokenizer.decode(query_ids[:limit]))
        encoded = self.tokenizer(
            [query] * len(passages),
            passages,
            truncation="only_second",
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
        )
        keys = [key for key in ("input_ids", "token_type_ids") if key in encoded]
        return [{key: encoded[key][i] for key in keys} for i in range(len(passages))]

    @torch.inference_mode()
    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance logits (or sigmoids with ``normalize``) of each passage, ``(n,)`` float32."""
        query = _check_query(query)
        passages = validate_texts(passages, what="passages")
        out = np.zeros(len(passages), dtype=np.float32)
        if not passages:
            return out
        pairs = self._encode_pairs(query, passages)
        order = np.argsort([-len(p["input_ids"]) for p in pairs], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch_idx = order[start : start + self.batch_size]
            with self._tokenizer_lock:
                padded = self.tokenizer.pad([pairs[i] for i in batch_idx], padding=True, return_tensors="pt")
            inputs = {key: value.to(self.device) for key, value in padded.items()}
            logits = self.model(**inputs).logits[:, 0].float()
            if self.normalize:
                logits = torch.sigmoid(logits)
            out[batch_idx] = logits.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({self.model_name_or_path!r}, device={self.device!s})"


class M3ScoreReranker(_RerankMethod):
    """Re-score passages with BGE-M3's dense, lexical and ColBERT representations, fused by weight.

    The fused score is :func:`m3_integrations.fusion.weighted_fusion` — FlagEmbedding's
    ``Σ w_i s_i / Σ w_i`` — with a model without a sparse head using dense and ColBERT only.

    Example:
        .. code-block:: python

            reranker = M3ScoreReranker(M3Model("BAAI/bge-m3"), weights=(0.4, 0.2, 0.4))  # the default
            reranker.score_all("what is bge-m3?", ["BGE-M3 is an embedding model."])["colbert"]
    """

    def __init__(self, model: M3Model, *, weights: Sequence[float] = fusion.PAPER_WEIGHTS) -> None:
        values = [float(w) for w in weights]
        if len(values) != 3 or any(not np.isfinite(w) or w < 0 for w in values) or sum(values) <= 0:
            msg = f"weights must be three non-negative numbers (dense, sparse, colbert), got {weights}"
            raise ValueError(msg)
        self.model = model
        self.weights = {"dense": values[0], "sparse": values[1], "colbert": values[2]}
        if not model.has_sparse:
            self.weights.pop("sparse")
            if sum(self.weights.values()) <= 0:
                msg = "the model has no sparse head and the dense and ColBERT weights are zero"
                raise ValueError(msg)

    def score_all(self, query: str, passages: Sequence[str]) -> dict[str, np.ndarray]:
        """Every signal and the fused score: ``{"dense", "sparse", "colbert", "fused"}`` → ``(n,)``."""
        query = _check_query(query)
        passages = validate_texts(passages, what="passages")
        has_sparse = self.model.has_sparse
        q = self.model.encode_queries([query], return_sparse=has_sparse, return_colbert=True)
        p = self.model.encode_passages(passages, return_sparse=has_sparse, return_colbert=True)
        assert q.dense is not None
        assert p.dense is not None
        assert q.colbert_vecs is not None
        signals = {
            "dense": scoring.dense_scores(q.dense[0], p.dense).astype(np.float32),
            "colbert": scoring.colbert_scores(q.colbert_vecs[0], p.colbert_vecs or []),
        }
        if has_sparse:
            assert q.lexical_weights is not None
            assert p.lexical_weights is not None
            signals["sparse"] = scoring.lexical_scores(q.lexical_weights[0], p.lexical_weights)
        signals["fused"] = fusion.weighted_fusion(signals, self.weights)
        return signals

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """The fused M3 score of each passage, ``(n,)`` float32."""
        return self.score_all(query, passages)["fused"]

    def __repr__(self) -> str:
        return f"M3ScoreReranker({self.model!r}, weights={self.weights})"
