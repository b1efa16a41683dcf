"""Both framework adapters over a database store: the same documents and scores as the store's search."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m3_integrations import M3Index, M3Model

from .conftest import corpus

BACKENDS = ["qdrant", "milvus"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_langchain_retriever_over_a_store(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    from langchain_core.documents import Document

    from m3_integrations.langchain import M3Retriever

    texts, ids, metadatas = corpus()
    store = make_store(backend, tiny_model)
    retriever = M3Retriever.from_texts(texts[:20], ids=ids[:20], metadatas=metadatas[:20], store=store, k=3)
    assert retriever.store is store and len(store) == 20
    docs = retriever.invoke("quiet winter market", filter={"lang": "ko"}, fusion="rrf")
    hits = store.search("quiet winter market", k=3, filter={"lang": "ko"}, fusion="rrf")
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["scores"] for d in docs] == [h.scores for h in hits]
    assert all(d.metadata["lang"] == "ko" for d in docs)
    retriever.add_documents([Document(page_content="silver harbor lantern", id="new")])
    assert retriever.get_by_ids(["new"])[0].page_content == "silver harbor lantern"
    retriever.delete(["new"])
    assert len(store) == 20
    # A store is given as `store=` (or `index=`); options are checked at construction with its rules.
    assert M3Retriever(index=store).index is store
    with pytest.raises(ValueError, match="callable"):
        M3Retriever(store=store, filter=lambda meta: True)
    with pytest.raises(ValueError, match="not both"):
        M3Retriever(store=store, index=store)
    with pytest.raises(TypeError, match="keeps its documents"):
        retriever.save("anywhere")


def test_langchain_from_texts_refuses_index_options_with_a_store(
    make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    from m3_integrations.langchain import M3Retriever

    with pytest.raises(ValueError, match="index_kwargs"):
        M3Retriever.from_texts(
            ["a"], store=make_store("qdrant", tiny_model), index_kwargs={"lexical": "bm25"}
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_llama_index_retriever_over_a_store(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model, tmp_path: Path
) -> None:
    from llama_index.core.schema import TextNode
    from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

    from m3_integrations.llama_index import M3Retriever

    texts, ids, metadatas = corpus()
    store = make_store(backend, tiny_model)
    store.add(texts[:10], ids=ids[:10], metadatas=metadatas[:10])  # added outside LlamaIndex
    nodes = [
        TextNode(id_=i, text=t, metadata=m)
        for t, i, m in zip(texts[10:20], ids[10:20], metadatas[10:20], strict=True)
    ]
    retriever = M3Retriever(nodes, store=store, similarity_top_k=4)
    assert len(store) == 20
    retriever.filters = MetadataFilters(
        filters=[MetadataFilter(key="n", value=5, operator=FilterOperator.GT)]
    )
    results = retriever.retrieve("copper island thunder")
    hits = store.search("copper island thunder", k=4, filter={"n": {"$gt": 5}})
    assert [r.node.node_id for r in results] == [h.id for h in hits]
    assert {h.id for h in hits} & set(ids[:10]) and {h.id for h in hits} & set(ids[10:20])
    assert [r.scores for r in results] == [h.scores for h in hits]
    by_id = {r.node.node_id: r.node for r in results}
    original = dict(zip(ids, texts, strict=True))
    for hit in hits:  # nodes inserted here come from the docstore, the others from the stored text
        assert by_id[hit.id].text == original[hit.id]
        assert by_id[hit.id].metadata == hit.metadata
    with pytest.raises(TypeError, match="persist writes an M3Index"):
        retriever.persist(tmp_path / "r")
    with pytest.raises(TypeError, match="node_ids"):
        _ = retriever.node_ids
    with pytest.raises(ValueError, match="not both"):
        M3Retriever(store=store, m3_index=M3Index(tiny_model))
