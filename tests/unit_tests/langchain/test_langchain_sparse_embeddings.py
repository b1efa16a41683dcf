"""M3SparseEmbeddings: lexical weights as Qdrant SparseVector and Milvus dict sparse embeddings."""

from __future__ import annotations

import asyncio

import pytest
from langchain_milvus.utils.sparse import BaseSparseEmbedding
from langchain_qdrant import SparseEmbeddings, SparseVector
from pydantic import ValidationError

from m3_integrations import M3Model
from m3_integrations.langchain import M3SparseEmbeddings
from tests.common import LEXICAL_WEIGHT_TOL, SAMPLE_TEXTS, naive_encode


def _as_dict(vector: SparseVector) -> dict[int, float]:
    assert len(vector.indices) == len(set(vector.indices))
    return dict(zip(vector.indices, vector.values, strict=True))


def test_implements_both_partner_interfaces(tiny_model: M3Model) -> None:
    sparse = M3SparseEmbeddings(model=tiny_model)
    assert isinstance(sparse, SparseEmbeddings)
    assert isinstance(sparse, BaseSparseEmbedding)


def test_milvus_store_recognises_it_as_sparse(tiny_model: M3Model) -> None:
    from langchain_milvus import Milvus

    from m3_integrations.langchain import M3Embeddings

    # the check Milvus applies to each embedding function to pick a sparse or a dense vector field
    assert Milvus._is_sparse_embedding(M3SparseEmbeddings(model=tiny_model, output="dict"))
    assert not Milvus._is_sparse_embedding(M3Embeddings(model=tiny_model))


def test_sparse_vectors_match_naive_lexical_weights(tiny_model: M3Model) -> None:
    sparse = M3SparseEmbeddings(model=tiny_model)
    vectors = sparse.embed_documents(SAMPLE_TEXTS)
    assert len(vectors) == len(SAMPLE_TEXTS)
    for text, vector in zip(SAMPLE_TEXTS, vectors, strict=True):
        assert isinstance(vector, SparseVector)
        assert vector.indices == sorted(vector.indices)
        assert all(type(i) is int for i in vector.indices)
        assert all(type(v) is float for v in vector.values)
        expected = naive_encode(tiny_model, text, max_length=tiny_model.passage_max_length)["lexical"]
        got = _as_dict(vector)
        assert got.keys() == expected.keys()
        for token, weight in expected.items():
            assert got[token] == pytest.approx(weight, **LEXICAL_WEIGHT_TOL)
    assert vectors[SAMPLE_TEXTS.index("")].indices == []


def test_query_uses_query_settings(tiny_checkpoint: str) -> None:
    sparse = M3SparseEmbeddings(model=tiny_checkpoint, model_kwargs={"device": "cpu", "query_max_length": 5})
    text = SAMPLE_TEXTS[0]
    expected = naive_encode(sparse.m3_model, text, max_length=5)["lexical"]
    got = _as_dict(sparse.embed_query(text))
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, **LEXICAL_WEIGHT_TOL)


def test_dict_output_for_milvus(tiny_model: M3Model) -> None:
    sparse = M3SparseEmbeddings(model=tiny_model, output="dict")
    qdrant_style = M3SparseEmbeddings(model=tiny_model)
    docs = sparse.embed_documents(SAMPLE_TEXTS[:3])
    query = sparse.embed_query("capital of France")
    assert all(isinstance(d, dict) for d in [*docs, query])
    assert all(type(k) is int and type(v) is float for d in [*docs, query] for k, v in d.items())
    for as_dict, as_vector in zip(docs, qdrant_style.embed_documents(SAMPLE_TEXTS[:3]), strict=True):
        assert as_dict == _as_dict(as_vector)
    assert query == _as_dict(qdrant_style.embed_query("capital of France"))


def test_async_matches_sync(tiny_model: M3Model) -> None:
    sparse = M3SparseEmbeddings(model=tiny_model, output="dict")

    async def both() -> tuple:
        return await sparse.aembed_documents(SAMPLE_TEXTS[:2]), await sparse.aembed_query("hello")

    docs, query = asyncio.run(both())
    assert docs == sparse.embed_documents(SAMPLE_TEXTS[:2])
    assert query == sparse.embed_query("hello")


def test_model_without_sparse_head_is_refused(tmp_path) -> None:
    from m3_integrations.testing import build_tiny_checkpoint

    path = build_tiny_checkpoint(tmp_path / "no-sparse", sparse_head=False)
    model = M3Model(path, device="cpu", allow_missing_heads=True)
    with pytest.raises(ValueError, match="no sparse head"):
        M3SparseEmbeddings(model=model)


def test_bad_input_errors(tiny_model: M3Model) -> None:
    sparse = M3SparseEmbeddings(model=tiny_model)
    with pytest.raises(TypeError, match=r"texts\[0\] must be a string"):
        sparse.embed_documents([3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="text must be a string"):
        sparse.embed_query(["a list"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        M3SparseEmbeddings(model=tiny_model, output="csr")


def test_without_langchain_qdrant(tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "langchain_qdrant.sparse_embeddings", None)
    with pytest.raises(ImportError, match=r"pip install langchain-qdrant.*output='dict'"):
        M3SparseEmbeddings(model=tiny_model)
    # dicts need no partner package
    assert M3SparseEmbeddings(model=tiny_model, output="dict").embed_query("hello") is not None
