import ast
from pathlib import Path

import pytest

import m3_integrations.langchain as m3_langchain

EXPECTED_ALL = ["M3Embeddings", "M3SparseEmbeddings", "M3Retriever", "M3Reranker"]
PARTNER_PACKAGES = ("langchain_qdrant", "langchain_milvus", "langchain_classic", "langchain_community")


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(m3_langchain.__all__)
    for name in EXPECTED_ALL:
        assert getattr(m3_langchain, name).__name__ == name
    assert set(EXPECTED_ALL) <= set(dir(m3_langchain))


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = m3_langchain.Nope


@pytest.mark.parametrize("module", ["__init__", "_utils", "embeddings", "retrievers", "rerankers"])
def test_only_langchain_core_is_imported(module: str) -> None:
    # Only M3SparseEmbeddings may look for partner packages (they cost seconds to import); the other
    # classes need nothing beyond langchain-core.
    source = (Path(m3_langchain.__file__).parent / f"{module}.py").read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "langchain_core" in imported or module in ("__init__", "_utils")
    assert not imported & set(PARTNER_PACKAGES)
    assert not {name for name in imported if name.startswith("langchain") and name != "langchain_core"}
