"""Load a BGE-M3 checkpoint and encode dense, lexical and ColBERT representations in one forward pass.

:class:`M3Model` is assembled from its parts: loading and identity here, encoding (tokenizer, batches,
the forward pass, :class:`M3Output`, :class:`Tokenized`) in ``_model_encoding``, pair scoring
(``compute_score``) in ``_model_scoring``, checkpoint files and their checks in ``_checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from m3_integrations import _checkpoint
from m3_integrations._checkpoint import COLBERT_HEAD_FILE, SPARSE_HEAD_FILE
from m3_integrations._model_encoding import EncodingMethods, M3Output, Tokenized
from m3_integrations._model_scoring import ScoringMethods
from m3_integrations.errors import CheckpointError, MissingHeadsError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "M3Model", "M3Output", "Tokenized", "resolve_model"]

# The checkpoint every constructor, adapter and command loads when none is named.
DEFAULT_MODEL = "BAAI/bge-m3"
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


class M3Model(EncodingMethods, ScoringMethods):
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

    # ------------------------------------------------------------------ scoring helpers

    def __repr__(self) -> str:
        return (
            f"M3Model({self.model_name_or_path!r}, device={self.device!s}, "
            f"dtype={str(self.dtype).replace('torch.', '')}, sparse={self.has_sparse}, "
            f"colbert_head={self.has_colbert_head})"
        )


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
