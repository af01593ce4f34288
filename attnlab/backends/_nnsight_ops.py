"""Tensor operations that run *inside* nnsight trace blocks, locally or on a remote server.

A remote server has torch and nnsight but not attnlab, so the functions called from a trace block live here, import
nothing but torch, and are shipped by value with every request (``nnsight.register(this module)`` in the backend).
Everything they receive is plain data: tuples, ints and tensors, never attnlab objects.

Two modes. Without gradients (:func:`handle`) interventions overwrite the activation in place and recordings are
detached copies. With gradients (:func:`handle_grad`, local runs with ``grad=True``) an activation that gets an
intervention is cloned first and the clone, patched, is what the model reads next (the caller puts it back at the
site), so no tensor autograd has saved is changed; recordings are the tensors on the forward path themselves, so
``torch.autograd.grad(metric, recorded)`` works.

An intervention travels as ``(kind, rows, positions, heads, values)`` and means ``act[rows, positions, heads] =
values`` with ``None`` for "all positions" / "all heads" (see :class:`attnlab.backends.base.Intervention`).
"""

import torch

__all__ = ["apply_intervention", "handle", "handle_grad", "narrow_activation", "output", "split_heads"]


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
    return _narrow(act, kind, head, position).detach().clone()


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


def handle_grad(act, kind: str, ivs: list, want: list, recorded: dict, in_place: bool = False):
    """:func:`handle` keeping autograd: return the tensor the model should read on from this site.

    With interventions of ``kind``, ``act`` is cloned and the clone patched (``in_place=False``), or ``act`` itself is
    patched (``in_place=True``: for a site whose tensor other branches alias and that autograd has not saved yet, such
    as the residual stream entering the post-attention norm). Recordings are the returned tensor (narrowed to a head
    or position, views of it), not detached: the gradient of anything computed downstream reaches them.

    Args:
        act: the activation (a tuple's first element is taken).
        kind, ivs, want, recorded: as in :func:`handle`.
        in_place: patch ``act`` itself instead of a clone.

    Returns:
        The (possibly new) activation; the caller sets it back at the site when it is not ``act``.
    """
    if isinstance(act, tuple):
        act = act[0]
    mine = [iv for iv in ivs if iv[0] == kind]
    if mine and not in_place:
        act = act.clone()
    for iv in mine:
        apply_intervention(act, iv)
    for index, k, head, position in want:
        if k == kind:
            recorded[index] = _narrow(act, k, head, position)
    return act


def _narrow(act: torch.Tensor, kind: str, head, position) -> torch.Tensor:
    """``act`` narrowed to one head and/or position, as :func:`narrow_activation` but a view (autograd kept)."""
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
    return act


def output(t: torch.Tensor, grad: bool) -> torch.Tensor:
    """What a pass returns: ``t`` itself with gradients (the autograd graph kept), a detached copy without."""
    return t if grad else t.detach().clone()
