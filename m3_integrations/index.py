"""``M3Index``: an embedded hybrid index over BGE-M3's dense, lexical and ColBERT representations.

Storage, one row per document (rows are in insertion order; deletions leave tombstones that
:meth:`M3Index.compact` removes, automatically once half the rows are dead):

- dense: one ``(n, d)`` float32 (or float16) matrix, scored by an exact matrix product;
- lexical: the M3 lexical weights as a scipy CSR matrix ``(n, vocab)`` with a CSC copy as the inverted
  index (a query touches only the posting lists of its tokens);
- ColBERT: every token vector of every document in one contiguous float16 (or int8 + per-vector scale)
  array, with per-row offsets; or not stored (``store_colbert=False``), in which case the ColBERT
  vectors of the candidates are recomputed from their texts at query time (slow, but exact);
- BM25 term frequencies (:mod:`m3_integrations.bm25`), the lexical signal of models without a sparse
  head and an optional fourth signal otherwise.

Search runs in two stages (see ``docs/engine.md``): the cheap signals (dense, lexical, BM25) are scored
against every allowed row and their top-``candidates`` rows are united; the union is then scored with
every signal of the mode (ColBERT included) and fused by :mod:`m3_integrations.fusion`.
``candidates=None`` skips the first stage and scores every allowed row.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from m3_integrations import filters, fusion, persistence, scoring
from m3_integrations._utils import validate_texts
from m3_integrations.bm25 import BM25, WordTokenizer

if TYPE_CHECKING:
    import os

    from m3_integrations.model import M3Model, M3Output

logger = logging.getLogger(__name__)

__all__ = ["MODES", "EncodedQuery", "M3Index", "Reranker", "SearchHit"]

FORMAT_NAME = persistence.FORMAT_NAME
FORMAT_VERSION = persistence.FORMAT_VERSION
MODES: dict[str, tuple[str, ...]] = {
    "dense": ("dense",),
    "sparse": ("lexical",),
    "colbert": ("colbert",),
    "hybrid": ("dense", "lexical", "colbert"),
    "dense+sparse": ("dense", "lexical"),
}
# The paper's settings for a real BGE-M3 (trained sparse and ColBERT heads).
DEFAULT_WEIGHTS = {"dense": 0.4, "lexical": 0.2, "colbert": 0.4}
DEFAULT_FUSION = "weighted"
# Encoders without M3's heads (BM25 over words as the lexical signal, identity ColBERT): chosen by the
# rule in benchmarks/REPORT.md over two encoders and 16 encoder x collection pairs. Min-max scaling puts
# compressed cosines and unbounded BM25 on one scale (weighted sums let BM25 decide the order and
# collapse on cross-lingual queries); confidence then lets each query's score shapes move the weights,
# so a signal that is noise for the query (an encoder that does not read its language, a document cut
# at the window) gives way, and the lexical weight shrinks with the query's term coverage.
NO_HEADS_WEIGHTS = {"dense": 0.3, "lexical": 0.4, "colbert": 0.3}
NO_HEADS_FUSION = "confidence"
WEIGHT_KEYS = ("dense", "sparse", "colbert", "bm25")


@dataclass
class SearchHit:
    """One search result (or one stored document, from :meth:`M3Index.get`).

    Attributes:
        id: the document id.
        text: the document text.
        metadata: a deep copy of the document metadata (changing it changes nothing in the index).
        score: the score that ranked it: fused, the single signal's, or the reranker's.
        scores: per-signal scores (``dense``, ``sparse``, ``colbert``, ``bm25``, ``rerank``) of the
            signals that were computed; empty for :meth:`M3Index.get`.
    """

    id: str
    text: str
    metadata: dict[str, Any]
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class EncodedQuery:
    """A query's representations, as :meth:`M3Index.search_encoded` consumes them.

    Attributes:
        dense: ``(d,)`` float32 vector.
        lexical_weights: token id → weight (empty without a sparse head).
        colbert_vecs: ``(N_q, d)`` token vectors, or ``None`` when no ColBERT signal is needed.
        bm25_tokens: the query's BM25 tokens (token ids or words, repeats counted).
    """

    dense: np.ndarray
    lexical_weights: dict[int, float] = field(default_factory=dict)
    colbert_vecs: np.ndarray | None = None
    bm25_tokens: list[Any] = field(default_factory=list)


@runtime_checkable
class Reranker(Protocol):
    """Anything with ``score(query, passages) -> (n,) array`` can rerank search hits."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance of each passage to the query (higher is better)."""
        ...


# A dict in the filter language of m3_integrations.filters, or a predicate on a document's metadata.
FilterType = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]
_ParsedFilter = filters.FilterExpr | Callable[[Mapping[str, Any]], bool] | None


class M3Index:
    """Embedded hybrid index: dense + lexical + ColBERT (+ BM25), incremental, filtered, persisted.

    Setup:
        .. code-block:: bash

            pip install m3-integrations

    Key init args:
        model: the :class:`~m3_integrations.M3Model` that encodes documents and queries.
        store_colbert: keep ColBERT vectors (needed for fast ``colbert``/``hybrid`` modes).
        colbert_dtype: ``"float16"`` (half of float32) or ``"int8"`` (a quarter, per-vector scale).
        dense_dtype: ``"float32"`` or ``"float16"`` (half the memory and the fastest first stage on
            large indexes: candidates are picked with float16 products, then rescored exactly).
        lexical: ``"m3"`` (the model's lexical weights), ``"bm25"``, or ``"auto"`` (m3 when the model
            has a sparse head, else BM25). With BM25 as the lexical signal, the ``sparse`` weight and
            mode use BM25 and hits report it under ``"bm25"``.
        bm25_tokenizer: ``"word"`` (lower-cased words; CJK ideographs and kana one per token),
            ``"model"`` (the model's subword ids), or ``"auto"``: words when BM25 is the lexical signal
            (a model without sparse head; words beat subword ids there in benchmarks/REPORT.md) or when
            a stemmer or stop words are given, the model's ids otherwise (BM25 as a fourth signal
            beside BGE-M3's own lexical weights).
        bm25_stemmer: with ``bm25_tokenizer="word"``, a Snowball language (``"english"``, ``"german"``,
            …) to stem words with (needs ``pip install "m3-integrations[stemming]"``); ``None`` keeps
            words as they are.
        bm25_stopwords: with ``bm25_tokenizer="word"``, ``"english"`` (built-in list) or your own words
            to leave out of BM25; ``None`` keeps every word.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Index, M3Model

            index = M3Index(M3Model("BAAI/bge-m3"))

    Add documents:
        .. code-block:: python

            ids = index.add(
                ["BGE-M3 has three heads.", "서울은 수도이다."], metadatas=[{"lang": "en"}, {"lang": "ko"}]
            )
            index.add(["BGE-M3 has three outputs."], ids=[ids[0]])  # same id: replaced
            index.delete([ids[1]])

    Search:
        .. code-block:: python

            hits = index.search("what does bge-m3 output?", k=5)  # hybrid, weights (0.4, 0.2, 0.4)
            hits[0].id, hits[0].score, hits[0].scores  # {"dense": ..., "sparse": ..., "colbert": ...}
            index.search("bge-m3", mode="dense+sparse", fusion="rrf", weights={"bm25": 0.3})

    Search with filter:
        .. code-block:: python

            index.search("capital", filter={"lang": "ko"})
            index.search("capital", filter={"year": {"$gte": 2020}, "tags": {"$in": ["geo", "rag"]}})
            index.search("capital", filter=lambda meta: meta.get("year", 0) > 2020)

    Persist:
        .. code-block:: python

            index.save("my_index")
            index = M3Index.load("my_index", model=M3Model("BAAI/bge-m3"))
    """

    def __init__(
        self,
        model: M3Model,
        *,
        store_colbert: bool = True,
        colbert_dtype: Literal["float16", "int8"] = "float16",
        dense_dtype: Literal["float32", "float16"] = "float32",
        lexical: Literal["auto", "m3", "bm25"] = "auto",
        bm25_tokenizer: Literal["auto", "model", "word"] = "auto",
        bm25_stemmer: str | None = None,
        bm25_stopwords: str | Sequence[str] | None = None,
        show_progress: bool = False,
        batch_size: int | None = None,
    ) -> None:
        if colbert_dtype not in ("float16", "int8"):
            msg = f"colbert_dtype must be 'float16' or 'int8', got {colbert_dtype!r}"
            raise ValueError(msg)
        if dense_dtype not in ("float32", "float16"):
            msg = f"dense_dtype must be 'float32' or 'float16', got {dense_dtype!r}"
            raise ValueError(msg)
        if lexical not in ("auto", "m3", "bm25"):
            msg = f"lexical must be 'auto', 'm3' or 'bm25', got {lexical!r}"
            raise ValueError(msg)
        if lexical == "m3" and not model.has_sparse:
            msg = "lexical='m3' needs a checkpoint with sparse_linear.pt; use lexical='bm25' or 'auto'"
            raise ValueError(msg)
        if bm25_tokenizer not in ("auto", "model", "word"):
            msg = f"bm25_tokenizer must be 'auto', 'model' or 'word', got {bm25_tokenizer!r}"
            raise ValueError(msg)
        word_options = bm25_stemmer is not None or bm25_stopwords is not None
        if bm25_tokenizer == "model" and word_options:
            msg = "bm25_stemmer and bm25_stopwords apply to words: use them with bm25_tokenizer='word'"
            raise ValueError(msg)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            msg = f"batch_size must be a positive integer, got {batch_size!r}"
            raise ValueError(msg)
        self.model = model
        self.store_colbert = bool(store_colbert)
        self.colbert_dtype = colbert_dtype
        self.dense_dtype = dense_dtype
        self.lexical = "m3" if lexical == "m3" or (lexical == "auto" and model.has_sparse) else "bm25"
        if bm25_tokenizer == "auto":
            bm25_tokenizer = "word" if self.lexical == "bm25" or word_options else "model"
        self.bm25_tokenizer: Literal["model", "word"] = bm25_tokenizer
        self._word_tokenizer = None
        if bm25_tokenizer == "word":
            self._word_tokenizer = WordTokenizer(stemmer=bm25_stemmer, stopwords=bm25_stopwords)
        self.show_progress = show_progress
        self.batch_size = batch_size
        self.dense_dim = int(model.dense_dim)
        self.colbert_dim = int(model.colbert_dim)
        self.vocab_size = int(model.vocab_size)
        self._lock = threading.RLock()
        self._workspace = scoring.StagingBuffer()  # used under the lock
        self._reset_storage()

    # ------------------------------------------------------------------ storage
    def _reset_storage(self) -> None:
        self._row_ids: list[str] = []
        self._texts: list[str] = []
        self._metadatas: list[dict[str, Any]] = []
        self._metadata_indexes: dict[str, filters.KeyIndex] = {}  # dict filters; rows only appended
        self._row_of: dict[str, int] = {}
        self._alive = np.zeros(0, dtype=bool)
        self._dense = np.zeros((0, self.dense_dim), dtype=self.dense_dtype)
        self._lex_chunks: list[sp.csr_matrix] = []
        self._lex_csr: sp.csr_matrix | None = None
        self._lex_csc: sp.csc_matrix | None = None
        col_dtype = np.float16 if self.colbert_dtype == "float16" else np.int8
        self._colbert = np.zeros((0, self.colbert_dim), dtype=col_dtype)
        self._colbert_scale = np.zeros(0, dtype=np.float32)
        self._colbert_used = 0
        self._colbert_norm_cache: tuple[tuple[int, int, int], float] | None = None
        self._colbert_start = np.zeros(0, dtype=np.int64)
        self._colbert_len = np.zeros(0, dtype=np.int64)
        self._bm25 = BM25(num_columns=self.vocab_size if self.bm25_tokenizer == "model" else None)

    @property
    def _lexical_signal(self) -> str:
        return "sparse" if self.lexical == "m3" else "bm25"

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id: object) -> bool:
        return id in self._row_of

    @property
    def ids(self) -> list[str]:
        """Ids of the stored documents, in insertion order (a replaced document counts as new)."""
        with self._lock:
            return [self._row_ids[r] for r in np.flatnonzero(self._alive)]

    def __repr__(self) -> str:
        return (
            f"M3Index(n={len(self)}, lexical={self.lexical!r}, store_colbert={self.store_colbert}, "
            f"colbert_dtype={self.colbert_dtype!r}, dense_dtype={self.dense_dtype!r})"
        )

    def _lexical_matrix(self) -> sp.csr_matrix:
        if self._lex_csr is None:
            chunks = [
                sp.csr_matrix((c.data, c.indices, c.indptr), shape=(c.shape[0], self.vocab_size))
                for c in self._lex_chunks
            ]
            self._lex_csr = (
                sp.csr_matrix(sp.vstack(chunks, format="csr"))
                if chunks
                else sp.csr_matrix((0, self.vocab_size), dtype=np.float32)
            )
            self._lex_chunks = [self._lex_csr]
        return self._lex_csr

    def _lexical_inverted(self) -> sp.csc_matrix:
        if self._lex_csc is None:
            self._lex_csc = self._lexical_matrix().tocsc()
            self._lex_csc.sort_indices()
        return self._lex_csc

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held per representation (arrays only; texts and metadata not counted)."""
        with self._lock:
            lex = self._lexical_matrix()
            bm25 = self._bm25.matrix()
            n = len(self._alive)
            return {
                "dense": int(self._dense[:n].nbytes),
                "sparse": int(lex.data.nbytes + lex.indices.nbytes + lex.indptr.nbytes) * 2,  # CSR + CSC
                "colbert": int(
                    self._colbert[: self._colbert_used].nbytes
                    + self._colbert_scale[: self._colbert_used].nbytes
                    + self._colbert_start.nbytes
                    + self._colbert_len.nbytes
                ),
                "bm25": int(bm25.data.nbytes + bm25.indices.nbytes + bm25.indptr.nbytes) * 2,
            }

    # ------------------------------------------------------------------ adding
    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Encode and store documents; a document whose id is already stored replaces it.

        Args:
            texts: the documents (empty strings are stored too): a list, tuple or other ordered
                sequence, or an iterator; a dict or a set raises ``TypeError`` (no defined order).
            ids: one unique string id per text; random UUID4 strings when ``None``.
            metadatas: one metadata dict per text (``None`` entries become ``{}``): JSON only (string
                keys; str, int, float, bool, None, lists and dicts; tuples become lists; at most 32
                levels deep). The index stores a deep copy.

        Returns:
            The ids, in input order.

        Raises:
            TypeError: a text or id is not a string, ``texts`` is a dict or set, a metadata entry is not a
                dict, or metadata holds a non-string key or a non-JSON value (the message names the id
                and the key path).
            ValueError: ids or metadatas of the wrong length, an id repeated within the call, NaN or
                infinity in metadata, nesting deeper than 32 levels, or a lone surrogate in a text, id or
                metadata string. Nothing is stored when anything is refused.
        """
        texts, ids, metas = self._validate_documents(texts, ids, metadatas)
        if not texts:
            return []
        output = self.model.encode_passages(
            texts,
            return_dense=True,
            return_sparse=self.lexical == "m3",
            return_colbert=self.store_colbert,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        self._add_validated(output, texts, ids, metas, self._bm25_tokens(texts))
        return ids

    def add_encoded(
        self,
        output: M3Output,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        bm25_tokens: Sequence[Sequence[Any]] | sp.spmatrix | None = None,
    ) -> list[str]:
        """Store documents whose representations are already computed (benchmarks, bulk loads).

        Args:
            output: the passages' :class:`~m3_integrations.M3Output` (dense; lexical weights when
                ``lexical="m3"``, as dicts or as one CSR matrix ``(n, vocab_size)``; ColBERT vectors
                when ``store_colbert``).
            texts: the documents' texts.
            ids: as in :meth:`add`.
            metadatas: as in :meth:`add`.
            bm25_tokens: per document, its BM25 tokens, or (model tokenizer only) a term-frequency
                matrix ``(n, vocab_size)``; tokenised from ``texts`` when ``None``.

        Returns:
            The ids, in input order.
        """
        texts, ids, metas = self._validate_documents(texts, ids, metadatas)
        if len(output) != len(texts) and (output.dense is None or len(output.dense) != len(texts)):
            msg = f"output holds {len(output)} documents but {len(texts)} texts were given"
            raise ValueError(msg)
        n_tokens = (
            None
            if bm25_tokens is None
            else bm25_tokens.shape[0]  # type: ignore[union-attr]
            if sp.issparse(bm25_tokens)
            else len(bm25_tokens)
        )
        if n_tokens is not None and n_tokens != len(texts):
            msg = f"bm25_tokens has {n_tokens} entries but {len(texts)} texts were given"
            raise ValueError(msg)
        if bm25_tokens is None:
            tokens: Any = self._bm25_tokens(texts)
        else:
            tokens = bm25_tokens if sp.issparse(bm25_tokens) else list(bm25_tokens)
        self._add_validated(output, texts, ids, metas, tokens)
        return ids

    def _validate_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        texts = validate_texts(texts, what="texts", allow_empty_strings=True)
        if ids is None:
            ids = [str(uuid.uuid4()) for _ in texts]
        else:
            ids = validate_texts(ids, what="ids")
            if len(ids) != len(texts):
                msg = f"got {len(ids)} ids for {len(texts)} texts"
                raise ValueError(msg)
            seen: set[str] = set()
            for doc_id in ids:
                if doc_id in seen:
                    msg = f"duplicate id {doc_id!r} within one add call"
                    raise ValueError(msg)
                seen.add(doc_id)
        if metadatas is None:
            metas: list[dict[str, Any]] = [{} for _ in texts]
        else:
            if isinstance(metadatas, Mapping):
                msg = "metadatas must be a list with one dict (or None) per text, got a single dict"
                raise TypeError(msg)
            metadatas = list(metadatas)
            if len(metadatas) != len(texts):
                msg = f"got {len(metadatas)} metadatas for {len(texts)} texts"
                raise ValueError(msg)
            metas = [
                filters.normalize_metadata(meta, f"metadatas[{i}] (document {doc_id!r})")
                for i, (meta, doc_id) in enumerate(zip(metadatas, ids, strict=True))
            ]
        return texts, ids, metas

    def _bm25_tokens(self, texts: Sequence[str]) -> list[list[Any]]:
        if self._word_tokenizer is not None:
            return [self._word_tokenizer(t) for t in texts]
        return self.model.tokenize(list(texts), add_special_tokens=False).input_ids

    def _add_validated(
        self,
        output: M3Output,
        texts: list[str],
        ids: list[str],
        metas: list[dict[str, Any]],
        bm25_tokens: list[Any] | sp.spmatrix,
    ) -> None:
        n_new = len(texts)
        dense = output.dense
        if dense is None or dense.shape != (n_new, self.dense_dim):
            shape = None if dense is None else dense.shape
            msg = f"dense vectors must have shape ({n_new}, {self.dense_dim}), got {shape}"
            raise ValueError(msg)
        lexical_chunk = None
        if self.lexical == "m3":
            weights: Any = output.lexical_weights  # dicts, or a CSR matrix from bulk loads
            if weights is None or (sp.issparse(weights) and weights.shape != (n_new, self.vocab_size)):
                msg = "lexical weights are required (one dict per document) with lexical='m3'"
                raise ValueError(msg)
            if sp.issparse(weights):
                lexical_chunk = sp.csr_matrix(weights, dtype=np.float32)
            elif len(weights) != n_new:
                msg = f"got lexical weights for {len(weights)} documents, expected {n_new}"
                raise ValueError(msg)
            else:
                lexical_chunk = scoring.lexical_weights_to_csr(weights, self.vocab_size)
        colbert_flat = colbert_scale = colbert_lengths = None
        if self.store_colbert:
            vecs = output.colbert_vecs
            if vecs is None or len(vecs) != n_new:
                msg = "ColBERT vectors are required (one array per document) with store_colbert=True"
                raise ValueError(msg)
            colbert_lengths = np.asarray([len(v) for v in vecs], dtype=np.int64)
            for v in vecs:
                if len(v) and (np.ndim(v) != 2 or v.shape[1] != self.colbert_dim):
                    msg = f"ColBERT vectors must have {self.colbert_dim} columns, got shape {np.shape(v)}"
                    raise ValueError(msg)
            flat = (
                np.concatenate([np.asarray(v, dtype=np.float32) for v in vecs if len(v)])
                if colbert_lengths.sum()
                else np.zeros((0, self.colbert_dim), dtype=np.float32)
            )
            colbert_flat, colbert_scale = _quantize(flat, self.colbert_dtype)

        with self._lock:
            replaced = [self._row_of[i] for i in ids if i in self._row_of]
            if replaced:
                self._alive[replaced] = False
            start = len(self._alive)
            self._row_ids.extend(ids)
            self._texts.extend(texts)
            self._metadatas.extend(metas)
            for offset, doc_id in enumerate(ids):
                self._row_of[doc_id] = start + offset
            self._dense = _append_rows(self._dense, dense.astype(self.dense_dtype), start)
            if lexical_chunk is not None:
                self._lex_chunks.append(lexical_chunk)
                self._lex_csr = self._lex_csc = None
            if colbert_flat is not None and colbert_lengths is not None and colbert_scale is not None:
                used = self._colbert_used
                self._colbert = _append_rows(self._colbert, colbert_flat, used)
                if self.colbert_dtype == "int8":  # float16 rows need no scale: store none
                    self._colbert_scale = _append_rows(self._colbert_scale, colbert_scale, used)
                self._colbert_used = used + len(colbert_flat)
                starts = used + np.concatenate([[0], np.cumsum(colbert_lengths)[:-1]])
                self._colbert_start = np.concatenate([self._colbert_start, starts.astype(np.int64)])
                self._colbert_len = np.concatenate([self._colbert_len, colbert_lengths])
            self._alive = np.concatenate([self._alive, np.ones(n_new, dtype=bool)])
            if sp.issparse(bm25_tokens):
                self._bm25.add_matrix(bm25_tokens)
            else:
                self._bm25.add(bm25_tokens)
            self._bm25.set_alive(self._alive)
            self._maybe_compact()

    def reserve(self, documents: int, colbert_vectors: int = 0) -> None:
        """Preallocate room for ``documents`` more rows and ``colbert_vectors`` more ColBERT vectors.

        Bulk loads that know their size avoid the copies of geometric growth (and its 1.5x peak).
        """
        with self._lock:
            n = len(self._alive)
            if n + documents > len(self._dense):
                grown = np.empty((n + documents, self.dense_dim), dtype=self._dense.dtype)
                grown[:n] = self._dense[:n]
                self._dense = grown
            used = self._colbert_used
            if self.store_colbert and used + colbert_vectors > len(self._colbert):
                grown = np.empty((used + colbert_vectors, self.colbert_dim), dtype=self._colbert.dtype)
                grown[:used] = self._colbert[:used]
                self._colbert = grown
                if self.colbert_dtype == "int8":
                    scale = np.empty(used + colbert_vectors, dtype=np.float32)
                    scale[:used] = self._colbert_scale[:used]
                    self._colbert_scale = scale

    # ------------------------------------------------------------------ reading and deleting
    def get(self, ids: Sequence[str]) -> list[SearchHit]:
        """Stored documents by id, in the order asked (``score`` is NaN, ``scores`` empty).

        Raises:
            KeyError: an id is not stored (the message names it).
        """
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            rows = self._rows_of(ids)
            return [
                SearchHit(
                    id=self._row_ids[r],
                    text=self._texts[r],
                    metadata=filters.copy_metadata(self._metadatas[r]),
                    score=math.nan,
                )
                for r in rows
            ]

    def _rows_of(self, ids: Sequence[str]) -> list[int]:
        rows = []
        for doc_id in ids:
            row = self._row_of.get(doc_id)
            if row is None:
                msg = f"no document with id {doc_id!r} in the index"
                raise KeyError(msg)
            rows.append(row)
        return rows

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; all or nothing.

        Raises:
            KeyError: an id is not stored (the message names it); nothing is deleted then.
        """
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            rows = self._rows_of(ids)
            for doc_id in ids:
                self._row_of.pop(doc_id, None)
            self._alive[rows] = False
            self._bm25.set_alive(self._alive)
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        dead = len(self._alive) - len(self._row_of)
        if dead >= 64 and dead * 2 >= len(self._alive):
            self.compact()

    def compact(self) -> None:
        """Drop the rows of deleted or replaced documents (insertion order is kept)."""
        with self._lock:
            keep = np.flatnonzero(self._alive)
            if len(keep) == len(self._alive):
                return
            self._row_ids = [self._row_ids[r] for r in keep]
            self._texts = [self._texts[r] for r in keep]
            self._metadatas = [self._metadatas[r] for r in keep]
            self._metadata_indexes = {}  # rows were renumbered
            self._row_of = {doc_id: i for i, doc_id in enumerate(self._row_ids)}
            self._dense = self._dense[keep].copy()
            if self.lexical == "m3":
                self._lex_chunks = [sp.csr_matrix(self._lexical_matrix()[keep])]
                self._lex_csr = self._lex_csc = None
            if self.store_colbert:
                flat, scale, starts, lengths = self._colbert_segments(keep)
                self._colbert, self._colbert_scale = flat.copy(), scale.copy()
                self._colbert_used = len(flat)
                self._colbert_start, self._colbert_len = starts, lengths
            self._bm25.keep_rows(keep)
            self._alive = np.ones(len(keep), dtype=bool)
            self._bm25.set_alive(self._alive)

    def _colbert_segments(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The stored ColBERT rows of ``rows``: (flat, scale, starts into flat, lengths)."""
        lengths = self._colbert_len[rows]
        starts = self._colbert_start[rows]
        if lengths.sum() == 0:
            return (
                self._colbert[:0],
                self._colbert_scale[:0],
                np.zeros(len(rows), dtype=np.int64),
                lengths.copy(),
            )
        pieces = [slice(int(s), int(s + n)) for s, n in zip(starts, lengths, strict=True) if n]
        flat = np.concatenate([self._colbert[p] for p in pieces])
        scale = np.concatenate([self._colbert_scale[p] for p in pieces])
        new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return flat, scale, new_starts, lengths.copy()

    # ------------------------------------------------------------------ search
    def encode_queries(self, queries: Sequence[str], *, colbert: bool = True) -> list[EncodedQuery]:
        """Encode queries into what :meth:`search_encoded` needs (dense, lexical, ColBERT, BM25 tokens).

        Raises:
            ValueError: a query is empty or blank.
        """
        queries = validate_texts(queries, what="queries", allow_empty_strings=True)
        for query in queries:
            if not query.strip():
                msg = "query is empty"
                raise ValueError(msg)
        if not queries:
            return []
        output = self.model.encode_queries(
            queries,
            return_dense=True,
            return_sparse=self.model.has_sparse,
            return_colbert=colbert,
            batch_size=self.batch_size,
        )
        assert output.dense is not None
        tokens = self._bm25_tokens(queries)
        return [
            EncodedQuery(
                dense=output.dense[i],
                lexical_weights=output.lexical_weights[i] if output.lexical_weights is not None else {},
                colbert_vecs=output.colbert_vecs[i] if output.colbert_vecs is not None else None,
                bm25_tokens=tokens[i],
            )
            for i in range(len(queries))
        ]

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str | None = None,
        candidates: int | None = 100,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> list[SearchHit]:
        """Search the index with one query.

        Args:
            query: the query text (not empty).
            k: how many hits to return (fewer only if fewer documents match the filter).
            mode: ``"dense"``, ``"sparse"``, ``"colbert"``, ``"hybrid"`` (all three) or ``"dense+sparse"``.
            weights: ``None`` for the defaults (:attr:`default_weights`: the paper's (0.4, 0.2, 0.4)
                for a real BGE-M3, (0.3, 0.4, 0.3) for an encoder without M3's heads); a tuple
                ``(dense, sparse, colbert)`` or ``(dense, sparse, colbert, bm25)``; or a dict by signal
                name (``dense``, ``sparse``, ``colbert``, ``bm25``) overriding those defaults —
                ``{"bm25": 0.2}`` adds BM25 as a fourth signal. Only the mode's signals (and ``bm25``
                when weighted) are used.
            fusion: ``"weighted"``, ``"rrf"``, ``"relative_score"`` or ``"confidence"`` (see
                :mod:`m3_integrations.fusion`);
                ``None`` for :attr:`default_fusion` (weighted for BGE-M3, confidence without its heads).
            candidates: first-stage size per cheap signal; ``None`` scores every document (with
                ``weighted`` fusion, ColBERT is skipped where an exact bound shows a document cannot
                reach the top ``k``; the results are identical).
            filter: a dict filter (:mod:`m3_integrations.filters`, MongoDB style): ``{"lang": "ko"}``
                (equality; on a list field, one element equal), operators ``$eq $ne $gt $gte $lt $lte
                $in $nin $all $contains $text $itext $exists $empty`` on a key
                (``{"year": {"$gte": 2020}}``), and ``$and $or $not``; several keys must all match.
                Or a callable on (a copy of) the metadata dict. Applied before the top-k, so ``k`` hits
                come back whenever ``k`` documents match.
            rerank: ``"m3"`` (re-score with all M3 representations), or a reranker such as
                :class:`~m3_integrations.rerank.CrossEncoderReranker`.
            rerank_top_n: how many fused hits the reranker sees (default ``max(k, 20)``; at least ``k``).

        Returns:
            Up to ``k`` hits, best first; ties are broken by insertion order.

        Raises:
            ValueError: empty query, ``k <= 0``, unknown mode or fusion, bad weights or candidates, a
                bad dict filter (unknown operator, value of the wrong shape: the message names the key
                and the operator; raised before the query is encoded), or a reranker returning NaN,
                infinity, the wrong number of scores or no number array (naming the reranker).
            TypeError: a filter that is neither a dict nor a callable.
        """
        options = self._search_options(
            k,
            mode=mode,
            weights=weights,
            fusion_method=fusion,
            candidates=candidates,
            filter_=filter,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )
        needs_colbert = "colbert" in options["weights"] or options["rerank"] == "m3"
        (encoded,) = self.encode_queries([query], colbert=needs_colbert)
        return self._search(query, encoded, options)

    def check_search_options(
        self,
        k: int = 10,
        *,
        mode: str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str | None = None,
        candidates: int | None = 100,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> None:
        """Raise the error :meth:`search` would raise for these options, without encoding or searching.

        The framework retrievers call it when they are built, so a bad mode, weights or fusion fails
        at construction rather than at the first query.

        Raises:
            ValueError: what :meth:`search` raises for ``k``, mode, weights, fusion, candidates, a dict
                filter or rerank options; ``TypeError`` for a filter that is neither a dict nor a
                callable.

        Example:
            .. code-block:: python

                index.check_search_options(5, mode="dense+sparse", weights=(1.0, 1.0, 0.0))  # passes
                index.check_search_options(5, fusion="max")  # ValueError: unknown fusion 'max'...
        """
        self._search_options(
            k,
            mode=mode,
            weights=weights,
            fusion_method=fusion,
            candidates=candidates,
            filter_=filter,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )

    def search_batch(self, queries: Sequence[str], k: int = 10, **kwargs: Any) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, encoded in one batch; same keyword arguments."""
        options = self._search_options(
            k,
            mode=kwargs.pop("mode", "hybrid"),
            weights=kwargs.pop("weights", None),
            fusion_method=kwargs.pop("fusion", None),
            candidates=kwargs.pop("candidates", 100),
            filter_=kwargs.pop("filter", None),
            rerank=kwargs.pop("rerank", None),
            rerank_top_n=kwargs.pop("rerank_top_n", None),
        )
        if kwargs:
            msg = f"unexpected keyword arguments: {', '.join(sorted(kwargs))}"
            raise TypeError(msg)
        queries = validate_texts(queries, what="queries")
        needs_colbert = "colbert" in options["weights"] or options["rerank"] == "m3"
        encoded = self.encode_queries(queries, colbert=needs_colbert)
        return [self._search(q, e, options) for q, e in zip(queries, encoded, strict=True)]

    def search_encoded(
        self,
        encoded: EncodedQuery,
        k: int = 10,
        *,
        mode: str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: str | None = None,
        candidates: int | None = 100,
        filter: FilterType | None = None,
    ) -> list[SearchHit]:
        """The search engine alone, on precomputed query representations (no encoding, no rerank)."""
        options = self._search_options(
            k,
            mode=mode,
            weights=weights,
            fusion_method=fusion,
            candidates=candidates,
            filter_=filter,
            rerank=None,
            rerank_top_n=None,
        )
        return self._search(None, encoded, options)

    def query_term_coverage(self, encoded: EncodedQuery) -> float:
        """The share of the query's distinct lexical terms that occur in at least one stored document.

        The terms are the BM25 tokens with ``lexical="bm25"``, else the token ids with a positive M3
        lexical weight. ``fusion="confidence"`` scales the lexical weight by this share: a cross-lingual
        query shares only a few names and numbers with the corpus, and those stray matches would
        otherwise look like a confident lexical signal.

        Example:
            .. code-block:: python

                index = M3Index(model, lexical="bm25", bm25_tokenizer="word")
                index.add(["red apples", "green pears"])
                index.query_term_coverage(index.encode_queries(["red kiwis"])[0])  # 0.5

        Raises:
            TypeError: ``encoded`` is not an :class:`EncodedQuery` (see :meth:`encode_queries`).
        """
        if not isinstance(encoded, EncodedQuery):
            msg = f"query_term_coverage needs an EncodedQuery (encode_queries), got {type(encoded).__name__}"
            raise TypeError(msg)
        with self._lock:
            return self._signal_coverage(self._lexical_signal, encoded)

    def _signal_coverage(self, signal: str, encoded: EncodedQuery) -> float:
        """Query-term coverage of one lexical signal: BM25 tokens for ``bm25``, M3 token ids for ``sparse``.

        BM25 can be a fourth signal beside M3's own lexical weights, with its own tokens.
        """
        if signal == "bm25":
            return self._bm25.coverage(encoded.bm25_tokens)
        inverted = self._lexical_inverted()
        terms = [t for t, w in encoded.lexical_weights.items() if w > 0]
        if not terms:
            return 0.0
        alive = self._alive[: inverted.shape[0]]
        known = 0
        for term in terms:
            if 0 <= term < inverted.shape[1]:
                postings = inverted.indices[inverted.indptr[term] : inverted.indptr[term + 1]]
                known += bool(alive[postings].any())
        return known / len(terms)

    def _search_options(
        self,
        k: int,
        *,
        mode: str,
        weights: Sequence[float] | Mapping[str, float] | None,
        fusion_method: str | None,
        candidates: int | None,
        filter_: FilterType | None,
        rerank: str | Reranker | None,
        rerank_top_n: int | None,
    ) -> dict[str, Any]:
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
            msg = f"k must be a positive integer, got {k!r}"
            raise ValueError(msg)
        if mode not in MODES:
            msg = f"unknown mode {mode!r}; expected one of {', '.join(MODES)}"
            raise ValueError(msg)
        if fusion_method is None:
            fusion_method = self.default_fusion
        if fusion_method not in fusion.FUSION_METHODS:
            msg = f"unknown fusion {fusion_method!r}; expected one of {', '.join(fusion.FUSION_METHODS)}"
            raise ValueError(msg)
        if candidates is not None and (
            not isinstance(candidates, int | np.integer) or isinstance(candidates, bool) or candidates <= 0
        ):
            msg = f"candidates must be a positive integer or None, got {candidates!r}"
            raise ValueError(msg)
        if filter_ is not None and not (isinstance(filter_, Mapping) or callable(filter_)):
            msg = f"filter must be a dict or a callable, got {type(filter_).__name__}"
            raise TypeError(msg)
        # A dict is checked and parsed once per call, before any work.
        parsed_filter = filters.parse_filter(filter_) if isinstance(filter_, Mapping) else filter_
        if rerank is not None and rerank != "m3" and not isinstance(rerank, Reranker):
            msg = f"rerank must be 'm3' or an object with score(query, passages), got {rerank!r}"
            raise ValueError(msg)
        top_n = max(int(k), 20) if rerank_top_n is None else rerank_top_n
        if rerank is not None and (not isinstance(top_n, int) or top_n < k):
            msg = f"rerank_top_n must be an integer >= k ({k}), got {rerank_top_n!r}"
            raise ValueError(msg)
        return {
            "k": int(k),
            "weights": self._resolve_weights(mode, weights),
            "fusion": fusion_method,
            "candidates": None if candidates is None else int(candidates),
            "filter": parsed_filter,
            "rerank": rerank,
            "rerank_top_n": top_n,
        }

    @property
    def _has_trained_heads(self) -> bool:
        return self._lexical_signal == "sparse" and bool(getattr(self.model, "has_colbert_head", False))

    @property
    def default_fusion(self) -> str:
        """``"weighted"`` for a real BGE-M3 (the paper's setting), ``"confidence"`` without its heads."""
        return DEFAULT_FUSION if self._has_trained_heads else NO_HEADS_FUSION

    @property
    def default_weights(self) -> dict[str, float]:
        """Weights used when ``search`` gets none: 0.4/0.2/0.4 for BGE-M3, 0.3/0.4/0.3 without its heads."""
        defaults = DEFAULT_WEIGHTS if self._has_trained_heads else NO_HEADS_WEIGHTS
        return {("sparse" if k == "lexical" else k): v for k, v in defaults.items()}

    def _resolve_weights(
        self, mode: str, weights: Sequence[float] | Mapping[str, float] | None
    ) -> dict[str, float]:
        lexical = self._lexical_signal
        names = {"dense": "dense", "lexical": lexical, "colbert": "colbert"}
        defaults = DEFAULT_WEIGHTS if self._has_trained_heads else NO_HEADS_WEIGHTS
        resolved = {names[s]: defaults[s] for s in MODES[mode]}
        if weights is None:
            pass
        elif isinstance(weights, Mapping):
            for key, value in weights.items():
                if key not in WEIGHT_KEYS:
                    msg = f"unknown weight {key!r}; expected keys among {', '.join(WEIGHT_KEYS)}"
                    raise ValueError(msg)
                name = lexical if key == "sparse" else key
                if name in resolved or name == "bm25":
                    resolved[name] = _check_weight(key, value)
        elif isinstance(weights, Sequence) and not isinstance(weights, str):
            values = list(weights)
            if len(values) not in (3, 4) or (len(values) == 4 and lexical == "bm25"):
                expected = "3 (dense, sparse, colbert)" + (
                    " or 4 (dense, sparse, colbert, bm25)" if lexical == "sparse" else ""
                )
                msg = f"weights must have {expected} entries, got {len(values)}: {weights}"
                raise ValueError(msg)
            by_key = dict(zip(WEIGHT_KEYS, values, strict=False))
            for key, value in by_key.items():
                checked = _check_weight(key, value)
                name = lexical if key == "sparse" else key
                if name in resolved or (key == "bm25" and checked > 0):
                    resolved[name] = checked
        else:
            msg = f"weights must be None, a tuple or a dict, got {type(weights).__name__}"
            raise TypeError(msg)
        largest = max(resolved.values())
        if largest <= 0:
            msg = f"the weights of mode {mode!r} are all zero: {resolved}"
            raise ValueError(msg)
        # Every fusion is invariant to one common scale; dividing by the largest weight keeps sums of
        # extreme but finite weights (1e308 overflows, 1e-320 loses all precision) in range.
        resolved = {name: weight / largest for name, weight in resolved.items()}
        if "colbert" in resolved and not self.store_colbert:
            logger.debug("ColBERT vectors are not stored; candidates are re-encoded at query time")
        return resolved

    def _allowed_rows(self, filter_: _ParsedFilter) -> np.ndarray:
        alive = self._alive
        if filter_ is None:
            return alive
        if not callable(filter_):
            return alive & filters.evaluate(filter_, self._metadatas, self._metadata_indexes)
        allowed = np.zeros_like(alive)
        for row in np.flatnonzero(alive):
            allowed[row] = bool(filter_(filters.copy_metadata(self._metadatas[row])))
        return allowed

    def _full_scores(self, signal: str, encoded: EncodedQuery, *, exact: bool = True) -> np.ndarray:
        """A cheap signal's score for every row (dead rows too; the caller masks them).

        ``exact=False`` lets a float16 dense store use the faster float16 kernel (candidate picking).
        """
        n = len(self._alive)
        if signal == "dense":
            return scoring.dense_scores_stored(
                encoded.dense, self._dense[:n], workspace=self._workspace, exact=exact
            )
        if signal == "sparse":
            return _lexical_scores_inverted(self._lexical_inverted(), encoded.lexical_weights)
        if signal == "bm25":
            return self._bm25.get_scores(encoded.bm25_tokens)
        msg = f"internal error: {signal!r} is not a first-stage signal"
        raise AssertionError(msg)

    def _colbert_scores(self, rows: np.ndarray, encoded: EncodedQuery) -> np.ndarray:
        query = encoded.colbert_vecs
        if query is None:
            msg = "the query has no ColBERT vectors (encode it with colbert=True)"
            raise ValueError(msg)
        if not self.store_colbert:
            texts = [self._texts[r] for r in rows]
            vecs = self.model.encode_passages(
                texts,
                return_dense=False,
                return_sparse=False,
                return_colbert=True,
                batch_size=self.batch_size,
            ).colbert_vecs
            return scoring.colbert_scores(query, vecs or [])
        return scoring.colbert_scores_stored(
            query,
            self._colbert[: self._colbert_used],
            self._colbert_start[rows],
            self._colbert_len[rows],
            scales=self._colbert_scale[: self._colbert_used] if self.colbert_dtype == "int8" else None,
            workspace=self._workspace,
        )

    def _colbert_norm_bound(self) -> float:
        """The largest norm of a stored ColBERT vector (cached until the store changes)."""
        key = (id(self._colbert), id(self._colbert_scale), self._colbert_used)
        if self._colbert_norm_cache is None or self._colbert_norm_cache[0] != key:
            largest = 0.0
            step = 65_536
            for begin in range(0, self._colbert_used, step):
                block = self._colbert[begin : min(begin + step, self._colbert_used)].astype(np.float32)
                norms = np.linalg.norm(block, axis=1)
                if self.colbert_dtype == "int8":
                    norms *= self._colbert_scale[begin : begin + len(block)]
                largest = max(largest, float(norms.max(initial=0.0)))
            self._colbert_norm_cache = (key, largest)
        return self._colbert_norm_cache[1]

    def _pruned_exhaustive(
        self,
        rows: np.ndarray,
        signals: dict[str, np.ndarray],
        encoded: EncodedQuery,
        weights: dict,
        n_keep: int,
    ) -> np.ndarray | None:
        """ColBERT scores for an exhaustive ``weighted`` search, computed only where they can matter.

        Exact: MaxSim is at most ``B = max ||q_i|| * max ||e_j||`` (Cauchy-Schwarz), and the weighted
        fusion is increasing in the ColBERT score, so fusing with ``B`` gives every row an upper bound.
        The rows with the highest bounds are scored first; the ``n_keep``-th best exact fused score
        among them is a lower bound on the final one, so a row whose bound is strictly below it cannot
        enter the top ``n_keep`` (not even by a tie) and keeps ``B``. Every other row is then scored.
        Returns None when the shortcut does not pay (more than a third of the rows would still need
        scoring: the contiguous full pass is faster than gathering them) or when no scored row has
        ColBERT evidence yet (the fusion might drop the signal).
        """
        query = encoded.colbert_vecs
        if query is None or len(query) == 0:
            return None
        query_norm = float(np.linalg.norm(np.asarray(query, dtype=np.float32), axis=1).max())
        # A relative margin covers float32 rounding in the norms and in the MaxSim products.
        bound = query_norm * self._colbert_norm_bound() * (1 + 1e-4)
        if bound <= 0:
            return None
        colbert = np.full(len(rows), bound, dtype=np.float32)
        upper = fusion.fuse({**signals, "colbert": colbert}, weights, method="weighted")
        order = np.argsort(-upper, kind="stable")
        first = np.sort(order[: max(4 * n_keep, 256)])
        colbert[first] = self._colbert_scores(rows[first], encoded)
        if not np.any(colbert[first]):
            return None
        fused = fusion.fuse({**signals, "colbert": colbert}, weights, method="weighted")
        kth = np.partition(fused[first], len(first) - n_keep)[len(first) - n_keep]
        rest = np.setdiff1d(np.flatnonzero(upper >= kth), first, assume_unique=True)
        if len(rest) > len(rows) // 3:
            return None
        if len(rest):
            colbert[rest] = self._colbert_scores(rows[rest], encoded)
        return colbert

    def _search(self, query: str | None, encoded: EncodedQuery, options: dict[str, Any]) -> list[SearchHit]:
        k, weights = options["k"], options["weights"]
        rerank = options["rerank"]
        with self._lock:
            allowed = self._allowed_rows(options["filter"])
            allowed_rows = np.flatnonzero(allowed)
            if allowed_rows.size == 0:
                return []
            first_stage = [s for s in weights if s != "colbert"] or ["dense", self._lexical_signal]
            # Candidates may be picked with float16 dense scores; the dense signal is then rescored.
            approximate = options["candidates"] is not None and self._dense.dtype == np.float16
            full = {s: self._full_scores(s, encoded, exact=not approximate) for s in first_stage}
            if options["candidates"] is None:
                rows = allowed_rows
            else:
                per_signal = max(options["candidates"], k, options["rerank_top_n"] if rerank else 0)
                everything = allowed_rows.size == len(allowed)  # no filter, no tombstones: skip gathers
                picked = []
                for signal, values in full.items():
                    if signal in fusion.LEXICAL_SIGNALS:
                        pool = (
                            np.flatnonzero(values > 0)
                            if everything
                            else allowed_rows[values[allowed_rows] > 0]
                        )
                    elif everything:
                        picked.append(_top_k_stable(values, per_signal))
                        continue
                    else:
                        pool = allowed_rows
                    picked.append(pool[_top_k_stable(values[pool], per_signal)])
                rows = np.unique(np.concatenate(picked))
                wanted = min(max(k, options["rerank_top_n"] if rerank else 0), allowed_rows.size)
                if rows.size < wanted:
                    # Few lexical matches (sparse mode): fill up with allowed rows in insertion order.
                    extra = np.setdiff1d(allowed_rows, rows, assume_unique=True)[: wanted - rows.size]
                    rows = np.union1d(rows, extra)
            signals = {s: full[s][rows].astype(np.float32) for s in weights if s in full}
            if approximate and "dense" in signals:
                signals["dense"] = scoring.dense_scores_stored(
                    encoded.dense, self._dense[rows], workspace=self._workspace
                )
            n_keep = options["rerank_top_n"] if rerank is not None else k
            if "colbert" in weights:
                pruned = None
                if (
                    options["candidates"] is None
                    and options["fusion"] == "weighted"
                    and len(weights) > 1
                    and self.store_colbert
                    and rows.size > 4 * n_keep
                ):
                    pruned = self._pruned_exhaustive(rows, signals, encoded, weights, n_keep)
                signals["colbert"] = pruned if pruned is not None else self._colbert_scores(rows, encoded)
            if len(weights) == 1:
                fused = next(iter(signals.values()))
            elif options["fusion"] == "confidence":
                coverage = {
                    s: self._signal_coverage(s, encoded) for s in signals if s in fusion.LEXICAL_SIGNALS
                }
                fused = fusion.fuse(signals, weights, method="confidence", coverage=coverage)
            else:
                fused = fusion.fuse(signals, weights, method=options["fusion"])
            order = _top_k_stable(fused, n_keep)
            top_rows = rows[order]
            hits = [
                SearchHit(
                    id=self._row_ids[r],
                    text=self._texts[r],
                    metadata=filters.copy_metadata(self._metadatas[r]),
                    score=float(fused[i]),
                    scores={s: float(v[i]) for s, v in signals.items()},
                )
                for i, r in zip(order, top_rows, strict=True)
            ]
            if rerank == "m3":
                rerank_scores = self._m3_rerank_scores(top_rows, encoded)
        if rerank is None or not hits:
            return hits
        if rerank != "m3":
            if query is None:
                msg = "a cross-encoder rerank needs the query text"
                raise ValueError(msg)
            rerank_scores = _checked_rerank_scores(
                rerank, rerank.score(query, [h.text for h in hits]), len(hits)
            )
        for hit, value in zip(hits, rerank_scores, strict=True):
            hit.score = float(value)
            hit.scores["rerank"] = float(value)
        order = _top_k_stable(rerank_scores, k)
        return [hits[i] for i in order]

    def _m3_rerank_scores(self, rows: np.ndarray, encoded: EncodedQuery) -> np.ndarray:
        """M3's own rerank: dense, M3 lexical (when available) and ColBERT on stored rows, fused."""
        weights = {"dense": 0.4, "colbert": 0.4}
        signals = {
            "dense": scoring.dense_scores_stored(encoded.dense, self._dense[rows], workspace=self._workspace),
            "colbert": self._colbert_scores(rows, encoded),
        }
        if self.lexical == "m3":
            weights["sparse"] = 0.2
            signals["sparse"] = _lexical_scores_inverted(self._lexical_inverted(), encoded.lexical_weights)[
                rows
            ].astype(np.float32)
        return fusion.fuse(signals, weights, method="weighted")

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to the folder ``path``, atomically: a crash at any moment keeps it loadable.

        ``path`` holds ``manifest.json`` (format version, model identity, dims, counts, dtypes, and the
        size and SHA-256 of every data file) and one data folder ``v-<id>/`` with ``arrays.npz`` (plain
        numeric arrays), ``documents.json`` (ids, texts, metadata) and, for word BM25, ``bm25_vocab.json``.
        Nothing is pickled. A save writes a new data folder and switches ``manifest.json`` to it with
        one atomic rename; loads running meanwhile see the old or the new index, never a mix. Saves to one
        folder are serialised across threads and processes. Deleted documents are compacted away first,
        so their texts and words are not written. See "Safety" in ``docs/engine.md``.

        Args:
            path: a new path, an empty folder, or a folder written by :meth:`save` (replaced).

        Raises:
            FileExistsError: ``path`` is something else (a folder with other files, a file, a symbolic
                link); nothing is touched then.
            TypeError: a metadata value is not JSON-serialisable (the message names the id).

        Example:
            .. code-block:: python

                index.save("my_index")
                index.save("my_index")  # replaces the index saved before
        """
        persistence.save_index(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: M3Model, **kwargs: Any) -> M3Index:
        """Load an index written by :meth:`save` (or by the previous release), checking it against ``model``.

        The folder is untrusted input: every file is read once, checked against the manifest's size and
        SHA-256, and every value search relies on is validated; nothing is unpickled or followed outside
        the folder.

        Args:
            path: the folder.
            model: the model the index was built with (same identity and dimensions).
            **kwargs: ``show_progress`` / ``batch_size`` for the loaded index.

        Raises:
            IndexNotFoundError: no index at ``path``.
            IndexLoadError: a missing, truncated, damaged or hostile file, an unknown format version, or
                a model whose identity or dimensions differ from the index's (message starting "model
                mismatch"); the message names the file.

        Example:
            .. code-block:: python

                index = M3Index.load("my_index", model=M3Model("BAAI/bge-m3"))
        """
        return persistence.load_index(cls, path, model, **kwargs)

    def _restore(
        self,
        *,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        dense: np.ndarray,
        lexical: sp.csr_matrix | None,
        colbert: np.ndarray | None,
        colbert_scale: np.ndarray | None,
        colbert_len: np.ndarray | None,
        bm25: BM25,
    ) -> None:
        """Install state read and validated by :func:`m3_integrations.persistence.load_index`."""
        n = len(ids)
        with self._lock:
            if self.store_colbert and colbert is not None and colbert_len is not None:
                self._colbert = colbert
                self._colbert_scale = colbert_scale if colbert_scale is not None else np.zeros(0, np.float32)
                self._colbert_used = len(colbert)
                self._colbert_len = colbert_len.astype(np.int64, copy=False)
                self._colbert_start = np.concatenate([[0], np.cumsum(colbert_len)[:-1]]).astype(np.int64)
            else:
                self._colbert_len = self._colbert_start = np.zeros(n, dtype=np.int64)
            self._row_ids, self._texts, self._metadatas = ids, texts, metadatas
            self._metadata_indexes = {}
            self._row_of = {doc_id: i for i, doc_id in enumerate(ids)}
            self._alive = np.ones(n, dtype=bool)
            self._dense = dense
            self._lex_chunks = [lexical] if lexical is not None else []
            self._lex_csr = self._lex_csc = None
            self._bm25 = bm25


def _checked_rerank_scores(reranker: Reranker, scores: Any, n_passages: int) -> np.ndarray:
    """The reranker's scores as float64, or a ``ValueError`` naming the reranker.

    A NaN, an infinity or a missing score would otherwise reorder or drop hits without a word.
    """
    name = type(reranker).__qualname__
    try:
        values = np.asarray(scores)
    except (TypeError, ValueError) as err:
        msg = f"reranker {name} returned {type(scores).__name__}, not an array of numbers: {err}"
        raise ValueError(msg) from err
    if values.dtype.kind not in "iuf":
        msg = f"reranker {name} returned {type(scores).__name__} of {values.dtype}, not an array of numbers"
        raise ValueError(msg)
    if values.shape != (n_passages,):
        msg = f"reranker {name} returned scores of shape {values.shape} for {n_passages} passages"
        raise ValueError(msg)
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        msg = f"reranker {name} returned {values[bad[0]]} for passage {int(bad[0])} (scores must be finite)"
        raise ValueError(msg)
    return values


def _check_weight(name: str, value: Any) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError) as err:
        msg = f"weight {name!r} must be a number, got {value!r}"
        raise ValueError(msg) from err
    if not math.isfinite(weight) or weight < 0:
        msg = f"weight {name!r} must be a finite non-negative number, got {value!r}"
        raise ValueError(msg)
    return weight


def _append_rows(buffer: np.ndarray, rows: np.ndarray, used: int) -> np.ndarray:
    """Write ``rows`` at ``buffer[used:]``, growing the buffer geometrically (amortised O(1) appends)."""
    need = used + len(rows)
    if need > len(buffer):
        grown = np.empty((max(need, int(len(buffer) * 1.5) + 16), *buffer.shape[1:]), dtype=buffer.dtype)
        grown[:used] = buffer[:used]
        buffer = grown
    buffer[used:need] = rows
    return buffer


def _quantize(flat: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """ColBERT rows as float16 (scale 1) or symmetric int8 with one scale per vector (max |x| → 127)."""
    if dtype == "float16":
        return flat.astype(np.float16), np.ones(len(flat), dtype=np.float32)
    scale = np.abs(flat).max(axis=1) / 127.0 if len(flat) else np.zeros(0, dtype=np.float32)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale


def _lexical_scores_inverted(inverted: sp.csc_matrix, query_weights: Mapping[int, float]) -> np.ndarray:
    """``Σ_t w_q,t · w_p,t`` for every row, through the posting lists of the query's tokens (float64)."""
    n_rows, n_cols = inverted.shape
    known = [(t, w) for t, w in query_weights.items() if 0 <= t < n_cols]
    if not known or n_rows == 0:
        return np.zeros(n_rows, dtype=np.float64)
    ids = np.fromiter((t for t, _ in known), dtype=np.int64, count=len(known))
    vals = np.fromiter((w for _, w in known), dtype=np.float64, count=len(known))
    return np.asarray(inverted[:, ids] @ vals, dtype=np.float64).ravel()


def _top_k_stable(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, best first; equal values keep index (insertion) order."""
    values = np.asarray(values)
    n = len(values)
    if k >= n:
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    threshold = values[part].min()
    selected = np.flatnonzero(values >= threshold)
    return selected[np.argsort(-values[selected], kind="stable")][:k]
