"""Tensor operations that run *inside* nnsight trace blocks, locally or on a remote server.

A remote server has torch and nnsight but not attnlab, so the functions called from a trace block live here, import
nothing but torch, and are shipped by value with every request (``nnsight.register(this module)`` in the backend).
Everything they receive is plain data: tuples, ints and tensors, never attnlab objects.

An intervention travels as ``(kind, rows, positions, heads, values)`` and means ``act[rows, positions, heads] =
values`` with ``None`` for "all positions" / "all heads" (see :class:`attnlab.backends.base.Intervention`).
"""

import torch

__all__ = ["apply_intervention", "handle", "narrow_activation", "split_heads"]


def apply_intervention(act: torch.Tensor, iv: tuple) -> None:
    """Overwrite entries of ``act`` in place: ``act[rows, positions, heads] = values``.

    In place, so that the tensor the model passes on (and every alias of it, such as the residual branch of a
    pre-norm block) carries the new values. ``act`` has its head axis (if any) at 2: ``[batch, pos, head, ...]``.
    """
    _kind, rows, positions, heads, values = iv
    values = values.to(device=act.device, dtype=act.dtype)
    rows = rows.to(act.device)
    if positions is None and heads is not None:
        act.transpose(1, 2)[rows, heads.to(act.device)] = values
    elif positions is not None and heads is not None:
        act[rows, positions.to(act.device), heads.to(act.device)] = values
    elif positions is not None:
        act[rows, positions.to(act.device)] = values
    else:
        act[rows] = values


def narrow_activation(act: torch.Tensor, kind: str, head, position) -> torch.Tensor:
    """A detached copy of ``act`` narrowed to one head and/or position (``None``: keep the axis)."""
    if kind == "pattern":
        if head is not None:
            act = act[:, head]
            if position is not None:
                act = act[:, position]
        elif position is not None:
            act = act[:, :, position]
    elif position is not None and head is not None:
        act = act[:, position, head]
    elif position is not None:
        act = act[:, position]
    elif head is not None:
        act = act[:, :, head]
    return act.detach().clone()


def split_heads(act: torch.Tensor, n_heads: int) -> torch.Tensor:
    """View ``[batch, pos, n_heads * d_head]`` as ``[batch, pos, n_heads, d_head]`` (shares memory)."""
    return act.view(act.shape[0], act.shape[1], n_heads, act.shape[2] // n_heads)


def handle(act, kind: str, ivs: list, want: list, recorded: dict) -> None:
    """Apply the interventions of ``kind`` to ``act`` (in order, in place), then record the wanted sites of ``kind``.

    Args:
        act: the activation (a tuple's first element is taken: older transformers blocks return tuples).
        kind: the activation kind ``act`` is.
        ivs: intervention tuples of this block, any kind.
        want: ``(index, kind, head, position)`` of the sites to record in this block, any kind.
        recorded: receives ``index -> narrowed copy``.
    """
    if isinstance(act, tuple):
        act = act[0]
    for iv in ivs:
        if iv[0] == kind:
            apply_intervention(act, iv)
    for index, k, head, position in want:
        if k == kind:
            recorded[index] = narrow_activation(act, k, head, position)
