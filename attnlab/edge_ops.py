"""Edge-level analyses as plain torch: the correction algebra of receiver-split passes, and the programs of EAP,
EAP-IG and circuit evaluation, run where the model is.

This module imports nothing but torch, so the nnsight backend ships it by value with a request
(``nnsight.register``): a remote server runs a whole edge-level analysis (every corrupted, gradient and ablated pass,
the integrated gradients, the edge scores) as *one job*, and only the scores or the per-prompt metric values travel
back. Locally the TransformerLens and nnsight backends run the same functions, so there is one implementation of
each analysis wherever it runs (:meth:`attnlab.backends.edges.EdgeRunner.program`).

Programs receive ``run_pass(tokens, callbacks, logits_at, grad) -> logits``: one receiver-split forward pass of the
backend (:mod:`attnlab.backends.edges`) with an :class:`EdgeAblation` as its callbacks, returning Float[rows, d_vocab]
logits at ``logits_at`` (Int[rows]). Everything else a program receives is plain data: tensors, ints, a
:class:`Layout`, and the metric as a callable ``metric(logits, answers, reference) -> Float[rows]``.

Methods: edge ablation as in ACDC (Conmy et al. 2023, arXiv 2304.14997, section 2) and Wang et al. 2022
(arXiv 2211.00593, section 3.1: mean ablation per template); EAP (Syed, Rager & Conmy 2023, arXiv 2310.10348,
section 2) and EAP-IG (Hanna, Pezzelle & Belinkov 2024, arXiv 2403.17806, section 3); see
:mod:`attnlab.circuits.graph`, :mod:`attnlab.circuits.eap` and :mod:`attnlab.circuits.evaluate` for the science.
"""

import torch

__all__ = ["EdgeAblation", "Layout", "ablation_source", "eap", "evaluate_circuits", "group_means", "sender_outputs",
           "split_rows"]


def split_rows(n: int, size: int) -> list:
    """[(start, stop)] chunks of ``range(n)`` of at most ``size``."""
    size = max(1, int(size))
    return [(i, min(n, i + size)) for i in range(0, n, size)]


class Layout:
    """A graph's senders and receivers as plain data (built by :meth:`attnlab.circuits.graph.Graph.layout`).

    Attributes:
        n_senders, n_receivers, n_layers, d_model: sizes.
        groups: ``{(layer, kind): [receiver index, ...]}`` with kind in q/k/v/mlp (``(n_layers, "logits")`` last).
        order: the keys of ``groups`` in execution order.
        prefix: number of senders (a prefix of the sender list) feeding each receiver.
        head_senders: per layer, the sender index range [start, stop) of its heads.
        mlp_senders: per layer, the MLP's sender index (None without MLPs).
    """

    def __init__(self, *, n_senders: int, n_layers: int, d_model: int, groups: list, prefix: tuple,
                 head_senders: list, mlp_senders: list) -> None:
        self.n_senders, self.n_layers, self.d_model = int(n_senders), int(n_layers), int(d_model)
        self.order = [(layer, kind) for layer, kind, _ in groups]
        self.groups = {(layer, kind): list(r_idx) for layer, kind, r_idx in groups}
        self.prefix = tuple(int(p) for p in prefix)
        self.n_receivers = len(self.prefix)
        self.head_senders = [tuple(s) for s in head_senders]
        self.mlp_senders = list(mlp_senders)

    def valid(self) -> torch.Tensor:
        """Bool[n_senders, n_receivers]: True where (sender, receiver) is an edge."""
        return torch.arange(self.n_senders)[:, None] < torch.tensor(self.prefix)[None, :]


def _grad_copy(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` that is a separate autograd node (so its gradient is this receiver's alone)."""
    x = x.clone()
    return x if x.requires_grad else x.requires_grad_(True)


class EdgeAblation:
    """The correction algebra of one receiver-split pass: the callbacks a backend's edge runner calls
    (:class:`attnlab.backends.edges.EdgeCallbacks`).

    A receiver's input is the residual stream it would normally read minus, for every ablated edge ``s->r``,
    ``a_s(this run) - a_s(source)``. Sender outputs are written as they are computed into buffers laid out
    [n_senders, rows, pos, d_model], so that the correction of a group of receivers is one matrix product of a
    contiguous prefix of senders with the group's mask columns.

    Args:
        layout: the graph (:class:`Layout`).
        masks: Bool[n_var or 1, n_senders, n_receivers] edges to ablate, or None (nothing ablated).
        source: Float[n_senders, batch, pos, d_model] what ablated edges carry, per prompt (None without masks).
        n_var, batch, n_pos: the batch is ``n_var`` variants of ``batch`` prompts of ``n_pos`` tokens (variant v in
            rows [v*batch, (v+1)*batch)).
        record: keep every sender's output (:attr:`acts`).
        capture: give every receiver its own autograd copy of its input (:attr:`inputs`), for gradients.
        input_embed: Float[batch, pos, d_model] replaces the residual stream entering block 0 (EAP-IG), or None.

    Attributes:
        acts: Float[n_senders, rows, pos, d_model] sender outputs (with ``record``).
        inputs: ``{(layer, kind): receiver inputs}`` (with ``capture``): q Float[rows, pos, n_heads, d_model],
            k/v Float[rows, pos, n_kv_heads, d_model], mlp and logits Float[rows, pos, d_model].
    """

    def __init__(self, layout: Layout, masks, source, n_var: int, batch: int, n_pos: int, *, record: bool = False,
                 capture: bool = False, input_embed=None) -> None:
        self.layout, self.masks, self.source = layout, masks, source
        self.n_var, self.batch, self.n_pos = n_var, batch, n_pos
        self.rows = n_var * batch
        self.capture, self.input_embed = capture, input_embed
        self.records_senders = record or masks is not None
        shape = (layout.n_senders, self.rows, n_pos, layout.d_model)
        self.acts = torch.zeros(shape) if record else None
        self.deltas = torch.zeros(shape) if masks is not None else None
        self.inputs: dict = {}

    # -- sender buffers -----------------------------------------------------------------------------------------
    def _write(self, s0: int, s1: int, value: torch.Tensor) -> None:
        """Record senders [s0, s1) from value Float[rows, pos, s1 - s0, d_model]."""
        D = self.layout.d_model
        v = value.detach().float().permute(2, 0, 1, 3)  # [n, rows, pos, D]
        if self.acts is not None:
            self.acts[s0:s1] = v
        if self.deltas is not None:
            self.deltas[s0:s1] = (v.reshape(s1 - s0, self.n_var, self.batch, self.n_pos, D)
                                  - self.source[s0:s1, None]).reshape(s1 - s0, self.rows, self.n_pos, D)

    def _correction(self, r_idx: list):
        """Float[rows, pos, len(r_idx), d_model]: sum over ablated edges of the sender deltas, or None."""
        masks = self.masks
        if masks is None:
            return None
        n = self.layout.prefix[r_idx[0]]
        m = masks[:, :n, r_idx]  # [variants or 1, n, R]
        if not m.any():
            return None
        R, D = len(r_idx), self.layout.d_model
        d = self.deltas[:n]
        if masks.shape[0] == 1:
            out = (m[0].T.float() @ d.reshape(n, -1)).reshape(R, self.rows, self.n_pos, D)
        else:
            dv = d.reshape(n, self.n_var, self.batch * self.n_pos * D)
            out = torch.stack([m[v].T.float() @ dv[:, v] for v in range(self.n_var)], 1)
            out = out.reshape(R, self.rows, self.n_pos, D)
        return out.permute(1, 2, 0, 3)

    def _stream_receiver(self, key: tuple, act: torch.Tensor) -> torch.Tensor:
        """An MLP or logits receiver: its input with its own autograd copy and the ablated senders removed."""
        corr = self._correction(self.layout.groups[key])
        if self.capture:
            act = _grad_copy(act)
            self.inputs[key] = act
        if corr is not None:
            act = act - corr[:, :, 0].to(device=act.device, dtype=act.dtype)
        return act

    # -- the callbacks ------------------------------------------------------------------------------------------
    def resid_pre(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        if layer == 0:
            if self.input_embed is not None:
                resid = self.input_embed.to(device=resid.device, dtype=resid.dtype).repeat(self.n_var, 1, 1)
            if self.records_senders:
                self._write(0, 1, resid[:, :, None])
        return resid

    def head_input(self, layer: int, kind: str, resid: torch.Tensor):
        r_idx = self.layout.groups[(layer, kind)]
        corr = self._correction(r_idx)
        if corr is None and not self.capture:
            return None
        x = resid[:, :, None, :].expand(-1, -1, len(r_idx), -1)
        if self.capture:
            x = _grad_copy(x)
            self.inputs[(layer, kind)] = x
        if corr is not None:
            x = x - corr.to(device=x.device, dtype=x.dtype)
        return x

    def head_outputs(self, layer: int, outputs: torch.Tensor) -> None:
        self._write(*self.layout.head_senders[layer], outputs)

    def mlp_input(self, layer: int, act: torch.Tensor) -> torch.Tensor:
        return self._stream_receiver((layer, "mlp"), act)

    def mlp_output(self, layer: int, act: torch.Tensor) -> None:
        s = self.layout.mlp_senders[layer]
        self._write(s, s + 1, act[:, :, None])

    def logits_input(self, act: torch.Tensor) -> torch.Tensor:
        return self._stream_receiver((self.layout.n_layers, "logits"), act)


# -- programs ------------------------------------------------------------------------------------------------------
def sender_outputs(run_pass, layout: Layout, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Every sender's output on ``tokens`` (no ablation): Float[batch, pos, n_senders, d_model], in d_model space."""
    chunks = []
    for i0, i1 in split_rows(tokens.shape[0], batch_size):
        cb = EdgeAblation(layout, None, None, 1, i1 - i0, tokens.shape[1], record=True)
        run_pass(tokens[i0:i1], cb, torch.zeros(i1 - i0, dtype=torch.long), False)
        chunks.append(cb.acts.permute(1, 2, 0, 3))
    return torch.cat(chunks)


def group_means(acts: torch.Tensor, index: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Float[n_groups, pos, n_senders, d_model]: the mean of ``acts`` ([batch, pos, ...]) over each group's prompts."""
    return torch.stack([acts[index == g].mean(0) for g in range(n_groups)])


def ablation_source(run_pass, layout: Layout, corrupted: torch.Tensor, kind: str, index: torch.Tensor,
                    n_groups: int, batch_size: int) -> tuple:
    """(values Float[n_groups or batch, pos, n_senders, d_model], Int[batch] group of each prompt): what ablated
    edges carry. ``kind`` is ``"corrupted"`` (each prompt its own corrupted run) or ``"mean"`` (the mean over the
    corrupted prompts of each group: Wang et al. 2022, section 3.1)."""
    acts = sender_outputs(run_pass, layout, corrupted, batch_size)
    if kind == "mean":
        return group_means(acts, index, n_groups), index
    return acts, torch.arange(corrupted.shape[0])


def evaluate_circuits(run_pass, layout: Layout, *, clean, corrupted, end, answers, ablate, metric,
                      needs_reference: bool, batch_size: int, n_var: int, source_kind: str = "mean", index=None,
                      n_groups: int = 1, values=None, value_index=None, reference=None, check=None) -> torch.Tensor:
    """The per-prompt metric of circuits with every edge outside them ablated: Float[n_variants, batch].

    Args:
        run_pass: the backend's receiver-split pass (see the module docstring).
        layout: the graph.
        clean, corrupted: Int[batch, pos] prompts; end: Int[batch] the metric's position; answers: Int[batch, 2].
        ablate: Bool[n_variants, n_senders, n_receivers] the edges each variant ablates.
        metric: ``metric(logits, answers, reference) -> Float[rows]``; needs_reference: it reads the clean run's
            log-probabilities (KL divergence), computed here when ``reference`` is None.
        batch_size: prompts per pass; n_var: variants per pass.
        source_kind, index, n_groups: the ablation source computed here (:func:`ablation_source`) when ``values`` is
            None; values, value_index: a given source (Float[groups, pos, n_senders, d_model], Int[batch]).
        reference: Float[batch, d_vocab] a given clean reference.
        check: ``check(logits, answers, reference)``, called on the first clean batch before any ablated pass (a
            custom metric's checks), or None.
    """
    n, n_pos = clean.shape
    if check is not None or (needs_reference and reference is None):
        refs = []
        for i0, i1 in split_rows(n, batch_size) if needs_reference and reference is None else [(0, min(n, batch_size))]:
            cb = EdgeAblation(layout, None, None, 1, i1 - i0, n_pos)
            logits = run_pass(clean[i0:i1], cb, end[i0:i1], False)
            ref = torch.log_softmax(logits.detach().float(), dim=-1) if needs_reference else None
            if check is not None and i0 == 0:
                check(logits, answers[i0:i1], ref if reference is None else reference[i0:i1])
            refs.append(ref)
        if needs_reference and reference is None:
            reference = torch.cat(refs)
    if values is None:
        values, value_index = ablation_source(run_pass, layout, corrupted, source_kind, index, n_groups, batch_size)
    out = torch.empty(ablate.shape[0], n)
    for v0, v1 in split_rows(ablate.shape[0], n_var):
        for i0, i1 in split_rows(n, batch_size):
            masks, nv, b = ablate[v0:v1], v1 - v0, i1 - i0
            src = values[value_index[i0:i1]].permute(2, 0, 1, 3).contiguous() if masks.any() else None
            cb = EdgeAblation(layout, masks if masks.any() else None, src, nv, b, n_pos)
            logits = run_pass(clean[i0:i1].repeat(nv, 1), cb, end[i0:i1].repeat(nv), False)
            ref = None if reference is None else reference[i0:i1]
            out[v0:v1, i0:i1] = metric(logits, answers[i0:i1], ref).detach().float().reshape(nv, b)
    return out


def eap(run_pass, layout: Layout, *, clean, corrupted, end, answers, metric, needs_reference: bool, n_steps: int,
        batch_size: int, ablation: str = "corrupted", index=None, n_groups: int = 1, check=None) -> dict:
    """EAP (``n_steps=1``) or EAP-IG scores of every edge, summed over batches (formulas: :mod:`attnlab.circuits.eap`).

    Per batch: one corrupted pass records a_s(corrupted) (or, with ``ablation="mean"``, the per-group means over all
    corrupted prompts are used), then ``n_steps`` gradient passes on the clean prompts at alpha = k / n_steps
    (alpha = 1, the clean run, first: it also records a_s(clean) and the clean reference), each with the input
    embeddings ``e_corr + alpha (e_clean - e_corr)``; the gradients of the mean metric with respect to every
    receiver's input are averaged over the steps, and ``score(s->r) = sum_pos (a_s(ref) - a_s(clean)) . grad_r``.

    Args:
        run_pass, layout: see the module docstring.
        clean, corrupted: Int[batch, pos]; end: Int[batch]; answers: Int[batch, 2].
        metric: a differentiable ``metric(logits, answers, reference) -> Float[rows]``; needs_reference: it reads
            the clean log-probabilities (KL divergence).
        n_steps: integration steps (1 = EAP); batch_size: prompts per pass.
        ablation: ``"corrupted"`` or ``"mean"`` (with ``index`` Int[batch] and ``n_groups``).
        check: ``check(kind, tensor)`` called with ``("corrupted", logits)`` on the first corrupted batch and
            ``("clean", values)`` on each clean run's metric values, or None (a custom metric's checks).

    Returns:
        ``{"scores": Float[n_senders, n_receivers] (0 off the graph), "clean": Float[done], "corrupted":
        Float[done], "prompts_done": done}``: metric values per prompt. A KeyboardInterrupt during the gradient
        phase keeps the batches already scored: ``done < batch`` and the scores are the mean over those prompts
        (an interrupt before any batch is scored propagates).
    """
    n, n_pos = clean.shape
    scores = torch.zeros(layout.n_senders, layout.n_receivers)
    chunks = split_rows(n, batch_size)
    clean_vals, corrupt_vals, corrupt_logits, reference = [], [], {}, {}
    for i0, i1 in chunks:  # the corrupted runs: sender outputs a_s(corrupted) and the corrupted metric
        cb = EdgeAblation(layout, None, None, 1, i1 - i0, n_pos, record=True)
        logits = run_pass(corrupted[i0:i1], cb, end[i0:i1], False).detach()
        if check is not None and i0 == 0:
            check("corrupted", logits)
        if needs_reference:
            corrupt_logits[i0] = logits
        else:
            corrupt_vals.append(metric(logits, answers[i0:i1], None).detach().float())
        reference[i0] = cb.acts.permute(1, 2, 0, 3)
    if ablation == "mean":
        means = group_means(torch.cat([reference[i0] for i0, _ in chunks]), index, n_groups)
        reference = {i0: means[index[i0:i1]] for i0, i1 in chunks}
    try:  # a KeyboardInterrupt here (local runs) keeps the batches already scored
        for i0, i1 in chunks:
            batch_scores, values = _eap_batch(run_pass, layout, reference.pop(i0), clean[i0:i1], end[i0:i1],
                                              answers[i0:i1], metric, needs_reference, n_steps, n, check,
                                              corrupt_logits.pop(i0, None))
            scores += batch_scores
            clean_vals.append(values[0])  # a batch counts once its scores are in
            if needs_reference:
                corrupt_vals.append(values[1])
    except KeyboardInterrupt:
        if not clean_vals:
            raise
    done = sum(len(v) for v in clean_vals)
    if done < n:  # the scores are means over the prompts scored
        scores *= n / done
    return {"scores": scores * layout.valid(), "clean": torch.cat(clean_vals),
            "corrupted": torch.cat(corrupt_vals)[:done], "prompts_done": done}


def _eap_batch(run_pass, layout: Layout, a_ref, clean, end, answers, metric, needs_reference: bool, n_steps: int,
               n: int, check, corrupt_logits):
    """One batch of :func:`eap`'s gradient phase: (its scores Float[n_senders, n_receivers], [clean metric values,
    and with a reference metric the corrupted ones])."""
    n_rows, n_pos = clean.shape
    grads, a_clean, ref, values_out = {}, None, None, []
    for k in range(n_steps, 0, -1):  # alpha = 1 first: the clean run, which also records a_clean
        embed = None
        if k != n_steps:
            e_clean, e_corr = a_clean[:, :, 0], a_ref[:, :, 0]
            embed = e_corr + (k / n_steps) * (e_clean - e_corr)
        cb = EdgeAblation(layout, None, None, 1, n_rows, n_pos, record=k == n_steps, capture=True,
                          input_embed=embed)
        logits = run_pass(clean, cb, end, True)
        if k == n_steps:  # the clean run: the reference (KL) is this pass's own distribution
            a_clean = cb.acts.permute(1, 2, 0, 3)
            ref = torch.log_softmax(logits.detach().float(), dim=-1) if needs_reference else None
            values = metric(logits, answers, ref)
            if check is not None:
                check("clean", values)
            values_out.append(values.detach().float())
            if needs_reference:
                values_out.append(metric(corrupt_logits, answers, ref).detach().float())
        else:
            values = metric(logits, answers, ref)
        keys = list(cb.inputs)
        gs = torch.autograd.grad(values.sum() / n, [cb.inputs[key] for key in keys])
        for key, gr in zip(keys, gs):
            gr = gr.detach().float() / n_steps
            grads[key] = gr if key not in grads else grads[key] + gr
        del cb, logits, values
    delta = (a_ref - a_clean).permute(2, 0, 1, 3).reshape(layout.n_senders, -1)  # [S, b*pos*D]
    scores = torch.zeros(layout.n_senders, layout.n_receivers)
    for key in layout.order:
        r_idx, gr = layout.groups[key], grads.pop(key)
        if gr.ndim == 3:
            gr = gr[:, :, None]
        gr = gr.permute(2, 0, 1, 3).reshape(len(r_idx), -1)  # [R, b*pos*D]
        m = layout.prefix[r_idx[0]]
        scores[:m, r_idx] = delta[:m] @ gr.T
    return scores, values_out
