"""Patching metrics: logit difference and its normalisation.

The logit difference logit(correct) - logit(distractor) at the final position is the metric recommended for
activation patching by Zhang & Nanda 2023 (arXiv 2309.16042, section 4): unlike probability it is roughly linear in
the residual stream and sees negative components. Normalised scores follow Heimersheim & Nanda 2024
(arXiv 2404.15255): for denoising (clean activations patched into the corrupted run, a sufficiency test)
``(patched - corrupted) / (clean - corrupted)``, 0 = no effect and 1 = clean behaviour fully restored; for noising
(corrupted activations into the clean run, a necessity test) ``(patched - clean) / (clean - corrupted)``,
0 = unharmed and -1 = destroyed. Backup and negative components can push scores outside [-1, 1].
"""

from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.errors import MetricError

__all__ = ["DIRECTIONS", "Direction", "check_direction", "logit_diff", "normalise"]

Direction = Literal["denoising", "noising"]

#: the two patching directions
DIRECTIONS: tuple[str, str] = ("denoising", "noising")

#: baselines closer than this (in logits) cannot be normalised
MIN_BASELINE_GAP = 1e-6


def check_direction(direction: str) -> Direction:
    """Return ``direction`` if it is ``"denoising"`` or ``"noising"``.

    Raises:
        MetricError: any other value.
    """
    if direction not in ("denoising", "noising"):
        raise MetricError(f"'direction' must be 'denoising' or 'noising' (got {direction!r})")
    return direction  # type: ignore[return-value]


def logit_diff(
    logits: Float[Tensor, "batch d_vocab"], answers: Int[Tensor, "batch 2"]
) -> Float[Tensor, " batch"]:
    """Per-prompt logit difference logit(answers[:, 0]) - logit(answers[:, 1]), in logits (nats of odds).

    Args:
        logits: Float[batch, d_vocab] logits at the answer position (END).
        answers: Int[batch, 2] correct and distractor token ids.

    Returns:
        Float[batch] logit differences.
    """
    picked = logits.gather(-1, answers.to(logits.device))
    return picked[:, 0] - picked[:, 1]


def normalise(patched: Tensor | float, clean: float, corrupted: float, direction: Direction) -> Tensor:
    """Normalise a patched logit difference against the clean and corrupted baselines.

    Args:
        patched: patched mean logit difference(s), any shape.
        clean: mean logit difference of the clean run.
        corrupted: mean logit difference of the corrupted run.
        direction: ``"denoising"`` -> (patched - corrupted) / (clean - corrupted);
            ``"noising"`` -> (patched - clean) / (clean - corrupted).

    Returns:
        Tensor of the same shape as ``patched``: fraction of the clean-corrupted gap (dimensionless).

    Raises:
        MetricError: the baselines are equal (the corruption does not change the metric), or unknown direction.
    """
    check_direction(direction)
    gap = float(clean) - float(corrupted)
    if abs(gap) < MIN_BASELINE_GAP:
        raise MetricError(
            f"clean and corrupted baselines are equal (clean {clean:.6g}, corrupted {corrupted:.6g}): the "
            "normalised metric would divide by zero; use a corruption that changes the answer"
        )
    patched = torch.as_tensor(patched)
    ref = corrupted if direction == "denoising" else clean
    return (patched - ref) / gap
