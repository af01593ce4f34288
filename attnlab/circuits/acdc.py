"""ACDC-style greedy edge pruning with exact ablations: the slow, gradient-free baseline for EAP.

Context:
    Automatic Circuit DisCovery (Conmy et al. 2023, arXiv 2304.14997, section 3, algorithm 1) starts from the full
    graph and visits receivers from the output backwards (a reverse topological order). For each edge into the
    current receiver it ablates the edge (the sender's contribution is replaced by its value on the corrupted
    input) and removes it for good if the metric changes by less than a threshold tau. Every test is an exact
    forward pass, so the result does not rest on a linear approximation; the price is one pass per edge.

This implementation:
    - metric: ``metric=`` (:mod:`attnlab.metrics`), averaged over prompts at END: the logit difference (answers
      column 0 minus column 1, in logits) by default, or ``"kl_div"``, KL(full model || circuit) on the clean prompts
      in nats, the metric Conmy et al. recommend (section 3), or the answer's probability, log-probability,
      accuracy, or a function of your own. For *every* metric an edge is removed when
      ``|M(C minus edge) - M(C)| < threshold``, the threshold in the metric's units. Conmy et al.'s algorithm 1
      removes an edge when the *signed* change of KL is below tau (an edge whose removal lowers the KL always goes);
      the absolute change keeps edges whose removal moves the metric a lot in either direction (e.g. negative name
      movers, whose removal raises the logit difference), and is the same rule for metrics that rise (KL) and fall
      (logit difference, probability) when the circuit breaks;
    - batching: all edges into one receiver are tested *in parallel* in batched forward passes, each against the
      circuit as it stands when that receiver is reached, and every edge under the threshold is then removed
      together. Algorithm 1 tests them one after another, each against the circuit with the previous removals; the
      parallel test differs only in the order-dependence inside one receiver, and makes many tests share one pass;
    - a node that no longer sends any edge cannot affect the output: the edges into it are removed without a test
      (as ACDC does when it prunes nodes unreachable from the output);
    - ``receivers=`` restricts the search to some receivers (the others keep all their edges) and ``max_tests=``
      bounds the number of edge tests, for models where a full run is too slow (70,651 edges for SmolLM2-135M).
"""

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.evaluate import _DEFAULT_BUDGET_MB, _circuit_metrics, _prepare
from attnlab.circuits.graph import AblationSource, CircuitError, GraphRunner
from attnlab.memory import check_budget_value
from attnlab.metrics import METRICS, MetricLike
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["ACDCResult", "acdc"]


@dataclass
class ACDCResult:
    """What :func:`acdc` returns.

    Attributes:
        circuit: the kept edges; each edge's score is the exact change of the mean metric (its units) when it
            alone was removed at its test (0.0 for edges never tested).
        kept: Bool[n_senders, n_receivers] the kept edges.
        effects: Float[n_senders, n_receivers] measured change per tested edge (NaN where untested).
        metric: mean metric of the final circuit; full_metric: of the full model.
        n_tests: edge tests run (forward-pass rows / prompts); n_passes: batched forward passes; seconds: wall time.
        complete: False when ``max_tests`` stopped the search early.
        trace: per processed receiver (name, edges tested, edges removed, circuit metric after).
        metric_info: which metric was used, as :meth:`attnlab.metrics.Metric.to_dict` (also in
            ``circuit.provenance["metric"]``).
    """

    circuit: Circuit
    kept: Tensor
    effects: Tensor
    metric: float
    full_metric: float
    n_tests: int
    n_passes: int
    seconds: float
    complete: bool
    trace: list = field(default_factory=list)
    metric_info: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())

    def plot(self, ax=None, **kw):
        """Draw the circuit metric as the edges are pruned with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_acdc`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_acdc

        return plot_acdc(self, ax, **kw)


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or threshold < 0:
        raise CircuitError(f"'threshold' must be a finite number >= 0 in the metric's units (got {threshold!r}); "
                           "Conmy et al. sweep values such as 0.01 to 1 for the logit difference and KL")
    return float(threshold)


def acdc(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    threshold: float | int,
    *,
    source: "str | AblationSource" = "corrupted",
    receivers: Sequence[str] | None = None,
    max_tests: int | None = None,
    variants_per_pass: int = 32,
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    progress: bool = True,
    metric: MetricLike = "logit_diff",
) -> ACDCResult:
    """Prune the model's graph edge by edge (see the module docstring).

    Args:
        model: the model (a backend with edge passes: TransformerLens, or nnsight locally) or a :class:`GraphRunner`.
        dataset: clean prompts; the corrupted prompts are the ablation source.
        threshold: tau, in the metric's units: remove an edge when removing it changes the mean metric by less (in
            absolute value; see the module docstring).
        source: ``"corrupted"`` (patching, ACDC's default), ``"mean"`` or an :class:`AblationSource`.
        receivers: receiver names to process (default all, from the output backwards).
        max_tests: stop after this many edge tests (the result is then marked incomplete).
        variants_per_pass: edge tests sharing one batched pass (at most; also bounded by ``memory_budget_mb``).
        batch_size, memory_budget_mb: see :func:`~attnlab.circuits.evaluate.circuit_metrics`.
        progress: show a progress bar over receivers (from the output backwards), with the edge tests and passes run
            so far and the edges still kept.
        metric: M: ``"logit_diff"`` (default, logits), ``"kl_div"`` (KL(full model || circuit) on the clean prompts,
            nats; Conmy et al.'s choice), ``"prob"``, ``"logprob"``, ``"accuracy"``, a
            :class:`~attnlab.metrics.Metric` or a callable ``fn(logits, answers, reference)``.

    Returns:
        An :class:`ACDCResult`.

    Raises:
        CircuitError: negative, NaN or non-numeric threshold; unknown receiver; bad ``max_tests``.
        CapabilityError: the backend has no edge passes (a remote nnsight model).
        MetricError: an unknown or broken metric (before any edge test).
    """
    from attnlab.progress import progress_bar

    threshold = _check_threshold(threshold)
    if max_tests is not None and (isinstance(max_tests, bool) or not isinstance(max_tests, int) or max_tests < 1):
        raise CircuitError(f"'max_tests' must be a positive integer or None (got {max_tests!r})")
    check_dataset(model, dataset, analysis="ACDC")
    memory_budget_mb = check_budget_value(memory_budget_mb)
    runner = model if isinstance(model, GraphRunner) else GraphRunner(model)
    g = runner.graph
    order = list(range(g.n_receivers - 1, -1, -1))
    if receivers is not None:
        wanted = {g.receiver_index(r) for r in receivers}
        order = [r for r in order if r in wanted]
    t0 = time.perf_counter()
    runner, metric, reference, src = _prepare(runner, dataset, metric, source, batch_size, memory_budget_mb)
    kept = g.valid.clone()
    effects = torch.full((g.n_senders, g.n_receivers), float("nan"))
    n_passes = 0

    def evaluate(masks: Tensor) -> Tensor:
        nonlocal n_passes
        out = []
        for i in range(0, masks.shape[0], variants_per_pass):
            out.append(_circuit_metrics(runner, dataset, masks[i:i + variants_per_pass], src, metric, reference,
                                        batch_size, memory_budget_mb, False).mean(1))
            n_passes += 1
        return torch.cat(out)

    full = float(evaluate(kept[None])[0])
    current = full
    n_tests, complete, trace = 0, True, []
    bar = progress_bar(total=len(order), desc="ACDC receivers", disable=not progress)
    try:
        for r in order:
            bar.update(1)
            node = g.receiver_node(r)
            senders_of_node = [node] if node in g._sender_index else g.heads_of_receiver(r)
            if node != "logits" and senders_of_node and not any(
                    kept[g.sender_index(s)].any() for s in senders_of_node):
                kept[:, r] = False  # the node no longer reaches the output
                continue
            cand = kept[:, r].nonzero().squeeze(1)
            if len(cand) == 0:
                continue
            if max_tests is not None and n_tests + len(cand) > max_tests:
                complete = False  # test what the budget allows (edges in sender order), then stop
                cand = cand[:max_tests - n_tests]
                if len(cand) == 0:
                    break
            masks = kept[None].repeat(len(cand), 1, 1)
            masks[torch.arange(len(cand)), cand, r] = False
            vals = evaluate(masks)
            n_tests += len(cand)
            change = vals - current
            effects[cand, r] = change
            remove = change.abs() < threshold
            if remove.any():
                kept[cand[remove], r] = False
                current = float(evaluate(kept[None])[0])
            trace.append((g.receivers[r], int(len(cand)), int(remove.sum()), current))
            bar.set_postfix_str(f"{n_tests:,} edge tests, {n_passes} passes, {int(kept.sum()):,} edges kept")
            if not complete:
                break
    finally:
        bar.close()
    kept_idx = kept.nonzero().tolist()
    edges = [(g.edge_name(s, r), 0.0 if math.isnan(float(effects[s, r])) else float(effects[s, r]))
             for s, r in kept_idx]
    edges.sort(key=lambda e: -abs(e[1]))
    circuit = Circuit(
        model=g.info.to_dict(), task=dataset.describe(), edges=edges,
        selection={"rule": "acdc", "threshold": threshold, "n_edges": len(edges)},
        provenance={"method": "acdc", "metric": metric.to_dict(), "source": src.kind, "n_tests": n_tests,
                    "n_passes": n_passes, "complete": complete, "receivers_processed": len(trace),
                    "full_metric": full, "circuit_metric": current, "seconds": time.perf_counter() - t0},
    )
    return ACDCResult(circuit, kept, effects, current, full, n_tests, n_passes, time.perf_counter() - t0,
                      complete, trace, metric.to_dict())
