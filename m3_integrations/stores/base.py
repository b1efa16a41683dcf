"""The store protocol: what the adapters, the CLI and the evaluation need from an index of documents.

:class:`~m3_integrations.M3Index` (embedded), :class:`~m3_integrations.QdrantM3Store` and
:class:`~m3_integrations.MilvusM3Store` satisfy it: they take the same search options
(:class:`~m3_integrations.index.options.SearchOptions`) and return :class:`SearchHit` with the same
per-signal scores, so code written against one runs on the others.

Example:
    .. code-block:: python

        from m3_integrations import M3Index, QdrantM3Store
        from m3_integrations.stores import M3Store

        isinstance(M3Index(model), M3Store)  # True
        isinstance(QdrantM3Store(model, client=QdrantClient(":memory:")), M3Store)  # True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from m3_integrations.index.options import FilterType, Fusion, Mode
    from m3_integrations.index.types import SearchHit
    from m3_integrations.model import M3Model
    from m3_integrations.rerank import Reranker

__all__ = ["M3Store"]


@runtime_checkable
class M3Store(Protocol):
    """An index of documents searched with BGE-M3's signals (see the module docstring).

    ``add`` replaces a document whose id is stored; ``get`` and ``delete`` raise ``KeyError`` naming an
    id that is not stored; ``search`` takes :meth:`M3Index.search <m3_integrations.M3Index.search>`'s
    options and raises what it raises for them; ``check_search_options`` raises the same without
    searching.
    """

    model: M3Model

    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[str]:
        """Encode and store documents; returns their ids."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id."""
        ...

    def get(self, ids: Sequence[str]) -> list[SearchHit]:
        """Stored documents by id, in the order asked."""
        ...

    def __len__(self) -> int: ...

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = 100,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> list[SearchHit]:
        """The top ``k`` documents for ``query``, best first, with per-signal scores."""
        ...

    def check_search_options(
        self,
        k: int = 10,
        *,
        mode: Mode | str = "hybrid",
        weights: Sequence[float] | Mapping[str, float] | None = None,
        fusion: Fusion | str | None = None,
        candidates: int | None = 100,
        filter: FilterType | None = None,
        rerank: str | Reranker | None = None,
        rerank_top_n: int | None = None,
    ) -> None:
        """Raise what :meth:`search` would raise for these options."""
        ...
