"""The embedded hybrid index: :class:`M3Index` and the parts it is made of.

One module per responsibility (the table "Where things live" in ``docs/engine.md`` maps them):

- :mod:`~m3_integrations.index.index` and :mod:`~m3_integrations.index.querying`: ``M3Index``, the
  facade users call (add, delete, get, search, compact, save, load, the lock);
- :mod:`~m3_integrations.index.options`: modes, fusions, weights and their defaults, checked once per
  call into a frozen :class:`SearchOptions`;
- :mod:`~m3_integrations.index.storage` and :mod:`~m3_integrations.index.sparse_store`: the document
  table and one store per representation;
- :mod:`~m3_integrations.index.search`: candidates, per-signal scores, fusion, rerank;
  :class:`CandidateScores` for scores before fusion; :mod:`~m3_integrations.index.ann`: the
  approximate dense first stage of large indexes (faiss IVF);
- :mod:`~m3_integrations.index.filters`, :mod:`~m3_integrations.index.filter_index` and
  :mod:`~m3_integrations.index.metadata`: the filter language, its per-key value index, JSON metadata;
- :mod:`~m3_integrations.index.calibration`: :meth:`M3Index.calibrate`, the label-free choice of an
  index's default fusion and weights on pseudo-queries made from its documents (:class:`Calibration`);
- :mod:`~m3_integrations.index.persistence`, :mod:`~m3_integrations.index.format`,
  :mod:`~m3_integrations.index.folder_writer` and :mod:`~m3_integrations.index.folder_reader`: save and
  load, the folder format and its checks, atomic folder replacement, reading untrusted files.

Example:
    .. code-block:: python

        from m3_integrations.index import M3Index, SearchOptions

        index = M3Index(model)
        index.add(["BGE-M3 gives three representations."])
        options: SearchOptions = index.search_options(5, mode="hybrid", fusion="rrf")
        index.score_candidates("what does BGE-M3 give?", options).rank()
"""

from __future__ import annotations

from m3_integrations.index.calibration import Calibration
from m3_integrations.index.format import FORMAT_NAME, FORMAT_VERSION
from m3_integrations.index.index import M3Index
from m3_integrations.index.options import (
    DEFAULT_FUSION,
    DEFAULT_WEIGHTS,
    FUSION_METHODS,
    MODES,
    NO_HEADS_FUSION,
    NO_HEADS_WEIGHTS,
    PAPER_WEIGHTS,
    WEIGHT_KEYS,
    FilterType,
    Fusion,
    IndexKind,
    Mode,
    SearchOptions,
)
from m3_integrations.index.search import CandidateScores
from m3_integrations.index.types import EncodedQuery, SearchHit
from m3_integrations.rerank import Reranker

__all__ = [
    "DEFAULT_FUSION",
    "DEFAULT_WEIGHTS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FUSION_METHODS",
    "MODES",
    "NO_HEADS_FUSION",
    "NO_HEADS_WEIGHTS",
    "PAPER_WEIGHTS",
    "WEIGHT_KEYS",
    "Calibration",
    "CandidateScores",
    "EncodedQuery",
    "FilterType",
    "Fusion",
    "IndexKind",
    "M3Index",
    "Mode",
    "Reranker",
    "SearchHit",
    "SearchOptions",
]
