"""The language of a corpus, read from its text, and the BM25 analyzer each language gets.

:func:`detect_languages` gives the share of each language in a sample of texts. Scripts that name their
language decide alone (Hangul: Korean; kana: Japanese; Han without kana: Chinese; Thai, Lao, Khmer,
Myanmar); every other text is classified by ``py3langid`` (``pip install "m3-integrations[language]"``:
a naive Bayes model over byte n-grams for 97 languages, shipped inside the package as plain arrays,
deterministic and offline). Without it those texts count as undetermined (``"und"``).

Why a package rather than stop-word hits of our own: a corpus language must be told apart among dozens
of Latin-script languages (Finnish, Indonesian, Swahili, Dutch...), which function-word counts do poorly
on short passages, while an n-gram model is small, fast and already trained; scripts are only used where
they settle the question by themselves.

:func:`analyzer_for` maps a language to the tokens BM25 counts (:class:`Analyzer`):

- a language with a Snowball stemmer (English, German, Finnish, Indonesian, Russian, Arabic, Hindi...):
  lower-cased words, stop words removed where ``bm25s`` has a list for the language (the short lists
  LlamaIndex's BM25 retriever uses; ``pip install "m3-integrations[language]"``), then stemmed;
- Chinese and Korean: words as :func:`~m3_integrations.bm25.word_tokenize` makes them (each Han character
  a token; Hangul words whole);
- Japanese: each kana/kanji character and the overlapping character bigrams of each run (on JSQuAD,
  BM25 alone: nDCG@10 .939, against .900 for single characters and .929 for bigrams alone;
  ``docs/evaluation.md``);
- Thai, Lao, Khmer and Burmese, written without spaces between words, and the Indic scripts (Bengali,
  Telugu, Hindi, Tamil...), whose vowel signs are combining marks that the word tokenizer cuts words at:
  the model's subword ids;
- anything else, undetermined or mixed: plain lower-cased words (what every index used before).

A corpus is **mixed** when no language holds :data:`PRIMARY_SHARE` of the sample: it then gets plain
words, which favour no language, and the shares are recorded so that the choice can be read back.

Example:
    >>> from m3_integrations.language import analyzer_for, detect_languages
    >>> detect_languages(["서울은 한국의 수도이다.", "부산은 항구 도시이다."]).primary
    'ko'
    >>> analyzer_for("ja").cjk, analyzer_for("th").tokenizer
    ('chars+bigrams', 'model')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from m3_integrations._utils import import_optional

logger = logging.getLogger(__name__)

__all__ = [
    "MIXED",
    "PRIMARY_SHARE",
    "SNOWBALL_LANGUAGES",
    "UNDETERMINED",
    "Analyzer",
    "LanguageProfile",
    "analyzer_for",
    "detect_languages",
    "stopword_list",
]

UNDETERMINED = "und"  # ISO 639-2's code for "undetermined"
MIXED = "mul"  # ISO 639-2's code for "multiple languages"
# The share of the sampled text one language needs for the corpus to count as written in it.
PRIMARY_SHARE = 0.8
# How many texts (evenly spaced, so the same corpus always gives the same sample) and characters of each.
SAMPLE_TEXTS = 200
SAMPLE_CHARS = 1000

# ISO 639-1 code → Snowball stemmer name (the languages PyStemmer and snowballstemmer both have). Hindi,
# Nepali and Tamil get the model's subwords all the same (SUBWORD_LANGUAGES): stemming needs whole words.
SNOWBALL_LANGUAGES: dict[str, str] = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}
# ISO code → the name of bm25s's stop-word list (bm25s.stopwords.STOPWORDS_<NAME>).
_BM25S_STOPWORDS = {
    "da": "DANISH",
    "de": "GERMAN",
    "en": "EN",
    "es": "SPANISH",
    "fr": "FRENCH",
    "it": "ITALIAN",
    "nb": "NORWEGIAN",
    "nl": "DUTCH",
    "nn": "NORWEGIAN",
    "no": "NORWEGIAN",
    "pt": "PORTUGUESE",
    "ru": "RUSSIAN",
    "sv": "SWEDISH",
    "tr": "TURKISH",
}
# The model's subwords are the tokens where word splitting fails: scripts written without spaces between
# words (Thai, Lao, Khmer, Burmese), and the Indic abugidas, whose vowel signs and viramas are combining
# marks that word_tokenize cuts words at (TyDi QA, BM25 alone, nDCG@10 over such fragments against e5's
# subwords: Bengali .758 vs .919, Telugu .509 vs .802).
SUBWORD_LANGUAGES = frozenset(
    {"th", "lo", "km", "my", "bn", "te", "hi", "ne", "ta", "mr", "gu", "kn", "ml", "pa", "si", "or", "as"}
)

# Scripts that name their language. Han counts as Chinese only without kana (Japanese mixes both).
_SCRIPTS = {
    "ko": re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]"),
    "kana": re.compile("[\u3040-\u30ff]"),
    "han": re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "th": re.compile("[\u0e00-\u0e7f]"),
    "lo": re.compile("[\u0e80-\u0eff]"),
    "km": re.compile("[\u1780-\u17ff]"),
    "my": re.compile("[\u1000-\u109f]"),
}
_LETTER = re.compile(r"[^\W\d_]")
_SCRIPT_SHARE = 0.3  # a text whose letters are at least this share of one such script is in its language
_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class LanguageProfile:
    """The languages of a sample of texts.

    Attributes:
        shares: language code → share of the sampled characters (sums to 1 when anything was sampled).
        primary: the corpus language (a code holding at least :data:`PRIMARY_SHARE`), :data:`MIXED` when
            none does, or :data:`UNDETERMINED` when nothing could be classified.
        sampled: how many texts were read.
    """

    shares: Mapping[str, float] = field(default_factory=dict)
    primary: str = UNDETERMINED
    sampled: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``{"primary", "shares", "sampled"}``), as a saved index records it."""
        return {"primary": self.primary, "shares": dict(self.shares), "sampled": self.sampled}

    @classmethod
    def from_json(cls, value: Any, *, label: str = "language profile") -> LanguageProfile:
        """Inverse of :meth:`to_json`, checking every value (it comes from an index folder).

        Raises:
            ValueError: a value of the wrong type or range (the message starts with ``label``).
        """
        if not isinstance(value, dict) or set(value) != {"primary", "shares", "sampled"}:
            msg = f"{label}: expected {{'primary', 'shares', 'sampled'}}, got {value!r}"
            raise ValueError(msg)
        primary, shares, sampled = value["primary"], value["shares"], value["sampled"]
        if not isinstance(primary, str) or not _CODE.match(primary):
            msg = f"{label}: primary must be a language code, got {primary!r}"
            raise ValueError(msg)
        if (
            not isinstance(shares, dict)
            or not all(isinstance(k, str) and _CODE.match(k) for k in shares)
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
                for v in shares.values()
            )
        ):
            msg = f"{label}: shares must map language codes to shares in [0, 1], got {shares!r}"
            raise ValueError(msg)
        if not isinstance(sampled, int) or isinstance(sampled, bool) or sampled < 0:
            msg = f"{label}: sampled must be a count, got {sampled!r}"
            raise ValueError(msg)
        return cls({k: float(v) for k, v in shares.items()}, primary, sampled)


def _script_language(text: str) -> str | None:
    """The language a text's script names, or None when its letters are mostly in other scripts."""
    letters = len(_LETTER.findall(text))
    if not letters:
        return None
    counts = {name: len(pattern.findall(text)) for name, pattern in _SCRIPTS.items()}
    if counts["kana"] and counts["kana"] + counts["han"] >= _SCRIPT_SHARE * letters:
        return "ja"
    if counts["han"] >= _SCRIPT_SHARE * letters:
        return "zh"
    for name in ("ko", "th", "lo", "km", "my"):
        if counts[name] >= _SCRIPT_SHARE * letters:
            return name
    return None


def _classifier() -> Any | None:
    try:
        return import_optional("py3langid", extra="language")
    except ImportError:
        return None


def detect_languages(
    texts: Sequence[str], *, sample: int = SAMPLE_TEXTS, max_chars: int = SAMPLE_CHARS
) -> LanguageProfile:
    """The languages of ``texts``: each of ``sample`` evenly spaced texts votes with its length.

    Deterministic (no random sample, no model state): the same texts give the same profile. Only the
    first ``max_chars`` characters of a text are read.

    Args:
        texts: the corpus (or the first batch of it).
        sample: how many texts to read at most.
        max_chars: how many characters of each.

    Returns:
        The shares and the primary language (see :class:`LanguageProfile`).

    Example:
        >>> profile = detect_languages(["東京は日本の首都です。", "大阪は商業の町です。"])
        >>> profile.primary, profile.shares
        ('ja', {'ja': 1.0})
    """
    if sample <= 0 or max_chars <= 0:
        msg = f"sample and max_chars must be positive, got {sample} and {max_chars}"
        raise ValueError(msg)
    n = len(texts)
    picks = sorted({i * n // sample for i in range(sample)}) if n > sample else range(n)
    weights: dict[str, float] = {}
    classifier = None
    sampled = 0
    for i in picks:
        text = texts[i][:max_chars]
        if not text.strip():
            continue
        sampled += 1
        language = _script_language(text)
        if language is None:
            if classifier is None:
                classifier = _classifier() or False
            language = str(classifier.classify(text)[0]) if classifier else UNDETERMINED
        weights[language] = weights.get(language, 0.0) + len(text)
    total = sum(weights.values())
    if not total:
        return LanguageProfile({}, UNDETERMINED, sampled)
    shares = {
        code: weight / total for code, weight in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))
    }
    top, share = next(iter(shares.items()))
    primary = top if share >= PRIMARY_SHARE else MIXED
    if classifier is False and primary == UNDETERMINED:
        logger.info('corpus language undetermined: pip install "m3-integrations[language]" to detect it')
    return LanguageProfile(shares, primary, sampled)


def stopword_list(language: str) -> list[str] | None:
    """bm25s's stop words for ``language`` (an ISO code), or None where it has no list.

    Raises:
        ImportError: bm25s is not installed (``pip install "m3-integrations[language]"``).
    """
    name = _BM25S_STOPWORDS.get(language)
    if name is None:
        return None
    module = import_optional("bm25s.stopwords", extra="language")
    return sorted(set(getattr(module, f"STOPWORDS_{name}")))


@dataclass(frozen=True)
class Analyzer:
    """The tokens BM25 counts for one language (what :func:`analyzer_for` returns).

    Attributes:
        language: the code it was made for (:data:`MIXED` or :data:`UNDETERMINED` for plain words).
        tokenizer: ``"word"`` (lower-cased words) or ``"model"`` (the model's subword ids).
        stemmer: a Snowball language name, or None.
        stopwords: the stop words left out, or None.
        cjk: ``"chars"`` (each CJK character a token) or ``"chars+bigrams"`` (each character, and the
            overlapping character pairs of each run).
    """

    language: str
    tokenizer: Literal["word", "model"] = "word"
    stemmer: str | None = None
    stopwords: tuple[str, ...] | None = None
    cjk: Literal["chars", "chars+bigrams"] = "chars"


def analyzer_for(language: str, *, strict: bool = True) -> Analyzer:
    """The BM25 analyzer of ``language`` (an ISO 639-1 code, :data:`MIXED` or :data:`UNDETERMINED`).

    Args:
        language: the corpus language.
        strict: raise when stemming or stop words need a package that is not installed; with False
            (an automatic choice), fall back to plain words and log a warning.

    Raises:
        ValueError: ``language`` is not a lower-case ISO code.
        ImportError: with ``strict``, PyStemmer or bm25s missing for a language that uses them.

    Example:
        >>> a = analyzer_for("en")
        >>> a.stemmer, "the" in a.stopwords
        ('english', True)
        >>> analyzer_for("sw")  # no Snowball stemmer for Swahili: plain words
        Analyzer(language='sw', tokenizer='word', stemmer=None, stopwords=None, cjk='chars')
    """
    if not isinstance(language, str) or not _CODE.match(language):
        msg = f"language must be an ISO 639-1 code such as 'en' or 'ja' (or 'mul', 'und'), got {language!r}"
        raise ValueError(msg)
    if language in SUBWORD_LANGUAGES:
        return Analyzer(language, tokenizer="model")
    if language == "ja":
        return Analyzer(language, cjk="chars+bigrams")
    stemmer = SNOWBALL_LANGUAGES.get(language)
    if stemmer is None:
        return Analyzer(language)
    try:
        from m3_integrations.bm25 import stemmer_languages

        if stemmer not in stemmer_languages():  # an older Snowball without this language
            return Analyzer(language)
        stopwords = stopword_list(language)
    except ImportError as err:
        if strict:
            raise
        logger.warning("BM25 for %r without stemming: %s", language, err)
        return Analyzer(language)
    return Analyzer(language, stemmer=stemmer, stopwords=None if stopwords is None else tuple(stopwords))
