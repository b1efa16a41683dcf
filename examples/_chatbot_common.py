"""What the LangChain and LlamaIndex example chatbots share, none of it tied to either framework.

Reading the files (the package's own reader: .txt .md .rst .jsonl, and .pdf .html .docx with their
extras) and chunking them (the package's :class:`~m3_integrations.chunking.Chunker`, sizes in tokens of
the model's tokenizer), the manifest that says when to reuse a saved index, the command line (with the
model options of the ``m3-integrations`` CLI, checked before any model loads), the question loop, and
the offline answer: quoted sentences with citations, or "the files do not say".

**When the offline answer says "not found".** Encoder scores cannot decide it: their scale depends on
the model, and the best passage for an unrelated question scores as high as for a related one (with
multilingual-e5-small: 0.999 for a football question over these notes, 0.983 for one they answer).
So the rule is lexical: a passage is evidence only when it holds **more than half of the question's
content words** (words that are not English stop words or Korean question words; a word matches its
inflections: ``score``/``scores``, ``수도는``/``수도와``, and Chinese or Japanese text is compared by
character pairs). The quotes come from the passages that hold the most of those words, and only from
their sentences that share one with the question, best first by the encoder's own score for each
sentence (so they work alike for BGE-M3 and plain encoders). docs/documents.md has the measurements.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3_integrations._cli_documents import read_inputs
from m3_integrations.bm25 import ENGLISH_STOPWORDS
from m3_integrations.chunking import MIN_CHUNK_TOKENS
from m3_integrations.cli import CliError, add_model_arguments, configure_logging, load_model, model_kwargs

if TYPE_CHECKING:
    from m3_integrations import M3Model
    from m3_integrations.chunking import Chunk, Chunker
    from m3_integrations.documents import SourceDocument

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data"
MANIFEST = "sources.json"
# Chunk sizes in tokens: a few sentences, so a citation points at a passage rather than a whole file.
DEFAULT_CHUNK_TOKENS = 160
DEFAULT_CHUNK_OVERLAP = 20
MAX_QUOTED_SENTENCES = 3
NOT_FOUND = "The indexed files do not say: no retrieved passage holds most of the question's words."

# Latin sentences end at punctuation followed by a space; Chinese and Japanese full-width punctuation
# ends a sentence by itself, as those scripts put no space after it.
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|$)")
_UNDERLINE = re.compile(r"^ {0,3}([=\-~^*+#])\1{2,}[ \t]*$")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*+|`+|(?<!\w)_+|_+(?!\w)")
_HAN = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TERM = re.compile(rf"[{_HAN}]+|(?:(?![{_HAN}])[^\W_])+")
# Korean question words (and their inflected forms): never in an answer, so not evidence of one.
_KOREAN_QUESTION_WORDS = (
    "무엇",
    "뭐",
    "어디",
    "어떻게",
    "어떤",
    "어느",
    "언제",
    "누가",
    "누구",
    "왜",
    "무슨",
    "몇",
)
# Shared prefix (in characters) that makes two words one: Hangul syllables carry a morpheme each.
_STEM_HANGUL, _STEM_OTHER = 2, 5


class Log:
    """Progress on stderr (silenced by --quiet); warnings and errors always show; answers go to stdout."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr)

    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)

    def report(self, level: int, message: str) -> None:
        """A line of the reader's summary, at its logging level."""
        if level >= logging.WARNING:
            self.warning(message)
        else:
            self.info(message)


# ---------------------------------------------------------------------------------------- sources
def read_sources(data: str, log: Log) -> list[SourceDocument]:
    """The documents under ``data`` (a folder or a file), read by the package's reader.

    What was skipped (other file types, empty files) is reported through ``log``, with counts.

    Raises:
        CliError: exit 3 for a damaged file, a file type whose extra is not installed, or no document.
    """
    return read_inputs([data], report=log.report)


def make_chunker(model: M3Model, args: argparse.Namespace) -> Chunker:
    """The package's chunker, sized in the model's tokens (``--chunk-tokens``, ``--chunk-overlap``)."""
    from m3_integrations.chunking import Chunker

    return Chunker(model, args.chunk_tokens, args.chunk_overlap)


def split(chunker: Chunker, documents: Sequence[SourceDocument], log: Log) -> list[Chunk]:
    chunks = chunker.split_documents(documents, show_progress=not log.quiet)
    log.info(
        f"Cut {len(documents)} documents into {len(chunks)} chunks of at most {chunker.chunk_tokens} tokens"
    )
    return chunks


def build_manifest(
    documents: Sequence[SourceDocument], model_identity: dict[str, Any], chunker: Chunker
) -> dict[str, Any]:
    """Everything that, when changed, makes the saved index stale: the documents, model and chunking.

    The chunk sizes are the chunker's own (it lowers them to fit a model's passage limit).
    """
    return {
        "documents": {
            d.id: hashlib.sha256(
                json.dumps([d.text, d.metadata], sort_keys=True, ensure_ascii=False).encode()
            ).hexdigest()
            for d in documents
        },
        "model": model_identity,
        "chunk_tokens": chunker.chunk_tokens,
        "chunk_overlap": chunker.chunk_overlap,
    }


def manifest_matches(manifest_path: Path, manifest: dict[str, Any]) -> bool:
    """Whether the saved manifest equals ``manifest``; an unreadable one does not."""
    try:
        saved = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    # Compared in the form it was saved in: JSON turns tuples into lists and keys into strings.
    return saved == json.loads(json.dumps(manifest))


def save_manifest(manifest_path: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically; call it after the index is saved.

    Written last, a crash leaves the manifest missing or stale, which only costs a rebuild next time.
    """
    staging = manifest_path.with_name(manifest_path.name + ".tmp")
    staging.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, manifest_path)


def source_label(metadata: dict[str, Any]) -> str:
    """How a passage is cited: its document's id (``notes/intro.md``), with the page(s) of a PDF."""
    label = str(metadata.get("source_id", metadata.get("source", "?")))
    page, page_end = metadata.get("page"), metadata.get("page_end")
    if page is None:
        return label
    return f"{label}, page {page}" if page_end in (None, page) else f"{label}, pages {page}-{page_end}"


# ---------------------------------------------------------------------------------------- answers
def passage_sentences(text: str) -> list[str]:
    """The sentences of a passage, as plain text: Markdown headings dropped, list and emphasis marks removed.

    Example:
        >>> passage_sentences("# Title\\n\\n- **First** one. Second?\\n- A [link](http://x) item")
        ['First one.', 'Second?', 'A link item']
    """
    units: list[list[str]] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if _ATX_HEADING.match(line) or _UNDERLINE.match(line):
            continue
        if line.strip() and _UNDERLINE.match(following):  # an underlined (setext) title
            continue
        if not line.strip():
            units.append([])
            continue
        if _LIST_MARKER.match(line) or not units:
            units.append([])
        units[-1].append(_LIST_MARKER.sub("", line, count=1))
    sentences = []
    for unit in units:
        plain = _EMPHASIS.sub("", _LINK.sub(r"\1", " ".join(unit)))
        for piece in SENTENCE_BOUNDARY.split(plain):
            sentence = " ".join(piece.split())
            if len(sentence) > 1 and any(ch.isalnum() for ch in sentence):
                sentences.append(sentence)
    return sentences


def content_terms(text: str) -> set[str]:
    """The words of ``text`` that can carry an answer: lower-cased, without stop and question words.

    Runs of Chinese or Japanese characters (written without spaces) become overlapping character pairs.

    Example:
        >>> sorted(content_terms("What does the lexical score capture? 서울의 인구는 어떻게 되나요?"))
        ['capture', 'lexical', 'score', '되나요', '서울의', '인구는']
        >>> sorted(content_terms("中文检索"))
        ['中文', '文检', '检索']
    """
    terms = set()
    for match in _TERM.finditer(text.lower()):
        word = match.group()
        if re.match(rf"[{_HAN}]", word):
            terms.update(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        elif len(word) > 1 and word not in ENGLISH_STOPWORDS and not word.startswith(_KOREAN_QUESTION_WORDS):
            terms.add(word)
    return terms


def _same_word(a: str, b: str) -> bool:
    """Whether two terms are one word up to inflection: one a prefix of the other, or a long shared stem."""
    if a == b:
        return True
    if re.match(rf"[{_HAN}]", a) or re.match(rf"[{_HAN}]", b):
        return False  # character pairs match exactly or not at all
    shared = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    stem = _STEM_HANGUL if "\uac00" <= a[0] <= "\ud7a3" else _STEM_OTHER
    return shared >= 2 and shared >= min(len(a), len(b), stem)


def matched_terms(question_terms: Iterable[str], text_terms: set[str]) -> set[str]:
    """The question's terms that ``text`` holds (a word matches its inflections)."""
    return {q for q in question_terms if q in text_terms or any(_same_word(q, t) for t in text_terms)}


@dataclass(frozen=True)
class Passage:
    """A retrieved passage: its text and how to cite it."""

    text: str
    source: str


@dataclass
class Answer:
    """An extractive answer: quoted sentences, each with the number of the source it comes from.

    ``sources`` are the sources of the passages quoted, in the order of their numbers; empty when
    nothing was found.
    """

    quotes: list[tuple[int, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def render(self) -> str:
        """``sentence [n]`` lines and the ``Sources:`` block, or :data:`NOT_FOUND`."""
        if not self.quotes:
            return NOT_FOUND
        return f"{cite(self.quotes)}\n\n{sources_block(self.sources)}"


def extractive_answer(
    question: str,
    passages: Sequence[Passage],
    rank: Callable[[str, list[str]], Sequence[int]],
    max_sentences: int = MAX_QUOTED_SENTENCES,
) -> Answer:
    """Quote the sentences that answer ``question``, or none when no passage is evidence (module docs).

    Args:
        question: the question.
        passages: the retrieved passages, best first.
        rank: ``(question, sentences) -> indexes of the best sentences, best first`` (the encoder's
            scores: each chatbot passes its framework's M3 reranker).
        max_sentences: most sentences quoted.

    Returns:
        The quotes, each numbered by its passage's source in the order first cited, and those sources
        (a PDF's pages are sources of their own; passages of one text file share one).
    """
    terms = content_terms(question)
    held = [len(matched_terms(terms, content_terms(passage.text))) for passage in passages]
    most = max(held, default=0)
    if most * 2 <= len(terms):  # no passage holds more than half the question's words
        return Answer()
    candidates: list[tuple[int, str]] = []  # (passage position, sentence)
    for position, passage in enumerate(passages):
        if held[position] < most:
            continue  # quoted: the passages that hold the most of the question's words
        candidates.extend(
            (position, sentence)
            for sentence in passage_sentences(passage.text)
            if matched_terms(terms, content_terms(sentence))
        )
    candidates = _without_repeats(candidates)
    if not candidates:
        return Answer()
    best = list(rank(question, [sentence for _, sentence in candidates]))[:max_sentences]
    # One number per source cited (two passages of one file share it), in the order first cited.
    numbers: dict[str, int] = {}
    answer = Answer()
    for i in best:
        position, sentence = candidates[i]
        source = passages[position].source
        if source not in numbers:
            numbers[source] = len(numbers) + 1
            answer.sources.append(source)
        answer.quotes.append((numbers[source], sentence))
    return answer


def _without_repeats(candidates: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Each sentence once: overlapping chunks repeat a sentence, or its end (after a cut mid-sentence)."""
    kept: list[tuple[int, str]] = []
    for i, (position, sentence) in enumerate(candidates):
        repeated = any(
            sentence in other and (len(other) > len(sentence) or j < i)
            for j, (_, other) in enumerate(candidates)
            if j != i
        )
        if not repeated:
            kept.append((position, sentence))
    return kept


def cite(sentences: Iterable[tuple[int, str]]) -> str:
    """One line per sentence, ending with the [n] of its passage."""
    return "\n".join(f"{sentence} [{n}]" for n, sentence in sentences)


def sources_block(sources: Iterable[str]) -> str:
    """The ``Sources:`` list that maps each [n] to its passage's document."""
    return "Sources:\n" + "\n".join(f"[{n}] {source}" for n, source in enumerate(sources, 1))


# ---------------------------------------------------------------------------------------- command line
def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            msg = f"must be an integer >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def build_parser(description: str, *, llm_help: str) -> argparse.ArgumentParser:
    """The options both chatbots take: the m3-integrations model options, data, chunking, index, question.

    Each script sets its own ``index_dir`` default with ``set_defaults``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="folder (or file) to index: .txt .md .rst .jsonl, and .pdf .html .docx with "
        'pip install "m3-integrations[documents]"',
    )
    parser.add_argument("--index-dir", help="where the index is saved")
    # --model, --allow-missing-heads, --pooling, --query/--passage-instruction, --device...: as the CLI's
    add_model_arguments(parser)
    parser.add_argument("--llm", default=None, help=llm_help)
    parser.add_argument("--query", default=None, help="answer one question and exit")
    parser.add_argument("-k", type=_count(1), default=4, help="passages retrieved per question")
    parser.add_argument(
        "--chunk-tokens",
        type=_count(MIN_CHUNK_TOKENS),
        default=DEFAULT_CHUNK_TOKENS,
        help=f"most tokens (of the model's tokenizer) per chunk (default {DEFAULT_CHUNK_TOKENS})",
    )
    parser.add_argument(
        "--chunk-overlap",
        type=_count(0),
        default=DEFAULT_CHUNK_OVERLAP,
        help=f"tokens shared by neighbouring chunks (default {DEFAULT_CHUNK_OVERLAP})",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even if it is current")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answers")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="show the DEBUG log")
    return parser


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the command line, found before anything is read; ``None`` if there is none."""
    if args.query is not None and not args.query.strip():
        return "--query is empty"
    if not Path(args.data).exists():
        return f"--data: {args.data} does not exist"
    if args.index_dir is not None and Path(args.index_dir).exists() and not Path(args.index_dir).is_dir():
        return f"--index-dir {args.index_dir} is a file, not a folder"
    if args.chunk_overlap >= args.chunk_tokens:
        overlap, tokens = args.chunk_overlap, args.chunk_tokens
        return f"--chunk-overlap ({overlap}) must be smaller than --chunk-tokens ({tokens})"
    return None


def open_model(args: argparse.Namespace) -> M3Model:
    """The encoder the model options name; raises ``CliError`` (with the flags to pass) when it cannot load.

    The model shows no progress bar of its own, so questions print none; the index shows one while it
    encodes the files (``show_progress=not args.quiet``).
    """
    return load_model(args.model, model_kwargs(args))


def open_log(quiet: bool, verbose: int = 0) -> Log:
    """The run's Log; also routes the package's log to stderr (DEBUG with -v, nothing but errors with -q)."""
    configure_logging(quiet, verbose)
    return Log(quiet=quiet)


Start = Callable[[argparse.Namespace, Log, list["SourceDocument"]], tuple[Callable[[str], str], str]]


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, start: Start, greeting: str) -> int:
    """Both chatbots' main: check the command line, read the files, start the chatbot, then answer.

    Args:
        parser: the script's parser (:func:`build_parser` with its defaults).
        argv: the arguments; default ``sys.argv[1:]``.
        start: builds the chatbot from the options, the log and the documents read, and returns its
            ``ask(question) -> answer`` and the LLM's name.
        greeting: printed before an interactive session.

    Returns:
        The exit status: 2 for a bad command line, 3 for files or a model that cannot be read (both
        found before any model loads, but for the model itself), else 0.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's own message is printed: 2 for an error, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    log = open_log(args.quiet, args.verbose)
    problem = check_arguments(args)
    if problem is not None:
        log.error(problem)
        return 2
    try:
        documents = read_sources(args.data, log)
        ask, llm_name = start(args, log, documents)
    except CliError as err:
        log.error(str(err))
        return err.code
    log.info(f"LLM: {llm_name}")
    return answer_or_chat(args.query, ask, log, greeting)


def answer_or_chat(query: str | None, ask: Callable[[str], str], log: Log, greeting: str) -> int:
    """Answer ``query`` and return, or, without one, answer questions from stdin until an empty line.

    Returns:
        The exit status: 2 for an empty ``query``, else 0.
    """
    if query is not None:
        if not query.strip():
            log.error("--query is empty")
            return 2
        print(ask(query))
        return 0
    print(greeting)
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if not question or question.lower() in {"exit", "quit"}:
            break
        print(ask(question), end="\n\n")
    return 0
