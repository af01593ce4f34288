"""Ablating attention heads: zero and mean ablation of head outputs ``z``, as backend interventions.

Context:
    Ablation asks what a model does *without* a component: replace the component's output with a value that carries
    no information about the input and measure the change of a metric (loss, logit difference). The value matters:

    - *zero ablation* sets the head's output ``z`` (its value-weighted sum, before the output projection ``W_O``)
      to 0. Simple, but 0 may be far from anything the head ever outputs, so downstream layers can see an
      off-distribution input (Wang et al. 2022, arXiv 2211.00593, section 3.1, discuss this).
    - *mean ablation* sets ``z`` to its mean over a reference batch, per position by default (Wang et al. 2022
      mean-ablate over the ABC distribution; Olsson et al. 2022 ablate heads to measure their effect on in-context
      loss). The head keeps its average contribution and loses only the information specific to each input.

    Ablating ``z`` removes exactly the head's term ``z_h W_O^h`` from the attention output (the output bias is not
    a per-head quantity and stays).

Everything here is expressed as :class:`~attnlab.backends.base.Intervention` objects on site kind ``z``, so it runs on
every backend and composes with other interventions (patching, further ablations). Several ablation variants can
share one forward pass: :func:`head_ablation_interventions` takes the batch rows each variant occupies.
"""

from collections.abc import Iterable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.backends.base import Backend, Intervention
from attnlab.errors import AblationError, SiteError
from attnlab.sites import Site, SiteKind, as_int, index_list

__all__ = ["ABLATION_METHODS", "AblationError", "check_heads", "head_ablation_interventions", "mean_head_outputs"]

#: the ablation methods :func:`head_ablation_interventions` knows
ABLATION_METHODS = ("zero", "mean")


def check_heads(model: Backend, heads: Iterable[Sequence[int]]) -> list[tuple[int, int]]:
    """Validate (layer, head) pairs against the model and return them as a list of int pairs.

    Raises:
        SiteError: a pair that is not two ints, or a layer or head out of range ("'layer' must be in [0, 30)
            (got 31)").
    """
    out = []
    for pair in heads:
        ints = [as_int(x) for x in pair] if hasattr(pair, "__len__") and len(pair) == 2 else None
        if ints is None or None in ints:
            raise SiteError(f"heads must be (layer, head) pairs of ints (got {pair!r})")
        layer, head = ints
        if not 0 <= layer < model.info.n_layers:
            raise SiteError(f"'layer' must be in [0, {model.info.n_layers}) (got {layer})")
        if not 0 <= head < model.info.n_heads:
            raise SiteError(f"'head' must be in [0, {model.info.n_heads}) (got {head})")
        out.append((layer, head))
    return out


def mean_head_outputs(
    model: Backend,
    reference: Int[Tensor, "batch pos"],
    layers: Iterable[int] | None = None,
    *,
    per_position: bool = True,
) -> dict[int, Tensor]:
    """Mean of every head's output ``z`` over a reference batch: the values mean ablation writes.

    Args:
        model: the model.
        reference: Int[batch, pos] reference tokens (the distribution to average over).
        layers: blocks to record (default all).
        per_position: average over the batch only, keeping one mean per position (Float[pos, head_index, d_head]);
            False averages over positions as well (Float[head_index, d_head]), which works for inputs of any length.

    Returns:
        ``{layer: mean z}`` with the shapes above.
    """
    layers = list(range(model.info.n_layers)) if layers is None else [model.check_layer(x) for x in layers]
    out = model.run(reference, cache=[Site(SiteKind.Z, layer) for layer in layers])
    means = {}
    for layer in layers:
        z = out.cache[Site(SiteKind.Z, layer)]  # [batch, pos, head_index, d_head]
        means[layer] = z.mean(0) if per_position else z.mean((0, 1))
    return means


def head_ablation_interventions(
    model: Backend,
    heads: Sequence[Sequence[int]],
    *,
    method: str = "zero",
    n_pos: int,
    rows: Int[Tensor, " n"] | None = None,
    batch: int | None = None,
    means: dict[int, Float[Tensor, "..."]] | None = None,
) -> list[Intervention]:
    """Interventions that ablate a set of heads together, in the given rows of a batch.

    Args:
        model: the model (for range checks).
        heads: (layer, head) pairs to ablate together.
        method: ``"zero"`` or ``"mean"``.
        n_pos: positions of the run's input.
        rows: Int[n] batch rows to ablate in (default: all ``batch`` rows).
        batch: the run's batch size, needed when ``rows`` is None.
        means: for ``method="mean"``, the output of :func:`mean_head_outputs` (per-position means must have
            ``n_pos`` positions).

    Returns:
        One :class:`~attnlab.backends.base.Intervention` of kind ``z`` per layer touched.

    Raises:
        AblationError: unknown method, or mean ablation without (matching) means.
        SiteError: a layer or head out of range.
    """
    if method not in ABLATION_METHODS:
        raise AblationError(f"'method' must be one of {ABLATION_METHODS} (got {method!r})")
    heads = check_heads(model, heads)
    if rows is None:
        if batch is None:
            raise AblationError("pass rows= or batch=")
        rows = torch.arange(batch)
    d_head = model.info.d_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    ivs = []
    for layer, hs in sorted(by_layer.items()):
        n = len(rows) * len(hs)
        r = rows.repeat_interleave(len(hs))
        h = torch.tensor(hs, dtype=torch.long).repeat(len(rows))
        if method == "zero":
            values = torch.zeros(n, n_pos, d_head)
        else:
            if means is None or layer not in means:
                raise AblationError(f"mean ablation of layer {layer} needs its mean z: "
                                    "pass means=mean_head_outputs(...)")
            m = means[layer]
            if m.ndim == 3:
                if m.shape[0] != n_pos:
                    raise AblationError(f"per-position means have {m.shape[0]} positions but the run has {n_pos}; "
                                        "use a reference batch of the same length or per_position=False")
                values = m[:, h].permute(1, 0, 2)  # [n, pos, d_head]
            else:
                values = m[h][:, None, :].expand(n, n_pos, d_head)
        ivs.append(Intervention(SiteKind.Z, layer, rows=r, heads=h, values=values.contiguous()))
    return ivs
