"""M3Reranker: the core rerankers' order and scores as a LangChain document compressor."""

from __future__ import annotations

import asyncio

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ValidationError

from m3_integrations import CrossEncoderReranker, M3Model, M3ScoreReranker
from m3_integrations.langchain import M3Reranker, M3Retriever
from tests.common import SAMPLE_TEXTS

TEXTS = [t for t in SAMPLE_TEXTS if t.strip()]
QUERY = "capital of France and Germany"


def _docs() -> list[Document]:
    return [Document(page_content=t, metadata={"n": i}, id=f"d{i}") for i, t in enumerate(TEXTS)]


def test_class() -> None:
    assert BaseDocumentCompressor in M3Reranker.__mro__


@pytest.mark.parametrize("top_n", [1, 3, None])
def test_m3_scores_order_and_top_n(tiny_model: M3Model, top_n: int | None) -> None:
    docs = _docs()
    out = M3Reranker(model=tiny_model, top_n=top_n).compress_documents(docs, QUERY)
    expected = M3ScoreReranker(tiny_model).rerank(QUERY, TEXTS, top_n=top_n)
    assert [d.id for d in out] == [f"d{i}" for i, _ in expected]
    assert [d.metadata["relevance_score"] for d in out] == [s for _, s in expected]
    assert len(out) == (top_n or len(TEXTS))
    assert all(d.page_content == TEXTS[d.metadata["n"]] for d in out)
    assert all("relevance_score" not in d.metadata for d in docs)  # inputs are not modified


def test_weights_are_forwarded(tiny_model: M3Model) -> None:
    out = M3Reranker(model=tiny_model, top_n=None, weights=(1.0, 0.0, 0.0)).compress_documents(_docs(), QUERY)
    expected = M3ScoreReranker(tiny_model, weights=(1.0, 0.0, 0.0)).rerank(QUERY, TEXTS)
    assert [d.metadata["relevance_score"] for d in out] == [s for _, s in expected]


def test_cross_encoder(tiny_reranker_checkpoint: str) -> None:
    cross_encoder = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu")
    out = M3Reranker(cross_encoder=cross_encoder, top_n=2).compress_documents(_docs(), QUERY)
    expected = cross_encoder.rerank(QUERY, TEXTS, top_n=2)
    assert [(d.id, d.metadata["relevance_score"]) for d in out] == [(f"d{i}", s) for i, s in expected]
    by_path = M3Reranker(cross_encoder=tiny_reranker_checkpoint, top_n=2)
    assert isinstance(by_path.cross_encoder, CrossEncoderReranker)


def test_empty_documents_and_async(tiny_model: M3Model) -> None:
    reranker = M3Reranker(model=tiny_model, top_n=2)
    assert reranker.compress_documents([], QUERY) == []
    out = asyncio.run(reranker.acompress_documents(_docs(), QUERY))
    assert [d.id for d in out] == [d.id for d in reranker.compress_documents(_docs(), QUERY)]


def test_bad_input_errors(tiny_model: M3Model, tiny_reranker_checkpoint: str) -> None:
    with pytest.raises(ValueError, match="needs a model"):
        M3Reranker(top_n=2)
    with pytest.raises(ValueError, match="not both"):
        M3Reranker(model=tiny_model, cross_encoder=tiny_reranker_checkpoint)
    with pytest.raises(ValidationError):
        M3Reranker(model=tiny_model, top_n=0)
    with pytest.raises(ValueError, match="query is empty"):
        M3Reranker(model=tiny_model).compress_documents(_docs(), " ")


def test_contextual_compression_retriever(tiny_model: M3Model) -> None:
    base = M3Retriever.from_documents(_docs(), model=tiny_model, k=5)
    retriever = ContextualCompressionRetriever(
        base_compressor=M3Reranker(model=tiny_model, top_n=2), base_retriever=base
    )
    out = retriever.invoke(QUERY)
    candidates = base.invoke(QUERY)
    expected = M3ScoreReranker(tiny_model).rerank(QUERY, [d.page_content for d in candidates], top_n=2)
    assert [d.id for d in out] == [candidates[i].id for i, _ in expected]
    for doc, (_, score) in zip(out, expected, strict=True):
        assert doc.metadata["relevance_score"] == score
        # the retriever's per-signal scores are kept, with the rerank score added
        assert doc.metadata["scores"]["rerank"] == score
        assert {"dense", "sparse", "colbert"} <= set(doc.metadata["scores"])
