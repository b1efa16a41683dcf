"""BGE-M3 lexical weights as sparse vectors for Qdrant and Milvus LangChain stores."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Literal

from langchain_core.runnables.config import run_in_executor
from pydantic import model_validator

from m3_integrations._utils import import_optional, validate_texts
from m3_integrations.langchain._utils import M3EncoderFields, check_query_text

logger = logging.getLogger(__name__)

__all__ = ["M3SparseEmbeddings"]

_QDRANT_MODULE = "langchain_qdrant.sparse_embeddings"
_MILVUS_MODULE = "langchain_milvus.utils.sparse"


def _partner_interfaces() -> tuple[type, ...]:
    """The sparse-embedding ABCs of the installed partner packages (none are required)."""
    bases: list[type] = []
    for module, name in ((_QDRANT_MODULE, "SparseEmbeddings"), (_MILVUS_MODULE, "BaseSparseEmbedding")):
        try:
            bases.append(getattr(importlib.import_module(module), name))
        # A missing or broken optional package must not break this class, hence the broad except.
        except Exception as err:
            logger.debug("%s.%s unavailable (%s): not subclassing it", module, name, err)
    return tuple(bases)


class M3SparseEmbeddings(M3EncoderFields, *_partner_interfaces()):  # type: ignore[misc]
    """BGE-M3 lexical (sparse) weights for LangChain's Qdrant and Milvus vector stores.

    Each text becomes its M3 lexical weights: token id → weight, special tokens and zeros dropped. The
    two partner packages name the same methods but want different types, so ``output`` picks one:

    * ``"sparse_vector"`` (default): ``langchain_qdrant.SparseVector(indices, values)``, for
      ``QdrantVectorStore(sparse_embedding=...)`` in ``RetrievalMode.SPARSE`` or ``HYBRID``.
    * ``"dict"``: ``dict[int, float]``, for ``langchain_milvus.Milvus`` (``BaseSparseEmbedding``).

    The class subclasses ``langchain_qdrant.SparseEmbeddings`` and
    ``langchain_milvus.utils.sparse.BaseSparseEmbedding`` when those packages are installed and works
    without either.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[langchain]" langchain-qdrant   # or langchain-milvus

    Key init args:
        model: an :class:`~m3_integrations.M3Model` with a sparse head, or a model name/path.
        model_kwargs: arguments for :class:`M3Model` when ``model`` is a name or path.
        output: ``"sparse_vector"`` (Qdrant) or ``"dict"`` (Milvus).
        batch_size: texts per forward pass; ``None`` uses the model's own.
        show_progress: show a progress bar while embedding documents.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Model
            from m3_integrations.langchain import M3Embeddings, M3SparseEmbeddings

            model = M3Model("BAAI/bge-m3")
            sparse = M3SparseEmbeddings(model=model)                      # Qdrant
            sparse_for_milvus = M3SparseEmbeddings(model=model, output="dict")  # Milvus

    Qdrant hybrid search:
        .. code-block:: python

            from langchain_qdrant import QdrantVectorStore, RetrievalMode

            store = QdrantVectorStore.from_texts(
                ["BGE-M3 is multilingual.", "Qdrant stores sparse vectors."],
                embedding=M3Embeddings(model=model),
                sparse_embedding=sparse,
                retrieval_mode=RetrievalMode.HYBRID,
                location=":memory:",
                collection_name="docs",
            )
            store.similarity_search("sparse vectors", k=1)

    Milvus:
        .. code-block:: python

            from langchain_milvus import Milvus

            store = Milvus(
                embedding_function=[M3Embeddings(model=model), sparse_for_milvus],
                vector_field=["dense", "sparse"],
                connection_args={"uri": "./milvus.db"},
            )

    Embed:
        .. code-block:: python

            sparse.embed_query("sparse vectors")  # SparseVector(indices=[...], values=[...])
    """

    output: Literal["sparse_vector", "dict"] = "sparse_vector"
    """``"sparse_vector"``: langchain-qdrant ``SparseVector``; ``"dict"``: ``{token_id: weight}``."""

    @model_validator(mode="after")
    def _check_model_and_output(self) -> M3SparseEmbeddings:
        model = self.m3_model
        if not model.has_sparse:
            msg = (
                f"M3SparseEmbeddings needs lexical weights, but {model.model_name_or_path!r} has no "
                "sparse head (sparse_linear.pt)"
            )
            raise ValueError(msg)
        if self.output == "sparse_vector":
            try:
                import_optional(_QDRANT_MODULE, package="langchain-qdrant")
            except ImportError as err:
                msg = f"{err} (or pass output='dict' for {{token_id: weight}} dicts)"
                raise ImportError(msg) from err
        return self

    def embed_documents(self, texts: list[str]) -> list[Any]:
        """Embed documents (passages) as sparse vectors.

        Args:
            texts: the documents; empty strings give empty vectors.

        Returns:
            One ``SparseVector`` (or ``dict[int, float]`` with ``output="dict"``) per document.

        Raises:
            TypeError: ``texts`` is not a list of strings (the message names the bad index).
        """
        texts = validate_texts(texts, what="texts")
        out = self.m3_model.encode_passages(
            texts,
            return_dense=False,
            return_sparse=True,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        assert out.lexical_weights is not None
        return [self._convert(weights) for weights in out.lexical_weights]

    def embed_query(self, text: str) -> Any:
        """Embed one query as a sparse vector.

        Args:
            text: the query.

        Returns:
            A ``SparseVector`` (or ``dict[int, float]`` with ``output="dict"``).

        Raises:
            TypeError: ``text`` is not a string.
        """
        out = self.m3_model.encode_queries(
            [check_query_text(text)], return_dense=False, return_sparse=True, batch_size=self.batch_size
        )
        assert out.lexical_weights is not None
        return self._convert(out.lexical_weights[0])

    async def aembed_documents(self, texts: list[str]) -> list[Any]:
        """Asynchronous :meth:`embed_documents` (runs in an executor thread)."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> Any:
        """Asynchronous :meth:`embed_query` (runs in an executor thread)."""
        return await run_in_executor(None, self.embed_query, text)

    def _convert(self, weights: dict[int, float]) -> Any:
        if self.output == "dict":
            return {int(token): float(weight) for token, weight in weights.items()}
        sparse_vector = importlib.import_module(_QDRANT_MODULE).SparseVector
        indices = sorted(weights)
        return sparse_vector(indices=indices, values=[float(weights[i]) for i in indices])
