"""The Explorer's logic, in plain Python: controls, runs, cancellation, selection, details, history.

:class:`ExplorerController` holds everything the Explorer widget shows and does everything its buttons do, with no
dependency on a front end, so tests (and scripts) drive it directly. The widget (:mod:`attnlab.explorer.widget`) only
mirrors the controller's state into synced traits and forwards clicks.
"""

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from attnlab.backends.base import Backend
from attnlab.errors import ExplorerError, MetricError
from attnlab.explorer.details import RunCache, cell_detail, head_detail
from attnlab.explorer.tasks import CUSTOM_TASK, ExplorerTask, custom_prompts_task, get_task, registered_tasks
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import DIRECTIONS, METRICS, Metric, MetricLike, get_metric
from attnlab.patching.engine import COMPONENTS, run_sweep
from attnlab.results import PatchingResult

__all__ = ["ExplorerController", "ExplorerError", "ExplorerRun", "Selection"]


#: component menu of the Explorer: value -> label
COMPONENT_LABELS = {
    "resid_pre": "residual stream (by position)",
    "attn_out": "attention output (by position)",
    "mlp_out": "MLP output (by position)",
    "heads": "heads (all positions)",
    "heads_by_pos": "heads (by position)",
}


@dataclass(frozen=True)
class Selection:
    """A selected cell of the current result.

    Attributes:
        layer: model layer.
        head: query-head index, or None for residual/attention/MLP cells.
        pos: token position, or None for a head sweep over all positions.
        name: ``"L9H9"``, ``"L9H9 @ END"`` or ``"L3 @ S2"`` (the result's component name). ``str(selection)``
            is the name, and a selection compares equal to its name: ``explorer.selected == "L9H9"``.
    """

    layer: int
    head: int | None
    pos: int | None
    name: str

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return other == self.name
        if isinstance(other, Selection):
            return (self.layer, self.head, self.pos) == (other.layer, other.head, other.pos)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "head": self.head, "pos": self.pos, "name": self.name}


@dataclass
class ExplorerRun:
    """One run of the Explorer: the controls it ran with, its result, and when.

    Attributes:
        controls: the control values of the run.
        result: the sweep's :class:`~attnlab.results.PatchingResult` (``complete`` False when cancelled).
        started: Unix time the run started.
        seconds: wall time of the sweep, in seconds.
        prompts: the clean prompts (text).
        cache: the activations the detail panels read (None until recorded, or when cancelled).
    """

    controls: dict
    result: PatchingResult
    started: float
    seconds: float
    prompts: list[str] = field(default_factory=list, repr=False)
    cache: RunCache | None = field(default=None, repr=False)

    def label(self) -> str:
        c = self.controls
        state = "" if self.result.complete else ", cancelled"
        metric = "" if c.get("metric", "logit_diff") == "logit_diff" else f" · {c['metric']}"
        return (f"{c['task']} · {c['component']} · {c['direction']} · {c['n_prompts']} prompts · seed {c['seed']}"
                f" · {c['corruption']}{metric}{state}")

    def summary(self, index: int) -> dict:
        return {"index": index, "label": self.label(), "complete": self.result.complete,
                "seconds": round(self.seconds, 2), "started": self.started}


_MAX_PROMPTS = 512


class ExplorerController:
    """Everything the Explorer does, without a front end.

    Args:
        model: the backend to analyse (:func:`attnlab.load_model`).
        task: a registered task name (``"ioi"``) or an :class:`~attnlab.explorer.tasks.ExplorerTask`.
        n_prompts, seed, corruption, component, direction: initial control values (see :meth:`set_control`).
        metric: what the sweep and the head panel's ablations measure: a built-in name (``"logit_diff"``, the
            default; ``"kl_div"``, ``"prob"``, ``"logprob"``, ``"accuracy"``), a :class:`~attnlab.metrics.Metric`
            or a callable (see :mod:`attnlab.metrics`); a custom one joins the metric menu under its name.
        task_options: extra keyword arguments for the task's dataset builder (e.g. ``names=[...]`` for IOI).
        memory_budget_mb: passed to :func:`~attnlab.patching.engine.run_sweep`.

    Raises:
        ExplorerError: an initial control value is invalid (an unknown metric too).
        TaskError: unknown task.
    """

    CONTROLS = ("task", "n_prompts", "seed", "corruption", "component", "direction", "metric")

    def __init__(self, model: Backend, task: "str | ExplorerTask" = "ioi", *, n_prompts: int = 16, seed: int = 0,
                 corruption: str | None = None, component: str = "heads", direction: str = "denoising",
                 metric: MetricLike = "logit_diff", task_options: dict | None = None,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        self.model = model
        self.task_options = dict(task_options or {})
        self.memory_budget_mb = float(memory_budget_mb)
        self._listeners: list[Callable[[str], None]] = []
        spec = get_task(task)
        self._tasks = {**registered_tasks(), spec.name: spec}
        self._tasks.setdefault(CUSTOM_TASK, custom_prompts_task())  # "your own prompts" (set_prompts)
        self._metrics: dict[str, Metric] = dict(METRICS)
        self.controls: dict = {"task": spec.name, "n_prompts": 16, "seed": 0,
                               "corruption": spec.corruptions[0], "component": "heads", "direction": "denoising",
                               "metric": "logit_diff"}
        for name, value in (("n_prompts", n_prompts), ("seed", seed), ("component", component),
                            ("direction", direction), ("metric", metric)):
            self.set_control(name, value)
        if corruption is not None:
            self.set_control("corruption", corruption)
        self.runs: list[ExplorerRun] = []
        self.current: int | None = None
        self.selected: Selection | None = None
        self.detail: dict | None = None
        self.detail_prompt = 0
        self.status = "idle"  # idle | running | done | cancelled | error
        self.message = ""
        self.comparison: dict | None = None  # the comparison view's payloads (see compare())
        self.comparison_result: PatchingResult | None = None
        self.progress = (0, 0)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- notification ---------------------------------------------------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` whenever state changes (``"controls"``, ``"status"``, ``"progress"``,
        ``"result"``, ``"selected"``, ``"detail"``, ``"history"``, ``"comparison"``)."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # -- controls -------------------------------------------------------------------------------------------------
    @property
    def task(self) -> ExplorerTask:
        """The selected task."""
        return self._tasks[self.controls["task"]]

    def options(self) -> dict:
        """The choices of every menu: tasks, corruptions per task, components, directions."""
        return {
            "tasks": [{"value": t.name, "label": t.title} for t in self._tasks.values()],
            "corruptions": {t.name: list(t.corruptions) for t in self._tasks.values()},
            "components": [{"value": k, "label": v} for k, v in COMPONENT_LABELS.items()],
            "directions": list(DIRECTIONS),
            "metrics": [{"value": k, "label": m.label} for k, m in self._metrics.items()],
            "max_prompts": _MAX_PROMPTS,
        }

    @property
    def metric(self) -> Metric:
        """The selected metric."""
        return self._metrics[self.controls["metric"]]

    def set_control(self, name: str, value) -> None:
        """Set one control, validating it first (the old value stays on error).

        Controls: ``task`` (a registered task), ``n_prompts`` (1..512), ``seed`` (int >= 0), ``corruption`` (one of
        the task's), ``component`` (``resid_pre``, ``attn_out``, ``mlp_out``, ``heads``, ``heads_by_pos``),
        ``direction`` (``denoising`` or ``noising``), ``metric`` (a name in the metric menu, or a
        :class:`~attnlab.metrics.Metric` / callable, which joins the menu under its name).

        Raises:
            ExplorerError: unknown control or invalid value; the message says what is allowed.
        """
        if name not in self.CONTROLS:
            raise ExplorerError(f"unknown control {name!r}; controls are {list(self.CONTROLS)}")
        if name == "task":
            if value not in self._tasks:
                raise ExplorerError(f"'task' must be one of {sorted(self._tasks)} (got {value!r})")
            new = {"task": value}
            if self.controls.get("corruption") not in self._tasks[value].corruptions:
                new["corruption"] = self._tasks[value].corruptions[0]
            self.controls.update(new)
        elif name == "n_prompts":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_PROMPTS:
                raise ExplorerError(f"'n_prompts' must be an integer in [1, {_MAX_PROMPTS}] (got {value!r}); a sweep "
                                    "needs at least one prompt")
            self.controls["n_prompts"] = value
        elif name == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ExplorerError(f"'seed' must be an integer >= 0 (got {value!r})")
            self.controls["seed"] = value
        elif name == "corruption":
            allowed = self.task.corruptions
            if value not in allowed:
                raise ExplorerError(f"'corruption' must be one of {list(allowed)} for task "
                                    f"{self.controls['task']!r} (got {value!r})")
            self.controls["corruption"] = value
        elif name == "component":
            if value not in COMPONENTS:
                raise ExplorerError(f"'component' must be one of {list(COMPONENT_LABELS)} (got {value!r})")
            if COMPONENTS[value].kind.value == "mlp_out" and not self.model.info.has_mlp:
                raise ExplorerError(f"{self.model.info.name} is attention-only: it has no MLP output to patch")
            self.controls["component"] = value
        elif name == "direction":
            if value not in DIRECTIONS:
                raise ExplorerError(f"'direction' must be one of {list(DIRECTIONS)} (got {value!r})")
            self.controls["direction"] = value
        elif name == "metric":
            self.controls["metric"] = self._add_metric(value).name
        self._emit("controls")

    def _add_metric(self, value) -> Metric:
        """Resolve a metric control value (a menu name, a built-in alias, a Metric or a callable) and add it to the
        menu."""
        if isinstance(value, str) and value in self._metrics:
            return self._metrics[value]
        if not (isinstance(value, (str, Metric)) or callable(value)):
            raise ExplorerError(f"'metric' must be one of {sorted(self._metrics)}, a Metric or a callable "
                                f"(got {value!r})")
        try:
            metric = get_metric(value)
        except MetricError as exc:
            raise ExplorerError(f"'metric' must be one of {sorted(self._metrics)}, a Metric or a callable "
                                f"(got {value!r}): {exc}") from None
        self._metrics[metric.name] = metric
        return metric

    # -- your own prompts -----------------------------------------------------------------------------------------
    def set_prompts(self, prompts, *, position_labels=None):
        """Run on your own prompts: check and tokenise them, then select the "your own prompts" task (its number of
        prompts set to the number of pairs). Nothing runs until :meth:`run`.

        Args:
            prompts: pasted lines (``"clean | corrupted | answer | distractor"`` a line, answers as words; see
                :meth:`PatchingDataset.from_text <attnlab.tasks.base.PatchingDataset.from_text>`), a
                :class:`~attnlab.tasks.custom.PromptPair` or a list of them (answers as exact text), or a
                :class:`~attnlab.tasks.base.PatchingDataset` (e.g. from :meth:`PatchingDataset.from_prompts`).
            position_labels: one label per token position (default: the tokens' texts).

        Returns:
            The :class:`~attnlab.tasks.base.PatchingDataset` the task now runs on.

        Raises:
            DatasetError, TokenizationError, ArgumentTypeError: the prompts fail a check (misaligned clean and
                corrupted prompts, answers that are not single tokens ...); the message says what to change, and the
                previous prompts are kept.
            ExplorerError: a run is in progress.
        """
        from attnlab.tasks.base import PatchingDataset, check_dataset
        from attnlab.tasks.custom import PromptPair

        if self.running:
            raise ExplorerError("a run is in progress; cancel it or wait before changing the prompts")
        if isinstance(prompts, PatchingDataset):
            dataset = prompts
            check_dataset(self.model, dataset, analysis="the Explorer")
        elif isinstance(prompts, str):
            dataset = PatchingDataset.from_text(self.model, prompts, position_labels=position_labels)
        else:
            pairs = [prompts] if isinstance(prompts, PromptPair) else list(prompts)
            if not pairs or not all(isinstance(p, PromptPair) for p in pairs):
                raise ExplorerError("set_prompts takes pasted lines (a string), PromptPair(s) or a PatchingDataset")
            dataset = PatchingDataset.from_prompts(
                self.model, [p.clean for p in pairs], [p.corrupted for p in pairs], [p.answer for p in pairs],
                [p.distractor for p in pairs], position_labels=position_labels)
        self._tasks[CUSTOM_TASK] = custom_prompts_task(dataset)
        self.controls.update({"task": CUSTOM_TASK, "corruption": self._tasks[CUSTOM_TASK].corruptions[0],
                              "n_prompts": min(len(dataset), _MAX_PROMPTS)})
        self._emit("controls")
        return dataset

    @property
    def custom_dataset(self):
        """The dataset of the "your own prompts" task (None until :meth:`set_prompts`)."""
        try:
            return self._tasks[CUSTOM_TASK].build(self.model, _MAX_PROMPTS)
        except ExplorerError:
            return None

    # -- runs -----------------------------------------------------------------------------------------------------
    def dataset(self):
        """Build the dataset of the current controls (cheap: tokenisation only).

        Raises:
            DatasetError, TokenizationError: from the task (e.g. names that are not single tokens).
        """
        c = self.controls
        return self.task.build(self.model, c["n_prompts"], seed=c["seed"], corruption=c["corruption"],
                               **self.task_options)

    def run(self) -> ExplorerRun:
        """Run the sweep of the current controls (blocking), record it in the history and make it current.

        Progress goes to :attr:`progress` (passes done, total); :meth:`cancel` (from another thread, e.g. the
        widget's Cancel button) stops after the current batched pass and keeps every finished cell (the result is
        marked incomplete). After the sweep, the activations the detail panels need are recorded once
        (:class:`~attnlab.explorer.details.RunCache`).

        Raises:
            ExplorerError: a run is already in progress.
            DatasetError, TokenizationError, MetricError, SiteError: bad input, raised before the sweep starts.
        """
        if not self._lock.acquire(blocking=False):
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")
        try:
            self._stop.clear()
            self._set_status("running", "building the dataset")
            controls = dict(self.controls)
            started = time.time()
            try:
                dataset = self.dataset()
                self.progress = (0, 0)
                self._set_status("running", f"sweeping {controls['component']} ({controls['direction']}) "
                                            f"over {len(dataset)} prompts")
                metric = self._metrics[controls["metric"]]
                result = run_sweep(self.model, dataset, controls["component"], direction=controls["direction"],
                                   memory_budget_mb=self.memory_budget_mb, progress=False,
                                   on_pass=self._on_pass, should_stop=self._stop.is_set, metric=metric)
                seconds = time.time() - started
                run = ExplorerRun(controls=controls, result=result, started=started, seconds=seconds,
                                  prompts=list(dataset.clean_prompts))
                self.runs.append(run)  # kept even if recording the details fails below
                self._show(len(self.runs) - 1)
                self._emit("history")
                if not self._stop.is_set():
                    self._set_status("running", "recording activations for the detail panels")
                    run.cache = RunCache(self.model, dataset, metric=metric)
            except Exception as exc:
                self._set_status("error", f"{type(exc).__name__}: {exc}")
                raise
            if result.complete:
                self._set_status("done", f"finished in {run.seconds:.1f} s")
            else:
                done = len(result.layers_done)
                self._set_status("cancelled", f"cancelled after {done} of {result.values.shape[0]} layers; "
                                              "the finished cells are kept")
            return run
        finally:
            self._lock.release()

    def run_in_background(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (the kernel stays free to receive Cancel) and return the thread.
        Errors end up in :attr:`status` and :attr:`message`."""
        if self._lock.locked():
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")

        def target():
            try:
                self.run()
            except Exception:  # already reported through status/message
                pass

        thread = threading.Thread(target=target, name="attnlab-explorer-run", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        """Ask the running sweep to stop after its current batched pass (no-op when idle)."""
        if self._lock.locked():
            self._stop.set()
            self._set_status("running", "cancelling after the current pass")

    @property
    def running(self) -> bool:
        return self._lock.locked()

    def _on_pass(self, done: int, total: int) -> None:
        self.progress = (done, total)
        self._emit("progress")

    def _set_status(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        self._emit("status")

    # -- history --------------------------------------------------------------------------------------------------
    @property
    def result(self) -> PatchingResult | None:
        """The result on display (None before the first run)."""
        return None if self.current is None else self.runs[self.current].result

    def history(self) -> list[dict]:
        """One summary per run: index, label, complete, seconds."""
        return [run.summary(i) for i, run in enumerate(self.runs)]

    def show_run(self, index: int) -> None:
        """Display run ``index`` of the history again (its heatmap; the selection is cleared).

        Raises:
            ExplorerError: no such run.
        """
        self._check_run(index)
        self._show(index)

    def _show(self, index: int) -> None:
        self.current = index
        self.selected = None
        self.detail = None
        self._emit("result")
        self._emit("selected")
        self._emit("detail")

    def export_run(self, index: int, path: str | Path) -> Path:
        """Save run ``index``'s result as JSON (reload with :meth:`PatchingResult.load`), with its controls.

        Raises:
            ExplorerError: no such run.
            ResultFileError: the file cannot be written (its folder does not exist ...); written atomically, so an
                existing file is left unchanged.
        """
        from attnlab.serialisation import write_text

        return write_text(path, self.export_json(index), what="Explorer run")

    def export_json(self, index: int) -> str:
        """Run ``index``'s result as a JSON string (what :meth:`export_run` writes)."""
        run = self._check_run(index)
        data = run.result.to_dict()
        data["settings"] = {**data["settings"], "explorer_controls": run.controls}
        return json.dumps(data, allow_nan=False)

    # -- comparison of two runs -----------------------------------------------------------------------------------
    def compare(self, a: int, b: int, *, scores: str = "normalised"):
        """Compare runs ``a`` and ``b`` of the history: their difference ``a - b`` cell by cell, and the comparison
        view's payloads (A, B and A - B on one colour scale) in :attr:`comparison`.

        Args:
            a, b: run indices (as in :meth:`history`).
            scores: ``"normalised"`` (difference of normalised scores) or ``"raw"`` (of the patched metric's mean,
                in the metric's units). See :mod:`attnlab.compare_runs`.

        Returns:
            The difference, a :class:`~attnlab.results.PatchingResult` with ``analysis="patching_difference"``.

        Raises:
            ExplorerError: no such run, or the runs cannot be compared (different component or grid; raw scores of
                different metrics): the message says why; :attr:`comparison` then holds the error for the view.
        """
        from attnlab.compare_runs import RunComparisonError, comparison_payloads

        try:
            ra, rb = self._check_run(a), self._check_run(b)
            names = (f"#{a} {ra.label()}", f"#{b} {rb.label()}")
            payloads = comparison_payloads(ra.result, rb.result, scores=scores, names=names)
        except (RunComparisonError, ExplorerError) as exc:
            self.comparison = {"error": str(exc), "a_index": a, "b_index": b, "scores": scores}
            self._emit("comparison")
            raise ExplorerError(f"cannot compare runs {a!r} and {b!r}: {exc}") from None
        diff = payloads.pop("difference")
        self.comparison = {**payloads, "a_index": a, "b_index": b, "names": list(names)}
        self.comparison_result = diff
        self._emit("comparison")
        return diff

    def close_comparison(self) -> None:
        """Hide the comparison view."""
        self.comparison, self.comparison_result = None, None
        self._emit("comparison")

    def _check_run(self, index) -> ExplorerRun:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.runs):
            raise ExplorerError(f"no run {index!r}: the history has {len(self.runs)} run(s) (indices from 0)")
        return self.runs[index]

    # -- selection ------------------------------------------------------------------------------------------------
    def select(self, target) -> Selection | None:
        """Select a cell of the current result and compute its detail panel.

        Args:
            target: ``"L9H9"``, ``"L9H9 @ END"``, ``"L3 @ S2"`` (names as in the heatmap), a ``(layer, head)``
                pair (head sweeps), a ``{"row": i, "col": j}`` heatmap cell, a :class:`Selection`, or None to
                clear.

        Returns:
            The selection.

        Raises:
            ExplorerError: no result yet, or the target is not a cell of the current result.
        """
        if target is None:
            self.selected, self.detail = None, None
            self._emit("selected")
            self._emit("detail")
            return None
        result = self.result
        if result is None:
            raise ExplorerError("nothing to select yet: run a sweep first (explorer.run())")
        idx = self._cell_index(result, target)
        self.selected = _selection(result, idx)
        self._emit("selected")
        self.refresh_detail()
        return self.selected

    def select_head(self, layer: int, head: int) -> Selection:
        """Select head ``(layer, head)`` whatever the current sweep is (e.g. a node clicked in a circuit view).

        On a head sweep this is :meth:`select`; on a residual-stream or MLP sweep the head's panel is shown without a
        heatmap cell (its attention, attribution and ablation need only the run's recorded activations).

        Raises:
            ExplorerError: no run yet, or the head is outside the model.
        """
        info = self.model.info
        if not (isinstance(layer, int) and isinstance(head, int) and 0 <= layer < info.n_layers
                and 0 <= head < info.n_heads):
            raise ExplorerError(f"head ({layer!r}, {head!r}) is outside {info.name} ({info.n_layers} layers x "
                                f"{info.n_heads} heads)")
        result = self.result
        if result is None:
            raise ExplorerError("nothing to select yet: run a sweep first (explorer.run())")
        if "head" in result.dims:
            return self.select(f"L{layer}H{head}")
        self.selected = Selection(layer, head, None, f"L{layer}H{head}")
        self._emit("selected")
        self.refresh_detail()
        return self.selected

    def set_detail_prompt(self, prompt: int) -> None:
        """Choose the prompt the detail panel's attention pattern and logit lens show.

        Raises:
            ExplorerError: prompt out of range.
        """
        n = self.result.per_prompt.shape[-1] if self.result is not None else 0
        if isinstance(prompt, bool) or not isinstance(prompt, int) or not 0 <= prompt < max(n, 1):
            raise ExplorerError(f"'prompt' must be in [0, {n}) (got {prompt!r})")
        self.detail_prompt = prompt
        if self.selected is not None:
            self.refresh_detail()

    def refresh_detail(self) -> dict | None:
        """Recompute the detail panel of the current selection."""
        if self.selected is None or self.current is None:
            return None
        run = self.runs[self.current]
        if run.cache is None:
            self.detail = {"kind": "unavailable", "name": self.selected.name,
                           "message": "details need a finished run: this run was cancelled before its activations "
                                      "were recorded; run again to click through it"}
        else:
            sel = self.selected
            prompt = min(self.detail_prompt, run.cache.n_prompts - 1)
            if sel.head is not None:
                self.detail = head_detail(run.cache, sel.layer, sel.head, prompt=prompt,
                                          answer_names=self._tasks[run.controls["task"]].answer_names)
                self.detail["selected_pos"] = sel.pos
                in_sweep = "head" in run.result.dims
                self.detail["patching"] = self._cell_summary(run.result, sel) if in_sweep else None
            else:
                idx = self._cell_index(run.result, sel)
                self.detail = cell_detail(run.cache, run.result, idx, prompt=prompt)
        self._emit("detail")
        return self.detail

    def _cell_summary(self, result: PatchingResult, sel: Selection) -> dict:
        from attnlab.explorer.details import _stats

        idx = self._cell_index(result, sel)
        from attnlab.render.views import metric_label

        out = {"value": float(result.values[idx]), "component": result.component, "direction": result.direction,
               "metric": {"name": result.metric, "label": metric_label(result)}}
        if result.per_prompt is not None:
            out["patched_metric"] = _stats(result.per_prompt[idx])
            if result.metric == "logit_diff":
                out["patched_logit_diff"] = out["patched_metric"]
        return out

    def _cell_index(self, result: PatchingResult, target) -> tuple[int, ...]:
        dims = result.dims
        if isinstance(target, Selection):
            want = {"layer": target.layer, "head": target.head, "pos": target.pos}
            try:
                return tuple(result.index[d].index(want[d]) for d in dims)
            except ValueError:
                raise ExplorerError(f"{target.name} is not a cell of the current result") from None
        if isinstance(target, dict) and "row" in target and "col" in target:
            return self._from_rowcol(result, int(target["row"]), int(target["col"]))
        if isinstance(target, (tuple, list)) and len(target) == 2 and all(isinstance(x, int) for x in target):
            if "head" not in dims:
                raise ExplorerError(f"a (layer, head) pair selects a head, but the current result is "
                                    f"{result.component!r}; select a cell by name like 'L3 @ END'")
            target = f"L{target[0]}H{target[1]}"
        if isinstance(target, str):
            names = {}
            for idx in _all_cells(result):
                names[result.component_name(idx)] = idx
            key = target.strip()
            if key in names:
                return names[key]
            if "head" in dims and "pos" in dims and "@" not in key:  # a head of a by-position sweep: its END cell
                end = [i for i, lab in enumerate(result.labels["pos"]) if lab == "END"]
                for p in (end or [len(result.labels["pos"]) - 1]):
                    cand = f"{key} @ {result.labels['pos'][p]}"
                    if cand in names:
                        return names[cand]
            example = next(iter(names))
            raise ExplorerError(f"{target!r} is not a cell of the current {result.component!r} result; use a name "
                                f"like {example!r}")
        raise ExplorerError(f"cannot select {target!r}: pass a name like 'L9H9', a (layer, head) pair, or None")

    @staticmethod
    def _from_rowcol(result: PatchingResult, row: int, col: int) -> tuple[int, ...]:
        """Map a heatmap cell to a result index (by-position head sweeps draw rows L{l}H{h}, columns positions)."""
        shape = result.values.shape
        if len(shape) == 3:
            n_heads = shape[1]
            idx = (row // n_heads, row % n_heads, col)
        else:
            idx = (row, col)
        if any(not 0 <= i < n for i, n in zip(idx, shape)):
            raise ExplorerError(f"heatmap cell (row {row}, col {col}) is outside the result")
        return idx


def _all_cells(result: PatchingResult):
    import itertools

    return itertools.product(*(range(n) for n in result.values.shape))


def _selection(result: PatchingResult, idx: tuple[int, ...]) -> Selection:
    named = dict(zip(result.dims, idx))
    return Selection(
        layer=result.index["layer"][named["layer"]],
        head=result.index["head"][named["head"]] if "head" in named else None,
        pos=result.index["pos"][named["pos"]] if "pos" in named else None,
        name=result.component_name(idx),
    )
