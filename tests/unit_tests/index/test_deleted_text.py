"""Deleted text must be gone: from the word-BM25 vocabulary on compaction, and from saved folders."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from m3_integrations import M3Index, M3Model
from m3_integrations.bm25 import BM25, word_tokenize
from tests.common import INDEX_TEXTS

# The number mixes in letters that are not hex digits: a bare "4471" turned up by chance in the folder's
# random hex names and SHA-256 digests (a flaky failure), "k4471w" cannot.
SECRET = "Zanzibarquux plughxyzzy: the launch code is frobnicate-k4471w."
SECRET_WORDS = ("zanzibarquux", "plughxyzzy", "frobnicate", "k4471w")


def _all_bytes(path) -> bytes:
    return b"".join(file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file())


@pytest.mark.parametrize("lexical", ["m3", "bm25"])
def test_deleted_document_leaves_no_trace_in_the_saved_folder(
    tiny_model: M3Model, tmp_path, lexical: str
) -> None:
    index = M3Index(tiny_model, lexical=lexical, bm25_tokenizer="word")
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    index.add([SECRET], ids=["secret"], metadatas=[{"note": "plughxyzzy"}])
    index.save(tmp_path / "index")
    assert all(word.encode() in _all_bytes(tmp_path / "index") for word in SECRET_WORDS)  # the probe works
    index.delete(["secret"])
    index.save(tmp_path / "index")  # over the folder that held it
    saved = _all_bytes(tmp_path / "index")
    assert [word for word in SECRET_WORDS if word.encode() in saved] == []
    assert sorted(index._stores.bm25.words()) == sorted({w for t in INDEX_TEXTS for w in word_tokenize(t)})


def test_vocabulary_stays_bounded_over_add_delete_cycles(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model, lexical="bm25")
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    live_words = {w for t in INDEX_TEXTS for w in word_tokenize(t)}
    outputs = tiny_model.encode_passages([f"unique{n} word{n}" for n in range(8)], return_colbert=True)
    for cycle in range(20):
        texts = [f"cycle{cycle}x{n} unique{n} word{n}" for n in range(8)]
        ids = [f"c{cycle}-{n}" for n in range(8)]
        index.add_encoded(outputs, texts, ids=ids)
        index.delete(ids)
    index.compact()
    assert set(index._stores.bm25.words()) == live_words  # not the 24 extra words of every cycle


def test_dropping_unused_terms_changes_no_score() -> None:
    corpus = [word_tokenize(t) for t in INDEX_TEXTS] + [["only", "here", "capital"], ["gone", "too"]]
    bm25 = BM25()
    bm25.add(corpus)
    alive = np.ones(len(corpus), dtype=bool)
    alive[[3, len(corpus) - 2, len(corpus) - 1]] = False
    bm25.set_alive(alive)
    queries = [["capital", "of", "france"], ["only", "here"], ["hello"], ["gone"], ["北", "京"]]
    before = [bm25.get_scores(q) for q in queries]
    width_before = bm25.width
    bm25.drop_unused_terms()
    assert bm25.width < width_before and "only" not in bm25.vocab and "gone" not in bm25.vocab
    kept = [doc for doc, live in zip(corpus, alive, strict=True) if live]
    reference = BM25Okapi(kept)
    for query, old in zip(queries, before, strict=True):
        new = bm25.get_scores(query)
        np.testing.assert_allclose(new[alive], old[alive], rtol=1e-12)
        np.testing.assert_allclose(new[alive], reference.get_scores(query), rtol=1e-9, atol=1e-12)
    # Columns keep their order and the matrix stays consistent with the vocabulary.
    words = bm25.words()
    first_seen = dict.fromkeys(w for doc in corpus for w in doc)
    assert words == [w for w in first_seen if w in bm25.vocab]
    for row in np.flatnonzero(alive):
        columns = bm25.matrix()[row].indices
        assert sorted(words[c] for c in columns) == sorted(set(corpus[row]))
