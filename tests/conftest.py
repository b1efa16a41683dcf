"""Session fixtures: one tiny BGE-M3-layout checkpoint (and a tiny reranker) built at test time."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.testing import build_tiny_checkpoint, build_tiny_reranker


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a random tiny checkpoint with both heads (hidden size 32, 1024 tokens)."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: str) -> M3Model:
    """One shared fp32 CPU model on the tiny checkpoint (small batches to exercise batching)."""
    return M3Model(tiny_checkpoint, device="cpu", batch_size=3)


@pytest.fixture(scope="session")
def tiny_reranker_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a random tiny cross-encoder in the bge-reranker-v2-m3 layout."""
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker"))


@pytest.fixture
def checkpoint_copy(tiny_checkpoint: str, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    import shutil

    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


@pytest.fixture
def plain_checkpoint(checkpoint_copy: Path) -> Path:
    """A private copy of the tiny checkpoint without BGE-M3's heads: a plain encoder, like e5 or MiniLM."""
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        (checkpoint_copy / head).unlink()
    return checkpoint_copy


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Every ``M3Model`` built during the test, as ``(name, kwargs)``; the real constructor still runs.

    A check that must come before any model loads asserts the list is empty.
    """
    calls: list[tuple[str, dict]] = []
    original = M3Model.__init__

    def record(self: M3Model, model_name_or_path: str | Path = "BAAI/bge-m3", **kwargs: object) -> None:
        calls.append((str(model_name_or_path), dict(kwargs)))
        original(self, model_name_or_path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(M3Model, "__init__", record)
    return calls
