"""Tiny random checkpoints in the BGE-M3 layout, for tests that must never download a model.

The checkpoint is small (a 2-layer XLM-R with hidden size 32 and a unigram tokenizer trained on a few
English, Korean and Chinese sentences) but goes through exactly the loading code of a real one:
``config.json``, ``model.safetensors``, ``tokenizer.json`` and the two heads ``colbert_linear.pt`` and
``sparse_linear.pt`` stored as fp16 state dicts, as upstream ships them.

Example:
    >>> import tempfile
    >>> from m3_integrations import M3Model
    >>> from m3_integrations.testing import build_tiny_checkpoint
    >>> path = build_tiny_checkpoint(tempfile.mkdtemp())
    >>> M3Model(path, device="cpu").encode(["hello world"]).dense.shape
    (1, 32)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from m3_integrations.model import Tokenized

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import XLMRobertaConfig

__all__ = [
    "TRAINING_SENTENCES",
    "WhitespaceTokenizer",
    "build_tiny_checkpoint",
    "build_tiny_reranker",
    "resident_memory_mb",
]

TRAINING_SENTENCES = [
    "BGE-M3 produces dense, lexical and multi-vector representations from one forward pass.",
    "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Retrieval augmented generation grounds a language model in documents from an index.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "Seoul is the capital of South Korea; Tokyo is the capital of Japan.",
    "Python is a programming language; numpy arrays hold vectors and matrices.",
    "Vector databases such as Qdrant and Milvus store embeddings for similarity search.",
    "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "한국어 문서 검색과 다국어 임베딩 모델, 하이브리드 검색을 시험한다.",
    "오늘 날씨가 맑고 따뜻하다. 고양이가 햇볕 아래에서 잠을 잔다.",
    "北京是中国的首都。检索增强生成使用向量数据库。",
    "多语言嵌入模型支持一百多种语言，稠密检索与稀疏检索结合。",
    "今天天气很好，小猫在阳光下睡觉。",
    "Hello world! A hello from the search engine to the world of documents.",
    "Wie spät ist es? Der Hund läuft schnell über die Straße.",
    "¿Dónde está la biblioteca? La ciudad tiene muchos libros.",
]

_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    import math
    import re
    import unicodedata

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    def _blank(model: models.Model) -> Tokenizer:
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        return tokenizer

    trained = _blank(models.Unigram())
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=_SPECIAL_TOKENS, unk_token="<unk>"
    )
    trained.train_from_iterator(TRAINING_SENTENCES, trainer=trainer)
    # On a corpus this small the unigram EM keeps mostly characters; whole words as pieces (scored like
    # the best trained piece) make the tiny vocabulary behave like a real subword one.
    unigram = json.loads(trained.to_str())["model"]
    # The trainer picks the pieces, but its scores carry float noise from hash-map order (rare pieces
    # swap places between runs). Re-score each piece by its frequency in the corpus and order by text,
    # so every build of the checkpoint gets the same ids and the same segmentation.
    corpus = " ".join(
        "\u2581" + word for s in TRAINING_SENTENCES for word in unicodedata.normalize("NFKC", s).split()
    )
    total = len(corpus)
    pieces = sorted(piece for piece, _ in unigram["vocab"] if piece not in _SPECIAL_TOKENS)
    vocab = [(piece, 0.0) for piece in _SPECIAL_TOKENS]
    vocab += [(piece, round(math.log((corpus.count(piece) + 1) / total), 6)) for piece in pieces]
    unk_id = _SPECIAL_TOKENS.index("<unk>")
    known = {piece for piece, _ in vocab}
    best = max(score for piece, score in vocab if piece not in _SPECIAL_TOKENS)
    words = sorted({w for s in TRAINING_SENTENCES for w in re.findall(r"[A-Za-z]{2,}", s)})
    words += sorted({w.lower() for w in words} - set(words))
    vocab += [("\u2581" + w, best) for w in words if "\u2581" + w not in known][
        : max(0, vocab_size - len(vocab))
    ]
    tokenizer = _blank(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    tokenizer.add_special_tokens(["<mask>"])
    cls_id, sep_id = tokenizer.token_to_id("<s>"), tokenizer.token_to_id("</s>")
    # XLM-R's template: <s> A </s> and <s> A </s></s> B </s>.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", cls_id), ("</s>", sep_id)],
    )
    return tokenizer


def _save_tokenizer(folder: Path, vocab_size: int, model_max_length: int) -> int:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(vocab_size),
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )
    fast.save_pretrained(str(folder))
    # Name the class bge-m3 ships with, so transformers 4.x (XLMRobertaTokenizerFast) and 5.x
    # (XLMRobertaTokenizer) both load tokenizer.json through the XLM-R code path.
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "XLMRobertaTokenizer"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return len(fast)


def _xlmr_config(vocab_size: int, hidden_size: int, max_length: int, **extra: Any) -> XLMRobertaConfig:
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_length + 2,  # RoBERTa positions start after the padding index
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        # Wide random weights: at the default 0.02 every CLS vector is nearly identical.
        initializer_range=0.5,
        **extra,
    )


def build_tiny_checkpoint(
    folder: str | os.PathLike[str],
    *,
    hidden_size: int = 32,
    vocab_size: int = 400,
    max_length: int = 1024,
    colbert_head: bool = True,
    sparse_head: bool = True,
    pooling: str | None = None,
    seed: int = 0,
) -> str:
    """Write a random tiny BGE-M3-layout checkpoint into ``folder`` and return its path.

    Args:
        folder: where to write (created if needed).
        hidden_size: the encoder width (dense and ColBERT dimension).
        vocab_size: target size of the trained unigram vocabulary.
        max_length: the longest input in tokens (``max_position_embeddings - 2``).
        colbert_head: write ``colbert_linear.pt`` (Linear(h, h)).
        sparse_head: write ``sparse_linear.pt`` (Linear(h, 1)).
        pooling: also write the sentence-transformers layout (``modules.json`` with Transformer, Pooling
            and Normalize modules, ``1_Pooling/config.json``) declaring this pooling mode: ``"cls"``,
            ``"mean"``, or any other sentence-transformers mode (``"max"``, ``"lasttoken"`` ...).
        seed: torch seed for the random weights.

    Example:
        >>> import tempfile
        >>> from m3_integrations import M3Model
        >>> path = build_tiny_checkpoint(tempfile.mkdtemp(), sparse_head=False, pooling="mean")
        >>> M3Model(path, device="cpu", allow_missing_heads=True).pooling
        'mean'
    """
    from transformers import XLMRobertaModel

    from m3_integrations._checkpoint import transformers_output_to_debug

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    actual_vocab = _save_tokenizer(folder, vocab_size, max_length)
    torch.manual_seed(seed)
    config = _xlmr_config(actual_vocab, hidden_size, max_length)
    model = XLMRobertaModel(config)
    with transformers_output_to_debug():  # no "Writing model shards" bar in test output
        model.save_pretrained(str(folder))
    if pooling is not None:
        _write_sentence_transformers_layout(folder, hidden_size, pooling)
    if colbert_head:
        colbert = torch.nn.Linear(hidden_size, hidden_size)
        torch.save({k: v.half() for k, v in colbert.state_dict().items()}, folder / "colbert_linear.pt")
    if sparse_head:
        sparse = torch.nn.Linear(hidden_size, 1)
        with torch.no_grad():
            sparse.weight.normal_(0.0, 0.5)
            sparse.bias.fill_(1.0)  # most tokens get a positive weight, some are dropped by relu
        torch.save({k: v.half() for k, v in sparse.state_dict().items()}, folder / "sparse_linear.pt")
    return str(folder)


def _write_sentence_transformers_layout(folder: Path, hidden_size: int, pooling: str) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    flags = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "lasttoken": "lasttoken"}
    config: dict[str, Any] = {"word_embedding_dimension": hidden_size}
    for flag in (*flags.values(), "mean_sqrt_len_tokens", "weightedmean_tokens"):
        config[f"pooling_mode_{flag}"] = flags.get(pooling) == flag
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def build_tiny_reranker(
    folder: str | os.PathLike[str], *, hidden_size: int = 32, vocab_size: int = 400, seed: int = 1
) -> str:
    """Write a random tiny cross-encoder in the bge-reranker-v2-m3 layout (XLM-R, one logit)."""
    from transformers import XLMRobertaForSequenceClassification

    from m3_integrations._checkpoint import transformers_output_to_debug

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    actual_vocab = _save_tokenizer(folder, vocab_size, 512)
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(_xlmr_config(actual_vocab, hidden_size, 512, num_labels=1))
    with transformers_output_to_debug():
        model.save_pretrained(str(folder))
    return str(folder)


class WhitespaceTokenizer:
    """A model-free stand-in for :meth:`M3Model.tokenize <m3_integrations.M3Model.tokenize>`.

    One token per run of non-space characters, with its character span; ``<s>``/``</s>`` stand-ins
    when special tokens are asked for. For tests and examples of code that only needs token counts and
    offsets, such as :class:`m3_integrations.chunking.Chunker`.

    Example:
        >>> WhitespaceTokenizer().tokenize(["to be  or"], add_special_tokens=False, return_offsets=True)
        Tokenized(input_ids=[[0, 0, 0]], offsets=[[(0, 2), (3, 5), (7, 9)]], num_truncated=0)
    """

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
        return_offsets: bool = False,
    ) -> Tokenized:
        """Token ids (all 0; specials -1), optional ``(start, end)`` spans, and truncation count."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids: list[list[int]] = []
        offsets: list[list[tuple[int, int]]] = []
        truncated = 0
        for text in texts:
            spans = [m.span() for m in re.finditer(r"\S+", text)]
            if add_special_tokens:
                spans = [(0, 0), *spans, (0, 0)]
            if max_length is not None and len(spans) > max_length:
                spans, truncated = spans[:max_length], truncated + 1
            ids.append([-1 if a == b else 0 for a, b in spans])
            offsets.append(spans)
        return Tokenized(input_ids=ids, offsets=offsets if return_offsets else None, num_truncated=truncated)


def resident_memory_mb() -> float:
    """This process's resident set size in MB, from ``/proc/self/status`` (Linux only).

    Raises:
        OSError: no ``/proc`` (not Linux).

    Example:
        >>> import sys
        >>> resident_memory_mb() > 0 if sys.platform.startswith("linux") else True
        True
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    msg = "no VmRSS line in /proc/self/status"
    raise OSError(msg)
