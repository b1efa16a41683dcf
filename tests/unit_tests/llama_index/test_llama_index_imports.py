from m3_integrations import llama_index

EXPECTED_ALL = [
    "M3Embedding",
    "M3NodeWithScore",
    "M3Reranker",
    "M3Retriever",
    "M3SparseFunction",
    "m3_sparse_doc_fn",
    "m3_sparse_query_fn",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(llama_index.__all__)
    for name in llama_index.__all__:
        assert hasattr(llama_index, name)
