"""``--store`` on the command line: index into, search and evaluate local Qdrant and Milvus Lite stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main
from m3_integrations.stores.uri import open_store

DOCS = {
    "capitals.txt": "Paris is the capital of France and Berlin is the capital of Germany.",
    "fox.md": "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "hybrid.txt": "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
}


@pytest.fixture
def docs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def store_uris(tmp_path: Path) -> dict[str, str]:
    return {
        "qdrant": f"qdrant+local://{tmp_path / 'qdrant'}?collection=files",
        "milvus": f"milvus-lite://{tmp_path / 'milvus.db'}?collection=files",
    }


@pytest.mark.parametrize("backend", ["qdrant", "milvus"])
def test_index_then_search_a_store(
    backend: str, docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys
) -> None:
    uri = store_uris(tmp_path)[backend]
    assert main(["index", str(docs_dir), "--store", uri, "--model", tiny_checkpoint, "-q"]) == EXIT_OK
    assert "into " + uri in capsys.readouterr().out
    argv = ["search", "--store", uri, "capital of France", "fox", "-k", "2", "--json", "-q"]
    assert main([*argv, "--model", tiny_checkpoint]) == EXIT_OK
    entries = json.loads(capsys.readouterr().out)
    assert [e["query"] for e in entries] == ["capital of France", "fox"]
    # The same hits as an index folder built from the same files.
    folder = tmp_path / "folder"
    assert main(["index", str(docs_dir), "--out", str(folder), "--model", tiny_checkpoint, "-q"]) == EXIT_OK
    capsys.readouterr()
    folder_argv = ["search", str(folder), "capital of France", "fox", "-k", "2", "--json", "-q"]
    assert main([*folder_argv, "--model", tiny_checkpoint]) == EXIT_OK
    expected = json.loads(capsys.readouterr().out)
    assert [[h["id"] for h in e["hits"]] for e in entries] == [[h["id"] for h in e["hits"]] for e in expected]


def test_eval_fills_an_empty_store_and_scores_it(tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    corpus = [("d1", "Paris is the capital of France."), ("d2", "The quick brown fox."), ("d3", "Seoul.")]
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n" for i, t in corpus), encoding="utf-8"
    )
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "capital"}) + "\n", encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    uri = store_uris(tmp_path)["qdrant"]
    out = tmp_path / "r.json"
    argv = ["eval", "--data", str(root), "--store", uri, "--model", tiny_checkpoint, "-q", "--json", str(out)]
    assert main([*argv, "--latency-queries", "0"]) == EXIT_OK
    result = json.loads(out.read_text())
    assert result["store"] == uri and result["num_documents"] == 3
    assert len(open_store(uri, M3Model(tiny_checkpoint, device="cpu"))) == 3


def test_store_command_line_errors(docs_dir: Path, tmp_path: Path, tiny_checkpoint: str, capsys) -> None:
    uri = store_uris(tmp_path)["qdrant"]
    index = ["index", str(docs_dir), "--model", tiny_checkpoint, "-q"]
    assert main(index) == EXIT_USAGE  # neither --out nor --store
    assert main([*index, "--store", uri, "--out", str(tmp_path / "o")]) == EXIT_USAGE
    assert main([*index, "--store", uri, "--lexical", "bm25"]) == EXIT_USAGE
    assert "--lexical" in capsys.readouterr().err
    assert main([*index, "--store", "redis://localhost/docs"]) == EXIT_USAGE
    assert "unknown scheme" in capsys.readouterr().err
    assert main([*index, "--store", "qdrant://user:secret@host/docs"]) == EXIT_USAGE
    assert "QDRANT_API_KEY" in capsys.readouterr().err
    # A collection made with another model is refused before anything is written.
    assert main([*index, "--store", uri]) == EXIT_OK
    other = tmp_path / "other"
    from m3_integrations.testing import build_tiny_checkpoint

    build_tiny_checkpoint(other, seed=3)
    assert main(["index", str(docs_dir), "--model", str(other), "-q", "--store", uri]) == EXIT_INPUT
    assert "fingerprint" in capsys.readouterr().err


def test_uri_forms(tmp_path: Path, tiny_model: M3Model) -> None:
    store = open_store(f"qdrant+local://{tmp_path}/q", tiny_model)
    assert store.collection_name == "docs"
    for bad, words in [
        ("qdrant://", "no host"),
        ("qdrant://h/a/b", "collection name"),
        ("qdrant://h/docs?collection=x", "not both"),
        ("qdrant+local://host/path", "local store names a path"),
        ("milvus-lite:///x.db?shards=2", "unknown parameter"),
    ]:
        with pytest.raises(ValueError, match=words):
            open_store(bad, tiny_model)
