"""How :class:`~m3_integrations.M3Index` makes BM25 tokens: words or the model's ids, and the analyzer.

The corpus language (detected on the first documents added with ``language="auto"``, or given) picks
the analyzer (:func:`m3_integrations.language.analyzer_for`): stemming and stop words, CJK bigrams, or
the model's subword ids. Explicit word options win over the language's. ``docs/engine.md`` ("The corpus
language picks the analyzer") has the measurements behind each choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from m3_integrations.bm25 import BM25, WordTokenizer
from m3_integrations.language import Analyzer, LanguageProfile, analyzer_for, detect_languages

if TYPE_CHECKING:
    from m3_integrations.model import M3Model

logger = logging.getLogger(__name__)

__all__ = ["BM25Analysis", "check_bm25_options", "fixed_analyzer"]


def check_bm25_options(
    tokenizer: str,
    stemmer: str | None,
    stopwords: str | Sequence[str] | None,
    cjk: str | None,
) -> bool:
    """Check ``M3Index``'s ``bm25_tokenizer`` against its word options; whether any word option is given.

    Raises:
        ValueError: an unknown tokenizer, or word options with ``bm25_tokenizer="model"``.
    """
    if tokenizer not in ("auto", "model", "word"):
        msg = f"bm25_tokenizer must be 'auto', 'model' or 'word', got {tokenizer!r}"
        raise ValueError(msg)
    word_options = stemmer is not None or stopwords is not None or cjk is not None
    if tokenizer == "model" and word_options:
        msg = "bm25_stemmer, bm25_stopwords and bm25_cjk apply to words: use them with bm25_tokenizer='word'"
        raise ValueError(msg)
    return word_options


def fixed_analyzer(language: str | None) -> Analyzer | None:
    """The analyzer of an explicitly given language; ``None`` for ``"auto"`` (decided later) or ``None``.

    Raises:
        TypeError: ``language`` is not a string.
        ValueError: a malformed language code.
        ImportError: the language needs the ``language`` or ``stemming`` extra.
    """
    if language is None or language == "auto":
        return None
    if not isinstance(language, str):
        msg = f"language must be 'auto', an ISO 639-1 code or None, got {language!r}"
        raise TypeError(msg)
    return analyzer_for(language)


class BM25Analysis:
    """The BM25 tokenization of one index: the tokenizer, its word analyzer and the corpus language.

    Built from :class:`~m3_integrations.M3Index`'s already checked options (:func:`check_bm25_options`,
    :func:`fixed_analyzer`) before the index's BM25 statistics (:meth:`new_bm25`), which it never
    touches: :meth:`settle` says when the index must start a BM25 over the model's ids instead, which
    is only allowed while no document is stored.
    """

    def __init__(
        self,
        tokenizer: Literal["auto", "model", "word"],
        *,
        bm25_is_lexical: bool,
        stemmer: str | None,
        stopwords: str | Sequence[str] | None,
        cjk: Literal["chars", "chars+bigrams"] | None,
        language: str | None,
        analyzer: Analyzer | None,
    ) -> None:
        word_options = stemmer is not None or stopwords is not None or cjk is not None
        # Whether the language may still switch BM25 to the model's subword ids (Thai...).
        self._tokenizer_open = tokenizer == "auto" and not word_options
        if tokenizer == "auto":
            tokenizer = "word" if bm25_is_lexical or word_options or analyzer is not None else "model"
        self.tokenizer: Literal["model", "word"] = tokenizer
        self.word_tokenizer: WordTokenizer | None = None
        if tokenizer == "word":
            self.word_tokenizer = WordTokenizer(stemmer=stemmer, stopwords=stopwords, cjk=cjk or "chars")
        self.setting = language
        self.profile: LanguageProfile | None = None
        # "auto" decides at the first add; a word index with explicit word options keeps them.
        self.pending = language == "auto" and tokenizer == "word" and not word_options
        if analyzer is not None and tokenizer == "word" and not word_options:
            self.apply(analyzer)  # a fixed language, where no explicit word option overrides it

    def new_bm25(self, vocab_size: int) -> BM25:
        """Empty BM25 statistics for this tokenizer (model ids: one column per vocabulary entry)."""
        return BM25(num_columns=vocab_size if self.tokenizer == "model" else None)

    def tokens(self, texts: Sequence[str], model: M3Model) -> list[list[Any]]:
        """The BM25 tokens of each text: words (after stop words and stemmer) or the model's ids."""
        if self.word_tokenizer is not None:
            return [self.word_tokenizer(t) for t in texts]
        return model.tokenize(list(texts), add_special_tokens=False).input_ids

    @property
    def word_settings(self) -> dict[str, Any] | None:
        """The word tokenizer's stemmer and stop words (``WordTokenizer.config()``); None for model ids."""
        return self.word_tokenizer.config() if self.word_tokenizer is not None else None

    @property
    def language(self) -> str | None:
        """The detected language when there is one, else the setting (see ``M3Index.language``)."""
        if self.profile is not None:
            return self.profile.primary
        return self.setting

    @property
    def record(self) -> dict[str, Any] | None:
        """What a saved index records about its language (``None``: nothing, as before detection)."""
        if self.setting is None and self.profile is None:
            return None
        profile = self.profile.to_json() if self.profile is not None else None
        return {"setting": self.setting, "profile": profile}

    def apply(self, analyzer: Analyzer) -> bool:
        """Count ``analyzer``'s tokens from now on; True when BM25 must switch to the model's ids."""
        if analyzer.tokenizer == "model" and self._tokenizer_open:
            self.tokenizer = "model"
            self.word_tokenizer = None
            return True
        if self.tokenizer == "word":
            self.word_tokenizer = WordTokenizer(
                stemmer=analyzer.stemmer, stopwords=analyzer.stopwords, cjk=analyzer.cjk
            )
        return False

    def settle(self, texts: Sequence[str]) -> bool:
        """Detect the language on the first documents and fix the analyzer (once, while pending).

        Returns:
            True when BM25 must switch to the model's ids (as :meth:`apply`).
        """
        if not self.pending:
            return False
        self.pending = False
        profile = detect_languages(texts)
        self.profile = profile
        switched = self.apply(analyzer_for(profile.primary, strict=False))
        logger.info(
            "corpus language %s (%s): BM25 over %s",
            profile.primary,
            ", ".join(f"{code} {share:.0%}" for code, share in list(profile.shares.items())[:3]),
            self.word_settings if self.tokenizer == "word" else "the model's subword ids",
        )
        return switched

    def restore(self, record: dict[str, Any] | None, *, empty: bool) -> None:
        """A loaded index's language record (its analyzer comes from the recorded BM25 settings)."""
        self.pending = False
        if record is None:
            self.setting = None
            return
        self.setting = record["setting"]
        profile = record["profile"]
        self.profile = None if profile is None else LanguageProfile.from_json(profile)
        # Saved before any document was added: detect on the first add, as the original would.
        self.pending = record["setting"] == "auto" and profile is None and self.tokenizer == "word" and empty
