"""The write side of :class:`~m3_integrations.M3Index`: checking, encoding and storing documents.

Every document is checked (:func:`~m3_integrations.index.validation.validate_documents`) and every
representation converted before the index's lock is taken, so a refused add stores nothing. The first
add of an index with ``language="auto"`` fixes BM25's analyzer (:mod:`~m3_integrations.index.analysis`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import scipy.sparse as sp

from m3_integrations.index.analysis import BM25Analysis
from m3_integrations.index.search import IndexStores
from m3_integrations.index.storage import lexical_chunk
from m3_integrations.index.validation import validate_documents

if TYPE_CHECKING:
    from m3_integrations.model import M3Model, M3Output

__all__ = ["AddMethods"]


class AddMethods:
    """Adding documents to :class:`~m3_integrations.M3Index` (a mixin over its model, stores and lock)."""

    model: M3Model
    lexical: str
    store_colbert: bool
    batch_size: int | None
    show_progress: bool
    vocab_size: int
    _analysis: BM25Analysis
    _stores: IndexStores
    _lock: threading.RLock

    def _maybe_compact(self) -> None:  # pragma: no cover - M3Index's
        """Compact when deleted rows dominate (implemented by :class:`~m3_integrations.M3Index`)."""
        raise NotImplementedError

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
        self._settle_language(texts)
        output = self.model.encode_passages(
            texts,
            return_dense=True,
            return_sparse=self.lexical == "m3",
            return_colbert=self.store_colbert,
            batch_size=self.batch_size,
            show_progress=self.show_progress,
        )
        self._add_validated(output, texts, ids, metas, self.bm25_tokens(texts))
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
        self._settle_language(texts)
        if bm25_tokens is None:
            tokens: Any = self.bm25_tokens(texts)
        else:
            tokens = bm25_tokens if sp.issparse(bm25_tokens) else list(bm25_tokens)
        self._add_validated(output, texts, ids, metas, tokens)
        return ids

    def bm25_tokens(self, texts: Sequence[str]) -> list[list[Any]]:
        """The BM25 tokens this index makes of each text (documents and queries alike).

        Words with ``bm25_tokenizer="word"`` (after its stop words and stemmer), else the model's
        subword ids. :meth:`encode_queries` uses it for queries.

        Example:
            .. code-block:: python

                M3Index(model, bm25_tokenizer="word").bm25_tokens(["Red apples"])  # [["red", "apples"]]
        """
        return self._analysis.tokens(texts, self.model)

    def _validate_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any] | None] | None,
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        return validate_documents(texts, ids, metadatas)

    def _add_validated(
        self,
        output: M3Output,
        texts: list[str],
        ids: list[str],
        metas: list[dict[str, Any]],
        bm25_tokens: list[Any] | sp.spmatrix,
    ) -> None:
        stores = self._stores
        n_new = len(texts)
        # Every representation is checked and converted before the lock: a refused add stores nothing.
        dense = stores.dense.prepare(output.dense, n_new)
        lexical = None
        if stores.lexical_weights is not None:
            lexical = lexical_chunk(output.lexical_weights, n_new, self.vocab_size)
        colbert = stores.colbert.prepare(output.colbert_vecs, n_new) if stores.colbert is not None else None
        with self._lock:
            stores.documents.append(ids, texts, metas)
            stores.dense.append(dense)
            if lexical is not None and stores.lexical_weights is not None:
                stores.lexical_weights.append(lexical)
            if colbert is not None and stores.colbert is not None:
                stores.colbert.append(colbert)
            if sp.issparse(bm25_tokens):
                stores.bm25.add_matrix(bm25_tokens)
            else:
                stores.bm25.add(bm25_tokens)
            stores.set_alive()
            self._maybe_compact()

    def reserve(self, documents: int, colbert_vectors: int = 0) -> None:
        """Preallocate room for ``documents`` more rows and ``colbert_vectors`` more ColBERT vectors.

        Bulk loads that know their size avoid the copies of geometric growth (and its 1.5x peak).
        """
        with self._lock:
            self._stores.dense.reserve(documents)
            if self._stores.colbert is not None:
                self._stores.colbert.reserve(colbert_vectors)

    def _settle_language(self, texts: Sequence[str]) -> None:
        """With ``language="auto"``, detect the language on the first documents and fix the analyzer."""
        if not self._analysis.pending or not texts:
            return
        with self._lock:
            if self._analysis.settle(texts):
                assert len(self._stores.bm25) == 0
                self._stores.bm25 = self._analysis.new_bm25(self.vocab_size)
