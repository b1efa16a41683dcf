"""Search options: the modes, fusions and weights a search takes, checked once into a :class:`SearchOptions`.

Everything that takes search options from a user — :meth:`M3Index.search <m3_integrations.M3Index.search>`
and its siblings, both framework retrievers, the command line and the evaluation code — takes its
lists, ``Literal`` types, defaults and checks from here. :meth:`SearchOptions.build` is the one
constructor: it checks every option, fills in the index's defaults, resolves weights to per-signal
weights and parses a dict filter, once per call, before any query is encoded.

Names (the table in ``docs/engine.md`` maps them): a mode or a weights tuple names **slots** —
``dense``, ``lexical`` and ``colbert`` — and an index fills the lexical slot with one **signal**: BGE-M3's
learned lexical weights (score key ``"sparse"``) or BM25 (``"bm25"``). The weight key ``"sparse"`` and
the mode ``"sparse"`` mean the lexical slot whichever signal fills it (their public spelling);
``"bm25"`` as a weight key adds BM25 as a fourth signal beside M3's own lexical weights.

Example:
    >>> kind = IndexKind(lexical_signal="sparse", trained_heads=True)
    >>> options = SearchOptions.build(kind, 5, mode="dense+sparse", weights={"sparse": 0.4})
    >>> options.fusion, dict(options.weights)
    ('weighted', {'dense': 1.0, 'sparse': 1.0})
    >>> SearchOptions.build(kind, 5, fusion="max")
    Traceback (most recent call last):
    ...
    ValueError: unknown fusion 'max'; expected one of weighted, rrf, relative_score, confidence, agreement
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, get_args

import numpy as np

from m3_integrations.fusion import FUSION_METHODS, PAPER_WEIGHTS
from m3_integrations.index import filters
from m3_integrations.rerank import Reranker

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FUSION",
    "DEFAULT_WEIGHTS",
    "FUSION_METHODS",
    "MODES",
    "NO_HEADS_FUSION",
    "NO_HEADS_WEIGHTS",
    "PAPER_WEIGHTS",
    "SEARCH_OPTION_NAMES",
    "SIGNALS",
    "SLOTS",
    "WEIGHT_KEYS",
    "FilterType",
    "Fusion",
    "IndexKind",
    "LexicalSignal",
    "Mode",
    "ParsedFilter",
    "SearchOptions",
    "Weights",
    "check_weights",
    "resolve_weights",
]

Mode: TypeAlias = Literal["hybrid", "dense+sparse", "dense", "sparse", "colbert"]
Fusion: TypeAlias = Literal["weighted", "rrf", "relative_score", "confidence", "agreement"]
LexicalSignal: TypeAlias = Literal["sparse", "bm25"]

# The slots of a mode or of a weights tuple; an index fills "lexical" with its lexical signal.
SLOTS = ("dense", "lexical", "colbert")
MODES: dict[str, tuple[str, ...]] = {
    "dense": ("dense",),
    "sparse": ("lexical",),
    "colbert": ("colbert",),
    "hybrid": ("dense", "lexical", "colbert"),
    "dense+sparse": ("dense", "lexical"),
}
# Score keys of hits (and keys of resolved weights): "sparse" is M3's lexical weights, "bm25" is BM25.
SIGNALS = ("dense", "sparse", "colbert", "bm25")
# What a user may write as weight keys, in the order of a weights tuple: "sparse" is the lexical slot.
WEIGHT_KEYS = ("dense", "sparse", "colbert", "bm25")
DEFAULT_CANDIDATES = 100

# The paper's settings for a real BGE-M3 (trained sparse and ColBERT heads).
DEFAULT_WEIGHTS: dict[str, float] = dict(zip(SLOTS, PAPER_WEIGHTS, strict=True))
DEFAULT_FUSION: Fusion = "weighted"
# Encoders without M3's heads (BM25 over words as the lexical signal, identity ColBERT): chosen by the
# rule in benchmarks/REPORT.md over two encoders and 16 encoder x collection pairs. Min-max scaling puts
# compressed cosines and unbounded BM25 on one scale (weighted sums let BM25 decide the order and
# collapse on cross-lingual queries); confidence then lets each query's score shapes move the weights,
# so a signal that is noise for the query (an encoder that does not read its language, a document cut
# at the window) gives way, and the lexical weight shrinks with the query's term coverage.
NO_HEADS_WEIGHTS: dict[str, float] = {"dense": 0.3, "lexical": 0.4, "colbert": 0.3}
NO_HEADS_FUSION: Fusion = "confidence"

# Weights as a user writes them: a tuple (dense, sparse, colbert[, bm25]) or a dict by WEIGHT_KEYS.
Weights: TypeAlias = Sequence[float] | Mapping[str, float]
# A dict in the filter language of m3_integrations.index.filters, or a predicate on a document's metadata.
FilterType: TypeAlias = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]
ParsedFilter: TypeAlias = filters.FilterExpr | Callable[[Mapping[str, Any]], bool] | None

assert set(MODES) == set(get_args(Mode))
assert get_args(Fusion) == FUSION_METHODS


@dataclass(frozen=True)
class IndexKind:
    """What the defaults and the meaning of the weights depend on, for one index.

    Which signal fills the lexical slot, whether the model has BGE-M3's trained heads, and the fusion
    and slot weights :meth:`M3Index.calibrate <m3_integrations.M3Index.calibrate>` chose for the index
    (``None``: the kind's built-in defaults).

    Example:
        >>> kind = IndexKind(lexical_signal="bm25", trained_heads=False)
        >>> kind.default_fusion, kind.default_weights
        ('confidence', {'dense': 0.3, 'sparse': 0.4, 'colbert': 0.3})
        >>> kind.signal("lexical")
        'bm25'
        >>> calibrated = IndexKind("bm25", False, calibrated_fusion="rrf", calibrated_weights=(0.2, 0.2, 0.6))
        >>> calibrated.default_fusion, calibrated.default_weights
        ('rrf', {'dense': 0.2, 'sparse': 0.2, 'colbert': 0.6})
    """

    lexical_signal: LexicalSignal
    trained_heads: bool
    calibrated_fusion: Fusion | None = None
    # (dense, lexical, colbert), as SLOTS
    calibrated_weights: tuple[float, float, float] | None = None

    @property
    def builtin_fusion(self) -> Fusion:
        """The library's default fusion for this kind, calibration aside."""
        return DEFAULT_FUSION if self.trained_heads else NO_HEADS_FUSION

    @property
    def builtin_slot_weights(self) -> dict[str, float]:
        """The library's default weight of each slot for this kind, calibration aside."""
        return dict(DEFAULT_WEIGHTS if self.trained_heads else NO_HEADS_WEIGHTS)

    def signal(self, slot: str) -> str:
        """The signal that fills ``slot`` (``dense``, ``lexical`` or ``colbert``) in this index."""
        return self.lexical_signal if slot == "lexical" else slot

    @property
    def default_fusion(self) -> Fusion:
        """The calibrated fusion, else ``"weighted"`` for a real BGE-M3 and ``"confidence"`` without heads."""
        return self.calibrated_fusion or self.builtin_fusion

    @property
    def default_slot_weights(self) -> dict[str, float]:
        """The default weight of each slot (``dense``, ``lexical``, ``colbert``): calibrated or built in."""
        if self.calibrated_weights is not None:
            return dict(zip(SLOTS, self.calibrated_weights, strict=True))
        return self.builtin_slot_weights

    @property
    def default_weights(self) -> dict[str, float]:
        """The default weights by the keys a user writes (``dense``, ``sparse``, ``colbert``)."""
        return {_weight_key(slot): weight for slot, weight in self.default_slot_weights.items()}


def _weight_key(slot: str) -> str:
    return "sparse" if slot == "lexical" else slot


@dataclass(frozen=True)
class SearchOptions:
    """One search's options, checked and resolved for one index; build it with :meth:`build`.

    Attributes:
        mode: which slots rank the documents.
        k: how many hits to return.
        weights: signal name (``dense``, ``sparse``, ``colbert``, ``bm25``) → weight, divided by the
            largest; only the signals the search computes.
        fusion: the fusion method.
        candidates: first-stage size per cheap signal; ``None`` scores every allowed document.
        filter: the parsed dict filter (:func:`m3_integrations.index.filters.parse_filter`), a
            callable on the metadata, or ``None``.
        rerank: ``"m3"``, a :class:`~m3_integrations.rerank.Reranker`, or ``None``.
        rerank_top_n: how many fused hits the reranker sees.
    """

    mode: Mode
    k: int
    weights: Mapping[str, float]
    fusion: Fusion
    candidates: int | None = DEFAULT_CANDIDATES
    filter: ParsedFilter = None
    rerank: Literal["m3"] | Reranker | None = None
    rerank_top_n: int = 20

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    @classmethod
    def build(
        cls,
        kind: IndexKind,
        k: int = 10,
        *,
        mode: str = "hybrid",
        weights: Weights | None = None,
        fusion: str | None = None,
        candidates: int | None = DEFAULT_CANDIDATES,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> SearchOptions:
        """Check user options and resolve them for an index of ``kind``: the one way options are made.

        Args:
            kind: the index's kind (:attr:`M3Index.kind <m3_integrations.M3Index.kind>`).
            k: how many hits to return (a positive integer).
            mode: a key of :data:`MODES`.
            weights: ``None`` (the kind's defaults), a tuple ``(dense, sparse, colbert)`` or ``(dense,
                sparse, colbert, bm25)``, or a dict by key (:data:`WEIGHT_KEYS`) overriding the defaults.
            fusion: one of :data:`FUSION_METHODS`, or ``None`` for the kind's default.
            candidates: first-stage size per cheap signal (positive), or ``None`` for every document.
            filter: a dict filter or a callable on the metadata dict.
            rerank: ``"m3"`` or a :class:`~m3_integrations.rerank.Reranker`.
            rerank_top_n: how many fused hits the reranker sees (default ``max(k, 20)``; at least ``k``).

        Returns:
            The options.

        Raises:
            ValueError: ``k <= 0``, an unknown mode or fusion, bad weights or candidates, a bad dict filter
                (the message names the key and the operator), or bad rerank options.
            TypeError: a filter that is neither a dict nor a callable, or weights of another type.
        """
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k <= 0:
            msg = f"k must be a positive integer, got {k!r}"
            raise ValueError(msg)
        if mode not in MODES:
            msg = f"unknown mode {mode!r}; expected one of {', '.join(MODES)}"
            raise ValueError(msg)
        if fusion is None:
            fusion = kind.default_fusion
        if fusion not in FUSION_METHODS:
            msg = f"unknown fusion {fusion!r}; expected one of {', '.join(FUSION_METHODS)}"
            raise ValueError(msg)
        if candidates is not None and (
            not isinstance(candidates, int | np.integer) or isinstance(candidates, bool) or candidates <= 0
        ):
            msg = f"candidates must be a positive integer or None, got {candidates!r}"
            raise ValueError(msg)
        if filter is not None and not (isinstance(filter, Mapping) or callable(filter)):
            msg = f"filter must be a dict or a callable, got {type(filter).__name__}"
            raise TypeError(msg)
        # A dict is checked and parsed once per call, before any work.
        parsed_filter = filters.parse_filter(filter) if isinstance(filter, Mapping) else filter
        if rerank is not None and rerank != "m3" and not isinstance(rerank, Reranker):
            msg = f"rerank must be 'm3' or an object with score(query, passages), got {rerank!r}"
            raise ValueError(msg)
        top_n = max(int(k), 20) if rerank_top_n is None else rerank_top_n
        if rerank is not None and (not isinstance(top_n, int) or top_n < k):
            msg = f"rerank_top_n must be an integer >= k ({k}), got {rerank_top_n!r}"
            raise ValueError(msg)
        return cls(
            mode=mode,  # type: ignore[arg-type]  # checked against MODES above
            k=int(k),
            weights=resolve_weights(kind, mode, weights),
            fusion=fusion,  # type: ignore[arg-type]  # checked against FUSION_METHODS above
            candidates=None if candidates is None else int(candidates),
            filter=parsed_filter,
            rerank=rerank,  # type: ignore[arg-type]  # "m3" or a Reranker, checked above
            rerank_top_n=top_n,
        )

    @property
    def signals(self) -> tuple[str, ...]:
        """The signals this search computes, in weight order."""
        return tuple(self.weights)

    @property
    def needs_colbert(self) -> bool:
        """Whether the query needs ColBERT vectors (a ColBERT signal or M3's own rerank)."""
        return "colbert" in self.weights or self.rerank == "m3"

    @property
    def n_keep(self) -> int:
        """How many fused hits the search keeps: ``rerank_top_n`` with a rerank, else ``k``."""
        return self.rerank_top_n if self.rerank is not None else self.k

    def first_stage(self, lexical_signal: str) -> tuple[str, ...]:
        """The cheap signals that pick candidates (a ColBERT-only mode uses dense and lexical)."""
        return tuple(s for s in self.weights if s != "colbert") or ("dense", lexical_signal)

    def candidate_plan(self, lexical_signal: str) -> tuple[Any, ...]:
        """Everything the candidate set depends on: two options with equal plans get the same candidates."""
        floor = max(self.k, self.rerank_top_n if self.rerank is not None else 0)
        per_signal = None if self.candidates is None else max(self.candidates, floor)
        return (self.first_stage(lexical_signal), per_signal, floor, self.filter)


# The keyword arguments of M3Index.search (and of the retrievers' per-call overrides).
SEARCH_OPTION_NAMES = tuple(f.name for f in fields(SearchOptions))


def resolve_weights(kind: IndexKind, mode: str, weights: Weights | None) -> dict[str, float]:
    """Per-signal weights of ``mode``: the kind's defaults overridden by ``weights``, divided by the largest.

    Example:
        >>> resolve_weights(IndexKind("sparse", True), "hybrid", (0.4, 0.2, 0.4, 0.2))
        {'dense': 1.0, 'sparse': 0.5, 'colbert': 1.0, 'bm25': 0.5}

    Raises:
        ValueError: an unknown key, a tuple of the wrong length, a weight that is not a finite
            non-negative number, or all of the mode's weights zero.
        TypeError: ``weights`` is not None, a tuple or a dict.
    """
    lexical = kind.lexical_signal
    defaults = kind.default_slot_weights
    resolved = {kind.signal(slot): defaults[slot] for slot in MODES[mode]}
    if weights is None:
        pass
    elif isinstance(weights, Mapping):
        for key, value in check_weights(weights).items():
            name = lexical if key == "sparse" else key
            if name in resolved or name == "bm25":
                resolved[name] = value
    else:
        by_key = check_weights(weights)
        if len(by_key) == 4 and lexical == "bm25":
            msg = (
                "weights must have 3 (dense, sparse, colbert) entries when BM25 is the lexical signal "
                f"(the sparse weight is BM25's), got 4: {weights}"
            )
            raise ValueError(msg)
        for key, value in by_key.items():
            name = lexical if key == "sparse" else key
            if name in resolved or (key == "bm25" and value > 0):
                resolved[name] = value
    largest = max(resolved.values())
    if largest <= 0:
        msg = f"the weights of mode {mode!r} are all zero: {resolved}"
        raise ValueError(msg)
    # Every fusion is invariant to one common scale; dividing by the largest weight keeps sums of
    # extreme but finite weights (1e308 overflows, 1e-320 loses all precision) in range.
    return {name: weight / largest for name, weight in resolved.items()}


def check_weights(weights: Weights) -> dict[str, float]:
    """Check weights as a user writes them, whatever the index: the checks every entry point shares.

    A dict's keys must be among :data:`WEIGHT_KEYS`; a tuple holds 3 (dense, sparse, colbert) or 4
    (+ bm25) values, not all zero; every weight is a finite number ``>= 0``. Which keys a search uses
    depends on the index (:func:`resolve_weights`).

    Example:
        >>> check_weights((0.4, 0.2, 0.4))
        {'dense': 0.4, 'sparse': 0.2, 'colbert': 0.4}
        >>> check_weights({"lexcal": 1.0})
        Traceback (most recent call last):
        ...
        ValueError: unknown weight 'lexcal'; expected keys among dense, sparse, colbert, bm25

    Returns:
        The weights by key, as floats (a tuple's in :data:`WEIGHT_KEYS` order).

    Raises:
        ValueError: an unknown key, a tuple of the wrong length or all zero, or a weight that is not a
            finite number >= 0 (the message names the weight).
        TypeError: ``weights`` is neither a dict nor a tuple or list.
    """
    if isinstance(weights, Mapping):
        items = list(weights.items())
        for key, _ in items:
            if key not in WEIGHT_KEYS:
                msg = f"unknown weight {key!r}; expected keys among {', '.join(WEIGHT_KEYS)}"
                raise ValueError(msg)
    elif isinstance(weights, Sequence) and not isinstance(weights, str):
        values = list(weights)
        if len(values) not in (3, 4):
            msg = (
                "weights must have 3 (dense, sparse, colbert) or 4 (dense, sparse, colbert, bm25) entries "
                f"(a list of 3 or 4 numbers), got {len(values)}: {weights}"
            )
            raise ValueError(msg)
        items = list(zip(WEIGHT_KEYS, values, strict=False))
    else:
        msg = f"weights must be None, a tuple or a dict, got {type(weights).__name__}"
        raise TypeError(msg)
    checked = {key: _check_weight(key, value) for key, value in items}
    if not isinstance(weights, Mapping) and not any(checked.values()):
        msg = f"the weights are all zero: {weights}"
        raise ValueError(msg)
    return checked


def _check_weight(name: str, value: Any) -> float:
    # bool is an int to Python, but True as a weight is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        msg = f"weight {name!r} must be a finite number, got {value!r}"
        raise ValueError(msg)
    weight = float(value)
    if not math.isfinite(weight):
        msg = f"weight {name!r} must be a finite number, got {value!r}"
        raise ValueError(msg)
    if weight < 0:
        msg = f"weight {name!r} must be >= 0 (non-negative), got {value!r}"
        raise ValueError(msg)
    return weight
