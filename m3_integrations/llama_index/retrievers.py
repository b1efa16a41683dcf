"""A LlamaIndex retriever over the embedded hybrid :class:`~m3_integrations.M3Index`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager
from llama_index.core.constants import DEFAULT_SIMILARITY_TOP_K
from llama_index.core.schema import (
    BaseNode,
    Document,
    IndexNode,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
    TextNode,
)
from llama_index.core.storage.docstore import BaseDocumentStore, SimpleDocumentStore
from llama_index.core.vector_stores.types import MetadataFilters

from m3_integrations.index import FilterType, M3Index, SearchHit
from m3_integrations.index.options import DEFAULT_CANDIDATES, Fusion, Mode, Weights
from m3_integrations.llama_index._filters import metadata_filters_to_dict
from m3_integrations.llama_index._persistence import (
    CONFIG_FILE,
    PERSIST_FORMAT,
    PERSIST_VERSION,
    read_retriever,
    write_retriever,
)
from m3_integrations.model import DEFAULT_MODEL, M3Model, resolve_model
from m3_integrations.stores.base import M3Store

logger = logging.getLogger(__name__)

__all__ = ["M3NodeWithScore", "M3Retriever"]


class M3NodeWithScore(NodeWithScore):
    """A ``NodeWithScore`` that also carries BGE-M3's per-signal scores.

    ``score`` is the score that ranked the node (the fused score, or the reranker's); ``scores`` holds
    the individual signals (``dense``, ``sparse``, ``colbert``, optionally ``bm25`` / ``rerank``) so
    ``node.metadata`` stays exactly as it was indexed. It is a plain subclass: everything that accepts a
    ``NodeWithScore`` (postprocessors, synthesizers, ``QueryFusionRetriever``) accepts it, and it
    serialises with ``model_dump()`` / ``to_dict()`` like its parent, plus the ``scores`` field.

    Example:
        .. code-block:: python

            for hit in retriever.retrieve("what is bge-m3?"):
                print(hit.score, hit.scores.get("dense"), hit.scores.get("sparse"), hit.node.metadata)
    """

    scores: dict[str, float] = Field(
        default_factory=dict, description="Per-signal scores (dense, sparse, colbert, bm25, rerank)."
    )

    @classmethod
    def class_name(cls) -> str:
        """Name used by LlamaIndex serialisation."""
        return "M3NodeWithScore"


class M3Retriever(BaseRetriever):
    """Hybrid BGE-M3 retrieval (dense + lexical + ColBERT, fused) over LlamaIndex nodes.

    Nodes live in a LlamaIndex ``SimpleDocumentStore`` (ids, text, metadata, relationships) and their
    BGE-M3 representations in an :class:`~m3_integrations.M3Index`, which does all the scoring, fusion
    and filtering; this class only translates between the two. Each result is an
    :class:`M3NodeWithScore` whose ``score`` is the fused score and whose ``scores`` holds the
    per-signal scores; the node is a copy, so postprocessors that edit it do not change the store.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[llama-index]"

    Key init args:
        nodes: nodes to index (text as LlamaIndex embeds it: ``get_content(metadata_mode)``).
        model: an ``M3Model`` or a name/path (default ``BAAI/bge-m3``); ignored when ``m3_index`` is given.
        m3_index: an existing ``M3Index`` to wrap instead of building one.
        store: any :class:`~m3_integrations.stores.M3Store` instead, e.g. a ``QdrantM3Store`` or a
            ``MilvusM3Store`` (nodes inserted here are also kept in ``node_store``; hits of documents
            added elsewhere become ``TextNode``s; ``persist`` and ``node_ids`` need an ``M3Index``).
        node_store: the LlamaIndex docstore holding ``m3_index``'s nodes (ids it lacks become TextNodes).
        similarity_top_k: how many nodes ``retrieve`` returns.
        mode: ``"hybrid"`` (dense + sparse + ColBERT), ``"dense+sparse"``, ``"dense"``, ``"sparse"``
            or ``"colbert"``.
        weights / fusion / candidates: passed to :meth:`M3Index.search`.
        filters: LlamaIndex ``MetadataFilters`` (all operators, ``and`` / ``or`` / ``not``, nested).
        rerank / rerank_top_n: second stage inside the index (``"m3"`` or a ``CrossEncoderReranker``).
        metadata_mode: which node content is indexed (default ``EMBED``, as LlamaIndex embeds it).
        model_kwargs / index_kwargs: ``M3Model`` options (when ``model`` is a name) and ``M3Index``
            options (``store_colbert``, ``lexical="bm25"``...).

    Instantiate:
        .. code-block:: python

            from llama_index.core import Document

            from m3_integrations import M3Model
            from m3_integrations.llama_index import M3Retriever

            model = M3Model("BAAI/bge-m3")
            docs = [Document(text="BGE-M3 supports 100+ languages.", metadata={"lang": "en"})]
            retriever = M3Retriever.from_documents(docs, model=model, similarity_top_k=3)

    Add and delete:
        .. code-block:: python

            from llama_index.core.schema import TextNode

            retriever.insert([TextNode(id_="n1", text="Hybrid search fuses dense and lexical scores.")])
            retriever.delete(["n1"])
            retriever.delete_ref_doc(docs[0].doc_id)

    Search:
        .. code-block:: python

            for hit in retriever.retrieve("which languages does bge-m3 support?"):
                print(f"{hit.score:.3f}", hit.scores, hit.node.get_content()[:60])

    Search with filter:
        .. code-block:: python

            from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

            retriever.filters = MetadataFilters(
                filters=[MetadataFilter(key="lang", value=["en", "de"], operator=FilterOperator.IN)]
            )

    Persist:
        .. code-block:: python

            retriever.persist("./m3_storage")
            retriever = M3Retriever.from_persist_dir("./m3_storage", model=model)
    """

    def __init__(
        self,
        nodes: Sequence[BaseNode] | None = None,
        model: M3Model | str | os.PathLike[str] | None = None,
        *,
        m3_index: M3Index | None = None,
        store: M3Store | None = None,
        node_store: BaseDocumentStore | None = None,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        mode: Mode = "hybrid",
        weights: Weights | None = None,
        fusion: Fusion | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filters: MetadataFilters | Callable[[Mapping[str, Any]], bool] | None = None,
        rerank: Any = None,
        rerank_top_n: int | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        model_kwargs: dict[str, Any] | None = None,
        index_kwargs: dict[str, Any] | None = None,
        callback_manager: CallbackManager | None = None,
        objects: list[IndexNode] | None = None,
        object_map: dict | None = None,
        verbose: bool = False,
    ) -> None:
        if store is not None and not isinstance(store, M3Index):
            # A vector-database store (QdrantM3Store, MilvusM3Store): searched the same way.
            if m3_index is not None or index_kwargs:
                msg = "pass store or m3_index/index_kwargs, not both"
                raise ValueError(msg)
            if not isinstance(store, M3Store):
                msg = f"store must be an M3Store (M3Index, QdrantM3Store, ...), got {type(store).__name__}"
                raise TypeError(msg)
            self._index = store
        elif m3_index is not None or store is not None:
            m3_index = m3_index if m3_index is not None else store
            if not isinstance(m3_index, M3Index):
                msg = f"m3_index must be an M3Index, got {type(m3_index).__name__}"
                raise TypeError(msg)
            if isinstance(model, M3Model) and model is not m3_index.model:
                msg = "model and m3_index.model are different M3Model objects; pass only m3_index"
                raise ValueError(msg)
            if index_kwargs:
                msg = "index_kwargs only apply when the retriever builds its own M3Index"
                raise ValueError(msg)
            self._index = m3_index
        else:
            m3 = resolve_model(model if model is not None else DEFAULT_MODEL, model_kwargs)
            self._index = M3Index(m3, **(index_kwargs or {}))
        self.similarity_top_k = similarity_top_k
        self.mode = mode
        self.weights = weights
        self.fusion = fusion
        self.candidates = candidates
        self.filters = filters
        self.rerank = rerank
        self.rerank_top_n = rerank_top_n
        self.metadata_mode = MetadataMode(metadata_mode)
        # Fail at construction, not at the first query (filters are converted per query).
        self._index.check_search_options(
            similarity_top_k,
            mode=mode,
            weights=weights,
            fusion=fusion,
            candidates=candidates,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )
        self._docstore: BaseDocumentStore = node_store if node_store is not None else SimpleDocumentStore()
        # A vector-database store is not listed (it may hold millions); its hits become nodes on retrieval.
        stored = self._index.ids if isinstance(self._index, M3Index) else []
        unknown = [node_id for node_id in stored if not self._docstore.document_exists(node_id)]
        if unknown:
            # Documents added to the M3Index outside LlamaIndex become plain TextNodes.
            self._docstore.add_documents(
                [
                    TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata)
                    for hit in self._index.get(unknown)
                ]
            )
        if nodes:
            self.insert(nodes)
        super().__init__(
            callback_manager=callback_manager, objects=objects, object_map=object_map, verbose=verbose
        )

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_defaults(
        cls,
        index: Any = None,
        nodes: Sequence[BaseNode] | None = None,
        docstore: BaseDocumentStore | None = None,
        model: M3Model | str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> M3Retriever:
        """Build from nodes, a docstore, or a LlamaIndex index's docstore (like ``BM25Retriever``).

        Args:
            index: a LlamaIndex index (``VectorStoreIndex``...) whose docstore nodes are indexed.
            nodes: nodes to index.
            docstore: a LlamaIndex docstore whose nodes are indexed.
            model: an ``M3Model`` or a name/path.
            **kwargs: any :class:`M3Retriever` argument.

        Raises:
            ValueError: none or more than one of ``index`` / ``nodes`` / ``docstore`` given.
        """
        given = [x is not None for x in (index, nodes, docstore)]
        if sum(given) != 1:
            msg = "pass exactly one of index, nodes or docstore"
            raise ValueError(msg)
        if index is not None:
            docstore = index.docstore
        if docstore is not None:
            nodes = list(docstore.docs.values())
        return cls(nodes=nodes, model=model, **kwargs)

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[Document],
        model: M3Model | str | os.PathLike[str] | None = None,
        *,
        transformations: Sequence[Any] | None = None,
        node_parser: Any = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> M3Retriever:
        """Split documents into nodes and index them.

        The nodes come from ``transformations``, else ``node_parser``, else ``Settings.node_parser``.

        Args:
            documents: LlamaIndex documents.
            model: an ``M3Model`` or a name/path.
            transformations: an ingestion pipeline (node parsers, extractors).
            node_parser: a single node parser, used when ``transformations`` is not given.
            show_progress: show the transformations' progress.
            **kwargs: any :class:`M3Retriever` argument.
        """
        from llama_index.core import Settings
        from llama_index.core.ingestion import run_transformations

        if transformations is not None and node_parser is not None:
            msg = "pass transformations or node_parser, not both"
            raise ValueError(msg)
        steps = (
            list(transformations) if transformations is not None else [node_parser or Settings.node_parser]
        )
        nodes = run_transformations(list(documents), steps, show_progress=show_progress)
        return cls(nodes=nodes, model=model, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def m3_index(self) -> M3Store:
        """The underlying :class:`~m3_integrations.M3Index` (or the store given as ``store``)."""
        return self._index

    @property
    def model(self) -> M3Model:
        """The shared :class:`~m3_integrations.M3Model`."""
        return self._index.model

    @property
    def docstore(self) -> BaseDocumentStore:
        """The LlamaIndex docstore holding the indexed nodes."""
        return self._docstore

    @property
    def node_ids(self) -> list[str]:
        """Indexed node ids, in insertion order (an ``M3Index`` only: a database store is not listed)."""
        if not isinstance(self._index, M3Index):
            msg = f"node_ids lists an M3Index; this retriever searches a {type(self._index).__name__}"
            raise TypeError(msg)
        return self._index.ids

    def __len__(self) -> int:
        return len(self._index)

    def __bool__(self) -> bool:
        # An empty retriever is still a retriever: `retriever or default` must not replace it.
        return True

    @property
    def similarity_top_k(self) -> int:
        """How many nodes :meth:`retrieve` returns."""
        return self._similarity_top_k

    @similarity_top_k.setter
    def similarity_top_k(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            msg = f"similarity_top_k must be a positive integer, got {value!r}"
            raise ValueError(msg)
        self._similarity_top_k = value

    @property
    def filters(self) -> MetadataFilters | Callable[[Mapping[str, Any]], bool] | None:
        """The metadata filters applied to every retrieval (``None`` for none)."""
        return self._filters

    @filters.setter
    def filters(self, value: MetadataFilters | Callable[[Mapping[str, Any]], bool] | None) -> None:
        index_filter: FilterType | None
        if value is None:
            index_filter = None
        elif isinstance(value, MetadataFilters):
            index_filter = metadata_filters_to_dict(value)
        elif callable(value):
            index_filter = value
        else:
            msg = (
                "filters must be llama_index MetadataFilters, a callable on the metadata dict, or None; "
                f"got {type(value).__name__}"
            )
            raise TypeError(msg)
        self._filters = value
        self._index_filter = index_filter

    # ------------------------------------------------------------------ updates
    def insert(self, nodes: BaseNode | Sequence[BaseNode]) -> list[str]:
        """Index nodes; a node whose id is already indexed is replaced.

        Returns:
            The node ids, in order.

        Raises:
            TypeError: an item is not a LlamaIndex node (the message names its position).
        """
        if isinstance(nodes, BaseNode):
            nodes = [nodes]
        nodes = list(nodes)
        for i, node in enumerate(nodes):
            if not isinstance(node, BaseNode):
                msg = f"nodes[{i}] must be a llama_index BaseNode, got {type(node).__name__}"
                raise TypeError(msg)
        if not nodes:
            return []
        ids = self._index.add(
            [node.get_content(metadata_mode=self.metadata_mode) for node in nodes],
            ids=[node.node_id for node in nodes],
            metadatas=[dict(node.metadata) for node in nodes],
        )
        self._docstore.add_documents(nodes, allow_update=True)
        return ids

    def delete(self, node_ids: str | Sequence[str]) -> None:
        """Remove nodes by id; an unknown id raises ``KeyError`` and nothing is deleted."""
        if isinstance(node_ids, str):
            node_ids = [node_ids]
        node_ids = list(node_ids)
        self._index.delete(node_ids)
        for node_id in node_ids:
            self._docstore.delete_document(node_id, raise_error=False)

    def delete_ref_doc(self, ref_doc_id: str) -> None:
        """Remove every node that came from the source document ``ref_doc_id``.

        Raises:
            KeyError: no indexed node has this ``ref_doc_id``.
        """
        info = self._docstore.get_ref_doc_info(ref_doc_id)
        if info is None or not info.node_ids:
            msg = f"unknown ref_doc_id {ref_doc_id!r}: no indexed node comes from it"
            raise KeyError(msg)
        self.delete(list(info.node_ids))

    # ------------------------------------------------------------------ retrieval
    def _search_kwargs(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "weights": self.weights,
            "fusion": self.fusion,
            "candidates": self.candidates,
            "filter": self._index_filter,
            "rerank": self.rerank,
            "rerank_top_n": self.rerank_top_n,
        }

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._index.search(query_bundle.query_str, self.similarity_top_k, **self._search_kwargs())
        return [
            M3NodeWithScore(node=self._node_of(hit), score=hit.score, scores=dict(hit.scores)) for hit in hits
        ]

    def _node_of(self, hit: SearchHit) -> BaseNode:
        if self._docstore.document_exists(hit.id):
            return self._docstore.get_node(hit.id).model_copy(deep=True)
        # Added to a shared store by another process or retriever: a plain node from the stored text.
        return TextNode(id_=hit.id, text=hit.text, metadata=hit.metadata)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)

    # ------------------------------------------------------------------ persistence
    def get_persist_args(self) -> dict[str, Any]:
        """The retriever settings written to ``retriever.json`` (JSON types only)."""
        if self._filters is not None and not isinstance(self._filters, MetadataFilters):
            logger.warning("a callable filter cannot be persisted; it is left out of %s", CONFIG_FILE)
        if self.rerank is not None and not isinstance(self.rerank, str):
            logger.warning("a reranker object cannot be persisted; pass it again to from_persist_dir")
        return {
            "format": PERSIST_FORMAT,
            "version": PERSIST_VERSION,
            "similarity_top_k": self.similarity_top_k,
            "mode": self.mode,
            "weights": dict(self.weights) if isinstance(self.weights, Mapping) else self.weights,
            "fusion": self.fusion,
            "candidates": self.candidates,
            "filters": self._filters.model_dump(mode="json")
            if isinstance(self._filters, MetadataFilters)
            else None,
            "rerank": self.rerank if isinstance(self.rerank, str) else None,
            "rerank_top_n": self.rerank_top_n,
            "metadata_mode": self.metadata_mode.value,
        }

    def persist(self, path: str | os.PathLike[str]) -> None:
        """Write the retriever to a folder, atomically; no pickle anywhere.

        The folder holds ``manifest.json`` naming one data folder with ``retriever.json`` (settings and
        filters), ``docstore.json`` (LlamaIndex's JSON docstore: ids, text, metadata, relationships) and
        ``index/`` (:meth:`M3Index.save`), each file with its SHA-256. A new persist writes a new data
        folder and switches the manifest in one rename, as :meth:`M3Index.save` does: a crash leaves the
        previous or the new retriever, never a mix.

        Raises:
            FileExistsError: ``path`` holds something other than a retriever folder (your files, a file,
                a link): nothing there is touched.
        """
        if not isinstance(self._index, M3Index):
            msg = f"persist writes an M3Index; a {type(self._index).__name__} keeps its documents itself"
            raise TypeError(msg)
        write_retriever(path, self.get_persist_args(), self._docstore, self._index.save)

    @classmethod
    def from_persist_dir(
        cls, path: str | os.PathLike[str], model: M3Model, *, mmap: bool = False, **kwargs: Any
    ) -> M3Retriever:
        """Load a retriever written by :meth:`persist` (this release's layout or the earlier one).

        Args:
            path: the folder.
            model: the ``M3Model`` the index was built with (checked against the saved identity).
            mmap: leave the ColBERT vectors in the folder's files, memory-mapped (see ``M3Index.load``).
            **kwargs: :class:`M3Retriever` settings overriding the saved ones (``similarity_top_k``...).

        Raises:
            FileNotFoundError: the folder or one of its files is missing.
            ValueError: the folder is not a retriever folder, a file is damaged (checksum, JSON) or its
                docstore and index disagree (an :class:`~m3_integrations.errors.IndexLoadError` for a
                damaged file).
        """
        settings, index, docstore = read_retriever(Path(path), model, mmap=mmap)
        settings.update(kwargs)
        return cls(m3_index=index, node_store=docstore, **settings)
