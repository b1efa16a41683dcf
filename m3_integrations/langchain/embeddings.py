"""Dense BGE-M3 embeddings as a LangChain :class:`~langchain_core.embeddings.Embeddings`."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import Field

from m3_integrations._utils import validate_texts
from m3_integrations.langchain._utils import M3EncoderFields, check_query_text

__all__ = ["M3Embeddings"]


class M3Embeddings(M3EncoderFields, Embeddings):
    """BGE-M3 dense embeddings for any LangChain vector store.

    Documents are encoded with :meth:`M3Model.encode_passages` (``passage_max_length``, passage
    instruction) and queries with :meth:`M3Model.encode_queries` (``query_max_length``, query
    instruction). Vectors are L2-normalised lists of plain Python floats.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[langchain]"

    Key init args:
        model: an :class:`~m3_integrations.M3Model` (shared with other components) or a model name/path.
        model_kwargs: arguments for :class:`M3Model` when ``model`` is a name or path.
        batch_size: texts per forward pass; ``None`` uses the model's own.
        show_progress: show a progress bar while embedding documents.
        query_max_length / passage_max_length: token limits; ``None`` uses the model's own.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Model
            from m3_integrations.langchain import M3Embeddings

            model = M3Model("BAAI/bge-m3")
            embeddings = M3Embeddings(model=model)
            # or load by name: M3Embeddings(model="BAAI/bge-m3", model_kwargs={"device": "cpu"})

    Embed:
        .. code-block:: python

            vectors = embeddings.embed_documents(["BGE-M3 is multilingual.", "서울은 수도이다."])
            query_vector = embeddings.embed_query("which model is multilingual?")
            len(query_vector)  # 1024 for BAAI/bge-m3

    Use in a vector store:
        .. code-block:: python

            from langchain_core.vectorstores import InMemoryVectorStore

            store = InMemoryVectorStore.from_texts(["BGE-M3 is multilingual."], embedding=embeddings)
            store.similarity_search("multilingual model", k=1)

    Async:
        .. code-block:: python

            await embeddings.aembed_query("which model is multilingual?")
    """

    query_max_length: int | None = Field(default=None, gt=0)
    """Token limit for queries; ``None`` uses the model's ``query_max_length``."""
    passage_max_length: int | None = Field(default=None, gt=0)
    """Token limit for documents; ``None`` uses the model's ``passage_max_length``."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (passages).

        Args:
            texts: the documents; empty strings are allowed.

        Returns:
            One list of floats per document, in input order.

        Raises:
            TypeError: ``texts`` is not a list of strings (the message names the bad index).
        """
        texts = validate_texts(texts, what="texts")
        out = self.m3_model.encode_passages(
            texts,
            return_dense=True,
            return_sparse=False,
            max_length=self.passage_max_length,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        assert out.dense is not None
        return out.dense.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query.

        Args:
            text: the query.

        Returns:
            The query vector as a list of floats.

        Raises:
            TypeError: ``text`` is not a string.
        """
        out = self.m3_model.encode_queries(
            [check_query_text(text)],
            return_dense=True,
            return_sparse=False,
            max_length=self.query_max_length,
            batch_size=self.batch_size,
            show_progress=False,
        )
        assert out.dense is not None
        return out.dense[0].tolist()
