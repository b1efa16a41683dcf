"""Document metadata and the metadata filter language of ``M3Index.search`` (the public path).

The code lives in the index package: the filter language in :mod:`m3_integrations.index.filters`,
metadata values in :mod:`m3_integrations.index.metadata` and the per-key value index in
:mod:`m3_integrations.index.filter_index`. This module keeps the names users import from here.

Example:
    >>> from m3_integrations.filters import evaluate, parse_filter
    >>> evaluate(parse_filter({"lang": "ko"}), [{"lang": "ko"}, {"lang": "en"}], {}).tolist()
    [True, False]
"""

from __future__ import annotations

from m3_integrations.index.filter_index import KeyIndex, evaluate
from m3_integrations.index.filters import (
    OPERATORS,
    And,
    Compare,
    Empty,
    Exists,
    FilterExpr,
    Not,
    Or,
    parse_filter,
)
from m3_integrations.index.metadata import (
    MAX_METADATA_DEPTH,
    JsonObject,
    copy_metadata,
    normalize_json,
    normalize_metadata,
    thaw,
)

__all__ = [
    "MAX_METADATA_DEPTH",
    "OPERATORS",
    "And",
    "Compare",
    "Empty",
    "Exists",
    "FilterExpr",
    "JsonObject",
    "KeyIndex",
    "Not",
    "Or",
    "copy_metadata",
    "evaluate",
    "normalize_json",
    "normalize_metadata",
    "parse_filter",
    "thaw",
]
