"""Attribution patching: a first-order estimate of every activation-patching effect from one backward pass.

Context:
    Activation patching (:func:`attnlab.patching.run_sweep`) runs one patched forward pass per component. Attribution
    patching (Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale"; the node-level
    ancestor of EAP, Syed et al. 2023, arXiv 2310.10348) replaces each patched run with its first-order Taylor
    expansion around the *target* run. With ``M`` the metric (``metric=``: the logit difference by default, or KL
    divergence from the clean run, probability, log-probability of the answer, or your own differentiable function;
    :mod:`attnlab.metrics`) and ``a`` an activation,

        M(target with a := a_source) - M(target)  ~=  (a_source - a_target) . dM/da |_(target run)

    so one forward pass of the source input (recording activations), one forward pass of the target input (keeping
    the autograd graph) and one backward pass give the estimate for *every* head, position and layer at once.

    - *Denoising* (clean activations into the corrupted run): target = corrupted, estimate
      ``(a_clean - a_corrupted) . grad`` with the gradient taken on the corrupted run.
    - *Noising* (corrupted activations into the clean run): target = clean, estimate
      ``(a_corrupted - a_clean) . grad`` with the gradient taken on the clean run.

    The dot product runs over every axis the patched activation covers: ``d_head`` and all positions for a head's
    output ``z`` (component ``"heads"``), ``d_head`` alone per position (``"heads_by_pos"``), ``d_model`` for the
    residual stream and attention / MLP outputs per position. Estimates are normalised exactly like
    :func:`~attnlab.patching.run_sweep` (denoising: fraction of the clean-corrupted gap restored; noising: fraction
    destroyed, negative), so the two results are directly comparable (:mod:`attnlab.circuits.agreement`).

Intuition and limits:
    The estimate is exact when the metric is linear in the activation along the patch, and good when the patch is
    small. It is known to fail for large changes (the embedding / residual stream at the corrupted token, MLP0) and
    where attention saturates (a softmax at 0 or 1 has a near-zero gradient even though a patch can flip it):
    Nanda's post and Kramár et al. 2024 (AtP*, arXiv 2403.00745) discuss these failure modes.

The metric must be differentiable (accuracy is not, and is refused before any pass). With ``metric="kl_div"`` the
reference is the clean run's distribution at END: KL(clean || clean) is 0 and minimal, so its gradient on the clean
run vanishes and *noising* estimates (gradient on the clean run) are all 0: a first-order method sees nothing at a
minimum. Use denoising (gradient on the corrupted run), or exact patching, for KL.

Needs gradients (``Capability.GRADIENTS``: ``Backend.run(..., grad=True)``): the TransformerLens backend and the
local nnsight backend have them; a remote nnsight model does not yet, and is refused before any work.
"""

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from attnlab.backends.base import Backend, Capability
from attnlab.errors import BackendError, DatasetError, SiteError
from attnlab.metrics import Metric, MetricLike, check_direction, get_metric, normalise
from attnlab.results import PatchingResult
from attnlab.sites import Site, SiteKind, as_int, index_list
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["ATTRIBUTION_COMPONENTS", "attribution_patching", "attribution_sweep"]

#: components an attribution pass can estimate, with their activation kind and result axes (as in run_sweep)
ATTRIBUTION_COMPONENTS: dict[str, tuple[SiteKind, tuple[str, ...]]] = {
    "resid_pre": (SiteKind.RESID_PRE, ("layer", "pos")),
    "attn_out": (SiteKind.ATTN_OUT, ("layer", "pos")),
    "mlp_out": (SiteKind.MLP_OUT, ("layer", "pos")),
    "heads": (SiteKind.Z, ("layer", "head")),
    "heads_by_pos": (SiteKind.Z, ("layer", "head", "pos")),
}


def check_layers(model: Backend, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as a list (all layers when None), validated before any work.

    Raises:
        SiteError: empty, duplicated, or outside [0, n_layers).
    """
    n = model.info.n_layers
    if layers is None:
        return list(range(n))
    layers = index_list("layers", layers)
    wrong = [x for x in layers if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < n]
    if not layers or wrong or len(set(layers)) != len(layers):
        raise SiteError(f"'layers' must be distinct ints in [0, {n}), at least one (got {layers})")
    return layers


def _check_inputs(model: Backend, dataset: PatchingDataset, components: Sequence[str] | str, direction: str,
                  layers: Sequence[int] | None) -> tuple[list[str], list[int]]:
    """Validate everything before the first forward pass; return (components, layers)."""
    check_dataset(model, dataset, analysis="attribution patching")
    model.require(Capability.GRADIENTS, "attribution patching (exact patching without gradients: run_sweep)")
    if isinstance(components, str):
        components = [components]
    components = list(dict.fromkeys(components))
    if not components:
        raise SiteError(f"'components' must not be empty; choose from {sorted(ATTRIBUTION_COMPONENTS)}")
    bad = [c for c in components if c not in ATTRIBUTION_COMPONENTS]
    if bad:
        raise SiteError(f"'components' must be among {sorted(ATTRIBUTION_COMPONENTS)} (got {bad})")
    check_direction(direction)
    layers = check_layers(model, layers)
    for c in components:
        model.check_site(Site(ATTRIBUTION_COMPONENTS[c][0], layers[0]))  # e.g. mlp_out on an attention-only model
    return components, layers


def attribution_patching(
    model: Backend,
    dataset: PatchingDataset,
    components: Sequence[str] = ("heads",),
    *,
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    metric: MetricLike = "logit_diff",
) -> dict[str, PatchingResult]:
    """Attribution-patching estimates of several components from one pair of forward passes and one backward pass.

    ``direction`` is typed ``str`` rather than a ``Literal`` so that a wrong value reaches the clear message of
    :func:`~attnlab.metrics.check_direction` even under runtime type checking.

    Args:
        model: a backend with gradient support (TransformerLens).
        dataset: clean/corrupted pairs (e.g. :func:`attnlab.tasks.ioi.ioi_dataset`).
        components: any of ``"resid_pre"``, ``"attn_out"``, ``"mlp_out"`` ([layer, pos]), ``"heads"``
            ([layer, head], all positions) and ``"heads_by_pos"`` ([layer, head, pos]), as in
            :func:`~attnlab.patching.run_sweep`.
        direction: ``"denoising"`` (estimate of patching clean activations into the corrupted run; gradient on the
            corrupted run) or ``"noising"`` (corrupted into clean; gradient on the clean run).
        layers: restrict to these blocks (default all).
        metric: what M measures at END: ``"logit_diff"`` (default, logits), ``"kl_div"`` (KL(clean || target) in
            nats, the clean run's distribution as reference), ``"prob"``, ``"logprob"``, a
            :class:`~attnlab.metrics.Metric` or a differentiable callable ``fn(logits, answers, reference)``.

    Returns:
        ``{component: PatchingResult}`` with ``analysis == "attribution_patching"``: ``values`` Float[*dims] the
        estimated normalised metric (same scale and sign conventions as ``run_sweep``), ``per_prompt``
        Float[*dims, prompt] the estimated patched metric per prompt (the metric's units), ``baselines`` the exact
        clean and corrupted means of the metric; ``metric`` its name.

    Raises:
        CapabilityError: the backend lacks ``Capability.GRADIENTS`` (nnsight; a BackendError).
        BackendError: the gradient does not reach an activation.
        SiteError: unknown component, layers out of range, MLP components on an attention-only model.
        DatasetError: the dataset does not fit the model.
        MetricError: clean and corrupted baselines are equal; the metric is not differentiable (accuracy), returns
            the wrong shape or non-finite values, or is detached from the logits (raised before the backward pass).
    """
    components, layers = _check_inputs(model, dataset, components, direction, layers)
    metric = get_metric(metric).require_differentiable("attribution patching")
    t0 = time.perf_counter()
    kinds = sorted({ATTRIBUTION_COMPONENTS[c][0] for c in components}, key=lambda k: k.value)
    sites = [Site(kind, layer) for kind in kinds for layer in layers]
    clean, corrupted, end, answers = dataset.clean_tokens, dataset.corrupted_tokens, dataset.end, dataset.answers
    source_tokens, target_tokens = (clean, corrupted) if direction == "denoising" else (corrupted, clean)

    source = model.run(source_tokens, cache=sites, logits_at=end)
    target = model.run(target_tokens, cache=sites, logits_at=end, grad=True)
    clean_logits, corrupted_logits = (source.logits, target.logits) if direction == "denoising" else \
        (target.logits, source.logits)
    # a broken metric fails here, before the backward pass; the reference (KL) is the clean run's distribution
    reference, clean_vals, corrupted_vals = metric.baselines(clean_logits, corrupted_logits, answers)
    clean_mean, corrupted_mean = float(clean_vals.mean()), float(corrupted_vals.mean())
    normalise(torch.tensor(0.0), clean_mean, corrupted_mean, direction)  # equal baselines: fail before backward
    target_graph = metric.check_gradient(metric(target.logits, answers, reference), "attribution patching")
    target_vals = target_graph.detach()

    acts = [target.cache[s] for s in sites]
    if not all(a.requires_grad for a in acts):
        raise BackendError(f"backend {type(model).__name__} returned activations without gradients for grad=True; "
                           "attribution patching needs a backend that keeps the autograd graph")
    # d(sum of per-prompt M)/d act: prompts do not interact, so row b holds d M_b / d act_b
    grads = torch.autograd.grad(target_graph.sum(), acts, allow_unused=True)
    missing = [s.name for s, g in zip(sites, grads) if g is None]
    if missing:
        raise BackendError(f"the gradient of the metric {metric.name!r} does not reach {missing}; the backend's hooks "
                           "do not feed these activations forward")
    # per site: Float[batch, pos, (head,)] first-order effect, summed over d_model / d_head
    effect: dict[Site, Tensor] = {}
    for site, act, grad in zip(sites, acts, grads):
        delta = source.cache[site].to(act.dtype) - act.detach()
        effect[site] = (delta * grad.detach()).sum(dim=-1).float()
    del target, target_graph, acts, grads

    seconds = round(time.perf_counter() - t0, 3)
    results = {}
    for component in components:
        kind, dims = ATTRIBUTION_COMPONENTS[component]
        per_layer = []
        for layer in layers:
            e = effect[Site(kind, layer)]  # [batch, pos] or [batch, pos, head]
            if component == "heads":
                per_layer.append(e.sum(dim=1).T)  # [head, batch]
            elif component == "heads_by_pos":
                per_layer.append(e.permute(2, 1, 0))  # [head, pos, batch]
            else:
                per_layer.append(e.T)  # [pos, batch]
        est = torch.stack(per_layer)  # [*dims, batch]
        per_prompt = target_vals.float() + est
        # run_sweep's normalisation of the estimated patched mean, target_mean + mean(est): the target baseline
        # cancels, in both directions, leaving mean(est) / (clean - corrupted)
        values = (est.mean(dim=-1).double() / (clean_mean - corrupted_mean)).float()
        results[component] = _result(model, dataset, component, direction, dims, values, per_prompt, layers,
                                     clean_mean, corrupted_mean, seconds, metric)
    return results


def _result(model, dataset, component, direction, dims, values, per_prompt, layers, clean_mean, corrupted_mean,
            seconds, metric: Metric) -> PatchingResult:
    info = model.info
    n_pos = dataset.n_pos
    tokens = model.to_str_tokens(dataset.clean_tokens[0]) if getattr(model, "tokenizer", None) is not None else None
    labels = {"layer": [f"L{x}" for x in layers]}
    index = {"layer": list(layers)}
    if "head" in dims:
        labels["head"] = [f"H{h}" for h in range(info.n_heads)]
        index["head"] = list(range(info.n_heads))
    if "pos" in dims:
        labels["pos"] = list(dataset.position_labels)
        index["pos"] = list(range(n_pos))
    return PatchingResult(
        analysis="attribution_patching",
        component=component,
        direction=direction,
        dims=dims,
        values=values,
        per_prompt=per_prompt.detach(),
        labels=labels,
        index=index,
        tokens=tokens if "pos" in dims else None,
        prompt_tokens=tokens,
        metric=metric.name,
        metric_description=f"first-order estimate of the normalised {metric.label}, {metric.description}, after "
                           "patching (attribution patching)",
        baselines={"clean": clean_mean, "corrupted": corrupted_mean},
        model=info.to_dict(),
        task=dataset.describe(),
        settings={"forward_passes": 2, "backward_passes": 1, "seconds": seconds,
                  "estimate": f"(source - target) . d {metric.name} / d act on the target run",
                  "metric": metric.to_dict()},
    )


def attribution_sweep(
    model: Backend,
    dataset: PatchingDataset,
    component: str,
    *,
    direction: str = "denoising",
    layers: Sequence[int] | None = None,
    metric: MetricLike = "logit_diff",
) -> PatchingResult:
    """Attribution-patching estimate of one component sweep: the gradient-based counterpart of ``run_sweep``.

    ``attribution_sweep(model, ds, "heads")`` estimates ``run_sweep(model, ds, "heads")`` cell by cell from 2
    forward passes and 1 backward pass (Nanda 2023; see the module docstring). Use
    :func:`attribution_patching` to get several components from the same passes.

    Args:
        model: a backend with gradient support (TransformerLens).
        dataset: clean/corrupted pairs.
        component: ``"resid_pre"``, ``"attn_out"``, ``"mlp_out"``, ``"heads"`` or ``"heads_by_pos"``.
        direction: ``"denoising"`` or ``"noising"``.
        layers: restrict to these blocks (default all).
        metric: the metric M (see :func:`attribution_patching`; default the logit difference).

    Returns:
        A :class:`~attnlab.results.PatchingResult` (``analysis == "attribution_patching"``) with the same dims,
        labels and normalisation as ``run_sweep(model, dataset, component, direction=direction, metric=metric)``.

    Raises:
        BackendError, SiteError, DatasetError, MetricError: as :func:`attribution_patching`.
    """
    if not isinstance(component, str):
        raise SiteError(f"'component' must be one of {sorted(ATTRIBUTION_COMPONENTS)} (got {component!r})")
    return attribution_patching(model, dataset, [component], direction=direction, layers=layers,
                                metric=metric)[component]
