"""``attnlab.RecallReasoningWorkbench``: the workbench controller's state as a Jupyter widget (anywidget).

The front end is TypeScript in ``labext/src/workbench.ts`` (it reuses labext's dissociation view), bundled by labext's
build into ``attnlab/dissociation/static/workbench.js`` and shipped to the browser through anywidget's ``_esm``
trait, so it runs wherever Jupyter widgets run. Front ends that cannot show widgets (nbviewer, GitHub, HTML exports)
show the ``text/html`` part of the output instead: a one-line note and, when a sweep has run, its static table.

Synced state (Python <-> browser): ``controls``, ``options``, ``model_name``, ``status``, ``message``, ``progress``,
``counts``, ``payload`` (the dissociation view's payload), ``selected_name``, ``detail_payload``. Actions arrive as
custom messages ``{"type": "run" | "cancel" | "select" | "controls" | "pattern_item", ...}``.
"""

import html
import threading

import anywidget
import traitlets as t

from attnlab.backends.base import Backend
from attnlab.dissociation.controller import ItemBuilder, WorkbenchController, WorkbenchRun
from attnlab.errors import AttnlabError
from attnlab.explorer.cell_display import mark_displayed, refresh_in_cell, show_in_cell, shown_by_run
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.widget_support import front_end, json_safe

__all__ = ["RecallReasoningWorkbench"]

FALLBACK_NOTE = ("attnlab recall-versus-reasoning workbench: this front end cannot run Jupyter widgets, so a static "
                 "copy is shown; open the notebook in JupyterLab (pip install attnlab) to click through it.")


def _front_end() -> str:
    return front_end("attnlab.dissociation", "workbench.js", "the workbench")


class RecallReasoningWorkbench(anywidget.AnyWidget):
    """Find the components a model needs for recall and those it needs for reasoning: choose, run, click, read.

    ``attnlab.RecallReasoningWorkbench(model)`` in a notebook cell shows controls (recall and reasoning families,
    granularity, ablation kind, items per family, seed, layers, item filter), Run with a progress bar and Cancel (the
    finished components are kept), the dissociation view (recall drop against reasoning drop with intervals, the drop
    matrices, the double-dissociation statement, the controls), and a detail panel for the clicked component: its
    attention from END on a recall and on a reasoning item (heads), and its effect on every item.

    Args:
        model: a loaded backend (:func:`attnlab.load_model`), local or remote.
        families, granularity, ablation, n_per_family, seed, layers, criterion, extra, build_items, metrics,
            n_bootstrap, correction, alpha, n_control_draws, memory_budget_mb: as in
            :class:`~attnlab.dissociation.controller.WorkbenchController`.

    Python API: :meth:`run` (blocking; ``wait=False`` runs in the background), :meth:`cancel`, :meth:`wait`,
    :attr:`selected` (get, or set with ``"L3H2"`` / ``(3, 2)`` / None), :attr:`result`, :attr:`detail`,
    :meth:`set_control`; the plain-Python logic is :attr:`controller`.

    Raises:
        ExplorerError: invalid initial settings.
        AttnlabError: the front-end bundle is missing (a source checkout that was never built).
    """

    _esm = t.Unicode("").tag(sync=True)
    controls = t.Dict(help="the control values (see WorkbenchController.set_control)").tag(sync=True)
    options = t.Dict(help="the choices of every menu").tag(sync=True)
    model_name = t.Unicode("", help="the model's name").tag(sync=True)
    status = t.Unicode("idle", help="idle | running | done | cancelled | error").tag(sync=True)
    message = t.Unicode("", help="what the last action did, or its error").tag(sync=True)
    progress = t.List([0, 0], help="[passes done, passes planned]").tag(sync=True)
    counts = t.Dict(help="items per family after the filter: built, dropped, kept").tag(sync=True)
    payload = t.Dict(help="the dissociation view's payload (DissociationResult.payload())").tag(sync=True)
    selected_name = t.Unicode("", help="the selected component's name, '' for none").tag(sync=True)
    detail_payload = t.Dict(help="component_detail of the selection, for the detail panel").tag(sync=True)

    def __init__(self, model: Backend, *, families=None, granularity: str = "heads", ablation: str = "mean",
                 n_per_family: int = 8, seed: int = 0, layers=None, criterion: str = "top1", extra=(),
                 build_items: ItemBuilder | None = None, metrics=("accuracy", "logit_diff"),
                 n_bootstrap: int = 1000, correction: str = "holm", alpha: float = 0.05, n_control_draws: int = 5,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        esm = _front_end()
        self.controller = WorkbenchController(
            model, families=families, granularity=granularity, ablation=ablation, n_per_family=n_per_family,
            seed=seed, layers=layers, criterion=criterion, extra=extra, build_items=build_items, metrics=metrics,
            n_bootstrap=n_bootstrap, correction=correction, alpha=alpha, n_control_draws=n_control_draws,
            memory_budget_mb=memory_budget_mb)
        super().__init__(_esm=esm)  # the front end must be there when the comm opens
        self._thread: threading.Thread | None = None
        c = self.controller
        self.options = c.options()
        self.controls = dict(c.controls)
        self.model_name = model.info.name
        c.on_change(self._sync)
        self.on_msg(self._on_message)

    # -- Python API -----------------------------------------------------------------------------------------------
    def run(self, *, wait: bool = True) -> "WorkbenchRun | threading.Thread":
        """Build the items and run the sweep of the current controls.

        Args:
            wait: block until done and return the :class:`~attnlab.dissociation.controller.WorkbenchRun`; False
                starts it in the background (the Cancel button works) and returns the thread.

        In a notebook, the widget is first displayed in the cell that calls ``run()`` (unless that cell displayed it
        already), so its progress bar shows while the sweep runs; a trailing ``workbench`` line in the same cell then
        shows only its one-line text instead of a second copy.

        Raises:
            ExplorerError: a run is already in progress. With ``wait=True``, the items' and the sweep's input errors
                (raised before any ablation).
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
        """Stop a background run after its current batched pass; the finished components are kept."""
        self.controller.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def selected(self) -> str | None:
        """The selected component's name (None for none); set it (``"L3H2"``, ``(3, 2)``, an index, None) to
        select, and the view follows."""
        return self.controller.selected

    @selected.setter
    def selected(self, target) -> None:
        self.controller.select(target)

    @property
    def result(self):
        """The :class:`~attnlab.dissociation.result.DissociationResult` on display (None before the first run)."""
        return self.controller.result

    @property
    def detail(self) -> dict | None:
        """The detail panel's data (:func:`~attnlab.dissociation.component_detail`; None when nothing is
        selected)."""
        return self.controller.detail

    def set_control(self, name: str, value) -> None:
        """Set a control from Python (validated; see :meth:`WorkbenchController.set_control`)."""
        self.controller.set_control(name, value)

    # -- state -> browser -----------------------------------------------------------------------------------------
    def _sync(self, what: str) -> None:
        c = self.controller
        with self.hold_sync():
            if what == "controls":
                self.controls = dict(c.controls)
            elif what == "status":
                self.status, self.message = c.status, c.message
            elif what == "progress":
                self.progress = list(c.progress)
            elif what == "result":
                run = c.current
                self.payload = {} if run is None else json_safe(run.result.payload())
                self.counts = {} if run is None else json_safe(run.items.counts)
            elif what == "selected":
                self.selected_name = c.selected or ""
            elif what == "detail":
                self.detail_payload = self._detail_payload()

    def _detail_payload(self) -> dict:
        c = self.controller
        if c.detail is None or c.result is None:
            return {}
        result = c.result
        j = result.metrics.index(c.detail["metric"])
        i = result.components.index(c.detail["component"])
        comp = self.payload.get("components", [])[i] if i < len(self.payload.get("components", [])) else {}
        return json_safe({**c.detail, "metric_label": result.metric_labels[j], "summary": comp,
                          "pattern_items": dict(c.pattern_items)})

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
                c.select(content.get("name") or None)
            elif kind == "pattern_item":
                c.set_pattern_item(int(content.get("row", -1)))
        except AttnlabError as exc:
            self.message = f"{type(exc).__name__}: {exc}"
            if kind == "run":
                self.status = "error"
            self.controls = dict(c.controls)  # undo a rejected control in the view
            self.selected_name = c.selected or ""
        except Exception as exc:  # never let a click kill the comm; show what happened
            self.status, self.message = "error", f"{type(exc).__name__}: {exc}"

    def _apply_controls(self, new: dict) -> None:
        c = self.controller
        for name in WorkbenchController.CONTROLS:
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
        note = f'<p style="font-style:italic">{html.escape(FALLBACK_NOTE)}</p>'
        result = self.controller.result
        if result is None:
            return note + "<p>(no sweep run yet)</p>"
        sel = self.controller.selected
        extra = f"<p>selected: {html.escape(sel)}</p>" if sel is not None else ""
        return note + result._repr_mimebundle_()["text/html"] + extra

    def __repr__(self) -> str:
        c = self.controller
        return (f"<attnlab.RecallReasoningWorkbench {c.model.info.name!r} granularity={c.controls['granularity']!r} "
                f"ablation={c.controls['ablation']!r} runs={len(c.runs)} selected={c.selected or ''!r}>")
