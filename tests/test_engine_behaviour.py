"""Engine behaviour beyond parity: early errors, interruption, memory budget, result files."""

import json

import pytest
import torch

from attnlab.backends.base import Backend
from attnlab.errors import ArgumentError, AttnlabError, DatasetError, MetricError, SiteError
from attnlab.patching import patch_heads, run_sweep
from attnlab.results import PatchingResult
from attnlab.tasks.base import PatchingDataset

from .conftest import random_pair_dataset


class CountingModel:
    """Wraps a backend, counting runs and optionally raising KeyboardInterrupt on the n-th patched pass."""

    def __init__(self, model, interrupt_at=None):
        self._model, self.calls, self.interrupt_at = model, 0, interrupt_at

    def __getattr__(self, name):
        return getattr(self._model, name)

    run_many = Backend.run_many  # the default pass loop, calling this wrapper's run

    def run(self, *args, **kwargs):
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self._model.run(*args, **kwargs)


def test_equal_baselines_fail_before_the_sweep(tiny):
    ds = random_pair_dataset(tiny, changed=(3,))
    same = PatchingDataset(task="t", clean_tokens=ds.clean_tokens, corrupted_tokens=ds.clean_tokens.clone(),
                           answers=ds.answers, positions=ds.positions, position_labels=ds.position_labels)
    counting = CountingModel(tiny)
    with pytest.raises(MetricError, match="baselines are equal"):
        run_sweep(counting, same, "heads", progress=False)
    assert counting.calls == 2  # the two baseline runs, no patched pass


@pytest.mark.parametrize("kwargs,match", [
    ({"layers": [3]}, r"'layers' must be in \[0, 3\) \(got \[3\]\)"),
    ({"layers": [-1]}, r"'layers' must be in \[0, 3\)"),
    ({"heads": [4]}, r"'heads' must be in \[0, 4\) \(got \[4\]\)"),
    ({"layers": []}, "must not be empty"),
    ({"direction": "sideways"}, "'direction' must be 'denoising' or 'noising'"),
])
def test_out_of_range_arguments(tiny, kwargs, match):
    ds = random_pair_dataset(tiny)
    counting = CountingModel(tiny)
    with pytest.raises((SiteError, MetricError), match=match):
        run_sweep(counting, ds, "heads", progress=False, **kwargs)
    assert counting.calls == 0  # rejected before any forward pass


def test_unknown_component_and_positions(tiny):
    ds = random_pair_dataset(tiny, n_pos=6)
    with pytest.raises(SiteError, match="'component' must be one of"):
        run_sweep(tiny, ds, "neurons", progress=False)
    with pytest.raises(SiteError, match=r"'positions' must be in \[0, 6\) \(got \[6\]\)"):
        run_sweep(tiny, ds, "resid_pre", positions=[6], progress=False)


def test_dataset_that_does_not_fit_the_model(tiny):
    ds = random_pair_dataset(tiny, n_pos=40)  # tiny model context is 32
    with pytest.raises(DatasetError, match="context of 32"):
        run_sweep(tiny, ds, "heads", progress=False)


@pytest.mark.parametrize("change,match", [
    (lambda d: {**d, "clean_tokens": torch.zeros(0, 5, dtype=torch.long),
                "corrupted_tokens": torch.zeros(0, 5, dtype=torch.long)}, "is empty"),
    (lambda d: {**d, "corrupted_tokens": d["corrupted_tokens"][:, :-1]}, "same shape"),
    (lambda d: {**d, "positions": {"END": torch.full((4,), 99)}}, r"positions\['END'\] must be in \[0, 8\)"),
    (lambda d: {**d, "positions": {"S2": torch.zeros(4, dtype=torch.long)}}, "must include 'END'"),
    (lambda d: {**d, "answers": d["answers"][:, :1]}, r"answers must have shape \(4, 2\)"),
    (lambda d: {**d, "position_labels": ["x"]}, "position_labels must have 8 entries"),
])
def test_malformed_datasets(tiny, change, match):
    ds = random_pair_dataset(tiny)
    fields = dict(task="t", clean_tokens=ds.clean_tokens, corrupted_tokens=ds.corrupted_tokens, answers=ds.answers,
                  positions=ds.positions, position_labels=ds.position_labels)
    with pytest.raises(DatasetError, match=match):
        PatchingDataset(**change(fields))


def test_interrupt_keeps_finished_layers(tiny):
    ds = random_pair_dataset(tiny, changed=(2,))
    full = run_sweep(tiny, ds, "heads", progress=False, memory_budget_mb=0.02)
    per_layer = full.settings["forward_passes"] - 2
    assert per_layer >= 3
    # runs: 2 baselines, then patched passes; interrupt during layer 2's passes
    counting = CountingModel(tiny, interrupt_at=2 + 2 * (per_layer // 3) + 1)
    with pytest.warns(RuntimeWarning, match="interrupted after 8 of 12 passes"):
        partial = run_sweep(counting, ds, "heads", progress=False, memory_budget_mb=0.02)
    assert not partial.complete
    assert partial.layers_done == [0, 1]
    torch.testing.assert_close(partial.values[:2], full.values[:2], atol=0, rtol=0)
    assert torch.isnan(partial.values[2]).any()
    assert "INCOMPLETE" in repr(partial)


def test_memory_budget_is_reported(tiny):
    ds = random_pair_dataset(tiny)
    r = patch_heads(tiny, ds, progress=False, memory_budget_mb=0.01)
    assert r.settings["memory_budget_mb"] == 0.01 and r.settings["variants_per_pass"] >= 1
    with pytest.raises(ArgumentError, match="memory_budget_mb"):
        patch_heads(tiny, ds, progress=False, memory_budget_mb=0)


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    ds = random_pair_dataset(tiny, changed=(2,))
    for component in ("heads", "heads_by_pos", "resid_pre"):
        r = run_sweep(tiny, ds, component, direction="noising", progress=False)
        back = PatchingResult.load(r.save(tmp_path / f"{component}.json"))
        assert torch.equal(back.values, r.values) and back.values.dtype == torch.float32
        assert torch.equal(back.per_prompt, r.per_prompt)
        assert back.dims == r.dims and back.labels == r.labels and back.index == r.index
        assert back.baselines == r.baselines and back.settings == r.settings and back.task == r.task
        assert back.to_dataframe().equals(r.to_dataframe())


def test_round_trip_keeps_nan_of_interrupted_sweeps(tiny, tmp_path):
    ds = random_pair_dataset(tiny, changed=(2,))
    with pytest.warns(RuntimeWarning, match="returning the partial result"):
        partial = run_sweep(CountingModel(tiny, interrupt_at=4), ds, "heads", progress=False, memory_budget_mb=0.02)
    back = PatchingResult.load(partial.save(tmp_path / "p.json"))
    assert torch.equal(torch.isnan(back.values), torch.isnan(partial.values))
    assert torch.equal(back.values.nan_to_num(7.0), partial.values.nan_to_num(7.0))
    assert back.complete is False


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(AttnlabError, match="not an attnlab result"):
        PatchingResult.load(tmp_path / "x.json")


def test_top_and_dataframe(tiny):
    r = run_sweep(tiny, random_pair_dataset(tiny, changed=(2,)), "heads", progress=False)
    top = r.top(3)
    flat = r.values.flatten().abs()
    assert top["value"].abs().tolist() == pytest.approx(flat.sort(descending=True).values[:3].tolist())
    best = int(flat.argmax())
    assert top["component"][0] == f"L{best // 4}H{best % 4}"
    df = r.to_dataframe()
    assert len(df) == 12 and set(df.columns) >= {"layer", "head", "value", "patched_logit_diff"}
