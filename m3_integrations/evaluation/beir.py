r"""Load retrieval collections in the BEIR layout (and KorQuAD, converted in memory).

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``). The qrels file may start
with that header line or not; columns are tab-separated (ids may contain spaces), and a file without
tabs is split on whitespace. Scores are graded relevance: higher is more relevant, ``<= 0`` is not
relevant.

Documents are indexed as ``title + "\n" + text`` when the title is non-empty (and not already the start
of the text, as in Cranfield where the body repeats the title), else as ``text`` alone.

Example:
    >>> import json, pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "x"}) + "\n")
    >>> _ = (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    >>> (root / "qrels").mkdir()
    >>> _ = (root / "qrels" / "test.tsv").write_text("q1\td1\t2\n")
    >>> data = load_beir(root)
    >>> data.documents()[0], data.qrels
    (('d1', 'T\nx'), {'q1': {'d1': 2}})
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

# Defined in the core, which reads the same records for indexing: one join, one JSON-lines parser.
from m3_integrations.documents import iter_jsonl, join_title_text

logger = logging.getLogger(__name__)

__all__ = [
    "BeirDataset",
    "Document",
    "iter_jsonl",
    "join_title_text",
    "load_beir",
    "load_korquad",
    "read_qrels",
]

Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Document:
    """One corpus entry: its id, title (may be empty) and body text."""

    id: str
    title: str
    text: str

    @property
    def content(self) -> str:
        """The text that gets indexed: see :func:`join_title_text`."""
        return join_title_text(self.title, self.text)


@dataclass
class BeirDataset:
    """A retrieval collection in memory.

    Attributes:
        name: a short label for reports.
        corpus: document id → :class:`Document`, in file order.
        queries: query id → query text, restricted to judged queries (at least one relevant document).
        qrels: query id → {document id → graded relevance}.
    """

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels
    info: dict[str, object] = field(default_factory=dict)

    def documents(self) -> list[tuple[str, str]]:
        """``(id, indexed text)`` pairs in corpus order."""
        return [(doc.id, doc.content) for doc in self.corpus.values()]

    def query_items(self) -> list[tuple[str, str]]:
        """``(query id, text)`` pairs in file order."""
        return list(self.queries.items())

    def subsample_queries(self, n: int, *, seed: int = 0) -> BeirDataset:
        """A copy with at most ``n`` queries drawn without replacement (seeded, order kept)."""
        if n >= len(self.queries):
            return self
        keep = set(random.Random(seed).sample(list(self.queries), n))
        queries = {qid: q for qid, q in self.queries.items() if qid in keep}
        return BeirDataset(
            name=self.name,
            corpus=self.corpus,
            queries=queries,
            qrels={qid: rel for qid, rel in self.qrels.items() if qid in keep},
            info={**self.info, "subsampled_queries": n, "seed": seed},
        )


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read a qrels TSV (``query-id corpus-id score``), with or without a header line.

    Args:
        path: the qrels file.

    Returns:
        query id → {document id → integer grade}; a repeated pair keeps its last grade.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line does not have three columns or its score is not an integer.
    """
    path = Path(path)
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, raw_line in enumerate(fh, 1):
            line = raw_line.rstrip("\n\r")
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) == 4:  # TREC format: qid iter docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                msg = f"{path}:{line_no}: expected 3 columns (query-id, corpus-id, score), got {len(parts)}"
                raise ValueError(msg)
            qid, did, score = (p.strip() for p in parts)
            try:
                grade = int(float(score))
            except ValueError as err:
                if line_no == 1:  # a header line such as "query-id corpus-id score"
                    continue
                msg = f"{path}:{line_no}: score {score!r} is not a number"
                raise ValueError(msg) from err
            qrels.setdefault(qid, {})[did] = grade
    return qrels


def load_beir(
    folder: str | os.PathLike[str],
    *,
    split: str = "test",
    queries_folder: str | os.PathLike[str] | None = None,
    qrels_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> BeirDataset:
    """Load a BEIR folder; for cross-lingual runs take queries (and qrels) from elsewhere.

    Only judged queries are kept (those with at least one grade > 0); qrels rows that name a document
    missing from the corpus are dropped with a warning.

    Args:
        folder: the folder with ``corpus.jsonl`` (and by default ``queries.jsonl`` and ``qrels/``).
        split: qrels file name under ``qrels/`` without ``.tsv``.
        queries_folder: read ``queries.jsonl`` from this folder instead (XQuAD zh→en: zh queries, en corpus).
        qrels_path: explicit qrels file; default ``folder/qrels/<split>.tsv``, else the parent's
            ``qrels/<split>.tsv`` (XQuAD shares one qrels file among languages).
        name: label for reports; default the folder name.

    Returns:
        A :class:`BeirDataset`.

    Raises:
        FileNotFoundError: a folder or one of its files is missing.
        ValueError: a file is malformed, or the corpus is empty.
    """
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"dataset folder {str(folder)!r} does not exist"
        raise FileNotFoundError(msg)
    corpus_path = folder / "corpus.jsonl"
    queries_path = Path(queries_folder or folder) / "queries.jsonl"
    if qrels_path is None:
        candidates = [folder / "qrels" / f"{split}.tsv", folder.parent / "qrels" / f"{split}.tsv"]
        qrels_path = next((c for c in candidates if c.is_file()), candidates[0])
    for path in (corpus_path, queries_path, Path(qrels_path)):
        if not path.is_file():
            msg = f"missing {path.name} for dataset {str(folder)!r} (looked for {path})"
            raise FileNotFoundError(msg)

    corpus: dict[str, Document] = {}
    for _, record in iter_jsonl(corpus_path):
        did = str(record["_id"])
        corpus[did] = Document(did, str(record.get("title") or ""), str(record.get("text") or ""))
    if not corpus:
        msg = f"corpus {corpus_path} is empty"
        raise ValueError(msg)
    all_queries = {str(r["_id"]): str(r.get("text") or "") for _, r in iter_jsonl(queries_path)}
    qrels_all = read_qrels(qrels_path)

    qrels: Qrels = {}
    dangling = 0
    for qid, rels in qrels_all.items():
        if qid not in all_queries:
            continue
        kept = {did: g for did, g in rels.items() if did in corpus}
        dangling += len(rels) - len(kept)
        if any(g > 0 for g in kept.values()):
            qrels[qid] = kept
    if dangling:
        logger.warning("%d qrels rows name documents missing from %s; dropped", dangling, corpus_path)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    return BeirDataset(
        name=name or folder.name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        info={"corpus": str(corpus_path), "queries": str(queries_path), "qrels": str(qrels_path)},
    )


def load_korquad(
    path: str | os.PathLike[str], *, level: str = "paragraph", name: str | None = None
) -> BeirDataset:
    """Turn the KorQuAD 1.0 JSON into a retrieval collection in memory (its licence forbids derivatives).

    ``level="paragraph"``: one document per paragraph (id ``a{article}-p{paragraph}``), each question
    relevant to its own paragraph and to any byte-identical duplicate of it. ``level="article"``: one
    document per article (title + paragraphs joined by blank lines), relevant = the source article.

    Args:
        path: ``KorQuAD_v1.0_dev.json``.
        level: ``"paragraph"`` or ``"article"``.
        name: label for reports.

    Returns:
        A :class:`BeirDataset` with grade-1 qrels.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: ``level`` is unknown or the file is not SQuAD-shaped.
    """
    if level not in ("paragraph", "article"):
        msg = f"level must be 'paragraph' or 'article', got {level!r}"
        raise ValueError(msg)
    path = Path(path)
    if not path.is_file():
        msg = f"KorQuAD file {str(path)!r} does not exist"
        raise FileNotFoundError(msg)
    raw = json.loads(path.read_text(encoding="utf-8"))
    try:
        articles = raw["data"]
    except (KeyError, TypeError) as err:
        msg = f"{path} is not SQuAD-shaped (no top-level 'data' list)"
        raise ValueError(msg) from err

    corpus: dict[str, Document] = {}
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    by_context: dict[str, list[str]] = {}
    for a, article in enumerate(articles):
        title = str(article.get("title", ""))
        paragraphs = article.get("paragraphs", [])
        if level == "article":
            did = f"a{a}"
            text = "\n\n".join(p["context"] for p in paragraphs)
            corpus[did] = Document(did, title, text)
        for p, paragraph in enumerate(paragraphs):
            context = paragraph["context"]
            if level == "paragraph":
                did = f"a{a}-p{p}"
                corpus[did] = Document(did, "", context)
                by_context.setdefault(context, []).append(did)
            for qa in paragraph.get("qas", []):
                queries[qa["id"]] = qa["question"]
                qrels[qa["id"]] = {did: 1}
    if level == "paragraph":
        for rels in qrels.values():
            (did,) = rels
            for twin in by_context[corpus[did].text]:
                rels[twin] = 1
    return BeirDataset(
        name=name or f"korquad-{level}",
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        info={"source": str(path), "level": level},
    )
