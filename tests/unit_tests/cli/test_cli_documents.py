"""The CLI's document path: reading with the core reader, chunking, and per-document evaluation of chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from m3_integrations.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE, main

# Long enough for several chunks of 16 tokens of the tiny checkpoint's tokenizer.
LONG_NOTE = (
    "# Hybrid retrieval\n\n"
    "Dense vectors capture meaning. Lexical weights reward exact words. Late interaction matches "
    "every query token with its best partner in the passage.\n\n"
    "## Fusion\n\n"
    "A weighted sum adds the three scores. Reciprocal rank fusion looks only at positions, and "
    "relative score fusion rescales each list first.\n\n"
    "## Costs\n\n"
    "The multi-vector score is the most precise and the most expensive to store, since a passage "
    "keeps one vector per token."
)
CORPUS = [
    ("d1", "France", "Paris is the capital of France. The city lies on the Seine and has many museums."),
    ("d2", "", "The quick brown fox jumps over the lazy dog. The dog sleeps in the warm afternoon sun."),
    ("d3", "", "서울은 대한민국의 수도이다. 한강이 도시를 가로질러 흐르고 인구가 많다."),
    ("d4", "", "Vector databases store embeddings for similarity search. They index millions of vectors."),
]
QUERIES = [
    ("q1", "capital of France"),
    ("q2", "quick fox"),
    ("q3", "대한민국의 수도"),
    ("q4", "vector search"),
]


def _write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, title, text in CORPUS:
            fh.write(json.dumps({"_id": did, "title": title, "text": text}, ensure_ascii=False) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in QUERIES:
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq3\td3\t1\nq4\td4\t1\nq4\td1\t1\n"
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    return _write_beir(tmp_path / "autorag" / "page")


def _stored(index_dir: Path, model) -> dict[str, tuple[str, dict]]:
    from m3_integrations import M3Index

    index = M3Index.load(index_dir, model)
    return {hit.id: (hit.text, hit.metadata) for hit in index.get(index.ids)}


# ---------------------------------------------------------------------------- index: reading
def test_index_of_a_beir_folder_holds_its_corpus_only(
    beir: Path, tmp_path: Path, tiny_checkpoint: str, tiny_model, capsys
) -> None:
    # Regression: the folder's queries.jsonl was indexed as documents too (834 = 720 + 114).
    out = tmp_path / "page.index"
    assert main(["index", str(beir), "--out", str(out), "--model", tiny_checkpoint]) == EXIT_OK
    captured = capsys.readouterr()
    assert "indexed 4 documents into" in captured.out
    assert f"BEIR folder {beir}: read corpus.jsonl only (queries and qrels are not documents)" in captured.err
    stored = _stored(out, tiny_model)
    assert sorted(stored) == ["d1", "d2", "d3", "d4"]  # records are passages: not chunked by default
    assert stored["d1"][0] == "France\n" + CORPUS[0][2]


def test_index_says_what_it_skipped_with_counts(
    tmp_path: Path, tiny_checkpoint: str, tiny_model, capsys
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("# Note\n\nBGE-M3 has three outputs.", encoding="utf-8")
    (docs / "blank.txt").write_text("  \n", encoding="utf-8")
    (docs / "data.xyz").write_text("?", encoding="utf-8")
    (docs / "more.xyz").write_text("?", encoding="utf-8")
    records = [{"_id": "r1", "text": "A passage."}, {"_id": "r2", "text": "  "}]
    (docs / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    out = tmp_path / "i"
    assert main(["index", str(docs), "--out", str(out), "--model", tiny_checkpoint]) == EXIT_OK
    err = capsys.readouterr().err.splitlines()
    assert "skipped 2 files of unsupported type .xyz: data.xyz, more.xyz" in err
    assert "skipped 2 empty documents: blank.txt, records.jsonl:2" in err
    assert sorted(_stored(out, tiny_model)) == ["note.md#0", "r1"]

    # --quiet: nothing on stderr
    assert main(["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "-q"]) == EXIT_OK
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.pdf", b"not a pdf at all", "bad.pdf: cannot read as PDF"),
        ("bad.jsonl", b'{"_id": "a", "text": "ok"}\n{not json\n', "bad.jsonl:2: not valid JSON"),
    ],
)
def test_index_fails_on_a_damaged_file_before_the_model_loads(
    *, name: str, content: bytes, message: str, tmp_path: Path, tiny_checkpoint: str, model_loads, capsys
) -> None:
    pytest.importorskip("pypdf")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("Fine text.", encoding="utf-8")
    (docs / name).write_bytes(content)
    out = tmp_path / "i"
    assert main(["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("m3-integrations index: error: ") and message in err and err.count("\n") == 1
    assert model_loads == []
    assert not out.exists()


def test_index_reads_html(tmp_path: Path, tiny_checkpoint: str, tiny_model) -> None:
    pytest.importorskip("bs4")
    docs = tmp_path / "docs"
    docs.mkdir()
    html = "<html><head><title>T</title><script>var x;</script></head><body><h1>Seoul</h1><p>The capital.</p>"
    (docs / "page.html").write_text(html + "</body></html>", encoding="utf-8")
    out = tmp_path / "i"
    assert main(["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "-q"]) == EXIT_OK
    assert _stored(out, tiny_model)["page.html#0"][0] == "# Seoul\n\nThe capital."


# ---------------------------------------------------------------------------- index: chunking
def test_index_chunks_files_as_the_chunker_does(tmp_path: Path, tiny_model, tiny_checkpoint: str, capsys):
    from m3_integrations.chunking import Chunker
    from m3_integrations.documents import read_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text(LONG_NOTE, encoding="utf-8")
    _write_beir(docs / "beir")
    out = tmp_path / "i"
    argv = ["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "-q"]
    assert main([*argv, "--chunk-tokens", "16", "--chunk-overlap", "4"]) == EXIT_OK
    assert "(at most 16 tokens, overlap 4)" in capsys.readouterr().out

    documents, _ = read_documents([docs])
    expected = Chunker(tiny_model, 16, 4).split_documents(documents)
    stored = _stored(out, tiny_model)
    # --chunk-tokens N chunks everything: files and records
    assert sorted(stored) == sorted(c.id for c in expected)
    long_chunks = [c for c in expected if c.source_id == "long.md"]
    assert len(long_chunks) > 3
    for chunk in expected:
        text, metadata = stored[chunk.id]
        assert text == chunk.text
        assert metadata["source_id"] == chunk.source_id and metadata["chunk_index"] == chunk.index
        assert (metadata["start"], metadata["end"]) == (chunk.start, chunk.end)
        assert metadata["num_tokens"] <= 16
    source = (docs / "long.md").read_text(encoding="utf-8")
    assert all(stored[c.id][0] == source[c.start : c.end] for c in long_chunks)


def test_index_chunking_defaults_per_input_kind(tmp_path: Path, tiny_checkpoint: str, tiny_model) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    # Over the default 384 tokens: a long file is cut; records stay whole by default.
    (docs / "long.md").write_text("\n\n".join([LONG_NOTE] * 12), encoding="utf-8")
    _write_beir(docs / "beir")
    out = tmp_path / "i"
    argv = ["index", str(docs), "--out", str(out), "--model", tiny_checkpoint, "-q"]
    assert main(argv) == EXIT_OK
    stored = _stored(out, tiny_model)
    chunk_ids = sorted(i for i in stored if i.startswith("long.md#"))
    assert len(chunk_ids) > 1 and sorted(set(stored) - set(chunk_ids)) == ["d1", "d2", "d3", "d4"]
    assert max(stored[i][1]["num_tokens"] for i in chunk_ids) <= 384

    for flags in (["--no-chunking"], ["--chunk-tokens", "0"]):
        assert main([*argv, *flags]) == EXIT_OK
        assert sorted(_stored(out, tiny_model)) == ["d1", "d2", "d3", "d4", "long.md"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunk-tokens", "4"], "--chunk-tokens must be 0 (no chunking) or at least 8, got 4"),
        (["--chunk-tokens", "16", "--chunk-overlap", "16"], "--chunk-overlap (16) must be smaller"),
        (["--chunk-overlap", "400"], "--chunk-overlap (400) must be smaller than --chunk-tokens (384)"),
        (["--no-chunking", "--chunk-tokens", "16"], "contradict each other"),
        (["--no-chunking", "--chunk-overlap", "8"], "--chunk-overlap needs chunking"),
        (["--chunk-tokens", "-1"], "must be an integer >= 0"),
    ],
)
def test_bad_chunk_options_exit_2_before_anything_loads(
    *, flags: list[str], message: str, tmp_path: Path, tiny_checkpoint: str, model_loads, capsys
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("text", encoding="utf-8")
    argv = ["index", str(docs), "--out", str(tmp_path / "i"), "--model", tiny_checkpoint, *flags]
    assert main(argv) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert model_loads == []


# ---------------------------------------------------------------------------- eval on chunks
def _document_run(index, queries: dict[str, str], k: int, **search) -> dict[str, list[str]]:
    """Naive reference: every chunk scored, then each document ranked by its best chunk."""
    run = {}
    for qid, query in queries.items():
        best: dict[str, float] = {}
        for hit in index.search(query, k=len(index), **search):
            source = hit.metadata.get("source_id", hit.id)
            best[source] = max(best.get(source, float("-inf")), hit.score)
        run[qid] = sorted(best, key=lambda d: -best[d])[:k]
    return run


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_eval_on_chunks_scores_documents_by_their_best_chunk(
    *, mode: str, beir: Path, tmp_path: Path, tiny_model, tiny_checkpoint: str, capsys
) -> None:
    from m3_integrations import M3Index
    from m3_integrations.chunking import Chunker
    from m3_integrations.documents import SourceDocument
    from m3_integrations.evaluation import evaluate_run, load_beir

    out = tmp_path / "r.json"
    argv = ["eval", "--data", str(beir), "--model", tiny_checkpoint, "--mode", mode, "-k", "2"]
    argv += ["--chunk-tokens", "8", "--chunk-overlap", "2", "--latency-queries", "1", "--json", str(out)]
    assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    assert "Scored per document" in printed and "a document scores as its best chunk" in printed
    result = json.loads(out.read_text())

    data = load_beir(beir)
    chunks = Chunker(tiny_model, 8, 2).split_documents(
        SourceDocument(d.id, d.content, {"id": d.id}) for d in data.corpus.values()
    )
    assert result["num_chunks"] == len(chunks) > 2 * len(data.corpus)
    index = M3Index(tiny_model)
    index.add([c.text for c in chunks], ids=[c.id for c in chunks], metadatas=[c.metadata for c in chunks])
    run = _document_run(index, data.queries, 2, mode=mode)
    assert all(len(docs) == 2 for docs in run.values())  # k documents, not k chunks
    expected = evaluate_run(run, data.qrels)
    assert result["results"][0]["metrics"] == pytest.approx(expected, rel=1e-6)


def test_eval_reuses_a_chunked_index_of_the_corpus(
    *, beir: Path, tmp_path: Path, tiny_checkpoint: str, model_loads, capsys, monkeypatch
) -> None:
    from m3_integrations import M3Index

    index = tmp_path / "page.index"
    chunking = ["--chunk-tokens", "8", "--chunk-overlap", "2"]
    build = ["index", str(beir / "corpus.jsonl"), "--out", str(index), "--model", tiny_checkpoint, "-q"]
    assert main([*build, *chunking]) == EXIT_OK
    built, reused = tmp_path / "built.json", tmp_path / "reused.json"
    common = ["--data", str(beir), "--model", tiny_checkpoint, "--mode", "dense", "hybrid", "-k", "3", "-q"]
    common += ["--latency-queries", "0"]
    assert main(["eval", *common, *chunking, "--json", str(built)]) == EXIT_OK

    monkeypatch.setattr(M3Index, "add", lambda *a, **k: pytest.fail("eval --index encoded the corpus"))
    assert main(["eval", *common, "--index", str(index), "--json", str(reused)]) == EXIT_OK
    assert "Scored per document" in capsys.readouterr().out
    a, b = json.loads(built.read_text()), json.loads(reused.read_text())
    assert b["num_chunks"] == a["num_chunks"] and b["scored_per"] == "document (best chunk)"
    for x, y in zip(a["results"], b["results"], strict=True):
        assert y["metrics"] == pytest.approx(x["metrics"], rel=1e-6)

    # Chunking options say how to build an index: with --index they are a mistake.
    assert main(["eval", *common, "--index", str(index), *chunking]) == EXIT_USAGE
    assert "--chunk-tokens, --chunk-overlap set how eval builds an index" in capsys.readouterr().err


def test_eval_refuses_chunks_of_another_text(
    beir: Path, tmp_path: Path, tiny_checkpoint: str, capsys
) -> None:
    index = tmp_path / "page.index"
    build = ["index", str(beir / "corpus.jsonl"), "--out", str(index), "--model", tiny_checkpoint, "-q"]
    assert main([*build, "--chunk-tokens", "8", "--chunk-overlap", "0"]) == EXIT_OK
    lines = (beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    lines[1] = json.dumps({"_id": "d2", "title": "", "text": "Another text altogether, about cats."})
    (beir / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["eval", "--data", str(beir), "--index", str(index), "--model", tiny_checkpoint, "-q"]
    assert main(argv) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "was not built from the corpus" in err and "documents have another text ('d2#0'" in err


def test_document_ranking_fetches_chunks_until_k_documents(tiny_model) -> None:
    from m3_integrations import M3Index
    from m3_integrations._cli_documents import DocumentRanking

    # Document "a" has 12 chunks equal to the query, which outrank "b" and "c" (cosine 1, as the tiny
    # model has no instructions): the first k * 4 = 12 chunks fetched hold one document only.
    texts = ["alpha alpha alpha"] * 12 + ["beta", "gamma"]
    ids = [f"a#{i}" for i in range(12)] + ["b", "c"]
    metadatas = [{"source_id": "a", "start": 0, "end": 1} for _ in range(12)] + [{}, {}]
    index = M3Index(tiny_model)
    index.add(texts, ids=ids, metadatas=metadatas)
    hits = DocumentRanking(index).search("alpha alpha alpha", k=3, mode="dense")
    assert sorted(h.id for h in hits) == ["a", "b", "c"]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
