"""The default-selection protocol of ``benchmarks/select_default.py`` on hand-made per-query values."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import select_default
from benchmarks.select_default import CURRENT_DEFAULT, PairTable, pick, protocol
from m3_integrations.index import Calibration


def table(name: str, collection: str, dense: float, margins: dict[str, float], n: int = 40) -> PairTable:
    """A pair whose reference is dense (``dense`` on every query) and each config ``dense + margin``."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    noise = rng.normal(0.0, 0.01, n)
    values = {"dense": np.full(n, dense) + noise, "BM25 words": np.full(n, dense - 0.3)}
    for config, margin in margins.items():
        values[config] = values["dense"] + margin
    return PairTable(name, collection, values)


@pytest.fixture
def pairs() -> list[PairTable]:
    # "mean-best" wins on average but collapses on one pair; "steady" never loses much.
    return [
        table("e5 | a", "a", 0.6, {"mean-best": 0.05, "steady": 0.01, CURRENT_DEFAULT: -0.02}),
        table("e5 | b", "b", 0.7, {"mean-best": 0.05, "steady": 0.01, CURRENT_DEFAULT: 0.0}),
        table("e5 | c", "c", 0.5, {"mean-best": -0.10, "steady": -0.004, CURRENT_DEFAULT: -0.05}),
        table("minilm | c", "c", 0.4, {"mean-best": 0.04, "steady": 0.0, CURRENT_DEFAULT: 0.0}),
    ]


def test_reference_is_the_best_single_signal_or_stock_hybrid(pairs: list[PairTable]) -> None:
    assert all(p.reference == "dense" for p in pairs)
    assert pairs[0].margin("mean-best") == pytest.approx(0.05)


def test_the_rule_maximises_the_worst_margin_not_the_mean(pairs: list[PairTable]) -> None:
    assert pick(pairs, ["mean-best", "steady"])[0] == "steady"
    # Without the pair where it collapses, the mean-best configuration is also the maximin pick.
    assert pick([p for p in pairs if p.name != "e5 | c"], ["mean-best", "steady"])[0] == "mean-best"


def test_leave_one_out_scores_each_pick_on_the_pair_it_did_not_see(pairs: list[PairTable]) -> None:
    result = protocol(pairs, ["mean-best", "steady"], "pair")
    held = {h["pair"]: h for h in result["held_out"]}
    assert held["e5 | c"]["pick"] == "mean-best"  # chosen without seeing its collapse...
    assert held["e5 | c"]["margin"][0] == pytest.approx(-0.10)  # ...and scored on it
    assert not held["e5 | c"]["meets_target"]
    assert held["e5 | a"]["pick"] == "steady"
    assert result["rule_pick_on_all_pairs"] == "steady"
    assert result["held_out_worst"] == pytest.approx(-0.10)
    assert result["current_default_worst"] == pytest.approx(-0.05)
    assert result["generalises"] is False  # held out, the protocol's picks did worse than the default


def test_leaving_a_collection_out_leaves_all_its_pairs_out(pairs: list[PairTable]) -> None:
    result = protocol(pairs, ["mean-best", "steady"], "collection")
    held = {h["pair"]: h for h in result["held_out"]}
    # Both pairs of collection c are chosen on a and b only, where mean-best never loses.
    assert held["minilm | c"]["pick"] == "mean-best"
    assert held["e5 | c"]["pick"] == "mean-best"
    assert select_default._corpus("xquad zh→en") == select_default._corpus("xquad de→en")


def test_target_counts_a_small_loss_or_an_interval_holding_zero() -> None:
    assert select_default.meets_target((-0.004, -0.01, 0.002))
    assert select_default.meets_target((-0.02, -0.05, 0.01))
    assert not select_default.meets_target((-0.02, -0.03, -0.01))


def test_the_report_section_shows_every_held_out_margin(pairs: list[PairTable]) -> None:
    from benchmarks.quality_report import section_selection

    result = protocol(pairs, ["mean-best", "steady"], "pair")
    selection = {"command": "`select`", "signals": "4 pairs", "candidates": 2, "note": "", **result}
    text = "\n".join(section_selection({"selection": selection}))
    for held in result["held_out"]:
        assert f"| {held['pair'].replace(' | ', ' · ')} | {held['pick']} | {held['margin'][0]:+.3f}" in text
    assert "-0.100 [" in text and "✗" in text
    assert "does **not** generalise" in text
    assert section_selection({}) == []


def test_the_calibrated_choice_is_judged_by_rule_4_on_its_own_margins(pairs: list[PairTable]) -> None:
    # Label-free, chosen per pair: its margins are held out as they are.
    for p, margin in zip(pairs, (0.0, 0.01, -0.03, 0.0), strict=True):
        p.values["calibrated · words"] = p.values["dense"] + margin
    result = protocol(pairs, ["steady", "calibrated · words"], "pair")
    check = result["calibrated"]["calibrated · words"]
    assert [r["margin"][0] for r in check["margins"]] == pytest.approx([0.0, 0.01, -0.03, 0.0])
    assert [r["vs_current_default"][0] for r in check["margins"]] == pytest.approx([0.02, 0.01, 0.02, 0.0])
    assert check["worst"] == pytest.approx(-0.03)
    assert check["meeting_target"] == 3  # the current default meets it on 2, worst -0.05
    assert check["generalises"] is True
    pairs[0].values["calibrated · words"] = (
        pairs[0].values["dense"] - 0.06
    )  # now worse than the default's worst
    assert (
        protocol(pairs, ["steady", "calibrated · words"], "pair")["calibrated"]["calibrated · words"][
            "generalises"
        ]
        is False
    )


def test_calibrated_configs_rank_with_what_calibrate_chose() -> None:
    chosen = Calibration("rrf", (0.2, 0.2, 0.6), 0.8, 0.7, 100, 600, 0, 0.005)
    (config,) = select_default.calibrated_configs({"language": chosen, "subword": chosen})
    assert config.name == "calibrated · language"
    assert (config.fusion, config.variant) == ("rrf", "language")
    assert dict(config.weights) == {"dense": 0.2, "bm25": 0.2, "colbert": 0.6}
