"""MilvusM3Store's ColBERT companion layout: float16 matrices as hexadecimal chunks, one row per chunk.

The chunk size is lowered so that every document of the tiny-checkpoint corpus needs several rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.errors import StoreRequestError, StoreSchemaError

from .conftest import QUERIES, build_store, corpus
from .test_parity import assert_same_hits
from .test_stores import FailingClient, rejection

milvus = pytest.importorskip("m3_integrations.stores.milvus")
milvus_colbert = pytest.importorskip("m3_integrations.stores._milvus_colbert")
pytest.importorskip("pymilvus")

# Two vectors of the tiny checkpoint (d=32: 128 hexadecimal characters each) per chunk.
SMALL_CHUNK = 2 * 4 * 32


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_colbert, "CHUNK_CHARS", SMALL_CHUNK)


def companion_rows(store: Any, doc_ids: list[str] | None = None) -> list[dict[str, Any]]:
    expression = "" if doc_ids is None else f"doc_id in {json.dumps(doc_ids)}"
    return list(
        store.client.query(
            store.colbert_collection,
            filter=expression,
            output_fields=["doc_id", "seq", "chunk", "chunks", "vectors"],
            limit=16384,
        )
    )


def stored_matrices(store: Any) -> dict[str, np.ndarray]:
    """Each document's ColBERT matrix as stored, from its current version's chunks in order."""
    current = {
        row["pk"]: row["seq"]
        for row in store.client.query(store.collection_name, filter="", output_fields=["seq"], limit=16384)
    }
    chunks: dict[str, dict[int, str]] = {}
    for row in companion_rows(store):
        assert current[row["doc_id"]] == row["seq"], "a row of a replaced or failed version was left"
        chunks.setdefault(row["doc_id"], {})[row["chunk"]] = row["vectors"]
    return {
        doc_id: milvus.decode_colbert([parts[i] for i in range(len(parts))], store.model.colbert_dim)
        for doc_id, parts in chunks.items()
    }


def test_chunks_round_trip_exactly() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((7, 4)).astype(np.float32)
    chunks = milvus.colbert_chunks(matrix, chunk_chars=3 * 4 * 4)
    assert [len(c) for c in chunks] == [48, 48, 16]  # 3 + 3 + 1 vectors
    decoded = milvus.decode_colbert(chunks, 4)
    assert decoded.dtype == np.float16
    np.testing.assert_array_equal(decoded, matrix.astype(np.float16))
    assert milvus.colbert_chunks(np.zeros((0, 4), dtype=np.float32)) == [""]
    assert milvus.decode_colbert([""], 4).shape == (0, 4)
    with pytest.raises(ValueError, match="cannot hold one vector"):
        milvus.colbert_chunks(matrix, chunk_chars=15)


def test_default_chunks_fit_a_milvus_varchar() -> None:
    assert milvus.CHUNK_CHARS <= 65535
    chunks = milvus.colbert_chunks(np.ones((300, 1024), dtype=np.float32))
    assert len(chunks) == 20  # 15 vectors of d=1024 per chunk
    assert max(len(c) for c in chunks) <= milvus.CHUNK_CHARS


@pytest.fixture
def chunked_store(small_chunks: None, tiny_model: M3Model, milvus_client: object) -> Any:
    # One batch, as in test_parity: the same floats as M3Index's.
    store = build_store("milvus", tiny_model, milvus_client, batch_size=64)
    texts, ids, metadatas = corpus()
    store.add(texts, ids=ids, metadatas=metadatas)
    return store


def test_multi_chunk_documents_keep_their_vectors_and_parity(
    chunked_store: Any, tiny_model: M3Model, reference_index: M3Index
) -> None:
    texts, ids, _ = corpus()
    rows = companion_rows(chunked_store)
    assert len({r["doc_id"] for r in rows}) == len(ids)
    assert min(r["chunks"] for r in rows) >= 2  # every document spans several rows
    assert len(rows) == sum(r["chunks"] for r in rows if r["chunk"] == 0)
    # The stored matrices are the encoder's vectors rounded to float16, bit for bit.
    encoded = tiny_model.encode_passages(texts, return_dense=False, return_colbert=True)
    matrices = stored_matrices(chunked_store)
    for doc_id, vectors in zip(ids, encoded.colbert_vecs, strict=True):
        np.testing.assert_array_equal(matrices[doc_id], np.asarray(vectors).astype(np.float16))
    # Same hits and scores as M3Index, exhaustive and two-stage.
    for query in QUERIES:
        for fusion in ("weighted", "rrf"):
            for candidates in (None, 8):
                want = reference_index.search(query, k=10, fusion=fusion, candidates=candidates)
                got = chunked_store.search(query, k=10, fusion=fusion, candidates=candidates)
                assert_same_hits(want, got)
        want = reference_index.search(query, k=5, mode="colbert", candidates=None)
        assert_same_hits(want, chunked_store.search(query, k=5, mode="colbert", candidates=None))


def test_delete_and_replace_remove_every_chunk(
    small_chunks: None, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store("milvus", tiny_model)
    texts, ids, _ = corpus()
    store.add(texts[:6], ids=ids[:6])
    before = companion_rows(store, [ids[0]])
    assert len(before) >= 2
    store.delete([ids[0]])
    assert companion_rows(store, [ids[0]]) == []
    assert len(companion_rows(store)) == sum(r["chunks"] for r in companion_rows(store) if r["chunk"] == 0)
    # A replaced document keeps only its new version's chunks (a longer text: more of them).
    longer = texts[1] + " " + texts[2] + " " + texts[3]
    old_count = len(companion_rows(store, [ids[1]]))
    store.add([longer], ids=[ids[1]])
    rows = companion_rows(store, [ids[1]])
    assert len({r["seq"] for r in rows}) == 1
    assert sorted(r["chunk"] for r in rows) == list(range(rows[0]["chunks"]))
    assert len(rows) > old_count
    stored_matrices(store)  # no row of a replaced version anywhere


def test_a_version_missing_a_chunk_scores_zero_not_a_truncated_matrix(
    small_chunks: None, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store("milvus", tiny_model)
    texts, ids, _ = corpus()
    store.add(texts[:4], ids=ids[:4])
    complete = {h.id: h.scores["colbert"] for h in store.search(texts[0], k=4, candidates=None)}
    assert min(complete.values()) > 0
    rows = store.client.query(
        store.colbert_collection, filter=f'doc_id == "{ids[0]}" and chunk == 1', output_fields=["row"]
    )
    store.client.delete(store.colbert_collection, ids=[rows[0]["row"]])
    hits = {h.id: h.scores["colbert"] for h in store.search(texts[0], k=4, candidates=None)}
    assert hits[ids[0]] == 0.0
    for doc_id in ids[1:4]:
        np.testing.assert_allclose(hits[doc_id], complete[doc_id], rtol=1e-6)


def test_a_batch_split_over_several_inserts_fails_whole(
    small_chunks: None,
    make_store: Callable[..., Any],
    tiny_model: M3Model,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = make_store("milvus", tiny_model)
    texts, ids, _ = corpus()
    base.add(texts[:4], ids=ids[:4])
    old = {h.id: h.text for h in base.get(ids[:4])}
    # A few chunks per insert request: a batch of 4 documents takes several requests.
    monkeypatch.setattr(milvus_colbert, "INSERT_BYTES", 3 * SMALL_CHUNK)
    assert len(base._colbert_rows(base._encode_documents(texts[:4], ids[:4], [{}] * 4, [[]] * 4))) >= 3
    broken = FailingClient(base.client, ("insert", "upsert", "delete"), fail_on=3, error=rejection("milvus"))
    store = make_store("milvus", tiny_model, client=broken, collection_name=base.collection_name)
    with pytest.raises(StoreRequestError, match="disk full"):
        store.add([t + " new" for t in texts[:4]], ids=ids[:4])
    assert broken.calls[:3] == ["insert", "insert", "insert"]
    assert broken.calls[3] == "delete"  # the rows of the two requests that went through
    assert {h.id: h.text for h in base.get(ids[:4])} == old
    matrices = stored_matrices(base)  # only the old versions' rows are left
    assert set(matrices) == set(ids[:4])


def test_collection_of_the_old_layout_is_refused(
    make_store: Callable[..., Any], tiny_model: M3Model, milvus_client: Any
) -> None:
    store = make_store("milvus", tiny_model)
    store.add(["red apple", "green pear"], ids=["a", "b"])
    name = store.collection_name
    info = milvus_client.describe_collection(name)
    record = json.loads(info["properties"][milvus.METADATA_KEY])
    assert record["colbert_layout"] == milvus.COLBERT_LAYOUT
    # What layout 1 recorded: no "colbert_layout" key.
    del record["colbert_layout"]
    milvus_client.alter_collection_properties(name, properties={milvus.METADATA_KEY: json.dumps(record)})
    rows_before = len(companion_rows(store))
    with pytest.raises(StoreSchemaError, match=r"ColBERT layout 1 .*one row per token vector.*nothing"):
        make_store("milvus", tiny_model, collection_name=name)
    assert len(store) == 2
    assert len(companion_rows(store)) == rows_before


def test_companion_without_the_chunk_fields_is_refused(
    make_store: Callable[..., Any], tiny_model: M3Model, milvus_client: Any
) -> None:
    from pymilvus import DataType

    store = make_store("milvus", tiny_model)
    store.add(["red apple"], ids=["a"])
    # A layout-1 companion (one FLOAT_VECTOR row per token vector) under a layout-2 record.
    milvus_client.drop_collection(store.colbert_collection)
    schema = milvus_client.create_schema(auto_id=True, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
    schema.add_field("seq", DataType.INT64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=tiny_model.colbert_dim)
    index = milvus_client.prepare_index_params()
    index.add_index("vec", index_type="FLAT", metric_type="IP")
    milvus_client.create_collection(store.colbert_collection, schema=schema, index_params=index)
    with pytest.raises(StoreSchemaError, match=r"does not have the ColBERT layout 2 .*'chunk'.*nothing"):
        make_store("milvus", tiny_model, collection_name=store.collection_name)
    assert len(store) == 1


def test_candidates_vectors_are_fetched_in_bounded_groups(
    chunked_store: Any, reference_index: M3Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    queries: list[str] = []

    class Counting:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            attribute = getattr(self._client, name)
            if name != "query":
                return attribute

            def query(collection: str, **kwargs: Any) -> Any:
                queries.append(collection)
                return attribute(collection, **kwargs)

            return query

    # 4 candidates in the first fetch, then as many as ~3 chunks of text allow (at least 4).
    monkeypatch.setattr(milvus_colbert, "FETCH_FIRST", 4)
    monkeypatch.setattr(milvus_colbert, "INSERT_BYTES", 3 * SMALL_CHUNK)
    monkeypatch.setattr(chunked_store, "client", Counting(chunked_store.client))
    for query in QUERIES:
        queries.clear()
        want = reference_index.search(query, k=10, candidates=None)
        assert_same_hits(want, chunked_store.search(query, k=10, candidates=None))
        assert queries.count(chunked_store.colbert_collection) == 12  # 48 candidates, 4 at a time
