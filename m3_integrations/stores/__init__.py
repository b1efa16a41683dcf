"""Stores of documents searched with BGE-M3's signals: the protocol and the vector-database backends.

:class:`~m3_integrations.M3Index` is the embedded store; :class:`QdrantM3Store` and
:class:`MilvusM3Store` keep the documents in a vector database and search them with the same options,
scores, fusion and filters (``docs/backends.md``). The backends import their clients
(``qdrant-client``, ``pymilvus``) only when a store is built.
"""

from __future__ import annotations

from m3_integrations.stores.base import M3Store
from m3_integrations.stores.milvus import MilvusM3Store
from m3_integrations.stores.qdrant import QdrantM3Store

__all__ = ["M3Store", "MilvusM3Store", "QdrantM3Store"]
