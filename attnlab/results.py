"""Results of analyses: labelled tensors with provenance, tables, files and rich display.

A :class:`PatchingResult` keeps everything needed to interpret, re-plot and reproduce a sweep: the normalised scores
with named axes and labels, the per-prompt patched metric, the clean and corrupted baselines, the model and task it
came from, and the settings. It converts to a pandas DataFrame, lists its top components, saves to JSON and loads
back exactly (float32 values survive the round trip bit for bit), and displays in JupyterLab as an interactive heatmap
(``application/vnd.attnlab.heatmap.v1+json``), with static HTML and plain-text fallbacks for other front ends.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnlab import serialisation
from attnlab.errors import AttnlabError

__all__ = ["BASELINE_MIN_SEPARATION", "PatchingResult", "baseline_check"]

#: The smallest separation of the clean and corrupted baselines, in units of the metric's spread over prompts, below
#: which a result carries a ``"baselines_close"`` warning (see :func:`baseline_check`).
BASELINE_MIN_SEPARATION = 1.0


def baseline_check(clean: Sequence[float], corrupted: Sequence[float], *,
                   min_separation: float = BASELINE_MIN_SEPARATION) -> dict:
    """How far apart the clean and corrupted baselines are, measured against how much the metric varies over prompts.

    Normalised patching scores divide by the gap ``clean - corrupted`` of the mean metric (Wang et al. 2022, section
    3; Heimersheim & Nanda 2024, arXiv 2404.15255, section 3 on choosing metrics). When that gap is small compared
    with how much the metric itself varies from prompt to prompt, a score of 0.5 means "half of a difference the
    corruption barely makes": a patch that shifts the metric by a fraction of its ordinary prompt-to-prompt variation
    can read as restoring most of the behaviour, and the scores of different runs are not on comparable footing.
    A fixed floor (say "1 logit") cannot tell a task whose logit difference is stable to 0.1 logits across prompts,
    where a 0.8-logit gap is a clear effect, from one where it scatters by 2 logits, where it is not; so the check is
    relative to the spread. It uses

        separation = |mean(clean) - mean(corrupted)| / spread,
        spread = sqrt((var(clean) + var(corrupted)) / 2)   (sample variances over prompts),

    the standardised mean difference (Cohen's d) of the two runs' per-prompt metric. Below
    :data:`BASELINE_MIN_SEPARATION` (1.0: the corruption moves the metric by less than one prompt-to-prompt standard
    deviation, so the clean and corrupted distributions overlap heavily) the result warns. Measured on the embedded
    SmolLM2-135M (logit difference, 16 prompts, seeds 0 and 1): IOI separates by 2.3 (ABC corruption) and 5.6 (S2
    swap); Colored Objects by 0.24 to 0.31 (gap about 0.4 logits against a spread of 1.4 to 1.7 logits), so the
    threshold sits well between them. The paired alternative (mean over standard deviation of the per-prompt gaps)
    separated the two tasks less (IOI-ABC 1.7, Colored Objects 0.8 to 0.9): it measures how consistently the
    corruption moves each prompt, not how large the move is against the metric's own variation.

    Args:
        clean, corrupted: [prompt] the per-prompt metric of the clean and corrupted runs (the metric's units).
        min_separation: the threshold, in standard deviations.

    Returns:
        ``{"gap", "spread", "separation", "n_prompts", "min_separation", "ok"}``: the gap in the metric's units, the
        pooled standard deviation, their ratio (None when the spread is zero or there is a single prompt), and
        whether the separation reaches the threshold (True when it cannot be measured).
    """
    c = [float(x) for x in clean]
    k = [float(x) for x in corrupted]
    n = min(len(c), len(k))
    gap = (sum(c) / len(c) - sum(k) / len(k)) if n else float("nan")

    def var(xs):
        m = sum(xs) / len(xs)
        return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    spread = math.sqrt((var(c) + var(k)) / 2) if n > 1 else None
    separation = abs(gap) / spread if spread else None
    ok = separation is None or separation >= min_separation
    return {"gap": gap, "spread": spread, "separation": separation, "n_prompts": n,
            "min_separation": float(min_separation), "ok": ok}


def _baseline_warnings(per_prompt: dict, metric_label: str) -> list[dict]:
    """The warnings of :func:`baseline_check` for a result's per-prompt baselines (empty when fine or unknown)."""
    if not per_prompt or not per_prompt.get("clean") or not per_prompt.get("corrupted"):
        return []
    check = baseline_check(per_prompt["clean"], per_prompt["corrupted"])
    if check["ok"]:
        return []
    what = f"mean {metric_label}" if metric_label else "mean metric"
    message = (f"clean and corrupted baselines are close: their {what} differs by {check['gap']:.3g}, only "
               f"{check['separation']:.2f} times the metric's spread over prompts (standard deviation "
               f"{check['spread']:.3g}; warning below {check['min_separation']:g}). Normalised scores divide by this "
               "gap, so small shifts of the metric read as large fractions of it: compare raw metric changes too, "
               "or use a corruption that changes the answer more.")
    return [{"kind": "baselines_close", "message": message, **check}]


def _to_nested(t: Tensor) -> list:
    """Tensor -> nested lists of Python floats, NaN as None (JSON has no NaN)."""
    flat = [None if math.isnan(v) else v for v in t.double().reshape(-1).tolist()]
    if t.ndim == 0:
        return flat[0]
    def build(values, shape):
        if len(shape) == 1:
            return values
        step = len(values) // shape[0]
        return [build(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
    return build(flat, list(t.shape))


def _from_nested(data, dtype=torch.float32) -> Tensor:
    def fix(x):
        return [fix(v) for v in x] if isinstance(x, list) else (float("nan") if x is None else x)
    return torch.tensor(fix(data), dtype=dtype)


@dataclass
class PatchingResult(serialisation.Saved):
    """The result of an activation-patching sweep.

    Attributes:
        analysis: ``"activation_patching"``.
        component: what was patched (``"heads"``, ``"resid_pre"`` ...).
        direction: ``"denoising"`` or ``"noising"``.
        dims: axis names of ``values``, e.g. ``("layer", "head")`` or ``("layer", "head", "pos")``.
        values: Float[*dims] normalised metric (denoising: 0 no effect, 1 clean restored; noising: 0 no
            effect, -1 destroyed). NaN where not computed.
        per_prompt: Float[*dims, prompt] patched metric per prompt (logit difference in logits by default); NaN where
            not computed.
        labels: per axis, the label of each index (``"L9"``, ``"H9"``, ``"S2"``).
        index: per axis, the model index of each entry (layer numbers, head numbers, token positions).
        tokens: for a ``pos`` axis, the clean prompt 0's token at each patched position (text), else None.
        prompt_tokens: all tokens of clean prompt 0, or None for models without a tokenizer.
        metric, metric_description, metric_label: the metric's name, meaning and axis label with units
            (:class:`attnlab.metrics.Metric`).
        baselines: mean metric of the clean and corrupted runs (in the metric's units).
        model, task, settings: provenance (see :class:`~attnlab.backends.ModelInfo`,
            :meth:`~attnlab.tasks.base.PatchingDataset.describe`) and engine settings.
        complete: False if the sweep was interrupted; ``layers_done`` lists the finished layers.
        baselines_per_prompt: ``{"clean": [prompt], "corrupted": [prompt]}`` the metric of each prompt's clean and
            corrupted run (the metric's units); empty for results that did not record them.
        warnings: what may make the result misleading, each ``{"kind", "message", ...}`` (plain text). By default
            computed from ``baselines_per_prompt`` (``"baselines_close"``: see :func:`baseline_check`); saved and
            loaded with the result.
    """

    _record = serialisation.RESULT


    analysis: str
    component: str
    direction: str
    dims: tuple[str, ...]
    values: Tensor
    per_prompt: Tensor | None
    labels: dict[str, list[str]]
    index: dict[str, list[int]]
    tokens: list[str] | None = None
    prompt_tokens: list[str] | None = None
    metric: str = "logit_diff"
    metric_description: str = ""
    metric_label: str = ""
    baselines: dict[str, float] = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    complete: bool = True
    layers_done: list[int] = field(default_factory=list)
    baselines_per_prompt: dict[str, list[float]] = field(default_factory=dict)
    warnings: list[dict] | None = None

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
        if self.warnings is None:
            from attnlab.render.views import metric_label

            self.warnings = _baseline_warnings(self.baselines_per_prompt, metric_label(self))
        if self.values.ndim != len(self.dims):
            raise AttnlabError(f"values has {self.values.ndim} axes but dims names {len(self.dims)}: {self.dims}")
        for axis, size in zip(self.dims, self.values.shape):
            if len(self.labels.get(axis, [])) != size:
                raise AttnlabError(f"labels[{axis!r}] must have {size} entries")

    # -- names -----------------------------------------------------------------------------------------------------
    def component_name(self, idx: tuple[int, ...]) -> str:
        """Human-readable name of the cell at ``idx`` (``"L9H9"``, ``"L3 @ S2"``, ``"L9H9 @ END"``)."""
        named = dict(zip(self.dims, idx))
        name = f"L{self.index['layer'][named['layer']]}"
        if "head" in named:
            name += f"H{self.index['head'][named['head']]}"
        if "pos" in named:
            name += f" @ {self.labels['pos'][named['pos']]}"
        return name

    # -- tables ----------------------------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per cell: ``component`` (``"L9H9 @ END"``), ``head_name`` (``"L9H9"``, for head sweeps), index
        columns (``layer``, ``head``, ``pos``), ``pos_label``, ``token``, ``value``, and the per-prompt mean and
        standard error of the patched metric (``patched_logit_diff`` and ``patched_logit_diff_sem`` for the default
        metric; ``patched_{metric}`` in general)."""
        import itertools

        import pandas as pd

        rows = []
        for idx in itertools.product(*(range(n) for n in self.values.shape)):
            row = {"component": self.component_name(idx)}
            if "head" in self.dims:  # plain head name, handy for pivoting [layer, head, pos] tables
                named = dict(zip(self.dims, idx))
                row["head_name"] = f"L{self.index['layer'][named['layer']]}H{self.index['head'][named['head']]}"
            for axis, i in zip(self.dims, idx):
                row[axis] = self.index[axis][i]
                if axis == "pos":
                    row["pos_label"] = self.labels["pos"][i]
                    if self.tokens is not None:
                        row["token"] = self.tokens[i]
            row["value"] = float(self.values[idx])
            if self.per_prompt is not None:
                pp = self.per_prompt[idx]
                col = f"patched_{self.metric}" if self.metric.isidentifier() else "patched_metric"
                row[col] = float(pp.mean())
                row[f"{col}_sem"] = float(pp.std() / math.sqrt(pp.numel())) if pp.numel() > 1 else 0.0
            rows.append(row)
        return pd.DataFrame(rows)

    def top(self, k: int = 10, *, by: str = "abs"):
        """The ``k`` cells with the largest score (``by="abs"``: largest magnitude; ``"max"``; ``"min"``).

        Returns:
            A DataFrame sorted by the chosen order, NaN cells excluded.
        """
        if by not in ("abs", "max", "min"):
            raise AttnlabError(f"'by' must be 'abs', 'max' or 'min' (got {by!r})")
        df = self.to_dataframe().dropna(subset=["value"])
        key = {"abs": df["value"].abs(), "max": df["value"], "min": -df["value"]}[by]
        return df.loc[key.sort_values(ascending=False).index].head(k).reset_index(drop=True)

    # -- files -----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary (NaN as null): the ``attnlab.result`` record, format version 1."""
        return {
            **serialisation.RESULT.header(),
            "analysis": self.analysis, "component": self.component, "direction": self.direction,
            "dims": list(self.dims), "values": _to_nested(self.values),
            "per_prompt": None if self.per_prompt is None else _to_nested(self.per_prompt),
            "labels": self.labels, "index": self.index, "tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
            "metric": self.metric, "metric_description": self.metric_description, "metric_label": self.metric_label,
            "baselines": self.baselines,
            "model": self.model, "task": self.task, "settings": self.settings,
            "complete": self.complete, "layers_done": self.layers_done,
            "baselines_per_prompt": self.baselines_per_prompt, "warnings": list(self.warnings or []),
        }

    @classmethod
    def _from_content(cls, kw: dict) -> "PatchingResult":
        kw = dict(kw)
        kw["values"] = _from_nested(kw["values"])
        kw["per_prompt"] = None if kw["per_prompt"] is None else _from_nested(kw["per_prompt"])
        return cls(**kw)


    # -- comparison ------------------------------------------------------------------------------------------------
    def difference(self, other: "PatchingResult", *, scores: str = "normalised",
                   names: tuple[str, str] | None = None) -> "PatchingResult":
        """This result minus ``other``, cell by cell: see :func:`attnlab.compare_runs.compare_results`."""
        from attnlab.compare_runs import compare_results

        return compare_results(self, other, scores=scores, names=names)

    # -- display ---------------------------------------------------------------------------------------------------
    def heatmap_payload(self, *, scale: str | None = None, zmax: float | None = None, percentile: float = 99.0):
        """The :class:`~attnlab.render.contract.HeatmapPayload` for this result (2-D; ``[layer, head, pos]``
        results become rows ``L{l}H{h}`` grouped by layer).

        Args:
            scale: the colour scale shown first: ``"fixed"`` (``-zmax .. +zmax``; ±1 for normalised scores),
                ``"symmetric"`` (± the largest |value|) or ``"percentile"`` (± the ``percentile``-th percentile of
                |value|, larger cells marked as clipped). None: symmetric for a complete result, fixed ±1 for an
                interrupted one or a difference of normalised scores. The view's scale menu switches between them.
            zmax: the fixed range (default 1 for normalised scores).
            percentile: the clipping percentile of the ``"percentile"`` scale.
        """
        from attnlab.render.views import patching_heatmap

        return patching_heatmap(self, scale=scale, zmax=zmax, percentile=percentile)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.views import mime_bundle

        return mime_bundle(self.heatmap_payload(), plain=repr(self))

    def __repr__(self) -> str:
        plural = {"layer": "layers", "head": "heads", "pos": "positions"}
        shape = " x ".join(f"{n} {plural.get(d, d)}" for d, n in zip(self.dims, self.values.shape))
        state = "" if self.complete else f", INCOMPLETE ({len(self.layers_done)} layers done)"
        from attnlab.metrics import SHORT_NAMES

        short = SHORT_NAMES.get(self.metric, self.metric)
        if self.analysis == "patching_difference":
            cmp = self.settings.get("comparison", {})
            return (f"<PatchingResult difference ({cmp.get('scores', '?')} scores) {self.component}: {shape}; "
                    f"A = {cmp.get('a', {}).get('name', '?')}, B = {cmp.get('b', {}).get('name', '?')}>")
        warn = f", WARNING: {self.warnings[0]['kind']}" if self.warnings else ""
        return (f"<PatchingResult {self.component} ({self.direction}) on {self.model.get('name', '?')}: {shape}; "
                f"clean {short} {self.baselines.get('clean', float('nan')):.3f}, "
                f"corrupted {short} {self.baselines.get('corrupted', float('nan')):.3f}{state}{warn}>")

    def plot(self, ax=None, **kw):
        """Draw the heatmap of the scores (±1 by default: they are normalised) with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_patching`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width (``"column"``, ``"double"`` or inches), height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_patching

        return plot_patching(self, ax, **kw)
