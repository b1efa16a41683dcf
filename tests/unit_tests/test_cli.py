"""The ``m3-integrations`` command line on tiny files and the tiny checkpoint: exit codes and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3_integrations.cli import EXIT_INPUT, EXIT_MODE, EXIT_OK, EXIT_USAGE, main

DOCS = {
    "capitals.txt": "Paris is the capital of France and Berlin is the capital of Germany.",
    "fox.md": "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "sub/korean.txt": "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "sub/hybrid.txt": "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
    "ignored.bin": "not a text document",
}


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    corpus = [
        ("d1", "France", "Paris is the capital of France."),
        ("d2", "", "The quick brown fox jumps over the lazy dog."),
        ("d3", "", "서울은 대한민국의 수도이다."),
        ("d4", "", "Vector databases store embeddings for similarity search."),
    ]
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, title, text in corpus:
            fh.write(json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n")
    queries = [("q1", "capital of France"), ("q2", "quick fox"), ("q3", "대한민국의 수도")]
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries:
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (root / "qrels" / "test.tsv").write_text("q1\td1\t2\nq2\td2\t1\nq3\td3\t1\n", encoding="utf-8")
    return root


def eval_args(data: Path, model: str, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--model", model, *extra]


@pytest.fixture
def built_index(docs_dir: Path, tmp_path: Path, tiny_checkpoint: str) -> Path:
    out = tmp_path / "my.index"
    assert main(["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "--quiet"]) == EXIT_OK
    return out


def test_index_then_search_prints_ids_scores_and_snippets(
    built_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(
        ["search", str(built_index), "capital of France", "-k", "3", "--quiet", "--snippet-chars", "20"]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    lines = out.splitlines()
    hit_lines = [line for line in lines if line[:2] in ("1.", "2.", "3.")]
    assert len(hit_lines) == 3
    ids = {line.split()[1] for line in hit_lines}
    assert ids <= {"capitals.txt", "fox.md", "sub/korean.txt", "sub/hybrid.txt"}
    assert all("dense=" in line and "colbert=" in line and "score=" in line for line in hit_lines)
    snippets = [line for line in lines if line.startswith("   ")]
    assert len(snippets) == 3 and all(len(s.strip()) <= 21 for s in snippets)


def test_search_json_matches_the_index(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["search", str(built_index), "quick brown fox", "-k", "4", "--json", "--mode", "dense"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4
    assert sorted(h["id"] for h in hits) == ["capitals.txt", "fox.md", "sub/hybrid.txt", "sub/korean.txt"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h["score"] == pytest.approx(h["scores"]["dense"], abs=1e-6) for h in hits)
    assert {h["metadata"]["source"].rsplit("/", 1)[-1] for h in hits} >= {"fox.md"}


@pytest.mark.parametrize("fusion_method", ["relative_score", "confidence"])
def test_search_fusion_option_reaches_the_index(
    built_index: Path, fusion_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3_integrations import M3Index, M3Model
    from m3_integrations.cli import MODEL_CONFIG_FILE

    capsys.readouterr()
    argv = ["search", str(built_index), "quick brown fox", "-k", "5", "--json", "--fusion", fusion_method]
    assert main(argv) == 0
    hits = json.loads(capsys.readouterr().out)
    saved = json.loads((built_index / MODEL_CONFIG_FILE).read_text(encoding="utf-8"))
    index = M3Index.load(built_index, model=M3Model(saved["model"], **saved.get("model_kwargs", {})))
    expected = index.search("quick brown fox", k=5, fusion=fusion_method)
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-6)


def test_index_reads_beir_jsonl(beir_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    out = tmp_path / "beir.index"
    code = main(
        ["index", str(beir_dir / "corpus.jsonl"), "--out", str(out), "--model", tiny_checkpoint, "-q"]
    )
    assert code == EXIT_OK
    assert "indexed 4 documents" in capsys.readouterr().out
    assert main(["search", str(out), "Paris", "-k", "4", "--json", "-q"]) == EXIT_OK
    hits = json.loads(capsys.readouterr().out)
    assert {h["id"] for h in hits} == {"d1", "d2", "d3", "d4"}
    assert next(h for h in hits if h["id"] == "d1")["text"] == "France\nParis is the capital of France."


def test_index_with_word_bm25_tokens(docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    out = tmp_path / "word.index"
    args = ["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "-q"]
    assert main([*args, "--lexical", "bm25", "--bm25-tokenizer", "word"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bm25_tokenizer"] == "word"
    assert "bm25_vocab.json" in manifest["files"]  # word columns are persisted with the index
    capsys.readouterr()
    assert (
        main(["search", str(out), "quick brown fox", "-k", "1", "--json", "--mode", "sparse", "-q"])
        == EXIT_OK
    )
    assert json.loads(capsys.readouterr().out)[0]["id"] == "fox.md"
    assert main([*args, "--bm25-tokenizer", "bpe"]) == EXIT_USAGE


def test_index_with_stemmed_bm25_words(docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    pytest.importorskip("Stemmer")
    out = tmp_path / "stemmed.index"
    args = ["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "-q", "--lexical", "bm25"]
    word = ["--bm25-tokenizer", "word"]
    assert main([*args, *word, "--bm25-stemmer", "english", "--bm25-stopwords", "english"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bm25_words"]["stemmer"] == "english" and "the" in manifest["bm25_words"]["stopwords"]
    capsys.readouterr()
    assert main(["search", str(out), "foxes", "-k", "1", "--json", "--mode", "sparse", "-q"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["id"] == "fox.md"  # "foxes" found through stemming
    # Word options without word tokens, or an unknown language: usage errors before any model loads.
    assert main([*args, "--bm25-tokenizer", "model", "--bm25-stemmer", "english"]) == EXIT_USAGE
    assert "apply to words, not --bm25-tokenizer model" in capsys.readouterr().err
    assert main([*args, *word, "--bm25-stemmer", "klingon"]) == EXIT_USAGE
    assert "unknown --bm25-stemmer 'klingon'" in capsys.readouterr().err


def test_stemmer_without_its_package_is_a_usage_error(
    docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "snowballstemmer", None)
    args = ["index", str(docs_dir), "--out", str(tmp_path / "i"), "--model", tiny_checkpoint, "-q"]
    assert main([*args, "--bm25-stemmer", "english"]) == EXIT_USAGE
    assert "m3-integrations[stemming]" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()  # nothing written


def test_missing_paths_exit_3(tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    assert (
        main(["index", str(tmp_path / "nope"), "--out", str(tmp_path / "i"), "--model", tiny_checkpoint]) == 3
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "nope"), "query"]) == EXIT_INPUT
    assert "index folder" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "nope"), "--model", tiny_checkpoint]) == EXIT_INPUT
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("hello", encoding="utf-8")
    code = main(
        ["index", str(tmp_path / "d"), "--out", str(tmp_path / "i"), "--model", str(tmp_path / "no-model")]
    )
    assert code == EXIT_INPUT
    assert "model folder" in capsys.readouterr().err


def test_empty_corpus_exits_3(tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("   \n", encoding="utf-8")
    assert main(["index", str(empty), "--out", str(tmp_path / "i"), "--model", tiny_checkpoint]) == EXIT_INPUT
    assert "no documents" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_mode_the_model_cannot_give_exits_4(
    beir_dir: Path, checkpoint_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (checkpoint_copy / "sparse_linear.pt").unlink()
    code = main(
        [
            "eval",
            "--data",
            str(beir_dir),
            "--model",
            str(checkpoint_copy),
            "--allow-missing-heads",
            "--lexical",
            "m3",
            "--mode",
            "sparse",
            "-q",
        ]
    )
    assert code == EXIT_MODE
    assert "sparse head" in capsys.readouterr().err
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.txt").write_text("hello world", encoding="utf-8")
    out = tmp_path / "nocol.index"
    code = main(
        [
            "index",
            str(docs),
            "--out",
            str(out),
            "--model",
            str(checkpoint_copy),
            "--allow-missing-heads",
            "--no-colbert",
            "-q",
        ]
    )
    assert code == EXIT_OK
    assert main(["search", str(out), "hello", "--mode", "colbert", "-q"]) == EXIT_MODE
    assert "ColBERT" in capsys.readouterr().err


def test_cli_offers_every_fusion_of_the_core() -> None:
    from m3_integrations import cli, fusion

    assert cli.FUSIONS == fusion.FUSION_METHODS


def test_usage_errors_exit_2(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["search", str(built_index), "q", "--mode", "nonsense"]) == EXIT_USAGE
    assert main(["search", str(built_index), "q", "-k", "0"]) == EXIT_USAGE
    assert main(["search", str(built_index), "q", "--weights", "{bad"]) == EXIT_USAGE
    assert "--weights" in capsys.readouterr().err
    assert main(["--help"]) == EXIT_OK


def test_eval_prints_table_and_writes_json_and_report(
    beir_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    json_out, report = tmp_path / "r.json", tmp_path / "r.md"
    extra = "--mode dense hybrid --fusion weighted rrf --quiet --latency-queries 2".split()
    code = main(
        eval_args(beir_dir, tiny_checkpoint, *extra, "--json", str(json_out), "--report", str(report))
    )
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert err == ""  # --quiet: no progress bars, no logs
    assert "| dataset | configuration | ndcg@10 | recall@100 | mrr@10 |" in out
    data = json.loads(json_out.read_text())
    names = [r["name"] for r in data["results"]]
    assert names == ["dense", "hybrid/weighted", "hybrid/rrf"]
    assert data["num_documents"] == 4 and data["num_queries"] == 3
    for r in data["results"]:
        # 4 documents, k=100: every relevant document is retrieved
        assert r["metrics"]["recall@100"] == 1.0
        assert 0 < r["metrics"]["ndcg@10"] <= 1
        assert r["build_seconds"] > 0 and r["query_p50_ms"] > 0
    assert report.read_text().startswith("# Evaluation of")


def test_eval_metrics_agree_with_a_direct_index_run(
    beir_dir: Path, tiny_model, tiny_checkpoint: str, tmp_path: Path
):
    from m3_integrations import M3Index
    from m3_integrations.evaluation import evaluate_run, load_beir

    json_out = tmp_path / "r.json"
    assert main(eval_args(beir_dir, tiny_checkpoint, "--mode", "dense", "-q", "--json", str(json_out))) == 0
    data = load_beir(beir_dir)
    index = M3Index(tiny_model)
    index.add([t for _, t in data.documents()], ids=[d for d, _ in data.documents()])
    run = {qid: [h.id for h in index.search(q, k=4, mode="dense")] for qid, q in data.queries.items()}
    expected = evaluate_run(run, data.qrels)
    got = json.loads(json_out.read_text())["results"][0]["metrics"]
    assert got == pytest.approx(expected)
