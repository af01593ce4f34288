"""Causal verification of induction heads: ablation effects on in-context loss, and the loss curve by position.

Context:
    A high induction *score* says where a head attends, not that the model relies on it. Olsson et al. 2022
    ("In-context Learning and Induction Heads", argument 3 and the "ablations" of section "Argument 3") verify
    heads causally: knock a head out and measure how much the *in-context* loss (the loss on tokens that can
    only be predicted from earlier context) rises. On a random sequence repeated twice, the second repeat is
    predictable only by copying, so its loss is the measure: a model with working induction heads predicts it
    almost perfectly, and ablating a head it relies on raises that loss.

    :func:`ablation_effects` ablates each head on its own (zero or mean ablation, :mod:`attnlab.ablation`) and
    reports the increase of the mean second-repeat loss over the unablated run (nats per token), per sequence and on
    average, together with the loss at every position (first repeat: about ``ln(d_vocab)`` for random tokens;
    second repeat: near 0 for a model that copies).

Metrics (``metric=``):
    The default (``metric=None``) is the loss above, in nats per token. Any :class:`~attnlab.metrics.Metric` can be
    measured instead: every (sequence, position) of the second repeat that can be copied (``induction_targets``) is
    one row, with the logits at the position before as the metric's logits, the token to predict (the copy target)
    as the answer and the current token (what a model that repeats instead of copying would predict) as the
    distractor; ``kl_div`` compares with the unablated run's distribution at the same position. Then
    ``"logprob"`` is minus the loss (its change is minus the loss increase), ``"prob"`` the probability of the copy
    target, ``"accuracy"`` top-1 copying accuracy, ``"logit_diff"`` logit(copy target) - logit(current token), and
    the reported effect is the metric's change, ablated minus unablated, averaged over the rows of each sequence.

Each head's ablation starts at that head's block from the cached residual stream (the blocks before it cannot change),
and the heads of one block share a forward pass (one batch slice per head).
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.ablation import ABLATION_METHODS, AblationError, check_heads, head_ablation_interventions, \
    mean_head_outputs
from attnlab.backends.base import Backend, RunSpec
from attnlab.metrics import Metric, MetricLike, get_metric
from attnlab.progress import Progress, step_progress
from attnlab.results import _from_nested, _to_nested
from attnlab.sites import Site, SiteKind
from attnlab.tasks.induction import RepeatedTokens

__all__ = ["HeadAblation", "ablation_effects", "loss_by_position"]


def loss_by_position(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    """Cross-entropy (nats) of each token given the logits at the position before; position 0 is NaN."""
    lp = logits[:, :-1].float().log_softmax(-1)
    nll = -lp.gather(-1, tokens[:, 1:, None].to(lp.device))[..., 0]
    return torch.cat([torch.full((tokens.shape[0], 1), float("nan")), nll.cpu()], dim=1)


@dataclass
class HeadAblation:
    """Ablation effects of single heads on a repeated-sequence batch.

    Attributes:
        methods: ablation methods, e.g. ``["zero", "mean"]``.
        loss_increase: Float[method, layer, head_index] the effect of ablating each head: the mean second-repeat
            loss with the head ablated minus without (nats per token), or, when :attr:`metric` is set, the change of
            that metric (ablated minus unablated, in its units; see the module docstring); NaN for heads not ablated.
        per_sequence: Float[method, layer, head_index, batch] the same per sequence.
        position_loss: Float[method, layer, head_index, pos] mean loss at each position with the head ablated
            (position 0: NaN); NaN for heads not ablated. Always the loss (nats), whatever the metric.
        clean_position_loss: Float[pos] mean loss at each position without ablation.
        clean_loss: {"first_repeat", "second_repeat", "uniform"}: mean losses without ablation (nats per token),
            plus ``"metric"``, the unablated mean of :attr:`metric`, when one is set.
        seq_len, bos_offset: the layout of the sequences (see :class:`~attnlab.tasks.induction.RepeatedTokens`).
        heads: the (layer, head) pairs that were ablated.
        metric: :meth:`Metric.to_dict() <attnlab.metrics.Metric.to_dict>` of the metric measured, or None for the
            second-repeat loss.
    """

    methods: list[str]
    loss_increase: Tensor
    per_sequence: Tensor
    position_loss: Tensor
    clean_position_loss: Tensor
    clean_loss: dict[str, float]
    seq_len: int
    bos_offset: int
    heads: list[tuple[int, int]] = field(default_factory=list)
    metric: dict | None = None

    @property
    def label(self) -> str:
        """What :attr:`loss_increase` measures, with its unit (an axis label)."""
        if self.metric is None:
            return "second-repeat loss increase (nats/token)"
        return f"change of {self.metric['label']} on the second repeat"

    def __repr__(self) -> str:
        effects = ", ".join(
            f"L{layer}H{head}: " + " / ".join(f"{m} {self.effect(layer, head, m):+.3f}" for m in self.methods)
            for layer, head in self.heads[:8])
        more = f", ... ({len(self.heads)} heads)" if len(self.heads) > 8 else ""
        return (f"<HeadAblation {self.label} ({effects}{more}); clean loss first repeat "
                f"{self.clean_loss.get('first_repeat', float('nan')):.3f}, second repeat "
                f"{self.clean_loss.get('second_repeat', float('nan')):.3f}>")

    def effect(self, layer: int, head: int, method: str = "zero") -> float:
        """The effect of ablating one head: loss increase (nats per token), or the metric's change."""
        return float(self.loss_increase[self.methods.index(method), layer, head])

    def to_dict(self) -> dict:
        return {"methods": self.methods, "loss_increase": _to_nested(self.loss_increase),
                "per_sequence": _to_nested(self.per_sequence), "position_loss": _to_nested(self.position_loss),
                "clean_position_loss": _to_nested(self.clean_position_loss), "clean_loss": self.clean_loss,
                "seq_len": self.seq_len, "bos_offset": self.bos_offset, "heads": [list(h) for h in self.heads],
                "metric": self.metric}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadAblation":
        return cls(methods=list(d["methods"]), loss_increase=_from_nested(d["loss_increase"]),
                   per_sequence=_from_nested(d["per_sequence"]), position_loss=_from_nested(d["position_loss"]),
                   clean_position_loss=_from_nested(d["clean_position_loss"]), clean_loss=dict(d["clean_loss"]),
                   seq_len=d["seq_len"], bos_offset=d["bos_offset"], heads=[tuple(h) for h in d["heads"]],
                   metric=d.get("metric"))

    def plot(self, ax=None, **kw):
        """Draw the ablation effect of each head, diverging at 0, heads not ablated hatched with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_head_ablation`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: method, width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_head_ablation

        return plot_head_ablation(self, ax, **kw)


def _repeat_means(loss: Tensor, data: RepeatedTokens) -> tuple[Tensor, Tensor]:
    """Per-sequence mean loss over the first repeat (its tokens 2..L) and over the induction targets."""
    o, L = data.bos_offset, data.seq_len
    first = loss[:, o + 1:o + L].mean(-1)
    second = loss[:, data.induction_targets].mean(-1)
    return first, second


def _metric_rows(data: RepeatedTokens) -> tuple[Tensor, Tensor]:
    """Positions of the logits and the answers of the metric rows: (Int[t] logit positions, Int[batch * t, 2])."""
    targets = torch.arange(data.n_pos)[data.induction_targets]  # positions whose token is predicted
    tokens = data.tokens
    answers = torch.stack([tokens[:, targets], tokens[:, targets - 1]], dim=-1)  # copy target, current token
    return targets - 1, answers.reshape(-1, 2)


def _metric_values(metric: Metric, logits: Tensor, at: Tensor, answers: Tensor, reference) -> Tensor:
    """Float[batch] mean metric over each sequence's rows (logits Float[batch, pos, d_vocab] of one variant)."""
    batch = logits.shape[0]
    rows = logits[:, at].reshape(-1, logits.shape[-1]).float()
    return metric(rows, answers.to(rows.device), reference).detach().cpu().reshape(batch, -1).mean(-1)


def ablation_effects(
    model: Backend,
    data: RepeatedTokens,
    heads: Iterable[Sequence[int]] | None = None,
    *,
    methods: Sequence[str] = ("zero", "mean"),
    reference: Int[Tensor, "batch pos"] | None = None,
    max_rows: int | None = None,
    metric: MetricLike | None = None,
    progress: "bool | Progress" = True,
) -> HeadAblation:
    """Increase of the second-repeat loss (or change of a metric) when each head is ablated on its own.

    Args:
        model: any backend.
        data: repeated sequences.
        heads: (layer, head) pairs to ablate one at a time (default every head).
        methods: ``"zero"`` and/or ``"mean"`` ablation (:mod:`attnlab.ablation`).
        reference: Int[batch', pos] tokens whose per-position mean ``z`` mean ablation writes (default: ``data``'s
            own tokens).
        max_rows: most batch rows per forward pass (heads of a block share a pass); default keeps the logits of a
            pass under about 64M floats.
        metric: None (default) for the second-repeat loss in nats per token; or a metric name, a
            :class:`~attnlab.metrics.Metric` or a callable, measured on the copyable positions of the second repeat
            (see the module docstring: ``"logprob"`` gives minus the loss).
        progress: a tqdm bar over the forward passes (True), none (False), or a shared
            :class:`~attnlab.progress.Progress` to tick (:func:`~attnlab.heads.induction_analysis` passes its own).

    Returns:
        A :class:`HeadAblation` (its ``metric`` records the metric; None for the loss).

    Raises:
        SiteError: a head out of range. AblationError: an unknown method or a reference of another length.
        MetricError: an unknown or broken metric (checked on the unablated run, before any ablation).
    """
    methods = list(methods)
    for m in methods:
        if m not in ABLATION_METHODS:
            raise AblationError(f"'methods' entries must be in {ABLATION_METHODS} (got {m!r})")
    resolved = None if metric is None else get_metric(metric)
    info = model.info
    heads = [(a, b) for a in range(info.n_layers) for b in range(info.n_heads)] if heads is None \
        else check_heads(model, heads)
    tokens = data.tokens
    batch, n_pos = tokens.shape
    if reference is not None and reference.shape[1] != n_pos:
        raise AblationError(f"'reference' must have {n_pos} positions like the data (got {reference.shape[1]})")
    layers = sorted({layer for layer, _ in heads})
    if max_rows is None:
        max_rows = max(batch, int(64e6 // (n_pos * info.d_vocab)))
    per_pass = max(1, max_rows // batch)
    n_ablated = len(methods) * sum(math.ceil(sum(1 for lay, _ in heads if lay == layer) / per_pass)
                                   for layer in layers)
    # the passes: the unablated run, the mean outputs (mean ablation), then the ablated passes
    tracker, owned = step_progress(progress, total=1 + ("mean" in methods) + n_ablated, desc="ablating heads")
    try:
        return _ablation_effects(model, data, heads, methods, reference, resolved, layers, per_pass, tracker)
    finally:
        if owned:
            tracker.close()


def _ablation_effects(model: Backend, data: RepeatedTokens, heads: list[tuple[int, int]], methods: list[str],
                      reference: Tensor | None, resolved: Metric | None, layers: list[int], per_pass: int,
                      tracker: Progress) -> HeadAblation:
    """:func:`ablation_effects` with its inputs checked: the passes, each ticking ``tracker``."""
    info = model.info
    tokens = data.tokens
    batch, n_pos = tokens.shape
    clean = model.run(tokens, cache=[Site(SiteKind.RESID_PRE, layer) for layer in layers])
    tracker.update()
    clean_loss = loss_by_position(clean.logits, tokens)
    first, second = _repeat_means(clean_loss, data)
    clean_summary = {"first_repeat": float(first.mean()), "second_repeat": float(second.mean()),
                     "uniform": math.log(info.d_vocab)}
    if resolved is None:
        baseline = second
    else:
        at, answers = _metric_rows(data)
        ref = resolved.reference(clean.logits[:, at].reshape(-1, info.d_vocab).float())
        baseline = _metric_values(resolved, clean.logits, at, answers, ref)  # fails here if the metric is broken
        clean_summary["metric"] = float(baseline.mean())
    means = None
    if "mean" in methods:
        means = mean_head_outputs(model, tokens if reference is None else reference, layers)
        tracker.update()

    nan = float("nan")
    per_seq = torch.full((len(methods), info.n_layers, info.n_heads, batch), nan)
    pos_loss = torch.full((len(methods), info.n_layers, info.n_heads, n_pos), nan)

    def specs():
        for mi, method in enumerate(methods):
            for layer in layers:
                hs = [h for (lay, h) in heads if lay == layer]
                for i in range(0, len(hs), per_pass):
                    group = hs[i:i + per_pass]
                    ivs = []
                    for v, head in enumerate(group):
                        rows = torch.arange(v * batch, (v + 1) * batch)
                        ivs += head_ablation_interventions(model, [(layer, head)], method=method, n_pos=n_pos,
                                                           rows=rows, means=means)
                    resid = clean.cache[Site(SiteKind.RESID_PRE, layer)] if layer > 0 else None
                    yield RunSpec(tokens=tokens, repeat=len(group), interventions=ivs, start_layer=layer,
                                  resid=resid, key=(mi, layer, group))

    for (mi, layer, group), out in model.run_many(specs()):
        loss = loss_by_position(out.logits, tokens.repeat(len(group), 1))
        for v, head in enumerate(group):
            part = loss[v * batch:(v + 1) * batch]
            if resolved is None:
                value = _repeat_means(part, data)[1]
            else:
                value = _metric_values(resolved, out.logits[v * batch:(v + 1) * batch], at, answers, ref)
            per_seq[mi, layer, head] = value - baseline
            pos_loss[mi, layer, head] = part.mean(0)
        tracker.update()
    return HeadAblation(
        methods=methods, loss_increase=per_seq.mean(-1), per_sequence=per_seq, position_loss=pos_loss,
        clean_position_loss=clean_loss.mean(0), clean_loss=clean_summary,
        seq_len=data.seq_len, bos_offset=data.bos_offset, heads=heads,
        metric=None if resolved is None else resolved.to_dict(),
    )
