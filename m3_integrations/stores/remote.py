"""What the vector-database stores share: checks, encoding, batched writes, retries and the two-stage search.

A backend (:mod:`~m3_integrations.stores.qdrant`, :mod:`~m3_integrations.stores.milvus`) implements a
handful of primitives against its client; everything that decides a result is here, once, and the
scores and fusion are the core's own:

1. **Candidates**: the database's top ``candidates`` by each cheap signal (dense; M3 lexical weights or
   BM25) under the translated filter; lexical hits with a zero score dropped; the union filled up with
   allowed documents in insertion order when it is smaller than ``k`` — as in
   :class:`~m3_integrations.M3Index`. ``candidates=None`` takes every allowed document.
2. **Scores**: every signal of the mode for every candidate, computed by the database (or from the
   candidates' vectors with :mod:`m3_integrations.scoring`), put in insertion order.
3. **Fusion**: :func:`m3_integrations.index.search.fuse_signals` and the stable top-k, then the
   payloads of the hits only, then an optional rerank.

Insertion order is a ``seq`` number stored with each document (microseconds since the epoch, strictly
increasing within a process): it breaks ties exactly as ``M3Index`` does, and a replaced document counts
as new there too.

Here: the checks, the documents as written, batched writes, retries and the classification of errors;
the query side is :mod:`m3_integrations.stores._remote_search`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from m3_integrations._utils import validate_texts
from m3_integrations.bm25 import WordTokenizer
from m3_integrations.errors import StoreConnectionError, StoreError, StoreRequestError
from m3_integrations.index.options import Fusion, IndexKind
from m3_integrations.index.types import EncodedQuery, SearchHit
from m3_integrations.index.validation import validate_documents
from m3_integrations.stores._remote_search import RemoteSearchMethods

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["RemoteM3Store", "StoredDocument", "bm25_document_weights", "term_index"]

_T = TypeVar("_T")

# Format of what a store writes (payload fields, vector names, metadata); checked on reconnect.
STORE_FORMAT = 1
BM25_K1 = 1.5
BM25_B = 0.75
# What a transient failure is, as a backend classifies an exception raised by its client.
TRANSIENT, REJECTED = "transient", "rejected"


def term_index(token: str) -> int:
    """A stable 31-bit index for a BM25 word (a sparse vector's dimension): the first bytes of its BLAKE2b.

    Two words share an index with probability about ``n² / 2³²`` for ``n`` distinct words (a 100k-word
    vocabulary: about one pair), which merges their statistics; the servers key sparse dimensions by
    32-bit integers, so a vocabulary table would have to live (and be kept consistent) somewhere else.

    Example:
        >>> term_index("apple") == term_index("apple") != term_index("apples")
        True
    """
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "big") & 0x7FFFFFFF


def bm25_document_weights(tokens: Sequence[str], avg_length: float) -> dict[int, float]:
    """A document's BM25 term weights without the idf: ``tf·(k1+1) / (tf + k1·(1 - b + b·|d|/avgdl))``.

    The server multiplies by the idf at query time (Qdrant's ``IDF`` modifier). ``avg_length`` is fixed
    when the collection is made (the mean length of the first batch): a database does not recompute
    stored weights when the mean length drifts, unlike :class:`~m3_integrations.bm25.BM25`.

    Example:
        >>> w = bm25_document_weights(["red", "red", "apple"], avg_length=3.0)
        >>> round(w[term_index("red")], 4), round(w[term_index("apple")], 4)
        (1.4286, 1.0)
    """
    counts = Counter(tokens)
    norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len(tokens) / max(avg_length, 1e-9))
    weights: dict[int, float] = {}
    for token, tf in counts.items():
        index = term_index(token)
        weights[index] = weights.get(index, 0.0) + tf * (BM25_K1 + 1.0) / (tf + norm)
    return weights


@dataclass
class StoredDocument:
    """One document as a backend writes it (vectors computed, metadata normalised).

    Attributes:
        id: the user's document id.
        text: the text.
        metadata: JSON metadata.
        seq: insertion order (see the module docstring).
        dense: ``(d,)`` float32 unit vector.
        lexical: the lexical signal's sparse vector (M3 lexical weights, or BM25 term weights).
        colbert: ``(n, d)`` float32 token vectors, rounded to float16 (what ``M3Index`` stores).
        metadata_keys: the metadata's keys (``$exists`` filters).
        empty_keys: keys holding ``None``, ``""``, ``[]`` or ``{}`` (``$empty`` filters).
        null_keys: keys holding ``None`` or a list with ``None`` (``{"k": None}`` filters).
    """

    id: str
    text: str
    metadata: dict[str, Any]
    seq: int
    dense: np.ndarray
    lexical: dict[int, float]
    colbert: np.ndarray
    metadata_keys: list[str] = field(default_factory=list)
    empty_keys: list[str] = field(default_factory=list)
    null_keys: list[str] = field(default_factory=list)


def _key_lists(metadata: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    keys = sorted(metadata)
    empty = [k for k in keys if metadata[k] is None or metadata[k] in ("", [], {})]
    null = [
        k
        for k in keys
        if metadata[k] is None or (isinstance(metadata[k], list) and any(v is None for v in metadata[k]))
    ]
    return keys, empty, null


class RemoteM3Store(RemoteSearchMethods):
    """Base of the vector-database stores: the pipeline of the module docstring over backend primitives.

    The search methods (``search``, ``search_batch``, ``search_encoded``, ``search_options``,
    ``encode_queries`` ...) and the search primitives are in
    :class:`~m3_integrations.stores._remote_search.RemoteSearchMethods`.

    Args:
        model: the encoder (documents and queries).
        collection_name: the collection (created on the first ``add``; checked when it exists).
        batch_size: documents per encode-and-upsert batch.
        show_progress: a tqdm bar over the batches of an ``add``.
        retries: how many times a transient failure (unreachable, timeout, overloaded) is retried.
        backoff: seconds before the first retry; doubled each time.
    """

    engine = "store"

    def __init__(
        self,
        model: M3Model,
        *,
        collection_name: str,
        batch_size: int = 64,
        show_progress: bool = False,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if not isinstance(collection_name, str) or not collection_name:
            msg = f"collection_name must be a non-empty string, got {collection_name!r}"
            raise ValueError(msg)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            msg = f"batch_size must be a positive integer, got {batch_size!r}"
            raise ValueError(msg)
        if not isinstance(retries, int) or retries < 0:
            msg = f"retries must be a non-negative integer, got {retries!r}"
            raise ValueError(msg)
        if not math.isfinite(backoff) or backoff < 0:
            msg = f"backoff must be a non-negative number of seconds, got {backoff!r}"
            raise ValueError(msg)
        self.model = model
        self.collection_name = collection_name
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.retries = retries
        self.backoff = float(backoff)
        self.kind = IndexKind(
            lexical_signal="sparse" if model.has_sparse else "bm25",
            trained_heads=bool(model.has_sparse and model.has_colbert_head),
        )
        self._word_tokenizer = WordTokenizer() if self.lexical_signal == "bm25" else None
        self.bm25_avg_length: float | None = None
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._exists = False
        # Seconds spent per stage by the last search (prefetch, scores, fusion, fetch): the benchmark's.
        self.last_timings: dict[str, float] = {}

    # ------------------------------------------------------------------ backend primitives
    def _check_or_create(self, create: bool) -> bool:  # pragma: no cover - backends implement
        """Check the collection's schema if it exists (or create it when ``create``); whether it exists."""
        raise NotImplementedError

    def _write(self, documents: list[StoredDocument]) -> None:  # pragma: no cover
        """Write one batch: each document whole (all vectors and payload) or not at all."""
        raise NotImplementedError

    def _remove(self, ids: list[str]) -> None:  # pragma: no cover
        raise NotImplementedError

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:  # pragma: no cover
        """Text and metadata of the stored ones among ``ids``."""
        raise NotImplementedError

    def _count(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def _terms_found(self, signal: str, terms: list[int]) -> int:  # pragma: no cover
        """How many of ``terms`` occur in at least one stored document's ``signal`` vector."""
        raise NotImplementedError

    def _classify(self, err: BaseException) -> str | None:  # pragma: no cover
        """``TRANSIENT``, ``REJECTED``, or ``None`` for an error that is not the server's."""
        raise NotImplementedError

    # ------------------------------------------------------------------ calls to the server
    def _call(self, operation: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``function(*args, **kwargs)`` with retries and backoff on transient failures; errors named."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return function(*args, **kwargs)
            except StoreError:
                raise
            except Exception as err:
                kind = self._classify(err)
                where = f"{self.engine} collection {self.collection_name!r}: {operation}"
                if kind == TRANSIENT and attempt < self.retries:
                    logger.warning("%s failed (%s); retry %d in %.2f s", where, err, attempt + 1, delay)
                    time.sleep(delay)
                    delay *= 2
                    continue
                if kind == TRANSIENT:
                    msg = f"{where} failed after {attempt + 1} attempts (unreachable or timing out): {err}"
                    raise StoreConnectionError(msg) from err
                if kind == REJECTED:
                    msg = f"{where} was rejected by the server: {err}"
                    raise StoreRequestError(msg) from err
                raise
        msg = "internal error: retry loop ended"  # pragma: no cover
        raise AssertionError(msg)  # pragma: no cover

    # ------------------------------------------------------------------ what is stored
    @property
    def lexical_signal(self) -> str:
        """The score key of the lexical signal: ``"sparse"`` (M3's lexical weights) or ``"bm25"``."""
        return self.kind.lexical_signal

    @property
    def default_fusion(self) -> Fusion:
        """As :attr:`M3Index.default_fusion <m3_integrations.M3Index.default_fusion>`."""
        return self.kind.default_fusion

    @property
    def default_weights(self) -> dict[str, float]:
        """As :attr:`M3Index.default_weights <m3_integrations.M3Index.default_weights>`."""
        return self.kind.default_weights

    def __len__(self) -> int:
        if not self._exists and not self._check_or_create(create=False):
            return 0
        self._exists = True
        return self._call("count", self._count)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(collection_name={self.collection_name!r}, "
            f"lexical={self.lexical_signal!r})"
        )

    def _next_seqs(self, n: int) -> list[int]:
        with self._seq_lock:
            start = max(time.time_ns() // 1000, self._last_seq + 1)
            self._last_seq = start + n - 1
        return list(range(start, start + n))

    def bm25_tokens(self, texts: Sequence[str]) -> list[list[str]]:
        """The BM25 words of each text (a checkpoint without sparse head; empty lists otherwise)."""
        if self._word_tokenizer is None:
            return [[] for _ in texts]
        return [self._word_tokenizer(t) for t in texts]

    def _check_document(self, doc_id: str, text: str) -> None:
        """Raise ``ValueError`` for an id or a text the backend cannot store (too long, say)."""

    # ------------------------------------------------------------------ writing
    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Encode and upsert documents in batches; a stored id is replaced (upserts are idempotent).

        Args:
            texts: the documents.
            ids: one unique string id per text; random UUID4 strings when ``None``.
            metadatas: one JSON metadata dict per text (``None`` entries become ``{}``).

        Returns:
            The ids, in input order.

        Raises:
            TypeError, ValueError: as :meth:`M3Index.add <m3_integrations.M3Index.add>`; nothing is
                written then.
            StoreSchemaError: the collection was made for another model or layout.
            StoreConnectionError, StoreRequestError: a batch failed; the message says which documents
                were written. Each document is written whole or not at all, so adding the same
                documents again (same ids) completes the job.
        """
        texts, ids, metas = validate_documents(texts, ids, metadatas)
        for doc_id, text in zip(ids, texts, strict=True):
            self._check_document(doc_id, text)
        if not texts:
            return []
        words = self.bm25_tokens(texts)
        if not self._exists:
            if self._word_tokenizer is not None and self.bm25_avg_length is None:
                self.bm25_avg_length = max(1.0, float(np.mean([len(w) for w in words])))
            self._check_or_create(create=True)
            self._exists = True
        starts = range(0, len(texts), self.batch_size)
        bar = tqdm(starts, desc=f"{self.engine} upsert", unit="batch", disable=not self.show_progress)
        for start in bar:
            stop = min(start + self.batch_size, len(texts))
            documents = self._encode_documents(
                texts[start:stop], ids[start:stop], metas[start:stop], words[start:stop]
            )
            try:
                self._write(documents)
            except StoreError as err:
                written = f"documents 0..{start - 1} were written" if start else "no document was written"
                msg = (
                    f"{err} ({written}; documents {start}..{len(texts) - 1} were not, from id {ids[start]!r};"
                    " each document is written whole or not at all: add them again with the same ids)"
                )
                raise type(err)(msg) from err
        return ids

    def _encode_documents(
        self, texts: list[str], ids: list[str], metas: list[dict[str, Any]], words: list[list[str]]
    ) -> list[StoredDocument]:
        output = self.model.encode_passages(
            texts, return_dense=True, return_sparse=self.lexical_signal == "sparse", return_colbert=True
        )
        assert output.dense is not None
        assert output.colbert_vecs is not None
        seqs = self._next_seqs(len(texts))
        documents = []
        for i, text in enumerate(texts):
            if self.lexical_signal == "sparse":
                assert output.lexical_weights is not None
                lexical = {int(t): float(w) for t, w in output.lexical_weights[i].items() if w > 0}
            else:
                assert self.bm25_avg_length is not None
                lexical = bm25_document_weights(words[i], self.bm25_avg_length)
            keys, empty, null = _key_lists(metas[i])
            documents.append(
                StoredDocument(
                    id=ids[i],
                    text=text,
                    metadata=metas[i],
                    seq=seqs[i],
                    dense=np.asarray(output.dense[i], dtype=np.float32),
                    lexical=lexical,
                    # M3Index stores ColBERT vectors as float16: the same rounding keeps scores equal.
                    colbert=np.asarray(output.colbert_vecs[i], dtype=np.float16).astype(np.float32),
                    metadata_keys=keys,
                    empty_keys=empty,
                    null_keys=null,
                )
            )
        return documents

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id.

        Raises:
            KeyError: an id is not stored (the message names it); nothing is deleted then.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not ids:
            return
        found = self._fetch_checked(ids)
        self._call("delete", self._remove, list(found))

    def get(self, ids: Sequence[str]) -> list[SearchHit]:
        """Stored documents by id, in the order asked (``score`` NaN, ``scores`` empty).

        Raises:
            KeyError: an id is not stored (the message names it).
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        found = self._fetch_checked(ids)
        return [SearchHit(id=i, text=found[i][0], metadata=found[i][1], score=math.nan) for i in ids]

    def _fetch_checked(self, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        validated = validate_texts(ids, what="ids")
        found = self._call("get", self._fetch, validated) if self._exists or self._check_exists() else {}
        missing = [i for i in validated if i not in found]
        if missing:
            msg = f"no document with id {missing[0]!r} in {self.engine} collection {self.collection_name!r}"
            raise KeyError(msg)
        return found

    def _check_exists(self) -> bool:
        self._exists = self._check_or_create(create=False)
        return self._exists

    # ------------------------------------------------------------------ term coverage
    def coverage(self, signal: str, encoded: EncodedQuery) -> float:
        """The share of the query's distinct lexical terms found in at least one stored document.

        As :meth:`M3Index.query_term_coverage <m3_integrations.M3Index.query_term_coverage>`:
        ``confidence`` fusion scales the lexical weight by it.
        """
        if signal == "bm25":
            terms = sorted({term_index(t) for t in encoded.bm25_tokens})
            n_terms = len(set(encoded.bm25_tokens))
        else:
            terms = sorted({int(t) for t, w in encoded.lexical_weights.items() if w > 0})
            n_terms = len(terms)
        if not n_terms:
            return 0.0
        return self._call("term coverage", self._terms_found, signal, terms) / n_terms
