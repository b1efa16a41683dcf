"""The runnable examples in the stores' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "m3_integrations.stores.remote",
    "m3_integrations.stores.filters",
    "m3_integrations.stores.milvus",
    "m3_integrations.stores._milvus_colbert",
    "m3_integrations.index.validation",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
