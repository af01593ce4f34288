"""Memory estimates of forward passes, and the one default memory budget.

Analyses batch many patched variants (or ablated circuits, or senders) into one forward pass; how many share a pass
is set by a memory budget, ``memory_budget_mb`` (MiB), which every analysis defaults to :data:`DEFAULT_BUDGET_MB`.
This module is the one estimator they consult: :func:`row_bytes` for one prompt row of a plain pass, and
:func:`edge_pass_mb` for a pass of the edge graph (:class:`attnlab.circuits.graph.GraphRunner`), built on it.

The model (float32, 4 bytes a number; good to a factor of about 2, which is what a budget needs):
    - per row, per position and per block held in memory: ``8 d_model`` (residual stream copies, the norms, the
      attention and MLP outputs) + ``3 d_mlp`` (the MLP's hidden, gate and activation) + ``3 n_heads d_head``
      (q, k, v/z) + ``2 n_heads n_pos`` (attention scores and pattern);
    - per row, ``2 d_vocab`` for the logits (and their softmax) at the metric's position.

    A pass without autograd frees each block's activations before the next block runs, so one block is held
    (``layers_held=1``); a pass that keeps autograd holds all of them (``layers_held=n_layers``). The edge graph's
    no-grad pass is estimated with every block held as well (its sender buffers keep every block's outputs alive).
"""

import math

from attnlab.errors import MemoryBudgetError

__all__ = ["DEFAULT_BUDGET_MB", "check_budget", "edge_pass_mb", "max_variants", "row_bytes", "suffix_row_bytes"]

#: The default ``memory_budget_mb`` of every analysis, in MiB: large enough for EAP-IG on the embedded model with
#: 16 prompts of 15 tokens in one pass (about 2.2 GiB), small enough for a laptop.
DEFAULT_BUDGET_MB = 4096

_FLOAT = 4  # bytes


def row_bytes(info, n_pos: int, *, layers_held: int = 1) -> int:
    """Peak bytes of one prompt row in a forward pass (see the module docstring for the model).

    Args:
        info: the model's :class:`~attnlab.backends.base.ModelInfo`.
        n_pos: tokens per prompt.
        layers_held: blocks whose activations are alive at once (1 without autograd, ``n_layers`` with it).

    Returns:
        Bytes (an estimate).
    """
    i = info
    per_pos = 8 * i.d_model + 3 * i.d_mlp + 3 * i.n_heads * i.d_head + 2 * i.n_heads * n_pos
    return _FLOAT * (n_pos * layers_held * per_pos + 2 * i.d_vocab)


def suffix_row_bytes(info, n_suffix: int, n_prefix: int, n_blocks: int) -> int:
    """Peak bytes of one prompt row in a suffix pass (``Capability.PREFIX_REUSE``): ``n_suffix`` positions computed
    through ``n_blocks`` blocks, attending to ``n_prefix`` recorded positions.

    On top of :func:`row_bytes` for the suffix (with attention scores over all ``n_prefix + n_suffix`` keys), the
    key/value cache of the pass holds every block's keys and values of all positions (``2 n_kv_heads d_head``
    numbers per position and block): the recorded prefix, repeated for the row, and the suffix's own.

    Returns:
        Bytes (an estimate).
    """
    i = info
    total = n_prefix + n_suffix
    per_pos = 8 * i.d_model + 3 * i.d_mlp + 3 * i.n_heads * i.d_head + 2 * i.n_heads * total
    kv = 2 * i.n_kv_heads * i.d_head * total * n_blocks
    return _FLOAT * (n_suffix * per_pos + kv + 2 * i.d_vocab)


def max_variants(info, n_pos: int, budget_mb: float, *, rows_per_variant: int = 1, layers_held: int = 1) -> int:
    """How many variants of ``rows_per_variant`` rows each fit one pass within ``budget_mb`` MiB (at least 1).

    Args:
        info: the model's :class:`~attnlab.backends.base.ModelInfo`.
        n_pos: tokens per prompt.
        budget_mb: the memory budget, in MiB.
        rows_per_variant: prompt rows each variant adds to the pass (e.g. the dataset's batch).
        layers_held: as in :func:`row_bytes`.
    """
    per_variant = row_bytes(info, n_pos, layers_held=layers_held) * rows_per_variant
    return max(1, int(budget_mb * 2**20 // per_variant))


def edge_pass_mb(info, n_prompts: int, n_pos: int, *, mode: str = "ablate", n_variants: int = 1) -> float:
    """Peak memory, in MiB, of one batched pass of the edge graph (float32).

    On top of the model's own activations (every block held, :func:`row_bytes`) a pass holds one buffer of sender
    outputs or deltas per row ([rows, pos, n_senders, d_model]) and the ablation source per prompt; a gradient pass
    (EAP) also holds each receiver's input copy and its gradient ([rows, pos, n_receivers, d_model], three times),
    the autograd activations (twice the model's) and a second sender buffer.

    Args:
        info: the model's :class:`~attnlab.backends.base.ModelInfo`.
        n_prompts: prompts per pass; n_pos: tokens per prompt.
        mode: ``"ablate"`` (no-grad edge ablation) or ``"gradient"`` (a pass that keeps autograd, for EAP).
        n_variants: circuits sharing the pass (rows = n_variants * n_prompts).

    Returns:
        MiB (an estimate, good to a factor of about 2).

    Raises:
        ValueError: unknown ``mode``.
    """
    mlp = 1 if info.has_mlp else 0
    n_senders = 1 + info.n_layers * (info.n_heads + mlp)
    n_receivers = info.n_layers * (info.n_heads + 2 * info.n_kv_heads + mlp) + 1
    rows = n_prompts * n_variants
    f = _FLOAT * rows * n_pos
    senders = f * n_senders * info.d_model  # sender outputs / deltas
    source = _FLOAT * n_prompts * n_pos * n_senders * info.d_model
    model = rows * row_bytes(info, n_pos, layers_held=info.n_layers)
    total = senders + source + model
    if mode == "gradient":
        receivers = f * n_receivers * info.d_model
        total += 3 * receivers + 2 * model + senders  # receiver copies + grads, autograd activations, two runs
    elif mode != "ablate":
        raise ValueError(f"'mode' must be 'ablate' or 'gradient' (got {mode!r})")
    return total / 2**20


def check_budget_value(budget_mb, *, allow_none: bool = False) -> float | None:
    """``budget_mb`` as a float, checked before any work: a positive, finite number of MiB (or None where
    ``allow_none``: no limit).

    Raises:
        ArgumentTypeError: not a number (a string, a bool ...).
        ArgumentError: NaN, infinite, zero or negative.
    """
    from attnlab.errors import ArgumentError, ArgumentTypeError

    if budget_mb is None and allow_none:
        return None
    if isinstance(budget_mb, bool) or not _is_number(budget_mb):
        raise ArgumentTypeError(f"'memory_budget_mb' must be a number of MiB (got {type(budget_mb).__name__} "
                                f"{budget_mb!r})")
    value = float(budget_mb)
    if not (math.isfinite(value) and value > 0):
        raise ArgumentError(f"'memory_budget_mb' must be a positive, finite number of MiB (got {budget_mb!r}); "
                            f"the default is {DEFAULT_BUDGET_MB}")
    return value


def _is_number(x) -> bool:
    """A real number of any kind: Python, numpy (registered as ``numbers.Real``) or a one-element torch tensor."""
    import numbers

    if isinstance(x, numbers.Real):
        return True
    item = getattr(x, "item", None)
    if item is None or getattr(x, "numel", lambda: 0)() != 1:
        return False
    value = item()
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_budget(what: str, needed_mb: float, budget_mb: float | int | None, hint: str) -> None:
    """Raise when ``needed_mb`` exceeds ``budget_mb`` (None = no limit); call it before any work.

    Args:
        what: the work, for the message (e.g. ``"EAP on smollm2-135m (16 prompts x 15 tokens per pass)"``).
        needed_mb: its estimate, in MiB.
        budget_mb: the budget, in MiB, or None.
        hint: what to do instead (e.g. ``"pass batch_size=4"``).

    Raises:
        ArgumentError: ``budget_mb`` is not a positive finite number (:func:`check_budget_value`).
        MemoryBudgetError: the estimate exceeds the budget.
    """
    budget_mb = check_budget_value(budget_mb, allow_none=True)
    if budget_mb is None:
        return
    if needed_mb > budget_mb:
        raise MemoryBudgetError(
            f"{what} needs about {needed_mb:,.0f} MiB but memory_budget_mb={budget_mb:,.0f}; {hint}"
        )
