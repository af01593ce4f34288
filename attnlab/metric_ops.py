"""The built-in metrics as plain torch functions: computed where the model runs.

This module imports nothing but torch, so the nnsight backend ships it by value with every request
(``nnsight.register``) and a remote server reduces each patched row to its metric value inside the trace: a sweep then
downloads O(rows) numbers instead of O(rows x d_vocab) logits. :class:`attnlab.metrics.Metric` calls the same
functions locally, so there is one implementation of each metric wherever it runs.

Every function takes

- ``logits``: Float[rows, d_vocab] at the metric's position (END), where ``rows`` is a multiple of ``batch``
  (patched variants of one batch are stacked: variant v occupies rows [v*batch, (v+1)*batch));
- ``answers``: Int[batch, 2] correct and distractor token ids;
- ``reference``: Float[batch, d_vocab] log-probabilities of the clean run at the same position, or None;

and returns Float[rows].
"""

import torch

__all__ = ["BUILTIN", "evaluate", "tile"]

#: names of the built-in metrics, and whether each needs the clean reference distribution
BUILTIN: dict[str, bool] = {"logit_diff": False, "prob": False, "logprob": False, "accuracy": False,
                            "pairwise_accuracy": False, "kl_div": True}

#: joins built-in names into one composite metric: ``"accuracy+logit_diff"`` evaluates to Float[rows, 2]
SEPARATOR = "+"


def parts(name: str) -> list[str]:
    """The built-in metric names of a (possibly composite) metric name."""
    return name.split(SEPARATOR)


def tile(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Repeat ``x`` ([batch, ...]) along axis 0 to ``rows`` rows (``rows`` a multiple of batch)."""
    reps = rows // x.shape[0]
    return x if reps == 1 else x.repeat(reps, *([1] * (x.ndim - 1)))


def evaluate(name: str, logits: torch.Tensor, answers: torch.Tensor, reference) -> torch.Tensor:
    """Float[rows] value of built-in metric ``name`` for each row of ``logits``.

    - ``logit_diff``: logit(answer) - logit(distractor), in logits (Zhang & Nanda 2023, arXiv 2309.16042, s. 4);
    - ``prob``: softmax probability of the answer;
    - ``logprob``: log-probability of the answer, in nats;
    - ``accuracy``: 1.0 where the answer is the top-1 token, else 0.0 (not differentiable);
    - ``pairwise_accuracy``: 1.0 where the answer's logit beats the distractor's, else 0.0 (not differentiable);
    - ``kl_div``: KL(clean || patched) = sum_v p_clean(v) (log p_clean(v) - log p_patched(v)), in nats, the metric
      of ACDC (Conmy et al. 2023, arXiv 2304.14997, section 3); 0 on the clean run itself.

    A composite name (``"accuracy+logit_diff"``) returns Float[rows, k], one column per part in order: several
    metrics of the same pass computed where the model runs.
    """
    if SEPARATOR in name:
        return torch.stack([evaluate(n, logits, answers, reference) for n in name.split(SEPARATOR)], dim=-1)
    rows = logits.shape[0]
    answers = tile(answers.to(logits.device), rows)
    if name == "logit_diff":
        picked = logits.gather(-1, answers)
        return picked[:, 0] - picked[:, 1]
    if name == "prob":
        return torch.softmax(logits.float(), dim=-1).gather(-1, answers[:, :1])[:, 0]
    if name == "logprob":
        return torch.log_softmax(logits.float(), dim=-1).gather(-1, answers[:, :1])[:, 0]
    if name == "accuracy":
        return (logits.argmax(dim=-1) == answers[:, 0]).to(logits.dtype)
    if name == "pairwise_accuracy":
        picked = logits.gather(-1, answers)
        return (picked[:, 0] > picked[:, 1]).to(logits.dtype)
    if name == "kl_div":
        ref = tile(reference.to(device=logits.device, dtype=torch.float32), rows)
        logp = torch.log_softmax(logits.float(), dim=-1)
        return (ref.exp() * (ref - logp)).sum(dim=-1)
    raise ValueError(f"unknown built-in metric {name!r}; built-in metrics: {sorted(BUILTIN)}")
