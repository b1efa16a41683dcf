"""The command line's parser (``index``, ``search``, ``eval``) and the checks made before any model loads."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from m3_integrations._cli_common import (
    EXIT_MODE,
    EXIT_USAGE,
    CliError,
    _non_negative_int,
    _Parser,
    _positive_int,
)
from m3_integrations._cli_model import add_model_arguments
from m3_integrations.index.options import FUSION_METHODS, WEIGHT_KEYS, check_weights
from m3_integrations.index.options import MODES as MODE_SLOTS
from m3_integrations.model import DEFAULT_MODEL

MODES = tuple(MODE_SLOTS)
FUSIONS = FUSION_METHODS
SIGNALS = WEIGHT_KEYS  # the keys --weights takes


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
