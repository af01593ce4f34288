"""Receiver-split edge passes on TransformerLens 4 (the :class:`~attnlab.backends.edges.EdgeRunner` of
:class:`~attnlab.backends.transformer_lens.TransformerLensBackend`).

How the split is done:
    TransformerLens 4's own split inputs (``use_split_qkv_input``, ``hook_q_input``) exist only for some attention
    bridges (not the native bridge of attnlab's tiny models), so this runner does the split itself. At
    ``blocks.{l}.hook_resid_pre`` it keeps the residual stream; at ``attn.hook_q`` / ``hook_k`` / ``hook_v`` it
    recomputes each affected head's projection as ``norm(x_h) W^h + b^h`` from the per-head input ``x_h`` the
    callbacks give, with the block's own pre-attention norm module (``ln1``) and projection weights (read from the
    bridge's ``original_component`` linear layers). Head outputs ``z_h W_O^h`` are computed at ``attn.hook_z``. The
    MLP input is replaced at ``ln2.hook_in`` (the final pre-MLP norm's input, which only the MLP branch reads), the
    MLP output read at ``hook_mlp_out``, and the logits input replaced at ``ln_final.hook_in``, where the positions a
    metric reads are also selected (``logits_at``). With callbacks that change nothing this is the bridge's own
    forward pass.

Supported attention: separate q/k/v/o linear projections and a pre-attention norm module (Llama-style models and
TransformerLens-native tiny models); other layouts raise :class:`~attnlab.errors.CapabilityError` for
``Capability.EDGE_GRAPH`` when the runner is built.
"""

from collections.abc import Callable

import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.backends.base import Capability
from attnlab.backends.edges import EdgeCallbacks, EdgeRunner
from attnlab.errors import CapabilityError

__all__ = ["TransformerLensEdgeRunner"]

Hook = tuple[str, Callable]


class TransformerLensEdgeRunner(EdgeRunner):
    """Runs receiver-split passes through a ``TransformerBridge``.

    Args:
        backend: a :class:`~attnlab.backends.transformer_lens.TransformerLensBackend`.

    Raises:
        CapabilityError: a block's attention has no separate q/k/v/o projections or pre-attention norm.
    """

    def __init__(self, backend) -> None:
        self.bridge = backend.bridge
        self.info = backend.info
        self._weights = [self._layer_weights(layer) for layer in range(self.info.n_layers)]

    def _layer_weights(self, layer: int) -> dict:
        """q/k/v weights as [head, d_head, d_model] and biases [head, d_head], W_O [head, d_head, d_model], ln1."""
        block = self.bridge.blocks[layer]
        attn = block.attn
        H, G, dh, D = self.info.n_heads, self.info.n_kv_heads, self.info.d_head, self.info.d_model
        out = {}
        try:
            for name, n in (("q", H), ("k", G), ("v", G)):
                lin = getattr(attn, name).original_component
                w = lin.weight.reshape(n, dh, D)  # [head, d_head, d_model]
                b = None if lin.bias is None else lin.bias.reshape(n, dh)
                out[name] = (w, b)
            o = attn.o.original_component.weight  # [d_model, head*d_head]
            out["W_O"] = o.reshape(D, H, dh).permute(1, 2, 0)  # [head, d_head, d_model]
            out["ln1"] = block.ln1.original_component
        except (AttributeError, RuntimeError) as exc:
            raise CapabilityError(
                Capability.EDGE_GRAPH,
                f"{self.info.name}: block {layer}'s attention has no separate q/k/v/o linear projections and "
                f"pre-attention norm ({type(exc).__name__}: {exc}); edge-level analyses support such models "
                "(Llama-style and TransformerLens-native) only",
                backend=self.info.backend,
            ) from None
        return out

    # -- the pass -------------------------------------------------------------------------------------------------
    def run(
        self,
        tokens: Int[Tensor, "rows pos"],
        callbacks: EdgeCallbacks,
        *,
        logits_at: Int[Tensor, " rows"] | None = None,
        grad: bool = False,
    ) -> Tensor:
        hooks = self.hooks(callbacks, logits_at)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self.bridge.hooks(fwd_hooks=hooks):
            logits = self.bridge(tokens)
        return logits[:, 0] if logits_at is not None else logits

    def hooks(self, callbacks: EdgeCallbacks, logits_at: Tensor | None = None) -> list[Hook]:
        """Every forward hook of one pass, block by block in execution order."""
        resid: dict[int, Tensor] = {}  # residual stream entering each block, for its q/k/v inputs
        hooks: list[Hook] = []
        for layer in range(self.info.n_layers):
            hooks.append((f"blocks.{layer}.hook_resid_pre", self._resid_hook(callbacks, layer, resid)))
            for kind in ("q", "k", "v"):
                hooks.append((f"blocks.{layer}.attn.hook_{kind}", self._qkv_hook(callbacks, layer, kind, resid)))
            hooks.append((f"blocks.{layer}.attn.hook_z", self._z_hook(callbacks, layer)))
            if self.info.has_mlp:
                hooks.append((f"blocks.{layer}.ln2.hook_in", self._mlp_in_hook(callbacks, layer)))
                hooks.append((f"blocks.{layer}.hook_mlp_out", self._mlp_out_hook(callbacks, layer)))
        hooks.append(("ln_final.hook_in", self._logits_hook(callbacks, logits_at)))
        return hooks

    # -- one builder per receiver (and sender) kind ---------------------------------------------------------------
    @staticmethod
    def _resid_hook(callbacks: EdgeCallbacks, layer: int, resid: dict) -> Callable:
        def hook(act, hook=None):
            act = callbacks.resid_pre(layer, act)
            resid[layer] = act
            return act
        return hook

    def _qkv_hook(self, callbacks: EdgeCallbacks, layer: int, kind: str, resid: dict) -> Callable:
        """q/k/v receivers: ``norm(x_h) W^h + b^h`` per head from the callbacks' per-head input ``x_h``."""
        w, b = self._weights[layer][kind]
        ln = self._weights[layer]["ln1"]

        def hook(act, hook=None):
            x = callbacks.head_input(layer, kind, resid[layer])
            if x is None:
                return act
            y = torch.einsum("bphd,hkd->bphk", ln(x), w.to(x.dtype))
            if b is not None:
                y = y + b
            return y.to(act.dtype)
        return hook

    def _z_hook(self, callbacks: EdgeCallbacks, layer: int) -> Callable:
        """Head senders: each head's ``z_h W_O^h``."""
        W_O = self._weights[layer]["W_O"]

        def hook(act, hook=None):
            if callbacks.records_senders:
                callbacks.head_outputs(layer, torch.einsum("bphk,hkd->bphd", act.detach(), W_O))
            return act
        return hook

    @staticmethod
    def _mlp_in_hook(callbacks: EdgeCallbacks, layer: int) -> Callable:
        """MLP receivers: the input of the pre-MLP norm."""
        def hook(act, hook=None):
            return callbacks.mlp_input(layer, act)
        return hook

    @staticmethod
    def _mlp_out_hook(callbacks: EdgeCallbacks, layer: int) -> Callable:
        """MLP senders."""
        def hook(act, hook=None):
            if callbacks.records_senders:
                callbacks.mlp_output(layer, act)
            return act
        return hook

    @staticmethod
    def _logits_hook(callbacks: EdgeCallbacks, logits_at: Tensor | None) -> Callable:
        """The logits receiver: the final norm's input, narrowed to ``logits_at``."""
        def hook(act, hook=None):
            act = callbacks.logits_input(act)
            if logits_at is not None:
                act = act[torch.arange(act.shape[0]), logits_at.to(act.device)].unsqueeze(1)
            return act
        return hook
