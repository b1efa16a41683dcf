"""Engine latency (query encoding excluded) of hybrid settings on one index built from cached encodings.

``M3Index.search_encoded`` on precomputed query representations, as ``benchmarks/search_scaling.py``
times the engine: the median and the 90th percentile over every query, after a warm-up, for the
current default (``confidence`` over plain words) and the settings issue 18 compares (``agreement``
fusion, the language analyzer's BM25 tokens; the query's tokenization counted, since the analyzer runs
on every query).

Usage::

    python benchmarks/default_latency.py multilingual-e5-small "xquad en→en"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.encode_cache import cache_path, load_model  # noqa: E402
from benchmarks.signal_cache import _texts, _unflatten  # noqa: E402
from m3_integrations import M3Index  # noqa: E402
from m3_integrations.index import EncodedQuery  # noqa: E402
from m3_integrations.model import M3Output  # noqa: E402

SETTINGS = {
    "confidence .3/.4/.3 · words (current default)": ({"language": None}, "confidence"),
    "agreement .3/.4/.3 · words": ({"language": None}, "agreement"),
    "confidence .3/.4/.3 · language": ({"language": "auto"}, "confidence"),
    "agreement .3/.4/.3 · language": ({"language": "auto"}, "agreement"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder")
    parser.add_argument("collection")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-queries", type=int, default=None)
    args = parser.parse_args(argv)
    with np.load(cache_path(args.encoder, args.collection), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    info = json.loads(str(arrays["info"]))
    doc_ids = [str(d) for d in arrays["doc_ids"]]
    texts = _texts(info, doc_ids)
    queries = [str(q) for q in arrays["query_texts"]][: args.max_queries]
    model = load_model(args.encoder)
    doc_colbert = _unflatten(arrays["doc_colbert"], arrays["doc_colbert_offsets"])
    q_colbert = _unflatten(arrays["query_colbert"], arrays["query_colbert_offsets"])
    output = M3Output(
        dense=arrays["doc_dense"], colbert_vecs=doc_colbert, num_tokens=[len(v) + 1 for v in doc_colbert]
    )
    indexes = {}
    for name, (options, fusion) in SETTINGS.items():
        key = json.dumps(options)
        if key not in indexes:
            indexes[key] = M3Index(model, **options)
            indexes[key].add_encoded(output, texts, ids=doc_ids)
        index = indexes[key]
        timings = []
        for _ in range(args.repeats):
            for i, query in enumerate(queries):
                start = time.perf_counter()
                tokens = index.bm25_tokens([query])[0]
                encoded = EncodedQuery(
                    dense=arrays["query_dense"][i], colbert_vecs=q_colbert[i], bm25_tokens=tokens
                )
                index.search_encoded(
                    encoded, k=10, fusion=fusion, weights={"dense": 0.3, "sparse": 0.4, "colbert": 0.3}
                )
                timings.append((time.perf_counter() - start) * 1000)
        timings = timings[len(queries) :]  # the first pass warms up
        p50 = statistics.median(timings)
        p90 = float(np.percentile(timings, 90))
        label = f"{args.encoder} | {args.collection} | {len(doc_ids)} docs | {name:48s}"
        print(f"{label} p50 {p50:.2f} ms  p90 {p90:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
