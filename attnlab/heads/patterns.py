"""Attention patterns of every head, read through the backend: the one activation the pattern-based head analyses
(:mod:`attnlab.heads.scores`, :mod:`attnlab.heads.prefix`) share.

It lives below both so that neither imports the other (``prefix`` used to import ``scores``, which imports the
result type, which imports ``prefix``).
"""

from collections.abc import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.sites import Site, SiteKind

__all__ = ["attention_patterns"]


def attention_patterns(
    model: Backend,
    tokens: Int[Tensor, "batch pos"],
    layers: Iterable[int] | None = None,
) -> Float[Tensor, "batch layer head_index dest_pos src_pos"]:
    """Attention probabilities of every head of ``layers`` (default all), from one forward pass.

    Args:
        model: any backend (nnsight needs eager attention, which :func:`attnlab.load_model` loads).
        tokens: Int[batch, pos].
        layers: blocks to read (default every block).

    Returns:
        Float[batch, layer, head_index, dest_pos, src_pos]; rows sum to 1.

    Raises:
        SiteError: a layer out of range.
    """
    layers = list(range(model.info.n_layers)) if layers is None else [model.check_layer(x) for x in layers]
    sites = [Site(SiteKind.PATTERN, layer) for layer in layers]
    # logits at one position only: the unembedding of every position is not needed
    out = model.run(tokens, cache=sites, logits_at=torch.zeros(tokens.shape[0], dtype=torch.long))
    return torch.stack([out.cache[s] for s in sites], dim=1)
