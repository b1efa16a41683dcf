"""Both stores: the protocol, round trips, upserts, deletes, reconnects, refused filters, bad connections,
and failed batches that leave every document whole."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.errors import StoreConnectionError, StoreRequestError, StoreSchemaError
from m3_integrations.stores import M3Store
from m3_integrations.testing import build_tiny_checkpoint

from .conftest import corpus

BACKENDS = ["qdrant", "milvus"]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> M3Model:
    """Another tiny checkpoint (other weights, same dimensions): another fingerprint."""
    return M3Model(build_tiny_checkpoint(tmp_path_factory.mktemp("other"), seed=1), device="cpu")


def test_index_and_stores_satisfy_the_protocol(make_store: Callable[..., Any], tiny_model: M3Model) -> None:
    assert isinstance(M3Index(tiny_model), M3Store)
    for backend in BACKENDS:
        assert isinstance(make_store(backend, tiny_model), M3Store)

    class NoSearch:
        model = tiny_model

        def add(self, texts, *, ids=None, metadatas=None): ...
        def delete(self, ids): ...
        def get(self, ids): ...
        def __len__(self) -> int:
            return 0

    assert not isinstance(NoSearch(), M3Store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_upsert_and_delete(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store(backend, tiny_model, batch_size=2)
    assert len(store) == 0
    assert store.search("anything", k=3) == []  # no collection yet
    ids = store.add(
        ["red apple", "green pear", "blue plum"], ids=["a", "b", "c"], metadatas=[{"x": 1}, None, {}]
    )
    assert ids == ["a", "b", "c"]
    assert len(store) == 3
    assert [(h.id, h.text, h.metadata) for h in store.get(["c", "a"])] == [
        ("c", "blue plum", {}),
        ("a", "red apple", {"x": 1}),
    ]
    # The same id again replaces the document (and moves it to the end of the insertion order).
    store.add(["red cherry"], ids=["a"], metadatas=[{"x": 2}])
    assert len(store) == 3
    (hit,) = store.get(["a"])
    assert (hit.text, hit.metadata) == ("red cherry", {"x": 2})
    top = store.search("red cherry", k=1, mode="dense")[0]
    assert top.id == "a"
    np.testing.assert_allclose(top.scores["dense"], 1.0, rtol=1e-5)
    with pytest.raises(KeyError, match="'zzz'"):
        store.delete(["b", "zzz"])
    assert len(store) == 3  # all or nothing
    store.delete(["b"])
    assert len(store) == 2
    with pytest.raises(KeyError, match="'b'"):
        store.get(["b"])
    assert {h.id for h in store.search("pear", k=5)} == {"a", "c"}
    random_ids = store.add(["no id given"])
    assert len(random_ids[0]) == 36 and len(store) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_documents_write_nothing(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store(backend, tiny_model)
    store.add(["kept"], ids=["k"])
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        store.add(["a", "b"], ids=["x", "x"])
    with pytest.raises(ValueError, match="NaN"):
        store.add(["a"], ids=["y"], metadatas=[{"v": math.nan}])
    assert len(store) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_filters_the_engine_cannot_express_are_refused(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store(backend, tiny_model)
    store.add(["a"], ids=["a"], metadatas=[{"name": "Kim"}])
    for filter_, words in [
        ({"name": {"$itext": "kim"}}, "$itext"),
        ({"name": {"$gt": "a"}}, "$gt on strings"),
        ({"pair": [1, 2]}, "equality with a list"),
        ({"a.b": 1}, "path"),
    ]:
        with pytest.raises(ValueError, match=r"filter on key .*" + words.replace("$", r"\$")):
            store.search("a", filter=filter_)
        with pytest.raises(ValueError, match=words.replace("$", r"\$")):
            store.check_search_options(3, filter=filter_)
    with pytest.raises(ValueError, match="callable"):
        store.search("a", filter=lambda meta: True)
    with pytest.raises(ValueError, match="fourth signal"):
        store.search("a", weights={"bm25": 0.2})
    with pytest.raises(ValueError, match="unknown fusion"):
        store.search("a", fusion="max")


def test_milvus_refuses_wildcards_in_text_filters(
    make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    store = make_store("milvus", tiny_model)
    with pytest.raises(ValueError, match="'%'"):
        store.check_search_options(3, filter={"title": {"$text": "50%"}})


@pytest.mark.parametrize("backend", BACKENDS)
def test_reconnect_checks_the_schema(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model, other_model: M3Model, tmp_path: Path
) -> None:
    if backend == "qdrant":
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(tmp_path / "qdrant"))
    else:
        client = None  # the session's Milvus Lite
    store = make_store(backend, tiny_model, client=client, collection_name=f"reconnect_{backend}")
    store.add(["red apple", "green pear"], ids=["a", "b"])
    if backend == "qdrant":
        client.close()
        client = QdrantClient(path=str(tmp_path / "qdrant"))
    again = make_store(backend, tiny_model, client=client, collection_name=f"reconnect_{backend}")
    assert len(again) == 2
    assert again.search("red apple", k=1)[0].id == "a"
    with pytest.raises(StoreSchemaError, match=r"model .*\(fingerprint"):
        make_store(backend, other_model, client=client, collection_name=f"reconnect_{backend}")
    assert len(again) == 2  # nothing written


def test_qdrant_collection_of_another_layout_is_refused(
    make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")
    client.create_collection(
        "foreign", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE)
    )
    with pytest.raises(StoreSchemaError, match="not made by m3-integrations"):
        make_store("qdrant", tiny_model, client=client, collection_name="foreign")
    assert client.count("foreign").count == 0


def test_connection_settings_are_checked(tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch) -> None:
    from m3_integrations.stores.milvus import MilvusM3Store
    from m3_integrations.stores.qdrant import QdrantM3Store

    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("MILVUS_URI", raising=False)
    with pytest.raises(ValueError, match="QDRANT_URL"):
        QdrantM3Store(tiny_model)
    with pytest.raises(ValueError, match="MILVUS_URI"):
        MilvusM3Store(tiny_model)
    with pytest.raises(ValueError, match="url or path"):
        QdrantM3Store(tiny_model, url="http://localhost:6333", path="/tmp/x")


@pytest.mark.enable_socket
def test_unreachable_qdrant_is_a_connection_error(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    import qdrant_client

    from m3_integrations.stores.qdrant import QdrantM3Store

    # The client's version check runs in a thread that outlives the test (and warns in the next one).
    quiet = functools.partial(qdrant_client.QdrantClient, check_compatibility=False)
    monkeypatch.setattr(qdrant_client, "QdrantClient", quiet)

    # Port 9 (discard) on the loopback: nothing listens; the connection is refused at once.
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:9")
    with pytest.raises(StoreConnectionError, match=r"after 2 attempts .*Connection refused"):
        QdrantM3Store(tiny_model, retries=1, backoff=0.0, timeout=2)


def test_milvus_with_no_server_is_a_connection_error(tiny_model: M3Model) -> None:
    from m3_integrations.stores.milvus import MilvusM3Store

    class Unreachable:
        def has_collection(self, name: str) -> bool:
            raise ConnectionError("connection refused")

    with pytest.raises(StoreConnectionError, match="check collection failed after 3 attempts"):
        MilvusM3Store(tiny_model, Unreachable(), retries=2, backoff=0.0)


# -------------------------------------------------------------------------------- failing clients
class FailingClient:
    """Forwards to a real client; the ``fail_on``-th call of a method in ``methods`` raises ``error``."""

    def __init__(self, client: Any, methods: tuple[str, ...], fail_on: int, error: BaseException) -> None:
        self._client, self._methods, self._fail_on, self._error = client, methods, fail_on, error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._methods:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if len(self.calls) == self._fail_on:
                raise self._error
            return attribute(*args, **kwargs)

        return call


def _texts(n: int, version: str = "") -> tuple[list[str], list[str]]:
    texts, ids, _ = corpus()
    return [t + version for t in texts[:n]], ids[:n]


def _assert_whole(store: Any, model: M3Model, expected: dict[str, str]) -> None:
    """The store holds exactly ``expected`` (id -> text), each with all its vectors: a search over
    every document scores each one on every signal like an M3Index built from the same texts."""
    assert len(store) == len(expected)
    index = M3Index(model)
    index.add(list(expected.values()), ids=list(expected))
    for query in ("apple river", "quiet market"):
        want = index.search(query, k=len(expected), candidates=None)
        got = store.search(query, k=len(expected), candidates=None)
        assert {h.id for h in got} == set(expected)
        got_by_id = {h.id: h for h in got}
        for hit in want:
            assert got_by_id[hit.id].text == hit.text
            for signal in ("dense", "sparse", "colbert"):
                np.testing.assert_allclose(
                    got_by_id[hit.id].scores[signal], hit.scores[signal], rtol=1e-4, atol=1e-6
                )


WRITE_METHODS = {"qdrant": ("upsert",), "milvus": ("insert", "upsert", "delete")}


def rejection(backend: str) -> Exception:
    """What each client raises when the server refuses a write."""
    if backend == "qdrant":
        return ValueError("disk full")  # local mode's errors are ValueErrors
    from pymilvus.exceptions import MilvusException

    return MilvusException(code=65535, message="disk full")


@pytest.mark.parametrize("backend", BACKENDS)
def test_transient_failures_are_retried(
    backend: str, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    base = make_store(backend, tiny_model)
    flaky = FailingClient(
        base.client, WRITE_METHODS[backend], fail_on=2, error=ConnectionError("reset by peer")
    )
    store = make_store(backend, tiny_model, client=flaky, retries=2, backoff=0.0, batch_size=3)
    texts, ids = _texts(9)
    store.add(texts, ids=ids)
    assert len(flaky.calls) > 2  # the failed call was made again
    _assert_whole(store, tiny_model, dict(zip(ids, texts, strict=True)))


# Qdrant writes one upsert per batch; Milvus three calls: ColBERT rows, main rows, clean-up of replaced
# ColBERT rows. Failing the 1st, 2nd, 3rd and 5th call fails each step of the first or second batch.
@pytest.mark.parametrize(
    ("backend", "fail_on"),
    [("qdrant", 1), ("qdrant", 2), ("milvus", 1), ("milvus", 2), ("milvus", 3), ("milvus", 5)],
)
def test_a_failed_batch_leaves_every_document_whole(
    backend: str, fail_on: int, make_store: Callable[..., Any], tiny_model: M3Model
) -> None:
    base = make_store(backend, tiny_model)
    old_texts, ids = _texts(8)
    base.add(old_texts, ids=ids)  # version 1 of every document
    methods = WRITE_METHODS[backend]
    broken = FailingClient(base.client, methods, fail_on=fail_on, error=rejection(backend))
    store = make_store(backend, tiny_model, client=broken, collection_name=base.collection_name, batch_size=3)
    new_texts, _ = _texts(8, version=" new")
    more_texts, more_ids = [*new_texts, "fresh apple", "fresh pear"], [*ids, "x1", "x2"]
    failure = None
    try:
        store.add(more_texts, ids=more_ids)
    except StoreRequestError as err:
        failure = str(err)
    if failure is not None:
        assert "disk full" in failure
        assert "add them again with the same ids" in failure
    else:
        # Never reached (Qdrant writes 4 batches), or Milvus's clean-up of replaced ColBERT rows failed:
        # the new versions are complete then, and the old rows are never read (nor, below, left for good).
        assert len(broken.calls) < fail_on or broken.calls[fail_on - 1] == "delete"
    # Each document is at its old or its new version, whole; never half-written.
    stored = {h.id: h.text for h in base.get([i for i in more_ids if i in {*ids}])}
    for doc_id, text in stored.items():
        i = ids.index(doc_id)
        assert text in (old_texts[i], new_texts[i])
    extra = {}
    for doc_id, text in zip(["x1", "x2"], ["fresh apple", "fresh pear"], strict=True):
        try:
            extra[doc_id] = base.get([doc_id])[0].text
        except KeyError:
            continue
        assert extra[doc_id] == text
    _assert_whole(base, tiny_model, {**stored, **extra})
    # Adding the same documents again completes the job.
    base.add(more_texts, ids=more_ids)
    _assert_whole(base, tiny_model, dict(zip(more_ids, more_texts, strict=True)))
    if backend == "milvus":
        # No ColBERT rows of failed or replaced versions are left behind.
        rows = base.client.query(
            base.colbert_collection, filter="", output_fields=["doc_id", "seq"], limit=16384
        )
        current = {
            r["pk"]: r["seq"]
            for r in base.client.query(base.collection_name, filter="", output_fields=["seq"], limit=100)
        }
        assert {(r["doc_id"], r["seq"]) for r in rows} == set(current.items())
