"""Loader and metrics: tiny BEIR folders made here; metrics checked against pytrec_eval (trec_eval)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from m3_integrations.evaluation import (
    BeirDataset,
    evaluate_run,
    evaluate_search,
    format_table,
    join_title_text,
    load_beir,
    load_korquad,
    mrr_at_k,
    ndcg_at_k,
    rank_documents,
    read_qrels,
    recall_at_k,
)


def write_beir(root: Path, corpus, queries, qrels_lines, *, header=True, qrels_dir=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, title, text in corpus:
            fh.write(json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries:
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    qdir = qrels_dir or (root / "qrels")
    qdir.mkdir(parents=True, exist_ok=True)
    lines = (["query-id\tcorpus-id\tscore"] if header else []) + qrels_lines
    (qdir / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


CORPUS = [
    ("d1", "Wings", "They lift aircraft."),
    ("d 2", "", "A document id with a space."),
    ("d3", "Engines", "Engines push aircraft forward."),
    ("d4", "Title", "Title repeated in the body."),
]
QUERIES = [("q1", "what lifts a plane"), ("q2", "engines"), ("q3", "unjudged"), ("q4", "only zero grades")]
QRELS = ["q1\td1\t2", "q1\td 2\t1", "q2\td3\t3", "q2\td1\t0", "q4\td4\t0", "q1\tmissing\t1"]


@pytest.mark.parametrize("header", [True, False])
def test_load_beir_with_and_without_header(tmp_path: Path, header: bool) -> None:
    root = write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS, header=header)
    data = load_beir(root)
    assert list(data.corpus) == ["d1", "d 2", "d3", "d4"]
    # judged queries only; the dangling "missing" document is dropped
    assert data.qrels == {"q1": {"d1": 2, "d 2": 1}, "q2": {"d3": 3, "d1": 0}}
    assert list(data.queries) == ["q1", "q2"]
    docs = dict(data.documents())
    assert docs["d1"] == "Wings\nThey lift aircraft."
    assert docs["d 2"] == "A document id with a space."
    assert docs["d4"] == "Title repeated in the body."  # the body already starts with the title


def test_read_qrels_whitespace_and_trec_format(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("q1 0 d1 2\nq1 0 d2 1\n", encoding="utf-8")
    assert read_qrels(path) == {"q1": {"d1": 2, "d2": 1}}
    path.write_text("q1 d1 2\nq1 d1 3\n", encoding="utf-8")
    assert read_qrels(path) == {"q1": {"d1": 3}}
    path.write_text("q1\td1\t2\nq2\td2\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"q\.txt:2"):
        read_qrels(path)


def test_load_beir_cross_lingual_shared_qrels(tmp_path: Path) -> None:
    write_beir(tmp_path / "x" / "en", CORPUS, QUERIES, QRELS, qrels_dir=tmp_path / "x" / "qrels")
    write_beir(
        tmp_path / "x" / "zh",
        CORPUS,
        [("q1", "什么让飞机升起"), ("q2", "发动机")],
        QRELS,
        qrels_dir=tmp_path / "x" / "qrels",
    )
    (tmp_path / "x" / "en" / "qrels").exists() and pytest.fail("qrels must be shared here")
    data = load_beir(tmp_path / "x" / "en", queries_folder=tmp_path / "x" / "zh")
    assert data.queries == {"q1": "什么让飞机升起", "q2": "发动机"}
    assert data.qrels["q2"] == {"d3": 3, "d1": 0}


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "nope")
    root = write_beir(tmp_path / "empty", [], QUERIES, QRELS)
    with pytest.raises(ValueError, match="empty"):
        load_beir(root)
    root = write_beir(tmp_path / "noq", CORPUS, QUERIES, QRELS)
    (root / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"queries\.jsonl"):
        load_beir(root)


def test_load_korquad_in_memory(tmp_path: Path) -> None:
    raw = {
        "version": "x",
        "data": [
            {
                "title": "가",
                "paragraphs": [
                    {
                        "context": "서울은 수도이다.",
                        "qas": [{"id": "1", "question": "수도는?", "answers": []}],
                    },
                    {
                        "context": "부산은 항구이다.",
                        "qas": [{"id": "2", "question": "항구는?", "answers": []}],
                    },
                ],
            },
            {
                "title": "나",
                "paragraphs": [
                    {"context": "서울은 수도이다.", "qas": [{"id": "3", "question": "서울?", "answers": []}]}
                ],
            },
        ],
    }
    path = tmp_path / "k.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    para = load_korquad(path)
    assert list(para.corpus) == ["a0-p0", "a0-p1", "a1-p0"]
    assert para.qrels["1"] == {"a0-p0": 1, "a1-p0": 1}  # a byte-identical twin is relevant too
    assert para.qrels["2"] == {"a0-p1": 1}
    art = load_korquad(path, level="article")
    assert art.qrels["3"] == {"a1": 1}
    assert dict(art.documents())["a0"] == "가\n서울은 수도이다.\n\n부산은 항구이다."
    with pytest.raises(ValueError, match="level"):
        load_korquad(path, level="sentence")


def test_join_title_text() -> None:
    assert join_title_text("", "body") == "body"
    assert join_title_text("T", "body") == "T\nbody"
    assert join_title_text("T", "T body") == "T body"


def test_subsample_queries_is_seeded_and_consistent(tmp_path: Path) -> None:
    data = load_beir(write_beir(tmp_path / "ds", CORPUS, QUERIES, QRELS))
    one = data.subsample_queries(1, seed=3)
    assert one.subsample_queries(5) is one
    assert set(one.queries) == set(one.qrels)
    assert len(one.queries) == 1
    assert one.queries == data.subsample_queries(1, seed=3).queries


# ---------------------------------------------------------------------------- metrics
def random_case(seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(12):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 15))
        qrels[qid] = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        if not any(g > 0 for g in qrels[qid].values()):
            qrels[qid][judged[0]] = 1
        # distinct scores: tie order is tested separately
        retrieved = rng.sample(docs, rng.randint(1, 40))
        run[qid] = {d: 100.0 - i + rng.random() * 0.5 for i, d in enumerate(retrieved)}
    return run, qrels


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_pytrec_eval(seed: int) -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    run, qrels = random_case(seed)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_100", "recip_rank"}).evaluate(run)
    ours = evaluate_run(run, qrels, ["ndcg@10", "recall@100", "mrr@10"])
    n = len(ref)
    assert ours["ndcg@10"] == pytest.approx(sum(v["ndcg_cut_10"] for v in ref.values()) / n, abs=1e-9)
    assert ours["recall@100"] == pytest.approx(sum(v["recall_100"] for v in ref.values()) / n, abs=1e-9)
    # trec_eval's recip_rank has no cutoff; ours stops at 10, so compare with the cutoff applied
    expected_mrr = [v["recip_rank"] if v["recip_rank"] >= 0.1 else 0.0 for v in ref.values()]
    assert ours["mrr@10"] == pytest.approx(sum(expected_mrr) / n, abs=1e-9)


def test_ties_break_like_trec_eval() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {"q": {"a": 1, "c": 3}}
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert rank_documents(run["q"]) == ["c", "b", "a"]
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)
    assert evaluate_run(run, qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(ref["q"]["ndcg_cut_10"])


def test_metric_values_by_hand() -> None:
    grades = {"a": 3, "b": 1, "z": 2}
    ranking = ["x", "b", "a"]
    # DCG = 1/log2(3) + 3/log2(4); ideal = 3 + 2/log2(3) + 1/2
    import math

    dcg = 1 / math.log2(3) + 3 / 2
    idcg = 3 + 2 / math.log2(3) + 0.5
    assert ndcg_at_k(ranking, grades, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranking, grades, 1) == 0.0
    assert recall_at_k(ranking, grades, 2) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, grades, 10) == 0.5
    assert mrr_at_k(ranking, grades, 1) == 0.0
    # a duplicated id counts once and does not take a rank
    assert recall_at_k(["b", "b", "a"], grades, 2) == pytest.approx(2 / 3)


def test_missing_query_scores_zero_and_bad_metric() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    assert evaluate_run({"q1": ["a"]}, qrels) == {"ndcg@10": 0.5, "recall@100": 0.5, "mrr@10": 0.5}
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run({}, qrels, ["map@10"])
    with pytest.raises(ValueError, match="positive"):
        ndcg_at_k(["a"], {"a": 1}, 0)


def test_evaluate_search_and_table() -> None:
    data = BeirDataset(
        name="toy",
        corpus={},
        queries={"q1": "alpha", "q2": "beta"},
        qrels={"q1": {"a": 1}, "q2": {"b": 2}},
    )
    answers = {"alpha": [("a", 1.0), ("b", 0.5)], "beta": [("a", 0.9), ("b", 0.1)]}
    calls: list[str] = []
    result = evaluate_search(
        lambda qs: [answers[q] for q in qs],
        data,
        name="toy-retriever",
        search_one=calls.append,
        latency_queries=1,
        build_seconds=1.5,
    )
    assert calls == ["alpha"]
    assert result.metrics["mrr@10"] == pytest.approx(0.75)
    assert result.num_queries == 2
    assert result.query_p50_ms is not None and result.query_p50_ms >= 0
    table = format_table([result])
    assert "| toy | toy-retriever | " in table and "0.750" in table and "1.5" in table
    with pytest.raises(RuntimeError, match="result lists"):
        evaluate_search(lambda qs: [], data, name="broken")


def test_recommended_defaults_follow_the_heads_and_work_with_the_index(checkpoint_copy: Path) -> None:
    from m3_integrations import M3Index, M3Model
    from m3_integrations.evaluation import BGE_M3_DEFAULTS, NO_HEADS_DEFAULTS, recommended_search_defaults

    (checkpoint_copy / "sparse_linear.pt").unlink()
    (checkpoint_copy / "colbert_linear.pt").unlink()
    model = M3Model(str(checkpoint_copy), device="cpu", allow_missing_heads=True)
    defaults = recommended_search_defaults(model)
    assert defaults == NO_HEADS_DEFAULTS
    defaults["weights"]["dense"] = 9.0  # a copy: the module's data stays as measured
    assert NO_HEADS_DEFAULTS["weights"]["dense"] != 9.0
    index = M3Index(model)
    index.add(["Paris is the capital of France.", "The fox jumps.", "서울은 수도이다."], ids=["a", "b", "c"])
    hits = index.search("capital of France", k=3, mode="hybrid", **recommended_search_defaults(model))
    assert {h.id for h in hits} == {"a", "b", "c"}
    assert all(set(h.scores) == {"dense", "bm25", "colbert"} for h in hits)  # the keys M3Index accepts
    assert recommended_search_defaults(type("M", (), {"has_sparse": True, "has_colbert_head": True})) == (
        BGE_M3_DEFAULTS
    )


def test_evaluate_index_labels_a_run_with_the_fusion_the_index_searches_with(plain_checkpoint: Path) -> None:
    from m3_integrations import M3Index, M3Model
    from m3_integrations.evaluation import evaluate_index

    data = BeirDataset(name="toy", corpus={}, queries={"q1": "capital"}, qrels={"q1": {"a": 1}})
    index = M3Index(M3Model(str(plain_checkpoint), device="cpu", allow_missing_heads=True))
    index.add(["Paris is the capital of France.", "The fox jumps."], ids=["a", "b"])
    assert index.default_fusion == "confidence"
    assert evaluate_index(index, data, k=2, latency_queries=0).name == "hybrid/confidence"
    assert evaluate_index(index, data, k=2, latency_queries=0, mode="dense", fusion="rrf").name == "dense/rrf"


@pytest.mark.parametrize(
    "name",
    [
        "m3_integrations.evaluation.beir",
        "m3_integrations.evaluation.metrics",
        "m3_integrations.evaluation.defaults",
        "m3_integrations.evaluation.significance",
    ],
)
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def naive_bootstrap_means(diff: list[float], resamples: int, seed: int) -> list[float]:
    """Resampled means of ``diff`` with numpy's generator drawing one query index at a time."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(diff), size=(resamples, len(diff)))
    return [sum(diff[i] for i in row) / len(diff) for row in draws.tolist()]


def test_paired_bootstrap_interval_is_the_percentiles_of_resampled_mean_differences() -> None:
    import numpy as np

    from m3_integrations.evaluation import paired_bootstrap_ci

    rng = random.Random(7)
    a = [rng.random() for _ in range(40)]
    b = [x - 0.05 + rng.gauss(0, 0.1) for x in a]
    mean, low, high = paired_bootstrap_ci(a, b, resamples=500, seed=3)
    diff = [x - y for x, y in zip(a, b, strict=True)]
    means = sorted(naive_bootstrap_means(diff, 500, 3))
    assert mean == pytest.approx(sum(diff) / len(diff))
    assert low == pytest.approx(float(np.quantile(means, 0.025)), abs=1e-12)
    assert high == pytest.approx(float(np.quantile(means, 0.975)), abs=1e-12)
    assert low < mean < high
    assert paired_bootstrap_ci(a, b, resamples=500, seed=3) == (mean, low, high)  # seeded
    # Identical runs cannot differ; a constant shift is exactly that shift.
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0, 0.0)
    shifted = paired_bootstrap_ci([x + 0.25 for x in a], a)
    assert shifted == pytest.approx((0.25, 0.25, 0.25))
    # A wider interval at a higher confidence.
    _, low99, high99 = paired_bootstrap_ci(a, b, resamples=500, seed=3, confidence=0.99)
    assert low99 <= low and high99 >= high


def test_paired_bootstrap_covers_the_true_difference_about_as_often_as_claimed() -> None:
    import numpy as np

    from m3_integrations.evaluation import paired_bootstrap_ci

    rng = np.random.default_rng(11)
    covered = 0
    for trial in range(200):
        noise = rng.normal(0.02, 0.2, size=60)  # true mean difference 0.02
        _, low, high = paired_bootstrap_ci(noise, np.zeros(60), resamples=400, seed=trial)
        covered += low <= 0.02 <= high
    assert 0.88 <= covered / 200 <= 0.99  # about 95%, with room for the bootstrap's small-sample bias


def test_paired_bootstrap_bad_input_is_named() -> None:
    from m3_integrations.evaluation import paired_bootstrap_ci

    with pytest.raises(ValueError, match="one value per query"):
        paired_bootstrap_ci([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap_ci([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap_ci([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap_ci([0.1], [0.2], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap_ci([0.1], [0.2], resamples=0)
