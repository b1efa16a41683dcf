"""M3Retriever: a faithful translation of M3Index search results into LangChain documents."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from pydantic import ValidationError

from m3_integrations import M3Model
from m3_integrations.langchain import M3Retriever
from tests.common import SAMPLE_TEXTS

TEXTS = [t for t in SAMPLE_TEXTS if t.strip()]
LANGS = ["en", "en", "ko", "zh", "en", "en", "en"]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]
METADATAS = [{"lang": lang, "n": i} for i, lang in enumerate(LANGS)]
QUERY = "capital of France and Germany"


@pytest.fixture(scope="module")
def retriever(tiny_model: M3Model) -> M3Retriever:
    return M3Retriever.from_texts(TEXTS, model=tiny_model, metadatas=METADATAS, ids=IDS, k=3)


def _fresh(tiny_model: M3Model, **fields: Any) -> M3Retriever:
    return M3Retriever.from_texts(TEXTS, model=tiny_model, metadatas=METADATAS, ids=IDS, **fields)


def test_class() -> None:
    assert BaseRetriever in M3Retriever.__mro__


def test_documents_mirror_index_hits(retriever: M3Retriever) -> None:
    docs = retriever.invoke(QUERY)
    hits = retriever.index.search(QUERY, 3)
    assert len(docs) == 3
    for doc, hit in zip(docs, hits, strict=True):
        assert doc.id == hit.id
        assert doc.page_content == hit.text
        assert doc.metadata["relevance_score"] == hit.score
        assert doc.metadata["scores"] == hit.scores
        assert set(doc.metadata["scores"]) >= {"dense", "sparse", "colbert"}
        assert {k: doc.metadata[k] for k in ("lang", "n")} == hit.metadata
        assert TEXTS[doc.metadata["n"]] == doc.page_content


@pytest.mark.parametrize(
    "options",
    [
        {"k": 1},
        {"k": 5, "mode": "dense"},
        {"k": 2, "mode": "sparse"},
        {"k": 2, "mode": "colbert"},
        {"k": 3, "mode": "dense+sparse", "fusion": "rrf"},
        {"k": 3, "weights": (1.0, 0.0, 0.0)},
        {"k": 3, "weights": {"dense": 0.2, "colbert": 0.8}, "fusion": "relative_score"},
        {"k": 4, "fusion": "confidence"},
        {"k": 4, "candidates": None},
        {"k": 6, "filter": {"lang": "en"}},
        {"k": 6, "filter": lambda meta: meta["n"] % 2 == 0},
        {"k": 2, "rerank": "m3", "rerank_top_n": 5},
    ],
)
def test_per_call_options_are_forwarded(retriever: M3Retriever, options: dict) -> None:
    docs = retriever.invoke(QUERY, **options)
    k = options.pop("k")
    hits = retriever.index.search(QUERY, k, **options)
    assert [d.id for d in docs] == [h.id for h in hits]
    assert [d.metadata["relevance_score"] for d in docs] == [h.score for h in hits]
    assert len(docs) == min(k, len(TEXTS) if "filter" not in options else len(hits))
    if "filter" in options and isinstance(options["filter"], dict):
        assert all(d.metadata["lang"] == "en" for d in docs)
    if "rerank" in options:
        assert all("rerank" in d.metadata["scores"] for d in docs)


def test_fields_are_defaults_for_every_call(tiny_model: M3Model) -> None:
    retriever = _fresh(tiny_model, k=2, mode="dense", filter={"lang": "en"})
    expected = retriever.index.search(QUERY, 2, mode="dense", filter={"lang": "en"})
    assert [d.id for d in retriever.invoke(QUERY)] == [h.id for h in expected]
    # a per-call value wins over the field, for this call only
    assert len(retriever.invoke(QUERY, k=1)) == 1
    assert len(retriever.invoke(QUERY)) == 2


def test_async_and_batch_match_invoke(retriever: M3Retriever) -> None:
    queries = [QUERY, "서울 검색", "hybrid retrieval"]
    expected = [[d.id for d in retriever.invoke(q, k=2)] for q in queries]
    assert [[d.id for d in docs] for docs in retriever.batch(queries)] == [
        [d.id for d in retriever.invoke(q)] for q in queries
    ]

    async def run() -> tuple:
        one = await retriever.ainvoke(QUERY, k=2)
        many = await retriever.abatch(queries)
        return one, many

    one, many = asyncio.run(run())
    assert [d.id for d in one] == expected[0]
    assert [[d.id for d in docs] for docs in many] == [[d.id for d in retriever.invoke(q)] for q in queries]


def test_returned_metadata_is_a_copy(retriever: M3Retriever) -> None:
    doc = retriever.invoke(QUERY, k=1)[0]
    doc.metadata["lang"] = "changed"
    doc.metadata["scores"]["dense"] = 99.0
    again = retriever.invoke(QUERY, k=1)[0]
    assert again.metadata["lang"] != "changed"
    assert again.metadata["scores"]["dense"] != 99.0


def test_add_documents_keeps_ids_and_delete(tiny_model: M3Model) -> None:
    retriever = _fresh(tiny_model, k=2)
    docs = [
        Document(page_content="Tokyo is the capital of Japan.", metadata={"lang": "en"}, id="tokyo"),
        Document(page_content="Seoul is the capital of South Korea."),
    ]
    ids = retriever.add_documents(docs)
    assert ids[0] == "tokyo"
    assert ids[1] not in IDS and len(ids[1]) > 8
    assert len(retriever.index) == len(TEXTS) + 2
    stored = retriever.get_by_ids(ids)
    assert [d.page_content for d in stored] == [d.page_content for d in docs]
    assert stored[0].metadata == {"lang": "en"}
    # identical text: cosine 1, the dense maximum
    found = retriever.invoke("Tokyo is the capital of Japan.", k=1, mode="dense")
    assert found[0].id == "tokyo"

    # an existing id replaces that document
    retriever.add_documents([Document(page_content="Kyoto was the old capital.", id="tokyo")])
    assert len(retriever.index) == len(TEXTS) + 2
    assert retriever.get_by_ids(["tokyo"])[0].page_content == "Kyoto was the old capital."

    retriever.delete(["tokyo", ids[1]])
    assert len(retriever.index) == len(TEXTS)
    assert "tokyo" not in retriever.index
    assert all(d.id != "tokyo" for d in retriever.invoke("Tokyo capital Japan", k=len(TEXTS)))


def test_add_documents_explicit_ids_and_add_texts(tiny_model: M3Model) -> None:
    retriever = _fresh(tiny_model)
    assert retriever.add_documents([Document(page_content="x", id="a")], ids=["b"]) == ["b"]
    assert "b" in retriever.index and "a" not in retriever.index
    assert retriever.add_texts(["y"], metadatas=[{"m": 1}], ids=["c"]) == ["c"]
    assert retriever.get_by_ids(["c"])[0].metadata == {"m": 1}


def test_from_documents_keeps_ids_and_metadata(tiny_model: M3Model) -> None:
    docs = [Document(page_content=t, metadata=m, id=i) for t, m, i in zip(TEXTS, METADATAS, IDS, strict=True)]
    retriever = M3Retriever.from_documents(docs, model=tiny_model, k=2, mode="dense")
    assert retriever.k == 2 and retriever.mode == "dense"
    assert retriever.index.ids == IDS
    for doc in retriever.invoke(QUERY):
        assert doc.metadata["lang"] == METADATAS[IDS.index(doc.id)]["lang"]


def test_from_texts_with_model_path_and_index_kwargs(tiny_checkpoint: str) -> None:
    retriever = M3Retriever.from_texts(
        TEXTS[:3],
        model=tiny_checkpoint,
        model_kwargs={"device": "cpu"},
        index_kwargs={"store_colbert": False},
        mode="dense+sparse",
        k=2,
    )
    assert isinstance(retriever.index.model, M3Model)
    assert len(retriever.invoke("capital")) == 2


def test_save_and_load(retriever: M3Retriever, tiny_model: M3Model, tmp_path) -> None:
    retriever.save(tmp_path / "idx")
    loaded = M3Retriever.load(tmp_path / "idx", model=tiny_model, k=3)
    before, after = retriever.invoke(QUERY), loaded.invoke(QUERY)
    assert [(d.id, d.page_content, d.metadata) for d in before] == [
        (d.id, d.page_content, d.metadata) for d in after
    ]
    mapped = M3Retriever.load(tmp_path / "idx", model=tiny_model, k=3, mmap=True)
    assert mapped.index.memory_bytes()["colbert_mapped"] > 0
    assert [(d.id, d.page_content) for d in mapped.invoke(QUERY)] == [(d.id, d.page_content) for d in after]


def test_bad_input_errors(retriever: M3Retriever, tiny_model: M3Model) -> None:
    with pytest.raises(ValueError, match="query is empty"):
        retriever.invoke("")
    with pytest.raises(ValueError, match="query is empty"):
        retriever.invoke("   ")
    for bad_k in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            retriever.invoke(QUERY, k=bad_k)
    with pytest.raises(TypeError, match=r"unknown search option.*top_k"):
        retriever.invoke(QUERY, top_k=3)
    with pytest.raises(ValueError, match="unknown mode"):
        retriever.invoke(QUERY, mode="bm42")
    with pytest.raises(ValidationError):
        M3Retriever(index=retriever.index, k=0)
    with pytest.raises(ValidationError):
        M3Retriever(index=retriever.index, mode="bm42")
    with pytest.raises(ValidationError):
        M3Retriever(index=retriever.index, unknown=1)
    # Options only the index can judge fail at construction too, naming the problem.
    with pytest.raises(ValidationError, match="weights"):
        M3Retriever(index=retriever.index, weights=(0.5, 0.5))
    with pytest.raises(ValidationError, match="rerank_top_n"):
        M3Retriever(index=retriever.index, k=5, rerank="m3", rerank_top_n=2)

    fresh = _fresh(tiny_model)
    with pytest.raises(KeyError, match="nope"):
        fresh.delete(["doc-0", "nope"])
    assert "doc-0" in fresh.index  # nothing was deleted
    with pytest.raises(KeyError, match="nope"):
        fresh.get_by_ids(["nope"])


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_retriever_start(self, serialized: Any, query: str, **kwargs: Any) -> None:
        self.events.append(("start", query))

    def on_retriever_end(self, documents: Any, **kwargs: Any) -> None:
        self.events.append(("end", [d.id for d in documents]))

    def on_retriever_error(self, error: BaseException, **kwargs: Any) -> None:
        self.events.append(("error", type(error).__name__))


def test_callbacks_fire(retriever: M3Retriever) -> None:
    recorder = _Recorder()
    docs = retriever.invoke(QUERY, config={"callbacks": [recorder]}, k=2)
    assert recorder.events == [("start", QUERY), ("end", [d.id for d in docs])]

    recorder.events.clear()
    asyncio.run(retriever.ainvoke(QUERY, config={"callbacks": [recorder]}, k=1))
    assert [e[0] for e in recorder.events] == ["start", "end"]
    assert len(recorder.events[1][1]) == 1

    recorder.events.clear()
    with pytest.raises(ValueError, match="query is empty"):
        retriever.invoke("", config={"callbacks": [recorder]})
    assert recorder.events == [("start", ""), ("error", "ValueError")]


def test_lcel_rag_chain(retriever: M3Retriever) -> None:
    def format_docs(docs: list[Document]) -> str:
        return "\n".join(f"[{n}] {d.page_content}" for n, d in enumerate(docs, 1))

    prompt = ChatPromptTemplate.from_messages([("human", "Context:\n{context}")])
    llm = FakeListChatModel(responses=["an answer"])
    chain = retriever | format_docs | prompt | llm | StrOutputParser()
    assert chain.invoke(QUERY) == "an answer"

    seen: list[str] = []
    context_chain = retriever | format_docs | (lambda text: seen.append(text) or text)
    context_chain.invoke(QUERY)
    expected = format_docs(retriever.invoke(QUERY))
    assert seen == [expected]
    assert expected.count("[") == retriever.k
