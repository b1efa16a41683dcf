"""A LangChain document compressor that re-ranks with BGE-M3's scores or a cross-encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, model_validator

from m3_integrations.fusion import PAPER_WEIGHTS
from m3_integrations.model import M3Model, resolve_model
from m3_integrations.rerank import CrossEncoderReranker, M3ScoreReranker, Reranker, rerank_passages

__all__ = ["M3Reranker"]


class M3Reranker(BaseDocumentCompressor):
    """Re-rank documents with BGE-M3's fused dense + sparse + ColBERT score, or with a cross-encoder.

    The scores come from the core rerankers (:class:`~m3_integrations.M3ScoreReranker`, or
    :class:`~m3_integrations.CrossEncoderReranker` when ``cross_encoder`` is given). The best ``top_n``
    documents come back, best first, with ``metadata["relevance_score"]`` set to the reranker's score
    (and ``metadata["scores"]["rerank"]`` when the document came from :class:`M3Retriever`).

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[langchain]" langchain-classic

    Key init args:
        model: an :class:`M3Model` (shared) or a model name/path, for M3's own three scores.
        weights: ``(dense, sparse, colbert)`` weights of the M3 score.
        cross_encoder: a :class:`CrossEncoderReranker` (or any
            :class:`~m3_integrations.rerank.Reranker`) or a cross-encoder name/path (instead of
            ``model``).
        top_n: how many documents to keep (``None``: all, re-ordered).

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Model
            from m3_integrations.langchain import M3Reranker

            model = M3Model("BAAI/bge-m3")
            reranker = M3Reranker(model=model, top_n=3)
            # or with a cross-encoder:
            reranker = M3Reranker(cross_encoder="BAAI/bge-reranker-v2-m3", top_n=3)

    Compress:
        .. code-block:: python

            reranker.compress_documents(docs, "which model is multilingual?")

    Use with a retriever:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever

            retriever = ContextualCompressionRetriever(
                base_compressor=reranker, base_retriever=vector_store.as_retriever(search_kwargs={"k": 20})
            )
            retriever.invoke("which model is multilingual?")
    """

    model: M3Model | str | None = None
    """The M3Model (shared) or its name/path; used when ``cross_encoder`` is ``None``."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for :class:`M3Model` when ``model`` is a name or path."""
    weights: tuple[float, float, float] = PAPER_WEIGHTS
    """``(dense, sparse, colbert)`` weights of the fused M3 score (the paper's by default)."""
    cross_encoder: Reranker | str | None = None
    """A CrossEncoderReranker (or any reranker with ``score(query, passages)``), or a cross-encoder
    name/path loaded with default settings."""
    top_n: int | None = Field(default=3, gt=0)
    """How many documents to return; ``None`` returns them all, re-ordered."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    _reranker: Reranker

    @model_validator(mode="after")
    def _load_reranker(self) -> M3Reranker:
        if self.cross_encoder is not None:
            if self.model is not None:
                msg = "pass either model (M3 scores) or cross_encoder, not both"
                raise ValueError(msg)
            if isinstance(self.cross_encoder, str):
                self.cross_encoder = CrossEncoderReranker(self.cross_encoder)
            self._reranker = self.cross_encoder
        else:
            if self.model is None:
                msg = "M3Reranker needs a model (M3 scores) or a cross_encoder"
                raise ValueError(msg)
            self.model = resolve_model(self.model, self.model_kwargs)
            self._reranker = M3ScoreReranker(self.model, weights=self.weights)
        return self

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Re-rank ``documents`` for ``query`` and keep the best ``top_n``.

        Args:
            documents: the candidates.
            query: the query (not empty).
            callbacks: unused; part of the LangChain interface.

        Returns:
            New documents (same ``id``, ``page_content``) best first, with ``relevance_score`` set.

        Raises:
            ValueError: the query is empty.
        """
        documents = list(documents)
        if not documents:
            return []
        ranked = rerank_passages(
            self._reranker, query, [doc.page_content for doc in documents], top_n=self.top_n
        )
        return [_with_score(documents[i], score) for i, score in ranked]


def _with_score(document: Document, score: float) -> Document:
    metadata = {**document.metadata, "relevance_score": score}
    if isinstance(metadata.get("scores"), dict):
        metadata["scores"] = {**metadata["scores"], "rerank": score}
    return Document(page_content=document.page_content, metadata=metadata, id=document.id)
