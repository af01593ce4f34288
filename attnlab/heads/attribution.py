"""Direct logit attribution of each head to the copied token: the OV half of an induction head.

Context:
    An induction head does two things (Olsson et al. 2022, section "Definitions"; Elhage et al. 2021, "A
    Mathematical Framework for Transformer Circuits", section "Induction heads"): its QK circuit *attends* to the
    token after an earlier copy of the current token (measured by the induction score), and its OV circuit *copies*
    that token, raising its logit. The second half is measured here by direct logit attribution (DLA): the part of
    the copied token's logit that the head writes directly, through the residual stream and the final norm, without
    passing through later layers:

        dla[b, p, l, h] = norm(z[b, p, l, h] @ W_O[l, h]) @ W_U[:, token[b, p + 1]]

    where ``norm`` applies the final LayerNorm / RMSNorm with its scale *frozen* at the value of the actual run (and
    centres the vector for LayerNorm), so that the attributions of all components add up to the logit (minus bias
    terms). It is averaged over the positions whose next token an induction head can copy (the second repeat but its
    last token), in logits.

This needs the model's weights (``W_O``, ``W_U``, the final norm), which only the TransformerLens backend exposes.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import BackendError
from attnlab.tasks.induction import RepeatedTokens

__all__ = ["copying_scores"]


def _weights(model: Backend):
    bridge = getattr(model, "bridge", None)
    if bridge is None:
        raise BackendError(f"copying_scores needs the model's weights; backend {type(model).__name__} does not "
                           "expose them (use the transformer_lens backend)")
    norm = bridge.ln_final.original_component
    centred = hasattr(norm, "bias") and "RMS" not in type(norm).__name__
    return bridge, bridge.W_O.detach(), bridge.W_U.detach(), norm.weight.detach(), centred


def copying_scores(
    model: Backend, data: RepeatedTokens, *, batch_size: int = 16
) -> tuple[Float[Tensor, "layer head_index"], Float[Tensor, "batch layer head_index"]]:
    """Direct logit attribution of every head to the token an induction head would copy.

    Args:
        model: a TransformerLens backend.
        data: repeated sequences.
        batch_size: sequences per forward pass.

    Returns:
        ``(mean, per_sequence)``: Float[layer, head_index] and Float[batch, layer, head_index], in logits.

    Raises:
        BackendError: the backend does not expose weights.
    """
    bridge, w_o, w_u, w_norm, centred = _weights(model)
    n_layers = model.info.n_layers
    o, L = data.bos_offset, data.seq_len
    pos = torch.arange(o + L, o + 2 * L - 1)  # positions whose next token is in the second repeat (copyable)
    names = {f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)} | {"ln_final.hook_scale"}
    out = []
    for start in range(0, len(data), batch_size):
        tokens = data.tokens[start:start + batch_size]
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
        scale = cache["ln_final.hook_scale"][:, pos]  # [batch, p, 1]
        target = tokens[:, pos + 1]  # [batch, p]
        u = w_u[:, target].permute(1, 2, 0) * w_norm  # [batch, p, d_model]: unembedding of the copied token
        per_layer = []
        for layer in range(n_layers):
            z = cache[f"blocks.{layer}.attn.hook_z"][:, pos]  # [batch, p, head, d_head]
            head_out = torch.einsum("bphd,hdm->bphm", z, w_o[layer])
            if centred:
                head_out = head_out - head_out.mean(-1, keepdim=True)
            dla = torch.einsum("bphm,bpm->bph", head_out / scale[..., None], u)
            per_layer.append(dla.mean(1))  # [batch, head]
        out.append(torch.stack(per_layer, dim=1))
    per_sequence = torch.cat(out).float()
    return per_sequence.mean(0), per_sequence
