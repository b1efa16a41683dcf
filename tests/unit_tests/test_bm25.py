from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from m3_integrations.bm25 import BM25, word_tokenize
from tests.common import INDEX_TEXTS

CORPUS = [word_tokenize(t) for t in INDEX_TEXTS] + [["capital"] * 5, [], ["a"]]
QUERIES = [["capital", "of", "france"], ["hello", "hello", "world"], ["北", "京"], ["a"], ["unknown"], []]


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_rank_bm25(query: list[str]) -> None:
    bm25 = BM25()
    bm25.add(CORPUS[:10])
    bm25.add(CORPUS[10:])  # incremental adds equal one build
    expected = BM25Okapi(CORPUS).get_scores(query)
    np.testing.assert_allclose(bm25.get_scores(query), expected, rtol=1e-9, atol=1e-12)


def test_integer_tokens_and_deletion_match_rebuild() -> None:
    rng = np.random.default_rng(1)
    corpus = [rng.integers(0, 50, rng.integers(0, 30)).tolist() for _ in range(40)]
    bm25 = BM25(num_columns=50)
    bm25.add(corpus)
    alive = np.ones(40, dtype=bool)
    alive[::3] = False
    bm25.set_alive(alive)
    kept = [doc for doc, keep in zip(corpus, alive, strict=True) if keep]
    reference = BM25Okapi(kept)
    for query in ([1, 2, 3], [7, 7], [49, 0]):
        np.testing.assert_allclose(bm25.get_scores(query)[alive], reference.get_scores(query), rtol=1e-9)
    bm25.keep_rows(np.flatnonzero(alive))
    bm25.set_alive(np.ones(len(kept), dtype=bool))
    np.testing.assert_allclose(bm25.get_scores([1, 2, 3]), reference.get_scores([1, 2, 3]), rtol=1e-9)


def test_word_tokenizer_keeps_short_tokens_and_splits_cjk() -> None:
    assert word_tokenize("I am a C programmer, 3 times!") == ["i", "am", "a", "c", "programmer", "3", "times"]
    assert word_tokenize("检索增强 生成") == ["检", "索", "增", "强", "生", "成"]
    assert word_tokenize("서울은 대한민국의 수도") == ["서울은", "대한민국의", "수도"]
    assert word_tokenize("Straße ÜBER") == ["straße", "über"]
    assert word_tokenize("") == []


def test_roundtrip_arrays() -> None:
    bm25 = BM25()
    bm25.add(CORPUS)
    again = BM25.from_arrays(bm25.to_arrays(), vocab=list(bm25.vocab), num_columns=None)
    np.testing.assert_allclose(again.get_scores(QUERIES[0]), bm25.get_scores(QUERIES[0]))
