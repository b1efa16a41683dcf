"""The value types an :class:`~m3_integrations.M3Index` hands out and takes: hits and encoded queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EncodedQuery", "SearchHit"]


@dataclass
class SearchHit:
    """One search result (or one stored document, from :meth:`M3Index.get <m3_integrations.M3Index.get>`).

    Attributes:
        id: the document id.
        text: the document text.
        metadata: a deep copy of the document metadata (changing it changes nothing in the index).
        score: the score that ranked it: fused, the single signal's, or the reranker's.
        scores: per-signal scores (``dense``, ``sparse``, ``colbert``, ``bm25``, ``rerank``) of the
            signals that were computed; empty for ``get``.
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class EncodedQuery:
    """A query's representations, as ``M3Index.search_encoded`` consumes them.

    Attributes:
        dense: ``(d,)`` float32 vector.
        lexical_weights: token id → weight (M3's lexical weights; empty without a sparse head).
        colbert_vecs: ``(N_q, d)`` token vectors, or ``None`` when no ColBERT signal is needed.
        bm25_tokens: the query's BM25 tokens (token ids or words, repeats counted).
    """

    dense: np.ndarray
    lexical_weights: dict[int, float] = field(default_factory=dict)
    colbert_vecs: np.ndarray | None = None
    bm25_tokens: list[Any] = field(default_factory=list)
