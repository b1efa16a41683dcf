"""Store URIs, as the command line takes them: which database, where, which collection.

============================================  ==================================================
URI                                           store
============================================  ==================================================
``qdrant://HOST[:PORT]/COLLECTION``           Qdrant server over HTTP (port 6333 by default)
``qdrants://HOST[:PORT]/COLLECTION``          the same over HTTPS
``qdrant+local:///PATH?collection=NAME``      Qdrant's local mode in the folder ``PATH``
``milvus://HOST[:PORT]/COLLECTION``           Milvus server (port 19530 by default)
``milvuss://HOST[:PORT]/COLLECTION``          the same over TLS
``milvus-lite:///PATH.db?collection=NAME``    Milvus Lite in the file ``PATH.db``
============================================  ==================================================

The collection defaults to ``docs``. API keys and tokens are never part of a URI (they would end up in
shell histories and process lists): they come from ``QDRANT_API_KEY`` and ``MILVUS_TOKEN``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from m3_integrations.model import M3Model
from m3_integrations.stores.base import M3Store

__all__ = ["SCHEMES", "open_store"]

SCHEMES = ("qdrant", "qdrants", "qdrant+local", "milvus", "milvuss", "milvus-lite")
DEFAULT_COLLECTION = "docs"


def _collection(uri: str, path: str, query: dict[str, list[str]], *, from_path: bool) -> str:
    names = query.get("collection", [])
    name = unquote(path.strip("/")) if from_path and path.strip("/") else (names[0] if names else "")
    if from_path and names:
        msg = f"store {uri!r}: name the collection in the path or with ?collection=, not both"
        raise ValueError(msg)
    name = name or DEFAULT_COLLECTION
    if "/" in name or not name.replace("_", "").replace("-", "").isalnum():
        msg = f"store {uri!r}: collection name {name!r} must be letters, digits, '_' or '-'"
        raise ValueError(msg)
    return name


def open_store(uri: str, model: M3Model, **kwargs: Any) -> M3Store:
    """The store a URI names (see the module docstring), connected and schema-checked.

    Args:
        uri: the store URI.
        model: the encoder.
        **kwargs: more arguments of the store class (``batch_size``, ``show_progress``...).

    Raises:
        ValueError: an unknown scheme, a missing host or path, a bad collection name, or a password in
            the URI.
        StoreConnectionError, StoreSchemaError: from the store (unreachable; another model's collection).

    Example:
        .. code-block:: python

            store = open_store("qdrant+local:///data/qdrant?collection=papers", model)
            store = open_store("milvus://milvus.internal:19530/papers", model)
    """
    from m3_integrations.stores.milvus import MilvusM3Store
    from m3_integrations.stores.qdrant import QdrantM3Store

    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        msg = f"store {uri!r}: unknown scheme {parts.scheme!r}; expected one of {', '.join(SCHEMES)}"
        raise ValueError(msg)
    if parts.password is not None or parts.username is not None:
        msg = f"store {uri!r}: no credentials in a URI; set QDRANT_API_KEY or MILVUS_TOKEN"
        raise ValueError(msg)
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"collection"})
    if unknown:
        msg = f"store {uri!r}: unknown parameter(s) {', '.join(unknown)} (only ?collection=)"
        raise ValueError(msg)
    local = scheme in ("qdrant+local", "milvus-lite")
    if local:
        if parts.netloc or not parts.path:
            msg = f"store {uri!r}: a local store names a path: {scheme}:///absolute/path or {scheme}:relative"
            raise ValueError(msg)
        path = os.path.expanduser(unquote(parts.path))
        name = _collection(uri, "", query, from_path=False)
        if scheme == "qdrant+local":
            return QdrantM3Store(model, path=path, collection_name=name, **kwargs)
        from m3_integrations._utils import import_optional

        client = import_optional("pymilvus", "milvus").MilvusClient(path)
        return MilvusM3Store(model, client, collection_name=name, **kwargs)
    if not parts.hostname:
        msg = f"store {uri!r}: no host; write {scheme}://HOST[:PORT]/COLLECTION"
        raise ValueError(msg)
    name = _collection(uri, parts.path, query, from_path=True)
    secure = scheme.endswith("s")
    if scheme.startswith("qdrant"):
        url = f"{'https' if secure else 'http'}://{parts.hostname}:{parts.port or 6333}"
        return QdrantM3Store(model, url=url, collection_name=name, **kwargs)
    server = f"{'https' if secure else 'http'}://{parts.hostname}:{parts.port or 19530}"
    return MilvusM3Store(model, uri=server, collection_name=name, **kwargs)
