"""The warning where clean and corrupted baselines are too close for normalised scores to mean much
(attnlab.results.baseline_check): its statistic against an independent computation (the statistics module), the
per-prompt baselines a real sweep records, and the warning saved, reloaded and carried to the heatmap and the
Explorer's baselines line."""

import statistics

import pytest
import torch

from attnlab.explorer import ExplorerController, ExplorerTask
from attnlab.patching import run_sweep
from attnlab.results import BASELINE_MIN_SEPARATION, PatchingResult, baseline_check
from tests.conftest import random_pair_dataset


def _reference(clean, corrupted):
    """Cohen's d with the pooled sample standard deviation, computed with the statistics module."""
    gap = statistics.fmean(clean) - statistics.fmean(corrupted)
    spread = ((statistics.variance(clean) + statistics.variance(corrupted)) / 2) ** 0.5
    return gap, spread, abs(gap) / spread


@pytest.mark.parametrize("clean,corrupted", [
    ([1.9, 0.2, 3.1, -0.8, 2.5, 0.4], [0.9, 0.1, 1.8, -1.2, 1.3, 0.3]),   # small gap, large spread: warns
    ([4.1, 3.8, 4.4, 3.9], [0.2, -0.1, 0.3, 0.0]),                        # well separated: fine
])
def test_separation_matches_an_independent_computation(clean, corrupted):
    check = baseline_check(clean, corrupted)
    gap, spread, sep = _reference(clean, corrupted)
    assert check["gap"] == pytest.approx(gap) and check["spread"] == pytest.approx(spread)
    assert check["separation"] == pytest.approx(sep)
    assert check["ok"] is (sep >= BASELINE_MIN_SEPARATION)
    assert check["n_prompts"] == len(clean) and check["min_separation"] == BASELINE_MIN_SEPARATION


def test_one_prompt_or_no_spread_cannot_be_judged():
    assert baseline_check([2.0], [1.0]) == {"gap": 1.0, "spread": None, "separation": None, "n_prompts": 1,
                                             "min_separation": BASELINE_MIN_SEPARATION, "ok": True}
    assert baseline_check([2.0, 2.0], [1.0, 1.0])["ok"] is True
    assert baseline_check([2.0, 1.0], [1.0, 2.0], min_separation=0.5)["ok"] is False


@pytest.fixture(scope="module")
def sweep(tiny):
    ds = random_pair_dataset(tiny, batch=6, n_pos=6, changed=(2,), seed=11)
    return tiny, ds, run_sweep(tiny, ds, "heads", progress=False)


def test_a_sweep_records_per_prompt_baselines_and_warns_exactly_when_the_check_fails(sweep):
    model, ds, result = sweep
    bpp = result.baselines_per_prompt
    # independent per-prompt logit difference from the backend's own forward pass at END
    for key, tokens in (("clean", ds.clean_tokens), ("corrupted", ds.corrupted_tokens)):
        logits = model.run(tokens, logits_at=ds.end).logits
        logits = logits.reshape(len(ds), -1)
        rows = torch.arange(len(ds))
        ld = logits[rows, ds.answers[:, 0]] - logits[rows, ds.answers[:, 1]]
        assert bpp[key] == pytest.approx(ld.tolist(), abs=1e-4)
        assert statistics.fmean(bpp[key]) == pytest.approx(result.baselines[key], abs=1e-5)
    _, _, sep = _reference(bpp["clean"], bpp["corrupted"])
    assert bool(result.warnings) is (sep < BASELINE_MIN_SEPARATION)


def _close_result(result: PatchingResult) -> PatchingResult:
    """The sweep's result with per-prompt baselines whose gap is small against their spread."""
    fields = {**result.__dict__, "warnings": None,
              "baselines_per_prompt": {"clean": [1.9, 0.2, 3.1, -0.8, 2.5, 0.4],
                                       "corrupted": [0.9, 0.1, 1.8, -1.2, 1.3, 0.3]}}
    return PatchingResult(**fields)


def test_the_warning_is_saved_reloaded_and_shown(sweep, tmp_path):
    close = _close_result(sweep[2])
    assert [w["kind"] for w in close.warnings] == ["baselines_close"]
    w = close.warnings[0]
    _, _, sep = _reference(close.baselines_per_prompt["clean"], close.baselines_per_prompt["corrupted"])
    assert w["separation"] == pytest.approx(sep) and f"{sep:.2f} times" in w["message"]
    assert "logit difference" in w["message"]
    back = PatchingResult.load(close.save(tmp_path / "close.json"))
    assert back.warnings == close.warnings and back.baselines_per_prompt == close.baselines_per_prompt
    payload = back.heatmap_payload()
    assert payload["warnings"] == [w["message"]]
    assert "warning: clean and corrupted baselines are close" in __import__(
        "attnlab.render.views", fromlist=["static_heatmap_html"]).static_heatmap_html(payload)
    assert "baselines_close" in repr(back)
    # a file written before warnings existed loads with none (and nothing to compute them from)
    old = close.to_dict()
    del old["warnings"], old["baselines_per_prompt"]
    (tmp_path / "old.json").write_text(__import__("json").dumps(old))
    assert PatchingResult.load(tmp_path / "old.json").warnings == []


def test_the_explorer_shows_the_warning_next_to_the_baselines(tiny):
    pytest.importorskip("anywidget")
    from attnlab.explorer.widget import Explorer

    def build(model, n, *, seed=0, corruption="one"):
        return random_pair_dataset(model, batch=n, n_pos=6, changed=(2,), seed=seed)

    task = ExplorerTask(name="random-w", title="random pairs", build=build, corruptions=("one",))
    ex = Explorer(tiny, task, n_prompts=6, seed=11, component="heads")
    ex.run()
    assert ex.baselines["warnings"] == [w["message"] for w in ex.result.warnings]
    ex.controller.runs[-1].result = _close_result(ex.result)
    ex.show_run(0)
    assert ex.baselines["warnings"] and ex.baselines["warnings"][0].startswith("clean and corrupted baselines")
    assert ex.heatmap["warnings"] == ex.baselines["warnings"]
