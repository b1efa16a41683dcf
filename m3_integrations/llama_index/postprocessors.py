"""Rerank LlamaIndex nodes with BGE-M3's three scores or a cross-encoder (a node postprocessor)."""

from __future__ import annotations

import os
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from m3_integrations.fusion import PAPER_WEIGHTS
from m3_integrations.llama_index.retrievers import M3NodeWithScore
from m3_integrations.model import DEFAULT_MODEL, M3Model, resolve_model
from m3_integrations.rerank import M3ScoreReranker, Reranker, rerank_passages

__all__ = ["M3Reranker"]

dispatcher = instrument.get_dispatcher(__name__)


class M3Reranker(BaseNodePostprocessor):
    """Rerank retrieved nodes with BGE-M3's fused dense + lexical + ColBERT score, or a cross-encoder.

    The scores come from the core rerankers (:class:`~m3_integrations.M3ScoreReranker` or
    :class:`~m3_integrations.CrossEncoderReranker`); this class only maps nodes to passages and back,
    and emits LlamaIndex's ``ReRankStartEvent`` / ``ReRankEndEvent`` and the ``RERANKING`` callback
    event. Each returned node is an :class:`~m3_integrations.llama_index.M3NodeWithScore` whose
    ``score`` is the rerank score; its ``scores`` keep the incoming per-signal scores plus ``rerank``
    and ``retrieval`` (the score the node came in with). ``node.metadata`` is left untouched.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[llama-index]"

    Key init args:
        model: an ``M3Model`` or name/path (three-score rerank), or a reranker: anything with
            ``score(query, passages)`` (:class:`~m3_integrations.rerank.Reranker`), such as
            ``CrossEncoderReranker("BAAI/bge-reranker-v2-m3")`` or ``M3ScoreReranker``.
        top_n: how many nodes to keep (``None`` keeps all, reordered).
        weights: ``(dense, sparse, colbert)`` for the three-score rerank.
        metadata_mode: which node content the reranker reads (LlamaIndex's ``MetadataMode``).

    Instantiate:
        .. code-block:: python

            from m3_integrations import CrossEncoderReranker, M3Model
            from m3_integrations.llama_index import M3Reranker

            m3_rerank = M3Reranker(model=M3Model("BAAI/bge-m3"), top_n=3)
            cross_rerank = M3Reranker(model=CrossEncoderReranker("BAAI/bge-reranker-v2-m3"), top_n=3)

    In a query engine:
        .. code-block:: python

            from llama_index.core.query_engine import RetrieverQueryEngine

            engine = RetrieverQueryEngine.from_args(retriever, node_postprocessors=[m3_rerank])
            engine.query("what is bge-m3?")
    """

    model_name: str = Field(description="The reranking model (checkpoint name or path).")
    top_n: int | None = Field(default=5, description="Nodes to keep after reranking; None keeps all.")
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which node content is passed to the reranker."
    )
    _reranker: Reranker = PrivateAttr()

    def __init__(
        self,
        model: M3Model | str | os.PathLike[str] | Reranker = DEFAULT_MODEL,
        *,
        top_n: int | None = 5,
        weights: tuple[float, float, float] = PAPER_WEIGHTS,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        model_kwargs: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n <= 0):
            msg = f"top_n must be a positive integer or None, got {top_n!r}"
            raise ValueError(msg)
        reranker: Reranker
        if isinstance(model, Reranker):
            reranker = model
            if model_kwargs:
                msg = "model_kwargs only applies when model is a name or path, not a reranker"
                raise ValueError(msg)
        elif isinstance(model, M3Model | str | os.PathLike):
            reranker = M3ScoreReranker(resolve_model(model, model_kwargs), weights=weights)
        else:
            msg = (
                "model must be an M3Model, a model name/path, or a reranker with a score(query, passages) "
                f"method (m3_integrations.rerank.Reranker), got {type(model).__name__}"
            )
            raise TypeError(msg)
        name = getattr(getattr(reranker, "model", None), "model_name_or_path", None) or getattr(
            reranker, "model_name_or_path", type(reranker).__name__
        )
        super().__init__(  # type: ignore[call-arg]  # pydantic fields (mypy runs without its plugin)
            model_name=str(name),
            top_n=top_n,
            metadata_mode=metadata_mode,
            callback_manager=callback_manager or CallbackManager(),
        )
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3Reranker"

    @property
    def reranker(self) -> Reranker:
        """The core reranker doing the scoring."""
        return self._reranker

    @dispatcher.span
    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            msg = "M3Reranker needs the query: pass query_bundle or query_str to postprocess_nodes"
            raise ValueError(msg)
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model_name)
        )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        passages = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:
            ranked = rerank_passages(self._reranker, query_bundle.query_str, passages, top_n=top_n)
            reranked: list[NodeWithScore] = []
            for position, score in ranked:
                incoming = nodes[position]
                scores = dict(getattr(incoming, "scores", {}))
                if incoming.score is not None:
                    scores["retrieval"] = float(incoming.score)
                scores["rerank"] = float(score)
                reranked.append(M3NodeWithScore(node=incoming.node, score=float(score), scores=scores))
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked
