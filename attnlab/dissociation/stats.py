"""Paired bootstrap intervals and multiple-comparison corrections for the dissociation workbench.

Every component of a sweep is measured on the same items, so its effects are *paired* with the clean run item by
item: a bootstrap resample draws items (with replacement) and recomputes each statistic from the same drawn items for
every component, which keeps the components' intervals comparable and lets differences between components (the
crossover interaction) get intervals of their own (Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
chapters 13-14: the percentile interval; chapter 16: bootstrap tests).

Corrections for testing every component at once: Holm 1979 ("A simple sequentially rejective multiple test
procedure") controls the family-wise error rate; Benjamini & Hochberg 1995 ("Controlling the false discovery rate")
the false discovery rate.
"""

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.errors import ArgumentError

__all__ = ["CORRECTIONS", "adjust_p", "bootstrap_ci", "bootstrap_indices", "bootstrap_p", "percentile_interval",
           "resample_weights"]

#: the multiple-comparison corrections :func:`adjust_p` knows
CORRECTIONS = ("holm", "bh")


def _check(n_resamples, level) -> None:
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 100:
        raise ArgumentError(f"'n_bootstrap' must be an int >= 100 for a percentile interval (got {n_resamples!r})")
    if not isinstance(level, float | int) or not 0.5 <= float(level) < 1:
        raise ArgumentError(f"'level' must be in [0.5, 1), e.g. 0.95 (got {level!r})")


def bootstrap_indices(n_items: int, n_resamples: int, seed: int) -> Int[Tensor, "B n"]:
    """Item indices of ``n_resamples`` bootstrap resamples of ``n_items`` items, drawn with replacement.

    Deterministic for a seed (a private ``torch.Generator``; the global RNG is untouched).

    Raises:
        ArgumentError: fewer than 2 items.
    """
    if n_items < 2:
        raise ArgumentError(f"a bootstrap interval needs at least 2 items (got {n_items})")
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, n_items, (n_resamples, n_items), generator=g)


def resample_weights(idx: Int[Tensor, "B n"], n_items: int) -> Float[Tensor, "B n"]:
    """How often each item is drawn in each resample: ``values @ weights.T / n`` gives the resampled means of many
    rows of values at once (one matrix product instead of a [rows, B, n] gather)."""
    w = torch.zeros(idx.shape[0], n_items, dtype=torch.float64)
    return w.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))


def percentile_interval(boot: Float[Tensor, "... B"], level: float = 0.95) -> tuple[Tensor, Tensor]:
    """The percentile interval (lower, upper) of bootstrap replicates along the last axis (NaN stays NaN)."""
    a = (1 - float(level)) / 2
    q = torch.tensor([a, 1 - a], dtype=torch.float64)
    out = torch.nanquantile(boot.double(), q, dim=-1)
    return out[0], out[1]


def bootstrap_ci(values: Float[Tensor, "... n"], *, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[Tensor, Tensor, Tensor]:
    """Percentile bootstrap interval of the mean over the last axis.

    The same resampled items are used for every leading index (paired): ``values[c]`` of every component ``c`` is
    resampled at the same items.

    Args:
        values: Float[..., n] one value per item (e.g. the drop of the metric when a component is ablated).
        n_resamples: bootstrap resamples (at least 100).
        seed: the resampling seed.
        level: the interval's coverage (0.95 for a 95% interval).

    Returns:
        (mean Float[...], lower Float[...], upper Float[...]), float64.

    Raises:
        ArgumentError: fewer than 2 items, fewer than 100 resamples, a level outside [0.5, 1).
    """
    _check(n_resamples, level)
    values = values.double()
    n = values.shape[-1]
    w = resample_weights(bootstrap_indices(n, n_resamples, seed), n)
    boot = values @ w.T / n  # [..., B]
    lo, hi = percentile_interval(boot, level)
    return values.mean(-1), lo, hi


def bootstrap_p(boot: Float[Tensor, "... B"], estimate: Float[Tensor, "..."] | None = None) -> Float[Tensor, "..."]:
    """Two-sided p-value of "the statistic is 0" from its bootstrap standard error (a bootstrap Wald test).

    ``z = estimate / sd(boot)``, ``p = 2 * (1 - Phi(|z|))`` (Efron & Tibshirani 1993, section 16.4; Davison & Hinkley
    1997, section 4.2.4). Unlike counting replicates on either side of 0, whose smallest p-value is 2 / (B + 1), this
    p-value can be small enough to survive a correction over hundreds of components with a thousand resamples.

    Args:
        boot: Float[..., B] bootstrap replicates of the statistic.
        estimate: Float[...] the statistic on the full sample (default: the mean of the replicates).

    Returns:
        Float[...] p-values, float64; NaN where a replicate is NaN; 1 where the statistic and its spread are 0.
    """
    boot = boot.double()
    est = boot.mean(-1) if estimate is None else torch.as_tensor(estimate, dtype=torch.float64)
    sd = boot.std(-1)
    z = torch.where(sd > 0, est.abs() / sd, torch.where(est == 0, torch.zeros_like(est), torch.full_like(est, math.inf)))
    p = torch.erfc(z / math.sqrt(2))
    return torch.where(torch.isnan(boot).any(-1) | torch.isnan(est), torch.full_like(p, float("nan")), p)


def adjust_p(p: Float[Tensor, " k"], method: str = "holm") -> Float[Tensor, " k"]:
    """Adjusted p-values for testing ``k`` hypotheses at once; NaN entries are left out of the count and stay NaN.

    Args:
        p: Float[k] raw p-values.
        method: ``"holm"`` (Holm 1979 step-down: family-wise error rate) or ``"bh"`` (Benjamini-Hochberg 1995
            step-up: false discovery rate).

    Returns:
        Float[k] adjusted p-values (reject where adjusted p < alpha), float64.

    Raises:
        ArgumentError: an unknown method.
    """
    if method not in CORRECTIONS:
        raise ArgumentError(f"'correction' must be one of {CORRECTIONS} (got {method!r})")
    p = torch.as_tensor(p, dtype=torch.float64)
    out = torch.full_like(p, float("nan"))
    ok = ~torch.isnan(p)
    q = p[ok]
    m = q.numel()
    if m == 0:
        return out
    order = torch.argsort(q)
    ranked = q[order]
    if method == "holm":
        adj = torch.cummax(ranked * (m - torch.arange(m, dtype=torch.float64)), dim=0).values
    else:
        scaled = ranked * m / torch.arange(1, m + 1, dtype=torch.float64)
        adj = torch.flip(torch.cummin(torch.flip(scaled, [0]), dim=0).values, [0])
    adj = torch.clamp(adj, max=1.0)
    res = torch.empty_like(q)
    res[order] = adj
    out[ok] = res
    return out
