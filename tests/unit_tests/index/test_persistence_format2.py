"""Index folders saved by the code before the engine restructure load, and answer exactly as they did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from m3_integrations import M3Index, M3Model
from tests.format2_fixture import VARIANTS, documents, run_searches

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "format2"


def _copy_for(model: M3Model, variant: str, tmp_path: Path) -> Path:
    """The variant's saved folder, copied, with the model identity of this run's tiny checkpoint.

    The tiny checkpoint is rebuilt at test time and its fingerprint hashes its config, which depends on
    the transformers version; the dimensions must still be the ones the folder was saved with.
    """
    folder = tmp_path / variant
    shutil.copytree(FIXTURES / variant / "index", folder)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert (manifest["dense_dim"], manifest["colbert_dim"], manifest["vocab_size"]) == (
        model.dense_dim,
        model.colbert_dim,
        model.vocab_size,
    )
    manifest["model"] = model.identity
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_saved_before_the_restructure_loads_and_answers_the_same(
    tiny_model: M3Model, tmp_path: Path, variant: str
) -> None:
    dims = (tiny_model.dense_dim, tiny_model.colbert_dim, tiny_model.vocab_size)
    expected = json.loads((FIXTURES / variant / "expected.json").read_text(encoding="utf-8"))
    index = M3Index.load(_copy_for(tiny_model, variant, tmp_path), model=tiny_model)
    assert index.ids == expected["ids"]
    docs = documents(dims)
    stored = {hit.id: hit for hit in index.get(index.ids)}
    for doc_id, text, metadata in zip(docs["ids"], docs["texts"], docs["metadatas"], strict=True):
        if doc_id in stored:
            assert (stored[doc_id].text, stored[doc_id].metadata) == (text, metadata)
    results = run_searches(index, variant, dims)
    assert len(results) == len(expected["results"])
    for got_query, want_query in zip(results, expected["results"], strict=True):
        for got, want in zip(got_query, want_query, strict=True):
            assert [h[0] for h in got] == [h[0] for h in want]
            for (_, score, scores), (_, want_score, want_scores) in zip(got, want, strict=True):
                assert score == pytest.approx(want_score, rel=1e-5, abs=1e-6)
                assert scores == pytest.approx(want_scores, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_saved_before_the_restructure_takes_adds_and_saves_again(
    tiny_model: M3Model, tmp_path: Path, variant: str
) -> None:
    folder = _copy_for(tiny_model, variant, tmp_path)
    index = M3Index.load(folder, model=tiny_model)
    index.add(["a document added after loading"], ids=["late"], metadatas=[{"group": "z"}])
    index.save(folder)
    again = M3Index.load(folder, model=tiny_model)
    assert again.ids == index.ids and again.ids[-1] == "late"
    assert [
        h.id for h in again.search("retrieval fusion", k=3, mode="dense+sparse", filter={"group": "a"})
    ] == [h.id for h in index.search("retrieval fusion", k=3, mode="dense+sparse", filter={"group": "a"})]
