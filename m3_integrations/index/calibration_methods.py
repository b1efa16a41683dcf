"""The calibration methods of :class:`~m3_integrations.M3Index` (a mixin; the work: :mod:`.calibration`)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from m3_integrations.index.calibration import MAX_PSEUDO_QUERIES, Calibration, calibrate_index
from m3_integrations.index.options import IndexKind

if TYPE_CHECKING:
    from m3_integrations.index.index import M3Index

__all__ = ["CalibrationMethods"]


class CalibrationMethods:
    """``calibrate``, ``reset_calibration`` and ``calibration`` for :class:`~m3_integrations.M3Index`."""

    _calibration: Calibration | None
    _lock: threading.RLock
    kind: IndexKind
    show_progress: bool

    # ------------------------------------------------------------------ calibration
    @property
    def calibration(self) -> Calibration | None:
        """What :meth:`calibrate` chose (saved with the index), or ``None``: the built-in defaults."""
        return self._calibration

    def calibrate(
        self,
        *,
        max_queries: int = MAX_PSEUDO_QUERIES,
        seed: int = 0,
        fusions: Sequence[str] | None = None,
        weights: Sequence[Sequence[float]] | None = None,
        min_gain: float = 0.005,
        show_progress: bool | None = None,
    ) -> Calibration:
        """Choose this index's default fusion and weights without labels, on pseudo-queries of its documents.

        Up to ``max_queries`` documents are drawn (seeded); from each, one sentence is taken out and
        becomes a query whose one relevant document is the rest of that passage (the stored index is
        not changed: the passage's scores are computed on the remainder for this purpose only). Every
        configuration of a small grid (fusions ``confidence``, ``agreement``, ``relative_score``,
        ``rrf`` × five (dense, lexical, ColBERT) weight sets, plus the built-in default) ranks each
        query's candidates as :meth:`search` would, and is scored by nDCG@10. The best replaces the
        built-in default only if its mean beats the default's by more than ``min_gain``. The choice
        becomes the default of :meth:`search` (and of the retrievers over this index) when a call
        gives no ``fusion`` / ``weights``; it is saved with the index and checked on load. Explicit
        arguments still win; a partial ``weights`` dict overrides the calibrated weights key by key.

        Cost: encoding ``max_queries`` short queries and as many passages, and one candidate scoring
        per query (about what a ``max_queries``-query evaluation costs); the grid's fusions are cheap.

        What calibration cannot see: the real queries. Pseudo-queries are sentences in the corpus
        language and style, so queries in another language than the documents (cross-lingual use)
        look monolingual to it: do not calibrate such an index (measured in docs/evaluation.md, that
        is where its choice lost most). Over 14 encoder x collection pairs it was not better than the
        built-in default by the selection protocol's rule, so it is an option, not the default.
        Documents added later are not taken into account until :meth:`calibrate` runs again.

        Args:
            max_queries: how many pseudo-queries at most (>= 10).
            seed: the seed the documents and sentences are drawn with (same index, same seed: same
                choice).
            fusions: the fusions to try (default: ``confidence``, ``agreement``, ``relative_score``,
                ``rrf``).
            weights: the ``(dense, lexical, colbert)`` weight sets to try (default:
                :data:`~m3_integrations.index.calibration.CALIBRATION_WEIGHTS`).
            min_gain: how much better than the built-in default (mean nDCG@10) the best must be.
            show_progress: progress bars while encoding and scoring (default: the index's).

        Returns:
            The :class:`~m3_integrations.index.calibration.Calibration`, also in :attr:`calibration`.

        Raises:
            ValueError: fewer than 20 documents, fewer than 10 usable pseudo-queries (documents of two
                sentences or more), nothing to choose from (a grid holding only the built-in default),
                or a bad argument; the index is unchanged then.

        Example:
            .. code-block:: python

                index.calibrate(show_progress=False)
                index.calibration.fusion, index.calibration.weights  # e.g. ("rrf", (0.2, 0.2, 0.6))
                index.search("question")  # uses them
                index.reset_calibration()  # back to the built-in defaults
        """
        chosen = calibrate_index(
            cast("M3Index", self),
            max_queries=max_queries,
            seed=seed,
            fusions=fusions,
            weights=weights,
            min_gain=min_gain,
            show_progress=self.show_progress if show_progress is None else bool(show_progress),
        )
        self._install_calibration(chosen)
        return chosen

    def reset_calibration(self) -> None:
        """Forget what :meth:`calibrate` chose: searches use the built-in defaults again (saved as such)."""
        self._install_calibration(None)

    def _install_calibration(self, calibration: Calibration | None) -> None:
        with self._lock:
            self._calibration = calibration
            self.kind = dataclasses.replace(
                self.kind,
                calibrated_fusion=None if calibration is None else calibration.fusion,
                calibrated_weights=None if calibration is None else calibration.weights,
            )
