"""The package's exception types: what a caller catches when a folder it was handed is unusable.

Index folders and checkpoint folders may come from anyone. Everything wrong with one (missing files,
damaged or hostile contents, shapes that do not fit) is reported with one of the types below, with a
message naming the file and the problem. Each subclasses ``ValueError`` (and the "not found" ones also
``FileNotFoundError``), so code written against the builtin types keeps working.

Example:
    .. code-block:: python

        from m3_integrations import IndexLoadError, M3Index

        try:
            index = M3Index.load("shared/index", model=model)
        except IndexLoadError as err:
            print(f"cannot use this index: {err}")
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "DocumentReadError",
    "IndexLoadError",
    "IndexNotFoundError",
    "MissingHeadsError",
    "StoreConnectionError",
    "StoreError",
    "StoreRequestError",
    "StoreSchemaError",
]


class IndexLoadError(ValueError):
    """An index folder that cannot be loaded (missing, damaged, hostile, unknown format, other model).

    The message says which, and names the file.
    """


class IndexNotFoundError(IndexLoadError, FileNotFoundError):
    """No index at the path (no folder, or no ``manifest.json`` in it)."""


class CheckpointError(ValueError):
    """A model checkpoint folder that cannot be loaded as it is: a missing, damaged or mismatched file."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the path, or a hub id that could not be fetched (offline, unknown, private)."""


class MissingHeadsError(CheckpointError, FileNotFoundError):
    """A checkpoint without BGE-M3's ``colbert_linear.pt`` / ``sparse_linear.pt`` heads."""


class DocumentReadError(ValueError):
    """A file or record that cannot be read as a document.

    A damaged PDF/DOCX/HTML file, a malformed JSON-lines record, an unlistable folder, or two documents
    with the same id. The message names the file (and line, for JSON lines).
    """


class StoreError(RuntimeError):
    """A vector database behind a store (:mod:`m3_integrations.stores`) failed or refused a request.

    The message names the store, the collection and the operation.
    """


class StoreConnectionError(StoreError, ConnectionError):
    """The server is unreachable or timed out (after the store's retries)."""


class StoreRequestError(StoreError):
    """The server rejected a request (a bad request, a permission, a full disk); not retried."""


class StoreSchemaError(StoreError, ValueError):
    """A collection made for another model or layout (dimension, vector names, model identity).

    Raised before anything is written; the message names what differs.
    """
