"""The example chatbot end to end on the tiny checkpoint: index, persist, reuse, rebuild, answer."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.common import EXAMPLES, example_module

DATA_FILES = {
    "bge_m3_overview.md",
    "hybrid_search.txt",
    "korean_notes.md",
    "chinese_notes.txt",
    "german_notes.md",
}


@pytest.fixture(scope="module")
def chatbot():
    with example_module("langchain_chatbot") as module:
        yield module


def test_sample_data_is_shipped() -> None:
    assert {p.name for p in (EXAMPLES / "data").iterdir()} == DATA_FILES


def test_chatbot_indexes_reuses_and_rebuilds(chatbot, tiny_checkpoint: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    shutil.copytree(EXAMPLES / "data", data)
    index_dir = tmp_path / "index"
    argv = ["--model", tiny_checkpoint, "--device", "cpu", "--data", str(data), "--index-dir", str(index_dir)]
    # Every chunk retrieved (-k 40): the answer does not hang on the random tiny encoder's order.
    argv += ["--chunk-tokens", "120", "-k", "40", "--query", "What does the lexical score capture?"]

    assert chatbot.main(argv) == 0
    first = capsys.readouterr()
    assert "Indexing" in first.err and "Reusing" not in first.err
    assert "extractive" in first.err
    answer = first.out
    citations = {int(n) for n in re.findall(r"\[(\d)\]", answer.split("Sources:")[0])}
    sources = re.findall(r"^\[(\d)\] (\S+)$", answer.split("Sources:")[1], flags=re.MULTILINE)
    # The sources listed are those cited, numbered 1, 2... in the order cited.
    assert citations == {int(n) for n, _ in sources} == set(range(1, len(sources) + 1)), answer
    assert {name for _, name in sources} <= DATA_FILES
    saved = sorted((p.name, p.stat().st_mtime_ns) for p in (index_dir / "index").iterdir())

    assert chatbot.main(argv) == 0
    second = capsys.readouterr()
    assert "Reusing the index" in second.err and "Indexing" not in second.err
    assert second.out == answer
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (index_dir / "index").iterdir()) == saved

    (data / "german_notes.md").write_text("# Neu\n\nEin ganz neuer Absatz über Suche.\n", encoding="utf-8")
    assert chatbot.main([*argv, "--quiet"]) == 0
    third = capsys.readouterr()
    assert third.err == ""  # --quiet: only the answer
    assert "Sources:" in third.out
    assert chatbot.main(argv) == 0
    assert "Reusing the index" in capsys.readouterr().err


def test_chatbot_bad_inputs(chatbot, tiny_checkpoint: str, tmp_path: Path, capsys) -> None:
    argv = ["--model", tiny_checkpoint, "--device", "cpu", "--index-dir", str(tmp_path / "i")]
    assert chatbot.main([*argv, "--data", str(tmp_path / "missing"), "--query", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert chatbot.main([*argv, "--data", str(tmp_path / "empty"), "--query", "x"]) == 3
    assert "no documents with text found" in capsys.readouterr().err


def test_unknown_llm_falls_back_to_extractive(chatbot, capsys) -> None:
    log = chatbot.Log()
    assert chatbot.load_llm(None, log) is None
    assert chatbot.load_llm("no-such-provider:model-x", log) is None


def test_chain_with_a_chat_model(chatbot, tiny_model, tmp_path: Path) -> None:
    from langchain_core.documents import Document
    from langchain_core.language_models import FakeListChatModel

    from m3_integrations.langchain import M3Retriever

    retriever = M3Retriever.from_documents(
        [Document(page_content="BGE-M3 is multilingual.", metadata={"source": "a.md"})], model=tiny_model, k=1
    )
    chain = chatbot.build_chain(
        retriever, tiny_model, FakeListChatModel(responses=["It is multilingual [1]."])
    )
    assert chain.invoke("Is BGE-M3 multilingual?") == "It is multilingual [1].\n\nSources:\n[1] a.md"
