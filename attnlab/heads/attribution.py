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

The weights (``W_O``, ``W_U``, the final norm) come from :meth:`Backend.weights()
<attnlab.backends.base.Backend.weights>` and the activations (every layer's ``z`` and the final residual stream,
whose norm scale is frozen) from one :meth:`Backend.run` per batch, so it runs on every backend that holds its
weights locally (TransformerLens; nnsight without ``remote``).
"""

import torch
from jaxtyping import Float
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.progress import Progress, step_progress
from attnlab.sites import Site, SiteKind
from attnlab.tasks.induction import RepeatedTokens

__all__ = ["copying_scores"]


def copying_scores(
    model: Backend, data: RepeatedTokens, *, batch_size: int = 16, progress: "bool | Progress" = False
) -> tuple[Float[Tensor, "layer head_index"], Float[Tensor, "batch layer head_index"]]:
    """Direct logit attribution of every head to the token an induction head would copy.

    Args:
        model: a backend that exposes its weights (:meth:`~attnlab.backends.base.Backend.weights`).
        data: repeated sequences.
        batch_size: sequences per forward pass.
        progress: a tqdm bar over the forward passes (True), none (False), or a shared
            :class:`~attnlab.progress.Progress` to tick.

    Returns:
        ``(mean, per_sequence)``: Float[layer, head_index] and Float[batch, layer, head_index], in logits.

    Raises:
        BackendError: the backend does not expose weights (a remote model), before any forward pass.
    """
    w = model.weights()
    n_layers = model.info.n_layers
    o, L = data.bos_offset, data.seq_len
    pos = torch.arange(o + L, o + 2 * L - 1)  # positions whose next token is in the second repeat (copyable)
    z_sites = [Site(SiteKind.Z, layer) for layer in range(n_layers)]
    final = Site(SiteKind.RESID_POST, n_layers - 1)  # what the final norm reads
    out = []
    starts = range(0, len(data), batch_size)
    tracker, owned = step_progress(progress, total=len(starts), desc="copying scores")
    try:
        for start in starts:
            out.append(_copying_batch(model, w, data.tokens[start:start + batch_size], z_sites, final, pos))
            tracker.update()
    finally:
        if owned:
            tracker.close()
    per_sequence = torch.cat(out).float().cpu()
    return per_sequence.mean(0), per_sequence


def _copying_batch(model: Backend, w, tokens: Tensor, z_sites: list[Site], final: Site,
                   pos: Tensor) -> Float[Tensor, "batch layer head_index"]:
    """The direct logit attribution of every head to the copied token, for one batch of sequences."""
    device = w.W_U.device
    run = model.run(tokens, cache=z_sites + [final], logits_at=torch.zeros(tokens.shape[0], dtype=torch.long))
    scale = w.scale(run.cache[final][:, pos].to(device))[:, :, None]  # [batch, p, 1, 1]: frozen per position
    target = tokens[:, pos + 1].to(device)  # [batch, p]
    u = w.W_U[:, target].permute(1, 2, 0)  # [batch, p, d_model]: unembedding of the copied token
    per_layer = []
    for layer, site in enumerate(z_sites):
        z = run.cache[site][:, pos].to(device).float()  # [batch, p, head, d_head]
        head_out = torch.einsum("bphd,hdm->bphm", z, w.W_O[layer])
        dla = torch.einsum("bphm,bpm->bph", w.apply(head_out, scale), u)
        per_layer.append(dla.mean(1))  # [batch, head]
    return torch.stack(per_layer, dim=1)
