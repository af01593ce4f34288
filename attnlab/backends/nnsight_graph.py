"""Receiver-split edge passes on nnsight, local models (the :class:`~attnlab.backends.edges.EdgeRunner` of
:class:`~attnlab.backends.nnsight.NNsightBackend` with ``remote=False``).

How the split is done (the same receivers as :mod:`attnlab.backends.transformer_lens_graph`, at nnsight's sites):
    One ``model.trace(tokens)`` per pass. Locally the trace body runs in this process, interleaved with the forward
    pass, so it calls the Python :class:`~attnlab.backends.edges.EdgeCallbacks` directly, block by block in execution
    order. At each block's input (the residual stream entering it) the runner asks :meth:`EdgeCallbacks.resid_pre`
    and sets the block's input to the answer. For each of ``"q"``, ``"k"``, ``"v"`` it asks for the per-head inputs
    ``x_h`` and, when given, replaces the projection's output (``q_proj`` / ``k_proj`` / ``v_proj``: before the
    rotary embeddings, as nnsight's q/k/v sites are) by ``norm(x_h) W^h + b^h``, computed with the block's own
    pre-attention norm module (called through its envoy, outside the interleaving) and that head's rows of the
    projection's weight (and bias, if any). Head outputs ``z_h W_O^h`` (no output bias) come from the output
    projection's input, viewed per head. The MLP input is replaced at the post-attention norm's input (the residual
    branch keeps reading the uncorrected stream, as at TransformerLens's ``ln2.hook_in``), the MLP output read at the
    MLP's output, and the logits input replaced at the final norm's input, narrowed to ``logits_at`` there. With
    callbacks that change nothing this is the model's own forward pass.

    ``grad=True`` runs the trace with autograd on: the receiver inputs the callbacks create and the returned logits
    keep the graph (EAP, EAP-IG). Locally only: a remote server cannot call this process's callbacks, so a remote
    model has no :attr:`~attnlab.backends.base.Capability.EDGE_GRAPH`.

Supported attention: separate q/k/v/o linear projections with a pre-attention norm module (the Llama family:
Llama, Mistral, Qwen, SmolLM2). GPT-2's fused ``c_attn`` raises :class:`~attnlab.errors.CapabilityError` for
``Capability.EDGE_GRAPH`` when the runner is built.
"""

import functools

import nnsight
import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.backends.base import Capability
from attnlab.backends.edges import EdgeCallbacks, EdgeRunner
from attnlab.errors import CapabilityError

__all__ = ["NNsightEdgeRunner"]


def _path(obj, path: str):
    return functools.reduce(getattr, path.split("."), obj)


class NNsightEdgeRunner(EdgeRunner):
    """Runs receiver-split passes through a local nnsight model (see the module docstring).

    Args:
        backend: a local :class:`~attnlab.backends.nnsight.NNsightBackend`.

    Raises:
        CapabilityError: a remote model, fused q/k/v projections (GPT-2's ``c_attn``), or a block whose projections
            do not have the shapes the model's dimensions imply.
    """

    def __init__(self, backend) -> None:
        self.info = backend.info
        self.nn = backend.nn
        family = backend.family
        if backend.remote is not False:
            raise CapabilityError(Capability.EDGE_GRAPH, f"{self.info.name} runs remotely (or simulates it): edge "
                                  "passes call attnlab's callbacks inside the trace, which only a local model can",
                                  backend=self.info.backend)
        if family.qkv is not None or family.ln_attn is None:
            raise CapabilityError(
                Capability.EDGE_GRAPH,
                f"{self.info.name} ({self.info.family}) computes q, k and v with one fused projection "
                f"({family.qkv!r}); the nnsight backend's edge passes need separate q/k/v projections (Llama-family "
                "models). Load it with backend='transformer_lens' for edge-level analyses",
                backend=self.info.backend)
        self._envoys = backend._envoys
        self._final_norm, self._unembed = backend._final_norm, backend._unembed
        self._ln = [_path(e["block"], family.ln_attn) for e in self._envoys]
        hf_layers = _path(backend.nn._module, family.layers)
        self._weights = [self._layer_weights(_path(hf_layers[layer], family.attn), family, layer)
                         for layer in range(self.info.n_layers)]

    def _layer_weights(self, attn, family, layer: int) -> dict:
        """q/k/v weights as [head, d_head, d_model] and biases [head, d_head]; W_O as [head, d_head, d_model]."""
        H, G, dh, D = self.info.n_heads, self.info.n_kv_heads, self.info.d_head, self.info.d_model
        out = {}
        for kind, n in (("q", H), ("k", G), ("v", G)):
            lin = _path(attn, getattr(family, kind))
            self._check_shape(lin.weight, (n * dh, D), f"{kind} projection", layer)
            out[kind] = (lin.weight.reshape(n, dh, D), None if lin.bias is None else lin.bias.reshape(n, dh))
        o = _path(attn, family.o_proj).weight  # Linear: [d_model, head * d_head]
        self._check_shape(o, (D, H * dh), "output projection", layer)
        out["W_O"] = o.reshape(D, H, dh).permute(1, 2, 0)
        return out

    def _check_shape(self, weight: Tensor, shape: tuple, what: str, layer: int) -> None:
        if tuple(weight.shape) != shape:
            raise CapabilityError(Capability.EDGE_GRAPH, f"{self.info.name}: block {layer}'s {what} has weight shape "
                                  f"{tuple(weight.shape)}, expected {shape}; edge passes support separate q/k/v/o "
                                  "linear projections only", backend=self.info.backend)

    # -- the pass -------------------------------------------------------------------------------------------------
    def run(
        self,
        tokens: Int[Tensor, "rows pos"],
        callbacks: EdgeCallbacks,
        *,
        logits_at: Int[Tensor, " rows"] | None = None,
        grad: bool = False,
    ) -> Tensor:
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self.nn.trace(tokens.long()):
            for layer in range(self.info.n_layers):
                resid = self._block_input(callbacks, layer)
                for kind in ("q", "k", "v"):
                    self._head_input(callbacks, layer, kind, resid)
                self._head_outputs(callbacks, layer)
                self._mlp(callbacks, layer)
            self._logits_input(callbacks, logits_at)
            logits = nnsight.save(self._unembed.output)
        return logits[:, 0] if logits_at is not None else logits

    # -- one builder per receiver (and sender) kind, called inside the trace in execution order -------------------
    def _block_input(self, callbacks: EdgeCallbacks, layer: int) -> Tensor:
        """The residual stream entering the block, as the callbacks replace it (also the base of its q/k/v inputs)."""
        block = self._envoys[layer]["block"]
        act = block.input
        resid = callbacks.resid_pre(layer, act)
        if resid is not act:
            block.input = resid
        return resid

    def _head_input(self, callbacks: EdgeCallbacks, layer: int, kind: str, resid: Tensor) -> None:
        """q/k/v receivers: the projection's output becomes ``norm(x_h) W^h + b^h`` per head."""
        x = callbacks.head_input(layer, kind, resid)
        if x is None:
            return
        proj = self._envoys[layer][kind]
        act = proj.output
        w, b = self._weights[layer][kind]
        y = torch.einsum("bphd,hkd->bphk", self._ln[layer](x), w.to(x.dtype))
        if b is not None:
            y = y + b
        proj.output = y.flatten(2).to(act.dtype)

    def _head_outputs(self, callbacks: EdgeCallbacks, layer: int) -> None:
        """Head senders: each head's ``z_h W_O^h`` from the output projection's input."""
        if not callbacks.records_senders:
            return
        z = self._envoys[layer]["o"].input
        z = z.view(z.shape[0], z.shape[1], self.info.n_heads, self.info.d_head)
        callbacks.head_outputs(layer, torch.einsum("bphk,hkd->bphd", z.detach(), self._weights[layer]["W_O"]))

    def _mlp(self, callbacks: EdgeCallbacks, layer: int) -> None:
        """The MLP receiver (the post-attention norm's input) and sender (the MLP's output)."""
        e = self._envoys[layer]
        act = e["mid"].input
        new = callbacks.mlp_input(layer, act)
        if new is not act:
            e["mid"].input = new
        if callbacks.records_senders:
            callbacks.mlp_output(layer, e["mlp"].output)

    def _logits_input(self, callbacks: EdgeCallbacks, logits_at: Tensor | None) -> None:
        """The logits receiver: the final norm's input, narrowed to ``logits_at``."""
        act = self._final_norm.input
        new = callbacks.logits_input(act)
        if logits_at is not None:
            new = new[torch.arange(new.shape[0]), logits_at.to(new.device)].unsqueeze(1)
        if new is not act:
            self._final_norm.input = new
