"""``benchmarks/run_quality.py`` ranks every configuration through the public engine, as a search would."""

from __future__ import annotations

import pytest

from benchmarks import run_quality as rq
from m3_integrations import M3Index, M3Model
from tests.common import INDEX_TEXTS

QUERIES = ["capital of France", "hello world", "서울 수도", "检索增强生成", "vector databases and numpy"]


@pytest.fixture(scope="module")
def plain_index(tiny_checkpoint: str) -> M3Index:
    """What the report builds for an encoder without M3's heads: BM25 over the model's ids."""
    model = M3Model(tiny_checkpoint, device="cpu", allow_missing_heads=True)
    model.sparse_linear = None
    index = M3Index(model, lexical="bm25", bm25_tokenizer="model")
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    return index


def test_every_configuration_ranks_as_the_engine_searches(plain_index: M3Index) -> None:
    configs = [c for c in rq.our_configs(quick=False) if c.bm25 == "subword"]
    assert {c.kwargs["mode"] for c in configs} == {"dense", "sparse", "colbert", "hybrid", "dense+sparse"}
    options = {c.name: plain_index.search_options(rq.K, **c.kwargs) for c in configs}
    for encoded in plain_index.encode_queries(QUERIES):
        ranked = rq.rank_query(plain_index, encoded, options)
        for config in configs:
            hits = plain_index.search_encoded(encoded, k=rq.K, **config.kwargs)
            assert ranked[config.name] == [h.id for h in hits], config.name
    assert rq.check_against_engine(plain_index, plain_index.encode_queries(QUERIES), n=len(QUERIES)) == 1.0
