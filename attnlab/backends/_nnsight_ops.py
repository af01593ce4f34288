"""Tensor operations that run *inside* nnsight trace blocks, locally or on a remote server.

A remote server has torch and nnsight but not attnlab, so the functions called from a trace block live here, import
nothing but torch, and are shipped by value with every request (``nnsight.register(this module)`` in the backend).
Everything they receive is plain data: tuples, ints and tensors, never attnlab objects.

Two modes. Without gradients (:func:`handle`) interventions overwrite the activation in place and recordings are
detached copies. With gradients (:func:`handle_grad`, local runs with ``grad=True``) an activation that gets an
intervention is cloned first and the clone, patched, is what the model reads next (the caller puts it back at the
site), so no tensor autograd has saved is changed; recordings are the tensors on the forward path themselves, so
``torch.autograd.grad(metric, recorded)`` works.

The wire form. What one forward pass of a sweep needs travels as one :class:`WirePass`: an immutable, typed record
of tensors, ints and strings (never attnlab objects, which do not exist on a server). Its parts:

- a :class:`PatchOp`, ``(kind, rows, positions, heads, values)``, means ``act[rows, positions, heads] = values`` with
  ``None`` for "all positions" / "all heads" (see :class:`attnlab.backends.base.Intervention`);
- a :class:`RecordOp`, ``(index, kind, head, position)``, records one site (``index`` is its place in the pass's
  site list, so the client maps recordings back to :class:`~attnlab.sites.Site` objects);
- a :class:`MetricOp`, ``(name, answers, reference)``, reduces the logits to a built-in metric inside the trace.

The client builds them (``NNsightBackend._plan``, as a ``PlannedPass``); the trace block reads their fields by
name. These classes are shipped by value with the module, so a server rebuilds them without attnlab.
"""

from typing import NamedTuple, Optional

import torch

__all__ = ["MetricOp", "PatchOp", "RecordOp", "WirePass", "apply_intervention", "cache_tensors", "edge_pass", "handle",
           "handle_grad", "narrow_activation", "output", "prefix_cache", "split_heads"]


class PatchOp(NamedTuple):
    """One intervention: ``act[rows, positions, heads] = values`` at activations of ``kind``.

    Fields: ``kind`` (a :class:`~attnlab.sites.SiteKind` value); ``rows`` Int[n]; ``positions`` Int[n] or None (all
    positions); ``heads`` Int[n] or None (all heads); ``values`` Float[n, ...] (the entries written, in the site's
    dtype after casting).
    """

    kind: str
    rows: torch.Tensor
    positions: Optional[torch.Tensor]
    heads: Optional[torch.Tensor]
    values: torch.Tensor


class RecordOp(NamedTuple):
    """One site to record: activations of ``kind`` narrowed to ``head`` and/or ``position`` (None: the whole axis);
    the recording is returned under ``index``."""

    index: int
    kind: str
    head: Optional[int]
    position: Optional[int]


class MetricOp(NamedTuple):
    """A built-in metric reduced inside the trace (:func:`attnlab.metric_ops.evaluate`): ``name``, ``answers``
    Int[batch, 2] (correct, distractor) and ``reference`` Float[batch, d_vocab] (the clean log-probabilities) or None."""

    name: str
    answers: torch.Tensor
    reference: Optional[torch.Tensor]


class WirePass(NamedTuple):
    """One forward pass as it travels to a server (or to the local trace block): immutable, typed, plain data.

    Fields:
        tokens: Int[batch, pos] token ids (the batch is ``batch`` rows; with ``repeat`` > 1, ``repeat`` copies of the
            base prompts' rows are run).
        start: the first block computed; blocks before it are skipped and ``resid`` enters block ``start``.
        resid: Float[base_batch, pos, d_model], the recorded residual stream entering ``start`` (None when
            ``start == 0``); repeated ``repeat`` times on the server, so it travels once.
        repeat: how many times ``resid`` is repeated along the batch (1: as is).
        stop: stop before this block and return the residual stream entering it (None: run to the logits).
        patches: layer -> the :class:`PatchOp` s of that block, applied in order.
        records: layer -> the :class:`RecordOp` s of that block.
        logits_at: Int[batch] the one position unembedded per row (None: every position).
        metric: a :class:`MetricOp` (None: return logits).
        grad: keep the autograd graph (local runs only).
        lo, hi: the blocks the trace visits, ``lo <= L < hi`` (the others are untouched).
        kv: a suffix pass's key/value prefix, ``(keys, values, length, start, repeat)``: per block the recorded
            Float[base_batch, n_kv_heads, recorded_pos, d_head] tensors (the same tensor objects in every pass of a
            sweep, so a job serialises them once), the prefix's length, the first block read and the repeat of the
            base batch; None for a full pass (:func:`prefix_cache`).
        record_kv: return every block's keys and values (``"kv"`` in the result).
    """

    tokens: torch.Tensor
    start: int
    resid: Optional[torch.Tensor]
    repeat: int
    stop: Optional[int]
    patches: dict
    records: dict
    logits_at: Optional[torch.Tensor]
    metric: Optional[MetricOp]
    grad: bool
    lo: int
    hi: int
    kv: Optional[tuple] = None
    record_kv: bool = False


def prefix_cache(kv):
    """A Hugging Face ``DynamicCache`` for a pass: empty (``kv`` None: the run fills it, for ``record_kv``), or
    holding a suffix pass's prefix (:attr:`WirePass.kv`): block L's first ``length`` recorded positions, repeated for
    the pass's variants; blocks before ``start`` (skipped) get a zero stand-in of that length, because Hugging Face
    reads the number of cached positions from block 0 to place the suffix at its true positions."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if kv is None:
        return cache
    keys, values, length, start, repeat = kv
    like = None
    for layer in range(len(keys)):
        if layer < start:
            continue
        k, v = keys[layer][:, :, :length], values[layer][:, :, :length]
        if repeat > 1:
            k, v = k.repeat(repeat, 1, 1, 1), v.repeat(repeat, 1, 1, 1)
        if like is None:
            like = k
            for skipped in range(start):
                zero = torch.zeros((), dtype=k.dtype, device=k.device).expand(k.shape)
                cache.update(zero, zero, skipped)
        cache.update(k, v, layer)
    return cache


def cache_tensors(cache) -> tuple:
    """``(keys, values)``: every block's recorded keys and values of a filled ``DynamicCache``, detached copies."""
    return (tuple(layer.keys.detach().clone() for layer in cache.layers),
            tuple(layer.values.detach().clone() for layer in cache.layers))


def apply_intervention(act: torch.Tensor, iv: PatchOp) -> None:
    """Overwrite entries of ``act`` in place: ``act[rows, positions, heads] = values``.

    In place, so that the tensor the model passes on (and every alias of it, such as the residual branch of a
    pre-norm block) carries the new values. ``act`` has its head axis (if any) at 2: ``[batch, pos, head, ...]``.
    """
    rows, positions, heads, values = iv.rows, iv.positions, iv.heads, iv.values
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


def handle(act, kind: str, ivs: tuple, want: tuple, recorded: dict) -> None:
    """Apply the interventions of ``kind`` to ``act`` (in order, in place), then record the wanted sites of ``kind``.

    Args:
        act: the activation (a tuple's first element is taken: older transformers blocks return tuples).
        kind: the activation kind ``act`` is.
        ivs: the :class:`PatchOp` s of this block, any kind.
        want: the :class:`RecordOp` s of this block, any kind.
        recorded: receives ``index -> narrowed copy``.
    """
    if isinstance(act, tuple):
        act = act[0]
    for iv in ivs:
        if iv.kind == kind:
            apply_intervention(act, iv)
    for r in want:
        if r.kind == kind:
            recorded[r.index] = narrow_activation(act, kind, r.head, r.position)


def handle_grad(act, kind: str, ivs: tuple, want: tuple, recorded: dict, in_place: bool = False):
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
    mine = [iv for iv in ivs if iv.kind == kind]
    if mine and not in_place:
        act = act.clone()
    for iv in mine:
        apply_intervention(act, iv)
    for r in want:
        if r.kind == kind:
            recorded[r.index] = _narrow(act, kind, r.head, r.position)
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


def edge_pass(sites: dict, cb, logits_at, dims: tuple):
    """One receiver-split pass, called inside a ``model.trace(tokens)`` block (:mod:`attnlab.backends.nnsight_graph`).

    Args:
        sites: ``{"layers": [per block {"block", "ln", "q", "k", "v", "o", "mid", "mlp"} envoys], "final_norm",
            "unembed"}`` (Llama-family layout: separate q/k/v/o linear projections, a pre-attention norm ``ln``).
        cb: the pass's callbacks (:class:`attnlab.edge_ops.EdgeAblation`, shipped by value).
        logits_at: Int[rows] the one position per row to unembed, or None (every position).
        dims: (n_layers, n_heads, n_kv_heads, d_head).

    Returns:
        Float[rows, d_vocab] logits at ``logits_at`` (Float[rows, pos, d_vocab] without it).

    At each block the callbacks are asked, in execution order, for the block's input (resid_pre), for each of q, k and
    v the per-head inputs ``x_h`` (when given, the projection's output becomes ``norm(x_h) W^h + b^h``, with the
    block's own norm and that head's rows of the weight, read from the server's model), then they are given each
    head's output ``z_h W_O^h`` (the output projection's input, viewed per head), the MLP's input (the post-attention
    norm's input; the residual branch keeps the uncorrected stream) and output; finally the final norm's input.
    """
    n_layers, n_heads, n_kv, d_head = dims
    for layer in range(n_layers):
        e = sites["layers"][layer]
        act = e["block"].input
        resid = cb.resid_pre(layer, act)
        if resid is not act:
            e["block"].input = resid
        for kind, n in (("q", n_heads), ("k", n_kv), ("v", n_kv)):
            x = cb.head_input(layer, kind, resid)
            if x is None:
                continue
            proj = e[kind]
            out = proj.output
            weight, bias = proj.weight, proj.bias
            y = torch.einsum("bphd,hkd->bphk", e["ln"](x), weight.reshape(n, d_head, -1).to(x.dtype))
            if bias is not None:
                y = y + bias.reshape(n, d_head).to(x.dtype)
            proj.output = y.flatten(2).to(out.dtype)
        if cb.records_senders:
            z = e["o"].input
            w_o = e["o"].weight  # Linear: [d_model, n_heads * d_head]
            w_o = w_o.reshape(w_o.shape[0], n_heads, d_head).permute(1, 2, 0)
            z = z.detach().reshape(z.shape[0], z.shape[1], n_heads, d_head)
            cb.head_outputs(layer, torch.einsum("bphk,hkd->bphd", z, w_o.to(z.dtype)))
        act = e["mid"].input
        new = cb.mlp_input(layer, act)
        if new is not act:
            e["mid"].input = new
        if cb.records_senders:
            cb.mlp_output(layer, e["mlp"].output)
    act = sites["final_norm"].input
    new = cb.logits_input(act)
    if logits_at is not None:
        new = new[torch.arange(new.shape[0]), logits_at.to(new.device)].unsqueeze(1)
    if new is not act:
        sites["final_norm"].input = new
    logits = sites["unembed"].output
    return logits[:, 0] if logits_at is not None else logits
