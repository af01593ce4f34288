"""ACDC-style pruning with exact batched passes on a tiny model."""

import math

import pytest

from attnlab.circuits import CircuitError, GraphRunner, acdc, circuit_metrics, corrupted_source

from ..conftest import random_pair_dataset


@pytest.fixture(scope="module")
def small():
    """A 2-layer model keeps the exhaustive search fast."""
    from attnlab.models import tiny_model

    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_head=8, seed=4)


@pytest.fixture(scope="module")
def pairs(small):
    return random_pair_dataset(small, batch=4, n_pos=6, changed=(1, 3), seed=2)


@pytest.fixture(scope="module")
def result(small, pairs):
    return acdc(small, pairs, 0.02, progress=False)


def test_acdc_keeps_only_edges_above_threshold_and_reports_the_exact_metric(small, pairs, result):
    runner = GraphRunner(small)
    g = runner.graph
    assert result.complete and 0 < result.circuit.n_edges < g.n_edges
    # the reported metric is the exact metric of the returned circuit
    again = circuit_metrics(runner, pairs, result.kept, source=corrupted_source(runner, pairs)).mean()
    assert float(again) == pytest.approx(result.metric, abs=1e-5)
    # every tested edge that was kept changed the metric by at least the threshold when tested
    for name, effect in result.circuit.edges:
        s, r = g.edge_index(name)
        if not math.isnan(float(result.effects[s, r])):
            assert abs(effect) >= 0.02
    # edges into the logits are tested first, against the full model: their effects are single-edge ablations
    r = g.receiver_index("logits")
    src = corrupted_source(runner, pairs)
    full = circuit_metrics(runner, pairs, g.valid, source=src).mean()
    for s in (0, 3, g.n_senders - 1):
        m = g.valid.clone()
        m[s, r] = False
        exact = circuit_metrics(runner, pairs, m, source=src).mean() - full
        assert float(result.effects[s, r]) == pytest.approx(float(exact), abs=1e-5)


def test_larger_threshold_gives_smaller_circuit(small, pairs, result):
    big = acdc(small, pairs, 0.2, progress=False)
    assert big.circuit.n_edges <= result.circuit.n_edges
    everything = acdc(small, pairs, 1e6, progress=False)
    assert everything.circuit.n_edges == 0


def test_test_budget_stops_early(small, pairs):
    partial = acdc(small, pairs, 0.02, max_tests=10, progress=False)
    assert not partial.complete and partial.n_tests <= 10
    assert partial.circuit.provenance["complete"] is False


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_threshold(small, pairs, bad):
    with pytest.raises(CircuitError, match="'threshold' must be a finite number >= 0"):
        acdc(small, pairs, bad, progress=False)


def test_unknown_receiver_and_bad_budget(small, pairs):
    with pytest.raises(CircuitError, match="not a receiver"):
        acdc(small, pairs, 0.1, receivers=["L9H0.q"], progress=False)
    with pytest.raises(CircuitError, match="'max_tests' must be"):
        acdc(small, pairs, 0.1, max_tests=0, progress=False)
