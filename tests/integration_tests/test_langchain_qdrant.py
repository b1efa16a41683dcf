"""M3 dense + sparse embeddings inside langchain-qdrant's QdrantVectorStore (local in-memory mode)."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore, RetrievalMode

from m3_integrations import M3Model
from m3_integrations.langchain import M3Embeddings, M3SparseEmbeddings
from tests.common import SAMPLE_TEXTS

TEXTS = [t for t in SAMPLE_TEXTS if t.strip()]


@pytest.mark.parametrize("mode", [RetrievalMode.HYBRID, RetrievalMode.SPARSE])
def test_qdrant_store_with_m3_embeddings(tiny_model: M3Model, mode: RetrievalMode) -> None:
    store = QdrantVectorStore.from_documents(
        [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS)],
        embedding=M3Embeddings(model=tiny_model),
        sparse_embedding=M3SparseEmbeddings(model=tiny_model),
        retrieval_mode=mode,
        location=":memory:",
        collection_name=f"m3-{mode.value}",
    )
    assert store.client.count(f"m3-{mode.value}").count == len(TEXTS)
    # A text's own vectors are its best match in every mode (its lexical overlap with itself is total).
    for i, text in list(enumerate(TEXTS))[:4]:
        top = store.similarity_search(text, k=2)
        assert top[0].metadata["n"] == i
        assert top[0].page_content == text
