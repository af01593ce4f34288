"""Feedback during long calls: progress bars and callbacks that count the passes really run, and the widgets showing
themselves in the cell that runs them before the sweep starts.

Pass counts are checked against the forward passes the backend actually ran (its ``run`` is wrapped and counted
here), so a bar that stopped short, overshot or never moved fails."""

import re
import types

import pytest

from attnlab.heads import ablation_effects, induction_analysis
from attnlab.models import tiny_model
from attnlab.progress import Progress, step_progress
from attnlab.tasks.induction import repeated_random_tokens
from tests.test_dissociation_controller import FAMS, toy_items
from tests.test_explorer import RANDOM


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)


class PassCounter:
    """Counts a local backend's forward passes: its ``run`` calls (``run_many`` runs each of its passes through
    ``run`` on local backends)."""

    def __init__(self, model, monkeypatch: pytest.MonkeyPatch) -> None:
        self.passes = 0
        run = model.run

        def counted_run(*args, **kwargs):
            self.passes += 1
            return run(*args, **kwargs)

        monkeypatch.setattr(model, "run", counted_run)


def test_progress_counts_shared_steps_and_reports_every_change():
    seen = []
    with Progress("demo", total=2, bar=False, on_progress=lambda d, t: seen.append((d, t))) as p:
        step, owned = step_progress(p, total=3, desc="step")
        assert step is p and not owned and p.total == 5
        p.update(2)
        p.update(4)  # more than announced: the total follows, done never exceeds it
    assert seen == [(0, 5), (2, 5), (6, 6)]
    own, owned = step_progress(False, total=4, desc="alone")
    assert owned and own.total == 4 and own is not p
    own.close()


def test_induction_analysis_calls_back_once_per_pass_up_to_the_passes_run(model, monkeypatch):
    counter = PassCounter(model, monkeypatch)
    seen: list[tuple[int, int]] = []
    induction_analysis(model, seq_len=6, batch=4, ablate=2, prefix_lengths=(1, 2, 4), progress=False,
                       on_progress=lambda done, total: seen.append((done, total)))
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and all(d <= t for d, t in seen)
    ticks = [d for d, before in zip(dones, [0] + dones) if d != before]  # the reports of a finished pass
    assert ticks == list(range(1, counter.passes + 1)), (seen, counter.passes)
    assert seen[-1] == (counter.passes, counter.passes)
    # every step announced its passes: scoring, ablation (unablated, mean outputs, ablated), prefix, copying
    assert len({t for _, t in seen}) >= 4


def test_induction_analysis_draws_one_tqdm_bar_to_its_end(model, monkeypatch, capsys):
    counter = PassCounter(model, monkeypatch)
    induction_analysis(model, seq_len=6, batch=4, ablate=1, prefix_lengths=(1, 2))
    err = capsys.readouterr().err
    assert "induction analysis" in err, err
    final = re.findall(r"induction analysis.*?(\d+)/(\d+)", err)[-1]
    assert final == (str(counter.passes), str(counter.passes)), err


def test_ablation_effects_shows_its_own_bar(model, monkeypatch, capsys):
    data = repeated_random_tokens(model, 6, batch=4, seed=0)
    counter = PassCounter(model, monkeypatch)
    ablation_effects(model, data, [(0, 1), (1, 2), (2, 0)], methods=("zero", "mean"))
    err = capsys.readouterr().err
    assert re.findall(r"ablating heads.*?(\d+)/(\d+)", err)[-1] == (str(counter.passes),) * 2, err
    ablation_effects(model, data, [(0, 1)], methods=("zero",), progress=False)
    assert "ablating heads" not in capsys.readouterr().err


def test_acdc_bar_reports_edge_tests_and_kept_edges(capsys):
    from attnlab.circuits import acdc
    from tests.conftest import random_pair_dataset

    small = tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_head=8, seed=4)
    result = acdc(small, random_pair_dataset(small, batch=4, n_pos=6, changed=(1, 3), seed=2), 0.02, max_tests=40)
    err = capsys.readouterr().err
    tests_run, kept = re.findall(r"ACDC receivers.*?([\d,]+) edge tests, \d+ passes, ([\d,]+) edges kept", err)[-1]
    assert int(tests_run.replace(",", "")) == result.n_tests, err


def test_retrieval_ablation_and_sink_calibration_show_their_bars(model, monkeypatch, capsys):
    from attnlab.heads import calibrate_sinks, retrieval_ablation
    from attnlab.tasks.needle import needle_haystack_tokens
    from tests.conftest import random_pair_dataset

    inputs = needle_haystack_tokens(model, needle=[5, 6, 7], question=[9], depths=[0.0, 0.5, 1.0], lengths=[12],
                                    token_range=(10, 40), bos_token_id=0, seed=0)
    counter = PassCounter(model, monkeypatch)
    retrieval_ablation(model, inputs, [(0, 1), (2, 3)], n_random=2, n_bootstrap=100, method="mean")
    err = capsys.readouterr().err
    assert re.findall(r"retrieval ablation.*?(\d+)/(\d+)", err)[-1] == (str(counter.passes),) * 2, err
    data = random_pair_dataset(model, batch=4, n_pos=12, seed=1)
    counter.passes = 0
    calibrate_sinks(model, data, heads=[(1, 0)], positions="first", n_bootstrap=100)
    err = capsys.readouterr().err
    assert re.findall(r"calibrating sinks.*?(\d+)/(\d+)", err)[-1] == ("2", "2"), err
    assert counter.passes >= 2  # (and the sink analysis the calibration computes first)


# -- the widgets show themselves in the running cell before they block -------------------------------------------

class FakeShell:
    """What :mod:`attnlab.explorer.cell_display` reads of IPython's shell: a kernel and the cell's execution count."""

    def __init__(self) -> None:
        self.kernel = object()
        self.execution_count = 1


@pytest.fixture
def notebook(monkeypatch):
    """A pretend notebook: ``IPython.get_ipython`` returns a shell in a kernel, and ``IPython.display.display`` records
    what it shows (formatting it, as IPython does) in ``events``."""
    import IPython
    import IPython.display

    shell = FakeShell()
    events: list[tuple] = []

    def display(obj, *, display_id=None, **_kwargs):
        bundle, _ = obj._repr_mimebundle_()
        events.append(("display", shell.execution_count, bundle))

        def update(new):
            events.append(("update", shell.execution_count, new._repr_mimebundle_()[0]))

        return types.SimpleNamespace(update=update) if display_id else None

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.setattr(IPython.display, "display", display)
    return types.SimpleNamespace(shell=shell, events=events)


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _check_shown_before_the_passes(widget, notebook) -> None:
    widget.controller.on_change(lambda what: notebook.events.append((what, notebook.shell.execution_count))
                                if what == "progress" else None)
    widget.run()
    kinds = [e[0] for e in notebook.events]
    assert kinds[0] == "display" and "progress" in kinds, kinds
    assert WIDGET_MIME in notebook.events[0][2]
    # after the run, the same output is sent again: its static copy now holds the result
    assert kinds[-1] == "update" and "<table" in notebook.events[-1][2]["text/html"], kinds
    assert kinds.count("display") == 1
    # a trailing `widget` line in the same cell: one line of text, not a second copy of the widget
    data, _ = widget._repr_mimebundle_()
    assert set(data) == {"text/plain"} and data["text/plain"] == repr(widget)

    # the next cell shows it again; a cell that displayed it before run() does not get a second copy
    notebook.shell.execution_count = 2
    notebook.events.clear()
    widget.run()
    assert [e[0] for e in notebook.events if e[0] == "display"] == ["display"]
    notebook.shell.execution_count = 3
    assert WIDGET_MIME in widget._repr_mimebundle_()[0]  # shown by the cell itself
    notebook.events.clear()
    widget.run()
    assert "display" not in [e[0] for e in notebook.events]


def test_explorer_run_displays_the_widget_before_the_first_pass(model, notebook):
    from attnlab.explorer.widget import Explorer

    _check_shown_before_the_passes(Explorer(model, RANDOM, n_prompts=2, component="heads"), notebook)


def test_workbench_run_displays_the_widget_before_the_first_pass(model, notebook):
    from attnlab.dissociation.widget import RecallReasoningWorkbench

    workbench = RecallReasoningWorkbench(model, families=FAMS, n_per_family=3, n_bootstrap=100, n_control_draws=0,
                                         build_items=toy_items)
    _check_shown_before_the_passes(workbench, notebook)


def test_outside_a_kernel_run_displays_nothing(model, monkeypatch):
    import IPython
    import IPython.display

    from attnlab.explorer.widget import Explorer

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a))
    ex = Explorer(model, RANDOM, n_prompts=2, component="heads")
    ex.run()
    assert shown == [] and WIDGET_MIME in ex._repr_mimebundle_()[0]
