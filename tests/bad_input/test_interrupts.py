"""Ctrl-C during a sweep: the partial result is kept and returned, and the interrupt goes on: the next sweep in the
same script (or notebook cell) raises KeyboardInterrupt before any work, so a loop of sweeps stops."""

import pytest
import torch

from attnlab import interrupts
from attnlab.models import tiny_model
from attnlab.patching import run_sweep
from tests.conftest import random_pair_dataset


@pytest.fixture
def model():
    return tiny_model(n_layers=4, n_heads=2, seed=5)


@pytest.fixture
def pairs(model):
    return random_pair_dataset(model, batch=2, n_pos=5, changed=(1,), seed=2)


def interrupt_after(model, n_passes, monkeypatch):
    """Make ``model``'s next sweep raise KeyboardInterrupt (as Ctrl-C does) after ``n_passes`` patched passes."""
    real = model.run_many
    calls = []

    def run_many(specs):
        calls.append(1)
        for i, item in enumerate(real(specs)):
            if i == n_passes:
                monkeypatch.setattr(model, "run_many", real)  # one interrupt only
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(model, "run_many", run_many)
    return calls


def test_the_interrupted_sweep_returns_what_finished(model, pairs, monkeypatch):
    interrupt_after(model, 2, monkeypatch)
    with pytest.warns(RuntimeWarning, match="interrupted after 2 of 4 passes: returning the partial result"):
        result = run_sweep(model, pairs, "heads", progress=False)
    assert not result.complete and result.layers_done == [0, 1]
    assert result.values[:2].isfinite().all() and result.values[2:].isnan().all()
    assert result.settings["forward_passes_run"] == 4 and result.settings["forward_passes"] == 6


def test_a_loop_of_sweeps_stops_at_the_next_sweep(model, pairs, monkeypatch):
    interrupt_after(model, 1, monkeypatch)
    finished = []
    with pytest.raises(KeyboardInterrupt, match="the resid_pre sweep not started: the heads sweep was interrupted "
                                                "earlier in this script"):
        with pytest.warns(RuntimeWarning):
            for component in ("heads", "resid_pre", "mlp_out"):
                finished.append(run_sweep(model, pairs, component, progress=False))
    assert [r.component for r in finished] == ["heads"] and not finished[0].complete
    assert run_sweep(model, pairs, "mlp_out", progress=False).complete  # the interrupt is consumed once


def test_a_sweep_in_a_later_notebook_cell_starts_normally(model, pairs, monkeypatch):
    cell = {"n": 7}
    monkeypatch.setattr(interrupts, "_where", lambda: ("cell", cell["n"]))
    interrupt_after(model, 1, monkeypatch)
    with pytest.warns(RuntimeWarning, match="started in this cell"):
        assert not run_sweep(model, pairs, "heads", progress=False).complete
    cell["n"] = 8  # the user runs the next cell
    assert run_sweep(model, pairs, "heads", progress=False).complete


def test_interrupted_edge_scores_keep_the_batches_scored(model, pairs, monkeypatch):
    """EAP stopped during its gradient phase returns the mean over the batches already scored: equal to scoring
    those prompts alone."""
    from attnlab.circuits import eap_scores

    pairs = random_pair_dataset(model, batch=6, n_pos=5, changed=(1, 3), seed=7)
    first_two = eap_scores(model, pairs.subset(slice(0, 4)), method="eap", batch_size=2, progress=False)
    runner_class = type(model.edge_runner())
    real, calls = runner_class.run, []

    def run(self, *args, **kwargs):
        calls.append(kwargs.get("grad"))
        if calls.count(True) == 3:  # the third batch's gradient pass: two batches are scored
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(runner_class, "run", run)
    with pytest.warns(RuntimeWarning, match="EAP was interrupted after 4 of 6 prompts"):
        partial = eap_scores(model, pairs, method="eap", batch_size=2, progress=False)
    assert not partial.complete and partial.task["prompts_scored"] == 4
    torch.testing.assert_close(partial.scores, first_two.scores, atol=1e-6, rtol=1e-5)
    assert partial.clean_metric == pytest.approx(first_two.clean_metric, rel=1e-6)
    with pytest.raises(KeyboardInterrupt, match="EAP not started"):
        eap_scores(model, pairs, method="eap", batch_size=2, progress=False)
