"""Search defaults backed by the quality report (``benchmarks/REPORT.md``), as data.

``M3Index`` owns its defaults; this module records which fusion and weights the measurements support,
so the index (or a user) can pick them per model:

- a real BGE-M3 checkpoint (trained sparse and ColBERT heads): the paper's weighted fusion with
  ``dense 0.4, sparse 0.2, colbert 0.4`` (not re-tuned here: BAAI/bge-m3 cannot be loaded on the machines
  that made the report);
- an encoder without M3's heads (BM25 over words as the lexical signal, which ``M3Index``'s
  ``bm25_tokenizer="auto"`` picks for such a model; identity-projection ColBERT): the choice below, made
  by the rule in the report over several collections and two encoders, not tuned on one.

Example:
    >>> from types import SimpleNamespace
    >>> recommended_search_defaults(SimpleNamespace(has_sparse=True, has_colbert_head=True))
    {'fusion': 'weighted', 'weights': {'dense': 0.4, 'sparse': 0.2, 'colbert': 0.4}}
    >>> recommended_search_defaults(SimpleNamespace(has_sparse=False, has_colbert_head=False))["fusion"]
    'confidence'
"""

from __future__ import annotations

from typing import Any

from m3_integrations.index.options import IndexKind

__all__ = ["BGE_M3_DEFAULTS", "NO_HEADS_DEFAULTS", "recommended_search_defaults"]

# The values live in the core (m3_integrations.index.options; M3Index applies them when search gets no
# fusion/weights); here they are spelled with the weight keys that search accepts.
_BGE_M3 = IndexKind(lexical_signal="sparse", trained_heads=True)
_NO_HEADS = IndexKind(lexical_signal="bm25", trained_heads=False)
BGE_M3_DEFAULTS: dict[str, Any] = {"fusion": _BGE_M3.default_fusion, "weights": _BGE_M3.default_weights}
NO_HEADS_DEFAULTS: dict[str, Any] = {"fusion": _NO_HEADS.default_fusion, "weights": _NO_HEADS.default_weights}


def recommended_search_defaults(model: Any) -> dict[str, Any]:
    """``{"fusion", "weights"}`` for ``M3Index.search`` given a model's heads.

    Args:
        model: anything with ``has_sparse`` and ``has_colbert_head`` (an :class:`~m3_integrations.M3Model`).

    Returns:
        A fresh dict (safe to modify): the paper's settings when both trained heads are present, else the
        defaults measured for encoders without them.
    """
    source = BGE_M3_DEFAULTS if model.has_sparse and model.has_colbert_head else NO_HEADS_DEFAULTS
    return {"fusion": source["fusion"], "weights": dict(source["weights"])}
