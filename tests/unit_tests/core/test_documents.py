"""Document readers: files and folders → source documents, with what was skipped counted and logged."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.chunking import Chunker
from m3_integrations.documents import (
    SUPPORTED_SUFFIXES,
    ReadSummary,
    is_beir_folder,
    read_documents,
)
from m3_integrations.errors import DocumentReadError
from m3_integrations.testing import WhitespaceTokenizer


# ------------------------------------------------------------------------------------- file makers
def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A small valid PDF, written by hand: one Helvetica text line per string, one list per page."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {len(pages)} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for page_id, lines in zip(page_ids, pages, strict=True):
        body = "BT /F1 12 Tf 14 TL 72 720 Td " + " T* ".join(f"({escape(line)}) Tj" for line in lines) + " ET"
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        )
        objects.append(f"<< /Length {len(body)} >>\nstream\n{body}\nendstream")
    info = ""
    if title:
        objects.append(f"<< /Title ({escape(title)}) >>")
        info = f" /Info {len(objects)} 0 R"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Retrieval notes"
    document.add_heading("Dense retrieval", level=1)
    document.add_paragraph("Dense vectors compare meanings.")
    document.add_paragraph("")
    document.add_heading("Hybrid search", level=2)
    document.add_paragraph("Lexical weights add exact matches.")
    table = document.add_table(rows=2, cols=2)
    for (r, c), value in {(0, 0): "signal", (0, 1): "weight", (1, 0): "dense", (1, 1): "0.4"}.items():
        table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    document.save(str(path))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def beir_folder(root: Path, corpus: list[dict], queries: list[dict] | None = None) -> Path:
    write(root / "corpus.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus))
    queries = queries if queries is not None else [{"_id": "q1", "text": "what is a query doing here?"}]
    write(root / "queries.jsonl", "".join(json.dumps(r) + "\n" for r in queries))
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


# ------------------------------------------------------------------------------------------ text
def test_text_files_get_relative_ids_titles_and_normalised_text(tmp_path: Path) -> None:
    write(tmp_path / "guide" / "intro.md", "# Getting started\r\n\r\nInstall it.\r\n")
    write(tmp_path / "notes.txt", "\ufeffPlain notes.\rSecond line.")
    write(tmp_path / "api.rst", "API\n===\n\nCalls.")
    write(tmp_path / "b.markdown", "No heading here.")
    documents, summary = read_documents(tmp_path)
    assert [d.id for d in documents] == ["api.rst", "b.markdown", "guide/intro.md", "notes.txt"]
    by_id = {d.id: d for d in documents}
    assert by_id["guide/intro.md"].text == "# Getting started\n\nInstall it.\n"
    assert by_id["guide/intro.md"].metadata == {
        "source": str(tmp_path / "guide" / "intro.md"),
        "title": "Getting started",
    }
    assert by_id["notes.txt"].text == "Plain notes.\nSecond line."  # BOM dropped, CR normalised
    assert by_id["notes.txt"].metadata["title"] == "notes"
    assert summary.files_read == summary.documents == 4
    # A file named directly is known by its name; paths come back in the order given.
    documents, _ = read_documents([tmp_path / "notes.txt", tmp_path / "guide"])
    assert [d.id for d in documents] == ["notes.txt", "intro.md"]
    assert set(SUPPORTED_SUFFIXES) >= {".txt", ".md", ".markdown", ".rst", ".jsonl", ".pdf", ".html", ".docx"}


def test_unsupported_and_empty_files_are_skipped_counted_and_logged_once_per_kind(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "keep.md", "Kept.")
    write(tmp_path / "a.xyz", "?")
    write(tmp_path / "sub" / "b.xyz", "?")
    write(tmp_path / "Makefile", "all:")
    write(tmp_path / "empty.md", "")
    write(tmp_path / "blank.txt", "  \n\t\n")
    write(tmp_path / "rule.md", "----\n***")
    write(tmp_path / "records.jsonl", '{"_id": "r1", "text": "Text."}\n{"_id": "r2", "text": ""}\n\n')
    with caplog.at_level(logging.INFO, logger="m3_integrations.documents"):
        documents, summary = read_documents(tmp_path)
    assert [d.id for d in documents] == ["keep.md", "r1"]
    assert summary.unsupported == {".xyz": ["a.xyz", "sub/b.xyz"], "": ["Makefile"]}
    assert summary.empty == ["blank.txt", "empty.md", "records.jsonl:2", "rule.md"]
    lines = [r.getMessage() for r in caplog.records]
    assert "skipped 2 files of unsupported type .xyz: a.xyz, sub/b.xyz" in lines
    assert "skipped 1 file of unsupported type (no suffix): Makefile" in lines
    assert "skipped 4 empty documents: blank.txt, empty.md, records.jsonl:2, rule.md" in lines
    assert len(lines) == 3
    assert [r.levelno for r in caplog.records if "unsupported" in r.getMessage()] == [logging.WARNING] * 2
    assert summary.messages() == [(r.levelno, r.getMessage()) for r in caplog.records]


def test_a_long_list_of_skipped_files_is_shortened(tmp_path: Path) -> None:
    for i in range(8):
        write(tmp_path / f"f{i}.bin", "x")
    _, summary = read_documents(tmp_path)
    [(_, line)] = summary.messages()
    assert (
        line == "skipped 8 files of unsupported type .bin: f0.bin, f1.bin, f2.bin, f3.bin, f4.bin and 3 more"
    )


def test_text_that_is_not_utf8_is_read_with_replacement_characters_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "latin1.txt", "café au lait".encode("latin-1"))
    with caplog.at_level(logging.WARNING, logger="m3_integrations.documents"):
        [document], summary = read_documents(tmp_path)
    assert document.text == "caf\ufffd au lait"
    assert summary.not_utf8 == ["latin1.txt"]
    assert "1 file not valid UTF-8" in caplog.text


# ----------------------------------------------------------------------------------- JSON lines, BEIR
def test_a_beir_folder_means_its_corpus_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = [
        {"_id": "d1", "title": "Seoul", "text": "Seoul is the capital."},
        {"_id": "d2", "title": "Busan", "text": "A port city."},
    ]
    folder = beir_folder(tmp_path / "ko" / "page", corpus)
    write(tmp_path / "ko" / "README.md", "About this collection.")
    assert is_beir_folder(folder) and not is_beir_folder(tmp_path / "ko")
    with caplog.at_level(logging.INFO, logger="m3_integrations.documents"):
        documents, summary = read_documents(folder)
    assert [(d.id, d.text) for d in documents] == [
        ("d1", "Seoul is the capital."),
        ("d2", "Busan\nA port city."),
    ]
    assert documents[0].metadata == {"source": str(folder / "corpus.jsonl"), "line": 1, "title": "Seoul"}
    assert summary.beir_corpora == [str(folder)]
    assert "read corpus.jsonl only" in caplog.text
    assert not summary.unsupported  # queries and qrels are not reported as skipped files
    # Inside a larger tree, the BEIR folder still gives its corpus only.
    documents, summary = read_documents(tmp_path)
    assert [d.id for d in documents] == ["ko/README.md", "d1", "d2"]
    assert all("query" not in d.text for d in documents)
    # A folder with only queries.jsonl and qrels is not BEIR; a queries file named directly is read.
    write(tmp_path / "q" / "queries.jsonl", '{"_id": "q9", "text": "a question"}\n')
    documents, _ = read_documents(tmp_path / "q" / "queries.jsonl")
    assert [d.id for d in documents] == ["q9"]


def test_jsonl_records_without_ids_get_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path / "data.jsonl",
        '{"text": "first"}\n\n{"_id": 7, "title": "T", "text": "body"}\n{"_id": "", "text": "third"}\n',
    )
    documents, _ = read_documents(tmp_path)
    assert [(d.id, d.text, d.metadata["line"]) for d in documents] == [
        ("data.jsonl:1", "first", 1),
        ("7", "T\nbody", 3),
        ("data.jsonl:4", "third", 4),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"_id": "x", "text": 5}', "'text' must be a string, got int"),
        ('{"_id": ["x"], "text": "t"}', "'_id' must be a string or a number, got list"),
    ],
)
def test_a_malformed_record_names_file_and_line_or_is_skipped(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = write(
        tmp_path / "bad.jsonl", f'{{"_id": "ok", "text": "fine"}}\n{line}\n{{"_id": "z", "text": "end"}}\n'
    )
    with pytest.raises(DocumentReadError, match=rf"bad\.jsonl:2: .*{re.escape(problem)}"):
        read_documents(tmp_path)
    documents, summary = read_documents(tmp_path, errors="skip")
    assert [d.id for d in documents] == ["ok", "z"]
    assert list(summary.unreadable) == [f"{path}:2"]
    assert problem in summary.unreadable[f"{path}:2"]


def test_duplicate_ids_are_an_error_naming_both(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", '{"_id": "same", "text": "one"}\n')
    write(tmp_path / "b.jsonl", '\n{"_id": "same", "text": "two"}\n')
    with pytest.raises(DocumentReadError, match=r"'same': .*a\.jsonl:1 and .*b\.jsonl:2"):
        read_documents(tmp_path)
    write(tmp_path / "x" / "notes.md", "one")
    write(tmp_path / "y" / "notes.md", "two")
    with pytest.raises(DocumentReadError, match=r"'notes\.md': .*x/notes\.md and .*y/notes\.md"):
        read_documents([tmp_path / "x", tmp_path / "y"])


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'nowhere/at-all' does not exist"):
        read_documents("nowhere/at-all")
    with pytest.raises(ValueError, match='errors must be "raise" or "skip"'):
        read_documents(tmp_path, errors="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ PDF, HTML, DOCX
def test_pdf_pages_become_one_document_with_page_offsets(tmp_path: Path) -> None:
    pages = [["First page, line one.", "Line two (with parentheses)."], [], ["Third page text."]]
    write(tmp_path / "paper.pdf", make_pdf(pages, title="Hand made"))
    [document], summary = read_documents(tmp_path)
    assert document.id == "paper.pdf"
    assert document.metadata == {"source": str(tmp_path / "paper.pdf"), "title": "Hand made", "num_pages": 3}
    assert document.text == "First page, line one.\nLine two (with parentheses).\n\nThird page text."
    assert document.page_starts == (0, 52, 52)
    assert document.page_at(0) == 1 and document.page_at(51) == 1 and document.page_at(52) == 3
    # Chunks say on which pages they lie.
    chunks = Chunker(WhitespaceTokenizer(), chunk_tokens=8, chunk_overlap=0).split_documents([document])
    assert [(c.text, c.metadata["page"], c.metadata["page_end"]) for c in chunks] == [
        ("First page, line one.\nLine two (with parentheses).", 1, 1),
        ("Third page text.", 3, 3),
    ]
    assert summary.files_read == 1


def test_a_pdf_without_a_title_is_named_after_its_file_and_one_without_text_is_empty(tmp_path: Path) -> None:
    write(tmp_path / "a.pdf", make_pdf([["Some text."]]))
    write(tmp_path / "scan.pdf", make_pdf([[], []]))
    documents, summary = read_documents(tmp_path)
    assert [(d.id, d.metadata["title"]) for d in documents] == [("a.pdf", "a")]
    assert summary.empty == ["scan.pdf"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all"),
        ("cut.pdf", make_pdf([["Some text on a page."]])[:150]),
        ("broken.docx", b"PK\x03\x04 not a real zip archive"),
        ("words.docx", b"plain text with a .docx name"),
    ],
)
def test_a_damaged_file_is_one_clear_error_or_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, content: bytes
) -> None:
    write(tmp_path / "good.md", "Still read.")
    path = write(tmp_path / name, content)
    with pytest.raises(DocumentReadError, match=rf"{path.name}: cannot read as (PDF|DOCX)"):
        read_documents(tmp_path)
    with caplog.at_level(logging.WARNING, logger="m3_integrations.documents"):
        documents, summary = read_documents(tmp_path, errors="skip")
    assert [d.id for d in documents] == ["good.md"]
    assert list(summary.unreadable) == [str(path)]
    assert f"skipped 1 unreadable file: {path} (cannot read as" in caplog.text


def test_html_keeps_visible_text_and_headings_as_lines(tmp_path: Path) -> None:
    html = """<!DOCTYPE html><html><head><title>The  Page</title><style>p {color: red}</style>
    <script>var hidden = "never indexed";</script></head>
    <body><nav><ul><li>Home</li><li>About</li></ul></nav>
    <h1>Main   title</h1><p>First <b>bold</b>
    paragraph &amp; more.<br>Second line.</p><!-- a comment -->
    <h2>Details</h2><div><p>Nested</p> text</div><pre>  code   kept
  as is</pre><table><tr><td>a</td><td>b</td></tr></table><noscript>no</noscript></body></html>"""
    write(tmp_path / "page.html", html)
    [document], _ = read_documents(tmp_path)
    assert document.metadata["title"] == "The Page"
    assert document.text == (
        "Home\n\nAbout\n\n# Main title\n\nFirst bold paragraph & more.\nSecond line.\n\n## Details\n\n"
        "Nested\n\ntext\n\n  code   kept\n  as is\n\na b"
    )
    for hidden in ("never indexed", "color", "a comment", "no"):
        assert hidden not in document.text.split()


def test_deeply_nested_html_is_read_without_recursion(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() * 2
    write(tmp_path / "deep.htm", "<div>" * depth + "deep text" + "</div>" * depth)
    [document], _ = read_documents(tmp_path)
    assert document.text == "deep text" and document.metadata["title"] == "deep"


def test_docx_paragraphs_headings_and_tables(tmp_path: Path) -> None:
    make_docx(tmp_path / "notes.docx")
    [document], _ = read_documents(tmp_path)
    assert document.metadata["title"] == "Retrieval notes"
    assert document.text == (
        "# Dense retrieval\n\nDense vectors compare meanings.\n\n## Hybrid search\n\n"
        "Lexical weights add exact matches.\n\nsignal | weight\n\ndense | 0.4\n\nAfter the table."
    )


@pytest.mark.parametrize(
    ("module", "extra", "name"),
    [("pypdf", "pdf", "a.pdf"), ("bs4", "html", "a.html"), ("docx", "docx", "a.docx")],
)
def test_a_missing_optional_library_names_its_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, extra: str, name: str
) -> None:
    write(tmp_path / name, b"anything")
    write(tmp_path / "b.md", "text")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=rf'pip install "m3-integrations\[{extra}\]"'):
        read_documents(tmp_path)
    assert [d.id for d in read_documents(tmp_path / "b.md")[0]] == ["b.md"]  # other types need nothing


# --------------------------------------------------------------------------------- links, safety
@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symbolic links")
def test_links_are_followed_only_inside_the_folder_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "docs"
    outside = write(tmp_path / "secret" / "private.md", "Private text outside the folder.")
    write(root / "real" / "a.md", "Alpha.")
    write(root / ".hidden" / "h.md", "Hidden but linked.")
    (root / "alias.md").symlink_to(root / "real" / "a.md")  # sorts before real/a.md
    (root / "linked-dir").symlink_to(root / "real")
    (root / "to-hidden.md").symlink_to(root / ".hidden" / "h.md")
    (root / "escape.md").symlink_to(outside)
    (root / "escape-dir").symlink_to(outside.parent)
    (root / "loop").symlink_to(root)
    (root / "dangling.md").symlink_to(root / "missing.md")
    with caplog.at_level(logging.INFO, logger="m3_integrations.documents"):
        documents, summary = read_documents(root)
    # Each real file once, under its own path; a link only for a file not reachable otherwise.
    assert [(d.id, d.text) for d in documents] == [
        ("real/a.md", "Alpha."),
        ("to-hidden.md", "Hidden but linked."),
    ]
    assert sorted(summary.links_skipped) == [
        f"dangling.md -> {root / 'missing.md'}",
        f"escape-dir -> {outside.parent}",
        f"escape.md -> {outside}",
    ]
    assert sorted(summary.links_repeated) == ["alias.md", "linked-dir", "loop"]
    assert summary.hidden == [".hidden"]
    assert "skipped 3 symbolic links leading outside the folder named or nowhere" in caplog.text
    # A link named directly is the user's choice: followed.
    documents, _ = read_documents(root / "escape.md")
    assert [d.text for d in documents] == ["Private text outside the folder."]


def test_reading_writes_nothing(tmp_path: Path) -> None:
    write(tmp_path / "a.md", "# A\n\ntext")
    write(tmp_path / "b.pdf", make_pdf([["page"]]))
    make_docx(tmp_path / "c.docx")
    write(tmp_path / "d.html", "<p>x</p>")
    beir_folder(tmp_path / "beir", [{"_id": "d1", "text": "t"}])
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")}
    read_documents(tmp_path)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*")} == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_in_a_folder_is_skipped_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    write(tmp_path / "a.md", "text")
    documents, summary = read_documents(tmp_path)
    assert [d.id for d in documents] == ["a.md"]
    assert summary.unsupported == {"(not a regular file)": ["pipe.md"]}
    with pytest.raises(DocumentReadError, match="neither a regular file nor a folder"):
        read_documents(tmp_path / "pipe.md")


def test_summary_messages_without_anything_skipped_are_empty() -> None:
    assert ReadSummary().messages() == []


def test_docs_recipes_run(tiny_model: M3Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = Path(__file__).resolve().parents[3] / "docs" / "documents.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 3
    code = "\n".join(blocks)
    assert code.count('M3Model("BAAI/bge-m3")') == 1
    code = code.replace('M3Model("BAAI/bge-m3")', "_tiny_model")
    write(
        tmp_path / "notes" / "bge.md",
        "# BGE-M3\n\nBGE-M3 outputs dense, lexical and multi-vector representations.",
    )
    write(tmp_path / "notes" / "paper.pdf", make_pdf([["Page one text."], ["Page two text."]]))
    write(tmp_path / "notes" / "skip.xyz", "?")
    monkeypatch.chdir(tmp_path)
    namespace = {"_tiny_model": tiny_model}
    exec(compile(code, str(doc), "exec"), namespace)
    assert len(namespace["nodes"]) == len(namespace["lc_docs"]) == len(namespace["chunks"]) == 2
    assert namespace["nodes"][1].metadata["page"] == 1 and namespace["nodes"][1].metadata["page_end"] == 2
    from llama_index.core.schema import MetadataMode

    assert namespace["nodes"][1].get_content(metadata_mode=MetadataMode.EMBED) == namespace["chunks"][1].text
