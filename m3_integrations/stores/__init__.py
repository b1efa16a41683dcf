"""Stores of documents searched with BGE-M3's signals: the protocol and the vector-database backends.

:class:`~m3_integrations.M3Index` is the embedded store; :class:`QdrantM3Store` and
:class:`MilvusM3Store` keep the documents in a vector database and search them with the same options,
scores, fusion and filters (``docs/backends.md``). The backends import their clients only when built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from m3_integrations.stores.base import M3Store

if TYPE_CHECKING:
    from m3_integrations.stores.milvus import MilvusM3Store
    from m3_integrations.stores.qdrant import QdrantM3Store

__all__ = ["M3Store", "MilvusM3Store", "QdrantM3Store"]


def __getattr__(name: str) -> Any:
    # The backends' modules are light, but keeping them out of `import m3_integrations` keeps its cost flat.
    if name == "QdrantM3Store":
        from m3_integrations.stores.qdrant import QdrantM3Store

        return QdrantM3Store
    if name == "MilvusM3Store":
        from m3_integrations.stores.milvus import MilvusM3Store

        return MilvusM3Store
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
