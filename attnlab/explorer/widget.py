"""``attnlab.Explorer``: the controller's state as a Jupyter widget (ipywidgets protocol, via anywidget).

The front end is TypeScript in ``labext/src/explorer.ts`` (it reuses labext's heatmap), bundled by labext's build into
``attnlab/explorer/static/explorer.js`` and shipped to the browser through anywidget's ``_esm`` trait, so it runs
wherever Jupyter widgets run (JupyterLab, Notebook 7, VS Code, Colab). Front ends that cannot show widgets at all
(nbviewer, GitHub, HTML exports) show the ``text/html`` part of the output instead: a one-line note and, when the
explorer has a result at display time, its static heatmap.

Synced state (Python <-> browser): ``controls``, ``options``, ``status``, ``message``, ``progress``, ``baselines``,
``heatmap``, ``run_history``, ``current_run``, ``selected_name``, ``selected_cell``, ``detail_payload``, ``detail_prompt``,
``prompts``, ``circuit``, ``comparison``, ``custom_prompts``. Actions arrive as custom messages ``{"type": "run" | "cancel" | "select" |
"show_run" | "export" | "prompt" | "controls" | "compare" | "close_compare" | "custom_prompts", ...}``.

Your own prompts: the form's "Use these prompts" sends ``{"type": "custom_prompts", "clean", "corrupted", "answer",
"distractor", "lines"}``; the answer comes back in ``custom_prompts`` (the refusal's explanation, or a preview).
"""

import html
import threading

import anywidget
import traitlets as t

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError
from attnlab.explorer.cell_display import mark_displayed, refresh_in_cell, show_in_cell, shown_by_run
from attnlab.explorer.controller import ExplorerController, ExplorerError, Selection
from attnlab.explorer.tasks import ExplorerTask
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.render.views import metric_label
from attnlab.metrics import MetricLike
from attnlab.widget_support import front_end

__all__ = ["Explorer"]

FALLBACK_NOTE = ("attnlab Explorer: this front end cannot run Jupyter widgets, so a static copy is shown; open the "
                 "notebook in JupyterLab (pip install attnlab) to click through it.")


def _front_end() -> str:
    return front_end("attnlab.explorer", "explorer.js", "the Explorer")


class Explorer(anywidget.AnyWidget):
    """Click through an activation-patching analysis: run a sweep, click a cell, read what the kernel computes.

    ``attnlab.Explorer(model, task)`` in a notebook cell shows controls (task, prompts, seed, corruption, component,
    direction), a Run button with a progress bar and Cancel, the clean and corrupted baselines, the result heatmap,
    the run history, and a detail panel for the selected cell: for a head, its attention pattern on a chosen prompt,
    its average attention from END to each named position, its direct logit attribution to the answer and the
    distractor, and the effect of mean and zero ablation with the per-prompt spread; for a residual-stream, attention
    or MLP cell, the per-prompt effect and the logit lens at that layer and position. See
    :mod:`attnlab.explorer.details` for the definitions and papers.

    Args:
        model: a loaded backend (:func:`attnlab.load_model`).
        task: a registered task name (``"ioi"``) or an :class:`~attnlab.explorer.tasks.ExplorerTask`.
        n_prompts, seed, corruption, component, direction, metric, task_options, memory_budget_mb: initial
            settings, as in :class:`~attnlab.explorer.controller.ExplorerController`.

    Python API: :meth:`run` (blocking; ``wait=False`` runs in the background), :meth:`cancel`, :attr:`selected`
    (get, or set with ``"L9H9"`` / ``(9, 9)`` / None), :attr:`result`, :attr:`detail`, :attr:`history`,
    :meth:`show_run`, :meth:`export_run`, :meth:`compare`; the plain-Python logic is :attr:`controller`.

    Raises:
        ExplorerError, TaskError: invalid initial settings or unknown task.
        AttnlabError: the front-end bundle is missing (a source checkout that was never built).
    """

    _esm = t.Unicode("").tag(sync=True)
    controls = t.Dict().tag(sync=True)
    options = t.Dict().tag(sync=True)
    model_name = t.Unicode("").tag(sync=True)
    status = t.Unicode("idle").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    progress = t.List([0, 0]).tag(sync=True)
    baselines = t.Dict().tag(sync=True)
    heatmap = t.Dict().tag(sync=True)
    run_history = t.List().tag(sync=True)
    current_run = t.Int(-1).tag(sync=True)
    selected_name = t.Unicode("").tag(sync=True)
    selected_cell = t.List([]).tag(sync=True)
    detail_payload = t.Dict().tag(sync=True)
    detail_prompt = t.Int(0).tag(sync=True)
    prompts = t.List().tag(sync=True)
    circuit = t.Dict().tag(sync=True)
    comparison = t.Dict(help="two runs compared: heatmap payloads a, b, diff on one scale (or an error)").tag(
        sync=True)
    custom_prompts = t.Dict(help="the 'Your own prompts' form's state: {error} (why the prompts were refused, as "
                                 "text) or {pairs, n_pos, clean, corrupted, changed, answers} (a preview of pair 0)"
                            ).tag(sync=True)

    def __init__(self, model: Backend, task: "str | ExplorerTask" = "ioi", *, n_prompts: int = 16, seed: int = 0,
                 corruption: str | None = None, component: str = "heads", direction: str = "denoising",
                 metric: MetricLike = "logit_diff", task_options: dict | None = None,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        esm = _front_end()
        self.controller = ExplorerController(
            model, task, n_prompts=n_prompts, seed=seed, corruption=corruption, component=component,
            direction=direction, metric=metric, task_options=task_options, memory_budget_mb=memory_budget_mb)
        super().__init__(_esm=esm)  # the front end must be there when the comm opens
        self._thread: threading.Thread | None = None
        c = self.controller
        self.options = c.options()
        self.controls = dict(c.controls)
        self.model_name = model.info.name
        c.on_change(self._sync)
        self.on_msg(self._on_message)

    # -- Python API -----------------------------------------------------------------------------------------------
    def run(self, *, wait: bool = True):
        """Run the sweep of the current controls.

        Args:
            wait: block until done and return the :class:`~attnlab.explorer.controller.ExplorerRun` (interrupt the
                kernel to stop early: the finished cells are kept); False starts it in the background (the Cancel
                button works) and returns the thread.

        In a notebook, the widget is first displayed in the cell that calls ``run()`` (unless that cell displayed it
        already), so its progress bar, pass count and time estimate show while the sweep runs; a trailing
        ``explorer`` line in the same cell then shows only its one-line text instead of a second copy.

        Raises:
            ExplorerError: a run is already in progress. With ``wait=True``, the task's and the engine's input
            errors (raised before the sweep starts).
        """
        shown = show_in_cell(self)
        if wait:
            try:
                return self.controller.run()
            finally:
                if shown:
                    refresh_in_cell(self)
        self._thread = self.controller.run_in_background()
        return self._thread

    def cancel(self) -> None:
        """Stop a background run after its current batched pass; the finished cells are kept."""
        self.controller.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def selected(self) -> Selection | None:
        """The selected cell (compares equal to its name: ``explorer.selected == "L9H9"``); set it to select."""
        return self.controller.selected

    @selected.setter
    def selected(self, target) -> None:
        self.controller.select(target)

    @property
    def result(self):
        """The :class:`~attnlab.results.PatchingResult` on display (None before the first run)."""
        return self.controller.result

    @property
    def detail(self) -> dict | None:
        """The detail panel's data for the selected cell (JSON-ready dict; None when nothing is selected)."""
        return self.controller.detail

    @property
    def history(self) -> list[dict]:
        """One summary per run (index, label, complete, seconds); re-show with :meth:`show_run`."""
        return self.controller.history()

    def show_circuit(self, circuit, *, curve=None, max_edges: int | None = None) -> None:
        """Show a circuit (:class:`~attnlab.circuits.Circuit`) under the heatmap, as labext's circuit view with its
        edge slider (every edge drawn up to ``max_edges``, default :data:`attnlab.render.circuit.DRAW_LIMIT`);
        clicking a head node opens that head's detail panel here. ``None`` removes it.

        Raises:
            ExplorerError: the circuit was found on another task than the one this Explorer shows (its head panels
                would show the heads on the wrong prompts); open it under an Explorer of its own task.
        """
        if circuit is None:
            self.circuit = {}
            return
        record = circuit if isinstance(circuit, dict) else circuit.to_dict()
        theirs = dict(record.get("task") or {}).get("task")
        c = self.controller
        ours = {c.controls["task"]} if c.current is None else {c.runs[c.current].controls["task"],
                                                                 c.runs[c.current].result.task.get("task")}
        if theirs is not None and theirs not in ours:
            shown = sorted(str(x) for x in ours if x)
            raise ExplorerError(f"this circuit was found on task {theirs!r}, but this Explorer shows {shown[0]!r}: its "
                                f"head panels would show the circuit's heads on {shown[0]!r} prompts. Show it under an "
                                f"Explorer of its own task: attnlab.Explorer(model, {theirs!r}).show_circuit(circuit)")
        from attnlab.render.circuit import circuit_payload

        self.circuit = dict(circuit_payload(circuit, curve=curve, max_edges=max_edges))

    def show_run(self, index: int) -> None:
        """Display run ``index`` of the history again."""
        self.controller.show_run(index)

    def compare(self, a: int, b: int, *, scores: str = "normalised"):
        """Compare runs ``a`` and ``b`` of the history side by side, with their difference ``a - b`` (shown under
        the heatmap; see :meth:`ExplorerController.compare`). Returns the difference result.

        Raises:
            ExplorerError: no such run, or runs that cannot be compared (the view shows why too).
        """
        return self.controller.compare(a, b, scores=scores)

    def export_run(self, index: int, path):
        """Save run ``index`` as JSON (reload with ``PatchingResult.load``). Returns the path."""
        return self.controller.export_run(index, path)

    def set_prompts(self, prompts, *, position_labels=None):
        """Run on your own prompts (pasted lines, PromptPair(s) or a PatchingDataset; see
        :meth:`ExplorerController.set_prompts`): the "your own prompts" task is selected; press Run (or call
        :meth:`run`). Returns the dataset.

        Raises:
            DatasetError, TokenizationError, ArgumentTypeError: the prompts fail a check (the message, also shown in
                the form, says what to change).
        """
        seq = int(self.custom_prompts.get("seq", 0)) + 1  # a repeated refusal still reaches the form
        try:
            dataset = self.controller.set_prompts(prompts, position_labels=position_labels)
        except AttnlabError as exc:
            self.custom_prompts = {"error": f"{type(exc).__name__}: {exc}", "seq": seq}
            raise
        self.custom_prompts = {**_custom_preview(self.controller.model, dataset), "seq": seq}
        return dataset

    def set_control(self, name: str, value) -> None:
        """Set a control from Python (validated; see :meth:`ExplorerController.set_control`)."""
        self.controller.set_control(name, value)

    # -- state -> browser -----------------------------------------------------------------------------------------
    def _sync(self, what: str) -> None:
        c = self.controller
        with self.hold_sync():
            if what == "controls":
                self.controls = dict(c.controls)
                self.options = c.options()  # a custom metric joins the metric menu
            elif what == "status":
                self.status, self.message = c.status, c.message
            elif what == "progress":
                self.progress = list(c.progress)
            elif what == "history":
                self.run_history = c.history()
            elif what == "result":
                result = c.result
                self.current_run = -1 if c.current is None else c.current
                self.heatmap = {} if result is None else dict(result.heatmap_payload())
                self.baselines = {} if result is None else {
                    **result.baselines, "label": metric_label(result),
                    "warnings": [w.get("message", "") for w in result.warnings or []]}
                self.prompts = [] if c.current is None else list(c.runs[c.current].prompts)
            elif what == "selected":
                sel = c.selected
                self.selected_name = "" if sel is None else sel.name
                self.selected_cell = [] if sel is None else self._heatmap_cell(sel)
            elif what == "detail":
                self.detail_payload = c.detail or {}
                self.detail_prompt = c.detail_prompt
            elif what == "comparison":
                self.comparison = dict(c.comparison or {})

    def _heatmap_cell(self, sel: Selection) -> list[int]:
        result = self.controller.result
        if sel.head is not None and "head" not in result.dims:
            return []  # a head picked from a circuit while a residual/MLP sweep is shown
        idx = self.controller._cell_index(result, sel)
        if len(idx) == 3:
            return [idx[0] * result.values.shape[1] + idx[1], idx[2]]
        return list(idx)

    # -- browser -> Python ----------------------------------------------------------------------------------------
    def _on_message(self, _widget, content, _buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        c = self.controller
        try:
            if kind == "run":
                if content.get("controls"):
                    self._apply_controls(content["controls"])
                self._thread = c.run_in_background()
            elif kind == "cancel":
                c.cancel()
            elif kind == "controls":
                self._apply_controls(content.get("controls", {}))
            elif kind == "select":
                if "row" in content:
                    c.select({"row": content["row"], "col": content["col"]})
                else:
                    c.select(content.get("name") or None)
            elif kind == "select_head":
                c.select_head(int(content["layer"]), int(content["head"]))
            elif kind == "prompt":
                c.set_detail_prompt(int(content.get("index", 0)))
            elif kind == "show_run":
                c.show_run(int(content.get("index", -1)))
            elif kind == "compare":
                c.compare(int(content.get("a", -1)), int(content.get("b", -1)),
                          scores=str(content.get("scores", "normalised")))
            elif kind == "close_compare":
                c.close_comparison()
            elif kind == "custom_prompts":
                self._custom_prompts_message(content)
            elif kind == "export":
                index = int(content.get("index", -1))
                self.send({"type": "export", "filename": f"attnlab-run-{index}.json", "content": c.export_json(index)})
        except AttnlabError as exc:
            self.message = f"{type(exc).__name__}: {exc}"
            if kind == "run":
                self.status = "error"
            self.controls = dict(c.controls)  # undo a rejected control in the view
        except Exception as exc:  # never let a click kill the comm; show what happened
            self.status, self.message = "error", f"{type(exc).__name__}: {exc}"

    def _custom_prompts_message(self, content: dict) -> None:
        """The form's "Use these prompts": the pasted lines when there are any, else the four fields. A refusal
        shows in the form (its message says what to change); the previous prompts are kept."""
        from attnlab.tasks.custom import prompt_pair

        lines = content.get("lines") or ""
        try:
            if lines.strip():
                source = lines
            else:
                source = prompt_pair(*(content.get(k) or "" for k in ("clean", "corrupted", "answer", "distractor")))
        except AttnlabError as exc:
            seq = int(self.custom_prompts.get("seq", 0)) + 1
            self.custom_prompts = {"error": f"{type(exc).__name__}: {exc}", "seq": seq}
            return
        try:
            self.set_prompts(source)
        except AttnlabError:
            pass  # shown in the form by set_prompts

    def _apply_controls(self, new: dict) -> None:
        c = self.controller
        for name in ExplorerController.CONTROLS:
            if name in new and new[name] != c.controls.get(name):
                c.set_control(name, new[name])

    # -- display --------------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        if shown_by_run(self):  # run() displayed the widget in this cell already: no second copy
            return {"text/plain": repr(self)}, {}
        mark_displayed(self)
        data, meta = super()._repr_mimebundle_(**kwargs)
        data["text/html"] = self._fallback_html()
        return data, meta

    def _fallback_html(self) -> str:
        from attnlab.render.views import static_heatmap_html

        note = f'<p style="font-style:italic">{html.escape(FALLBACK_NOTE)}</p>'
        result = self.controller.result
        if result is None:
            return note + "<p>(no sweep run yet)</p>"
        sel = self.controller.selected
        extra = f"<p>selected: {html.escape(sel.name)}</p>" if sel is not None else ""
        return note + static_heatmap_html(result.heatmap_payload()) + extra

    def __repr__(self) -> str:
        c = self.controller
        return (f"<attnlab.Explorer {c.model.info.name!r} task={c.controls['task']!r} "
                f"component={c.controls['component']!r} runs={len(c.runs)} selected={str(c.selected or '')!r}>")


def _custom_preview(model, dataset) -> dict:
    """What the form shows once prompts are accepted: the number of pairs and tokens, and pair 0's tokens (clean and
    corrupted, the changed positions marked) with its answer and distractor as text."""
    texts = dataset.metadata.get("answer_texts") or [["", ""]]
    changed = (dataset.clean_tokens[0] != dataset.corrupted_tokens[0]).nonzero().flatten().tolist()
    return {"pairs": len(dataset), "n_pos": dataset.n_pos,
            "clean": model.to_str_tokens(dataset.clean_tokens[0]),
            "corrupted": model.to_str_tokens(dataset.corrupted_tokens[0]),
            "changed": changed, "answers": list(texts[0])}


__all__ += ["ExplorerError"]
