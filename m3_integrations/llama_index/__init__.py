"""LlamaIndex adapters: BGE-M3 embeddings, hybrid retriever, reranker and Qdrant sparse functions.

Requires ``pip install "m3-integrations[llama-index]"`` (only ``llama-index-core``).

Example:
    .. code-block:: python

        from llama_index.core import Document

        from m3_integrations import M3Model
        from m3_integrations.llama_index import M3Retriever

        model = M3Model("BAAI/bge-m3")
        retriever = M3Retriever.from_documents([Document(text="BGE-M3 is multilingual.")], model=model)
        retriever.retrieve("what is bge-m3?")
"""

from __future__ import annotations

from m3_integrations._utils import import_optional

import_optional("llama_index.core", "llama-index")

from m3_integrations.llama_index.embeddings import M3Embedding  # noqa: E402
from m3_integrations.llama_index.postprocessors import M3Reranker  # noqa: E402
from m3_integrations.llama_index.retrievers import M3NodeWithScore, M3Retriever  # noqa: E402
from m3_integrations.llama_index.sparse import (  # noqa: E402
    M3SparseFunction,
    m3_sparse_doc_fn,
    m3_sparse_query_fn,
)

__all__ = [
    "M3Embedding",
    "M3NodeWithScore",
    "M3Reranker",
    "M3Retriever",
    "M3SparseFunction",
    "m3_sparse_doc_fn",
    "m3_sparse_query_fn",
]
