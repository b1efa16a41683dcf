"""Corpus language detection, per-language BM25 analyzers, and the index's ``language`` option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.bm25 import BM25, WordTokenizer, cjk_bigrams, word_tokenize
from m3_integrations.errors import IndexLoadError
from m3_integrations.language import (
    MIXED,
    UNDETERMINED,
    LanguageProfile,
    analyzer_for,
    detect_languages,
    stopword_list,
)

pytest.importorskip("py3langid")
pytest.importorskip("bm25s")

ENGLISH = [
    "The rivers of the northern valley flow quickly through the old stone bridges in spring.",
    "Engineers measured the pressure of the flowing water at every bridge of the valley.",
    "Farmers along the river grow wheat and barley on the fertile plains of the north.",
    "A new railway connects the valley towns with the harbour on the southern coast.",
]
FINNISH = [
    "Joki virtaa nopeasti pohjoisen laakson vanhojen kivisiltojen läpi keväällä.",
    "Insinöörit mittasivat veden paineen jokaisen laakson sillan kohdalla.",
    "Viljelijät kasvattavat vehnää ja ohraa joen varrella pohjoisen tasangoilla.",
    "Uusi rautatie yhdistää laakson kaupungit etelärannikon satamaan.",
]
JAPANESE = ["東京都は日本の首都です。", "京都は古い都です。", "大阪は商業の町として知られています。"]
THAI = ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", "เชียงใหม่เป็นเมืองใหญ่ในภาคเหนือ"]


# ----------------------------------------------------------------------------- detection
def test_scripts_name_their_language_without_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py3langid", None)  # scripts alone must decide these
    assert detect_languages(JAPANESE).primary == "ja"
    assert detect_languages(["北京是中国的首都。", "上海是一个大城市。"]).primary == "zh"
    assert detect_languages(["서울은 한국의 수도이다.", "부산은 항구 도시이다."]).primary == "ko"
    assert detect_languages(THAI).primary == "th"
    # Latin script needs the classifier: without it the corpus is undetermined, not guessed.
    profile = detect_languages(ENGLISH)
    assert profile.primary == UNDETERMINED
    assert profile.shares == {UNDETERMINED: 1.0}


def test_latin_script_languages_are_told_apart() -> None:
    assert detect_languages(ENGLISH).primary == "en"
    assert detect_languages(FINNISH).primary == "fi"


def test_shares_weigh_texts_by_length_and_a_mixed_corpus_has_no_primary() -> None:
    profile = detect_languages(ENGLISH[:2] + FINNISH[:2])
    assert profile.primary == MIXED
    english = sum(len(t) for t in ENGLISH[:2])
    finnish = sum(len(t) for t in FINNISH[:2])
    assert profile.shares["en"] == pytest.approx(english / (english + finnish))
    assert profile.shares["fi"] == pytest.approx(finnish / (english + finnish))
    # One Finnish sentence among many English ones: English still holds the corpus.
    assert detect_languages(ENGLISH * 3 + FINNISH[:1]).primary == "en"


def test_detection_samples_evenly_spaced_texts_deterministically() -> None:
    texts = ENGLISH * 50 + FINNISH * 50  # 400 texts, the second half Finnish
    profile = detect_languages(texts, sample=10)
    assert profile.sampled == 10
    assert set(profile.shares) == {"en", "fi"}  # a prefix sample would have seen English only
    assert detect_languages(texts, sample=10) == profile
    assert detect_languages([]).primary == UNDETERMINED
    with pytest.raises(ValueError, match="sample and max_chars must be positive"):
        detect_languages(ENGLISH, sample=0)


def test_profile_round_trips_and_rejects_bad_records() -> None:
    profile = detect_languages(ENGLISH)
    assert LanguageProfile.from_json(json.loads(json.dumps(profile.to_json()))) == profile
    bad = [
        None,
        {"primary": "en", "shares": {}},
        {"primary": "../x", "shares": {}, "sampled": 1},
        {"primary": "en", "shares": {"en": 2.0}, "sampled": 1},
        {"primary": "en", "shares": {"EN": 1.0}, "sampled": 1},
        {"primary": "en", "shares": {"en": 1.0}, "sampled": -1},
        {"primary": "en", "shares": {"en": True}, "sampled": 1},
    ]
    for value in bad:
        with pytest.raises(ValueError, match="record"):
            LanguageProfile.from_json(value, label="record")


# ----------------------------------------------------------------------------- analyzers
def test_analyzers_by_language() -> None:
    english = analyzer_for("en")
    assert (english.tokenizer, english.stemmer) == ("word", "english")
    assert english.stopwords is not None and {"the", "and", "of"} <= set(english.stopwords)
    assert analyzer_for("fi").stemmer == "finnish"
    assert analyzer_for("fi").stopwords is None  # bm25s has no Finnish list
    assert analyzer_for("id").stemmer == "indonesian"
    assert analyzer_for("ja").cjk == "chars+bigrams"
    for code in ("th", "lo", "km", "my", "bn", "te", "hi", "ta"):  # hi and ta despite their stemmers
        assert analyzer_for(code).tokenizer == "model"
    for code in ("sw", "zh", "ko", MIXED, UNDETERMINED):
        plain = analyzer_for(code)
        assert (plain.tokenizer, plain.stemmer, plain.stopwords, plain.cjk) == ("word", None, None, "chars")
    with pytest.raises(ValueError, match="ISO 639-1 code"):
        analyzer_for("English")


def test_missing_packages_fail_loudly_when_asked_and_fall_back_when_automatic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "bm25s.stopwords", None)
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(ImportError, match=r"m3-integrations\[language\]"):
        stopword_list("en")
    with pytest.raises(ImportError, match=r"m3-integrations\[language\]"):
        analyzer_for("en")
    assert analyzer_for("en", strict=False).stemmer is None


def test_cjk_bigrams_against_a_naive_reference() -> None:
    def naive(text: str) -> list[str]:
        is_cjk = [
            "\u3040" <= c <= "\u30ff"
            or "\u3400" <= c <= "\u4dbf"
            or "\u4e00" <= c <= "\u9fff"
            or "\uf900" <= c <= "\ufaff"
            for c in text
        ]
        return [text[i : i + 2] for i in range(len(text) - 1) if is_cjk[i] and is_cjk[i + 1]]

    for text in [*JAPANESE, "東京 to 大阪、そして京都", "a", "北", "カタカナとひらがな"]:
        assert cjk_bigrams(text) == naive(text)
    tokenizer = WordTokenizer(cjk="chars+bigrams")
    assert tokenizer("東京都 tower") == [*word_tokenize("東京都 tower"), "東京", "京都"]
    assert tokenizer.config() == {"stemmer": None, "stopwords": None, "cjk": "chars+bigrams"}
    assert WordTokenizer().config() == {"stemmer": None, "stopwords": None}  # old indexes' keys only
    with pytest.raises(ValueError, match="cjk must be one of chars, chars\\+bigrams"):
        WordTokenizer(cjk="trigrams")


def test_bigrams_tell_japanese_words_from_shared_characters() -> None:
    """大学 (university): 学 and 大 apart win on characters; the passage with the word wins on bigrams."""
    docs = ["学生の大きな声", "大学の図書館で静かに勉強する", "東京の雪", "港の船", "山の川", "城の庭"]
    for cjk, expected in (("chars", 0), ("chars+bigrams", 1)):
        tokenizer = WordTokenizer(cjk=cjk)
        bm25 = BM25()
        bm25.add([tokenizer(d) for d in docs])
        scores = bm25.get_scores(tokenizer("大学"))
        assert int(np.argmax(scores)) == expected, cjk


# ----------------------------------------------------------------------------- the index
@pytest.fixture
def plain_model(plain_checkpoint: Path) -> M3Model:
    return M3Model(str(plain_checkpoint), device="cpu", allow_missing_heads=True, pooling="mean")


def test_index_detects_the_language_on_the_first_add(plain_model: M3Model) -> None:
    index = M3Index(plain_model)
    assert index.language == "auto"
    assert index.bm25_tokens(["The flows"]) == [["the", "flows"]]  # nothing added yet: plain words
    index.add(ENGLISH)
    assert index.language == "en"
    assert index.bm25_word_settings["stemmer"] == "english"
    assert index.bm25_tokens(["The flows"]) == [["flow"]]
    # A later batch in another language keeps the analyzer (the documents stored use it).
    index.add(FINNISH)
    assert index.bm25_word_settings["stemmer"] == "english"
    # Stemmed, "bridge" also finds the document that says "bridges"; plain words find one document.
    matched = {h.id for h in index.search("bridge", k=4, mode="sparse") if h.score > 0}
    assert matched == {index.ids[0], index.ids[1]}
    plain = M3Index(plain_model, language=None)
    plain.add(ENGLISH)
    assert {h.id for h in plain.search("bridge", k=4, mode="sparse") if h.score > 0} == {plain.ids[1]}


def test_language_none_keeps_plain_words_and_explicit_options_win(plain_model: M3Model) -> None:
    plain = M3Index(plain_model, language=None)
    plain.add(ENGLISH)
    assert plain.language is None
    assert plain.bm25_word_settings == {"stemmer": None, "stopwords": None}
    explicit = M3Index(plain_model, bm25_stemmer="german")
    explicit.add(ENGLISH)
    assert explicit.bm25_word_settings["stemmer"] == "german"
    assert explicit.language == "auto"  # never detected: the analyzer was given
    fixed = M3Index(plain_model, language="fi")
    assert fixed.bm25_word_settings["stemmer"] == "finnish"
    with pytest.raises(ValueError, match="ISO 639-1 code"):
        M3Index(plain_model, language="finnish")
    with pytest.raises(TypeError, match="language must be"):
        M3Index(plain_model, language=3)  # type: ignore[arg-type]


def test_scripts_without_spaces_get_the_models_subwords(plain_model: M3Model) -> None:
    index = M3Index(plain_model)
    index.add(THAI)
    assert index.language == "th"
    assert index.bm25_tokenizer == "model"
    assert index.bm25_tokens(["abc"]) == plain_model.tokenize(["abc"], add_special_tokens=False).input_ids
    # An explicit word tokenizer stays words (the language only picks among word analyzers).
    words = M3Index(plain_model, bm25_tokenizer="word")
    words.add(THAI)
    assert words.bm25_tokenizer == "word"
    japanese = M3Index(plain_model)
    japanese.add(JAPANESE)
    assert japanese.bm25_word_settings == {"stemmer": None, "stopwords": None, "cjk": "chars+bigrams"}


def test_m3_lexical_index_keeps_model_ids(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    index.add(ENGLISH)
    assert index.bm25_tokenizer == "model"
    assert index.language == "auto"


def test_language_is_saved_and_restored(plain_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(plain_model)
    index.add(JAPANESE)
    index.save(tmp_path / "ja")
    manifest = json.loads((tmp_path / "ja" / "manifest.json").read_text())
    assert manifest["language"]["setting"] == "auto"
    assert manifest["language"]["profile"]["primary"] == "ja"
    loaded = M3Index.load(tmp_path / "ja", plain_model)
    assert loaded.language == "ja"
    assert loaded.bm25_word_settings == index.bm25_word_settings
    query = "京都の町"
    assert loaded.bm25_tokens([query]) == index.bm25_tokens([query])
    assert [h.id for h in loaded.search(query, k=3, mode="sparse")] == [
        h.id for h in index.search(query, k=3, mode="sparse")
    ]
    # Saved empty with "auto": the loaded index still detects on its first add.
    M3Index(plain_model).save(tmp_path / "empty")
    empty = M3Index.load(tmp_path / "empty", plain_model)
    empty.add(ENGLISH)
    assert empty.language == "en"


def test_folders_without_a_language_record_load_as_before(plain_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(plain_model, language=None)
    index.add(ENGLISH)
    index.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert "language" not in manifest  # what an index saved before detection looks like
    loaded = M3Index.load(tmp_path / "old", plain_model)
    assert loaded.language is None
    assert loaded.bm25_tokens(["The flows"]) == [["the", "flows"]]


def test_a_hostile_language_record_is_refused(plain_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(plain_model)
    index.add(ENGLISH)
    index.save(tmp_path / "x")
    path = tmp_path / "x" / "manifest.json"
    manifest = json.loads(path.read_text())
    for bad in ({"setting": "auto"}, {"setting": "../../etc", "profile": None}, "en"):
        manifest["language"] = bad
        path.write_text(json.dumps(manifest))
        with pytest.raises(IndexLoadError, match="language"):
            M3Index.load(tmp_path / "x", plain_model)
