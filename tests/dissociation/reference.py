"""Direct hook computations of component ablations, written independently of :mod:`attnlab.dissociation`.

One full forward pass per component through TransformerLens's own ``run_with_hooks`` on the bridge (no start-layer
shortcut, no batching of components, no attnlab sites or interventions): the reference the sweep is checked against.

Hook points (TransformerLens 4 bridge names): a head's ``blocks.{L}.attn.hook_z`` [batch, pos, head_index, d_head]
(the query head's slice), an attention block's ``blocks.{L}.hook_attn_out`` and an MLP block's
``blocks.{L}.hook_mlp_out`` [batch, pos, d_model].
"""

import re

import torch

_NAME = re.compile(r"^L(\d+)H(\d+)$|^(ATTN|MLP)(\d+)$")


def hook_points(component: str) -> list[tuple[str, int | None]]:
    """[(hook name, head or None)] for a component name such as ``"L1H0"``, ``"MLP0"`` or ``"L0H1+MLP1"``."""
    out = []
    for piece in component.split("+"):
        m = _NAME.match(piece)
        if m is None:
            raise ValueError(piece)
        if m[1] is not None:
            out.append((f"blocks.{m[1]}.attn.hook_z", int(m[2])))
        else:
            out.append((f"blocks.{m[4]}.hook_{m[3].lower()}_out", None))
    return out


def _family_position_mean(act: torch.Tensor, families, end) -> torch.Tensor:
    """Per row: the mean of ``act`` over the rows of its family at each position, over rows whose END >= position
    (written as plain loops, unlike the implementation)."""
    out = torch.zeros_like(act)
    for fam in set(families):
        rows = [i for i, f in enumerate(families) if f == fam]
        for p in range(act.shape[1]):
            live = [i for i in rows if int(end[i]) >= p]
            if live:
                m = act[live, p].mean(0)
                for i in rows:
                    out[i, p] = m
    return out


def replacement(bridge, items, hook: str, ablation: str) -> torch.Tensor:
    """The full activation at ``hook`` that ablation writes, per item: zeros, the family-position means of the
    clean run, or the corrupted run's activation."""
    with torch.no_grad():
        if ablation == "resample":
            _, cache = bridge.run_with_cache(items.corrupted_tokens, names_filter=hook)
            return cache[hook].clone()
        _, cache = bridge.run_with_cache(items.tokens, names_filter=hook)
        act = cache[hook]
    if ablation == "zero":
        return torch.zeros_like(act)
    if ablation == "mean":
        return _family_position_mean(act, items.families, items.end)
    raise ValueError(ablation)


def metrics_at_end(logits: torch.Tensor, items) -> torch.Tensor:
    """Float[N, 2]: (top-1 accuracy, logit difference answer - distractor) at each item's END."""
    rows = torch.arange(len(items))
    last = logits[rows, items.end]
    ld = last[rows, items.answers[:, 0]] - last[rows, items.answers[:, 1]]
    acc = (last.argmax(-1) == items.answers[:, 0]).float()
    return torch.stack([acc, ld], -1)


def clean_metrics(model, items) -> torch.Tensor:
    with torch.no_grad():
        return metrics_at_end(model.bridge(items.tokens), items)


def ablated_metrics(model, items, component: str, ablation: str) -> torch.Tensor:
    """Float[N, 2] (accuracy, logit difference) with ``component`` ablated: one ``run_with_hooks`` pass."""
    bridge = model.bridge
    hooks = []
    for hook, head in hook_points(component):
        new = replacement(bridge, items, hook, ablation)

        def fn(act, hook, new=new, head=head):
            act = act.clone()
            if head is None:
                act[:] = new
            else:
                act[:, :, head] = new[:, :, head]
            return act

        hooks.append((hook, fn))
    with torch.no_grad():
        logits = bridge.run_with_hooks(items.tokens, fwd_hooks=hooks)
    return metrics_at_end(logits, items)


def normalised_drops(clean: torch.Tensor, ablated: torch.Tensor, kinds) -> dict[str, float]:
    """{"recall": drop, "reasoning": drop}: mean(clean - ablated) / mean(clean) of the logit difference per task."""
    out = {}
    for kind in ("recall", "reasoning"):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        c, a = clean[rows, 1].double(), ablated[rows, 1].double()
        out[kind] = float((c - a).mean() / c.mean())
    return out


def direct_drops(model, items, components, ablation: str) -> dict[str, dict[str, float]]:
    """Normalised logit-difference drops of every component, each from its own ``run_with_hooks`` pass."""
    clean = clean_metrics(model, items)
    return {c: normalised_drops(clean, ablated_metrics(model, items, c, ablation), items.kinds) for c in components}
