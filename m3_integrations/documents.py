r"""Files and folders → source documents (id, text, metadata), ready to chunk and index.

:func:`read_documents` reads what the user names: single files, or folders walked recursively.

| suffix | read as | one document per | needs |
|---|---|---|---|
| ``.txt`` ``.md`` ``.markdown`` ``.rst`` | UTF-8 text | file | |
| ``.jsonl`` | JSON lines, BEIR corpus records (``_id``, ``title``, ``text``) | record | |
| ``.pdf`` | text of each page (pypdf) | file (``page_starts`` map offsets to pages) | ``[pdf]`` |
| ``.html`` ``.htm`` | visible text, headings as ``#`` lines (BeautifulSoup) | file | ``[html]`` |
| ``.docx`` | paragraphs and tables, headings as ``#`` lines (python-docx) | file | ``[docx]`` |

A **BEIR folder** (one holding ``corpus.jsonl`` beside ``queries.jsonl`` or ``qrels/``) means its corpus
only: queries and relevance judgements are never read as documents. Files of other types, empty files
and empty records are skipped; each kind is logged once with its count and returned in a
:class:`ReadSummary`, so a command line can show it.

**Ids** are stable across runs: a file's path relative to the folder named (``guide/intro.md``), the
file name for a file named directly, a record's ``_id`` (else ``file:line``). Two documents with one id
are an error naming both. **Paths** are only read. Inside a folder, a symbolic link is followed only
when its target lies inside that folder, and a file reached twice (through a link and under its own
path) is read once, under its own path; links leading outside, or nowhere, are skipped and counted. A
path named directly is followed wherever it points. Hidden entries (``.git``, ``.DS_Store``) are
skipped.

Text is what the documents' :attr:`SourceDocument.text` holds: line ends normalised to ``\n``;
chunk offsets index this text.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "intro.md").write_text("# Intro\n\nBGE-M3 has three heads.\n")
    >>> _ = (folder / "notes.xyz").write_text("?")
    >>> docs, summary = read_documents(folder)
    >>> [(d.id, d.metadata["title"]) for d in docs]
    [('intro.md', 'Intro')]
    >>> summary.unsupported
    {'.xyz': ['notes.xyz']}
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from m3_integrations._document_formats import (
    _ATX_HEADING,
    _normalise_newlines,
    _read_docx,
    _read_html,
    _read_pdf,
)
from m3_integrations.errors import DocumentReadError

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ReadSummary",
    "SourceDocument",
    "is_beir_folder",
    "iter_jsonl",
    "join_title_text",
    "page_at",
    "read_documents",
]

_TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
#: Every suffix :func:`read_documents` reads (lower case), in the order of the table above.
SUPPORTED_SUFFIXES: tuple[str, ...] = (*_TEXT_SUFFIXES, ".jsonl", ".pdf", ".html", ".htm", ".docx")
# How many paths a log line names before "and N more".
_NAMED_IN_LOG = 5


@dataclass(frozen=True)
class SourceDocument:
    """One document as read from a file or record, before chunking.

    Attributes:
        id: stable across runs: relative path, file name or record ``_id`` (see the module docs).
        text: the document's text; chunk offsets index it.
        metadata: ``source`` (the path as reached from what the user named), ``title``, and where it
            applies ``line`` (JSON lines), ``num_pages`` (PDF).
        page_starts: for paged sources (PDF), the offset in ``text`` where each page begins; page ``i``
            (1-based) is ``text[page_starts[i-1]:page_starts[i]]``. Empty otherwise.
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    page_starts: tuple[int, ...] = ()

    def page_at(self, offset: int) -> int | None:
        r"""The 1-based page holding character ``offset`` of :attr:`text`, or ``None`` if not paged.

        Example:
            >>> SourceDocument("a.pdf", "one\n\ntwo", page_starts=(0, 5)).page_at(6)
            2
        """
        return page_at(self.page_starts, offset)


def page_at(page_starts: tuple[int, ...], offset: int) -> int | None:
    """The 1-based page of ``offset`` given each page's start offset; ``None`` without pages."""
    if not page_starts:
        return None
    # The last page starting at or before the offset: an empty page shares its start with the next one.
    return max(1, bisect.bisect_right(page_starts, offset))


@dataclass
class ReadSummary:
    """What :func:`read_documents` read and what it skipped, and why.

    Attributes:
        files_read: files that gave at least one document.
        documents: documents returned.
        beir_corpora: BEIR folders of which only ``corpus.jsonl`` was read.
        unsupported: suffix (``""`` for none) → files of a type that is not read.
        empty: files or records (``file:line``) without text.
        unreadable: file (or ``file:line``) → why it could not be read (only with ``errors="skip"``).
        links_skipped: symbolic links leading outside the folder named, or nowhere (``link -> target``).
        links_repeated: files or folders reached a second time through a link (read once).
        hidden: hidden files and folders not walked.
        not_utf8: text files with bytes that are not UTF-8 (read with U+FFFD in their place).
    """

    files_read: int = 0
    documents: int = 0
    beir_corpora: list[str] = field(default_factory=list)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    links_skipped: list[str] = field(default_factory=list)
    links_repeated: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)

    def messages(self) -> list[tuple[int, str]]:
        """One ``(logging level, line)`` per kind of thing skipped or worth knowing, as it is logged.

        Example:
            >>> ReadSummary(unsupported={".xyz": ["a.xyz"]}).messages()
            [(30, 'skipped 1 file of unsupported type .xyz: a.xyz')]
        """
        lines = [
            (
                logging.INFO,
                f"BEIR folder {folder}: read corpus.jsonl only (queries and qrels are not documents)",
            )
            for folder in self.beir_corpora
        ]
        kinds: list[tuple[int, list[str], str]] = [
            (logging.WARNING, paths, f"skipped {{n}} file{{s}} of unsupported type {suffix or '(no suffix)'}")
            for suffix, paths in sorted(self.unsupported.items())
        ]
        kinds += [
            (logging.INFO, self.empty, "skipped {n} empty document{s}"),
            (
                logging.WARNING,
                [f"{path} ({why})" for path, why in self.unreadable.items()],
                "skipped {n} unreadable file{s}",
            ),
            (
                logging.WARNING,
                self.links_skipped,
                "skipped {n} symbolic link{s} leading outside the folder named or nowhere",
            ),
            (logging.INFO, self.links_repeated, "read once {n} path{s} reached again through links"),
            (logging.INFO, self.hidden, "skipped {n} hidden path{s}"),
            (
                logging.WARNING,
                self.not_utf8,
                "{n} file{s} not valid UTF-8, undecodable bytes replaced by U+FFFD",
            ),
        ]
        for level, items, what in kinds:
            if items:
                count = what.format(n=len(items), s="" if len(items) == 1 else "s")
                lines.append((level, f"{count}: {_names(items)}"))
        return lines


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMED_IN_LOG])
    return shown if len(items) <= _NAMED_IN_LOG else f"{shown} and {len(items) - _NAMED_IN_LOG} more"


def join_title_text(title: str, text: str) -> str:
    r"""Join a title and a body as BEIR's dense baselines do, skipping a title the body already starts with.

    Example:
        >>> join_title_text("Seoul", "Seoul is a city."), join_title_text("Seoul", "A city.")
        ('Seoul is a city.', 'Seoul\nA city.')
    """
    title, text = (title or "").strip(), text or ""
    if not title or text.lstrip().startswith(title):
        return text
    return f"{title}\n{text}"


def _jsonl_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, record)`` per non-blank line, or ``(line number, why)`` for a line that is not one."""
    with open(path, encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, f"not valid JSON ({err.msg})"
                continue
            yield line_no, record if isinstance(record, dict) else "not a JSON object"


def iter_jsonl(path: str | os.PathLike[str], *, require_id: bool = True) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for every non-blank line of a JSON-lines file.

    Raises:
        DocumentReadError: (a ``ValueError``) a line is not a JSON object, or (``require_id``) has no
            ``_id``; the message names the file and line.
    """
    for line_no, record in _jsonl_records(path):
        if isinstance(record, str) or (require_id and "_id" not in record):
            why = record if isinstance(record, str) else "a record without an '_id'"
            msg = f"{path}:{line_no}: {why}"
            raise DocumentReadError(msg)
        yield line_no, record


def is_beir_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` is a BEIR collection: ``corpus.jsonl`` beside ``queries.jsonl`` or ``qrels/``."""
    folder = Path(folder)
    return (folder / "corpus.jsonl").is_file() and (
        (folder / "queries.jsonl").is_file() or (folder / "qrels").is_dir()
    )


@dataclass(frozen=True)
class _Entry:
    """A file found under a named path: its id prefix, path, real path and whether a link led to it."""

    rel: str
    path: Path
    real: Path
    via_link: bool
    beir: bool = False


def read_documents(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    errors: Literal["raise", "skip"] = "raise",
    show_progress: bool = False,
) -> tuple[list[SourceDocument], ReadSummary]:
    r"""Read files and folders into source documents; see the module docs for types, ids and links.

    Args:
        paths: one path or several; folders are walked recursively.
        errors: ``"raise"`` stops at the first damaged file or malformed record with a
            :class:`~m3_integrations.errors.DocumentReadError`; ``"skip"`` skips it, counted in
            :attr:`ReadSummary.unreadable` and logged.
        show_progress: a tqdm bar over the files.

    Returns:
        The documents (named paths in the order given, files sorted by path within a folder) and a
        :class:`ReadSummary`, whose lines are also logged (``m3_integrations.documents``).

    Raises:
        FileNotFoundError: a named path does not exist.
        DocumentReadError: a damaged file or malformed record (with ``errors="raise"``), a folder that
            cannot be listed, or two documents with the same id.
        ImportError: a PDF, HTML or DOCX file without its optional dependency (the message names the
            extra to install).
        ValueError: ``errors`` is neither ``"raise"`` nor ``"skip"``.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> beir = Path(tempfile.mkdtemp())
        >>> _ = (beir / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "x"}\n')
        >>> _ = (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "what"}\n')
        >>> docs, summary = read_documents([beir])
        >>> [(d.id, d.text) for d in docs], summary.documents
        ([('d1', 'T\nx')], 1)
    """
    if errors not in ("raise", "skip"):
        msg = f'errors must be "raise" or "skip", got {errors!r}'
        raise ValueError(msg)
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    summary = ReadSummary()
    entries: list[_Entry] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            msg = f"path {str(raw)!r} does not exist" + (
                " (a link leading nowhere)" if path.is_symlink() else ""
            )
            raise FileNotFoundError(msg)
        if path.is_dir():
            entries.extend(_walk(path, summary))
        elif _is_regular_file(path):
            entries.append(_Entry(path.name, path, path.resolve(), via_link=False))
        else:
            msg = f"{raw!s} is neither a regular file nor a folder"
            raise DocumentReadError(msg)

    documents: list[SourceDocument] = []
    first_seen: dict[str, str] = {}
    progress = tqdm(entries, desc="Reading", unit="file", disable=not show_progress)
    for entry in progress:
        found = _read_entry(entry, summary, errors)
        for document in found:
            where = _location(document)
            if document.id in first_seen:
                msg = (
                    f"two documents share the id {document.id!r}: {first_seen[document.id]} and {where}; "
                    "rename one, or read them in separate calls"
                )
                raise DocumentReadError(msg)
            first_seen[document.id] = where
            documents.append(document)
        summary.files_read += bool(found)
    summary.documents = len(documents)
    for level, line in summary.messages():
        logger.log(level, line)
    return documents, summary


def _location(document: SourceDocument) -> str:
    line = document.metadata.get("line")
    return f"{document.metadata['source']}:{line}" if line is not None else str(document.metadata["source"])


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _walk(root: Path, summary: ReadSummary) -> list[_Entry]:
    """The files under ``root`` to read, sorted by relative path, each real file once.

    Folders reached through links are walked after all others, so a file found both ways keeps its own
    path as its id whatever the names sort like.
    """
    root_real = root.resolve()
    visited = {root_real}
    found: list[_Entry] = []
    pending = deque([(root, "", root_real, False)])
    through_links: deque[tuple[Path, str, Path, bool]] = deque()
    while pending or through_links:
        folder, rel, real, via_link = pending.popleft() if pending else through_links.popleft()
        if via_link:
            # Checked only now that every folder reachable without links has been seen.
            if real in visited:
                summary.links_repeated.append(rel.rstrip("/"))
                continue
            visited.add(real)
        if is_beir_folder(folder):
            summary.beir_corpora.append(str(folder))
            corpus = folder / "corpus.jsonl"
            found.append(_Entry(f"{rel}corpus.jsonl", corpus, real / "corpus.jsonl", via_link, beir=True))
            continue
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            msg = f"cannot list folder {folder}: {err.strerror or err}"
            raise DocumentReadError(msg) from err
        for child in children:
            child_rel = f"{rel}{child.name}"
            child_path = Path(child.path)
            if child.name.startswith("."):
                summary.hidden.append(child_rel)
                continue
            is_link = child.is_symlink()
            if is_link:
                try:
                    child_real = child_path.resolve(strict=True)
                except (OSError, RuntimeError):
                    summary.links_skipped.append(f"{child_rel} -> {os.readlink(child_path)}")
                    continue
                if not child_real.is_relative_to(root_real):
                    summary.links_skipped.append(f"{child_rel} -> {child_real}")
                    continue
            else:
                child_real = real / child.name
            if child.is_dir():
                if is_link or via_link:
                    through_links.append((child_path, f"{child_rel}/", child_real, True))
                else:
                    visited.add(child_real)
                    pending.append((child_path, f"{child_rel}/", child_real, False))
            elif _is_regular_file(child_path):
                found.append(_Entry(child_rel, child_path, child_real, is_link or via_link))
            else:
                summary.unsupported.setdefault("(not a regular file)", []).append(child_rel)
    # One entry per real file: its own path wins over a path through a link.
    kept: dict[Path, _Entry] = {}
    for entry in sorted(found, key=lambda e: (e.via_link, e.rel)):
        if entry.real in kept:
            summary.links_repeated.append(entry.rel)
        else:
            kept[entry.real] = entry
    return sorted(kept.values(), key=lambda e: e.rel)


def _read_entry(entry: _Entry, summary: ReadSummary, errors: str) -> list[SourceDocument]:
    suffix = entry.path.suffix.lower()
    if entry.beir or suffix == ".jsonl":
        try:
            return _read_jsonl(entry, summary, errors)
        except (DocumentReadError, OSError) as err:
            _unreadable(entry, summary, errors, err)
            return []
    readers: dict[str, Callable[[Path], tuple[str, dict[str, Any], tuple[int, ...]]]] = {
        ".pdf": _read_pdf,
        ".html": _read_html,
        ".htm": _read_html,
        ".docx": _read_docx,
    }
    if suffix not in _TEXT_SUFFIXES and suffix not in readers:
        summary.unsupported.setdefault(suffix, []).append(entry.rel)
        return []
    try:
        if suffix in _TEXT_SUFFIXES:
            text, meta, pages = _read_text_file(entry, summary)
        else:
            text, meta, pages = readers[suffix](entry.path)
    except (DocumentReadError, OSError) as err:
        _unreadable(entry, summary, errors, err)
        return []
    if not _has_text(text):
        summary.empty.append(entry.rel)
        return []
    metadata = {"source": str(entry.path), "title": meta.get("title") or entry.path.stem}
    metadata.update({k: v for k, v in meta.items() if k != "title"})
    return [SourceDocument(entry.rel, text, metadata, pages)]


def _unreadable(entry: _Entry, summary: ReadSummary, errors: str, err: DocumentReadError | OSError) -> None:
    """Raise ``err`` as a :class:`DocumentReadError` naming the file, or count it when skipping."""
    if isinstance(err, OSError):
        err_msg = f"{entry.path}: cannot read ({err.strerror or err})"
        if errors == "raise":
            raise DocumentReadError(err_msg) from err
    else:
        err_msg = str(err)
        if errors == "raise":
            raise err
    where, _, why = err_msg.partition(": ")
    summary.unreadable[where] = why


def _has_text(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _read_text_file(entry: _Entry, summary: ReadSummary) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    data = entry.path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        summary.not_utf8.append(entry.rel)
    text = _normalise_newlines(text)
    title = None
    if entry.path.suffix.lower() in (".md", ".markdown"):
        match = _ATX_HEADING.search(text)
        title = match.group(1).strip() if match else None
    return text, {"title": title}, ()


def _read_jsonl(entry: _Entry, summary: ReadSummary, errors: str) -> list[SourceDocument]:
    documents: list[SourceDocument] = []
    try:
        for line_no, record in _jsonl_records(entry.path):
            where = f"{entry.path}:{line_no}"
            problem = record if isinstance(record, str) else _record_problem(record)
            if problem or isinstance(record, str):
                if errors == "raise":
                    msg = f"{where}: {problem}"
                    raise DocumentReadError(msg)
                summary.unreadable[where] = str(problem)
                continue
            title = str(record.get("title") or "")
            text = _normalise_newlines(join_title_text(title, record.get("text") or ""))
            if not _has_text(text):
                summary.empty.append(f"{entry.rel}:{line_no}")
                continue
            record_id = record.get("_id")
            doc_id = f"{entry.rel}:{line_no}" if record_id in (None, "") else str(record_id)
            metadata: dict[str, Any] = {"source": str(entry.path), "line": line_no}
            if title:
                metadata["title"] = title
            documents.append(SourceDocument(doc_id, text, metadata))
    except UnicodeDecodeError as err:
        msg = f"{entry.path}: not UTF-8 text (byte {err.start} of a line)"
        raise DocumentReadError(msg) from err
    return documents


def _record_problem(record: dict[str, Any]) -> str | None:
    for key in ("title", "text"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            return f"{key!r} must be a string, got {type(value).__name__}"
    record_id = record.get("_id")
    if isinstance(record_id, dict | list | bool):
        return f"'_id' must be a string or a number, got {type(record_id).__name__}"
    return None
