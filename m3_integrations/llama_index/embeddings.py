"""BGE-M3 dense embeddings as a LlamaIndex ``BaseEmbedding``."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager

from m3_integrations.model import DEFAULT_MODEL, M3Model, M3Output, resolve_model

__all__ = ["M3Embedding"]


class M3Embedding(BaseEmbedding):
    """BGE-M3 dense vectors for LlamaIndex (queries via ``encode_queries``, texts via ``encode_passages``).

    The encoder is an :class:`~m3_integrations.M3Model`; pass one to share it with an
    :class:`~m3_integrations.llama_index.M3Retriever`, an :class:`~m3_integrations.llama_index.M3Reranker`
    or the Qdrant sparse functions, so the weights are loaded once.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[llama-index]"

    Key init args:
        model: an ``M3Model``, or a model name/path loaded with ``model_kwargs``.
        embed_batch_size: texts per call of ``_get_text_embeddings`` (LlamaIndex's batching); the model
            further splits by its own ``batch_size`` and ``max_batch_tokens``.
        model_kwargs: ``M3Model`` options (``device``, ``use_fp16``...) when ``model`` is a name/path.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Model
            from m3_integrations.llama_index import M3Embedding

            embed_model = M3Embedding(model=M3Model("BAAI/bge-m3"))

    Use as the default embedding model:
        .. code-block:: python

            from llama_index.core import Document, Settings, VectorStoreIndex

            Settings.embed_model = embed_model
            index = VectorStoreIndex.from_documents([Document(text="BGE-M3 is multilingual.")])
            index.as_retriever(similarity_top_k=2).retrieve("what is bge-m3?")

    Embed directly:
        .. code-block:: python

            embed_model.get_query_embedding("what is bge-m3?")
            embed_model.get_text_embedding_batch(["first passage", "second passage"])
    """

    query_max_length: int | None = Field(
        default=None, description="Token limit for queries; None uses the model's query_max_length."
    )
    passage_max_length: int | None = Field(
        default=None, description="Token limit for texts; None uses the model's passage_max_length."
    )
    _model: M3Model = PrivateAttr()

    def __init__(
        self,
        model: M3Model | str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        embed_batch_size: int = 32,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        m3 = resolve_model(model, model_kwargs)
        super().__init__(  # type: ignore[call-arg]  # pydantic fields (mypy runs without its plugin)
            model_name=m3.model_name_or_path,
            embed_batch_size=embed_batch_size,
            query_max_length=query_max_length,
            passage_max_length=passage_max_length,
            callback_manager=callback_manager or CallbackManager([]),
            **kwargs,
        )
        self._model = m3

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3Embedding"

    @property
    def model(self) -> M3Model:
        """The shared :class:`~m3_integrations.M3Model`."""
        return self._model

    def _get_query_embedding(self, query: str) -> Embedding:
        out = self._model.encode_queries(
            [query], return_sparse=False, max_length=self.query_max_length, show_progress=False
        )
        return _dense(out)[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        out = self._model.encode_passages(
            texts, return_sparse=False, max_length=self.passage_max_length, show_progress=False
        )
        return _dense(out).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        # One batched forward pass in a worker thread instead of the base class's one call per text.
        return await asyncio.to_thread(self._get_text_embeddings, texts)


def _dense(out: M3Output) -> np.ndarray:
    if out.dense is None:  # pragma: no cover - encode() returns what return_dense asks for
        msg = "internal error: the model returned no dense vectors"
        raise RuntimeError(msg)
    return out.dense
