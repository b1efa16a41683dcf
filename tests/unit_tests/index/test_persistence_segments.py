"""Incremental saves (format 3): a save writes only the rows added since the last one and the list of
deleted rows, as a new segment beside the ones already on disk; a load puts the segments back together.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest

from m3_integrations import IndexLoadError, IndexNotFoundError, M3Index, M3Model, M3Output
from m3_integrations.index import compact_store, persistence
from tests.common import INDEX_TEXTS
from tests.persistence_writer import grown_ids
from tests.unit_tests.index.test_persistence import named_folders
from tests.unit_tests.index.test_persistence_crash import Writer, _leftovers

QUERIES = ["capital of France", "hello world", "서울 수도", "vector databases and numpy"]
CORPUS = [f"{INDEX_TEXTS[i % len(INDEX_TEXTS)]} (copy {i}, topic {i % 13})" for i in range(400)]


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _rows(output: M3Output, rows: slice) -> M3Output:
    return M3Output(
        dense=output.dense[rows],
        lexical_weights=output.lexical_weights[rows],
        colbert_vecs=output.colbert_vecs[rows],
        num_tokens=output.num_tokens[rows],
    )


@pytest.fixture(scope="module")
def encoded(tiny_model: M3Model) -> M3Output:
    return tiny_model.encode_passages(CORPUS, return_colbert=True)


def _same_search(a: M3Index, b: M3Index) -> None:
    assert a.ids == b.ids
    for query in QUERIES:
        for mode in ("hybrid", "sparse", "colbert"):
            x = a.search(query, k=15, mode=mode, candidates=None)
            y = b.search(query, k=15, mode=mode, candidates=None)
            assert [h.id for h in x] == [h.id for h in y]
            for p, q in zip(x, y, strict=True):
                assert (p.text, p.metadata) == (q.text, q.metadata)
                assert p.scores == pytest.approx(q.scores, rel=1e-6, abs=1e-6)


def _saved(model: M3Model, encoded: M3Output, tmp_path: Path, n: int) -> tuple[M3Index, Path]:
    """An index of the first ``n`` documents, saved whole to ``tmp_path/index``."""
    index = M3Index(model)
    index.add_encoded(_rows(encoded, slice(0, n)), CORPUS[:n], ids=[f"d{i}" for i in range(n)])
    index.save(tmp_path / "index")
    return index, tmp_path / "index"


def test_adding_one_percent_writes_a_small_segment(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    index, target = _saved(tiny_model, encoded, tmp_path, 396)
    assert _manifest(target)["format_version"] == 2
    base = named_folders(target)
    index.add_encoded(_rows(encoded, slice(396, 400)), CORPUS[396:], ids=[f"d{i}" for i in range(396, 400)])
    index.save(target)
    manifest = _manifest(target)
    assert manifest["format_version"] == 3 and manifest["count"] == 4
    assert named_folders(target)[1:] == base  # the first segment is the one written before, untouched
    written = _folder_bytes(target / manifest["data"]) + (target / "manifest.json").stat().st_size
    total = sum(_folder_bytes(target / name) for name in named_folders(target))
    assert written <= 0.05 * total, f"{written} of {total} bytes written"
    _same_search(index, M3Index.load(target, model=tiny_model))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"colbert_storage": "int8"},
        {"colbert_storage": "compact"},
        {"lexical": "bm25", "bm25_tokenizer": "word"},
        {"dense_dtype": "float16", "store_colbert": False},
    ],
    ids=["exact", "int8", "compact", "bm25-words", "no-colbert"],
)
def test_segments_with_adds_deletes_and_replacements_load_as_the_index(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict
) -> None:
    # The compact codec trains on this data (the store reads these names from its own module).
    monkeypatch.setattr(compact_store, "TRAIN_MIN_VECTORS", 300)
    monkeypatch.setattr(compact_store, "TRAIN_SAMPLE", 2000)
    index = M3Index(tiny_model, **settings)
    target = tmp_path / "index"
    steps = [(0, 120), (120, 150), (150, 151), (151, 200), (200, 230)]
    secret = "a text deleted before any save saw it"
    for n, (lo, hi) in enumerate(steps):
        index.add_encoded(
            _rows(encoded, slice(lo, hi)),
            CORPUS[lo:hi],
            ids=[f"d{i}" for i in range(lo, hi)],
            metadatas=[{"n": i, "step": n} for i in range(lo, hi)],
        )
        if n == 2:
            index.delete(["d3", "d140"])  # one row of the first segment, one of the second
            index.add([secret], ids=["gone"])
            index.delete(["gone"])
            index.add(["d5 says something new now"], ids=["d5"], metadatas=[{"replaced": True}])
        index.save(target, purge_deleted=False)
        if settings.get("colbert_storage") == "compact" and hi >= 150:
            assert index._stores.colbert.trained  # later segments are saved as codes of the first's codec
        loaded = M3Index.load(target, model=tiny_model)
        _same_search(index, loaded)
        assert loaded.get(["d5"])[0].text == index.get(["d5"])[0].text
    manifest = _manifest(target)
    assert manifest["format_version"] == 3 and len(manifest["segments"]) == len(steps) - 1
    assert (
        "d3" not in loaded and "gone" not in loaded and loaded.get(["d5"])[0].metadata == {"replaced": True}
    )
    for name in named_folders(target):  # a document deleted before it was saved is not written
        assert secret not in (target / name / "documents.json").read_text()
    # A loaded index goes on adding segments to the folder it came from.
    loaded.add(["one more"], ids=["more"])
    loaded.save(target, purge_deleted=False)
    assert len(_manifest(target)["segments"]) == len(steps)
    again = M3Index.load(target, model=tiny_model)
    _same_search(loaded, again)
    for part in ("dense", "colbert"):  # the sparse stores' segments differ: their row pointers too
        assert again.memory_bytes()[part] == loaded.memory_bytes()[part]


def test_compaction_or_another_writer_makes_the_next_save_whole(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    index, target = _saved(tiny_model, encoded, tmp_path, 100)
    index.add(["new"], ids=["new"])
    index.save(target)
    old_folders = named_folders(target)
    assert len(old_folders) == 2
    index.delete([f"d{i}" for i in range(60)])  # more than half dead: compacted in memory
    index.save(target)
    assert _manifest(target)["format_version"] == 2
    assert not set(old_folders) & {p.name for p in target.iterdir()}  # the old segments are gone
    _same_search(index, M3Index.load(target, model=tiny_model))
    # Another index saved to the folder since: an incremental save would build on its files.
    other = M3Index(tiny_model)
    other.add(["someone else's index"], ids=["x"])
    other.save(target)
    index.add(["after the other"], ids=["after"])
    index.save(target)
    assert _manifest(target)["format_version"] == 2
    _same_search(index, M3Index.load(target, model=tiny_model))


def test_deletes_make_the_save_whole_unless_asked_and_then_only_until_a_quarter(
    tiny_model: M3Model, tmp_path: Path
) -> None:
    index = M3Index(tiny_model)
    index.add(INDEX_TEXTS, ids=[f"d{i}" for i in range(len(INDEX_TEXTS))])
    target = tmp_path / "index"
    index.save(target)
    index.add(["added"], ids=["added"])
    index.save(target)
    assert _manifest(target)["format_version"] == 3  # an add alone: a segment
    index.delete(["d0"])
    index.save(target)  # the default purges: whole
    assert _manifest(target)["format_version"] == 2
    assert '"d0"' not in (target / _manifest(target)["data"] / "documents.json").read_text()
    index.delete(["d1"])
    index.save(target, purge_deleted=False)
    manifest = _manifest(target)
    assert manifest["format_version"] == 3 and manifest["dead_rows"] == [0] and manifest["count"] == 0
    dead = int((len(INDEX_TEXTS) - 1) * persistence.MAX_DEAD_SHARE) + 1
    index.delete([f"d{i}" for i in range(2, dead + 1)])  # under the in-memory compaction's threshold (64)
    index.save(target, purge_deleted=False)
    manifest = _manifest(target)
    assert manifest["format_version"] == 2 and manifest["count"] == len(INDEX_TEXTS) - dead


@pytest.mark.parametrize("value", ["no", 0, None])
def test_purge_deleted_must_be_a_bool(tiny_model: M3Model, tmp_path: Path, value: object) -> None:
    index = M3Index(tiny_model)
    index.add(["one"], ids=["a"])
    with pytest.raises(TypeError, match="purge_deleted"):
        index.save(tmp_path / "index", purge_deleted=value)  # type: ignore[arg-type]
    assert not (tmp_path / "index").exists()


def _segmented(tiny_model: M3Model, tmp_path: Path, **settings) -> Path:
    index = M3Index(tiny_model, **settings)
    index.add(INDEX_TEXTS[:8], ids=[f"d{i}" for i in range(8)])
    target = tmp_path / "index"
    index.save(target)
    index.delete(["d1"])
    index.add(INDEX_TEXTS[8:], ids=[f"d{i}" for i in range(8, len(INDEX_TEXTS))])
    index.add(["d2 again"], ids=["d2"])
    index.save(target, purge_deleted=False)
    return target


HOSTILE = {
    "dead row out of range": lambda m: m.update(dead_rows=[0, 10_000]),
    "dead rows unsorted": lambda m: m.update(dead_rows=[2, 1]),
    "dead rows not ints": lambda m: m.update(dead_rows=["1"]),
    "no dead rows list": lambda m: m.pop("dead_rows"),
    "a replaced row revived": lambda m: m.update(dead_rows=[1]),  # d2's old row alive again: id twice
    "segments not a list": lambda m: m.update(segments={"data": "x"}),
    "segments empty": lambda m: m.update(segments=[]),
    "segment without a key": lambda m: m["segments"][0].pop("count"),
    "segment with an extra key": lambda m: m["segments"][0].update(extra=1),
    "segment names the newest folder": lambda m: m["segments"][0].update(data=m["data"]),
    "segment folder outside": lambda m: m["segments"][0].update(data="../elsewhere"),
    "segment count too large": lambda m: m["segments"][0].update(count=m["segments"][0]["count"] + 1),
    "segment hash wrong": lambda m: next(iter(m["segments"][0]["files"].values())).update(sha256="0" * 64),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_damaged_format3_manifest_fails_with_index_load_error(
    tiny_model: M3Model, tmp_path: Path, case: str
) -> None:
    target = _segmented(tiny_model, tmp_path)
    manifest = _manifest(target)
    HOSTILE[case](manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError):
        M3Index.load(target, model=tiny_model)


def test_a_missing_segment_folder_fails_and_vocabularies_do_not_overlap(
    tiny_model: M3Model, tmp_path: Path
) -> None:
    target = _segmented(tiny_model, tmp_path / "a", lexical="bm25", bm25_tokenizer="word")
    manifest = _manifest(target)
    assert (
        len(manifest["segments"]) == 1 and manifest["bm25_columns"] > manifest["segments"][0]["bm25_columns"]
    )
    shutil.rmtree(target / manifest["segments"][0]["data"])
    with pytest.raises(IndexLoadError, match="missing"):
        M3Index.load(target, model=tiny_model)
    target = _segmented(tiny_model, tmp_path / "b", lexical="bm25", bm25_tokenizer="word")
    manifest = _manifest(target)
    manifest["segments"][0]["bm25_columns"] = manifest["bm25_columns"] + 1  # the columns shrink
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match=r"bm25_columns|words"):
        M3Index.load(target, model=tiny_model)


KILLS = 50


def test_sigkill_during_incremental_saves_and_compactions_never_loses_the_last_save(
    tiny_model: M3Model, tiny_checkpoint: str, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    seed = M3Index(tiny_model)
    base = [f"b{i}" for i in range(12)]
    seed.add((INDEX_TEXTS * 2)[:12], ids=base)
    seed.save(first)
    target = tmp_path / "target"
    shutil.copytree(first, target)
    writer = Writer(tiny_checkpoint, first, first)
    rng = random.Random(5)
    formats: dict[int, int] = {}
    try:
        began = time.perf_counter()
        loaded = M3Index.load(target, model=tiny_model)
        loaded.add(["timing"], ids=["timing"])
        loaded.save(target)
        loaded.delete(["timing"])
        loaded.save(target)
        step_seconds = (time.perf_counter() - began) / 2
        last = -1
        for kill in range(KILLS):
            pid = int(writer._send(f"grow {target}"))
            time.sleep(rng.uniform(0.0, 6 * step_seconds))
            writer.kill(pid)
            try:
                loaded = M3Index.load(target, model=tiny_model)
            except IndexNotFoundError:  # pragma: no cover - the folder always holds an index
                pytest.fail(f"kill {kill}: the index is gone")
            grown = [int(doc_id[1:]) for doc_id in loaded.ids if doc_id.startswith("g")]
            step = max(grown, default=-1)
            assert step >= last, f"kill {kill}: a saved step was lost"
            assert loaded.ids == grown_ids(base, step) if step >= 0 else loaded.ids == base
            last = step
            version = _manifest(target)["format_version"]
            formats[version] = formats.get(version, 0) + 1
            leftovers = _leftovers(target)
            loaded.save(target)  # builds on the folder as the killed writer left it
            assert _leftovers(target) == [], f"kill {kill}: {leftovers} stay after a save"
    finally:
        writer.close()
    print(f"{KILLS} kills: last step saved {last}, manifests seen by format {formats}")
    assert last > 10, "the writers made no progress between kills"
    assert formats.get(3, 0) > 0
