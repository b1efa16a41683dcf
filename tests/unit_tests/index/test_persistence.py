from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import IndexLoadError, IndexNotFoundError, M3Index, M3Model
from m3_integrations.index import folder_reader
from m3_integrations.index.format import LOCK_FILE
from tests.common import INDEX_TEXTS
from tests.legacy_format1 import save_format1

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
    assert manifest["format_version"] == 2
    assert manifest["count"] == len(INDEX_TEXTS) - 1
    assert manifest["model"]["fingerprint"] == tiny_model.fingerprint
    data = path / manifest["data"]
    assert sorted(p.name for p in path.iterdir()) == sorted([LOCK_FILE, "manifest.json", manifest["data"]])
    assert sorted(manifest["files"]) == sorted(p.name for p in data.iterdir())
    with np.load(data / "arrays.npz", allow_pickle=False) as npz:  # nothing pickled
        assert npz["colbert"].dtype == np.int8
    loaded.add(["a new document"], ids=["new"])  # a loaded index stays writable
    assert "new" in loaded


def data_folder(path: Path) -> Path:
    """The data folder ``path/manifest.json`` names (the newest segment's, for format 3)."""
    return path / json.loads((path / "manifest.json").read_text())["data"]


def named_folders(path: Path) -> list[str]:
    """Every data folder ``path/manifest.json`` names: its own and its older segments' (format 3)."""
    manifest = json.loads((path / "manifest.json").read_text())
    return [manifest["data"], *(segment["data"] for segment in manifest.get("segments", []))]


def _copy(path: Path, tmp_path: Path) -> Path:

    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return target


def test_truncated_or_corrupted_files(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path
) -> None:
    _, path = saved
    for name in ("arrays.npz", "documents.json", "bm25_vocab.json"):
        target = _copy(path, tmp_path / name)
        file = data_folder(target) / name
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
        with pytest.raises(IndexLoadError, match=f"{name} has .* bytes but the manifest says"):
            M3Index.load(target, model=tiny_model)
        file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
        with pytest.raises(IndexLoadError, match=f"{name} is truncated or modified"):
            M3Index.load(target, model=tiny_model)
    target = _copy(path, tmp_path / "manifest")
    (target / "manifest.json").write_text("{not json")
    with pytest.raises(IndexLoadError, match=r"manifest\.json is damaged: JSONDecodeError"):
        M3Index.load(target, model=tiny_model)
    (target / "manifest.json").unlink()
    with pytest.raises(IndexNotFoundError, match=r"manifest\.json is missing"):
        M3Index.load(target, model=tiny_model)
    with pytest.raises(IndexNotFoundError, match="no such folder"):
        M3Index.load(tmp_path / "nowhere", model=tiny_model)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.update(format_version=99), "unknown M3Index format version 99"),
        (lambda m: m.update(dense_dim=1024), "^model mismatch: .*manifest.json records dense_dim=1024"),
        (
            lambda m: m["model"].update(fingerprint="0" * 16),
            "^model mismatch: .*manifest.json was built with",
        ),
    ],
)
def test_manifest_mismatch(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path, edit, match: str
) -> None:
    target = _copy(saved[1], tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match=match):
        M3Index.load(target, model=tiny_model)


def test_failed_save_leaves_previous_index_loadable(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, path = saved
    target = _copy(path, tmp_path)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", crash)  # fails while arrays.npz is written
    with pytest.raises(OSError, match="disk full"):
        index.save(target)
    monkeypatch.undo()
    assert M3Index.load(target, model=tiny_model).ids == index.ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temp folder left
    listing = sorted(p.name for p in target.iterdir())  # nor a data folder or temporary manifest inside
    assert listing == sorted([LOCK_FILE, "manifest.json", data_folder(target).name])


def test_unserialisable_metadata_is_named(tiny_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(tiny_model)
    with pytest.raises(TypeError, match="'bad'"):  # refused by add, before it could fail a save
        index.add(["x"], ids=["bad"], metadatas=[{"when": object()}])
    index.save(tmp_path / "idx")
    assert len(M3Index.load(tmp_path / "idx", model=tiny_model)) == 0


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
    with pytest.raises(IndexLoadError, match="bm25_words"):
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


# ---------------------------------------------------------------------------- what save may replace
def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed): kind, mode, bytes or link target."""
    entries: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                entries[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                entries[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return entries


def _user_folder(target: Path) -> None:
    target.mkdir()
    (target / "notes.txt").write_text("my notes")
    (target / "sub").mkdir()
    (target / "sub" / "data.bin").write_bytes(os.urandom(64))


def _foreign_manifest(target: Path) -> None:
    _user_folder(target)
    (target / "manifest.json").write_text(json.dumps({"format": "npm-package", "files": {}}))


def _newer_index(target: Path) -> None:
    _user_folder(target)
    (target / "manifest.json").write_text(json.dumps({"format": "m3-index", "format_version": 99}))


def _regular_file(target: Path) -> None:
    target.write_text("a file the user keeps")


def _symlink_to_index(target: Path) -> None:
    real = target.parent / "real-index"
    real.mkdir()
    (real / "kept.txt").write_text("kept")
    target.symlink_to(real, target_is_directory=True)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_user_folder, r"holds 2 entries that are not an M3Index \('notes.txt', 'sub'\).*empty the folder"),
        (_foreign_manifest, r"manifest.json is not an M3Index manifest"),
        (_newer_index, r"format_version 99, which this release does not know"),
        (_regular_file, r"a file is there.*choose another path"),
        (_symlink_to_index, r"it is a symbolic link.*pass the folder it points to"),
    ],
)
def test_save_refuses_what_is_not_an_index_and_touches_nothing(
    saved: tuple[M3Index, Path], tmp_path: Path, make, match: str
) -> None:
    index, _ = saved
    target = tmp_path / "target"
    make(target)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=match) as caught:
        index.save(target)
    assert str(target) in str(caught.value)
    assert _snapshot(tmp_path) == before  # byte-identical, no lock file or data folder created


def test_save_fills_an_empty_folder_and_replaces_only_its_own_files(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path
) -> None:
    index, _ = saved
    target = tmp_path / "index"
    target.mkdir()
    index.save(target)
    first = data_folder(target)
    (target / "README.txt").write_text("the user's file inside an index folder")
    other = M3Index(tiny_model)
    other.add(["another index"], ids=["other"])
    other.save(target)
    assert data_folder(target) != first and not first.exists()
    assert (target / "README.txt").read_text() == "the user's file inside an index folder"
    assert M3Index.load(target, model=tiny_model).ids == ["other"]


def test_folder_left_by_a_killed_first_save_is_reused_and_cleaned(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path
) -> None:
    index, _ = saved
    target = tmp_path / "index"
    partial = target / ("v-" + "ab" * 16)
    partial.mkdir(parents=True)
    (partial / "arrays.npz").write_bytes(b"half written")
    (target / LOCK_FILE).touch()
    (target / (".manifest.json.tmp-" + "cd" * 16)).write_text("{")
    with pytest.raises(IndexNotFoundError, match=r"manifest\.json is missing"):
        M3Index.load(target, model=tiny_model)
    index.save(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [LOCK_FILE, "manifest.json", data_folder(target).name]
    )
    assert M3Index.load(target, model=tiny_model).ids == index.ids


def test_stale_leftovers_of_the_previous_release_are_removed_and_nothing_else(
    saved: tuple[M3Index, Path], tmp_path: Path
) -> None:
    index, _ = saved
    target = tmp_path / "index"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(dead.stdout)
    hour_ago = time.time() - 2 * 3600

    def leftover(
        name: str, files: tuple[str, ...] = ("manifest.json", "arrays.npz"), *, old: bool = False
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for file in files:
            (folder / file).write_text("x")
            if old:
                os.utime(folder / file, (hour_ago, hour_ago))
        if old:
            os.utime(folder, (hour_ago, hour_ago))
        return folder

    removed = [leftover(f".index.old-{dead_pid}"), leftover(".index.tmp-k2j4x_9a", old=True)]
    kept = [
        leftover(f".index.old-{os.getpid()}"),  # its writer is alive
        leftover(".index.tmp-recent12"),  # may be a running save of the previous release
        leftover(".index.tmp-foreign1", ("manifest.json", "notes.txt"), old=True),  # not only index files
        leftover(f".other.old-{dead_pid}"),  # another folder's
        leftover(".index.backup", old=True),
    ]
    index.save(target)
    assert [p.exists() for p in removed] == [False, False]
    assert [p.exists() for p in kept] == [True] * len(kept)


# ---------------------------------------------------------------------------- format 1, umask, threads
def test_format1_folder_loads_and_saving_over_it_converts_it(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path
) -> None:
    index, _ = saved
    target = tmp_path / "old"
    save_format1(index, target)
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and (target / "arrays.npz").is_file()
    loaded = M3Index.load(target, model=tiny_model)
    assert loaded.ids == index.ids
    for mode in ("hybrid", "sparse"):
        assert _state(loaded.search(QUERY, k=5, mode=mode, weights={"bm25": 0.2})) == _state(
            index.search(QUERY, k=5, mode=mode, weights={"bm25": 0.2})
        )
    (target / "cli_model.json").write_text("{}")  # a file another tool put there stays
    loaded.save(target)
    names = sorted(p.name for p in target.iterdir())
    assert names == sorted([LOCK_FILE, "cli_model.json", "manifest.json", data_folder(target).name])
    assert json.loads((target / "manifest.json").read_text())["format_version"] == 2
    again = M3Index.load(target, model=tiny_model)
    assert _state(again.search(QUERY, k=5)) == _state(index.search(QUERY, k=5))


def _modes(target: Path) -> dict[str, int]:
    return {str(p.relative_to(target)): stat.S_IMODE(p.stat().st_mode) for p in [target, *target.rglob("*")]}


def test_saved_folder_and_files_follow_the_umask(saved: tuple[M3Index, Path], tmp_path: Path) -> None:
    index, _ = saved
    target = tmp_path / "shared" / "index"
    previous = os.umask(0o022)
    try:
        index.save(target)
        data = data_folder(target).name
        modes = _modes(target)
        assert modes["."] == modes[data] == 0o755
        assert modes["manifest.json"] == modes[LOCK_FILE] == modes[f"{data}/documents.json"] == 0o644
        assert modes[f"{data}/arrays.npz"] == 0o644
        os.umask(0o027)
        index.save(target)  # a re-save keeps the folder's own mode; new files follow the new umask
        data = data_folder(target).name
        modes = _modes(target)
        assert (modes["."], modes[data], modes["manifest.json"], modes[f"{data}/arrays.npz"]) == (
            0o755,
            0o750,
            0o640,
            0o640,
        )
    finally:
        os.umask(previous)


def test_two_indexes_saving_one_path_from_threads(tiny_model: M3Model, tmp_path: Path) -> None:
    first, second = M3Index(tiny_model), M3Index(tiny_model)
    first.add(INDEX_TEXTS[:5], ids=[f"a{i}" for i in range(5)])
    second.add(INDEX_TEXTS[5:9], ids=[f"b{i}" for i in range(4)])
    target = tmp_path / "index"
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def keep_saving(index: M3Index) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                index.save(target)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=keep_saving, args=(index,)) for index in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert M3Index.load(target, model=tiny_model).ids in (first.ids, second.ids)
    # Nothing but what the manifest names (repeated saves of one index add segments to it).
    named = [LOCK_FILE, "manifest.json", *named_folders(target)]
    assert sorted(p.name for p in target.iterdir()) == sorted(named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_load_opens_each_file_once(
    saved: tuple[M3Index, Path], tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checking a file and then opening it again to parse it lets a concurrent save slip in between.
    _, path = saved
    opened: list[str] = []
    real_os_open, real_open = os.open, open

    def counting_os_open(file, *args, **kwargs):
        opened.append(os.fsdecode(file).rsplit("/", 1)[-1])
        return real_os_open(file, *args, **kwargs)

    def counting_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike):
            opened.append(os.fsdecode(file).rsplit("/", 1)[-1])
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_os_open)
    monkeypatch.setattr("builtins.open", counting_open)
    M3Index.load(path, model=tiny_model)
    monkeypatch.undo()
    files = ("manifest.json", "arrays.npz", "documents.json", "bm25_vocab.json")
    assert {name: opened.count(name) for name in files} == dict.fromkeys(files, 1)


def test_saved_files_hash_to_the_manifest(saved: tuple[M3Index, Path]) -> None:
    _, path = saved
    manifest = json.loads((path / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        data = (path / manifest["data"] / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (info["bytes"], info["sha256"])


@pytest.mark.parametrize(
    ("options", "texts"),
    [
        ({"dense_dtype": "float16", "store_colbert": False}, INDEX_TEXTS[:6]),
        ({"lexical": "bm25", "bm25_tokenizer": "model"}, INDEX_TEXTS[:6]),
        ({"lexical": "bm25"}, []),  # an empty index, word vocabulary empty
        ({"colbert_dtype": "int8"}, []),
    ],
)
def test_every_storage_option_roundtrips(
    tiny_model: M3Model, tmp_path: Path, options: dict, texts: list
) -> None:
    index = M3Index(tiny_model, **options)
    index.add(texts, ids=[f"d{i}" for i in range(len(texts))])
    index.save(tmp_path / "idx")
    loaded = M3Index.load(tmp_path / "idx", model=tiny_model)
    assert loaded.ids == index.ids
    assert (loaded.dense_dtype, loaded.store_colbert, loaded.lexical, loaded.bm25_tokenizer) == (
        index.dense_dtype,
        index.store_colbert,
        index.lexical,
        index.bm25_tokenizer,
    )
    if texts:
        assert _state(loaded.search(QUERY, k=3)) == _state(index.search(QUERY, k=3))
    loaded.add(["added after loading"], ids=["late"])
    assert loaded.get(["late"])[0].text == "added after loading"


def test_load_starts_again_when_a_save_removes_the_version_it_is_reading(
    saved: tuple[M3Index, Path], tiny_model: M3Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = saved
    target = _copy(path, tmp_path)
    other = M3Index(tiny_model)
    other.add(["the index saved in between"], ids=["between"])
    real_open = folder_reader.OpenFolder.open
    saves = []

    def open_after_a_save(folder: Path, **kwargs):
        if folder.name.startswith("v-") and not saves:
            saves.append(folder.name)
            other.save(target)  # switches the manifest and removes the version the load was about to read
        return real_open(folder, **kwargs)

    monkeypatch.setattr(folder_reader.OpenFolder, "open", open_after_a_save)
    loaded = M3Index.load(target, model=tiny_model)
    assert saves and not (target / saves[0]).exists()
    assert loaded.ids == ["between"]
