"""The recall-versus-reasoning workbench's controller and widget, driven from Python (no browser), on a tiny model.

A run must be exactly :func:`~attnlab.dissociation.dissociation_sweep` on the same items with the same settings;
Cancel must keep the components finished so far (equal to the full run's values for them, NaN for the rest); the
detail of a selection must be :func:`~attnlab.dissociation.component_detail`.
"""

import json
import math

import pytest
import torch

from attnlab.dissociation import component_detail, dissociation_sweep
from attnlab.dissociation.controller import WorkbenchController
from attnlab.errors import ExplorerError
from attnlab.tasks.recall_reasoning import FAMILIES, REASONING_FAMILIES, RECALL_FAMILIES, RecallReasoningItems

N_POS = 7


def toy_items(model, families, *, n_per_family, seed, criterion):
    """Items from random token ids (the tiny model has no tokenizer): one template per family, so positions align;
    each row's corrupted counterpart is another row of its family."""
    g = torch.Generator().manual_seed(seed)
    d_vocab = model.info.d_vocab
    tokens, answers, kinds, fams = [], [], [], []
    for f in families:
        name = f if isinstance(f, str) else f.name
        kind = FAMILIES[name].kind if isinstance(f, str) else f.kind
        for _ in range(n_per_family):
            tokens.append(torch.randint(0, d_vocab, (N_POS,), generator=g))
            a, d = torch.randperm(d_vocab, generator=g)[:2]
            answers.append([int(a), int(d)])
            kinds.append(kind)
            fams.append(name)
    tokens = torch.stack(tokens)
    n = len(tokens)
    corrupted = tokens[[(i + 1) % n if fams[(i + 1) % n] == fams[i] else i - n_per_family + 1 for i in range(n)]]
    return RecallReasoningItems.from_tokens(tokens, corrupted, torch.tensor(answers), torch.full((n,), N_POS - 1),
                                            kinds, fams, prompts=[f"{k} item {i} <b>" for i, k in enumerate(kinds)])


FAMS = ["capital_of", "language_of", "transitive_order"]


def make(tiny, **kw):
    kw = {"families": FAMS, "n_per_family": 3, "n_bootstrap": 100, "n_control_draws": 2, "build_items": toy_items,
          **kw}
    return WorkbenchController(tiny, **kw)


@pytest.fixture
def ctl(tiny):
    return make(tiny)


# -- controls -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,value", [
    ("families", []), ("families", ["capital_of"]), ("families", ["transitive_order"]), ("families", ["nope"]),
    ("families", ["capital_of", "capital_of", "syllogism"]), ("families", 3), ("families", [1, 2]),
    ("granularity", "neurons"), ("granularity", "components"), ("granularity", None),
    ("ablation", "noise"), ("ablation", ""),
    ("n_per_family", 1), ("n_per_family", 501), ("n_per_family", "4"), ("n_per_family", True), ("n_per_family", 2.5),
    ("seed", -1), ("seed", 1.5), ("seed", "0"), ("seed", False),
    ("layers", [3]), ("layers", [-1]), ("layers", []), ("layers", "2-1"), ("layers", "x"), ("layers", "0-9"),
    ("layers", [0.5]), ("layers", 2),
    ("criterion", "best"), ("criterion", None),
    ("colour", "red"),
])
def test_bad_control_values_are_rejected_and_the_old_value_kept(ctl, name, value):
    before = json.dumps(ctl.controls, sort_keys=True)
    with pytest.raises(ExplorerError) as err:
        ctl.set_control(name, value)
    assert repr(value) in str(err.value) or name in str(err.value)
    assert json.dumps(ctl.controls, sort_keys=True) == before


@pytest.mark.parametrize("name,value,stored", [
    ("families", ["capital_of", "syllogism"], ["capital_of", "syllogism"]),
    ("families", [*RECALL_FAMILIES, *REASONING_FAMILIES], [*RECALL_FAMILIES, *REASONING_FAMILIES]),
    ("granularity", "attn", "attn"), ("granularity", "mlp", "mlp"), ("granularity", "blocks", "blocks"),
    ("granularity", "heads", "heads"),
    ("ablation", "zero", "zero"), ("ablation", "resample", "resample"), ("ablation", "mean", "mean"),
    ("n_per_family", 2, 2), ("n_per_family", 500, 500), ("seed", 0, 0), ("seed", 12, 12),
    ("layers", None, None), ("layers", "all", None), ("layers", "", None), ("layers", [2, 0], [0, 2]),
    ("layers", "1-2", [1, 2]), ("layers", "0, 2", [0, 2]), ("layers", (1,), [1]), ("layers", "0-2", None),
    ("criterion", "above_distractor", "above_distractor"), ("criterion", "none", "none"),
    ("criterion", "top1", "top1"),
])
def test_good_control_values_are_stored(ctl, name, value, stored):
    seen = []
    ctl.on_change(seen.append)
    ctl.set_control(name, value)
    assert ctl.controls[name] == stored
    assert seen == ["controls"]


def test_attention_only_models_have_no_mlp_granularities():
    from attnlab.models import tiny_model

    attn_only = tiny_model(n_layers=2, n_heads=2, attn_only=True, seed=0)
    c = make(attn_only)
    for value in ("mlp", "blocks"):
        with pytest.raises(ExplorerError, match="attention-only"):
            c.set_control("granularity", value)
    assert [o["value"] for o in c.options()["granularities"]] == ["heads", "attn"]


def test_initial_controls_are_validated(tiny):
    with pytest.raises(ExplorerError, match="'seed'"):
        make(tiny, seed=-2)
    with pytest.raises(ExplorerError, match="reasoning family"):
        make(tiny, families=["capital_of"])


def test_options_list_every_family_by_kind(ctl):
    opts = ctl.options()
    assert [f["value"] for f in opts["families"]["recall"]] == list(RECALL_FAMILIES)
    assert [f["value"] for f in opts["families"]["reasoning"]] == list(REASONING_FAMILIES)
    assert all(f["description"] for k in ("recall", "reasoning") for f in opts["families"][k])
    assert [o["value"] for o in opts["ablations"]] == ["zero", "mean", "resample"]


# -- runs -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    {},
    {"granularity": "blocks", "ablation": "zero", "seed": 3},
    {"granularity": "heads", "ablation": "resample", "layers": [1, 2]},
    {"granularity": "mlp", "ablation": "mean", "families": ["language_of", "syllogism", "two_hop_relation"]},
])
def test_run_equals_dissociation_sweep_on_the_same_items(tiny, settings):
    c = make(tiny)
    for name, value in settings.items():
        c.set_control(name, value)
    seen = []
    c.on_change(seen.append)
    run = c.run()
    items = toy_items(tiny, c.controls["families"], n_per_family=3, seed=c.controls["seed"], criterion="top1")
    kw = c.sweep_arguments()
    expected = dissociation_sweep(tiny, items, progress=False, **kw)
    assert torch.equal(run.items.tokens, items.tokens)
    torch.testing.assert_close(run.result.ablated, expected.ablated, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(run.result.clean, expected.clean, rtol=0, atol=0)
    assert run.result.payload() == expected.payload()
    assert run.result.complete and c.status == "done"
    assert c.progress[0] == c.progress[1] > 0
    assert {"status", "progress", "result", "selected", "detail"} <= set(seen)
    # what the controls say is what ran
    assert kw["ablation"] == run.controls["ablation"] == run.result.settings["ablation"]
    if c.controls["layers"] is not None:
        assert kw["granularity"] == "components"
        assert sorted({int(n[1:n.index("H")]) for n in run.result.components}) == c.controls["layers"]
    else:
        assert run.result.settings["granularity"] == c.controls["granularity"]


def test_cancel_keeps_the_finished_components(tiny):
    full = make(tiny, granularity="heads").run().result
    c = make(tiny, granularity="heads")

    def stop_after_first_pass(what):
        if what == "progress" and c.progress[0] == 1:
            c.cancel()

    c.on_change(stop_after_first_pass)
    run = c.run()
    res = run.result
    assert not res.complete and c.status == "cancelled"
    assert "finished components" in c.message
    done = c.components_run()
    assert 0 < len(done) < len(res.components)
    for i, name in enumerate(res.components):
        if name in done:
            torch.testing.assert_close(res.ablated[i], full.ablated[i], rtol=0, atol=0)
        else:
            assert torch.isnan(res.ablated[i]).all()
    # the payload of a cancelled run says so, and its unfinished components have no numbers
    p = res.payload()
    assert p["complete"] is False
    assert all(comp["recall"][0] is None for comp in p["components"] if comp["name"] not in done)
    # the finished components can be selected and show their effects
    c.select(done[0])
    assert all(row["ablated"] is not None for row in c.detail["per_item"])


def test_cancel_when_idle_does_nothing_and_a_second_run_is_refused(ctl):
    ctl.cancel()
    assert ctl.status == "idle"
    ctl._lock.acquire()
    try:
        with pytest.raises(ExplorerError, match="already in progress"):
            ctl.run()
        with pytest.raises(ExplorerError, match="already in progress"):
            ctl.run_in_background()
    finally:
        ctl._lock.release()


def test_background_run_reports_errors_through_status(tiny):
    def broken(model, families, **kw):
        raise ValueError("no items <here>")

    c = make(tiny, build_items=broken)
    c.run_in_background().join(60)
    assert c.status == "error" and "no items <here>" in c.message
    assert c.result is None


# -- selection and detail -------------------------------------------------------------------------------------------

def test_detail_equals_component_detail(tiny):
    c = make(tiny)
    run = c.run()
    assert c.select("L1H2") == "L1H2" and c.selected == "L1H2"
    assert c.detail == component_detail(tiny, run.items, run.result, "L1H2")
    assert c.detail["patterns"]["recall"] is not None and c.detail["patterns"]["reasoning"] is not None
    # by (layer, head), by index, case-insensitively
    assert c.select((2, 3)) == "L2H3"
    assert c.select(0) == run.result.components[0]
    assert c.select("l0h1") == "L0H1"
    # the attention pattern on another item of the same kind
    row = [i for i, k in enumerate(run.items.kinds) if k == "reasoning"][2]
    c.set_pattern_item(row)
    assert c.detail == component_detail(tiny, run.items, run.result, "L0H1", item_index={"reasoning": row})
    assert c.detail["patterns"]["reasoning"]["row"] == row
    c.select(None)
    assert c.selected is None and c.detail is None


def test_block_detail_has_no_attention_pattern(tiny):
    c = make(tiny, granularity="blocks")
    run = c.run()
    c.select("MLP1")
    assert c.detail == component_detail(tiny, run.items, run.result, "MLP1")
    assert c.detail["patterns"] == {"recall": None, "reasoning": None}


@pytest.mark.parametrize("target", ["L9H0", "MLP0", "nope", (0, 9), 99, -1, 1.5])
def test_bad_selections_are_rejected_and_the_selection_kept(tiny, target):
    c = make(tiny)
    c.run()
    c.select("L0H0")
    before = c.detail
    with pytest.raises(ExplorerError):
        c.select(target)
    assert c.selected == "L0H0" and c.detail == before


def test_nothing_to_select_before_a_run(ctl):
    with pytest.raises(ExplorerError, match="run the sweep first"):
        ctl.select("L0H0")
    with pytest.raises(ExplorerError, match="current run"):
        ctl.set_pattern_item(0)


def test_a_new_run_clears_the_selection(ctl):
    ctl.run()
    ctl.select("L0H0")
    ctl.set_control("ablation", "zero")
    ctl.run()
    assert ctl.selected is None and ctl.detail is None and len(ctl.runs) == 2


# -- the widget (no browser: its traits and messages) ---------------------------------------------------------------

def _json_ok(value) -> bool:
    json.dumps(value, allow_nan=False)
    return True


def test_widget_mirrors_the_controller_and_answers_messages(tiny):
    from attnlab.dissociation.widget import RecallReasoningWorkbench

    w = RecallReasoningWorkbench(tiny, families=FAMS, n_per_family=3, n_bootstrap=100, n_control_draws=0,
                                 build_items=toy_items)
    assert w._esm and w.controls["families"] == FAMS and w.model_name == tiny.info.name
    assert w.payload == {} and "no sweep run yet" in w._repr_mimebundle_()[0]["text/html"]
    # a rejected control from the browser: the message says why, the control is unchanged
    w._on_message(w, {"type": "controls", "controls": {"seed": -4}}, [])
    assert "'seed'" in w.message and w.controls["seed"] == 0
    w._on_message(w, {"type": "controls", "controls": {"layers": "1-2", "ablation": "zero"}}, [])
    assert w.controls["layers"] == [1, 2] and w.controls["ablation"] == "zero"
    w.run()
    assert w.status == "done" and w.progress[0] == w.progress[1]
    assert w.payload["kind"] == "dissociation" and _json_ok(w.payload)
    assert [c["name"] for c in w.payload["components"]] == w.result.components
    assert w.counts == json.loads(json.dumps(w.controller.current.items.counts))
    # select from the browser, then from Python: both reach the controller and the synced traits
    w._on_message(w, {"type": "select", "name": "L2H1"}, [])
    assert w.selected == "L2H1" and w.selected_name == "L2H1"
    assert w.detail_payload["component"] == "L2H1" and _json_ok(w.detail_payload)
    assert w.detail_payload["per_item"] == w.detail["per_item"]
    assert w.detail_payload["summary"]["name"] == "L2H1"
    w.selected = (1, 3)
    assert w.selected_name == "L1H3" and w.detail_payload["component"] == "L1H3"
    w._on_message(w, {"type": "select", "name": "L7H7"}, [])
    assert "not a component" in w.message and w.selected_name == "L1H3"
    w.selected = None
    assert w.selected_name == "" and w.detail_payload == {}
    html = w._repr_mimebundle_()[0]["text/html"]
    assert "cannot run Jupyter widgets" in html and "<table>" in html


def test_widget_payload_has_no_nan_after_cancel(tiny):
    from attnlab.dissociation.widget import RecallReasoningWorkbench, json_safe

    w = RecallReasoningWorkbench(tiny, families=FAMS, n_per_family=3, n_bootstrap=100, n_control_draws=0,
                                 build_items=toy_items)

    def stop(what):
        if what == "progress" and w.controller.progress[0] == 1:
            w.cancel()

    w.controller.on_change(stop)
    w.run()
    assert w.status == "cancelled" and w.payload["complete"] is False and _json_ok(w.payload)
    assert json_safe({"a": [float("nan"), 1.0, {"b": math.inf}]}) == {"a": [None, 1.0, {"b": None}]}
