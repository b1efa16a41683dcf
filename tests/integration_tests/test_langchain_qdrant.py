"""M3 dense + sparse embeddings inside langchain-qdrant's QdrantVectorStore (local in-memory mode)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode

from m3_integrations import M3Model
from m3_integrations.langchain import M3Embeddings, M3SparseEmbeddings
from tests.common import SAMPLE_TEXTS, naive_lexical_score

TEXTS = [t for t in SAMPLE_TEXTS if t.strip()]


def _store(model: M3Model, mode: RetrievalMode) -> QdrantVectorStore:
    store = QdrantVectorStore.from_documents(
        [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)],
        embedding=M3Embeddings(model=model),
        sparse_embedding=M3SparseEmbeddings(model=model),
        retrieval_mode=mode,
        location=":memory:",
        collection_name=f"m3-{mode.value}",
    )
    assert store.client.count(f"m3-{mode.value}").count == len(TEXTS)
    return store


def _lexical_scores(model: M3Model, query: str) -> list[float]:
    q = model.encode_queries([query], return_dense=False).lexical_weights[0]
    passages = model.encode_passages(TEXTS, return_dense=False).lexical_weights
    return [naive_lexical_score(q, p) for p in passages]


def test_qdrant_sparse_scores_are_m3_lexical_scores(tiny_model: M3Model) -> None:
    store = _store(tiny_model, RetrievalMode.SPARSE)
    for query in (TEXTS[0], "capital of Korea 서울 北京"):
        expected = _lexical_scores(tiny_model, query)
        found = store.similarity_search_with_score(query, k=len(TEXTS))
        # Qdrant returns exactly the texts sharing a token with the query (weights are positive)...
        assert {doc.metadata["n"] for doc, _ in found} == {i for i, score in enumerate(expected) if score > 0}
        # ...scored by the dot product of our weights: M3's lexical score.
        for doc, score in found:
            assert score == pytest.approx(expected[doc.metadata["n"]], rel=1e-4, abs=1e-5)
        assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    assert max(_lexical_scores(tiny_model, TEXTS[0])) > 0


def test_qdrant_hybrid_search(tiny_model: M3Model) -> None:
    store = _store(tiny_model, RetrievalMode.HYBRID)
    checked = 0
    for i, text in enumerate(TEXTS):
        lexical = _lexical_scores(tiny_model, text)
        if max(lexical) > lexical[i]:
            continue  # another text outscores it lexically: the fused rank depends on RRF details
        # The text is first by dense (cosine 1) and by lexical score, so Qdrant's fusion puts it first.
        top = store.similarity_search(text, k=2)
        assert top[0].metadata["n"] == i
        assert top[0].page_content == text
        checked += 1
    assert checked >= 3
