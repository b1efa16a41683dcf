"""The runnable examples in the core's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "m3_integrations.scoring",
    "m3_integrations._scoring_kernels",
    "m3_integrations.fusion",
    "m3_integrations.filters",
    "m3_integrations._utils",
    "m3_integrations.bm25",
    "m3_integrations.testing",
    "m3_integrations.chunking",
    "m3_integrations._chunk_layout",
    "m3_integrations.documents",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0
