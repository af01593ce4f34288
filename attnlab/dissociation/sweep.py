"""The ablation sweep of the recall-versus-reasoning workbench: every component ablated, in batched passes.

Method:
    For each component (a query head's output ``z``, a layer's attention-block output, its MLP-block output, or a set
    of these ablated together) the sweep replaces the component's output on every item and measures each metric at
    the item's END. The replacement (``ablation=``):

    - ``"zero"``: 0 (the component's contribution removed; for a head, its ``z_h W_O^h`` term; for a block its whole
      output, bias included);
    - ``"mean"``: the mean of the component's output over the items of the same family, per position (a family has
      one template, so its positions align; positions past an item's END are left out of the mean), the mean
      ablation of Wang et al. 2022 (arXiv 2211.00593, section 3.1);
    - ``"resample"``: the output on the item's corrupted counterpart (same template, other entities), the resample
      ablation of Chan et al. 2022 ("Causal scrubbing"), which is activation patching in the noising direction
      (Heimersheim & Nanda 2024, arXiv 2404.15255).

    On grouped-query models a head is a *query* head: its ``z`` (the attention-weighted values it reads through its
    shared key/value head) is replaced; the other query heads of the group keep theirs.

Batching (as :mod:`attnlab.patching.engine`): component ``c`` of a pass occupies rows [c*N, (c+1)*N) of the batch; a
pass starts at its components' first block from the clean run's residual stream (the blocks before it cannot
change); as many components share a pass as the memory budget allows; every metric is computed in the same passes
(on an NDIF server, where the model runs: a pass returns ``rows x metrics`` numbers). On the nnsight backend the whole
sweep is one request (:meth:`~attnlab.backends.base.Backend.run_many`).
"""

import math
import re
import time
from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab import interrupts, memory
from attnlab.backends.base import Intervention, Reduction, RunSpec
from attnlab.errors import ArgumentError, SiteError
from attnlab.metrics import Metric, MetricLike, get_metric
from attnlab.sites import Site, SiteKind, as_int
from attnlab.tasks.recall_reasoning import RecallReasoningItems, check_items

__all__ = ["ABLATIONS", "GRANULARITIES", "Component", "Part", "check_items", "dissociation_sweep",
           "granularity_components", "parse_component", "run_components"]

#: the ablation kinds
ABLATIONS = ("zero", "mean", "resample")
#: the granularities of a sweep
GRANULARITIES = ("heads", "attn", "mlp", "blocks", "components")
_DEFAULT_BUDGET_MB = memory.DEFAULT_BUDGET_MB

_PART = re.compile(r"^\s*(?:L(?P<l>\d+)H(?P<h>\d+)|(?P<kind>ATTN|MLP)(?P<b>\d+))\s*$", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class Part:
    """One ablatable output: a query head's ``z`` (``kind`` z, ``head`` set), an attention block's output
    (``attn_out``) or an MLP block's output (``mlp_out``) of block ``layer``."""

    layer: int
    kind: SiteKind
    head: int | None = None

    @property
    def name(self) -> str:
        if self.kind is SiteKind.Z:
            return f"L{self.layer}H{self.head}"
        return f"{'ATTN' if self.kind is SiteKind.ATTN_OUT else 'MLP'}{self.layer}"


@dataclass(frozen=True)
class Component:
    """What one variant of the sweep ablates: one part, or several ablated together (a group)."""

    parts: tuple[Part, ...]

    @property
    def name(self) -> str:
        """``"L3H2"``, ``"ATTN3"``, ``"MLP3"``, or a group ``"L3H2+MLP5"``."""
        return "+".join(p.name for p in self.parts)

    @property
    def start_layer(self) -> int:
        """The first block this component touches (a pass can start there)."""
        return min(p.layer for p in self.parts)

    @property
    def head(self) -> int | None:
        """The head of a single-head component, else None."""
        return self.parts[0].head if len(self.parts) == 1 else None


def parse_component(model, name) -> Component:
    """A :class:`Component` from its name (``"L3H2"``, ``"ATTN3"``, ``"MLP3"``, a group ``"L3H2+MLP5"``), a
    ``(layer, head)`` pair, or a Component, checked against the model.

    Raises:
        SiteError: an unknown name, a layer or head the model does not have, an MLP on an attention-only model, or a
            part named twice in a group.
    """
    if isinstance(name, Component):
        parts = name.parts
    elif isinstance(name, tuple | list) and len(name) == 2 and all(as_int(x) is not None for x in name):
        parts = (Part(as_int(name[0]), SiteKind.Z, as_int(name[1])),)
    elif isinstance(name, str) and name.strip():
        parts = []
        for piece in name.split("+"):
            m = _PART.match(piece)
            if m is None:
                raise SiteError(f"unknown component {piece.strip()!r} in {name!r}: name heads 'L3H2' (layer 3, head 2), "
                                "attention blocks 'ATTN3', MLP blocks 'MLP3', and groups 'L3H2+MLP5'")
            if m["l"] is not None:
                parts.append(Part(int(m["l"]), SiteKind.Z, int(m["h"])))
            else:
                parts.append(Part(int(m["b"]), SiteKind.ATTN_OUT if m["kind"].upper() == "ATTN" else SiteKind.MLP_OUT))
        parts = tuple(parts)
    else:
        raise SiteError(f"a component is a name such as 'L3H2', 'ATTN3', 'MLP3' or 'L3H2+MLP5' (got {name!r})")
    info = model.info
    for p in parts:
        if not 0 <= p.layer < info.n_layers:
            raise SiteError(f"component {p.name!r}: {info.name} has layers 0..{info.n_layers - 1}")
        if p.head is not None and not 0 <= p.head < info.n_heads:
            raise SiteError(f"component {p.name!r}: {info.name} has (query) heads 0..{info.n_heads - 1} per layer")
        if p.kind is SiteKind.MLP_OUT and not info.has_mlp:
            raise SiteError(f"component {p.name!r}: {info.name} is attention-only; it has no MLP blocks")
    if len(set(parts)) != len(parts):
        raise SiteError(f"component {name!r} names a part twice")
    return Component(tuple(sorted(parts)))


def granularity_components(model, granularity: str, components=None) -> list[Component]:
    """The components a sweep of ``granularity`` ablates one by one.

    Args:
        model: the model.
        granularity: ``"heads"`` (every query head), ``"attn"`` (every attention block), ``"mlp"`` (every MLP
            block), ``"blocks"`` (both, per layer) or ``"components"`` (the ``components`` given).
        components: for ``"components"``: names, pairs or Components (a group is ablated together).

    Raises:
        SiteError: an unknown granularity or component, ``"mlp"`` or ``"blocks"`` on an attention-only model,
            ``components`` with another granularity, no components, or a component given twice.
    """
    info = model.info
    if granularity not in GRANULARITIES:
        raise SiteError(f"'granularity' must be one of {GRANULARITIES} (got {granularity!r})")
    if components is not None and granularity != "components":
        raise SiteError(f"components= is for granularity='components' (got granularity={granularity!r})")
    if granularity in ("mlp", "blocks") and not info.has_mlp:
        raise SiteError(f"{info.name} is attention-only: it has no MLP blocks to ablate; use 'heads' or 'attn'")
    layers = range(info.n_layers)
    if granularity == "heads":
        return [Component((Part(layer, SiteKind.Z, h),)) for layer in layers for h in range(info.n_heads)]
    if granularity == "attn":
        return [Component((Part(layer, SiteKind.ATTN_OUT),)) for layer in layers]
    if granularity == "mlp":
        return [Component((Part(layer, SiteKind.MLP_OUT),)) for layer in layers]
    if granularity == "blocks":
        return [Component((Part(layer, k),)) for layer in layers for k in (SiteKind.ATTN_OUT, SiteKind.MLP_OUT)]
    if components is None or isinstance(components, str) or len(components) == 0:
        raise SiteError("granularity='components' needs components=[...], e.g. ['L3H2', 'MLP5', 'L3H2+L4H1']")
    out = [parse_component(model, c) for c in components]
    names = [c.name for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SiteError(f"components given twice: {dup}")
    return out


def _metrics(metrics) -> list[Metric]:
    if isinstance(metrics, str | Metric) or callable(metrics):
        metrics = [metrics]
    out = [get_metric(m) for m in metrics]
    if not out:
        raise ArgumentError("'metrics' must name at least one metric, e.g. ('accuracy', 'logit_diff')")
    names = [m.name for m in out]
    if len(set(names)) != len(names):
        raise ArgumentError(f"'metrics' has duplicates: {names}")
    return out


@dataclass
class _Sources:
    """What the ablation writes, per site: zero (None), the family means, or the corrupted run's activations."""

    ablation: str
    acts: dict  # Site -> Float[N, pos, ...] (mean: already the per-row family mean)

    def values(self, part: Part, src_rows: Tensor, n_pos: int, info) -> Tensor:
        if self.ablation == "zero":
            width = info.d_head if part.kind is SiteKind.Z else info.d_model
            return torch.zeros(len(src_rows), n_pos, width)
        act = self.acts[Site(part.kind, part.layer)]
        if part.kind is SiteKind.Z:
            return act[src_rows, :, part.head]
        return act[src_rows]


def _family_means(act: Tensor, families: list[str], end: Tensor) -> Tensor:
    """Per-row value: the mean over the rows of the same family, per position, of rows whose END is at or after
    that position."""
    n, n_pos = act.shape[:2]
    valid = (torch.arange(n_pos)[None, :] <= end[:, None]).to(act.dtype)  # [N, pos]
    out = torch.zeros_like(act)
    for fam in dict.fromkeys(families):
        rows = torch.tensor([i for i, f in enumerate(families) if f == fam])
        w = valid[rows].reshape(len(rows), n_pos, *([1] * (act.ndim - 2)))
        mean = (act[rows] * w).sum(0) / w.sum(0).clamp(min=1)
        out[rows] = mean
    return out


@dataclass
class SweepPlan:
    """Everything decided before the ablated passes (see :func:`dissociation_sweep`)."""

    components: list[Component]
    metrics: list[Metric]
    ablation: str
    clean: Tensor          # Float[N, M]
    reference: Tensor | None
    resid: dict            # layer -> Float[N, pos, d_model], the clean run entering that block
    sources: _Sources
    max_variants: int
    memory_budget_mb: float
    t0: float


def plan_sweep(model, items, components: list[Component], *, ablation: str, metrics, memory_budget_mb) -> SweepPlan:
    """Validate, run the clean pass (and the pass the ablation values come from), before any ablated pass.

    Raises:
        ArgumentError: an unknown ablation kind; MetricError: an unknown or broken metric (checked on the clean run);
        MemoryBudgetError/ArgumentError: a bad budget.
    """
    if ablation not in ABLATIONS:
        raise ArgumentError(f"'ablation' must be one of {ABLATIONS} (got {ablation!r})")
    metrics = _metrics(metrics)
    memory_budget_mb = memory.check_budget_value(memory_budget_mb)
    t0 = time.perf_counter()
    sites = sorted({Site(p.kind, p.layer) for c in components for p in c.parts}, key=lambda s: (s.layer, s.kind.value))
    for s in sites[:1]:
        model.check_site(s)
    starts = sorted({c.start_layer for c in components if c.start_layer > 0})
    resid_sites = [Site(SiteKind.RESID_PRE, layer) for layer in starts]
    clean_cache = resid_sites + (sites if ablation == "mean" else [])
    out = model.run(items.tokens, cache=clean_cache, logits_at=items.end)
    answers = items.answers
    reference = None
    values = []
    for m in metrics:
        ref = m.reference(out.logits)
        reference = ref if ref is not None else reference
        values.append(m.check(m(out.logits, answers, ref), len(items)).detach().float())
    clean = torch.stack(values, dim=-1)
    resid = {s.layer: out.cache[s] for s in resid_sites}
    if ablation == "mean":
        acts = {s: _family_means(out.cache[s], items.families, items.end) for s in sites}
    elif ablation == "resample":
        acts = dict(model.run(items.corrupted_tokens, cache=sites, logits_at=items.end).cache)
    else:
        acts = {}
    max_variants = memory.max_variants(model.info, items.n_pos, memory_budget_mb, rows_per_variant=len(items))
    return SweepPlan(components, metrics, ablation, clean, reference, resid, _Sources(ablation, acts),
                     max_variants, memory_budget_mb, t0)


def _pass_specs(model, items, plan: SweepPlan, order: list[int], reduce: Reduction | None):
    """One :class:`RunSpec` per batched pass: components of one start block, ``max_variants`` at a time."""
    n, n_pos, info = len(items), items.n_pos, model.info
    by_start: dict[int, list[int]] = {}
    for ci in order:
        by_start.setdefault(plan.components[ci].start_layer, []).append(ci)
    for start in sorted(by_start):
        todo = by_start[start]
        for k in range(0, len(todo), plan.max_variants):
            chunk = todo[k:k + plan.max_variants]
            groups: dict[tuple, list] = {}
            for v, ci in enumerate(chunk):
                rows = torch.arange(v * n, (v + 1) * n)
                src_rows = torch.arange(n)
                for part in plan.components[ci].parts:
                    groups.setdefault((part.layer, part.kind.value), []).append(
                        (rows, part, plan.sources.values(part, src_rows, n_pos, info)))
            ivs = []
            for (layer, kind), entries in sorted(groups.items()):
                rows = torch.cat([r for r, _, _ in entries])
                values = torch.cat([v for _, _, v in entries])
                heads = None
                if kind == SiteKind.Z.value:
                    heads = torch.cat([torch.full((len(r),), p.head, dtype=torch.long) for r, p, _ in entries])
                ivs.append(Intervention(SiteKind(kind), layer, rows=rows, values=values, heads=heads))
            yield RunSpec(tokens=items.tokens, repeat=len(chunk), interventions=ivs, logits_at=items.end,
                          start_layer=start, resid=plan.resid.get(start), reduce=reduce, key=tuple(chunk))


def run_components(model, items, plan: SweepPlan, *, progress: bool = True, desc: str = "ablating",
                   on_pass: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> tuple[Tensor, bool, int, int]:
    """Run the ablated passes of ``plan``.

    Returns:
        (ablated Float[C, N, M] with NaN for components not run, complete, passes run, passes planned).
    """
    from attnlab.progress import progress_bar

    n, c_total, metrics = len(items), len(plan.components), plan.metrics
    ablated = torch.full((c_total, n, len(metrics)), float("nan"))
    order = sorted(range(c_total), key=lambda i: plan.components[i].start_layer)
    counts: dict[int, int] = {}
    for ci in order:
        counts[plan.components[ci].start_layer] = counts.get(plan.components[ci].start_layer, 0) + 1
    total = sum(math.ceil(k / plan.max_variants) for k in counts.values())
    builtin = all(m.builtin for m in metrics)
    reduce = Reduction("+".join(m.name for m in metrics), items.answers, plan.reference) if builtin else None
    bar = progress_bar(total=total, desc=desc, disable=not progress)
    bar.set_postfix_str(f"{min(plan.max_variants, c_total)} components/pass")
    done, complete = 0, True
    try:
        for chunk, out in model.run_many(_pass_specs(model, items, plan, order, reduce)):
            if out.metric is not None:
                vals = out.metric.detach().float().reshape(len(chunk) * n, len(metrics))
            else:
                vals = torch.stack([m.check(m(out.logits, items.answers, plan.reference), len(chunk) * n).detach()
                                    .float() for m in metrics], dim=-1)
            for ci, v in zip(chunk, vals.split(n)):
                ablated[ci] = v
            done += 1
            bar.update(1)
            if on_pass is not None:
                on_pass(done, total)
            if should_stop is not None and should_stop():
                complete = False
                break
    except KeyboardInterrupt:
        complete = False
        interrupts.note_interrupt(desc, done, total)
    finally:
        bar.close()
    return ablated, complete and done == total, done, total


def dissociation_sweep(
    model,
    items: RecallReasoningItems,
    *,
    granularity: str = "heads",
    components: Sequence | None = None,
    ablation: str = "mean",
    metrics: Sequence[MetricLike] = ("accuracy", "logit_diff"),
    selectivity_metric: str | None = "logit_diff",
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    correction: str = "holm",
    alpha: float = 0.05,
    n_control_draws: int = 5,
    control_size: int | None = None,
    memory_budget_mb: float = _DEFAULT_BUDGET_MB,
    progress: bool = True,
    on_pass: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
):
    """Ablate every component on recall and reasoning items; find which need which, with intervals and controls.

    Args:
        model: any backend (TransformerLens or nnsight, local or remote).
        items: recall and reasoning items for this model (:func:`~attnlab.tasks.recall_reasoning.recall_reasoning_items`,
            usually after :func:`~attnlab.tasks.recall_reasoning.filter_correct`).
        granularity: ``"heads"``, ``"attn"``, ``"mlp"``, ``"blocks"`` or ``"components"`` (see
            :func:`granularity_components`).
        components: for ``granularity="components"``: names (``"L3H2"``, ``"ATTN3"``, ``"MLP3"``, a group
            ``"L3H2+MLP5"`` ablated together).
        ablation: ``"zero"``, ``"mean"`` (per family and position) or ``"resample"`` (from the corrupted
            counterparts); see the module docstring.
        metrics: every metric to measure, all in the same passes (built-in names, :class:`~attnlab.metrics.Metric`
            objects or callables); built-in ones are computed where the model runs.
        selectivity_metric: the metric whose normalised drops give the selectivity (default ``"logit_diff"``, or the
            first metric when it is not measured).
        n_bootstrap, seed, level: the paired bootstrap (resamples, seed, interval coverage).
        correction: ``"holm"`` or ``"bh"``, over every component's selectivity test; ``alpha`` its level.
        n_control_draws: random sets of components ablated together, of the size of the selective set (or
            ``control_size``), for each side; 0 for none.
        memory_budget_mb: peak memory of a batched pass, in MiB; sets how many components share a pass.
        progress: a tqdm bar; on_pass(done, total) after each pass; should_stop() polled after each pass (Cancel).

    Returns:
        A :class:`~attnlab.dissociation.result.DissociationResult` (per-item values of every metric, drops with
        intervals, selectivity, the corrected list, the double dissociation, the controls). Cancelled or
        interrupted: the finished components, the rest NaN, ``complete == False`` and no controls; a KeyboardInterrupt
        then stops the next analysis in the same cell (:mod:`attnlab.interrupts`).

    Raises:
        ArgumentTypeError, DatasetError: see :func:`check_items`; SiteError: see :func:`granularity_components`;
        ArgumentError: a bad ablation kind, metric list, bootstrap setting, correction, alpha or control setting;
        MetricError: a broken metric, or a task whose clean baseline of the selectivity metric is 0.
        All before any ablated pass.
    """
    from attnlab.dissociation.result import DissociationResult, check_stats_settings
    from attnlab.tasks.base import check_seed

    interrupts.raise_pending("the dissociation sweep")
    check_items(model, items)
    comps = granularity_components(model, granularity, components)
    seed = check_seed(seed)
    metric_objs = _metrics(metrics)
    names = [m.name for m in metric_objs]
    sel = selectivity_metric if selectivity_metric in names else names[0]
    check_stats_settings(n_bootstrap=n_bootstrap, level=level, correction=correction, alpha=alpha, items=items)
    if not isinstance(n_control_draws, int) or n_control_draws < 0:
        raise ArgumentError(f"'n_control_draws' must be a non-negative int (got {n_control_draws!r})")
    if control_size is not None and (not isinstance(control_size, int) or not 1 <= control_size <= len(comps)):
        raise ArgumentError(f"'control_size' must be an int in [1, {len(comps)}] (got {control_size!r})")
    plan = plan_sweep(model, items, comps, ablation=ablation, metrics=metric_objs, memory_budget_mb=memory_budget_mb)
    settings = dict(granularity=granularity, ablation=ablation, selectivity_metric=sel, n_bootstrap=n_bootstrap,
                    seed=seed, level=level, correction=correction, alpha=alpha, n_control_draws=n_control_draws,
                    control_size=control_size, memory_budget_mb=plan.memory_budget_mb,
                    components_per_pass=plan.max_variants)
    result = DissociationResult.from_sweep(model, items, plan, settings)
    result.check_baselines()
    ablated, complete, done, total = run_components(
        model, items, plan, progress=progress, on_pass=on_pass, should_stop=should_stop,
        desc=f"{ablation} ablation of {len(comps)} {granularity} ({', '.join(names)})")
    result = result.with_ablated(ablated, complete, passes=(done, total))
    if complete and n_control_draws > 0:
        result = _run_controls(model, items, plan, result, n_control_draws, control_size, seed, progress,
                               on_pass, should_stop)
    result.settings["seconds"] = round(time.perf_counter() - plan.t0, 3)
    return result


def _run_controls(model, items, plan: SweepPlan, result, draws: int, size: int | None, seed: int, progress: bool,
                  on_pass=None, should_stop=None):
    """Ablate the selective set of each side together (the top-ranked components when none is selective: then the
    set's ``selective`` flag is False), and ``draws`` random sets of as many other components. Every set starts at
    the first block of one of the sweep's components, so the sweep's recorded residual streams serve its passes.
    ``on_pass(done, total)`` counts the control passes (from 0 again)."""
    import random

    rng = random.Random(seed + 1)
    sets, meta = [], []
    for side in ("recall", "reasoning"):
        chosen = result.selective(side)
        k = size or max(1, len(chosen))
        k = min(k, len(plan.components))
        top = chosen[:k] if chosen else result.ranked(side)[:k]
        groups = [("selected", [plan.components[result.components.index(n)] for n in top])]
        selective = bool(chosen)
        for _ in range(draws):
            pool = [c for c in plan.components if c.name not in top]  # a random set never repeats the selected one
            if len(pool) >= k:
                groups.append(("random", rng.sample(pool, k)))
        for kind, comps in groups:
            parts = tuple(sorted({p for c in comps for p in c.parts}))
            sets.append(Component(parts))
            meta.append({"kind": kind, "side": side, "components": [c.name for c in comps],
                         "selective": selective if kind == "selected" else None})
    ctrl_plan = dataclasses.replace(plan, components=sets)
    ablated, complete, _, _ = run_components(model, items, ctrl_plan, progress=progress, on_pass=on_pass,
                                             should_stop=should_stop,
                                             desc=f"controls ({len(sets)} sets ablated together)")
    if not complete:
        return result
    return result.with_controls(meta, ablated)
