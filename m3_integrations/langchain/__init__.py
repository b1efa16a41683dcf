"""LangChain integration: BGE-M3 embeddings, sparse embeddings, hybrid retriever and reranker.

Only ``langchain-core`` is required. Names are imported on first use, so ``M3Embeddings`` does not pay
for the partner packages (langchain-qdrant, langchain-milvus) that ``M3SparseEmbeddings`` looks for.

Example:
    .. code-block:: python

        from m3_integrations import M3Model
        from m3_integrations.langchain import M3Embeddings, M3Retriever

        model = M3Model("BAAI/bge-m3")
        retriever = M3Retriever.from_texts(["BGE-M3 is multilingual."], model=model, k=1)
        retriever.invoke("multilingual embedding model")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from m3_integrations.langchain.embeddings import M3Embeddings
    from m3_integrations.langchain.rerankers import M3Reranker
    from m3_integrations.langchain.retrievers import M3Retriever
    from m3_integrations.langchain.sparse_embeddings import M3SparseEmbeddings

__all__ = ["M3Embeddings", "M3Reranker", "M3Retriever", "M3SparseEmbeddings"]

_MODULE_OF = {
    "M3Embeddings": "embeddings",
    "M3SparseEmbeddings": "sparse_embeddings",
    "M3Retriever": "retrievers",
    "M3Reranker": "rerankers",
}


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
