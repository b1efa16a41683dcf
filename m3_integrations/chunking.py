r"""Token-aware chunking on the model's own tokenizer, cutting where the text has a natural break.

:class:`Chunker` cuts documents into chunks of at most ``chunk_tokens`` tokens, counted with the
tokenizer that will encode them (``M3Model.tokenize``, or any object with the same method), so no chunk
is truncated by the encoder. Neighbouring chunks share about ``chunk_overlap`` tokens.

Where it cuts, in order of preference, at the last such break that still fills at least half a chunk:

1. before a heading (Markdown ``#`` lines, setext/reStructuredText underlined titles) or a page break;
2. between paragraphs (a blank line);
3. after a sentence: ``.`` ``!`` ``?`` followed by a space, CJK ``。`` ``！`` ``？`` (no space needed), and
   Korean ``다.`` written without the space before the next sentence;
4. at a line break;
5. at white space, or after a CJK comma or colon (``，`` ``、`` ``；`` ``：``);
6. only then between two tokens of one word (CJK text without spaces, long URLs), never before a
   combining mark.

The overlap starts at a sentence (or paragraph) start when one keeps at least half the requested
overlap, else at a word start, else at a token. A chunk cut before a heading gets no overlap: a new
section starts fresh.

Guarantees (tested on every chunk of varied texts, Korean, Chinese and Markdown among them):
``source_text[chunk.start:chunk.end] == chunk.text``; a chunk neither starts nor ends with white space;
``chunk.num_tokens`` is the chunk's own token count without special tokens, and is at most
``chunk_tokens``; no chunk is only headings, white space or punctuation (a heading sticks to the text
after it; a piece with no word outside headings, such as a heading closing a document, joins a
neighbour when it fits and is otherwise left out, counted in the log).

Each document is tokenized once to place the cuts; each chunk is tokenized once more to count its
tokens exactly as the encoder will (a token sequence cut out of a document can differ by a token or two
from the chunk tokenized alone; a chunk found too long is re-cut shorter).

Example:
    >>> from m3_integrations.testing import WhitespaceTokenizer
    >>> chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=8, chunk_overlap=0)
    >>> text = "# Title\n\nOne two three. Four five six.\n\n## Next\n\nSeven eight."
    >>> [(c.id, c.text) for c in chunker.split_text(text, source_id="doc")]
    [('doc#0', '# Title\n\nOne two three. Four five six.'), ('doc#1', '## Next\n\nSeven eight.')]
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from m3_integrations.documents import page_at

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_TOKENS",
    "MIN_CHUNK_TOKENS",
    "Chunk",
    "Chunker",
    "DocumentLike",
    "TokenizerLike",
]

#: Default chunk size in tokens: fits a 512-token encoder with its special tokens and an instruction
#: such as e5's ``"passage: "``, and keeps BGE-M3's chunks short enough to point at one passage.
DEFAULT_CHUNK_TOKENS = 384
#: Default overlap in tokens (one eighth of a chunk): about a sentence of context across each cut.
DEFAULT_CHUNK_OVERLAP = 48
#: Smallest ``chunk_tokens`` accepted: below it a single word can outgrow a chunk.
MIN_CHUNK_TOKENS = 8
# A cut at a preferred break must leave the chunk at least this full; else a lesser break is used.
_MIN_FILL = 0.5
# Documents tokenized per call: the tokenizer works through a batch in parallel.
_DOCUMENTS_PER_BATCH = 16
# Tokens kept free (one per 64 of the chunk size, at most 2) when cuts are placed on a document's own
# tokens: a chunk tokenized alone may count one or two more (XLM-R adds "▁" before a first word that
# had none in the document), and a chunk found too long makes its whole document be cut again, slower.
_PLANNING_MARGIN = 2


class TokenizerLike(Protocol):
    """What :class:`Chunker` needs: :meth:`M3Model.tokenize <m3_integrations.M3Model.tokenize>`.

    ``passage_max_length`` and ``passage_instruction`` attributes, when present, bound the chunk size.
    """

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_offsets: bool = False,
    ) -> Any:
        """Return an object with ``input_ids`` (per text) and ``offsets`` (per text, ``(start, end)``)."""
        ...


class DocumentLike(Protocol):
    """A document to chunk: :class:`m3_integrations.documents.SourceDocument` or alike.

    ``page_starts`` (offsets where pages begin) is read when the object has it.
    """

    id: str
    text: str
    metadata: Mapping[str, Any]


class _Break(IntEnum):
    """Kinds of places to cut, best first."""

    SECTION = 0
    PARAGRAPH = 1
    SENTENCE = 2
    LINE = 3
    WORD = 4
    TOKEN = 5


@dataclass(frozen=True)
class Chunk:
    """A piece of a source document.

    Attributes:
        text: ``source_text[start:end]``.
        source_id: the id of the document it comes from.
        index: its position among that document's chunks (0-based).
        start: character offset of its first character in the source text.
        end: offset one past its last character.
        num_tokens: its tokens, counted alone without special tokens (at most the chunk size).
        metadata: the source document's metadata plus ``source_id``, ``chunk_index``, ``start``,
            ``end``, ``num_tokens`` and, for paged sources (PDF), ``page`` and ``page_end`` (1-based).
    """

    text: str
    source_id: str
    index: int
    start: int
    end: int
    num_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``"{source_id}#{index}"``: stable as long as the document and the chunking are."""
        return f"{self.source_id}#{self.index}"


class Chunker:
    """Split documents into token-bounded chunks at natural breaks (see the module docs).

    Setup:
        .. code-block:: python

            from m3_integrations import M3Index, M3Model
            from m3_integrations.chunking import Chunker
            from m3_integrations.documents import read_documents

    Key init args:
        tokenizer: an :class:`~m3_integrations.M3Model` (or anything with its ``tokenize`` method).
        chunk_tokens: most tokens per chunk (default 384).
        chunk_overlap: tokens shared by neighbouring chunks (default 48).

    Instantiate and split:
        .. code-block:: python

            model = M3Model("BAAI/bge-m3")
            documents, summary = read_documents(["docs/"])
            chunks = Chunker(model, chunk_tokens=384, chunk_overlap=48).split_documents(documents)

    Index:
        .. code-block:: python

            index = M3Index(model)
            index.add(
                [c.text for c in chunks], ids=[c.id for c in chunks], metadatas=[c.metadata for c in chunks]
            )

    If ``chunk_tokens`` plus the special tokens and the passage instruction exceed the model's
    ``passage_max_length``, the chunk size is lowered to fit, with a logged warning.

    Raises:
        ValueError: ``chunk_tokens`` below :data:`MIN_CHUNK_TOKENS`, a negative overlap, or an overlap
            not smaller than the chunk size.
        TypeError: a size that is not an integer, or a tokenizer without a ``tokenize`` method.

    Example:
        >>> from m3_integrations.testing import WhitespaceTokenizer
        >>> chunker = Chunker(WhitespaceTokenizer(), chunk_tokens=8, chunk_overlap=3)
        >>> [c.text for c in chunker.split_text("A b c d e. F g h i j. K l m n o.")]
        ['A b c d e.', 'c d e. F g h i j.', 'h i j. K l m n o.']
    """

    def __init__(
        self,
        tokenizer: TokenizerLike,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        *,
        show_progress: bool = False,
    ) -> None:
        if not callable(getattr(tokenizer, "tokenize", None)):
            msg = f"tokenizer must have a tokenize method like M3Model's, got {type(tokenizer).__name__}"
            raise TypeError(msg)
        for name, value in (("chunk_tokens", chunk_tokens), ("chunk_overlap", chunk_overlap)):
            if not isinstance(value, int) or isinstance(value, bool):
                msg = f"{name} must be an integer, got {value!r}"
                raise TypeError(msg)
        if chunk_tokens < MIN_CHUNK_TOKENS:
            msg = f"chunk_tokens must be at least {MIN_CHUNK_TOKENS}, got {chunk_tokens}"
            raise ValueError(msg)
        if not 0 <= chunk_overlap < chunk_tokens:
            msg = (
                f"chunk_overlap must be at least 0 and smaller than chunk_tokens ({chunk_tokens}), "
                f"got {chunk_overlap}"
            )
            raise ValueError(msg)
        self.tokenizer = tokenizer
        self.show_progress = show_progress
        self.requested_chunk_tokens = chunk_tokens
        self.chunk_tokens, self.chunk_overlap = self._fit_model_limit(chunk_tokens, chunk_overlap)

    def _fit_model_limit(self, chunk_tokens: int, chunk_overlap: int) -> tuple[int, int]:
        """Lower the chunk size so that special tokens + instruction + chunk fit the passage limit."""
        limit = getattr(self.tokenizer, "passage_max_length", None)
        if not isinstance(limit, int):
            return chunk_tokens, chunk_overlap
        specials = len(self.tokenizer.tokenize([""], add_special_tokens=True).input_ids[0])
        instruction = getattr(self.tokenizer, "passage_instruction", None) or ""
        instruction_tokens = (
            len(self.tokenizer.tokenize([instruction], add_special_tokens=False).input_ids[0])
            if instruction
            else 0
        )
        room = limit - specials - instruction_tokens
        if chunk_tokens <= room:
            return chunk_tokens, chunk_overlap
        fitted = max(room, MIN_CHUNK_TOKENS)
        overlap = min(chunk_overlap, fitted // 2)
        logger.warning(
            "chunk_tokens=%d does not fit the model's passage limit of %d tokens with %d special and %d "
            "instruction tokens; using chunk_tokens=%d%s",
            chunk_tokens,
            limit,
            specials,
            instruction_tokens,
            fitted,
            f" and chunk_overlap={overlap}" if overlap != chunk_overlap else "",
        )
        return fitted, overlap

    def __repr__(self) -> str:
        return f"Chunker(chunk_tokens={self.chunk_tokens}, chunk_overlap={self.chunk_overlap})"

    # ------------------------------------------------------------------------------------ public API
    def split_text(
        self,
        text: str,
        *,
        source_id: str = "text",
        metadata: Mapping[str, Any] | None = None,
        page_starts: Sequence[int] = (),
    ) -> list[Chunk]:
        """Chunk one text.

        Args:
            text: the source text; chunk offsets index it.
            source_id: the id chunks point back to (their ids are ``source_id#index``).
            metadata: copied into every chunk's metadata.
            page_starts: offsets where pages begin, to give chunks ``page`` / ``page_end``.

        Returns:
            The chunks in text order; none for a text without words.

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            msg = f"text must be a string, got {type(text).__name__}"
            raise TypeError(msg)
        offsets = self.tokenizer.tokenize([text], add_special_tokens=False, return_offsets=True).offsets
        [(spans, _)] = self._spans([text], offsets)
        return self._chunks(text, spans, source_id, dict(metadata or {}), tuple(page_starts))

    def split_documents(
        self, documents: Iterable[DocumentLike], *, show_progress: bool | None = None
    ) -> list[Chunk]:
        """Chunk many documents (``id``, ``text``, ``metadata``, optional ``page_starts``).

        Args:
            documents: e.g. what :func:`m3_integrations.documents.read_documents` returns.
            show_progress: a tqdm bar over the documents; default the chunker's ``show_progress``.

        Returns:
            All chunks, document by document in the order given.
        """
        documents = list(documents)
        show = self.show_progress if show_progress is None else show_progress
        chunks: list[Chunk] = []
        left_out: list[str] = []
        progress = tqdm(total=len(documents), desc="Chunking", unit="doc", disable=not show)
        for first in range(0, len(documents), _DOCUMENTS_PER_BATCH):
            batch = documents[first : first + _DOCUMENTS_PER_BATCH]
            for i, document in enumerate(batch):
                if not isinstance(document.text, str):
                    msg = f"documents[{first + i}] (id {document.id!r}): text must be a string"
                    raise TypeError(msg)
            tokenized = self.tokenizer.tokenize(
                [d.text for d in batch], add_special_tokens=False, return_offsets=True
            )
            batch_spans = self._spans([d.text for d in batch], tokenized.offsets)
            for document, (spans, dropped) in zip(batch, batch_spans, strict=True):
                found = self._chunks(
                    document.text,
                    spans,
                    str(document.id),
                    dict(document.metadata),
                    tuple(getattr(document, "page_starts", ()) or ()),
                )
                chunks.extend(found)
                left_out.extend(f"{document.id}[{start}:{end}]" for start, end in dropped)
            progress.update(len(batch))
        progress.close()
        logger.info(
            "split %d documents into %d chunks (%d tokens; at most %d per chunk, overlap %d)",
            len(documents),
            len(chunks),
            sum(c.num_tokens for c in chunks),
            self.chunk_tokens,
            self.chunk_overlap,
        )
        if left_out:
            logger.info(
                "left out %d pieces with no words outside headings (too long to join a neighbour): %s",
                len(left_out),
                ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""),
            )
        return chunks

    # ------------------------------------------------------------------------------------ internals
    def _count(self, text: str) -> int:
        return len(self.tokenizer.tokenize([text], add_special_tokens=False).input_ids[0])

    def _spans(
        self, texts: Sequence[str], offsets: Sequence[Sequence[tuple[int, int]]]
    ) -> list[tuple[list[tuple[int, int, int]], list[tuple[int, int]]]]:
        """``(start, end, tokens)`` of each text's chunks, and the ``(start, end)`` of pieces left out.

        The cuts are placed on each text's own tokens, a little inside the budget, and all chunks are
        then counted in one tokenizer call; a text with a chunk still too long is cut again, counting
        each chunk as it is placed.
        """
        layouts = [_Layout(text, spans) for text, spans in zip(texts, offsets, strict=True)]
        margin = min(_PLANNING_MARGIN, self.chunk_tokens // 64)
        planned = [self._plan(layout, self.chunk_tokens - margin, exact=False) for layout in layouts]
        pieces = [
            layout.text[s:e] for layout, spans in zip(layouts, planned, strict=True) for s, e, _ in spans
        ]
        counts = iter(
            [len(ids) for ids in self.tokenizer.tokenize(pieces, add_special_tokens=False).input_ids]
            if pieces
            else []
        )
        result = []
        for layout, spans in zip(layouts, planned, strict=True):
            counted = [(start, end, next(counts)) for start, end, _ in spans]
            if any(num_tokens > self.chunk_tokens for _, _, num_tokens in counted):
                counted = self._plan(layout, self.chunk_tokens, exact=True)
            result.append(self._absorb_wordless(layout, counted))
        return result

    def _chunks(
        self,
        text: str,
        spans: list[tuple[int, int, int]],
        source_id: str,
        metadata: dict[str, Any],
        page_starts: tuple[int, ...],
    ) -> list[Chunk]:
        chunks = []
        for index, (start, end, num_tokens) in enumerate(spans):
            meta = {
                **metadata,
                "source_id": source_id,
                "chunk_index": index,
                "start": start,
                "end": end,
                "num_tokens": num_tokens,
            }
            if page_starts:
                meta["page"] = page_at(page_starts, start)
                meta["page_end"] = page_at(page_starts, end - 1)
            chunks.append(Chunk(text[start:end], source_id, index, start, end, num_tokens, meta))
        return chunks

    def _plan(self, layout: _Layout, budget: int, *, exact: bool) -> list[tuple[int, int, int]]:
        """``(start, end, tokens)`` of each chunk, greedily from the start of the text.

        With ``exact``, each chunk is tokenized as it is placed and cut shorter until it fits;
        otherwise ``tokens`` is the approximate count on the text's own tokens.
        """
        text = layout.text
        pos, content_end = _skip_space(text, 0), _back_over_space(text, len(text))
        spans: list[tuple[int, int, int]] = []
        prev_end = fresh_start = pos
        while pos < content_end:
            chunk_budget = budget
            while True:
                end, next_start, kind = layout.cut(pos, prev_end, chunk_budget, content_end)
                num_tokens = self._count(text[pos:end]) if exact else layout.count(pos, end)
                if num_tokens <= self.chunk_tokens:
                    break
                if pos < fresh_start and layout.count(pos, end) > chunk_budget:
                    # The overlap leaves no room for new text (it ends in a long run of spaces or
                    # punctuation that the tokenizer counts): start without it.
                    pos, chunk_budget = fresh_start, budget
                    continue
                # Cut shorter by what the chunk tokenized alone overshot.
                chunk_budget = min(
                    chunk_budget - 1, layout.count(pos, end) - (num_tokens - self.chunk_tokens)
                )
                if chunk_budget < 1:  # pragma: no cover - one token of a text is not 8 tokens alone
                    msg = f"cannot cut {text[pos : pos + 40]!r}... into chunks of {self.chunk_tokens} tokens"
                    raise RuntimeError(msg)
            spans.append((pos, end, num_tokens))
            if next_start >= content_end:
                break
            overlap_start = None
            if self.chunk_overlap and kind != _Break.SECTION:
                overlap_start = layout.overlap_start(pos, end, self.chunk_overlap)
            prev_end, fresh_start = end, next_start
            pos = overlap_start if overlap_start is not None else next_start
        return spans

    def _absorb_wordless(
        self, layout: _Layout, spans: list[tuple[int, int, int]]
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
        """Join each chunk without a word outside headings to a neighbour, or leave it out.

        The next chunk is tried first (a heading belongs to what follows), then the previous one; a
        join must fit the chunk size. Returns the spans kept and the ``(start, end)`` left out.
        """
        spans = list(spans)
        dropped: list[tuple[int, int]] = []
        i = 0
        while i < len(spans):
            start, end, _ = spans[i]
            if layout.has_words(start, end):
                i += 1
                continue
            joined = False
            for j in (i + 1, i - 1):
                if 0 <= j < len(spans):
                    lo, hi = min(start, spans[j][0]), max(end, spans[j][1])
                    num_tokens = self._count(layout.text[lo:hi])
                    if num_tokens <= self.chunk_tokens:
                        spans[min(i, j)] = (lo, hi, num_tokens)
                        del spans[max(i, j)]
                        i = max(min(i, j) - 1, 0)  # the joined chunk may now absorb its other neighbour
                        joined = True
                        break
            if not joined:
                dropped.append((start, end))
                del spans[i]
        return spans, dropped


# ---------------------------------------------------------------------------------------- text layout
_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_UNDERLINE = re.compile(r" {0,3}([=\-~^\"'`*+#:._])\1{2,}[ \t]*$")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")
_PARAGRAPH = re.compile(r"\s*\n[^\S\n]*\n\s*|\s*\f\s*")
_LATIN_SENTENCE = re.compile(r"(?<=\S)[.!?…]+[\"'”’)\]]*(\s+)")
_CJK_SENTENCE = re.compile(r"[。！？]+[」』”’）)]*(\s*)")
# Korean sentences ending in "다." (or "요." ...) sometimes run on without a space.
_HANGUL_SENTENCE = re.compile(r"(?<=[가-힣][.!?])(?=[가-힣])")
_LINE = re.compile(r"[^\S\n]*\n\s*")
_SPACE = re.compile(r"\s+")
# Chinese and Japanese clauses end at full-width commas and colons, with no space after them.
_CJK_CLAUSE = re.compile(r"(?<=[，、；：])(?=\S)")
_ALNUM = re.compile(r"[^\W_]")  # str.isalnum, as a pattern


def _skip_space(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    return i


def _back_over_space(text: str, i: int) -> int:
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i


def _heading_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each heading: ATX ``#`` lines and underlined (setext / reST) titles.

    ``end`` is the end of the heading's last non-space character; lines inside code fences are not
    headings.
    """
    spans: list[tuple[int, int]] = []
    in_fence = False
    # The two lines before the current one: (start, kind) with kind "text", "underline" or other.
    previous: tuple[int, str, str] = (0, "", "")
    before_previous: tuple[int, str, str] = (0, "", "")
    for match in re.finditer(r"^.*$", text, re.MULTILINE):
        line, start = match.group(), match.start()
        kind, adornment = "other", ""
        if _FENCE.match(line):
            in_fence = not in_fence
        elif in_fence or not line.strip():
            pass
        elif _ATX_HEADING.match(line):
            spans.append((start, start + len(line.rstrip())))
        elif underline := _UNDERLINE.match(line):
            if previous[1] == "text":
                heading_start = previous[0]
                # reST overline: the same adornment above the title.
                if before_previous[1] == "underline" and before_previous[2] == underline.group(1):
                    heading_start = before_previous[0]
                spans.append((heading_start, start + len(line.rstrip())))
            else:
                kind, adornment = "underline", underline.group(1)
        else:
            kind = "text"
        before_previous, previous = previous, (start, kind, adornment)
    return spans


@functools.lru_cache(maxsize=4096)
def _joins_previous(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it.

    True for combining marks, joiners, Hangul vowel and final consonant jamo, variation selectors.
    """
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or ch in "\u200d\u200c"
        or "\u1160" <= ch <= "\u11ff"
        or "\ufe00" <= ch <= "\ufe0f"
    )


class _Layout:
    """One document's tokens and break points, computed once; answers "where to cut" in log time."""

    def __init__(self, text: str, offsets: Sequence[tuple[int, int]]) -> None:
        self.text = text
        n = len(text)
        spans = np.fromiter(itertools.chain.from_iterable(offsets), dtype=np.int64, count=2 * len(offsets))
        spans = spans.reshape(-1, 2)
        spans = spans[spans[:, 1] > spans[:, 0]]
        # Offsets may overlap (XLM-R gives "▁" and "中文" the same start): monotone bounds keep the
        # token counts below consistent.
        self.token_starts = np.minimum.accumulate(spans[::-1, 0])[::-1] if len(spans) else spans[:, 0]
        self.token_ends = np.maximum.accumulate(spans[:, 1]) if len(spans) else spans[:, 1]
        starts = np.unique(spans[:, 0])
        self.raw_token_starts = starts[(starts > 0) & (starts < n)]
        headings = _heading_spans(text)
        self.heading_starts = np.array([h[0] for h in headings], dtype=np.int64)
        self.heading_ends = np.array([h[1] for h in headings], dtype=np.int64)

        found: dict[_Break, list[tuple[int, int]]] = {
            _Break.SECTION: [(_back_over_space(text, h), _skip_space(text, h)) for h, _ in headings],
            _Break.PARAGRAPH: [m.span() for m in _PARAGRAPH.finditer(text)],
            _Break.SENTENCE: sorted(
                [m.span(1) for m in _LATIN_SENTENCE.finditer(text)]
                + [m.span(1) for m in _CJK_SENTENCE.finditer(text)]
                + [m.span() for m in _HANGUL_SENTENCE.finditer(text)]
            ),
            _Break.LINE: [m.span() for m in _LINE.finditer(text)],
            _Break.WORD: sorted(
                [m.span() for m in _SPACE.finditer(text)] + [m.span() for m in _CJK_CLAUSE.finditer(text)]
            ),
        }
        # Per kind: where the chunk before the break ends (after its last non-space character) and
        # where the text after it starts; breaks that would end a chunk on a heading are removed.
        # Breaks between two tokens of one word are found on demand (_token_break), as they are rare.
        self.breaks: dict[_Break, tuple[np.ndarray, np.ndarray]] = {}
        for kind, pairs_found in found.items():
            pairs = np.array(pairs_found, dtype=np.int64).reshape(-1, 2)
            pairs = pairs[(pairs[:, 0] > 0) & (pairs[:, 1] < n) & ~self._ends_on_heading(pairs[:, 0])]
            self.breaks[kind] = (pairs[:, 0], pairs[:, 1])
        self.words_end = self._last_word_end()

    def _ends_on_heading(self, ends: np.ndarray) -> np.ndarray:
        """Whether a chunk ending at each offset would end inside or right after a heading."""
        if not len(self.heading_starts):
            return np.zeros(len(ends), dtype=bool)
        i = np.searchsorted(self.heading_starts, ends, side="left") - 1
        inside = i >= 0
        inside[inside] = ends[inside] <= self.heading_ends[i[inside]]
        return inside

    def _token_break(self, at: int) -> bool:
        """Whether a cut before the token at ``at`` is allowed.

        It must be inside a word, split no character and not end a chunk on a heading.
        """
        text = self.text
        return (
            not text[at].isspace()
            and not text[at - 1].isspace()
            and text[at - 1] != "\u200d"
            and not _joins_previous(text[at])
            and not self._ends_on_heading(np.array([at]))[0]
        )

    def first_word(self, start: int) -> int:
        """Offset of the first letter or digit at or after ``start`` outside headings (else the length)."""
        n = len(self.text)
        i = int(np.searchsorted(self.heading_ends, start, side="left"))
        pos = start
        while True:
            zone = int(self.heading_starts[i]) if i < len(self.heading_starts) else n
            found = _ALNUM.search(self.text, pos, max(pos, zone))
            if found:
                return found.start()
            if zone >= n:
                return n
            pos = max(pos, int(self.heading_ends[i]))
            i += 1

    def _last_word_end(self) -> int:
        """Offset just past the last letter or digit outside headings (0 if there is none)."""
        text = self.text
        end = len(text)
        for i in range(len(self.heading_starts), -1, -1):
            zone_end = int(self.heading_ends[i - 1]) if i else 0
            for j in range(end - 1, zone_end - 1, -1):
                if text[j].isalnum():
                    return j + 1
            end = int(self.heading_starts[i - 1]) if i else 0
        return 0

    def has_words(self, start: int, end: int) -> bool:
        """Whether ``text[start:end]`` has a letter or digit outside headings."""
        return self.first_word(start) < end

    def count(self, start: int, end: int) -> int:
        """Tokens of the document overlapping ``[start, end)``."""
        before_end = int(np.searchsorted(self.token_starts, end, side="left"))
        done_by_start = int(np.searchsorted(self.token_ends, start, side="right"))
        return max(0, before_end - done_by_start)

    def cut(self, pos: int, prev_end: int, budget: int, content_end: int) -> tuple[int, int, _Break | None]:
        """Where the chunk starting at ``pos`` ends: ``(end, next start, kind of break)``.

        The chunk holds at most ``budget`` of the document's tokens and ends after ``prev_end`` (the
        previous chunk's end), so that every chunk adds text.
        """
        first = int(np.searchsorted(self.token_ends, pos, side="right"))
        if first + budget >= len(self.token_starts):
            return content_end, len(self.text), None
        limit = int(self.token_starts[first + budget])
        full_enough = int(self.token_ends[first + max(1, int(budget * _MIN_FILL)) - 1])
        earliest = max(pos, prev_end) + 1
        # A chunk must hold a word, and so must the text left after it (else a closing heading would
        # end up alone).
        with_words = max(earliest, self.first_word(pos) + 1)
        raw = self.raw_token_starts
        for lowest in (max(full_enough, with_words), with_words):
            for kind, (ends, starts) in self.breaks.items():
                i = min(
                    int(np.searchsorted(ends, limit, side="right")),
                    int(np.searchsorted(starts, self.words_end, side="left")),
                )
                if i > 0 and ends[i - 1] >= lowest:
                    return int(ends[i - 1]), int(starts[i - 1]), kind
            i = int(np.searchsorted(raw, min(limit, self.words_end - 1), side="right")) - 1
            while i >= 0 and raw[i] >= lowest:
                if self._token_break(int(raw[i])):
                    return int(raw[i]), int(raw[i]), _Break.TOKEN
                i -= 1
        # No word fits (punctuation and headings fill the budget). The piece cut off has no word: it
        # joins a neighbour or is left out. So cut before the next heading, if one comes, to keep it
        # with its text; else as late as possible.
        i = int(np.searchsorted(self.heading_starts, pos, side="right"))
        before_heading = int(self.heading_starts[i]) if i < len(self.heading_starts) else limit
        latest = None
        for kind, (ends, starts) in self.breaks.items():
            i = int(np.searchsorted(ends, min(limit, before_heading), side="right")) - 1
            if i >= 0 and ends[i] >= earliest and (latest is None or ends[i] > latest[0]):
                latest = (int(ends[i]), int(starts[i]), kind)
        if latest is not None:
            return latest
        # No allowed break at all (headings longer than a chunk): cut between tokens, heading or not,
        # the last cut within the limit, else the first one that adds text.
        last = int(np.searchsorted(raw, limit, side="right"))
        for at in [*raw[:last][::-1].tolist(), *raw[last:].tolist()]:
            end = _back_over_space(self.text, at)
            if end >= earliest:
                return end, _skip_space(self.text, at), _Break.TOKEN
        return content_end, len(self.text), None

    def overlap_start(self, pos: int, end: int, overlap: int) -> int | None:
        """Where the next chunk starts so as to repeat about ``overlap`` tokens before ``end``.

        ``None`` when no break lies inside the chunk ``[pos, end)`` close enough to ``end``.
        """
        last = int(np.searchsorted(self.token_starts, end, side="left"))
        first = last - overlap
        earliest = pos + 1 if first <= 0 else max(pos + 1, int(self.token_starts[first]))
        # Sentence starts first (section, paragraph, sentence), if they keep half the overlap. Line
        # starts are not among them: hard-wrapped prose breaks lines inside sentences.
        best = None
        for kind in (_Break.SECTION, _Break.PARAGRAPH, _Break.SENTENCE):
            found = self._first_start(kind, earliest, end)
            if found is not None and (best is None or found < best):
                best = found
        if best is not None and self.count(best, end) * 2 >= overlap:
            return best
        found = self._first_start(_Break.WORD, earliest, end)
        if found is not None:
            return found
        raw = self.raw_token_starts
        i = int(np.searchsorted(raw, earliest, side="left"))
        while i < len(raw) and raw[i] < end:
            if self._token_break(int(raw[i])):
                return int(raw[i])
            i += 1
        return best

    def _first_start(self, kind: _Break, earliest: int, end: int) -> int | None:
        starts = self.breaks[kind][1]
        # Starts are sorted like the ends for every kind: breaks of one kind never overlap.
        i = int(np.searchsorted(starts, earliest, side="left"))
        if i < len(starts) and starts[i] < end:
            return int(starts[i])
        return None
