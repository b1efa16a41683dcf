"""The README's Python examples run as written, on the tiny checkpoint instead of BAAI/bge-m3."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
# Names the README's framework snippet takes from the reader's own code.
PRELUDE = """
from llama_index.core import Document
texts = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "서울은 수도이다."]
documents = [Document(text=t) for t in texts]
"""


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


def test_readme_examples_run(tiny_checkpoint: str, tmp_path: Path) -> None:
    namespace: dict = {}
    exec(PRELUDE, namespace)
    for block in BLOCKS:
        code = block.replace('"BAAI/bge-m3"', repr(tiny_checkpoint)).replace(
            '"my-index"', repr(str(tmp_path / "ix"))
        )
        try:
            exec(code, namespace)
        except Exception as err:  # pragma: no cover - the failure message is the point
            pytest.fail(f"README example failed: {type(err).__name__}: {err}\n{block}")
    assert len(namespace["index"]) == 2
    assert namespace["docs"]
    assert "relevance_score" in namespace["docs"][0].metadata
