"""An approximate dense first stage: faiss IVF lists over 8-bit codes of the dense vectors.

Above a size threshold the exact dense scan (one matrix-vector product over every row, 186-226 ms
per query at 1M documents) is replaced by an inverted-file index: k-means cells over a sample of the
vectors (about ``4 sqrt(n)`` of them), each row stored as an 8-bit scalar-quantised code in its nearest
cell's list, and a query scans the lists of its ``nprobe`` nearest cells. The candidates it returns are
then rescored exactly from the dense store
(:meth:`~m3_integrations.index.search.SearchEngine._candidates`), so a hit's dense score is the same as
with the exact scan; only which rows become candidates is approximate.

``ann="auto"`` (the default of :class:`~m3_integrations.M3Index`) does not trust the lists blindly:
after training, :meth:`DenseANN.check` measures recall@10 on pseudo-queries made from the index's own
rows, scans more lists where needed, and keeps the exact scan where even a quarter of the lists misses
0.995 (vectors without coarse structure, such as many small unrelated topics in 1,024 dimensions,
defeat any partition into cells).

Why IVF and not HNSW: measured on this project's 2-core machine (``benchmarks/ann_first_stage.py
choose``, table in ``docs/engine.md``), HNSW over d=1024 vectors took about five times longer to build
for the same recall, and an IVF scan honours a row filter exactly (a filtered row is skipped inside the
probed lists), where a filtered graph walk can lose its way. 8-bit codes hold a quarter of float32's
bytes; their rounding only moves rows near the candidates' boundary, since scores are recomputed.

The structure lives in memory only. It is built on the first search that needs it (or by
:meth:`DenseANN.build`), extended by later adds, rebuilt after a compaction (rows are renumbered) and
when the index has doubled since the cells were trained. A saved index holds no faiss file, so loading
an untrusted folder never hands faiss bytes to parse; a loaded index rebuilds on its first search.

Example:
    >>> import numpy as np
    >>> from m3_integrations.index.storage import DenseStore
    >>> store = DenseStore(8, "float32")
    >>> vectors = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    >>> store.append(store.prepare(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 500))
    >>> ann = DenseANN(8, setting=True)
    >>> rows = ann.candidates(store, store.vectors[7], 5)
    >>> int(rows[0])
    7
"""

from __future__ import annotations

import logging
import math
from types import ModuleType
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np
from tqdm.auto import tqdm

from m3_integrations._utils import import_optional
from m3_integrations.scoring import top_k_stable

if TYPE_CHECKING:
    import threading

    from m3_integrations.index.search import IndexStores
    from m3_integrations.index.storage import DenseStore

logger = logging.getLogger(__name__)

__all__ = [
    "ANN_EXTRA",
    "DEFAULT_ANN_NPROBE",
    "DEFAULT_ANN_THRESHOLD",
    "AnnMethods",
    "AnnSetting",
    "DenseANN",
    "check_ann_settings",
    "load_faiss",
]

AnnSetting: TypeAlias = bool | Literal["auto"]
ANN_EXTRA = "ann"
# Rows a search must cover before "auto" takes the approximate stage: below it the exact scan costs
# under about 15 ms per query on the 2-core machine (docs/engine.md), and the exact answer is cheap.
DEFAULT_ANN_THRESHOLD = 50_000
# Lists scanned per query; recall and latency per setting are in docs/engine.md.
DEFAULT_ANN_NPROBE = 64
# k-means cells: about 4 sqrt(n) (faiss's guidance is 4-16 sqrt(n); 2 sqrt(n) lost recall@10 on
# clustered synthetic vectors: 0.9675 against 1.000 at 100k), each trained from at least 39 points
# (faiss's own lower bound).
_LISTS_PER_SQRT_ROW = 4.0
_TRAIN_POINTS_PER_LIST = 40
_KMEANS_ITERATIONS = 10
# The cells are retrained once the rows have doubled since training (lists grow long and slow).
_RETRAIN_GROWTH = 2.0
_ADD_CHUNK = 65_536
_OVERSAMPLE = 2
# The self-check of ann="auto" (see DenseANN.check): pseudo-queries drawn from the index's own rows,
# the recall@10 they must reach, the largest share of the lists it may scan to get there, and the
# noise that moves a pseudo-query away from its row (cosine ~0.64, a typical query-passage similarity).
SELF_CHECK_QUERIES = 128
# 0.995 rather than the 0.99 wanted of real queries: on one real collection a 0.99 target would have
# picked lists where the pseudo-queries got 0.9945 and the real queries 0.987 (mostly, the pseudo-queries
# are below the real ones; docs/engine.md).
SELF_CHECK_RECALL = 0.995
SELF_CHECK_MAX_LIST_SHARE = 0.25
_SELF_CHECK_NOISE = 1.2
_SELF_CHECK_K = 10
_SELF_CHECK_DEPTH = 100  # candidates per signal of a default search


def load_faiss() -> ModuleType:
    """faiss, or an ``ImportError`` that names the ``ann`` extra (``pip install "m3-integrations[ann]"``)."""
    return import_optional("faiss", ANN_EXTRA)


def check_ann_settings(setting: object, threshold: object, nprobe: object) -> None:
    """Raise ``ValueError`` naming the argument when ``ann``, ``ann_threshold`` or ``ann_nprobe`` is bad.

    Example:
        >>> check_ann_settings("auto", 50_000, 32)
        >>> check_ann_settings("yes", 50_000, 32)
        Traceback (most recent call last):
        ...
        ValueError: ann must be True, False or 'auto', got 'yes'
    """
    if not (isinstance(setting, bool) or (isinstance(setting, str) and setting == "auto")):
        msg = f"ann must be True, False or 'auto', got {setting!r}"
        raise ValueError(msg)
    for name, value in (("ann_threshold", threshold), ("ann_nprobe", nprobe)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value <= 0:
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)


class DenseANN:
    """The approximate dense candidate picker of one index; faiss ids are the dense store's rows.

    Not locked: :class:`~m3_integrations.M3Index` calls it under its lock.

    Args:
        dim: the dense vectors' dimension.
        setting: ``True`` (always, whatever the size), ``False`` (never: the exact scan) or ``"auto"``
            (when a search covers at least ``threshold`` rows and faiss is installed).
        threshold: rows a search must cover before ``"auto"`` uses the approximate stage.
        nprobe: IVF lists scanned per query (more: better recall, slower).
        show_progress: show a tqdm bar while the structure is built.

    Raises:
        ImportError: ``setting=True`` and faiss is not installed (the message names the ``ann`` extra).
        ValueError: a bad setting, threshold or nprobe (the message names it).
    """

    def __init__(
        self,
        dim: int,
        *,
        setting: AnnSetting = "auto",
        threshold: int = DEFAULT_ANN_THRESHOLD,
        nprobe: int = DEFAULT_ANN_NPROBE,
        show_progress: bool = False,
    ) -> None:
        check_ann_settings(setting, threshold, nprobe)
        self.dim = dim
        self.setting: AnnSetting = setting
        self.threshold = int(threshold)
        self.nprobe = int(nprobe)
        self.show_progress = show_progress
        self._faiss: ModuleType | None = load_faiss() if setting is True else None
        self._missing_warned = False
        self.searches = 0  # approximate searches since the settings or the rows last changed,
        self.fallbacks = 0  # and how many of them came back short (the exact scan then ran)
        self.reset()

    def reset(self) -> None:
        """Forget the structure (the rows were renumbered); the next search that needs it rebuilds it."""
        self._drop_structure()
        self._trained_rows = 0
        self._forget_check()
        self.searches = self.fallbacks = 0

    def _drop_structure(self) -> None:
        self._ivf = None
        self._coarse = None
        self._added = 0  # rows [0, _added) of the dense store are in the lists

    def _forget_check(self) -> None:
        # ann="auto" only: the lists scanned per query as the self-check chose them (None: not run),
        # the recall@10 it measured there, and the rows the index held when it declined (0: it did not).
        self._checked_nprobe: int | None = None
        self.check_recall: float | None = None
        self._declined_rows = 0

    def configure(self, setting: AnnSetting, threshold: int, nprobe: int) -> None:
        """Change the settings (a built structure is kept unless ``setting`` is False).

        Raises:
            ImportError: ``setting=True`` and faiss is not installed.
            ValueError: a bad setting, threshold or nprobe.
        """
        check_ann_settings(setting, threshold, nprobe)
        if setting is True:
            self._faiss = load_faiss()
        if setting != self.setting or int(nprobe) != self.nprobe:
            self._forget_check()  # "auto" checks again, from the new nprobe, on its next search
        self.setting, self.threshold, self.nprobe = setting, int(threshold), int(nprobe)
        self.searches = self.fallbacks = 0
        if setting is False:
            self.reset()

    @property
    def built_rows(self) -> int:
        """How many rows of the dense store are in the structure (0 when it is not built)."""
        return self._added

    @property
    def nprobe_used(self) -> int:
        """Lists an unfiltered search scans: ``nprobe``, or with ``"auto"`` what the self-check chose."""
        if self.setting == "auto" and self._checked_nprobe is not None:
            return self._checked_nprobe
        return self.nprobe

    @property
    def declined(self) -> bool:
        """Whether ``"auto"`` keeps the exact scan because the self-check failed (see :meth:`check`)."""
        return self.setting == "auto" and self._declined_rows > 0

    def wanted(self, rows_searched: int) -> bool:
        """Whether a search over ``rows_searched`` rows takes the approximate stage."""
        if self.setting is False or rows_searched == 0:
            return False
        if self.setting is True:
            return True
        if rows_searched < self.threshold:
            return False
        return self._module() is not None

    def _module(self) -> ModuleType | None:
        if self._faiss is None:
            try:
                self._faiss = load_faiss()
            except ImportError as err:
                if not self._missing_warned:
                    logger.warning("ann='auto': %s The dense first stage stays exact.", err)
                    self._missing_warned = True
                return None
        return self._faiss

    # ------------------------------------------------------------------ building
    def build(self, store: DenseStore) -> None:
        """Bring the structure up to date with ``store``: train it if needed, then add the new rows.

        The lists are trained on a sample of every row, tombstones included (at most half the rows,
        and real vectors all the same), so that neither a filter nor the deletes bias them.

        With ``"auto"``, a freshly trained structure is then checked on the index's own rows
        (:meth:`check`): it scans more lists if it must, and if even a quarter of the lists misses the
        target recall, the structure is dropped and the exact scan stays until the rows double.

        Raises:
            ImportError: faiss is not installed (the message names the ``ann`` extra).
        """
        faiss = self._faiss if self._faiss is not None else load_faiss()
        self._faiss = faiss
        n_rows = len(store.vectors)
        if self.declined:
            if n_rows < _RETRAIN_GROWTH * self._declined_rows:
                return
            self.reset()  # the index has doubled since the check declined: try again
        if self._added > n_rows or (self._ivf is not None and n_rows >= _RETRAIN_GROWTH * self._trained_rows):
            self.reset()
        if n_rows == 0:
            return
        if self._ivf is None:
            self._ivf = self._trained(faiss, store)
            self._trained_rows = n_rows
        if self._added < n_rows:
            self._add(store, n_rows)
        if self.setting == "auto" and self._checked_nprobe is None:
            self.check(store)

    def check(self, store: DenseStore) -> None:
        """The self-check of ``"auto"``: the fewest lists (from ``nprobe`` up) that keep recall@10.

        Pseudo-queries are :data:`SELF_CHECK_QUERIES` rows of the index itself (seeded), each moved away
        from its row by random noise to a cosine of about 0.64 (a typical query-passage similarity).
        For each, the top 10 of the exact scan is compared with the top 10 that the approximate stage
        returns as a search would use it (twice the default 100 candidates, reordered by exact scores).
        ``nprobe`` doubles until recall@10 reaches :data:`SELF_CHECK_RECALL`; that number of lists is
        then scanned per query. If a quarter of the lists (:data:`SELF_CHECK_MAX_LIST_SHARE`) still
        misses it, the vectors have no structure coarse enough for these lists (uniform noise, many
        small unrelated topics): the structure is dropped, one warning is logged, and searches keep the
        exact scan until the rows double. ``ann=True`` never runs it: the lists scanned are ``nprobe``.
        """
        ivf = self._ivf
        faiss = self._faiss
        assert ivf is not None
        assert faiss is not None
        n_rows = self._added
        rng = np.random.default_rng(0)
        picked = np.sort(rng.choice(n_rows, min(SELF_CHECK_QUERIES, n_rows), replace=False))
        rows = np.asarray(store.vectors[picked], dtype=np.float32)
        noise = rng.standard_normal(rows.shape).astype(np.float32) * np.float32(
            _SELF_CHECK_NOISE / math.sqrt(self.dim)
        )
        queries = rows + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        # The exact top-10 by the engine's own dense scan (its kernel and its tie order).
        want = np.stack([top_k_stable(store.scores(query)[:n_rows], _SELF_CHECK_K) for query in queries])
        nlist = int(ivf.nlist)  # type: ignore[attr-defined]
        largest = max(1, min(nlist, math.ceil(SELF_CHECK_MAX_LIST_SHARE * nlist)))
        nprobe = min(self.nprobe, nlist)
        depth = min(_OVERSAMPLE * _SELF_CHECK_DEPTH, n_rows)
        while True:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            _, labels = ivf.search(queries, depth, params=params)  # type: ignore[attr-defined]
            found = 0
            for query, labelled, wanted in zip(queries, labels, want, strict=True):
                got = labelled[labelled >= 0]
                top = got[top_k_stable(store.scores(query, got), _SELF_CHECK_K)]
                found += len(np.intersect1d(top, wanted))
            recall = found / want.size
            if recall >= SELF_CHECK_RECALL or nprobe >= largest:
                break
            nprobe = min(2 * nprobe, largest)
        self.check_recall = recall
        if recall >= SELF_CHECK_RECALL:
            self._checked_nprobe = nprobe
            logger.info(
                "ann='auto': recall@10 %.3f on %d pseudo-queries with %d of %d lists",
                recall,
                len(queries),
                nprobe,
                nlist,
            )
            return
        logger.warning(
            "ann='auto': the approximate dense stage reaches recall@10 %.3f on this index's own rows with "
            "%d of %d lists (target %.3f); the exact scan stays until the index doubles",
            recall,
            nprobe,
            nlist,
            SELF_CHECK_RECALL,
        )
        self._drop_structure()
        self._declined_rows = n_rows

    def _trained(self, faiss: ModuleType, store: DenseStore) -> object:
        vectors = store.vectors
        pool = np.arange(len(vectors))
        lists = max(
            1, min(round(_LISTS_PER_SQRT_ROW * math.sqrt(len(pool))), len(pool) // _TRAIN_POINTS_PER_LIST)
        )
        sample_size = min(len(pool), lists * _TRAIN_POINTS_PER_LIST)
        # Seeded: the same rows give the same cells, so searches are reproducible across runs.
        sample = np.sort(np.random.default_rng(0).choice(pool, sample_size, replace=False))
        train = np.ascontiguousarray(vectors[sample], dtype=np.float32)
        logger.info("training the dense ANN: %d lists from %d of %d rows", lists, sample_size, len(vectors))
        coarse = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFScalarQuantizer(
            coarse, self.dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        ivf.cp.niter = _KMEANS_ITERATIONS
        ivf.cp.seed = 1234
        ivf.train(train)
        self._coarse = coarse  # the IVF index does not own its quantizer: keep it alive with it
        return ivf

    def _add(self, store: DenseStore, n_rows: int) -> None:
        vectors = store.vectors
        start = self._added
        with tqdm(total=n_rows - start, desc="ANN index", unit="rows", disable=not self.show_progress) as bar:
            for begin in range(start, n_rows, _ADD_CHUNK):
                end = min(begin + _ADD_CHUNK, n_rows)
                chunk = np.ascontiguousarray(vectors[begin:end], dtype=np.float32)
                self._ivf.add_with_ids(chunk, np.arange(begin, end, dtype=np.int64))  # type: ignore[attr-defined]
                self._added = end
                bar.update(end - begin)

    # ------------------------------------------------------------------ searching
    def candidates(
        self,
        store: DenseStore,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        n_allowed: int | None = None,
    ) -> np.ndarray | None:
        """Up to ``k`` rows with the highest approximate dense scores, among the ``allowed`` rows.

        Builds or extends the structure first. ``allowed`` is a bool mask over the store's rows (live
        and matching the filter; ``None``: every row) holding ``n_allowed`` rows. A filter that keeps a
        fraction ``f`` of the rows scans ``nprobe / f`` lists (at most all of them), so about as many
        allowed rows are seen as without a filter.

        Returns:
            The rows, best first by their exact dense scores; or ``None`` when fewer than
            ``min(k, n_allowed)`` were found (the caller then scans the allowed rows exactly).
        """
        self.build(store)
        faiss = self._faiss
        ivf = self._ivf
        if ivf is None:  # "auto" declined (see check): the caller scans exactly
            return None
        assert faiss is not None
        n_rows = self._added
        n_allowed = n_rows if allowed is None else int(n_allowed if n_allowed is not None else allowed.sum())
        wanted = min(k, n_allowed)
        if wanted == 0:
            return np.zeros(0, dtype=np.int64)
        nlist = ivf.nlist
        nprobe = min(nlist, math.ceil(self.nprobe_used * n_rows / max(n_allowed, 1)))
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
        if allowed is not None and n_allowed < n_rows:
            # faiss reads bit (row & 7) of byte (row >> 3): little-endian bit order.
            bitmap = np.packbits(allowed, bitorder="little")
            # The selector reads `bitmap` in place: both stay referenced until the search returns.
            selector = faiss.IDSelectorBitmap(n_rows, faiss.swig_ptr(bitmap))
            params.sel = selector
        query32 = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        # Twice as many rows as wanted, reordered by their exact scores: the 8-bit codes' rounding
        # swaps near-tied rows at the boundary of the top k, and the exact scores swap them back.
        _, labels = ivf.search(query32, min(_OVERSAMPLE * wanted, n_allowed), params=params)
        rows = labels[0]
        rows = rows[rows >= 0].astype(np.int64, copy=False)
        self.searches += 1
        if len(rows) < wanted:
            self.fallbacks += 1
            return None
        exact = store.scores(query, rows)
        return rows[top_k_stable(exact, wanted)]

    def memory_bytes(self) -> int:
        """Bytes of the codes, ids and cell centroids (0 when not built)."""
        ivf = self._ivf
        if ivf is None:
            return 0
        return int(self._added * (ivf.code_size + 8) + ivf.nlist * self.dim * 4)  # type: ignore[attr-defined]

    def stats(self) -> dict[str, int | float | bool | None]:
        """What the structure holds and did (see :meth:`AnnMethods.ann_stats`)."""
        lists = int(self._ivf.nlist) if self._ivf is not None else 0  # type: ignore[attr-defined]
        return {
            "rows": self._added,
            "lists": lists,
            "nprobe": self.nprobe_used,
            "searches": self.searches,
            "fallbacks": self.fallbacks,
            "check_recall": self.check_recall,
            "declined": self.declined,
        }


class AnnMethods:
    """The dense first stage's settings on :class:`~m3_integrations.M3Index` (a mixin over its stores)."""

    _stores: IndexStores
    _lock: threading.RLock

    @property
    def ann(self) -> AnnSetting:
        """The dense first stage: ``"auto"``, ``True`` (approximate) or ``False`` (exact); settable.

        Example:
            .. code-block:: python

                index.ann = False  # exact scans from now on (the approximate structure is dropped)
        """
        return self._dense_ann.setting

    @ann.setter
    def ann(self, setting: AnnSetting) -> None:
        with self._lock:
            self._dense_ann.configure(setting, self._dense_ann.threshold, self._dense_ann.nprobe)

    @property
    def ann_threshold(self) -> int:
        """Documents a search must cover before ``ann="auto"`` takes the approximate stage; settable."""
        return self._dense_ann.threshold

    @ann_threshold.setter
    def ann_threshold(self, threshold: int) -> None:
        with self._lock:
            self._dense_ann.configure(self._dense_ann.setting, threshold, self._dense_ann.nprobe)

    @property
    def ann_nprobe(self) -> int:
        """IVF lists the approximate stage scans per query; settable."""
        return self._dense_ann.nprobe

    @ann_nprobe.setter
    def ann_nprobe(self, nprobe: int) -> None:
        with self._lock:
            self._dense_ann.configure(self._dense_ann.setting, self._dense_ann.threshold, nprobe)

    def build_ann(self) -> None:
        """Build (or bring up to date) the approximate dense stage now rather than at the next search.

        A search builds it when it first needs it; a server can call this after :meth:`load` so that no
        query waits for it. Training and adding took 17.5 s for 100,000 documents of d=1024 on the
        project's loaded 2-core machine (docs/engine.md).

        Raises:
            ImportError: faiss is not installed (the message names the ``ann`` extra).

        Example:
            .. code-block:: python

                index = M3Index.load("my_index", model=model, ann=True)
                index.build_ann()
        """
        with self._lock:
            self._dense_ann.build(self._stores.dense)

    def ann_stats(self) -> dict[str, int | float | bool | None]:
        """What the approximate dense stage holds and did: for tuning ``ann_nprobe`` and the threshold.

        ``rows`` (documents in the structure; 0 when it is not built), ``lists`` (IVF cells),
        ``nprobe`` (lists an unfiltered search scans: ``ann_nprobe``, or more where ``ann="auto"``'s
        self-check needed more), ``check_recall`` (the recall@10 that self-check measured; ``None``
        before it ran) and ``declined`` (``True`` when it failed, so searches keep the exact scan until
        the index doubles); and since the settings or the rows last changed, ``searches`` (queries
        that took the approximate stage) and ``fallbacks`` (those where it found fewer than the
        candidates needed, mostly under a narrow filter, so the exact scan picked them).

        Example:
            .. code-block:: python

                index.search("query", k=10)
                index.ann_stats()
                # {'rows': 100000, 'lists': 1265, 'nprobe': 64, 'searches': 1, 'fallbacks': 0,
                #  'check_recall': 1.0, 'declined': False}
        """
        with self._lock:
            return self._dense_ann.stats()

    @property
    def _dense_ann(self) -> DenseANN:
        ann = self._stores.dense_ann
        assert ann is not None
        return ann
