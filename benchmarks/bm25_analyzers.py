"""BM25 alone over different tokens, per collection: what the language-aware analyzers are chosen on.

Nothing is encoded: each analyzer tokenizes the corpus and the queries, ``m3_integrations.bm25.BM25``
ranks, and nDCG@10 per query is compared with plain words (95% paired bootstrap interval).

Usage (from the repository root)::

    python benchmarks/bm25_analyzers.py jsquad-v1.3 scifact tydiqa-goldp-dev/fi
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3_integrations.bm25 import BM25, WordTokenizer, word_tokenize  # noqa: E402
from m3_integrations.evaluation import load_beir, paired_bootstrap_ci, per_query_metrics  # noqa: E402
from m3_integrations.language import analyzer_for, detect_languages  # noqa: E402

DATA = Path(os.environ.get("M3_SHARED_DATA", ROOT.parent / "shared" / "data"))
E5 = os.environ.get("M3_MULTILINGUAL_E5_SMALL_PATH", "/root/.cache/m3-models/multilingual-e5-small")


def analyzers(texts: Sequence[str]) -> dict[str, Callable[[str], list]]:
    """Plain words, the detected language's analyzer, CJK variants and the e5 tokenizer's subwords."""
    profile = detect_languages(texts)
    chosen = analyzer_for(profile.primary)
    out: dict[str, Callable[[str], list]] = {"words": word_tokenize}
    if chosen.tokenizer == "word":
        out[f"language ({profile.primary})"] = WordTokenizer(
            stemmer=chosen.stemmer, stopwords=chosen.stopwords, cjk=chosen.cjk
        )
    if profile.primary in ("ja", "zh"):
        out["chars+bigrams"] = WordTokenizer(cjk="chars+bigrams")
    if Path(E5).is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(E5)
        out["e5 subwords"] = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]
    return out


def evaluate(folder: Path) -> None:
    data = load_beir(folder)
    docs = data.documents()
    ids, texts = [d for d, _ in docs], [t for _, t in docs]
    results: dict[str, dict[str, float]] = {}
    for name, tokenize in analyzers(texts).items():
        start = time.perf_counter()
        bm25 = BM25()
        bm25.add([tokenize(t) for t in texts])
        run = {}
        for qid, query in data.queries.items():
            scores = bm25.get_scores(tokenize(query))
            top = np.argsort(-scores, kind="stable")[:100]
            run[qid] = [ids[i] for i in top if scores[i] > 0]
        results[name] = per_query_metrics(run, data.qrels, ["ndcg@10"])["ndcg@10"]
        mean = float(np.mean(list(results[name].values())))
        print(
            f"{folder.name:12s} {name:24s} nDCG@10 {mean:.4f} ({time.perf_counter() - start:.1f}s)",
            flush=True,
        )
    queries = list(results["words"])
    for name, values in results.items():
        if name != "words":
            diff = paired_bootstrap_ci([values[q] for q in queries], [results["words"][q] for q in queries])
            print(f"{folder.name:12s} {name:24s} - words: {diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("collections", nargs="+", help="folders under the shared data folder")
    args = parser.parse_args(argv)
    for name in args.collections:
        evaluate(DATA / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
