"""``M3Index``: an embedded hybrid index over BGE-M3's dense, lexical and ColBERT representations.

The facade users call. It owns the lock, the model and the stores, checks every document before
anything is stored, and hands the work to the package's parts: the stores
(:mod:`~m3_integrations.index.storage`), the search (:mod:`~m3_integrations.index.search`, through the
methods of :mod:`~m3_integrations.index.querying`), adding (:mod:`~m3_integrations.index.adding`),
BM25's analyzer (:mod:`~m3_integrations.index.analysis`), the options (:mod:`~m3_integrations.index.options`)
and persistence (:mod:`~m3_integrations.index.persistence`). ``docs/engine.md`` has the whole design.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from m3_integrations import scoring
from m3_integrations.index import persistence
from m3_integrations.index.adding import AddMethods
from m3_integrations.index.analysis import BM25Analysis, check_bm25_options, fixed_analyzer
from m3_integrations.index.ann import (
    DEFAULT_ANN_NPROBE,
    DEFAULT_ANN_THRESHOLD,
    AnnMethods,
    AnnSetting,
    DenseANN,
    check_ann_settings,
)
from m3_integrations.index.calibration import Calibration
from m3_integrations.index.calibration_methods import CalibrationMethods
from m3_integrations.index.colbert_codecs import COLBERT_STORAGES, ColbertStorage
from m3_integrations.index.compact_store import CompactColbertStore
from m3_integrations.index.options import IndexKind
from m3_integrations.index.querying import QueryMethods
from m3_integrations.index.search import IndexStores, SearchEngine
from m3_integrations.index.sparse_store import SparseStore
from m3_integrations.index.storage import ColbertStore, DenseStore, DocumentTable
from m3_integrations.index.types import SearchHit

if TYPE_CHECKING:
    import os

    from m3_integrations.language import LanguageProfile
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["M3Index"]


class M3Index(AddMethods, AnnMethods, QueryMethods, CalibrationMethods):
    """Embedded hybrid index: dense + lexical + ColBERT (+ BM25), incremental, filtered, persisted.

    Setup:
        .. code-block:: bash

            pip install m3-integrations

    Key init args:
        model: the :class:`~m3_integrations.M3Model` that encodes documents and queries.
        store_colbert: keep ColBERT vectors (needed for fast ``colbert``/``hybrid`` modes).
        colbert_storage: how ColBERT vectors are stored (``benchmarks/colbert_compression.md``):
            ``"exact"`` (float16, the default), ``"int8"`` (half of float16, one scale per vector) or
            ``"compact"`` (token pooling by 2, then ColBERTv2-style residual codes trained on the index's
            own vectors: 1/32 of float16 at d=1024; see ``docs/engine.md``). ``None`` follows
            ``colbert_dtype``.
        colbert_dtype: ``"float16"`` or ``"int8"``: the older spelling of ``colbert_storage="exact"``
            and ``"int8"`` (kept working).
        dense_dtype: ``"float32"`` or ``"float16"`` (half the memory and the fastest first stage on
            large indexes: candidates are picked with float16 products, then rescored exactly).
        lexical: ``"m3"`` (the model's lexical weights), ``"bm25"``, or ``"auto"`` (m3 when the model
            has a sparse head, else BM25). With BM25 as the lexical signal, the ``sparse`` weight and
            mode use BM25 and hits report it under ``"bm25"``.
        bm25_tokenizer: ``"word"`` (lower-cased words; CJK ideographs and kana one per token),
            ``"model"`` (the model's subword ids), or ``"auto"``: words when BM25 is the lexical signal
            (a model without sparse head; words beat subword ids there in benchmarks/REPORT.md) or when
            a stemmer or stop words are given, the model's ids otherwise (BM25 as a fourth signal
            beside BGE-M3's own lexical weights).
        bm25_stemmer: with ``bm25_tokenizer="word"``, a Snowball language (``"english"``, ``"german"``,
            …) to stem words with (needs ``pip install "m3-integrations[stemming]"``); ``None`` keeps
            words as they are.
        bm25_stopwords: with ``bm25_tokenizer="word"``, ``"english"`` (built-in list) or your own words
            to leave out of BM25; ``None`` keeps every word.
        ann: the dense first stage. ``"auto"`` (default): approximate (faiss IVF lists over 8-bit
            codes, :mod:`~m3_integrations.index.ann`) when a search covers at least ``ann_threshold``
            documents, faiss is installed (``pip install "m3-integrations[ann]"``) and the structure
            passes its self-check on the index's own vectors (recall@10 >= 0.995 on pseudo-queries,
            scanning more lists if needed); else the exact scan. ``True``: approximate at any size
            (faiss required, no self-check); ``False``: always the exact scan. Candidates' dense scores
            are recomputed exactly either way, so only which documents become candidates can differ.
            Not saved with the index: pass it to :meth:`load` too.
        ann_threshold: documents a search must cover (live and matching its filter) before ``"auto"``
            uses the approximate stage (default 50,000).
        ann_nprobe: IVF lists scanned per query (default 64; ``"auto"`` may scan more, see
            :meth:`ann_stats`; more: higher recall, slower).
        bm25_cjk: with ``bm25_tokenizer="word"``, ``"chars"`` (each CJK character a token) or
            ``"chars+bigrams"`` (also overlapping character pairs: Japanese).
        language: the corpus language for BM25 over words: ``"auto"`` (detected from the first
            documents added, :func:`m3_integrations.language.detect_languages`), an ISO 639-1 code
            (``"en"``, ``"fi"``, ``"ja"``, ``"th"``...), or ``None`` for plain lower-cased words. The
            language picks the analyzer (:func:`m3_integrations.language.analyzer_for`): Snowball
            stemming and stop words where a stemmer exists, character bigrams for Japanese, the model's
            subword ids for Thai, Lao, Khmer and Burmese (when ``bm25_tokenizer="auto"``); a mixed or
            undetermined corpus gets plain words. Explicit ``bm25_stemmer`` / ``bm25_stopwords`` /
            ``bm25_cjk`` win over the language's. It applies where BM25 uses words: with M3's own
            lexical weights and ``bm25_tokenizer="auto"`` BM25 keeps the model's ids.

    Instantiate:
        .. code-block:: python

            from m3_integrations import M3Index, M3Model

            index = M3Index(M3Model("BAAI/bge-m3"))

    Add documents:
        .. code-block:: python

            ids = index.add(
                ["BGE-M3 has three heads.", "서울은 수도이다."], metadatas=[{"lang": "en"}, {"lang": "ko"}]
            )
            index.add(["BGE-M3 has three outputs."], ids=[ids[0]])  # same id: replaced
            index.delete([ids[1]])

    Search:
        .. code-block:: python

            hits = index.search("what does bge-m3 output?", k=5)  # hybrid, weights (0.4, 0.2, 0.4)
            hits[0].id, hits[0].score, hits[0].scores  # {"dense": ..., "sparse": ..., "colbert": ...}
            index.search("bge-m3", mode="dense+sparse", fusion="rrf", weights={"bm25": 0.3})

    Search with filter:
        .. code-block:: python

            index.search("capital", filter={"lang": "ko"})
            index.search("capital", filter={"year": {"$gte": 2020}, "tags": {"$in": ["geo", "rag"]}})
            index.search("capital", filter=lambda meta: meta.get("year", 0) > 2020)

    Scores before fusion:
        .. code-block:: python

            candidates = index.score_candidates("what does bge-m3 output?", mode="hybrid", k=5)
            candidates.signals["colbert"]  # one score per candidate
            candidates.rank(index.search_options(5, mode="hybrid", fusion="rrf"))  # [(id, score), ...]

    Persist:
        .. code-block:: python

            index.save("my_index")
            index = M3Index.load("my_index", model=M3Model("BAAI/bge-m3"))
    """

    def __init__(
        self,
        model: M3Model,
        *,
        store_colbert: bool = True,
        colbert_dtype: Literal["float16", "int8"] = "float16",
        colbert_storage: ColbertStorage | None = None,
        dense_dtype: Literal["float32", "float16"] = "float32",
        lexical: Literal["auto", "m3", "bm25"] = "auto",
        bm25_tokenizer: Literal["auto", "model", "word"] = "auto",
        bm25_stemmer: str | None = None,
        bm25_stopwords: str | Sequence[str] | None = None,
        ann: AnnSetting = "auto",
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ann_nprobe: int = DEFAULT_ANN_NPROBE,
        bm25_cjk: Literal["chars", "chars+bigrams"] | None = None,
        language: str | None = "auto",
        show_progress: bool = False,
        batch_size: int | None = None,
    ) -> None:
        if colbert_dtype not in ("float16", "int8"):
            msg = f"colbert_dtype must be 'float16' or 'int8', got {colbert_dtype!r}"
            raise ValueError(msg)
        if colbert_storage is None:
            colbert_storage = "int8" if colbert_dtype == "int8" else "exact"
        elif colbert_storage not in COLBERT_STORAGES:
            names = ", ".join(map(repr, COLBERT_STORAGES))
            msg = f"colbert_storage must be one of {names}, got {colbert_storage!r}"
            raise ValueError(msg)
        elif colbert_dtype == "int8" and colbert_storage != "int8":
            msg = (
                f"colbert_dtype='int8' contradicts colbert_storage={colbert_storage!r}: "
                "give colbert_storage only"
            )
            raise ValueError(msg)
        if dense_dtype not in ("float32", "float16"):
            msg = f"dense_dtype must be 'float32' or 'float16', got {dense_dtype!r}"
            raise ValueError(msg)
        if lexical not in ("auto", "m3", "bm25"):
            msg = f"lexical must be 'auto', 'm3' or 'bm25', got {lexical!r}"
            raise ValueError(msg)
        if lexical == "m3" and not model.has_sparse:
            msg = "lexical='m3' needs a checkpoint with sparse_linear.pt; use lexical='bm25' or 'auto'"
            raise ValueError(msg)
        check_bm25_options(bm25_tokenizer, bm25_stemmer, bm25_stopwords, bm25_cjk)
        check_ann_settings(ann, ann_threshold, ann_nprobe)
        analyzer = fixed_analyzer(language)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            msg = f"batch_size must be a positive integer, got {batch_size!r}"
            raise ValueError(msg)
        self.model = model
        self.store_colbert = bool(store_colbert)
        self.colbert_storage: ColbertStorage = colbert_storage
        # The dtype of stored vectors before compression ("compact" keeps float16 until trained).
        self.colbert_dtype: Literal["float16", "int8"] = "int8" if colbert_storage == "int8" else "float16"
        self.dense_dtype = dense_dtype
        self.lexical = "m3" if lexical == "m3" or (lexical == "auto" and model.has_sparse) else "bm25"
        self._analysis = BM25Analysis(
            bm25_tokenizer,
            bm25_is_lexical=self.lexical == "bm25",
            stemmer=bm25_stemmer,
            stopwords=bm25_stopwords,
            cjk=bm25_cjk,
            language=language,
            analyzer=analyzer,
        )
        self.show_progress = show_progress
        self.batch_size = batch_size
        self.dense_dim = int(model.dense_dim)
        self.colbert_dim = int(model.colbert_dim)
        self.vocab_size = int(model.vocab_size)
        self.kind = IndexKind(
            lexical_signal="sparse" if self.lexical == "m3" else "bm25",
            trained_heads=self.lexical == "m3" and bool(getattr(model, "has_colbert_head", False)),
        )
        self._lock = threading.RLock()
        self._calibration: Calibration | None = None
        # The last save to (or load from) a folder: a later save there writes only what changed since.
        self._saved: persistence.SavedState | None = None
        self._stores = IndexStores(
            documents=DocumentTable(),
            dense=DenseStore(self.dense_dim, dense_dtype),
            lexical_weights=SparseStore(self.vocab_size) if self.lexical == "m3" else None,
            colbert=self._colbert_store() if self.store_colbert else None,
            bm25=self._analysis.new_bm25(self.vocab_size),
            lexical_signal=self.kind.lexical_signal,
            workspace=scoring.StagingBuffer(),  # used under the lock
            dense_ann=DenseANN(
                self.dense_dim,
                setting=ann,
                threshold=ann_threshold,
                nprobe=ann_nprobe,
                show_progress=show_progress,
            ),
        )
        # The engine reaches the model through a weak reference: a bound method would make a cycle
        # (index -> engine -> index) that only the cyclic garbage collector frees, so a dropped index
        # (gigabytes of arrays) would stay in memory until it ran.
        encode_colbert = weakref.WeakMethod(self._encode_colbert)
        self._engine = SearchEngine(
            self._stores,
            self._lock,
            lambda texts: encode_colbert()(texts),  # type: ignore[misc]  # noqa: PLW0108 (late lookup)
        )

    def _colbert_store(self) -> ColbertStore | CompactColbertStore:
        if self.colbert_storage == "compact":
            return CompactColbertStore(self.colbert_dim)
        return ColbertStore(self.colbert_dim, self.colbert_dtype)

    # ------------------------------------------------------------------ what is stored
    @property
    def lexical_signal(self) -> str:
        """The score key of the lexical signal: ``"sparse"`` (M3's lexical weights) or ``"bm25"``."""
        return self.kind.lexical_signal

    def __len__(self) -> int:
        return len(self._stores.documents)

    def __contains__(self, id: object) -> bool:
        return id in self._stores.documents.row_of

    @property
    def ids(self) -> list[str]:
        """Ids of the stored documents, in insertion order (a replaced document counts as new)."""
        with self._lock:
            return self._stores.documents.live_ids()

    def __repr__(self) -> str:
        return (
            f"M3Index(n={len(self)}, lexical={self.lexical!r}, store_colbert={self.store_colbert}, "
            f"colbert_storage={self.colbert_storage!r}, dense_dtype={self.dense_dtype!r})"
        )

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held per representation (arrays only; texts and metadata not counted).

        Keys: ``dense``, ``sparse`` (M3's lexical weights, CSR + CSC), ``colbert`` (vectors, scales and
        offsets), ``bm25`` (term frequencies, CSR + CSC) and ``ann`` (the approximate dense stage's codes,
        ids and centroids, once built); 0 for what the index does not store. ``colbert_mapped`` is the
        part of ``colbert`` left in the index folder's files (``load(..., mmap=True)``): read on demand,
        not resident.
        """
        with self._lock:
            return self._stores.memory_bytes()

    @property
    def bm25_tokenizer(self) -> Literal["model", "word"]:
        """What BM25 counts: ``"word"`` (the word tokenizer's words) or ``"model"`` (the model's ids)."""
        return self._analysis.tokenizer

    @property
    def bm25_word_settings(self) -> dict[str, Any] | None:
        """The word tokenizer's stemmer and stop words (``WordTokenizer.config()``); None for model ids."""
        return self._analysis.word_settings

    @property
    def language(self) -> str | None:
        """The corpus language BM25's analyzer was chosen for.

        An ISO code, ``"mul"`` (mixed), ``"und"`` (undetermined), ``"auto"`` while no document was added
        (or when explicit word options made detection moot), or ``None`` (plain words, or an index saved
        before language detection).
        """
        return self._analysis.language

    @property
    def language_profile(self) -> LanguageProfile | None:
        """The languages detected on the first documents added (``None`` before, or when not detected)."""
        return self._analysis.profile

    @property
    def language_record(self) -> dict[str, Any] | None:
        """What a saved index records about its language (``None``: nothing, as before detection)."""
        return self._analysis.record

    @property
    def colbert_vectors(self) -> int:
        """How many ColBERT vectors are stored (deleted documents' included until a compaction)."""
        colbert = self._stores.colbert
        return 0 if colbert is None else colbert.n_vectors

    # ------------------------------------------------------------------ reading and deleting
    def get(self, ids: Sequence[str]) -> list[SearchHit]:
        """Stored documents by id, in the order asked (``score`` is NaN, ``scores`` empty).

        Raises:
            KeyError: an id is not stored (the message names it).
        """
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            return [self._stores.hit(row, math.nan) for row in self._stores.documents.rows_of(ids)]

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; all or nothing.

        Raises:
            KeyError: an id is not stored (the message names it); nothing is deleted then.
        """
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            self._stores.documents.delete(ids)
            self._stores.set_alive()
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        dead = self._stores.documents.dead_rows
        if dead >= 64 and dead * 2 >= self._stores.documents.n_rows:
            self.compact()

    def compact(self) -> None:
        """Drop the rows of deleted or replaced documents (insertion order is kept)."""
        with self._lock:
            keep = np.flatnonzero(self._stores.documents.alive)
            if len(keep) == self._stores.documents.n_rows:
                return
            self._stores.keep_rows(keep)

    # ------------------------------------------------------------------ compressed ColBERT
    def colbert_drift(self) -> float | None:
        """How much worse the compact codec fits the documents added since it was trained.

        The mean squared reconstruction error of the (pooled) ColBERT vectors added since training,
        over that of the training sample: about 1 while new documents resemble the old ones. Well
        above 1 (say 1.5: a codec trained on other text) calls for :meth:`retrain_colbert`. ``None``
        when the index is not ``colbert_storage="compact"``, the codec is not trained yet, or nothing
        was added since.

        Example:
            .. code-block:: python

                if (index.colbert_drift() or 1.0) > 1.5:
                    index.retrain_colbert()
        """
        with self._lock:
            store = self._stores.colbert
            return store.drift() if isinstance(store, CompactColbertStore) else None

    def retrain_colbert(self, *, seed: int = 0) -> None:
        """Train the compact ColBERT codec again and re-encode every stored document with it.

        Codes cannot give back the vectors they approximate, so every stored document's text is
        encoded again with the index's model (one encoding pass over the corpus, in batches, with a
        progress bar when ``show_progress``): a random sample of documents, enough for
        :data:`~m3_integrations.index.colbert_codecs.TRAIN_SAMPLE` pooled vectors, trains the new codec,
        then every document is encoded with it. Vectors given to :meth:`add_encoded` are recomputed
        from their texts. Holds the index's lock throughout; on an error nothing changes.

        Raises:
            ValueError: the index is not ``colbert_storage="compact"``, or it is empty.

        Example:
            .. code-block:: python

                index = M3Index(model, colbert_storage="compact")
                index.add(texts)
                index.retrain_colbert()
        """
        store = self._stores.colbert
        if not isinstance(store, CompactColbertStore):
            msg = f"retrain_colbert needs colbert_storage='compact', this index has {self.colbert_storage!r}"
            if not self.store_colbert:
                msg += " and stores no ColBERT vectors"
            raise ValueError(msg)
        with self._lock:
            texts = self._stores.documents.texts
            if not texts:
                msg = "the index is empty: there is nothing to train the ColBERT codec on"
                raise ValueError(msg)
            store.retrain(
                texts,
                self._encode_colbert,
                batch_size=max(1, self.batch_size or 64),
                show_progress=self.show_progress,
                seed=seed,
            )

    def _encode_colbert(self, texts: list[str]) -> list[np.ndarray]:
        """ColBERT vectors of passages, for an index that stores none (encoded at query time)."""
        return (
            self.model.encode_passages(
                texts,
                return_dense=False,
                return_sparse=False,
                return_colbert=True,
                batch_size=self.batch_size,
            ).colbert_vecs
            or []
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str], *, purge_deleted: bool = True) -> None:
        """Write the index to the folder ``path``, atomically: a crash at any moment keeps it loadable.

        ``path`` holds ``manifest.json`` (format version, model identity, dims, counts, dtypes, and the
        size and SHA-256 of every data file) and data folders ``v-<id>/`` with ``arrays.npz`` (plain
        numeric arrays), ``documents.json`` (ids, texts, metadata) and, for word BM25, ``bm25_vocab.json``.
        Nothing is pickled. A save writes a new data folder and switches ``manifest.json`` to it with
        one atomic rename; loads running meanwhile see the old or the new index, never a mix. Saves to one
        folder are serialised across threads and processes.

        Saving again to the folder this index was last saved to (or loaded from) writes only the rows
        added since (a new segment; the data already there stays). The whole index is written instead,
        compacted, when a document was deleted or replaced since (nothing of it stays on disk), another
        index saved there since, a row was rewritten (compaction, retraining), or segments pile up. See
        "Persistence format" and "Safety" in ``docs/engine.md``.

        Args:
            path: a new path, an empty folder, or a folder written by :meth:`save` (replaced).
            purge_deleted: ``False`` keeps deletes incremental too: the deleted rows are listed as
                tombstones and their data stays in the folder's older segments until a whole save
                (after :meth:`compact`, or when a quarter of the rows are deleted). For large indexes
                with frequent updates, where no deleted text must be purged at once.

        Raises:
            FileExistsError: ``path`` is something else (a folder with other files, a file, a symbolic
                link); nothing is touched then.
            TypeError: a metadata value is not JSON-serialisable (the message names the id), or
                ``purge_deleted`` is not a bool (nothing is written then).

        Example:
            .. code-block:: python

                index.save("my_index")
                index.save("my_index")  # replaces the index saved before
        """
        if not isinstance(purge_deleted, bool):
            msg = f"purge_deleted must be True or False, got {purge_deleted!r}"
            raise TypeError(msg)
        with self._lock:
            self._saved = persistence.save_index(
                self, self._stores, path, self._saved, purge_deleted=purge_deleted
            )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: M3Model, *, mmap: bool = False, **kwargs: Any
    ) -> M3Index:
        """Load an index written by :meth:`save` (or by the previous release), checking it against ``model``.

        The folder is untrusted input: every file is read once, checked against the manifest's size and
        SHA-256, and every value search relies on is validated; nothing is unpickled or followed outside
        the folder.

        Args:
            path: the folder.
            model: the model the index was built with (same identity and dimensions).
            mmap: leave the ColBERT vectors (or codes) in the folder's files, memory-mapped read-only:
                memory then holds their offsets (and the codec), and a query reads only its candidates'
                rows. Checked like the rest when loaded (sizes, SHA-256, values). Documents added later
                are held in memory; :meth:`compact` (and a save that compacts, after a delete) brings
                the kept rows into memory. The folder's data files must not be rewritten while the
                index is in use (saves never do: they write new data folders).
            **kwargs: ``show_progress``, ``batch_size``, ``ann``, ``ann_threshold`` and ``ann_nprobe`` for
                the loaded index (the approximate dense stage is not saved: it is rebuilt on the first
                search that needs it, or by :meth:`build_ann`).

        Raises:
            IndexNotFoundError: no index at ``path``.
            IndexLoadError: a missing, truncated, damaged or hostile file, an unknown format version, or
                a model whose identity or dimensions differ from the index's (message starting "model
                mismatch"); the message names the file.

        Example:
            .. code-block:: python

                index = M3Index.load("my_index", model=M3Model("BAAI/bge-m3"))
        """
        if not isinstance(mmap, bool):
            msg = f"mmap must be True or False, got {mmap!r}"
            raise TypeError(msg)
        contents = persistence.load_index(path, model, mmap=mmap)
        index = cls(model, **contents.settings, **kwargs)
        with index._lock:
            contents.install(index._stores)
            index._analysis.restore(contents.language, empty=len(index) == 0)
            index._install_calibration(contents.calibration)
            index._saved = contents.saved_state(path, index._stores)
        return index
