"""BGE-M3 lexical weights as the sparse functions of LlamaIndex's hybrid vector stores (Qdrant)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from m3_integrations._utils import validate_texts
from m3_integrations.model import M3Model, resolve_model

__all__ = ["M3SparseFunction", "m3_sparse_doc_fn", "m3_sparse_query_fn"]

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]


class M3SparseFunction:
    """A callable ``list[str] -> (indices, values)`` over BGE-M3's lexical weights.

    Indices are tokenizer ids (sorted ascending), values the learned token weights; special tokens and
    zero weights are dropped by the model. A text with no weighted token yields empty lists. Build one
    with :func:`m3_sparse_doc_fn` or :func:`m3_sparse_query_fn` rather than directly.

    Args:
        model: an ``M3Model`` with the ``sparse_linear.pt`` head, or a name/path to load.
        side: ``"passage"`` (``encode_passages``) or ``"query"`` (``encode_queries``).
        batch_size: texts per forward pass (default: the model's).
        model_kwargs: ``M3Model`` options when ``model`` is a name/path.

    Raises:
        ValueError: the model has no lexical head, or ``side`` is unknown.
    """

    def __init__(
        self,
        model: M3Model | str | os.PathLike[str],
        side: Literal["passage", "query"],
        *,
        batch_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if side not in ("passage", "query"):
            msg = f"side must be 'passage' or 'query', got {side!r}"
            raise ValueError(msg)
        self.model = resolve_model(model, model_kwargs)
        if not self.model.has_sparse:
            msg = (
                f"model {self.model.model_name_or_path!r} has no sparse_linear.pt head, so it gives no "
                "lexical weights to use as sparse vectors"
            )
            raise ValueError(msg)
        self.side = side
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> BatchSparseEncoding:
        """Encode ``texts`` into parallel lists of token ids and weights."""
        texts = validate_texts(texts)
        encode = self.model.encode_queries if self.side == "query" else self.model.encode_passages
        out = encode(texts, return_dense=False, return_sparse=True, batch_size=self.batch_size)
        indices: list[list[int]] = []
        values: list[list[float]] = []
        for weights in out.lexical_weights or []:
            ids = sorted(weights)
            indices.append([int(i) for i in ids])
            values.append([float(weights[i]) for i in ids])
        return indices, values

    def __repr__(self) -> str:
        return f"M3SparseFunction({self.model.model_name_or_path!r}, side={self.side!r})"


def m3_sparse_doc_fn(
    model: M3Model | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> M3SparseFunction:
    """The ``sparse_doc_fn`` of ``QdrantVectorStore``: passages → BGE-M3 lexical weights.

    Example:
        .. code-block:: python

            from llama_index.vector_stores.qdrant import QdrantVectorStore
            from qdrant_client import QdrantClient

            from m3_integrations import M3Model
            from m3_integrations.llama_index import m3_sparse_doc_fn, m3_sparse_query_fn

            model = M3Model("BAAI/bge-m3")
            store = QdrantVectorStore(
                "docs",
                client=QdrantClient(location=":memory:"),
                enable_hybrid=True,
                sparse_doc_fn=m3_sparse_doc_fn(model),
                sparse_query_fn=m3_sparse_query_fn(model),
            )
    """
    return M3SparseFunction(model, "passage", batch_size=batch_size, model_kwargs=model_kwargs)


def m3_sparse_query_fn(
    model: M3Model | str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> M3SparseFunction:
    """The ``sparse_query_fn`` of ``QdrantVectorStore``: queries → BGE-M3 lexical weights.

    Uses ``encode_queries`` (query length limit and instruction). See :func:`m3_sparse_doc_fn`.
    """
    return M3SparseFunction(model, "query", batch_size=batch_size, model_kwargs=model_kwargs)
