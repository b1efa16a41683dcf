"""BM25 in a store, for encoders without a sparse head: term weights written by us, idf by the server."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.bm25 import word_tokenize
from m3_integrations.stores.remote import term_index

from .conftest import corpus


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> M3Model:
    from m3_integrations.testing import build_tiny_checkpoint

    folder = build_tiny_checkpoint(tmp_path_factory.mktemp("plain"), colbert_head=False, sparse_head=False)
    return M3Model(folder, device="cpu", allow_missing_heads=True)


def naive_store_bm25(query: str, texts: list[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 with Lucene's idf ``ln(1 + (N - n + 0.5) / (n + 0.5))``, avgdl of the first batch."""
    docs = [word_tokenize(t) for t in texts]
    avgdl = sum(len(d) for d in docs) / len(docs)
    scores = []
    for doc in docs:
        tf = Counter(doc)
        total = 0.0
        for term, count in Counter(word_tokenize(query)).items():
            if term not in tf:
                continue
            n_t = sum(1 for d in docs if term in d)
            idf = math.log(1 + (len(docs) - n_t + 0.5) / (n_t + 0.5))
            total += count * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(total)
    return scores


def test_qdrant_bm25_scores_follow_the_formula(make_store: Callable[..., Any], plain_model: M3Model) -> None:
    texts, ids, _ = corpus()
    store = make_store("qdrant", plain_model)
    store.add(texts, ids=ids)
    assert store.lexical_signal == "bm25"
    for query in ("apple river river", "copper island", "nothing known"):
        hits = store.search(query, k=len(texts), mode="sparse", candidates=None)
        got = {h.id: h.scores["bm25"] for h in hits}
        want = dict(zip(ids, naive_store_bm25(query, texts), strict=True))
        np.testing.assert_allclose([got[i] for i in ids], [want[i] for i in ids], rtol=1e-5, atol=1e-6)


def test_qdrant_bm25_matches_the_documents_the_index_matches(
    make_store: Callable[..., Any], plain_model: M3Model
) -> None:
    # The scores differ (another idf, avgdl fixed at the first batch: docs/backends.md measures how
    # much), but the documents sharing a word with the query are the same, and hybrid hits report BM25.
    texts, ids, _ = corpus()
    store = make_store("qdrant", plain_model)
    store.add(texts, ids=ids)
    index = M3Index(plain_model)
    index.add(texts, ids=ids)
    for query in ("apple river", "quiet winter market"):
        want = {h.id for h in index.search(query, k=len(texts), mode="sparse") if h.score > 0}
        got = {h.id for h in store.search(query, k=len(texts), mode="sparse") if h.score > 0}
        assert got == want and 0 < len(got) < len(texts)
        assert set(store.search(query, k=5)[0].scores) == {"dense", "bm25", "colbert"}


def test_term_index_is_stable_and_spread() -> None:
    words = [f"w{i}" for i in range(5000)]
    indexes = {term_index(w) for w in words}
    assert len(indexes) == len(words)
    assert all(0 <= i < 2**31 for i in indexes)


def test_milvus_refuses_encoders_without_sparse_head(plain_model: M3Model, tmp_path: Path) -> None:
    from m3_integrations.stores.milvus import MilvusM3Store

    with pytest.raises(ValueError, match="sparse head"):
        MilvusM3Store(plain_model, client=object())
