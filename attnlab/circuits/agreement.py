"""How well attribution patching agrees with exact activation patching, component by component.

Context:
    Attribution patching (:mod:`attnlab.circuits.attribution`; Nanda 2023) is a first-order Taylor estimate of
    activation patching. It is trusted when it ranks components like the exact method and flagged where it does
    not: Nanda's post and Kramár et al. 2024 (AtP*, arXiv 2403.00745, section 3) name the usual failures, large
    activation changes (the residual stream at the corrupted token, the first MLP) and saturated attention (a
    softmax at 0 or 1 has a near-zero gradient although patching can move it a lot: false negatives). Syed et al.
    2023 (EAP, arXiv 2310.10348) check their edge scores the same way, by correlation with exact patching.

An :class:`AgreementReport` holds, for one component sweep computed both ways (same model, dataset, direction):

- Spearman's rank correlation (ties get their average rank) and Pearson's correlation over all cells;
- the scatter data, one ``{component, exact, attribution}`` point per cell;
- the cells where the linear approximation fails: ``|exact - attribution| > rel_threshold * max(|exact|,
  min_scale)``, largest absolute error first (``min_scale`` keeps cells with a near-zero exact effect from
  failing on noise);
- ``top_k_recall``: the fraction of the exact top-k cells (by magnitude) that attribution also puts in its top k.

Scores are in normalised units of the metric both results were computed with (fraction of the clean-corrupted gap of
the logit difference by default; ``metric=`` of :func:`agreement_report`), as both results carry them.
"""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnlab import serialisation
from attnlab.errors import AgreementError
from attnlab.metrics import MetricLike
from attnlab.results import PatchingResult

__all__ = ["AgreementError", "AgreementReport", "agreement", "agreement_report", "pearson", "spearman"]


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson's correlation of two 1-D tensors (NaN when either is constant or has fewer than 2 entries)."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / den if den > 0 else math.nan


def _average_ranks(x: Tensor) -> Tensor:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(values.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation: Pearson's correlation of the average ranks (handles ties like SciPy)."""
    return pearson(_average_ranks(x), _average_ranks(y))


@dataclass
class AgreementReport(serialisation.Saved):
    """Attribution patching versus exact patching for one component sweep.

    Attributes:
        component, direction: what was compared (``"heads"``, ``"denoising"`` ...).
        n: number of cells compared (NaN cells left out).
        spearman, pearson: correlations of the attribution scores with the exact ones.
        top_k, top_k_recall: fraction of the ``top_k`` largest-magnitude exact cells that attribution also ranks
            in its ``top_k``.
        points: scatter data, ``{"component": "L9H9", "exact": float, "attribution": float}`` per cell.
        failures: cells where the approximation fails (see the module docstring), largest ``abs_error`` first:
            the point plus ``abs_error`` and ``rel_error`` (``abs_error / max(|exact|, min_scale)``).
        rel_threshold, min_scale: the failure criterion.
        baselines: the exact result's clean and corrupted means of the metric.
        metric: the metric both results measure (its name).
    """

    _record = serialisation.AGREEMENT


    component: str
    direction: str
    n: int
    spearman: float
    pearson: float
    top_k: int
    top_k_recall: float
    points: list[dict]
    failures: list[dict]
    rel_threshold: float
    min_scale: float
    baselines: dict = field(default_factory=dict)
    metric: str = "logit_diff"

    def to_dataframe(self):
        """One row per cell: ``component``, ``exact``, ``attribution``, ``abs_error``, ``rel_error``, ``fails``."""
        import pandas as pd

        failing = {f["component"] for f in self.failures}
        df = pd.DataFrame(self.points, columns=["component", "exact", "attribution"])
        df["abs_error"] = (df["exact"] - df["attribution"]).abs()
        df["rel_error"] = df["abs_error"] / df["exact"].abs().clip(lower=self.min_scale)
        df["fails"] = df["component"].isin(failing)
        return df

    def to_dict(self) -> dict:
        """JSON-serialisable (NaN correlations as None): the ``attnlab.agreement`` record, format version 1."""
        data = asdict(self)
        for key in ("spearman", "pearson", "top_k_recall"):
            if isinstance(data[key], float) and math.isnan(data[key]):
                data[key] = None
        return {**serialisation.AGREEMENT.header(), **data}

    @classmethod
    def _from_content(cls, kw: dict) -> "AgreementReport":
        kw = dict(kw)
        for key in ("spearman", "pearson", "top_k_recall"):
            if kw[key] is None:
                kw[key] = math.nan
        return cls(**kw)


    def __repr__(self) -> str:
        return (f"<AgreementReport {self.component} ({self.direction}), {self.n} cells: Spearman {self.spearman:.3f}, "
                f"Pearson {self.pearson:.3f}, top-{self.top_k} recall {self.top_k_recall:.2f}, "
                f"{len(self.failures)} failures>")

    def plot(self, ax=None, **kw):
        """Draw attribution against exact scores, failures in red with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_agreement`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_agreement

        return plot_agreement(self, ax, **kw)


def agreement(
    exact: PatchingResult,
    attribution: PatchingResult,
    *,
    rel_threshold: float = 0.5,
    min_scale: float = 0.05,
    top_k: int = 10,
    max_failures: int | None = 20,
) -> AgreementReport:
    """Compare an attribution-patching result with the exact sweep of the same cells.

    Args:
        exact: from :func:`attnlab.patching.run_sweep`.
        attribution: from :func:`attnlab.circuits.attribution.attribution_sweep` (same component, direction, cells).
        rel_threshold: a cell fails when ``|exact - attribution| > rel_threshold * max(|exact|, min_scale)``.
        min_scale: floor of the error scale, in normalised units (default 0.05: 5% of the clean-corrupted gap).
        top_k: size of the top sets compared by ``top_k_recall`` (capped at the number of cells).
        max_failures: keep at most this many failures (largest errors first); None keeps all.

    Returns:
        An :class:`AgreementReport`.

    Raises:
        AgreementError: different component, direction, metric, axes or cell indices; no cell to compare; bad
            thresholds.
    """
    if rel_threshold <= 0 or min_scale <= 0 or top_k < 1:
        raise AgreementError(f"'rel_threshold' and 'min_scale' must be > 0 and 'top_k' >= 1 (got {rel_threshold}, "
                             f"{min_scale}, {top_k})")
    for what in ("component", "direction", "metric", "dims", "index"):
        a, b = getattr(exact, what), getattr(attribution, what)
        if a != b:
            raise AgreementError(f"exact and attribution results differ in {what} ({a!r} vs {b!r}); run both on the "
                                 "same component, direction, metric, layers, heads and positions")
    import itertools

    points = []
    for idx in itertools.product(*(range(n) for n in exact.values.shape)):
        e, a = float(exact.values[idx]), float(attribution.values[idx])
        if math.isnan(e) or math.isnan(a):
            continue
        points.append({"component": exact.component_name(idx), "exact": e, "attribution": a})
    if not points:
        raise AgreementError("no cell has both an exact and an attribution score (all NaN)")
    e = torch.tensor([p["exact"] for p in points], dtype=torch.float64)
    a = torch.tensor([p["attribution"] for p in points], dtype=torch.float64)
    k = min(top_k, len(points))
    top_e = set(e.abs().argsort(descending=True, stable=True)[:k].tolist())
    top_a = set(a.abs().argsort(descending=True, stable=True)[:k].tolist())
    err = (e - a).abs()
    rel = err / e.abs().clamp(min=min_scale)
    failing = [i for i in err.argsort(descending=True, stable=True).tolist() if rel[i] > rel_threshold]
    if max_failures is not None:
        failing = failing[:max_failures]
    failures = [{**points[i], "abs_error": float(err[i]), "rel_error": float(rel[i])} for i in failing]
    return AgreementReport(
        component=exact.component, direction=exact.direction, n=len(points), spearman=spearman(e, a),
        pearson=pearson(e, a), top_k=k, top_k_recall=len(top_e & top_a) / k, points=points, failures=failures,
        rel_threshold=rel_threshold, min_scale=min_scale, baselines=dict(exact.baselines), metric=exact.metric,
    )


def agreement_report(
    model,
    dataset,
    component: str = "heads",
    *,
    direction: str = "denoising",
    layers=None,
    progress: bool = False,
    metric: MetricLike = "logit_diff",
    **kwargs,
) -> AgreementReport:
    """Run attribution patching and exact patching (``run_sweep``) on the same cells and compare them.

    Args:
        model: a backend with gradient support (TransformerLens).
        dataset: clean/corrupted pairs.
        component: ``"heads"``, ``"heads_by_pos"``, ``"resid_pre"``, ``"attn_out"`` or ``"mlp_out"``.
        direction: ``"denoising"`` or ``"noising"``.
        layers: restrict both sweeps to these blocks (the exact sweep costs one batched pass per layer chunk).
        progress: show the exact sweep's progress bar.
        metric: the metric of both sweeps (default the logit difference; see
            :func:`~attnlab.circuits.attribution.attribution_patching`: a differentiable one).
        **kwargs: passed to :func:`agreement` (``rel_threshold``, ``min_scale``, ``top_k``, ``max_failures``).

    Returns:
        An :class:`AgreementReport`.

    Raises:
        BackendError, SiteError, DatasetError, MetricError: from the two sweeps.
    """
    from attnlab.circuits.attribution import attribution_sweep
    from attnlab.patching import run_sweep

    attr = attribution_sweep(model, dataset, component, direction=direction, layers=layers, metric=metric)
    exact = run_sweep(model, dataset, component, direction=direction, layers=layers, progress=progress, metric=metric)
    return agreement(exact, attr, **kwargs)
