"""Bad input is refused at the door: metadata, texts, ids, extreme weights and broken rerankers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations._utils import validate_texts
from m3_integrations.fusion import AGREEMENT_DEPTH, FUSION_METHODS
from tests.common import INDEX_TEXTS, naive_fuse


@pytest.fixture(scope="module")
def index(tiny_model: M3Model) -> M3Index:
    index = M3Index(tiny_model)
    index.add(INDEX_TEXTS, ids=[f"doc{i}" for i in range(len(INDEX_TEXTS))])
    return index


def _deep(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        ({1: "x"}, TypeError, r"document 'bad'.*key 1 is int, keys must be strings"),
        ({"a": {"b": [{2: "x"}]}}, TypeError, r"document 'bad'.* at \['a'\]\['b'\]\[0\]: key 2 is int"),
        ({("t",): 1}, TypeError, r"document 'bad'.*key \('t',\) is tuple"),
        ({"a": {1, 2}}, TypeError, r"document 'bad'.* at \['a'\]: set is not a JSON value"),
        ({"a": [object()]}, TypeError, r"at \['a'\]\[0\]: object is not a JSON value"),
        ({"a": b"bytes"}, TypeError, r"at \['a'\]: bytes is not a JSON value"),
        ({"a": float("nan")}, ValueError, r"document 'bad'.* at \['a'\]: nan is not allowed"),
        ({"a": [1.0, float("-inf")]}, ValueError, r"at \['a'\]\[1\]: -inf is not allowed"),
        (
            {"a": "ok \udc80"},
            ValueError,
            r"document 'bad'.* at \['a'\] holds a lone surrogate '\\udc80' at position 3",
        ),
        ({"k\ud800": 1}, ValueError, r"document 'bad'.*key holds a lone surrogate"),
        ({"a": _deep(32)}, ValueError, r"document 'bad'.*nested deeper than 32 levels"),
        ({"a": _deep(5000)}, ValueError, r"nested deeper than 32 levels"),
        ("lang=en", TypeError, r"metadatas\[1\] \(document 'bad'\) must be a dict or None, got str"),
    ],
)
def test_bad_metadata_is_refused_naming_the_id_and_path_and_nothing_is_stored(
    tiny_model: M3Model, metadata: object, error: type, match: str
) -> None:
    index = M3Index(tiny_model)
    index.add(["kept"], ids=["kept"], metadatas=[{"a": 1}])
    with pytest.raises(error, match=match):
        index.add(["fine", "bad"], ids=["fine", "bad"], metadatas=[{"a": 2}, metadata])
    encoded = tiny_model.encode_passages(["fine", "bad"], return_colbert=True)
    with pytest.raises(error, match=match):
        index.add_encoded(encoded, ["fine", "bad"], ids=["fine", "bad"], metadatas=[{"a": 2}, metadata])
    assert index.ids == ["kept"]
    assert index.get(["kept"])[0].metadata == {"a": 1}


def test_nesting_up_to_the_limit_is_accepted(tiny_model: M3Model, tmp_path: Path) -> None:
    index = M3Index(tiny_model)
    index.add(["deep"], ids=["deep"], metadatas=[{"a": _deep(31)}])  # the dict + 31 lists = 32 levels
    index.save(tmp_path / "idx")
    assert M3Index.load(tmp_path / "idx", model=tiny_model).get(["deep"])[0].metadata == {"a": _deep(31)}


@pytest.mark.parametrize(
    ("texts", "ids", "match"),
    [
        (["ok", "bad \ud800 text"], None, r"texts\[1\] holds a lone surrogate '\\ud800' at position 4"),
        (["ok", "fine"], ["a", "b\udfff"], r"ids\[1\] holds a lone surrogate"),
    ],
)
def test_lone_surrogates_in_texts_and_ids_are_refused(
    tiny_model: M3Model, texts: list[str], ids: list[str] | None, match: str
) -> None:
    index = M3Index(tiny_model)
    with pytest.raises(ValueError, match=match):
        index.add(texts, ids=ids)
    assert len(index) == 0


def test_metadata_is_copied_in_and_out(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    meta = {"tags": ["a"], "inner": {"x": 1}, "pair": (1, 2)}
    index.add(["one text", "another text"], ids=["d", "e"], metadatas=[meta, None])
    meta["tags"].append("b")
    meta["inner"]["x"] = 2
    stored = {"tags": ["a"], "inner": {"x": 1}, "pair": [1, 2]}
    assert index.get(["d"])[0].metadata == stored
    assert index.search("one", k=2, filter={"tags": "b"}) == []

    got = index.get(["d"])[0]
    got.metadata["tags"].append("z")
    got.metadata["inner"]["x"] = 3
    hit = index.search("one", k=1, filter={"inner": {"x": 1}})[0]
    hit.metadata["tags"].clear()
    hit.metadata["inner"]["y"] = 4
    index.search("one", k=2, filter=lambda m: m.setdefault("tags", []).append("q") or True)  # type: ignore[func-returns-value]
    assert index.get(["d"])[0].metadata == stored
    assert index.get(["e"])[0].metadata == {}
    assert [h.id for h in index.search("one", k=2, filter={"tags": "a"})] == ["d"]


@pytest.mark.parametrize(
    "texts",
    [
        {"a text": 1, "another": 2},
        {"a text", "another"},
        frozenset({"a text", "another"}),
        {"a text": 1, "another": 2}.keys(),
        {1: "a text", 2: "another"}.values(),
        b"a text",
        None,
    ],
    ids=["dict", "set", "frozenset", "keys", "values", "bytes", "None"],
)
def test_unordered_or_non_text_collections_are_refused(tiny_model: M3Model, texts: object) -> None:
    index = M3Index(tiny_model)
    with pytest.raises(TypeError, match=r"texts must be a string or an ordered sequence of strings"):
        index.add(texts)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ids must be a string or an ordered sequence"):
        index.add(["a text", "another"], ids={"x", "y"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"metadatas must be a list with one dict"):
        index.add(["a text"], metadatas={"lang": "en"})  # type: ignore[arg-type]
    assert len(index) == 0


def test_validate_texts_accepts_ordered_sequences_and_iterators() -> None:
    expected = ["b", "a", "c"]
    for texts in (
        ["b", "a", "c"],
        ("b", "a", "c"),
        (t for t in ["b", "a", "c"]),
        iter(["b", "a", "c"]),
        np.array(["b", "a", "c"]),
        "b a c".split(),
    ):
        out = validate_texts(texts)
        assert out == expected
        assert all(type(t) is str for t in out)
    assert validate_texts("b") == ["b"]


def _weight_cases() -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    # (extreme weights, the same weights at a tame scale): each pair must give the same search.
    tiny = 2.0**-1060  # subnormal: a sum or product of such weights loses (or is) everything
    return [
        ((1e308, 1e308, 1e308), (1.0, 1.0, 1.0)),
        ((1e308, 5e307, 1e308), (1.0, 0.5, 1.0)),
        ((tiny, 2 * tiny, tiny), (0.5, 1.0, 0.5)),
        ((1e-320, 1e-320, 0.0), (1.0, 1.0, 0.0)),
        ((1e308, 1e-320, 1e308), (1.0, 0.0, 1.0)),
    ]


@pytest.mark.parametrize("method", FUSION_METHODS)
@pytest.mark.parametrize(("extreme", "tame"), _weight_cases())
def test_extreme_weights_rank_like_the_same_weights_rescaled(
    index: M3Index, method: str, extreme: tuple[float, ...], tame: tuple[float, ...]
) -> None:
    (encoded,) = index.encode_queries(["capital of France and Germany"])
    n = len(index)
    got = index.search_encoded(encoded, k=n, weights=extreme, fusion=method, candidates=None)
    expected = index.search_encoded(encoded, k=n, weights=tame, fusion=method, candidates=None)
    assert [h.id for h in got] == [h.id for h in expected]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in expected], rtol=1e-5, atol=1e-7)
    assert len({round(h.score, 5) for h in got}) > n // 2  # a real ranking, not all zeros
    # ...and that ranking is the naive fusion of the hits' own per-signal scores with the tame weights.
    weights = dict(zip(("dense", "sparse", "colbert"), tame, strict=True))
    if method in ("confidence", "agreement"):
        weights["sparse"] *= index.query_term_coverage(encoded)
    scores = {s: [h.scores[s] for h in got] for s in weights}
    if method == "agreement":  # confidence with the lexical weight scaled by its agreement
        from tests.unit_tests.core.test_fusion_agreement import naive_agreement

        others = [scores["dense"], scores["colbert"]]
        weights["sparse"] *= naive_agreement(scores["sparse"], others, AGREEMENT_DEPTH)
        method = "confidence"
    np.testing.assert_allclose(
        [h.score for h in got], naive_fuse(scores, weights, method), rtol=1e-4, atol=1e-6
    )


class _FixedReranker:
    def __init__(self, make: object) -> None:
        self.make = make

    def score(self, query: str, passages: Sequence[str]) -> object:
        return self.make(len(passages))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda n: np.full(n, np.nan), r"reranker _FixedReranker returned nan for passage 0"),
        (lambda n: [0.5] * (n - 1) + [np.inf], r"reranker _FixedReranker returned inf for passage \d"),
        (
            lambda n: np.zeros(n - 1),
            r"reranker _FixedReranker returned scores of shape \(\d+,\) for \d+ passages",
        ),
        (lambda n: np.zeros((n, 1)), r"reranker _FixedReranker returned scores of shape \(\d+, 1\)"),
        (lambda n: 0.5, r"reranker _FixedReranker returned scores of shape \(\)"),
        (lambda n: ["high"] * n, r"reranker _FixedReranker returned list of <U4, not an array of numbers"),
        (lambda n: None, r"reranker _FixedReranker returned NoneType of object, not an array of numbers"),
        (lambda n: [True] * n, r"reranker _FixedReranker returned list of bool"),
        (lambda n: [[1.0], [1.0, 2.0]], r"reranker _FixedReranker returned list, not an array of numbers"),
    ],
)
def test_broken_reranker_output_raises_naming_the_reranker(index: M3Index, make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        index.search("capital of France", k=3, rerank=_FixedReranker(make), rerank_top_n=4)


def test_a_sound_reranker_orders_the_hits(index: M3Index) -> None:
    hits = index.search("capital of France", k=3, rerank=_FixedReranker(np.arange), rerank_top_n=5)
    assert [h.scores["rerank"] for h in hits] == [4.0, 3.0, 2.0]
    assert [h.score for h in hits] == [4.0, 3.0, 2.0]
