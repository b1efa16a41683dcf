"""The framework-neutral helpers both example chatbots share (examples/_chatbot_common.py)."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def common():
    # Loaded by path, as examples/ is not a package.
    spec = importlib.util.spec_from_file_location("_chatbot_common", EXAMPLES / "_chatbot_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_source_files_sorted_and_filtered(common, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.md", "a.txt", "sub/c.MD", "skip.py"]:
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert [p.relative_to(tmp_path).as_posix() for p in common.source_files(tmp_path)] == [
        "a.txt",
        "b.md",
        "sub/c.MD",
    ]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        common.source_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \.md or \.txt files"):
        common.source_files(tmp_path / "empty")


def test_manifest_round_trip_and_staleness(common, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("one", encoding="utf-8")
    files = common.source_files(tmp_path)
    manifest = common.build_manifest(tmp_path, files, {"name": "m", "dims": (1, 2)}, 600, 80)
    path = tmp_path / "index" / common.MANIFEST
    path.parent.mkdir()
    common.save_manifest(path, manifest)
    assert [p.name for p in path.parent.iterdir()] == [common.MANIFEST]  # no staging file left
    assert common.manifest_matches(path, manifest)

    (tmp_path / "a.md").write_text("two", encoding="utf-8")
    assert not common.manifest_matches(path, common.build_manifest(tmp_path, files, {"name": "m"}, 600, 80))
    assert not common.manifest_matches(path, {**manifest, "chunk_size": 300})
    path.write_text("{not json", encoding="utf-8")
    assert not common.manifest_matches(path, manifest)


def test_sentences_citations_and_sources(common) -> None:
    passages = ["# Title\n\nFirst one. Second?  Third!", "北京是首都。检索增强", "x"]
    assert common.numbered_sentences(passages) == [
        (1, "Title First one."),
        (1, "Second?"),
        (1, "Third!"),
        (2, "北京是首都。"),
        (2, "检索增强"),
    ]
    assert common.cite([(2, "B."), (1, "A.")]) == "B. [2]\nA. [1]"
    assert common.sources_block(["a.md", "b.txt"]) == "Sources:\n[1] a.md\n[2] b.txt"


def test_parser_defaults(common, tmp_path: Path) -> None:
    parser = common.build_parser("d", llm_help="h", chunk_unit="tokens")
    parser.set_defaults(index_dir=str(tmp_path), chunk_size=160, chunk_overlap=20)
    args = parser.parse_args([])
    assert (args.index_dir, args.chunk_size, args.chunk_overlap, args.k) == (str(tmp_path), 160, 20, 4)
    assert Path(args.data) == EXAMPLES / "data"
    assert (args.llm, args.query, args.rebuild, args.quiet) == (None, None, False, False)
    assert parser.parse_args(["--chunk-size", "300"]).chunk_size == 300
    # The model options are the m3-integrations CLI's, turned into M3Model arguments the same way.
    from m3_integrations.cli import model_kwargs

    assert args.model == "BAAI/bge-m3" and model_kwargs(args) == {}
    plain = parser.parse_args(
        ["--model", "e5", "--allow-missing-heads", "--pooling", "mean", "--query-instruction", "query: "]
    )
    assert model_kwargs(plain) == {
        "allow_missing_heads": True,
        "pooling": "mean",
        "query_instruction": "query: ",
    }


def test_check_arguments(common, tmp_path: Path) -> None:
    parser = common.build_parser("d", llm_help="h", chunk_unit="tokens")
    parser.set_defaults(index_dir=str(tmp_path / "index"), chunk_size=160, chunk_overlap=20)
    (tmp_path / "a.md").write_text("x", encoding="utf-8")
    data = ["--data", str(tmp_path)]
    assert common.check_arguments(parser.parse_args(data)) is None
    assert common.check_arguments(parser.parse_args([*data, "--query", " "])) == "--query is empty"
    assert "does not exist" in common.check_arguments(parser.parse_args(["--data", str(tmp_path / "x")]))
    too_much = parser.parse_args([*data, "--chunk-size", "20", "--chunk-overlap", "20"])
    assert common.check_arguments(too_much) == "--chunk-overlap (20) must be smaller than --chunk-size (20)"
    assert common.run(parser, ["-k", "0"], start=None, greeting="") == 2  # refused before starting


def test_answer_or_chat(common, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    log = common.Log(quiet=True)
    assert common.answer_or_chat("  ", str.upper, log, greeting="hi") == 2
    assert capsys.readouterr().err == "error: --query is empty\n"
    assert common.answer_or_chat("q", str.upper, log, greeting="hi") == 0
    assert capsys.readouterr().out == "Q\n"

    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\nquit\nnever\n"))
    assert common.answer_or_chat(None, str.upper, log, greeting="hi") == 0
    assert capsys.readouterr().out == "hi\n> ONE\n\n> TWO\n\n> "
