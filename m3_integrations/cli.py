"""The ``m3-integrations`` command line: build an index from files, search it, evaluate on BEIR data.

Commands::

    m3-integrations index DIR_OR_FILES... --out INDEX [--model PATH]
    m3-integrations search INDEX "query" [-k 5] [--mode hybrid] [--fusion weighted] [--json]
    m3-integrations eval --data BEIR_DIR --model PATH [--mode M ...] [--fusion F ...]
                         [--json OUT] [--report OUT]

Exit codes: 0 success; 1 unexpected error; 2 bad command line; 3 a missing path, an empty corpus or
unreadable data; 4 the model cannot give a requested mode (say, ``--lexical m3`` on an encoder without
BGE-M3's sparse head). Messages go to stderr; results to stdout. ``--quiet`` silences progress bars and
log messages, ``-v`` shows more.

Example:
    .. code-block:: bash

        m3-integrations index docs/ --out my.index --model BAAI/bge-m3
        m3-integrations search my.index "what is hybrid search?" -k 3
        m3-integrations eval --data ../shared/data/cranfield --model BAAI/bge-m3 --mode hybrid dense
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODE = 4

MODES = ("dense", "sparse", "colbert", "dense+sparse", "hybrid")
FUSIONS = ("weighted", "rrf", "relative_score", "confidence")  # fusion.FUSION_METHODS, imported lazily
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
MODEL_CONFIG_FILE = "cli_model.json"


class CliError(Exception):
    """An error with an exit code and a message meant for the user."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- parser
def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or logs"
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (repeatable)"
    )

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--pooling", choices=("cls", "mean"), default=None, help="dense pooling (bge-m3: cls)")
    model.add_argument(
        "--allow-missing-heads",
        action="store_true",
        default=None,
        help="run a plain encoder without BGE-M3's sparse/ColBERT heads (BM25 and identity ColBERT)",
    )
    model.add_argument("--query-instruction", default=None, help='query prefix, e.g. "query: " for e5')
    model.add_argument("--passage-instruction", default=None, help='passage prefix, e.g. "passage: "')
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    model.add_argument("--batch-size", type=int, default=None, help="texts per forward pass")
    model.add_argument("--passage-max-length", type=int, default=None, help="token limit of passages")

    parser = argparse.ArgumentParser(
        prog="m3-integrations",
        description="BGE-M3 dense + lexical + ColBERT retrieval: index files, search, evaluate.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{index,search,eval}")

    p_index = sub.add_parser(
        "index", parents=[common, model], help="encode files or folders into an index folder"
    )
    p_index.add_argument(
        "paths",
        nargs="+",
        help=f"files or folders ({', '.join(TEXT_SUFFIXES)} files become one document each; "
        "a .jsonl file holds BEIR corpus records with _id, title, text)",
    )
    p_index.add_argument("--out", required=True, help="index folder to write (replaced atomically)")
    p_index.add_argument("--model", default="BAAI/bge-m3", help="model folder or hub id")
    p_index.add_argument(
        "--lexical",
        choices=("auto", "m3", "bm25"),
        default="auto",
        help="lexical signal (auto: m3 if the model has it)",
    )
    p_index.add_argument("--no-colbert", action="store_true", help="do not store ColBERT vectors")
    _add_bm25_tokenizer(p_index)

    p_search = sub.add_parser("search", parents=[common, model], help="search an index folder")
    p_search.add_argument("index", help="index folder written by `m3-integrations index`")
    p_search.add_argument("query", help="the query text")
    p_search.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    p_search.add_argument("--model", default=None, help="model folder (default: the index's)")
    _add_search_options(p_search, multiple=False)
    p_search.add_argument("--snippet-chars", type=int, default=160, help="characters of text shown per hit")
    p_search.add_argument("--json", action="store_true", help="print hits as JSON")

    p_eval = sub.add_parser("eval", parents=[common, model], help="evaluate on a BEIR-layout folder")
    p_eval.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p_eval.add_argument("--queries", default=None, help="take queries.jsonl from this folder (cross-lingual)")
    p_eval.add_argument("--split", default="test", help="qrels split (default test)")
    p_eval.add_argument("--model", required=True, help="model folder or hub id")
    _add_search_options(p_eval, multiple=True)
    p_eval.add_argument(
        "--lexical",
        choices=("auto", "m3", "bm25"),
        default="auto",
        help="lexical signal (auto: m3 if the model has it)",
    )
    _add_bm25_tokenizer(p_eval)
    p_eval.add_argument("-k", type=int, default=100, help="hits per query (default 100, for recall@100)")
    p_eval.add_argument("--max-queries", type=int, default=None, help="evaluate a seeded sample of queries")
    p_eval.add_argument(
        "--latency-queries", type=int, default=50, help="single-query calls timed for p50 (default 50)"
    )
    p_eval.add_argument("--json", dest="json_out", default=None, help="write results as JSON to this file")
    p_eval.add_argument("--report", default=None, help="write a Markdown report to this file")
    return parser


def _add_bm25_tokenizer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bm25-tokenizer",
        choices=("auto", "model", "word"),
        default="auto",
        help="BM25 tokens: lower-cased words, the model's subword ids, or auto (words when BM25 is the "
        "lexical signal, i.e. the model has no sparse head; the model's ids otherwise)",
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


def _bm25_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The BM25 tokenizer options of ``index``/``eval``, checked before any model is loaded."""
    if args.bm25_tokenizer == "model" and (args.bm25_stemmer or args.bm25_stopwords):
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
    return {
        "bm25_tokenizer": args.bm25_tokenizer,
        "bm25_stemmer": args.bm25_stemmer,
        "bm25_stopwords": args.bm25_stopwords,
    }


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
        default=None,
        help='signal weights as JSON, e.g. \'{"dense": 0.4, "sparse": 0.2, "colbert": 0.4}\'',
    )
    parser.add_argument("--rerank", choices=("m3",), default=None, help="re-score the candidates with M3")


# ---------------------------------------------------------------------------- helpers
def _configure_logging(quiet: bool, verbose: int) -> None:
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    root = logging.getLogger("m3_integrations")
    root.setLevel(level)
    if not any(getattr(h, "_m3_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._m3_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if getattr(handler, "_m3_cli", False):
            handler.setLevel(level)
    if quiet:
        # transformers 5 shows a "Loading weights" bar of its own; --quiet means no bars at all.
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover - transformers is a core dependency
            pass


def _model_kwargs(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(saved or {})
    for option in ("pooling", "allow_missing_heads", "query_instruction", "passage_instruction", "device"):
        value = getattr(args, option, None)
        if value is not None:
            kwargs[option] = value
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    if args.passage_max_length is not None:
        kwargs["passage_max_length"] = args.passage_max_length
    return kwargs


def _load_model(name_or_path: str, kwargs: dict[str, Any], *, quiet: bool) -> Any:
    from m3_integrations import M3Model

    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.is_dir():
        msg = f"model folder {name_or_path!r} does not exist"
        raise CliError(msg, EXIT_INPUT)
    try:
        return M3Model(name_or_path, show_progress=not quiet, **kwargs)
    except FileNotFoundError as err:
        raise CliError(str(err), EXIT_INPUT) from err


def _parse_weights(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    try:
        weights = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f'--weights must be JSON such as \'{{"dense": 1, "sparse": 0.3}}\': {err.msg}'
        raise CliError(msg, EXIT_USAGE) from err
    if isinstance(weights, list):
        weights = dict(zip(("dense", "sparse", "colbert"), weights, strict=False))
    if not isinstance(weights, dict) or not all(isinstance(v, int | float) for v in weights.values()):
        msg = "--weights must map signal names to numbers"
        raise CliError(msg, EXIT_USAGE)
    return {str(k): float(v) for k, v in weights.items()}


def _check_modes(model: Any, modes: Sequence[str], *, lexical: str, store_colbert: bool) -> None:
    """Refuse a mode this model and index settings cannot produce, before any encoding."""
    for mode in modes:
        needs_lexical = mode in ("sparse", "dense+sparse", "hybrid")
        needs_colbert = mode in ("colbert", "hybrid")
        if needs_lexical and lexical == "m3" and not model.has_sparse:
            msg = (
                f"mode {mode!r} needs lexical weights but model {model.model_name_or_path!r} has no "
                "sparse head (sparse_linear.pt); use --lexical bm25 (or auto) for BM25 instead"
            )
            raise CliError(msg, EXIT_MODE)
        if needs_colbert and not store_colbert:
            msg = f"mode {mode!r} needs ColBERT vectors but the index stores none (built with --no-colbert)"
            raise CliError(msg, EXIT_MODE)


def _collect_documents(paths: Sequence[str]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    from m3_integrations.evaluation.beir import iter_jsonl, join_title_text

    ids: list[str] = []
    texts: list[str] = []
    metadatas: list[dict[str, Any]] = []

    def add_file(file: Path, doc_id: str) -> None:
        if file.suffix == ".jsonl":
            try:
                for line_no, record in iter_jsonl(file, require_id=False):
                    text = join_title_text(str(record.get("title") or ""), str(record.get("text") or ""))
                    if text.strip():
                        ids.append(str(record.get("_id", f"{doc_id}:{line_no}")))
                        texts.append(text)
                        metadatas.append({"source": str(file), "line": line_no})
            except ValueError as err:
                raise CliError(str(err), EXIT_INPUT) from err
            return
        text = file.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            ids.append(doc_id)
            texts.append(text)
            metadatas.append({"source": str(file)})

    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            msg = f"path {raw!r} does not exist"
            raise CliError(msg, EXIT_INPUT)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in (*TEXT_SUFFIXES, ".jsonl"):
                    add_file(file, str(file.relative_to(path)))
        else:
            add_file(path, path.name)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        msg = f"two documents share the id {dup!r}; index them in separate commands or rename them"
        raise CliError(msg, EXIT_INPUT)
    return ids, texts, metadatas


# ---------------------------------------------------------------------------- commands
def _cmd_index(args: argparse.Namespace) -> int:
    from m3_integrations import M3Index

    ids, texts, metadatas = _collect_documents(args.paths)
    if not texts:
        kinds = ", ".join((*TEXT_SUFFIXES, ".jsonl"))
        msg = f"no documents with text found in {', '.join(args.paths)} (looked for {kinds} files)"
        raise CliError(msg, EXIT_INPUT)
    bm25_kwargs = _bm25_kwargs(args)
    model_kwargs = _model_kwargs(args)
    model = _load_model(args.model, model_kwargs, quiet=args.quiet)
    if args.lexical == "m3" and not model.has_sparse:
        msg = f"--lexical m3 needs a sparse head, and model {args.model!r} has none; use --lexical bm25"
        raise CliError(msg, EXIT_MODE)
    start = time.perf_counter()
    index = M3Index(
        model,
        lexical=args.lexical,
        **bm25_kwargs,
        store_colbert=not args.no_colbert,
        show_progress=not args.quiet,
    )
    index.add(texts, ids=ids, metadatas=metadatas)
    index.save(args.out)
    (Path(args.out) / MODEL_CONFIG_FILE).write_text(
        json.dumps(
            {"model": args.model, "model_kwargs": model_kwargs, "store_colbert": not args.no_colbert},
            indent=2,
        ),
        encoding="utf-8",
    )
    seconds = time.perf_counter() - start
    print(f"indexed {len(texts)} documents into {args.out} in {seconds:.1f}s")
    return EXIT_OK


def _cmd_search(args: argparse.Namespace) -> int:
    from m3_integrations import M3Index

    folder = Path(args.index).expanduser()
    if not folder.is_dir():
        msg = f"index folder {args.index!r} does not exist"
        raise CliError(msg, EXIT_INPUT)
    if args.k <= 0:
        msg = f"-k must be a positive integer, got {args.k}"
        raise CliError(msg, EXIT_USAGE)
    saved: dict[str, Any] = {}
    config_file = folder / MODEL_CONFIG_FILE
    if config_file.is_file():
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    model_name = args.model or saved.get("model")
    if not model_name:
        msg = f"{args.index!r} does not say which model built it; pass --model"
        raise CliError(msg, EXIT_USAGE)
    model = _load_model(model_name, _model_kwargs(args, saved.get("model_kwargs")), quiet=True)
    _check_modes(model, [args.mode], lexical="auto", store_colbert=saved.get("store_colbert", True))
    try:
        index = M3Index.load(folder, model)
    except (FileNotFoundError, ValueError) as err:
        msg = f"cannot load index {args.index!r}: {err}"
        raise CliError(msg, EXIT_INPUT) from err
    hits = index.search(args.query, k=args.k, **_search_kwargs(args, args.mode, args.fusion))
    if args.json:
        print(
            json.dumps(
                [
                    {"id": h.id, "score": h.score, "scores": h.scores, "text": h.text, "metadata": h.metadata}
                    for h in hits
                ],
                ensure_ascii=False,
                indent=2,
            )
        )
        return EXIT_OK
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, 1):
        signals = "  ".join(f"{name}={value:.4f}" for name, value in hit.scores.items())
        print(f"{rank}. {hit.id}  score={hit.score:.4f}  {signals}")
        snippet = " ".join(hit.text.split())
        if len(snippet) > args.snippet_chars:
            snippet = snippet[: args.snippet_chars].rstrip() + "…"
        print(f"   {snippet}")
    return EXIT_OK


def _search_kwargs(args: argparse.Namespace, mode: str, fusion: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"mode": mode}
    if fusion is not None:
        kwargs["fusion"] = fusion
    weights = _parse_weights(args.weights)
    if weights is not None:
        kwargs["weights"] = weights
    if args.rerank:
        kwargs["rerank"] = args.rerank
    return kwargs


def _cmd_eval(args: argparse.Namespace) -> int:
    from m3_integrations.evaluation import build_index, evaluate_index, format_table, load_beir

    if args.k <= 0:
        msg = f"-k must be a positive integer, got {args.k}"
        raise CliError(msg, EXIT_USAGE)
    bm25_kwargs = _bm25_kwargs(args)
    try:
        dataset = load_beir(args.data, split=args.split, queries_folder=args.queries)
    except FileNotFoundError as err:
        raise CliError(str(err), EXIT_INPUT) from err
    except ValueError as err:
        raise CliError(f"cannot read dataset {args.data!r}: {err}", EXIT_INPUT) from err
    if not dataset.queries:
        msg = f"dataset {args.data!r} has no judged queries"
        raise CliError(msg, EXIT_INPUT)
    if args.max_queries:
        dataset = dataset.subsample_queries(args.max_queries)
    model = _load_model(args.model, _model_kwargs(args), quiet=args.quiet)
    _check_modes(model, args.mode, lexical=args.lexical, store_colbert=True)

    index, build_seconds = build_index(
        model,
        dataset,
        show_progress=not args.quiet,
        lexical=args.lexical,
        **bm25_kwargs,
    )
    fusions = args.fusion or [None]
    results = []
    for mode in dict.fromkeys(args.mode):
        single = mode in ("dense", "sparse", "colbert")
        for fusion in [None] if single else fusions:
            kwargs = _search_kwargs(args, mode, fusion)
            name = mode if fusion is None else f"{mode}/{fusion}"
            results.append(
                evaluate_index(
                    index,
                    dataset,
                    k=args.k,
                    name=name + ("+rerank" if args.rerank else ""),
                    build_seconds=build_seconds,
                    latency_queries=args.latency_queries,
                    show_progress=not args.quiet,
                    **kwargs,
                )
            )
    table = format_table(results)
    print(table)
    meta = {
        "data": args.data,
        "queries": args.queries,
        "model": args.model,
        "num_documents": len(dataset.corpus),
        "num_queries": len(dataset.queries),
    }
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({**meta, "results": [r.to_dict() for r in results]}, indent=2), encoding="utf-8"
        )
    if args.report:
        lines = [
            f"# Evaluation of {args.model} on {dataset.name}",
            "",
            f"{meta['num_documents']} documents, {meta['num_queries']} judged queries; data `{args.data}`.",
            "",
            table,
            "",
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
        0 on success, 2 for a bad command line, 3 for missing or empty input, 4 when the model cannot give
        a requested mode, 1 for anything else.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on errors and 0 on --help
        return int(exc.code or 0)
    args.argv = argv
    args.quiet = bool(getattr(args, "quiet", False))
    _configure_logging(args.quiet, int(getattr(args, "verbose", 0) or 0))
    try:
        return _COMMANDS[args.command](args)
    except CliError as err:
        print(f"m3-integrations {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        logger.debug("unexpected error", exc_info=True)
        print(f"m3-integrations {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
