"""The recall-versus-reasoning workbench's logic, in plain Python: controls, runs, cancellation, selection, details.

:class:`WorkbenchController` holds everything the workbench widget (:mod:`attnlab.dissociation.widget`) shows and does
everything its buttons do, with no dependency on a front end, so tests and scripts drive it directly. A run builds the
items of the chosen families (:func:`~attnlab.tasks.recall_reasoning.recall_reasoning_items`, then
:func:`~attnlab.tasks.recall_reasoning.filter_correct`), and ablates every component of the chosen granularity with
:func:`~attnlab.dissociation.sweep.dissociation_sweep`, reporting each batched pass and stopping after the current
one when cancelled (the finished components are kept). Selecting a component computes its detail
(:func:`~attnlab.dissociation.component_detail`): its attention from END on a recall and on a reasoning item (heads),
and its effect on every item.
"""

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from attnlab.backends.base import Backend
from attnlab.errors import ExplorerError
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.tasks.recall_reasoning import REASONING_FAMILIES, RECALL_FAMILIES, Family, RecallReasoningItems

__all__ = ["CRITERIA", "WORKBENCH_GRANULARITIES", "WorkbenchController", "WorkbenchRun"]

#: granularity menu of the workbench: value -> label
WORKBENCH_GRANULARITIES = {
    "heads": "every head",
    "attn": "every attention block",
    "mlp": "every MLP block",
    "blocks": "every attention and MLP block",
}
#: ablation menu: value -> label
ABLATION_LABELS = {
    "mean": "mean (per family and position)",
    "zero": "zero",
    "resample": "resample (from the corrupted counterpart)",
}
#: item filter menu: value -> label (``"none"`` keeps every item)
CRITERIA = {
    "top1": "answered: answer ranked first",
    "above_distractor": "answered: answer above the distractor",
    "none": "no filter: every item",
}
_MAX_PER_FAMILY = 500

#: ``build_items(model, families, n_per_family=..., seed=..., criterion=...) -> RecallReasoningItems``
ItemBuilder = Callable[..., RecallReasoningItems]


def default_items(model, families: Sequence["str | Family"], *, n_per_family: int, seed: int,
                  criterion: str) -> RecallReasoningItems:
    """The workbench's items: the families' items for ``model``, filtered by ``criterion`` (``"none"``: no filter).

    Raises:
        DatasetError, TokenizationError: from :func:`~attnlab.tasks.recall_reasoning.recall_reasoning_items` and
            :func:`~attnlab.tasks.recall_reasoning.filter_correct` (no items left, a model without a tokenizer ...).
    """
    from attnlab.tasks.recall_reasoning import filter_correct, recall_reasoning_items

    builtin = [f for f in families if isinstance(f, str)]
    extra = [f for f in families if isinstance(f, Family)]
    items = recall_reasoning_items(model, builtin, n_per_family=n_per_family, seed=seed, extra=extra)
    return items if criterion == "none" else filter_correct(model, items, criterion=criterion)


@dataclass
class WorkbenchRun:
    """One run of the workbench.

    Attributes:
        controls: the control values of the run.
        items: the items it ran on (after the filter).
        result: the :class:`~attnlab.dissociation.result.DissociationResult` (``complete`` False when cancelled).
        started: Unix time the run started.
        seconds: wall time, in seconds.
    """

    controls: dict
    items: RecallReasoningItems = field(repr=False)
    result: object
    started: float
    seconds: float


def _as_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class WorkbenchController:
    """Everything the recall-versus-reasoning workbench does, without a front end.

    Args:
        model: the backend to analyse (:func:`attnlab.load_model`), local or remote.
        families, granularity, ablation, n_per_family, seed, layers, criterion: initial control values (see
            :meth:`set_control`).
        extra: families of your own (:func:`~attnlab.tasks.recall_reasoning.custom_family`); they join the family
            menu under their names.
        build_items: how a run builds its items, ``build_items(model, families, n_per_family=, seed=, criterion=)``
            (default :func:`default_items`; models without a tokenizer pass their own, from
            :meth:`RecallReasoningItems.from_tokens`). ``families`` holds names and the ``extra`` Family objects.
        metrics, n_bootstrap, correction, alpha, n_control_draws, memory_budget_mb: passed to
            :func:`~attnlab.dissociation.sweep.dissociation_sweep`.

    Raises:
        ExplorerError: an invalid initial control value.
    """

    CONTROLS = ("families", "granularity", "ablation", "n_per_family", "seed", "layers", "criterion")

    def __init__(self, model: Backend, *, families: Sequence[str] | None = None, granularity: str = "heads",
                 ablation: str = "mean", n_per_family: int = 8, seed: int = 0, layers=None, criterion: str = "top1",
                 extra: Sequence[Family] = (), build_items: ItemBuilder | None = None,
                 metrics: Sequence = ("accuracy", "logit_diff"), n_bootstrap: int = 1000, correction: str = "holm",
                 alpha: float = 0.05, n_control_draws: int = 5,
                 memory_budget_mb: float = float(DEFAULT_BUDGET_MB)) -> None:
        self.model = model
        self._listeners: list[Callable[[str], None]] = []
        self._families: dict[str, Family] = {**RECALL_FAMILIES, **REASONING_FAMILIES}
        for fam in extra:
            if not isinstance(fam, Family):
                raise ExplorerError(f"'extra' takes Family objects from custom_family (got {type(fam).__name__})")
            self._families[fam.name] = fam
        self._extra = {fam.name for fam in extra}
        self.build_items = build_items or default_items
        self.sweep_settings = dict(metrics=tuple(metrics), n_bootstrap=n_bootstrap, correction=correction,
                                   alpha=alpha, n_control_draws=n_control_draws,
                                   memory_budget_mb=float(memory_budget_mb))
        self.controls: dict = {"families": self._default_families(), "granularity": "heads", "ablation": "mean",
                               "n_per_family": 8, "seed": 0, "layers": None, "criterion": "top1"}
        for name, value in (("families", families), ("granularity", granularity), ("ablation", ablation),
                            ("n_per_family", n_per_family), ("seed", seed), ("layers", layers),
                            ("criterion", criterion)):
            if not (name == "families" and value is None):
                self.set_control(name, value)
        self.runs: list[WorkbenchRun] = []
        self.selected: str | None = None
        self.detail: dict | None = None
        #: the recall and the reasoning item the attention patterns are shown on (default: the first of each kind)
        self.pattern_items: dict[str, int] = {}
        self.status = "idle"  # idle | running | done | cancelled | error
        self.message = ""
        self.progress = (0, 0)
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _default_families(self) -> list[str]:
        return [*RECALL_FAMILIES, *REASONING_FAMILIES]

    # -- notification ---------------------------------------------------------------------------------------------
    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` whenever state changes (``"controls"``, ``"status"``, ``"progress"``,
        ``"result"``, ``"selected"``, ``"detail"``)."""
        self._listeners.append(callback)

    def _emit(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # -- controls -------------------------------------------------------------------------------------------------
    def options(self) -> dict:
        """The choices of every menu: families by kind (name, description), granularities, ablations, filters."""
        from attnlab.dissociation.sweep import ABLATIONS

        fams = {"recall": [], "reasoning": []}
        for name, fam in self._families.items():
            fams.setdefault(fam.kind, []).append({"value": name, "label": name, "description": fam.description})
        grans = {k: v for k, v in WORKBENCH_GRANULARITIES.items() if self.model.info.has_mlp or k in ("heads", "attn")}
        return {
            "families": fams,
            "granularities": [{"value": k, "label": v} for k, v in grans.items()],
            "ablations": [{"value": k, "label": ABLATION_LABELS.get(k, k)} for k in ABLATIONS],
            "criteria": [{"value": k, "label": v} for k, v in CRITERIA.items()],
            "max_per_family": _MAX_PER_FAMILY,
            "n_layers": self.model.info.n_layers,
        }

    def set_control(self, name: str, value) -> None:
        """Set one control, validating it first (the old value stays on error).

        Controls:
            families: a list of family names from the menu (the built-in ``RECALL_FAMILIES`` and
                ``REASONING_FAMILIES`` and your ``extra`` ones), at least one recall and one reasoning family.
            granularity: ``"heads"``, ``"attn"``, ``"mlp"`` or ``"blocks"`` (the last two need MLP blocks).
            ablation: ``"zero"``, ``"mean"`` or ``"resample"``.
            n_per_family: items drawn per family before the filter, an int in [2, 500].
            seed: the item draw's and the bootstrap's seed, an int >= 0.
            layers: restrict the sweep to these layers: None (every layer), a list of layer indices, or text such as
                ``"20-29"`` or ``"3, 5, 7"`` (``""`` or ``"all"`` is every layer).
            criterion: the item filter, ``"top1"``, ``"above_distractor"`` or ``"none"``.

        Raises:
            ExplorerError: unknown control or invalid value; the message says what is allowed.
        """
        if name not in self.CONTROLS:
            raise ExplorerError(f"unknown control {name!r}; controls are {list(self.CONTROLS)}")
        if name == "families":
            self.controls["families"] = self._check_families(value)
        elif name == "granularity":
            if value not in WORKBENCH_GRANULARITIES:
                raise ExplorerError(f"'granularity' must be one of {list(WORKBENCH_GRANULARITIES)} (got {value!r})")
            if value in ("mlp", "blocks") and not self.model.info.has_mlp:
                raise ExplorerError(f"{self.model.info.name} is attention-only: it has no MLP blocks; use 'heads' "
                                    f"or 'attn' (got {value!r})")
            self.controls["granularity"] = value
        elif name == "ablation":
            from attnlab.dissociation.sweep import ABLATIONS

            if value not in ABLATIONS:
                raise ExplorerError(f"'ablation' must be one of {list(ABLATIONS)} (got {value!r})")
            self.controls["ablation"] = value
        elif name == "n_per_family":
            n = _as_int(value)
            if n is None or not 2 <= n <= _MAX_PER_FAMILY:
                raise ExplorerError(f"'n_per_family' must be an integer in [2, {_MAX_PER_FAMILY}] (got {value!r}); "
                                    "each item needs a counterpart of its family")
            self.controls["n_per_family"] = n
        elif name == "seed":
            s = _as_int(value)
            if s is None or s < 0:
                raise ExplorerError(f"'seed' must be an integer >= 0 (got {value!r})")
            self.controls["seed"] = s
        elif name == "layers":
            self.controls["layers"] = self._check_layers(value)
        elif name == "criterion":
            if value not in CRITERIA:
                raise ExplorerError(f"'criterion' must be one of {list(CRITERIA)} (got {value!r})")
            self.controls["criterion"] = value
        self._emit("controls")

    def _check_families(self, value) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ExplorerError(f"'families' must be a list of family names from {sorted(self._families)} "
                                f"(got {value!r})")
        unknown = [v for v in value if v not in self._families]
        if unknown:
            raise ExplorerError(f"'families' must be names from {sorted(self._families)} (got unknown {unknown!r})")
        if len(set(value)) != len(value):
            raise ExplorerError(f"'families' names a family twice (got {list(value)!r})")
        kinds = {self._families[v].kind for v in value}
        for kind in ("recall", "reasoning"):
            if kind not in kinds:
                raise ExplorerError(f"'families' needs at least one {kind} family: the workbench compares recall "
                                    f"with reasoning (got {list(value)!r})")
        return list(value)

    def _check_layers(self, value) -> list[int] | None:
        n = self.model.info.n_layers
        original = value
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("", "all"):
                return None
            layers: list[int] = []
            for piece in re.split(r"[,\s]+", text):
                m = re.fullmatch(r"(\d+)(?:-(\d+))?", piece)
                if m is None:
                    raise ExplorerError(f"'layers' must be 'all', a range like '20-29' or a list like '3, 5' "
                                        f"(got {original!r})")
                lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
                if hi < lo:
                    raise ExplorerError(f"'layers': the range {piece!r} runs backwards (got {original!r})")
                layers.extend(range(lo, hi + 1))
            value = layers
        if not isinstance(value, list | tuple) or not value or any(_as_int(v) is None for v in value):
            raise ExplorerError(f"'layers' must be None, a non-empty list of layer indices or text like '20-29' "
                                f"(got {original!r})")
        bad = [v for v in value if not 0 <= v < n]
        if bad:
            raise ExplorerError(f"'layers' must be in [0, {n}) for {self.model.info.name} (got {original!r})")
        layers = sorted(set(value))
        return None if layers == list(range(n)) else layers

    # -- runs -----------------------------------------------------------------------------------------------------
    def items(self, controls: dict | None = None) -> RecallReasoningItems:
        """Build the items of the current controls (one clean forward pass for the filter).

        Raises:
            DatasetError, TokenizationError: from the item builder (no items left after the filter ...).
        """
        c = controls or self.controls
        fams = [self._families[f] if f in self._extra else f for f in c["families"]]
        return self.build_items(self.model, fams, n_per_family=c["n_per_family"], seed=c["seed"],
                                criterion=c["criterion"])

    def sweep_arguments(self, controls: dict | None = None) -> dict:
        """The keyword arguments a run passes to :func:`~attnlab.dissociation.sweep.dissociation_sweep` (besides
        the model, the items and the progress callbacks)."""
        c = controls or self.controls
        kw = dict(granularity=c["granularity"], components=None, ablation=c["ablation"], seed=c["seed"],
                  **self.sweep_settings)
        if c["layers"] is not None:
            kw["granularity"] = "components"
            kw["components"] = self._component_names(c["granularity"], c["layers"])
        return kw

    def _component_names(self, granularity: str, layers: list[int]) -> list[str]:
        if granularity == "heads":
            return [f"L{layer}H{h}" for layer in layers for h in range(self.model.info.n_heads)]
        kinds = {"attn": ("ATTN",), "mlp": ("MLP",), "blocks": ("ATTN", "MLP")}[granularity]
        return [f"{k}{layer}" for layer in layers for k in kinds]

    def run(self) -> WorkbenchRun:
        """Build the items and run the sweep of the current controls (blocking); the run becomes current.

        Progress goes to :attr:`progress` (passes done, passes planned). :meth:`cancel` (from another thread, e.g. the
        widget's Cancel button) stops after the current batched pass and keeps every finished component (the result
        is marked incomplete, the others are NaN). The selection is cleared.

        Raises:
            ExplorerError: a run is already in progress.
            DatasetError, TokenizationError, SiteError, ArgumentError, MetricError: bad input, before any ablation.
        """
        from attnlab.dissociation.sweep import dissociation_sweep

        if not self._lock.acquire(blocking=False):
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")
        try:
            self._stop.clear()
            controls = {**self.controls, "families": list(self.controls["families"])}
            started = time.time()
            self.progress = (0, 0)
            self._emit("progress")
            try:
                self._set_status("running", "building the items and filtering them on the clean run")
                items = self.items(controls)
                n = items.n_items()
                self._set_status("running", f"ablating ({controls['ablation']}) on {n.get('recall', 0)} recall and "
                                            f"{n.get('reasoning', 0)} reasoning items")
                result = dissociation_sweep(self.model, items, progress=False, on_pass=self._on_pass,
                                            should_stop=self._stop.is_set, **self.sweep_arguments(controls))
            except Exception as exc:
                self._set_status("error", f"{type(exc).__name__}: {exc}")
                raise
            run = WorkbenchRun(controls=controls, items=items, result=result, started=started,
                               seconds=time.time() - started)
            self.runs.append(run)
            self.selected, self.detail, self.pattern_items = None, None, {}
            self._emit("result")
            self._emit("selected")
            self._emit("detail")
            if result.complete:
                self._set_status("done", f"finished in {run.seconds:.1f} s")
            else:
                done, total = self.progress
                ran = self.components_run()
                self._set_status("cancelled", f"cancelled after {done} of {total} passes; the {len(ran)} finished "
                                              f"components of {len(result.components)} are kept")
            return run
        finally:
            self._lock.release()

    def run_in_background(self) -> threading.Thread:
        """Start :meth:`run` in a daemon thread (the kernel stays free to receive Cancel) and return the thread.
        Errors end up in :attr:`status` and :attr:`message`.

        Raises:
            ExplorerError: a run is already in progress.
        """
        if self._lock.locked():
            raise ExplorerError("a run is already in progress; cancel it or wait for it to finish")

        def target():
            try:
                self.run()
            except Exception:  # already reported through status/message
                pass

        thread = threading.Thread(target=target, name="attnlab-workbench-run", daemon=True)
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

    @property
    def current(self) -> WorkbenchRun | None:
        """The run on display (the latest), or None."""
        return self.runs[-1] if self.runs else None

    @property
    def result(self):
        """The :class:`~attnlab.dissociation.result.DissociationResult` on display (None before the first run)."""
        return None if self.current is None else self.current.result

    def components_run(self) -> list[str]:
        """The components of the current result that were ablated (all of them unless the run was cancelled)."""
        result = self.result
        if result is None:
            return []
        done = ~result.ablated.isnan().all(dim=2).all(dim=1)
        return [name for name, ok in zip(result.components, done.tolist()) if ok]

    # -- selection ------------------------------------------------------------------------------------------------
    def select(self, target) -> str | None:
        """Select a component of the current result and compute its detail.

        Args:
            target: a component name (``"L3H2"``, ``"MLP5"``), a ``(layer, head)`` pair, an index into
                ``result.components``, or None to clear.

        Returns:
            The selected name (None when cleared).

        Raises:
            ExplorerError: no result yet, or the target is not a component of the current result.
        """
        if target is None:
            self.selected, self.detail = None, None
            self._emit("selected")
            self._emit("detail")
            return None
        result = self.result
        if result is None:
            raise ExplorerError("nothing to select yet: run the sweep first (workbench.run())")
        name = self._resolve(result, target)
        self.selected = name
        self._emit("selected")
        self.refresh_detail()
        return name

    def _resolve(self, result, target) -> str:
        names = list(result.components)
        if isinstance(target, tuple | list) and len(target) == 2 and all(_as_int(x) is not None for x in target):
            target = f"L{target[0]}H{target[1]}"
        elif _as_int(target) is not None:
            if not 0 <= target < len(names):
                raise ExplorerError(f"component index must be in [0, {len(names)}) (got {target!r})")
            return names[target]
        if isinstance(target, str):
            key = target.strip().upper()
            for name in names:
                if name.upper() == key:
                    return name
        example = names[0] if names else "L0H0"
        raise ExplorerError(f"{target!r} is not a component of the current result; use a name like {example!r}, a "
                            "(layer, head) pair or an index")

    def refresh_detail(self) -> dict | None:
        """Recompute the detail of the current selection with
        :func:`~attnlab.dissociation.component_detail` (the run's items and result, :attr:`pattern_items`)."""
        from attnlab.dissociation import component_detail

        run = self.current
        if self.selected is None or run is None:
            return None
        self.detail = component_detail(self.model, run.items, run.result, self.selected,
                                       item_index=dict(self.pattern_items) or None)
        self._emit("detail")
        return self.detail

    def set_pattern_item(self, row: int) -> None:
        """Show the attention pattern on item ``row`` of the current run (it replaces the shown item of its kind).

        Raises:
            ExplorerError: no run yet, or ``row`` is not an item of the current run.
        """
        run = self.current
        n = 0 if run is None else len(run.items)
        r = _as_int(row)
        if r is None or not 0 <= r < n:
            raise ExplorerError(f"'row' must be an item of the current run, in [0, {n}) (got {row!r})")
        self.pattern_items[run.items.kinds[r]] = r
        if self.selected is not None:
            self.refresh_detail()
