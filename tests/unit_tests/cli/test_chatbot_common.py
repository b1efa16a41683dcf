"""The framework-neutral helpers both example chatbots share (examples/_chatbot_common.py)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from m3_integrations.cli import CliError
from tests.common import EXAMPLES, example_module


@pytest.fixture(scope="module")
def common():
    with example_module("_chatbot_common", "_chatbot_common_under_test") as module:
        yield module


def test_read_sources_uses_the_package_reader_and_reports_skips(common, tmp_path: Path, capsys) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (tmp_path / "sub" / "c.MD").write_text("# C\n\nGamma text.", encoding="utf-8")
    (tmp_path / "skip.py").write_text("x = 1", encoding="utf-8")
    (tmp_path / "blank.md").write_text(" \n", encoding="utf-8")
    documents = common.read_sources(str(tmp_path), common.Log())
    assert [d.id for d in documents] == ["a.txt", "sub/c.MD"]
    err = capsys.readouterr().err.splitlines()
    assert "warning: skipped 1 file of unsupported type .py: skip.py" in err
    assert "skipped 1 empty document: blank.md" in err
    common.read_sources(str(tmp_path), common.Log(quiet=True))
    assert capsys.readouterr().err.splitlines() == [
        "warning: skipped 1 file of unsupported type .py: skip.py"
    ]

    (tmp_path / "broken.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(CliError, match=r"broken\.jsonl:1: not valid JSON") as raised:
        common.read_sources(str(tmp_path), common.Log())
    assert raised.value.code == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliError, match="no documents with text found") as raised:
        common.read_sources(str(tmp_path / "empty"), common.Log())
    assert raised.value.code == 3


class _Chunker:
    def __init__(self, chunk_tokens: int, chunk_overlap: int) -> None:
        self.chunk_tokens, self.chunk_overlap = chunk_tokens, chunk_overlap


def test_manifest_round_trip_and_staleness(common, tmp_path: Path) -> None:
    from m3_integrations.documents import SourceDocument

    documents = [SourceDocument("a.md", "one", {"title": "A"}), SourceDocument("b.md", "two", {})]
    manifest = common.build_manifest(documents, {"name": "m", "dims": (1, 2)}, _Chunker(160, 20))
    path = tmp_path / "index" / common.MANIFEST
    path.parent.mkdir()
    common.save_manifest(path, manifest)
    assert [p.name for p in path.parent.iterdir()] == [common.MANIFEST]  # no staging file left
    assert common.manifest_matches(path, manifest)

    changed = [SourceDocument("a.md", "one!", {"title": "A"}), documents[1]]
    assert not common.manifest_matches(
        path, common.build_manifest(changed, {"name": "m", "dims": (1, 2)}, _Chunker(160, 20))
    )
    retitled = [SourceDocument("a.md", "one", {"title": "B"}), documents[1]]
    assert not common.manifest_matches(
        path, common.build_manifest(retitled, {"name": "m", "dims": (1, 2)}, _Chunker(160, 20))
    )
    assert not common.manifest_matches(
        path, common.build_manifest(documents[:1], {"name": "m", "dims": (1, 2)}, _Chunker(160, 20))
    )
    # The chunker's own sizes (it may lower what was asked to fit the model) decide, as does the model.
    assert not common.manifest_matches(
        path, common.build_manifest(documents, {"name": "m", "dims": (1, 2)}, _Chunker(120, 20))
    )
    assert not common.manifest_matches(
        path, common.build_manifest(documents, {"name": "m2", "dims": (1, 2)}, _Chunker(160, 20))
    )
    path.write_text("{not json", encoding="utf-8")
    assert not common.manifest_matches(path, manifest)


def test_passage_sentences_drop_headings_and_markup(common) -> None:
    passage = (
        "# Title\n\nFirst one. Second?  Third!\n\nSetext title\n============\n\n"
        "- **Bold** item with `code`\n- 1 _emphasis_ and a [link](https://x.org)\n"
        "  that continues.\n\n1. Numbered step.\n\n## Closing heading\n\n"
        "北京是首都。检索增强\n\n#\n\n---\n\nx"
    )
    assert common.passage_sentences(passage) == [
        "First one.",
        "Second?",
        "Third!",
        "Bold item with code",
        "1 emphasis and a link that continues.",
        "Numbered step.",
        "北京是首都。",
        "检索增强",
    ]
    assert not any("#" in s for s in common.passage_sentences("## Only a heading\n\n### Another"))
    assert common.passage_sentences("snake_case_name stays.") == ["snake_case_name stays."]


def test_content_terms_and_inflections(common) -> None:
    assert common.content_terms("What is the capital of Australia?") == {"capital", "australia"}
    assert common.content_terms("호주의 수도는 어디인가요? 무엇을 왜") == {"호주의", "수도는"}
    assert common.content_terms("检索增强") == {"检索", "索增", "增强"}
    assert common.content_terms("What is it? A") == set()
    text = common.content_terms("The scores of 서울의 수도와 BGE-M3는 检索")
    assert common.matched_terms({"score", "수도는", "m3", "bge", "检索"}, text) == {
        "score",
        "수도는",
        "m3",
        "bge",
        "检索",
    }
    # No match: other words that share a short start, or one character of a Chinese pair
    assert (
        common.matched_terms({"scale", "수면", "检查", "is"}, common.content_terms("score 수도 检索 it"))
        == set()
    )
    assert common.matched_terms({"lexicon"}, common.content_terms("lexical")) == {"lexicon"}  # stem of 5


def _first_in_order(question: str, sentences: list[str]) -> list[int]:
    return list(range(len(sentences)))


def test_extractive_answer_quotes_evidence_or_says_not_found(common) -> None:
    passages = [
        common.Passage(
            "# Hybrid\n\nThe lexical score rewards exact words. Dense vectors capture meaning.", "a.md"
        ),
        common.Passage("Lexical weights are sparse. Nothing else here.", "b.md"),
        common.Passage("Scores are fused. The lexical score captures exact token overlap.", "c.md"),
    ]
    question = "What does the lexical score capture?"  # content words: lexical, score, capture
    answer = common.extractive_answer(question, passages, _first_in_order)
    # a.md and c.md hold all three words, b.md one: quotes come from a.md and c.md only, and only
    # sentences sharing a word with the question ("Dense vectors capture" shares "capture").
    assert answer.quotes == [
        (1, "The lexical score rewards exact words."),
        (1, "Dense vectors capture meaning."),
        (2, "Scores are fused."),
    ]
    assert answer.sources == ["a.md", "c.md"]
    assert answer.render() == (
        "The lexical score rewards exact words. [1]\nDense vectors capture meaning. [1]\n"
        "Scores are fused. [2]\n\nSources:\n[1] a.md\n[2] c.md"
    )

    # The ranker decides the order; numbers follow the order of citation, sources only those quoted.
    def last_first(q: str, sentences: list[str]) -> list[int]:
        return list(range(len(sentences)))[::-1]

    answer = common.extractive_answer(question, passages, last_first, max_sentences=2)
    assert answer.quotes == [(1, "The lexical score captures exact token overlap."), (1, "Scores are fused.")]
    assert answer.sources == ["c.md"]

    # No passage holds more than half the question's words: nothing quoted, whatever the scores.
    for unrelated in ("What is the capital of Australia?", "capital lexical", "What is it?"):
        answer = common.extractive_answer(unrelated, passages, _first_in_order)
        assert (answer.quotes, answer.sources) == ([], [])
        assert answer.render() == common.NOT_FOUND


def test_extractive_answer_quotes_a_sentence_once(common) -> None:
    # Overlapping chunks of one file: the second starts inside the first one's last sentence.
    passages = [
        common.Passage("Hybrid search fuses scores. 교차 언어 검색도 가능하다.", "k.md"),
        common.Passage("언어 검색도 가능하다. 그래서 교차 검색을 쓴다.", "k.md"),
    ]
    answer = common.extractive_answer("교차 언어 검색이 가능한가요?", passages, _first_in_order)
    assert answer.quotes == [(1, "교차 언어 검색도 가능하다."), (1, "그래서 교차 검색을 쓴다.")]
    assert answer.sources == ["k.md"]


def test_source_labels(common) -> None:
    assert common.source_label({"source_id": "notes/a.md", "source": "/x/notes/a.md"}) == "notes/a.md"
    assert common.source_label({"source_id": "r.pdf", "page": 2, "page_end": 2}) == "r.pdf, page 2"
    assert common.source_label({"source_id": "r.pdf", "page": 2, "page_end": 3}) == "r.pdf, pages 2-3"
    assert common.source_label({"source": "legacy.md"}) == "legacy.md"
    assert common.cite([(2, "B."), (1, "A.")]) == "B. [2]\nA. [1]"
    assert common.sources_block(["a.md", "b.txt"]) == "Sources:\n[1] a.md\n[2] b.txt"


def test_parser_defaults(common, tmp_path: Path) -> None:
    parser = common.build_parser("d", llm_help="h")
    parser.set_defaults(index_dir=str(tmp_path))
    args = parser.parse_args([])
    assert (args.index_dir, args.chunk_tokens, args.chunk_overlap, args.k) == (str(tmp_path), 160, 20, 4)
    assert Path(args.data) == EXAMPLES / "data"
    assert (args.llm, args.query, args.rebuild, args.quiet) == (None, None, False, False)
    assert parser.parse_args(["--chunk-tokens", "300"]).chunk_tokens == 300
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
    parser = common.build_parser("d", llm_help="h")
    parser.set_defaults(index_dir=str(tmp_path / "index"))
    (tmp_path / "a.md").write_text("x", encoding="utf-8")
    data = ["--data", str(tmp_path)]
    assert common.check_arguments(parser.parse_args(data)) is None
    assert common.check_arguments(parser.parse_args([*data, "--query", " "])) == "--query is empty"
    assert "does not exist" in common.check_arguments(parser.parse_args(["--data", str(tmp_path / "x")]))
    too_much = parser.parse_args([*data, "--chunk-tokens", "20", "--chunk-overlap", "20"])
    assert common.check_arguments(too_much) == "--chunk-overlap (20) must be smaller than --chunk-tokens (20)"
    assert common.check_arguments(parser.parse_args(["--data", str(tmp_path / "a.md")])) is None  # a file
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
