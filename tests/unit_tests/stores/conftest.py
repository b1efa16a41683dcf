"""Fixtures of the store tests: the backends in their local modes, started by the tests, and one corpus."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model

# Random word sequences: distinct enough that no two documents tie on any signal within float32 noise
# (texts that differ in one digit would, on the random tiny model, and then any order is right).
WORDS = (
    "apple river stone cloud bright quiet market silver garden winter paper signal engine forest harbor "
    "lantern orbit pepper velvet candle meadow thunder copper island"
).split()
N_DOCS = 48


def corpus() -> tuple[list[str], list[str], list[dict]]:
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 12)))) for _ in range(N_DOCS)]
    ids = [f"doc-{i}" for i in range(N_DOCS)]
    metadatas = []
    for i in range(N_DOCS):
        meta: dict = {"n": i, "lang": ["en", "ko", "de"][i % 3], "tags": ["all", f"t{i % 4}"]}
        if i % 5 == 0:
            meta["score"] = i / 2  # floats, some integral (0.0, 5.0, ...)
        if i % 6 == 0:
            meta["flag"] = i % 12 == 0
        if i % 7 == 0:
            meta["note"] = None
        if i % 8 == 0:
            meta["empty"] = ["", [], {}, None][(i // 8) % 4]
        if i % 9 == 0:
            meta["title"] = f"Chapter {i} of the Book"
        metadatas.append(meta)
    return texts, ids, metadatas


QUERIES = ["apple river stone", "quiet winter market", "copper island thunder candle"]

_names = itertools.count()


@pytest.fixture(scope="session")
def milvus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Milvus Lite server for the session (it takes seconds to start); tests use their own collections."""
    pymilvus = pytest.importorskip("pymilvus")
    client = pymilvus.MilvusClient(str(tmp_path_factory.mktemp("milvus") / "m3.db"))
    yield client
    client.close()


def build_store(backend: str, model: M3Model, client: object, **kwargs: object) -> object:
    """An empty store of ``backend`` (``qdrant`` or ``milvus``) on ``client``, in a fresh collection."""
    name = kwargs.pop("collection_name", f"c{next(_names)}")
    if backend == "qdrant":
        from m3_integrations.stores.qdrant import QdrantM3Store

        return QdrantM3Store(model, client, collection_name=name, **kwargs)
    from m3_integrations.stores.milvus import MilvusM3Store

    kwargs.setdefault("dense_index", "FLAT")
    return MilvusM3Store(model, client, collection_name=name, **kwargs)


def local_client(backend: str, milvus_client: object) -> object:
    """Qdrant's in-memory local mode, or the session's Milvus Lite."""
    if backend == "qdrant":
        from qdrant_client import QdrantClient

        return QdrantClient(":memory:")
    return milvus_client


@pytest.fixture
def make_store(milvus_client: object) -> Callable[..., object]:
    """``make_store(backend, model, client=None, **kwargs)``: an empty store in a fresh collection."""

    def make(backend: str, model: M3Model, client: object | None = None, **kwargs: object) -> object:
        return build_store(backend, model, client or local_client(backend, milvus_client), **kwargs)

    return make


@pytest.fixture(scope="module")
def reference_index(tiny_model: M3Model) -> M3Index:
    texts, ids, metadatas = corpus()
    index = M3Index(tiny_model)
    index.add(texts, ids=ids, metadatas=metadatas)
    return index
