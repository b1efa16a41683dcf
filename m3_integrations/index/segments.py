"""Format 3's segment records: which data folders an incrementally saved index spans, and its tombstones.

A format-3 manifest is a format-2 manifest for its newest segment plus ``segments`` (the older ones,
oldest first, each described by :data:`SEGMENT_KEYS`) and ``dead_rows``. :func:`check_segments` turns it
into one format-2 manifest per segment, which :func:`~m3_integrations.index.format.check_manifest` checks
like any other; :mod:`m3_integrations.index.saving` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from m3_integrations.errors import IndexLoadError

__all__ = ["MAX_SEGMENTS", "SEGMENT_KEYS", "check_dead_rows", "check_segments"]

MAX_SEGMENTS = 1024
# What a format-3 manifest says of each segment (the newest's counts are the manifest's own).
SEGMENT_KEYS = ("data", "files", "count", "colbert_vectors", "lexical_nnz", "bm25_nnz", "bm25_columns")


def check_segments(manifest: Mapping[str, Any], label: Path) -> list[dict[str, Any]]:
    """A format-3 manifest as one format-2 manifest per segment, oldest first (the newest is its own).

    Each older segment is described by ``segments[i]`` (:data:`SEGMENT_KEYS`); the rest of the manifest
    (model, settings, codec) is shared. :func:`check_manifest` then checks each like a format-2 one.

    Raises:
        IndexLoadError: ``segments`` is not such a list, or names a data folder twice.
    """
    older = manifest.get("segments")
    if not isinstance(older, list) or not 1 <= len(older) < MAX_SEGMENTS:
        msg = f"{label}: segments is not a list of 1 to {MAX_SEGMENTS - 1} segment records"
        raise IndexLoadError(msg)
    shared = {k: v for k, v in manifest.items() if k not in (*SEGMENT_KEYS, "segments", "dead_rows")}
    shared["format_version"] = 2
    parts = []
    for i, entry in enumerate(older):
        if not isinstance(entry, dict) or set(entry) != set(SEGMENT_KEYS):
            msg = f"{label}: segments[{i}] is not an object with the keys {', '.join(SEGMENT_KEYS)}"
            raise IndexLoadError(msg)
        parts.append({**shared, **entry})
    parts.append({**shared, **{key: manifest.get(key) for key in SEGMENT_KEYS}})
    names = [part["data"] for part in parts]
    if len(set(map(str, names))) != len(names):
        msg = f"{label}: segments name one data folder twice"
        raise IndexLoadError(msg)
    return parts


def check_dead_rows(value: Any, rows: int, label: Path) -> np.ndarray:
    """A format-3 manifest's ``dead_rows``: strictly increasing row numbers below ``rows``."""
    if not isinstance(value, list) or not all(type(row) is int for row in value):
        msg = f"{label}: dead_rows is not a list of row numbers"
        raise IndexLoadError(msg)
    dead = np.asarray(value, dtype=np.int64)
    if len(dead) and (dead[0] < 0 or dead[-1] >= rows or bool((np.diff(dead) <= 0).any())):
        msg = f"{label}: dead_rows must be increasing row numbers below the {rows} rows"
        raise IndexLoadError(msg)
    return dead
