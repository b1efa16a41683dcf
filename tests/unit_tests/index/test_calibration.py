"""``M3Index.calibrate``: label-free choice of the default fusion and weights on pseudo-queries."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from m3_integrations import IndexLoadError, M3Index, M3Model
from m3_integrations.bm25 import BM25
from m3_integrations.index.calibration import (
    CALIBRATION_FUSIONS,
    CALIBRATION_WEIGHTS,
    Calibration,
    make_pseudo_queries,
)
from tests.common import ConceptEncoder, naive_agreement_fusion, naive_colbert_score, naive_fuse

N_DOCS = 30


def _lexical_corpus(n: int = N_DOCS, seed: int = 0) -> list[str]:
    """Passages of three sentences sharing their passage's topic words: lexical matches are decisive.

    The tiny checkpoint's weights are random, so its dense and ColBERT scores carry no meaning.
    """
    rng = random.Random(seed)
    filler = [f"common{i}" for i in range(40)]
    texts = []
    for d in range(n):
        topic = [f"topic{d}alpha", f"topic{d}beta", f"topic{d}gamma", f"topic{d}delta"]
        sentences = [" ".join(rng.sample(filler, 4) + rng.sample(topic, 2)) + "." for _ in range(3)]
        texts.append(" ".join(sentences))
    return texts


@pytest.fixture(scope="module")
def bm25_model(tiny_checkpoint: str) -> M3Model:
    """An encoder without M3's lexical head: BM25 over words fills the lexical slot."""
    model = M3Model(tiny_checkpoint, device="cpu", allow_missing_heads=True)
    model.sparse_linear = None
    return model


def _index(model: M3Model, texts: list[str] | None = None) -> M3Index:
    index = M3Index(model, bm25_tokenizer="word", language=None)
    texts = _lexical_corpus() if texts is None else texts
    index.add(texts, ids=[f"d{i}" for i in range(len(texts))])
    return index


@pytest.fixture(scope="module")
def lexical_index(bm25_model: M3Model) -> M3Index:
    return _index(bm25_model)


def _synonym_corpus(n: int = N_DOCS, seed: int = 0) -> list[str]:
    """Passages whose sentences name one concept by different synonyms, plus a decoy sentence.

    Each passage's last sentence repeats the filler words of the passage before it: a sentence taken
    out as a query matches the next passage's decoy word for word, while only the encoder
    (:class:`~tests.common.ConceptEncoder`) sees that the synonyms in its own passage mean the same.
    """
    rng = random.Random(seed)
    filler = [f"word{i}" for i in range(200)]
    words = [[rng.sample(filler, 6) for _ in range(3)] for _ in range(n)]
    texts = []
    for d in range(n):
        sentences = [" ".join([*words[d][j], f"c{d}w{j}"]) + "." for j in range(3)]
        decoy = [w for sentence in words[d - 1] for w in sentence]
        texts.append(" ".join([*sentences, " ".join(decoy) + "."]))
    return texts


def test_words_that_mislead_make_calibration_lower_the_lexical_weight() -> None:
    index = M3Index(ConceptEncoder(), bm25_tokenizer="word", language=None)  # type: ignore[arg-type]
    texts = _synonym_corpus()
    index.add(texts, ids=[f"d{i}" for i in range(len(texts))])
    assert index.calibration is None
    chosen = index.calibrate()
    by_config = {(f, w): s for f, w, s in chosen.table}
    assert chosen.default_score == by_config[("confidence", (0.3, 0.4, 0.3))] < 0.99
    assert chosen.score == max(by_config.values()) > chosen.default_score + 0.005
    assert chosen.weights[1] / sum(chosen.weights) < 0.4  # less lexical weight than the built-in default
    # Under one fusion, less lexical weight is better, step by step.
    relative = [by_config[("relative_score", w)] for w in ((0.3, 0.4, 0.3), (0.4, 0.2, 0.4), (0.2, 0.2, 0.6))]
    assert relative == sorted(relative) and relative[0] < relative[-1]
    assert index.calibration == chosen
    assert index.default_fusion == chosen.fusion
    assert index.default_weights == dict(zip(("dense", "sparse", "colbert"), chosen.weights, strict=True))
    # A search without fusion or weights uses the calibrated ones; explicit arguments still win.
    query = texts[4].split(".")[0]
    calibrated = index.search(query, k=5)
    explicit = index.search(query, k=5, fusion=chosen.fusion, weights=chosen.weights)
    assert [(h.id, h.score) for h in calibrated] == [(h.id, h.score) for h in explicit]
    builtin = index.search(query, k=5, fusion="confidence", weights=(0.3, 0.4, 0.3))
    assert [h.score for h in builtin] != [h.score for h in calibrated]
    index.reset_calibration()
    assert index.calibration is None
    assert (index.default_fusion, index.default_weights) == (
        "confidence",
        {"dense": 0.3, "sparse": 0.4, "colbert": 0.3},
    )


def test_a_decisive_lexical_signal_scores_best(lexical_index: M3Index) -> None:
    """Topic words decide and the random encoder knows nothing: BM25 alone is best (the default ties it)."""
    chosen = lexical_index.calibrate(
        fusions=("relative_score",), weights=[(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    )
    lexical_index.reset_calibration()
    by_config = {(f, w): s for f, w, s in chosen.table}
    lexical = by_config[("relative_score", (0.0, 1.0, 0.0))]
    assert lexical == max(by_config.values()) > 0.9
    assert by_config[("relative_score", (1.0, 0.0, 0.0))] < 0.5
    assert by_config[("relative_score", (0.0, 0.0, 1.0))] < 0.5
    # The built-in default (confidence) follows the signal that stands out, so it ties and stays.
    assert chosen.score == lexical
    assert (chosen.fusion, chosen.weights) in {
        ("confidence", (0.3, 0.4, 0.3)),
        ("relative_score", (0.0, 1.0, 0.0)),
    }


def _naive_encoder_scores(
    model: M3Model, queries: list[str], texts: list[str], colbert_dtype: type = np.float16
) -> list[dict[str, list[float]]]:
    """Per query, dense and ColBERT scores of each text alone, naive formulas (ColBERT rounded as stored)."""
    q = model.encode_queries(queries, return_sparse=False, return_colbert=True)
    p = model.encode_passages(texts, return_sparse=False, return_colbert=True)
    stored = [v.astype(colbert_dtype).astype(np.float32) for v in p.colbert_vecs]
    return [
        {
            "dense": [float(np.dot(q.dense[i].astype(np.float64), d.astype(np.float64))) for d in p.dense],
            "colbert": [naive_colbert_score(q.colbert_vecs[i], v) for v in stored],
        }
        for i in range(len(queries))
    ]


def _naive_bm25_of(bm25: BM25Okapi, query: list[str], document: list[str]) -> float:
    """rank_bm25's Okapi formula for one document outside its corpus (the corpus's idf and avgdl)."""
    tf = Counter(document)
    score = 0.0
    for term in query:  # repeated query terms count again, as in rank_bm25
        if tf[term]:
            norm = bm25.k1 * (1 - bm25.b + bm25.b * len(document) / bm25.avgdl)
            score += bm25.idf.get(term, 0.0) * tf[term] * (bm25.k1 + 1) / (tf[term] + norm)
    return score


def test_the_table_is_the_naive_computation(bm25_model: M3Model, lexical_index: M3Index) -> None:
    """Every configuration's mean nDCG@10, recomputed with naive scores, naive fusion and a naive nDCG."""
    index = lexical_index
    chosen = Calibration.from_json(index.calibrate(seed=3, max_queries=12).to_json())  # as saved
    index.reset_calibration()
    texts = [hit.text for hit in index.get(index.ids)]
    pseudo = make_pseudo_queries(index.ids, texts, 12, seed=3)
    tokens = index.bm25_tokens(texts)
    okapi = BM25Okapi(tokens)
    totals: dict[tuple, float] = {}
    queries = [p.query for p in pseudo]
    stored = _naive_encoder_scores(bm25_model, queries, texts)
    remainders = _naive_encoder_scores(bm25_model, queries, [p.remainder for p in pseudo], np.float32)
    for j, p in enumerate(pseudo):
        source = index.ids.index(p.doc_id)
        (query_tokens,) = index.bm25_tokens([p.query])
        (remainder_tokens,) = index.bm25_tokens([p.remainder])
        signals = {
            "dense": list(stored[j]["dense"]),
            "bm25": [float(s) for s in okapi.get_scores(query_tokens)],
            "colbert": list(stored[j]["colbert"]),
        }
        signals["dense"][source] = remainders[j]["dense"][j]
        signals["colbert"][source] = remainders[j]["colbert"][j]
        signals["bm25"][source] = _naive_bm25_of(okapi, query_tokens, remainder_tokens)
        for fusion, weights, _ in chosen.table:
            resolved = dict(index.search_options(10, fusion=fusion, weights=weights).weights)
            # The query's words are all indexed (in its stored passage): coverage is 1.
            if fusion == "agreement":
                fused = naive_agreement_fusion(signals, resolved, {}, depth=10)
            else:
                fused = naive_fuse(signals, resolved, fusion)
            ranking = sorted(range(len(texts)), key=lambda i: (-fused[i], i))[:10]
            gain = 1 / math.log2(ranking.index(source) + 2) if source in ranking else 0.0
            totals[(fusion, weights)] = totals.get((fusion, weights), 0.0) + gain
    assert chosen.queries == len(pseudo) == 12  # every passage is a candidate (30 documents < 100)
    assert len(chosen.table) == 1 + len(CALIBRATION_FUSIONS) * len(CALIBRATION_WEIGHTS) - 1  # default twice
    for fusion, weights, score in chosen.table:
        assert score == pytest.approx(totals[(fusion, weights)] / len(pseudo), rel=1e-9), (fusion, weights)
    best = max(chosen.table, key=lambda row: row[2])  # the first maximum
    expected = best[:2] if best[2] - chosen.default_score > 0.005 else ("confidence", (0.3, 0.4, 0.3))
    assert (chosen.fusion, chosen.weights) == expected


def test_the_default_stays_unless_the_best_beats_it_by_min_gain(lexical_index: M3Index) -> None:
    loose = lexical_index.calibrate(min_gain=0.0)
    strict = lexical_index.calibrate(min_gain=1.0)
    lexical_index.reset_calibration()
    best = max(score for _, _, score in loose.table)
    assert loose.score == best
    assert (strict.fusion, strict.weights) == ("confidence", (0.3, 0.4, 0.3))
    assert strict.score == strict.default_score == loose.default_score


def test_calibration_is_deterministic(lexical_index: M3Index) -> None:
    first = lexical_index.calibrate(seed=7, max_queries=12)
    second = lexical_index.calibrate(seed=7, max_queries=12)
    lexical_index.reset_calibration()
    assert first == second
    assert first.queries == 12 and first.seed == 7
    texts = [hit.text for hit in lexical_index.get(lexical_index.ids)]
    again = make_pseudo_queries(lexical_index.ids, texts, 12, seed=7)
    assert again == make_pseudo_queries(lexical_index.ids, texts, 12, seed=7)
    assert again != make_pseudo_queries(lexical_index.ids, texts, 12, seed=8)


def test_pseudo_queries_are_a_sentence_out_of_their_passage() -> None:
    texts = [*_lexical_corpus(8), "One sentence only, long enough.", ""]
    ids = [f"d{i}" for i in range(len(texts))]
    pseudo = make_pseudo_queries(ids, texts, 100, seed=0)
    assert sorted(p.doc_id for p in pseudo) == sorted(ids[:8])  # single sentences cannot be split
    for p in pseudo:
        text = texts[ids.index(p.doc_id)]
        assert p.query in text and p.query not in p.remainder
        assert sorted((p.query + " " + p.remainder).split()) == sorted(text.split())
    assert len(make_pseudo_queries(ids, texts, 3, seed=0)) == 3


def test_calibration_is_saved_and_checked_on_load(bm25_model: M3Model, tmp_path: Path) -> None:
    index = _index(bm25_model)
    index.save(tmp_path / "plain")
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert "calibration" not in manifest  # an index never calibrated saves as before
    assert M3Index.load(tmp_path / "plain", bm25_model).calibration is None
    chosen = index.calibrate(max_queries=10, min_gain=0.0)
    index.save(tmp_path / "plain")  # an incremental save (nothing added) records it too
    loaded = M3Index.load(tmp_path / "plain", bm25_model)
    assert loaded.calibration == chosen
    assert (loaded.default_fusion, loaded.default_weights) == (index.default_fusion, index.default_weights)
    query = "topic5gamma common3"
    assert [(h.id, h.score) for h in loaded.search(query)] == [(h.id, h.score) for h in index.search(query)]
    loaded.reset_calibration()
    loaded.add(["topic99alpha is new. It has two sentences."], ids=["new"])
    loaded.save(tmp_path / "plain")
    assert M3Index.load(tmp_path / "plain", bm25_model).calibration is None


@pytest.fixture(scope="module")
def calibrated_folder(bm25_model: M3Model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = _index(bm25_model)
    index.calibrate(max_queries=10)
    folder = tmp_path_factory.mktemp("calibrated") / "index"
    index.save(folder)
    return folder


def _good_record(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())["calibration"]


HOSTILE = {
    "not an object": lambda r: [r],
    "a missing key": lambda r: {k: v for k, v in r.items() if k != "seed"},
    "an extra key": lambda r: {**r, "extra": 1},
    "unknown fusion": lambda r: {**r, "fusion": "max"},
    "fusion not a string": lambda r: {**r, "fusion": ["rrf"]},
    "weights a list": lambda r: {**r, "weights": [0.3, 0.4, 0.3]},
    "a weight key missing": lambda r: {**r, "weights": {"dense": 1.0, "lexical": 1.0}},
    "a negative weight": lambda r: {**r, "weights": {"dense": -1.0, "lexical": 1.0, "colbert": 1.0}},
    "an infinite weight": lambda r: {**r, "weights": {"dense": 1e999, "lexical": 1.0, "colbert": 1.0}},
    "a weight as a string": lambda r: {**r, "weights": {"dense": "1", "lexical": 1.0, "colbert": 1.0}},
    "a weight as a bool": lambda r: {**r, "weights": {"dense": True, "lexical": 1.0, "colbert": 1.0}},
    "all weights zero": lambda r: {**r, "weights": {"dense": 0, "lexical": 0, "colbert": 0}},
    "a score above 1": lambda r: {**r, "score": 1.5},
    "a NaN score": lambda r: {**r, "default_score": float("nan")},
    "a negative count": lambda r: {**r, "queries": -1},
    "a float count": lambda r: {**r, "documents": 2.5},
    "a seed as a string": lambda r: {**r, "seed": "0"},
    "table not a list": lambda r: {**r, "table": {}},
    "a short table entry": lambda r: {**r, "table": [["rrf", [1, 1, 1]]]},
    "a table entry with a bad fusion": lambda r: {**r, "table": [["max", [1, 1, 1], 0.5]]},
    "a table entry with two weights": lambda r: {**r, "table": [["rrf", [1, 1], 0.5]]},
    "a huge table": lambda r: {**r, "table": [["rrf", [1, 1, 1], 0.5]] * 1001},
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_calibration_record_is_an_index_load_error(
    bm25_model: M3Model, calibrated_folder: Path, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "index"
    shutil.copytree(calibrated_folder, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["calibration"] = HOSTILE[name](manifest["calibration"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match=r"manifest\.json: calibration"):
        M3Index.load(folder, bm25_model)


def test_the_good_record_loads(bm25_model: M3Model, calibrated_folder: Path) -> None:
    record = _good_record(calibrated_folder)
    assert Calibration.from_json(record).to_json() == record
    assert M3Index.load(calibrated_folder, bm25_model).calibration == Calibration.from_json(record)


def test_too_few_documents(bm25_model: M3Model) -> None:
    index = _index(bm25_model, _lexical_corpus(19))
    with pytest.raises(ValueError, match="at least 20 documents, the index has 19"):
        index.calibrate()
    assert index.calibration is None


def test_too_few_documents_to_split(bm25_model: M3Model) -> None:
    texts = [f"A single sentence number {i} without a break" for i in range(25)]
    index = _index(bm25_model, texts[:20] + _lexical_corpus(5))
    with pytest.raises(ValueError, match=r"at least 10 documents of two sentences or more.*found 5 among 25"):
        index.calibrate()
    assert index.calibration is None


def test_nothing_to_choose_from(lexical_index: M3Index) -> None:
    with pytest.raises(ValueError, match="nothing to choose from"):
        lexical_index.calibrate(fusions=("confidence",), weights=[(0.3, 0.4, 0.3)])
    with pytest.raises(ValueError, match="nothing to choose from"):
        lexical_index.calibrate(fusions=(), weights=[])
    assert lexical_index.calibration is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_queries": 5}, "max_queries must be an integer >= 10"),
        ({"max_queries": True}, "max_queries must be an integer"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"min_gain": -0.1}, r"min_gain must be a number in \[0, 1\]"),
        ({"fusions": ("max",)}, "fusion must be one of"),
        ({"weights": [(1.0, 1.0)]}, "weights must be"),
        ({"weights": [(0.0, 0.0, 0.0)]}, "not all 0"),
    ],
)
def test_bad_arguments(lexical_index: M3Index, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lexical_index.calibrate(**kwargs)
    assert lexical_index.calibration is None


def test_a_real_bge_m3_index_keeps_the_paper_default_unless_beaten(tiny_model: M3Model) -> None:
    """With M3's heads the built-in default (weighted 0.4/0.2/0.4) is a candidate, on the sparse signal."""
    index = M3Index(tiny_model)
    index.add(_lexical_corpus(), ids=[f"d{i}" for i in range(N_DOCS)])
    chosen = index.calibrate(max_queries=10, min_gain=1.0)
    assert (chosen.fusion, chosen.weights) == ("weighted", (0.4, 0.2, 0.4))
    assert chosen.table[0][:2] == ("weighted", (0.4, 0.2, 0.4))
    assert {fusion for fusion, _, _ in chosen.table} == {"weighted", *CALIBRATION_FUSIONS}


def test_score_documents_is_a_stored_row_score() -> None:
    bm25 = BM25()
    documents = [["red", "apple", "red"], ["green", "pear"], ["red", "pear", "kiwi", "lime"]]
    bm25.add(documents)
    for query in (["red"], ["red", "pear", "red"], ["unknown"], []):
        # Same formula, summed in another order (per document vs bincount): equal up to float64 rounding.
        np.testing.assert_allclose(
            bm25.score_documents(query, documents), bm25.get_scores(query), rtol=1e-12, atol=0
        )
    assert bm25.score_documents(["red"], [[], ["never", "seen"]]).tolist() == [0.0, 0.0]
    assert BM25().score_documents(["red"], [["red"]]).tolist() == [0.0]
