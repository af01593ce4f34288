"""Results of analyses: labelled tensors with provenance, tables, files and rich display.

A :class:`PatchingResult` keeps everything needed to interpret, re-plot and reproduce a sweep: the normalised scores
with named axes and labels, the per-prompt patched metric, the clean and corrupted baselines, the model and task it
came from, and the settings. It converts to a pandas DataFrame, lists its top components, saves to JSON and loads
back exactly (float32 values survive the round trip bit for bit), and displays in JupyterLab as an interactive heatmap
(``application/vnd.attnlab.heatmap.v1+json``), with static HTML and plain-text fallbacks for other front ends.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnlab import serialisation
from attnlab.errors import AttnlabError

__all__ = ["PatchingResult"]


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

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
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
        }

    @classmethod
    def _from_content(cls, kw: dict) -> "PatchingResult":
        kw = dict(kw)
        kw["values"] = _from_nested(kw["values"])
        kw["per_prompt"] = None if kw["per_prompt"] is None else _from_nested(kw["per_prompt"])
        return cls(**kw)


    # -- display ---------------------------------------------------------------------------------------------------
    def heatmap_payload(self):
        """The :class:`~attnlab.render.contract.HeatmapPayload` for this result (2-D; ``[layer, head, pos]``
        results become rows ``L{l}H{h}`` grouped by layer)."""
        from attnlab.render.views import patching_heatmap

        return patching_heatmap(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.views import mime_bundle

        return mime_bundle(self.heatmap_payload(), plain=repr(self))

    def __repr__(self) -> str:
        plural = {"layer": "layers", "head": "heads", "pos": "positions"}
        shape = " x ".join(f"{n} {plural.get(d, d)}" for d, n in zip(self.dims, self.values.shape))
        state = "" if self.complete else f", INCOMPLETE ({len(self.layers_done)} layers done)"
        from attnlab.metrics import SHORT_NAMES

        short = SHORT_NAMES.get(self.metric, self.metric)
        return (f"<PatchingResult {self.component} ({self.direction}) on {self.model.get('name', '?')}: {shape}; "
                f"clean {short} {self.baselines.get('clean', float('nan')):.3f}, "
                f"corrupted {short} {self.baselines.get('corrupted', float('nan')):.3f}{state}>")

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
