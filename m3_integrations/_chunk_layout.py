"""Where :class:`~m3_integrations.chunking.Chunker` may cut one document: its tokens and break points.

:class:`_Layout` is computed once per document from the text and its token offsets; it answers "where
to cut" for a position and a token budget in log time. The kinds of breaks, best first, are
:class:`_Break`'s (the list in :mod:`m3_integrations.chunking`'s docstring).

Example:
    >>> layout = _Layout("One two. Three", [(0, 3), (4, 7), (7, 8), (9, 14)])
    >>> layout.count(0, 14), layout.has_words(7, 8)
    (4, False)
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence
from enum import IntEnum

import numpy as np

# A cut at a preferred break must leave the chunk at least this full; else a lesser break is used.
_MIN_FILL = 0.5


class _Break(IntEnum):
    """Kinds of places to cut, best first."""

    SECTION = 0
    PARAGRAPH = 1
    SENTENCE = 2
    LINE = 3
    WORD = 4
    TOKEN = 5


_ATX_HEADING = re.compile(r" {0,3}#{1,6}(?:[ \t]|$)")
_UNDERLINE = re.compile(r" {0,3}([=\-~^\"'`*+#:._])\1{2,}[ \t]*$")
_FENCE = re.compile(r" {0,3}(?:```|~~~)")
_PARAGRAPH = re.compile(r"\s*\n[^\S\n]*\n\s*|\s*\f\s*")
# Latin-like sentence ends, with the danda and double danda of Devanagari, Bengali and other Indic scripts.
_LATIN_SENTENCE = re.compile(r"(?<=\S)[.!?…।॥]+[\"'”’)\]]*(\s+)")
_CJK_SENTENCE = re.compile(r"[。！？]+[」』”’）)]*(\s*)")
# Korean sentences ending in "다." (or "요." ...) sometimes run on without a space.
_HANGUL_SENTENCE = re.compile(r"(?<=[가-힣][.!?])(?=[가-힣])")
_LINE = re.compile(r"[^\S\n]*\n\s*")
_SPACE = re.compile(r"\s+")
# Chinese and Japanese clauses end at full-width commas and colons, with no space after them.
_CJK_CLAUSE = re.compile(r"(?<=[，、；：])(?=\S)")
_ALNUM = re.compile(r"[^\W_]")  # str.isalnum, as a pattern


def sentence_spans(text: str) -> list[tuple[int, int]]:
    r"""``(start, end)`` of each sentence of ``text``: the chunker's sentence, paragraph and line breaks.

    Spans hold no surrounding whitespace; blank pieces are left out.

    Example:
        >>> text = "One two. Three four!\n\n東京は大きい。大阪も。 ঢাকা বড় শহর। নদী আছে।"
        >>> [text[a:b] for a, b in sentence_spans(text)]
        ['One two.', 'Three four!', '東京は大きい。', '大阪も。', 'ঢাকা বড় শহর।', 'নদী আছে।']
    """
    breaks = sorted(
        [m.span(1) for m in _LATIN_SENTENCE.finditer(text)]
        + [m.span(1) for m in _CJK_SENTENCE.finditer(text)]
        + [m.span() for m in _HANGUL_SENTENCE.finditer(text)]
        + [m.span() for m in _PARAGRAPH.finditer(text)]
        + [m.span() for m in _LINE.finditer(text)]
    )
    spans = []
    start = 0
    for end, next_start in [*breaks, (len(text), len(text))]:
        if end > start:
            first, last = _skip_space(text, start), _back_over_space(text, end)
            if last > first:
                spans.append((first, last))
        start = max(start, next_start)
    return spans


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
