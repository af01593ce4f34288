"""Named activation-patching sweeps. Each is a thin, documented call of :func:`attnlab.patching.engine.run_sweep`.

Every sweep takes a model (:class:`~attnlab.backends.Backend`) and a :class:`~attnlab.tasks.base.PatchingDataset`
and returns a :class:`~attnlab.results.PatchingResult` of the normalised metric (``metric=``: logit difference by
default, ``"kl_div"``, ``"prob"``, ``"logprob"``, ``"accuracy"`` or a callable; see :mod:`attnlab.metrics`).
``direction="denoising"`` patches clean activations into the corrupted run (sufficiency: which components carry the
clean answer); ``direction="noising"`` patches corrupted activations into the clean run (necessity). See Heimersheim & Nanda 2024
(arXiv 2404.15255), sections 2-3, and the engine's module docstring for how the batched computation works.

Common keyword arguments: ``direction``, ``metric``, ``layers`` (subset of layers), ``memory_budget_mb`` (peak memory of
one batched pass, MiB), ``progress`` (tqdm bar). Errors: ``SiteError`` for indices out of range, ``DatasetError`` for
a dataset that does not fit the model, ``MetricError`` for a broken metric or equal clean and corrupted baselines.
"""

from collections.abc import Sequence

from attnlab.backends.base import Backend
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import Direction, MetricLike
from attnlab.patching.engine import run_sweep
from attnlab.results import PatchingResult
from attnlab.tasks.base import PatchingDataset

__all__ = ["patch_attn_out", "patch_heads", "patch_heads_by_position", "patch_mlp_out", "patch_residual_stream"]


def patch_residual_stream(
    model: Backend, dataset: PatchingDataset, *, direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None, positions: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_BUDGET_MB, progress: bool = True,
) -> PatchingResult:
    """Patch the residual stream entering each block at each position: values Float[layer, pos].

    Shows where (which position, from which layer on) the information that decides the answer lives; on IOI it moves
    from the S2/IO positions to END in the middle layers. Equals TransformerLens's ``get_act_patch_resid_pre``.
    """
    return run_sweep(model, dataset, "resid_pre", direction=direction, metric=metric,
                     layers=layers, positions=positions,
                     memory_budget_mb=memory_budget_mb, progress=progress)


def patch_attn_out(
    model: Backend, dataset: PatchingDataset, *, direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None, positions: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_BUDGET_MB, progress: bool = True,
) -> PatchingResult:
    """Patch each attention layer's output at each position: values Float[layer, pos].

    Equals TransformerLens's ``get_act_patch_attn_out``.
    """
    return run_sweep(model, dataset, "attn_out", direction=direction, metric=metric,
                     layers=layers, positions=positions,
                     memory_budget_mb=memory_budget_mb, progress=progress)


def patch_mlp_out(
    model: Backend, dataset: PatchingDataset, *, direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None, positions: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_BUDGET_MB, progress: bool = True,
) -> PatchingResult:
    """Patch each MLP layer's output at each position: values Float[layer, pos].

    Equals TransformerLens's ``get_act_patch_mlp_out``.
    """
    return run_sweep(model, dataset, "mlp_out", direction=direction, metric=metric,
                     layers=layers, positions=positions,
                     memory_budget_mb=memory_budget_mb, progress=progress)


def patch_heads(
    model: Backend, dataset: PatchingDataset, *, direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
    memory_budget_mb: float = DEFAULT_BUDGET_MB, progress: bool = True,
) -> PatchingResult:
    """Patch each attention head's output (``z``, before the output projection) at every position at once:
    values Float[layer, head].

    Head indices are query heads (on grouped-query models several query heads share a key/value head; each query head
    still has its own ``z``). Positive heads under denoising carry the clean answer (IOI: name movers); negative heads
    push against it (IOI: negative name movers). Equals TransformerLens's ``get_act_patch_attn_head_out_all_pos``.
    """
    return run_sweep(model, dataset, "heads", direction=direction, metric=metric,
                     layers=layers, heads=heads,
                     memory_budget_mb=memory_budget_mb, progress=progress)


def patch_heads_by_position(
    model: Backend, dataset: PatchingDataset, *, direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None, heads: Sequence[int] | None = None,
    positions: Sequence[int] | None = None, memory_budget_mb: float = DEFAULT_BUDGET_MB, progress: bool = True,
) -> PatchingResult:
    """Patch each attention head's output at each position separately: values Float[layer, head, pos].

    Tells apart heads that act at END (name movers, S-inhibition) from heads that act at S2 (induction,
    duplicate-token) or S1+1 (previous-token). Equals TransformerLens's ``get_act_patch_attn_head_out_by_pos``
    (whose axes are [layer, pos, head]).
    """
    return run_sweep(model, dataset, "heads_by_pos", direction=direction, metric=metric,
                     layers=layers, heads=heads,
                     positions=positions, memory_budget_mb=memory_budget_mb, progress=progress)
