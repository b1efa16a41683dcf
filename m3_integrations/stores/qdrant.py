"""``QdrantM3Store``: BGE-M3's three representations in one Qdrant collection, searched like ``M3Index``.

One point per document (id: a UUID5 of the document id), holding three named vectors — ``dense``
(cosine), ``sparse`` (M3's lexical weights; for a checkpoint without sparse head ``bm25``: BM25 term
weights with Qdrant's ``IDF`` modifier) and ``colbert`` (a multivector compared with ``MAX_SIM`` over dot
products, float16, on disk, without an HNSW graph: it is only ever used to score candidates) — and the
payload ``doc_id``, ``text``, ``metadata``, ``seq`` (insertion order) and the metadata key lists the
filters use (:mod:`m3_integrations.stores.filters`). A point is written whole in one upsert, so no
document is ever stored with some of its vectors only.

The search (:mod:`m3_integrations.stores.remote`) asks Qdrant, in one batch request, for the dense and
lexical top ``candidates`` under the filter; then, in one more batch, for every signal of the mode
restricted to the candidate ids (``HasIdCondition``): cosine, sparse dot product and MaxSim are
computed by the server, so no vector leaves it. ColBERT's MaxSim from Qdrant is a sum over the query
vectors; it is divided by their number, BGE-M3's mean.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from m3_integrations._utils import import_optional
from m3_integrations.errors import StoreSchemaError
from m3_integrations.index.filters import FilterExpr
from m3_integrations.index.types import EncodedQuery
from m3_integrations.stores.filters import EMPTY_FIELD, KEYS_FIELD, NULL_FIELD, to_qdrant_filter
from m3_integrations.stores.remote import (
    REJECTED,
    STORE_FORMAT,
    TRANSIENT,
    RemoteM3Store,
    StoredDocument,
    term_index,
)

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

__all__ = ["QdrantM3Store"]

# Point ids are UUID5s of document ids under this namespace: an upsert of an id finds its point.
POINT_NAMESPACE = uuid.UUID("6f1d2c3a-5b7e-4e1a-9a43-1d3b2c4e5f60")
METADATA_KEY = "m3_integrations"
_PAGE = 1000


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id."""
    return str(uuid.uuid5(POINT_NAMESPACE, doc_id))


class QdrantM3Store(RemoteM3Store):
    """BGE-M3 hybrid search over a Qdrant collection, with ``M3Index``'s options, scores and filters.

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[qdrant]"

    Key init args:
        model: the :class:`~m3_integrations.M3Model`.
        client: a ``QdrantClient``; else one is made from ``url``/``api_key`` (default the
            ``QDRANT_URL``/``QDRANT_API_KEY`` environment variables) or ``path`` (local mode).
        collection_name: created on the first ``add`` (schema checked when it exists).
        on_disk: keep the ColBERT multivectors on disk (they are only read to score candidates).
        quantization: ``"int8"`` adds scalar quantisation to the dense and ColBERT vectors (the
            originals are kept for rescoring); ``None`` keeps float vectors only.
        shard_number, replication_factor: for a new collection on a cluster.
        batch_size: documents per upsert; retries, backoff: for transient failures.

    Instantiate:
        .. code-block:: python

            from qdrant_client import QdrantClient
            from m3_integrations import M3Model, QdrantM3Store

            model = M3Model("BAAI/bge-m3")
            store = QdrantM3Store(model, client=QdrantClient(":memory:"), collection_name="docs")

    Add documents:
        .. code-block:: python

            store.add(["BGE-M3 has three heads.", "서울은 수도이다."], ids=["a", "b"],
                      metadatas=[{"lang": "en"}, {"lang": "ko"}])
            store.delete(["b"])
            len(store), store.get(["a"])

    Search:
        .. code-block:: python

            hits = store.search("what does bge-m3 output?", k=5)  # hybrid, as M3Index
            hits[0].scores  # {"dense": ..., "sparse": ..., "colbert": ...}
            store.search("bge-m3", mode="dense+sparse", fusion="rrf", candidates=200)

    Search with filter:
        .. code-block:: python

            store.search("capital", filter={"lang": "ko", "year": {"$gte": 2020}})
    """

    engine = "Qdrant"

    def __init__(
        self,
        model: M3Model,
        client: Any = None,
        *,
        collection_name: str = "docs",
        url: str | None = None,
        api_key: str | None = None,
        path: str | os.PathLike[str] | None = None,
        timeout: int | None = None,
        on_disk: bool = True,
        quantization: Literal["int8"] | None = None,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        super().__init__(
            model,
            collection_name=collection_name,
            batch_size=batch_size,
            show_progress=show_progress,
            retries=retries,
            backoff=backoff,
        )
        if quantization not in (None, "int8"):
            msg = f"quantization must be None or 'int8', got {quantization!r}"
            raise ValueError(msg)
        qdrant = import_optional("qdrant_client", "qdrant")
        self._models = import_optional("qdrant_client.models", "qdrant")
        self._http_exceptions = import_optional("qdrant_client.http.exceptions", "qdrant")
        if client is None:
            client = self._connect(qdrant, url, api_key, path, timeout)
        self.client = client
        self.on_disk = bool(on_disk)
        self.quantization = quantization
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self._lexical_name = "sparse" if self.lexical_signal == "sparse" else "bm25"
        self._exists = self._check_or_create(create=False)

    @staticmethod
    def _connect(qdrant: Any, url: str | None, api_key: str | None, path: Any, timeout: int | None) -> Any:
        if path is not None:
            if url is not None:
                msg = "pass url or path (local mode), not both"
                raise ValueError(msg)
            return qdrant.QdrantClient(path=os.fspath(path))
        url = url or os.environ.get("QDRANT_URL")
        if not url:
            msg = "no Qdrant connection: pass client=, url= or path=, or set QDRANT_URL"
            raise ValueError(msg)
        return qdrant.QdrantClient(
            url=url, api_key=api_key or os.environ.get("QDRANT_API_KEY"), timeout=timeout
        )

    # ------------------------------------------------------------------ schema
    def _schema_record(self) -> dict[str, Any]:
        identity = self.model.identity
        return {
            "format": STORE_FORMAT,
            "model": {
                key: identity[key]
                for key in ("model_name_or_path", "fingerprint", "dense_dim", "colbert_dim", "vocab_size")
            },
            "lexical": self.lexical_signal,
            "bm25_avg_length": self.bm25_avg_length,
        }

    def _check_or_create(self, create: bool) -> bool:
        name = self.collection_name
        exists = self._call("check collection", self.client.collection_exists, name)
        if exists:
            info = self._call("check collection", self.client.get_collection, name)
            self._check_schema(info)
            return True
        if not create:
            return False
        models = self._models
        quantization = (
            models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8))
            if self.quantization == "int8"
            else None
        )
        vectors = {
            "dense": models.VectorParams(
                size=self.model.dense_dim, distance=models.Distance.COSINE, quantization_config=quantization
            ),
            "colbert": models.VectorParams(
                size=self.model.colbert_dim,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                # Only candidates are scored with ColBERT: a graph over billions of token vectors would
                # cost memory and build time for nothing.
                hnsw_config=models.HnswConfigDiff(m=0),
                on_disk=self.on_disk,
                datatype=models.Datatype.FLOAT16,
                quantization_config=quantization,
            ),
        }
        modifier = models.Modifier.IDF if self.lexical_signal == "bm25" else None
        sparse = {self._lexical_name: models.SparseVectorParams(modifier=modifier)}
        self._call(
            "create collection",
            self.client.create_collection,
            name,
            vectors_config=vectors,
            sparse_vectors_config=sparse,
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            metadata={METADATA_KEY: self._schema_record()},
        )
        schema = models.PayloadSchemaType
        with warnings.catch_warnings():
            # Local mode ignores payload indexes (and says so); a server needs them for order_by.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field_name, kind in (
                ("seq", schema.INTEGER),
                (KEYS_FIELD, schema.KEYWORD),
                (EMPTY_FIELD, schema.KEYWORD),
                (NULL_FIELD, schema.KEYWORD),
            ):
                self._call("create payload index", self.client.create_payload_index, name, field_name, kind)
        return True

    def _check_schema(self, info: Any) -> None:
        where = f"Qdrant collection {self.collection_name!r}"
        params = info.config.params
        record = (getattr(info.config, "metadata", None) or {}).get(METADATA_KEY)
        if not isinstance(record, dict):
            msg = f"{where} was not made by m3-integrations (no {METADATA_KEY!r} metadata); nothing written"
            raise StoreSchemaError(msg)
        expected = self._schema_record()
        problems = []
        if record.get("format") != STORE_FORMAT:
            problems.append(f"format {record.get('format')!r}, expected {STORE_FORMAT}")
        saved_model = record.get("model") or {}
        if saved_model.get("fingerprint") != expected["model"]["fingerprint"]:
            problems.append(
                f"model {saved_model.get('model_name_or_path')!r} "
                f"(fingerprint {saved_model.get('fingerprint')!r}),"
                f" the model given is {self.model.model_name_or_path!r} "
                f"(fingerprint {expected['model']['fingerprint']!r})"
            )
        if record.get("lexical") != self.lexical_signal:
            problems.append(f"lexical signal {record.get('lexical')!r}, expected {self.lexical_signal!r}")
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        for name, size in (("dense", self.model.dense_dim), ("colbert", self.model.colbert_dim)):
            if name not in vectors:
                problems.append(f"no vector named {name!r} (vectors: {sorted(vectors)})")
            elif vectors[name].size != size:
                problems.append(f"vector {name!r} has dimension {vectors[name].size}, the model {size}")
        if self._lexical_name not in (params.sparse_vectors or {}):
            problems.append(f"no sparse vector named {self._lexical_name!r}")
        if problems:
            msg = f"{where} does not fit this store: " + "; ".join(problems) + "; nothing was written"
            raise StoreSchemaError(msg)
        if self.lexical_signal == "bm25":
            self.bm25_avg_length = float(record.get("bm25_avg_length") or 1.0)

    # ------------------------------------------------------------------ writing and reading
    def _write(self, documents: list[StoredDocument]) -> None:
        models = self._models
        points = [
            models.PointStruct(
                id=point_id(doc.id),
                vector={
                    "dense": doc.dense.tolist(),
                    self._lexical_name: models.SparseVector(
                        indices=list(doc.lexical), values=list(doc.lexical.values())
                    ),
                    "colbert": doc.colbert.tolist(),
                },
                payload={
                    "doc_id": doc.id,
                    "text": doc.text,
                    "metadata": doc.metadata,
                    "seq": doc.seq,
                    KEYS_FIELD: doc.metadata_keys,
                    EMPTY_FIELD: doc.empty_keys,
                    NULL_FIELD: doc.null_keys,
                },
            )
            for doc in documents
        ]
        self._call("upsert", self.client.upsert, self.collection_name, points=points, wait=True)

    def _remove(self, ids: list[str]) -> None:
        selector = self._models.PointIdsList(points=[point_id(i) for i in ids])
        self.client.delete(self.collection_name, points_selector=selector, wait=True)

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        records = self.client.retrieve(
            self.collection_name, ids=[point_id(i) for i in dict.fromkeys(ids)], with_payload=True
        )
        return {r.payload["doc_id"]: (r.payload["text"], r.payload.get("metadata") or {}) for r in records}

    def _count(self) -> int:
        return int(self.client.count(self.collection_name, exact=True).count)

    # ------------------------------------------------------------------ searching
    def _native_filter(self, expr: FilterExpr) -> Any:
        return to_qdrant_filter(expr, self._models)

    def _query_vector(self, signal: str, encoded: EncodedQuery) -> Any:
        """The query's vector for ``signal``; None when it has no term (a lexical signal matches nothing)."""
        models = self._models
        if signal == "dense":
            return np.asarray(encoded.dense, dtype=np.float32).tolist()
        if signal == "colbert":
            if encoded.colbert_vecs is None or len(encoded.colbert_vecs) == 0:
                return None
            return np.asarray(encoded.colbert_vecs, dtype=np.float32).tolist()
        if signal == "bm25":
            # Query terms count with repetition (rank_bm25's rule); the server multiplies by the idf.
            counts = Counter(term_index(t) for t in encoded.bm25_tokens)
            weights = {t: float(c) for t, c in counts.items()}
        else:
            weights = {int(t): float(w) for t, w in encoded.lexical_weights.items() if w > 0}
        if not weights:
            return None
        return models.SparseVector(indices=list(weights), values=list(weights.values()))

    def _using(self, signal: str) -> str:
        return self._lexical_name if signal in ("sparse", "bm25") else signal

    def _top(
        self, signals: Sequence[str], encoded: EncodedQuery, limit: int, native_filter: Any
    ) -> list[list[tuple[str, float, int]]]:
        models = self._models
        vectors = [self._query_vector(s, encoded) for s in signals]
        requests = [
            models.QueryRequest(
                query=vector,
                using=self._using(signal),
                filter=native_filter,
                limit=limit,
                with_payload=["doc_id", "seq"],
            )
            for signal, vector in zip(signals, vectors, strict=True)
            if vector is not None
        ]
        responses = iter(self.client.query_batch_points(self.collection_name, requests=requests))
        results = []
        for vector in vectors:
            if vector is None:
                results.append([])
                continue
            points = next(responses).points
            results.append([(p.payload["doc_id"], float(p.score), int(p.payload["seq"])) for p in points])
        return results

    def _scores(
        self, signals: Sequence[str], encoded: EncodedQuery, ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        models = self._models
        position = {point_id(doc_id): i for i, doc_id in enumerate(ids)}
        only = models.Filter(must=[models.HasIdCondition(has_id=list(position))])
        vectors = [self._query_vector(s, encoded) for s in signals]
        requests = [
            models.QueryRequest(
                query=vector, using=self._using(signal), filter=only, limit=len(ids), with_payload=False
            )
            for signal, vector in zip(signals, vectors, strict=True)
            if vector is not None
        ]
        responses = iter(
            self.client.query_batch_points(self.collection_name, requests=requests) if requests else []
        )
        scores: dict[str, np.ndarray] = {}
        for signal, vector in zip(signals, vectors, strict=True):
            values = np.zeros(len(ids), dtype=np.float64)
            if vector is not None:
                for point in next(responses).points:
                    values[position[str(point.id)]] = point.score
                if signal == "colbert":
                    values /= len(vector)  # Qdrant's MAX_SIM sums over the query vectors; BGE-M3 averages
            scores[signal] = values.astype(np.float32)
        return scores

    def _allowed(self, native_filter: Any, limit: int | None) -> list[tuple[str, int]]:
        models = self._models
        found: list[tuple[str, int]] = []
        last: int | None = None
        while limit is None or len(found) < limit:
            page_filter = native_filter
            if last is not None:
                after = models.FieldCondition(key="seq", range=models.Range(gt=last))
                page_filter = models.Filter(must=[after, *([native_filter] if native_filter else [])])
            page = _PAGE if limit is None else min(_PAGE, limit - len(found))
            records, _ = self.client.scroll(
                self.collection_name,
                scroll_filter=page_filter,
                limit=page,
                order_by=models.OrderBy(key="seq"),
                with_payload=["doc_id", "seq"],
                with_vectors=False,
            )
            found.extend((r.payload["doc_id"], int(r.payload["seq"])) for r in records)
            if len(records) < page:
                break
            last = int(records[-1].payload["seq"])
        return found

    def _count_allowed(self, native_filter: Any) -> int:
        return int(self.client.count(self.collection_name, count_filter=native_filter, exact=True).count)

    def _terms_found(self, signal: str, terms: list[int]) -> int:
        models = self._models
        requests = [
            models.QueryRequest(
                query=models.SparseVector(indices=[t], values=[1.0]),
                using=self._lexical_name,
                limit=1,
                with_payload=False,
            )
            for t in terms
        ]
        responses = self.client.query_batch_points(self.collection_name, requests=requests)
        return sum(1 for r in responses if r.points)

    def _classify(self, err: BaseException) -> str | None:
        exceptions = self._http_exceptions
        if isinstance(err, exceptions.UnexpectedResponse):
            status = err.status_code or 0
            return TRANSIENT if status in (408, 429) or status >= 500 else REJECTED
        if isinstance(err, exceptions.ResponseHandlingException | ConnectionError | TimeoutError):
            return TRANSIENT
        grpc = _grpc_code(err)
        if grpc is not None:
            return (
                TRANSIENT if grpc in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED") else REJECTED
            )
        if isinstance(err, ValueError | KeyError):
            return REJECTED  # local mode reports bad requests (unknown collection, vector) so
        return None


def _grpc_code(err: BaseException) -> str | None:
    code = getattr(err, "code", None)
    if callable(code) and type(err).__module__.startswith("grpc"):
        try:
            return str(code().name)
        except Exception:
            return None
    return None
