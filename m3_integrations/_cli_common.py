"""What every part of the command line shares: exit codes, :class:`CliError`, the parser, messages.

A library message names Python arguments (``pooling='mean'``); :func:`_as_flags` rewrites them as the
flags that set them (``--pooling mean``).
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

__all__ = [
    "EXIT_ERROR",
    "EXIT_INPUT",
    "EXIT_MODE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MODE = 4

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
