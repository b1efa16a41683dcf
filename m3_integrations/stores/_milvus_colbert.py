"""The ColBERT companion collection of :class:`~m3_integrations.MilvusM3Store`: layout 2, float16 chunks.

A document's ``(n, d)`` ColBERT matrix is stored in float16 (the precision ``M3Index`` stores), as the
hexadecimal text of its little-endian bytes in a ``VARCHAR`` field, cut into chunks of at most
:data:`CHUNK_CHARS` characters (a ``VARCHAR`` holds 65,535 bytes: 15 vectors of d=1024 or 127 of d=128
per chunk), one row per chunk keyed by ``(doc_id, seq, chunk)``. Here: the companion's schema and its
check, the rows of a batch grouped into insert requests, the candidates' chunks fetched in groups of
bounded size, and their reassembly into one matrix for
:func:`m3_integrations.scoring.colbert_scores_stored`. The store (:mod:`m3_integrations.stores.milvus`)
makes the calls and decides which version of a document is read.

Why this layout: Milvus Lite 3.2 has no float16 or binary vectors and drops array-of-struct fields
(embedding lists, searched with ``MAX_SIM`` on Milvus 2.6 servers) from a schema without a word, so one
layout serves Lite and servers; every Milvus collection needs a vector field, hence a constant 2-d
``placeholder`` vector in each chunk row. Hexadecimal rather than base64: twice the bytes instead of
4/3, but decoded about six times faster (``binascii.unhexlify``: ~1 GB/s against ~160 MB/s on the
2-core VM), and the decode is client time; raw bytes in a string would travel as UTF-8 (1.5 times the
bytes, and decoding them costs what base64 does).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from m3_integrations.errors import StoreSchemaError

if TYPE_CHECKING:
    from m3_integrations.stores.remote import StoredDocument

__all__ = ["CHUNK_CHARS", "COLBERT_LAYOUT", "colbert_chunks", "decode_colbert"]

# The companion collection's layout; recorded in the main collection's metadata and checked on
# reconnect (layout 1, without a record: one FLOAT_VECTOR row per token vector).
COLBERT_LAYOUT = 2
# Hexadecimal characters per ColBERT chunk row: Milvus's VARCHAR limit (65,535 bytes), rounded down to
# whole bytes (2 characters each).
CHUNK_CHARS = 65534
# Bytes of ColBERT rows per insert request (the clients' default gRPC message limit is 64 MB), and
# about as many per fetch: the first fetch takes FETCH_FIRST candidates (38 MB of full-size BGE-M3
# documents, 288 vectors of d=1024), the next ones as many as the bytes per candidate seen so far allow.
INSERT_BYTES = 32 * 2**20
FETCH_FIRST = 32
COLBERT_FIELDS = ("doc_id", "seq", "chunk", "chunks", "vectors", "placeholder")
PLACEHOLDER_DIM = 2
FLOAT16 = np.dtype("<f2")


def colbert_chunks(vectors: np.ndarray, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """A ``(n, d)`` ColBERT matrix as hexadecimal strings of its float16 bytes, each at most ``chunk_chars``.

    Whole vectors per chunk; a matrix without vectors is one empty string (its row says "no vectors",
    where no row says "not written").

    Example:
        >>> import numpy as np
        >>> chunks = colbert_chunks(np.ones((5, 4), dtype=np.float32), chunk_chars=40)
        >>> [len(c) for c in chunks], decode_colbert(chunks, 4).shape
        ([32, 32, 16], (5, 4))
    """
    matrix = np.ascontiguousarray(vectors, dtype=FLOAT16)
    n, dim = matrix.shape
    per_chunk = chunk_chars // (4 * dim)
    if per_chunk < 1:
        msg = f"a ColBERT chunk of {chunk_chars} characters cannot hold one vector of dimension {dim}"
        raise ValueError(msg)
    if n == 0:
        return [""]
    data = matrix.tobytes()
    step = per_chunk * 2 * dim
    return [data[i : i + step].hex() for i in range(0, len(data), step)]


def decode_colbert(chunks: Sequence[str], dim: int) -> np.ndarray:
    """The ``(n, dim)`` float16 matrix of :func:`colbert_chunks`'s strings, in chunk order."""
    data = b"".join(binascii.unhexlify(chunk) for chunk in chunks)
    return np.frombuffer(data, dtype=FLOAT16).reshape(-1, dim)


def companion_schema(client: Any, data_type: Any, max_id_bytes: int) -> tuple[Any, Any]:
    """The companion collection's schema and index parameters (``data_type``: pymilvus's ``DataType``)."""
    colbert = client.create_schema(auto_id=True, enable_dynamic_field=False)
    colbert.add_field("row", data_type.INT64, is_primary=True)
    colbert.add_field("doc_id", data_type.VARCHAR, max_length=max_id_bytes)
    colbert.add_field("seq", data_type.INT64)
    colbert.add_field("chunk", data_type.INT64)
    colbert.add_field("chunks", data_type.INT64)
    colbert.add_field("vectors", data_type.VARCHAR, max_length=CHUNK_CHARS)
    # Every Milvus collection needs a vector field; this one is constant and never searched.
    colbert.add_field("placeholder", data_type.FLOAT_VECTOR, dim=PLACEHOLDER_DIM)
    colbert_index = client.prepare_index_params()
    colbert_index.add_index("placeholder", index_type="FLAT", metric_type="IP")
    colbert_index.add_index("doc_id", index_type="INVERTED")
    return colbert, colbert_index


def check_companion(info: dict[str, Any], collection: str) -> None:
    """Raise ``StoreSchemaError`` unless ``info`` (``describe_collection``) has the fields of this layout."""
    fields = {f["name"] for f in info.get("fields", [])}
    missing = [name for name in COLBERT_FIELDS if name not in fields]
    if missing:
        msg = (
            f"Milvus collection {collection!r} does not have the ColBERT layout "
            f"{COLBERT_LAYOUT} (no field {', '.join(map(repr, missing))}); nothing was written"
        )
        raise StoreSchemaError(msg)


def layout_problem(record: dict[str, Any], collection: str) -> str | None:
    """What is wrong with the layout ``record`` (the main collection's record) says, or ``None``."""
    layout = record.get("colbert_layout", 1)
    if layout == COLBERT_LAYOUT:
        return None
    return (
        f"ColBERT layout {layout!r} in {collection!r} (layout 1: one row per token "
        f"vector), this version reads layout {COLBERT_LAYOUT} (float16 chunks, one row per "
        "chunk): index the documents again into a new collection"
    )


def insert_requests(documents: list[StoredDocument]) -> list[list[dict[str, Any]]]:
    """The companion rows of ``documents``, grouped into insert requests of at most ``INSERT_BYTES``."""
    placeholder = [0.0] * PLACEHOLDER_DIM
    requests: list[list[dict[str, Any]]] = [[]]
    size = 0
    for doc in documents:
        chunks = colbert_chunks(doc.colbert, CHUNK_CHARS)
        for number, chunk in enumerate(chunks):
            if size + len(chunk) > INSERT_BYTES and requests[-1]:
                requests.append([])
                size = 0
            size += len(chunk)
            requests[-1].append(
                {
                    "doc_id": doc.id,
                    "seq": doc.seq,
                    "chunk": number,
                    "chunks": len(chunks),
                    "vectors": chunk,
                    "placeholder": placeholder,
                }
            )
    return requests


def fetch_current_chunks(
    ids: Sequence[str],
    seqs: dict[str, int],
    read_seqs: Callable[[list[str]], dict[str, int]],
    read_rows: Callable[[list[str]], Iterable[dict[str, Any]]],
    max_group: int,
) -> tuple[dict[int, list[tuple[int, str]]], dict[int, int]]:
    """The chunks of each candidate's current version, read in groups of about ``INSERT_BYTES``.

    Args:
        ids: the candidates; results are keyed by their index in it.
        seqs: the current ``seq`` of the candidates known already; completed in place.
        read_seqs: the current ``seq`` of some ids (a query of the main collection).
        read_rows: the companion rows (``doc_id``, ``seq``, ``chunk``, ``chunks``, ``vectors``) of some ids.
        max_group: the most ids per read.

    Returns:
        Per candidate index, its current version's ``(chunk number, hexadecimal text)`` rows, and the
        number of chunks that version has.
    """
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    parts: dict[int, list[tuple[int, str]]] = {}
    counts: dict[int, int] = {}
    start, group, chars = 0, FETCH_FIRST, 0
    while start < len(ids):
        chunk = list(ids[start : start + group])
        start += len(chunk)
        if any(doc_id not in seqs for doc_id in chunk):
            # No dense or sparse score search in this mode (or one that left candidates out).
            seqs.update(read_seqs(chunk))
        for row in read_rows(chunk):
            doc_id = row["doc_id"]
            chars += len(row["vectors"])
            if seqs.get(doc_id) == row["seq"]:
                doc = position[doc_id]
                parts.setdefault(doc, []).append((row["chunk"], row["vectors"]))
                counts[doc] = row["chunks"]
        # Bound the next response to about INSERT_BYTES by the bytes per candidate so far.
        group = max(FETCH_FIRST, min(max_group, INSERT_BYTES * start // max(chars, 1)))
    return parts, counts


def assemble(
    parts: dict[int, list[tuple[int, str]]], counts: dict[int, int], n: int, dim: int, collection: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` candidates' matrices stacked (``store``, ``starts``, ``lengths``), decoded in one go.

    A candidate with an incomplete version (some chunks missing) gets no vectors: it scores 0.

    Raises:
        StoreSchemaError: a document's chunks do not hold whole float16 vectors of dimension ``dim``.
    """
    row_chars = 4 * dim  # two hexadecimal characters per byte, two bytes per float16
    lengths = np.zeros(n, dtype=np.int64)
    texts: list[str] = []
    for doc in sorted(parts):
        rows_of_doc, count = parts[doc], counts[doc]
        if count == 1 and len(rows_of_doc) == 1:
            text = rows_of_doc[0][1]
        else:
            # Several chunks (or a chunk inserted twice by a retried request): in order, once each.
            numbered = dict(rows_of_doc)
            if sorted(numbered) != list(range(count)):
                # A version's chunks are deleted together when it is replaced: read mid-way, it
                # scores 0 (like a document deleted between the stages).
                continue
            text = "".join(numbered[number] for number in range(count))
        if len(text) % row_chars:
            msg = (
                f"Milvus collection {collection!r}: the ColBERT rows of one document hold "
                f"{len(text) // 2} bytes, not float16 vectors of dimension {dim}"
            )
            raise StoreSchemaError(msg)
        texts.append(text)
        lengths[doc] = len(text) // row_chars
    store = np.frombuffer(binascii.unhexlify("".join(texts)), dtype=FLOAT16).reshape(-1, dim)
    starts = np.cumsum(lengths) - lengths
    return store, starts, lengths
