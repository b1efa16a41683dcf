"""M3Embedding: LlamaIndex BaseEmbedding over M3Model, checked against the naive BGE-M3 formulas."""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding

from m3_integrations import M3Model
from m3_integrations.llama_index import M3Embedding
from tests.common import SAMPLE_TEXTS, naive_encode


@pytest.fixture(scope="module")
def embed_model(tiny_model: M3Model) -> M3Embedding:
    return M3Embedding(model=tiny_model, embed_batch_size=2)


def test_class() -> None:
    assert BaseEmbedding.__name__ in [b.__name__ for b in M3Embedding.__mro__]
    assert M3Embedding.class_name() == "M3Embedding"


def test_query_embedding_matches_naive(embed_model: M3Embedding, tiny_model: M3Model) -> None:
    got = embed_model.get_query_embedding("capital of France")
    assert isinstance(got, list)
    assert all(isinstance(x, float) for x in got)
    ref = naive_encode(tiny_model, "capital of France", tiny_model.query_max_length)["dense"]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_text_embedding_batch_matches_naive_and_batches(
    embed_model: M3Embedding, tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = tiny_model.encode_passages

    def spy(texts, **kwargs):
        calls.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(tiny_model, "encode_passages", spy)
    texts = SAMPLE_TEXTS[:5]
    got = embed_model.get_text_embedding_batch(texts)
    # embed_batch_size=2: LlamaIndex hands our batched _get_text_embeddings 2 + 2 + 1 texts.
    assert calls == [2, 2, 1]
    for text, vec in zip(texts, got, strict=True):
        ref = naive_encode(tiny_model, text, tiny_model.passage_max_length)["dense"]
        np.testing.assert_allclose(vec, ref, atol=1e-5)


def test_query_and_text_paths_use_their_instructions(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", query_instruction="query: ", passage_instruction="")
    embed = M3Embedding(model=model)
    q = embed.get_query_embedding("hello world")
    t = embed.get_text_embedding("hello world")
    np.testing.assert_allclose(q, naive_encode(model, "query: hello world")["dense"], atol=1e-5)
    np.testing.assert_allclose(t, naive_encode(model, "hello world")["dense"], atol=1e-5)
    assert not np.allclose(q, t)


async def test_async_matches_sync(embed_model: M3Embedding) -> None:
    texts = SAMPLE_TEXTS[:3]
    q_sync = embed_model.get_query_embedding(texts[0])
    q_async = await embed_model.aget_query_embedding(texts[0])
    np.testing.assert_allclose(q_async, q_sync, atol=1e-6)
    t_async = await embed_model.aget_text_embedding_batch(texts)
    np.testing.assert_allclose(t_async, embed_model.get_text_embedding_batch(texts), atol=1e-6)
    one = await embed_model.aget_text_embedding(texts[1])
    # One text alone against the same text in a padded batch of three: rounding noise (tests/common.py).
    np.testing.assert_allclose(one, t_async[1], atol=1e-5)


def test_max_length_is_forwarded(tiny_model: M3Model) -> None:
    embed = M3Embedding(model=tiny_model, passage_max_length=4)
    long_text = SAMPLE_TEXTS[1]
    ref = naive_encode(tiny_model, long_text, max_length=4)["dense"]
    np.testing.assert_allclose(embed.get_text_embedding(long_text), ref, atol=1e-5)


def test_loads_from_path_and_serialises_without_weights(tiny_checkpoint: str) -> None:
    embed = M3Embedding(model=tiny_checkpoint, model_kwargs={"device": "cpu"})
    assert isinstance(embed.model, M3Model)
    assert embed.model_name == tiny_checkpoint
    data = embed.to_dict()
    assert data["class_name"] == "M3Embedding"
    assert data["model_name"] == tiny_checkpoint
    assert "_model" not in data
    assert "model" not in data


def test_bad_model_arguments(tiny_model: M3Model) -> None:
    with pytest.raises(TypeError, match="M3Model or a model name/path"):
        M3Embedding(model=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model_kwargs"):
        M3Embedding(model=tiny_model, model_kwargs={"device": "cpu"})
    with pytest.raises(FileNotFoundError):
        M3Embedding(model="./no/such/checkpoint")
