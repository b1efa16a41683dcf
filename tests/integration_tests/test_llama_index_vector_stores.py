"""M3Embedding and the sparse functions inside LlamaIndex's own indexes and Qdrant's local mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.schema import MetadataMode, TextNode

from m3_integrations import M3Model
from m3_integrations.llama_index import M3Embedding, m3_sparse_doc_fn, m3_sparse_query_fn
from tests.common import SAMPLE_TEXTS, naive_encode, naive_lexical_score

CORPUS = [t for t in SAMPLE_TEXTS if len(t) > 10]
QUERIES = [
    "capital of Germany",
    "the cat sleeps in the sun",
    "向量数据库",
    "Qdrant similarity search",
    "Paris France Berlin",
    "검색 증강 생성",
]


def _nodes() -> list[TextNode]:
    # Qdrant wants UUID point ids.
    return [TextNode(id_=str(uuid.UUID(int=i + 1)), text=t, metadata={"i": i}) for i, t in enumerate(CORPUS)]


def _embedded_texts() -> list[str]:
    """What LlamaIndex hands the embedding and sparse functions: metadata header + text."""
    return [n.get_content(metadata_mode=MetadataMode.EMBED) for n in _nodes()]


@pytest.fixture
def global_embed_model(tiny_model: M3Model) -> Iterator[M3Embedding]:
    embed = M3Embedding(model=tiny_model)
    previous = Settings._embed_model
    Settings.embed_model = embed
    try:
        yield embed
    finally:
        Settings._embed_model = previous


def test_vector_store_index_with_settings_embed_model(
    global_embed_model: M3Embedding, tiny_model: M3Model
) -> None:
    index = VectorStoreIndex(_nodes())  # picks up Settings.embed_model
    retriever = index.as_retriever(similarity_top_k=len(CORPUS))
    passages = np.stack([naive_encode(tiny_model, t)["dense"] for t in _embedded_texts()])
    for query in QUERIES:
        q = naive_encode(tiny_model, query)["dense"]
        expected = np.argsort(-(passages @ q), kind="stable")
        got = retriever.retrieve(query)
        assert [n.node.metadata["i"] for n in got] == expected.tolist()
        assert got[0].score == pytest.approx(float(passages[expected[0]] @ q), abs=1e-4)


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_qdrant_local_hybrid_with_m3_sparse_functions(tiny_model: M3Model, mode: str) -> None:
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant = pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(location=":memory:")
    store = qdrant.QdrantVectorStore(
        "m3",
        client=client,
        enable_hybrid=True,
        sparse_doc_fn=m3_sparse_doc_fn(tiny_model),
        sparse_query_fn=m3_sparse_query_fn(tiny_model),
    )
    index = VectorStoreIndex(
        _nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=M3Embedding(model=tiny_model),
    )
    # The stored sparse vectors are the model's lexical weights, token id for token id.
    points, _ = client.scroll("m3", with_vectors=True, limit=100)
    assert len(points) == len(CORPUS)
    for point in points:
        text = _embedded_texts()[point.payload["i"]]
        sparse = point.vector[store.sparse_vector_name]
        ref = naive_encode(tiny_model, text, tiny_model.passage_max_length)["lexical"]
        got = dict(zip(sparse.indices, sparse.values, strict=True))
        assert got == pytest.approx(ref, rel=1e-3, abs=1e-3)

    retriever = index.as_retriever(vector_store_query_mode=mode, similarity_top_k=3, sparse_top_k=len(CORPUS))
    lexical = [naive_encode(tiny_model, t)["lexical"] for t in _embedded_texts()]
    checked = 0
    for query in QUERIES:
        got = retriever.retrieve(query)
        if mode == "hybrid":
            assert len(got) == 3  # the dense half always answers
            continue
        q = naive_encode(tiny_model, query, tiny_model.query_max_length)["lexical"]
        scores = [naive_lexical_score(q, p) for p in lexical]
        if max(scores) <= 0:  # no shared weighted token: Qdrant's sparse search finds nothing
            assert got == []
            continue
        best = int(np.argmax(scores))
        assert got[0].node.metadata["i"] == best
        assert got[0].score == pytest.approx(scores[best], rel=1e-3)
        checked += 1
    assert mode == "hybrid" or checked >= 2
