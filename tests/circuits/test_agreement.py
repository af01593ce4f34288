"""Agreement reports (attnlab.circuits.agreement): correlations against hand-computed values, failure detection on
planted disagreements, round trips, and a real comparison of attribution with exact patching on a tiny model."""

import json
import math

import pytest
import torch

from attnlab.circuits.agreement import AgreementError, AgreementReport, agreement, agreement_report, pearson, spearman
from attnlab.models import tiny_model
from attnlab.results import PatchingResult

from tests.conftest import random_pair_dataset


def fake_result(values, *, component="heads", direction="denoising"):
    """A [layer, head] PatchingResult holding ``values`` (2-D list)."""
    v = torch.tensor(values, dtype=torch.float32)
    layers, heads = v.shape
    return PatchingResult(
        analysis="test", component=component, direction=direction, dims=("layer", "head"), values=v,
        per_prompt=None, labels={"layer": [f"L{i}" for i in range(layers)], "head": [f"H{i}" for i in range(heads)]},
        index={"layer": list(range(layers)), "head": list(range(heads))}, baselines={"clean": 2.0, "corrupted": 0.0},
    )


def test_correlations_match_hand_computed_values():
    # one swapped pair of ranks: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert spearman(torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([10.0, 30, 20, 40, 50])) == pytest.approx(0.9)
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)
    # ties share their average rank: ranks [1.5, 1.5, 3] vs [1, 2, 3] -> 1.5 / sqrt(1.5 * 2)
    assert spearman(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3])) == pytest.approx(1.5 / math.sqrt(3))
    assert spearman(torch.tensor([1.0, 2, 3]), torch.tensor([9.0, 4, 1])) == pytest.approx(-1.0)
    # Pearson of [1, 2, 3] with [1, 2, 6]: cov 5 / sqrt(2 * 14)
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([1.0, 2, 6])) == pytest.approx(5 / math.sqrt(2 * 14))
    assert math.isnan(pearson(torch.tensor([1.0, 1, 1]), torch.tensor([1.0, 2, 3])))


def test_failures_are_the_planted_disagreements_largest_first():
    exact = fake_result([[0.50, 0.02, -0.30], [0.10, 0.00, 0.40]])
    attr = fake_result([[0.45, 0.04, -0.05], [0.10, 0.02, 0.05]])
    r = agreement(exact, attr, rel_threshold=0.5, min_scale=0.05, top_k=2)
    # L0H2: error 0.25 > 0.5 * 0.30; L1H2: 0.35 > 0.5 * 0.40; L0H1 and L1H1: 0.02 < 0.5 * max(|exact|, 0.05)
    assert [f["component"] for f in r.failures] == ["L1H2", "L0H2"]
    assert r.failures[0]["abs_error"] == pytest.approx(0.35) and r.failures[0]["rel_error"] == pytest.approx(0.875)
    assert r.n == 6 and r.top_k == 2 and r.top_k_recall == 0.5  # exact top 2: L0H0, L1H2; attribution: L0H0, L0H2
    assert r.spearman == pytest.approx(spearman(exact.values.flatten(), attr.values.flatten()))
    df = r.to_dataframe()
    assert list(df["component"]) == ["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
    assert list(df["fails"]) == [False, False, True, False, False, True]
    assert agreement(exact, attr, max_failures=1).failures[0]["component"] == "L1H2"
    assert agreement(exact, exact).failures == [] and agreement(exact, exact).spearman == pytest.approx(1.0)


def test_round_trip_through_json():
    r = agreement(fake_result([[0.5, 0.1], [0.2, 0.3]]), fake_result([[0.4, 0.1], [0.3, 0.2]]))
    back = AgreementReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r
    flat = agreement(fake_result([[0.5, 0.5]]), fake_result([[0.1, 0.2]]))
    assert math.isnan(flat.spearman)
    again = AgreementReport.from_dict(json.loads(json.dumps(flat.to_dict())))
    assert math.isnan(again.spearman) and again.points == flat.points
    with pytest.raises(AgreementError, match="not an attnlab agreement report"):
        AgreementReport.from_dict({"component": "heads"})


@pytest.mark.parametrize("change,match", [
    (dict(direction="noising"), "direction"),
    (dict(component="heads_by_pos"), "component"),
])
def test_results_of_different_sweeps_are_refused(change, match):
    with pytest.raises(AgreementError, match=match):
        agreement(fake_result([[0.1, 0.2]]), fake_result([[0.1, 0.2]], **change))
    with pytest.raises(AgreementError, match="index"):
        agreement(fake_result([[0.1, 0.2]]), fake_result([[0.1], [0.2]]))
    with pytest.raises(AgreementError, match="all NaN"):
        agreement(fake_result([[math.nan]]), fake_result([[0.1]]))
    with pytest.raises(AgreementError, match="'rel_threshold'"):
        agreement(fake_result([[0.1]]), fake_result([[0.1]]), rel_threshold=0.0)


def test_report_on_a_tiny_model_compares_attribution_with_run_sweep():
    model = tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)
    pairs = random_pair_dataset(model, batch=3, n_pos=7, changed=(2, 5), seed=3)
    r = agreement_report(model, pairs, "heads", direction="noising", top_k=3)
    from attnlab.patching import run_sweep

    exact = run_sweep(model, pairs, "heads", direction="noising", progress=False)
    assert [p["exact"] for p in r.points] == pytest.approx(exact.values.flatten().tolist())
    assert r.n == 12 and r.spearman > 0.5 and r.baselines == pytest.approx(exact.baselines)
    assert all(f["rel_error"] > r.rel_threshold for f in r.failures)
