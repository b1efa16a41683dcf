"""Shared fakes and naive reference implementations for the tests.

The naive functions below re-derive every BGE-M3 formula directly from the model's hidden states, with
plain loops, so the vectorised production code is checked against something independent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from m3_integrations import M3Model, M3Output

# Float32 values that two code paths compute (one text alone against a padded batch, another BLAS blocking,
# another CPU kernel: OMP_NUM_THREADS, ATEN_CPU_CAPABILITY) differ by rounding noise, and a test must pass on
# any CPU. Measured on the tiny checkpoint under AVX-512, AVX2 and scalar ATen kernels, MKL's compatible
# code path, 1 and 2 threads: at most 7e-7 on unit vectors, 1.4e-5 on a lexical weight, 3.3e-6 relative on
# a score. A lexical weight is relu(h·w + b) over un-normalised hidden states whose terms (up to ~5)
# cancel, so its noise is absolute, whatever the weight's size; sums of such weights (sparse scores) get a
# relative tolerance too.
LEXICAL_WEIGHT_TOL = {"rel": 1e-5, "abs": 1e-4}

SAMPLE_TEXTS = [
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "北京是中国的首都。检索增强生成使用向量数据库。",
    "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
    "hello",
    "",
    "Vector databases such as Qdrant and Milvus store embeddings for similarity search. " * 3,
]


def naive_hidden_states(model: M3Model, text: str, max_length: int) -> tuple[list[int], torch.Tensor]:
    """One text, no batching, no padding: token ids and float32 hidden states ``(L, h)``."""
    ids = model.tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([ids], device=model.device)).last_hidden_state[0]
    return ids, hidden.float().cpu()


def naive_encode(model: M3Model, text: str, max_length: int = 512) -> dict:
    """BGE-M3's three outputs for one text, from the formulas with loops."""
    ids, hidden = naive_hidden_states(model, text, max_length)
    cls = hidden[0].numpy().astype(np.float64)
    dense = cls / np.linalg.norm(cls)
    special = {
        model.tokenizer.cls_token_id,
        model.tokenizer.eos_token_id,
        model.tokenizer.pad_token_id,
        model.tokenizer.unk_token_id,
    }
    lexical: dict[int, float] = {}
    if model.sparse_linear is not None:
        w_lex = model.sparse_linear.weight.detach().float().cpu().numpy()[0]
        b_lex = float(model.sparse_linear.bias.detach().float().cpu().numpy()[0])
        for pos, token_id in enumerate(ids):
            weight = max(0.0, float(hidden[pos].numpy() @ w_lex + b_lex))
            if token_id in special or weight <= 0:
                continue
            lexical[token_id] = max(lexical.get(token_id, 0.0), weight)
    if model.colbert_linear is not None:
        w_mul = model.colbert_linear.weight.detach().float().cpu().numpy()
        b_mul = model.colbert_linear.bias.detach().float().cpu().numpy()
        rows = [hidden[pos].numpy() @ w_mul.T + b_mul for pos in range(1, len(ids))]
    else:
        rows = [hidden[pos].numpy() for pos in range(1, len(ids))]
    colbert = np.asarray([r / np.linalg.norm(r) for r in rows])
    return {"ids": ids, "dense": dense, "lexical": lexical, "colbert": colbert}


def naive_lexical_score(q: Mapping[int, float], p: Mapping[int, float]) -> float:
    return sum(w * p[t] for t, w in q.items() if t in p)


def naive_colbert_score(q: np.ndarray, p: np.ndarray) -> float:
    total = 0.0
    for i in range(len(q)):
        total += max(float(np.dot(q[i], p[j])) for j in range(len(p)))
    return total / len(q)


# ---------------------------------------------------------------- index helper (issue 3)
INDEX_TEXTS = [
    *SAMPLE_TEXTS,
    "Seoul is the capital of South Korea; Tokyo is the capital of Japan.",
    "Python is a programming language; numpy arrays hold vectors and matrices.",
    "Retrieval augmented generation grounds a language model in documents from an index.",
    "오늘 날씨가 맑고 따뜻하다. 고양이가 햇볕 아래에서 잠을 잔다.",
    "今天天气很好，小猫在阳光下睡觉。",
    "Wie spät ist es? Der Hund läuft schnell über die Straße.",
    "¿Dónde está la biblioteca? La ciudad tiene muchos libros.",
    "The capital of France is Paris.",
    "hello world hello",
]


def naive_m3_scores(
    model: M3Model, query: str, texts: list[str], *, colbert_dtype: type = np.float16
) -> dict[str, list[float]]:
    """FlagEmbedding-style brute force: every document scored alone with the naive formulas.

    ColBERT vectors go through ``colbert_dtype`` first, the one rounding the index applies on storage.
    """
    q = model.encode_queries([query], return_colbert=True)
    p = model.encode_passages(texts, return_colbert=True)
    out: dict[str, list[float]] = {"dense": [], "sparse": [], "colbert": []}
    for i in range(len(texts)):
        out["dense"].append(float(np.dot(q.dense[0].astype(np.float64), p.dense[i].astype(np.float64))))
        out["sparse"].append(naive_lexical_score(q.lexical_weights[0], p.lexical_weights[i]))
        stored = p.colbert_vecs[i].astype(colbert_dtype).astype(np.float32)
        out["colbert"].append(naive_colbert_score(q.colbert_vecs[0], stored) if len(stored) else 0.0)
    return out


def naive_weighted_ranking(
    scores: dict[str, list[float]], weights: dict[str, float]
) -> tuple[list[int], list[float]]:
    """``Σ w_i s_i / Σ w_i`` over the signals with some nonzero score; ranking best first, ties by index."""
    used = {name: w for name, w in weights.items() if w > 0 and any(scores[name])}
    n = len(next(iter(scores.values())))
    total = sum(used.values())
    fused = [sum(w * scores[name][i] for name, w in used.items()) / total if total else 0.0 for i in range(n)]
    return sorted(range(n), key=lambda i: (-fused[i], i)), fused


def naive_peak_z(values: list[float]) -> float:
    """``(max - mean) / std`` (population std) in plain Python: the confidence fusion's signal-to-noise."""
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return (max(values) - mean) / std


def naive_min_max_average(scores: Mapping[str, list[float]], weights: Mapping[str, float]) -> list[float]:
    """``Σ w_s (x_s - min_s) / (max_s - min_s) / Σ w_s`` per candidate (``relative_score`` fusion)."""
    n = len(next(iter(scores.values())))
    fused = []
    for i in range(n):
        total = 0.0
        for name, weight in weights.items():
            low, high = min(scores[name]), max(scores[name])
            total += weight * (scores[name][i] - low) / (high - low)
        fused.append(total / sum(weights.values()))
    return fused


def naive_fuse(scores: Mapping[str, list[float]], weights: Mapping[str, float], method: str) -> list[float]:
    """Every fusion method in plain Python, straight from docs/engine.md (no coverage scaling).

    Signals with a zero weight or no nonzero score take no part; ``relative_score`` and ``confidence``
    also leave out constant signals; BM25 is divided by its maximum before a weighted sum; in RRF tied
    scores share the best rank and a lexical score of exactly 0 contributes nothing.
    """
    n = len(next(iter(scores.values())))
    used = {s: w for s, w in weights.items() if w > 0 and any(scores[s])}
    if method in ("relative_score", "confidence"):
        used = {s: w for s, w in used.items() if max(scores[s]) != min(scores[s])}
    if method == "confidence":
        used = {s: w * naive_peak_z(list(scores[s])) ** 2 for s, w in used.items()}
        used = {s: w for s, w in used.items() if w > 0}
    if not used:
        return [0.0] * n
    total = sum(used.values())
    fused = []
    for i in range(n):
        value = 0.0
        for s, w in used.items():
            column = scores[s]
            if method == "weighted":
                value += w * (column[i] / max(column) if s == "bm25" else column[i])
            elif method == "rrf":
                rank = 1 + sum(1 for other in column if other > column[i])
                value += 0.0 if s in ("sparse", "bm25") and column[i] == 0 else w / (60 + rank)
            else:
                value += w * (column[i] - min(column)) / (max(column) - min(column))
        fused.append(value / total)
    return fused


def naive_top(values: list[float], depth: int, *, positive_only: bool) -> set[int]:
    # Highest first; equal values keep their positions' order (a stable sort).
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:depth]
    return {i for i in order if values[i] > 0 or not positive_only}


def naive_agreement(lexical: list[float], others: list[list[float]], depth: int) -> float:
    top = naive_top(lexical, depth, positive_only=True)
    union: set[int] = set()
    for other in others:
        union |= naive_top(other, depth, positive_only=False)
    return (len(top & union) + 1) / (len(top) + 1)


def naive_agreement_fusion(
    scores: dict[str, list[float]], weights: dict[str, float], coverage: dict[str, float], depth: int
) -> list[float]:
    n = len(next(iter(scores.values())))
    scaled = {}
    for name, values in scores.items():
        weight = weights[name]
        if weight <= 0 or not any(values) or max(values) == min(values):
            continue
        factor = coverage.get(name, 1.0)
        if name in ("bm25", "sparse"):
            others = [v for other, v in scores.items() if other not in ("bm25", "sparse")]
            factor *= naive_agreement(values, others, depth)
        scaled[name] = weight * factor * naive_peak_z(values) ** 2
    scaled = {k: v for k, v in scaled.items() if v > 0}
    total = sum(scaled.values())
    out = [0.0] * n
    for name, weight in scaled.items():
        values = scores[name]
        low, high = min(values), max(values)
        for i in range(n):
            out[i] += weight / total * (values[i] - low) / (high - low)
    return out


_EMPTY_VALUES: tuple = (None, "", [], {})


def _naive_same(a: object, b: object) -> bool:
    """JSON equality: booleans apart from numbers, lists and tuples alike, dicts by keys and values."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is bool and type(b) is bool and a == b
    if isinstance(a, int | float) or isinstance(b, int | float):
        return isinstance(a, int | float) and isinstance(b, int | float) and a == b
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (
            isinstance(a, list | tuple)
            and isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_naive_same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_naive_same(a[k], b[k]) for k in a)
        )
    return type(a) is type(b) and a == b


def _naive_values(meta: Mapping, key: str) -> list:
    if key not in meta:
        return []
    value = meta[key]
    return [value, *value] if isinstance(value, list) else [value]


def _naive_ordered(value: object, bound: object, op: str) -> bool:
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (value, bound))
    strings = isinstance(value, str) and isinstance(bound, str)
    if not (numbers or strings):
        return False
    return {"$gt": value > bound, "$gte": value >= bound, "$lt": value < bound, "$lte": value <= bound}[op]


def _naive_operator(meta: Mapping, key: str, op: str, arg: object) -> bool:
    values = _naive_values(meta, key)
    if op in ("$eq", "$contains"):
        return any(_naive_same(v, arg) for v in values)
    if op == "$ne":
        return not _naive_operator(meta, key, "$eq", arg)
    if op == "$in":
        return any(_naive_same(v, a) for v in values for a in arg)
    if op == "$nin":
        return not _naive_operator(meta, key, "$in", arg)
    if op == "$all":
        return all(any(_naive_same(v, a) for v in values) for a in arg)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return any(_naive_ordered(v, arg, op) for v in values)
    if op == "$text":
        return any(isinstance(v, str) and arg in v for v in values)
    if op == "$itext":
        return any(isinstance(v, str) and arg.casefold() in v.casefold() for v in values)
    if op == "$exists":
        return (key in meta) == arg
    if op == "$empty":
        empty = key not in meta or any(_naive_same(meta[key], e) for e in _EMPTY_VALUES)
        return empty == arg
    if op == "$not":
        return not _naive_field(meta, key, arg)
    raise AssertionError(op)


def _naive_field(meta: Mapping, key: str, condition: object) -> bool:
    if isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition):
        return all(_naive_operator(meta, key, op, arg) for op, arg in condition.items())
    return _naive_operator(meta, key, "$eq", condition)


def naive_filter_match(filter_: Mapping, meta: Mapping) -> bool:
    """The dict filter language of docs/engine.md evaluated on one metadata dict, directly from its rules."""
    for key, condition in filter_.items():
        if key == "$and":
            ok = all(naive_filter_match(f, meta) for f in condition)
        elif key == "$or":
            ok = any(naive_filter_match(f, meta) for f in condition)
        elif key == "$not":
            ok = not naive_filter_match(condition, meta)
        else:
            ok = _naive_field(meta, key, condition)
        if not ok:
            return False
    return True


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@contextlib.contextmanager
def example_module(script: str, name: str | None = None) -> Iterator[ModuleType]:
    """``examples/<script>.py`` loaded by path (examples/ is not a package), in ``sys.modules`` while used.

    Dataclasses look their module up in ``sys.modules``; ``name`` keeps two loads of one script apart.
    """
    name = name or script
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


# ---------------------------------------------------------------- a fake encoder that reads meaning
class ConceptEncoder:
    """A stand-in for an encoder without M3's heads whose dense and ColBERT vectors follow *meaning*.

    A word ``c<k>w<j>`` means concept ``k`` (its synonyms differ in ``j``): its vector is concept ``k``'s
    axis. Every other word gets a short (norm 0.2) fixed random vector of its own: the encoder mostly
    ignores it. Dense vectors are the normalised sums of a text's word vectors; ColBERT vectors are the
    normalised word vectors. BM25 over words sees only the spellings, so synonyms do not match
    lexically while the encoder's signals find them.
    """

    has_sparse = False
    has_colbert_head = False
    dense_dim = colbert_dim = 64
    vocab_size = 1000

    def _word(self, word: str) -> np.ndarray:
        head, _, tail = word.partition("w")
        if head.startswith("c") and head[1:].isdigit() and tail.isdigit():
            vector = np.zeros(self.dense_dim, dtype=np.float64)
            vector[int(head[1:]) % self.dense_dim] = 1.0
            return vector
        seed = int.from_bytes(word.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2**32)
        vector = np.random.default_rng(seed).standard_normal(self.dense_dim)
        return 0.2 * vector / np.linalg.norm(vector)

    def _encode(self, texts: Sequence[str], return_colbert: bool = False, **_: object) -> M3Output:
        rows, colbert = [], []
        for text in texts:
            words = [w.strip(".,").lower() for w in text.split() if w.strip(".,")]
            vectors = np.asarray([self._word(w) for w in words] or [np.ones(self.dense_dim)])
            total = vectors.sum(axis=0)
            rows.append(total / np.linalg.norm(total))
            colbert.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32))
        return M3Output(
            dense=np.asarray(rows, dtype=np.float32),
            colbert_vecs=colbert if return_colbert else None,
            num_tokens=[len(c) + 1 for c in colbert],
        )

    def encode_queries(self, queries: Sequence[str], **kwargs: object) -> M3Output:
        return self._encode(queries, **kwargs)

    def encode_passages(self, passages: Sequence[str], **kwargs: object) -> M3Output:
        return self._encode(passages, **kwargs)
