"""How far the stores' BM25 (encoders without a sparse head) is from M3Index's, on real collections.

``QdrantM3Store`` writes per-document BM25 term weights ``tf·(k1+1)/(tf + k1·(1-b+b·|d|/avgdl))`` with
``avgdl`` fixed by the first ``add`` call, and Qdrant multiplies by its idf ``ln(1 + (N-n+0.5)/(n+0.5))``
at query time (the tests check the store computes exactly this). ``M3Index`` uses rank_bm25's Okapi:
idf ``ln((N-n+0.5)/(n+0.5))`` with negative values floored at ``0.25·mean idf``, and the live avgdl.
Both rank BM25 alone here (word tokens, no stemming), over every document:

- nDCG@10 of each, and the mean overlap of their top 10;
- the same with ``avgdl`` fixed by a first batch of 10% of the corpus (shortest documents first: the
  worst case of a corpus whose length drifts after the collection was made).

Usage:
    python benchmarks/store_bm25_diff.py [--collections cranfield scifact autorag-ko/page]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m3_integrations.bm25 import BM25, WordTokenizer
from m3_integrations.evaluation import load_beir
from m3_integrations.evaluation.metrics import ndcg_at_k
from m3_integrations.stores.remote import bm25_document_weights, term_index

# The shared collections sit beside the main checkout (../shared/data); worktrees are one level deeper.
_ROOT = Path(__file__).resolve().parents[1]
DATA = next(
    (p for p in (_ROOT.parent / "shared" / "data", _ROOT.parents[1] / "shared" / "data") if p.is_dir()), None
)


def store_scores(doc_tokens: list[list[str]], avg_length: float) -> tuple[sp.csc_matrix, np.ndarray]:
    rows, cols, vals = [], [], []
    for i, tokens in enumerate(doc_tokens):
        for term, weight in bm25_document_weights(tokens, avg_length).items():
            rows.append(i)
            cols.append(term)
            vals.append(weight)
    # Compact the hashed term ids to columns.
    unique, columns = np.unique(np.asarray(cols, dtype=np.int64), return_inverse=True)
    matrix = sp.csc_matrix((vals, (rows, columns)), shape=(len(doc_tokens), len(unique)))
    return matrix, unique


def rank_store(matrix: sp.csc_matrix, terms: np.ndarray, query: list[str], n_docs: int) -> np.ndarray:
    scores = np.zeros(n_docs)
    df = np.diff(matrix.indptr)
    for term, count in Counter(term_index(t) for t in query).items():
        column = int(np.searchsorted(terms, term))
        if column >= len(terms) or terms[column] != term:
            continue
        idf = math.log(1 + (n_docs - df[column] + 0.5) / (df[column] + 0.5))
        start, stop = matrix.indptr[column], matrix.indptr[column + 1]
        scores[matrix.indices[start:stop]] += count * idf * matrix.data[start:stop]
    return scores


def top(scores: np.ndarray, k: int = 10) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collections", nargs="+", default=["cranfield", "scifact", "autorag-ko/page"])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the BEIR collections")
    args = parser.parse_args()
    if args.data is None:
        parser.error("no ../shared/data found: pass --data")
    tokenize = WordTokenizer()
    print(
        "| collection | docs | queries | nDCG@10 M3Index | nDCG@10 store | top-10 overlap "
        "| store, avgdl of 10% shortest | overlap |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.collections:
        dataset = load_beir(args.data / name)
        ids, texts = zip(*dataset.documents(), strict=True)
        doc_tokens = [tokenize(t) for t in texts]
        index_bm25 = BM25()
        index_bm25.add(doc_tokens)
        mean_length = float(np.mean([len(d) for d in doc_tokens]))
        shortest = np.sort([len(d) for d in doc_tokens])[: max(1, len(doc_tokens) // 10)]
        stores = {
            "store": store_scores(doc_tokens, mean_length),
            "drift": store_scores(doc_tokens, float(np.mean(shortest))),
        }
        ndcg: dict[str, list[float]] = {"index": [], "store": [], "drift": []}
        overlap: dict[str, list[float]] = {"store": [], "drift": []}
        for qid, query in dataset.query_items():
            words = tokenize(query)
            reference = index_bm25.get_scores(words)
            ndcg["index"].append(ndcg_at_k([ids[i] for i in top(reference)], dataset.qrels[qid]))
            for variant, (matrix, terms) in stores.items():
                scores = rank_store(matrix, terms, words, len(ids))
                ndcg[variant].append(ndcg_at_k([ids[i] for i in top(scores)], dataset.qrels[qid]))
                overlap[variant].append(len(set(top(scores)) & set(top(reference))) / 10)
        print(
            f"| {name} | {len(ids):,} | {len(dataset.queries)} | {np.mean(ndcg['index']):.4f} | "
            f"{np.mean(ndcg['store']):.4f} | {np.mean(overlap['store']):.3f} | "
            f"{np.mean(ndcg['drift']):.4f} | {np.mean(overlap['drift']):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
