"""The command line's ``--store URI``: index into, search and evaluate a Qdrant or Milvus collection.

``index --store URI`` (instead of ``--out``), ``search --store URI QUERY...`` (instead of an index
folder) and ``eval --store URI`` (instead of ``--index``; an empty collection is filled with the corpus
first). The URIs are :mod:`m3_integrations.stores.uri`'s; the model comes from ``--model`` (default
``BAAI/bge-m3``), and a collection made with another model is refused before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING, Any

from m3_integrations.cli import EXIT_INPUT, EXIT_USAGE, CliError
from m3_integrations.errors import StoreConnectionError, StoreError, StoreSchemaError

if TYPE_CHECKING:
    from m3_integrations.evaluation import BeirDataset
    from m3_integrations.model import M3Model
    from m3_integrations.stores.base import M3Store

logger = logging.getLogger(__name__)

STORE_HELP = (
    "a Qdrant or Milvus collection instead of an index folder: qdrant://HOST[:PORT]/COLLECTION, "
    "qdrant+local:///PATH?collection=NAME, milvus://HOST[:PORT]/COLLECTION, milvus-lite:///FILE.db"
    "?collection=NAME (keys from QDRANT_API_KEY / MILVUS_TOKEN)"
)
# Flags that choose how an M3Index is built: a store's layout follows the model instead.
INDEX_ONLY_FLAGS = (
    ("--lexical", "lexical"),
    ("--no-colbert", "no_colbert"),
    ("--bm25-tokenizer", "bm25_tokenizer"),
    ("--bm25-stemmer", "bm25_stemmer"),
    ("--bm25-stopwords", "bm25_stopwords"),
)


def add_store_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--store URI`` to a sub-command's parser."""
    parser.add_argument("--store", metavar="URI", default=None, help=f"{what}: {STORE_HELP}")


def refuse_index_flags(args: argparse.Namespace) -> None:
    """Raise a usage error for flags that only shape an ``M3Index`` (``--lexical``...)."""
    given = [flag for flag, name in INDEX_ONLY_FLAGS if getattr(args, name, None) not in (None, False)]
    if given:
        msg = f"{', '.join(given)} shape an index folder; a --store collection follows the model"
        raise CliError(msg, EXIT_USAGE)


def open_cli_store(uri: str, model: M3Model, *, quiet: bool) -> M3Store:
    """The store of ``--store URI``; bad URIs, other models' collections and dead servers as CLI errors."""
    from m3_integrations.stores.uri import open_store

    try:
        return open_store(uri, model, show_progress=not quiet)
    except StoreSchemaError as err:
        raise CliError(f"--store {uri!r}: {err}", EXIT_INPUT) from err
    except StoreConnectionError as err:
        raise CliError(f"--store {uri!r}: {err}", EXIT_INPUT) from err
    except (ValueError, ImportError) as err:
        raise CliError(f"--store {uri!r}: {err}", EXIT_USAGE) from err


def add_to_store(store: M3Store, texts: list[str], ids: list[str], metadatas: list[dict[str, Any]]) -> None:
    """``store.add`` with the store's failures as CLI errors (what was written is in the message)."""
    try:
        store.add(texts, ids=ids, metadatas=metadatas)
    except StoreError as err:
        raise CliError(str(err), EXIT_INPUT) from err


def fill_store(store: M3Store, dataset: BeirDataset) -> float | None:
    """Add the corpus to an empty store (as ``evaluation.build_index`` indexes it); seconds, or None.

    A store that already holds documents is evaluated as it is (built earlier by ``index --store``).
    """
    if len(store):
        logger.info("the store holds %d documents: evaluated as it is", len(store))
        return None
    docs = dataset.documents()
    if not docs:
        msg = f"dataset {dataset.name!r} has an empty corpus"
        raise CliError(msg, EXIT_INPUT)
    start = time.perf_counter()
    ids, texts = zip(*docs, strict=True)
    add_to_store(store, list(texts), list(ids), [{"id": i} for i in ids])
    return time.perf_counter() - start
