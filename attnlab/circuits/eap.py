"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG): a score for every edge at once.

Context:
    Exact edge ablation needs one forward pass per edge (ACDC, :mod:`attnlab.circuits.acdc`): 70,651 passes for
    SmolLM2-135M. Edge attribution patching (Syed, Rager & Conmy 2023, arXiv 2310.10348, section 2) replaces each
    of them by a first-order Taylor estimate. Ablating edge ``s->r`` changes receiver ``r``'s input by
    ``a_s(corrupted) - a_s(clean)``, so the metric M changes by about

        score(s->r) = (a_s(corrupted) - a_s(clean)) . dM/d(input_r)      (gradient on the clean run)

    summed over positions, where M is the metric (``metric=``; :mod:`attnlab.metrics`): the logit difference by
    default, or KL divergence from the clean run, the answer's probability or log-probability, or a differentiable
    function of your own. One clean forward + backward pass gives dM/d(input_r) for every receiver, one corrupted
    forward pass gives every sender's output: 2 forward + 1 backward passes score every edge.

Sign convention:
    ``score`` estimates M(clean run with edge s->r corrupted) - M(clean run), M averaged over prompts, in the
    metric's units (logits for the default logit difference, answers column 0 minus column 1 at END). With the
    logit difference a negative score means corrupting the edge lowers it: the edge carries the clean answer; with
    KL divergence from the clean run a positive score means corrupting the edge moves the output away from the
    clean distribution. Circuits are built from ``|score|``, whatever the metric.

EAP-IG (Hanna, Pezzelle & Belinkov 2024, arXiv 2403.17806, section 3):
    The gradient at the clean input is a poor estimate when the metric is far from linear between the clean and
    corrupted runs (saturated attention, large changes). EAP-IG averages it along the straight path from the
    corrupted to the clean input embeddings: with ``e(alpha) = e_corrupted + alpha (e_clean - e_corrupted)``,

        score(s->r) = (a_s(corrupted) - a_s(clean)) . (1/steps) sum_{k=1..steps} dM/d(input_r) at e(k/steps)

    (a right Riemann sum of the integrated gradient). With ``steps=1`` the only point is alpha = 1, the clean run:
    EAP-IG with one step *is* EAP, exactly, for every metric. Cost: ``steps`` forward + backward passes and one
    corrupted forward pass per batch of prompts.

Metrics and the clean reference:
    KL divergence (``metric="kl_div"``, the metric of ACDC, Conmy et al. 2023, arXiv 2304.14997, section 3) compares
    each run's next-token distribution at END with the clean run's. On the clean run itself it is 0, its minimum,
    so its gradient there vanishes: EAP with KL scores every edge ~0 (Syed et al.'s gradient at the clean input has
    nothing to say). EAP-IG's gradients along the path from the corrupted input are taken away from the minimum
    and are not 0, which is why EAP-IG (Hanna et al. 2024, section 3) is the method to use with KL. The reference is
    each batch's clean run at alpha = 1, the same pass the gradient is taken on. Accuracy has no gradient and is
    refused before any pass.

Where it runs: the whole analysis is one program (:func:`attnlab.edge_ops.eap`) that the backend runs where the
model is (``Capability.EDGE_PROGRAMS``): here on the TransformerLens backend and the local nnsight backend (equal
within 1e-4, tests), and on a remote nnsight model as *one job*, in which the server makes the corrupted and gradient
passes, takes the gradients and reduces them to the ``[n_senders, n_receivers]`` scores, the only large thing that
travels back. Remote runs take built-in metrics. See :class:`~attnlab.circuits.graph.GraphRunner` for how each
receiver's input is split.
"""

import time
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from attnlab.backends.base import Backend, Capability, check_model
from attnlab.circuits.graph import (
    CircuitError,
    Graph,
    GraphRunner,
    check_budget,
    estimate_memory_mb,
    split_rows,
    template_groups,
)
from attnlab import interrupts
from attnlab.memory import DEFAULT_BUDGET_MB, check_budget_value
from attnlab.metrics import METRICS, MetricLike, get_metric
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["EdgeScores", "eap_scores"]

_METHODS = ("eap", "eap-ig")


@dataclass
class EdgeScores:
    """Attribution scores of every edge of a graph.

    Attributes:
        graph: the :class:`~attnlab.circuits.graph.Graph` scored.
        scores: Float[n_senders, n_receivers] estimated change of the mean metric (its units: logits for the
            logit difference) when the edge is corrupted; 0 where there is no edge (see :attr:`Graph.valid`).
        method: ``"eap"`` or ``"eap-ig"``; steps: integration steps (1 for EAP).
        clean_metric, corrupted_metric: mean metric of the clean and corrupted runs.
        task: the dataset's ``describe()``; seconds: wall time of the scoring.
        metric: the metric that produced the scores, as :meth:`attnlab.metrics.Metric.to_dict` (``name``,
            ``label``, ``description`` ...).
        complete: False when a KeyboardInterrupt stopped the scoring: the scores are then the mean over the prompts
            scored (``task["prompts_scored"]``), whole batches only.
    """

    graph: Graph
    scores: Float[Tensor, "n_senders n_receivers"]
    method: str
    steps: int
    clean_metric: float
    corrupted_metric: float
    task: dict = field(default_factory=dict)
    seconds: float = 0.0
    metric: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())
    complete: bool = True

    def edge_scores(self) -> list[tuple[str, float]]:
        """Every edge with its score, sorted by decreasing |score| (ties keep graph order)."""
        valid = self.graph.valid
        s_idx, r_idx = valid.nonzero(as_tuple=True)
        vals = self.scores[s_idx, r_idx]
        order = torch.argsort(vals.abs(), descending=True, stable=True)
        return [(self.graph.edge_name(int(s_idx[i]), int(r_idx[i])), float(vals[i])) for i in order]

    def score(self, edge: str) -> float:
        """The score of one edge ``"sender->receiver"``."""
        return float(self.scores[self.graph.edge_index(edge)])

    def plot(self, ax=None, **kw):
        """Draw every edge's score as a sender x receiver heatmap with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_edge_scores`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_edge_scores

        return plot_edge_scores(self, ax, **kw)


def _check_gradients(model: Backend) -> None:
    check_model(model, "edge attribution patching")
    model.require(Capability.EDGE_PROGRAMS, "edge attribution patching (receiver-split passes and gradients where "
                  "the model runs; the gradient-free exact baseline is attnlab.circuits.acdc on a small graph)")


def eap_scores(
    model: Backend,
    dataset: PatchingDataset,
    *,
    method: str = "eap",
    steps: int = 5,
    batch_size: int = 8,
    ablation: str = "corrupted",
    memory_budget_mb: float | int | None = DEFAULT_BUDGET_MB,
    graph: Graph | None = None,
    progress: bool = True,
    metric: MetricLike = "logit_diff",
) -> EdgeScores:
    """Score every edge of the model's graph by EAP or EAP-IG (see the module docstring for the formulas).

    Args:
        model: a model whose backend runs edge-level programs (TransformerLens; nnsight, locally or remotely: one
            job).
        dataset: clean/corrupted pairs (the metric is read at END).
        method: ``"eap"`` (Syed et al. 2023) or ``"eap-ig"`` (Hanna et al. 2024).
        steps: EAP-IG integration steps (>= 1; ignored by EAP). ``steps=1`` gives EAP's scores.
        batch_size: prompts per pass (bounds memory; scores are summed over batches, so they do not depend on it).
        ablation: what an ablated edge carries, i.e. which ``a_s(corrupted)`` the score uses: ``"corrupted"`` (the
            corrupted prompt's own run, as in Syed et al. and Hanna et al.) or ``"mean"`` (the mean over the
            corrupted prompts per position and template, the ablation :func:`~attnlab.circuits.evaluate.faithfulness`
            applies by default; EAP-IG then integrates from the mean input embeddings).
        memory_budget_mb: refuse to start when one pass is estimated to need more (MiB); None = no check. Local
            runs only: a remote server has memory of its own.
        graph: the graph to score (default the model's full graph).
        progress: show a progress bar over passes.
        metric: M: ``"logit_diff"`` (default; logits), ``"kl_div"`` (KL(clean || run) at END, nats; use EAP-IG, see
            the module docstring), ``"prob"``, ``"logprob"``, a :class:`~attnlab.metrics.Metric` or a differentiable
            callable ``fn(logits, answers, reference)``.

    Returns:
        :class:`EdgeScores` with Float[n_senders, n_receivers] scores in the metric's units.

    Raises:
        CapabilityError: the backend lacks ``Capability.EDGE_PROGRAMS`` (or a fused q/k/v layout on nnsight).
        CircuitError: unknown method or ablation, ``steps`` < 1, ``batch_size`` < 1.
        MetricError: the metric is not differentiable (accuracy; before any pass), or a custom metric returns the
            wrong shape, non-finite or detached values (on the first batch's baseline runs, before any backward
            pass).
        MemoryBudgetError: the estimated memory of one pass exceeds ``memory_budget_mb`` (the message gives the
            estimate and a batch size that fits).
    """
    from attnlab.progress import progress_bar

    _check_gradients(model)
    if method not in _METHODS:
        raise CircuitError(f"'method' must be one of {_METHODS} (got {method!r})")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CircuitError(f"'steps' must be an integer >= 1 (got {steps!r})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CircuitError(f"'batch_size' must be an integer >= 1 (got {batch_size!r})")
    if ablation not in ("corrupted", "mean"):
        raise CircuitError(f"'ablation' must be 'corrupted' or 'mean' (got {ablation!r})")
    analysis = method.upper()
    interrupts.raise_pending(analysis)
    check_dataset(model, dataset, analysis=analysis)
    memory_budget_mb = check_budget_value(memory_budget_mb, allow_none=True)
    metric = get_metric(metric).require_differentiable(analysis)
    n_steps = 1 if method == "eap" else steps
    n, n_pos = len(dataset), dataset.n_pos
    batch_size = min(batch_size, n)
    runner = GraphRunner(model, graph, need=Capability.EDGE_PROGRAMS)
    if runner.local:  # a remote server has memory of its own
        _check_budget(model, method, n, n_pos, batch_size, runner.graph, metric, memory_budget_mb)
    g = runner.graph
    t0 = time.perf_counter()
    chunks = split_rows(n, batch_size)
    index, keys = template_groups(dataset)
    check = None
    if not metric.builtin:  # a custom metric is checked on the first batch, before any backward pass
        def check(kind: str, value: Tensor) -> None:
            if kind == "corrupted":
                _check_metric(metric, runner, dataset, chunks[0][1], value)
            else:
                metric.check_gradient(value, analysis)
    bar = progress_bar(total=len(chunks) * (n_steps + 1), desc=method.upper(), disable=not progress or not runner.local)
    try:  # every pass where the model is: here, or one job on a remote server
        out = runner.program(
            "eap", clean=dataset.clean_tokens, corrupted=dataset.corrupted_tokens, end=dataset.end,
            answers=dataset.answers, metric=metric, needs_reference=metric.needs_reference, n_steps=n_steps,
            batch_size=batch_size, ablation=ablation, index=index, n_groups=len(keys), check=check, progress=bar)
    finally:
        bar.close()
    scores, clean_vals, corrupt_vals = out["scores"], out["clean"], out["corrupted"]
    done = int(out.get("prompts_done", n))
    if done < n:
        interrupts.note_interrupt(method.upper(), done, n, unit="prompts")
    return EdgeScores(
        graph=g, scores=scores, method=method, steps=n_steps,
        clean_metric=float(clean_vals.mean()), corrupted_metric=float(corrupt_vals.mean()),
        task={**dataset.describe(), "ablation": ablation, "prompts_scored": done}, seconds=time.perf_counter() - t0,
        metric=metric.to_dict(), complete=done == n,
    )


def _check_budget(model: Backend, method: str, n: int, n_pos: int, batch_size: int, graph: Graph, metric,
                  memory_budget_mb) -> None:
    """Refuse an EAP run whose passes are estimated to need more than ``memory_budget_mb`` (MiB)."""
    # one gradient pass, plus every prompt's corrupted sender outputs (kept from the first phase to the second)
    kept_mb = 4 * n * n_pos * graph.n_senders * model.info.d_model / 2**20
    if metric.needs_reference:  # the corrupted logits at END wait for their clean reference
        kept_mb += 4 * n * model.info.d_vocab / 2**20
    need = estimate_memory_mb(model.info, batch_size, n_pos, mode="gradient") + kept_mb
    per_prompt = estimate_memory_mb(model.info, 1, n_pos, mode="gradient")
    fits = int((memory_budget_mb - kept_mb) // per_prompt) if memory_budget_mb else batch_size
    check_budget(f"{method} on {model.info.name} ({batch_size} prompts x {n_pos} tokens per pass)", need,
                 memory_budget_mb,
                 f"pass batch_size={max(fits, 1)} (fits the budget) or a larger memory_budget_mb="
                 if fits >= 1 else "a single prompt does not fit: raise memory_budget_mb= or use a smaller graph")


def _check_metric(metric, runner: GraphRunner, dataset: PatchingDataset, i1: int, corrupted_logits: Tensor) -> None:
    """Evaluate ``metric`` on the first batch's baseline logits, so that a broken custom metric fails after one
    (two, with a clean reference) forward passes, before any backward pass.

    A built-in metric needs no check. A custom one is evaluated on the corrupted run's logits; when it reads the
    clean reference, the first batch's clean run is made once more without gradients to build it.

    Raises:
        MetricError: wrong shape, non-finite values, or no clean reference where one is needed.
    """
    if metric.builtin:
        return
    answers = dataset.answers[:i1]
    if metric.needs_reference:
        clean_logits = runner.run(dataset.clean_tokens[:i1], logits_at=dataset.end[:i1]).logits
        metric.baselines(clean_logits, corrupted_logits.detach(), answers)
    else:
        metric(corrupted_logits.detach(), answers)
