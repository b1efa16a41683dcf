"""What the LangChain and LlamaIndex example chatbots share, none of it tied to either framework.

The source files and their manifest (when to reuse a saved index), the log, sentence splitting and
citation formatting for the offline answer, the command line (with the model options of the
``m3-integrations`` CLI, checked before any model loads) and the question loop. Each chatbot keeps its
own chunking, retrieval and answering in its own script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3_integrations.cli import CliError, add_model_arguments, configure_logging, load_model, model_kwargs

if TYPE_CHECKING:
    from m3_integrations import M3Model

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data"
SUFFIXES = (".md", ".txt")
MANIFEST = "sources.json"
# Latin sentences end at punctuation followed by a space; Chinese and Japanese full-width punctuation
# ends a sentence by itself, as those scripts put no space after it.
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


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


def source_files(folder: Path) -> list[Path]:
    """The .md/.txt files under ``folder``, sorted, so ids and the manifest are stable."""
    if not folder.is_dir():
        msg = f"data folder {folder} does not exist"
        raise FileNotFoundError(msg)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        msg = f"no {' or '.join(SUFFIXES)} files in {folder}"
        raise FileNotFoundError(msg)
    return files


def build_manifest(
    folder: Path, files: Sequence[Path], model_identity: dict[str, Any], chunk_size: int, chunk_overlap: int
) -> dict[str, Any]:
    """Everything that, when changed, makes the saved index stale: file hashes, model and chunking."""
    return {
        "files": {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
        },
        "model": model_identity,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
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


def numbered_sentences(passages: Iterable[str]) -> list[tuple[int, str]]:
    """The sentences of the passages, each with the 1-based number its passage is cited by."""
    sentences: list[tuple[int, str]] = []
    for n, passage in enumerate(passages, 1):
        for piece in SENTENCE_BOUNDARY.split(passage):
            # A chunk may open with a Markdown heading, whose "#" marks are not worth quoting.
            sentence = " ".join(piece.split()).lstrip("# ")
            if len(sentence) > 1:
                sentences.append((n, sentence))
    return sentences


def cite(sentences: Iterable[tuple[int, str]]) -> str:
    """One line per sentence, ending with the [n] of its passage."""
    return "\n".join(f"{sentence} [{n}]" for n, sentence in sentences)


def sources_block(sources: Iterable[str]) -> str:
    """The ``Sources:`` list that maps each [n] to its file."""
    return "Sources:\n" + "\n".join(f"[{n}] {source}" for n, source in enumerate(sources, 1))


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


def build_parser(description: str, *, llm_help: str, chunk_unit: str) -> argparse.ArgumentParser:
    """The options both chatbots take: the m3-integrations model options, data, index and question.

    Each script sets its own ``index_dir``, ``chunk_size`` and ``chunk_overlap`` defaults with
    ``set_defaults``, as its splitter measures chunks in its own ``chunk_unit``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of .md/.txt files to index")
    parser.add_argument("--index-dir", help="where the index is saved")
    # --model, --allow-missing-heads, --pooling, --query/--passage-instruction, --device...: as the CLI's
    add_model_arguments(parser)
    parser.add_argument("--llm", default=None, help=llm_help)
    parser.add_argument("--query", default=None, help="answer one question and exit")
    parser.add_argument("-k", type=_count(1), default=4, help="passages retrieved per question")
    parser.add_argument("--chunk-size", type=_count(1), help=f"{chunk_unit} per chunk")
    parser.add_argument("--chunk-overlap", type=_count(0), help=f"{chunk_unit} shared by neighbours")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the index even if it is current")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answers")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="show the DEBUG log")
    return parser


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the command line, found before any model loads; ``None`` if there is none."""
    if args.query is not None and not args.query.strip():
        return "--query is empty"
    try:
        source_files(Path(args.data))
    except FileNotFoundError as err:
        return f"--data: {err}"
    if args.index_dir is not None and Path(args.index_dir).exists() and not Path(args.index_dir).is_dir():
        return f"--index-dir {args.index_dir} is a file, not a folder"
    if args.chunk_overlap >= args.chunk_size:
        return f"--chunk-overlap ({args.chunk_overlap}) must be smaller than --chunk-size ({args.chunk_size})"
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


def run(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    start: Callable[[argparse.Namespace, Log], tuple[Callable[[str], str], str]],
    greeting: str,
) -> int:
    """Both chatbots' main: read and check the command line, start the chatbot, then answer.

    Args:
        parser: the script's parser (:func:`build_parser` with its defaults).
        argv: the arguments; default ``sys.argv[1:]``.
        start: builds the chatbot and returns its ``ask(question) -> answer`` and the LLM's name.
        greeting: printed before an interactive session.

    Returns:
        The exit status: 2 for a bad command line (found before any model loads), 3 for a model that
        cannot be loaded, else 0.
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
        ask, llm_name = start(args, log)
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
