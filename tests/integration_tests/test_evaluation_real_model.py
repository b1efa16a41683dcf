"""Opt-in: the eval command with a real encoder (multilingual-e5-small), on a handmade collection.

Runs only when ``M3_E5_PATH`` names the folder printed by ``../shared/tools/build-multilingual-e5-small.sh``
(``pytest -m real_model``); skipped otherwise, so the default run never loads a real model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from m3_integrations.cli import main

E5_PATH = os.environ.get("M3_E5_PATH", "")

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not E5_PATH or not Path(E5_PATH).is_dir(), reason="M3_E5_PATH (e5 folder) not set"),
]

CORPUS = {
    "paris": "Paris is the capital and most populous city of France.",
    "seoul": "서울특별시는 대한민국의 수도이자 최대 도시이다.",
    "beijing": "北京是中华人民共和国的首都，也是政治和文化中心。",
    "photosynthesis": "Photosynthesis converts light energy into chemical energy in plants.",
    "volcano": "A volcano is a rupture in the crust through which lava and gases escape.",
}
QUERIES = {
    "q1": ("What is the capital of France?", "paris"),
    "q2": ("대한민국의 수도는 어디인가?", "seoul"),
    "q3": ("中国的首都是哪里？", "beijing"),
    "q4": ("how do plants turn light into energy", "photosynthesis"),
    "q5": ("Where does lava come out of the earth?", "volcano"),
}


def test_eval_with_e5_ranks_the_obvious_answers_first(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, text in CORPUS.items():
            fh.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, (text, _) in QUERIES.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "".join(f"{qid}\t{did}\t1\n" for qid, (_, did) in QUERIES.items()), encoding="utf-8"
    )
    out = tmp_path / "r.json"
    code = main(
        ["eval", "--data", str(root), "--model", E5_PATH, "--pooling", "mean", "--allow-missing-heads",
         "--query-instruction", "query: ", "--passage-instruction", "passage: ", "--mode", "dense", "hybrid",
         "--fusion", "relative_score", "--json", str(out), "-q"]
    )  # fmt: skip
    assert code == 0
    results = {r["name"]: r["metrics"] for r in json.loads(out.read_text())["results"]}
    assert results["dense"]["mrr@10"] == 1.0
    assert results["hybrid/relative_score"]["mrr@10"] == 1.0
