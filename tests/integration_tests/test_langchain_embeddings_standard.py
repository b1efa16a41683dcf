"""LangChain's standard embeddings integration suite on the tiny checkpoint (socket-free)."""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests

from m3_integrations import M3Model
from m3_integrations.langchain import M3Embeddings


class TestM3EmbeddingsIntegration(EmbeddingsIntegrationTests):
    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_model: M3Model) -> None:
        self._model = tiny_model

    @property
    def embeddings_class(self) -> type[M3Embeddings]:
        return M3Embeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": self._model, "batch_size": 2}
