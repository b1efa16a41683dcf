"""Ranking metrics with trec_eval's conventions: nDCG@k (linear graded gain), Recall@k, MRR@k.

Conventions (the same as ``trec_eval -m ndcg_cut -m recall -m recip_rank`` and ``ranx``):

- a document is relevant when its grade is ``> 0``; unjudged documents count as grade 0;
- nDCG@k: ``DCG = Σ_{i=1..k} g_i / log2(i + 1)`` with the grade itself as gain (not ``2^g - 1``), divided
  by the DCG of the ideal ordering of all judged grades;
- Recall@k: relevant documents in the top ``k`` over all relevant documents of the query;
- MRR@k: ``1 / rank`` of the first relevant document within the top ``k``, else 0;
- a run given as ``{doc id: score}`` is ranked by score, ties broken by document id descending (what
  trec_eval does); a run given as a list is taken in its order;
- the mean runs over the judged queries (at least one relevant document); a judged query missing from the
  run scores 0 (``trec_eval -c``).

Example:
    >>> qrels = {"q1": {"d1": 2, "d2": 1}}
    >>> run = {"q1": ["d2", "d9", "d1"]}
    >>> round(mrr_at_k(run["q1"], qrels["q1"], 10), 3), recall_at_k(run["q1"], qrels["q1"], 2)
    (1.0, 0.5)
    >>> {k: round(v, 4) for k, v in evaluate_run(run, qrels).items()}
    {'ndcg@10': 0.7602, 'recall@100': 1.0, 'mrr@10': 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_METRICS",
    "Run",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "per_query_metrics",
    "rank_documents",
    "recall_at_k",
]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
Run = Mapping[str, Sequence[str] | Mapping[str, float]]


def rank_documents(scores: Mapping[str, float] | Sequence[str]) -> list[str]:
    """Document ids best first: by score descending, ties by id descending (trec_eval's order)."""
    if isinstance(scores, Mapping):
        return [d for d, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]
    return list(scores)


def _dedupe(ranking: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for doc_id in ranking:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append(doc_id)
    return out


def ndcg_at_k(ranking: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranked list with linear gains (the grade is the gain); 0 when nothing is relevant."""
    _check_k(k)
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg == 0:
        return 0.0
    dcg = sum(
        max(grades.get(doc_id, 0), 0) / math.log2(i + 2) for i, doc_id in enumerate(_dedupe(ranking)[:k])
    )
    return dcg / idcg


def recall_at_k(ranking: Sequence[str], grades: Mapping[str, int], k: int = 100) -> float:
    """Share of the relevant documents found in the top ``k``; 0 when nothing is relevant."""
    _check_k(k)
    relevant = {d for d, g in grades.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedupe(ranking)[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the top ``k``, else 0."""
    _check_k(k)
    for i, doc_id in enumerate(_dedupe(ranking)[:k]):
        if grades.get(doc_id, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


_FUNCTIONS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


def _parse(metric: str) -> tuple[str, int]:
    name, sep, cutoff = metric.lower().partition("@")
    if name not in _FUNCTIONS or not sep or not cutoff.isdigit() or int(cutoff) <= 0:
        msg = f"unknown metric {metric!r}; use ndcg@K, recall@K or mrr@K"
        raise ValueError(msg)
    return name, int(cutoff)


def per_query_metrics(
    run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, dict[str, float]]:
    """Metric → {query id → value} over the judged queries (missing from the run → 0)."""
    parsed = [(m, *_parse(m)) for m in metrics]
    judged = [qid for qid, grades in qrels.items() if any(g > 0 for g in grades.values())]
    out: dict[str, dict[str, float]] = {m: {} for m in metrics}
    for qid in judged:
        ranking = rank_documents(run.get(qid, []))
        for metric, name, cutoff in parsed:
            out[metric][qid] = _FUNCTIONS[name](ranking, qrels[qid], cutoff)
    return out


def evaluate_run(
    run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, float]:
    """Mean of each metric over the judged queries.

    Args:
        run: query id → ranked document ids, or → {document id: score}.
        qrels: query id → {document id → grade}.
        metrics: names like ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``.

    Returns:
        metric → mean value (0.0 when no query is judged).

    Raises:
        ValueError: an unknown metric name.
    """
    per_query = per_query_metrics(run, qrels, metrics)
    return {m: (sum(v.values()) / len(v) if v else 0.0) for m, v in per_query.items()}


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k <= 0:
        msg = f"k must be a positive integer, got {k!r}"
        raise ValueError(msg)
