"""Evaluate an :class:`~m3_integrations.M3Index` (or any retriever) on a :class:`BeirDataset`.

Quality comes from one batched pass over all queries; latency from timing single-query calls (the way
an application calls a retriever), on every query or on a fixed sample. Index build time covers encoding
and storing the corpus.

Example:
    .. code-block:: python

        from m3_integrations import M3Model
        from m3_integrations.evaluation import build_index, evaluate_index, load_beir

        data = load_beir("../shared/data/cranfield")
        model = M3Model("BAAI/bge-m3")
        index, seconds = build_index(model, data)
        result = evaluate_index(index, data, mode="hybrid", build_seconds=seconds)
        print(result.metrics["ndcg@10"], result.query_p50_ms)
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from m3_integrations.evaluation.beir import BeirDataset
from m3_integrations.evaluation.metrics import DEFAULT_METRICS, evaluate_run
from m3_integrations.index.options import DEFAULT_FUSION

if TYPE_CHECKING:
    from m3_integrations import M3Model

logger = logging.getLogger(__name__)

__all__ = [
    "EvalResult",
    "build_index",
    "evaluate_index",
    "evaluate_search",
    "format_table",
    "median_latency_ms",
]

Ranked = Sequence[tuple[str, float]]


@dataclass
class EvalResult:
    """Scores and costs of one retriever configuration on one dataset.

    Attributes:
        name: the configuration's label (``"hybrid/weighted"``, ``"langchain-ensemble"``...).
        dataset: the dataset's label.
        metrics: metric name → mean over judged queries.
        num_queries: how many queries were evaluated.
        build_seconds: wall-clock seconds to build the index (``None`` if not measured).
        query_p50_ms: median single-query latency in milliseconds (``None`` if not measured).
        params: the search parameters, for the record.
    """

    name: str
    dataset: str
    metrics: dict[str, float]
    num_queries: int
    build_seconds: float | None = None
    query_p50_ms: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def median_latency_ms(search_one: Callable[[str], object], queries: Iterable[str]) -> float | None:
    """Median wall-clock milliseconds of ``search_one(query)`` over ``queries`` (``None`` if empty)."""
    timings = []
    for query in queries:
        start = time.perf_counter()
        search_one(query)
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings) if timings else None


def evaluate_search(
    search_batch: Callable[[list[str]], Sequence[Ranked]],
    dataset: BeirDataset,
    *,
    name: str,
    search_one: Callable[[str], object] | None = None,
    latency_queries: int | None = 50,
    build_seconds: float | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    params: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> EvalResult:
    """Evaluate any retriever given as a batch function returning ``[(doc id, score), ...]`` per query.

    Args:
        search_batch: queries → ranked ``(doc id, score)`` lists (best first), one per query.
        dataset: the collection.
        name: label of the configuration.
        search_one: one query → anything; timed for the latency column (skipped if ``None``).
        latency_queries: time the first this many queries (``None``: all of them).
        build_seconds: recorded as is.
        metrics: metric names.
        params: recorded as is.
        show_progress: a progress bar over the timed single-query calls.

    Returns:
        An :class:`EvalResult`.
    """
    qids, texts = zip(*dataset.query_items(), strict=True) if dataset.queries else ((), ())
    ranked = search_batch(list(texts))
    if len(ranked) != len(qids):
        msg = f"retriever returned {len(ranked)} result lists for {len(qids)} queries"
        raise RuntimeError(msg)
    run = {qid: [doc_id for doc_id, _ in hits] for qid, hits in zip(qids, ranked, strict=True)}
    scores = evaluate_run(run, dataset.qrels, metrics)
    p50 = None
    if search_one is not None:
        sample = list(texts if latency_queries is None else texts[:latency_queries])
        timed = tqdm(sample, desc=f"Timing {name}", unit="query", disable=not show_progress or not sample)
        p50 = median_latency_ms(search_one, timed)
    return EvalResult(
        name=name,
        dataset=dataset.name,
        metrics=scores,
        num_queries=len(qids),
        build_seconds=build_seconds,
        query_p50_ms=p50,
        params=dict(params or {}),
    )


def build_index(
    model: M3Model, dataset: BeirDataset, *, show_progress: bool = False, **index_kwargs: Any
) -> tuple[Any, float]:
    r"""Build an ``M3Index`` over the dataset's corpus; return it and the seconds it took.

    Args:
        model: the encoder.
        dataset: the collection (documents are indexed as ``title + "\n" + text``).
        show_progress: progress bar while encoding.
        **index_kwargs: passed to ``M3Index`` (``lexical``, ``store_colbert``...).

    Returns:
        ``(index, build_seconds)``.

    Raises:
        ValueError: the corpus is empty.
    """
    from m3_integrations import M3Index

    docs = dataset.documents()
    if not docs:
        msg = f"dataset {dataset.name!r} has an empty corpus"
        raise ValueError(msg)
    start = time.perf_counter()
    index = M3Index(model, show_progress=show_progress, **index_kwargs)
    ids, texts = zip(*docs, strict=True)
    index.add(list(texts), ids=list(ids), metadatas=[{"id": i} for i in ids])
    seconds = time.perf_counter() - start
    logger.info("indexed %d documents of %s in %.1fs", len(docs), dataset.name, seconds)
    return index, seconds


def evaluate_index(
    index: Any,
    dataset: BeirDataset,
    *,
    k: int = 100,
    name: str | None = None,
    build_seconds: float | None = None,
    latency_queries: int | None = 50,
    metrics: Sequence[str] = DEFAULT_METRICS,
    batch_size: int = 16,
    show_progress: bool = False,
    **search_kwargs: Any,
) -> EvalResult:
    """Evaluate ``index.search`` with the given search parameters.

    Args:
        index: an ``M3Index`` (anything with ``search`` and ``search_batch``).
        dataset: the collection the index was built on.
        k: hits per query (``recall@100`` needs ``k >= 100``).
        name: label; default ``"<mode>/<fusion>"``.
        build_seconds: recorded as is.
        latency_queries: time this many single-query calls (``None``: all; ``0``: none).
        metrics: metric names.
        batch_size: queries per ``search_batch`` call (small, so that the progress bar moves: each
            query costs milliseconds to seconds, and batching saves little beyond the encoder's batch).
        show_progress: progress bars over the queries searched, then over the timed calls.
        **search_kwargs: ``mode``, ``fusion``, ``weights``, ``rerank``... for ``index.search``.

    Returns:
        An :class:`EvalResult`.
    """
    # The fusion an index searches with when given none depends on its model (M3Index.default_fusion).
    fusion = search_kwargs.get("fusion") or getattr(index, "default_fusion", None) or DEFAULT_FUSION
    label = name or f"{search_kwargs.get('mode', 'hybrid')}/{fusion}"

    def search_batch(queries: list[str]) -> list[Ranked]:
        out: list[Ranked] = []
        with tqdm(
            total=len(queries), desc=f"Searching {label}", unit="query", disable=not show_progress
        ) as progress:
            for start in range(0, len(queries), batch_size):
                chunk = queries[start : start + batch_size]
                hits = index.search_batch(chunk, k=k, **search_kwargs)
                out.extend([(h.id, h.score) for h in per_query] for per_query in hits)
                progress.update(len(chunk))
        return out

    return evaluate_search(
        search_batch,
        dataset,
        name=label,
        search_one=(lambda q: index.search(q, k=k, **search_kwargs)) if latency_queries != 0 else None,
        latency_queries=latency_queries,
        build_seconds=build_seconds,
        metrics=metrics,
        params={"k": k, **{p: _jsonable(v) for p, v in search_kwargs.items()}},
        show_progress=show_progress,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


def format_table(results: Sequence[EvalResult], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """A Markdown table: configuration, metrics (3 decimals), build seconds and query p50 ms."""
    header = ["dataset", "configuration", *metrics, "build s", "query p50 ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r.dataset, r.name, *(f"{r.metrics.get(m, float('nan')):.3f}" for m in metrics)]
        cells.append("" if r.build_seconds is None else f"{r.build_seconds:.1f}")
        cells.append("" if r.query_p50_ms is None else f"{r.query_p50_ms:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
