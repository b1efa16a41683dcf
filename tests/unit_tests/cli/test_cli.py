"""The ``m3-integrations`` command line on tiny files and the tiny checkpoint: exit codes and output."""

from __future__ import annotations

import json
import re
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


def _write_docs(root: Path) -> Path:
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    return _write_docs(tmp_path / "docs")


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


@pytest.fixture(scope="module")
def pristine_index(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: str) -> Path:
    root = tmp_path_factory.mktemp("cli-index")
    docs, out = _write_docs(root / "docs"), root / "my.index"
    assert main(["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "--quiet"]) == EXIT_OK
    return out


@pytest.fixture
def built_index(pristine_index: Path, tmp_path: Path) -> Path:
    """The documents of ``DOCS`` indexed with the tiny checkpoint: a private copy a test may edit."""
    import shutil

    return Path(shutil.copytree(pristine_index, tmp_path / "my.index"))


def test_index_then_search_prints_ids_scores_and_snippets(
    built_index: Path, tiny_checkpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(
        [
            *("search", str(built_index), "capital of France", "-k", "3", "--quiet"),
            *("--snippet-chars", "20", "--model", tiny_checkpoint),
        ]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    lines = out.splitlines()
    hit_lines = [line for line in lines if line[:2] in ("1.", "2.", "3.")]
    assert len(hit_lines) == 3
    ids = {line.split()[1] for line in hit_lines}
    assert ids <= {"capitals.txt#0", "fox.md#0", "sub/korean.txt#0", "sub/hybrid.txt#0"}  # one chunk each
    assert all("dense=" in line and "colbert=" in line and "score=" in line for line in hit_lines)
    snippets = [line for line in lines if line.startswith("   ")]
    assert len(snippets) == 3 and all(len(s.strip()) <= 21 for s in snippets)


def test_search_json_matches_the_index(
    built_index: Path, tiny_checkpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["search", str(built_index), "quick brown fox", "-k", "4", "--json", "--mode", "dense"]
    assert main([*argv, "--model", tiny_checkpoint]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["query"] == "quick brown fox" and entry["query_id"] is None
    hits = entry["hits"]
    assert len(hits) == 4
    assert sorted(h["metadata"]["source_id"] for h in hits) == [
        "capitals.txt",
        "fox.md",
        "sub/hybrid.txt",
        "sub/korean.txt",
    ]
    assert all(h["id"] == h["metadata"]["source_id"] + "#0" for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h["score"] == pytest.approx(h["scores"]["dense"], abs=1e-6) for h in hits)
    assert {h["metadata"]["source"].rsplit("/", 1)[-1] for h in hits} >= {"fox.md"}


@pytest.mark.parametrize("fusion_method", ["relative_score", "confidence"])
def test_search_fusion_option_reaches_the_index(
    built_index: Path, tiny_checkpoint: str, fusion_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3_integrations import M3Index, M3Model

    capsys.readouterr()
    argv = ["search", str(built_index), "quick brown fox", "-k", "5", "--json", "--fusion", fusion_method]
    assert main([*argv, "--model", tiny_checkpoint]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    index = M3Index.load(built_index, model=M3Model(tiny_checkpoint, device="cpu"))
    expected = index.search("quick brown fox", k=5, fusion=fusion_method)
    assert [h["id"] for h in entry["hits"]] == [h.id for h in expected]
    assert [h["score"] for h in entry["hits"]] == pytest.approx([h.score for h in expected], rel=1e-5)


def test_index_reads_beir_jsonl(beir_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    out = tmp_path / "beir.index"
    code = main(
        ["index", str(beir_dir / "corpus.jsonl"), "--out", str(out), "--model", tiny_checkpoint, "-q"]
    )
    assert code == EXIT_OK
    assert "indexed 4 documents" in capsys.readouterr().out
    assert main(["search", str(out), "Paris", "-k", "4", "--json", "-q", "--model", tiny_checkpoint]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
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
    search = ["search", str(out), "quick brown fox", "-k", "1", "--json", "--mode", "sparse", "-q"]
    assert main([*search, "--model", tiny_checkpoint]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["hits"][0]["id"] == "fox.md#0"
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
    search = ["search", str(out), "foxes", "-k", "1", "--json", "--mode", "sparse", "-q"]
    assert main([*search, "--model", tiny_checkpoint]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)[0]["hits"][0]["id"] == "fox.md#0"  # found through stemming
    # Word options without word tokens, or an unknown language: usage errors before any model loads.
    assert main([*args, "--bm25-tokenizer", "model", "--bm25-stemmer", "english"]) == EXIT_USAGE
    assert "apply to words, not --bm25-tokenizer model" in capsys.readouterr().err
    assert main([*args, *word, "--bm25-stemmer", "klingon"]) == EXIT_USAGE
    assert "unknown --bm25-stemmer 'klingon'" in capsys.readouterr().err


def test_index_language_and_colbert_storage_flags(
    docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys
) -> None:
    pytest.importorskip("Stemmer")
    pytest.importorskip("bm25s")
    out = tmp_path / "fi.index"
    args = ["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "-q", "--lexical", "bm25"]
    assert main([*args, "--language", "fi", "--colbert-storage", "compact"]) == EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["language"]["setting"] == "fi"
    assert manifest["bm25_words"]["stemmer"] == "finnish"  # the language chose the analyzer
    assert manifest["colbert_storage"] == "compact"
    plain = tmp_path / "plain.index"
    assert main([*args[:3], str(plain), *args[4:], "--language", "none"]) == EXIT_OK
    manifest = json.loads((plain / "manifest.json").read_text())
    assert manifest["bm25_words"]["stemmer"] is None and manifest.get("language") is None
    assert manifest["colbert_storage"] == "exact"
    capsys.readouterr()
    # A malformed code or an unknown storage: usage errors before any model loads, nothing written.
    assert main([*args[:3], str(tmp_path / "bad"), *args[4:], "--language", "Finnish!"]) == EXIT_USAGE
    assert "--language 'Finnish!'" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "bad"), *args[4:], "--colbert-storage", "tiny"]) == EXIT_USAGE
    assert "--colbert-storage: invalid choice: 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


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
    assert (
        main(["search", str(out), "hello", "--mode", "colbert", "-q", "--model", str(checkpoint_copy)]) == 4
    )
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


# ---------------------------------------------------------------------------- model identity and trust
def _hostile_model(folder: Path, marker: Path, tiny_checkpoint: str) -> Path:
    """A checkpoint folder whose config names Python code that, once imported, creates ``marker``."""
    import shutil

    shutil.copytree(tiny_checkpoint, folder)
    (folder / "evil_code.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import XLMRobertaConfig as EvilConfig, XLMRobertaModel as EvilModel\n",
        encoding="utf-8",
    )
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "evil_code.EvilConfig", "AutoModel": "evil_code.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _edit_manifest(index: Path, **identity: object) -> None:
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    manifest["model"].update(identity)
    (index / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_index_records_the_encoder_in_the_manifest_only(
    docs_dir: Path, plain_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    from m3_integrations import M3Index, M3Model

    checkpoint = str(plain_checkpoint)
    out = tmp_path / "e5-like.index"
    settings = ["--allow-missing-heads", "--pooling", "mean", "--query-instruction", "query: "]
    settings += ["--passage-instruction", "passage: ", "--query-max-length", "64"]
    assert main(["index", str(docs_dir), "--out", str(out), "--model", checkpoint, "-q", *settings]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(p.name for p in out.iterdir()) == [".m3-index.lock", "manifest.json", manifest["data"]]
    assert sorted(manifest["files"]) == ["arrays.npz", "bm25_vocab.json", "documents.json"]
    recorded = manifest["model"]
    assert {k: recorded[k] for k in ("pooling", "query_instruction", "passage_instruction")} == {
        "pooling": "mean",
        "query_instruction": "query: ",
        "passage_instruction": "passage: ",
    }
    assert recorded["allow_missing_heads"] is True and recorded["query_max_length"] == 64

    # `search --model` alone rebuilds the same query encoder from the manifest.
    capsys.readouterr()
    argv = ["search", str(out), "capital of France", "-k", "4", "--json", "-q", "--model", checkpoint]
    assert main(argv) == EXIT_OK
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    model = M3Model(
        checkpoint,
        device="cpu",
        allow_missing_heads=True,
        pooling="mean",
        query_instruction="query: ",
        passage_instruction="passage: ",
        query_max_length=64,
    )
    expected = M3Index.load(out, model).search("capital of France", k=4)
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], rel=1e-5)


def test_identity_holds_the_query_encoder_settings(plain_checkpoint: Path) -> None:
    from m3_integrations import M3Model

    model = M3Model(
        plain_checkpoint,
        device="cpu",
        allow_missing_heads=True,
        pooling="mean",
        query_instruction="query: ",
        query_max_length=100,
        normalize_embeddings=False,
    )
    identity = model.identity
    assert identity["allow_missing_heads"] is True and identity["normalize_embeddings"] is False
    assert (identity["pooling"], identity["query_instruction"], identity["passage_instruction"]) == (
        "mean",
        "query: ",
        None,
    )
    assert identity["query_max_length"] == 100
    assert json.loads(json.dumps(identity)) == identity  # plain JSON values only


@pytest.mark.parametrize("with_model", [False, True])
def test_a_hostile_index_folder_never_runs_code(
    *,
    with_model: bool,
    built_index: Path,
    tiny_checkpoint: str,
    tmp_path: Path,
    model_loads: list,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "code-ran"
    evil = _hostile_model(tmp_path / "shared-model", marker, tiny_checkpoint)
    # What the old CLI read and obeyed, and the same claims in the manifest's model identity.
    (built_index / "cli_model.json").write_text(
        json.dumps({"model": str(evil), "model_kwargs": {"trust_remote_code": True}}), encoding="utf-8"
    )
    _edit_manifest(built_index, model_name_or_path=str(evil), trust_remote_code=True, device="meta")
    capsys.readouterr()
    argv = ["search", str(built_index), "capital of France", "--json"]
    code = main([*argv, "--model", tiny_checkpoint] if with_model else argv)
    captured = capsys.readouterr()
    assert not marker.exists()
    assert all("trust_remote_code" not in kwargs and "device" not in kwargs for _, kwargs in model_loads)
    assert "ignoring" in captured.err and "cli_model.json" in captured.err
    if with_model:
        assert code == EXIT_OK, captured.err
        assert [name for name, _ in model_loads] == [tiny_checkpoint]
        assert len(json.loads(captured.out)[0]["hits"]) == 4
    else:
        assert code == EXIT_USAGE
        assert model_loads == []
        assert str(evil) in captured.err and "pass --model PATH" in captured.err


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("pooling", "evil"),
        ("query_max_length", "512"),
        ("query_max_length", 10**9),
        ("allow_missing_heads", 1),
    ],
)
def test_recorded_settings_are_checked(
    *, setting: str, value: object, built_index: Path, tiny_checkpoint: str, model_loads: list, capsys
) -> None:
    _edit_manifest(built_index, **{setting: value})
    assert main(["search", str(built_index), "fox", "--model", tiny_checkpoint]) == EXIT_INPUT
    assert f"invalid model setting {setting}" in capsys.readouterr().err
    assert model_loads == []


@pytest.mark.parametrize(
    "recorded", ["../model", "/srv/models/m3", "~/m3", "org/name/extra", "local-folder", 7]
)
def test_search_without_model_uses_only_a_plain_hub_id(
    *, recorded: object, built_index: Path, tmp_path: Path, model_loads: list, capsys, monkeypatch
) -> None:
    (tmp_path / "local-folder").mkdir()
    monkeypatch.chdir(tmp_path)  # "local-folder" names a folder here, so it is not taken as a hub id
    _edit_manifest(built_index, model_name_or_path=recorded)
    assert main(["search", str(built_index), "fox"]) == EXIT_USAGE
    assert "pass --model PATH" in capsys.readouterr().err
    assert model_loads == []


def test_search_without_model_fetches_a_recorded_hub_id(
    built_index: Path, model_loads: list, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the fetch fails at once, as on a machine without network
    _edit_manifest(built_index, model_name_or_path="m3-integrations-tests/no-such-model", pooling="mean")
    assert main(["search", str(built_index), "fox"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert [(name, kwargs.get("pooling")) for name, kwargs in model_loads] == [
        ("m3-integrations-tests/no-such-model", "mean")
    ]
    assert "--model /path/to/folder" in err and "--allow-missing-heads --pooling mean" in err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------- messages and exit codes
def test_a_checkpoint_without_heads_is_refused_with_the_flags_it_needs(
    docs_dir: Path, plain_checkpoint: Path, tmp_path: Path, model_loads: list, capsys
) -> None:
    checkpoint = str(plain_checkpoint)
    code = main(["index", str(docs_dir), "--out", str(tmp_path / "i"), "--model", checkpoint, "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and model_loads == []
    assert "--allow-missing-heads --pooling mean" in err
    assert '--query-instruction "query: " --passage-instruction "passage: "' in err
    assert "allow_missing_heads" not in err


def test_library_messages_name_flags_not_python_arguments(
    docs_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3_integrations import M3Model, MissingHeadsError

    def missing_heads(self, name, **kwargs):
        msg = f"checkpoint {name!r} has no sparse_linear.pt; pass allow_missing_heads=True, pooling='mean'"
        raise MissingHeadsError(msg)

    monkeypatch.setattr(M3Model, "__init__", missing_heads)
    code = main(["index", str(docs_dir), "--out", str(tmp_path / "i"), "--model", "org/plain-encoder"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT
    assert "pass --allow-missing-heads, --pooling mean" in err and "=" not in err


@pytest.mark.parametrize("command", ["index", "search", "eval"])
def test_help_shows_the_default_model(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from m3_integrations import cli, model

    assert main([command, "--help"]) == EXIT_OK
    assert "BAAI/bge-m3" in " ".join(capsys.readouterr().out.split())
    assert cli.DEFAULT_MODEL == model.DEFAULT_MODEL


def test_cli_weight_names_are_the_index_signals() -> None:
    from m3_integrations import cli, index

    assert cli.SIGNALS == index.WEIGHT_KEYS


@pytest.mark.parametrize(
    "weights",
    ['{"lexcal": 1}', '{"dense": -0.5}', '{"dense": true}', '{"dense": "1"}', "[0, 0, 0]", "[1, 2]"],
)
def test_cli_weights_fail_with_the_index_message(weights: str) -> None:
    import argparse

    from m3_integrations import cli
    from m3_integrations.index.options import check_weights

    with pytest.raises(ValueError) as expected:
        check_weights(json.loads(weights))
    with pytest.raises(argparse.ArgumentTypeError) as got:
        cli._weights(weights)
    assert str(got.value) == str(expected.value)


BAD_OPTIONS = [
    (["--device", "gpu"], "not a device"),
    (["--device", "cuda:x"], "not a device"),
    (["--weights", "{bad"], "not JSON"),
    (["--weights", '{"dense": 1, "lexcal": 1}'], "unknown weight 'lexcal'"),
    (["--weights", '{"dense": -0.5}'], "must be >= 0"),
    (["--weights", '{"dense": NaN}'], "finite number"),
    (["--weights", '{"dense": true}'], "finite number"),
    (["--weights", "[0, 0, 0]"], "all zero"),
    (["--weights", "[1, 2]"], "list of 3 or 4"),
    (["-k", "0"], "positive integer"),
    (["-k", "ten"], "positive integer"),
    (["--batch-size", "-1"], "positive integer"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS)
@pytest.mark.parametrize("command", ["search", "eval"])
def test_bad_options_exit_2_before_any_model_loads(
    *,
    command: str,
    options: list[str],
    message: str,
    tmp_path: Path,
    beir_dir: Path,
    tiny_checkpoint: str,
    model_loads: list,
    capsys,
) -> None:
    if command == "search":
        argv = ["search", str(tmp_path / "any.index"), "fox", "--model", tiny_checkpoint, *options]
    else:
        argv = eval_args(beir_dir, tiny_checkpoint, *options)
    capsys.readouterr()
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert model_loads == []


def test_an_unavailable_device_exits_2(
    *,
    built_index: Path,
    docs_dir: Path,
    tmp_path: Path,
    tiny_checkpoint: str,
    model_loads: list,
    capsys,
    monkeypatch,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["search", str(built_index), "fox", "--device", "cuda", "--model", tiny_checkpoint]) == 2
    assert "CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "i"
    assert (
        main(["index", str(docs_dir), "--out", str(out), "--device", "cuda:1", "--model", tiny_checkpoint])
        == 2
    )
    assert "has 1 cuda device(s)" in capsys.readouterr().err
    assert model_loads == [] and not out.exists()


@pytest.mark.parametrize("queries", [[""], ["   "], ["fox", " "], []])
def test_empty_queries_exit_2(
    queries: list[str], built_index: Path, tiny_checkpoint: str, model_loads: list, capsys
) -> None:
    assert main(["search", str(built_index), *queries, "--model", tiny_checkpoint]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert ("is empty" in err) if queries else ("no query" in err)
    assert model_loads == []


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["other-folder", "regular-file", "the-input", "above-the-input"])
def test_index_out_never_replaces_what_is_not_an_index(
    *, target: str, docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, model_loads: list, capsys
) -> None:
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("my own file", encoding="utf-8")
    (tmp_path / "file.txt").write_text("a file", encoding="utf-8")
    out = {
        "other-folder": other,
        "regular-file": tmp_path / "file.txt",
        "the-input": docs_dir,
        "above-the-input": tmp_path,
    }[target]
    before = _tree(tmp_path)
    assert main(["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--out" in err and err.count("\n") == 1
    assert _tree(tmp_path) == before
    assert model_loads == []


def test_index_out_may_be_empty_or_an_index(
    docs_dir: Path, built_index: Path, tmp_path: Path, tiny_checkpoint: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, built_index):
        assert main(["index", str(docs_dir), "--out", str(out), "--model", tiny_checkpoint, "-q"]) == EXIT_OK
        assert (out / "manifest.json").is_file()


def test_checkpoint_and_index_problems_exit_3_with_one_line(
    *, docs_dir: Path, built_index: Path, checkpoint_copy: Path, tiny_checkpoint: str, tmp_path: Path, capsys
) -> None:
    (checkpoint_copy / "config.json").write_text("{not json", encoding="utf-8")
    argv = ["index", str(docs_dir), "--out", str(tmp_path / "i"), "--model", str(checkpoint_copy)]
    assert main(argv) == EXIT_INPUT
    # The reader's progress and its note on the skipped .bin file, then the error, in one line.
    lines = capsys.readouterr().err.splitlines()
    assert "skipped 1 file of unsupported type .bin: ignored.bin" in lines
    assert lines[-1].startswith("m3-integrations index: error: cannot load model folder")
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in "".join(lines)
    assert main([*argv, "-v"]) == EXIT_INPUT
    assert "Traceback" in capsys.readouterr().err  # -v shows where it came from

    data = json.loads((built_index / "manifest.json").read_text(encoding="utf-8"))["data"]
    (built_index / data / "documents.json").write_text('{"ids": []}', encoding="utf-8")
    assert main(["search", str(built_index), "fox", "--model", tiny_checkpoint, "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "cannot load index" in err and err.count("\n") == 1


def test_verbose_shows_the_debug_log(built_index: Path, tiny_checkpoint: str, capsys) -> None:
    assert main(["search", str(built_index), "fox", "--model", tiny_checkpoint, "-v"]) == EXIT_OK
    assert "DEBUG m3_integrations.cli: model settings for" in capsys.readouterr().err
    assert main(["search", str(built_index), "fox", "--model", tiny_checkpoint]) == EXIT_OK
    assert "DEBUG" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- many queries, one model
def test_search_takes_many_queries_with_one_model_load(
    *,
    built_index: Path,
    tiny_checkpoint: str,
    tmp_path: Path,
    model_loads: list,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from m3_integrations import M3Index, M3Model

    lines = tmp_path / "queries.txt"
    lines.write_text("quick brown fox\n\nHybrid retrieval\n", encoding="utf-8")
    beir = tmp_path / "queries.jsonl"
    beir.write_text(json.dumps({"_id": "q7", "text": "대한민국의 수도"}, ensure_ascii=False) + "\n", "utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO("lazy dog\n"))
    argv = ["search", str(built_index), "capital of France", "-", "--queries-file", str(lines), "-k", "2"]
    assert main([*argv, "--json", "--model", tiny_checkpoint, "-q"]) == EXIT_OK
    entries = json.loads(capsys.readouterr().out)
    assert (
        main(["search", str(built_index), "--queries-file", str(beir), "--json", "--model", tiny_checkpoint])
        == 0
    )
    entries += json.loads(capsys.readouterr().out)
    assert len(model_loads) == 2  # one per command, whatever the number of queries

    queries = ["capital of France", "lazy dog", "quick brown fox", "Hybrid retrieval", "대한민국의 수도"]
    assert [e["query"] for e in entries] == queries
    assert [e["query_id"] for e in entries] == [None, None, None, None, "q7"]
    index = M3Index.load(built_index, M3Model(tiny_checkpoint, device="cpu"))
    for entry in entries:
        expected = index.search(entry["query"], k=len(entry["hits"]))
        assert [h["id"] for h in entry["hits"]] == [h.id for h in expected]
        assert [h["score"] for h in entry["hits"]] == pytest.approx([h.score for h in expected], rel=1e-5)
    assert [len(e["hits"]) for e in entries] == [2, 2, 2, 2, 4]  # -k 2, then the default 5 of 4 docs


def test_search_prints_each_query_and_reads_options_after_the_queries(
    built_index: Path, tiny_checkpoint: str, capsys
) -> None:
    argv = ["search", str(built_index), "-k", "1", "fox", "--model", tiny_checkpoint, "capital", "-q"]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("query 1/2: fox\n1. ") and "\n\nquery 2/2: capital\n1. " in out


def test_a_bad_queries_file_exits_3(built_index: Path, tiny_checkpoint: str, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "queries.jsonl"
    bad.write_text('{"text": "no id"}\n', encoding="utf-8")
    for path in (bad, tmp_path / "missing.txt"):
        assert (
            main(["search", str(built_index), "--queries-file", str(path), "--model", tiny_checkpoint]) == 3
        )
        assert "--queries-file" in capsys.readouterr().err


# ---------------------------------------------------------------------------- eval
def test_eval_reuses_an_index_built_from_the_corpus(
    *,
    beir_dir: Path,
    tiny_checkpoint: str,
    tmp_path: Path,
    model_loads: list,
    capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from m3_integrations import M3Index

    index = tmp_path / "beir.index"
    assert (
        main(["index", str(beir_dir / "corpus.jsonl"), "--out", str(index), "--model", tiny_checkpoint, "-q"])
        == 0
    )
    built, reused = tmp_path / "built.json", tmp_path / "reused.json"
    modes = ["--mode", "dense", "hybrid", "-q", "--latency-queries", "0"]
    assert main(eval_args(beir_dir, tiny_checkpoint, *modes, "--json", str(built))) == EXIT_OK

    def no_encoding(*args, **kwargs):
        raise AssertionError("eval --index encoded the corpus again")

    monkeypatch.setattr(M3Index, "add", no_encoding)
    model_loads.clear()
    argv = ["eval", "--data", str(beir_dir), "--index", str(index), "--model", tiny_checkpoint]
    assert main([*argv, *modes, "--json", str(reused)]) == EXIT_OK
    assert len(model_loads) == 1
    built_results = json.loads(built.read_text())["results"]
    reused_results = json.loads(reused.read_text())["results"]
    assert [r["name"] for r in reused_results] == ["dense", "hybrid"]
    for a, b in zip(built_results, reused_results, strict=True):
        assert b["metrics"] == pytest.approx(a["metrics"], rel=1e-6)
        assert b["build_seconds"] is None
    assert json.loads(reused.read_text())["index"] == str(index)

    # Index options say how to build an index: with --index they are a mistake.
    assert main([*argv, "--lexical", "bm25"]) == EXIT_USAGE
    assert "--lexical" in capsys.readouterr().err


def test_eval_refuses_an_index_of_another_corpus(
    beir_dir: Path, built_index: Path, tiny_checkpoint: str, capsys
) -> None:
    argv = ["eval", "--data", str(beir_dir), "--index", str(built_index), "--model", tiny_checkpoint, "-q"]
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "was not built from the corpus" in err
    assert "4 of its documents are not in the corpus ('capitals.txt', 'fox.md', 'sub/hybrid.txt', ...)" in err
    assert "4 corpus documents are not in it ('d1', 'd2', 'd3', ...)" in err


def test_eval_names_the_dataset_by_its_last_two_folders(
    beir_dir: Path, tiny_checkpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "r.json"
    argv = eval_args(
        beir_dir, tiny_checkpoint, "--mode", "dense", "-q", "--latency-queries", "0", "--json", str(out)
    )
    assert main(argv) == EXIT_OK
    expected = f"{beir_dir.parent.name}/beir"
    assert json.loads(out.read_text())["dataset"] == expected
    assert json.loads(out.read_text())["results"][0]["dataset"] == expected


def test_eval_progress_counts_queries(beir_dir: Path, tiny_checkpoint: str, capsys) -> None:
    assert main(eval_args(beir_dir, tiny_checkpoint, "--mode", "dense", "--latency-queries", "2")) == EXIT_OK
    err = capsys.readouterr().err
    assert re.search(r"Searching dense: .*3/3", err), err  # the 3 judged queries, not 1 batch
    assert re.search(r"Timing dense: .*2/2", err), err
    # One encoding bar, over the 4 documents; queries show none of their own ("Encoding: 1/1").
    assert set(re.findall(r"Encoding: .*?\d+/(\d+)", err)) == {"4"}, err
