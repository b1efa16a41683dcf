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

This module holds the commands; their parts are private modules: ``_cli_common`` (exit codes,
:class:`CliError`), ``_cli_model`` (model options and loading, logging), ``_cli_parser`` (the parser and
the checks before loading), ``_cli_index_folder`` (``--out`` and the model of an existing index),
``_cli_queries`` (``search``'s queries), ``_cli_documents`` (reading and chunking) and ``_cli_stores``
(``--store``).

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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The command line's parts live in private modules; every name the command line had stays importable
# from here (F401: kept for callers, not used in this module).
from m3_integrations._cli_common import (
    EXIT_ERROR,
    EXIT_INPUT,
    EXIT_MODE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _as_flags,
    _one_line,
)
from m3_integrations._cli_index_folder import (  # noqa: F401
    LEGACY_MODEL_FILE,
    MANIFEST_FILE,
    _check_output_folder,
    _index_folder,
    _load_index,
    _model_for_index,
)
from m3_integrations._cli_model import add_model_arguments, configure_logging, load_model, model_kwargs
from m3_integrations._cli_parser import (  # noqa: F401
    FUSIONS,
    MODES,
    SIGNALS,
    _bm25_kwargs,
    _build_parser,
    _check_modes,
    _weights,
)
from m3_integrations._cli_queries import _collect_queries
from m3_integrations.model import DEFAULT_MODEL

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

_SEARCH_CHUNK = 16  # queries per search_batch call: one model call each, and a progress step


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
