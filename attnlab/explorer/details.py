"""What the Explorer shows when a cell is clicked: per-head and per-layer details, computed by the kernel.

After a sweep, :class:`RunCache` records once (two forward passes) everything a click needs: every layer's attention
pattern, head outputs ``z`` and residual stream on the clean prompts, the mean ``z`` over the corrupted prompts, and
the final norm's scale. A click then costs array lookups plus, for a head, one batched forward pass from the head's
layer onwards (mean and zero ablation together).

Panels (Wang et al. 2022, arXiv 2211.00593, sections 3.1-3.3, use each of these to assign roles to IOI heads):

- *attention pattern*: where the head attends on one prompt, and the average attention from END to each named
  position (IO, S1, S2 ...) across the dataset. Name movers attend from END to IO; S-inhibition heads' outputs move
  attention away from S.
- *direct logit attribution* (DLA): the part of logit(answer) and logit(distractor) the head writes directly
  through the residual stream, with the final norm's scale frozen at its value in the clean run (logits; Elhage et
  al. 2021, "A Mathematical Framework", section "Direct logit attribution"). Needs the weights
  (:meth:`Backend.weights() <attnlab.backends.base.Backend.weights>`): not available on remote models.
- *ablation*: the run's metric (:mod:`attnlab.metrics`; the logit difference by default) on the clean prompts with
  the head's output ``z`` replaced by its mean over the corrupted prompts (per position) or by zero, and its change
  from the unablated clean run, per prompt, in the metric's units (``metric.label``).
- *logit lens* (nostalgebraist 2020): the residual stream at one layer and position, put through the final norm and
  the unembedding, read as next-token logits.

Everything is read through the backend (:meth:`Backend.run` and :meth:`Backend.weights`), so the panels are the same
on every backend.
"""

import copy
import math

import torch
from torch import Tensor

from attnlab.ablation import head_ablation_interventions
from attnlab.backends.base import Backend, ModelWeights
from attnlab.errors import BackendError, SiteError
from attnlab.metrics import Metric, MetricLike, get_metric, logit_diff
from attnlab.sites import Site, SiteKind
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["RunCache", "cell_detail", "head_detail"]


def _stats(x: Tensor) -> dict:
    """Mean, standard error and per-prompt values of a 1-D tensor (JSON-ready floats)."""
    x = x.detach().float()
    n = x.numel()
    sem = float(x.std() / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(x.mean()), "sem": sem, "per_prompt": [float(v) for v in x]}


def _weights(model: Backend) -> ModelWeights | None:
    """The model's weights, or None when the backend does not expose them (DLA and the lens show as unavailable)."""
    try:
        return model.weights()
    except BackendError:
        return None


class RunCache:
    """Activations of one dataset recorded once per Explorer run, so that every click is cheap.

    Args:
        model: the backend the sweep ran on.
        dataset: the sweep's dataset.
        metric: what the ablation panel measures (a name, :class:`~attnlab.metrics.Metric` or callable; default the
            logit difference).

    Attributes:
        pattern: Float[layer, batch, head_index, dest_pos, src_pos] attention on the clean prompts.
        z: Float[layer, batch, pos, head_index, d_head] head outputs on the clean prompts.
        resid: Float[layer + 1, batch, pos, d_model] residual stream entering each block, then the final one.
        mean_z: ``{layer: Float[pos, head_index, d_head]}`` mean ``z`` over the corrupted prompts (mean ablation).
        clean_logits: Float[batch, d_vocab] clean logits at END.
        clean_ld: Float[batch] clean logit difference (logits).
        metric: the resolved :class:`~attnlab.metrics.Metric`.
        reference: Float[batch, d_vocab] the clean log-probabilities at END when the metric needs them, else None.
        clean_metric: Float[batch] the metric on the clean run.
        lens: the model's :class:`~attnlab.backends.base.ModelWeights`, or None when the backend does not expose them.

    Raises:
        MetricError: an unknown metric, or a custom one that fails on the clean run.
    """

    def __init__(self, model: Backend, dataset: PatchingDataset, *, metric: MetricLike = "logit_diff") -> None:
        check_dataset(model, dataset, analysis="the Explorer")
        self.metric: Metric = get_metric(metric)
        n_layers = model.info.n_layers
        layers = range(n_layers)
        sites = ([Site(SiteKind.PATTERN, layer) for layer in layers] + [Site(SiteKind.Z, layer) for layer in layers]
                 + [Site(SiteKind.RESID_PRE, layer) for layer in layers]
                 + [Site(SiteKind.RESID_POST, n_layers - 1)])
        clean = model.run(dataset.clean_tokens, cache=sites, logits_at=dataset.end)
        corrupted = model.run(dataset.corrupted_tokens, cache=[Site(SiteKind.Z, layer) for layer in layers])
        self.model, self.dataset = model, dataset
        self.pattern = torch.stack([clean.cache[Site(SiteKind.PATTERN, layer)] for layer in layers])
        self.z = torch.stack([clean.cache[Site(SiteKind.Z, layer)] for layer in layers])
        self.resid = torch.stack([clean.cache[Site(SiteKind.RESID_PRE, layer)] for layer in layers]
                                 + [clean.cache[Site(SiteKind.RESID_POST, n_layers - 1)]])
        self.mean_z = {layer: corrupted.cache[Site(SiteKind.Z, layer)].mean(0) for layer in layers}
        self.clean_logits = clean.logits  # [batch, d_vocab] at END
        self.clean_ld = logit_diff(clean.logits, dataset.answers)
        self._set_metric(self.metric)
        self.lens = _weights(model)
        b = torch.arange(len(dataset))
        self.final_scale = None if self.lens is None else self.lens.scale(self.resid[-1][b, dataset.end])

    def _set_metric(self, metric: Metric) -> None:
        self.metric = metric
        self.reference = metric.reference(self.clean_logits)
        self.clean_metric = metric(self.clean_logits, self.dataset.answers, self.reference).detach()

    def with_metric(self, metric: MetricLike) -> "RunCache":
        """The same recorded activations with another metric for the ablation panel (no forward pass).

        Raises:
            MetricError: an unknown metric, or a custom one that fails on the clean run.
        """
        other = copy.copy(self)
        other._set_metric(get_metric(metric))
        return other

    @property
    def n_prompts(self) -> int:
        return len(self.dataset)


def _check_prompt(cache: RunCache, prompt: int) -> int:
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not 0 <= prompt < cache.n_prompts:
        raise SiteError(f"'prompt' must be in [0, {cache.n_prompts}) (got {prompt!r})")
    return prompt


def _prompt_view(cache: RunCache, prompt: int) -> dict:
    ds = cache.dataset
    tokens = cache.model.to_str_tokens(ds.clean_tokens[prompt]) if getattr(cache.model, "tokenizer", None) else [
        str(int(t)) for t in ds.clean_tokens[prompt]]
    return {
        "index": prompt,
        "text": ds.clean_prompts[prompt] if ds.clean_prompts else "",
        "tokens": tokens,
        "position_labels": list(ds.position_labels),
        "named": {k: int(v[prompt]) for k, v in ds.positions.items()},
        "end": int(ds.end[prompt]),
    }


def head_detail(cache: RunCache, layer: int, head: int, *, prompt: int = 0,
                answer_names: tuple[str, str] = ("answer", "distractor")) -> dict:
    """The detail panel of head ``(layer, head)``: attention, direct logit attribution, ablation effects.

    Args:
        cache: the run's :class:`RunCache`.
        layer, head: the head (query-head index on grouped-query models).
        prompt: index of the prompt whose attention pattern is shown.
        answer_names: names of the answer columns (IOI: ``("IO", "S")``).

    Returns:
        A JSON-ready dict: ``pattern`` (Float[dest_pos][src_pos] attention probabilities on ``prompt``),
        ``prompt`` (its tokens and named positions), ``end_attention`` (per named position: mean, standard error and
        per-prompt attention from END), ``dla`` (answer, distractor and their difference, logits; None without
        weights), ``ablation`` (``mean`` and ``zero``: the run's metric after ablating (``value``; also under
        ``logit_diff`` when the metric is the logit difference) and its ``change`` from the clean run, per prompt, in
        the metric's units; ``metric``: its name and label), ``clean_metric`` (the metric on the clean run),
        ``clean_logit_diff`` (logits, whatever the metric: the scale the DLA panel reads).

    Raises:
        SiteError: layer, head or prompt out of range.
    """
    info = cache.model.info
    if not 0 <= layer < info.n_layers or not 0 <= head < info.n_heads:
        raise SiteError(f"head L{layer}H{head} is outside {info.name} ({info.n_layers} layers x {info.n_heads} heads)")
    _check_prompt(cache, prompt)
    ds = cache.dataset
    b = torch.arange(len(ds))
    end = ds.end
    pat = cache.pattern[layer][:, head]  # [batch, dest, src]
    end_attention = [
        {"position": name, **_stats(pat[b, end, pos])}
        for name, pos in ds.positions.items() if name != "END"
    ]

    dla = None
    if cache.lens is not None:
        z_end = cache.z[layer][b, end, head]  # [batch, d_head]
        out = z_end.float() @ cache.lens.W_O[layer, head]  # [batch, d_model]
        normed = cache.lens.apply(out, cache.final_scale)
        to_answer = (normed * cache.lens.W_U[:, ds.answers[:, 0]].T).sum(-1)
        to_distractor = (normed * cache.lens.W_U[:, ds.answers[:, 1]].T).sum(-1)
        dla = {"answer": _stats(to_answer), "distractor": _stats(to_distractor),
               "difference": _stats(to_answer - to_distractor), "answer_names": list(answer_names)}

    ablation = _ablate(cache, layer, head)
    return {
        "kind": "head", "name": f"L{layer}H{head}", "layer": layer, "head": head,
        "prompt": _prompt_view(cache, prompt),
        "pattern": [[float(v) for v in row] for row in pat[prompt]],
        "end_attention": end_attention,
        "dla": dla,
        "ablation": ablation,
        "clean_logit_diff": _stats(cache.clean_ld),
        "clean_metric": _stats(cache.clean_metric),
        "metric": {"name": cache.metric.name, "label": cache.metric.label},
        "units": "logits",
    }


def _ablate(cache: RunCache, layer: int, head: int) -> dict:
    """Mean and zero ablation of one head in one batched pass that starts at its layer, measured with the run's
    metric (rows: the mean-ablated batch, then the zero-ablated one)."""
    model, ds = cache.model, cache.dataset
    batch, n_pos = ds.clean_tokens.shape
    rows = torch.arange(batch)
    ivs = head_ablation_interventions(model, [(layer, head)], method="mean", n_pos=n_pos, rows=rows,
                                      means=cache.mean_z)
    ivs += head_ablation_interventions(model, [(layer, head)], method="zero", n_pos=n_pos, rows=rows + batch)
    kwargs = dict(tokens=ds.clean_tokens.repeat(2, 1), interventions=ivs, logits_at=ds.end.repeat(2))
    if layer > 0:
        kwargs.update(start_layer=layer, resid=cache.resid[layer].repeat(2, 1, 1))
    out = model.run(**kwargs)
    values = cache.metric(out.logits, ds.answers, cache.reference).detach()
    metric = cache.metric
    panel = {"reference": "mean over the corrupted prompts, per position",
             "metric": {"name": metric.name, "label": metric.label}}
    for name, part in (("mean", values[:batch]), ("zero", values[batch:])):
        entry = {"value": _stats(part), "change": _stats(part - cache.clean_metric)}
        if metric.name == "logit_diff" and metric.builtin:
            entry["logit_diff"] = entry["value"]  # the key earlier front ends read
        panel[name] = entry
    return panel


def cell_detail(cache: RunCache, result, idx: tuple[int, ...], *, prompt: int = 0, top_k: int = 10) -> dict:
    """The detail panel of a residual-stream, attention-output or MLP-output cell ``(layer, pos)``.

    Args:
        cache: the run's :class:`RunCache`.
        result: the run's :class:`~attnlab.results.PatchingResult` (component ``resid_pre``/``attn_out``/``mlp_out``).
        idx: the cell's index into ``result.values`` (``(layer_index, pos_index)``).
        prompt: the prompt whose logit lens is shown.
        top_k: number of logit-lens tokens.

    Returns:
        A JSON-ready dict: ``effect`` (the patched metric per prompt; ``metric``: its name and label),
        ``logit_lens`` (top tokens and logits of the residual stream right after the component, at the cell's
        position on ``prompt``, plus the lens's logit difference at END averaged over prompts; None without weights).

    Raises:
        SiteError: ``idx`` outside the result, or the prompt out of range.
    """
    _check_prompt(cache, prompt)
    if len(idx) != result.values.ndim or any(not 0 <= i < n for i, n in zip(idx, result.values.shape)):
        raise SiteError(f"cell {idx} is outside the result of shape {tuple(result.values.shape)}")
    named = dict(zip(result.dims, idx))
    layer = result.index["layer"][named["layer"]]
    pos = result.index["pos"][named["pos"]] if "pos" in named else None
    per_prompt = result.per_prompt[idx] if result.per_prompt is not None else None
    detail = {
        "kind": "cell", "component": result.component, "name": result.component_name(idx), "layer": layer,
        "position": pos, "position_label": result.labels["pos"][named["pos"]] if pos is not None else None,
        "value": float(result.values[idx]),
        "effect": None if per_prompt is None else _stats(per_prompt),
        "prompt": _prompt_view(cache, prompt),
        "metric": {"name": cache.metric.name, "label": cache.metric.label},
        "logit_lens": None, "units": "logits",
    }
    # the residual stream right after the component: resid_pre L is resid L; attn_out L is inside block L (the lens
    # reads the block's output then, resid L+1, which also includes the MLP); mlp_out L ends block L: resid L+1
    lens_layer = layer if result.component == "resid_pre" else layer + 1
    detail["lens_at"] = ("resid_pre" if lens_layer < cache.model.info.n_layers else "final") + f" {lens_layer}"
    if cache.lens is not None and pos is not None:
        resid = cache.resid[lens_layer]
        logits = cache.lens.logits(resid[prompt, pos])  # [d_vocab]
        top = torch.topk(logits, top_k)
        probs = torch.softmax(logits, -1)
        tokens = cache.model.to_str_tokens(top.indices) if getattr(cache.model, "tokenizer", None) else [
            str(int(t)) for t in top.indices]
        b = torch.arange(cache.n_prompts)
        end_logits = cache.lens.logits(resid[b, cache.dataset.end])
        detail["logit_lens"] = {
            "top": [{"token": t, "logit": float(v), "prob": float(probs[i])}
                    for t, v, i in zip(tokens, top.values, top.indices)],
            "end_logit_diff": _stats(logit_diff(end_logits, cache.dataset.answers)),
        }
    return detail
