"""Opt-in: the LangChain retriever and chatbot split on a real pretrained encoder (multilingual-e5-small).

Set ``M3_REAL_ENCODER`` to the folder printed by ``../shared/tools/build-multilingual-e5-small.sh``.
The encoder has no sparse or ColBERT head, so the index uses BM25 as its lexical signal.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.langchain import M3Retriever

ENCODER = os.environ.get("M3_REAL_ENCODER", "")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not ENCODER or not Path(ENCODER).is_dir(), reason="M3_REAL_ENCODER not set"),
]


def test_sample_questions_find_their_notes() -> None:
    spec = importlib.util.spec_from_file_location("langchain_chatbot_real", EXAMPLES / "langchain_chatbot.py")
    bot = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bot
    spec.loader.exec_module(bot)
    model = M3Model(
        ENCODER,
        device="cpu",
        allow_missing_heads=True,
        pooling="mean",
        query_instruction="query: ",
        passage_instruction="passage: ",
    )
    args = bot.build_parser().parse_args([])
    log = bot.common.Log(quiet=True)
    documents = bot.common.read_sources(args.data, log)
    chunks = bot.common.split(bot.common.make_chunker(model, args), documents, log)
    retriever = M3Retriever.from_documents(bot.to_documents(chunks), model=model, k=3, mode="dense+sparse")
    questions = {
        "서울의 인구를 검색하면 어떤 문단이 나오나?": "korean_notes.md",
        "What does reciprocal rank fusion add up?": "hybrid_search.txt",
        "稀疏检索和稠密检索有什么区别？": "chinese_notes.txt",
        "Wozu dient die Quellenangabe?": "german_notes.md",
    }
    for question, source in questions.items():
        assert retriever.invoke(question)[0].metadata["source_id"] == source, question
