"""The query side of the vector-database stores: options, query encoding and the two-stage search.

:class:`RemoteSearchMethods` is a mixin of :class:`~m3_integrations.stores.remote.RemoteM3Store`
(whose module docstring describes the pipeline): the checked options, stage 1 (candidates), stage 2
(per-signal scores), fusion, the hits' payloads and the optional rerank, over the search primitives a
backend implements (declared here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from m3_integrations import fusion, scoring
from m3_integrations._utils import validate_texts
from m3_integrations.index.filters import FilterExpr
from m3_integrations.index.options import (
    DEFAULT_CANDIDATES,
    FilterType,
    Fusion,
    IndexKind,
    Mode,
    SearchOptions,
)
from m3_integrations.index.querying import encode_query_batch
from m3_integrations.index.search import fuse_signals
from m3_integrations.index.types import EncodedQuery, SearchHit
from m3_integrations.rerank import Reranker, checked_scores

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

__all__ = ["RemoteSearchMethods"]

_T = TypeVar("_T")


class RemoteSearchMethods:
    """Search methods of :class:`~m3_integrations.stores.remote.RemoteM3Store` (a mixin over primitives)."""

    engine: str
    model: M3Model
    kind: IndexKind
    collection_name: str
    last_timings: dict[str, float]
    _exists: bool

    # ------------------------------------------------------------------ implemented by RemoteM3Store
    @property
    def lexical_signal(self) -> str:  # pragma: no cover - RemoteM3Store's
        """The score key of the lexical signal (implemented by ``RemoteM3Store``)."""
        raise NotImplementedError

    def _call(
        self, operation: str, function: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> _T:  # pragma: no cover
        """A call to the server with retries (implemented by ``RemoteM3Store``)."""
        raise NotImplementedError

    def _check_exists(self) -> bool:  # pragma: no cover - RemoteM3Store's
        """Whether the collection exists (implemented by ``RemoteM3Store``)."""
        raise NotImplementedError

    def bm25_tokens(self, texts: Sequence[str]) -> list[list[str]]:  # pragma: no cover - RemoteM3Store's
        """The BM25 words of each text (implemented by ``RemoteM3Store``)."""
        raise NotImplementedError

    def coverage(self, signal: str, encoded: EncodedQuery) -> float:  # pragma: no cover - RemoteM3Store's
        """The share of the query's lexical terms stored (implemented by ``RemoteM3Store``)."""
        raise NotImplementedError

    def _fetch(self, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:  # pragma: no cover
        """Text and metadata of the stored ones among ``ids`` (a backend primitive)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ search primitives of a backend
    def _top(
        self, signals: Sequence[str], encoded: EncodedQuery, limit: int, native_filter: Any
    ) -> list[list[tuple[str, float, int]]]:  # pragma: no cover
        """Per signal, the top ``limit`` allowed documents as ``(id, score, seq)``."""
        raise NotImplementedError

    def _scores(
        self, signals: Sequence[str], encoded: EncodedQuery, ids: Sequence[str]
    ) -> dict[str, np.ndarray]:  # pragma: no cover
        """Per signal, the score of each of ``ids`` (0 where a lexical signal finds no shared term)."""
        raise NotImplementedError

    def _allowed(self, native_filter: Any, limit: int | None) -> list[tuple[str, int]]:  # pragma: no cover
        """The first ``limit`` (or all) allowed documents in insertion order, as ``(id, seq)``."""
        raise NotImplementedError

    def _count_allowed(self, native_filter: Any) -> int:  # pragma: no cover
        raise NotImplementedError

    def _native_filter(self, expr: FilterExpr) -> Any:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------ searching
    def search_options(
        self,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> SearchOptions:
        """The checked options of a search (:meth:`M3Index.search_options`), plus what this store refuses.

        Raises:
            ValueError: what ``M3Index`` raises; a callable filter (it cannot run inside a database),
                BM25 as a fourth signal, or a filter operator the database cannot express (the message
                names it).
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
        if options.filter is not None and callable(options.filter):
            msg = f"{self.engine} stores take dict filters only: a callable cannot run inside the database"
            raise ValueError(msg)
        if "bm25" in options.weights and self.lexical_signal != "bm25":
            msg = (
                f"{self.engine} stores hold one lexical signal (M3's lexical weights here); "
                "BM25 as a fourth signal needs M3Index"
            )
            raise ValueError(msg)
        if options.filter is not None:
            self._native_filter(options.filter)  # raises for what the database cannot express
        return options

    def check_search_options(self, k: int = 10, **kwargs: Any) -> None:
        """Raise what :meth:`search` would raise for these options, without searching."""
        self.search_options(k, **kwargs)

    def encode_query(self, query: str, *, colbert: bool = True) -> EncodedQuery:
        """The query's representations (dense, lexical weights or BM25 words, ColBERT vectors).

        Raises:
            ValueError: the query is empty or blank.
        """
        return self.encode_queries([query], colbert=colbert)[0]

    def encode_queries(self, queries: Sequence[str], *, colbert: bool = True) -> list[EncodedQuery]:
        """Encode queries in one batch (see :meth:`encode_query`).

        Raises:
            ValueError: a query is empty or blank.
        """
        return encode_query_batch(self.model, queries, self.bm25_tokens, colbert=colbert)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> list[SearchHit]:
        """Search the collection, with the options and results of :meth:`M3Index.search`.

        ``candidates`` is the size of each prefetch (dense and lexical) in the database; ``None``
        scores every allowed document (fine for small collections and recall studies only). ``filter``
        takes the dict syntax; the operators a database cannot express raise ``ValueError`` (see
        ``docs/backends.md``).

        Returns:
            Up to ``k`` hits, best first, with ``scores`` per signal; ties broken by insertion order.

        Raises:
            ValueError: as ``M3Index.search``, plus what :meth:`search_options` refuses.
            StoreConnectionError, StoreRequestError: the server failed or refused a request.
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
        encoded = self.encode_query(query, colbert=options.needs_colbert)
        return self.search_encoded(encoded, options, query=query)

    def search_batch(self, queries: Sequence[str], k: int = 10, **kwargs: Any) -> list[list[SearchHit]]:
        """:meth:`search` for many queries, encoded in one batch; the same keyword arguments."""
        options = self.search_options(k, **kwargs)
        queries = validate_texts(queries, what="queries")
        encoded = self.encode_queries(queries, colbert=options.needs_colbert)
        return [self.search_encoded(e, options, query=q) for q, e in zip(queries, encoded, strict=True)]

    def search_encoded(
        self, encoded: EncodedQuery, options: SearchOptions, *, query: str | None = None
    ) -> list[SearchHit]:
        """The two stages, fusion and rerank for an encoded query (``query`` only for a cross-encoder)."""
        if not self._exists and not self._check_exists():
            return []
        timings: dict[str, float] = {}
        started = time.perf_counter()
        native = self._native_filter(options.filter) if options.filter is not None else None
        order = self._candidates(encoded, options, native)
        timings["prefetch"] = time.perf_counter() - started
        if not order:
            self.last_timings = timings
            return []
        started = time.perf_counter()
        signals = self._call("score candidates", self._scores, tuple(options.weights), encoded, order)
        coverage = {}
        if options.fusion == "confidence" and len(options.weights) > 1:
            coverage = {s: self.coverage(s, encoded) for s in signals if s in fusion.LEXICAL_SIGNALS}
        timings["scores"] = time.perf_counter() - started
        started = time.perf_counter()
        fused = fuse_signals(signals, options, coverage)
        top = scoring.top_k_stable(fused, options.n_keep)
        timings["fusion"] = time.perf_counter() - started
        started = time.perf_counter()
        top_ids = [order[i] for i in top]
        stored = self._call("fetch hits", self._fetch, top_ids)
        hits = [
            SearchHit(
                id=order[i],
                text=stored[order[i]][0],
                metadata=stored[order[i]][1],
                score=float(fused[i]),
                scores={s: float(v[i]) for s, v in signals.items()},
            )
            for i in top
            if order[i] in stored  # deleted between the stages
        ]
        timings["fetch"] = time.perf_counter() - started
        self.last_timings = timings
        if options.rerank is None or not hits:
            return hits
        if options.rerank == "m3":
            rerank_scores = self._m3_rerank_scores([h.id for h in hits], encoded)
        else:
            if query is None:
                msg = "a cross-encoder rerank needs the query text"
                raise ValueError(msg)
            rerank_scores = checked_scores(
                options.rerank, options.rerank.score(query, [h.text for h in hits]), len(hits)
            )
        for hit, value in zip(hits, rerank_scores, strict=True):
            hit.score = float(value)
            hit.scores["rerank"] = float(value)
        return [hits[i] for i in scoring.top_k_stable(rerank_scores, options.k)]

    def _candidates(self, encoded: EncodedQuery, options: SearchOptions, native: Any) -> list[str]:
        """Stage 1: the candidate ids in insertion order (see the module docstring)."""
        if options.candidates is None:
            allowed = self._call("list documents", self._allowed, native, None)
            return [doc_id for doc_id, _ in allowed]
        first = options.first_stage(self.lexical_signal)
        _, per_signal, floor, _ = options.candidate_plan(self.lexical_signal)
        lists = self._call("prefetch", self._top, first, encoded, per_signal, native)
        union: dict[str, int] = {}
        for signal, results in zip(first, lists, strict=True):
            for doc_id, score, seq in results:
                if signal in fusion.LEXICAL_SIGNALS and score <= 0:
                    continue
                union[doc_id] = seq
        if len(union) < floor:
            wanted = min(floor, self._call("count", self._count_allowed, native))
            if len(union) < wanted:
                # Few lexical matches (sparse mode): fill up with allowed documents in insertion order.
                for doc_id, seq in self._call("list documents", self._allowed, native, wanted + len(union)):
                    if len(union) >= wanted:
                        break
                    union.setdefault(doc_id, seq)
        return sorted(union, key=union.__getitem__)

    def _m3_rerank_scores(self, ids: list[str], encoded: EncodedQuery) -> np.ndarray:
        """M3's own rerank on the stored vectors: dense, M3 lexical and ColBERT with the paper's weights."""
        w_dense, w_sparse, w_colbert = fusion.PAPER_WEIGHTS
        weights = {"dense": w_dense, "colbert": w_colbert}
        if self.lexical_signal == "sparse":
            weights["sparse"] = w_sparse
        signals = self._call("score candidates", self._scores, tuple(weights), encoded, ids)
        return fusion.fuse(signals, weights, method="weighted")
