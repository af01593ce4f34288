"""Exact evaluation of circuits: faithfulness, faithfulness curves, completeness and minimality.

Context:
    A circuit C is evaluated by running the model with every edge *outside* C ablated (each such edge carries its
    sender's mean output over the corrupted distribution, per position and per template: Wang et al. 2022,
    arXiv 2211.00593, section 3.1 and appendix; or the corrupted run itself). The metric M (``metric=``,
    :mod:`attnlab.metrics`) is read at END: the logit difference (answers column 0 minus column 1, in logits) by
    default, or the KL divergence from the full model's distribution on the clean prompts (the reference: what
    Conmy et al. 2023, arXiv 2304.14997, section 3, and Hanna et al. 2024 use), the answer's probability,
    log-probability, top-1 accuracy, or a function of your own. Three runs anchor it: M_full (no edge ablated: the
    model), M_ablated (every edge ablated: the empty circuit) and M_circuit. Then

        faithfulness = (M_circuit - M_ablated) / (M_full - M_ablated)

    (1 = the circuit alone recovers the model's metric, 0 = no better than nothing; Wang et al. section 4 report
    87% for GPT-2 small's IOI circuit, as F(C)/F(M) with F the logit difference; Hanna et al. 2024,
    arXiv 2403.17806, section 4 use the normalised form above). With KL, M_full = 0 and faithfulness is
    1 - KL(circuit) / KL(ablated): the fraction of the ablated model's divergence from the model that the circuit
    removes.

Completeness and minimality (Wang et al. 2022, section 4, kept simple):
    - *completeness*: for a set K of circuit nodes, knocking K out should hurt the circuit as much as it hurts the
      full model: compare M(C \\ K) with M(full model \\ K). Large ``|M(C\\K) - M(M\\K)|`` (incompleteness) means the
      model has components outside C that compensate for or interact with K. "Knocking out" a node ablates every
      edge it sends.
    - *minimality*: for each node v of C, the drop M(C) - M(C \\ v). A node whose removal changes the metric by less
      than ``tol`` times the full-ablated gap ``|M_full - M_ablated|`` is flagged as negligible.

Every evaluation here is a batch of circuits sharing forward passes (each variant occupies its own rows, with its
own edge mask: :meth:`~attnlab.circuits.graph.GraphRunner.run`), and returns per-prompt values so that error bars
can be drawn.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from attnlab.backends.base import Backend, Capability
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.graph import (
    AblationSource,
    CircuitError,
    Graph,
    GraphRunner,
    check_budget,
    corrupted_source,
    estimate_memory_mb,
    mean_source,
    split_rows,
    template_groups,
)
from attnlab.memory import DEFAULT_BUDGET_MB, check_budget_value
from attnlab.metrics import METRICS, MIN_BASELINE_GAP, Metric, MetricLike, get_metric
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = [
    "CompletenessResult",
    "FaithfulnessCurve",
    "FaithfulnessResult",
    "MinimalityResult",
    "circuit_metrics",
    "clean_reference",
    "completeness",
    "faithfulness",
    "faithfulness_curve",
    "minimality",
    "resolve_source",
]

_DEFAULT_BUDGET_MB = DEFAULT_BUDGET_MB  # the one default (attnlab.memory)


def resolve_source(runner: GraphRunner, dataset: PatchingDataset, source) -> AblationSource:
    """``"mean"`` (per-template mean over the corrupted prompts), ``"corrupted"`` or an :class:`AblationSource`.

    Raises:
        CircuitError: anything else.
    """
    if isinstance(source, AblationSource):
        return source  # checked against the dataset where it is used (_circuit_metrics)
    if source == "mean":
        return mean_source(runner, dataset)
    if source == "corrupted":
        return corrupted_source(runner, dataset)
    raise CircuitError(f"'source' must be 'mean', 'corrupted' or an AblationSource (got {source!r})")


def clean_reference(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    metric: MetricLike = "logit_diff",
    *,
    batch_size: int = 16,
) -> Float[Tensor, "batch d_vocab"] | None:
    """The full model's run on the clean prompts, as the reference ``metric`` compares with, and a check of it.

    For a metric that reads the clean distribution (KL divergence) the reference is the full model's
    log-probabilities at END on every clean prompt (one unablated pass per ``batch_size`` prompts). A custom metric
    is also evaluated on the first batch, so that a broken one (wrong shape, non-finite values) fails here, before
    any ablated pass. A built-in metric without a reference costs nothing.

    Args:
        model: the model (a backend with edge passes: TransformerLens, or nnsight locally) or a :class:`GraphRunner`.
        dataset: its clean prompts and answers are used.
        metric: a metric name, :class:`~attnlab.metrics.Metric` or callable.
        batch_size: prompts per pass.

    Returns:
        Float[batch, d_vocab] clean log-probabilities at END, or None when the metric needs no reference.

    Raises:
        MetricError: an unknown metric, or a custom metric failing its checks on the first batch.
    """
    metric = get_metric(metric)
    if metric.builtin and not metric.needs_reference:
        return None
    runner = _runner(model)
    if not metric.needs_reference:
        _check_custom(runner, dataset, metric, None, batch_size)
        return None
    refs = []
    for i0, i1 in split_rows(len(dataset), max(1, int(batch_size))):
        logits = runner.run(dataset.clean_tokens[i0:i1], logits_at=dataset.end[i0:i1]).logits
        refs.append(metric.reference(logits))
        if i0 == 0:
            metric(logits, dataset.answers[i0:i1], refs[0])  # a broken custom metric fails before any ablated pass
    return torch.cat(refs)


def _check_custom(runner: GraphRunner, dataset: PatchingDataset, metric: Metric, reference: Tensor | None,
                  batch_size: int) -> None:
    """Evaluate a custom metric on the full model's first batch of clean prompts (one unablated pass)."""
    b = min(max(1, int(batch_size)), len(dataset))
    logits = runner.run(dataset.clean_tokens[:b], logits_at=dataset.end[:b]).logits
    metric(logits, dataset.answers[:b], None if reference is None else reference[:b])


def circuit_metrics(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    kept: Bool[Tensor, "*variants n_senders n_receivers"],
    *,
    source: "str | AblationSource" = "mean",
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    progress: bool = False,
    metric: MetricLike = "logit_diff",
    reference: Float[Tensor, "batch d_vocab"] | None = None,
) -> Float[Tensor, "n_variants batch"]:
    """Per-prompt metric of each circuit (given as the edges it *keeps*; every other edge is ablated).

    Args:
        model: the model (a backend with edge passes: TransformerLens, or nnsight locally) or a :class:`GraphRunner`.
        dataset: clean prompts to run, corrupted prompts that define the ablation source.
        kept: Bool[n_variants, n_senders, n_receivers] (or one [n_senders, n_receivers] mask): the edges each
            circuit keeps (``graph.valid`` = the full model, all False = everything ablated).
        source: ``"mean"`` (default), ``"corrupted"``, or an :class:`AblationSource` built on ``dataset``.
        batch_size: prompts per pass; variants per pass are chosen from ``memory_budget_mb``.
        memory_budget_mb: memory one pass may use (MiB).
        progress: show a progress bar over passes.
        metric: M at END: ``"logit_diff"`` (default, logits), ``"kl_div"`` (KL(full model || circuit) on the clean
            prompts, nats), ``"prob"``, ``"logprob"``, ``"accuracy"``, a :class:`~attnlab.metrics.Metric` or a
            callable ``fn(logits, answers, reference)``.
        reference: Float[batch, d_vocab] the clean reference for a metric that needs one, from
            :func:`clean_reference` (computed here when None: one unablated pass per batch).

    Returns:
        Float[n_variants, batch] metric values (the metric's units).

    Raises:
        CircuitError: ``kept`` of the wrong shape; bad source.
        MemoryBudgetError: one variant of ``batch_size`` prompts does not fit the budget.
        MetricError: an unknown or broken metric (before any ablated pass); a reference of the wrong shape.
    """
    runner = _runner(model)
    metric = get_metric(metric)
    kept = _check_kept(runner.graph, kept)
    _pass_plan(runner, dataset, batch_size, memory_budget_mb)
    if not runner.local:  # the server computes the reference and the source in the job itself
        _check_source_name(source)
        return _circuit_metrics(runner, dataset, kept, source, metric, reference, batch_size, memory_budget_mb,
                                progress)
    if reference is None:
        reference = clean_reference(runner, dataset, metric, batch_size=batch_size)
    elif not metric.builtin:  # a reference was given: check the custom metric on the first batch all the same
        _check_custom(runner, dataset, metric, reference, batch_size)
    return _circuit_metrics(runner, dataset, kept, resolve_source(runner, dataset, source), metric, reference,
                            batch_size, memory_budget_mb, progress)


def _check_kept(g: Graph, kept: Tensor) -> Tensor:
    if kept.ndim == 2:
        kept = kept[None]
    if kept.ndim != 3 or kept.shape[1:] != (g.n_senders, g.n_receivers):
        raise CircuitError(f"'kept' must have shape (n_variants, {g.n_senders}, {g.n_receivers}) "
                           f"(got {tuple(kept.shape)})")
    return kept


def _circuit_metrics(runner: GraphRunner, dataset: PatchingDataset, kept: Tensor, src: "AblationSource | str",
                     metric: Metric, reference: Tensor | None, batch_size: int, memory_budget_mb: float | int,
                     progress: bool) -> Tensor:
    """:func:`circuit_metrics` with everything resolved and checked: Float[n_variants, batch].

    ``src`` is an :class:`AblationSource` (computed here) or, for a remote model, ``"mean"`` / ``"corrupted"``: the
    server then computes the source (and the clean reference a metric needs, when ``reference`` is None) in the same
    job as the ablated passes (:func:`attnlab.edge_ops.evaluate_circuits`).
    """
    from attnlab.progress import progress_bar

    g = runner.graph
    n = len(dataset)
    if reference is not None and (reference.ndim != 2 or reference.shape[0] != n):
        from attnlab.errors import MetricError

        raise MetricError(f"'reference' must be Float[{n}, d_vocab], one clean distribution per prompt "
                          f"(got {tuple(reference.shape)}); build it with clean_reference(model, dataset, metric)")
    batch_size, n_var = _pass_plan(runner, dataset, batch_size, memory_budget_mb)
    ablate = g.valid[None] & ~kept.bool()
    args = dict(clean=dataset.clean_tokens, corrupted=dataset.corrupted_tokens, end=dataset.end,
                answers=dataset.answers, ablate=ablate, metric=metric, needs_reference=metric.needs_reference,
                batch_size=batch_size, n_var=n_var, reference=reference)
    if isinstance(src, AblationSource):
        _check_source(src, dataset)
        args.update(values=src.values, value_index=src.index)
    else:
        index, keys = template_groups(dataset)
        args.update(source_kind=src, index=index, n_groups=len(keys))
    n_passes = len(split_rows(kept.shape[0], n_var)) * len(split_rows(n, batch_size))
    bar = progress_bar(total=n_passes, desc="circuits", disable=not progress or not runner.local)
    try:  # every pass where the model is: here, or one job on a remote server
        return runner.program("evaluate_circuits", progress=bar, **args)
    finally:
        bar.close()


def _check_source(src: AblationSource, dataset: PatchingDataset) -> None:
    """Raise CircuitError unless ``src`` has one group per prompt of ``dataset`` and its positions."""
    if src.index.shape[0] != len(dataset) or src.values.shape[1] != dataset.n_pos:
        raise CircuitError(f"the ablation source covers {src.index.shape[0]} prompts of {src.values.shape[1]} "
                           f"tokens; the dataset has {len(dataset)} of {dataset.n_pos}: build it from the same dataset")


def _pass_plan(runner: GraphRunner, dataset: PatchingDataset, batch_size: int,
               memory_budget_mb: float | int) -> tuple[int, int]:
    """(prompts per pass, circuits per pass) within the budget.

    Raises:
        MemoryBudgetError: one circuit of ``batch_size`` prompts does not fit.
    """
    n, n_pos = len(dataset), dataset.n_pos
    batch_size = min(batch_size, n)
    one = estimate_memory_mb(runner.info, batch_size, n_pos, n_variants=1)
    if runner.local:  # a remote server has memory of its own (the budget still sets the circuits per pass)
        check_budget("one circuit evaluation pass", one, memory_budget_mb,
                     "pass a smaller batch_size= or a larger memory_budget_mb=")
    per_var = max(1.0, one - estimate_memory_mb(runner.info, batch_size, n_pos, n_variants=0))
    return batch_size, max(1, int((memory_budget_mb - one) // per_var) + 1)


def _prepare(model, dataset: PatchingDataset, metric: MetricLike, source, batch_size: int,
             memory_budget_mb: float | int):
    """(runner, metric, clean reference, ablation source): the budget, then the metric, checked before the
    source's passes."""
    check_dataset(model, dataset, analysis="circuit evaluation")
    memory_budget_mb = check_budget_value(memory_budget_mb)
    runner = _runner(model)
    _pass_plan(runner, dataset, batch_size, memory_budget_mb)
    metric = get_metric(metric)
    if not runner.local:  # the server computes the reference and the source in the job itself
        _check_source_name(source)
        return runner, metric, None, source
    reference = clean_reference(runner, dataset, metric, batch_size=batch_size)
    return runner, metric, reference, resolve_source(runner, dataset, source)


def _source_kind(src) -> str:
    return src if isinstance(src, str) else src.kind


def _runner(model) -> GraphRunner:
    """A :class:`GraphRunner` for circuit evaluation (which runs as a program: also on a remote model)."""
    return model if isinstance(model, GraphRunner) else GraphRunner(model, need=Capability.EDGE_PROGRAMS)


def _check_source_name(source) -> None:
    """Raise CircuitError unless ``source`` is ``"mean"``, ``"corrupted"`` or an :class:`AblationSource`."""
    if not isinstance(source, AblationSource) and source not in ("mean", "corrupted"):
        raise CircuitError(f"'source' must be 'mean', 'corrupted' or an AblationSource (got {source!r})")


def _bootstrap_ratio(num: Tensor, den: Tensor, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval (over prompts) of mean(num) / mean(den)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, num.shape[0], (n_boot, num.shape[0]), generator=g)
    ratios = num[idx].mean(1) / den[idx].mean(1)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975]))
    return float(lo), float(hi)


@dataclass
class FaithfulnessResult:
    """Faithfulness of one circuit.

    Attributes:
        faithfulness: (M_circuit - M_ablated) / (M_full - M_ablated), from prompt means (dimensionless).
        ci95: 95% bootstrap interval of ``faithfulness`` over prompts.
        circuit_metric, full_metric, ablated_metric: mean metric values (the metric's units; logits for the
            logit difference).
        per_prompt: ``{"circuit", "full", "ablated"}`` Float[batch] metric values per prompt.
        n_edges, n_heads: circuit size; source: ablation source kind.
        metric: the metric, as :meth:`attnlab.metrics.Metric.to_dict`.
    """

    faithfulness: float
    ci95: tuple[float, float]
    circuit_metric: float
    full_metric: float
    ablated_metric: float
    per_prompt: dict = field(default_factory=dict)
    n_edges: int = 0
    n_heads: int = 0
    source: str = "mean"
    metric: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())


def _ratio(c: Tensor, full: Tensor, abl: Tensor) -> float:
    gap = float(full.mean() - abl.mean())
    if abs(gap) < MIN_BASELINE_GAP:
        from attnlab.errors import MetricError

        raise MetricError(f"the full model and the fully ablated model have the same mean metric "
                          f"({float(full.mean()):.6g}): faithfulness is undefined; use another ablation source")
    return float(c.mean() - abl.mean()) / gap


def faithfulness(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    circuit: Circuit | Bool[Tensor, "n_senders n_receivers"],
    *,
    source: "str | AblationSource" = "mean",
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    metric: MetricLike = "logit_diff",
    progress: bool = True,
) -> FaithfulnessResult:
    """Faithfulness of a circuit: its metric with every other edge ablated, between the fully ablated model (0) and
    the full model (1). See the module docstring.

    Args:
        model: the model (a backend with edge passes: TransformerLens, or nnsight locally) or a :class:`GraphRunner`.
        dataset: clean prompts to evaluate on; their corrupted prompts define the ablation source.
        circuit: a :class:`Circuit` or Bool[n_senders, n_receivers] mask of kept edges.
        source: ``"mean"`` (per-template mean over corrupted prompts; Wang et al.), ``"corrupted"`` or an
            :class:`AblationSource`.
        batch_size, memory_budget_mb, metric: see :func:`circuit_metrics` (default metric: the logit difference;
            ``"kl_div"`` compares with the full model on the clean prompts).
        progress: show a progress bar over the passes (the full model, everything ablated and the circuit, in batches
            of prompts).

    Returns:
        A :class:`FaithfulnessResult`.

    Raises:
        MetricError: M_full == M_ablated (faithfulness undefined); an unknown or broken metric (before any
            ablated pass).
        CircuitError: a circuit of another model.
    """
    runner = _runner(model)
    g = runner.graph
    kept = _check_kept(g, circuit.mask(g) if isinstance(circuit, Circuit) else torch.as_tensor(circuit).bool())[0]
    masks = torch.stack([g.valid, torch.zeros_like(g.valid), kept])
    runner, metric, reference, src = _prepare(runner, dataset, metric, source, batch_size, memory_budget_mb)
    full, abl, c = _circuit_metrics(runner, dataset, masks, src, metric, reference, batch_size, memory_budget_mb,
                                    progress)
    f = _ratio(c, full, abl)
    ci = _bootstrap_ratio(c - abl, full - abl)
    n_heads = len(circuit.heads) if isinstance(circuit, Circuit) else len(_heads_of_mask(g, kept))
    return FaithfulnessResult(f, ci, float(c.mean()), float(full.mean()), float(abl.mean()),
                              {"circuit": c, "full": full, "ablated": abl}, int(kept.sum()), n_heads, _source_kind(src),
                              metric.to_dict())


def _heads_of_mask(g: Graph, kept: Tensor) -> list[tuple[int, int]]:
    c = Circuit(model=g.info.to_dict(), task={}, edges=[(g.edge_name(int(s), int(r)), 0.0)
                                                          for s, r in kept.nonzero().tolist()])
    return c.heads


@dataclass
class FaithfulnessCurve:
    """Faithfulness as edges are added in score order.

    Attributes:
        sizes: numbers of edges; n_heads: heads in each circuit.
        faithfulness: one value per size; ci95: bootstrap intervals.
        per_prompt: Float[len(sizes), batch] circuit metric values; full, ablated: Float[batch].
        metric: the metric, as :meth:`attnlab.metrics.Metric.to_dict`.
    """

    sizes: list[int]
    n_heads: list[int]
    faithfulness: list[float]
    ci95: list[tuple[float, float]]
    per_prompt: Tensor
    full: Tensor
    ablated: Tensor
    metric: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())

    def plot(self, ax=None, **kw):
        """Draw faithfulness against circuit size, with its interval band with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_faithfulness_curve`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_faithfulness_curve

        return plot_faithfulness_curve(self, ax, **kw)


def faithfulness_curve(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    scores,
    sizes: Sequence[int],
    *,
    source: "str | AblationSource" = "mean",
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    progress: bool = True,
    metric: MetricLike = "logit_diff",
) -> FaithfulnessCurve:
    """Faithfulness of the top-n-edge circuits of ``scores`` (by |score|) for each n in ``sizes``, batched.

    Args:
        model: the model or a :class:`GraphRunner`.
        dataset: evaluation prompts.
        scores: :class:`~attnlab.circuits.eap.EdgeScores`.
        sizes: edge counts, each in [0, n_edges].
        source, batch_size, memory_budget_mb, progress, metric: see :func:`circuit_metrics`.

    Returns:
        A :class:`FaithfulnessCurve`.

    Raises:
        CircuitError: a size out of range.
        MetricError: as :func:`faithfulness`.
    """
    runner = _runner(model)
    g = runner.graph
    ranked = scores.edge_scores()
    sizes = [int(s) for s in sizes]
    bad = [s for s in sizes if not 0 <= s <= len(ranked)]
    if bad or not sizes:
        raise CircuitError(f"'sizes' must be edge counts in [0, {len(ranked)}] (got {list(sizes)})")
    idx = torch.tensor([g.edge_index(e) for e, _ in ranked]) if ranked else torch.zeros(0, 2, dtype=torch.long)
    masks = [g.valid, torch.zeros_like(g.valid)]
    for n in sizes:
        m = torch.zeros_like(g.valid)
        if n:
            m[idx[:n, 0], idx[:n, 1]] = True
        masks.append(m)
    runner, metric, reference, src = _prepare(runner, dataset, metric, source, batch_size, memory_budget_mb)
    out = _circuit_metrics(runner, dataset, torch.stack(masks), src, metric, reference, batch_size, memory_budget_mb,
                           progress)
    full, abl, per = out[0], out[1], out[2:]
    return FaithfulnessCurve(
        sizes=sizes, n_heads=[len(_heads_of_mask(g, m)) for m in masks[2:]],
        faithfulness=[_ratio(c, full, abl) for c in per], ci95=[_bootstrap_ratio(c - abl, full - abl) for c in per],
        per_prompt=per, full=full, ablated=abl, metric=metric.to_dict(),
    )


def _without_nodes(g: Graph, kept: Tensor, nodes: Sequence[str]) -> Tensor:
    """``kept`` with every edge sent by, or received by, one of ``nodes`` removed."""
    m = kept.clone()
    for node in nodes:
        if node in g._sender_index:
            m[g.sender_index(node)] = False
        for r in range(g.n_receivers):
            if g.receiver_node(r) == node:
                m[:, r] = False
    return m


@dataclass
class MinimalityResult:
    """Per-node contribution to a circuit.

    Attributes:
        nodes: circuit sender nodes tested; drop: M(C) - M(C minus node) per node (the metric's units);
        per_prompt: Float[n_nodes, batch] M(C minus node); negligible: nodes with |drop| < tol * |M_full - M_ablated|.
        circuit_metric: M(C); tol: the tolerance used.
        metric: the metric M, as :meth:`attnlab.metrics.Metric.to_dict`.
    """

    nodes: list[str]
    drop: list[float]
    per_prompt: Tensor
    negligible: list[str]
    circuit_metric: float
    tol: float
    metric: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())


def minimality(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    circuit: Circuit,
    *,
    tol: float | int = 0.01,
    source: "str | AblationSource" = "mean",
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    metric: MetricLike = "logit_diff",
) -> MinimalityResult:
    """For each node of the circuit (every sender but ``input``), the metric drop when it is removed as well.

    ``source``, ``batch_size``, ``memory_budget_mb`` and ``metric`` (default the logit difference) are as in
    :func:`circuit_metrics`.

    Raises:
        CircuitError: ``tol`` not in [0, 1).
        MetricError: an unknown or broken metric (before any ablated pass).
    """
    if not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise CircuitError(f"'tol' must be in [0, 1) (got {tol!r})")
    runner = _runner(model)
    g = runner.graph
    kept = circuit.mask(g)
    nodes = [n for n in circuit.nodes if n in g._sender_index and n != "input"]
    masks = [g.valid, torch.zeros_like(g.valid), kept] + [_without_nodes(g, kept, [n]) for n in nodes]
    runner, metric, reference, src = _prepare(runner, dataset, metric, source, batch_size, memory_budget_mb)
    out = _circuit_metrics(runner, dataset, torch.stack(masks), src, metric, reference, batch_size, memory_budget_mb,
                           False)
    full, abl, c = out[0].mean(), out[1].mean(), out[2].mean()
    drops = [float(c - row.mean()) for row in out[3:]]
    scale = abs(float(full - abl))
    negligible = [n for n, d in zip(nodes, drops) if abs(d) < tol * scale]
    return MinimalityResult(nodes, drops, out[3:], negligible, float(c), float(tol), metric.to_dict())


@dataclass
class CompletenessResult:
    """Knockouts compared in the circuit and in the full model (Wang et al. 2022, section 4).

    Attributes:
        sets: the node sets K knocked out; circuit_metric: M(C minus K); model_metric: M(model minus K);
        incompleteness: |M(C minus K) - M(model minus K)| per set (the metric's units);
        per_prompt_circuit, per_prompt_model: Float[n_sets, batch].
        metric: the metric M, as :meth:`attnlab.metrics.Metric.to_dict`.
    """

    sets: list[list[str]]
    circuit_metric: list[float]
    model_metric: list[float]
    incompleteness: list[float]
    per_prompt_circuit: Tensor
    per_prompt_model: Tensor
    metric: dict = field(default_factory=lambda: METRICS["logit_diff"].to_dict())


def completeness(
    model: Backend | GraphRunner,
    dataset: PatchingDataset,
    circuit: Circuit,
    sets: Sequence[Sequence[str]] | None = None,
    *,
    source: "str | AblationSource" = "mean",
    batch_size: int = 16,
    memory_budget_mb: float | int = _DEFAULT_BUDGET_MB,
    metric: MetricLike = "logit_diff",
) -> CompletenessResult:
    """Knock out node sets K in the circuit and in the full model and compare (default: each circuit head alone,
    and all circuit heads together).

    ``source``, ``batch_size``, ``memory_budget_mb`` and ``metric`` (default the logit difference) are as in
    :func:`circuit_metrics`.

    Raises:
        CircuitError: an unknown node name.
        MetricError: an unknown or broken metric (before any ablated pass).
    """
    runner = _runner(model)
    g = runner.graph
    kept = circuit.mask(g)
    if sets is None:
        heads = [f"L{l}H{h}" for l, h in circuit.heads]
        sets = [[h] for h in heads] + ([heads] if len(heads) > 1 else [])
    sets = [list(s) for s in sets]
    for s in sets:
        for node in s:
            if node not in g._sender_index:
                raise CircuitError(f"{node!r} is not a node of {g.info.name}'s graph that sends edges")
    masks = [_without_nodes(g, kept, s) for s in sets] + [_without_nodes(g, g.valid, s) for s in sets]
    runner, metric, reference, src = _prepare(runner, dataset, metric, source, batch_size, memory_budget_mb)
    out = _circuit_metrics(runner, dataset, torch.stack(masks), src, metric, reference, batch_size, memory_budget_mb,
                           False)
    k = len(sets)
    c, m = out[:k], out[k:]
    return CompletenessResult(sets, [float(x.mean()) for x in c], [float(x.mean()) for x in m],
                              [abs(float(x.mean() - y.mean())) for x, y in zip(c, m)], c, m, metric.to_dict())
