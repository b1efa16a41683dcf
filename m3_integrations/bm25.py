"""Okapi BM25 over a sparse inverted structure, with ``rank_bm25.BM25Okapi``'s exact semantics.

Term frequencies are kept in the index's sparse store (:mod:`m3_integrations.index.sparse_store`: a CSR
matrix, documents × terms, and a CSC copy, the inverted index: one posting list per term), so scoring a
query touches only the postings of its terms. The
corpus statistics (document count, average length, document frequencies) cover live rows only and are
recomputed after every change, so a deletion updates every idf as a rebuild would.

Scores, for a query with tokens ``q_1..q_m`` (repeats count) and a document ``d`` of ``|d|`` tokens::

    score(q, d) = Σ_j idf(q_j) · tf(q_j, d) · (k1 + 1) / (tf(q_j, d) + k1 · (1 - b + b · |d| / avgdl))
    idf(t)      = ln(N - n_t + 0.5) - ln(n_t + 0.5), and ε · mean(idf) where that is negative

as in ``rank_bm25.BM25Okapi`` (``k1=1.5, b=0.75, ε=0.25``; the mean runs over every term of the corpus).

Two tokenisers are offered: the model's subword tokenizer (token ids; language-agnostic, the right choice
for Korean, Chinese or Arabic) and :func:`word_tokenize` (lower-cased words, one-character tokens kept,
every CJK ideograph or kana its own token). :class:`WordTokenizer` adds optional stop-word removal,
Snowball stemming (English: "flows"/"flowing" → "flow"), which is what classic lexical collections such
as Cranfield reward, and CJK character bigrams (Japanese). :mod:`m3_integrations.language` picks these
per corpus language.

Example:
    >>> from m3_integrations.bm25 import BM25, word_tokenize
    >>> bm25 = BM25()
    >>> bm25.add([word_tokenize("the cat sat"), word_tokenize("the dog"), word_tokenize("a bird")])
    >>> [round(s, 3) for s in bm25.get_scores(word_tokenize("cat")).tolist()]
    [0.453, 0.0, 0.0]
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from m3_integrations.index.sparse_store import SparseStore

__all__ = ["BM25", "CJK_MODES", "WordTokenizer", "cjk_bigrams", "stemmer_languages", "word_tokenize"]

# Han ideographs, kana, CJK compatibility ideographs and extension A: written without spaces, so each
# character is a token; every other run of letters/digits (Hangul included) is one word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W_])+")


_CJK_RUN_RE = re.compile(rf"[{_CJK}]{{2,}}")
CJK_MODES = ("chars", "chars+bigrams")


def word_tokenize(text: str) -> list[str]:
    """Lower-cased words (one-character words kept); every CJK ideograph or kana is its own token.

    Example:
        >>> word_tokenize("A BGE-M3 test: 北京是首都, 서울은 수도")
        ['a', 'bge', 'm3', 'test', '北', '京', '是', '首', '都', '서울은', '수도']
    """
    return _WORD_RE.findall(text.lower())


def cjk_bigrams(text: str) -> list[str]:
    """The overlapping character pairs of every run of CJK ideographs and kana, in text order.

    Japanese is written without spaces and its words are mostly two or more characters: pairs of
    neighbouring characters match words far more often than single characters do (which match almost
    any passage), without a dictionary-based word splitter.

    Example:
        >>> cjk_bigrams("東京都 and 大阪")
        ['東京', '京都', '大阪']
    """
    return [run[i : i + 2] for run in _CJK_RUN_RE.findall(text) for i in range(len(run) - 1)]


# Function words of English, lower-cased: frequent enough that their BM25 contribution is noise, and
# Snowball leaves most of them unchanged, so they would otherwise survive stemming.
ENGLISH_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself neither no nor not of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these they
    this those through to too under until up upon very was we were what when where which while who whom
    whose why will with would you your yours yourself yourselves
    """.split()
)
_STOPWORD_LISTS = {"english": ENGLISH_STOPWORDS}


def stemmer_languages() -> list[str]:
    """The Snowball languages the installed stemmer supports (needs ``m3-integrations[stemming]``).

    Example:
        >>> "english" in stemmer_languages()
        True
    """
    return sorted(_stemmer_module()[0]())


def _stemmer_module() -> tuple[Callable[[], Iterable[str]], Callable[[str], Any]]:
    """``(algorithms, factory)`` of PyStemmer, else of the pure-Python snowballstemmer (same API)."""
    try:
        import Stemmer  # PyStemmer: C libstemmer, about 10x faster

        return Stemmer.algorithms, Stemmer.Stemmer
    except ImportError:
        pass
    try:
        import snowballstemmer

        return snowballstemmer.algorithms, snowballstemmer.stemmer
    except ImportError as err:
        msg = (
            "stemming BM25 words needs PyStemmer (or snowballstemmer): "
            'pip install "m3-integrations[stemming]"'
        )
        raise ImportError(msg) from err


class WordTokenizer:
    """:func:`word_tokenize`, then optionally drop stop words and Snowball-stem what is left.

    Stop words are removed before stemming and compared lower-cased. The configuration round-trips
    through :meth:`config` (plain JSON), which is how a saved index remembers it.

    Args:
        stemmer: a Snowball language (``"english"``, ``"german"``, … see :func:`stemmer_languages`),
            or ``None`` for no stemming. Needs PyStemmer (``pip install "m3-integrations[stemming]"``).
        stopwords: ``"english"`` (a built-in list of English function words), your own words, or
            ``None`` to keep every word.
        cjk: ``"chars"`` (each CJK character one token, as :func:`word_tokenize`) or
            ``"chars+bigrams"`` (also :func:`cjk_bigrams`: the right tokens for Japanese).

    Example:
        >>> WordTokenizer(stemmer="english", stopwords="english")("The flows of the rivers")
        ['flow', 'river']
    """

    def __init__(
        self,
        *,
        stemmer: str | None = None,
        stopwords: str | Iterable[str] | None = None,
        cjk: str = "chars",
    ) -> None:
        if cjk not in CJK_MODES:
            msg = f"cjk must be one of {', '.join(CJK_MODES)}, got {cjk!r}"
            raise ValueError(msg)
        self.cjk = cjk
        self.stemmer = stemmer
        self._stem: Callable[[list[str]], list[str]] | None = None
        if stemmer is not None:
            if not isinstance(stemmer, str):
                msg = f"stemmer must be a Snowball language name or None, got {type(stemmer).__name__}"
                raise TypeError(msg)
            algorithms, factory = _stemmer_module()
            available = sorted(algorithms())
            if stemmer not in available:
                msg = f"unknown stemmer language {stemmer!r}; available: {', '.join(available)}"
                raise ValueError(msg)
            instance = factory(stemmer)
            lock = threading.Lock()  # PyStemmer's stemmer objects are not thread-safe

            def stem(words: list[str]) -> list[str]:
                with lock:
                    return list(instance.stemWords(words))

            self._stem = stem
        if stopwords is None:
            self.stopwords: frozenset[str] = frozenset()
        elif isinstance(stopwords, str):
            if stopwords not in _STOPWORD_LISTS:
                msg = (
                    f"unknown stop-word list {stopwords!r}; built in: {', '.join(sorted(_STOPWORD_LISTS))}"
                    " (or pass your own words)"
                )
                raise ValueError(msg)
            self.stopwords = _STOPWORD_LISTS[stopwords]
        else:
            words = list(stopwords) if isinstance(stopwords, Iterable) else [stopwords]
            if not all(isinstance(w, str) for w in words):
                msg = "stopwords must be strings"
                raise TypeError(msg)
            self.stopwords = frozenset(w.lower() for w in words)

    def __call__(self, text: str) -> list[str]:
        """The BM25 tokens of ``text``."""
        words = word_tokenize(text)
        if self.stopwords:
            words = [w for w in words if w not in self.stopwords]
        if self._stem is not None and words:
            words = self._stem(words)
        if self.cjk == "chars+bigrams":
            words += cjk_bigrams(text.lower())
        return words

    def config(self) -> dict[str, Any]:
        """Plain JSON ``{"stemmer", "stopwords"[, "cjk"]}``; ``WordTokenizer(**config)`` rebuilds it.

        ``cjk`` is written only when it is not the default, so that indexes read by earlier releases
        keep the keys those know.
        """
        config: dict[str, Any] = {
            "stemmer": self.stemmer,
            "stopwords": sorted(self.stopwords) if self.stopwords else None,
        }
        if self.cjk != "chars":
            config["cjk"] = self.cjk
        return config

    def __repr__(self) -> str:
        stopwords = f"{len(self.stopwords)} words"
        return f"WordTokenizer(stemmer={self.stemmer!r}, stopwords={stopwords}, cjk={self.cjk!r})"


class BM25:
    """Incremental Okapi BM25 on a sparse term-frequency matrix (one row per document).

    Tokens are either integer ids below ``num_columns`` (the model tokenizer's ids, used as columns
    directly) or any hashable (words), mapped to columns by a vocabulary that grows as documents arrive.
    The term frequencies live in a :class:`~m3_integrations.index.sparse_store.SparseStore` (the same
    store as M3's lexical weights); this class adds the vocabulary, the document lengths, the corpus
    statistics and the formula.

    Args:
        k1: term-frequency saturation.
        b: length normalisation.
        epsilon: floor for negative idfs, as a fraction of the mean idf.
        num_columns: the id space of integer tokens; ``None`` for a growing word vocabulary.
    """

    def __init__(
        self, *, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25, num_columns: int | None = None
    ) -> None:
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.num_columns = num_columns
        self.vocab: dict[Hashable, int] = {}
        self.store = SparseStore(self.width)
        self._doc_len = np.zeros(0, dtype=np.float64)
        self._stats: tuple[float, float, np.ndarray] | None = None  # (N, avgdl, idf)

    # ------------------------------------------------------------------ building
    def __len__(self) -> int:
        return len(self._doc_len)

    @property
    def width(self) -> int:
        """The number of term columns."""
        return self.num_columns if self.num_columns is not None else len(self.vocab)

    def columns(self, tokens: Sequence[Hashable], *, grow: bool = False) -> np.ndarray:
        """Map tokens to column ids; unknown tokens are dropped unless ``grow`` adds them."""
        if self.num_columns is not None:
            ids = np.asarray(tokens, dtype=np.int64).ravel()
            return ids[(ids >= 0) & (ids < self.num_columns)]
        out = []
        for token in tokens:
            column = self.vocab.get(token)
            if column is None:
                if not grow:
                    continue
                column = self.vocab[token] = len(self.vocab)
            out.append(column)
        return np.asarray(out, dtype=np.int64)

    def add(self, token_lists: Sequence[Sequence[Hashable]]) -> None:
        """Append one row per document (its tokens, repeats counted)."""
        indptr = [0]
        indices: list[np.ndarray] = []
        data: list[np.ndarray] = []
        lengths = np.empty(len(token_lists), dtype=np.float64)
        for i, tokens in enumerate(token_lists):
            cols = self.columns(tokens, grow=True)
            lengths[i] = len(tokens)
            uniq, counts = np.unique(cols, return_counts=True)
            indices.append(uniq)
            data.append(counts.astype(np.float32))
            indptr.append(indptr[-1] + len(uniq))
        self.store.set_width(self.width)
        chunk = sp.csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0, np.float32),
                np.concatenate(indices) if indices else np.zeros(0, np.int64),
                np.asarray(indptr, dtype=np.int64),
            ),
            shape=(len(token_lists), self.store.width),
        )
        self._append(chunk, lengths)

    def add_matrix(self, term_frequencies: sp.spmatrix) -> None:
        """Append rows given as a term-frequency matrix ``(n, num_columns)`` (integer-token mode only)."""
        if self.num_columns is None:
            msg = "add_matrix needs integer tokens (num_columns); use add() for words"
            raise ValueError(msg)
        chunk = sp.csr_matrix(term_frequencies, dtype=np.float32)
        if chunk.shape[1] != self.num_columns:
            msg = f"term-frequency matrix has {chunk.shape[1]} columns, expected {self.num_columns}"
            raise ValueError(msg)
        self._append(chunk, np.asarray(chunk.sum(axis=1), dtype=np.float64).ravel())

    def _append(self, chunk: sp.csr_matrix, lengths: np.ndarray) -> None:
        self.store.append(chunk)
        self._doc_len = np.concatenate([self._doc_len, lengths])
        self._stats = None

    def set_alive(self, alive: np.ndarray) -> None:
        """Which rows count in the corpus statistics (the owner's tombstones)."""
        alive = np.asarray(alive, dtype=bool)
        if alive.shape != self.store.alive.shape:
            msg = f"alive mask has {alive.shape[0]} rows, the BM25 matrix {len(self.store.alive)}"
            raise ValueError(msg)
        self.store.set_alive(alive)
        self._stats = None

    def keep_rows(self, rows: np.ndarray) -> None:
        """Compact: keep only ``rows`` (in that order), and forget the words no live row uses any more."""
        self.store.keep_rows(rows)
        self._doc_len = self._doc_len[rows]
        self._stats = None
        self.drop_unused_terms()

    def words(self) -> list[Hashable]:
        """The word vocabulary in column order (empty for integer tokens)."""
        words: list[Hashable] = [None] * len(self.vocab)
        for word, column in self.vocab.items():
            words[column] = word
        return words

    def drop_unused_terms(self) -> None:
        """Forget the words that no live row uses and renumber the columns (word vocabularies only).

        Deleted documents' words would otherwise stay in the vocabulary, in memory and in saved indexes.
        Columns keep their order; entries of dead rows in dropped columns go with them. Scores do not
        change: a word no live row holds has no document frequency, so it takes no part in the idf mean.

        Example:
            >>> bm25 = BM25()
            >>> bm25.add([["red", "apple"], ["secret", "word"], ["red", "pear"]])
            >>> bm25.set_alive(np.array([True, False, True]))
            >>> bm25.drop_unused_terms()
            >>> bm25.words()
            ['red', 'apple', 'pear']
        """
        if self.num_columns is not None:
            return
        used = self.store.document_frequency()[: self.width] > 0
        if used.all():
            return
        words = self.words()
        self.vocab = {word: i for i, word in enumerate(w for w, u in zip(words, used, strict=True) if u)}
        self.store.keep_columns(used)
        self._stats = None

    def matrix(self) -> sp.csr_matrix:
        """The term-frequency matrix ``(n_docs, width)`` (CSR, float32 counts)."""
        return self.store.matrix()

    def stats(self) -> tuple[float, float, np.ndarray]:
        """``(N, avgdl, idf per column)`` over the live rows, rank_bm25's idf with its ε floor."""
        if self._stats is None:
            alive = self.store.alive
            n_docs = float(alive.sum())
            avgdl = float(self._doc_len[alive].sum() / n_docs) if n_docs else 0.0
            df = self.store.document_frequency()
            present = df > 0
            idf = np.zeros(len(df), dtype=np.float64)
            idf[present] = np.log(n_docs - df[present] + 0.5) - np.log(df[present] + 0.5)
            if present.any():
                average_idf = float(idf[present].mean())
                idf[present & (idf < 0)] = self.epsilon * average_idf
            self._stats = (n_docs, avgdl, idf)
        return self._stats

    def coverage(self, query_tokens: Sequence[Hashable]) -> float:
        """The share of the query's distinct tokens that occur in at least one live row (0 if none).

        Example:
            >>> bm25 = BM25()
            >>> bm25.add([["red", "apple"], ["green", "pear"]])
            >>> bm25.coverage(["red", "pear", "kiwi", "red"])  # kiwi is unknown; red counts once
            0.6666666666666666

        Raises:
            TypeError: the tokens are a string or None instead of a token list.
        """
        if query_tokens is None or isinstance(query_tokens, str | bytes):
            msg = f"coverage needs a list of query tokens, got {type(query_tokens).__name__}"
            raise TypeError(msg)
        distinct = list(dict.fromkeys(query_tokens))
        return self.store.coverage(self.columns(distinct), len(distinct))

    # ------------------------------------------------------------------ scoring
    def get_scores(self, query_tokens: Sequence[Hashable]) -> np.ndarray:
        """BM25 score of every row (dead rows included; the owner masks them), float64 ``(n_docs,)``."""
        n_rows = len(self._doc_len)
        scores = np.zeros(n_rows, dtype=np.float64)
        cols = self.columns(query_tokens)
        if cols.size == 0 or n_rows == 0:
            return scores
        _, avgdl, idf = self.stats()
        if avgdl <= 0:
            return scores
        uniq, counts = np.unique(cols, return_counts=True)
        rows, col_of_entry, tf = self.store.postings(uniq)
        if len(rows) == 0:
            return scores
        contribution = self._term_scores(
            idf[uniq][col_of_entry] * counts[col_of_entry], tf, self._doc_len[rows]
        )
        return np.bincount(rows, weights=contribution, minlength=n_rows)

    def score_documents(
        self, query_tokens: Sequence[Hashable], documents: Sequence[Sequence[Hashable]]
    ) -> np.ndarray:
        """BM25 scores of documents that are not in the index, under the index's corpus statistics.

        Each document (its tokens) is scored as if it were one more row, without changing ``N``, the
        average length or the idfs: what :meth:`M3Index.calibrate <m3_integrations.M3Index.calibrate>`
        needs to score a passage with one sentence taken out. Tokens the index has never seen score 0.

        Example:
            >>> bm25 = BM25()
            >>> bm25.add([["red", "apple"], ["green", "pear"], ["red", "pear"]])
            >>> stored = bm25.get_scores(["apple"])[0]
            >>> bool(bm25.score_documents(["apple"], [["red", "apple"]])[0] == stored)
            True

        Returns:
            float64 ``(len(documents),)``.
        """
        scores = np.zeros(len(documents), dtype=np.float64)
        cols = self.columns(query_tokens)
        if cols.size == 0 or len(self._doc_len) == 0:
            return scores
        _, avgdl, idf = self.stats()
        if avgdl <= 0:
            return scores
        query_cols, query_counts = np.unique(cols, return_counts=True)
        weight_of = dict(zip(query_cols.tolist(), (idf[query_cols] * query_counts).tolist(), strict=True))
        for i, tokens in enumerate(documents):
            doc_cols, tf = np.unique(self.columns(tokens), return_counts=True)
            shared = np.isin(doc_cols, query_cols)
            if not shared.any():
                continue
            weights = np.asarray([weight_of[c] for c in doc_cols[shared].tolist()], dtype=np.float64)
            lengths = np.full(int(shared.sum()), float(len(tokens)))
            scores[i] = self._term_scores(weights, tf[shared], lengths).sum()
        return scores

    def _term_scores(self, weights: np.ndarray, tf: np.ndarray, doc_len: np.ndarray) -> np.ndarray:
        """Okapi's per-term score ``w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))``.

        ``weights`` are the query terms' idfs times their counts in the query (stats() must be set).
        """
        _, avgdl, _ = self.stats()
        tf = np.asarray(tf, dtype=np.float64)
        norm = self.k1 * (1.0 - self.b + self.b * doc_len / avgdl)
        return weights * tf * (self.k1 + 1.0) / (tf + norm)

    # ------------------------------------------------------------------ persistence
    def to_arrays(self, first_row: int = 0) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (no pickled objects), of the rows from ``first_row`` on."""
        return {**self.store.to_arrays("bm25", first_row), "bm25_doc_len": self._doc_len[first_row:]}

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        *,
        vocab: Sequence[Hashable] | None,
        num_columns: int | None,
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
    ) -> BM25:
        """Inverse of :meth:`to_arrays` (``vocab``: the word list in column order, for word tokens)."""
        bm25 = cls(k1=k1, b=b, epsilon=epsilon, num_columns=num_columns)
        if vocab is not None:
            bm25.vocab = {token: i for i, token in enumerate(vocab)}
        doc_len = np.asarray(arrays["bm25_doc_len"], dtype=np.float64)
        bm25.store.set_width(bm25.width)
        matrix = sp.csr_matrix(
            (arrays["bm25_data"], arrays["bm25_indices"], arrays["bm25_indptr"]),
            shape=(len(doc_len), bm25.store.width),
        )
        matrix.check_format(full_check=True)
        bm25.store.restore(matrix)
        bm25._doc_len = doc_len
        return bm25
