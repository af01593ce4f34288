"""Path patching: the effect of one head (or a set of heads) on the output *through* chosen receivers only.

Context:
    Activation patching measures a component's total effect, through every downstream path. Path patching (Wang et
    al. 2022, "Interpretability in the Wild", arXiv 2211.00593, section 3.1 and appendix B; Goldowsky-Dill et al.
    2023, arXiv 2304.05969) isolates the paths from a *sender* to a set of *receivers*: e.g. which heads change the
    name movers' queries at END (the S-inhibition heads, section 3.3), or which heads write directly to the logits
    (the name movers, section 3.2). With a *base* input (clean, for noising) and a *source* input (corrupted):

    1. Run the base and the source inputs and record every head's output ``z`` (and MLP outputs).
    2. Run the base input with the sender's ``z`` patched from the source run and every other head's ``z`` *frozen*
       at its base value (MLP outputs too with ``freeze_mlps=True``); record the receivers' inputs. Now the
       receivers' inputs differ from the base run only by the sender's direct contribution (plus paths through
       MLPs, which Wang et al. leave unfrozen: the default).
    3. Run the base input with only the receivers' inputs patched from run 2, everything else recomputed, and read
       the metric M at END (``metric=``: the logit difference by default; KL divergence from the clean run, the
       answer's probability or log-probability, accuracy, or a function of your own: :mod:`attnlab.metrics`).

    Receivers are attention heads' query, key or value inputs (sites of kind ``q``, ``k``, ``v``: patching the
    head's ``q`` is the same as patching the input of its query projection alone, since ``q`` depends on nothing
    else), or ``"logits"``: the residual stream at the end, read through the unembedding, in which case run 2's own
    metric is the answer (the sender's direct effect on the logits, plus MLP paths if not frozen).

    On grouped-query models (SmolLM2-135M: 9 query heads share 3 key/value heads) a ``k`` or ``v`` receiver is a
    key/value head and patching it changes the keys or values of every query head of its group.

The clean reference of KL divergence is the clean run's distribution at END (the base run when noising, the source
run when denoising). Scores are normalised like :func:`~attnlab.patching.run_sweep`: noising (base = clean, sender
from the corrupted run; Wang et al.'s setting) ``(patched - clean) / (clean - corrupted)``, 0 = no effect, -1 = the
whole clean-corrupted gap destroyed through these paths; denoising (base = corrupted, sender from the clean run)
``(patched - corrupted) / (clean - corrupted)``.

Batching: in a sweep over senders, run 2 and run 3 process many senders at once, each sender occupying its own rows
of one batched forward pass (as in the patching engine), starting at the sender's block (run 2) or at the first
receiver's block (run 3) from the recorded base residual stream. A sweep of every head of a model takes about
``2 * n_layers * ceil(n_heads / variants_per_pass) + 2`` forward passes, each over a part of the model.
"""

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab import memory
from attnlab.backends.base import Backend, Intervention, check_model
from attnlab.circuits.attribution import check_layers
from attnlab.errors import DatasetError, SiteError
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import Metric, MetricLike, check_direction, get_metric, normalise
from attnlab.results import PatchingResult
from attnlab.sites import Site, SiteKind, as_int
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["PathPatchingScore", "head_inputs", "path_patch", "path_patching_sweep"]

_RECEIVER_KINDS = (SiteKind.Q, SiteKind.K, SiteKind.V)
_DEFAULT_BUDGET_MB = DEFAULT_BUDGET_MB  # the one default (attnlab.memory)

Head = tuple[int, int]


def head_inputs(heads: Iterable[Head], inputs: str | Sequence[str] = "q") -> list[Site]:
    """Receiver sites for the ``inputs`` (``"q"``, ``"k"``, ``"v"``) of query heads ``(layer, head)``.

    For ``k``/``v`` on grouped-query models pass key/value-head indices (query head // (n_heads / n_kv_heads)).

    Raises:
        SiteError: an input other than q, k, v.

    Example:
        >>> [s.name for s in head_inputs([(9, 9), (10, 0)], "q")]
        ['L9H9', 'L10H0']
    """
    kinds = [inputs] if isinstance(inputs, str) else list(inputs)
    bad = [k for k in kinds if k not in ("q", "k", "v")]
    if bad:
        raise SiteError(f"'inputs' must be among 'q', 'k', 'v' (got {bad})")
    return [Site(SiteKind(kind), layer, head=head) for kind in kinds for layer, head in heads]


@dataclass(frozen=True)
class PathPatchingScore:
    """The result of one path-patching experiment.

    Attributes:
        senders: the patched heads, ``(layer, head)`` pairs.
        receivers: receiver names (``"q:L9H9"``, ``"logits"``).
        direction: ``"noising"`` (base clean, sender corrupted) or ``"denoising"``.
        value: normalised metric (noising: 0 no effect, -1 gap destroyed; denoising: 0 no effect, 1 restored).
        patched_metric: mean patched metric (the metric's units: logits for the logit difference).
        per_prompt: Float[batch] patched metric per prompt.
        baselines: mean clean and corrupted metric.
        metric: the metric's name (``"logit_diff"``, ``"kl_div"``, a custom function's name).
    """

    senders: tuple[Head, ...]
    receivers: tuple[str, ...]
    direction: str
    value: float
    patched_metric: float
    per_prompt: Tensor
    baselines: dict
    metric: str = "logit_diff"

    @property
    def patched_logit_diff(self) -> float:
        """:attr:`patched_metric` under its former name (the patched logit difference with the default metric)."""
        return self.patched_metric

    def to_dict(self) -> dict:
        """A JSON-serialisable copy."""
        return {"senders": [list(h) for h in self.senders], "receivers": list(self.receivers),
                "direction": self.direction, "value": self.value, "patched_metric": self.patched_metric,
                "per_prompt": self.per_prompt.tolist(), "baselines": dict(self.baselines), "metric": self.metric}


# -- input checks -------------------------------------------------------------------------------------------------
def _check_senders(model: Backend, senders) -> list[Head]:
    if (hasattr(senders, "__len__") and len(senders) == 2
            and all(as_int(x) is not None for x in senders)):
        senders = [senders]  # one head given as a pair
    out = []
    for pair in senders:
        ints = [as_int(x) for x in pair] if hasattr(pair, "__len__") and len(pair) == 2 else None
        if ints is None or None in ints:
            raise SiteError(f"senders must be (layer, head) pairs of ints (got {pair!r})")
        model.check_site(Site(SiteKind.Z, ints[0], head=ints[1]))
        out.append((ints[0], ints[1]))
    if not out:
        raise SiteError("'senders' must name at least one (layer, head)")
    return sorted(set(out))


def _check_receivers(model: Backend, receivers) -> tuple[list[Site], bool]:
    """Return (head-input receiver sites, whether the receiver is the logits)."""
    if isinstance(receivers, (str, Site)):
        receivers = [receivers]
    receivers = list(receivers)
    to_logits = any(isinstance(r, str) and r == "logits" for r in receivers)
    sites = []
    for r in receivers:
        if isinstance(r, str) and r == "logits":
            continue
        if not isinstance(r, Site):
            raise SiteError(f"receivers must be 'logits' or Site objects of kind q, k or v, e.g. "
                            f"Site('q', 9, head=9) or head_inputs([(9, 9)], 'q') (got {r!r})")
        if r.kind not in _RECEIVER_KINDS:
            raise SiteError(f"receiver {r.name} has kind {r.kind.value!r}; path patching receivers are head inputs "
                            "of kind 'q', 'k' or 'v', or 'logits'")
        if r.position is not None:
            raise SiteError(f"receiver {r.name}: give positions with receiver_position=, not on the site")
        sites.append(model.check_site(r))
    if not sites and not to_logits:
        raise SiteError("'receivers' must not be empty: pass head inputs (head_inputs(...)) or 'logits'")
    if sites and to_logits:
        raise SiteError("receivers mix 'logits' with head inputs; path-patch to the logits and to heads separately")
    return sorted(set(sites)), to_logits


def _check_dataset(model: Backend, dataset: PatchingDataset, receiver_position: str | None) -> None:
    check_dataset(model, dataset, analysis="path patching")
    if receiver_position is not None and receiver_position not in dataset.positions:
        raise DatasetError(f"'receiver_position' must be a named position of the dataset, one of "
                           f"{sorted(dataset.positions)} (got {receiver_position!r}), or None for all positions")


# -- the three runs -----------------------------------------------------------------------------------------------
@dataclass
class _Baselines:
    base_tokens: Tensor
    source_z: dict[int, Tensor]
    base_z: dict[int, Tensor]
    base_mlp: dict[int, Tensor]
    base_resid: dict[int, Tensor]
    clean_vals: Tensor
    corrupted_vals: Tensor
    base_vals: Tensor
    metric: Metric
    reference: Tensor | None


def _record_baselines(model: Backend, dataset: PatchingDataset, direction: str, freeze_mlps: bool,
                      metric: Metric) -> _Baselines:
    """Run 1: source and base runs, recording every head output (and MLP output, residual stream), and the metric's
    baselines (a broken custom metric fails here, before any patched pass)."""
    n_layers = model.info.n_layers
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    base_tokens, source_tokens = (clean, corrupted) if direction == "noising" else (corrupted, clean)
    z_sites = [Site(SiteKind.Z, layer) for layer in range(n_layers)]
    mlp_sites = [Site(SiteKind.MLP_OUT, layer) for layer in range(n_layers)] if freeze_mlps else []
    resid_sites = [Site(SiteKind.RESID_PRE, layer) for layer in range(1, n_layers)]
    source = model.run(source_tokens, cache=z_sites, logits_at=dataset.end)
    base = model.run(base_tokens, cache=z_sites + mlp_sites + resid_sites, logits_at=dataset.end)
    clean_logits, corrupted_logits = (base.logits, source.logits) if direction == "noising" else \
        (source.logits, base.logits)
    reference, clean_vals, corrupted_vals = metric.baselines(clean_logits, corrupted_logits, dataset.answers)
    return _Baselines(
        base_tokens=base_tokens,
        source_z={s.layer: source.cache[s] for s in z_sites},
        base_z={s.layer: base.cache[s] for s in z_sites},
        base_mlp={s.layer: base.cache[s] for s in mlp_sites},
        base_resid={s.layer: base.cache[s] for s in resid_sites},
        clean_vals=clean_vals, corrupted_vals=corrupted_vals,
        base_vals=clean_vals if direction == "noising" else corrupted_vals, metric=metric, reference=reference,
    )


def _run_groups(model: Backend, dataset: PatchingDataset, b: _Baselines, groups: list[list[Head]],
                sites: list[Site], to_logits: bool, freeze_mlps: bool, receiver_position: str | None) -> Tensor:
    """Runs 2 and 3 for sender groups sharing one batched pass; returns Float[n_groups, batch] patched metric."""
    n_layers = model.info.n_layers
    n, batch = len(groups), len(dataset)
    rows = torch.arange(n * batch)
    start = min(layer for group in groups for layer, _ in group)
    end_layer = n_layers if to_logits else max(s.layer for s in sites)  # blocks whose output can reach a receiver
    tokens = b.base_tokens.repeat(n, 1)
    resid = b.base_resid[start].repeat(n, 1, 1) if start > 0 else None

    # run 2: freeze every head (and MLP) at its base value, then patch each group's senders in its own rows
    interventions = []
    for layer in range(start, end_layer):
        interventions.append(Intervention(SiteKind.Z, layer, rows=rows, values=b.base_z[layer].repeat(n, 1, 1, 1)))
        if freeze_mlps:
            interventions.append(Intervention(SiteKind.MLP_OUT, layer, rows=rows,
                                              values=b.base_mlp[layer].repeat(n, 1, 1)))
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for v, group in enumerate(groups):
        for layer, head in group:
            by_layer.setdefault(layer, []).append((v, head))
    prompt = torch.arange(batch)
    for layer, entries in sorted(by_layer.items()):
        if layer >= end_layer:
            continue  # a sender at or after the last receiver's block cannot reach it
        v_idx = torch.tensor([v for v, _ in entries]).repeat_interleave(batch)
        h_idx = torch.tensor([h for _, h in entries]).repeat_interleave(batch)
        p_idx = prompt.repeat(len(entries))
        values = b.source_z[layer].transpose(1, 2)[p_idx, h_idx]  # [entries * batch, pos, d_head]
        # insert after this layer's freeze so the sender's value wins
        at = next(i for i, iv in enumerate(interventions) if iv.kind is SiteKind.Z and iv.layer == layer) + 1
        interventions.insert(at, Intervention(SiteKind.Z, layer, rows=v_idx * batch + p_idx, values=values,
                                              heads=h_idx))
    end_positions = dataset.end.repeat(n)
    if to_logits:
        out = model.run(tokens, resid=resid, start_layer=start, interventions=interventions, logits_at=end_positions)
        return b.metric(out.logits, dataset.answers, b.reference).reshape(n, batch)
    layer_sites = sorted({Site(s.kind, s.layer) for s in sites})
    run2 = model.run(tokens, resid=resid, start_layer=start, stop_layer=end_layer + 1, cache=layer_sites,
                     interventions=interventions)

    # run 3: the base run with only the receivers' inputs taken from run 2
    first = min(s.layer for s in sites)
    positions = dataset.positions[receiver_position].repeat(n) if receiver_position is not None else None
    patches = []
    for s in sites:
        act = run2.cache[Site(s.kind, s.layer)]  # [n * batch, pos, head, d_head]
        heads = [s.head] if s.head is not None else list(range(act.shape[2]))
        for h in heads:
            h_idx = torch.full((n * batch,), h)
            values = act[rows, positions, h] if positions is not None else act[:, :, h]
            patches.append(Intervention(s.kind, s.layer, rows=rows, values=values, heads=h_idx, positions=positions))
    resid3 = b.base_resid[first].repeat(n, 1, 1) if first > 0 else None
    out = model.run(tokens, resid=resid3, start_layer=first, interventions=patches, logits_at=end_positions)
    return b.metric(out.logits, dataset.answers, b.reference).reshape(n, batch)


def _max_variants(model: Backend, n_pos: int, batch: int, memory_budget_mb: float) -> int:
    """Senders sharing one pass of ``batch`` rows each (:func:`attnlab.memory.max_variants`)."""
    return memory.max_variants(model.info, n_pos, memory_budget_mb, rows_per_variant=batch)


# -- public functions ---------------------------------------------------------------------------------------------
def path_patch(
    model: Backend,
    dataset: PatchingDataset,
    senders: Head | Iterable[Head],
    receivers: Site | str | Iterable[Site | str],
    *,
    direction: str = "noising",
    freeze_mlps: bool = False,
    receiver_position: str | None = None,
    metric: MetricLike = "logit_diff",
) -> PathPatchingScore:
    """Path-patch from ``senders`` (patched together) to ``receivers`` (Wang et al. 2022, section 3.1, appendix B).

    Args:
        model: any backend.
        dataset: clean/corrupted pairs; the metric is read at END.
        senders: one ``(layer, head)`` or several, patched together from the source run.
        receivers: ``"logits"``, or head-input sites (``Site("q", 9, head=9)``; see :func:`head_inputs`): queries,
            keys or values (key/value heads on grouped-query models). A site without ``head`` means every head of
            that layer.
        direction: ``"noising"`` (base clean, senders from the corrupted run, frozen heads at clean values; Wang et
            al.'s setting) or ``"denoising"`` (base corrupted, senders from the clean run).
        freeze_mlps: also freeze MLP outputs at their base values in run 2 (default False: paths through MLPs
            count, as in Wang et al.).
        receiver_position: patch the receivers' inputs only at this named dataset position (e.g. ``"END"``, where
            the name movers' queries act); None patches every position.
        metric: M: ``"logit_diff"`` (default, logits), ``"kl_div"`` (KL(clean || patched), nats), ``"prob"``,
            ``"logprob"``, ``"accuracy"``, a :class:`~attnlab.metrics.Metric` or a callable
            ``fn(logits, answers, reference)`` (see :class:`~attnlab.metrics.Metric`).

    Returns:
        A :class:`PathPatchingScore` (normalised score, patched metric, per prompt).

    Raises:
        SiteError: senders or receivers outside the model, receivers of another kind, 'logits' mixed with heads.
        DatasetError: the dataset does not fit the model, or an unknown ``receiver_position``.
        MetricError: bad direction, or equal clean and corrupted baselines; an unknown metric, or a custom metric
            returning the wrong shape or non-finite values (raised on the baseline runs, before any patched pass).
    """
    check_model(model, "path patching")
    check_direction(direction)
    metric = get_metric(metric)
    heads = _check_senders(model, senders)
    sites, to_logits = _check_receivers(model, receivers)
    _check_dataset(model, dataset, receiver_position)
    b = _record_baselines(model, dataset, direction, freeze_mlps, metric)
    clean_mean, corrupted_mean = float(b.clean_vals.mean()), float(b.corrupted_vals.mean())
    normalise(0.0, clean_mean, corrupted_mean, direction)
    if not to_logits and min(layer for layer, _ in heads) >= max(s.layer for s in sites):
        per_prompt = b.base_vals.clone()  # no path from any sender to any receiver: nothing changes
    else:
        per_prompt = _run_groups(model, dataset, b, [heads], sites, to_logits, freeze_mlps, receiver_position)[0]
    mean = float(per_prompt.mean())
    names = ("logits",) if to_logits else tuple(f"{s.kind.value}:{s.name}" for s in sites)
    return PathPatchingScore(
        senders=tuple(heads), receivers=names, direction=direction,
        value=float(normalise(mean, clean_mean, corrupted_mean, direction)), patched_metric=mean,
        per_prompt=per_prompt, baselines={"clean": clean_mean, "corrupted": corrupted_mean}, metric=metric.name,
    )


def path_patching_sweep(
    model: Backend,
    dataset: PatchingDataset,
    receivers: Site | str | Iterable[Site | str],
    *,
    direction: str = "noising",
    layers: Sequence[int] | None = None,
    freeze_mlps: bool = False,
    receiver_position: str | None = None,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    progress: bool = True,
    metric: MetricLike = "logit_diff",
) -> PatchingResult:
    """Path-patch every head, one at a time, to the same ``receivers``: a [layer, head] map of path effects.

    E.g. ``path_patching_sweep(model, ioi, head_inputs(name_movers, "q"), receiver_position="END")`` finds the
    heads that change the name movers' queries at END (Wang et al.'s S-inhibition heads, section 3.3);
    ``path_patching_sweep(model, ioi, "logits")`` the heads that write to the logits directly (section 3.2).

    Senders of one layer share batched passes (each sender in its own rows): about ``2 * n_layers *
    ceil(n_heads / variants_per_pass) + 2`` forward passes. Heads at or after the last receiver's block have no path
    to it and get exactly 0 without being run.

    Args:
        model, dataset, receivers, direction, freeze_mlps, receiver_position, metric: as :func:`path_patch`.
        layers: sender layers to sweep (default all).
        memory_budget_mb: peak memory of one batched pass, in MiB; sets how many senders share a pass.
        progress: show a progress bar.

    Returns:
        A :class:`~attnlab.results.PatchingResult` with ``analysis == "path_patching"``, component
        ``"path_heads"``, dims ``("layer", "head")``: ``values`` normalised as in :func:`path_patch`, ``per_prompt``
        Float[layer, head, prompt] patched metric values; ``metric`` names the metric, ``settings`` the receivers.

    Raises:
        SiteError, DatasetError, MetricError: as :func:`path_patch`; layers out of range; a non-positive budget.
    """
    from attnlab.progress import progress_bar

    check_model(model, "path patching")
    check_direction(direction)
    metric = get_metric(metric)
    sites, to_logits = _check_receivers(model, receivers)
    _check_dataset(model, dataset, receiver_position)
    info = model.info
    layers = check_layers(model, layers)
    memory_budget_mb = memory.check_budget_value(memory_budget_mb)

    t0 = time.perf_counter()
    b = _record_baselines(model, dataset, direction, freeze_mlps, metric)
    clean_mean, corrupted_mean = float(b.clean_vals.mean()), float(b.corrupted_vals.mean())
    normalise(0.0, clean_mean, corrupted_mean, direction)
    batch = len(dataset)
    last = info.n_layers if to_logits else max(s.layer for s in sites)
    max_variants = _max_variants(model, dataset.n_pos, batch, float(memory_budget_mb))
    per_prompt = torch.empty(len(layers), info.n_heads, batch)
    live = [layer for layer in layers if layer < last]
    n_passes = sum(math.ceil(info.n_heads / max_variants) for _ in live)
    bar = progress_bar(total=n_passes, desc="path patching", disable=not progress)
    try:
        for i, layer in enumerate(layers):
            if layer >= last:
                per_prompt[i] = b.base_vals  # no path to any receiver
                continue
            for h0 in range(0, info.n_heads, max_variants):
                chunk = list(range(h0, min(info.n_heads, h0 + max_variants)))
                per_prompt[i, chunk] = _run_groups(model, dataset, b, [[(layer, h)] for h in chunk], sites,
                                                   to_logits, freeze_mlps, receiver_position).float()
                bar.update(1)
    finally:
        bar.close()
    values = normalise(per_prompt.mean(dim=-1), clean_mean, corrupted_mean, direction).float()
    names = ["logits"] if to_logits else [f"{s.kind.value}:{s.name}" for s in sites]
    tokens = model.to_str_tokens(dataset.clean_tokens[0]) if getattr(model, "tokenizer", None) is not None else None
    return PatchingResult(
        analysis="path_patching",
        component="path_heads",
        direction=direction,
        dims=("layer", "head"),
        values=values,
        per_prompt=per_prompt,
        labels={"layer": [f"L{x}" for x in layers], "head": [f"H{h}" for h in range(info.n_heads)]},
        index={"layer": list(layers), "head": list(range(info.n_heads))},
        prompt_tokens=tokens,
        metric=metric.name,
        metric_description=f"normalised {metric.label} ({metric.description}) after path patching each head to "
                           f"{names}",
        baselines={"clean": clean_mean, "corrupted": corrupted_mean},
        model=info.to_dict(),
        task=dataset.describe(),
        settings={"receivers": names, "receiver_position": receiver_position, "freeze_mlps": freeze_mlps,
                  "variants_per_pass": max_variants, "forward_passes": 2 + 2 * n_passes,
                  "memory_budget_mb": memory_budget_mb, "seconds": round(time.perf_counter() - t0, 3),
                  "metric": metric.to_dict()},
    )
