"""``attnlab.CircuitSearch``: the circuit-search controller's state as a Jupyter widget (anywidget).

The front end is TypeScript in ``labext/src/circuitsearch.ts`` (it reuses labext's circuit view and the Explorer's
head panel), bundled by labext's build into ``attnlab/circuit_search/static/circuitsearch.js`` and shipped through
anywidget's ``_esm`` trait, so it runs wherever Jupyter widgets run. Front ends without widgets (nbviewer, GitHub,
HTML exports) show the ``text/html`` part: a one-line note and, when a search has run, the circuit's static table.

Synced state (Python -> browser): ``controls``, ``options``, ``model_name``, ``status``, ``message``, ``progress``,
``eta``, ``run_history``, ``current_run``, ``circuit`` (the circuit view's payload: the run's circuit at the
slider's largest size), ``curve`` (the kernel's faithfulness at every size computed), ``shown_size``,
``detail_payload``, ``detail_prompt``, ``prompts``, ``comparison_summary``. Actions arrive as custom messages
``{"type": "run" | "cancel" | "controls" | "size" | "select_head" | "prompt" | "show_run" | "compare", ...}``.
"""

import html
import threading

import anywidget
import traitlets as t

from attnlab.backends.base import Backend
from attnlab.circuit_search.controller import CircuitSearchController, SearchRun
from attnlab.errors import AttnlabError
from attnlab.explorer.tasks import ExplorerTask
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import MetricLike
from attnlab.widget_support import front_end, json_safe

__all__ = ["CircuitSearch"]

FALLBACK_NOTE = ("attnlab circuit search: this front end cannot run Jupyter widgets, so a static copy is shown; open "
                 "the notebook in JupyterLab (pip install attnlab) to search and click through the circuit.")


def _front_end() -> str:
    return front_end("attnlab.circuit_search", "circuitsearch.js", "the circuit search")


class CircuitSearch(anywidget.AnyWidget):
    """Search a circuit from a widget: choose the task and the method, run, slide through circuit sizes, click heads.

    ``attnlab.CircuitSearch(model, task="ioi")`` in a notebook cell shows controls (task, corruption, prompts, seed,
    method EAP / EAP-IG / ACDC with its steps or threshold, the largest circuit size, the metric), Run with a progress
    bar, a time estimate and Cancel (what it kept is stated), the circuit graph with a size slider that shows the
    faithfulness curve and the kernel's faithfulness at the chosen size, the Explorer's head panel for a clicked head
    node, the run history, and a comparison with another task's circuit (shared heads, Jaccard, overlaps). See
    :mod:`attnlab.circuit_search.controller` for the methods and papers.

    Args:
        model: a loaded backend (:func:`attnlab.load_model`) that runs edge-level passes.
        task, method, steps, threshold, n_prompts, seed, corruption, max_edges, metric, n_sizes, source, batch_size,
            task_options, memory_budget_mb: as in :class:`~attnlab.circuit_search.controller.CircuitSearchController`.

    Python API: :meth:`run` (blocking; ``wait=False`` runs in the background), :meth:`cancel`, :meth:`wait`,
    :attr:`size` and :meth:`set_size` (another size is evaluated if needed), :meth:`faithfulness_at`,
    :meth:`circuit_at`, :meth:`select_head`, :attr:`detail`, :meth:`compare`, :attr:`comparison`, :attr:`history`,
    :meth:`show_run`; the plain-Python logic is :attr:`controller`.

    Raises:
        ExplorerError, TaskError: invalid initial settings or unknown task.
        AttnlabError: the front-end bundle is missing (a source checkout that was never built).
    """

    _esm = t.Unicode("").tag(sync=True)
    controls = t.Dict(help="the control values (see CircuitSearchController.set_control)").tag(sync=True)
    options = t.Dict(help="the choices of every menu").tag(sync=True)
    model_name = t.Unicode("", help="the model's name").tag(sync=True)
    status = t.Unicode("idle", help="idle | running | done | cancelled | error").tag(sync=True)
    message = t.Unicode("", help="what the last action did, what a Cancel kept, or the error").tag(sync=True)
    progress = t.List([0, 0], help="[steps done, steps planned] in the current phase").tag(sync=True)
    eta = t.Float(None, allow_none=True, help="seconds left in the current phase (None: unknown)").tag(sync=True)
    run_history = t.List(help="one summary per run").tag(sync=True)
    current_run = t.Int(-1, help="index of the run on display (-1: none)").tag(sync=True)
    circuit = t.Dict(help="the circuit view's payload: the run's top edges up to the largest size").tag(sync=True)
    curve = t.Dict(help="the kernel's faithfulness at every size computed (CircuitSearchController.curve)").tag(
        sync=True)
    shown_size = t.Int(0, help="the circuit size shown (edges)").tag(sync=True)
    detail_payload = t.Dict(help="the head panel of the clicked head (head_detail)").tag(sync=True)
    detail_prompt = t.Int(0, help="the prompt the head panel's attention pattern shows").tag(sync=True)
    prompts = t.List(help="the run's clean prompts (text)").tag(sync=True)
    comparison_summary = t.Dict(help="the overlap with another task's circuit (CircuitComparison.summary())").tag(
        sync=True)

    def __init__(self, model: Backend, task: "str | ExplorerTask" = "ioi", *, method: str = "eap", steps: int = 5,
                 threshold: float = 0.05, n_prompts: int = 8, seed: int = 0, corruption: str | None = None,
                 max_edges: int = 1000, metric: MetricLike = "logit_diff", n_sizes: int = 12, source: str = "mean",
                 batch_size: int = 8, task_options: dict | None = None,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        esm = _front_end()
        self.controller = CircuitSearchController(
            model, task, method=method, steps=steps, threshold=threshold, n_prompts=n_prompts, seed=seed,
            corruption=corruption, max_edges=max_edges, metric=metric, n_sizes=n_sizes, source=source,
            batch_size=batch_size, task_options=task_options, memory_budget_mb=memory_budget_mb)
        super().__init__(_esm=esm)  # the front end must be there when the comm opens
        self._thread: threading.Thread | None = None
        c = self.controller
        self.options = c.options()
        self.controls = dict(c.controls)
        self.model_name = model.info.name
        c.on_change(self._sync)
        self.on_msg(self._on_message)

    # -- Python API -----------------------------------------------------------------------------------------------
    def run(self, *, wait: bool = True) -> "SearchRun | threading.Thread":
        """Search a circuit with the current controls.

        Args:
            wait: block until done and return the :class:`~attnlab.circuit_search.controller.SearchRun`; False starts
                it in the background (the Cancel button works) and returns the thread.

        Raises:
            ExplorerError: a run is already in progress. With ``wait=True``, the task's and the engines' input errors.
        """
        if wait:
            return self.controller.run()
        self._thread = self.controller.run_in_background()
        return self._thread

    def cancel(self) -> None:
        """Stop a background run (EAP keeps the batches scored, the curve the sizes evaluated; ACDC keeps nothing)."""
        self.controller.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def size(self) -> int | None:
        """The circuit size shown (edges); change it with :meth:`set_size`."""
        return self.controller.size

    def set_size(self, n: int) -> dict:
        """Show the top-``n``-edge circuit (its faithfulness is evaluated if it was not computed). Returns its point."""
        return self.controller.set_size(n)

    def faithfulness_at(self, n: int) -> float:
        """The faithfulness the slider shows for ``n`` edges (the kernel's number; evaluated if needed)."""
        return self.controller.faithfulness_at(n)

    def circuit_at(self, n: int | None = None):
        """The top-``n``-edge :class:`~attnlab.circuits.Circuit` of the current run (default: the size shown)."""
        return self.controller.circuit(n)

    def select_head(self, layer: int, head: int) -> dict:
        """Open the head panel of ``(layer, head)``, as a click on its node does. Returns the panel's data."""
        return self.controller.select_head(layer, head)

    @property
    def detail(self) -> dict | None:
        """The head panel's data (None when no head is selected)."""
        return self.controller.detail

    def compare(self, task: str, *, wait: bool = True):
        """Run the same search on ``task`` and compare the circuits' heads (see
        :meth:`CircuitSearchController.compare`). Returns the summary, or the thread with ``wait=False``."""
        if wait:
            return self.controller.compare(task)
        self._thread = self.controller.compare_in_background(task)
        return self._thread

    @property
    def comparison(self):
        """The last :class:`~attnlab.circuits.compare.CircuitComparison` (None before :meth:`compare`)."""
        return self.controller.comparison

    @property
    def history(self) -> list[dict]:
        """One summary per run; re-show with :meth:`show_run`."""
        return self.controller.history()

    def show_run(self, index: int) -> None:
        """Display run ``index`` of the history again."""
        self.controller.show_run(index)

    def set_control(self, name: str, value) -> None:
        """Set a control from Python (validated; see :meth:`CircuitSearchController.set_control`)."""
        self.controller.set_control(name, value)

    # -- state -> browser -----------------------------------------------------------------------------------------
    def _sync(self, what: str) -> None:
        c = self.controller
        with self.hold_sync():
            if what == "controls":
                self.controls = dict(c.controls)
                self.options = c.options()
            elif what == "status":
                self.status, self.message = c.status, c.message
            elif what == "progress":
                self.set_trait("progress", [float(c.progress[0]), int(c.progress[1])])
                self.set_trait("eta", None if c.eta is None else float(c.eta))
            elif what == "history":
                self.set_trait("run_history", c.history())
            elif what == "result":
                run = c.run_shown
                self.set_trait("current_run", -1 if c.current is None else c.current)
                self.set_trait("circuit", self._circuit_payload(run))
                self.set_trait("prompts", [] if run is None else list(run.dataset.clean_prompts))
            elif what == "curve":
                self.set_trait("curve", json_safe(c.curve() or {}))
            elif what == "size":
                self.set_trait("shown_size", int(c.size or 0))
            elif what == "detail":
                self.set_trait("detail_payload", json_safe(c.detail or {}))
                self.set_trait("detail_prompt", c.detail_prompt)
            elif what == "comparison":
                self.set_trait("comparison_summary", json_safe(c.comparison_info or {}))

    def _circuit_payload(self, run: SearchRun | None) -> dict:
        if run is None or not run.edges:
            return {}
        from attnlab.render.circuit import circuit_payload

        n = run.sizes[-1] if run.sizes else run.n_edges
        c = self.controller
        title = f"Circuit: {c.model.info.name} on {run.controls['task']} ({run.controls['method'].upper()})"
        return json_safe(dict(circuit_payload(c.circuit(n, run=c.current), curve=c.curve(), max_edges=n,
                                               title=title)))

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
            elif kind == "size":
                n = int(content.get("n", 0))
                run = c.run_shown
                if run is not None and n in run.points:
                    c.set_size(n)  # computed: answered at once
                else:
                    self._thread = c.evaluate_in_background(n)
            elif kind == "select_head":
                c.select_head(int(content["layer"]), int(content["head"]))
            elif kind == "prompt":
                c.set_detail_prompt(int(content.get("index", 0)))
            elif kind == "show_run":
                c.show_run(int(content.get("index", -1)))
            elif kind == "compare":
                self._thread = c.compare_in_background(str(content.get("task", "")))
        except AttnlabError as exc:
            self.message = f"{type(exc).__name__}: {exc}"
            if kind == "run":
                self.status = "error"
            self.controls = dict(c.controls)  # undo a rejected control in the view
            self.shown_size = int(c.size or 0)
        except Exception as exc:  # never let a click kill the comm; show what happened
            self.status, self.message = "error", f"{type(exc).__name__}: {exc}"

    def _apply_controls(self, new: dict) -> None:
        c = self.controller
        for name in CircuitSearchController.CONTROLS:
            if name in new and new[name] != c.controls.get(name):
                c.set_control(name, new[name])

    # -- display --------------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        data, meta = super()._repr_mimebundle_(**kwargs)
        data["text/html"] = self._fallback_html()
        return data, meta

    def _fallback_html(self) -> str:
        from attnlab.render.circuit import static_circuit_html

        note = f'<p style="font-style:italic">{html.escape(FALLBACK_NOTE)}</p>'
        payload = self._circuit_payload(self.controller.run_shown)
        if not payload:
            return note + "<p>(no search run yet)</p>"
        return note + static_circuit_html(payload)

    def __repr__(self) -> str:
        c = self.controller
        return (f"<attnlab.CircuitSearch {c.model.info.name!r} task={c.controls['task']!r} "
                f"method={c.controls['method']!r} runs={len(c.runs)} size={c.size}>")
