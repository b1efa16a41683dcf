"""``M3Index.load(..., mmap=True)``: ColBERT rows stay in the folder's files, memory-mapped.

The mapped index must search exactly as the index loaded into memory, keep working through adds,
deletes, compaction and both kinds of save, and refuse a damaged folder as a normal load does.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import IndexLoadError, M3Index, M3Model, M3Output
from m3_integrations.index import compact_store, row_parts
from m3_integrations.index.folder_writer import NPY_ALIGNMENT, write_npz
from m3_integrations.index.row_parts import RowParts, is_mapped, score_by_part
from tests.common import INDEX_TEXTS

QUERIES = ["capital of France", "hello world", "서울 수도", "vector databases and numpy"]
CORPUS = [f"{INDEX_TEXTS[i % len(INDEX_TEXTS)]} (copy {i}, topic {i % 11})" for i in range(160)]
STORAGES = ["exact", "int8", "compact"]


@pytest.fixture(scope="module")
def encoded(tiny_model: M3Model) -> M3Output:
    return tiny_model.encode_passages(CORPUS, return_colbert=True)


def _rows(output: M3Output, lo: int, hi: int) -> M3Output:
    return M3Output(
        dense=output.dense[lo:hi],
        lexical_weights=output.lexical_weights[lo:hi],
        colbert_vecs=output.colbert_vecs[lo:hi],
        num_tokens=output.num_tokens[lo:hi],
    )


def _add(index: M3Index, encoded: M3Output, lo: int, hi: int) -> None:
    index.add_encoded(
        _rows(encoded, lo, hi),
        CORPUS[lo:hi],
        ids=[f"d{i}" for i in range(lo, hi)],
        metadatas=[{"n": i} for i in range(lo, hi)],
    )


def _same_search(a: M3Index, b: M3Index) -> None:
    assert a.ids == b.ids
    for query in QUERIES:
        for mode in ("hybrid", "colbert"):
            for candidates in (None, 5):
                x = a.search(query, k=12, mode=mode, candidates=candidates)
                y = b.search(query, k=12, mode=mode, candidates=candidates)
                assert [h.id for h in x] == [h.id for h in y]
                for p, q in zip(x, y, strict=True):
                    assert p.scores == pytest.approx(q.scores, rel=1e-6, abs=1e-6)


@pytest.fixture
def trains_early(monkeypatch: pytest.MonkeyPatch) -> None:
    # The compact codec trains on this small corpus (it waits for far more vectors by default).
    monkeypatch.setattr(compact_store, "TRAIN_MIN_VECTORS", 300)
    monkeypatch.setattr(compact_store, "TRAIN_SAMPLE", 2000)


@pytest.mark.usefixtures("trains_early")
@pytest.mark.parametrize("storage", STORAGES)
def test_a_mapped_index_searches_like_the_loaded_one_through_segments_and_updates(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path, storage: str
) -> None:
    index = M3Index(tiny_model, colbert_storage=storage)
    target = tmp_path / "index"
    _add(index, encoded, 0, 100)
    index.save(target)
    _add(index, encoded, 100, 130)
    index.delete(["d7"])
    index.save(target, purge_deleted=False)  # a second segment and a tombstone
    if storage == "compact":
        assert index._stores.colbert.trained  # the codes, not float16 vectors, are what gets mapped

    resident = M3Index.load(target, model=tiny_model)
    mapped = M3Index.load(target, model=tiny_model, mmap=True)
    assert resident.memory_bytes()["colbert_mapped"] == 0
    sizes = mapped.memory_bytes()
    assert 0 < sizes["colbert_mapped"] <= sizes["colbert"] == resident.memory_bytes()["colbert"]
    _same_search(resident, mapped)
    _same_search(index, mapped)

    # Adds go to memory beside the mapped parts; a document may be replaced or deleted anywhere.
    for target_index in (resident, mapped):
        _add(target_index, encoded, 130, 150)
        target_index.add(["d3 is new text now"], ids=["d3"])
        target_index.delete(["d120"])
    _same_search(resident, mapped)
    assert mapped.memory_bytes()["colbert_mapped"] == sizes["colbert_mapped"]

    # An incremental save writes only the new rows; the saved folder loads (mapped) as the index.
    mapped.save(target, purge_deleted=False)
    again = M3Index.load(target, model=tiny_model, mmap=True)
    _same_search(resident, again)
    assert len(json.loads((target / "manifest.json").read_text())["segments"]) == 2

    # A whole save (deletes purged) compacts the mapped rows into memory, and removes the old data
    # folders while they are still mapped here: the mapped index keeps working.
    again.save(target)
    assert again.memory_bytes()["colbert_mapped"] == 0
    _same_search(resident, again)
    _same_search(resident, M3Index.load(target, model=tiny_model, mmap=True))


@pytest.mark.parametrize("storage", STORAGES)
def test_mapped_arrays_are_read_only_views_of_the_files(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compact_store, "TRAIN_MIN_VECTORS", 300)
    index = M3Index(tiny_model, colbert_storage=storage)
    _add(index, encoded, 0, 60)
    index.save(tmp_path / "index")
    mapped = M3Index.load(tmp_path / "index", model=tiny_model, mmap=True)
    store = mapped._stores.colbert
    columns = [store._ids, store._residual] if storage == "compact" else [store._vectors]
    for column in columns:
        ((_, part),) = column.chunks()
        assert is_mapped(part) and not part.flags.writeable
        assert part.ctypes.data % part.dtype.alignment == 0
    # Everything else is in memory.
    assert not is_mapped(mapped._stores.dense.vectors)
    # Saved whole elsewhere (no deleted row, so no compaction), the mapped rows are streamed into the
    # new file piece by piece, not gathered in memory: the index stays mapped.
    mapped.add(["one more document"], ids=["more"])
    mapped.save(tmp_path / "copy")
    assert mapped.memory_bytes()["colbert_mapped"] > 0
    _same_search(mapped, M3Index.load(tmp_path / "copy", model=tiny_model, mmap=True))


def test_write_npz_aligns_every_member_and_loads_with_numpy() -> None:
    arrays = {
        "a": np.arange(7, dtype=np.float16),
        "colbert": np.arange(15, dtype=np.float16).reshape(3, 5),
        "empty": np.zeros((0, 4), np.float32),
        "a_longer_member_name": np.arange(3, dtype=np.int64),
    }
    pieces = [
        np.arange(12, dtype=np.uint16).reshape(4, 3)[::2],
        np.zeros((0, 3), np.uint16),
        np.ones((3, 3), np.uint16),
    ]
    buffer = io.BytesIO()
    write_npz(buffer, {**arrays, "pieces": pieces})
    arrays["pieces"] = np.concatenate(pieces)  # written as one array, never joined in memory
    with pytest.raises(ValueError, match="pieces of one array differ"):
        write_npz(io.BytesIO(), {"mixed": [np.zeros((2, 3), np.uint16), np.zeros((2, 4), np.uint16)]})
    data = buffer.getvalue()
    with np.load(io.BytesIO(data)) as loaded:
        for name, array in arrays.items():
            np.testing.assert_array_equal(loaded[name], array)
            assert loaded[name].dtype == array.dtype
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for member in archive.infolist():
            assert member.compress_type == zipfile.ZIP_STORED
            fields = struct.unpack(
                zipfile.structFileHeader, data[member.header_offset : member.header_offset + 30]
            )
            start = member.header_offset + 30 + fields[10] + fields[11]
            stream = io.BytesIO(data[start : start + 4096])
            np.lib.format.read_magic(stream)
            np.lib.format.read_array_header_1_0(stream)
            assert (start + stream.tell()) % NPY_ALIGNMENT == 0, member.filename


def test_a_folder_saved_by_np_savez_still_loads_mapped(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    """Older saves wrote arrays.npz with np.savez (members at any offset): misaligned ones are copied."""
    index = M3Index(tiny_model)
    _add(index, encoded, 0, 40)
    target = tmp_path / "index"
    index.save(target)
    manifest = json.loads((target / "manifest.json").read_text())
    arrays_path = target / manifest["data"] / "arrays.npz"
    with np.load(arrays_path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays_path.unlink()
    np.savez(arrays_path, **arrays)

    manifest["files"]["arrays.npz"] = {
        "bytes": arrays_path.stat().st_size,
        "sha256": hashlib.sha256(arrays_path.read_bytes()).hexdigest(),
    }
    (target / "manifest.json").write_text(json.dumps(manifest))
    mapped = M3Index.load(target, model=tiny_model, mmap=True)
    _same_search(index, mapped)


def _saved(tiny_model: M3Model, encoded: M3Output, tmp_path: Path) -> tuple[Path, Path]:
    index = M3Index(tiny_model)
    _add(index, encoded, 0, 40)
    target = tmp_path / "index"
    index.save(target)
    manifest = json.loads((target / "manifest.json").read_text())
    return target, target / manifest["data"] / "arrays.npz"


def _colbert_data_offset(path: Path) -> int:
    data = path.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        member = archive.getinfo("colbert.npy")
    fields = struct.unpack(zipfile.structFileHeader, data[member.header_offset : member.header_offset + 30])
    return member.header_offset + 30 + fields[10] + fields[11] + 128


def _rewrite_colbert_bytes(arrays_path: Path, at: int, value: bytes) -> bytes:
    """Put ``value`` ``at`` bytes into the ColBERT vectors' data; returns the file's new bytes."""
    data = bytearray(arrays_path.read_bytes())
    offset = _colbert_data_offset(arrays_path) + at
    data[offset : offset + len(value)] = value
    arrays_path.write_bytes(bytes(data))
    return bytes(data)


def test_a_modified_mapped_file_is_refused_by_its_checksum(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    target, arrays_path = _saved(tiny_model, encoded, tmp_path)
    byte = arrays_path.read_bytes()[_colbert_data_offset(arrays_path) + 10]
    _rewrite_colbert_bytes(arrays_path, 10, bytes([byte ^ 0x40]))  # one byte of a ColBERT vector
    with pytest.raises(IndexLoadError, match="checksum"):
        M3Index.load(target, model=tiny_model, mmap=True)


def test_a_truncated_or_replaced_mapped_file_is_refused(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    target, arrays_path = _saved(tiny_model, encoded, tmp_path)
    data = arrays_path.read_bytes()
    arrays_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexLoadError, match="truncated or modified"):
        M3Index.load(target, model=tiny_model, mmap=True)
    arrays_path.unlink()
    arrays_path.symlink_to(tmp_path / "elsewhere.npz")
    (tmp_path / "elsewhere.npz").write_bytes(data)
    with pytest.raises(IndexLoadError, match="symbolic link"):
        M3Index.load(target, model=tiny_model, mmap=True)


def test_non_finite_mapped_vectors_are_refused(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path
) -> None:
    """The values are checked on a mapped load too (then the checked pages are let go)."""

    target, arrays_path = _saved(tiny_model, encoded, tmp_path)
    data = _rewrite_colbert_bytes(arrays_path, 0, np.array([np.inf], dtype=np.float16).tobytes())
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["arrays.npz"]["sha256"] = hashlib.sha256(data).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="colbert holds NaN or infinite values"):
        M3Index.load(target, model=tiny_model, mmap=True)


def test_mmap_must_be_a_bool(tiny_model: M3Model, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="mmap must be True or False"):
        M3Index.load(tmp_path / "index", model=tiny_model, mmap="yes")  # type: ignore[arg-type]


def test_row_parts_against_one_concatenated_array() -> None:
    """Frozen parts + a growing tail read as the one array they stand for (slices, gathers, scores)."""
    rng = np.random.default_rng(0)
    pieces = [rng.standard_normal((n, 3)).astype(np.float32) for n in (5, 0, 7)]
    rows = RowParts.from_parts([pieces[0], pieces[2]], np.dtype(np.float32), (3,))
    for n in (4, 1, 30):  # the tail grows several times
        new = rng.standard_normal((n, 3)).astype(np.float32)
        rows.append(new)
        pieces.append(new)
    whole = np.concatenate(pieces)
    assert len(rows) == len(whole) and rows.tail_start == 12
    for begin, end in [(0, len(whole)), (3, 9), (5, 12), (12, 13), (11, 40), (40, 40)]:
        np.testing.assert_array_equal(rows.slice(begin, end), whole[begin:end])
    picks = rng.integers(0, len(whole), size=50)
    np.testing.assert_array_equal(rows.take(picks), whole[picks])
    assert rows.nbytes() == whole.nbytes and rows.mapped_bytes() == 0

    # score_by_part hands each part its documents with part-local starts: the sum of a document's rows.
    starts = np.array([0, 5, 9, 12, 16, 17, 47, 12])
    lengths = np.array([5, 4, 3, 4, 1, 30, 0, 0])

    def score(arrays: list[np.ndarray], part_starts: np.ndarray, part_lengths: np.ndarray) -> np.ndarray:
        return np.array(
            [arrays[0][s : s + n].sum() for s, n in zip(part_starts, part_lengths, strict=True)], np.float32
        )

    expected = [whole[s : s + n].sum() for s, n in zip(starts, lengths, strict=True)]
    np.testing.assert_allclose(score_by_part([rows], starts, lengths, score), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.usefixtures("trains_early")
@pytest.mark.parametrize("storage", STORAGES)
def test_a_search_asks_the_kernel_for_its_candidates_pages_first(
    tiny_model: M3Model, encoded: M3Output, tmp_path: Path, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = M3Index(tiny_model, colbert_storage=storage)
    _add(index, encoded, 0, 60)
    index.save(tmp_path / "index")
    mapped = M3Index.load(tmp_path / "index", model=tiny_model, mmap=True)
    advised: list[int] = []
    prefetch = row_parts.prefetch_rows

    def recording(array: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> int:
        advised.append(prefetch(array, starts, lengths))
        return advised[-1]

    monkeypatch.setattr(row_parts, "prefetch_rows", recording)
    hits = mapped.search(QUERIES[0], k=5, candidates=8)
    want = index.search(QUERIES[0], k=5, candidates=8)
    assert [h.id for h in hits] == [h.id for h in want]
    for got, expected in zip(hits, want, strict=True):  # relative: kernels may differ by alignment
        assert got.scores == pytest.approx(expected.scores, rel=1e-6, abs=1e-6)
    # one range per candidate with ColBERT rows, per mapped column (vectors; or ids and residuals)
    assert max(advised) >= 8
    advised.clear()
    index.search(QUERIES[0], k=5, candidates=8)
    assert set(advised) == {0}  # in memory: nothing to advise


def test_prefetch_rows_advises_each_documents_pages_of_a_mapped_file(tmp_path: Path) -> None:
    rows = np.arange(4096 * 6, dtype=np.float32).reshape(-1, 64)
    path = tmp_path / "rows.bin"
    path.write_bytes(b"\0" * 100 + rows.tobytes())  # an offset that is not a page boundary
    with path.open("rb") as file:
        buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    mapped = np.frombuffer(buffer, dtype=np.float32, offset=100).reshape(-1, 64)
    starts, lengths = np.array([0, 10, 200, 383]), np.array([3, 0, 50, 1])
    assert row_parts.prefetch_rows(mapped, starts, lengths) == 3  # the empty document has no pages
    assert row_parts.prefetch_rows(rows, starts, lengths) == 0  # in memory
    assert row_parts.prefetch_rows(mapped, starts[:0], lengths[:0]) == 0
    np.testing.assert_array_equal(mapped, rows)  # reads as before
