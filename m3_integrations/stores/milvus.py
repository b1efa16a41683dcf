"""``MilvusM3Store``: BGE-M3's representations in Milvus, searched like ``M3Index``.

Two collections. The main one holds a row per document: primary key ``pk`` (the document id),
``seq`` (insertion order), ``dense`` (inner product of unit vectors: cosine), ``sparse`` (M3's lexical
weights, inner product), ``text``, ``metadata`` (JSON) and the metadata key lists the filters use
(:mod:`m3_integrations.stores.filters`). The ColBERT vectors live in a companion collection
``<name>_colbert`` (layout :data:`COLBERT_LAYOUT`): a document's ``(n, d)`` matrix in float16 (the
precision ``M3Index`` stores), as the hexadecimal text of its little-endian bytes in a ``VARCHAR``
field, cut into chunks of at most :data:`CHUNK_CHARS` characters (a ``VARCHAR`` holds 65,535 bytes:
15 vectors of d=1024 or 127 of d=128 per chunk), one row per chunk keyed by ``(doc_id, seq, chunk)``.
A candidate's matrix comes back as a few strings decoded with numpy, not as one row of Python floats
per token vector. Why this layout, and its code (schema, chunks, insert requests, fetch groups,
decoding): :mod:`m3_integrations.stores._milvus_colbert`.

Writes keep every document whole: a batch's ColBERT rows are inserted first (under the batch's new
``seq`` values), then the main rows are upserted (which switches each document to its new ``seq``),
then the ColBERT rows of the replaced versions are deleted. A search reads the ColBERT rows of the
``seq`` its main row holds, and only when all of that version's chunks are there, so a failure at any
step leaves each document at its old version or its new one, never a main row without vectors; rows
of a failed batch are deleted again (and invisible if even that fails).

The search asks Milvus for the dense and sparse top ``candidates`` (one ``search`` per field under the
filter expression), then for the dense and sparse scores of the candidates (``pk in [...]``, which also
return each candidate's ``seq``), fetches the chunks of the candidates' ColBERT matrices and scores them
with :func:`m3_integrations.scoring.colbert_scores_stored` (``M3Index``'s own kernel); the core fuses.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3_integrations import scoring
from m3_integrations._utils import import_optional
from m3_integrations.errors import StoreError, StoreSchemaError
from m3_integrations.index.filters import FilterExpr
from m3_integrations.index.types import EncodedQuery

# CHUNK_CHARS, colbert_chunks and decode_colbert are re-exported: importable from here as before.
from m3_integrations.stores._milvus_colbert import (  # noqa: F401
    CHUNK_CHARS,
    COLBERT_LAYOUT,
    assemble,
    check_companion,
    colbert_chunks,
    companion_schema,
    decode_colbert,
    fetch_current_chunks,
    insert_requests,
    layout_problem,
)
from m3_integrations.stores.filters import EMPTY_FIELD, KEYS_FIELD, NULL_FIELD, to_milvus_expression
from m3_integrations.stores.remote import (
    REJECTED,
    STORE_FORMAT,
    TRANSIENT,
    RemoteM3Store,
    StoredDocument,
)

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["MilvusM3Store"]


METADATA_KEY = "m3_integrations"
MAX_ID_BYTES = 512
MAX_KEYS = 4096
MAX_KEY_BYTES = 1024
MAX_TEXT_BYTES = 65535
# Milvus refuses a sparse row without a nonzero weight; a document without lexical terms gets this
# dimension, which no query uses (M3 token ids and hashed BM25 words stay below 2**31).
PLACEHOLDER_TERM = 2**32 - 2
# Milvus caps a search's limit (topk) and the size of one query's result.
_LIMIT = 16384
_ID_CHUNK = 1000


def _quote_list(values: Sequence[str]) -> str:
    r"""A Milvus list literal of strings, quoted as JSON strings.

    Example:
        >>> print(_quote_list(["a", 'say "hi"']))
        ["a", "say \"hi\""]
    """
    return json.dumps(list(values))


class MilvusM3Store(RemoteM3Store):
    """BGE-M3 hybrid search over Milvus collections, with ``M3Index``'s options, scores and filters.

    Needs a checkpoint with a sparse head (BGE-M3): BM25 for encoders without one is not implemented
    for Milvus yet (see ``docs/backends.md``).

    Setup:
        .. code-block:: bash

            pip install "m3-integrations[milvus]"

    Key init args:
        model: the :class:`~m3_integrations.M3Model`.
        client: a ``MilvusClient``; else one is made from ``uri``/``token`` (default the
            ``MILVUS_URI``/``MILVUS_TOKEN`` environment variables; a ``.db`` file path runs Milvus Lite).
        collection_name: the main collection; ColBERT vectors go to ``<collection_name>_colbert``.
        dense_index: the dense field's index type (``"AUTOINDEX"``, ``"HNSW"``, ``"FLAT"`` ...).
        shards_num: for a new collection on a cluster.
        batch_size: documents per write; retries, backoff: for transient failures.

    Instantiate:
        .. code-block:: python

            from pymilvus import MilvusClient
            from m3_integrations import M3Model, MilvusM3Store

            model = M3Model("BAAI/bge-m3")
            store = MilvusM3Store(model, client=MilvusClient("m3.db"), collection_name="docs")

    Add documents:
        .. code-block:: python

            store.add(["BGE-M3 has three heads."], ids=["a"], metadatas=[{"lang": "en"}])

    Search:
        .. code-block:: python

            hits = store.search("what does bge-m3 output?", k=5, fusion="rrf")

    Search with filter:
        .. code-block:: python

            store.search("capital", filter={"lang": "ko", "year": {"$gte": 2020}})
    """

    engine = "Milvus"

    def __init__(
        self,
        model: M3Model,
        client: Any = None,
        *,
        collection_name: str = "docs",
        uri: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        dense_index: str = "AUTOINDEX",
        shards_num: int | None = None,
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
        if self.lexical_signal != "sparse":
            msg = (
                "MilvusM3Store needs a checkpoint with a sparse head (BGE-M3's lexical weights); "
                "BM25 for other encoders is implemented for QdrantM3Store and M3Index only"
            )
            raise ValueError(msg)
        self._pymilvus = import_optional("pymilvus", "milvus")
        if client is None:
            client = self._connect(uri, token, timeout)
        self.client = client
        self.timeout = timeout
        self.dense_index = dense_index
        self.shards_num = shards_num
        self.colbert_collection = f"{collection_name}_colbert"
        # MaxSim's float32 staging buffer, one per thread: reused, it saves a page fault per 4 KB a query.
        self._workspaces = threading.local()
        self._exists = self._check_or_create(create=False)

    def _connect(self, uri: str | None, token: str | None, timeout: float | None) -> Any:
        uri = uri or os.environ.get("MILVUS_URI")
        if not uri:
            msg = (
                "no Milvus connection: pass client= or uri= (a server URL or a Milvus Lite .db file), "
                "or set MILVUS_URI"
            )
            raise ValueError(msg)
        token = token or os.environ.get("MILVUS_TOKEN") or ""
        return self._call("connect", self._pymilvus.MilvusClient, uri=uri, token=token, timeout=timeout)

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
            "colbert_layout": COLBERT_LAYOUT,
        }

    def _check_or_create(self, create: bool) -> bool:
        client, name = self.client, self.collection_name
        exists = self._call("check collection", client.has_collection, name)
        if exists:
            info = self._call("check collection", client.describe_collection, name)
            self._check_schema(info)
            companion = self.colbert_collection
            if not self._call("check collection", client.has_collection, companion):
                msg = f"Milvus collection {name!r} has no companion {companion!r}; nothing written"
                raise StoreSchemaError(msg)
            info = self._call("check collection", client.describe_collection, companion)
            check_companion(info, companion)
            for collection in (name, self.colbert_collection):
                self._call("load collection", client.load_collection, collection)
            return True
        if not create:
            return False
        data_type = self._pymilvus.DataType
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", data_type.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("seq", data_type.INT64)
        schema.add_field("dense", data_type.FLOAT_VECTOR, dim=self.model.dense_dim)
        schema.add_field("sparse", data_type.SPARSE_FLOAT_VECTOR)
        schema.add_field("text", data_type.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("metadata", data_type.JSON)
        for field_name in (KEYS_FIELD, EMPTY_FIELD, NULL_FIELD):
            schema.add_field(
                field_name,
                data_type.ARRAY,
                element_type=data_type.VARCHAR,
                max_capacity=MAX_KEYS,
                max_length=MAX_KEY_BYTES,
            )
        index = client.prepare_index_params()
        index.add_index("dense", index_type=self.dense_index, metric_type="IP")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        extra = {} if self.shards_num is None else {"num_shards": self.shards_num}
        colbert, colbert_index = companion_schema(client, data_type, MAX_ID_BYTES)
        self._call(
            "create collection",
            client.create_collection,
            self.colbert_collection,
            schema=colbert,
            index_params=colbert_index,
            **extra,
        )
        # The main collection last: its existence means the layout is complete.
        self._call(
            "create collection",
            client.create_collection,
            name,
            schema=schema,
            index_params=index,
            properties={METADATA_KEY: json.dumps(self._schema_record())},
            **extra,
        )
        return True

    def _check_schema(self, info: dict[str, Any]) -> None:
        where = f"Milvus collection {self.collection_name!r}"
        raw = (info.get("properties") or {}).get(METADATA_KEY)
        try:
            record = json.loads(raw) if isinstance(raw, str) else None
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            msg = f"{where} was not made by m3-integrations (no {METADATA_KEY!r} property); nothing written"
            raise StoreSchemaError(msg)
        problems = []
        expected = self._schema_record()
        if record.get("format") != STORE_FORMAT:
            problems.append(f"format {record.get('format')!r}, expected {STORE_FORMAT}")
        saved = record.get("model") or {}
        if saved.get("fingerprint") != expected["model"]["fingerprint"]:
            problems.append(
                f"model {saved.get('model_name_or_path')!r} (fingerprint {saved.get('fingerprint')!r}), "
                f"the model given is {self.model.model_name_or_path!r} "
                f"(fingerprint {expected['model']['fingerprint']!r})"
            )
        fields = {f["name"]: f for f in info.get("fields", [])}
        for name in ("pk", "seq", "dense", "sparse", "text", "metadata", KEYS_FIELD, EMPTY_FIELD, NULL_FIELD):
            if name not in fields:
                problems.append(f"no field {name!r}")
        dense = fields.get("dense", {}).get("params", {}).get("dim")
        if dense is not None and int(dense) != self.model.dense_dim:
            problems.append(f"field 'dense' has dimension {dense}, the model {self.model.dense_dim}")
        layout = layout_problem(record, self.colbert_collection)
        if layout:
            problems.append(layout)
        if problems:
            msg = f"{where} does not fit this store: " + "; ".join(problems) + "; nothing was written"
            raise StoreSchemaError(msg)

    # ------------------------------------------------------------------ writing and reading
    def _check_document(self, doc_id: str, text: str) -> None:
        if len(doc_id.encode("utf-8")) > MAX_ID_BYTES:
            msg = f"id {doc_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes (Milvus's primary key limit)"
            raise ValueError(msg)
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            msg = f"document {doc_id!r}: text longer than {MAX_TEXT_BYTES} bytes (Milvus's VARCHAR limit)"
            raise ValueError(msg)

    def _colbert_rows(self, documents: list[StoredDocument]) -> list[list[dict[str, Any]]]:
        """The companion rows of ``documents``, grouped into insert requests (:func:`insert_requests`)."""
        return insert_requests(documents)

    def _write(self, documents: list[StoredDocument]) -> None:
        ids = [doc.id for doc in documents]
        seqs = [doc.seq for doc in documents]
        main_rows = [
            {
                "pk": doc.id,
                "seq": doc.seq,
                "dense": doc.dense.tolist(),
                "sparse": doc.lexical or {PLACEHOLDER_TERM: 1.0},
                "text": doc.text,
                "metadata": doc.metadata,
                KEYS_FIELD: doc.metadata_keys,
                EMPTY_FIELD: doc.empty_keys,
                NULL_FIELD: doc.null_keys,
            }
            for doc in documents
        ]
        new_rows = f"doc_id in {_quote_list(ids)} and seq in {seqs}"
        inserted = False
        try:
            for rows in self._colbert_rows(documents):
                self._call("insert ColBERT vectors", self.client.insert, self.colbert_collection, rows)
                inserted = True
            self._call("upsert", self.client.upsert, self.collection_name, main_rows)
        except StoreError:
            if inserted:
                try:
                    self._call(
                        "undo ColBERT vectors", self.client.delete, self.colbert_collection, filter=new_rows
                    )
                except StoreError as err:
                    logger.warning(
                        "could not delete the ColBERT rows of a failed batch (never read): %s", err
                    )
            raise
        old_rows = f"doc_id in {_quote_list(ids)} and not (seq in {seqs})"
        try:
            self._call(
                "delete replaced ColBERT vectors",
                self.client.delete,
                self.colbert_collection,
                filter=old_rows,
            )
        except StoreError as err:
            # The new versions are complete; the old rows are never read again, only stored.
            logger.warning("could not delete replaced ColBERT rows (never read): %s", err)

    def _remove(self, ids: list[str]) -> None:
        quoted = _quote_list(ids)
        self.client.delete(self.collection_name, filter=f"pk in {quoted}")
        try:
            self.client.delete(self.colbert_collection, filter=f"doc_id in {quoted}")
        except Exception as err:
            logger.warning("could not delete the ColBERT rows of deleted documents: %s", err)

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _ID_CHUNK):
            rows = self.client.query(
                self.collection_name,
                filter=f"pk in {_quote_list(unique[start : start + _ID_CHUNK])}",
                output_fields=["pk", "text", "metadata"],
            )
            found.update({row["pk"]: (row["text"], row["metadata"] or {}) for row in rows})
        return found

    def _count(self) -> int:
        return self._count_allowed(None)

    # ------------------------------------------------------------------ searching
    def _native_filter(self, expr: FilterExpr) -> Any:
        return to_milvus_expression(expr)

    def _sparse_query(self, encoded: EncodedQuery) -> dict[int, float] | None:
        weights = {int(t): float(w) for t, w in encoded.lexical_weights.items() if w > 0}
        return weights or None

    def _top(
        self, signals: Sequence[str], encoded: EncodedQuery, limit: int, native_filter: Any
    ) -> list[list[tuple[str, float, int]]]:
        results = []
        for signal in signals:
            data = (
                np.asarray(encoded.dense, np.float32).tolist()
                if signal == "dense"
                else self._sparse_query(encoded)
            )
            if data is None:
                results.append([])
                continue
            hits = self.client.search(
                self.collection_name,
                data=[data],
                anns_field=signal,
                search_params={"metric_type": "IP"},
                limit=min(limit, _LIMIT),
                filter=native_filter or "",
                output_fields=["seq"],
            )[0]
            seqs = [hit["entity"]["seq"] for hit in hits]
            results.append(list(zip(hits.ids, hits.distances, seqs, strict=True)))
        return results

    def _scores(
        self, signals: Sequence[str], encoded: EncodedQuery, ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        position = {doc_id: i for i, doc_id in enumerate(ids)}
        id_chunks = [list(ids[start : start + _ID_CHUNK]) for start in range(0, len(ids), _ID_CHUNK)]
        # Each candidate's current seq, returned by the score searches: which ColBERT rows to read.
        seqs: dict[str, int] = {}
        scores: dict[str, np.ndarray] = {}
        for signal in signals:
            if signal == "colbert":
                continue
            values = np.zeros(len(ids), dtype=np.float32)
            data = (
                np.asarray(encoded.dense, np.float32).tolist()
                if signal == "dense"
                else self._sparse_query(encoded)
            )
            if data is not None:
                for chunk in id_chunks:
                    hits = self.client.search(
                        self.collection_name,
                        data=[data],
                        anns_field=signal,
                        search_params={"metric_type": "IP"},
                        limit=len(chunk),
                        filter=f"pk in {_quote_list(chunk)}",
                        output_fields=["seq"],
                    )[0]
                    # Columns of the result (pymilvus keeps ids and distances as lists).
                    rows = [position[doc_id] for doc_id in hits.ids]
                    values[rows] = hits.distances
                    seqs.update(zip(hits.ids, [hit["entity"]["seq"] for hit in hits], strict=True))
            scores[signal] = values
        if "colbert" in signals:
            scores["colbert"] = self._colbert_scores(encoded, ids, seqs)
        return {signal: scores[signal] for signal in signals}

    def _colbert_scores(self, encoded: EncodedQuery, ids: Sequence[str], seqs: dict[str, int]) -> np.ndarray:
        """MaxSim of the candidates ``ids`` from their current version's chunks.

        ``seqs`` holds the current ``seq`` of the candidates the score searches returned; the others'
        are looked up.
        """
        query = encoded.colbert_vecs
        if query is None or len(query) == 0:
            return np.zeros(len(ids), dtype=np.float32)
        fields = ["doc_id", "seq", "chunk", "chunks", "vectors"]

        def read_seqs(chunk: list[str]) -> dict[str, int]:
            rows = self.client.query(
                self.collection_name, filter=f"pk in {_quote_list(chunk)}", output_fields=["pk", "seq"]
            )
            return {row["pk"]: row["seq"] for row in rows}

        def read_rows(chunk: list[str]) -> list[dict[str, Any]]:
            return self._query_all(self.colbert_collection, f"doc_id in {_quote_list(chunk)}", fields)

        parts, counts = fetch_current_chunks(ids, seqs, read_seqs, read_rows, _ID_CHUNK)
        store, starts, lengths = assemble(parts, counts, len(ids), query.shape[1], self.colbert_collection)
        workspace = getattr(self._workspaces, "buffer", None)
        if workspace is None:
            workspace = self._workspaces.buffer = scoring.StagingBuffer()
        return scoring.colbert_scores_stored(query, store, starts, lengths, workspace=workspace)

    def _query_all(self, collection: str, expression: str, fields: list[str]) -> list[dict[str, Any]]:
        rows = self.client.query(collection, filter=expression, output_fields=fields, limit=_LIMIT)
        if len(rows) < _LIMIT:
            return list(rows)
        # More rows than one query returns: page through them (slower, one round trip per page).
        iterator = self.client.query_iterator(
            collection, batch_size=_ID_CHUNK, filter=expression, output_fields=fields
        )
        rows = []
        try:
            while True:
                page = iterator.next()
                if not page:
                    return rows
                rows.extend(page)
        finally:
            iterator.close()

    def _allowed(self, native_filter: Any, limit: int | None) -> list[tuple[str, int]]:
        # Milvus queries have no ORDER BY: the allowed ids are listed whole and sorted here.
        rows = self._query_all(self.collection_name, native_filter or "", ["pk", "seq"])
        ordered = sorted(((row["pk"], int(row["seq"])) for row in rows), key=lambda item: item[1])
        return ordered if limit is None else ordered[:limit]

    def _count_allowed(self, native_filter: Any) -> int:
        rows = self.client.query(self.collection_name, filter=native_filter or "", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _terms_found(self, signal: str, terms: list[int]) -> int:
        hits = self.client.search(
            self.collection_name,
            data=[{t: 1.0} for t in terms],
            anns_field="sparse",
            search_params={"metric_type": "IP"},
            limit=1,
        )
        return sum(1 for per_term in hits if len(per_term))

    def _classify(self, err: BaseException) -> str | None:
        exceptions = self._pymilvus.exceptions
        if isinstance(err, exceptions.MilvusUnavailableException | ConnectionError | TimeoutError):
            return TRANSIENT
        if isinstance(err, exceptions.MilvusException):
            text = str(err).lower()
            if any(s in text for s in ("unavailable", "timeout", "deadline", "connect", "rate limit")):
                return TRANSIENT
            return REJECTED
        code = getattr(err, "code", None)
        if callable(code) and type(err).__module__.startswith("grpc"):
            name = getattr(code(), "name", "")
            return (
                TRANSIENT if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED") else REJECTED
            )
        return None
