import subprocess
import sys

from m3_integrations import langchain as m3_langchain

EXPECTED_ALL = ["M3Embeddings", "M3SparseEmbeddings", "M3Retriever", "M3Reranker"]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(m3_langchain.__all__)
    for name in EXPECTED_ALL:
        assert getattr(m3_langchain, name).__name__ == name
    assert set(EXPECTED_ALL) <= set(dir(m3_langchain))


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = m3_langchain.Nope


def test_embeddings_import_skips_partner_packages() -> None:
    # M3Embeddings must not pay for langchain-qdrant / langchain-milvus (seconds of import time).
    code = (
        "import sys; from m3_integrations.langchain import M3Embeddings, M3Retriever, M3Reranker; "
        "print(any(m in sys.modules for m in ('langchain_qdrant', 'langchain_milvus')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
