"""Qdrant sparse functions from BGE-M3 lexical weights, against the naive lexical formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.llama_index import M3SparseFunction, m3_sparse_doc_fn, m3_sparse_query_fn
from m3_integrations.testing import build_tiny_checkpoint
from tests.common import LEXICAL_WEIGHT_TOL, SAMPLE_TEXTS, naive_encode


def _as_dict(indices: list[int], values: list[float]) -> dict[int, float]:
    assert len(indices) == len(values)
    return dict(zip(indices, values, strict=True))


@pytest.mark.parametrize(
    ("factory", "max_length_attr"),
    [(m3_sparse_doc_fn, "passage_max_length"), (m3_sparse_query_fn, "query_max_length")],
)
def test_sparse_fn_matches_naive_lexical_weights(tiny_model: M3Model, factory, max_length_attr) -> None:
    fn = factory(tiny_model)
    assert isinstance(fn, M3SparseFunction)
    texts = SAMPLE_TEXTS
    indices, values = fn(texts)
    assert len(indices) == len(values) == len(texts)
    for text, idx, val in zip(texts, indices, values, strict=True):
        assert idx == sorted(idx)
        assert all(isinstance(i, int) for i in idx)
        assert all(isinstance(v, float) and v > 0 for v in val)
        ref = naive_encode(tiny_model, text, getattr(tiny_model, max_length_attr))["lexical"]
        got = _as_dict(idx, val)
        assert set(got) == set(ref)
        for token_id, weight in ref.items():
            assert got[token_id] == pytest.approx(weight, **LEXICAL_WEIGHT_TOL)


def test_query_fn_uses_query_instruction(tiny_checkpoint: str) -> None:
    model = M3Model(tiny_checkpoint, device="cpu", query_instruction="query: ")
    (q_idx,), (q_val,) = m3_sparse_query_fn(model)(["hello world"])
    (d_idx,), (d_val,) = m3_sparse_doc_fn(model)(["hello world"])
    assert _as_dict(q_idx, q_val) == pytest.approx(
        naive_encode(model, "query: hello world")["lexical"], **LEXICAL_WEIGHT_TOL
    )
    assert _as_dict(d_idx, d_val) == pytest.approx(
        naive_encode(model, "hello world")["lexical"], **LEXICAL_WEIGHT_TOL
    )


def test_empty_text_and_empty_batch(tiny_model: M3Model) -> None:
    fn = m3_sparse_doc_fn(tiny_model)
    assert fn([]) == ([], [])
    indices, values = fn([""])
    assert indices == [[]] and values == [[]]


def test_bad_inputs(tiny_model: M3Model) -> None:
    fn = m3_sparse_query_fn(tiny_model)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        fn(["ok", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="side"):
        M3SparseFunction(tiny_model, "document")  # type: ignore[arg-type]
    assert "query" in repr(fn)


def test_model_without_sparse_head_is_refused(tmp_path: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "no-sparse", sparse_head=False)
    model = M3Model(path, device="cpu", allow_missing_heads=True)
    with pytest.raises(ValueError, match=r"no sparse_linear\.pt"):
        m3_sparse_doc_fn(model)
