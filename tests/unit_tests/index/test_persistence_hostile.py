"""Hostile or damaged index folders: ``M3Index.load`` raises ``IndexLoadError`` naming the file, quickly.

Every case starts from a folder a real save wrote and changes one thing. Where the change would only
trip the checksum, the manifest's size and SHA-256 are updated too, so the check behind it is reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import IndexLoadError, M3Index, M3Model
from tests.common import INDEX_TEXTS
from tests.legacy_format1 import save_format1

SECONDS = 5.0


@pytest.fixture(scope="module")
def originals(tiny_model: M3Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good folders: format 2 with int8 ColBERT and word BM25, format 2 float16, and format 1."""
    root = tmp_path_factory.mktemp("good")
    ids = [f"doc{i}" for i in range(len(INDEX_TEXTS))]
    metadatas = [{"i": i} for i in range(len(INDEX_TEXTS))]
    int8 = M3Index(tiny_model, colbert_dtype="int8", bm25_tokenizer="word")
    int8.add(INDEX_TEXTS, ids=ids, metadatas=metadatas)
    int8.save(root / "int8")
    float16 = M3Index(tiny_model)
    float16.add(INDEX_TEXTS, ids=ids, metadatas=metadatas)
    float16.save(root / "float16")
    save_format1(int8, root / "format1")
    return {"int8": root / "int8", "float16": root / "float16", "format1": root / "format1"}


# ---------------------------------------------------------------------------- editing helpers
def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _write_manifest(folder: Path, manifest: object) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _data(folder: Path) -> Path:
    manifest = _manifest(folder)
    return folder / manifest["data"] if manifest["format_version"] == 2 else folder


def _rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace a data file and record its new size and hash, so only the checks behind the hash see it."""
    (_data(folder) / name).write_bytes(data)
    manifest = _manifest(folder)
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_manifest(folder, manifest)


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    with np.load(_data(folder) / "arrays.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _save_arrays(folder: Path, arrays: dict[str, np.ndarray], *, compressed: bool = False) -> None:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    _rewrite(folder, "arrays.npz", buffer.getvalue())


def _edit_arrays(edit: Callable[[dict[str, np.ndarray]], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        arrays = _arrays(folder)
        edit(arrays)
        _save_arrays(folder, arrays)

    return apply


def _edit_json(name: str, edit: Callable[[dict], object], *, replace: bool = False) -> Callable[[Path], None]:
    """Change the JSON file ``name`` in place, or (``replace``) write what ``edit`` returns instead."""

    def apply(folder: Path) -> None:
        value = json.loads((_data(folder) / name).read_text())
        result = edit(value)
        _rewrite(folder, name, json.dumps(result if replace else value).encode())

    return apply


def _edit_manifest(edit: Callable[[dict], object], *, replace: bool = False) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = _manifest(folder)
        result = edit(manifest)
        _write_manifest(folder, result if replace else manifest)

    return apply


def _set(arrays: dict, key: str, index: object, value: object) -> None:
    array = arrays[key].copy()
    array[index] = value
    arrays[key] = array


# ---------------------------------------------------------------------------- the hostile folders
def _rename_entry(new_name: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = _manifest(folder)
        manifest["files"][new_name] = manifest["files"].pop("documents.json")
        _write_manifest(folder, manifest)

    return apply


def _traversal(folder: Path) -> None:
    shutil.copy(_data(folder) / "documents.json", folder.parent / "documents.json")
    _rename_entry("../../documents.json")(folder)


def _named_outside(target: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        manifest = _manifest(folder)
        data = Path(target).read_bytes() if Path(target).is_file() else b""
        manifest["files"][target] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        _write_manifest(folder, manifest)

    return apply


def _symlink_outside(folder: Path) -> None:
    outside = folder.parent / "elsewhere.json"
    shutil.move(_data(folder) / "documents.json", outside)  # same bytes: the checksum would pass
    (_data(folder) / "documents.json").symlink_to(outside)


def _symlink_dev_zero(folder: Path) -> None:
    (_data(folder) / "arrays.npz").unlink()
    (_data(folder) / "arrays.npz").symlink_to("/dev/zero")


def _fifo(folder: Path) -> None:
    (_data(folder) / "documents.json").unlink()
    os.mkfifo(_data(folder) / "documents.json")


def _fifo_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()
    os.mkfifo(folder / "manifest.json")


def _symlink_manifest(folder: Path) -> None:
    shutil.move(folder / "manifest.json", folder.parent / "real-manifest.json")
    (folder / "manifest.json").symlink_to(folder.parent / "real-manifest.json")


def _folder_instead_of_file(folder: Path) -> None:
    (_data(folder) / "documents.json").unlink()
    (_data(folder) / "documents.json").mkdir()


def _data_folder_symlink(folder: Path) -> None:
    data = _data(folder)
    shutil.move(data, folder.parent / "moved-data")
    data.symlink_to(folder.parent / "moved-data", target_is_directory=True)


def _npz_bomb(folder: Path) -> None:
    # The dense member carries 64 MB of zeros after its data, deflated to about 64 KB: the member names
    # and npy headers are what the manifest expects, only the compression gives it away. (Format 2
    # refuses the file's size first; format 1 records no exact size.)
    arrays = _arrays(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.save(member, array)
            archive.writestr(f"{key}.npy", member.getvalue() + (bytes(64 << 20) if key == "dense" else b""))
    _rewrite(folder, "arrays.npz", buffer.getvalue())


def _compressed_member(folder: Path) -> None:
    _save_arrays(folder, _arrays(folder), compressed=True)


def _oversized_member(folder: Path) -> None:
    arrays = _arrays(folder)
    arrays["dense"] = np.zeros((len(arrays["dense"]) * 64, arrays["dense"].shape[1]), dtype=np.float32)
    _save_arrays(folder, arrays)


def _truncated_npz(folder: Path) -> None:
    data = (_data(folder) / "arrays.npz").read_bytes()
    _rewrite(folder, "arrays.npz", data[: len(data) * 2 // 3])


def _truncated_npz_keeping_the_manifest(folder: Path) -> None:
    file = _data(folder) / "arrays.npz"
    file.write_bytes(file.read_bytes()[:-100])


def _object_member(folder: Path) -> None:
    arrays = _arrays(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            value = np.array([{"payload": 1}] * len(array), dtype=object) if key == "dense" else array
            np.save(member, value, allow_pickle=True)
            archive.writestr(f"{key}.npy", member.getvalue())
    _rewrite(folder, "arrays.npz", buffer.getvalue())


def _extra_member(folder: Path) -> None:
    arrays = _arrays(folder)
    arrays["extra"] = np.zeros(3)
    _save_arrays(folder, arrays)


def _deep_documents(folder: Path) -> None:
    text = (_data(folder) / "documents.json").read_text()
    deep = "[" * 200_000 + "]" * 200_000
    _rewrite(folder, "documents.json", text.replace('"metadatas": [', f'"metadatas": [{deep}, ', 1).encode())


def _raw_manifest(raw: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        (folder / "manifest.json").write_bytes(raw)

    return apply


def _manifest_text(pattern: str, new: str) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        text, replaced = re.subn(pattern, new, (folder / "manifest.json").read_text(), count=1)
        assert replaced == 1
        (folder / "manifest.json").write_text(text)

    return apply


def _missing_data_folder(folder: Path) -> None:
    shutil.rmtree(_data(folder))


def _fingerprint(manifest: dict) -> None:
    manifest["model"]["fingerprint"] = "0" * 16


CASES: list[tuple[str, str, Callable[[Path], None], str]] = [
    # (case, original folder, change, what the message must name)
    ("no files table", "int8", _edit_manifest(lambda m: m.pop("files")), "manifest.json"),
    ("files table is a list", "int8", _edit_manifest(lambda m: m.update(files=[])), "manifest.json"),
    ("path traversal name", "int8", _traversal, "manifest.json"),
    ("absolute name", "int8", _named_outside("/etc/hostname"), "manifest.json"),
    ("/dev/zero named", "int8", _named_outside("/dev/zero"), "manifest.json"),
    ("NUL in a name", "int8", _rename_entry("documents.json\x00"), "manifest.json"),
    ("backslash name", "int8", _rename_entry("..\\documents.json"), "manifest.json"),
    ("data folder outside", "int8", _edit_manifest(lambda m: m.update(data="../elsewhere")), "manifest.json"),
    ("unexpected file name", "int8", _rename_entry("other.json"), "manifest.json"),
    ("symlink to a file outside", "int8", _symlink_outside, "documents.json"),
    ("symlink to /dev/zero", "int8", _symlink_dev_zero, "arrays.npz"),
    ("data folder is a symlink", "int8", _data_folder_symlink, "v-"),
    ("data folder missing", "int8", _missing_data_folder, "v-"),
    ("FIFO", "int8", _fifo, "documents.json"),
    ("FIFO manifest", "int8", _fifo_manifest, "manifest.json"),
    ("symlinked manifest", "int8", _symlink_manifest, "manifest.json"),
    ("folder instead of a file", "int8", _folder_instead_of_file, "documents.json"),
    ("npz bomb", "int8", _npz_bomb, "arrays.npz"),
    ("npz bomb, format 1", "format1", _npz_bomb, "arrays.npz"),
    ("compressed npz, format 1", "format1", _compressed_member, "arrays.npz"),
    ("oversized member", "int8", _oversized_member, "arrays.npz"),
    ("oversized member, format 1", "format1", _oversized_member, "arrays.npz"),
    ("truncated npz", "int8", _truncated_npz, "arrays.npz"),
    ("truncated npz, format 1", "format1", _truncated_npz, "arrays.npz"),
    ("truncated npz, manifest kept", "int8", _truncated_npz_keeping_the_manifest, "arrays.npz"),
    ("pickled object member", "int8", _object_member, "arrays.npz"),
    ("extra npz member", "int8", _extra_member, "arrays.npz"),
    (
        "float64 dense",
        "int8",
        _edit_arrays(lambda a: a.update(dense=a["dense"].astype(np.float64))),
        "arrays.npz",
    ),
    (
        "big-endian dense",
        "int8",
        _edit_arrays(lambda a: a.update(dense=a["dense"].astype(">f4"))),
        "arrays.npz",
    ),
    (
        "int32 indices",
        "int8",
        _edit_arrays(lambda a: a.update(bm25_indices=a["bm25_indices"].astype(np.int32))),
        "arrays.npz",
    ),
    (
        "wrong dense shape",
        "int8",
        _edit_arrays(lambda a: a.update(dense=a["dense"][:, :-1].copy())),
        "arrays.npz",
    ),
    ("NaN in dense", "int8", _edit_arrays(lambda a: _set(a, "dense", (2, 3), np.nan)), "arrays.npz"),
    ("infinite dense value", "int8", _edit_arrays(lambda a: _set(a, "dense", (0, 0), np.inf)), "arrays.npz"),
    ("NaN in ColBERT", "float16", _edit_arrays(lambda a: _set(a, "colbert", (1, 1), np.nan)), "arrays.npz"),
    ("zero ColBERT scale", "int8", _edit_arrays(lambda a: _set(a, "colbert_scale", 0, 0.0)), "arrays.npz"),
    ("NaN lexical weight", "int8", _edit_arrays(lambda a: _set(a, "lex_data", 0, np.nan)), "arrays.npz"),
    ("negative lexical weight", "int8", _edit_arrays(lambda a: _set(a, "lex_data", 0, -1.0)), "arrays.npz"),
    (
        "lexical index outside the vocabulary",
        "int8",
        _edit_arrays(lambda a: _set(a, "lex_indices", 0, 10**9)),
        "arrays.npz",
    ),
    (
        "BM25 index outside the words",
        "int8",
        _edit_arrays(lambda a: _set(a, "bm25_indices", 0, 10**6)),
        "arrays.npz",
    ),
    ("negative BM25 index", "int8", _edit_arrays(lambda a: _set(a, "bm25_indices", 0, -1)), "arrays.npz"),
    ("indptr not adding up", "int8", _edit_arrays(lambda a: _set(a, "bm25_indptr", -1, 1)), "arrays.npz"),
    ("decreasing indptr", "int8", _edit_arrays(lambda a: _set(a, "lex_indptr", 1, 10**6)), "arrays.npz"),
    ("NaN term frequency", "int8", _edit_arrays(lambda a: _set(a, "bm25_data", 0, np.nan)), "arrays.npz"),
    (
        "negative document length",
        "int8",
        _edit_arrays(lambda a: _set(a, "bm25_doc_len", 0, -5.0)),
        "arrays.npz",
    ),
    ("negative ColBERT length", "int8", _edit_arrays(lambda a: _set(a, "colbert_len", 0, -1)), "arrays.npz"),
    (
        "ColBERT lengths not adding up",
        "int8",
        _edit_arrays(lambda a: _set(a, "colbert_len", 0, 0)),
        "arrays.npz",
    ),
    ("NaN k1", "int8", _edit_manifest(lambda m: m["bm25"].update(k1=float("nan"))), "manifest.json"),
    (
        "infinite epsilon",
        "int8",
        _edit_manifest(lambda m: m["bm25"].update(epsilon=float("inf"))),
        "manifest.json",
    ),
    ("b out of range", "int8", _edit_manifest(lambda m: m["bm25"].update(b=2)), "manifest.json"),
    ("k1 a string", "int8", _edit_manifest(lambda m: m["bm25"].update(k1="1.5")), "manifest.json"),
    (
        "integer ids",
        "int8",
        _edit_json("documents.json", lambda d: d.update(ids=list(range(len(d["ids"]))))),
        "documents.json",
    ),
    (
        "null texts",
        "int8",
        _edit_json("documents.json", lambda d: d["texts"].__setitem__(3, None)),
        "documents.json",
    ),
    (
        "non-dict metadata",
        "int8",
        _edit_json("documents.json", lambda d: d["metadatas"].__setitem__(0, [1])),
        "documents.json",
    ),
    (
        "duplicate ids",
        "int8",
        _edit_json("documents.json", lambda d: d["ids"].__setitem__(1, d["ids"][0])),
        "documents.json",
    ),
    ("too few documents", "int8", _edit_json("documents.json", lambda d: d["texts"].pop()), "documents.json"),
    ("documents a list", "int8", _edit_json("documents.json", lambda d: [d], replace=True), "documents.json"),
    ("deep JSON nesting", "int8", _deep_documents, "documents.json"),
    (
        "non-UTF-8 documents",
        "int8",
        lambda f: _rewrite(f, "documents.json", b'{"ids": ["\xff"]}'),
        "documents.json",
    ),
    (
        "vocabulary not unique",
        "int8",
        _edit_json("bm25_vocab.json", lambda v: v.__setitem__(1, v[0])),
        "bm25_vocab.json",
    ),
    (
        "vocabulary of numbers",
        "int8",
        _edit_json("bm25_vocab.json", lambda v: list(range(len(v))), replace=True),
        "bm25_vocab.json",
    ),
    ("vocabulary too short", "int8", _edit_json("bm25_vocab.json", lambda v: v.pop()), "bm25_vocab.json"),
    ("manifest is a list", "int8", _edit_manifest(lambda m: [m], replace=True), "manifest.json"),
    ("manifest not UTF-8", "int8", _raw_manifest(b'{"format": "\xff\xfe"}'), "manifest.json"),
    ("deep manifest", "int8", _raw_manifest(b"[" * 200_000 + b"]" * 200_000), "manifest.json"),
    ("huge declared counts", "int8", _edit_manifest(lambda m: m.update(count=10**12)), "manifest.json"),
    (
        "huge ColBERT count",
        "int8",
        _edit_manifest(lambda m: m.update(colbert_vectors=10**13)),
        "manifest.json",
    ),
    ("absurd count", "int8", _edit_manifest(lambda m: m.update(count=10**400)), "manifest.json"),
    ("count as a float", "int8", _manifest_text(r'"count": \d+,', '"count": 1e400,'), "manifest.json"),
    ("count a string", "int8", _edit_manifest(lambda m: m.update(count="16")), "manifest.json"),
    ("unknown dtype", "int8", _edit_manifest(lambda m: m.update(dense_dtype="object")), "manifest.json"),
    ("unknown format version", "int8", _edit_manifest(lambda m: m.update(format_version=3)), "manifest.json"),
    ("model mismatch", "int8", _edit_manifest(_fingerprint), "manifest.json"),
    ("dimension mismatch", "int8", _edit_manifest(lambda m: m.update(colbert_dim=True)), "manifest.json"),
    (
        "unknown stemmer",
        "int8",
        _edit_manifest(lambda m: m.update(bm25_words={"stemmer": "klingon"})),
        "manifest.json",
    ),
    ("format 1 without files table", "format1", _edit_manifest(lambda m: m.pop("files")), "manifest.json"),
    ("format 1 path traversal", "format1", _traversal, "manifest.json"),
    (
        "format 1 NaN in dense",
        "format1",
        _edit_arrays(lambda a: _set(a, "dense", (0, 0), np.nan)),
        "arrays.npz",
    ),
]


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mapped"])
@pytest.mark.parametrize("spec", CASES, ids=[c[0] for c in CASES])
def test_hostile_folder_raises_index_load_error_naming_the_file(
    originals: dict[str, Path], tiny_model: M3Model, tmp_path: Path, spec: tuple, mmap: bool
) -> None:
    case, original, change, named = spec
    folder = tmp_path / "box" / "index"  # "box" keeps files a case moves outside inside tmp_path
    folder.parent.mkdir()
    shutil.copytree(originals[original], folder, symlinks=True)
    change(folder)
    outcome: dict[str, object] = {}

    def load() -> None:
        try:
            M3Index.load(folder, model=tiny_model, mmap=mmap)  # mapped: the same checks, the same errors
        except BaseException as err:  # the test inspects whatever comes out
            outcome["error"] = err
        else:
            outcome["loaded"] = True

    start = time.perf_counter()
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    elapsed = time.perf_counter() - start
    assert not worker.is_alive(), f"{case}: load hangs"
    error = outcome.get("error")
    assert isinstance(error, IndexLoadError), f"{case}: load gave {error!r} instead of IndexLoadError"
    assert named in str(error), f"{case}: the message does not name {named}: {error}"
    assert elapsed < SECONDS, f"{case}: load took {elapsed:.1f}s"
    if case in ("model mismatch", "dimension mismatch"):
        assert str(error).startswith("model mismatch")
    print(f"{case}: {error}")  # the messages, for a reader running with -s


def test_good_originals_load(originals: dict[str, Path], tiny_model: M3Model) -> None:
    # The cases above fail because of their one change, not because the originals are unloadable.
    for folder in originals.values():
        assert len(M3Index.load(folder, model=tiny_model)) == len(INDEX_TEXTS)
        assert len(M3Index.load(folder, model=tiny_model, mmap=True)) == len(INDEX_TEXTS)
