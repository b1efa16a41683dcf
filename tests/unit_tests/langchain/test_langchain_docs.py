"""The recipes in docs/langchain.md run as written (on the tiny checkpoints, in a temp folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.testing import build_tiny_checkpoint

DOC = Path(__file__).resolve().parents[3] / "docs" / "langchain.md"


def test_recipes_run(
    tiny_model: M3Model, tiny_reranker_checkpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plain-encoder recipe loads e5 from the hub: a tiny checkpoint without heads stands in for it.
    plain_checkpoint = build_tiny_checkpoint(tmp_path / "plain", colbert_head=False, sparse_head=False)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) >= 8
    code = "\n".join(blocks)
    assert code.count('M3Model("BAAI/bge-m3")') == 1
    code = code.replace('M3Model("BAAI/bge-m3")', "_tiny_model")
    code = code.replace(
        'CrossEncoderReranker("BAAI/bge-reranker-v2-m3")', "CrossEncoderReranker(_tiny_reranker)"
    )
    assert code.count('"intfloat/multilingual-e5-small"') == 1
    code = code.replace('"intfloat/multilingual-e5-small"', repr(plain_checkpoint))
    monkeypatch.chdir(tmp_path)
    namespace = {"_tiny_model": tiny_model, "_tiny_reranker": tiny_reranker_checkpoint}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert (tmp_path / "m3_index").is_dir()
    assert len(namespace["docs"]) == 2
    assert namespace["chain"].invoke("again?") == "BGE-M3 [1]."
    # The score keys the docs promise: BM25 stands in for the missing sparse head.
    assert set(namespace["docs"][0].metadata["scores"]) == {"dense", "sparse", "colbert"}
    assert set(namespace["plain_docs"][0].metadata["scores"]) == {"dense", "bm25", "colbert"}
    assert namespace["plain_retriever"].index.default_fusion == "confidence"
