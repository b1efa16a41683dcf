from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from tests.common import INDEX_TEXTS

QUERY = "capital of France"


@pytest.fixture(scope="module")
def saved(tiny_model: M3Model, tmp_path_factory: pytest.TempPathFactory) -> tuple[M3Index, Path]:
    index = M3Index(tiny_model, colbert_dtype="int8", bm25_tokenizer="word")
    index.add(
        INDEX_TEXTS,
        ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))],
        metadatas=[{"i": i} for i in range(len(INDEX_TEXTS))],
    )
    index.delete(["doc3"])
    path = tmp_path_factory.mktemp("saved") / "index"
    index.save(path)
    return index, path


def _state(hits: list) -> list[tuple]:
    # Compared between an index and its saved copy: the same arrays and code, so no rounding noise.
    return [
        (h.id, h.text, h.metadata, round(h.score, 6), {k: round(v, 6) for k, v in h.scores.items()})
        for h in hits
    ]


def test_roundtrip_same_results(saved: tuple[M3Index, Path], tiny_model: M3Model) -> None:
    index, path = saved
    loaded = M3Index.load(path, model=tiny_model)
    assert loaded.ids == index.ids and len(loaded) == len(index)
    assert (loaded.colbert_dtype, loaded.bm25_tokenizer) == ("int8", "word")
    for mode in ("hybrid", "sparse", "colbert"):
        assert _state(loaded.search(QUERY, k=5, mode=mode, weights={"bm25": 0.2})) == _state(
            index.search(QUERY, k=5, mode=mode, weights={"bm25": 0.2})
        )
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["count"] == len(INDEX_TEXTS) - 1
    assert manifest["model"]["fingerprint"] == tiny_model.fingerprint
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:  # nothing pickled
        assert npz["colbert"].dtype == np.int8
    loaded.add(["a new document"], ids=["new"])  # a loaded index stays writable
    assert "new" in loaded


def _copy(path: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return target


def test_truncated_or_corrupted_files(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path
) -> None:
    _, path = saved
    for name in ("arrays.npz", "documents.json"):
        target = _copy(path, tmp_path / name)
        data = (target / name).read_bytes()
        (target / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=f"corrupted.*{name}"):
            M3Index.load(target, model=tiny_model)
    target = _copy(path, tmp_path / "manifest")
    (target / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest\.json is not valid JSON"):
        M3Index.load(target, model=tiny_model)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        M3Index.load(tmp_path / "nowhere", model=tiny_model)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(format_version=99), "unknown M3Index format version 99"),
        (lambda m: m.update(dense_dim=1024), "dense_dim=1024"),
        (lambda m: m["model"].update(fingerprint="0" * 16), "model identity mismatch"),
    ],
)
def test_manifest_mismatch(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path, edit, match: str
) -> None:
    target = _copy(saved[1], tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=match):
        M3Index.load(target, model=tiny_model)


def test_failed_save_leaves_previous_index_loadable(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, path = saved
    target = _copy(path, tmp_path)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        index.save(target)
    monkeypatch.undo()
    assert M3Index.load(target, model=tiny_model).ids == index.ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temp folder left


def test_unserialisable_metadata_is_named(tiny_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(tiny_model)
    index.add(["x"], ids=["bad"], metadatas=[{"when": object()}])
    with pytest.raises(TypeError, match="'bad'"):
        index.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_default_float16_roundtrip(tiny_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(tiny_model)
    index.add(INDEX_TEXTS[:6], ids=[f"doc{i}" for i in range(6)])
    index.save(tmp_path / "idx")
    loaded = M3Index.load(tmp_path / "idx", model=tiny_model)
    assert loaded.colbert_dtype == "float16"
    assert _state(loaded.search(QUERY, k=4)) == _state(index.search(QUERY, k=4))


def test_stemmed_word_bm25_roundtrip_and_manifest(tiny_model: M3Model, tmp_path: Path) -> None:
    pytest.importorskip("Stemmer")
    texts = ["Rivers flowing into the sea", "The river flows", "Wings and pressure", "of the and"]
    texts += ["Heat transfer", "Boundary layers", "Shock waves"]
    index = M3Index(
        tiny_model, lexical="bm25", bm25_tokenizer="word", bm25_stemmer="english", bm25_stopwords="english"
    )
    index.add(texts, ids=["a", "b", "c", "d", "e", "f", "g"])
    hits = index.search("river flow", k=2, mode="sparse")
    assert [h.id for h in hits] == ["b", "a"]  # matched only through stemming ("rivers", "flowing")
    # A query of stop words has no lexical evidence: every BM25 score is zero.
    assert {h.scores["bm25"] for h in index.search("the of", k=4, mode="sparse")} == {0.0}
    path = tmp_path / "stemmed"
    index.save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["bm25_words"]["stemmer"] == "english"
    assert "the" in manifest["bm25_words"]["stopwords"]
    loaded = M3Index.load(path, model=tiny_model)
    assert _state(loaded.search("river flow", k=2, mode="sparse")) == _state(hits)
    loaded.add(["A flowing stream"], ids=["new"])  # new documents use the saved tokenizer
    assert "new" in {h.id for h in loaded.search("flows", k=5, mode="sparse")}

    # An index saved before stemming existed has no bm25_words entry: plain words.
    del manifest["bm25_words"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert M3Index.load(path, model=tiny_model).search("rivers", k=1, mode="sparse")[0].id == "a"
    manifest["bm25_words"] = ["english"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="bm25_words"):
        M3Index.load(path, model=tiny_model)


def test_bm25_tokenizer_auto_and_word_options(tiny_model: M3Model) -> None:
    # auto: the model's ids beside M3's own lexical weights; words when BM25 is the lexical signal or
    # when word options are given.
    assert M3Index(tiny_model).bm25_tokenizer == "model"
    assert M3Index(tiny_model, lexical="bm25").bm25_tokenizer == "word"
    assert M3Index(tiny_model, bm25_stopwords="english").bm25_tokenizer == "word"
    assert M3Index(tiny_model, lexical="bm25", bm25_tokenizer="model").bm25_tokenizer == "model"
    with pytest.raises(ValueError, match="bm25_tokenizer='word'"):
        M3Index(tiny_model, bm25_tokenizer="model", bm25_stemmer="english")
    with pytest.raises(ValueError, match="bm25_tokenizer='word'"):
        M3Index(tiny_model, bm25_tokenizer="model", bm25_stopwords="english")
    with pytest.raises(ValueError, match="'auto', 'model' or 'word'"):
        M3Index(tiny_model, bm25_tokenizer="bpe")  # type: ignore[arg-type]
