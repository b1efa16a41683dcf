"""The queries of ``m3-integrations search``: from the command line, stdin (``-``) and ``--queries-file``.

A queries file is one query per line (blank lines separate, they are not queries), or a BEIR
``queries.jsonl`` whose ids are reported with the hits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from m3_integrations._cli_common import EXIT_INPUT, EXIT_USAGE, CliError


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
