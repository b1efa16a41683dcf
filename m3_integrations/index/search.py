"""Search over an index's stores: stage 1 candidates, stage 2 per-signal scores, fusion, rerank.

1. **Candidates**: the cheap signals (dense, lexical, BM25) score every row the filter allows; each
   gives its top ``candidates`` rows (lexical signals: only rows with a nonzero score), and the union is
   the candidate set, filled up with allowed rows in insertion order when the lexical signals find
   fewer than needed. ``candidates=None`` takes every allowed row.
2. **Scores**: every candidate gets every signal of the search; ColBERT MaxSim is computed here only.
   An exhaustive ``weighted`` search skips ColBERT where an exact bound shows a row cannot reach the
   top (:meth:`SearchEngine._pruned_colbert`).
3. **Fusion** (:func:`fuse_signals`, over :mod:`m3_integrations.fusion`) and the stable top-k; then an
   optional rerank (M3's own, on the stored representations, or a cross-encoder outside the lock).

:meth:`SearchEngine.score_candidates` stops after stage 2 and returns a :class:`CandidateScores`, which
:meth:`CandidateScores.rank` fuses and ranks with any options that pick the same candidates — exactly as
a search with those options would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from m3_integrations import fusion, scoring
from m3_integrations.bm25 import BM25
from m3_integrations.index.ann import DenseANN
from m3_integrations.index.compact_store import CompactColbertStore
from m3_integrations.index.filter_index import evaluate
from m3_integrations.index.metadata import copy_metadata
from m3_integrations.index.options import ParsedFilter, SearchOptions
from m3_integrations.index.sparse_store import SparseStore
from m3_integrations.index.storage import ColbertStore, DenseStore, DocumentTable
from m3_integrations.index.types import EncodedQuery, SearchHit
from m3_integrations.rerank import checked_scores

__all__ = ["CandidateScores", "IndexStores", "SearchEngine", "fuse_signals"]


@dataclass
class IndexStores:
    """The stores of one index (see :mod:`m3_integrations.index.storage`) and its scoring workspace.

    ``lexical_weights`` is ``None`` unless the index uses M3's lexical weights; ``colbert`` is ``None``
    when ColBERT vectors are not stored. ``dense_ann`` picks dense candidates approximately on large
    indexes (:mod:`m3_integrations.index.ann`); ``None``: always the exact scan.
    """

    documents: DocumentTable
    dense: DenseStore
    lexical_weights: SparseStore | None
    colbert: ColbertStore | CompactColbertStore | None
    bm25: BM25
    lexical_signal: str
    workspace: scoring.StagingBuffer
    dense_ann: DenseANN | None = None

    def set_alive(self) -> None:
        """Tell the lexical stores which rows are alive (after an add or a delete)."""
        alive = self.documents.alive
        if self.lexical_weights is not None:
            self.lexical_weights.set_alive(alive)
        self.bm25.set_alive(alive)

    def keep_rows(self, rows: np.ndarray) -> None:
        """Compaction: keep only ``rows`` in every store."""
        self.documents.keep_rows(rows)
        self.dense.keep_rows(rows)
        if self.lexical_weights is not None:
            self.lexical_weights.keep_rows(rows)
        if self.colbert is not None:
            self.colbert.keep_rows(rows)
        self.bm25.keep_rows(rows)
        if self.dense_ann is not None:
            self.dense_ann.reset()  # its ids were the old row numbers
        self.set_alive()

    def epochs(self) -> tuple[int, ...]:
        """The stores' epochs: unchanged as long as no stored row was rewritten (appends and deletes aside).

        A compaction, a retrained ColBERT codec or a renumbered vocabulary changes them; an incremental
        save (:mod:`m3_integrations.index.persistence`) relies on them to add a segment only to rows that
        are still the ones it wrote.
        """
        return (
            self.documents.epoch,
            self.dense.epoch,
            self.lexical_weights.epoch if self.lexical_weights is not None else 0,
            self.colbert.epoch if self.colbert is not None else 0,
            self.bm25.store.epoch,
        )

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held per representation (arrays only; texts and metadata not counted)."""
        return {
            "dense": self.dense.memory_bytes(),
            "sparse": self.lexical_weights.memory_bytes() if self.lexical_weights is not None else 0,
            "colbert": self.colbert.memory_bytes() if self.colbert is not None else 0,
            "bm25": self.bm25.store.memory_bytes(),
            "ann": self.dense_ann.memory_bytes() if self.dense_ann is not None else 0,
            "colbert_mapped": self.colbert.mapped_bytes() if self.colbert is not None else 0,
        }

    def hit(self, row: int, score: float, scores: dict[str, float] | None = None) -> SearchHit:
        """The document of ``row`` as a hit (a copy of its metadata)."""
        documents = self.documents
        return SearchHit(
            id=documents.ids[row],
            text=documents.texts[row],
            metadata=copy_metadata(documents.metadatas[row]),
            score=score,
            scores=scores or {},
        )


@dataclass(frozen=True)
class CandidateScores:
    """A query's candidates and every per-signal score of them, before fusion.

    Made by :meth:`M3Index.score_candidates <m3_integrations.M3Index.score_candidates>`. The candidates
    are in insertion order (a tie in a ranking keeps that order, as in a search).

    Attributes:
        ids: the candidates' document ids.
        positions: their rows in the index when scored (insertion order; for reference only).
        signals: signal name (``dense``, ``sparse``, ``colbert``, ``bm25``) → ``(n,)`` float32 scores.
        coverage: lexical signal name → the query's term coverage (what ``confidence`` fusion uses).
        options: the options the candidates were picked for.
        lexical_signal: which signal fills the index's lexical slot (``sparse`` or ``bm25``).
    """

    ids: tuple[str, ...]
    positions: np.ndarray
    signals: Mapping[str, np.ndarray]
    coverage: Mapping[str, float]
    options: SearchOptions
    lexical_signal: str

    def __len__(self) -> int:
        return len(self.ids)

    def fuse(self, options: SearchOptions | None = None) -> np.ndarray:
        """The fused score of every candidate under ``options`` (default: the options they were made for).

        Raises:
            ValueError: ``options`` would pick other candidates (another first stage, ``candidates``,
                ``k``/``rerank_top_n`` floor or filter), need a signal that was not computed, or rerank.
        """
        options = self.options if options is None else options
        plan, own = (
            options.candidate_plan(self.lexical_signal),
            self.options.candidate_plan(self.lexical_signal),
        )
        if plan != own:
            msg = (
                "these options pick other candidates than the ones scored (first stage, candidates, "
                f"k / rerank_top_n or filter differ: {plan[:3]} vs {own[:3]}); score them again"
            )
            raise ValueError(msg)
        missing = [s for s in options.signals if s not in self.signals]
        if missing:
            msg = (
                f"the candidates were scored without {', '.join(missing)}; score them with a mode that has it"
            )
            raise ValueError(msg)
        if options.rerank is not None:
            msg = "CandidateScores ranks fused scores only; rerank through M3Index.search"
            raise ValueError(msg)
        return fuse_signals({s: self.signals[s] for s in options.signals}, options, self.coverage)

    def rank(self, options: SearchOptions | None = None) -> list[tuple[str, float]]:
        """The top ``options.k`` candidates as ``(id, fused score)``, best first.

        What a search with ``options`` returns (ids and scores), without scoring anything again.

        Raises:
            ValueError: as :meth:`fuse`.
        """
        options = self.options if options is None else options
        fused = self.fuse(options)
        order = scoring.top_k_stable(fused, options.k)
        return [(self.ids[i], float(fused[i])) for i in order]


def fuse_signals(
    signals: Mapping[str, np.ndarray], options: SearchOptions, coverage: Mapping[str, float]
) -> np.ndarray:
    """The fused score per candidate: the signal itself in a one-signal search, else ``options.fusion``.

    ``coverage`` holds the lexical signals' query-term coverage; ``confidence`` fusion scales their
    weights by it (see :func:`m3_integrations.fusion.confidence_fusion`).
    """
    if len(options.weights) == 1:
        return next(iter(signals.values()))
    if options.fusion in ("confidence", "agreement"):
        shares = {s: coverage[s] for s in signals if s in fusion.LEXICAL_SIGNALS}
        return fusion.fuse(signals, options.weights, method=options.fusion, coverage=shares)
    return fusion.fuse(signals, options.weights, method=options.fusion)


class SearchEngine:
    """The search over one index's stores.

    Every method runs under the index's lock, except a cross-encoder rerank.

    Args:
        stores: the index's stores (kept by reference: the index changes them in place).
        lock: the index's lock.
        encode_colbert: ColBERT vectors of passages from their texts, for an index that stores none.
    """

    def __init__(
        self,
        stores: IndexStores,
        lock: threading.RLock,
        encode_colbert: Callable[[list[str]], Sequence[np.ndarray]],
    ) -> None:
        self.stores = stores
        self._lock = lock
        self._encode_colbert = encode_colbert

    # ------------------------------------------------------------------ public
    def search(self, query: str | None, encoded: EncodedQuery, options: SearchOptions) -> list[SearchHit]:
        """The hits of one encoded query (``query``, the text, only for a cross-encoder rerank)."""
        rerank = options.rerank
        with self._lock:
            stage = self._candidates(encoded, options)
            if stage is None:
                return []
            rows, signals = stage
            if "colbert" in options.weights:
                pruned = None
                if (
                    options.candidates is None
                    and options.fusion == "weighted"
                    and len(options.weights) > 1
                    and self.stores.colbert is not None
                    and rows.size > 4 * options.n_keep
                ):
                    pruned = self._pruned_colbert(rows, signals, encoded, options)
                signals["colbert"] = pruned if pruned is not None else self._colbert_scores(rows, encoded)
            fused = fuse_signals(signals, options, self._coverages(signals, encoded, options))
            order = scoring.top_k_stable(fused, options.n_keep)
            top_rows = rows[order]
            hits = [
                self.stores.hit(int(r), float(fused[i]), {s: float(v[i]) for s, v in signals.items()})
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
            rerank_scores = checked_scores(rerank, rerank.score(query, [h.text for h in hits]), len(hits))
        for hit, value in zip(hits, rerank_scores, strict=True):
            hit.score = float(value)
            hit.scores["rerank"] = float(value)
        order = scoring.top_k_stable(rerank_scores, options.k)
        return [hits[i] for i in order]

    def score_candidates(self, encoded: EncodedQuery, options: SearchOptions) -> CandidateScores:
        """Stages 1 and 2 of :meth:`search`: the candidates and all their signals, ColBERT for every one."""
        with self._lock:
            stage = self._candidates(encoded, options)
            if stage is None:
                rows, signals = (
                    np.zeros(0, dtype=np.int64),
                    {s: np.zeros(0, np.float32) for s in options.weights},
                )
            else:
                rows, signals = stage
                if "colbert" in options.weights:
                    signals["colbert"] = self._colbert_scores(rows, encoded)
            lexical = [s for s in signals if s in fusion.LEXICAL_SIGNALS]
            return CandidateScores(
                ids=tuple(self.stores.documents.ids[r] for r in rows),
                positions=rows,
                signals=signals,
                coverage={s: self.coverage(s, encoded) for s in lexical},
                options=options,
                lexical_signal=self.stores.lexical_signal,
            )

    def coverage(self, signal: str, encoded: EncodedQuery) -> float:
        """Query-term coverage of one lexical signal: BM25 tokens for ``bm25``, M3 token ids for ``sparse``.

        BM25 can be a fourth signal beside M3's own lexical weights, with its own tokens.
        """
        if signal == "bm25":
            return self.stores.bm25.coverage(encoded.bm25_tokens)
        terms = [t for t, w in encoded.lexical_weights.items() if w > 0]
        store = self.stores.lexical_weights
        if store is None:
            return 0.0
        return store.coverage(np.asarray(terms, dtype=np.int64), len(terms))

    # ------------------------------------------------------------------ stage 1
    def _allowed(self, filter_: ParsedFilter) -> np.ndarray:
        documents = self.stores.documents
        alive = documents.alive
        if filter_ is None:
            return alive
        if not callable(filter_):
            return alive & evaluate(filter_, documents.metadatas, documents.key_indexes)
        allowed = np.zeros_like(alive)
        for row in np.flatnonzero(alive):
            allowed[row] = bool(filter_(copy_metadata(documents.metadatas[row])))
        return allowed

    def _full_scores(self, signal: str, encoded: EncodedQuery, *, exact: bool = True) -> np.ndarray:
        """A cheap signal's score for every row (dead rows too; the caller masks them).

        ``exact=False`` lets a float16 dense store use the faster float16 kernel (candidate picking).
        """
        stores = self.stores
        if signal == "dense":
            return stores.dense.scores(encoded.dense, exact=exact, workspace=stores.workspace)
        if signal == "sparse" and stores.lexical_weights is not None:
            return stores.lexical_weights.scores(encoded.lexical_weights)
        if signal == "bm25":
            return stores.bm25.get_scores(encoded.bm25_tokens)
        msg = f"internal error: {signal!r} is not a first-stage signal of this index"
        raise AssertionError(msg)

    def _candidates(
        self, encoded: EncodedQuery, options: SearchOptions
    ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """The candidate rows and the cheap signals' float32 scores over them; None if no row is allowed."""
        allowed = self._allowed(options.filter)
        allowed_rows = np.flatnonzero(allowed)
        if allowed_rows.size == 0:
            return None
        weights = options.weights
        stores = self.stores
        first_stage = options.first_stage(stores.lexical_signal)
        _, per_signal, floor, _ = options.candidate_plan(stores.lexical_signal)
        everything = allowed_rows.size == len(allowed)  # no filter, no tombstones: skip gathers
        # Large indexes may pick dense candidates approximately (ann.py); their scores are rescored.
        ann_rows = None
        if per_signal is not None and "dense" in first_stage:
            ann_rows = self._ann_candidates(
                encoded, per_signal, None if everything else allowed, allowed_rows.size
            )
        # Candidates may be picked with float16 dense scores; the dense signal is then rescored.
        approximate = options.candidates is not None and (
            stores.dense.dtype == np.float16 or ann_rows is not None
        )
        full = {
            s: self._full_scores(s, encoded, exact=not approximate)
            for s in first_stage
            if not (s == "dense" and ann_rows is not None)
        }
        if per_signal is None:
            rows = allowed_rows
        else:
            picked = [] if ann_rows is None else [ann_rows]
            for signal, values in full.items():
                if signal in fusion.LEXICAL_SIGNALS:
                    pool = (
                        np.flatnonzero(values > 0) if everything else allowed_rows[values[allowed_rows] > 0]
                    )
                elif everything:
                    picked.append(scoring.top_k_stable(values, per_signal))
                    continue
                else:
                    pool = allowed_rows
                picked.append(pool[scoring.top_k_stable(values[pool], per_signal)])
            rows = np.unique(np.concatenate(picked))
            wanted = min(floor, allowed_rows.size)
            if rows.size < wanted:
                # Few lexical matches (sparse mode): fill up with allowed rows in insertion order.
                extra = np.setdiff1d(allowed_rows, rows, assume_unique=True)[: wanted - rows.size]
                rows = np.union1d(rows, extra)
        signals = {
            s: stores.dense.scores(encoded.dense, rows, workspace=stores.workspace)
            if s == "dense" and approximate
            else full[s][rows].astype(np.float32)
            for s in weights
            if s in first_stage
        }
        return rows, signals

    def _ann_candidates(
        self, encoded: EncodedQuery, per_signal: int, allowed: np.ndarray | None, n_allowed: int
    ) -> np.ndarray | None:
        """The approximate dense stage's top ``per_signal`` allowed rows; None: scan exactly instead.

        None when the index does not use it for this many rows, or when it found fewer rows than wanted
        (a filter that its lists could not fill): the exact scan over the allowed rows then decides.
        """
        ann = self.stores.dense_ann
        if ann is None or not ann.wanted(n_allowed):
            return None
        return ann.candidates(self.stores.dense, encoded.dense, per_signal, allowed, n_allowed)

    def _coverages(
        self, signals: Mapping[str, np.ndarray], encoded: EncodedQuery, options: SearchOptions
    ) -> dict[str, float]:
        if options.fusion not in ("confidence", "agreement") or len(options.weights) == 1:
            return {}
        return {s: self.coverage(s, encoded) for s in signals if s in fusion.LEXICAL_SIGNALS}

    # ------------------------------------------------------------------ stage 2
    def _colbert_scores(self, rows: np.ndarray, encoded: EncodedQuery) -> np.ndarray:
        query = encoded.colbert_vecs
        if query is None:
            msg = "the query has no ColBERT vectors (encode it with colbert=True)"
            raise ValueError(msg)
        store = self.stores.colbert
        if store is None:
            texts = [self.stores.documents.texts[r] for r in rows]
            return scoring.colbert_scores(query, self._encode_colbert(texts))
        return store.scores(query, rows, workspace=self.stores.workspace)

    def _pruned_colbert(
        self, rows: np.ndarray, signals: dict[str, np.ndarray], encoded: EncodedQuery, options: SearchOptions
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
        store = self.stores.colbert
        if query is None or len(query) == 0 or store is None:
            return None
        weights, n_keep = options.weights, options.n_keep
        query_norm = float(np.linalg.norm(np.asarray(query, dtype=np.float32), axis=1).max())
        # A relative margin covers float32 rounding in the norms and in the MaxSim products.
        bound = query_norm * store.max_norm() * (1 + 1e-4)
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

    def _m3_rerank_scores(self, rows: np.ndarray, encoded: EncodedQuery) -> np.ndarray:
        """M3's own rerank: dense, M3 lexical (if stored) and ColBERT on stored rows, the paper's weights."""
        w_dense, w_sparse, w_colbert = fusion.PAPER_WEIGHTS
        stores = self.stores
        weights = {"dense": w_dense, "colbert": w_colbert}
        signals = {
            "dense": stores.dense.scores(encoded.dense, rows, workspace=stores.workspace),
            "colbert": self._colbert_scores(rows, encoded),
        }
        if stores.lexical_weights is not None:
            weights["sparse"] = w_sparse
            signals["sparse"] = stores.lexical_weights.scores(encoded.lexical_weights)[rows].astype(
                np.float32
            )
        return fusion.fuse(signals, weights, method="weighted")
