"""The metadata filter language: every operator against a naive evaluator, errors, and M3Index's use of it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from m3_integrations import M3Index, M3Model
from m3_integrations.filters import (
    And,
    Compare,
    JsonObject,
    KeyIndex,
    Not,
    Or,
    evaluate,
    normalize_metadata,
    parse_filter,
)
from tests.common import naive_filter_match

BIG = 2**53
ROWS = [
    {"lang": "en", "year": 2019, "tags": ["geo", "europe"], "author": "Ann", "score": 0.5},
    {"lang": "en", "year": 2021, "tags": ["animals"], "author": "bob", "flag": True, "n": 2},
    {"lang": "ko", "year": 2023, "tags": ["geo", "rag"], "flag": False, "n": 1},
    {"lang": "zh", "year": 2024.0, "tags": [], "author": "", "n": True, "nested": {}},
    {
        "lang": "en",
        "year": "2024",
        "tags": ["rag", [1, 2]],
        "author": "Ann Lee",
        "n": 1.0,
        "nested": {"a": 1},
    },
    {"lang": None, "year": None, "tags": "rag", "author": "STRASSE", "nested": {"a": [1]}, "n": [1, 5]},
    {"year": BIG + 1, "tags": [3, BIG, "Geo", None], "author": "straße", "n": [0, 9]},
    {"year": 10**400, "score": -1e300, "n": [[1]], "flag": None},
    {"year": -(10**400), "score": 1e-300, "tags": [{"x": 1}], "lang": ["en", "ko"]},
    {},
]

# Every operator, each on values of several types, list-valued fields, missing keys and None.
FILTERS = [
    {},
    {"lang": "en"},
    {"lang": {"$eq": "en"}},
    {"lang": None},
    {"lang": {"$ne": "en"}},
    {"lang": {"$ne": None}},
    {"n": 1},
    {"n": True},
    {"n": 1.0},
    {"n": [1, 5]},
    {"n": [1]},
    {"tags": "rag"},
    {"tags": [1, 2]},
    {"tags": {"x": 1}},
    {"tags": None},
    {"nested": {"a": 1}},
    {"nested": {}},
    {"nested": {"a": [1]}},
    {"year": {"$gt": 2021}},
    {"year": {"$gte": 2021}},
    {"year": {"$lt": 2021}},
    {"year": {"$lte": 2024}},
    {"year": {"$gt": BIG}},
    {"year": {"$gte": BIG + 1}},
    {"year": {"$lt": BIG + 2}},
    {"year": {"$gt": 10**399}},
    {"year": {"$lte": -(10**400)}},
    {"year": {"$gte": 2024.0, "$lt": 2025}},
    {"year": {"$gt": "2023"}},
    {"author": {"$gte": "Ann"}},
    {"author": {"$lt": "b"}},
    {"n": {"$gt": 4, "$lt": 6}},  # on a list, each bound may be met by another element
    {"n": {"$gt": 0.5}},
    {"score": {"$lt": 0}},
    {"score": {"$gt": 0}},
    {"lang": {"$in": ["ko", "zh"]}},
    {"lang": {"$in": []}},
    {"lang": {"$in": [None, "zh"]}},
    {"tags": {"$in": ["animals", "europe", 3]}},
    {"n": {"$in": [True]}},
    {"lang": {"$nin": ["ko", "zh"]}},
    {"lang": {"$nin": []}},
    {"tags": {"$nin": ["geo"]}},
    {"tags": {"$all": ["geo", "rag"]}},
    {"tags": {"$all": ["rag"]}},
    {"tags": {"$contains": "rag"}},
    {"tags": {"$contains": None}},
    {"n": {"$contains": 9}},
    {"author": {"$text": "Ann"}},
    {"author": {"$text": ""}},
    {"tags": {"$text": "eo"}},
    {"author": {"$itext": "ANN"}},
    {"author": {"$itext": "strasse"}},
    {"author": {"$exists": True}},
    {"author": {"$exists": False}},
    {"flag": {"$exists": True}},
    {"author": {"$empty": True}},
    {"tags": {"$empty": True}},
    {"nested": {"$empty": False}},
    {"flag": {"$empty": True}},
    {"year": {"$not": {"$gt": 2021}}},
    {"lang": {"$not": "en"}},
    {"$not": {"lang": "en"}},
    {"$and": [{"lang": "en"}, {"year": {"$gt": 2020}}]},
    {"$or": [{"lang": "ko"}, {"tags": {"$contains": "animals"}}]},
    {"$or": [{"$and": [{"lang": "en"}, {"author": {"$itext": "ann"}}]}, {"year": None}]},
    {"lang": "en", "author": {"$exists": True}, "$not": {"year": 2019}},
    {"$not": {}},
]


@pytest.mark.parametrize("filter_", FILTERS, ids=[repr(f) for f in FILTERS])
def test_every_operator_matches_the_naive_evaluator(filter_: dict) -> None:
    expected = [naive_filter_match(filter_, row) for row in ROWS]
    assert evaluate(parse_filter(filter_), ROWS, {}).tolist() == expected


def test_the_filter_table_is_not_trivial() -> None:
    # Each filter above separates the rows (or is one of the two constants): nothing passes by accident.
    outcomes = [tuple(naive_filter_match(f, row) for row in ROWS) for f in FILTERS]
    constant = [o for o in outcomes if len(set(o)) == 1]
    assert len(constant) <= 4  # {}, {"$not": {}}, $in [] and $nin []
    assert len(set(outcomes)) > 40


POOL = [
    0,
    1,
    1.0,
    1.5,
    -2,
    BIG,
    BIG + 1,
    10**400,
    True,
    False,
    None,
    "",
    "a",
    "A",
    "ab",
    "b",
    "ß",
    "SS",
    [],
    [1],
    [1, "a"],
    ["a", "b"],
    [[1]],
    [None],
    {},
    {"x": 1},
    {"x": [1]},
]
KEYS = ["k1", "k2", "k3"]
SCALARS = [v for v in POOL if not isinstance(v, list | dict)]
BOUNDS = [0, 1, 1.5, -2, BIG, BIG + 1, 10**400, -(10**400), "", "a", "B", "ab", "ß"]


def _random_row(rng: random.Random) -> dict:
    return {key: rng.choice(POOL) for key in KEYS if rng.random() < 0.7}


def _random_condition(rng: random.Random) -> object:
    operators = ["plain", "$eq", "$ne", "$in", "$nin", "$all", "$contains", "$gt", "$gte", "$lt", "$lte"]
    op = rng.choice([*operators, "$text", "$itext", "$exists", "$empty", "$not", "two"])
    if op == "plain":
        return rng.choice(POOL)
    if op in ("$eq", "$ne"):
        return {op: rng.choice(POOL)}
    if op in ("$in", "$nin"):
        return {op: rng.sample(POOL, rng.randint(0, 3))}
    if op == "$all":
        return {op: rng.sample(POOL, rng.randint(1, 3))}
    if op == "$contains":
        return {op: rng.choice(SCALARS)}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return {op: rng.choice(BOUNDS)}
    if op in ("$text", "$itext"):
        return {op: rng.choice(["", "a", "A", "b", "ss", "ß"])}
    if op in ("$exists", "$empty"):
        return {op: rng.random() < 0.5}
    if op == "$not":
        return {op: _random_condition(rng)}
    first, second = _random_condition(rng), _random_condition(rng)
    operators = isinstance(first, dict) and isinstance(second, dict) and first and second
    if operators and all(k.startswith("$") for k in [*first, *second]):
        return {**first, **second}
    return first


def _random_filter(rng: random.Random, depth: int = 0) -> dict:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return {"$and": [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.3:
        return {"$or": [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.4:
        return {"$not": _random_filter(rng, depth + 1)}
    return {key: _random_condition(rng) for key in rng.sample(KEYS, rng.randint(1, 2))}


def test_random_filters_match_the_naive_evaluator_as_rows_are_appended() -> None:
    rng = random.Random(13)
    rows = [_random_row(rng) for _ in range(60)]
    first, rest = rows[:35], rows
    indexes: dict[str, KeyIndex] = {}  # kept across calls, as M3Index keeps them between adds
    for _ in range(400):
        filter_ = _random_filter(rng)
        expr = parse_filter(filter_)
        assert evaluate(expr, first, indexes).tolist() == [naive_filter_match(filter_, r) for r in first]
    for _ in range(400):
        filter_ = _random_filter(rng)
        got = evaluate(parse_filter(filter_), rest, indexes).tolist()
        assert got == [naive_filter_match(filter_, r) for r in rest], filter_


def test_parsed_expression_is_immutable_and_round_trips() -> None:
    expr = parse_filter({"tags": {"$nin": ("a", ["b"])}, "d": {"x": (1, 2)}, "$or": [{"y": {"$gte": 2}}]})
    assert expr == And(
        (
            Not(Compare("tags", "in", ("a", ("b",)))),
            Compare("d", "eq", JsonObject((("x", (1, 2)),))),
            Or((Compare("y", "gte", 2),)),
        )
    )
    assert hash(expr) == hash(parse_filter(expr.to_dict()))
    assert parse_filter(expr.to_dict()) == expr
    with pytest.raises(AttributeError):
        expr.parts[0].part.key = "other"  # type: ignore[misc]
    for filter_ in FILTERS:
        assert parse_filter(parse_filter(filter_).to_dict()) == parse_filter(filter_)


@pytest.mark.parametrize(
    ("filter_", "match"),
    [
        ({"year": {"$gte2": 1}}, r"key 'year': unknown operator '\$gte2'"),
        ({"$nor": [{"a": 1}]}, r"unknown operator '\$nor'"),
        ({"lang": {"$in": "en"}}, r"key 'lang': \$in needs a list"),
        ({"lang": {"$nin": 3}}, r"key 'lang': \$nin needs a list"),
        ({"lang": {"$all": []}}, r"key 'lang': \$all needs at least one value"),
        ({"tags": {"$all": "a"}}, r"key 'tags': \$all needs a list"),
        ({1: "x"}, r"key 1 is int, filter keys must be strings"),
        ({"lang": {"$eq": "en", "x": 1}}, r"key 'lang'.*mixes operators and plain keys"),
        ({"year": {"$gt": [1]}}, r"key 'year': \$gt needs a number or a string"),
        ({"year": {"$lte": True}}, r"key 'year': \$lte needs a number or a string"),
        ({"year": {"$lt": None}}, r"key 'year': \$lt needs a number or a string"),
        ({"a": {"$text": 3}}, r"key 'a': \$text needs a string"),
        ({"a": {"$itext": None}}, r"key 'a': \$itext needs a string"),
        ({"a": {"$exists": "yes"}}, r"key 'a': \$exists needs true or false"),
        ({"a": {"$empty": 1}}, r"key 'a': \$empty needs true or false"),
        ({"a": {"$contains": [1]}}, r"key 'a': \$contains needs a string, number"),
        ({"$and": []}, r"\$and needs a non-empty list"),
        ({"$or": {"a": 1}}, r"\$or needs a non-empty list"),
        ({"$and": ["a"]}, r"\$and\[0\] must be a dict"),
        ({"$not": "x"}, r"\$not must be a dict"),
        ({"a": float("nan")}, r"key 'a'.*nan is not allowed"),
        ({"a": {"$in": [1, float("inf")]}}, r"key 'a' at \$in\[1\]: inf is not allowed"),
        ({"a": {"$in": [{1, 2}]}}, r"key 'a'.*set is not a JSON value"),
        ({"a": {"$eq": {"k": {3: 1}}}}, r"key 'a'.*key 3 is int"),
        ({"a": "x\ud800"}, r"key 'a'.*lone surrogate"),
        ({"a": {"$not": {"$bogus": 1}}}, r"key 'a': unknown operator '\$bogus'"),
    ],
)
def test_bad_filters_raise_before_any_work(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch, filter_: dict, match: str
) -> None:
    index = M3Index(tiny_model)
    index.add(["one document"], metadatas=[{"a": 1}])

    def encode_queries(*args: object, **kwargs: object) -> None:
        raise AssertionError("the query was encoded before the filter was checked")

    monkeypatch.setattr(tiny_model, "encode_queries", encode_queries)
    with pytest.raises(ValueError, match=match):
        parse_filter(filter_)
    with pytest.raises(ValueError, match=match):
        index.check_search_options(3, filter=filter_)
    with pytest.raises(ValueError, match=match):
        index.search("document", filter=filter_)
    with pytest.raises(ValueError, match=match):
        index.search_batch(["document"], filter=filter_)


def _metas(n: int) -> list[dict]:
    rng = random.Random(5)
    return [
        _random_row(rng) | {"i": i, "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2))} for i in range(n)
    ]


SEARCH_FILTERS = [
    {"i": {"$gte": 5, "$lt": 20}},
    {"tags": "a"},
    {"tags": {"$all": ["a", "b"]}},
    {"$or": [{"k1": {"$in": [1, "a"]}}, {"k2": {"$empty": True}}]},
    {"k3": {"$itext": "a"}, "i": {"$not": {"$in": [1, 2, 3]}}},
    {"k1": {"$exists": False}},
    {"k2": {"$gt": 0}},
]


def _filtered_ids(index: M3Index, filter_: dict) -> set[str]:
    return {h.id for h in index.search("document", k=len(index), mode="dense", filter=filter_)}


def _expected_ids(index: M3Index, filter_: dict) -> set[str]:
    return {hit.id for hit in index.get(index.ids) if naive_filter_match(filter_, hit.metadata)}


def test_index_search_applies_dict_filters_through_updates_and_save(
    tiny_model: M3Model, tmp_path: Path
) -> None:
    metas = _metas(40)
    index = M3Index(tiny_model)
    index.add([f"document {i}" for i in range(40)], ids=[f"d{i}" for i in range(40)], metadatas=metas)

    def check(index: M3Index) -> None:
        for filter_ in SEARCH_FILTERS:
            expected = _expected_ids(index, filter_)
            assert _filtered_ids(index, filter_) == expected, filter_
            assert 0 < len(expected) < len(index), filter_

    check(index)
    index.add(["document late"], ids=["late"], metadatas=[{"i": 7, "tags": ["a", "b"], "k2": 3}])
    index.add(["document replaced"], ids=["d6"], metadatas=[{"i": 99, "tags": []}])
    index.delete(["d8", "d9"])
    check(index)
    index.compact()
    check(index)
    index.save(tmp_path / "idx")
    check(M3Index.load(tmp_path / "idx", model=tiny_model))


def test_metadata_and_filters_mean_the_same_after_save_and_load(tiny_model: M3Model, tmp_path: Path) -> None:
    metas = [
        {"t": (1, 2), "d": {"k": (3, "x")}, "b": True, "i": 1, "f": 1.0, "big": 2**60, "s": "ß"},
        {"t": [2, 1], "d": {"k": [3]}, "b": 1, "i": True, "f": 2.5, "big": 2**60 + 1},
        {"t": 1, "d": {}, "s": "SS"},
    ]
    filters = [
        {"t": (1, 2)},
        {"t": [1, 2]},
        {"t": 1},
        {"d": {"k": (3, "x")}},
        {"b": True},
        {"b": 1},
        {"i": 1},
        {"f": 1},
        {"big": {"$gt": 2**60}},
        {"s": {"$itext": "ss"}},
        {"d": {"$empty": True}},
    ]
    index = M3Index(tiny_model)
    index.add(["a", "b", "c"], ids=["a", "b", "c"], metadatas=metas)
    before = {repr(f): _filtered_ids(index, f) for f in filters}
    stored = [h.metadata for h in index.get(["a", "b", "c"])]
    assert stored[0]["t"] == [1, 2]
    assert stored[0]["d"] == {"k": [3, "x"]}
    for filter_ in filters:
        assert before[repr(filter_)] == {
            i for i, m in zip("abc", stored, strict=True) if naive_filter_match(filter_, m)
        }
    assert before[repr({"b": 1})] == {"b"}  # True is not 1
    assert before[repr({"t": (1, 2)})] == {"a"}
    index.save(tmp_path / "idx")
    loaded = M3Index.load(tmp_path / "idx", model=tiny_model)
    assert [h.metadata for h in loaded.get(["a", "b", "c"])] == stored
    assert {repr(f): _filtered_ids(loaded, f) for f in filters} == before


def test_large_index_filters_without_a_python_call_per_row(
    tiny_model: M3Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Equality, $in and ranges go through the per-key index: after it is built, evaluating a filter
    # looks at no row's metadata (a row-by-row path would read all of them).
    metas = [{"tenant": i % 10, "year": 2000 + i % 25, "name": f"n{i % 100}"} for i in range(5000)]

    class CountingRow(dict):
        reads = 0

        def __getitem__(self, key: str) -> object:
            CountingRow.reads += 1
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            CountingRow.reads += 1
            return super().__contains__(key)

    rows = [CountingRow(m) for m in metas]
    indexes: dict[str, KeyIndex] = {}
    queries = [
        {"tenant": 3},
        {"tenant": {"$in": [1, 2]}},
        {"year": {"$gte": 2010, "$lt": 2020}},
        {"name": {"$gt": "n5"}},
        {"tenant": {"$ne": 3}},
    ]
    for filter_ in queries:
        evaluate(parse_filter(filter_), rows, indexes)  # builds the key's index once
    CountingRow.reads = 0
    for filter_ in queries:
        got = evaluate(parse_filter(filter_), rows, indexes)
        assert got.tolist() == [naive_filter_match(filter_, m) for m in metas]
    assert CountingRow.reads == 0


def test_normalize_metadata_copies_and_names_the_path() -> None:
    source = {"a": [1, (2, 3)], "b": {"c": "x"}}
    out = normalize_metadata(source, "metadata of document 'd'")
    assert out == {"a": [1, [2, 3]], "b": {"c": "x"}}
    assert out["a"] is not source["a"]
    assert out["b"] is not source["b"]
    with pytest.raises(
        TypeError, match=r"metadata of document 'd' at \['b'\]\['c'\]\[0\]: bytes is not a JSON"
    ):
        normalize_metadata({"b": {"c": [b"x"]}}, "metadata of document 'd'")
