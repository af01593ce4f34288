"""Circuit search from a widget, in plain Python: controls, runs with progress and Cancel, the size slider's
faithfulness, head details and cross-task comparison.

:class:`CircuitSearchController` holds everything the :class:`~attnlab.circuit_search.widget.CircuitSearch` widget
shows and does everything its buttons do, with no front end, so tests and scripts drive it directly. A run:

1. builds the task's dataset (clean/corrupted pairs; the Explorer's task registry, :mod:`attnlab.explorer.tasks`);
2. finds a circuit with one of the engines of :mod:`attnlab.circuits`:

   - ``"eap"``: edge attribution patching (Syed, Rager & Conmy 2023, arXiv 2310.10348, section 2), or ``"eap-ig"``,
     EAP with integrated gradients over ``steps`` points (Hanna, Pezzelle & Belinkov 2024, arXiv 2403.17806,
     section 3): a score for every edge of the graph (:func:`~attnlab.circuits.eap.eap_scores`). The prompts are
     scored in batches of ``batch_size``; each batch is one call of the engine, and the scores are the prompt-weighted
     mean of the batches' scores, which is what one call over all prompts computes (its scores are sums over batches
     of per-prompt gradients divided by the number of prompts; a test checks the two agree). Cancel stops after the
     current batch and keeps the batches scored;
   - ``"acdc"``: ACDC's greedy pruning with exact ablations at threshold tau (Conmy et al. 2023, arXiv 2304.14997,
     section 3; :func:`~attnlab.circuits.acdc.acdc`). ACDC returns its circuit only at the end, so Cancel keeps
     nothing of an ACDC run (the widget says so);

3. evaluates the faithfulness of the top-n-edge circuits (n by |score|) at the sizes the slider offers
   (:func:`~attnlab.circuits.evaluate.faithfulness_curve`, everything outside the circuit mean-ablated per template,
   Wang et al. 2022, arXiv 2211.00593, section 3.1), a few sizes per call, so that Cancel keeps the sizes finished.
   Any other size is evaluated on demand (:meth:`CircuitSearchController.set_size`) and cached: the number shown
   for a size is always the kernel's for exactly that size, never an interpolation or a neighbouring size.

Clicking a head of the circuit opens the Explorer's head panel for it (:func:`attnlab.explorer.details.head_detail`:
attention pattern, direct logit attribution, mean and zero ablation), computed on the run's own prompts.
:meth:`CircuitSearchController.compare` runs the same search on another task and compares the two circuits' heads
(:func:`~attnlab.circuits.compare.compare_circuits`: Jaccard and Merullo et al.'s overlaps, arXiv 2310.08744).
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError, ExplorerError
from attnlab.explorer.tasks import ExplorerTask, get_task, registered_tasks
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import METRICS, Metric, MetricLike, get_metric

__all__ = ["METHODS", "CircuitSearchController", "SearchRun", "offered_sizes"]

#: method menu: value -> label
METHODS = {
    "eap": "EAP (edge attribution patching)",
    "eap-ig": "EAP-IG (integrated gradients)",
    "acdc": "ACDC (exact greedy pruning)",
}
_MAX_PROMPTS = 512
_CURVE_CHUNK = 3  # sizes per faithfulness_curve call: Cancel keeps the chunks finished


def offered_sizes(n_max: int, n_sizes: int = 12) -> list[int]:
    """The circuit sizes the slider offers: about ``n_sizes`` edge counts, log-spaced from 1 to ``n_max`` (both
    included), distinct and increasing.

    Raises:
        ExplorerError: ``n_max`` < 1 or ``n_sizes`` < 2.
    """
    if n_max < 1 or n_sizes < 2:
        raise ExplorerError(f"offered_sizes needs n_max >= 1 and n_sizes >= 2 (got {n_max}, {n_sizes})")
    out = {1, n_max}
    for i in range(n_sizes):
        out.add(max(1, min(n_max, round(math.exp(math.log(n_max) * i / (n_sizes - 1))))))
    return sorted(out)


class _RankedEdges:
    """The piece of :class:`~attnlab.circuits.eap.EdgeScores` that :func:`faithfulness_curve` reads: edges ranked by
    decreasing |score| (used for ACDC's circuit, ranked by each edge's measured effect)."""

    def __init__(self, edges: list[tuple[str, float]]) -> None:
        self._edges = list(edges)

    def edge_scores(self) -> list[tuple[str, float]]:
        return list(self._edges)


@dataclass
class SearchRun:
    """One circuit search.

    Attributes:
        controls: the control values it ran with.
        dataset: the task's :class:`~attnlab.tasks.base.PatchingDataset`.
        edges: ``[(edge name, score)]`` ranked by decreasing |score|: every edge of the graph for EAP / EAP-IG (the
            scores in the metric's units), the kept edges for ACDC (each with its measured effect).
        scores: the :class:`~attnlab.circuits.eap.EdgeScores` (EAP, EAP-IG) or None; acdc: the
            :class:`~attnlab.circuits.acdc.ACDCResult` (ACDC) or None.
        sizes: the sizes the slider offers (edge counts, increasing; on-demand sizes join them).
        points: ``{size: {"faithfulness", "ci95", "n_heads", "circuit_metric"}}`` computed so far.
        full_metric, ablated_metric: mean metric of the full model and of the empty circuit (the faithfulness
            anchors), None before the first size is evaluated.
        complete: False when Cancel stopped the scoring (EAP: the scores are the mean over ``prompts_scored``).
        prompts_scored: prompts whose scores are in (EAP; all of them for ACDC).
        note: what a Cancel kept, in words ("" for a complete run).
        started: Unix time; seconds: wall time of the search and the curve.
        cache: the head panels' recorded activations (:class:`~attnlab.explorer.details.RunCache`), made on the first
            click.
        source: the :class:`~attnlab.circuits.graph.AblationSource` faithfulness uses, made once per run.
    """

    controls: dict
    dataset: object = field(repr=False)
    edges: list = field(repr=False)
    scores: object = field(default=None, repr=False)
    acdc: object = field(default=None, repr=False)
    sizes: list = field(default_factory=list)
    points: dict = field(default_factory=dict)
    full_metric: float | None = None
    ablated_metric: float | None = None
    complete: bool = True
    prompts_scored: int = 0
    note: str = ""
    started: float = 0.0
    seconds: float = 0.0
    cache: object = field(default=None, repr=False)
    source: object = field(default=None, repr=False)

    @property
    def n_edges(self) -> int:
        """Edges ranked (the slider's largest size is at most this)."""
        return len(self.edges)

    def label(self) -> str:
        c = self.controls
        method = c["method"] + (f" ({c['steps']} steps)" if c["method"] == "eap-ig" else "") + (
            f" (tau {c['threshold']:g})" if c["method"] == "acdc" else "")
        state = "" if self.complete and not self.note else " · cancelled"
        return f"{c['task']} · {method} · {c['n_prompts']} prompts · seed {c['seed']}{state}"

    def summary(self, index: int) -> dict:
        return {"index": index, "label": self.label(), "complete": self.complete, "seconds": round(self.seconds, 2),
                "task": self.controls["task"], "method": self.controls["method"]}


class CircuitSearchController:
    """Everything the circuit-search widget does, without a front end.

    Args:
        model: the backend to analyse (:func:`attnlab.load_model`); it must run edge-level passes (TransformerLens,
            or nnsight locally).
        task: a registered task name (``"ioi"``, ``"colored_objects"``) or an
            :class:`~attnlab.explorer.tasks.ExplorerTask`.
        method, steps, threshold, n_prompts, seed, corruption, max_edges, metric: initial control values (see
            :meth:`set_control`).
        n_sizes: about how many sizes the slider offers (log-spaced from 1 to ``max_edges``).
        source: what an ablated edge carries when faithfulness is evaluated: ``"mean"`` (per-template mean over the
            corrupted prompts, Wang et al. 2022) or ``"corrupted"``.
        batch_size: prompts per engine call and per pass.
        task_options: extra keyword arguments for the task's dataset builder.
        memory_budget_mb: passed to the engines.

    Raises:
        ExplorerError: an invalid initial control value.
        TaskError: unknown task.
    """

    CONTROLS = ("task", "corruption", "n_prompts", "seed", "method", "steps", "threshold", "max_edges", "metric")

    def __init__(self, model: Backend, task: "str | ExplorerTask" = "ioi", *, method: str = "eap", steps: int = 5,
                 threshold: float = 0.05, n_prompts: int = 8, seed: int = 0, corruption: str | None = None,
                 max_edges: int = 1000, metric: MetricLike = "logit_diff", n_sizes: int = 12,
                 source: str = "mean", batch_size: int = 8, task_options: dict | None = None,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        if source not in ("mean", "corrupted"):
            raise ExplorerError(f"'source' must be 'mean' or 'corrupted' (got {source!r})")
        if isinstance(n_sizes, bool) or not isinstance(n_sizes, int) or not 2 <= n_sizes <= 64:
            raise ExplorerError(f"'n_sizes' must be an integer in [2, 64] (got {n_sizes!r})")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ExplorerError(f"'batch_size' must be an integer >= 1 (got {batch_size!r})")
        self.model = model
        self.source = source
        self.n_sizes = n_sizes
        self.batch_size = batch_size
        self.task_options = dict(task_options or {})
        self.memory_budget_mb = float(memory_budget_mb)
        self._listeners: list[Callable[[str], None]] = []
        spec = get_task(task)
        self._tasks = {**registered_tasks(), spec.name: spec}
        self._metrics: dict[str, Metric] = {k: m for k, m in METRICS.items() if k != "accuracy"}
        self._graph = None
        self._runner = None
        self.controls: dict = {"task": spec.name, "corruption": spec.corruptions[0], "n_prompts": 8, "seed": 0,
                               "method": "eap", "steps": 5, "threshold": 0.05, "max_edges": 1000,
                               "metric": "logit_diff"}
        for name, value in (("n_prompts", n_prompts), ("seed", seed), ("method", method), ("steps", steps),
                            ("threshold", threshold), ("max_edges", max_edges), ("metric", metric)):
            self.set_control(name, value)
        if corruption is not None:
            self.set_control("corruption", corruption)
        self.runs: list[SearchRun] = []
        self.current: int | None = None
        self.size: int | None = None
        self.selected: str | None = None
        self.detail: dict | None = None
        self.detail_prompt = 0
        self.comparison = None
        self.comparison_info: dict | None = None
        self.status = "idle"  # idle | running | done | cancelled | error
        self.message = ""
        self.progress = (0, 0)
        self.eta: float | None = None  # seconds left in the current phase, None when unknown
        self._phase_start = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- notification ---------------------------------------------------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` whenever state changes (``"controls"``, ``"status"``, ``"progress"``,
        ``"result"``, ``"curve"``, ``"size"``, ``"detail"``, ``"history"``, ``"comparison"``)."""
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
        """The choices of every menu: tasks, corruptions per task, methods, metrics, limits."""
        return {
            "tasks": [{"value": t.name, "label": t.title} for t in self._tasks.values()],
            "corruptions": {t.name: list(t.corruptions) for t in self._tasks.values()},
            "methods": [{"value": k, "label": v} for k, v in METHODS.items()],
            "metrics": [{"value": k, "label": m.label} for k, m in self._metrics.items()],
            "max_prompts": _MAX_PROMPTS,
            "n_graph_edges": self.graph.n_edges,
            "source": self.source,
        }

    @property
    def graph(self):
        """The model's full edge graph (:class:`~attnlab.circuits.graph.Graph`)."""
        if self._graph is None:
            from attnlab.circuits.graph import Graph

            self._graph = Graph.from_info(self.model.info)
        return self._graph

    @property
    def runner(self):
        """The :class:`~attnlab.circuits.graph.GraphRunner` every evaluation shares (made once)."""
        if self._runner is None:
            from attnlab.circuits.graph import GraphRunner

            self._runner = GraphRunner(self.model, self.graph)
        return self._runner

    @property
    def metric(self) -> Metric:
        """The selected metric."""
        return self._metrics[self.controls["metric"]]

    def set_control(self, name: str, value) -> None:
        """Set one control, validating it first (the old value stays on error).

        Controls: ``task`` (a registered task), ``corruption`` (one of the task's), ``n_prompts`` (1..512), ``seed``
        (int >= 0), ``method`` (``"eap"``, ``"eap-ig"``, ``"acdc"``), ``steps`` (EAP-IG integration steps, 1..100),
        ``threshold`` (ACDC's tau in the metric's units, finite and >= 0), ``max_edges`` (the slider's largest
        circuit, >= 1; capped at the edges a run ranks), ``metric`` (a differentiable metric: ``"logit_diff"``,
        ``"kl_div"``, ``"prob"``, ``"logprob"``, or a :class:`~attnlab.metrics.Metric` / callable, which joins the
        menu under its name).

        Raises:
            ExplorerError: unknown control or invalid value; the message says what is allowed.
        """
        if name not in self.CONTROLS:
            raise ExplorerError(f"unknown control {name!r}; controls are {list(self.CONTROLS)}")
        if name == "task":
            if value not in self._tasks:
                raise ExplorerError(f"'task' must be one of {sorted(self._tasks)} (got {value!r})")
            self.controls["task"] = value
            if self.controls["corruption"] not in self._tasks[value].corruptions:
                self.controls["corruption"] = self._tasks[value].corruptions[0]
        elif name == "corruption":
            if value not in self.task.corruptions:
                raise ExplorerError(f"'corruption' must be one of {list(self.task.corruptions)} for task "
                                    f"{self.controls['task']!r} (got {value!r})")
            self.controls["corruption"] = value
        elif name in ("n_prompts", "seed", "steps", "max_edges"):
            lo, hi = {"n_prompts": (1, _MAX_PROMPTS), "seed": (0, None), "steps": (1, 100),
                      "max_edges": (1, None)}[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
                rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ExplorerError(f"'{name}' must be an integer {rng} (got {value!r})")
            self.controls[name] = value
        elif name == "method":
            if value not in METHODS:
                raise ExplorerError(f"'method' must be one of {list(METHODS)} (got {value!r})")
            self.controls["method"] = value
        elif name == "threshold":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ExplorerError(f"'threshold' must be a finite number >= 0 in the metric's units (got "
                                    f"{value!r}); Conmy et al. sweep values such as 0.01 to 1")
            self.controls["threshold"] = float(value)
        elif name == "metric":
            self.controls["metric"] = self._add_metric(value).name
        self._emit("controls")

    def _add_metric(self, value) -> Metric:
        if isinstance(value, str) and value in self._metrics:
            return self._metrics[value]
        try:
            metric = get_metric(value)
        except AttnlabError as exc:
            raise ExplorerError(f"'metric' must be one of {sorted(self._metrics)}, a Metric or a callable "
                                f"(got {value!r}): {exc}") from None
        if not metric.differentiable:
            raise ExplorerError(f"'metric' {metric.name!r} has no gradient, which EAP needs; choose one of "
                                f"{sorted(self._metrics)}")
        self._metrics[metric.name] = metric
        return metric

    # -- runs -----------------------------------------------------------------------------------------------------
    def dataset(self, task: str | None = None, controls: dict | None = None):
        """The dataset of the current controls (of another registered ``task`` for a comparison).

        Raises:
            DatasetError, TokenizationError: from the task's builder.
        """
        c = dict(controls or self.controls)
        spec = self._tasks[task or c["task"]]
        corruption = c["corruption"] if c["corruption"] in spec.corruptions else spec.corruptions[0]
        return spec.build(self.model, c["n_prompts"], seed=c["seed"], corruption=corruption, **self.task_options)

    def run(self) -> SearchRun:
        """Search a circuit with the current controls (blocking), record it and show it.

        Progress (:attr:`progress`, :attr:`eta`, :attr:`message`) is reported per pass; :meth:`cancel` from another
        thread stops the run (see the module docstring for what each method keeps).

        Returns:
            The :class:`SearchRun` (also the last entry of :attr:`runs`).

        Raises:
            ExplorerError: a run is already in progress, or ACDC was cancelled (nothing to keep).
            DatasetError, TokenizationError, MetricError, CapabilityError, MemoryBudgetError, CircuitError: bad
                input, raised before the search starts.
        """
        run = self._locked(lambda: self._search(dict(self.controls)))
        self._record(run)
        return run

    def compare(self, task: str) -> dict:
        """Run the same search on another registered ``task`` and compare its circuit with the current run's.

        Both circuits are the top-n edges of their run at the same n: the current slider size (capped at the other
        run's size). The result (:attr:`comparison`, a :class:`~attnlab.circuits.compare.CircuitComparison`) counts
        the heads both circuits share, their Jaccard index and both overlaps (Merullo et al. 2023). The other run
        joins the history.

        Returns:
            :attr:`comparison_info`: the comparison's summary with the runs and sizes compared.

        Raises:
            ExplorerError: no run yet, an unknown task, the current task itself, or a run in progress.
        """
        if self.current is None:
            raise ExplorerError("run a search first: the comparison sets the current circuit against another task's")
        if task not in self._tasks:
            raise ExplorerError(f"'task' must be one of {sorted(self._tasks)} (got {task!r})")
        base_index = self.current
        base = self.runs[base_index]
        if task == base.controls["task"]:
            raise ExplorerError(f"the current run is already on {task!r}: choose another task to compare with")
        controls = {**base.controls, "task": task}
        other = self._locked(lambda: self._search(controls, sizes_for=self.size))
        self.runs.append(other)
        self._emit("history")
        return self._compare(base_index, len(self.runs) - 1)

    def _compare(self, a: int, b: int) -> dict:
        from attnlab.circuits.compare import compare_circuits

        ra, rb = self.runs[a], self.runs[b]
        n = min(self.size or ra.n_edges, ra.n_edges, rb.n_edges)
        ca, cb = self.circuit(n, run=a), self.circuit(n, run=b)
        names = (ra.controls["task"], rb.controls["task"])
        self.comparison = compare_circuits(ca, cb, names=names)
        self.comparison_info = {**self.comparison.summary(), "n_edges": n, "runs": [a, b],
                                "only_a": [f"L{l}H{h}" for l, h in self.comparison.only_a],
                                "only_b": [f"L{l}H{h}" for l, h in self.comparison.only_b],
                                "labels": [ra.label(), rb.label()]}
        self._emit("comparison")
        return self.comparison_info

    def _locked(self, fn):
        if not self._lock.acquire(blocking=False):
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")
        try:
            self._stop.clear()
            return fn()
        except Exception as exc:
            if self.status != "cancelled":
                self._set_status("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._lock.release()

    def _search(self, controls: dict, sizes_for: int | None = None) -> SearchRun:
        started = time.time()
        self._set_status("running", f"building the {controls['task']} dataset")
        dataset = self.dataset(controls=controls)
        metric = self._metrics[controls["metric"]]
        method = controls["method"]
        run = SearchRun(controls=controls, dataset=dataset, edges=[], started=started)
        if method in ("eap", "eap-ig"):
            self._score_eap(run, metric)
        else:
            self._run_acdc(run, metric)
        n_max = min(controls["max_edges"], run.n_edges)
        run.sizes = offered_sizes(n_max, self.n_sizes) if n_max >= 1 else []
        if sizes_for is not None and 1 <= sizes_for <= run.n_edges and sizes_for not in run.sizes:
            run.sizes = sorted({*run.sizes, sizes_for})  # the comparison's size is evaluated too
        if run.edges and not self._stop.is_set():
            self._evaluate(run, run.sizes, metric, phase="faithfulness curve")
        run.seconds = time.time() - started
        done = [s for s in run.sizes if s in run.points]
        if self._stop.is_set():
            kept = []
            if not run.complete:
                kept.append(f"edge scores over {run.prompts_scored} of {len(dataset)} prompts (whole batches)")
            else:
                kept.append("the edge scores of every prompt")
            kept.append(f"faithfulness at {len(done)} of {len(run.sizes)} sizes" if done else
                        "no faithfulness point (evaluate sizes on demand)")
            run.note = "cancelled: kept " + "; ".join(kept)
            self._set_status("cancelled", run.note)
        else:
            self._set_status("done", f"{METHODS[method].split(' (')[0]} on {controls['task']}: {run.n_edges} edges "
                                     f"ranked, faithfulness at {len(done)} sizes, in {run.seconds:.1f} s")
        return run

    def _record(self, run: SearchRun) -> None:
        self.runs.append(run)
        self._show(len(self.runs) - 1)
        self._emit("history")

    # -- engines --------------------------------------------------------------------------------------------------
    def _score_eap(self, run: SearchRun, metric: Metric) -> None:
        """EAP / EAP-IG batch by batch (one engine call per batch), stopping between batches on Cancel."""
        from attnlab.circuits.eap import EdgeScores, eap_scores
        from attnlab.progress import observe_progress

        c, ds = run.controls, run.dataset
        n = len(ds)
        steps = c["steps"] if c["method"] == "eap-ig" else 1
        batches = [(i, min(i + self.batch_size, n)) for i in range(0, n, self.batch_size)]
        passes_per = steps + 1
        total = len(batches) * passes_per
        self._phase(f"{c['method'].upper()}: scoring every edge", total)
        t0 = time.perf_counter()
        acc = None
        clean = corrupted = 0.0
        done = 0
        last = None
        for b, (i0, i1) in enumerate(batches):
            if self._stop.is_set():
                break
            part = ds.subset(slice(i0, i1))
            with observe_progress(lambda k, _t, _d, b=b: self._on_pass(b * passes_per + k, total)):
                last = eap_scores(self.model, part, method=c["method"], steps=steps, batch_size=self.batch_size,
                                  graph=self.graph, metric=metric, memory_budget_mb=self.memory_budget_mb)
            k = i1 - i0
            acc = last.scores * k if acc is None else acc + last.scores * k
            clean += last.clean_metric * k
            corrupted += last.corrupted_metric * k
            done += k
            self._on_pass((b + 1) * passes_per, total)
        if done == 0:
            note = "cancelled before the first batch of prompts was scored: nothing to keep"
            self._set_status("cancelled", note)
            raise ExplorerError(note)
        scores = EdgeScores(graph=self.graph, scores=acc / done, method=c["method"], steps=steps,
                            clean_metric=clean / done, corrupted_metric=corrupted / done,
                            task={**ds.describe(), "ablation": "corrupted", "prompts_scored": done},
                            seconds=time.perf_counter() - t0, metric=metric.to_dict(), complete=done == n)
        run.scores, run.prompts_scored, run.complete = scores, done, done == n
        run.edges = scores.edge_scores()
        if not run.complete:
            run.dataset = ds.subset(slice(0, done))  # faithfulness and the head panels use the prompts scored

    def _run_acdc(self, run: SearchRun, metric: Metric) -> None:
        """ACDC with progress over receivers; Cancel stops it (nothing kept: ACDC returns only at the end)."""
        from attnlab.circuits.acdc import acdc
        from attnlab.progress import observe_progress

        c = run.controls
        self._phase(f"ACDC (tau {c['threshold']:g}): pruning receivers from the output backwards", 0)
        try:
            with observe_progress(lambda k, t, _d: self._on_pass(k, t), self._stop.is_set):
                result = acdc(self.runner, run.dataset, c["threshold"], metric=metric, batch_size=self.batch_size,
                              memory_budget_mb=self.memory_budget_mb)
        except KeyboardInterrupt:
            note = ("cancelled: ACDC keeps nothing (its greedy pruning returns a circuit only when every receiver "
                    "is processed); run again, or use EAP, which keeps the batches scored")
            self._set_status("cancelled", note)
            raise ExplorerError(note) from None
        run.acdc, run.prompts_scored = result, len(run.dataset)
        run.edges = list(result.circuit.edges)
        if not run.edges:
            self._set_status("running", f"ACDC at tau {c['threshold']:g} removed every edge: lower the threshold")

    def _evaluate(self, run: SearchRun, sizes: list[int], metric: Metric, *, phase: str) -> None:
        """Faithfulness of the top-n circuits for ``sizes``, a few per call; Cancel keeps the calls finished."""
        from attnlab.circuits.evaluate import faithfulness_curve
        from attnlab.circuits.graph import corrupted_source, mean_source
        from attnlab.progress import observe_progress

        todo = [s for s in sizes if s not in run.points]
        if not todo:
            return
        chunks = [todo[i:i + _CURVE_CHUNK] for i in range(0, len(todo), _CURVE_CHUNK)]
        self._phase(f"{phase}: {len(todo)} size(s)", len(chunks))
        src = run.source
        if src is None:
            make = mean_source if self.source == "mean" else corrupted_source
            src = run.source = make(self.runner, run.dataset, batch_size=self.batch_size)
        ranked = run.scores if run.scores is not None else _RankedEdges(run.edges)
        for j, chunk in enumerate(chunks):
            if self._stop.is_set():
                break
            try:
                with observe_progress(lambda k, t, _d, j=j: self._on_pass(j + k / max(t, 1), len(chunks)),
                                      self._stop.is_set):
                    curve = faithfulness_curve(self.runner, run.dataset, ranked, chunk, source=src, metric=metric,
                                               batch_size=self.batch_size, memory_budget_mb=self.memory_budget_mb,
                                               progress=True)
            except KeyboardInterrupt:
                break  # Cancel inside a chunk: the chunks before it are kept
            run.full_metric = float(curve.full.mean())
            run.ablated_metric = float(curve.ablated.mean())
            for i, s in enumerate(curve.sizes):
                run.points[s] = {"faithfulness": curve.faithfulness[i], "ci95": list(curve.ci95[i]),
                                 "n_heads": curve.n_heads[i], "circuit_metric": float(curve.per_prompt[i].mean())}
            self._on_pass(j + 1, len(chunks))
            if self.current is not None and self.runs[self.current] is run:
                self._emit("curve")

    def run_in_background(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread and return it (errors end up in :attr:`status` / :attr:`message`)."""
        return self._background(self.run)

    def compare_in_background(self, task: str) -> threading.Thread:
        """Start :meth:`compare` in a daemon thread and return it."""
        if self.current is None:
            raise ExplorerError("run a search first: the comparison sets the current circuit against another task's")
        return self._background(lambda: self.compare(task))

    def evaluate_in_background(self, n: int) -> threading.Thread:
        """Start :meth:`set_size` (which evaluates a new size) in a daemon thread and return it."""
        self._check_size(n)
        return self._background(lambda: self.set_size(n))

    def _background(self, fn) -> threading.Thread:
        if self._lock.locked():
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")

        def target():
            try:
                fn()
            except Exception:  # already reported through status/message
                pass

        thread = threading.Thread(target=target, name="attnlab-circuit-search", daemon=True)
        thread.start()
        return thread

    def cancel(self) -> None:
        """Ask the running search to stop (after the current batch for EAP; see the module docstring)."""
        if self._lock.locked():
            self._stop.set()
            self._set_status("running", "cancelling: finishing the current batch")

    @property
    def running(self) -> bool:
        return self._lock.locked()

    def _phase(self, message: str, total: int) -> None:
        self._phase_start = time.time()
        self.progress, self.eta = (0, total), None
        self._set_status("running", message)
        self._emit("progress")

    def _on_pass(self, done: float, total: int) -> None:
        elapsed = time.time() - self._phase_start
        self.eta = elapsed / done * (total - done) if done > 0 and total > 0 else None
        self.progress = (done, total)
        self._emit("progress")

    def _set_status(self, status: str, message: str) -> None:
        self.status, self.message = status, message
        self._emit("status")

    # -- the current run, its sizes and circuits --------------------------------------------------------------------
    @property
    def run_shown(self) -> SearchRun | None:
        """The run on display (None before the first)."""
        return None if self.current is None else self.runs[self.current]

    def history(self) -> list[dict]:
        """One summary per run: index, label, complete, seconds, task, method."""
        return [run.summary(i) for i, run in enumerate(self.runs)]

    def show_run(self, index: int) -> None:
        """Display run ``index`` of the history again.

        Raises:
            ExplorerError: no such run.
        """
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.runs):
            raise ExplorerError(f"no run {index!r}: the history has {len(self.runs)} run(s) (indices from 0)")
        self._show(index)

    def _show(self, index: int) -> None:
        self.current = index
        run = self.runs[index]
        computed = [s for s in run.sizes if s in run.points]
        self.size = (computed or run.sizes or [None])[-1]
        self.selected, self.detail = None, None
        self._emit("result")
        self._emit("curve")
        self._emit("size")
        self._emit("detail")

    def _check_size(self, n) -> SearchRun:
        run = self.run_shown
        if run is None:
            raise ExplorerError("run a search first")
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= run.n_edges:
            raise ExplorerError(f"the circuit size must be an integer number of edges in [1, {run.n_edges}] "
                                f"(got {n!r})")
        return run

    def set_size(self, n: int) -> dict:
        """Show the top-``n``-edge circuit; its faithfulness is evaluated now if it was not computed (and cached).

        Returns:
            The size's point: ``{"faithfulness", "ci95", "n_heads", "circuit_metric"}``.

        Raises:
            ExplorerError: no run, ``n`` outside [1, edges ranked], or a run in progress.
        """
        point = self.point(n)
        self.size = n
        self._emit("size")
        return point

    def point(self, n: int) -> dict:
        """The faithfulness point of the top-``n``-edge circuit of the current run, evaluated now (blocking) if it
        was not computed, then cached: ``{"faithfulness", "ci95", "n_heads", "circuit_metric"}``.

        Raises:
            ExplorerError: no run, ``n`` outside [1, edges ranked], a run in progress, or the evaluation cancelled.
        """
        run = self._check_size(n)
        if n not in run.points:
            self._locked(lambda: self._evaluate(run, [n], self._metrics[run.controls["metric"]],
                                                phase=f"faithfulness at {n} edges"))
            if n not in run.points:
                self._set_status("cancelled", f"faithfulness at {n} edges not evaluated (cancelled)")
                raise ExplorerError(f"faithfulness at {n} edges was cancelled")
            run.sizes = sorted({*run.sizes, n})
            self._set_status("done", f"faithfulness at {n} edges: {run.points[n]['faithfulness']:.3f}")
            self._emit("curve")
        return run.points[n]

    def faithfulness_at(self, n: int) -> float:
        """The faithfulness of the top-``n``-edge circuit of the current run (evaluated if needed): the number the
        slider shows for ``n`` (dimensionless; 1 = the full model's metric, 0 = the empty circuit's)."""
        return self.point(n)["faithfulness"]

    def circuit(self, n: int | None = None, *, run: int | None = None):
        """The top-``n``-edge :class:`~attnlab.circuits.Circuit` of run ``run`` (default: the current run and size;
        for ACDC, the top-n of its kept edges by measured effect).

        Raises:
            ExplorerError: no run, or ``n`` out of range.
        """
        from attnlab.circuits.circuit import Circuit, circuit_from_scores

        r = self.run_shown if run is None else self.runs[run]
        if r is None:
            raise ExplorerError("run a search first")
        n = self.size if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= r.n_edges:
            raise ExplorerError(f"'n' must be an integer in [1, {r.n_edges}] (got {n!r})")
        if r.scores is not None:
            return circuit_from_scores(r.scores, n_edges=n, provenance={"searched_from": "CircuitSearch"})
        base = r.acdc.circuit
        return Circuit(model=dict(base.model), task=dict(base.task), edges=list(r.edges[:n]),
                       selection={**base.selection, "rule": "acdc_top_n", "n_edges": n},
                       provenance=dict(base.provenance))

    def curve(self) -> dict | None:
        """The current run's faithfulness at the sizes computed so far (the kernel's numbers, JSON-ready):
        ``sizes``, ``faithfulness``, ``ci95``, ``n_heads``, ``full_metric``, ``ablated_metric``, ``offered``."""
        run = self.run_shown
        if run is None:
            return None
        sizes = [s for s in run.sizes if s in run.points]
        pts = [run.points[s] for s in sizes]
        return {"sizes": sizes, "faithfulness": [p["faithfulness"] for p in pts], "ci95": [p["ci95"] for p in pts],
                "n_heads": [p["n_heads"] for p in pts], "circuit_metric": [p["circuit_metric"] for p in pts],
                "full_metric": run.full_metric, "ablated_metric": run.ablated_metric, "offered": list(run.sizes),
                "metric": self._metrics[run.controls["metric"]].label}

    # -- head details ---------------------------------------------------------------------------------------------
    def select_head(self, layer: int, head: int) -> dict:
        """Open the head panel of ``(layer, head)`` on the current run's prompts (the Explorer's panel:
        :func:`attnlab.explorer.details.head_detail`), with the head's edges in the current circuit.

        The activations are recorded on the first click of a run (two forward passes), then reused.

        Raises:
            ExplorerError: no run, or the head is outside the model.
        """
        from attnlab.explorer.details import RunCache, head_detail

        run = self.run_shown
        if run is None:
            raise ExplorerError("run a search first")
        info = self.model.info
        if not (isinstance(layer, int) and isinstance(head, int) and 0 <= layer < info.n_layers
                and 0 <= head < info.n_heads):
            raise ExplorerError(f"head ({layer!r}, {head!r}) is outside {info.name} ({info.n_layers} layers x "
                                f"{info.n_heads} heads)")
        if run.cache is None:
            run.cache = RunCache(self.model, run.dataset, metric=self._metrics[run.controls["metric"]])
        name = f"L{layer}H{head}"
        prompt = min(self.detail_prompt, run.cache.n_prompts - 1)
        detail = head_detail(run.cache, layer, head, prompt=prompt,
                             answer_names=self._tasks[run.controls["task"]].answer_names)
        detail["patching"] = None
        detail["circuit"] = self._head_edges(run, name)
        self.selected, self.detail = name, detail
        self._emit("detail")
        return detail

    def _head_edges(self, run: SearchRun, name: str) -> dict:
        n = self.size or run.n_edges
        inc = [(e, s) for e, s in run.edges[:n] if e.split("->")[1].split(".")[0] == name]
        out = [(e, s) for e, s in run.edges[:n] if e.split("->")[0] == name]
        return {"n_edges": n, "incoming": len(inc), "outgoing": len(out),
                "sum_abs_in": float(sum(abs(s) for _, s in inc)), "sum_abs_out": float(sum(abs(s) for _, s in out))}

    def set_detail_prompt(self, prompt: int) -> None:
        """Choose the prompt the head panel's attention pattern shows.

        Raises:
            ExplorerError: prompt out of range.
        """
        run = self.run_shown
        n = len(run.dataset) if run is not None else 0
        if isinstance(prompt, bool) or not isinstance(prompt, int) or not 0 <= prompt < max(n, 1):
            raise ExplorerError(f"'prompt' must be in [0, {n}) (got {prompt!r})")
        self.detail_prompt = prompt
        if self.selected is not None:
            layer, head = self.selected[1:].split("H")
            self.select_head(int(layer), int(head))
