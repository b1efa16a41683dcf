"""Both example chatbots' command lines: the CLI's model options, checks before any model loads, progress."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = ["langchain_chatbot", "llama_index_chatbot"]
NOTES = {
    "overview.md": "# BGE-M3\n\nBGE-M3 produces dense, lexical and multi-vector representations. "
    "The lexical score captures exact token overlap between a query and a passage.",
    "korean.md": "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "hybrid.txt": "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
}


@pytest.fixture(scope="module", params=SCRIPTS)
def chatbot(request: pytest.FixtureRequest):
    name = f"{request.param}_under_test"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{request.param}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


BAD_ARGUMENTS = [
    (["--query", "   "], "--query is empty"),
    (["--data", "{missing}"], "does not exist"),
    (["--data", "{empty}"], "no .md or .txt files"),
    (["--index-dir", "{file}"], "is a file"),
    (["--device", "gpu"], "not a device"),
    (["-k", "0"], "must be an integer >= 1"),
    (["--chunk-size", "-3"], "must be an integer >= 1"),
    (["--chunk-size", "50", "--chunk-overlap", "50"], "--chunk-overlap (50) must be smaller"),
    (["--pooling", "max"], "invalid choice"),
    (["--query-max-length", "0"], "positive integer"),
]


@pytest.mark.parametrize(("options", "message"), BAD_ARGUMENTS)
def test_bad_arguments_fail_before_the_model_loads(
    *, chatbot, options: list[str], message: str, notes: Path, tmp_path: Path, model_loads: list, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    places = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "file": tmp_path / "file"}
    options = [option.format(**places) for option in options]
    argv = ["--data", str(notes), "--index-dir", str(tmp_path / "index"), "--query", "what?", *options]
    assert chatbot.main(argv) == 2
    assert message in capsys.readouterr().err
    assert model_loads == []
    assert not (tmp_path / "index").exists()


def test_an_unavailable_device_fails_before_the_model_loads(
    chatbot, notes: Path, model_loads: list, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert chatbot.main(["--data", str(notes), "--device", "cuda", "--query", "what?"]) == 2
    assert "CUDA is not available on this machine; use --device cpu" in capsys.readouterr().err
    assert model_loads == []


def test_help_shows_the_cli_model_options(chatbot, capsys) -> None:
    assert chatbot.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--allow-missing-heads", "--pooling", "--query-instruction", "--passage-instruction"):
        assert option in out
    assert "(default: BAAI/bge-m3)" in out


def test_a_plain_encoder_answers_with_the_model_options(
    *, chatbot, plain_checkpoint: Path, notes: Path, tmp_path: Path, capsys
) -> None:
    checkpoint = str(plain_checkpoint)
    argv = [
        "--model",
        checkpoint,
        "--device",
        "cpu",
        "--data",
        str(notes),
        "--index-dir",
        str(tmp_path / "i"),
    ]
    argv += ["-k", "2", "--chunk-size", "120", "--chunk-overlap", "10"]

    # Without the options, one line naming them, and nothing indexed.
    assert chatbot.main([*argv, "--query", "What does the lexical score capture?"]) == 3
    err = capsys.readouterr().err
    assert "--allow-missing-heads --pooling mean" in err and "allow_missing_heads" not in err
    assert not (tmp_path / "i").exists()

    plain = ["--allow-missing-heads", "--pooling", "mean", "--query-instruction", "query: "]
    plain += ["--passage-instruction", "passage: ", "-v"]
    for question in ("What does the lexical score capture?", "대한민국의 수도는 어디인가?"):
        assert chatbot.main([*argv, *plain, "--query", question]) == 0
        captured = capsys.readouterr()
        answer, _, sources = captured.out.partition("Sources:\n")
        assert re.search(r"\[[12]\]", answer), captured.out
        assert {line.split()[1] for line in sources.strip().splitlines()} <= set(NOTES)
        # -v shows the package's log: here, how a checkpoint without heads is run
        assert "INFO m3_integrations.model: no colbert_linear.pt" in captured.err


def test_progress_while_indexing_and_none_per_question(
    chatbot, tiny_checkpoint: str, notes: Path, tmp_path: Path, capsys
) -> None:
    argv = ["--model", tiny_checkpoint, "--device", "cpu", "--data", str(notes)]
    argv += ["--index-dir", str(tmp_path / "i"), "--query", "What is hybrid retrieval?"]
    assert chatbot.main(argv) == 0
    err = capsys.readouterr().err
    totals = {int(total) for total in re.findall(r"Encoding: .*?\d+/(\d+)", err)}
    assert len(totals) == 1 and totals.pop() >= len(NOTES), err  # one bar, over every chunk

    assert chatbot.main(argv) == 0  # the saved index is reused: only the question is encoded
    assert "Encoding" not in capsys.readouterr().err
    assert chatbot.main([*argv, "--rebuild", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
