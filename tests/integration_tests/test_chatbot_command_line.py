"""Both example chatbots' command lines: the CLI's model options, checks before any model loads, progress."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.common import EXAMPLES, example_module

SCRIPTS = ["langchain_chatbot", "llama_index_chatbot"]
NOTES = {
    "overview.md": "# BGE-M3\n\nBGE-M3 produces dense, lexical and multi-vector representations. "
    "The lexical score captures exact token overlap between a query and a passage.",
    "korean.md": "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "hybrid.txt": "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
}


@pytest.fixture(scope="module", params=SCRIPTS)
def chatbot(request: pytest.FixtureRequest):
    with example_module(request.param, f"{request.param}_under_test") as module:
        yield module


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
    (["--index-dir", "{file}"], "is a file"),
    (["--device", "gpu"], "not a device"),
    (["-k", "0"], "must be an integer >= 1"),
    (["--chunk-tokens", "4"], "must be an integer >= 8"),
    (["--chunk-tokens", "50", "--chunk-overlap", "50"], "--chunk-overlap (50) must be smaller"),
    (["--chunk-size", "50"], "unrecognized arguments: --chunk-size"),  # characters: gone
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


GUIDE_HTML = """<html><head><title>Tokenizer guide</title><style>p {color: red}</style></head><body>
<h1>Tokenizer guide</h1>
<p>BGE-M3 reads text through a SentencePiece model shared by every language it knows.</p>
<p>The tokenizer vocabulary holds 250002 pieces, so rare words split into a few known parts.</p>
<h2>Limits</h2>
<p>Inputs longer than the passage limit are truncated, and the chunker keeps each chunk below it.</p>
<p>Korean and Chinese text needs no word segmentation before it is encoded.</p>
</body></html>"""
REPORT_PARAGRAPHS = [
    ("Quarterly evaluation", "Title"),
    ("The first quarter measured ranking quality on the support tickets of the year.", None),
    ("The third quarter had the highest retrieval recall of the year, after the index was rebuilt.", None),
    ("Latency", "Heading 1"),
    ("Median search latency stayed under forty milliseconds in every month.", None),
]


def _write_docx(path: Path) -> None:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    for text, style in REPORT_PARAGRAPHS:
        document.add_paragraph(text, style=style)
    document.save(str(path))


def _answer(out: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The quoted sentences with their [n], and the sources listed, from a chatbot's answer."""
    answer, _, sources = out.strip().partition("\n\nSources:\n")
    quotes = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^(.*) \[(\d+)\]$", answer, re.MULTILINE)]
    return quotes, [re.sub(r"^\[\d+\] ", "", line) for line in sources.splitlines()]


def test_a_plain_encoder_answers_from_chunked_files_of_every_kind(
    *, chatbot, plain_checkpoint: Path, notes: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("bs4")
    (notes / "guide.html").write_text(GUIDE_HTML, encoding="utf-8")
    _write_docx(notes / "report.docx")
    argv = ["--model", str(plain_checkpoint), "--device", "cpu", "--data", str(notes)]
    # Small chunks, so the files are cut; every chunk retrieved, so the answer does not hang on the
    # order the random tiny encoder gives them.
    argv += ["--index-dir", str(tmp_path / "i"), "-k", "30", "--chunk-tokens", "24", "--chunk-overlap", "4"]

    # Without the options, one line naming them, and nothing indexed.
    assert chatbot.main([*argv, "--query", "What does the lexical score capture?"]) == 3
    err = capsys.readouterr().err
    assert "--allow-missing-heads --pooling mean" in err and "allow_missing_heads" not in err
    assert not (tmp_path / "i").exists()

    plain = ["--allow-missing-heads", "--pooling", "mean", "--query-instruction", "query: "]
    plain += ["--passage-instruction", "passage: ", "-v"]
    questions = {
        "What does the lexical score capture?": "overview.md",
        "대한민국의 수도는 어디인가?": "korean.md",
        "How many pieces does the tokenizer vocabulary hold?": "guide.html",
        "Which quarter had the highest retrieval recall?": "report.docx",
    }
    for question, source in questions.items():
        assert chatbot.main([*argv, *plain, "--query", question]) == 0
        captured = capsys.readouterr()
        quotes, sources = _answer(captured.out)
        # Only the file that holds the question's words is quoted and cited, as [1]; no heading marks.
        assert quotes and {n for _, n in quotes} == {1}, captured.out
        assert sources == [source], captured.out
        assert not any(sentence.startswith("#") or " # " in sentence for sentence, _ in quotes)
        # -v shows the package's log: here, how a checkpoint without heads is run
        assert "INFO m3_integrations.model: no colbert_linear.pt" in captured.err
    index_ids = _index_ids(tmp_path / "i")
    assert sum(i.startswith("guide.html#") for i in index_ids) > 1  # chunked
    assert sum(i.startswith("report.docx#") for i in index_ids) > 1

    assert chatbot.main([*argv, *plain, "-q", "--query", "What is the capital of Australia?"]) == 0
    assert capsys.readouterr().out.strip() == chatbot.common.NOT_FOUND


def _index_ids(index_dir: Path) -> list[str]:
    """The ids an index folder (either chatbot's) holds, read from its saved documents."""
    import json

    # LangChain's index is index/, LlamaIndex's inside the retriever folder (which has its own manifest).
    (manifest,) = [
        path
        for path in index_dir.rglob("manifest.json")
        if json.loads(path.read_text(encoding="utf-8"))["format"] == "m3-index"
    ]
    folder = manifest.parent / json.loads(manifest.read_text(encoding="utf-8"))["data"]
    return json.loads((folder / "documents.json").read_text(encoding="utf-8"))["ids"]


def test_unreadable_data_exits_3_before_the_model_loads(
    chatbot, notes: Path, tmp_path: Path, model_loads: list, capsys
) -> None:
    (tmp_path / "empty").mkdir()
    argv = ["--index-dir", str(tmp_path / "index"), "--query", "what?"]
    assert chatbot.main([*argv, "--data", str(tmp_path / "empty")]) == 3
    assert "no documents with text found" in capsys.readouterr().err
    (notes / "broken.pdf").write_bytes(b"not a pdf")
    pytest.importorskip("pypdf")
    assert chatbot.main([*argv, "--data", str(notes)]) == 3
    assert "broken.pdf: cannot read as PDF" in capsys.readouterr().err
    assert model_loads == []
    assert not (tmp_path / "index").exists()


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


def _plain_text(markdown: str) -> str:
    """A file's words in one line, without Markdown marks, to look quoted sentences up in it."""
    return " ".join(re.sub(r"^#+ .*$|[*_`]", " ", markdown, flags=re.MULTILINE).split())


def test_offline_answers_over_the_sample_notes(chatbot, tiny_checkpoint: str, tmp_path: Path, capsys) -> None:
    # Issue 14.10, on examples/data itself; every chunk retrieved (-k 40), so the answers do not hang
    # on the random tiny encoder's order.
    argv = [
        "--model",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--index-dir",
        str(tmp_path / "i"),
        "-k",
        "40",
        "-q",
    ]
    for unanswerable in ("What is the capital of Australia?", "호주의 수도는 어디인가요?"):
        assert chatbot.main([*argv, "--query", unanswerable]) == 0
        assert capsys.readouterr().out.strip() == chatbot.common.NOT_FOUND

    for question in ("What does BGE-M3 produce?", "하이브리드 검색은 어떤 점수를 함께 쓰나요?"):
        assert chatbot.main([*argv, "--query", question]) == 0
        out = capsys.readouterr().out
        quotes, sources = _answer(out)
        assert quotes and len(sources) == len({n for _, n in quotes}), out
        assert sorted({n for _, n in quotes}) == list(range(1, len(sources) + 1))  # numbered as cited
        for sentence, n in quotes:
            assert "#" not in sentence and "**" not in sentence
            # Each quote is in the source its number names: the sources are the passages quoted.
            assert sentence in _plain_text((EXAMPLES / "data" / sources[n - 1]).read_text(encoding="utf-8"))
