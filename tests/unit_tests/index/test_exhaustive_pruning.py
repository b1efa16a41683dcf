"""Exhaustive ``weighted`` search skips ColBERT where a bound proves a row cannot reach the top k.

The pruned search must return exactly what scoring every row returns: same ids, order and scores.
1,500 documents, so that the first batch of bound-ordered rows is a small share of the corpus (with a
few hundred, even a bound 10% too low went unnoticed).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.index.search import SearchEngine
from m3_integrations.testing import TRAINING_SENTENCES

WORDS = [w for s in TRAINING_SENTENCES for w in re.findall(r"\w+", s)]
RNG = np.random.default_rng(7)
TEXTS = [" ".join(RNG.choice(WORDS, size=int(RNG.integers(4, 30)))) for _ in range(1500)]
QUERIES = ["quick brown fox", "hybrid search", " ".join(WORDS[:5]), "zzzz qqqq"]


_SHARED: dict[str, M3Index] = {}


def _shared(model: M3Model, colbert_dtype: str) -> M3Index:
    """One index per dtype for the read-only tests (building 1,500 documents takes seconds)."""
    if colbert_dtype not in _SHARED:
        _SHARED[colbert_dtype] = _build(model, colbert_dtype=colbert_dtype)
    return _SHARED[colbert_dtype]


def _build(model: M3Model, **kwargs) -> M3Index:
    index = M3Index(model, **kwargs)
    index.add(
        TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))], metadatas=[{"n": i % 3} for i in range(len(TEXTS))]
    )
    return index


def _full(index: M3Index, monkeypatch: pytest.MonkeyPatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(SearchEngine, "_pruned_colbert", lambda *a, **k: None)
        return index.search(*args, **kwargs)


def _same(pruned, full) -> None:
    # Exact on purpose: pruning only skips rows; each row kept is scored by the same code as without it.
    assert [h.id for h in pruned] == [h.id for h in full]
    assert [h.score for h in pruned] == [h.score for h in full]
    assert [h.scores for h in pruned] == [h.scores for h in full]


@pytest.mark.parametrize("colbert_dtype", ["float16", "int8"])
@pytest.mark.parametrize(
    "options",
    [
        {"k": 5},
        {"k": 10, "weights": (0.4, 0.2, 0.4, 0.3)},  # BM25 as a fourth signal
        {"k": 3, "filter": {"n": 1}},
        {"k": 4, "rerank": "m3", "rerank_top_n": 12},
        {"k": 7, "weights": {"dense": 0.1, "sparse": 0.1, "colbert": 1.0}},
        # ColBERT decides: the bound has to be a true bound, little can be skipped.
        {"k": 5, "weights": {"dense": 0.02, "sparse": 0.002, "colbert": 1.0}},
        {"k": 5, "weights": {"dense": 0.05, "sparse": 0.01, "colbert": 1.0}},
    ],
)
def test_pruned_search_equals_scoring_every_row(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch, colbert_dtype: str, options: dict
) -> None:
    index = _shared(tiny_model, colbert_dtype)
    for query in QUERIES:
        pruned = index.search(query, candidates=None, fusion="weighted", **options)
        _same(pruned, _full(index, monkeypatch, query, candidates=None, fusion="weighted", **options))


def test_pruning_scores_fewer_rows_and_follows_adds_and_deletes(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _build(tiny_model)
    scored: list[int] = []
    original = SearchEngine._colbert_scores

    def counting(self: SearchEngine, rows: np.ndarray, encoded) -> np.ndarray:
        scored.append(len(rows))
        return original(self, rows, encoded)

    monkeypatch.setattr(SearchEngine, "_colbert_scores", counting)
    index.search("quick brown fox", k=3, candidates=None, fusion="weighted")
    assert 0 < sum(scored) < len(TEXTS)  # the tiny model's dense and lexical scores spread widely
    # The cached norm bound must follow the store: a new document with a long text, then deletes.
    index.add(["quick brown fox " * 20], ids=["long"])
    index.delete([f"d{i}" for i in range(0, 1500, 2)])
    monkeypatch.setattr(SearchEngine, "_colbert_scores", original)
    for query in QUERIES:
        _same(
            index.search(query, k=5, candidates=None),
            _full(index, monkeypatch, query, k=5, candidates=None),
        )
    index.compact()
    _same(
        index.search("quick brown fox", k=5, candidates=None),
        _full(index, monkeypatch, "quick brown fox", k=5, candidates=None),
    )


def test_other_fusions_and_candidate_search_are_not_pruned(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _shared(tiny_model, "float16")
    calls: list[int] = []
    monkeypatch.setattr(SearchEngine, "_pruned_colbert", lambda *a, **k: calls.append(1))
    index.search("quick brown fox", k=3, candidates=None, fusion="relative_score")
    index.search("quick brown fox", k=3, candidates=None, fusion="rrf")
    index.search("quick brown fox", k=3, candidates=50, fusion="weighted")
    assert calls == []
    index.search("quick brown fox", k=3, candidates=None, fusion="weighted")
    assert calls == [1]
