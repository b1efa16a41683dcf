"""Chunking throughput and chunk statistics on a BEIR corpus, with a real tokenizer.

Reads the corpus with :func:`m3_integrations.documents.read_documents`, chunks it with
:class:`m3_integrations.chunking.Chunker` (best of ``--repeat`` runs), checks every chunk (exact
offsets, token count alone at most the chunk size, special tokens + passage instruction + chunk within
the model's passage limit), and prints characters per second, the time of one plain tokenization of
all documents for comparison, the number of chunks and tokens, and where chunks end.

Example (the numbers in docs/documents.md; 2-core VM):
    python benchmarks/chunking_throughput.py ../shared/data/autorag-ko/longdoc \\
        --model ~/.cache/m3-models/multilingual-e5-small --passage-instruction "passage: "
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections import Counter

from m3_integrations import M3Model
from m3_integrations.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS, Chunker
from m3_integrations.documents import read_documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", help="a BEIR folder (or any files read_documents reads)")
    parser.add_argument("--model", required=True, help="encoder folder (its tokenizer is used)")
    parser.add_argument("--passage-instruction", default=None)
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_CHUNK_TOKENS)
    parser.add_argument("--chunk-overlap", type=int, default=DEFAULT_CHUNK_OVERLAP)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model = M3Model(
        args.model, device="cpu", allow_missing_heads=True, passage_instruction=args.passage_instruction
    )
    documents, _ = read_documents([args.corpus])
    chars = sum(len(d.text) for d in documents)
    texts = [d.text for d in documents]
    start = time.perf_counter()
    document_tokens = sum(len(ids) for ids in model.tokenize(texts, add_special_tokens=False).input_ids)
    tokenize_seconds = time.perf_counter() - start

    chunker = Chunker(model, args.chunk_tokens, args.chunk_overlap)
    slow_path = Counter()
    plan = chunker._plan

    def counting_plan(layout, budget, *, exact):  # type: ignore[no-untyped-def]
        slow_path[exact] += 1
        return plan(layout, budget, exact=exact)

    chunker._plan = counting_plan  # type: ignore[method-assign]
    best = float("inf")
    for _ in range(args.repeat):
        slow_path.clear()
        start = time.perf_counter()
        chunks = chunker.split_documents(documents)
        best = min(best, time.perf_counter() - start)

    by_id = {d.id: d for d in documents}
    limit = model.passage_max_length
    for chunk in chunks:
        assert by_id[chunk.source_id].text[chunk.start : chunk.end] == chunk.text
        assert chunk.num_tokens <= chunker.chunk_tokens
        encoded = model.tokenize([(args.passage_instruction or "") + chunk.text]).input_ids[0]
        assert len(encoded) <= limit, (chunk.id, len(encoded))
    counts = [c.num_tokens for c in chunks]
    endings = Counter(
        "sentence"
        if re.search(r"[.!?。！？]['\")\]”’」』）]*$", c.text)
        else ("paragraph or line" if by_id[c.source_id].text[c.end : c.end + 1] == "\n" else "other")
        for c in chunks
        if c.end < len(by_id[c.source_id].text.rstrip())
    )
    print(
        f"{len(documents)} documents, {chars:,} characters, {document_tokens:,} tokens; "
        f"chunk_tokens={chunker.chunk_tokens} overlap={chunker.chunk_overlap}"
    )
    print(
        f"chunking: {best:.2f} s = {chars / best / 1e3:,.0f}k characters/s "
        f"(one plain tokenization of all documents: {tokenize_seconds:.2f} s); "
        f"{slow_path[True]} of {len(documents)} documents re-cut with exact counts"
    )
    print(
        f"{len(chunks):,} chunks, {sum(counts):,} tokens ({sum(counts) / document_tokens:.2f}x the "
        f"documents'); per chunk min {min(counts)} median {statistics.median(counts):.0f} max {max(counts)}"
    )
    print(
        "chunks (not last in their document) ending at: " + ", ".join(f"{k} {v}" for k, v in endings.items())
    )


if __name__ == "__main__":
    main()
