"""The core chunker: exact offsets, token bounds, preferred breaks, overlap, headings, speed."""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from m3_integrations import M3Model
from m3_integrations._chunk_layout import sentence_spans
from m3_integrations.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_TOKENS,
    MIN_CHUNK_TOKENS,
    Chunk,
    Chunker,
)
from m3_integrations.documents import SourceDocument
from m3_integrations.model import Tokenized
from m3_integrations.testing import WhitespaceTokenizer

CJK = "\u4e00-\u9fff"
HANGUL = "\uac00-\ud7a3"


class PieceTokenizer:
    """A fake with XLM-R's awkward habits, written independently of the chunker.

    Words (Latin, digits, Hangul) are cut into pieces of at most three characters, each CJK ideograph
    and each other non-space character is a token of its own. A word's first piece carries the white
    space before it in its offsets (as XLM-R's "▁word" does). A text that starts with an ideograph or a
    punctuation mark gets one more token in front ("▁"), so a chunk can count more tokens alone than
    inside its document. Records every call.
    """

    def __init__(self, passage_max_length: int | None = None, passage_instruction: str | None = None) -> None:
        if passage_max_length is not None:
            self.passage_max_length = passage_max_length
        self.passage_instruction = passage_instruction
        self.calls: list[tuple[list[str], bool]] = []

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for m in re.finditer(rf"\s*([A-Za-z0-9{HANGUL}]+|\S)", text):
            word_start, word = m.start(1), m.group(1)
            for k in range(0, len(word), 3):
                spans.append((m.start() if k == 0 else word_start + k, word_start + min(k + 3, len(word))))
        first = text.lstrip()[:1]
        if first and not re.match(rf"[A-Za-z0-9{HANGUL}]", first):
            spans.insert(0, (spans[0][0], spans[0][0] + 1))
        return spans

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_offsets: bool = False,
    ) -> Tokenized:
        texts = [texts] if isinstance(texts, str) else list(texts)
        self.calls.append((texts, return_offsets))
        spans = [self._spans(t) for t in texts]
        if add_special_tokens:
            spans = [[(0, 0), *s, (0, 0)] for s in spans]
        return Tokenized([[0] * len(s) for s in spans], spans if return_offsets else None, 0)


# ------------------------------------------------------------------------------------------- texts
@dataclass
class Generated:
    text: str
    headings: list[tuple[int, int]]  # (start, end) of every heading written


WORDS = "retrieval dense sparse colbert index fusion query passage token model vector score".split()
KOREAN = ["서울은 대한민국의 수도이다.", "부산은 항구 도시다.", "검색은 빠르다!", "이것은 무엇입니까?"]
CHINESE = "检索模型把文本变成向量并比较它们的相似度这是一个很长的句子没有空格"


def _english_sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
    return " ".join(words).capitalize() + rng.choice(".!?")


def _chinese_sentence(rng: random.Random) -> str:
    start = rng.randrange(len(CHINESE) - 4)
    return CHINESE[start : start + rng.randint(4, 25)] + rng.choice("。！？")


def generate(rng: random.Random) -> Generated:
    """A random document mixing scripts, Markdown headings, odd white space, long words and URLs."""
    parts: list[str] = []
    headings: list[tuple[int, int]] = []
    length = 0

    def add(piece: str, heading: bool = False) -> None:
        nonlocal length
        if heading:
            headings.append((length, length + len(piece)))
        parts.append(piece)
        length += len(piece)

    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.3:
            add(_english_sentence(rng))
        elif kind < 0.42:
            add(rng.choice(KOREAN))
            if rng.random() < 0.3:  # Korean sentences run together without a space
                add(rng.choice(KOREAN))
        elif kind < 0.52:
            add(_chinese_sentence(rng))
        elif kind < 0.62:
            add("\n\n")
            add(
                "#" * rng.randint(1, 4)
                + " "
                + rng.choice(["Overview", "검색 방법", "相似度", "Setup and use"]),
                True,
            )
            add("\n\n" if rng.random() < 0.7 else "\n")
        elif kind < 0.66:
            add("\n\n")
            add(
                rng.choice(["Results", "Notes on tokens"]) + "\n" + rng.choice("=-") * rng.randint(3, 12),
                True,
            )
            add("\n")
        elif kind < 0.72:
            add(rng.choice(["   \n\t \n\n   ", "\n\n\n\n", "\t\t", "\u3000\u3000", " \r\n \r\n"]))
        elif kind < 0.77:
            add(
                " https://example.com/"
                + "".join(rng.choice("abcxyz/-_") for _ in range(rng.randint(40, 300)))
            )
        elif kind < 0.8:
            add(" " + "w" * rng.randint(50, 200))
        elif kind < 0.84:
            add("\n\n" + rng.choice(["-----", "* * *", "....", "!!", "---"]) + "\n\n")
        elif kind < 0.87:
            add(" cafe\u0301 nai\u0308ve ")
        elif kind < 0.9:
            add("\n\n```\n# not a heading inside code\nx = 1\n```\n\n")
        else:
            add(rng.choice([" ", "\n", " ", ""]))
        add(rng.choice([" ", " ", "\n", "", "  "]))
    return Generated("".join(parts), headings)


def _word_characters(generated: Generated) -> list[bool]:
    """Per character: is it a letter or digit outside the headings written?"""
    flags = [ch.isalnum() for ch in generated.text]
    for start, end in generated.headings:
        flags[start:end] = [False] * (end - start)
    return flags


def _heading_runs(generated: Generated) -> list[tuple[int, int]]:
    """Each heading with what follows it up to the next letter or digit outside headings, or, for
    headings that close the text, with what precedes them from the last such letter or digit.
    """
    text, runs = generated.text, []
    inside = set()
    for start, end in generated.headings:
        inside.update(range(start, end))
    for heading_start, _ in generated.headings:
        start = end = heading_start
        while end < len(text) and (end in inside or not text[end].isalnum()):
            end += 1
        if end == len(text):
            while start > 0 and (start in inside or not text[start].isalnum()):
                start -= 1
        runs.append((start, end))
    return runs


def check_chunks(
    generated: Generated, chunks: list[Chunk], tokenizer: object, chunk_tokens: int, chunk_overlap: int
) -> None:
    """Every guarantee of the chunker, checked on every chunk."""
    text = generated.text
    word_characters = _word_characters(generated)
    # Headings that, with the headings and punctuation next to them, leave no room for a word of text.
    long_runs: set[int] = set()
    for run_start, run_end in _heading_runs(generated):
        run_tokens = len(tokenizer.tokenize([text[run_start:run_end]], add_special_tokens=False).input_ids[0])
        if run_tokens + 1 > chunk_tokens:
            long_runs.update(range(run_start, run_end))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        where = f"chunk {chunk.index} {chunk.text[:60]!r}"
        assert text[chunk.start : chunk.end] == chunk.text, where
        assert chunk.text and chunk.text == chunk.text.strip(), where
        alone = len(tokenizer.tokenize([chunk.text], add_special_tokens=False).input_ids[0])
        assert chunk.num_tokens == alone <= chunk_tokens, where
        assert chunk.metadata["start"] == chunk.start and chunk.metadata["num_tokens"] == alone
        # Never only headings, white space or punctuation.
        assert any(word_characters[chunk.start : chunk.end]), where
        # A heading sticks to the text after it: no chunk but the last ends with one.
        if chunk.index < len(chunks) - 1:
            for start, end in generated.headings:
                if start < chunk.end <= end and not long_runs.intersection(range(start, end)):
                    pytest.fail(f"{where} ends on the heading {text[start:end]!r}")
        # Never cut inside a character: no chunk starts with a combining mark.
        assert chunk.text[0] not in "\u0301\u0308", where
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start and before.end < after.end
        if chunk_overlap == 0:
            assert after.start >= before.end
        else:
            shared = text[after.start : before.end]
            if after.start < before.end:
                shared_tokens = len(tokenizer.tokenize([shared], add_special_tokens=False).input_ids[0])
                # The overlap is measured on the document's tokens; alone it may count one more.
                assert shared_tokens <= chunk_overlap + 1, (before.text, after.text)
    # Nothing with words is lost: every letter or digit lies in some chunk, except in a heading that,
    # with the headings and punctuation after it, is too long to share a chunk with a word of text
    # (the documented exception).
    covered = set(long_runs)
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    missing = [i for i in range(len(text)) if text[i].isalnum() and i not in covered]
    if any(word_characters):
        assert not missing, [text[max(0, i - 20) : i + 20] for i in missing[:3]]
    else:
        assert not chunks


SIZES = [(8, 0), (12, 3), (24, 6), (40, 10), (64, 0), (96, 24)]


@pytest.mark.parametrize(("chunk_tokens", "chunk_overlap"), SIZES)
def test_every_chunk_keeps_its_guarantees_on_varied_texts(chunk_tokens: int, chunk_overlap: int) -> None:
    rng = random.Random(chunk_tokens * 1000 + chunk_overlap)
    tokenizer = PieceTokenizer()
    chunker = Chunker(tokenizer, chunk_tokens, chunk_overlap)
    for _ in range(40):
        generated = generate(rng)
        check_chunks(
            generated,
            chunker.split_text(generated.text, source_id="d"),
            tokenizer,
            chunk_tokens,
            chunk_overlap,
        )


@pytest.mark.parametrize(("chunk_tokens", "chunk_overlap"), [(16, 4), (64, 16)])
def test_guarantees_hold_on_the_model_tokenizer(
    tiny_model: M3Model, chunk_tokens: int, chunk_overlap: int
) -> None:
    rng = random.Random(7 + chunk_tokens)
    chunker = Chunker(tiny_model, chunk_tokens, chunk_overlap)
    documents = [generate(rng) for _ in range(30)]
    chunks = chunker.split_documents(
        [SourceDocument(f"doc{i}", g.text, {"source": f"doc{i}.md"}) for i, g in enumerate(documents)]
    )
    for i, generated in enumerate(documents):
        own = [c for c in chunks if c.source_id == f"doc{i}"]
        check_chunks(generated, own, tiny_model, chunk_tokens, chunk_overlap)


def test_chunks_count_tokens_alone_not_inside_their_document() -> None:
    # Chinese chunks mostly start with an ideograph, which PieceTokenizer counts one token more alone.
    tokenizer = PieceTokenizer()
    text = "。".join(CHINESE[i:] + CHINESE[:i] for i in range(0, 30, 3))
    chunker = Chunker(tokenizer, chunk_tokens=20, chunk_overlap=0)
    chunks = chunker.split_text(text)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.num_tokens == len(
            tokenizer.tokenize([chunk.text], add_special_tokens=False).input_ids[0]
        )
        assert chunk.num_tokens <= 20
    # Filled up to the limit where sentences allow: the re-cut only takes what is needed.
    assert max(c.num_tokens for c in chunks) >= 18


# ------------------------------------------------------------------------------------ where it cuts
def words(n: int, word: str = "w") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def test_prefers_a_paragraph_break_to_sentence_ends_and_sentence_ends_to_spaces() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=20, chunk_overlap=0)
    # A paragraph break after 12 words and sentence ends after 4, 8, 16 words: the paragraph wins.
    text = f"{words(4, 'a')}. {words(4, 'b')}. {words(4, 'c')}\n\n{words(4, 'd')}. {words(10, 'e')}"
    first = chunker.split_text(text)[0]
    assert first.text.endswith("c3")
    # Without the paragraph break, the last sentence end within 20 words.
    text = f"{words(4, 'a')}. {words(4, 'b')}. {words(4, 'c')} {words(4, 'd')}. {words(10, 'e')}"
    assert chunker.split_text(text)[0].text.endswith("d3.")
    # No break but spaces: a full chunk of 20 words.
    assert chunker.split_text(words(30))[0].num_tokens == 20


def test_a_break_is_taken_only_if_the_chunk_is_at_least_half_full() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=20, chunk_overlap=0)
    # The only paragraph break comes after 3 words: too early, the chunk runs to a sentence end.
    text = f"{words(3, 'a')}\n\n{words(12, 'b')}. {words(20, 'c')}"
    assert chunker.split_text(text)[0].text.endswith("b11.")


def test_cjk_and_korean_sentences_end_without_spaces() -> None:
    tokenizer = PieceTokenizer()
    chunker = Chunker(tokenizer, chunk_tokens=24, chunk_overlap=0)
    chinese = "检索模型把文本变成向量。" * 6
    for chunk in chunker.split_text(chinese):
        assert chunk.text.endswith("。")
    korean = "서울은 대한민국의 수도이다.부산은 항구 도시다.광주는 빛고을이다." * 4
    for chunk in chunker.split_text(korean)[:-1]:
        assert chunk.text.endswith("다."), chunk.text


def test_danda_ends_a_sentence_in_indic_scripts() -> None:
    """Hindi and Bengali end sentences with a danda (।), not a full stop."""
    sentences = ["ढाका एक बड़ा शहर है।", "নদীর পাশে একটি গ্রাম আছে।", "यह दूसरा वाक्य है॥", "Last one."]
    text = " ".join(sentences)
    assert [text[a:b] for a, b in sentence_spans(text)] == sentences


def test_text_without_spaces_or_punctuation_is_cut_between_tokens() -> None:
    tokenizer = PieceTokenizer()
    chunker = Chunker(tokenizer, chunk_tokens=10, chunk_overlap=2)
    url = "https://example.com/" + "abcdefghij" * 30
    chunks = chunker.split_text(f"see {url} for more")
    assert len(chunks) > 5
    assert all(c.num_tokens <= 10 for c in chunks)
    assert "".join(c.text for c in chunks if c.start >= 0).replace(" ", "") != ""


def test_never_cuts_between_a_letter_and_its_combining_mark() -> None:
    # PieceTokenizer makes each combining mark a token of its own: a cut there would be a token cut.
    text = "e\u0301" * 60 + " " + "n\u0303a" * 30
    chunks = Chunker(PieceTokenizer(), chunk_tokens=9, chunk_overlap=2).split_text(text)
    assert len(chunks) > 10
    for chunk in chunks:
        assert chunk.text[0] not in "\u0301\u0303"
        assert chunk.end == len(text) or text[chunk.end] not in "\u0301\u0303"


def test_a_heading_sticks_to_the_text_after_it() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=12, chunk_overlap=0)
    text = f"{words(9, 'a')}.\n\n# Second part\n\n{words(8, 'b')}.\n\n## Third\n\n{words(5, 'c')}."
    chunks = chunker.split_text(text)
    assert [c.text for c in chunks] == [
        f"{words(9, 'a')}.",
        f"# Second part\n\n{words(8, 'b')}.",
        f"## Third\n\n{words(5, 'c')}.",
    ]


def test_a_heading_is_never_left_at_the_end_of_a_chunk() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=12, chunk_overlap=0)
    # A break before the heading fills the chunk best (9 words of 12): taken.
    text = f"{words(9, 'a')}\n\n# Heading here\n\n{words(20, 'b')}"
    chunks = chunker.split_text(text)
    assert chunks[0].text == words(9, "a")
    assert chunks[1].text.startswith("# Heading here\n\nb0")
    # The break before it leaves the chunk too empty (3 words), the paragraph break after it would
    # fill half: not taken, the chunk runs on into the section's text.
    text = f"{words(3, 'a')}\n\n# Heading here\n\n{words(20, 'b')}"
    assert chunker.split_text(text)[0].text == f"{words(3, 'a')}\n\n# Heading here\n\n{words(6, 'b')}"


def test_a_closing_heading_joins_the_last_chunk() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=12, chunk_overlap=0)
    text = f"{words(6, 'a')}. {words(5, 'b')}.\n\n## Appendix"
    chunks = chunker.split_text(text)
    assert chunks[-1].text.endswith("## Appendix")
    assert all(re.search(r"\w", re.sub(r"^#+ .*$", "", c.text, flags=re.M)) for c in chunks)


def test_a_text_of_headings_and_punctuation_only_gives_no_chunk(caplog: pytest.LogCaptureFixture) -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=8, chunk_overlap=0)
    assert chunker.split_text("# Title\n\n## Subtitle\n\n---\n\n* * *") == []
    assert chunker.split_text("   \n\t  \n") == []
    assert chunker.split_text("") == []
    with caplog.at_level(logging.INFO, logger="m3_integrations.chunking"):
        chunker.split_documents([SourceDocument("only-headings.md", "# A\n\n## B", {})])
    assert "left out 1 pieces" in caplog.text and "only-headings.md" in caplog.text


def test_setext_and_rst_titles_are_headings_but_code_comments_are_not() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=10, chunk_overlap=0)
    text = f"{words(8, 'a')}\n\nResults\n=======\n\n{words(8, 'b')}"
    assert chunker.split_text(text)[1].text.startswith("Results\n=======\n\nb0")
    # The best cut (10 tokens) comes right after a "# comment" line. Inside a code fence that line is
    # text and the cut is taken; outside, it is a heading, which sticks to what follows.
    code = f"{words(7, 'a')}\n```\n# comment\nx = 1 + 2\n```"
    assert chunker.split_text(code)[0].text.endswith("```\n# comment")
    markdown = f"{words(7, 'a')}\nzz\n# comment\nx = 1 + 2\n"
    assert chunker.split_text(markdown)[0].text.endswith("a6\nzz")


# ------------------------------------------------------------------------------------------ overlap
def test_overlap_starts_at_a_sentence_when_one_keeps_half_of_it() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=20, chunk_overlap=6)
    text = " ".join(f"{words(4, s)}." for s in "abcdefghij")
    chunks = chunker.split_text(text)
    for before, after in itertools.pairwise(chunks):
        shared = text[after.start : before.end]
        assert shared and re.fullmatch(r"(\w+ ){3}\w+\.", shared), shared  # one whole sentence of 4 words


def test_overlap_falls_back_to_a_word_boundary() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=20, chunk_overlap=5)
    chunks = chunker.split_text(words(60))
    for before, after in itertools.pairwise(chunks):
        assert before.text.split()[-5:] == after.text.split()[:5]
    assert len(chunks[0].text.split()) == 20


def test_overlap_in_hard_wrapped_prose_is_not_cut_short_at_a_line_start() -> None:
    # Sentences of 30 words, a line break every 4 words: a line start is no sentence start.
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=20, chunk_overlap=6)

    def sentence(prefix: str) -> str:
        lines = [" ".join(f"{prefix}{i}" for i in range(start, start + 4)) for start in range(0, 28, 4)]
        return "\n".join(lines) + f"\n{prefix}28 {prefix}29."

    text = " ".join(sentence(prefix) for prefix in "abcd")
    chunks = chunker.split_text(text)
    for before, after in itertools.pairwise(chunks):
        assert len(text[after.start : before.end].split()) == 6


def test_overlap_in_cjk_text_starts_after_a_comma() -> None:
    chunker = Chunker(PieceTokenizer(), chunk_tokens=24, chunk_overlap=6)
    text = "检索模型，比较向量，相似度高，没有空格，" * 12
    chunks = chunker.split_text(text)
    assert len(chunks) > 3
    for chunk in chunks[1:]:
        assert text[chunk.start - 1] == "，"


def test_no_overlap_across_a_heading() -> None:
    chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=14, chunk_overlap=4)
    text = f"{words(10, 'a')}.\n\n# Next\n\n{words(10, 'b')}."
    first, second = chunker.split_text(text)
    assert second.start > first.end and second.text.startswith("# Next")


# ------------------------------------------------------------------------ sizes, limits, arguments
def test_defaults_fit_a_512_token_encoder_with_an_instruction() -> None:
    assert DEFAULT_CHUNK_TOKENS + 2 + 4 <= 512
    assert 0 < DEFAULT_CHUNK_OVERLAP < DEFAULT_CHUNK_TOKENS // 4
    chunker = Chunker(PieceTokenizer(passage_max_length=512, passage_instruction="passage: "))
    assert (chunker.chunk_tokens, chunker.chunk_overlap) == (DEFAULT_CHUNK_TOKENS, DEFAULT_CHUNK_OVERLAP)


def test_chunk_size_is_clamped_to_the_passage_limit_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = PieceTokenizer(passage_max_length=100, passage_instruction="passage: ")
    instruction_tokens = len(tokenizer.tokenize(["passage: "], add_special_tokens=False).input_ids[0])
    with caplog.at_level(logging.WARNING, logger="m3_integrations.chunking"):
        chunker = Chunker(tokenizer, chunk_tokens=384, chunk_overlap=80)
    assert chunker.chunk_tokens == 100 - 2 - instruction_tokens
    assert chunker.requested_chunk_tokens == 384
    assert chunker.chunk_overlap == chunker.chunk_tokens // 2
    assert (
        "chunk_tokens=384 does not fit" in caplog.text
        and f"chunk_tokens={chunker.chunk_tokens}" in caplog.text
    )
    text = " ".join(_english_sentence(random.Random(i)) for i in range(100))
    for chunk in chunker.split_text(text):
        encoded = tokenizer.tokenize(["passage: " + chunk.text]).input_ids[0]
        assert len(encoded) <= 100


def test_clamp_uses_the_model_limit(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", passage_max_length=64, passage_instruction="passage: ")
    chunker = Chunker(model, chunk_tokens=384)
    assert chunker.chunk_tokens < 64 - 2
    for chunk in chunker.split_text(" ".join(_english_sentence(random.Random(i)) for i in range(50))):
        assert len(model.tokenize(["passage: " + chunk.text]).input_ids[0]) <= 64


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"chunk_tokens": MIN_CHUNK_TOKENS - 1}, ValueError, "chunk_tokens must be at least"),
        ({"chunk_tokens": 16, "chunk_overlap": 16}, ValueError, "chunk_overlap must be"),
        ({"chunk_tokens": 16, "chunk_overlap": -1}, ValueError, "chunk_overlap must be"),
        ({"chunk_tokens": 16.0}, TypeError, "chunk_tokens must be an integer"),
        ({"chunk_overlap": True}, TypeError, "chunk_overlap must be an integer"),
    ],
)
def test_bad_sizes_are_named(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Chunker(WhitespaceTokenizer(), **kwargs)


def test_bad_tokenizer_and_text_are_named() -> None:
    with pytest.raises(TypeError, match="tokenize method"):
        Chunker(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a string"):
        Chunker(WhitespaceTokenizer()).split_text(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"documents\[1\] \(id 'b'\)"):
        Chunker(WhitespaceTokenizer()).split_documents(
            [SourceDocument("a", "x"), SourceDocument("b", b"bytes")]  # type: ignore[arg-type]
        )


# ---------------------------------------------------------------------------- documents and speed
def test_split_documents_keeps_sources_metadata_and_pages() -> None:
    pages = ["alpha beta " * 10, "gamma " * 10, "", "delta " * 10]
    text = "\n\n".join(p.strip() for p in pages if p)
    starts = []
    offset = 0
    for page in pages:
        starts.append(offset)
        if page:
            offset += len(page.strip()) + 2
    document = SourceDocument("report.pdf", text, {"source": "in/report.pdf", "title": "R"}, tuple(starts))
    chunks = Chunker(WhitespaceTokenizer(), chunk_tokens=12, chunk_overlap=0).split_documents([document])
    assert [c.id for c in chunks] == [f"report.pdf#{i}" for i in range(len(chunks))]
    for chunk in chunks:
        assert chunk.metadata["source"] == "in/report.pdf" and chunk.metadata["title"] == "R"
        assert chunk.metadata["source_id"] == "report.pdf" and chunk.metadata["chunk_index"] == chunk.index
        first_word, last_word = chunk.text.split()[0], chunk.text.split()[-1]
        expected = {"alpha": 1, "beta": 1, "gamma": 2, "delta": 4}
        assert chunk.metadata["page"] == expected[first_word]
        assert chunk.metadata["page_end"] == expected[last_word]
    assert "page" not in Chunker(WhitespaceTokenizer()).split_text("no pages here")[0].metadata


def test_each_document_is_tokenized_once_and_chunks_in_one_call() -> None:
    tokenizer = PieceTokenizer()
    rng = random.Random(3)
    documents = [
        SourceDocument(f"d{i}", " ".join(_english_sentence(rng) for _ in range(40))) for i in range(40)
    ]
    chunker = Chunker(tokenizer, chunk_tokens=64, chunk_overlap=8)
    tokenizer.calls.clear()
    chunks = chunker.split_documents(documents)
    with_offsets = [text for texts, offsets in tokenizer.calls if offsets for text in texts]
    assert sorted(with_offsets) == sorted(d.text for d in documents)  # each document once
    counted = [text for texts, offsets in tokenizer.calls if not offsets for text in texts]
    assert sorted(counted) == sorted(c.text for c in chunks)  # each chunk once, no candidates
    assert len(tokenizer.calls) <= 2 * ((len(documents) + 15) // 16)
