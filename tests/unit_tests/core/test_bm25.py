from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from m3_integrations.bm25 import BM25, WordTokenizer, stemmer_languages, word_tokenize
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


def test_stemmed_word_tokens_match_rank_bm25_on_the_same_tokens() -> None:
    pytest.importorskip("Stemmer")
    tokenizer = WordTokenizer(stemmer="english", stopwords="english")
    texts = [*INDEX_TEXTS, "Flowing rivers flow; the river flowed.", "Pressure distributions over wings"]
    corpus = [tokenizer(t) for t in texts]
    assert corpus[-2] == ["flow", "river", "flow", "river", "flow"]  # stop word gone, inflections merged
    bm25 = BM25()
    bm25.add(corpus)
    reference = BM25Okapi(corpus)
    for query in ("the flows of a river", "pressure distribution on a wing", "the of and"):
        tokens = tokenizer(query)
        np.testing.assert_allclose(bm25.get_scores(tokens), reference.get_scores(tokens), rtol=1e-9)
    assert tokenizer("the of and") == []  # a query of stop words only has no BM25 evidence


def test_word_tokenizer_options_and_errors() -> None:
    assert WordTokenizer()("The Flows") == ["the", "flows"]
    assert WordTokenizer(stopwords=["THE", "of"])("the flows of") == ["flows"]  # own words, lower-cased
    assert WordTokenizer(stopwords="english")("the flows of") == ["flows"]
    config = WordTokenizer(stopwords=["b", "a"]).config()
    assert config == {"stemmer": None, "stopwords": ["a", "b"]}
    assert WordTokenizer(**config)("a b c") == ["c"]
    with pytest.raises(ValueError, match="unknown stop-word list 'klingon'"):
        WordTokenizer(stopwords="klingon")
    with pytest.raises(TypeError, match="stopwords must be strings"):
        WordTokenizer(stopwords=[1, 2])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="stopwords must be strings"):
        WordTokenizer(stopwords=3)  # type: ignore[arg-type]
    pytest.importorskip("Stemmer")
    assert "english" in stemmer_languages()
    with pytest.raises(ValueError, match=r"unknown stemmer language 'klingon'; available: .*english"):
        WordTokenizer(stemmer="klingon")
    with pytest.raises(TypeError, match="Snowball language name"):
        WordTokenizer(stemmer=3)  # type: ignore[arg-type]


def test_missing_stemmer_package_is_a_helpful_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "snowballstemmer", None)
    with pytest.raises(ImportError, match=r"m3-integrations\[stemming\]"):
        WordTokenizer(stemmer="english")
    assert WordTokenizer(stopwords="english")("the cat") == ["cat"]  # no stemmer needed without stemming


def test_stemmer_is_safe_across_threads() -> None:
    pytest.importorskip("Stemmer")
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = WordTokenizer(stemmer="english")
    texts = [f"running flows {i} connections generalizations" for i in range(400)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(tokenizer, texts))
    assert results == [["run", "flow", str(i), "connect", "general"] for i in range(400)]


def test_coverage_counts_distinct_query_tokens_found_in_live_rows() -> None:
    docs = [text.lower().split() for text in INDEX_TEXTS if text]
    bm25 = BM25()
    assert bm25.coverage(["anything"]) == 0.0  # empty corpus
    bm25.add(docs)
    vocabulary = {w for doc in docs for w in doc}
    query = ["paris", "paris", "zzz-unknown", *sorted(vocabulary)[:3]]
    distinct = set(query)
    assert bm25.coverage(query) == pytest.approx(len(distinct & vocabulary) / len(distinct))
    assert bm25.coverage([]) == 0.0
    # A word only in a deleted row no longer counts.
    only_first = sorted(set(docs[0]) - {w for doc in docs[1:] for w in doc})
    assert only_first, "the first test document should have a word of its own"
    assert bm25.coverage(only_first[:1]) == 1.0
    alive = np.ones(len(docs), dtype=bool)
    alive[0] = False
    bm25.set_alive(alive)
    assert bm25.coverage(only_first[:1]) == 0.0
    # Integer tokens: ids outside the column range are unknown, like absent ones.
    ids = BM25(num_columns=10)
    ids.add([[1, 2, 2], [3]])
    assert ids.coverage([1, 3, 4, 99, -1]) == pytest.approx(2 / 5)
    # A string would be read character by character: refused, like None.
    for bad in ("red pear", None):
        with pytest.raises(TypeError, match="list of query tokens"):
            bm25.coverage(bad)  # type: ignore[arg-type]
