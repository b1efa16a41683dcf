"""Choose the hybrid default with a protocol that resists overfitting (issue 18).

Input: the per-query candidate signals of every cached encoder × collection pair
(``benchmarks/signal_cache.py``). Every configuration (a fusion, its weights, a BM25 analyzer) is a
fusion of those signals with the core's ``fusion.fuse``, ranked as ``M3Index.search`` ranks, and scored
per query (nDCG@10).

The protocol:

1. Per pair, the **reference** is the best of what a user could have used instead: the best single
   signal (dense, BM25 over words or over the language's analyzer, identity ColBERT) and the best stock
   hybrid (LangChain's ensemble and LlamaIndex's RRF and relative-score hybrids, emulated on the same
   signals: see :data:`STOCK`). A configuration's **margin** on a pair is its mean nDCG@10 minus the
   reference's, with a 95% paired bootstrap interval over the queries.
2. **Leave one out**: for each pair, the rule picks a configuration on all the *other* pairs and the
   pick is scored on the pair left out. (``--hold-out collection`` leaves out every pair of that
   collection: both encoders, every query set.)
3. **The rule maximises the worst margin** over the pairs it sees (ties: the higher mean margin), not
   the mean: a default must not lose badly anywhere, and a mean hides one collapse behind many small
   gains.
4. The default changes only if the protocol says it generalises: the held-out margins of the rule's
   picks meet the target (``margin >= -0.005`` or an interval holding 0) on at least as many pairs as
   the current default does, and their worst is higher than the current default's worst.

**Calibrated** (``M3Index.calibrate()``, issue 18): per pair, the configuration calibrate chose on
the pair's corpus from pseudo-queries alone (``benchmarks/calibration_cache.py``), one candidate per
BM25 variant (``calibrated · words``, ``calibrated · language``). It sees no label and no real query,
so its margin on a pair is already a held-out one; rule 4 applies to it as to the rule's picks
(``calibrated`` in the output), and it is also among the candidates the rule picks from.

Usage::

    python benchmarks/select_default.py                    # writes benchmarks/out/selection.json
    python benchmarks/select_default.py --hold-out collection
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.calibration_cache import OUT as CALIBRATIONS  # noqa: E402
from benchmarks.calibration_cache import load_all as load_calibrations  # noqa: E402
from benchmarks.signal_cache import OUT as SIGNALS  # noqa: E402
from benchmarks.signal_cache import PairSignals, load_all  # noqa: E402
from m3_integrations import fusion  # noqa: E402
from m3_integrations.evaluation import paired_bootstrap_ci, per_query_metrics  # noqa: E402
from m3_integrations.index import Calibration  # noqa: E402

logger = logging.getLogger("select_default")
OUT = Path(__file__).resolve().parent / "out" / "selection.json"
TOLERANCE = 0.005  # the target: margin >= -0.005, or an interval that holds 0


@dataclass(frozen=True)
class Config:
    """One way to rank a pair's candidates: signals (by name), weights, fusion, BM25 variant."""

    name: str
    weights: Mapping[str, float]  # over dense / bm25 / colbert; one signal: that signal alone
    fusion: str | None = None
    variant: str = "words"
    family: str = "hybrid"  # single | stock | hybrid
    extra: Mapping[str, Any] = field(default_factory=dict)


WEIGHTS = {
    "paper .4/.2/.4": (0.4, 0.2, 0.4),
    "equal 1/1/1": (1.0, 1.0, 1.0),
    "lexical .3/.4/.3": (0.3, 0.4, 0.3),
    "colbert .2/.2/.6": (0.2, 0.2, 0.6),
    "dense-colbert .4/.1/.5": (0.4, 0.1, 0.5),
}
FUSIONS = ("confidence", "agreement", "relative_score", "rrf")
SINGLES = [
    Config("dense", {"dense": 1.0}, family="single"),
    Config("colbert (identity)", {"colbert": 1.0}, family="single"),
    Config("BM25 words", {"bm25": 1.0}, family="single", variant="words"),
    Config("BM25 language", {"bm25": 1.0}, family="single", variant="language"),
]
# The peers' stock hybrids on our signals: LangChain's EnsembleRetriever is RRF (k=60, equal weights)
# of its BM25 (rank_bm25 over whitespace tokens; our plain words are the closest) and the vector store;
# LlamaIndex's QueryFusionRetriever fuses its vector retriever with BM25Retriever (bm25s, Snowball-
# stemmed English without stop words; our language analyzer, which is the same for English and fairer
# to the peer elsewhere) by RRF or by relative scores (min-max, equal weights).
STOCK = [
    Config("LangChain ensemble (emulated)", {"dense": 1.0, "bm25": 1.0}, "rrf", "words", "stock"),
    Config("LlamaIndex RRF (emulated)", {"dense": 1.0, "bm25": 1.0}, "rrf", "language", "stock"),
    Config(
        "LlamaIndex relative_score (emulated)",
        {"dense": 1.0, "bm25": 1.0},
        "relative_score",
        "language",
        "stock",
    ),
]
CURRENT_DEFAULT = "hybrid confidence lexical .3/.4/.3 · words"
CALIBRATED = {variant: f"calibrated · {variant}" for variant in ("words", "language")}


def hybrid_configs() -> list[Config]:
    configs = []
    for variant in ("words", "language"):
        for fusion_name in FUSIONS:
            for label, (d, lex, c) in WEIGHTS.items():
                configs.append(
                    Config(
                        f"hybrid {fusion_name} {label} · {variant}",
                        {"dense": d, "bm25": lex, "colbert": c},
                        fusion_name,
                        variant,
                    )
                )
    return configs


def rank(signals: PairSignals, config: Config, i: int, k: int = 10) -> list[str]:
    """Query ``i``'s top ``k`` ids under ``config``: what ``M3Index.search`` returns for it."""
    rows, scores, coverage = signals.query(i)
    if len(rows) == 0:
        return []
    used = {name: scores[name] for name in config.weights}
    if len(used) == 1:
        fused = next(iter(used.values()))
        if "bm25" in used:  # a lexical search returns only documents sharing a term
            keep = fused > 0
            rows, fused = rows[keep], fused[keep]
    else:
        extra = {}
        if config.fusion in ("confidence", "agreement") and "bm25" in used:
            extra["coverage"] = {"bm25": coverage}
        fused = fusion.fuse(used, dict(config.weights), method=config.fusion, **extra)
    order = np.lexsort((rows, -np.asarray(fused, dtype=np.float64)))[:k]
    return [signals.doc_ids[r] for r in rows[order]]


def per_query_ndcg(variants: Mapping[str, PairSignals], config: Config) -> np.ndarray:
    signals = variants[config.variant]
    run = {q: rank(signals, config, i) for i, q in enumerate(signals.query_ids)}
    values = per_query_metrics(run, signals.qrels, ["ndcg@10"])["ndcg@10"]
    return np.asarray([values[q] for q in signals.query_ids], dtype=np.float64)


@dataclass
class PairTable:
    """Every configuration's per-query nDCG@10 on one pair, and the pair's reference."""

    name: str
    collection: str
    values: dict[str, np.ndarray]
    reference: str = ""
    choices: dict[str, str] = field(default_factory=dict)  # calibrated · <variant> → what it chose

    def __post_init__(self) -> None:
        candidates = [c.name for c in SINGLES + STOCK if c.name in self.values]
        self.reference = max(candidates, key=lambda n: (float(self.values[n].mean()), n))

    def margin(self, config: str) -> float:
        return float(self.values[config].mean() - self.values[self.reference].mean())

    def interval(self, config: str) -> tuple[float, float, float]:
        return paired_bootstrap_ci(self.values[config], self.values[self.reference])


def calibrated_configs(calibrations: Mapping[str, Calibration]) -> list[Config]:
    """One pair's ``calibrated · <variant>`` configurations: what ``M3Index.calibrate()`` chose there."""
    return [
        Config(
            CALIBRATED[variant],
            dict(zip(("dense", "bm25", "colbert"), chosen.weights, strict=True)),
            chosen.fusion,
            variant,
            extra={"choice": f"{chosen.fusion} {chosen.weights}"},
        )
        for variant, chosen in sorted(calibrations.items())
        if variant in CALIBRATED
    ]


def tables(
    pairs: Mapping[tuple[str, str], Mapping[str, PairSignals]],
    configs: Sequence[Config],
    calibrations: Mapping[tuple[str, str], Mapping[str, Calibration]] | None = None,
) -> list[PairTable]:
    out = []
    for (encoder, collection), variants in sorted(pairs.items()):
        if not {"words", "language"} <= set(variants):
            logger.warning("%s / %s lacks a BM25 variant; skipped", encoder, collection)
            continue
        own = calibrated_configs((calibrations or {}).get((encoder, collection), {}))
        values = {c.name: per_query_ndcg(variants, c) for c in [*configs, *own]}
        choices = {c.name: str(c.extra["choice"]) for c in own}
        out.append(PairTable(f"{encoder} | {collection}", _corpus(collection), values, choices=choices))
        logger.info("%s / %s: reference %s", encoder, collection, out[-1].reference)
    return out


def _corpus(collection: str) -> str:
    """XQuAD's query sets share one corpus: leaving the collection out leaves all of them out."""
    return "xquad" if collection.startswith("xquad") else collection


def pick(pairs: Sequence[PairTable], candidates: Sequence[str]) -> tuple[str, float]:
    """The maximin rule: the configuration whose worst margin over ``pairs`` is highest."""

    def key(name: str) -> tuple[float, float, str]:
        margins = [p.margin(name) for p in pairs]
        return (min(margins), float(np.mean(margins)), name)

    best = max(candidates, key=key)
    return best, key(best)[0]


def meets_target(low_mean_high: tuple[float, float, float]) -> bool:
    mean, low, high = low_mean_high
    return mean >= -TOLERANCE or low <= 0 <= high


def protocol(pairs: Sequence[PairTable], candidates: Sequence[str], hold_out: str) -> dict[str, Any]:
    held = []
    for p in pairs:
        seen = [
            q for q in pairs if (q.name != p.name if hold_out == "pair" else q.collection != p.collection)
        ]
        choice, worst_seen = pick(seen, candidates)
        ci = p.interval(choice)
        held.append(
            {
                "pair": p.name,
                "pick": choice,
                "worst_margin_seen": worst_seen,
                "reference": p.reference,
                "ndcg@10": float(p.values[choice].mean()),
                "reference_ndcg@10": float(p.values[p.reference].mean()),
                "margin": list(ci),
                "meets_target": meets_target(ci),
            }
        )
    final, final_worst = pick(pairs, candidates)
    current = [
        {
            "pair": p.name,
            "margin": list(p.interval(CURRENT_DEFAULT)),
            "meets_target": meets_target(p.interval(CURRENT_DEFAULT)),
        }
        for p in pairs
    ]
    chosen = [
        {"pair": p.name, "margin": list(p.interval(final)), "meets_target": meets_target(p.interval(final))}
        for p in pairs
    ]
    # The language analyzer against plain words under the current default's fusion and weights.
    language = CURRENT_DEFAULT.replace("· words", "· language")
    language_vs_words = [
        {
            "pair": p.name,
            "difference": list(paired_bootstrap_ci(p.values[language], p.values[CURRENT_DEFAULT])),
        }
        for p in pairs
        if language in p.values
    ]
    calibrated = {
        name: calibrated_check(pairs, name, current) for name in CALIBRATED.values() if name in candidates
    }
    held_worst = min(h["margin"][0] for h in held)
    current_worst = min(c["margin"][0] for c in current)
    generalises = sum(h["meets_target"] for h in held) >= sum(c["meets_target"] for c in current) and (
        held_worst > current_worst
    )
    return {
        "hold_out": hold_out,
        "held_out": held,
        "rule_pick_on_all_pairs": final,
        "rule_pick_worst_margin": final_worst,
        "rule_pick_margins": chosen,
        "current_default": CURRENT_DEFAULT,
        "current_default_margins": current,
        "held_out_worst": held_worst,
        "current_default_worst": current_worst,
        "held_out_meeting_target": sum(h["meets_target"] for h in held),
        "current_default_meeting_target": sum(c["meets_target"] for c in current),
        "generalises": generalises,
        "language_vs_words": language_vs_words,
        "calibrated": calibrated,
    }


def calibrated_check(
    pairs: Sequence[PairTable], name: str, current: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Rule 4 for a label-free per-pair choice: its margins are held out already (it saw no label)."""
    rows = [
        {
            "pair": p.name,
            "margin": list(p.interval(name)),
            "meets_target": meets_target(p.interval(name)),
            "vs_current_default": list(paired_bootstrap_ci(p.values[name], p.values[CURRENT_DEFAULT])),
            "ndcg@10": float(p.values[name].mean()),
        }
        for p in pairs
    ]
    worst = min(r["margin"][0] for r in rows)
    meeting = sum(r["meets_target"] for r in rows)
    current_worst = min(c["margin"][0] for c in current)
    current_meeting = sum(c["meets_target"] for c in current)
    return {
        "margins": rows,
        "worst": worst,
        "meeting_target": meeting,
        "generalises": meeting >= current_meeting and worst > current_worst,
    }


def record_in_report(result: dict[str, Any], candidates: int, note: str) -> None:
    """Put the result into the committed summary and render REPORT.md from it (run_quality.py's way)."""
    from benchmarks.quality_report import dump_summary, load_summary
    from benchmarks.run_quality import OutputPaths, _write_atomically, write_outputs

    paths = OutputPaths.for_run(False)
    summary = load_summary(paths.summary)
    counts = {}
    for name, pair in result["pairs"].items():
        counts[name] = pair["num_queries"]
    command = f"python benchmarks/select_default.py --hold-out {result['hold_out']} --report"
    summary["selection"] = {
        "command": f"`{command}`",
        "signals": ", ".join(f"{name} {n} queries" for name, n in counts.items()),
        "candidates": candidates,
        "note": note,
        **{k: v for k, v in result.items() if k != "pairs"},
    }
    _write_atomically(paths.summary, dump_summary(summary))
    write_outputs(None, paths)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold-out", choices=("pair", "collection"), default="pair")
    parser.add_argument("--signals", type=Path, default=SIGNALS)
    parser.add_argument("--calibrations", type=Path, default=CALIBRATIONS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--report",
        action="store_true",
        help="record the result in benchmarks/quality_summary.json and render benchmarks/REPORT.md again",
    )
    parser.add_argument("--note", default="", help="a sentence the report shows under the result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    pairs = load_all(args.signals)
    hybrids = hybrid_configs()
    configs = SINGLES + STOCK + hybrids
    table = tables(pairs, configs, load_calibrations(args.calibrations) if args.calibrations.is_dir() else {})
    if len(table) < 2:
        raise SystemExit(f"the protocol needs at least two pairs, found {len(table)} in {args.signals}")
    # The calibrated choice is a candidate where every pair has one.
    calibrated = [name for name in CALIBRATED.values() if all(name in p.values for p in table)]
    result = protocol(table, [c.name for c in hybrids] + calibrated, args.hold_out)
    result["pairs"] = {
        p.name: {
            "num_queries": len(p.values["dense"]),
            "reference": p.reference,
            "means": {name: round(float(v.mean()), 4) for name, v in p.values.items()},
            "calibrated": p.choices,
        }
        for p in table
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.report:
        record_in_report(result, len(hybrids), args.note)
    for h in result["held_out"]:
        m = h["margin"]
        interval = f"{m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}]"
        print(f"{h['pair']:45s} pick {h['pick']:50s} held-out {interval} vs {h['reference']}")
    for entry in result["language_vs_words"]:
        d = entry["difference"]
        print(f"{entry['pair']:45s} language BM25 - words: {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]")
    for name, check in result["calibrated"].items():
        for row in check["margins"]:
            m, d = row["margin"], row["vs_current_default"]
            print(
                f"{row['pair']:45s} {name}: {m[0]:+.3f} [{m[1]:+.3f}, {m[2]:+.3f}] vs reference;"
                f" {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] vs the current default"
            )
        print(
            f"{name}: worst {check['worst']:+.3f} ({check['meeting_target']}/{len(table)} meet the target);"
            f" generalises by rule 4: {check['generalises']}"
        )
    print(
        "rule's pick on all pairs:",
        result["rule_pick_on_all_pairs"],
        f"worst {result['rule_pick_worst_margin']:+.3f}",
    )
    print(
        f"held-out worst {result['held_out_worst']:+.3f}"
        f" ({result['held_out_meeting_target']}/{len(table)} meet the target);"
        f" current default worst {result['current_default_worst']:+.3f}"
        f" ({result['current_default_meeting_target']}/{len(table)}); generalises: {result['generalises']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
