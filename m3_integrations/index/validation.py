"""Checks of documents before anything is stored (``M3Index`` and the vector-database stores)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from m3_integrations._utils import validate_texts
from m3_integrations.index.metadata import normalize_metadata

__all__ = ["validate_documents"]


def validate_documents(
    texts: Sequence[str],
    ids: Sequence[str] | None,
    metadatas: Sequence[Mapping[str, Any] | None] | None,
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Texts, ids (random UUID4 strings when ``None``) and JSON metadata, checked and normalised.

    Example:
        >>> validate_documents(["a", "b"], ["1", "2"], [{"lang": "en"}, None])
        (['a', 'b'], ['1', '2'], [{'lang': 'en'}, {}])

    Raises:
        TypeError: a text or id is not a string, ``texts`` is a dict or set, a metadata entry is not a
            dict, or metadata holds a non-string key or a non-JSON value (naming the id and key path).
        ValueError: ids or metadatas of the wrong length, an id repeated within the call, or metadata
            that JSON cannot hold (NaN, infinity, nesting deeper than 32 levels, lone surrogates).
    """
    texts = validate_texts(texts, what="texts", allow_empty_strings=True)
    if ids is None:
        ids = [str(uuid.uuid4()) for _ in texts]
    else:
        ids = validate_texts(ids, what="ids")
        if len(ids) != len(texts):
            msg = f"got {len(ids)} ids for {len(texts)} texts"
            raise ValueError(msg)
        seen: set[str] = set()
        for doc_id in ids:
            if doc_id in seen:
                msg = f"duplicate id {doc_id!r} within one add call"
                raise ValueError(msg)
            seen.add(doc_id)
    if metadatas is None:
        return texts, ids, [{} for _ in texts]
    if isinstance(metadatas, Mapping):
        msg = "metadatas must be a list with one dict (or None) per text, got a single dict"
        raise TypeError(msg)
    metadatas = list(metadatas)
    if len(metadatas) != len(texts):
        msg = f"got {len(metadatas)} metadatas for {len(texts)} texts"
        raise ValueError(msg)
    metas = [
        normalize_metadata(meta, f"metadatas[{i}] (document {doc_id!r})")
        for i, (meta, doc_id) in enumerate(zip(metadatas, ids, strict=True))
    ]
    return texts, ids, metas
