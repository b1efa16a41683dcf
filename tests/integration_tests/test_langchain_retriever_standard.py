"""LangChain's standard retriever integration suite on the tiny checkpoint (socket-free)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests

from m3_integrations import M3Index, M3Model
from m3_integrations.langchain import M3Retriever
from tests.common import SAMPLE_TEXTS


@pytest.fixture(scope="module")
def standard_index(tiny_model: M3Model) -> M3Index:
    index = M3Index(tiny_model)
    index.add([t for t in SAMPLE_TEXTS if t.strip()])
    return index


class TestM3RetrieverIntegration(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _index(self, standard_index: M3Index) -> None:
        self._standard_index = standard_index

    @property
    def retriever_constructor(self) -> type[M3Retriever]:
        return M3Retriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": self._standard_index, "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return "capital of France"
