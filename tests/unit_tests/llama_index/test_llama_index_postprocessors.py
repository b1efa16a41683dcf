"""M3Reranker: node postprocessor over the core rerankers, with LlamaIndex rerank events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_index.core.instrumentation as instrument
import numpy as np
import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from m3_integrations import CrossEncoderReranker, M3Model, M3ScoreReranker
from m3_integrations.llama_index import M3NodeWithScore, M3Reranker

PASSAGES = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "北京是中国的首都。检索增强生成使用向量数据库。",
    "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
    "Seoul is the capital of South Korea; Tokyo is the capital of Japan.",
]
QUERY = "capital of Germany"


def reranked_texts() -> list[str]:
    """What the reranker reads by default: LlamaIndex's EMBED content (metadata header + text)."""
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in make_scored_nodes()]


def make_scored_nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(id_=f"p{i}", text=t, metadata={"i": i}), score=1.0 - i / 10)
        for i, t in enumerate(PASSAGES)
    ]


class _Collector(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def rerank_events() -> Iterator[list[Any]]:
    handler = _Collector(events=[])
    root = instrument.get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler.events
    finally:
        root.event_handlers.remove(handler)


@pytest.fixture(scope="module")
def m3_reranker(tiny_model: M3Model) -> M3Reranker:
    return M3Reranker(model=tiny_model, top_n=3)


def test_class() -> None:
    assert BaseNodePostprocessor in M3Reranker.__mro__
    assert M3Reranker.class_name() == "M3Reranker"


def test_m3_rerank_uses_the_fused_three_way_score(m3_reranker: M3Reranker, tiny_model: M3Model) -> None:
    got = m3_reranker.postprocess_nodes(make_scored_nodes(), query_str=QUERY)
    # Independent reference: the model's compute_score three-way weighted score.
    expected = np.asarray(
        tiny_model.compute_score([(QUERY, p) for p in reranked_texts()], weights=(0.4, 0.2, 0.4))[
            "colbert+sparse+dense"
        ]
    )
    order = np.argsort(-expected, kind="stable")[:3]
    assert [n.node.node_id for n in got] == [f"p{i}" for i in order]
    for n in got:
        i = int(n.node.node_id[1:])
        assert isinstance(n, M3NodeWithScore)
        assert n.score == pytest.approx(expected[i], rel=1e-4, abs=1e-4)  # holds a sparse score
        assert n.scores["rerank"] == n.score
        assert n.scores["retrieval"] == pytest.approx(1.0 - i / 10)
        assert n.node.metadata == {"i": i}


def test_cross_encoder_rerank(tiny_reranker_checkpoint: str) -> None:
    cross = CrossEncoderReranker(tiny_reranker_checkpoint, device="cpu")
    reranker = M3Reranker(model=cross, top_n=None)
    assert reranker.reranker is cross
    assert reranker.model_name == tiny_reranker_checkpoint
    got = reranker.postprocess_nodes(make_scored_nodes(), query_str=QUERY)
    scores = cross.score(QUERY, reranked_texts())
    assert [n.node.node_id for n in got] == [f"p{i}" for i in np.argsort(-scores, kind="stable")]
    assert [n.score for n in got] == pytest.approx(sorted(scores.tolist(), reverse=True), rel=1e-5, abs=1e-5)


def test_per_signal_scores_are_kept(m3_reranker: M3Reranker) -> None:
    nodes = [
        M3NodeWithScore(node=n.node, score=n.score, scores={"dense": 0.5, "sparse": 0.1})
        for n in make_scored_nodes()
    ]
    got = m3_reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert all(set(n.scores) == {"dense", "sparse", "retrieval", "rerank"} for n in got)
    assert all(n.scores["dense"] == 0.5 for n in got)


def test_emits_rerank_events_and_callbacks(m3_reranker: M3Reranker, rerank_events: list[Any]) -> None:
    seen: list[tuple[str, Any]] = []

    class Recorder(BaseCallbackHandler):
        def __init__(self) -> None:
            super().__init__([], [])

        def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
            seen.append(("start", event_type))
            return event_id

        def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
            seen.append(("end", event_type))

        def start_trace(self, trace_id=None):
            pass

        def end_trace(self, trace_id=None, trace_map=None):
            pass

    reranker = M3Reranker(model=m3_reranker.reranker, top_n=2, callback_manager=CallbackManager([Recorder()]))
    got = reranker.postprocess_nodes(make_scored_nodes(), query_bundle=QueryBundle(QUERY))
    starts = [e for e in rerank_events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in rerank_events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == len(ends) == 1
    assert starts[0].top_n == 2
    assert starts[0].model_name == reranker.model_name
    assert len(starts[0].nodes) == len(PASSAGES)
    assert [n.node.node_id for n in ends[0].nodes] == [n.node.node_id for n in got]
    assert ("start", CBEventType.RERANKING) in seen
    assert ("end", CBEventType.RERANKING) in seen


def test_edge_cases_and_errors(m3_reranker: M3Reranker, tiny_model: M3Model) -> None:
    assert m3_reranker.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        m3_reranker.postprocess_nodes(make_scored_nodes())
    with pytest.raises(ValueError, match="query is empty"):
        m3_reranker.postprocess_nodes(make_scored_nodes(), query_str="  ")
    with pytest.raises(ValueError, match="top_n"):
        M3Reranker(model=tiny_model, top_n=0)
    with pytest.raises(TypeError, match="reranker with a score"):
        M3Reranker(model=42)
    with pytest.raises(ValueError, match="model_kwargs"):
        M3Reranker(model=M3ScoreReranker(tiny_model), model_kwargs={"device": "cpu"})
    few = M3Reranker(model=m3_reranker.reranker, top_n=10).postprocess_nodes(
        make_scored_nodes()[:2], query_str=QUERY
    )
    assert len(few) == 2


async def test_async_matches_sync(m3_reranker: M3Reranker) -> None:
    sync = m3_reranker.postprocess_nodes(make_scored_nodes(), query_str=QUERY)
    got = await m3_reranker.apostprocess_nodes(make_scored_nodes(), query_str=QUERY)
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in sync]


def test_metadata_mode_selects_the_text_scored(m3_reranker: M3Reranker, tiny_model: M3Model) -> None:
    plain = M3Reranker(model=m3_reranker.reranker, top_n=None, metadata_mode=MetadataMode.NONE)
    got = plain.postprocess_nodes(make_scored_nodes(), query_str=QUERY)
    expected = tiny_model.compute_score([(QUERY, p) for p in PASSAGES])["colbert+sparse+dense"]
    assert [n.node.node_id for n in got] == [
        f"p{i}" for i in np.argsort(-np.asarray(expected), kind="stable")
    ]
