"""The adapters inside LlamaIndex pipelines: query engines, postprocessors, fusion retrievers."""

from __future__ import annotations

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.retrievers import QueryFusionRetriever
from llama_index.core.schema import TextNode

from m3_integrations import M3Model
from m3_integrations.llama_index import M3Embedding, M3NodeWithScore, M3Reranker, M3Retriever
from tests.common import SAMPLE_TEXTS

TEXTS = [t for t in SAMPLE_TEXTS if len(t) > 10]


@pytest.fixture(scope="module")
def retriever(tiny_model: M3Model) -> M3Retriever:
    nodes = [TextNode(id_=f"n{i}", text=t, metadata={"i": i}) for i, t in enumerate(TEXTS)]
    return M3Retriever(nodes=nodes, model=tiny_model, similarity_top_k=5)


def test_query_engine_with_mock_llm_and_reranker(retriever: M3Retriever, tiny_model: M3Model) -> None:
    reranker = M3Reranker(model=tiny_model, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=MockLLM(max_tokens=8), node_postprocessors=[reranker]
    )
    response = engine.query("capital of Germany")
    assert response.response  # MockLLM echoes a few tokens of the prompt
    expected = reranker.postprocess_nodes(
        retriever.retrieve("capital of Germany"), query_str="capital of Germany"
    )
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in expected]
    assert all(isinstance(n, M3NodeWithScore) and "rerank" in n.scores for n in response.source_nodes)
    # The context the LLM saw is the text of the reranked nodes, metadata untouched.
    assert all(n.node.metadata == {"i": int(n.node.node_id[1:])} for n in response.source_nodes)


async def test_async_query_engine(retriever: M3Retriever) -> None:
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=4))
    response = await engine.aquery("hybrid retrieval")
    assert [n.node.node_id for n in response.source_nodes] == [
        n.node.node_id for n in retriever.retrieve("hybrid retrieval")
    ]


def test_query_fusion_retriever_composes_m3_with_a_vector_index(
    retriever: M3Retriever, tiny_model: M3Model
) -> None:
    vector_index = VectorStoreIndex.from_documents(
        [Document(text=t, id_=f"d{i}") for i, t in enumerate(TEXTS)],
        embed_model=M3Embedding(model=tiny_model),
    )
    fusion = QueryFusionRetriever(
        [retriever, vector_index.as_retriever(similarity_top_k=3)],
        llm=MockLLM(),
        num_queries=1,  # no query generation: nothing reaches an LLM
        mode="reciprocal_rerank",
        similarity_top_k=4,
        use_async=False,
    )
    # The same nodes, re-indexed by M3 straight from the vector index's docstore.
    from_index = M3Retriever.from_defaults(index=vector_index, model=tiny_model)
    assert sorted(from_index.node_ids) == sorted(vector_index.docstore.docs)
    got = fusion.retrieve("capital of France")
    assert 0 < len(got) <= 4
    m3_ids = {n.node.node_id for n in retriever.retrieve("capital of France")}
    assert m3_ids & {n.node.node_id for n in got}


async def test_query_fusion_retriever_async(retriever: M3Retriever) -> None:
    fusion = QueryFusionRetriever(
        [retriever], llm=MockLLM(), num_queries=1, similarity_top_k=3, use_async=True
    )
    got = await fusion.aretrieve("the cat sleeps")
    assert [n.node.node_id for n in got] == [n.node.node_id for n in retriever.retrieve("the cat sleeps")[:3]]
