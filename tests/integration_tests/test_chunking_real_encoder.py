"""Opt-in: the chunker on a real tokenizer (multilingual-e5-small, XLM-R vocabulary, 512 positions).

Set ``M3_REAL_ENCODER`` to the encoder folder (see test_langchain_real_encoder.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m3_integrations import M3Model
from m3_integrations.chunking import Chunker
from m3_integrations.documents import read_documents

ENCODER = os.environ.get("M3_REAL_ENCODER", "")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(not ENCODER or not Path(ENCODER).is_dir(), reason="M3_REAL_ENCODER not set"),
]


@pytest.mark.parametrize(("chunk_tokens", "chunk_overlap"), [(384, 48), (600, 60), (64, 16)])
def test_chunks_fit_the_encoder_with_its_instruction(chunk_tokens: int, chunk_overlap: int) -> None:
    model = M3Model(
        ENCODER, device="cpu", allow_missing_heads=True, pooling="mean", passage_instruction="passage: "
    )
    documents, _ = read_documents(EXAMPLES)
    korean = "서울은 대한민국의 수도이다.부산은 항구 도시다. 검색 모델은 문장을 벡터로 바꾼다.\n" * 200
    chinese = "检索模型把文本变成向量，并比较它们的相似度。" * 200
    chunker = Chunker(model, chunk_tokens, chunk_overlap)
    assert chunker.chunk_tokens <= min(chunk_tokens, 512 - 2 - 3)
    chunks = chunker.split_documents(documents) + chunker.split_text(korean) + chunker.split_text(chinese)
    texts = {d.id: d.text for d in documents} | {"text": None}
    for chunk in chunks:
        source = texts[chunk.source_id]
        if source is not None:
            assert source[chunk.start : chunk.end] == chunk.text
        alone = len(model.tokenize([chunk.text], add_special_tokens=False).input_ids[0])
        assert chunk.num_tokens == alone <= chunker.chunk_tokens
        assert len(model.tokenize(["passage: " + chunk.text]).input_ids[0]) <= model.passage_max_length
    korean_chunks = chunker.split_text(korean)
    assert all(c.text.endswith(".") for c in korean_chunks)
