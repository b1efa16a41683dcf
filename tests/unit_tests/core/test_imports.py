import m3_integrations

EXPECTED_ALL = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "IndexLoadError",
    "CrossEncoderReranker",
    "DocumentReadError",
    "IndexNotFoundError",
    "M3Index",
    "M3Model",
    "M3Output",
    "M3ScoreReranker",
    "M3Store",
    "MilvusM3Store",
    "MissingHeadsError",
    "QdrantM3Store",
    "SearchHit",
    "StoreConnectionError",
    "StoreError",
    "StoreRequestError",
    "StoreSchemaError",
    "__version__",
]


def test_all_imports() -> None:
    assert sorted(EXPECTED_ALL) == sorted(m3_integrations.__all__)
    for name in m3_integrations.__all__:
        assert hasattr(m3_integrations, name)
