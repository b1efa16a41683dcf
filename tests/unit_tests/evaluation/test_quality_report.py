"""The quality report: its summary keeps what the report shows, and REPORT.md is rendered from it alone."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from benchmarks import quality_report as qr
from m3_integrations.evaluation import paired_bootstrap_ci

ROOT = Path(__file__).resolve().parents[3]
BENCH = ROOT / "benchmarks"
DEFAULT = "hybrid confidence lexical .3/.4/.3 · word BM25"
OTHER = "hybrid rrf paper .4/.2/.4 · word BM25"


def _row(encoder: str, dataset: str, config: str, family: str, per_query: list[float], **extra) -> dict:
    return {
        "encoder": encoder,
        "dataset": dataset,
        "num_docs": 10,
        "num_queries": len(per_query),
        "config": config,
        "family": family,
        "params": {},
        "ndcg@10": sum(per_query) / len(per_query),
        "recall@100": 1.0,
        "mrr@10": 0.5,
        "build_s": 1.0,
        "p50_ms": extra.pop("p50_ms", None),
        qr.PER_QUERY: per_query,
        **extra,
    }


def _saved() -> dict:
    """Two encoders on two collections: every single signal, two fused configurations, the peers."""
    rng = random.Random(5)
    rows = []
    for encoder in ("multilingual-e5-small", "all-MiniLM-L6-v2"):
        for dataset in ("cranfield", "xquad zh→en"):

            def values(level: float) -> list[float]:
                return [min(1.0, max(0.0, level + rng.uniform(-0.2, 0.2))) for _ in range(30)]

            for config, family, level in (
                ("dense", "single", 0.6),
                ("lexical (BM25, subword)", "single", 0.4),
                ("lexical (BM25, words)", "single", 0.5),
                ("colbert (identity)", "single", 0.65),
                (DEFAULT, "hybrid", 0.7),
                (OTHER, "hybrid", 0.55),
                *((name, "peer", 0.6) for name, _ in qr.PEERS),
            ):
                rows.append(_row(encoder, dataset, config, family, values(level), p50_ms=10.0 + level))
    return {"rows": rows, "runs": [{"command": "python benchmarks/run_quality.py", "started": "now"}]}


def test_summary_keeps_what_the_report_shows() -> None:
    saved = _saved()
    summary = qr.summarize(saved)
    assert summary["default"] == DEFAULT  # the higher mean, no cross-lingual failure
    assert json.loads(qr.dump_summary(summary)) == summary
    pair = summary["pairs"][0]
    rows = {(r["dataset"], r["config"]): r for r in saved["rows"] if r["encoder"] == pair["encoder"]}
    ours = rows[(pair["dataset"], DEFAULT)]
    best = max(
        (rows[(pair["dataset"], c)] for c, _ in qr.KEY_COLUMNS if (pair["dataset"], c) in rows),
        key=lambda r: r["ndcg@10"],
    )
    assert pair["best_single"] == best["config"]
    expected = paired_bootstrap_ci(ours[qr.PER_QUERY], best[qr.PER_QUERY], seed=qr.BOOTSTRAP_SEED)
    assert pair["default_minus"]["best single"] == pytest.approx(list(expected), abs=1e-6)
    assert pair["rows"][DEFAULT]["ndcg@10"] == pytest.approx(ours["ndcg@10"], abs=1e-6)
    report = qr.render_report(summary, [])
    for heading in ("## At a glance", "## Per collection", "## How the default was chosen", "## Reproduce"):
        assert heading in report
    assert (
        "**Multilingual encoder without M3 heads** (multilingual-e5-small): use the default hybrid" in report
    )


def test_full_results_pointer_survives_a_re_render_of_the_same_runs() -> None:
    saved = _saved()
    first = qr.summarize({**saved, "full_results_commit": "abc1234"})
    assert "git show abc1234:benchmarks/quality_results.json" in qr.render_report(first, [])
    again = qr.summarize(saved, previous=first)  # the same runs, results restored from history
    assert again["full_results_commit"] == "abc1234"
    newer = qr.summarize(
        {**saved, "runs": [*saved["runs"], {"command": "x", "started": "later"}]}, previous=first
    )
    assert "full_results_commit" not in newer  # a new run's results are not in that commit


def test_load_summary_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "quality_summary.json"
    path.write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"quality_summary\.json is not a quality summary"):
        qr.load_summary(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read the quality summary"):
        qr.load_summary(path)


def test_committed_report_is_rendered_from_the_committed_summary() -> None:
    summary = qr.load_summary(BENCH / "quality_summary.json")
    encoders = dict.fromkeys(p["encoder"] for p in summary["pairs"])
    plots = [f"quality_{e}.png" for e in encoders] + ["quality_latency.png"]
    assert all((BENCH / name).is_file() for name in plots)
    assert qr.render_report(summary, plots) == (BENCH / "REPORT.md").read_text(encoding="utf-8")
