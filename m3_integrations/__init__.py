"""m3-integrations: BGE-M3 dense, lexical and ColBERT retrieval for LangChain and LlamaIndex.

Example:
    .. code-block:: python

        from m3_integrations import M3Index, M3Model

        model = M3Model("BAAI/bge-m3")
        index = M3Index(model)
        index.add(["BGE-M3 yields three representations."])
        hits = index.search("what does BGE-M3 output?", k=1)
"""

from __future__ import annotations

import logging

from m3_integrations.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    DocumentReadError,
    IndexLoadError,
    IndexNotFoundError,
    MissingHeadsError,
    StoreConnectionError,
    StoreError,
    StoreRequestError,
    StoreSchemaError,
)
from m3_integrations.index import M3Index, SearchHit
from m3_integrations.model import M3Model, M3Output
from m3_integrations.rerank import CrossEncoderReranker, M3ScoreReranker
from m3_integrations.stores.base import M3Store
from m3_integrations.stores.milvus import MilvusM3Store
from m3_integrations.stores.qdrant import QdrantM3Store

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "CrossEncoderReranker",
    "DocumentReadError",
    "IndexLoadError",
    "IndexNotFoundError",
    "M3Index",
    "M3Model",
    "M3Output",
    "M3ScoreReranker",
    "M3Store",
    "MilvusM3Store",
    "MissingHeadsError",
    "QdrantM3Store",
    "SearchHit",
    "StoreConnectionError",
    "StoreError",
    "StoreRequestError",
    "StoreSchemaError",
    "__version__",
]
