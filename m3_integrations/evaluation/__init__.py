"""Evaluation: BEIR-layout loading, trec_eval-compatible metrics, timed runs, paired bootstrap.

The paired bootstrap tells a real difference between two runs from query-sample noise.

Nothing in the core imports this package.

Example:
    .. code-block:: python

        from m3_integrations.evaluation import evaluate_run, load_beir

        data = load_beir("../shared/data/cranfield")
        run = {qid: ["184", "29"] for qid in data.queries}
        print(evaluate_run(run, data.qrels))
"""

from __future__ import annotations

from m3_integrations.evaluation.beir import (
    BeirDataset,
    Document,
    join_title_text,
    load_beir,
    load_korquad,
    read_qrels,
)
from m3_integrations.evaluation.defaults import (
    BGE_M3_DEFAULTS,
    NO_HEADS_DEFAULTS,
    recommended_search_defaults,
)
from m3_integrations.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    per_query_metrics,
    rank_documents,
    recall_at_k,
)
from m3_integrations.evaluation.run import (
    EvalResult,
    build_index,
    evaluate_index,
    evaluate_search,
    format_table,
    median_latency_ms,
)
from m3_integrations.evaluation.significance import paired_bootstrap_ci

__all__ = [
    "BGE_M3_DEFAULTS",
    "DEFAULT_METRICS",
    "NO_HEADS_DEFAULTS",
    "BeirDataset",
    "Document",
    "EvalResult",
    "build_index",
    "evaluate_index",
    "evaluate_run",
    "evaluate_search",
    "format_table",
    "join_title_text",
    "load_beir",
    "load_korquad",
    "median_latency_ms",
    "mrr_at_k",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "per_query_metrics",
    "rank_documents",
    "read_qrels",
    "recall_at_k",
    "recommended_search_defaults",
]
