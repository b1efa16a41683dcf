"""Load a BGE-M3 checkpoint and encode dense, lexical and ColBERT representations in one forward pass."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from m3_integrations import _checkpoint, fusion, scoring
from m3_integrations._utils import validate_texts
from m3_integrations.errors import CheckpointError, MissingHeadsError

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

__all__ = ["DEFAULT_MODEL", "M3Model", "M3Output", "Tokenized", "resolve_model"]

# The checkpoint every constructor, adapter and command loads when none is named.
DEFAULT_MODEL = "BAAI/bge-m3"
COLBERT_HEAD_FILE = "colbert_linear.pt"
SPARSE_HEAD_FILE = "sparse_linear.pt"
# Models whose position ids start after the padding index (RoBERTa family): the usable length is
# max_position_embeddings - padding_idx - 1 (8194 → 8192 for bge-m3).
_ROBERTA_LIKE = {"xlm-roberta", "roberta", "camembert", "xlm-roberta-xl"}
# What a hub snapshot needs (pytorch_model.bin is used by transformers only without safetensors).
_HUB_FILES = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    COLBERT_HEAD_FILE,
    SPARSE_HEAD_FILE,
    "pytorch_model.bin",
]
_OFFLINE_HINT = (
    "Offline? Pass the path of a local checkpoint folder instead; a folder without BGE-M3's "
    f"{COLBERT_HEAD_FILE}/{SPARSE_HEAD_FILE} also needs allow_missing_heads=True (for e5: also "
    "pooling='mean', query_instruction='query: ', passage_instruction='passage: ')."
)


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


class M3Model:
    """BGE-M3 encoder: dense, lexical (sparse) and multi-vector (ColBERT) outputs from one forward pass.

    Matches FlagEmbedding's ``BGEM3FlagModel`` (fp32 CPU outputs agree to 1e-5) and runs on transformers
    4.x and 5.x.

    Setup:
        .. code-block:: bash

            pip install m3-integrations

    Which outputs each setup gives:

    ============================================  =====  =======  ==============
    checkpoint                                    dense  lexical  ColBERT
    ============================================  =====  =======  ==============
    bge-m3 layout (both ``.pt`` heads)            yes    yes      yes (trained)
    plain encoder, ``allow_missing_heads=True``   yes    no       yes (identity)
    only ``sparse_linear.pt`` + allow_missing     yes    yes      yes (identity)
    ============================================  =====  =======  ==============

    Without the heads, asking for lexical weights raises ``ValueError``; ``M3Index`` can then use BM25 as
    the lexical signal.

    Key init args:
        model_name_or_path: local folder in the bge-m3 layout, or a hub id (default ``BAAI/bge-m3``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        use_fp16: half precision; default ``True`` on CUDA, ``False`` on CPU.
        batch_size: texts per forward pass (also capped by ``max_batch_tokens``).
        query_max_length / passage_max_length: token limits of ``encode_queries`` / ``encode_passages``.
        pooling: ``"cls"`` (bge-m3) or ``"mean"`` (e5, MiniLM) for the dense vector; ``None`` reads a
            sentence-transformers folder's ``1_Pooling/config.json``, else CLS (with a warning for a plain
            encoder).
        allow_missing_heads: run a plain encoder without ``colbert_linear.pt`` / ``sparse_linear.pt``.
        query_instruction / passage_instruction: prefixes such as ``"query: "`` for e5 models.

    Raises (on construction):
        CheckpointNotFoundError: no such folder, or a hub id that cannot be fetched (the message says
            what to pass instead).
        MissingHeadsError: no ``colbert_linear.pt`` / ``sparse_linear.pt`` without ``allow_missing_heads``.
        CheckpointError: a damaged or hostile file (the message names it): see docs/core.md.

    ``tokenize``, ``encode`` and ``compute_score`` are safe to call from many threads.

    Example:
        .. code-block:: python

            from m3_integrations import M3Model

            model = M3Model("BAAI/bge-m3")
            out = model.encode_passages(["BGE-M3 is a multilingual embedding model."], return_colbert=True)
            out.dense.shape, out.lexical_weights[0], out.colbert_vecs[0].shape
            model.compute_score([("what is bge-m3?", "BGE-M3 is an embedding model.")])
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        use_fp16: bool | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 32768,
        query_max_length: int = 512,
        passage_max_length: int = 8192,
        normalize_embeddings: bool = True,
        pooling: Literal["cls", "mean"] | None = None,
        allow_missing_heads: bool = False,
        query_instruction: str | None = None,
        passage_instruction: str | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        show_progress: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModel

        if pooling not in (None, "cls", "mean"):
            msg = f"pooling must be 'cls', 'mean' or None (from the checkpoint), got {pooling!r}"
            raise ValueError(msg)
        for name, value in (
            ("batch_size", batch_size),
            ("max_batch_tokens", max_batch_tokens),
            ("query_max_length", query_max_length),
            ("passage_max_length", passage_max_length),
        ):
            if not isinstance(value, int) or value <= 0:
                msg = f"{name} must be a positive integer, got {value!r}"
                raise ValueError(msg)

        self.model_name_or_path = str(model_name_or_path)
        folder = _checkpoint.resolve_checkpoint(
            self.model_name_or_path,
            local_files_only=local_files_only,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=_HUB_FILES,
            offline_hint=_OFFLINE_HINT,
        )
        self.folder = folder
        self.device = torch.device(device) if device is not None else _default_device()
        self.use_fp16 = bool(self.device.type == "cuda") if use_fp16 is None else bool(use_fp16)
        if self.use_fp16 and self.device.type == "cpu":
            logger.warning("use_fp16=True on CPU is slow and less accurate; consider use_fp16=False")
        self.dtype = torch.float16 if self.use_fp16 else torch.float32

        # Every file is checked before the weights, the slow part, are read.
        self.config = _checkpoint.load_config(folder, trust_remote_code=trust_remote_code)
        hidden_size = int(self.config.hidden_size)
        colbert_path = folder / COLBERT_HEAD_FILE
        sparse_path = folder / SPARSE_HEAD_FILE
        missing = [p.name for p in (colbert_path, sparse_path) if not p.exists()]
        if missing and not allow_missing_heads:
            msg = (
                f"checkpoint {self.model_name_or_path!r} has no {' and no '.join(missing)} "
                f"(looked in {folder}). "
                "A BGE-M3 checkpoint ships both heads; to run a plain encoder without them pass "
                "allow_missing_heads=True (identity ColBERT projection, no lexical weights)."
            )
            raise MissingHeadsError(msg)
        self.colbert_linear: torch.nn.Linear | None = None
        if colbert_path.exists():
            self.colbert_linear = _checkpoint.load_linear_head(colbert_path, hidden_size, out_features=None)
        else:
            logger.info("no %s in %s: ColBERT vectors use an identity projection", COLBERT_HEAD_FILE, folder)
        self.sparse_linear: torch.nn.Linear | None = None
        if sparse_path.exists():
            self.sparse_linear = _checkpoint.load_linear_head(sparse_path, hidden_size, out_features=1)
        else:
            logger.info("no %s in %s: lexical weights are unavailable", SPARSE_HEAD_FILE, folder)
        self.pooling = self._resolve_pooling(pooling, folder)

        # A fast tokenizer keeps its truncation setting in the shared Rust object: each call sets it
        # and then encodes, so two threads with different limits would cut each other's texts.
        self._tokenizer_lock = threading.Lock()
        self.tokenizer = _checkpoint.load_tokenizer(
            folder, embedding_rows=int(self.config.vocab_size), trust_remote_code=trust_remote_code
        )
        self.model = _checkpoint.load_encoder(
            folder, self.config, AutoModel, trust_remote_code=trust_remote_code
        )
        _checkpoint.check_tokenizer_fits(
            self.tokenizer, int(self.model.get_input_embeddings().weight.shape[0]), folder
        )

        self.normalize_embeddings = normalize_embeddings
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.model_max_length = _model_max_length(self.config)
        self.query_max_length = self._clamp_length(query_max_length, "query_max_length")
        self.passage_max_length = self._clamp_length(passage_max_length, "passage_max_length")
        self.query_instruction = query_instruction
        self.passage_instruction = passage_instruction
        self.show_progress = show_progress

        self.model.to(device=self.device, dtype=self.dtype)
        for head in (self.colbert_linear, self.sparse_linear):
            if head is not None:
                head.to(device=self.device, dtype=self.dtype)
                head.eval()

        self.dense_dim = hidden_size
        self.colbert_dim = (
            int(self.colbert_linear.out_features) if self.colbert_linear is not None else hidden_size
        )
        self.vocab_size = len(self.tokenizer)
        # Token ids never given a lexical weight (FlagEmbedding drops cls, eos, pad and unk).
        self._unused_token_ids = np.asarray(
            sorted(
                {
                    int(i)
                    for i in (
                        self.tokenizer.cls_token_id,
                        self.tokenizer.eos_token_id,
                        self.tokenizer.pad_token_id,
                        self.tokenizer.unk_token_id,
                        self.tokenizer.bos_token_id,
                        self.tokenizer.sep_token_id,
                    )
                    if i is not None
                }
            ),
            dtype=np.int64,
        )
        self._pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        # Computed on first use, under a lock so concurrent first uses hash once.
        self._fingerprint: str | None = None
        self._fingerprint_lock = threading.Lock()

    def _resolve_pooling(self, pooling: str | None, folder: Path) -> str:
        """The pooling to use: the caller's, else the folder's sentence-transformers config, else CLS."""
        declared, source = _checkpoint.read_pooling(folder)
        if pooling is not None:
            if declared is not None and declared != pooling:
                logger.warning(
                    "pooling=%r contradicts %s in %s, which declares %r pooling; using %r as asked",
                    pooling,
                    source,
                    folder,
                    declared,
                    pooling,
                )
            return pooling
        if declared in ("cls", "mean"):
            logger.debug("pooling %r from %s in %s", declared, source, folder)
            return declared
        if declared is not None:
            msg = (
                f"{source} in {folder} declares {declared!r} pooling, which M3Model does not implement "
                "(only cls or mean): pass pooling='cls' or pooling='mean' to use one of them anyway"
            )
            raise CheckpointError(msg)
        if self.colbert_linear is None and self.sparse_linear is None:
            # BGE-M3 (heads present) is CLS-pooled by design; a plain encoder without a pooling config
            # may well be mean-pooled (e5), and CLS would give poor vectors without any error.
            logger.warning(
                "no pooling config (modules.json, 1_Pooling/config.json) in %s: using CLS pooling; "
                "pass pooling='mean' for mean-pooled encoders such as e5",
                folder,
            )
        return "cls"

    # ------------------------------------------------------------------ properties
    @property
    def has_sparse(self) -> bool:
        """Whether the checkpoint has ``sparse_linear.pt`` (lexical weights available)."""
        return self.sparse_linear is not None

    @property
    def has_colbert_head(self) -> bool:
        """Whether ColBERT vectors come from a trained ``colbert_linear.pt`` (else identity projection)."""
        return self.colbert_linear is not None

    @property
    def identity(self) -> dict[str, Any]:
        """What an index records about its model, as plain JSON values.

        Name, dimensions, heads and weight digest let an index refuse vectors from another model; the
        encoder settings (pooling, normalisation, instructions, max lengths, whether the heads were
        optional) let ``m3-integrations search`` rebuild the same query encoder. Nothing here names code
        to load: a reader takes these settings from a fixed list and checks each value.

        Example:
            .. code-block:: python

                model.identity["pooling"], model.identity["query_instruction"]  # ("mean", "query: ")
        """
        return {
            "model_name_or_path": self.model_name_or_path,
            "model_type": getattr(self.config, "model_type", None),
            "dense_dim": self.dense_dim,
            "colbert_dim": self.colbert_dim,
            "vocab_size": self.vocab_size,
            "pooling": self.pooling,
            "normalize_embeddings": bool(self.normalize_embeddings),
            "query_instruction": self.query_instruction,
            "passage_instruction": self.passage_instruction,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            # A checkpoint lacking a head loads only with allow_missing_heads=True.
            "allow_missing_heads": not (self.has_sparse and self.has_colbert_head),
            "has_sparse": self.has_sparse,
            "has_colbert_head": self.has_colbert_head,
            "fingerprint": self.fingerprint,
        }

    @property
    def fingerprint(self) -> str:
        """A digest of the config, vocabulary size, heads and embedding rows: same weights, same digest."""
        with self._fingerprint_lock:
            if self._fingerprint is None:
                self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        config = self.config.to_dict()
        for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
            config.pop(volatile, None)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        digest.update(str(self.vocab_size).encode())
        for head in (self.colbert_linear, self.sparse_linear):
            if head is not None:
                digest.update(head.weight.detach().float().cpu().numpy().tobytes())
        # A few embedding rows distinguish fine-tunes of one architecture without hashing ~1 GB.
        emb = self.model.get_input_embeddings().weight
        digest.update(emb[:8].detach().float().cpu().numpy().round(4).tobytes())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ encoding
    def encode_queries(
        self,
        queries: str | Sequence[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = True,
        return_colbert: bool = False,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> M3Output:
        """Encode queries with ``query_max_length`` and ``query_instruction``."""
        return self.encode(
            queries,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert=return_colbert,
            max_length=max_length or self.query_max_length,
            batch_size=batch_size,
            show_progress=show_progress,
            instruction=self.query_instruction,
        )

    def encode_passages(
        self,
        passages: str | Sequence[str],
        *,
        return_dense: bool = True,
        return_sparse: bool = True,
        return_colbert: bool = False,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> M3Output:
        """Encode passages (documents) with ``passage_max_length`` and ``passage_instruction``."""
        return self.encode(
            passages,
            return_dense=return_dense,
            return_sparse=return_sparse,
            return_colbert=return_colbert,
            max_length=max_length or self.passage_max_length,
            batch_size=batch_size,
            show_progress=show_progress,
            instruction=self.passage_instruction,
        )

    encode_corpus = encode_passages

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

    # ------------------------------------------------------------------ scoring helpers
    def convert_id_to_token(
        self, lexical_weights: Mapping[int, float] | Sequence[Mapping[int, float]]
    ) -> dict[str, float] | list[dict[str, float]]:
        """Turn token-id weights into readable token → weight maps (one map or a list of maps)."""
        if isinstance(lexical_weights, Mapping):
            return self._ids_to_tokens(lexical_weights)
        return [self._ids_to_tokens(w) for w in lexical_weights]

    def _ids_to_tokens(self, weights: Mapping[int, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for token_id, weight in weights.items():
            token = str(self.tokenizer.decode([int(token_id)]))
            out[token] = max(out.get(token, 0.0), float(weight))
        return out

    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        *,
        weights: Sequence[float] = fusion.PAPER_WEIGHTS,
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
    ) -> dict[str, list[float]]:
        """Score (query, passage) pairs with every mode, FlagEmbedding's ``compute_score`` semantics.

        Args:
            sentence_pairs: ``(query, passage)`` pairs, or one pair.
            weights: ``(w_dense, w_sparse, w_colbert)``; the paper's ``(0.4, 0.2, 0.4)`` by default.
            batch_size: texts per forward pass.
            max_query_length: default ``query_max_length``.
            max_passage_length: default ``passage_max_length``.

        Returns:
            ``{"dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense"}`` → list of scores,
            where ``sparse+dense = (w_s·s + w_d·d) / (w_d + w_s)`` and the three-way score is
            ``Σ w_i s_i / Σ w_i``.
        """
        if (
            isinstance(sentence_pairs, tuple)
            and len(sentence_pairs) == 2
            and isinstance(sentence_pairs[0], str)
        ):
            sentence_pairs = [sentence_pairs]  # type: ignore[list-item]
        pairs = list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                msg = f"sentence_pairs[{i}] must be a (query, passage) pair"
                raise TypeError(msg)
        w = [float(x) for x in weights]
        if len(w) != 3 or any(x < 0 for x in w) or sum(w) <= 0:
            msg = (
                "weights must be three non-negative numbers (dense, sparse, colbert) with a positive sum, "
                f"got {weights}"
            )
            raise ValueError(msg)
        names = ("dense", "sparse", "colbert", "sparse+dense", "colbert+sparse+dense")
        if not pairs:
            return {k: [] for k in names}
        queries = self.encode(
            [p[0] for p in pairs],
            return_colbert=True,
            max_length=max_query_length or self.query_max_length,
            batch_size=batch_size,
            instruction=self.query_instruction,
        )
        passages = self.encode(
            [p[1] for p in pairs],
            return_colbert=True,
            max_length=max_passage_length or self.passage_max_length,
            batch_size=batch_size,
            instruction=self.passage_instruction,
        )
        q_dense, p_dense = _required(queries.dense), _required(passages.dense)
        q_lex, p_lex = _required(queries.lexical_weights), _required(passages.lexical_weights)
        q_col, p_col = _required(queries.colbert_vecs), _required(passages.colbert_vecs)
        dense = np.einsum("ij,ij->i", q_dense, p_dense)
        sparse = np.asarray(
            [scoring.lexical_score(q, p) for q, p in zip(q_lex, p_lex, strict=True)],
            dtype=np.float32,
        )
        colbert = np.asarray(
            [scoring.colbert_score(q, p) for q, p in zip(q_col, p_col, strict=True)],
            dtype=np.float32,
        )
        signals = {"dense": dense, "sparse": sparse, "colbert": colbert}
        both = scoring.combine_scores(signals, {"dense": w[0], "sparse": w[1]})
        three = scoring.combine_scores(signals, {"dense": w[0], "sparse": w[1], "colbert": w[2]})
        return {
            "dense": dense.tolist(),
            "sparse": sparse.tolist(),
            "colbert": colbert.tolist(),
            "sparse+dense": np.asarray(both).tolist(),
            "colbert+sparse+dense": np.asarray(three).tolist(),
        }

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

    def __repr__(self) -> str:
        return (
            f"M3Model({self.model_name_or_path!r}, device={self.device!s}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, sparse={self.has_sparse}, "
            f"colbert_head={self.has_colbert_head})"
        )


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


def resolve_model(
    model: M3Model | str | os.PathLike[str], model_kwargs: Mapping[str, Any] | None = None
) -> M3Model:
    """``model`` itself when it is an :class:`M3Model`, else a model loaded from that name or path.

    Passing one ``M3Model`` to several components shares its weights; a name loads a new copy. Every
    adapter takes its ``model`` argument through here.

    Raises:
        ValueError: ``model_kwargs`` given with an :class:`M3Model` instance (they would be ignored).
        TypeError: ``model`` is neither an :class:`M3Model` nor a name or path.

    Example:
        .. code-block:: python

            model = resolve_model("BAAI/bge-m3", {"device": "cpu"})
            assert resolve_model(model) is model
    """
    if isinstance(model, M3Model):
        if model_kwargs:
            msg = "model_kwargs only applies when model is a name or path, not an M3Model instance"
            raise ValueError(msg)
        return model
    if isinstance(model, str | os.PathLike):
        return M3Model(model, **dict(model_kwargs or {}))
    msg = f"model must be an M3Model or a model name/path, got {type(model).__name__}"
    raise TypeError(msg)


def _required(value: _T | None) -> _T:
    if value is None:  # pragma: no cover - encode() fills every output it is asked for
        msg = "internal error: an output that was asked for is missing"
        raise RuntimeError(msg)
    return value


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model_max_length(config: Any) -> int | None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    if getattr(config, "model_type", None) in _ROBERTA_LIKE:
        pad = getattr(config, "pad_token_id", 1)
        return int(positions) - int(pad if pad is not None else 1) - 1
    return int(positions)
