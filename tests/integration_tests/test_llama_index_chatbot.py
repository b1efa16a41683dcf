"""The LlamaIndex example chatbot end to end on the tiny checkpoint: index, reuse, rebuild, answer."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.common import example_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SAMPLE_FILES = {
    "bge_m3_overview.md": "# BGE-M3\n\nBGE-M3 produces dense, lexical and multi-vector representations.\n"
    "It supports more than one hundred languages.",
    "hybrid_search.txt": "Hybrid retrieval fuses dense similarity with lexical matching. "
    "The lexical score captures exact token overlap.",
    "korean_notes.md": "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "chinese_notes.txt": "北京是中国的首都。检索增强生成使用向量数据库。",
    "german_notes.md": "Wie spät ist es? Der Hund läuft schnell über die Straße.",
}


@pytest.fixture(scope="module")
def chatbot():
    with example_module("llama_index_chatbot") as module:
        yield module


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name, text in SAMPLE_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _answer_parts(out: str) -> tuple[list[str], list[str]]:
    answer, _, sources = out.strip().partition("Sources:\n")
    cited = re.findall(r"\[(\d+)\]", answer)
    return cited, sources.strip().splitlines()


def test_indexes_reuses_and_rebuilds(
    chatbot, tiny_checkpoint: str, data_dir: Path, tmp_path: Path, capsys
) -> None:
    index_dir = tmp_path / "index"
    argv = [
        "--model",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--data",
        str(data_dir),
        "--index-dir",
        str(index_dir),
    ]
    query = ["--query", "What does the lexical score capture?", "-k", "10"]

    assert chatbot.main([*argv, *query]) == 0
    first = capsys.readouterr()
    assert "Indexed" in first.err
    assert (index_dir / "sources.json").is_file()
    assert (index_dir / "retriever" / "manifest.json").is_file()
    cited, sources = _answer_parts(first.out)
    # Only hybrid_search.txt holds "lexical", "score" and "capture": it alone is quoted and listed.
    assert cited and set(cited) == {"1"}, first.out
    assert sources == ["[1] hybrid_search.txt"]

    assert chatbot.main([*argv, *query, "--quiet"]) == 0
    second = capsys.readouterr()
    assert second.err == ""  # quiet: the answer only
    assert second.out == first.out  # same answer from the reused index

    assert chatbot.main([*argv, *query]) == 0
    assert "Loaded the index" in capsys.readouterr().err

    (data_dir / "hybrid_search.txt").write_text(
        "The lexical score is a sum of token weights.", encoding="utf-8"
    )
    assert chatbot.main([*argv, *query]) == 0
    rebuilt = capsys.readouterr()
    assert "changed: rebuilding" in rebuilt.err
    assert "Indexed" in rebuilt.err


def test_llm_option_and_fallbacks(
    chatbot, tiny_checkpoint: str, data_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = ["--model", tiny_checkpoint, "--device", "cpu", "--data", str(data_dir)]
    argv += ["--index-dir", str(tmp_path / "index"), "--quiet", "--query", "lexical score", "-k", "2"]

    # A named LLM that is installed (LlamaIndex's MockLLM) answers through the CitationQueryEngine.
    assert chatbot.main([*argv, "--llm", "mock"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    _, sources = _answer_parts(out.out)
    assert sources and all(line.startswith("[") for line in sources)

    # A provider whose package is missing: a warning, then the offline answer (or "not found", as
    # the two passages the tiny encoder retrieves may not hold the words).
    assert chatbot.main([*argv, "--llm", "no_such_provider:big-model"]) == 0
    out = capsys.readouterr()
    assert "cannot use --llm no_such_provider:big-model" in out.err
    cited, sources = _answer_parts(out.out)
    assert out.out.strip() == chatbot.common.NOT_FOUND or (cited and len(sources) == len(set(cited)))


def test_interactive_loop_and_errors(
    chatbot, tiny_checkpoint: str, data_dir: Path, tmp_path: Path, capsys
) -> None:
    monkeypatch = pytest.MonkeyPatch()
    argv = ["--model", tiny_checkpoint, "--device", "cpu", "--data", str(data_dir)]
    argv += ["--index-dir", str(tmp_path / "index"), "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO("where is Seoul?\n서울\n北京\n\n"))
        assert chatbot.main([*argv, "-k", "10"]) == 0
    out = capsys.readouterr().out
    # "Seoul" is in none of the files (서울 is): said so; the other two are quoted with sources.
    assert out.count(chatbot.common.NOT_FOUND) == 1 and out.count("Sources:") == 2
    assert "[1] korean_notes.md" in out and "[1] chinese_notes.txt" in out

    assert chatbot.main([*argv, "--query", "   "]) == 2
    assert "--query is empty" in capsys.readouterr().err
    assert chatbot.main([*argv[:4], "--data", str(tmp_path / "missing"), "--query", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
