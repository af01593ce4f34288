"""The circuit-search controller and widget, driven from Python (no browser), on the tiny grouped-query model.

Each number the widget shows must be the engines' own: the batched EAP scores equal one :func:`eap_scores` call over
all prompts, the faithfulness of every size equals :func:`faithfulness` of the top-n circuit, the head panel equals
:func:`head_detail`, the comparison equals :func:`compare_circuits`; Cancel keeps what the module docstring says.
"""

import dataclasses
import math

import pytest
import torch

from attnlab.circuit_search.controller import CircuitSearchController, offered_sizes
from attnlab.circuits import acdc, compare_circuits, eap_scores, faithfulness
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.graph import mean_source
from attnlab.errors import ExplorerError
from attnlab.explorer.details import RunCache, head_detail
from attnlab.explorer.tasks import ExplorerTask

from .conftest import random_pair_dataset


def _toy(name, offset):
    def build(model, n_prompts, *, seed=0, corruption="swap"):
        ds = random_pair_dataset(model, batch=n_prompts, n_pos=6, changed=(2, 3), seed=seed + offset)
        prompts = [f"{name} prompt {i} <b>x</b>" for i in range(n_prompts)]
        return dataclasses.replace(ds, task=name, clean_prompts=prompts, corrupted_prompts=list(prompts))

    return ExplorerTask(name=name, title=f"toy task {name}", build=build, corruptions=("swap",),
                        answer_names=("A", "B"))


TOY = _toy("toy", 0)
OTHER = _toy("toy_b", 100)


def make(tiny, **kw):
    ctl = CircuitSearchController(tiny, TOY, n_prompts=6, batch_size=4, n_sizes=6, **kw)
    ctl._tasks[OTHER.name] = OTHER  # a second task for the comparison
    return ctl


@pytest.fixture(scope="module")
def searched(tiny):
    ctl = make(tiny)
    run = ctl.run()
    return ctl, run


def test_offered_sizes_are_log_spaced_and_include_the_ends() -> None:
    assert offered_sizes(1000, 4) == [1, 10, 100, 1000]
    assert offered_sizes(1, 12) == [1]
    s = offered_sizes(70_651, 12)
    assert s[0] == 1 and s[-1] == 70_651 and s == sorted(set(s)) and len(s) == 12
    with pytest.raises(ExplorerError):
        offered_sizes(0)


def test_batched_eap_equals_one_engine_call(searched, tiny) -> None:
    ctl, run = searched
    ds = ctl.dataset()
    ref = eap_scores(tiny, ds, method="eap", batch_size=4, progress=False)
    assert run.complete and run.prompts_scored == 6
    assert torch.allclose(run.scores.scores, ref.scores, rtol=1e-4, atol=1e-6)
    assert run.scores.clean_metric == pytest.approx(ref.clean_metric, rel=1e-5)
    assert run.scores.corrupted_metric == pytest.approx(ref.corrupted_metric, rel=1e-5)
    assert [e for e, _ in run.edges[:20]] == [e for e, _ in ref.edge_scores()[:20]]
    assert ctl.status == "done" and ctl.current == 0 and len(ctl.runs) == 1


def test_every_offered_size_has_the_engines_faithfulness(searched, tiny) -> None:
    ctl, run = searched
    assert run.sizes == offered_sizes(run.n_edges, 6) and set(run.points) == set(run.sizes)
    ds = ctl.dataset()
    source = mean_source(ctl.runner, ds)
    for n in run.sizes[1:4]:
        exact = faithfulness(ctl.runner, ds, ctl.circuit(n), source=source)
        assert ctl.faithfulness_at(n) == pytest.approx(exact.faithfulness, abs=1e-6)
        assert run.points[n]["n_heads"] == exact.n_heads
        assert run.full_metric == pytest.approx(exact.full_metric, abs=1e-6)
    curve = ctl.curve()
    assert curve["sizes"] == run.sizes and curve["faithfulness"] == [run.points[s]["faithfulness"] for s in run.sizes]
    assert ctl.size == run.sizes[-1]


def test_a_size_not_offered_is_evaluated_on_demand_and_cached(tiny) -> None:
    ctl = make(tiny)
    run = ctl.run()
    n = next(k for k in range(2, run.n_edges) if k not in run.sizes)
    point = ctl.set_size(n)
    assert ctl.size == n and n in run.sizes and run.points[n] is point
    exact = faithfulness(ctl.runner, ctl.dataset(), ctl.circuit(n), source=mean_source(ctl.runner, ctl.dataset()))
    assert point["faithfulness"] == pytest.approx(exact.faithfulness, abs=1e-6)
    assert ctl.curve()["sizes"].count(n) == 1
    with pytest.raises(ExplorerError, match=r"in \[1, "):
        ctl.set_size(run.n_edges + 1)


def test_eap_ig_uses_its_steps(tiny) -> None:
    ctl = make(tiny, method="eap-ig", steps=3)
    run = ctl.run()
    ref = eap_scores(tiny, ctl.dataset(), method="eap-ig", steps=3, batch_size=4, progress=False)
    assert run.scores.steps == 3 and run.scores.method == "eap-ig"
    assert torch.allclose(run.scores.scores, ref.scores, rtol=1e-4, atol=1e-6)


def test_cancel_during_eap_keeps_the_batches_scored(tiny) -> None:
    ctl = CircuitSearchController(tiny, TOY, n_prompts=8, batch_size=4, n_sizes=4)
    seen = []

    def on_change(what):
        if what == "progress":
            seen.append(ctl.progress)
            if ctl.progress[0] >= 2 and not ctl._stop.is_set():  # the first batch's passes are done: Cancel
                ctl.cancel()

    ctl.on_change(on_change)
    run = ctl.run()
    assert not run.complete and run.prompts_scored == 4 and len(run.dataset) == 4
    ref = eap_scores(tiny, ctl.dataset().subset(slice(0, 4)), batch_size=4, progress=False)
    assert torch.allclose(run.scores.scores, ref.scores, rtol=1e-4, atol=1e-6)
    assert ctl.status == "cancelled" and "4 of 8 prompts" in ctl.message and run.points == {}
    assert ctl.runs == [run] and "cancelled" in run.label()
    # the kept scores can still be evaluated, size by size
    n = run.sizes[1]
    assert ctl.set_size(n)["faithfulness"] == pytest.approx(
        faithfulness(ctl.runner, run.dataset, ctl.circuit(n),
                     source=mean_source(ctl.runner, run.dataset)).faithfulness, abs=1e-6)
    assert any(total > 0 for _, total in seen)


def test_acdc_run_and_cancel_keeping_nothing(tiny) -> None:
    ctl = make(tiny, method="acdc", threshold=0.02)
    run = ctl.run()
    ref = acdc(ctl.runner, ctl.dataset(), 0.02, batch_size=4, progress=False)
    assert [e for e, _ in run.edges] == [e for e, _ in ref.circuit.edges]
    assert run.sizes[-1] == min(1000, len(ref.circuit.edges))
    circuit = ctl.circuit(run.sizes[-1])
    assert isinstance(circuit, Circuit) and circuit.n_edges == run.sizes[-1]

    ctl2 = make(tiny, method="acdc", threshold=0.02)
    ctl2.on_change(lambda what: ctl2.cancel() if what == "progress" and ctl2.progress[0] >= 3 else None)
    with pytest.raises(ExplorerError, match="ACDC keeps nothing"):
        ctl2.run()
    assert ctl2.status == "cancelled" and ctl2.runs == [] and "ACDC keeps nothing" in ctl2.message


def test_head_panel_is_the_explorers(searched, tiny) -> None:
    ctl, run = searched
    detail = ctl.select_head(2, 1)
    ref = head_detail(RunCache(tiny, ctl.dataset()), 2, 1, prompt=0, answer_names=("A", "B"))
    assert detail["name"] == "L2H1" and ctl.selected == "L2H1"
    assert torch.tensor(detail["pattern"]).allclose(torch.tensor(ref["pattern"]))
    assert detail["ablation"]["mean"]["change"]["mean"] == pytest.approx(ref["ablation"]["mean"]["change"]["mean"])
    assert detail["dla"]["difference"]["mean"] == pytest.approx(ref["dla"]["difference"]["mean"])
    edges = run.edges[:ctl.size]
    assert detail["circuit"]["incoming"] == sum(e.split("->")[1].split(".")[0] == "L2H1" for e, _ in edges)
    assert detail["circuit"]["outgoing"] == sum(e.split("->")[0] == "L2H1" for e, _ in edges)
    ctl.set_detail_prompt(2)
    assert ctl.detail["prompt"]["index"] == 2 and ctl.detail["prompt"]["text"] == "toy prompt 2 <b>x</b>"
    with pytest.raises(ExplorerError, match="outside"):
        ctl.select_head(3, 0)


def test_compare_with_another_task(tiny) -> None:
    ctl = make(tiny)
    ctl.run()
    n = ctl.runs[0].sizes[2]
    ctl.set_size(n)
    info = ctl.compare("toy_b")
    assert len(ctl.runs) == 2 and ctl.runs[1].controls["task"] == "toy_b" and ctl.current == 0
    ref = compare_circuits(ctl.circuit(n, run=0), ctl.circuit(n, run=1), names=("toy", "toy_b"))
    assert info["n_edges"] == n and info["n_shared"] == ref.n_shared
    assert info["jaccard"] == pytest.approx(ref.jaccard) and info["shared"] == ref.summary()["shared"]
    assert ctl.comparison.heads_b == ref.heads_b
    with pytest.raises(ExplorerError, match="already on 'toy'"):
        ctl.compare("toy")


@pytest.mark.parametrize("name,value,match", [
    ("method", "ig", "'method' must be one of"),
    ("steps", 0, "'steps' must be an integer"),
    ("threshold", -1.0, "'threshold' must be a finite number"),
    ("threshold", math.nan, "'threshold' must be a finite number"),
    ("n_prompts", 0, "'n_prompts' must be an integer"),
    ("max_edges", 0, "'max_edges' must be an integer"),
    ("metric", "accuracy", "has no gradient"),
    ("task", "nope", "'task' must be one of"),
    ("corruption", "abc", "'corruption' must be one of"),
    ("colour", 1, "unknown control"),
])
def test_bad_controls_are_refused_and_the_old_value_kept(tiny, name, value, match) -> None:
    ctl = make(tiny)
    before = dict(ctl.controls)
    with pytest.raises(ExplorerError, match=match):
        ctl.set_control(name, value)
    assert ctl.controls == before


def test_nothing_to_show_before_a_run(tiny) -> None:
    ctl = make(tiny)
    for call in (lambda: ctl.set_size(1), lambda: ctl.select_head(0, 0), lambda: ctl.compare("toy_b"),
                 lambda: ctl.circuit(1)):
        with pytest.raises(ExplorerError, match="run a search first"):
            call()
    assert ctl.curve() is None


def test_widget_traits_carry_the_kernels_numbers(tiny) -> None:
    pytest.importorskip("anywidget")
    from attnlab.circuit_search.widget import CircuitSearch

    w = CircuitSearch(tiny, TOY, n_prompts=6, batch_size=4, n_sizes=5)
    w.controller._tasks[OTHER.name] = OTHER
    w.run()
    run = w.controller.run_shown
    assert w.status == "done" and w.current_run == 0 and w.shown_size == run.sizes[-1]
    assert len(w.circuit["edges"]) == run.sizes[-1] and w.circuit["n_edges_total"] == run.sizes[-1]
    assert w.curve["sizes"] == run.sizes
    assert w.curve["faithfulness"] == [run.points[s]["faithfulness"] for s in run.sizes]
    w._on_message(w, {"type": "size", "n": run.sizes[1]}, [])
    assert w.shown_size == run.sizes[1] == w.size
    w._on_message(w, {"type": "select_head", "layer": 1, "head": 2}, [])
    assert w.detail_payload["name"] == "L1H2" and w.detail == w.controller.detail
    w._on_message(w, {"type": "controls", "controls": {"method": "nope"}}, [])
    assert "'method' must be one of" in w.message and w.controls["method"] == "eap"
    assert "static copy" in w._repr_mimebundle_()[0]["text/html"]


def test_explorer_refuses_a_circuit_of_another_task(tiny) -> None:
    pytest.importorskip("anywidget")
    from attnlab.explorer.widget import Explorer

    ex = Explorer(tiny, TOY, n_prompts=4)
    other = Circuit(model=tiny.info.to_dict(), task={"task": "ioi"}, edges=[("L2H1->logits", 1.0)])
    with pytest.raises(ExplorerError, match="found on task 'ioi', but this Explorer shows 'toy'"):
        ex.show_circuit(other)
    assert ex.circuit == {}
    own = Circuit(model=tiny.info.to_dict(), task={"task": "toy"}, edges=[("L2H1->logits", 1.0)])
    ex.show_circuit(own)
    assert ex.circuit["n_edges_total"] == 1
