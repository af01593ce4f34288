"""Metrics: what an analysis measures at the answer position, and how it is normalised.

Every analysis takes ``metric=``: a built-in name (``"logit_diff"``, the default; ``"kl_div"``, ``"prob"``,
``"logprob"``, ``"accuracy"``), a :class:`Metric`, or a callable of your own (see :class:`Metric` for its
signature). Built-in metrics are computed by :mod:`attnlab.metric_ops`, which the nnsight backend also runs inside
the trace, so a remote sweep downloads one number per patched row instead of its logits.

The logit difference logit(correct) - logit(distractor) at the final position is the metric recommended for
activation patching by Zhang & Nanda 2023 (arXiv 2309.16042, section 4): unlike probability it is roughly linear in
the residual stream and sees negative components. Normalised scores follow Heimersheim & Nanda 2024
(arXiv 2404.15255): for denoising (clean activations patched into the corrupted run, a sufficiency test)
``(patched - corrupted) / (clean - corrupted)``, 0 = no effect and 1 = clean behaviour fully restored; for noising
(corrupted activations into the clean run, a necessity test) ``(patched - clean) / (clean - corrupted)``,
0 = unharmed and -1 = destroyed. Backup and negative components can push scores outside [-1, 1].
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab import metric_ops
from attnlab.errors import MetricError

__all__ = ["DIRECTIONS", "METRICS", "Direction", "Metric", "MetricLike", "check_direction", "get_metric", "logit_diff",
           "normalise"]

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
    return metric_ops.evaluate("logit_diff", logits, answers, None)


def normalise(patched: Tensor | float, clean: float, corrupted: float, direction: Direction) -> Tensor:
    """Normalise a patched metric (any :class:`Metric`) against the clean and corrupted baselines.

    Args:
        patched: patched mean metric value(s), any shape.
        clean: mean metric of the clean run.
        corrupted: mean metric of the corrupted run.
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
            "normalised metric would divide by zero; use a corruption that changes the answer, or another metric"
        )
    patched = torch.as_tensor(patched)
    ref = corrupted if direction == "denoising" else clean
    return (patched - ref) / gap


@dataclass(frozen=True)
class Metric:
    """A per-prompt scalar read from the logits at the answer position (END).

    Use a built-in (:data:`METRICS`, or its name: ``metric="kl_div"``) or wrap your own function with
    :meth:`custom`. A custom function is called as ``fn(logits, answers, reference)`` with

    - ``logits``: Float[rows, d_vocab], the logits at END of every row of a (possibly batched) pass;
    - ``answers``: Int[rows, 2], each row's correct and distractor token ids (the dataset's ``answers``, repeated
      over the stacked variants of the pass);
    - ``reference``: Float[rows, d_vocab] log-probabilities of the clean run at END (repeated likewise) when the
      metric was declared with ``needs_reference=True``, else None;

    and must return Float[rows], finite. Analyses average it over prompts and normalise it against the clean and
    corrupted baselines (:func:`normalise`), whatever its units.

    Attributes:
        name: short name recorded in results (``"logit_diff"``, ``"kl_div"``, a custom function's name).
        label: axis label for views, units included (``"logit difference (logits)"``).
        description: one line for result metadata.
        fn: the custom function, or None for a built-in (computed by :func:`attnlab.metric_ops.evaluate`).
        needs_reference: whether the metric reads the clean run's distribution (KL divergence).
        differentiable: whether gradient-based analyses (attribution patching, EAP, EAP-IG) may use it.
    """

    name: str
    label: str
    description: str
    fn: Callable | None = field(default=None, compare=False)
    needs_reference: bool = False
    differentiable: bool = True

    @classmethod
    def custom(cls, fn: Callable, *, name: str | None = None, label: str | None = None,
               needs_reference: bool = False, differentiable: bool = True) -> "Metric":
        """Wrap ``fn(logits, answers, reference) -> Float[rows]`` (see the class docstring) as a metric.

        Raises:
            MetricError: ``fn`` is not callable or cannot take three positional arguments.
        """
        if not callable(fn):
            raise MetricError(f"a custom metric must be callable as fn(logits, answers, reference) (got {fn!r})")
        try:
            inspect.signature(fn).bind(None, None, None)
        except TypeError:
            raise MetricError(
                f"custom metric {getattr(fn, '__name__', fn)!r} must accept three positional arguments "
                "(logits [rows, d_vocab], answers [rows, 2], reference [rows, d_vocab] or None)") from None
        except ValueError:  # builtins without a signature: trust them
            pass
        name = name or getattr(fn, "__name__", "custom")
        return cls(name=name, label=label or name, description=f"custom metric {name}", fn=fn,
                   needs_reference=needs_reference, differentiable=differentiable)

    @property
    def builtin(self) -> bool:
        """Whether this is a built-in metric (computable where the model runs, e.g. on an NDIF server)."""
        return self.fn is None

    def reference(self, clean_logits: Float[Tensor, "batch d_vocab"]) -> Float[Tensor, "batch d_vocab"] | None:
        """The clean reference this metric reads (log-probabilities of the clean run at END), or None."""
        if not self.needs_reference:
            return None
        return torch.log_softmax(clean_logits.detach().float(), dim=-1)

    def __call__(self, logits: Float[Tensor, "rows d_vocab"], answers: Int[Tensor, "batch 2"],
                 reference: Float[Tensor, "batch d_vocab"] | None = None) -> Float[Tensor, " rows"]:
        """Per-row metric values; ``rows`` may be a multiple of ``batch`` (stacked variants).

        Raises:
            MetricError: the metric needs a clean reference and none was given; a custom metric returned the wrong
                shape, a non-float, or non-finite values, or failed (TypeError, AttributeError) without a reference,
                as one that reads the reference without declaring ``needs_reference=True`` does.
        """
        if self.needs_reference and reference is None:
            raise MetricError(f"metric {self.name!r} compares with the clean run's distribution, but no clean "
                              "reference was given: pass reference=metric.reference(clean_logits)")
        rows = logits.shape[0]
        if rows % answers.shape[0]:
            raise MetricError(f"{rows} rows of logits are not a whole number of {answers.shape[0]}-prompt batches")
        if self.fn is None:
            return metric_ops.evaluate(self.name, logits, answers, reference)
        ref = None if reference is None or not self.needs_reference else metric_ops.tile(reference, rows)
        try:
            values = self.fn(logits, metric_ops.tile(answers.to(logits.device), rows), ref)
        except (TypeError, AttributeError) as exc:
            if ref is not None:
                raise
            raise MetricError(  # most likely it read the reference it was not declared to need
                f"custom metric {self.name!r} failed with reference=None ({type(exc).__name__}: {exc}); a metric "
                "that reads the clean run's distribution must be declared with Metric.custom(fn, "
                "needs_reference=True)") from exc
        return self.check(values, rows)

    def baselines(self, clean_logits: Float[Tensor, "batch d_vocab"], corrupted_logits: Float[Tensor, "batch d_vocab"],
                  answers: Int[Tensor, "batch 2"]) -> tuple[Tensor | None, Tensor, Tensor]:
        """(reference, clean values Float[batch], corrupted values Float[batch]) from the two baseline runs' logits at
        END. Called before a sweep's patched passes, so a broken custom metric fails before any expensive work.

        Raises:
            MetricError: as :meth:`__call__`.
        """
        reference = self.reference(clean_logits)
        return (reference, self(clean_logits, answers, reference).detach(),
                self(corrupted_logits, answers, reference).detach())

    def check(self, values, rows: int) -> Tensor:
        """Return ``values`` if they are a finite Float[rows] tensor, else raise a :class:`MetricError`."""
        what = f"metric {self.name!r}"
        if not isinstance(values, Tensor):
            raise MetricError(f"{what} must return a torch tensor of shape ({rows},), one value per row "
                              f"(got {type(values).__name__})")
        if tuple(values.shape) != (rows,):
            raise MetricError(f"{what} must return shape ({rows},), one value per row of logits (got "
                              f"{tuple(values.shape)}); reduce over the vocabulary, not over prompts")
        if not values.is_floating_point():
            raise MetricError(f"{what} must return floats (got {values.dtype})")
        if not bool(torch.isfinite(values.detach()).all()):
            raise MetricError(f"{what} returned non-finite values (NaN or inf) on {rows} rows")
        return values

    def require_differentiable(self, analysis: str) -> "Metric":
        """Return self, or raise if ``analysis`` (a gradient method) cannot use this metric.

        Raises:
            MetricError: the metric is piecewise constant (accuracy) or declared non-differentiable.
        """
        if not self.differentiable:
            raise MetricError(f"{analysis} follows the gradient of the metric, and {self.name!r} has none (it is "
                              "piecewise constant); use 'logit_diff', 'logprob', 'prob' or 'kl_div', or exact "
                              "patching (run_sweep) for this metric")
        return self

    def check_gradient(self, values: Tensor, analysis: str) -> Tensor:
        """Raise if ``values`` (computed from logits that require grad) carry no gradient."""
        if not values.requires_grad:
            raise MetricError(f"{analysis} needs a gradient, but metric {self.name!r} returned values detached "
                              "from the logits; compute it with differentiable torch operations")
        return values

    def to_dict(self) -> dict:
        """JSON-serialisable description (results record it)."""
        return {"name": self.name, "label": self.label, "description": self.description,
                "needs_reference": self.needs_reference, "builtin": self.builtin}


#: the built-in metrics by name
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("logit_diff", "logit difference (logits)",
           "logit(correct) - logit(distractor) at END"),
    Metric("kl_div", "KL divergence from clean (nats)",
           "KL(clean || patched) of the next-token distribution at END", needs_reference=True),
    Metric("prob", "probability of the answer", "softmax probability of the correct answer at END"),
    Metric("logprob", "log-probability of the answer (nats)", "log-probability of the correct answer at END"),
    Metric("accuracy", "top-1 accuracy", "fraction of prompts whose top-1 token at END is the answer",
           differentiable=False),
    Metric("pairwise_accuracy", "pairwise accuracy", "fraction of prompts whose answer's logit beats the "
           "distractor's at END", differentiable=False),
)}

#: short names of the built-in metrics, for subtitles and reprs ("clean LD 3.36")
SHORT_NAMES = {"logit_diff": "LD", "kl_div": "KL", "prob": "p", "logprob": "log p", "accuracy": "acc",
               "pairwise_accuracy": "pair acc"}

_ALIASES = {"kl": "kl_div", "logit_difference": "logit_diff", "probability": "prob", "log_prob": "logprob",
            "acc": "accuracy"}

MetricLike = str | Metric | Callable


def get_metric(metric: "MetricLike") -> Metric:
    """Resolve ``metric=`` arguments: a built-in name, a :class:`Metric`, or a custom callable.

    Raises:
        MetricError: an unknown name or something that is not a metric.
    """
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        key = _ALIASES.get(metric, metric)
        if key not in METRICS:
            raise MetricError(f"unknown metric {metric!r}; built-in metrics: {sorted(METRICS)}, or pass a callable "
                              "fn(logits, answers, reference) / attnlab.metrics.Metric.custom(fn)")
        return METRICS[key]
    if callable(metric):
        return Metric.custom(metric)
    raise MetricError(f"'metric' must be a name in {sorted(METRICS)}, a Metric, or a callable (got {metric!r})")
