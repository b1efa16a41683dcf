"""The query side of :class:`~m3_integrations.M3Index`: query encoding, options, search, candidate scores.

Every entry point builds its options with :meth:`QueryMethods.search_options` (one
:meth:`SearchOptions.build <m3_integrations.index.options.SearchOptions.build>` per call, before the
query is encoded) and hands them to the index's :class:`~m3_integrations.index.search.SearchEngine`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from m3_integrations._utils import validate_texts
from m3_integrations.index.options import (
    DEFAULT_CANDIDATES,
    FilterType,
    Fusion,
    IndexKind,
    Mode,
    SearchOptions,
    Weights,
)
from m3_integrations.index.search import CandidateScores, SearchEngine
from m3_integrations.index.types import EncodedQuery, SearchHit
from m3_integrations.rerank import Reranker

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["QueryMethods"]


class QueryMethods:
    """Search methods of :class:`~m3_integrations.M3Index` (a mixin over its model, kind and engine)."""

    model: M3Model
    kind: IndexKind
    store_colbert: bool
    batch_size: int | None
    _engine: SearchEngine
    _lock: threading.RLock

    def bm25_tokens(self, texts: Sequence[str]) -> list[list[Any]]:  # pragma: no cover - M3Index's
        """The BM25 tokens of each text (implemented by :class:`~m3_integrations.M3Index`)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ defaults and options
    @property
    def default_fusion(self) -> Fusion:
        """``"weighted"`` for a real BGE-M3 (the paper's setting), ``"confidence"`` without its heads."""
        return self.kind.default_fusion

    @property
    def default_weights(self) -> dict[str, float]:
        """Weights used when ``search`` gets none: 0.4/0.2/0.4 for BGE-M3, 0.3/0.4/0.3 without its heads."""
        return self.kind.default_weights

    def search_options(
        self,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Weights | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> SearchOptions:
        """The checked, resolved options of a search on this index (what every search method builds).

        Takes the arguments of :meth:`search` and raises what it raises for them; weights come back
        resolved per signal and divided by the largest, the dict filter parsed.

        Example:
            .. code-block:: python

                options = index.search_options(5, mode="dense+sparse", fusion="rrf")
                dict(options.weights)  # {"dense": 1.0, "sparse": 0.5} for BGE-M3
        """
        options = SearchOptions.build(
            self.kind,
            k,
            mode=mode,
            weights=weights,
            fusion=fusion,
            candidates=candidates,
            filter=filter,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )
        if "colbert" in options.weights and not self.store_colbert:
            logger.debug("ColBERT vectors are not stored; candidates are re-encoded at query time")
        return options

    def check_search_options(
        self,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Weights | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
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
        self.search_options(
            k,
            mode=mode,
            weights=weights,
            fusion=fusion,
            candidates=candidates,
            filter=filter,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )

    # ------------------------------------------------------------------ queries
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
        tokens = self.bm25_tokens(queries)
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
        mode: Mode | str = "hybrid",
        weights: Weights | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
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
        options = self.search_options(
            k,
            mode=mode,
            weights=weights,
            fusion=fusion,
            candidates=candidates,
            filter=filter,
            rerank=rerank,
            rerank_top_n=rerank_top_n,
        )
        (encoded,) = self.encode_queries([query], colbert=options.needs_colbert)
        return self._engine.search(query, encoded, options)

    def search_batch(self, queries: Sequence[str], k: int = 10, **kwargs: Any) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, encoded in one batch; same keyword arguments."""
        options = self._options_from(k, kwargs)
        queries = validate_texts(queries, what="queries")
        encoded = self.encode_queries(queries, colbert=options.needs_colbert)
        return [self._engine.search(q, e, options) for q, e in zip(queries, encoded, strict=True)]

    def search_encoded(
        self,
        encoded: EncodedQuery,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Weights | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filter: FilterType | None = None,
    ) -> list[SearchHit]:
        """The search engine alone, on precomputed query representations (no encoding, no rerank)."""
        options = self.search_options(
            k, mode=mode, weights=weights, fusion=fusion, candidates=candidates, filter=filter
        )
        return self._engine.search(None, encoded, options)

    def score_candidates(
        self, query: str | EncodedQuery, options: SearchOptions | None = None, **kwargs: Any
    ) -> CandidateScores:
        """A query's candidates and their per-signal scores before fusion (stages 1 and 2 of a search).

        The candidates are those :meth:`search` would fuse with these options; every one gets every
        signal of the mode, ColBERT included (no bound skips any). :meth:`CandidateScores.rank
        <m3_integrations.index.search.CandidateScores.rank>` then fuses and ranks them with these or
        other options that pick the same candidates (another fusion or weights; ``colbert``,
        ``dense+sparse`` and ``hybrid`` modes share their candidates), giving what :meth:`search`
        would return, without scoring again: how ``benchmarks/run_quality.py`` compares dozens of
        fusion settings per query.

        Args:
            query: the query text, or an :class:`EncodedQuery` (:meth:`encode_queries`).
            options: from :meth:`search_options`; or give :meth:`search`'s keyword arguments instead.
            **kwargs: :meth:`search`'s options (``k``, ``mode``, ``weights``...) when ``options`` is None.

        Returns:
            The candidates (ids in insertion order), ``signals`` by name, the lexical signals' query
            term ``coverage`` and the ``options``.

        Raises:
            TypeError: both ``options`` and keyword arguments, or options of another kind of index.
            ValueError: what :meth:`search` raises for the options or the query.

        Example:
            .. code-block:: python

                scored = index.score_candidates("capital of France", k=10, mode="hybrid")
                scored.ids, scored.signals["dense"], scored.signals["colbert"]
                for fusion in ("weighted", "rrf", "confidence"):
                    print(fusion, scored.rank(index.search_options(10, fusion=fusion))[:3])
        """
        if options is None:
            options = self._options_from(kwargs.pop("k", 10), kwargs)
        elif kwargs:
            msg = f"pass options or keyword arguments, not both (got {', '.join(sorted(kwargs))})"
            raise TypeError(msg)
        elif not isinstance(options, SearchOptions):
            msg = f"options must be SearchOptions (search_options()), got {type(options).__name__}"
            raise TypeError(msg)
        known = {"dense", "colbert", "bm25", self.kind.lexical_signal}
        if not set(options.weights) <= known:
            msg = f"these options were made for another kind of index (signals {sorted(options.weights)})"
            raise TypeError(msg)
        if isinstance(query, EncodedQuery):
            encoded = query
        else:
            (encoded,) = self.encode_queries([query], colbert=options.needs_colbert)
        return self._engine.score_candidates(encoded, options)

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
            return self._engine.coverage(self.kind.lexical_signal, encoded)

    def _options_from(self, k: int, kwargs: dict[str, Any]) -> SearchOptions:
        """:meth:`search_options` from :meth:`search`'s keyword arguments; others raise ``TypeError``."""
        options = self.search_options(
            k,
            mode=kwargs.pop("mode", "hybrid"),
            weights=kwargs.pop("weights", None),
            fusion=kwargs.pop("fusion", None),
            candidates=kwargs.pop("candidates", DEFAULT_CANDIDATES),
            filter=kwargs.pop("filter", None),
            rerank=kwargs.pop("rerank", None),
            rerank_top_n=kwargs.pop("rerank_top_n", None),
        )
        if kwargs:
            msg = f"unexpected keyword arguments: {', '.join(sorted(kwargs))}"
            raise TypeError(msg)
        return options
