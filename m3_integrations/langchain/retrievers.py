"""A LangChain retriever over :class:`~m3_integrations.M3Index` (dense, lexical, ColBERT, hybrid)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, model_validator

from m3_integrations.index import M3Index, SearchHit
from m3_integrations.index.options import DEFAULT_CANDIDATES, SEARCH_OPTION_NAMES, Fusion, Mode
from m3_integrations.model import DEFAULT_MODEL, M3Model, resolve_model
from m3_integrations.stores.base import M3Store

__all__ = ["M3Retriever"]

SEARCH_OPTIONS = SEARCH_OPTION_NAMES


class M3Retriever(BaseRetriever):
    r"""Hybrid BGE-M3 retriever: dense, lexical and ColBERT scores fused by the embedded :class:`M3Index`.

    The retriever only translates: a query goes to :meth:`M3Index.search`, each
    :class:`~m3_integrations.SearchHit` comes back as a :class:`~langchain_core.documents.Document` with
    ``id``, ``metadata["relevance_score"]`` (the score that ranked it) and ``metadata["scores"]`` (one
    score per signal: ``dense``, ``sparse``, ``colbert``, and ``bm25`` / ``rerank`` when used).

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[langchain]"

    Key init args:
        index: the :class:`M3Index` to search (or build one with :meth:`from_texts` /
            :meth:`from_documents`); ``store=`` takes it or any other store, such as a
            ``QdrantM3Store`` or a ``MilvusM3Store``.
        k: how many documents to return.
        mode: ``"hybrid"`` (dense + sparse + ColBERT), ``"dense+sparse"``, ``"dense"``, ``"sparse"`` or
            ``"colbert"``.
        weights: per-signal weights, a ``(dense, sparse, colbert)`` tuple or a dict by signal name.
        fusion: ``"weighted"``, ``"rrf"``, ``"relative_score"`` or ``"confidence"``; ``None`` (default)
            lets the index choose.
        candidates: first-stage candidates per signal (``None``: score every document).
        filter: a dict filter in the index's language (``{"lang": "ko"}``,
            ``{"year": {"$gte": 2020}}``, ``$in``, ``$or``...; see ``m3_integrations.filters``) or a
            callable on the metadata.
        rerank: ``"m3"`` or a core reranker (e.g. ``CrossEncoderReranker``) applied by the index.
        rerank_top_n: how many fused hits the reranker sees.

    Every search option can also be passed per call: ``retriever.invoke(query, k=2, mode="dense")``.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Model
            from m3_integrations.langchain import M3Retriever

            model = M3Model("BAAI/bge-m3")
            retriever = M3Retriever.from_texts(
                ["BGE-M3 is multilingual.", "서울은 대한민국의 수도이다.", "Qdrant stores vectors."],
                model=model,
                metadatas=[{"lang": "en"}, {"lang": "ko"}, {"lang": "en"}],
                k=2,
            )

    Add documents:
        .. code-block:: python

            from langchain_core.documents import Document

            ids = retriever.add_documents([Document(page_content="ColBERT scores token by token.", id="c1")])
            retriever.delete(["c1"])

    Search:
        .. code-block:: python

            docs = retriever.invoke("multilingual embeddings")
            docs[0].metadata["relevance_score"], docs[0].metadata["scores"]
            retriever.invoke("multilingual embeddings", k=1, mode="dense")
            await retriever.ainvoke("multilingual embeddings", k=1)

    Search with filter:
        .. code-block:: python

            retriever.invoke("capital", filter={"lang": "ko"})
            retriever.invoke("capital", filter=lambda meta: meta.get("lang") != "en")

    Rerank:
        .. code-block:: python

            retriever.invoke("capital", rerank="m3", rerank_top_n=20)

    Save and load:
        .. code-block:: python

            retriever.save("my_index")
            retriever = M3Retriever.load("my_index", model=model, k=2)

    Use in a chain:
        .. code-block:: python

            def format_docs(docs):
                return "\n\n".join(doc.page_content for doc in docs)

            context = (retriever | format_docs).invoke("multilingual embeddings")
    """

    index: M3Store
    """What is searched: the embedded :class:`M3Index` or any store (``QdrantM3Store``...); or ``store=``."""
    k: int = Field(default=4, gt=0)
    """How many documents to return."""
    mode: Mode = "hybrid"
    """Which signals rank the documents."""
    weights: tuple[float, ...] | dict[str, float] | None = None
    """Per-signal weights; ``None`` uses the index defaults (0.4, 0.2, 0.4 for BGE-M3)."""
    fusion: Fusion | None = None
    """How the signals' scores are fused; ``None`` uses the index default (weighted for BGE-M3)."""
    candidates: int | None = Field(default=DEFAULT_CANDIDATES, gt=0)
    """First-stage candidates per signal; ``None`` scores every document."""
    filter: dict[str, Any] | Callable[[Mapping[str, Any]], bool] | None = None
    """A dict filter (``m3_integrations.filters``: equality, ``$gt``, ``$in``, ``$or``...) or a predicate."""
    rerank: Any = None
    """``"m3"`` or a core reranker with ``score(query, passages)``; ``None`` for no rerank."""
    rerank_top_n: int | None = Field(default=None, gt=0)
    """How many fused hits the reranker sees (at least ``k``)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _store_is_index(cls, data: Any) -> Any:
        # `store=` names what `index=` holds: M3Index or a vector-database store.
        if isinstance(data, dict) and "store" in data:
            if "index" in data:
                msg = "pass index or store, not both"
                raise ValueError(msg)
            data = {("index" if key == "store" else key): value for key, value in data.items()}
        return data

    @property
    def store(self) -> M3Store:
        """The store that is searched (the same object as :attr:`index`)."""
        return self.index

    @model_validator(mode="after")
    def _check_search_options(self) -> M3Retriever:
        # Bad weights (wrong length, all zero) or rerank_top_n < k fail here, not at the first query.
        options = {name: getattr(self, name) for name in SEARCH_OPTIONS}
        self.index.check_search_options(options.pop("k"), **options)
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(
        cls,
        texts: Iterable[str],
        model: M3Model | str = DEFAULT_MODEL,
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        index_kwargs: Mapping[str, Any] | None = None,
        store: M3Store | None = None,
        **fields: Any,
    ) -> M3Retriever:
        """Index ``texts`` in a new :class:`M3Index` (or in ``store``) and return a retriever over it.

        Args:
            texts: the documents' texts.
            model: an :class:`M3Model` (shared) or a model name/path.
            metadatas: one metadata dict per text.
            ids: one id per text; random ids when ``None``.
            model_kwargs: arguments for :class:`M3Model` when ``model`` is a name or path.
            index_kwargs: arguments for :class:`M3Index` (``store_colbert``, ``lexical``...).
            store: a store to add the texts to instead (``QdrantM3Store``, ``MilvusM3Store``...);
                ``model`` is then the store's.
            **fields: retriever fields (``k``, ``mode``, ``weights``...).

        Returns:
            The retriever.

        Example:
            .. code-block:: python

                retriever = M3Retriever.from_texts(["a text", "another"], model=model, k=1)
                store = QdrantM3Store(model, client=QdrantClient(":memory:"))
                retriever = M3Retriever.from_texts(["a text", "another"], store=store, k=1)
        """
        if store is not None:
            if index_kwargs or model_kwargs:
                msg = "index_kwargs and model_kwargs apply to a new M3Index, not to a given store"
                raise ValueError(msg)
            index: M3Store = store
        else:
            index = M3Index(resolve_model(model, model_kwargs), **dict(index_kwargs or {}))
        index.add(list(texts), ids=ids, metadatas=metadatas)
        return cls(index=index, **fields)

    @classmethod
    def from_documents(
        cls,
        documents: Iterable[Document],
        model: M3Model | str = DEFAULT_MODEL,
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        index_kwargs: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> M3Retriever:
        """Index LangChain documents (keeping their ``id``) and return a retriever over them.

        Args:
            documents: the documents; those without ``id`` get a random one.
            model: an :class:`M3Model` (shared) or a model name/path.
            model_kwargs: arguments for :class:`M3Model` when ``model`` is a name or path.
            index_kwargs: arguments for :class:`M3Index`.
            **fields: retriever fields (``k``, ``mode``, ``weights``...).

        Returns:
            The retriever.
        """
        index = M3Index(resolve_model(model, model_kwargs), **dict(index_kwargs or {}))
        retriever = cls(index=index, **fields)
        retriever.add_documents(list(documents))
        return retriever

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: M3Model | str = DEFAULT_MODEL,
        *,
        model_kwargs: Mapping[str, Any] | None = None,
        mmap: bool = False,
        **fields: Any,
    ) -> M3Retriever:
        """Load an index written by :meth:`save` (or :meth:`M3Index.save`) into a new retriever.

        Search settings are not stored with the index; pass them again as ``fields``.

        Args:
            path: the index folder.
            model: the :class:`M3Model` the index was built with, or its name/path.
            model_kwargs: arguments for :class:`M3Model` when ``model`` is a name or path.
            mmap: leave the ColBERT vectors in the folder's files, memory-mapped (see :meth:`M3Index.load`).
            **fields: retriever fields (``k``, ``mode``, ``weights``...).

        Returns:
            The retriever.
        """
        return cls(index=M3Index.load(path, resolve_model(model, model_kwargs), mmap=mmap), **fields)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Persist the index to the folder ``path`` (replaced atomically); see :meth:`M3Index.save`.

        Raises:
            TypeError: the retriever searches a database store (it keeps its documents itself).
        """
        if not isinstance(self.index, M3Index):
            msg = f"save writes an M3Index; a {type(self.index).__name__} keeps its documents itself"
            raise TypeError(msg)
        self.index.save(path)

    # ------------------------------------------------------------------ documents
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Sequence[dict[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Add texts to the index; a text with an existing id replaces that document.

        Returns:
            The ids of the added documents, in input order.
        """
        return self.index.add(list(texts), ids=ids, metadatas=metadatas)

    def add_documents(self, documents: Sequence[Document], ids: Sequence[str] | None = None) -> list[str]:
        """Add LangChain documents; ``Document.id`` is kept (a random id is made when it is ``None``).

        Args:
            documents: the documents.
            ids: ids that override the documents' own.

        Returns:
            The ids of the added documents, in input order.
        """
        documents = list(documents)
        if ids is None:
            ids = [doc.id if doc.id is not None else str(uuid.uuid4()) for doc in documents]
        return self.index.add(
            [doc.page_content for doc in documents],
            ids=list(ids),
            metadatas=[dict(doc.metadata) for doc in documents],
        )

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id.

        Raises:
            KeyError: an id is not in the index (then nothing is deleted).
        """
        self.index.delete(list(ids))

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        """The stored documents with these ids, in the order asked.

        Raises:
            KeyError: an id is not in the index.
        """
        return [
            Document(page_content=hit.text, metadata=dict(hit.metadata), id=hit.id)
            for hit in self.index.get(list(ids))
        ]

    # ------------------------------------------------------------------ search
    def _search_options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        overrides = {key: value for key, value in overrides.items() if key != "verbose"}
        unknown = sorted(set(overrides) - set(SEARCH_OPTIONS))
        if unknown:
            msg = f"unknown search option(s) {', '.join(unknown)}; expected among {', '.join(SEARCH_OPTIONS)}"
            raise TypeError(msg)
        options = {name: getattr(self, name) for name in SEARCH_OPTIONS}
        options.update(overrides)  # checked by the index, with the same messages as at construction
        return options

    def _search(self, query: str, overrides: Mapping[str, Any]) -> list[Document]:
        options = self._search_options(overrides)
        hits = self.index.search(query, options.pop("k"), **options)
        return [_to_document(hit) for hit in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._search(query, kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        # Encoding and scoring are CPU/GPU bound: run them off the event loop.
        return await run_in_executor(None, self._search, query, kwargs)


def _to_document(hit: SearchHit) -> Document:
    metadata = {**hit.metadata, "relevance_score": hit.score, "scores": dict(hit.scores)}
    return Document(page_content=hit.text, metadata=metadata, id=hit.id)
