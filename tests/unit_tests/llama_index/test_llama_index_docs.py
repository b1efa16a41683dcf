"""The recipes in docs/llama_index.md run as written, on the tiny checkpoints, in a temp folder."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import Settings

from m3_integrations import M3Model
from m3_integrations.llama_index import M3NodeWithScore, M3Retriever
from m3_integrations.testing import build_tiny_checkpoint

DOC = Path(__file__).resolve().parents[3] / "docs" / "llama_index.md"


@pytest.fixture
def restore_settings() -> Iterator[None]:
    previous = Settings._embed_model
    try:
        yield
    finally:
        Settings._embed_model = previous


@pytest.mark.usefixtures("restore_settings")
@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_recipes_run(
    tiny_model: M3Model, tiny_reranker_checkpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) >= 8
    code = "\n".join(blocks)
    assert code.count('M3Model("BAAI/bge-m3")') == 1
    code = code.replace('M3Model("BAAI/bge-m3")', "_tiny_model")
    code = code.replace('CrossEncoderReranker("BAAI/bge-reranker-v2-m3")', "CrossEncoderReranker(_reranker)")
    # The plain-encoder recipe loads e5 from the hub: a tiny checkpoint without heads stands in for it.
    plain_checkpoint = build_tiny_checkpoint(tmp_path / "plain", colbert_head=False, sparse_head=False)
    assert code.count('"intfloat/multilingual-e5-small"') == 1
    code = code.replace('"intfloat/multilingual-e5-small"', repr(plain_checkpoint))
    monkeypatch.chdir(tmp_path)
    namespace = {"_tiny_model": tiny_model, "_reranker": tiny_reranker_checkpoint}
    exec(compile(code, str(DOC), "exec"), namespace)

    assert (tmp_path / "m3_storage" / "manifest.json").is_file()
    assert isinstance(namespace["retriever"], M3Retriever)
    assert namespace["retriever"].similarity_top_k == 3
    assert len(namespace["retriever"]) == 2  # three documents, one deleted by ref_doc_id
    assert all(isinstance(n, M3NodeWithScore) for n in namespace["response"].source_nodes)
    assert len(namespace["response"].source_nodes) == 2
    assert {n.node.metadata["lang"] for n in namespace["hits"]} <= {"en", "ko"}
    assert namespace["nodes"]  # the Qdrant hybrid retrieval found something
    # The score keys the docs promise: BM25 stands in for the missing sparse head.
    assert set(namespace["hits"][0].scores) == {"dense", "sparse", "colbert"}
    assert set(namespace["plain_hits"][0].scores) == {"dense", "bm25", "colbert"}
