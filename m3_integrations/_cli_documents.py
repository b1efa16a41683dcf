"""Documents for the command line and the example chatbots: read, report what was skipped, chunk.

Also what ``eval`` needs for an index of chunks: checking that it was built from the corpus evaluated,
and ranking documents by their best chunk.

Which documents are chunked (``--chunk-tokens``): by default, files (.txt, .md, .pdf, .html, .docx...)
are cut into chunks of :data:`~m3_integrations.chunking.DEFAULT_CHUNK_TOKENS` tokens, and JSON-lines
records (a BEIR corpus: passages already cut to size) are indexed whole; ``--chunk-tokens N`` chunks
everything at ``N`` tokens, ``--chunk-tokens 0`` or ``--no-chunking`` nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from m3_integrations._cli_common import EXIT_INPUT, EXIT_USAGE, CliError, _non_negative_int
from m3_integrations.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, MIN_CHUNK_TOKENS

if TYPE_CHECKING:
    from m3_integrations import M3Index, M3Model, SearchHit
    from m3_integrations.chunking import Chunk, Chunker
    from m3_integrations.documents import SourceDocument
    from m3_integrations.evaluation import BeirDataset

logger = logging.getLogger(__name__)

# Chunks fetched per document wanted when ranking documents by their best chunk; doubled for a query
# whose chunks came from too few documents.
_CHUNKS_PER_DOCUMENT = 4
# Chunk metadata keys (Chunker) that tell a chunk from a whole document.
_CHUNK_KEYS = ("source_id", "start", "end")


# ---------------------------------------------------------------------------- reading
def read_inputs(
    paths: Sequence[str],
    *,
    show_progress: bool = False,
    report: Callable[[int, str], None] | None = None,
) -> list[SourceDocument]:
    """Read files and folders with :func:`~m3_integrations.documents.read_documents`, for a command line.

    What was skipped (files of other types, empty records, the queries of a BEIR folder...) goes to
    ``report(level, line)`` once per kind, with counts, instead of the library's log.

    Args:
        paths: the files and folders named.
        show_progress: a progress bar over the files.
        report: receives each line of :meth:`ReadSummary.messages`; default: print to stderr.

    Returns:
        The documents, at least one.

    Raises:
        CliError: (exit 3) a missing path, a damaged file or malformed record, a file whose reader is not
            installed, or no document with text.
    """
    from m3_integrations.documents import SUPPORTED_SUFFIXES, read_documents
    from m3_integrations.errors import DocumentReadError

    if report is None:
        report = _print_to_stderr
    documents_log = logging.getLogger("m3_integrations.documents")
    muted = documents_log.disabled
    # read_documents logs the summary it returns; the caller shows each line once, through `report`.
    documents_log.disabled = True
    try:
        documents, summary = read_documents(list(paths), errors="raise", show_progress=show_progress)
    except (FileNotFoundError, DocumentReadError, ImportError) as err:
        raise CliError(str(err), EXIT_INPUT) from err
    finally:
        documents_log.disabled = muted
    for level, line in summary.messages():
        report(level, line)
    if not documents:
        msg = (
            f"no documents with text found in {', '.join(paths)} (reads {', '.join(SUPPORTED_SUFFIXES)} "
            "files; see the lines above for what was skipped)"
        )
        raise CliError(msg, EXIT_INPUT)
    return documents


def _print_to_stderr(level: int, line: str) -> None:
    del level
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- chunking
def add_chunking_arguments(parser: argparse.ArgumentParser, *, default: str) -> None:
    """Add ``--chunk-tokens``, ``--chunk-overlap``, ``--no-chunking``; ``default``: what happens without."""
    parser.add_argument(
        "--chunk-tokens",
        type=_non_negative_int,
        metavar="N",
        default=None,
        help=f"cut documents into chunks of at most N tokens of the model's tokenizer (0: no chunking; "
        f"default: {default})",
    )
    parser.add_argument(
        "--chunk-overlap",
        type=_non_negative_int,
        metavar="N",
        default=None,
        help=f"tokens shared by neighbouring chunks (default {DEFAULT_CHUNK_OVERLAP})",
    )
    parser.add_argument(
        "--no-chunking", action="store_true", help="one document per file or record (as --chunk-tokens 0)"
    )


@dataclass(frozen=True)
class ChunkPlan:
    """Which documents to chunk and how, as the command line asked.

    Attributes:
        chunk_tokens: the chunk size, or ``None`` to chunk nothing.
        chunk_overlap: tokens shared by neighbouring chunks.
        records: whether JSON-lines records are chunked too (files always are, when anything is).
    """

    chunk_tokens: int | None
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    records: bool = False

    def chunks(self, document: SourceDocument) -> bool:
        """Whether ``document`` is to be cut into chunks."""
        if self.chunk_tokens is None:
            return False
        # read_documents gives a JSON-lines record its line number; files have none.
        return self.records or "line" not in document.metadata


def chunk_plan(args: argparse.Namespace, *, files_by_default: bool) -> ChunkPlan:
    """The :class:`ChunkPlan` of the chunking options, checked before any model loads.

    Args:
        args: parsed options of :func:`add_chunking_arguments`.
        files_by_default: without ``--chunk-tokens``, chunk files (``index``) or nothing (``eval``).

    Raises:
        CliError: (exit 2) a size below the minimum, an overlap not smaller than the size, or chunk sizes
            given with ``--no-chunking``.
    """
    tokens, overlap = args.chunk_tokens, args.chunk_overlap
    if args.no_chunking and tokens:
        msg = f"--no-chunking and --chunk-tokens {tokens} contradict each other; give one of them"
        raise CliError(msg, EXIT_USAGE)
    off = args.no_chunking or tokens == 0 or (tokens is None and not files_by_default)
    if off:
        if overlap is not None:
            msg = "--chunk-overlap needs chunking: give --chunk-tokens N as well"
            raise CliError(msg, EXIT_USAGE)
        return ChunkPlan(None)
    size = DEFAULT_CHUNK_TOKENS if tokens is None else tokens
    if size < MIN_CHUNK_TOKENS:
        msg = f"--chunk-tokens must be 0 (no chunking) or at least {MIN_CHUNK_TOKENS}, got {size}"
        raise CliError(msg, EXIT_USAGE)
    overlap = DEFAULT_CHUNK_OVERLAP if overlap is None else overlap
    if overlap >= size:
        msg = f"--chunk-overlap ({overlap}) must be smaller than --chunk-tokens ({size})"
        raise CliError(msg, EXIT_USAGE)
    return ChunkPlan(size, overlap, records=tokens is not None)


@dataclass
class Passages:
    """What to index: one entry per chunk, or per document left whole."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    documents: int
    chunked_documents: int
    chunker: Chunker | None

    def describe(self) -> str:
        """``"12 chunks of 4 documents"``, or ``"4 documents"`` when nothing was chunked."""
        if self.chunker is None:
            return f"{self.documents} documents"
        whole = self.documents - self.chunked_documents
        kept = f"; {whole} records kept whole" if whole else ""
        return (
            f"{len(self.ids)} chunks of {self.documents} documents (at most {self.chunker.chunk_tokens} "
            f"tokens, overlap {self.chunker.chunk_overlap}{kept})"
        )


def make_passages(
    model: M3Model, documents: Sequence[SourceDocument], plan: ChunkPlan, *, show_progress: bool = False
) -> Passages:
    """Cut the documents the plan names into chunks (ids ``doc#i``, chunk metadata); keep the rest whole."""
    from m3_integrations.chunking import Chunker

    chunker = None
    to_chunk = [d for d in documents if plan.chunks(d)]
    chunks_of: dict[str, list[Chunk]] = {}
    if to_chunk and plan.chunk_tokens is not None:
        chunker = Chunker(model, plan.chunk_tokens, plan.chunk_overlap)
        for chunk in chunker.split_documents(to_chunk, show_progress=show_progress):
            chunks_of.setdefault(chunk.source_id, []).append(chunk)
    passages = Passages([], [], [], len(documents), len(to_chunk), chunker)
    for document in documents:
        if plan.chunks(document):
            for chunk in chunks_of.get(document.id, []):
                passages.ids.append(chunk.id)
                passages.texts.append(chunk.text)
                passages.metadatas.append(chunk.metadata)
        else:
            passages.ids.append(document.id)
            passages.texts.append(document.text)
            passages.metadatas.append(dict(document.metadata))
    return passages


def build_chunked_index(
    model: M3Model,
    dataset: BeirDataset,
    plan: ChunkPlan,
    *,
    show_progress: bool = False,
    **index_kwargs: Any,
) -> tuple[M3Index, float, Passages]:
    """Index the dataset's corpus in chunks; return the index, the seconds it took and the passages.

    The time covers chunking and encoding, like :func:`~m3_integrations.evaluation.build_index`'s.
    """
    from m3_integrations import M3Index
    from m3_integrations.documents import SourceDocument

    documents = [SourceDocument(d.id, d.content, {"id": d.id}) for d in dataset.corpus.values()]
    start = time.perf_counter()
    passages = make_passages(model, documents, plan, show_progress=show_progress)
    if not passages.ids:
        msg = f"dataset {dataset.name!r} has no document with text"
        raise CliError(msg, EXIT_INPUT)
    index = M3Index(model, show_progress=show_progress, **index_kwargs)
    index.add(passages.texts, ids=passages.ids, metadatas=passages.metadatas)
    seconds = time.perf_counter() - start
    logger.info("indexed %s of %s in %.1fs", passages.describe(), dataset.name, seconds)
    return index, seconds, passages


# ---------------------------------------------------------------------------- evaluating chunks
def is_chunk(hit: SearchHit) -> bool:
    """Whether a stored entry is a chunk (it has the chunker's ``source_id``, ``start`` and ``end``)."""
    return all(key in hit.metadata for key in _CHUNK_KEYS)


def source_of(hit: SearchHit) -> str:
    """The document a hit belongs to: a chunk's ``metadata["source_id"]``, else the hit's own id."""
    return str(hit.metadata["source_id"]) if is_chunk(hit) else hit.id


class DocumentRanking:
    """Search an index of chunks, returning documents: each scored by its best chunk.

    ``search`` and ``search_batch`` take :meth:`M3Index.search`'s arguments and return up to ``k`` hits
    per query, one per document (the best chunk's hit with the document's id), so retrieval metrics
    count documents, not chunks. Enough chunks are fetched for ``k`` documents whenever the index
    holds ``k``.

    Args:
        index: the index of chunks (whole documents in it count as themselves).
    """

    def __init__(self, index: M3Index) -> None:
        self.index = index

    def search(self, query: str, k: int = 10, **kwargs: Any) -> list[SearchHit]:
        """The top ``k`` documents for one query."""
        return self.search_batch([query], k=k, **kwargs)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, **kwargs: Any) -> list[list[SearchHit]]:
        """The top ``k`` documents for each query."""
        total = len(self.index)
        want = min(total, k * _CHUNKS_PER_DOCUMENT)
        results: list[list[SearchHit]] = [[] for _ in queries]
        pending = list(range(len(queries)))
        while pending:
            found = self.index.search_batch([queries[i] for i in pending], k=want, **kwargs)
            retry = []
            for i, chunk_hits in zip(pending, found, strict=True):
                documents = best_chunk_per_document(chunk_hits)
                if len(documents) < k and len(chunk_hits) == want < total:
                    retry.append(i)
                results[i] = documents[:k]
            pending, want = retry, min(total, want * 2)
        return results


def best_chunk_per_document(hits: Iterable[SearchHit]) -> list[SearchHit]:
    """One hit per document, in order of first appearance: for hits best first, each document's best chunk.

    Example:
        >>> from m3_integrations import SearchHit
        >>> hits = [SearchHit("a#1", "x", {"source_id": "a", "start": 9, "end": 10}, 0.9, {}),
        ...         SearchHit("b", "y", {}, 0.8, {}),
        ...         SearchHit("a#0", "z", {"source_id": "a", "start": 0, "end": 1}, 0.7, {})]
        >>> [(h.id, h.score) for h in best_chunk_per_document(hits)]
        [('a', 0.9), ('b', 0.8)]
    """
    seen: dict[str, SearchHit] = {}
    for hit in hits:
        source = source_of(hit)
        if source not in seen:
            seen[source] = dataclasses.replace(hit, id=source)
    return list(seen.values())


def check_index_matches_corpus(index: M3Index, dataset: BeirDataset, index_arg: str) -> int:
    """Refuse an index not built from this corpus, saying what differs; return how many chunks it holds.

    An entry is a whole document (its id and text are the corpus document's) or a chunk (its
    ``source_id`` is a corpus document and its text that document's ``[start:end]``).

    Raises:
        CliError: (exit 3) documents or chunks that are not the corpus's, or corpus documents absent.
    """

    def some(ids: Iterable[str]) -> str:
        shown = sorted(ids)[:3]
        return ", ".join(repr(i) for i in shown) + (", ..." if len(shown) == 3 else "")

    corpus = {doc_id: _normalise_newlines(doc.content) for doc_id, doc in dataset.corpus.items()}
    stored = index.get(index.ids)
    sources: set[str] = set()
    extra: set[str] = set()
    changed: list[str] = []
    chunks = 0
    for hit in stored:
        source = source_of(hit)
        sources.add(source)
        if source not in corpus:
            extra.add(source)
            continue
        if is_chunk(hit):
            chunks += 1
            start, end = hit.metadata["start"], hit.metadata["end"]
            ok = isinstance(start, int) and isinstance(end, int) and corpus[source][start:end] == hit.text
        else:
            ok = corpus[source] == hit.text
        if not ok:
            changed.append(hit.id)
    # A document without a letter or digit is not read as one, so an index cannot hold it.
    missing = {i for i in set(corpus) - sources if any(ch.isalnum() for ch in corpus[i])}
    problems = []
    if extra:
        problems.append(f"{len(extra)} of its documents are not in the corpus ({some(extra)})")
    if missing:
        problems.append(f"{len(missing)} corpus documents are not in it ({some(missing)})")
    if changed:
        problems.append(f"{len(changed)} documents have another text ({some(changed)})")
    if problems:
        corpus_file = dataset.info.get("corpus", "corpus.jsonl")
        msg = (
            f"the index {index_arg!r} was not built from the corpus of {dataset.name}: "
            f"{'; '.join(problems)}. Build it with `m3-integrations index {corpus_file} --out INDEX`"
        )
        raise CliError(msg, EXIT_INPUT)
    return chunks


def _normalise_newlines(text: str) -> str:
    # read_documents normalises line ends; load_beir keeps them as written.
    return text.replace("\r\n", "\n").replace("\r", "\n")
