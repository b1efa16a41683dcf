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

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm.auto import tqdm

from m3_integrations._chunk_layout import _back_over_space, _Break, _Layout, _skip_space
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
