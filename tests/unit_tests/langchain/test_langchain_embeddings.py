"""M3Embeddings: standard unit tests plus behaviour against the naive reference encoder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_tests.unit_tests import EmbeddingsUnitTests
from pydantic import ValidationError

from m3_integrations import M3Model
from m3_integrations.langchain import M3Embeddings
from tests.common import SAMPLE_TEXTS, naive_encode


class TestM3EmbeddingsStandard(EmbeddingsUnitTests):
    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_model: M3Model) -> None:
        self._model = tiny_model

    @property
    def embeddings_class(self) -> type[M3Embeddings]:
        return M3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": self._model}


def test_is_embeddings(tiny_model: M3Model) -> None:
    embeddings = M3Embeddings(model=tiny_model)
    assert isinstance(embeddings, Embeddings)
    assert embeddings.m3_model is tiny_model


def test_embed_documents_match_naive_passage_vectors(tiny_model: M3Model) -> None:
    vectors = M3Embeddings(model=tiny_model).embed_documents(SAMPLE_TEXTS)
    assert len(vectors) == len(SAMPLE_TEXTS)
    for text, vector in zip(SAMPLE_TEXTS, vectors, strict=True):
        assert all(type(x) is float for x in vector)
        expected = naive_encode(tiny_model, text, max_length=tiny_model.passage_max_length)["dense"]
        np.testing.assert_allclose(vector, expected, atol=1e-5)


def test_query_and_documents_use_their_own_max_lengths(tiny_model: M3Model) -> None:
    text = " ".join(SAMPLE_TEXTS)
    embeddings = M3Embeddings(model=tiny_model, query_max_length=6, passage_max_length=12)
    np.testing.assert_allclose(
        embeddings.embed_query(text), naive_encode(tiny_model, text, max_length=6)["dense"], atol=1e-5
    )
    np.testing.assert_allclose(
        embeddings.embed_documents([text])[0],
        naive_encode(tiny_model, text, max_length=12)["dense"],
        atol=1e-5,
    )
    # Without overrides a query uses the model's query_max_length.
    default = M3Embeddings(model=tiny_model)
    expected = naive_encode(tiny_model, text, max_length=tiny_model.query_max_length)["dense"]
    np.testing.assert_allclose(default.embed_query(text), expected, atol=1e-5)


def test_query_instruction_applies_to_queries_only(tiny_checkpoint: str) -> None:
    embeddings = M3Embeddings(
        model=tiny_checkpoint, model_kwargs={"device": "cpu", "query_instruction": "query: "}
    )
    model = embeddings.m3_model
    assert isinstance(model, M3Model)
    text = "hello world"
    np.testing.assert_allclose(
        embeddings.embed_query(text), naive_encode(model, "query: " + text)["dense"], atol=1e-5
    )
    np.testing.assert_allclose(
        embeddings.embed_documents([text])[0], naive_encode(model, text)["dense"], atol=1e-5
    )


def test_batch_size_and_progress_are_forwarded(tiny_model: M3Model, monkeypatch) -> None:
    seen: dict = {}
    original = tiny_model.encode_passages

    def spy(texts, **kwargs):
        seen.update(kwargs)
        return original(texts, **kwargs)

    monkeypatch.setattr(tiny_model, "encode_passages", spy)
    M3Embeddings(model=tiny_model, batch_size=2, show_progress=True).embed_documents(["a", "b", "c"])
    assert seen["batch_size"] == 2
    assert seen["show_progress"] is True
    assert seen["return_sparse"] is False


def test_empty_inputs(tiny_model: M3Model) -> None:
    embeddings = M3Embeddings(model=tiny_model)
    assert embeddings.embed_documents([]) == []
    assert len(embeddings.embed_query("")) == tiny_model.dense_dim


def test_async_matches_sync(tiny_model: M3Model) -> None:
    embeddings = M3Embeddings(model=tiny_model)

    async def both() -> tuple:
        return await embeddings.aembed_documents(SAMPLE_TEXTS[:3]), await embeddings.aembed_query("hello")

    docs, query = asyncio.run(both())
    np.testing.assert_allclose(docs, embeddings.embed_documents(SAMPLE_TEXTS[:3]), atol=1e-6)
    np.testing.assert_allclose(query, embeddings.embed_query("hello"), atol=1e-6)


def test_bad_input_errors(tiny_model: M3Model) -> None:
    embeddings = M3Embeddings(model=tiny_model)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        embeddings.embed_documents(["ok", None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="text must be a string"):
        embeddings.embed_query(None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        M3Embeddings(model=tiny_model, batch_size=0)
    with pytest.raises(ValidationError):
        M3Embeddings(model=tiny_model, unknown_option=1)
    with pytest.raises(ValueError, match="model_kwargs only applies"):
        M3Embeddings(model=tiny_model, model_kwargs={"device": "cpu"})


def test_in_memory_vector_store(tiny_model: M3Model) -> None:
    embeddings = M3Embeddings(model=tiny_model)
    texts = SAMPLE_TEXTS[:5]
    store = InMemoryVectorStore.from_texts(texts, embedding=embeddings)
    # Query and passage encodings of one short text coincide (no instructions, no truncation), so each
    # text must retrieve itself: the store really uses our vectors for both sides.
    for text in texts:
        assert store.similarity_search(text, k=1)[0].page_content == text
