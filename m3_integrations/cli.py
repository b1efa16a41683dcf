"""The ``m3-integrations`` command line: build an index from files, search it, evaluate on BEIR data.

Commands::

    m3-integrations index DIR_OR_FILES... --out INDEX [--model BAAI/bge-m3] [--chunk-tokens N]
    m3-integrations search INDEX "query" ["another query" ...] [-k 5] [--mode hybrid] [--json]
    m3-integrations search INDEX --queries-file queries.txt     # or queries.jsonl (BEIR), or - for stdin
    m3-integrations eval --data BEIR_DIR [--model BAAI/bge-m3 | --index INDEX] [--mode M ...]
                         [--fusion F ...] [--chunk-tokens N] [--json OUT] [--report OUT]

``index`` reads files with :func:`m3_integrations.documents.read_documents` (a BEIR folder gives its
corpus only; what is skipped is printed with counts) and cuts files, not JSON-lines records, into
chunks of ``--chunk-tokens`` tokens (see ``m3_integrations._cli_documents``). ``eval`` on chunks scores
each document by its best chunk, so the metrics stay per document.

The model: ``--model`` takes a hub id (default ``BAAI/bge-m3``) or a local checkpoint folder. An encoder
without BGE-M3's heads (e5, MiniLM...) also needs ``--allow-missing-heads --pooling mean`` (and for e5
``--query-instruction "query: " --passage-instruction "passage: "``). ``search`` and ``eval --index``
rebuild the query encoder from the index's ``manifest.json``: only plain settings from a fixed list
(pooling, instructions, max lengths, whether heads were optional), each checked, and the recorded model
itself only when it is a plain hub id; a local model folder must be named with ``--model``. Nothing read
from an index folder can make the command run code. Every query of one ``search`` call shares one model
load.

Exit codes: 0 success; 1 unexpected error; 2 bad command line, found before any model loads (an empty
query, an unknown or unavailable ``--device``, malformed ``--weights``, a bad ``-k``...); 3 a missing
path, an empty corpus or unreadable data, a checkpoint or index that cannot be loaded, or an ``--out``
that is not an index folder (left untouched); 4 the model cannot give a requested mode (say, ``--lexical
m3`` on an encoder without BGE-M3's sparse head). Errors are one line on stderr (``-v`` adds the
traceback); results go to stdout. ``--quiet`` silences progress bars and logs, ``-v`` shows the DEBUG log.

The model options are shared with the example chatbots: :func:`add_model_arguments`,
:func:`model_kwargs`, :func:`load_model` and :func:`configure_logging`.

Example:
    .. code-block:: bash

        m3-integrations index docs/ --out my.index --model BAAI/bge-m3
        m3-integrations search my.index "what is hybrid search?" "what is BM25?" -k 3
        m3-integrations eval --data ../shared/data/cranfield --index cranfield.index --mode hybrid dense
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from m3_integrations.index.options import FUSION_METHODS, WEIGHT_KEYS, check_weights
from m3_integrations.index.options import MODES as MODE_SLOTS
from m3_integrations.model import DEFAULT_MODEL

if TYPE_CHECKING:
    from m3_integrations import M3Index, M3Model

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL",
    "CliError",
    "add_model_arguments",
    "configure_logging",
    "load_model",
    "main",
    "model_kwargs",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODE = 4

MODES = tuple(MODE_SLOTS)
FUSIONS = FUSION_METHODS
SIGNALS = WEIGHT_KEYS  # the keys --weights takes
# Written by earlier versions beside the index to say how to load the model; never read now, as a
# shared folder could name code to run in it.
LEGACY_MODEL_FILE = "cli_model.json"
MANIFEST_FILE = "manifest.json"
_SEARCH_CHUNK = 16  # queries per search_batch call: one model call each, and a progress step
# A hub id is "name" or "org/name"; anything with other path characters is a folder.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
_MAX_INSTRUCTION_CHARS = 1000
_MAX_LENGTH_TOKENS = 1 << 20
_MISSING_HEADS_HINT = (
    'pass --allow-missing-heads --pooling mean (for e5 models also --query-instruction "query: " '
    '--passage-instruction "passage: ")'
)
# Library messages name Python arguments; the command line shows the flag that sets each one.
_FLAG_OF_ARGUMENT = re.compile(
    r"\b(allow_missing_heads|pooling|query_instruction|passage_instruction|device|batch_size|"
    r"query_max_length|passage_max_length|lexical|bm25_tokenizer|bm25_stemmer|bm25_stopwords)"
    r"=(True|'[^']*'|\"[^\"]*\"|[\w.:-]+)"
)


class CliError(Exception):
    """An error with an exit code and a one-line message meant for the user.

    Args:
        message: what is wrong and what to do about it, naming command-line flags.
        code: the exit code (2 for a bad command line, 3 for bad input data, 4 for an impossible mode).
        prog: the command the message is about (``m3-integrations search``); ``None`` for the caller's.
    """

    def __init__(self, message: str, code: int = EXIT_INPUT, prog: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line with exit code 2, instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)", EXIT_USAGE, prog=self.prog)


# ---------------------------------------------------------------------------- argument types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"must be a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be an integer >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _device(text: str) -> str:
    """A torch device this machine has; refused here so that a typo costs no model load."""
    import torch

    value = text.strip()
    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError) as err:
        msg = f"{text!r} is not a device; use cpu, cuda, cuda:N or mps"
        raise argparse.ArgumentTypeError(msg) from err
    if device.type == "cpu":
        return value
    backends = {
        "cuda": torch.cuda,
        "mps": getattr(torch.backends, "mps", None),
        "xpu": getattr(torch, "xpu", None),
    }
    backend = backends.get(device.type)
    if backend is None:
        msg = f"{text!r} is not a device the model runs on; use cpu, cuda, cuda:N or mps"
        raise argparse.ArgumentTypeError(msg)
    if not backend.is_available():
        msg = f"{text!r}: {device.type.upper()} is not available on this machine; use --device cpu"
        raise argparse.ArgumentTypeError(msg)
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        msg = f"{text!r}: this machine has {count} {device.type} device(s), numbered from 0"
        raise argparse.ArgumentTypeError(msg)
    return value


def _weights(text: str) -> dict[str, float] | tuple[float, ...]:
    """``--weights``: a JSON object by signal name, or a list of 3 (dense, sparse, colbert) or 4 (+ bm25)."""
    example = '\'{"dense": 0.4, "sparse": 0.2, "colbert": 0.4}\''
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"not JSON ({err.msg}); write it like {example}"
        raise argparse.ArgumentTypeError(msg) from err
    if not isinstance(value, dict | list):
        msg = f"must be a JSON object such as {example} or a list of 3 or 4 numbers"
        raise argparse.ArgumentTypeError(msg)
    try:
        weights = check_weights(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return tuple(weights.values()) if isinstance(value, list) else weights


# ---------------------------------------------------------------------------- shared model options
def add_model_arguments(
    parser: argparse.ArgumentParser,
    *,
    default_model: str | None = DEFAULT_MODEL,
    model_help: str | None = None,
) -> None:
    """Add the options that choose and configure the encoder (``--model``, ``--device``...) to a parser.

    The ``m3-integrations`` commands and both example chatbots take the same options; values are checked
    as they are parsed (an unknown or unavailable ``--device`` is a parse error), before any model loads.
    Turn the parsed options into :class:`~m3_integrations.M3Model` arguments with :func:`model_kwargs`.

    Args:
        parser: the parser (or argument group) to extend.
        default_model: the ``--model`` default; ``None`` when the caller resolves it later.
        model_help: the ``--model`` help text; default names the default model.

    Example:
        .. code-block:: python

            import argparse

            from m3_integrations.cli import add_model_arguments, load_model, model_kwargs

            parser = argparse.ArgumentParser()
            add_model_arguments(parser)
            args = parser.parse_args(["--model", "/models/e5", "--allow-missing-heads", "--pooling", "mean"])
            model = load_model(args.model, model_kwargs(args))
    """
    parser.add_argument(
        "--model",
        default=default_model,
        metavar="MODEL",
        help=model_help or f"hub id or local checkpoint folder (default: {default_model})",
    )
    parser.add_argument(
        "--allow-missing-heads",
        action="store_true",
        default=None,
        help="run a plain encoder without BGE-M3's sparse/ColBERT heads (BM25 and identity ColBERT)",
    )
    parser.add_argument(
        "--pooling",
        choices=("cls", "mean"),
        default=None,
        help="dense pooling (bge-m3: cls; e5, MiniLM: mean)",
    )
    parser.add_argument(
        "--query-instruction", metavar="TEXT", default=None, help='query prefix, e.g. "query: " for e5'
    )
    parser.add_argument(
        "--passage-instruction", metavar="TEXT", default=None, help='passage prefix, e.g. "passage: " for e5'
    )
    parser.add_argument(
        "--device", type=_device, default=None, help="cpu, cuda, cuda:1, mps (default: cuda if present)"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, metavar="N", default=None, help="texts per forward pass"
    )
    parser.add_argument(
        "--query-max-length", type=_positive_int, metavar="N", default=None, help="token limit of queries"
    )
    parser.add_argument(
        "--passage-max-length", type=_positive_int, metavar="N", default=None, help="token limit of passages"
    )


_MODEL_OPTIONS = (
    "device",
    "allow_missing_heads",
    "pooling",
    "query_instruction",
    "passage_instruction",
    "batch_size",
    "query_max_length",
    "passage_max_length",
)


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~m3_integrations.M3Model` keyword arguments set by :func:`add_model_arguments` options.

    Only options given on the command line appear, so they can override settings recorded elsewhere.

    Args:
        args: the parsed command line.

    Returns:
        Keyword arguments such as ``{"pooling": "mean", "allow_missing_heads": True}``.

    Example:
        >>> import argparse
        >>> model_kwargs(argparse.Namespace(pooling="mean", allow_missing_heads=True, device=None))
        {'allow_missing_heads': True, 'pooling': 'mean'}
    """
    return {name: getattr(args, name) for name in _MODEL_OPTIONS if getattr(args, name, None) is not None}


def load_model(name: str, kwargs: dict[str, Any] | None = None, *, show_progress: bool = False) -> M3Model:
    """Load :class:`~m3_integrations.M3Model`, turning failures into a :class:`CliError` with the next step.

    A local checkpoint without BGE-M3's heads is refused before it loads, naming the flags it needs; a hub
    id that cannot be fetched suggests ``--model /path/to/folder``. Messages name command-line flags,
    never Python arguments. Nothing here passes ``trust_remote_code``.

    Args:
        name: a hub id or a local folder.
        kwargs: ``M3Model`` options (from :func:`model_kwargs`).
        show_progress: the model's own progress bar on every encode call (an index shows its own).

    Returns:
        The model.

    Raises:
        CliError: exit code 3, with a one-line message.
    """
    from m3_integrations import M3Model
    from m3_integrations.errors import CheckpointError, CheckpointNotFoundError, MissingHeadsError
    from m3_integrations.model import COLBERT_HEAD_FILE, SPARSE_HEAD_FILE

    kwargs = dict(kwargs or {})
    path = Path(name).expanduser()
    local = name.startswith((".", "/", "~", "\\")) or path.exists() or not _HUB_ID.fullmatch(name)
    if local and not path.is_dir():
        msg = f"model folder {name!r} does not exist; pass --model with a checkpoint folder or a hub id"
        raise CliError(msg, EXIT_INPUT)
    if local and not kwargs.get("allow_missing_heads"):
        missing = [head for head in (COLBERT_HEAD_FILE, SPARSE_HEAD_FILE) if not (path / head).is_file()]
        if missing:
            msg = (
                f"model {name!r} has no {' and no '.join(missing)} (BGE-M3's heads); to run it as a plain "
                f"encoder, {_MISSING_HEADS_HINT}"
            )
            raise CliError(msg, EXIT_INPUT)
    try:
        return M3Model(name, show_progress=show_progress, **kwargs)
    except MissingHeadsError as err:
        msg = f"{_as_flags(str(err))} To run it as a plain encoder, {_MISSING_HEADS_HINT}"
        raise CliError(msg, EXIT_INPUT) from err
    except CheckpointNotFoundError as err:
        if local:
            raise CliError(f"cannot load model folder {name!r}: {_as_flags(str(err))}", EXIT_INPUT) from err
        root: BaseException = err
        while root.__cause__ is not None:  # the Hub client's error, not the layers that wrapped it
            root = root.__cause__
        reason = f"{type(root).__name__}: {_one_line(str(root))}"
        msg = (
            f"cannot load model {name!r} from the Hugging Face Hub ({reason[:300]}). Offline? Pass a "
            "local checkpoint folder: --model /path/to/folder (a checkpoint without BGE-M3's heads "
            "also needs --allow-missing-heads --pooling mean)"
        )
        raise CliError(msg, EXIT_INPUT) from err
    except CheckpointError as err:
        where = "model folder" if local else "model"
        raise CliError(f"cannot load {where} {name!r}: {_as_flags(str(err))}", EXIT_INPUT) from err
    except Exception as err:  # transformers, safetensors and torch raise many types for a bad checkpoint
        msg = f"cannot load model {name!r}: {_as_flags(str(err)) or type(err).__name__}"
        raise CliError(msg, EXIT_INPUT) from err


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes (callers and tests may replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(quiet: bool = False, verbose: int = 0) -> None:
    """Show the package's log on stderr: warnings by default, errors only if ``quiet``, DEBUG if ``verbose``.

    ``quiet`` also hides the progress bars of transformers and the Hub; ``verbose >= 2`` adds transformers'
    own INFO log. Only command lines call this: the library never configures logging.

    Args:
        quiet: errors only, no progress bars.
        verbose: 1 for the package's DEBUG log, 2 to add transformers' INFO log.
    """
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.WARNING
    root = logging.getLogger("m3_integrations")
    root.setLevel(level)
    handler = next((h for h in root.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.setLevel(level)
    if quiet or verbose > 1:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        if quiet:
            # transformers 5 shows a "Loading weights" bar of its own; --quiet means no bars at all.
            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
            disable_progress_bars()
        else:
            hf_logging.set_verbosity_info()


def _as_flags(text: str) -> str:
    """Rewrite ``allow_missing_heads=True`` as ``--allow-missing-heads`` (and so on) in a message."""

    def flag(match: re.Match[str]) -> str:
        name, value = match.groups()
        option = "--" + name.replace("_", "-")
        if value == "True":
            return option
        value = value.strip("'\"")
        return f'{option} "{value}"' if not value or " " in value else f"{option} {value}"

    return _FLAG_OF_ARGUMENT.sub(flag, text)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# ---------------------------------------------------------------------------- parser
def _build_parser() -> argparse.ArgumentParser:
    from m3_integrations import _cli_stores
    from m3_integrations._cli_documents import add_chunking_arguments
    from m3_integrations.chunking import DEFAULT_CHUNK_TOKENS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or logs"
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="DEBUG log and tracebacks"
    )

    parser = _Parser(
        prog="m3-integrations",
        description="BGE-M3 dense + lexical + ColBERT retrieval: index files, search, evaluate.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="DEBUG log and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{index,search,eval}")

    p_index = sub.add_parser("index", parents=[common], help="encode files or folders into an index folder")
    p_index.add_argument(
        "paths",
        nargs="+",
        help="files or folders: .txt .md .rst .pdf .html .docx files (cut into chunks) and .jsonl files of "
        "BEIR corpus records (_id, title, text; one passage each); a BEIR folder gives its corpus only",
    )
    p_index.add_argument(
        "--out",
        default=None,
        help="index folder to write: a new or empty folder, or an index to replace (atomically)",
    )
    _cli_stores.add_store_argument(p_index, "add the documents to this collection instead of --out")
    add_model_arguments(p_index)
    _add_lexical(p_index)
    p_index.add_argument("--no-colbert", action="store_true", help="do not store ColBERT vectors")
    p_index.add_argument(
        "--colbert-storage",
        choices=("exact", "int8", "compact"),
        default="exact",
        help="how ColBERT vectors are stored: exact (float16, the default), int8, or compact (token pooling "
        "+ residual codes, about 1/32 of float16; see docs/engine.md)",
    )
    _add_bm25_tokenizer(p_index)
    add_chunking_arguments(
        p_index,
        default=f"files in chunks of {DEFAULT_CHUNK_TOKENS} tokens, JSON-lines records whole; with "
        "N, records too",
    )

    recorded = (
        "hub id or local checkpoint folder (default: the index's own model when it is a hub id such as "
        f"{DEFAULT_MODEL}; a local folder must be named here)"
    )
    p_search = sub.add_parser("search", parents=[common], help="search an index folder")
    p_search.add_argument("index", help="index folder written by `m3-integrations index`")
    p_search.add_argument(
        "queries", nargs="*", metavar="query", help='query texts (one model load for all; "-" reads stdin)'
    )
    p_search.add_argument(
        "--queries-file",
        metavar="FILE",
        help="more queries: one per line, or a BEIR queries.jsonl (_id, text)",
    )
    p_search.add_argument("-k", type=_positive_int, metavar="N", default=5, help="hits per query (default 5)")
    add_model_arguments(p_search, default_model=None, model_help=recorded)
    _cli_stores.add_store_argument(p_search, "search this collection; every positional argument is a query")
    _add_search_options(p_search, multiple=False)
    p_search.add_argument(
        "--snippet-chars",
        type=_positive_int,
        metavar="N",
        default=160,
        help="characters of text shown per hit",
    )
    p_search.add_argument("--json", action="store_true", help="print one JSON entry per query")

    p_eval = sub.add_parser("eval", parents=[common], help="evaluate on a BEIR-layout folder")
    p_eval.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p_eval.add_argument("--queries", default=None, help="take queries.jsonl from this folder (cross-lingual)")
    p_eval.add_argument("--split", default="test", help="qrels split (default test)")
    p_eval.add_argument(
        "--index",
        default=None,
        metavar="INDEX",
        help="evaluate this index (built by `m3-integrations index` from the same corpus) instead of "
        "encoding the corpus again",
    )
    add_model_arguments(
        p_eval,
        default_model=None,
        model_help=f"hub id or local checkpoint folder (default: {DEFAULT_MODEL}; with --index, the "
        "index's own model when it is a hub id)",
    )
    _cli_stores.add_store_argument(
        p_eval, "evaluate this collection (an empty one is filled with the corpus)"
    )
    _add_search_options(p_eval, multiple=True)
    _add_lexical(p_eval)
    _add_bm25_tokenizer(p_eval)
    add_chunking_arguments(
        p_eval,
        default="0, each corpus record whole; with N, a document scores as its best chunk",
    )
    p_eval.add_argument(
        "-k",
        type=_positive_int,
        metavar="N",
        default=100,
        help="hits per query (default 100, for recall@100)",
    )
    p_eval.add_argument(
        "--max-queries",
        type=_positive_int,
        metavar="N",
        default=None,
        help="evaluate a seeded sample of queries",
    )
    p_eval.add_argument(
        "--latency-queries",
        type=_non_negative_int,
        metavar="N",
        default=50,
        help="single-query calls timed for p50 (default 50)",
    )
    p_eval.add_argument("--json", dest="json_out", default=None, help="write results as JSON to this file")
    p_eval.add_argument("--report", default=None, help="write a Markdown report to this file")
    return parser


def _add_lexical(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lexical",
        choices=("auto", "m3", "bm25"),
        default=None,
        help="lexical signal of a new index (default auto: m3 if the model has it, else BM25)",
    )


def _add_bm25_tokenizer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bm25-tokenizer",
        choices=("auto", "model", "word"),
        default=None,
        help="BM25 tokens: lower-cased words, the model's subword ids, or auto (the default: words when "
        "BM25 is the lexical signal, i.e. the model has no sparse head; the model's ids otherwise)",
    )
    parser.add_argument(
        "--bm25-stemmer",
        default=None,
        metavar="LANGUAGE",
        help="Snowball-stem BM25 words (english, german, ...; needs PyStemmer; implies word tokens)",
    )
    parser.add_argument(
        "--bm25-stopwords",
        choices=("english",),
        default=None,
        help="leave this language's stop words out of BM25 (implies word tokens)",
    )
    parser.add_argument(
        "--language",
        default="auto",
        metavar="CODE",
        help="corpus language for BM25 over words: auto (detected, the default), an ISO 639-1 code (en, fi, "
        "ja, th...) or none for plain lower-cased words",
    )


def _add_search_options(parser: argparse.ArgumentParser, *, multiple: bool) -> None:
    nargs: dict[str, Any] = {"nargs": "+"} if multiple else {}
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=["hybrid"] if multiple else "hybrid",
        help="retrieval signal(s) (default hybrid = dense + lexical + ColBERT)",
        **nargs,
    )
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="how multi-signal modes combine scores (default: the index's)",
        **nargs,
    )
    parser.add_argument(
        "--weights",
        type=_weights,
        default=None,
        help='signal weights as JSON, e.g. \'{"dense": 0.4, "sparse": 0.2, "colbert": 0.4}\' '
        "(dense, sparse, colbert, bm25; finite, >= 0)",
    )
    parser.add_argument("--rerank", choices=("m3",), default=None, help="re-score the candidates with M3")


# ---------------------------------------------------------------------------- checks before loading
def _bm25_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The BM25 tokenizer options of ``index``/``eval``, checked before any model is loaded."""
    tokenizer = args.bm25_tokenizer or "auto"
    if tokenizer == "model" and (args.bm25_stemmer or args.bm25_stopwords):
        msg = "--bm25-stemmer and --bm25-stopwords apply to words, not --bm25-tokenizer model"
        raise CliError(msg, EXIT_USAGE)
    if args.bm25_stemmer is not None:
        from m3_integrations.bm25 import stemmer_languages

        try:
            languages = stemmer_languages()
        except ImportError as err:
            raise CliError(str(err), EXIT_USAGE) from err
        if args.bm25_stemmer not in languages:
            msg = f"unknown --bm25-stemmer {args.bm25_stemmer!r}; available: {', '.join(languages)}"
            raise CliError(msg, EXIT_USAGE)
    language: str | None = args.language
    if language == "none":
        language = None
    elif language != "auto":
        from m3_integrations.language import analyzer_for

        try:
            analyzer_for(language)  # a malformed code, or a language whose stemmer is not installed
        except (ValueError, ImportError) as err:
            raise CliError(f"--language {language!r}: {err}", EXIT_USAGE) from err
    return {
        "bm25_tokenizer": tokenizer,
        "bm25_stemmer": args.bm25_stemmer,
        "bm25_stopwords": args.bm25_stopwords,
        "language": language,
    }


def _check_modes(
    model_name: str, modes: Sequence[str], *, lexical: str, has_sparse: bool, store_colbert: bool
) -> None:
    """Refuse a mode this model and index settings cannot produce, before any encoding."""
    for mode in modes:
        needs_lexical = "lexical" in MODE_SLOTS[mode]
        needs_colbert = "colbert" in MODE_SLOTS[mode]
        if needs_lexical and lexical == "m3" and not has_sparse:
            msg = (
                f"mode {mode!r} needs lexical weights but model {model_name!r} has no sparse head "
                "(sparse_linear.pt); use --lexical bm25 (or auto) for BM25 instead"
            )
            raise CliError(msg, EXIT_MODE)
        if needs_colbert and not store_colbert:
            msg = f"mode {mode!r} needs ColBERT vectors but the index stores none (built with --no-colbert)"
            raise CliError(msg, EXIT_MODE)


def _check_output_folder(out: str, inputs: Sequence[str]) -> Path:
    """Refuse an ``--out`` that saving would destroy, before anything loads; return it as a path.

    Allowed: a new path, an empty folder, or a folder holding an index (replaced atomically). Refused,
    touching nothing: what :meth:`M3Index.save` refuses (a file or link at the path, a folder of anything
    else), and an input path or a folder holding one.
    """
    from m3_integrations.index.persistence import check_save_target

    target = Path(out).expanduser()
    resolved = target.resolve()
    for raw in inputs:
        source = Path(raw).expanduser().resolve()
        if source == resolved or resolved in source.parents:
            msg = f"--out {out!r} would replace the input {raw!r}; write the index to another folder"
            raise CliError(msg, EXIT_INPUT)
    try:
        check_save_target(target)
    except FileExistsError as err:
        raise CliError(f"--out {out!r}: {err} (nothing was written)", EXIT_INPUT) from err
    return target


def _read_manifest(folder: Path) -> dict[str, Any]:
    """An index folder's ``manifest.json``, read safely by the library (see ``persistence.read_manifest``)."""
    from m3_integrations.errors import IndexLoadError
    from m3_integrations.index.persistence import read_manifest

    try:
        return read_manifest(folder)
    except IndexLoadError as err:
        raise CliError(str(err), EXIT_INPUT) from err


def _recorded_value(manifest_path: Path, key: str, value: Any) -> Any:
    """Check one encoder setting read from a manifest; an index may come from anyone."""
    ok: bool
    if key == "pooling":
        ok = value in ("cls", "mean")
    elif key in ("allow_missing_heads", "normalize_embeddings"):
        ok = isinstance(value, bool)
    elif key in ("query_instruction", "passage_instruction"):
        ok = value is None or (isinstance(value, str) and len(value) <= _MAX_INSTRUCTION_CHARS)
    else:  # query_max_length, passage_max_length
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_LENGTH_TOKENS
    if not ok:
        msg = f"{manifest_path} records an invalid model setting {key} = {json.dumps(value)[:80]}"
        raise CliError(msg, EXIT_INPUT)
    return value


# The encoder settings search takes from an index: plain values only, each checked.
_RECORDED_SETTINGS = (
    "pooling",
    "normalize_embeddings",
    "query_instruction",
    "passage_instruction",
    "query_max_length",
    "passage_max_length",
    "allow_missing_heads",
)


class _IndexModel(NamedTuple):
    name: str
    kwargs: dict[str, Any]
    has_sparse: bool
    store_colbert: bool
    lexical: str


def _model_for_index(folder: Path, args: argparse.Namespace) -> _IndexModel:
    """The model to load for an existing index: ``--model`` or the recorded hub id, plus checked settings.

    The settings recorded in the manifest come first and the command line's options override them; the
    recorded model is used only when it is a plain hub id, never a path an index folder could choose.
    """
    manifest = _read_manifest(folder)
    manifest_path = folder / MANIFEST_FILE
    if (folder / LEGACY_MODEL_FILE).exists():
        logger.warning(
            "ignoring %s: the model settings now come from %s only (an index folder cannot choose "
            "code to run); pass --model and its flags if the index was built with a local model",
            folder / LEGACY_MODEL_FILE,
            MANIFEST_FILE,
        )
    identity = manifest.get("model")
    if not isinstance(identity, dict):
        msg = f"{manifest_path} does not record the model that built the index"
        raise CliError(msg, EXIT_INPUT)
    kwargs = {
        key: _recorded_value(manifest_path, key, identity[key])
        for key in _RECORDED_SETTINGS
        if key in identity
    }
    has_sparse, has_colbert_head = identity.get("has_sparse"), identity.get("has_colbert_head")
    if "allow_missing_heads" not in kwargs and (has_sparse is False or has_colbert_head is False):
        kwargs["allow_missing_heads"] = True  # indexes saved before the setting was recorded
    if kwargs.get("allow_missing_heads") is False:
        del kwargs["allow_missing_heads"]
    kwargs.update(model_kwargs(args))
    store_colbert, lexical = manifest.get("store_colbert", True), manifest.get("lexical", "m3")
    if not isinstance(store_colbert, bool) or lexical not in ("m3", "bm25"):
        msg = f"{manifest_path} records an invalid store_colbert or lexical setting"
        raise CliError(msg, EXIT_INPUT)

    recorded = identity.get("model_name_or_path")
    name = args.model
    if name is None:
        if not isinstance(recorded, str) or not _is_plain_hub_id(recorded):
            built = (
                f"with the local model {json.dumps(recorded)[:200]}"
                if isinstance(recorded, str)
                else "with a model its manifest does not name"
            )
            msg = (
                f"the index {str(folder)!r} was built {built}; an index cannot choose a folder to load: "
                "pass --model PATH (the same checkpoint)"
            )
            raise CliError(msg, EXIT_USAGE)
        name = recorded
        logger.info("using the model recorded in %s: %s", manifest_path, name)
    logger.debug("model settings for %s: %s", name, kwargs)
    return _IndexModel(name, kwargs, bool(has_sparse), store_colbert, lexical)


def _is_plain_hub_id(name: str) -> bool:
    # A name that is also a folder here would load that folder rather than the hub's model.
    return bool(_HUB_ID.fullmatch(name)) and ".." not in name and not Path(name).exists()


def _load_index(folder: Path, model: M3Model) -> M3Index:
    from m3_integrations import M3Index

    try:
        return M3Index.load(folder, model)
    except (OSError, ValueError) as err:  # IndexLoadError is a ValueError
        msg = f"cannot load index {str(folder)!r}: {_as_flags(str(err))}"
        raise CliError(msg, EXIT_INPUT) from err


def _index_folder(raw: str) -> Path:
    folder = Path(raw).expanduser()
    if not folder.is_dir():
        msg = f"index folder {raw!r} does not exist"
        raise CliError(msg, EXIT_INPUT)
    return folder


# ---------------------------------------------------------------------------- queries
class _Query(NamedTuple):
    text: str
    id: str | None
    origin: str  # where it came from, for messages: "query 2", "q.txt:5"


def _collect_queries(args: argparse.Namespace) -> list[_Query]:
    """The queries of ``search``, from the command line, stdin and ``--queries-file``; none may be blank."""
    queries: list[_Query] = []
    for position, text in enumerate(args.queries, 1):
        if text == "-":
            queries.extend(_query_lines(sys.stdin, "stdin"))
        else:
            queries.append(_Query(text, None, f"query {position}"))
    if args.queries_file is not None:
        queries.extend(_read_queries_file(args.queries_file))
    if not queries:
        msg = "no query: give one or more queries, --queries-file FILE, or - to read them from stdin"
        raise CliError(msg, EXIT_USAGE)
    for query in queries:
        if not query.text.strip():
            msg = f"{query.origin} is empty"
            raise CliError(msg, EXIT_USAGE)
    return queries


def _query_lines(lines: Iterable[str], origin: str) -> list[_Query]:
    # Blank lines separate queries in a file; they are not queries.
    return [
        _Query(line.rstrip("\r\n"), None, f"{origin}:{n}") for n, line in enumerate(lines, 1) if line.strip()
    ]


def _read_queries_file(raw: str) -> list[_Query]:
    from m3_integrations.evaluation.beir import iter_jsonl

    path = Path(raw).expanduser()
    if not path.is_file():
        msg = f"--queries-file {raw!r} does not exist or is not a file"
        raise CliError(msg, EXIT_INPUT)
    try:
        if path.suffix.lower() != ".jsonl":
            with open(path, encoding="utf-8") as fh:
                return _query_lines(fh, raw)
        queries = []
        for line_no, record in iter_jsonl(path):
            text = record.get("text")
            if not isinstance(text, str):
                msg = f"{raw}:{line_no}: the query record has no text"
                raise CliError(msg, EXIT_INPUT)
            queries.append(_Query(text, str(record["_id"]), f"{raw}:{line_no}"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        msg = f"cannot read --queries-file {raw!r}: {err}"
        raise CliError(msg, EXIT_INPUT) from err
    return queries


# ---------------------------------------------------------------------------- commands
def _cmd_index(args: argparse.Namespace) -> int:
    from m3_integrations import M3Index, _cli_stores
    from m3_integrations._cli_documents import chunk_plan, make_passages, read_inputs

    if (args.out is None) == (args.store is None):
        raise CliError("pass --out FOLDER or --store URI (one of them)", EXIT_USAGE)
    if args.store is not None:
        _cli_stores.refuse_index_flags(args)
    bm25_kwargs = _bm25_kwargs(args)
    plan = chunk_plan(args, files_by_default=True)
    out = _check_output_folder(args.out, args.paths) if args.out is not None else None
    # Read before the model loads: a missing or damaged file costs no model load.
    documents = read_inputs(args.paths, show_progress=not args.quiet, report=_ignore if args.quiet else None)
    lexical = args.lexical or "auto"
    model = load_model(args.model, model_kwargs(args))
    if lexical == "m3" and not model.has_sparse:
        msg = f"--lexical m3 needs a sparse head, and model {args.model!r} has none; use --lexical bm25"
        raise CliError(msg, EXIT_MODE)
    store = _cli_stores.open_cli_store(args.store, model, quiet=args.quiet) if args.store else None
    start = time.perf_counter()
    passages = make_passages(model, documents, plan, show_progress=not args.quiet)
    if store is not None:
        _cli_stores.add_to_store(store, passages.texts, passages.ids, passages.metadatas)
        print(f"indexed {passages.describe()} into {args.store} in {time.perf_counter() - start:.1f}s")
        return EXIT_OK
    index = M3Index(
        model,
        lexical=lexical,
        **bm25_kwargs,
        store_colbert=not args.no_colbert,
        colbert_storage=args.colbert_storage,
        show_progress=not args.quiet,
    )
    index.add(passages.texts, ids=passages.ids, metadatas=passages.metadatas)
    try:
        index.save(out)
    except FileExistsError as err:  # the library's own refusal to replace what is not an index
        raise CliError(f"--out {args.out!r}: {err}", EXIT_INPUT) from err
    seconds = time.perf_counter() - start
    print(f"indexed {passages.describe()} into {args.out} in {seconds:.1f}s")
    return EXIT_OK


def _ignore(*_: Any) -> None:
    """A report callback that drops what it gets (``--quiet``)."""


def _cmd_search(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.store is not None:
        from m3_integrations import _cli_stores

        args.queries = [args.index, *args.queries]  # no index folder: the first positional is a query
        queries = _collect_queries(args)
        model = load_model(args.model or DEFAULT_MODEL, model_kwargs(args))
        index: Any = _cli_stores.open_cli_store(args.store, model, quiet=args.quiet)
    else:
        queries = _collect_queries(args)
        folder = _index_folder(args.index)
        recorded = _model_for_index(folder, args)
        _check_modes(
            recorded.name,
            [args.mode],
            lexical=recorded.lexical,
            has_sparse=recorded.has_sparse,
            store_colbert=recorded.store_colbert,
        )
        model = load_model(recorded.name, recorded.kwargs)
        index = _load_index(folder, model)
    kwargs = _search_kwargs(args, args.mode, args.fusion)
    _check_search_options(index, args.k, kwargs)
    results = []
    with tqdm(
        total=len(queries), desc="Searching", unit="query", disable=args.quiet or len(queries) < 2
    ) as progress:
        for start in range(0, len(queries), _SEARCH_CHUNK):
            chunk = queries[start : start + _SEARCH_CHUNK]
            results.extend(index.search_batch([q.text for q in chunk], k=args.k, **kwargs))
            progress.update(len(chunk))
    if args.json:
        entries = [
            {
                "query": query.text,
                "query_id": query.id,
                "hits": [
                    {"id": h.id, "score": h.score, "scores": h.scores, "text": h.text, "metadata": h.metadata}
                    for h in hits
                ],
            }
            for query, hits in zip(queries, results, strict=True)
        ]
        print(json.dumps(entries, ensure_ascii=False, indent=2))
        return EXIT_OK
    for number, (query, hits) in enumerate(zip(queries, results, strict=True), 1):
        if len(queries) > 1:
            label = f" [{query.id}]" if query.id is not None else ""
            print(f"{'' if number == 1 else chr(10)}query {number}/{len(queries)}{label}: {query.text}")
        _print_hits(hits, args.snippet_chars)
    return EXIT_OK


def _print_hits(hits: Sequence[Any], snippet_chars: int) -> None:
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, 1):
        signals = "  ".join(f"{name}={value:.4f}" for name, value in hit.scores.items())
        print(f"{rank}. {hit.id}  score={hit.score:.4f}  {signals}")
        snippet = " ".join(hit.text.split())
        if len(snippet) > snippet_chars:
            snippet = snippet[:snippet_chars].rstrip() + "…"
        print(f"   {snippet}")


def _search_kwargs(args: argparse.Namespace, mode: str, fusion: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"mode": mode}
    if fusion is not None:
        kwargs["fusion"] = fusion
    if args.weights is not None:
        kwargs["weights"] = args.weights
    if args.rerank:
        kwargs["rerank"] = args.rerank
    return kwargs


def _check_search_options(index: Any, k: int, kwargs: dict[str, Any]) -> None:
    try:
        index.check_search_options(k, **kwargs)
    except ValueError as err:  # weights that leave the mode no signal, say
        raise CliError(_as_flags(str(err)), EXIT_USAGE) from err


def _dataset_label(data: str, queries: str | None) -> str:
    """``autorag-ko/page`` for ``.../autorag-ko/page``: a folder name alone is often ambiguous."""

    def label(raw: str) -> str:
        path = Path(raw).expanduser().resolve()
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    return label(data) if queries is None else f"{label(data)} (queries: {label(queries)})"


def _cmd_eval(args: argparse.Namespace) -> int:
    from m3_integrations import _cli_documents as documents
    from m3_integrations import _cli_stores
    from m3_integrations.evaluation import build_index, evaluate_index, format_table, load_beir

    bm25_kwargs = _bm25_kwargs(args)
    plan = documents.chunk_plan(args, files_by_default=False)
    if args.store is not None and args.index is not None:
        raise CliError("pass --index FOLDER or --store URI, not both", EXIT_USAGE)
    if args.store is not None:
        _cli_stores.refuse_index_flags(args)
        if plan.chunk_tokens is not None:
            raise CliError(
                "--chunk-tokens applies to index folders; a --store collection is evaluated whole", EXIT_USAGE
            )
    if args.index is not None:
        build_only = [
            flag
            for flag, value in (
                ("--lexical", args.lexical),
                ("--bm25-tokenizer", args.bm25_tokenizer),
                ("--bm25-stemmer", args.bm25_stemmer),
                ("--bm25-stopwords", args.bm25_stopwords),
                ("--chunk-tokens", args.chunk_tokens),
                ("--chunk-overlap", args.chunk_overlap),
                ("--no-chunking", args.no_chunking or None),
            )
            if value is not None
        ]
        if build_only:
            msg = f"{', '.join(build_only)} set how eval builds an index; with --index the index's own apply"
            raise CliError(msg, EXIT_USAGE)
    try:
        dataset = load_beir(
            args.data,
            split=args.split,
            queries_folder=args.queries,
            name=_dataset_label(args.data, args.queries),
        )
    except FileNotFoundError as err:
        raise CliError(str(err), EXIT_INPUT) from err
    except ValueError as err:
        raise CliError(f"cannot read dataset {args.data!r}: {err}", EXIT_INPUT) from err
    if not dataset.queries:
        msg = f"dataset {args.data!r} has no judged queries"
        raise CliError(msg, EXIT_INPUT)
    if args.max_queries:
        dataset = dataset.subsample_queries(args.max_queries)

    build_seconds: float | None = None
    chunks = 0
    index: Any
    if args.store is not None:
        model_name = args.model or DEFAULT_MODEL
        model = load_model(model_name, model_kwargs(args))
        index = _cli_stores.open_cli_store(args.store, model, quiet=args.quiet)
        build_seconds = _cli_stores.fill_store(index, dataset)
    elif args.index is not None:
        folder = _index_folder(args.index)
        recorded = _model_for_index(folder, args)
        _check_modes(
            recorded.name,
            args.mode,
            lexical=recorded.lexical,
            has_sparse=recorded.has_sparse,
            store_colbert=recorded.store_colbert,
        )
        model_name = recorded.name
        model = load_model(model_name, recorded.kwargs)
        index = _load_index(folder, model)
        chunks = documents.check_index_matches_corpus(index, dataset, args.index)
    else:
        model_name = args.model or DEFAULT_MODEL
        model = load_model(model_name, model_kwargs(args))
        lexical = args.lexical or "auto"
        _check_modes(model_name, args.mode, lexical=lexical, has_sparse=model.has_sparse, store_colbert=True)
        if plan.chunk_tokens is None:
            index, build_seconds = build_index(
                model, dataset, show_progress=not args.quiet, lexical=lexical, **bm25_kwargs
            )
        else:
            index, build_seconds, passages = documents.build_chunked_index(
                model, dataset, plan, show_progress=not args.quiet, lexical=lexical, **bm25_kwargs
            )
            chunks = len(passages.ids)
    fusions = args.fusion or [None]
    configurations = [
        (mode, fusion)
        for mode in dict.fromkeys(args.mode)
        for fusion in ([None] if mode in ("dense", "sparse", "colbert") else fusions)
    ]
    for mode, fusion in configurations:
        _check_search_options(index, args.k, _search_kwargs(args, mode, fusion))
    # On chunks, metrics count documents: each ranked by its best chunk, k documents per query.
    searched = documents.DocumentRanking(index) if chunks else index
    results = []
    for mode, fusion in configurations:
        name = mode if fusion is None else f"{mode}/{fusion}"
        results.append(
            evaluate_index(
                searched,
                dataset,
                k=args.k,
                name=name + ("+rerank" if args.rerank else ""),
                build_seconds=build_seconds,
                latency_queries=args.latency_queries,
                show_progress=not args.quiet,
                **_search_kwargs(args, mode, fusion),
            )
        )
    table = format_table(results)
    print(table)
    scoring = (
        f"Scored per document: the index holds {chunks} chunks of the {len(dataset.corpus)} documents; "
        f"a document scores as its best chunk, and the top {args.k} documents count."
        if chunks
        else ""
    )
    if scoring:
        print(scoring)
    meta = {
        "data": args.data,
        "dataset": dataset.name,
        "queries": args.queries,
        "index": args.index,
        "store": args.store,
        "model": model_name,
        "num_documents": len(dataset.corpus),
        "num_queries": len(dataset.queries),
        "num_chunks": chunks or None,
        "scored_per": "document (best chunk)" if chunks else "document",
    }
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({**meta, "results": [r.to_dict() for r in results]}, indent=2), encoding="utf-8"
        )
    if args.report:
        source = (
            f"store `{args.store}`"
            if args.store
            else f"index `{args.index}`"
            if args.index
            else f"data `{args.data}`"
        )
        lines = [
            f"# Evaluation of {model_name} on {dataset.name}",
            "",
            f"{meta['num_documents']} documents, {meta['num_queries']} judged queries; {source}.",
            "",
            table,
            "",
            *([scoring, ""] if scoring else []),
            f"Command: `m3-integrations {' '.join(args.argv)}`",
            "",
        ]
        Path(args.report).write_text("\n".join(lines), encoding="utf-8")
    return EXIT_OK


_COMMANDS = {"index": _cmd_index, "search": _cmd_search, "eval": _cmd_eval}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the console script exits with it).

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success, 2 for a bad command line, 3 for missing or unreadable input (data, checkpoint,
        index), 4 when the model cannot give a requested mode, 1 for anything else.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        # argparse matches `search INDEX -k 3 "query"` as no query plus an extra argument.
        if args.command == "search" and not any(e.startswith("-") and e != "-" for e in extras):
            args.queries.extend(extras)
        elif extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except CliError as err:
        print(f"{err.prog or parser.prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return err.code
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    args.argv = argv
    args.quiet = bool(getattr(args, "quiet", False))
    verbose = int(getattr(args, "verbose", 0) or 0)
    configure_logging(args.quiet, verbose)
    prog = f"{parser.prog} {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except CliError as err:
        if err.__cause__ is not None:
            logger.debug("the error behind the message below:", exc_info=err.__cause__)
        print(f"{prog}: error: {_one_line(str(err))}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        logger.debug("unexpected error", exc_info=True)
        hint = "" if verbose else " (run with -v for the traceback)"
        message = _one_line(_as_flags(str(err)))
        print(f"{prog}: error: {type(err).__name__}: {message}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
