"""M3Retriever: node <-> M3Index translation, filters, updates, persistence and errors."""

from __future__ import annotations

import asyncio
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import MetadataMode, NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from llama_index.core.storage.docstore import SimpleDocumentStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from m3_integrations import M3Index, M3Model
from m3_integrations.llama_index import M3NodeWithScore, M3Retriever
from tests.common import naive_encode

TEXTS = [
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "서울은 대한민국의 수도이다. 검색 증강 생성은 문서를 찾아 답을 만든다.",
    "北京是中国的首都。检索增强生成使用向量数据库。",
    "Hybrid retrieval fuses dense similarity with lexical matching and late interaction.",
    "Vector databases such as Qdrant and Milvus store embeddings for similarity search.",
]
METADATA = [
    {"lang": "en", "year": 2019, "tags": ["geo", "europe"], "author": "Ann"},
    {"lang": "en", "year": 2021, "tags": ["animals"], "author": "bob"},
    {"lang": "ko", "year": 2023, "tags": ["geo", "rag"]},
    {"lang": "zh", "year": 2024, "tags": ["geo", "rag"], "author": ""},
    {"lang": "en", "year": 2024, "tags": ["rag", "search"], "author": "Ann Lee"},
    {"lang": "en", "year": "unknown", "tags": ["search"], "author": "Carl"},
]


def make_nodes() -> list[TextNode]:
    nodes = []
    for i, (text, meta) in enumerate(zip(TEXTS, METADATA, strict=True)):
        node = TextNode(id_=f"n{i}", text=text, metadata=dict(meta))
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i // 2}")
        nodes.append(node)
    return nodes


@pytest.fixture(scope="module")
def retriever(tiny_model: M3Model) -> M3Retriever:
    return M3Retriever(nodes=make_nodes(), model=tiny_model, similarity_top_k=3)


def test_class() -> None:
    assert BaseRetriever in M3Retriever.__mro__
    assert NodeWithScore in M3NodeWithScore.__mro__


def test_results_are_the_index_hits_as_nodes(retriever: M3Retriever, tiny_model: M3Model) -> None:
    reference = M3Index(tiny_model)
    nodes = make_nodes()
    reference.add(
        [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes],
        ids=[n.node_id for n in nodes],
        metadatas=[n.metadata for n in nodes],
    )
    for query in ["capital of Germany", "cat sleeps", "向量数据库"]:
        got = retriever.retrieve(query)
        hits = reference.search(query, 3)
        assert [n.node.node_id for n in got] == [h.id for h in hits]
        for node, hit in zip(got, hits, strict=True):
            assert isinstance(node, M3NodeWithScore)
            assert node.score == pytest.approx(hit.score)
            assert node.scores == pytest.approx(hit.scores)
            assert set(node.scores) >= {"dense", "sparse", "colbert"}
            assert node.node.get_content() == TEXTS[int(node.node.node_id[1:])]


def test_dense_mode_ranks_like_naive_cosine(tiny_model: M3Model) -> None:
    nodes = make_nodes()
    retriever = M3Retriever(nodes=nodes, model=tiny_model, mode="dense", similarity_top_k=len(nodes))
    passages = np.stack(
        [naive_encode(tiny_model, n.get_content(metadata_mode=MetadataMode.EMBED))["dense"] for n in nodes]
    )
    q = naive_encode(tiny_model, "capital of Germany", tiny_model.query_max_length)["dense"]
    expected = passages @ q
    got = retriever.retrieve("capital of Germany")
    assert [n.node.node_id for n in got] == [f"n{i}" for i in np.argsort(-expected, kind="stable")]
    for n in got:
        assert n.score == pytest.approx(expected[int(n.node.node_id[1:])], abs=1e-4)


def test_metadata_is_not_polluted_and_store_is_isolated(retriever: M3Retriever) -> None:
    got = retriever.retrieve("capital of France")
    for n in got:
        assert n.node.metadata == METADATA[int(n.node.node_id[1:])]
    got[0].node.metadata["retrieval_score"] = 1.0  # what some postprocessors do
    again = retriever.retrieve("capital of France")
    assert "retrieval_score" not in again[0].node.metadata
    assert "retrieval_score" not in retriever.docstore.get_node(got[0].node.node_id).metadata


def test_m3_node_with_score_serialises(retriever: M3Retriever) -> None:
    hit = retriever.retrieve("capital of France")[0]
    data = hit.to_dict()
    assert data["class_name"] == "M3NodeWithScore"
    assert data["scores"] == hit.scores
    # LlamaIndex's own NodeWithScore.from_dict cannot rebuild the abstract `node` field; rebuilding from
    # the concrete node class is how its docstores do it, and `scores` comes back with it.
    back = M3NodeWithScore(
        node=TextNode.from_dict(data["node"]),
        score=data["score"],
        scores=json.loads(json.dumps(data["scores"])),
    )
    assert back.scores == hit.scores
    assert back.node.node_id == hit.node.node_id
    assert back.node.metadata == hit.node.metadata
    assert pickle.loads(pickle.dumps(hit)).scores == hit.scores


async def test_aretrieve_matches_retrieve(retriever: M3Retriever) -> None:
    sync = retriever.retrieve("hybrid lexical matching")
    got = await retriever.aretrieve("hybrid lexical matching")
    assert [(n.node.node_id, n.score) for n in got] == [(n.node.node_id, n.score) for n in sync]
    both = await asyncio.gather(retriever.aretrieve("cat"), retriever.aretrieve("capital"))
    assert all(len(r) == 3 for r in both)


def _f(key: str, value, operator: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=operator)


FILTER_CASES = [
    (MetadataFilters(filters=[_f("lang", "en")]), {0, 1, 4, 5}),
    (MetadataFilters(filters=[_f("lang", "en", FilterOperator.NE)]), {2, 3}),
    (MetadataFilters(filters=[_f("year", 2021, FilterOperator.GT)]), {2, 3, 4}),
    (MetadataFilters(filters=[_f("year", 2021, FilterOperator.GTE)]), {1, 2, 3, 4}),
    (MetadataFilters(filters=[_f("year", 2021, FilterOperator.LT)]), {0}),
    (MetadataFilters(filters=[_f("year", 2021, FilterOperator.LTE)]), {0, 1}),
    (MetadataFilters(filters=[_f("lang", ["ko", "zh"], FilterOperator.IN)]), {2, 3}),
    (MetadataFilters(filters=[_f("lang", ["ko", "zh"], FilterOperator.NIN)]), {0, 1, 4, 5}),
    (MetadataFilters(filters=[_f("tags", "rag", FilterOperator.CONTAINS)]), {2, 3, 4}),
    (MetadataFilters(filters=[_f("tags", ["animals", "search"], FilterOperator.ANY)]), {1, 4, 5}),
    (MetadataFilters(filters=[_f("tags", ["geo", "rag"], FilterOperator.ALL)]), {2, 3}),
    (MetadataFilters(filters=[_f("author", "Ann", FilterOperator.TEXT_MATCH)]), {0, 4}),
    (MetadataFilters(filters=[_f("author", "B", FilterOperator.TEXT_MATCH_INSENSITIVE)]), {1}),
    (MetadataFilters(filters=[_f("author", None, FilterOperator.IS_EMPTY)]), {2, 3}),
    # An absent key differs from every value.
    (MetadataFilters(filters=[_f("author", "Ann", FilterOperator.NE)]), {1, 2, 3, 4, 5}),
    (
        MetadataFilters(filters=[_f("lang", "en"), _f("year", 2020, FilterOperator.GT)]),
        {1, 4},
    ),
    (
        MetadataFilters(filters=[_f("lang", "ko"), _f("lang", "zh")], condition=FilterCondition.OR),
        {2, 3},
    ),
    (
        MetadataFilters(filters=[_f("lang", "en"), _f("year", 2024)], condition=FilterCondition.NOT),
        {2},
    ),
    (
        MetadataFilters(
            filters=[
                _f("tags", "geo", FilterOperator.CONTAINS),
                MetadataFilters(filters=[_f("lang", "en"), _f("year", 2024)], condition=FilterCondition.OR),
            ]
        ),
        {0, 3},
    ),
    (MetadataFilters(filters=[_f("lang", "fr")]), set()),
]


@pytest.fixture(scope="module")
def all_nodes_retriever(tiny_model: M3Model) -> M3Retriever:
    return M3Retriever(nodes=make_nodes(), model=tiny_model, similarity_top_k=len(TEXTS), mode="dense")


@pytest.mark.parametrize(("filters", "expected"), FILTER_CASES)
def test_metadata_filters(
    all_nodes_retriever: M3Retriever, filters: MetadataFilters, expected: set[int]
) -> None:
    all_nodes_retriever.filters = filters
    try:
        got = all_nodes_retriever.retrieve("capital search")
    finally:
        all_nodes_retriever.filters = None
    assert {int(n.node.node_id[1:]) for n in got} == expected


def _translations() -> list[tuple[MetadataFilters, dict]]:
    one = [
        (FilterOperator.EQ, "en", {"lang": {"$eq": "en"}}),
        (FilterOperator.NE, "en", {"lang": {"$ne": "en"}}),
        (FilterOperator.GT, 1, {"lang": {"$gt": 1}}),
        (FilterOperator.GTE, 1.5, {"lang": {"$gte": 1.5}}),
        (FilterOperator.LT, "b", {"lang": {"$lt": "b"}}),
        (FilterOperator.LTE, 2, {"lang": {"$lte": 2}}),
        (FilterOperator.IN, ["en"], {"lang": {"$in": ["en"]}}),
        (FilterOperator.NIN, ["en"], {"lang": {"$nin": ["en"]}}),
        (FilterOperator.ANY, ["a", "b"], {"lang": {"$in": ["a", "b"]}}),
        (FilterOperator.ALL, ["a", "b"], {"lang": {"$all": ["a", "b"]}}),
        (FilterOperator.CONTAINS, "a", {"lang": {"$contains": "a"}}),
        (FilterOperator.TEXT_MATCH, "An", {"lang": {"$text": "An"}}),
        (FilterOperator.TEXT_MATCH_INSENSITIVE, "an", {"lang": {"$itext": "an"}}),
        (FilterOperator.IS_EMPTY, None, {"lang": {"$empty": True}}),
    ]
    assert {op for op, _, _ in one} == set(FilterOperator)  # every operator has its translation
    cases = [(MetadataFilters(filters=[_f("lang", value, op)]), expected) for op, value, expected in one]
    a, b = _f("lang", "en"), _f("year", 2024)
    da, db = {"lang": {"$eq": "en"}}, {"year": {"$eq": 2024}}
    return [
        *cases,
        (MetadataFilters(filters=[a, b]), {"$and": [da, db]}),
        (MetadataFilters(filters=[a, b], condition=FilterCondition.OR), {"$or": [da, db]}),
        (MetadataFilters(filters=[a, b], condition=FilterCondition.NOT), {"$not": {"$or": [da, db]}}),
        (MetadataFilters(filters=[a], condition=FilterCondition.NOT), {"$not": da}),
        (
            MetadataFilters(filters=[a, MetadataFilters(filters=[a, b], condition=FilterCondition.OR)]),
            {"$and": [da, {"$or": [da, db]}]},
        ),
        (MetadataFilters(filters=[]), {}),
        (MetadataFilters(filters=[], condition=FilterCondition.OR), {"$not": {}}),
    ]


def test_filters_are_translated_to_the_core_dict_syntax(
    all_nodes_retriever: M3Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3_integrations.llama_index._filters import metadata_filters_to_dict

    for filters, expected in _translations():
        assert metadata_filters_to_dict(filters) == expected
    # The retriever hands the index the dict, so the semantics are the core's, defined once.
    seen: list[object] = []
    search = M3Index.search

    def spy(self: M3Index, *args: object, **kwargs: object) -> object:
        seen.append(kwargs["filter"])
        return search(self, *args, **kwargs)

    monkeypatch.setattr(M3Index, "search", spy)
    all_nodes_retriever.filters = MetadataFilters(filters=[_f("year", 2021, FilterOperator.GT)])
    try:
        all_nodes_retriever.retrieve("capital")
    finally:
        all_nodes_retriever.filters = None
    assert seen == [{"year": {"$gt": 2021}}]


def test_filters_can_be_changed_and_cleared(all_nodes_retriever: M3Retriever) -> None:
    retriever = all_nodes_retriever
    retriever.filters = MetadataFilters(filters=[_f("lang", "ko")])
    assert [n.node.node_id for n in retriever.retrieve("capital")] == ["n2"]
    retriever.filters = lambda meta: meta["lang"] == "zh"  # a plain callable passes through
    assert [n.node.node_id for n in retriever.retrieve("capital")] == ["n3"]
    retriever.filters = None
    assert len(retriever.retrieve("capital")) == len(TEXTS)


def test_wrong_filters_fail_clearly(retriever: M3Retriever) -> None:
    with pytest.raises(TypeError, match="MetadataFilters"):
        retriever.filters = "lang == en"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"IN on key 'lang' needs a list"):
        retriever.filters = MetadataFilters(filters=[_f("lang", "en", FilterOperator.IN)])
    with pytest.raises(ValueError, match=r"GT on key 'year' needs a number"):
        retriever.filters = MetadataFilters(filters=[_f("year", [1, 2], FilterOperator.GT)])
    with pytest.raises(ValueError, match="TEXT_MATCH on key 'author' needs a string"):
        retriever.filters = MetadataFilters(filters=[_f("author", 3, FilterOperator.TEXT_MATCH)])
    bogus = MetadataFilter.model_construct(key="lang", value="en", operator="regex")
    with pytest.raises(ValueError, match="unsupported filter operator 'regex' on key 'lang'"):
        retriever.filters = MetadataFilters.model_construct(filters=[bogus], condition="and")
    bad_condition = MetadataFilters.model_construct(filters=[_f("lang", "en")], condition="xor")
    with pytest.raises(ValueError, match="unsupported filter condition"):
        retriever.filters = bad_condition
    assert retriever.filters is None  # a refused filter leaves the previous one in place


def test_bad_queries_and_arguments(retriever: M3Retriever, tiny_model: M3Model) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        retriever.retrieve("   ")
    with pytest.raises(ValueError, match="similarity_top_k"):
        M3Retriever(nodes=make_nodes(), model=tiny_model, similarity_top_k=0)
    with pytest.raises(TypeError, match=r"nodes\[1\]"):
        M3Retriever(nodes=[make_nodes()[0], "not a node"], model=tiny_model)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="m3_index must be an M3Index"):
        M3Retriever(m3_index="index")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exactly one"):
        M3Retriever.from_defaults(model=tiny_model)
    # Mode, fusion and weights fail when the retriever is built, not at the first query.
    for bad, match in (
        ({"mode": "bm42"}, "unknown mode"),
        ({"fusion": "max"}, "unknown fusion"),
        ({"weights": (0.0, 0.0, 0.0)}, "weights"),
    ):
        with pytest.raises(ValueError, match=match):
            M3Retriever(m3_index=retriever._index, **bad)


def test_insert_replace_delete_and_ref_docs(tiny_model: M3Model) -> None:
    retriever = M3Retriever(nodes=make_nodes(), model=tiny_model, similarity_top_k=len(TEXTS) + 1)
    assert len(retriever) == len(TEXTS)
    retriever.insert(TextNode(id_="n0", text="Seoul is the capital of South Korea.", metadata={"lang": "en"}))
    assert len(retriever) == len(TEXTS)
    assert retriever.docstore.get_node("n0").get_content() == "Seoul is the capital of South Korea."
    assert retriever.m3_index.get(["n0"])[0].metadata == {"lang": "en"}

    with pytest.raises(KeyError, match="nope"):
        retriever.delete(["n1", "nope"])
    assert "n1" in retriever.node_ids  # nothing was deleted
    retriever.delete("n1")
    assert "n1" not in retriever.node_ids
    assert not retriever.docstore.document_exists("n1")

    # n2, n3 come from doc1; n4, n5 from doc2.
    retriever.delete_ref_doc("doc1")
    assert sorted(retriever.node_ids) == ["n0", "n4", "n5"]
    assert {n.node.node_id for n in retriever.retrieve("capital")} == {"n0", "n4", "n5"}
    with pytest.raises(KeyError, match="doc1"):
        retriever.delete_ref_doc("doc1")


def test_from_documents_splits_and_tracks_ref_docs(tiny_model: M3Model) -> None:
    docs = [
        Document(text=" ".join(TEXTS[:3]), id_="d-a", metadata={"source": "a.md"}),
        Document(text=" ".join(TEXTS[3:]), id_="d-b", metadata={"source": "b.md"}),
    ]
    splitter = SentenceSplitter(chunk_size=40, chunk_overlap=0)
    retriever = M3Retriever.from_documents(docs, model=tiny_model, node_parser=splitter, similarity_top_k=50)
    expected = splitter.get_nodes_from_documents(docs)
    assert len(retriever) == len(expected) > 2
    got = retriever.retrieve("capital")
    assert {n.node.ref_doc_id for n in got} == {"d-a", "d-b"}
    assert all(n.node.metadata["source"] in {"a.md", "b.md"} for n in got)
    retriever.delete_ref_doc("d-a")
    assert {n.node.ref_doc_id for n in retriever.retrieve("capital")} == {"d-b"}
    with pytest.raises(ValueError, match="not both"):
        M3Retriever.from_documents(docs, model=tiny_model, node_parser=splitter, transformations=[splitter])


def test_from_defaults_sources(tiny_model: M3Model) -> None:
    docstore = SimpleDocumentStore()
    docstore.add_documents(make_nodes())
    from_store = M3Retriever.from_defaults(docstore=docstore, model=tiny_model)
    from_nodes = M3Retriever.from_defaults(nodes=make_nodes(), model=tiny_model)
    assert sorted(from_store.node_ids) == sorted(from_nodes.node_ids) == [f"n{i}" for i in range(len(TEXTS))]


def test_wraps_an_existing_index(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    index.add(TEXTS[:2], ids=["a", "b"], metadatas=[{"k": 1}, {"k": 2}])
    retriever = M3Retriever(m3_index=index, similarity_top_k=2)
    got = retriever.retrieve("capital")
    assert {n.node.node_id for n in got} == {"a", "b"}
    assert retriever.docstore.get_node("a").get_content() == TEXTS[0]
    assert retriever.model is tiny_model
    with pytest.raises(ValueError, match="different M3Model"):
        M3Retriever(m3_index=index, model=object.__new__(M3Model))


def test_persist_round_trip(tiny_model: M3Model, tmp_path: Path) -> None:
    filters = MetadataFilters(
        filters=[_f("lang", ["en", "ko"], FilterOperator.IN), _f("year", 2020, FilterOperator.GT)]
    )
    original = M3Retriever(
        nodes=make_nodes(), model=tiny_model, similarity_top_k=4, fusion="rrf", filters=filters
    )
    target = tmp_path / "store"
    original.persist(target)
    data = _data_folder(target)
    assert {p.name for p in target.iterdir()} == {".m3-retriever.lock", data.name, "manifest.json"}
    assert sorted(p.name for p in data.iterdir()) == ["docstore.json", "index", "retriever.json"]
    assert not any(p.suffix in {".pkl", ".pickle"} for p in target.rglob("*"))

    loaded = M3Retriever.from_persist_dir(target, model=tiny_model)
    assert loaded.similarity_top_k == 4
    assert loaded.fusion == "rrf"
    assert loaded.filters == filters
    for query in ["capital", "향량 검색", "hybrid"]:
        a, b = original.retrieve(query), loaded.retrieve(query)
        assert [(n.node.node_id, n.score, n.scores) for n in a] == [
            (n.node.node_id, n.score, n.scores) for n in b
        ]
    for node in make_nodes():
        back = loaded.docstore.get_node(node.node_id)
        assert back.get_content() == node.get_content()
        assert back.metadata == node.metadata
        assert back.ref_doc_id == node.ref_doc_id
        assert back.relationships == node.relationships
    mapped = M3Retriever.from_persist_dir(target, model=tiny_model, mmap=True)
    assert mapped.m3_index.memory_bytes()["colbert_mapped"] > 0
    for query in ["capital", "향량 검색", "hybrid"]:
        a, b = loaded.retrieve(query), mapped.retrieve(query)
        assert [n.node.node_id for n in a] == [n.node.node_id for n in b]
        assert [n.score for n in a] == pytest.approx([n.score for n in b], rel=1e-6, abs=1e-6)
    loaded.delete_ref_doc("doc0")
    assert "n0" not in loaded.node_ids

    overridden = M3Retriever.from_persist_dir(target, model=tiny_model, similarity_top_k=1, filters=None)
    assert len(overridden.retrieve("capital")) == 1


def test_persist_errors(tiny_model: M3Model, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an M3Retriever folder"):
        M3Retriever.from_persist_dir(tmp_path, model=tiny_model)
    retriever = M3Retriever(nodes=make_nodes(), model=tiny_model)
    target = tmp_path / "store"
    retriever.persist(target)
    config_path = _data_folder(target) / "retriever.json"
    config = json.loads(config_path.read_text())
    config["version"] = 99
    _rewrite_listed_file(target, config_path, json.dumps(config).encode())
    with pytest.raises(ValueError, match="version 99"):
        M3Retriever.from_persist_dir(target, model=tiny_model)

    retriever.persist(target)  # overwrite in place
    damaged = tmp_path / "damaged"
    shutil.copytree(target, damaged)
    other = M3Retriever(nodes=make_nodes()[:2], model=tiny_model)
    docstore_path = _data_folder(damaged) / "docstore.json"
    other.docstore.persist(str(docstore_path))
    with pytest.raises(ValueError, match="truncated or modified"):  # changed behind the manifest's back
        M3Retriever.from_persist_dir(damaged, model=tiny_model)
    _rewrite_listed_file(damaged, docstore_path, docstore_path.read_bytes())
    with pytest.raises(ValueError, match="different node ids"):
        M3Retriever.from_persist_dir(damaged, model=tiny_model)


def _data_folder(folder: Path) -> Path:
    return folder / json.loads((folder / "manifest.json").read_text())["data"]


def _rewrite_listed_file(folder: Path, path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` and list its new size and checksum in the manifest (a forged folder)."""
    import hashlib

    path.write_bytes(content)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][path.name] = {"bytes": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))
    }


def test_persist_never_replaces_a_folder_of_user_files(tiny_model: M3Model, tmp_path: Path) -> None:
    retriever = M3Retriever(nodes=make_nodes()[:2], model=tiny_model)
    users = tmp_path / "my-notes"
    (users / "sub").mkdir(parents=True)
    (users / "notes.txt").write_bytes(b"my own notes\x00\xff")
    (users / "sub" / "retriever.json").write_text('{"mine": true}')
    (users / "docstore.json").write_text("[]")  # an entry of the earlier layout, but not a retriever's
    before = _tree(users)
    with pytest.raises(FileExistsError, match="M3Retriever"):
        retriever.persist(users)
    assert _tree(users) == before  # byte for byte, nothing added or removed
    link = tmp_path / "link"
    link.symlink_to(users, target_is_directory=True)
    with pytest.raises(FileExistsError, match="symbolic link"):
        retriever.persist(link)
    assert _tree(users) == before
    index_folder = tmp_path / "an-index"
    retriever.m3_index.save(index_folder)  # an M3Index folder is not a retriever folder either
    index_before = _tree(index_folder)
    with pytest.raises(FileExistsError, match="M3Retriever"):
        retriever.persist(index_folder)
    assert _tree(index_folder) == index_before


def test_persist_switches_atomically_and_reads_the_old_layout(tiny_model: M3Model, tmp_path: Path) -> None:
    nodes = make_nodes()
    first = M3Retriever(nodes=nodes[:2], model=tiny_model, similarity_top_k=2)
    # The earlier release's layout: the three entries side by side, no manifest.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    first.m3_index.save(legacy / "index")
    first.docstore.persist(str(legacy / "docstore.json"))
    (legacy / "retriever.json").write_text(json.dumps(first.get_persist_args()))
    loaded = M3Retriever.from_persist_dir(legacy, model=tiny_model)
    assert sorted(loaded.node_ids) == sorted(first.node_ids) and loaded.similarity_top_k == 2
    # A persist converts it: the old entries go once the manifest names the new data folder.
    second = M3Retriever(nodes=nodes, model=tiny_model, similarity_top_k=3)
    second.persist(legacy)
    own_entries = {".m3-retriever.lock", _data_folder(legacy).name, "manifest.json"}
    assert {p.name for p in legacy.iterdir()} == own_entries
    again = M3Retriever.from_persist_dir(legacy, model=tiny_model)
    assert sorted(again.node_ids) == sorted(second.node_ids) and again.similarity_top_k == 3
    # A failing write leaves the previous retriever whole and no stray data folder.
    before = _tree(legacy)

    def broken_save(path: object) -> None:
        raise OSError("disk full")

    second.m3_index.save = broken_save  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        second.persist(legacy)
    assert _tree(legacy) == before
    assert sorted(M3Retriever.from_persist_dir(legacy, model=tiny_model).node_ids) == sorted(second.node_ids)


def test_empty_retriever(tiny_model: M3Model) -> None:
    retriever = M3Retriever(model=tiny_model)
    assert len(retriever) == 0
    assert retriever  # `retriever or fallback` must keep an empty retriever
    assert retriever.retrieve("anything") == []
    retriever.insert([])
    retriever.insert(TextNode(id_="only", text="hello world"))
    assert [n.node.node_id for n in retriever.retrieve("hello")] == ["only"]


def test_unpersistable_settings_are_dropped_with_a_warning(
    tiny_model: M3Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retriever = M3Retriever(nodes=make_nodes()[:2], model=tiny_model, filters=lambda meta: True)
    with caplog.at_level("WARNING", logger="m3_integrations.llama_index.retrievers"):
        retriever.persist(tmp_path / "store")
    assert "callable filter cannot be persisted" in caplog.text
    loaded = M3Retriever.from_persist_dir(tmp_path / "store", model=tiny_model)
    assert loaded.filters is None
