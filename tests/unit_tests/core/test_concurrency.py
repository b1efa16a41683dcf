from __future__ import annotations

import threading

from m3_integrations import M3Index, M3Model
from tests.common import INDEX_TEXTS


def test_searches_during_adds_and_deletes_see_consistent_state(tiny_model: M3Model) -> None:
    index = M3Index(tiny_model)
    index.add(
        INDEX_TEXTS,
        ids=[f"base{i}" for i in range(len(INDEX_TEXTS))],
        metadatas=[{"text": t} for t in INDEX_TEXTS],
    )
    errors: list[BaseException] = []
    stop = threading.Event()
    (encoded,) = index.encode_queries(["capital of France"])
    # Precomputed representations keep the writer fast, so mutations interleave with every search step.
    pool = [f"capital number {i}" for i in range(3)]
    output = tiny_model.encode_passages(pool, return_colbert=True)
    replacement = tiny_model.encode_passages(["replaced"], return_colbert=True)
    rounds = 150

    def writer() -> None:
        try:
            for round_ in range(rounds):
                ids = [f"w{round_}-{i}" for i in range(3)]
                index.add_encoded(output, pool, ids=ids, metadatas=[{"text": t} for t in pool])
                if round_ % 2:
                    index.delete(ids[:2])
                index.add_encoded(replacement, ["replaced"], ids=["base0"], metadatas=[{"text": "replaced"}])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                for mode in ("hybrid", "dense+sparse", "colbert"):
                    hits = index.search_encoded(encoded, k=8, mode=mode, candidates=5)
                    assert len(hits) == 8
                    assert len({h.id for h in hits}) == 8
                    for hit in hits:
                        assert hit.metadata["text"] == hit.text
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert index.get(["base0"])[0].text == "replaced"
    assert len(index) == len(INDEX_TEXTS) + rounds * 3 - rounds // 2 * 2


def test_encoding_from_many_threads_keeps_each_calls_truncation(tiny_model: M3Model) -> None:
    """Adds of long documents (no BM25 truncation) race with query encoding (512-token limit).

    A fast tokenizer keeps its truncation setting in one shared object; without a lock around each
    call, queries came back cut at the passage limit and documents at the query limit.
    """
    index = M3Index(tiny_model, bm25_tokenizer="model")
    long_text = " ".join(["retrieval augmented generation grounds a language model"] * 120)
    expected_doc_tokens = len(tiny_model.tokenizer(long_text, add_special_tokens=False)["input_ids"])
    assert expected_doc_tokens > tiny_model.query_max_length
    query = " ".join(["capital of France"] * 300)
    errors: list[BaseException] = []
    query_lengths: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for round_ in range(30):
                index.add([long_text] * 4, ids=[f"d{round_}-{i}" for i in range(4)])
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                out = tiny_model.encode_queries([query, "short query"], return_sparse=False)
                query_lengths.extend(out.num_tokens)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert query_lengths
    assert max(query_lengths) == tiny_model.query_max_length
    # Every stored document has its full BM25 length (no cut at the query limit).
    lengths = index._stores.bm25._doc_len
    assert (lengths == expected_doc_tokens).all(), sorted(set(lengths.tolist()))
