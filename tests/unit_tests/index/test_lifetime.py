"""A dropped M3Index is freed at once, not when the cyclic garbage collector next runs.

An index can hold gigabytes of arrays; a reference cycle through it (the search engine once held a bound
method of the index) kept every dropped one alive until a collection, and a process that loads, saves and
reloads large indexes ran out of memory (benchmarks/mmap_load.py at 500k documents).
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from m3_integrations import M3Index, M3Model

TEXTS = ["alpha beta gamma", "beta gamma delta", "gamma delta epsilon", "delta epsilon zeta"]


@pytest.mark.parametrize("store_colbert", [True, False])
def test_a_dropped_index_is_freed_without_the_cycle_collector(
    tiny_model: M3Model, tmp_path: Path, store_colbert: bool
) -> None:
    gc.collect()
    gc.disable()
    try:
        index = M3Index(tiny_model, store_colbert=store_colbert)
        index.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
        for mode in ("dense", "dense+sparse", "hybrid", "colbert"):
            assert index.search("beta gamma", k=2, mode=mode)
        index.save(tmp_path / "idx")
        loaded = M3Index.load(tmp_path / "idx", tiny_model, mmap=True)
        assert loaded.search("beta gamma", k=2)
        refs = [weakref.ref(index), weakref.ref(loaded)]
        del index, loaded
        assert [r() is None for r in refs] == [True, True]
    finally:
        gc.enable()
