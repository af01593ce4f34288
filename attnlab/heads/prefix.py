"""Long- versus short-prefix induction heads: induction attention as a function of the matching prefix length.

Context:
    Kissane et al. 2024 ("Interpreting Attention Layer Outputs with Sparse Autoencoders", arXiv 2406.17759, section
    5) found with attention-output SAEs that GPT-2 small has two kinds of induction head: head 5.5 attends to the
    token after an earlier copy of the current token as soon as that one token matches (*short-prefix*), while head
    5.1 does so only when a longer stretch before the current token matches too (its induction score rises from
    under 0.3 to over 0.7 as the matching prefix grows: *long-prefix*).

    :func:`prefix_curves` measures this directly on :func:`~attnlab.tasks.induction.prefix_probe` sequences: for each
    prefix length ``n`` (number of tokens, ending at the current token, that repeat an earlier segment), the mean
    attention from the current token to the token after its earlier copy. :func:`classify_prefix` labels a head
    *long-prefix* when its attention with a single matching token is less than ``ratio`` (default half) of its
    attention with the longest prefix, *short-prefix* otherwise; heads whose largest value is below ``min_score``
    are not induction heads on this probe (``"none"``).
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError
from attnlab.heads.patterns import attention_patterns
from attnlab.progress import Progress, step_progress
from attnlab.results import _from_nested, _to_nested
from attnlab.tasks.induction import PrefixProbe

__all__ = ["PrefixCurves", "classify_prefix", "prefix_curves"]


@dataclass
class PrefixCurves:
    """Induction attention of every head as a function of the matching prefix length.

    Attributes:
        prefix_lengths: the lengths ``n`` probed (ascending).
        values: Float[n_lengths, layer, head_index] mean attention probability from the current token to the token
            after its earlier copy.
        per_sequence: Float[n_lengths, batch, layer, head_index].
    """

    prefix_lengths: list[int]
    values: Tensor
    per_sequence: Tensor

    def curve(self, layer: int, head: int) -> list[float]:
        """The curve of one head, one value per prefix length."""
        return [float(x) for x in self.values[:, layer, head]]

    def to_dict(self) -> dict:
        return {"prefix_lengths": self.prefix_lengths, "values": _to_nested(self.values),
                "per_sequence": _to_nested(self.per_sequence)}

    @classmethod
    def from_dict(cls, d: dict) -> "PrefixCurves":
        return cls(prefix_lengths=list(d["prefix_lengths"]), values=_from_nested(d["values"]),
                   per_sequence=_from_nested(d["per_sequence"]))

    def plot(self, ax=None, **kw):
        """Draw induction attention against prefix length, one line per head with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_prefix_curves`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: heads (default the top ``k``), k, width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_prefix_curves

        return plot_prefix_curves(self, ax, **kw)


def prefix_curves(model: Backend, probe: PrefixProbe, *, batch_size: int = 32,
                  progress: "bool | Progress" = True) -> PrefixCurves:
    """Attention from the current token to the induction target, for every head and prefix length.

    Args:
        model: any backend.
        probe: sequences from :func:`~attnlab.tasks.induction.prefix_probe`.
        batch_size: sequences per forward pass.
        progress: a tqdm bar over the forward passes (True), none (False), or a shared
            :class:`~attnlab.progress.Progress` to tick.

    Returns:
        A :class:`PrefixCurves`.
    """
    n_passes = sum(math.ceil(batch.shape[0] / batch_size) for batch in probe.tokens)
    tracker, owned = step_progress(progress, total=n_passes, desc="prefix curves")
    per = []
    try:
        for batch in probe.tokens:  # [batch, pos] for one prefix length
            parts = []
            for start in range(0, batch.shape[0], batch_size):
                pat = attention_patterns(model, batch[start:start + batch_size])  # [b, layer, head, dest, src]
                parts.append(pat[:, :, :, probe.dest, probe.target])
                tracker.update()
            per.append(torch.cat(parts))
    finally:
        if owned:
            tracker.close()
    per_sequence = torch.stack(per)  # [n_lengths, batch, layer, head]
    return PrefixCurves(prefix_lengths=list(probe.prefix_lengths), values=per_sequence.mean(1),
                        per_sequence=per_sequence)


def classify_prefix(
    curves: PrefixCurves,
    heads: Iterable[tuple[int, int]] | None = None,
    *,
    ratio: float = 0.5,
    min_score: float = 0.2,
) -> dict[tuple[int, int], str]:
    """Label heads ``"long-prefix"``, ``"short-prefix"`` or ``"none"`` from their prefix-length curves.

    Args:
        curves: the output of :func:`prefix_curves`.
        heads: (layer, head) pairs (default every head).
        ratio: long-prefix when ``value(shortest prefix) < ratio * max(value)``.
        min_score: ``"none"`` when ``max(value) < min_score`` (the head does no induction on this probe).

    Returns:
        ``{(layer, head): label}``.
    """
    if not 0 < ratio < 1:
        raise AttnlabError(f"'ratio' must be in (0, 1) (got {ratio})")
    _, n_layers, n_heads = curves.values.shape
    heads = [(a, b) for a in range(n_layers) for b in range(n_heads)] if heads is None else list(heads)
    out = {}
    for layer, head in heads:
        c = curves.values[:, layer, head]
        top = float(c.max())
        if top < min_score:
            out[(layer, head)] = "none"
        else:
            out[(layer, head)] = "long-prefix" if float(c[0]) < ratio * top else "short-prefix"
    return out
