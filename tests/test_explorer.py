"""The Explorer's controller and widget, driven from Python (no browser).

Numbers the detail panel shows are checked against TransformerLens computations written here: zero and mean ablation
with ``run_with_hooks``, direct logit attribution with ``ActivationCache.stack_head_results`` and
``apply_ln_to_stack``, the logit lens at the last layer against the model's own logits.
"""

import inspect
import json
import math

import pytest
import torch

from attnlab.errors import DatasetError, TokenizationError
from attnlab.explorer import ExplorerController, ExplorerError, ExplorerTask, Selection, TaskError
from attnlab.explorer.details import head_detail
from attnlab.patching import run_sweep
from attnlab.results import PatchingResult
from attnlab.tasks.base import PatchingDataset
from tests.conftest import random_pair_dataset


def _random_task(model, n, *, seed=0, corruption="one"):
    ds = random_pair_dataset(model, batch=n, n_pos=8, changed=(4,) if corruption == "one" else (2, 5), seed=seed)
    positions = {**ds.positions, "X": torch.full((n,), 4)}
    return PatchingDataset(task="random", clean_tokens=ds.clean_tokens, corrupted_tokens=ds.corrupted_tokens,
                           answers=ds.answers, positions=positions, position_labels=ds.position_labels,
                           metadata=ds.metadata)


RANDOM = ExplorerTask(name="random", title="random pairs", build=_random_task, corruptions=("one", "two"))


@pytest.fixture
def ctl(tiny):
    return ExplorerController(tiny, RANDOM, n_prompts=4, component="heads")


# -- controls -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [
    ("n_prompts", 0), ("n_prompts", -3), ("n_prompts", 513), ("n_prompts", "8"), ("n_prompts", True),
    ("seed", -1), ("seed", 1.5), ("corruption", "abc"), ("component", "attn"), ("direction", "forward"),
    ("task", "nope"), ("colour", 1), ("metric", "nope"), ("metric", 3),
])
def test_bad_control_values_are_rejected_and_the_old_value_kept(ctl, name, value):
    before = dict(ctl.controls)
    with pytest.raises(ExplorerError) as err:
        ctl.set_control(name, value)
    assert repr(value) in str(err.value) or name in str(err.value)
    assert ctl.controls == before


def test_every_control_sets_and_the_run_uses_it(ctl, tiny):
    seen = []
    ctl.on_change(seen.append)
    for component in ("resid_pre", "attn_out", "mlp_out", "heads", "heads_by_pos"):
        for direction in ("denoising", "noising"):
            ctl.set_control("component", component)
            ctl.set_control("direction", direction)
            ctl.set_control("n_prompts", 3)
            ctl.set_control("seed", 7)
            ctl.set_control("corruption", "two")
            run = ctl.run()
            expected = run_sweep(tiny, _random_task(tiny, 3, seed=7, corruption="two"), component,
                                 direction=direction, progress=False)
            assert run.result.component == component and run.result.direction == direction
            torch.testing.assert_close(run.result.values, expected.values, equal_nan=True)
            assert run.controls == {**ctl.controls}
    assert {"controls", "status", "progress", "result", "history"} <= set(seen)
    assert len(ctl.history()) == 10 and ctl.status == "done"


def test_switching_task_resets_an_unsupported_corruption(tiny):
    ctl = ExplorerController(tiny, RANDOM, n_prompts=2)
    other = ExplorerTask(name="other", title="other", build=_random_task, corruptions=("two",))
    ctl._tasks["other"] = other
    ctl.set_control("corruption", "one")
    ctl.set_control("task", "other")
    assert ctl.controls["corruption"] == "two"
    assert {t["value"] for t in ctl.options()["tasks"]} >= {"random", "other", "ioi"}


def test_unknown_task_name_lists_the_registered_ones(tiny):
    with pytest.raises(TaskError, match="registered tasks: .*'ioi'"):
        ExplorerController(tiny, "colour-by-numbers")


# -- runs: errors, cancel, history ------------------------------------------------------------------------------

def test_run_with_no_prompts_fails_before_work_and_keeps_history(tiny):
    empty = ExplorerTask(name="empty", title="empty", corruptions=("one",),
                         build=lambda model, n, seed=0, corruption="one": _random_task(model, 0))
    ctl = ExplorerController(tiny, empty)
    with pytest.raises(DatasetError, match="empty"):
        ctl.run()
    assert ctl.status == "error" and "DatasetError" in ctl.message
    assert ctl.history() == [] and ctl.result is None and not ctl.running


def test_cancel_mid_sweep_keeps_the_finished_rows(tiny):
    ctl = ExplorerController(tiny, RANDOM, n_prompts=4, component="heads_by_pos", memory_budget_mb=0.01)

    def cancel_after_first_pass(what):
        if what == "progress" and ctl.progress[0] == 1:
            ctl.cancel()

    ctl.on_change(cancel_after_first_pass)
    thread = ctl.run_in_background()
    thread.join(60)
    run = ctl.runs[-1]
    assert ctl.status == "cancelled" and "finished cells are kept" in ctl.message
    assert not run.result.complete and run.cache is None
    full = run_sweep(tiny, _random_task(tiny, 4), "heads_by_pos", progress=False)
    done = ~torch.isnan(run.result.values)
    assert 0 < int(done.sum()) < done.numel()
    torch.testing.assert_close(run.result.values[done], full.values[done])
    # selecting a cell of the cancelled run says why there is no detail
    ctl.select({"row": 0, "col": 4})
    assert ctl.detail["kind"] == "unavailable" and "cancelled" in ctl.detail["message"]


def test_a_second_run_while_one_runs_is_refused(ctl):
    ctl._lock.acquire()
    try:
        with pytest.raises(ExplorerError, match="already in progress"):
            ctl.run()
        with pytest.raises(ExplorerError, match="already in progress"):
            ctl.run_in_background()
    finally:
        ctl._lock.release()


def test_history_reshow_and_export_round_trip(ctl, tmp_path):
    first = ctl.run()
    ctl.set_control("component", "resid_pre")
    ctl.run()
    assert [h["index"] for h in ctl.history()] == [0, 1] and ctl.current == 1
    ctl.select("L1 @ p4")
    ctl.show_run(0)
    assert ctl.result is first.result and ctl.selected is None and ctl.detail is None
    path = ctl.export_run(0, tmp_path / "run0.json")
    loaded = PatchingResult.load(path)
    torch.testing.assert_close(loaded.values, first.result.values)
    assert loaded.settings["explorer_controls"]["component"] == "heads"
    assert json.loads(ctl.export_json(1))["component"] == "resid_pre"
    for bad in (2, -1, "0"):
        with pytest.raises(ExplorerError, match="no run"):
            ctl.show_run(bad)


# -- selection and details --------------------------------------------------------------------------------------

def test_select_by_name_pair_cell_and_selection(ctl):
    with pytest.raises(ExplorerError, match="run a sweep first"):
        ctl.select("L1H2")
    ctl.run()
    assert ctl.select("L1H2") == "L1H2"
    assert ctl.select((2, 3)) == Selection(2, 3, None, "L2H3")
    assert ctl.select({"row": 0, "col": 1}).name == "L0H1"
    assert ctl.select(Selection(1, 0, None, "L1H0")) == "L1H0"
    assert ctl.detail["name"] == "L1H0"
    for bad in ("L9H9", "L1H2 @ END", (1,), 3.0):
        with pytest.raises(ExplorerError):
            ctl.select(bad)
    assert ctl.select(None) is None and ctl.detail is None


def test_heads_by_position_selection_maps_rows_and_defaults_to_end(ctl):
    ctl.set_control("component", "heads_by_pos")
    ctl.run()
    assert ctl.select({"row": 5, "col": 4}).name == "L1H1 @ p4"  # row = layer * n_heads + head
    assert ctl.select("L1H1").name == "L1H1 @ p7"  # no END label here: the last position
    assert ctl.detail["selected_pos"] == 7


def _ld(logits, answers, end):
    b = torch.arange(len(answers))
    last = logits[b, end]
    return last[b, answers[:, 0]] - last[b, answers[:, 1]]


def test_head_detail_matches_transformer_lens(ctl, tiny):
    ctl.run()
    layer, head = 1, 2
    ctl.select((layer, head))
    d = ctl.detail
    ds = ctl.runs[-1].cache.dataset
    bridge = tiny.bridge
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ds.clean_tokens)
        _, corrupted_cache = bridge.run_with_cache(ds.corrupted_tokens)
    name = f"blocks.{layer}.attn.hook_z"
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    # attention: the shown prompt's pattern and the END -> X average
    torch.testing.assert_close(torch.tensor(d["pattern"]), pattern[0])
    end_x = next(e for e in d["end_attention"] if e["position"] == "X")
    assert end_x["mean"] == pytest.approx(float(pattern[:, 7, 4].mean()), abs=1e-6)
    assert len(end_x["per_prompt"]) == 4
    # ablation, recomputed with TransformerLens hooks
    clean_ld = _ld(logits, ds.answers, ds.end)
    mean_z = corrupted_cache[name].mean(0)

    def zero(z, hook):
        z[:, :, head] = 0
        return z

    def mean(z, hook):
        z[:, :, head] = mean_z[:, head]
        return z

    with torch.no_grad():
        zero_ld = _ld(bridge.run_with_hooks(ds.clean_tokens, fwd_hooks=[(name, zero)]), ds.answers, ds.end)
        mean_ld = _ld(bridge.run_with_hooks(ds.clean_tokens, fwd_hooks=[(name, mean)]), ds.answers, ds.end)
    torch.testing.assert_close(torch.tensor(d["ablation"]["zero"]["change"]["per_prompt"]), zero_ld - clean_ld,
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(d["ablation"]["mean"]["change"]["per_prompt"]), mean_ld - clean_ld,
                               atol=1e-4, rtol=1e-4)
    # direct logit attribution, with TransformerLens's own head stack and final-norm scaling
    stack, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)[labels.index(f"L{layer}H{head}")]
    w_u = bridge.W_U.detach()
    norm_w = bridge.ln_final.original_component.weight.detach()
    direction = (w_u[:, ds.answers[:, 0]] - w_u[:, ds.answers[:, 1]]).T  # [batch, d_model]
    expected = ((scaled * norm_w) * direction).sum(-1)
    torch.testing.assert_close(torch.tensor(d["dla"]["difference"]["per_prompt"]), expected, atol=1e-4, rtol=1e-4)
    assert d["clean_logit_diff"]["mean"] == pytest.approx(float(clean_ld.mean()), abs=1e-4)
    sem = float(clean_ld.std() / math.sqrt(4))
    assert d["clean_logit_diff"]["sem"] == pytest.approx(sem, abs=1e-5)


def test_head_ablation_panel_measures_the_chosen_metric(ctl, tiny):
    """With metric "prob", the mean and zero ablation panel shows the answer's probability at END, recomputed here
    with TransformerLens hooks; DLA and the clean logit difference stay in logits."""
    ctl.run()
    layer, head = 2, 3
    cache = ctl.runs[-1].cache.with_metric("prob")
    d = head_detail(cache, layer, head)
    ds = cache.dataset
    b = torch.arange(len(ds))
    name = f"blocks.{layer}.attn.hook_z"

    def zero(z, hook):
        z[:, :, head] = 0
        return z

    with torch.no_grad():
        clean = tiny.bridge(ds.clean_tokens)[b, ds.end].softmax(-1)[b, ds.answers[:, 0]]
        zeroed = tiny.bridge.run_with_hooks(ds.clean_tokens, fwd_hooks=[(name, zero)])[b, ds.end]
    zeroed = zeroed.softmax(-1)[b, ds.answers[:, 0]]
    assert (zeroed - clean).abs().max() > 1e-6, "zero ablation changes nothing: the test would prove nothing"
    torch.testing.assert_close(torch.tensor(d["ablation"]["zero"]["value"]["per_prompt"]), zeroed, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(d["ablation"]["zero"]["change"]["per_prompt"]), zeroed - clean,
                               atol=1e-5, rtol=0)
    assert "logit_diff" not in d["ablation"]["zero"]
    assert d["ablation"]["metric"] == {"name": "prob", "label": "probability of the answer"}
    assert d["clean_metric"]["mean"] == pytest.approx(float(clean.mean()), abs=1e-5)
    default = head_detail(ctl.runs[-1].cache, layer, head)
    assert d["dla"] == default["dla"] and d["clean_logit_diff"] == default["clean_logit_diff"]
    assert default["ablation"]["zero"]["logit_diff"] == default["ablation"]["zero"]["value"]


def test_metric_control_and_menu(tiny):
    def top_logit(logits, answers, reference):
        return logits.max(-1).values

    ctl = ExplorerController(tiny, RANDOM, n_prompts=2, metric="kl")
    assert ctl.controls["metric"] == "kl_div" and ctl.metric.needs_reference
    ctl.set_control("metric", top_logit)
    assert ctl.controls["metric"] == "top_logit"
    menu = {m["value"] for m in ctl.options()["metrics"]}
    assert menu == {"logit_diff", "kl_div", "prob", "logprob", "accuracy", "pairwise_accuracy", "top_logit"}
    ctl.set_control("metric", "prob")
    assert ctl.metric.name == "prob"


@pytest.mark.skipif("metric" not in inspect.signature(run_sweep).parameters,
                    reason="run_sweep has no metric= yet (lands with the patching work)")
def test_a_run_with_another_metric_sweeps_and_ablates_with_it(tiny):
    ctl = ExplorerController(tiny, RANDOM, n_prompts=3, component="heads", metric="logprob")
    run = ctl.run()
    expected = run_sweep(tiny, _random_task(tiny, 3), "heads", progress=False, metric="logprob")
    torch.testing.assert_close(run.result.values, expected.values, equal_nan=True)
    assert run.cache.metric.name == "logprob" and "logprob" in run.label()
    ctl.select("L1H0")
    assert ctl.detail["ablation"]["metric"]["name"] == "logprob"


def test_prompt_choice_changes_the_pattern_and_is_checked(ctl):
    ctl.run()
    ctl.select("L2H1")
    first = ctl.detail["pattern"]
    ctl.set_detail_prompt(3)
    assert ctl.detail["prompt"]["index"] == 3 and ctl.detail["pattern"] != first
    with pytest.raises(ExplorerError, match="prompt"):
        ctl.set_detail_prompt(4)


def test_logit_lens_after_the_last_mlp_equals_the_model_logits(ctl, tiny):
    ctl.set_control("component", "mlp_out")
    ctl.run()
    ctl.select("L2 @ p7")  # mlp_out of the last layer: the lens reads the final residual stream
    d = ctl.detail
    assert d["lens_at"] == "final 3"
    ds = ctl.runs[-1].cache.dataset
    with torch.no_grad():
        logits = tiny.bridge(ds.clean_tokens)[0, 7]
    top = torch.topk(logits, 10)
    assert [t["token"] for t in d["logit_lens"]["top"]] == [str(int(i)) for i in top.indices]
    torch.testing.assert_close(torch.tensor([t["logit"] for t in d["logit_lens"]["top"]]), top.values,
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(d["effect"]["per_prompt"]),
                               ctl.result.per_prompt[2, 7])


# -- the widget without a browser ------------------------------------------------------------------------------

def test_widget_mirrors_the_controller_and_answers_messages(tiny):
    from attnlab.explorer.widget import FALLBACK_NOTE, Explorer

    ex = Explorer(tiny, RANDOM, n_prompts=2, component="heads")
    assert "export default" in ex._esm or "as default" in ex._esm
    data, _ = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data and FALLBACK_NOTE in data["text/html"]
    ex.run()
    assert ex.heatmap == dict(ex.result.heatmap_payload()) and ex.status == "done"
    assert len(ex.run_history) == 1 and ex.current_run == 0
    ex._on_message(ex, {"type": "select", "row": 1, "col": 2}, [])
    assert ex.selected == "L1H2" and ex.selected_name == "L1H2" and ex.selected_cell == [1, 2]
    assert ex.detail_payload["name"] == "L1H2"
    ex.selected = "L2H0"  # from Python: the synced state follows
    assert ex.selected_name == "L2H0" and ex.selected_cell == [2, 0] and ex.detail_payload["name"] == "L2H0"
    ex._on_message(ex, {"type": "controls", "controls": {**ex.controls, "n_prompts": 0}}, [])
    assert "n_prompts" in ex.message and ex.controls["n_prompts"] == 2
    sent = []
    ex.send = sent.append
    ex._on_message(ex, {"type": "export", "index": 0}, [])
    assert sent[0]["filename"] == "attnlab-run-0.json" and json.loads(sent[0]["content"])["component"] == "heads"
    ex._on_message(ex, {"type": "show_run", "index": 5}, [])
    assert "no run 5" in ex.message
    assert "<table" in ex._repr_mimebundle_()[0]["text/html"]


def test_static_fallback_escapes_html_in_names():
    from attnlab.explorer.widget import Explorer
    from attnlab.models import tiny_model

    model = tiny_model(n_layers=2, n_heads=2, d_model=32, d_vocab=50, n_ctx=16, seed=0, name="<b>tiny</b>")
    ex = Explorer(model, RANDOM, n_prompts=2, component="heads")
    ex.run()
    ex.selected = "L1H0"
    html = ex._repr_mimebundle_()[0]["text/html"]
    assert "&lt;b&gt;tiny&lt;/b&gt;" in html and "<b>tiny</b>" not in html


@pytest.mark.integration
def test_ioi_names_that_are_not_single_tokens_fail_before_the_sweep(embedded_model):
    ctl = ExplorerController(embedded_model, "ioi", n_prompts=4,
                             task_options={"names": ["Mary", "John", "Bartholomew", "Anna", "Tom"]})
    with pytest.raises(TokenizationError, match="Bartholomew"):
        ctl.run()
    assert ctl.status == "error" and "Bartholomew" in ctl.message and ctl.history() == []


def test_a_circuit_node_opens_the_head_detail_even_on_a_residual_sweep(tiny):
    from attnlab.circuits.circuit import Circuit
    from attnlab.explorer.widget import Explorer

    ex = Explorer(tiny, RANDOM, n_prompts=2, component="resid_pre")
    ex.run()
    circuit = Circuit(model=tiny.info.to_dict(), task={"task": "random"},
                      edges=[("L2H1->logits", 0.9), ("L0H3->L2H1.q", -0.4)])
    ex.show_circuit(circuit)
    assert ex.circuit["kind"] == "circuit" and len(ex.circuit["edges"]) == 2
    ex._on_message(ex, {"type": "select_head", "layer": 2, "head": 1}, [])
    assert ex.selected == "L2H1" and ex.selected_cell == [] and ex.detail_payload["kind"] == "head"
    assert ex.detail_payload["patching"] is None and ex.detail_payload["ablation"]["zero"]["change"]["per_prompt"]
    with pytest.raises(ExplorerError, match="outside"):
        ex.controller.select_head(3, 0)
    ex.set_control("component", "heads")
    ex.run()
    assert ex.controller.select_head(0, 3) == "L0H3" and ex.selected_cell == [0, 3]
    ex.show_circuit(None)
    assert ex.circuit == {}
