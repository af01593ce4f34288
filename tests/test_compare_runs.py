"""Runs compared (attnlab.compare_runs, PatchingResult.difference, ExplorerController.compare) and the heatmap's
colour-scale options, on real sweeps of a tiny random model.

The difference is checked against ``a.values - b.values`` (normalised) and the per-prompt patched metric's means
(raw) of the results the engine computed; the scale limits against numpy's nearest-rank percentile.
"""

import math

import numpy as np
import pytest
import torch

import attnlab
from attnlab.compare_runs import RunComparisonError, compare_results, comparison_payloads
from attnlab.errors import ArgumentError
from attnlab.explorer import ExplorerController, ExplorerError, ExplorerTask
from attnlab.patching import run_sweep
from attnlab.render.views import scale_limit
from attnlab.results import PatchingResult
from attnlab.tasks.base import PatchingDataset
from tests.conftest import random_pair_dataset


def _relabelled(ds: PatchingDataset, prefix: str) -> PatchingDataset:
    """The same prompts with other position labels (as IOI's S1 against Colored Objects' C1)."""
    return PatchingDataset(task=f"{ds.task}-{prefix}", clean_tokens=ds.clean_tokens,
                           corrupted_tokens=ds.corrupted_tokens, answers=ds.answers,
                           positions={"END": ds.positions["END"]},
                           position_labels=[f"{prefix}{i}" for i in range(ds.n_pos)], metadata=ds.metadata)


@pytest.fixture(scope="module")
def runs(tiny):
    ds = random_pair_dataset(tiny, batch=4, n_pos=6, changed=(2,), seed=3)
    ds2 = random_pair_dataset(tiny, batch=4, n_pos=6, changed=(2, 4), seed=5)
    stop_after = iter(range(100))
    out = {
        "den": run_sweep(tiny, ds, "heads", direction="denoising", progress=False),
        "noi": run_sweep(tiny, ds, "heads", direction="noising", progress=False),
        "seed5": run_sweep(tiny, ds2, "heads", direction="denoising", progress=False),
        "kl": run_sweep(tiny, ds, "heads", direction="denoising", metric="kl_div", progress=False),
        "resid": run_sweep(tiny, ds, "resid_pre", direction="denoising", progress=False),
        "resid_other_labels": run_sweep(tiny, _relabelled(ds2, "c"), "resid_pre", direction="denoising",
                                        progress=False),
        "resid_short": run_sweep(tiny, random_pair_dataset(tiny, batch=4, n_pos=5, changed=(2,), seed=3),
                                 "resid_pre", progress=False),
        # interrupted after its first batched pass: only layer 0 is computed
        "partial": run_sweep(tiny, ds2, "heads", direction="denoising", progress=False,
                             should_stop=lambda: next(stop_after) >= 1),
    }
    assert not out["partial"].complete and torch.isnan(out["partial"].values).any()
    return out


def _same(x: torch.Tensor, y: torch.Tensor) -> None:
    torch.testing.assert_close(x, y, equal_nan=True, rtol=0, atol=1e-6)


def test_difference_is_a_minus_b_in_normalised_and_raw_units(runs):
    a, b = runs["den"], runs["noi"]
    diff = compare_results(a, b)
    _same(diff.values, a.values - b.values)
    assert diff.analysis == "patching_difference" and diff.dims == a.dims
    assert diff.direction == "denoising − noising"
    raw = a.difference(b, scores="raw")
    _same(raw.values, a.per_prompt.mean(dim=-1) - b.per_prompt.mean(dim=-1))
    assert raw.settings["comparison"]["scores"] == "raw"
    # both runs named, with their baselines
    cmp = diff.settings["comparison"]
    assert "denoising" in cmp["a"]["name"] and "noising" in cmp["b"]["name"]
    assert cmp["a"]["baselines"] == a.baselines and cmp["b"]["baselines"] == b.baselines
    assert "difference" in repr(diff)
    # the table and the heatmap show the same numbers
    df = diff.to_dataframe()
    assert np.allclose(df["value"].to_numpy(), diff.values.reshape(-1).numpy(), equal_nan=True)
    payload = diff.heatmap_payload()
    flat = [v for row in payload["values"] for v in row]
    assert np.allclose([np.nan if v is None else v for v in flat], diff.values.reshape(-1).numpy(), equal_nan=True)
    assert payload["title"].startswith("Difference of runs") and "A − B" in payload["value_label"]


def test_two_seeds_and_attnlab_entry_point(runs):
    a, b = runs["den"], runs["seed5"]
    diff = attnlab.compare_results(a, b, names=("seed 3", "seed 5"))
    _same(diff.values, a.values - b.values)
    assert diff.settings["comparison"]["a"]["name"] == "seed 3"


def test_cells_either_run_did_not_compute_are_nan(runs):
    a, b = runs["den"], runs["partial"]
    diff = compare_results(a, b)
    missing = torch.isnan(b.values)
    assert missing.any() and torch.isnan(diff.values[missing]).all()
    _same(diff.values[~missing], (a.values - b.values)[~missing])
    assert not diff.complete
    assert diff.layers_done == b.layers_done


def test_different_position_labels_are_compared_by_index_and_said(runs):
    a, b = runs["resid"], runs["resid_other_labels"]
    diff = compare_results(a, b)
    _same(diff.values, a.values - b.values)
    assert diff.labels["pos"] == [f"p{i}/c{i}" for i in range(6)]
    assert any("positions compared by index" in n and "p0↔c0" in n for n in diff.settings["comparison"]["notes"])
    assert "positions compared by index" in diff.heatmap_payload()["subtitle"]


def test_the_difference_saves_and_loads(runs, tmp_path):
    diff = compare_results(runs["den"], runs["partial"])
    path = diff.save(tmp_path / "diff.json")
    back = PatchingResult.load(path)
    _same(back.values, diff.values)
    assert back.settings["comparison"] == diff.settings["comparison"]
    assert back.heatmap_payload()["values"] == diff.heatmap_payload()["values"]


@pytest.mark.parametrize("pair,scores,words", [
    (("den", "resid"), "normalised", "different components"),
    (("resid", "resid_short"), "normalised", "grids differ"),
    (("den", "kl"), "raw", "different metrics"),
])
def test_bad_pairs_are_refused(runs, pair, scores, words):
    with pytest.raises(RunComparisonError) as err:
        compare_results(runs[pair[0]], runs[pair[1]], scores=scores)
    assert words in str(err.value)
    assert isinstance(err.value, ValueError)


def test_other_refusals_and_a_metric_note(runs):
    a = runs["den"]
    with pytest.raises(RunComparisonError, match="must be a PatchingResult"):
        compare_results(a, a.values)
    with pytest.raises(RunComparisonError, match="already a difference"):
        compare_results(compare_results(a, runs["noi"]), a)
    with pytest.raises(RunComparisonError, match="'scores' must be one of"):
        compare_results(a, runs["noi"], scores="percent")
    no_pp = PatchingResult(**{**a.__dict__, "per_prompt": None, "warnings": []})
    with pytest.raises(RunComparisonError, match="per-prompt"):
        compare_results(no_pp, a, scores="raw")
    # normalised scores of different metrics compare, with a note
    diff = compare_results(a, runs["kl"])
    _same(diff.values, a.values - runs["kl"].values)
    assert any("metrics differ" in n for n in diff.settings["comparison"]["notes"])


def test_comparison_payloads_share_one_scale(runs):
    a, b = runs["den"], runs["noi"]
    norm = comparison_payloads(a, b)
    assert {norm[k]["scale"] for k in ("a", "b", "diff")} == {"fixed"}
    assert {norm[k]["zmax"] for k in ("a", "b", "diff")} == {1.0}
    raw = comparison_payloads(a, b, scores="raw")
    three = torch.stack([a.per_prompt.mean(-1), b.per_prompt.mean(-1),
                         a.per_prompt.mean(-1) - b.per_prompt.mean(-1)])
    expected = float(three.abs().nan_to_num(0).max())
    for k in ("a", "b", "diff"):
        assert raw[k]["scale"] == "symmetric" and raw[k]["zmax"] == pytest.approx(expected, rel=1e-6)
    assert np.allclose(np.array(raw["a"]["values"], dtype=float), a.per_prompt.mean(-1).numpy(), atol=1e-6)


# -- colour scales (payload level) ---------------------------------------------------------------------------------

def test_default_scales_complete_partial_and_difference(runs):
    done = runs["den"].heatmap_payload()
    assert done["scale"] == "symmetric" and done["fixed_range"] == 1.0
    assert done["zmax"] == pytest.approx(float(runs["den"].values.abs().max()), rel=1e-6)
    # an interrupted run is not scaled to its few finished cells: normalised scores default to the fixed ±1
    part = runs["partial"].heatmap_payload()
    assert part["complete"] is False and part["scale"] == "fixed" and part["zmax"] == 1.0
    finished = runs["partial"].values[~torch.isnan(runs["partial"].values)]
    assert float(finished.abs().max()) != 1.0
    assert compare_results(runs["den"], runs["noi"]).heatmap_payload()["scale"] == "fixed"


@pytest.mark.parametrize("p", [50.0, 90.0, 99.0, 100.0])
def test_percentile_scale_is_nearest_rank(runs, p):
    r = runs["resid"]
    payload = r.heatmap_payload(scale="percentile", percentile=p)
    finite = r.values[~torch.isnan(r.values)].abs().numpy()
    q = float(np.percentile(finite, p, method="inverted_cdf"))
    assert payload["zmax"] == pytest.approx(q if q > 0 else 1.0, rel=1e-6)  # an all-zero scale falls back to 1
    assert payload["clip_percentile"] == p


def test_scale_options_and_bad_scales(runs):
    r = runs["den"]
    assert r.heatmap_payload(scale="fixed", zmax=0.25)["zmax"] == 0.25
    assert r.heatmap_payload(scale="fixed")["zmax"] == 1.0
    assert scale_limit([[None, float("nan")]], "symmetric") == 1.0
    assert scale_limit([[0.0, -0.5], [0.25, None]], "symmetric") == 0.5
    with pytest.raises(ArgumentError, match="'scale' must be one of"):
        r.heatmap_payload(scale="log")
    with pytest.raises(ArgumentError, match="percentile"):
        r.heatmap_payload(scale="percentile", percentile=0)


# -- the Explorer's comparison ---------------------------------------------------------------------------------------

def _task(model, n, *, seed=0, corruption="one"):
    return random_pair_dataset(model, batch=n, n_pos=6, changed=(2,) if corruption == "one" else (2, 4), seed=seed)


RANDOM = ExplorerTask(name="random6", title="random pairs", build=_task, corruptions=("one", "two"))


def test_explorer_compare_two_runs_and_refuse_a_bad_pair(tiny):
    ctl = ExplorerController(tiny, RANDOM, n_prompts=3, component="heads")
    seen = []
    ctl.on_change(seen.append)
    first = ctl.run().result
    ctl.set_control("direction", "noising")
    second = ctl.run().result
    diff = ctl.compare(0, 1)
    _same(diff.values, first.values - second.values)
    assert "comparison" in seen
    shown = ctl.comparison
    assert (shown["a_index"], shown["b_index"]) == (0, 1) and "#0" in shown["names"][0]
    flat = np.array([[np.nan if v is None else v for v in row] for row in shown["diff"]["values"]])
    assert np.allclose(flat, diff.values.numpy(), equal_nan=True)
    ctl.set_control("component", "resid_pre")
    ctl.run()
    with pytest.raises(ExplorerError, match="different components"):
        ctl.compare(0, 2)
    assert "different components" in ctl.comparison["error"]
    with pytest.raises(ExplorerError, match="no run 7"):
        ctl.compare(0, 7)
    ctl.close_comparison()
    assert ctl.comparison is None


def test_difference_of_nan_free_results_has_no_nan(runs):
    diff = compare_results(runs["den"], runs["seed5"])
    assert not math.isnan(float(diff.values.sum()))


def test_the_explorer_widget_compares_from_python_and_from_its_messages(tiny):
    from attnlab.explorer.widget import Explorer

    ex = Explorer(tiny, RANDOM, n_prompts=3, component="heads")
    ex.run()
    ex.set_control("seed", 2)
    ex.run()
    diff = ex.compare(1, 0, scores="raw")
    a, b = ex.controller.runs[1].result, ex.controller.runs[0].result
    _same(diff.values, a.per_prompt.mean(-1) - b.per_prompt.mean(-1))
    assert ex.comparison["scores"] == "raw" and (ex.comparison["a_index"], ex.comparison["b_index"]) == (1, 0)
    ex._on_message(ex, {"type": "compare", "a": 0, "b": 1, "scores": "normalised"}, [])
    flat = np.array([[np.nan if v is None else v for v in row] for row in ex.comparison["diff"]["values"]])
    assert np.allclose(flat, (b.values - a.values).numpy(), equal_nan=True)
    ex._on_message(ex, {"type": "compare", "a": 0, "b": 9}, [])
    assert "no run 9" in ex.comparison["error"] and "no run 9" in ex.message
    ex._on_message(ex, {"type": "close_compare"}, [])
    assert ex.comparison == {}
