"""Label-free calibration of an index's default fusion and weights on pseudo-queries from its own documents.

:meth:`M3Index.calibrate <m3_integrations.M3Index.calibrate>` runs :func:`calibrate_index`:

1. **Pseudo-queries** (:func:`make_pseudo_queries`): documents drawn with a seeded generator; from each,
   one sentence (:func:`m3_integrations._chunk_layout.sentence_spans`, the chunker's sentence breaks)
   is taken out and becomes the query. Its passage is the one relevant document, scored as the rest of
   the passage without that sentence (an inverse cloze task), so the query cannot simply find itself.
2. **Candidates and signals**: each pseudo-query is encoded as a search encodes it and
   :meth:`M3Index.score_candidates <m3_integrations.M3Index.score_candidates>` gives its candidates and
   their dense, lexical and ColBERT scores, the same for every configuration. The source passage's
   scores are then replaced by those of its remainder (encoded as a passage; BM25 under the index's
   corpus statistics, :meth:`~m3_integrations.bm25.BM25.score_documents`). The stored index is not
   changed.
3. **Choice**: every configuration of the grid (fusions × slot weights, :data:`CALIBRATION_FUSIONS` ×
   :data:`CALIBRATION_WEIGHTS`, plus the index's built-in default) ranks the candidates as a search
   would (:meth:`CandidateScores.rank <m3_integrations.index.search.CandidateScores.rank>`, the core's
   :func:`m3_integrations.fusion.fuse`), and is scored by nDCG@10 with the source passage as the one
   relevant document. The best mean wins only if it beats the built-in default's by more than
   ``min_gain``; otherwise the built-in default stays.

What it cannot see: the real queries. Pseudo-queries are sentences in the corpus's own language and
style, so a cross-lingual use (queries in another language than the documents) looks monolingual to
it, and keyword queries, questions and claims differ from a sentence of the passage. Measured with
``benchmarks/select_default.py`` (docs/evaluation.md), the cross-lingual pairs are where its choice
did worst: MiniLM on German queries over English passages lost .033 to the built-in default. Do not
calibrate an index that will be queried in another language than its documents'. Documents in
scripts whose sentences the chunker does not split (Bengali's danda, say) give fewer pseudo-queries.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from m3_integrations import scoring
from m3_integrations._chunk_layout import sentence_spans
from m3_integrations.index.options import DEFAULT_CANDIDATES, FUSION_METHODS, SLOTS, Fusion, IndexKind

if TYPE_CHECKING:
    from m3_integrations.index.index import M3Index
    from m3_integrations.index.search import CandidateScores

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_FUSIONS",
    "CALIBRATION_WEIGHTS",
    "MAX_PSEUDO_QUERIES",
    "MIN_DOCUMENTS",
    "MIN_PSEUDO_QUERIES",
    "Calibration",
    "PseudoQuery",
    "calibrate_index",
    "make_pseudo_queries",
]

# The grid: the fusions that put BM25 and cosines on one scale (weighted sums need M3's trained heads,
# whose built-in default is weighted and always a candidate), and the weight sets of
# benchmarks/select_default.py, so that the protocol can score every choice.
CALIBRATION_FUSIONS: tuple[Fusion, ...] = ("confidence", "agreement", "relative_score", "rrf")
CALIBRATION_WEIGHTS: tuple[tuple[float, float, float], ...] = (
    (0.4, 0.2, 0.4),
    (1.0, 1.0, 1.0),
    (0.3, 0.4, 0.3),
    (0.2, 0.2, 0.6),
    (0.4, 0.1, 0.5),
)
MAX_PSEUDO_QUERIES = 200
MIN_DOCUMENTS = 20
MIN_PSEUDO_QUERIES = 10
# A pseudo-query must be a sentence, not a heading or a number: at least this many characters.
MIN_SENTENCE_CHARS = 12
# Longer sentences are cut to this many characters (a query is short).
MAX_SENTENCE_CHARS = 400
# How many of a search's hits nDCG looks at.
CUTOFF = 10
# How many entries a saved calibration's table may hold (a hostile manifest cannot make a huge one).
MAX_TABLE = 1000


@dataclass(frozen=True)
class PseudoQuery:
    """One pseudo-query: a sentence taken out of a stored document, and what is left of the document."""

    doc_id: str
    query: str
    remainder: str


@dataclass(frozen=True)
class Calibration:
    """The fusion and slot weights :meth:`M3Index.calibrate <m3_integrations.M3Index.calibrate>` chose.

    Saved in the index's manifest (``"calibration"``) and used as the defaults of a search that gives
    no ``fusion`` / ``weights``.

    Attributes:
        fusion: the chosen fusion.
        weights: the chosen slot weights ``(dense, lexical, colbert)``.
        score: the chosen configuration's mean nDCG@10 on the pseudo-queries.
        default_score: the built-in default's on the same pseudo-queries.
        queries: how many pseudo-queries were scored (those whose source passage was a candidate).
        documents: how many documents the index held when calibrated.
        seed: the seed the pseudo-queries were drawn with.
        min_gain: how much the best had to beat the built-in default by to replace it.
        table: every configuration tried, as ``(fusion, (dense, lexical, colbert), mean nDCG@10)``.
    """

    fusion: Fusion
    weights: tuple[float, float, float]
    score: float
    default_score: float
    queries: int
    documents: int
    seed: int
    min_gain: float
    table: tuple[tuple[Fusion, tuple[float, float, float], float], ...] = ()

    @property
    def slot_weights(self) -> dict[str, float]:
        """The chosen weights by slot (``dense``, ``lexical``, ``colbert``)."""
        return dict(zip(SLOTS, self.weights, strict=True))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the manifest stores)."""
        return {
            "fusion": self.fusion,
            "weights": self.slot_weights,
            "score": self.score,
            "default_score": self.default_score,
            "queries": self.queries,
            "documents": self.documents,
            "seed": self.seed,
            "min_gain": self.min_gain,
            "table": [[fusion, list(weights), score] for fusion, weights, score in self.table],
        }

    @classmethod
    def from_json(cls, value: Any, *, label: str = "calibration") -> Calibration:
        """Check a dict written by :meth:`to_json` (untrusted: from a manifest) and rebuild the object.

        Raises:
            ValueError: anything but what :meth:`to_json` writes (the message starts with ``label``).
        """
        keys = {
            "fusion",
            "weights",
            "score",
            "default_score",
            "queries",
            "documents",
            "seed",
            "min_gain",
            "table",
        }
        if not isinstance(value, dict) or set(value) != keys:
            msg = f"{label}: expected an object with keys {sorted(keys)}, got {_short(value)}"
            raise ValueError(msg)
        table = value["table"]
        if not isinstance(table, list) or len(table) > MAX_TABLE:
            msg = f"{label}: table must be a list of at most {MAX_TABLE} entries, got {_short(table)}"
            raise ValueError(msg)
        rows = []
        for entry in table:
            if not isinstance(entry, list) or len(entry) != 3:
                msg = f"{label}: a table entry must be [fusion, [d, l, c], score], got {_short(entry)}"
                raise ValueError(msg)
            rows.append(
                (
                    _fusion(entry[0], label),
                    _weights(
                        dict(zip(SLOTS, entry[1], strict=False)) if _is_list3(entry[1]) else entry[1], label
                    ),
                    _share(entry[2], "table score", label),
                )
            )
        return cls(
            fusion=_fusion(value["fusion"], label),
            weights=_weights(value["weights"], label),
            score=_share(value["score"], "score", label),
            default_score=_share(value["default_score"], "default_score", label),
            queries=_count(value["queries"], "queries", label),
            documents=_count(value["documents"], "documents", label),
            seed=_count(value["seed"], "seed", label, signed=True),
            min_gain=_share(value["min_gain"], "min_gain", label),
            table=tuple(rows),
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_list3(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 3


def _fusion(value: Any, label: str) -> Fusion:
    if not isinstance(value, str) or value not in FUSION_METHODS:
        msg = f"{label}: fusion must be one of {', '.join(FUSION_METHODS)}, got {_short(value)}"
        raise ValueError(msg)
    return value  # type: ignore[return-value]  # checked against FUSION_METHODS


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _weights(value: Any, label: str) -> tuple[float, float, float]:
    if not isinstance(value, dict) or set(value) != set(SLOTS):
        msg = f"{label}: weights must be an object with keys {', '.join(SLOTS)}, got {_short(value)}"
        raise ValueError(msg)
    weights = tuple(_number(value[slot]) for slot in SLOTS)
    if any(w is None or w < 0 for w in weights) or not any(weights):
        msg = f"{label}: weights must be finite numbers >= 0, not all 0, got {_short(value)}"
        raise ValueError(msg)
    return weights  # type: ignore[return-value]  # three floats, checked above


def _share(value: Any, name: str, label: str) -> float:
    number = _number(value)
    if number is None or not 0.0 <= number <= 1.0:
        msg = f"{label}: {name} must be a number in [0, 1], got {_short(value)}"
        raise ValueError(msg)
    return number


def _count(value: Any, name: str, label: str, *, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and not signed):
        msg = f"{label}: {name} must be a{'n' if signed else ' non-negative'} integer, got {_short(value)}"
        raise ValueError(msg)
    return value


def make_pseudo_queries(
    ids: Sequence[str], texts: Sequence[str], n: int = MAX_PSEUDO_QUERIES, *, seed: int = 0
) -> list[PseudoQuery]:
    """Up to ``n`` pseudo-queries: documents drawn with ``seed``, one sentence taken out of each.

    A document qualifies when it has at least two sentences and one of them has at least
    :data:`MIN_SENTENCE_CHARS` characters; the sentence (cut to :data:`MAX_SENTENCE_CHARS`) is drawn
    among those. The remainder is the document without it. Deterministic for a given ``seed``.

    Example:
        >>> texts = ["Cats purr when fed. They sleep a lot.", "Short.", "Rust has no GC. It is fast."]
        >>> [(q.doc_id, q.query) for q in make_pseudo_queries(["a", "b", "c"], texts, seed=1)]
        [('c', 'Rust has no GC.'), ('a', 'Cats purr when fed.')]
    """
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    out: list[PseudoQuery] = []
    for i in order:
        if len(out) >= n:
            break
        text = texts[i]
        spans = sentence_spans(text)
        if len(spans) < 2:
            continue
        eligible = [(a, b) for a, b in spans if b - a >= MIN_SENTENCE_CHARS]
        if not eligible:
            continue
        start, end = eligible[rng.randrange(len(eligible))]
        remainder = (text[:start].rstrip() + " " + text[end:].lstrip()).strip()
        if not remainder:
            continue
        out.append(PseudoQuery(ids[i], text[start:end][:MAX_SENTENCE_CHARS], remainder))
    return out


def _grid(
    kind: IndexKind,
    fusions: Iterable[str] | None,
    weights: Iterable[Sequence[float]] | None,
) -> list[tuple[Fusion, tuple[float, float, float]]]:
    """The configurations to try: the built-in default first (it wins ties), then the grid's."""
    builtin = (kind.builtin_fusion, tuple(kind.builtin_slot_weights[s] for s in SLOTS))
    configs = [builtin]
    for fusion in CALIBRATION_FUSIONS if fusions is None else fusions:
        for triple in CALIBRATION_WEIGHTS if weights is None else weights:
            config = (
                _fusion(fusion, "calibrate"),
                _weights(dict(zip(SLOTS, triple, strict=False)) if len(triple) == 3 else None, "calibrate"),
            )
            if config not in configs:
                configs.append(config)
    return configs  # type: ignore[return-value]  # fusions and weights checked above


def _ndcg_at_cutoff(ranked_ids: Sequence[str], relevant: str) -> float:
    """nDCG@10 with one relevant document: ``1 / log2(rank + 1)`` when it is among the hits, else 0."""
    for rank, doc_id in enumerate(ranked_ids[:CUTOFF], start=1):
        if doc_id == relevant:
            return 1.0 / math.log2(rank + 1)
    return 0.0


def _with_remainder(
    index: M3Index, scored: CandidateScores, position: int, remainder: Mapping[str, Any], encoded: Any
) -> CandidateScores:
    """``scored`` with the source passage's signals replaced by its remainder's."""
    signals = {name: values.copy() for name, values in scored.signals.items()}
    for name, values in signals.items():
        if name == "dense":
            values[position] = scoring.dense_scores(encoded.dense, remainder["dense"][None])[0]
        elif name == "colbert":
            values[position] = scoring.colbert_scores(encoded.colbert_vecs, [remainder["colbert"]])[0]
        elif name == "bm25":
            values[position] = index._stores.bm25.score_documents(encoded.bm25_tokens, [remainder["bm25"]])[0]
        elif name == "sparse":
            values[position] = scoring.lexical_score(encoded.lexical_weights, remainder["sparse"])
    return dataclasses.replace(scored, signals=signals)


def calibrate_index(
    index: M3Index,
    *,
    max_queries: int = MAX_PSEUDO_QUERIES,
    seed: int = 0,
    fusions: Iterable[str] | None = None,
    weights: Iterable[Sequence[float]] | None = None,
    min_gain: float = 0.005,
    show_progress: bool = False,
) -> Calibration:
    """Choose ``index``'s default fusion and slot weights on pseudo-queries (see the module docstring).

    Reads the index under its lock; changes nothing (the caller installs the result).

    Raises:
        ValueError: fewer than :data:`MIN_DOCUMENTS` live documents, fewer than
            :data:`MIN_PSEUDO_QUERIES` usable pseudo-queries (documents of a single sentence), a grid
            with fewer than two configurations, or bad arguments.
    """
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < MIN_PSEUDO_QUERIES:
        msg = f"max_queries must be an integer >= {MIN_PSEUDO_QUERIES}, got {max_queries!r}"
        raise ValueError(msg)
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"seed must be an integer, got {seed!r}"
        raise ValueError(msg)
    if _number(min_gain) is None or not 0.0 <= min_gain <= 1.0:
        msg = f"min_gain must be a number in [0, 1], got {min_gain!r}"
        raise ValueError(msg)
    configs = _grid(index.kind, fusions, weights)
    if len(configs) < 2:
        msg = (
            "nothing to choose from: the grid holds only the index's built-in default "
            f"({configs[0][0]} {configs[0][1]}); give other fusions or weights"
        )
        raise ValueError(msg)
    with index._lock:
        ids = index.ids
        rows = index._stores.documents.rows_of(ids)
        texts = [index._stores.documents.texts[r] for r in rows]
    if len(ids) < MIN_DOCUMENTS:
        msg = f"calibration needs at least {MIN_DOCUMENTS} documents, the index has {len(ids)}"
        raise ValueError(msg)
    pseudo = make_pseudo_queries(ids, texts, max_queries, seed=seed)
    if len(pseudo) < MIN_PSEUDO_QUERIES:
        msg = (
            f"calibration needs at least {MIN_PSEUDO_QUERIES} documents of two sentences or more "
            f"(one is taken out as the query), found {len(pseudo)} among {len(ids)}"
        )
        raise ValueError(msg)
    lexical = index.kind.lexical_signal
    logger.info("calibrating on %d pseudo-queries from %d documents (seed %d)", len(pseudo), len(ids), seed)
    encoded = index.encode_queries([p.query for p in pseudo], colbert=True)
    remainders = [p.remainder for p in pseudo]
    passages = index.model.encode_passages(
        remainders,
        return_dense=True,
        return_sparse=lexical == "sparse",
        return_colbert=True,
        batch_size=index.batch_size,
        show_progress=show_progress,
    )
    bm25_tokens = index.bm25_tokens(remainders)
    options = [
        index.search_options(
            CUTOFF, mode="hybrid", fusion=fusion, weights=triple, candidates=DEFAULT_CANDIDATES
        )
        for fusion, triple in configs
    ]
    gains = np.zeros((len(configs), len(pseudo)), dtype=np.float64)
    used = np.zeros(len(pseudo), dtype=bool)
    steps: Iterable[int] = range(len(pseudo))
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="Calibrating", unit="query")
    for j in steps:
        scored = index.score_candidates(encoded[j], options[0])
        if pseudo[j].doc_id not in scored.ids:
            continue  # the first stage missed the passage: every configuration scores 0
        used[j] = True
        remainder = {
            "dense": passages.dense[j],
            "colbert": passages.colbert_vecs[j] if passages.colbert_vecs is not None else np.zeros((0, 1)),
            "bm25": bm25_tokens[j],
            "sparse": passages.lexical_weights[j] if passages.lexical_weights is not None else {},
        }
        scored = _with_remainder(index, scored, scored.ids.index(pseudo[j].doc_id), remainder, encoded[j])
        for c, option in enumerate(options):
            gains[c, j] = _ndcg_at_cutoff([doc_id for doc_id, _ in scored.rank(option)], pseudo[j].doc_id)
    n_used = int(used.sum())
    if n_used < MIN_PSEUDO_QUERIES:
        msg = (
            f"only {n_used} of {len(pseudo)} pseudo-queries found their passage among the candidates; "
            f"calibration needs {MIN_PSEUDO_QUERIES}"
        )
        raise ValueError(msg)
    means = gains[:, used].mean(axis=1)
    best = int(np.argmax(means))  # the first maximum: the built-in default wins ties
    chosen = best if means[best] - means[0] > min_gain else 0
    fusion, triple = configs[chosen]
    logger.info(
        "calibrated: %s %s, nDCG@10 %.3f on %d pseudo-queries (built-in default %s %s: %.3f)",
        fusion,
        triple,
        means[chosen],
        n_used,
        configs[0][0],
        configs[0][1],
        means[0],
    )
    return Calibration(
        fusion=fusion,
        weights=triple,
        score=float(means[chosen]),
        default_score=float(means[0]),
        queries=n_used,
        documents=len(ids),
        seed=seed,
        min_gain=float(min_gain),
        table=tuple((f, w, float(m)) for (f, w), m in zip(configs, means, strict=True)),
    )
