"""Text out of the file formats :func:`~m3_integrations.documents.read_documents` reads beyond plain text.

One reader per format, each ``path -> (text, metadata, page_starts)``: PDF (``pypdf``; pages joined by
blank lines, where each page starts kept), HTML (``beautifulsoup4``; the visible text, block by block)
and DOCX (``python-docx``; paragraphs, headings and tables). Each optional dependency is imported when
its format is first read, naming its extra when missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from m3_integrations._utils import import_optional
from m3_integrations.errors import DocumentReadError

_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_HTML_DROPPED = ("script", "style", "noscript", "template", "head", "svg", "iframe", "object")
_HTML_BLOCKS = frozenset(
    "address article aside blockquote body dd details dialog div dl dt fieldset figcaption figure footer "
    "form header hr html li main nav ol p pre section summary table tbody thead tfoot tr ul caption".split()
)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_pdf(path: Path) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    pypdf = import_optional("pypdf", "pdf")
    try:
        reader = pypdf.PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            msg = f"{path}: the PDF is encrypted with a password"
            raise DocumentReadError(msg)
        pages = [page.extract_text() or "" for page in reader.pages]
        title = _pdf_title(reader)
    except DocumentReadError:
        raise
    except Exception as err:  # pypdf raises many types on hostile or damaged input; name the file instead
        msg = f"{path}: cannot read as PDF ({type(err).__name__}: {err})"
        raise DocumentReadError(msg) from err
    text, starts = _join_pages([_normalise_newlines(page).strip() for page in pages])
    return text, {"title": title, "num_pages": len(pages)}, starts


def _pdf_title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a damaged info dictionary costs the title only
        return None
    return str(title).strip() or None if title else None


def _join_pages(pages: list[str]) -> tuple[str, tuple[int, ...]]:
    """Pages joined by blank lines, and where each page starts in the result.

    An empty page starts where the next page with text does, so it holds no offset.
    """
    starts: list[int | None] = []
    parts: list[str] = []
    offset = 0
    for page in pages:
        if not page:
            starts.append(None)
            continue
        if parts:
            parts.append("\n\n")
            offset += 2
        starts.append(offset)
        parts.append(page)
        offset += len(page)
    filled: list[int] = []
    for start in reversed(starts):
        filled.append(start if start is not None else (filled[-1] if filled else offset))
    return "".join(parts), tuple(reversed(filled))


def _read_html(path: Path) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    bs4 = import_optional("bs4", "html")
    try:
        soup = bs4.BeautifulSoup(path.read_bytes(), "html.parser")
        title_tag = soup.find("title")
        title = " ".join(title_tag.get_text().split()) if title_tag else None
        text = _html_text(soup, bs4)
    except Exception as err:  # html.parser and bs4 raise several types on hostile input; name the file
        msg = f"{path}: cannot read as HTML ({type(err).__name__}: {err})"
        raise DocumentReadError(msg) from err
    if not title:
        match = _ATX_HEADING.search(text)
        title = match.group(1) if match else None
    return text, {"title": title}, ()


def _html_text(soup: Any, bs4: Any) -> str:
    """Visible text: blocks as paragraphs, headings as ``#`` lines, ``<br>`` as line breaks.

    Walked with an explicit stack, so hostile nesting depth cannot exhaust Python's recursion limit.
    """
    for tag in soup.find_all(_HTML_DROPPED):
        tag.extract()
    blocks: list[str] = []
    line: list[str] = []

    def flush() -> None:
        joined = re.sub(r"[ \t\f\v\r]+", " ", "".join(line))
        cleaned = "\n".join(part.strip() for part in joined.split("\n")).strip("\n")
        if cleaned.strip():
            blocks.append(cleaned)
        line.clear()

    stack: list[Any] = [soup]
    closing = object()
    while stack:
        node = stack.pop()
        if node is closing:
            flush()
            continue
        if isinstance(node, bs4.element.NavigableString):
            if type(node) is bs4.element.NavigableString:  # not a comment, doctype or CDATA
                line.append(re.sub(r"\s+", " ", str(node)))
            continue
        name = (node.name or "").lower()
        if name == "pre":  # preformatted: white space is content
            flush()
            code = node.get_text().strip("\n")
            if code.strip():
                blocks.append(code)
            continue
        if re.fullmatch(r"h[1-6]", name):
            flush()
            heading = " ".join(node.get_text(" ").split())
            if heading:
                blocks.append("#" * int(name[1]) + " " + heading)
            continue
        if name == "br":
            line.append("\n")
            continue
        if name in _HTML_BLOCKS:
            flush()
            stack.append(closing)
        elif name in ("td", "th"):
            line.append(" ")
        stack.extend(reversed(list(node.children)))
    flush()
    return "\n\n".join(blocks)


def _read_docx(path: Path) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    docx = import_optional("docx", "docx")
    try:
        document = docx.Document(str(path))
        blocks: list[str] = []
        first_heading = None
        for item in document.iter_inner_content():
            if hasattr(item, "rows"):
                blocks.extend(_docx_table_rows(item))
                continue
            text = item.text.strip()
            if not text:
                continue
            level = _docx_heading_level(item)
            if level:
                first_heading = first_heading or text
                text = "#" * level + " " + " ".join(text.split())
            blocks.append(text)
        title = (document.core_properties.title or "").strip() or first_heading
    except Exception as err:  # python-docx and its zip/XML layers raise many types on damaged files
        msg = f"{path}: cannot read as DOCX ({type(err).__name__}: {err})"
        raise DocumentReadError(msg) from err
    return _normalise_newlines("\n\n".join(blocks)), {"title": title}, ()


def _docx_heading_level(paragraph: Any) -> int:
    style = paragraph.style.name if paragraph.style is not None else ""
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading ([1-9])", style or "")
    return min(int(match.group(1)), 6) if match else 0


def _docx_table_rows(table: Any) -> list[str]:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            # A merged cell is returned once per grid column it spans.
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return rows
