"""Retrieval heads: the heads that copy a needle out of a long context, scored from attention and checked causally.

Context:
    Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality", arXiv 2404.15574, section 2)
    watch a model repeat a *needle* sentence hidden in a long *haystack*. At each copying step the model emits a
    token ``w``; a head *retrieves* on that step when the token is the needle's token being copied and the head's
    top-1 attention (argmax over source positions) lands on that token inside the needle ("copy-paste" behaviour).
    A head's retrieval score is the fraction of needle tokens on which it does so; heads scoring above 0.1 are
    *retrieval heads*. They are few (under 5% of heads in the models studied), and masking them breaks needle
    retrieval while masking as many random heads does not (section 3).

Definitions used here (inputs from :mod:`attnlab.tasks.needle`):
    - The answer is *teacher-forced*: the needle's tokens follow the question, so one forward pass gives every
      copying step, and step ``j`` is scored at the position before answer token ``j``. A step counts only when the
      model's top-1 prediction there *is* that needle token (Wu et al. score the tokens the model actually emits;
      with teacher forcing, a wrong prediction is a step the model did not copy).
    - The head's argmax over source positions must be a position *inside the needle* holding the token being
      copied (for a needle without repeated tokens: exactly that token's occurrence). Ties go to the earliest
      position (``torch.argmax``).
    - ``score[layer, head]`` = hits / needle tokens, pooled over inputs (all inputs have the same needle, so this is
      also the mean of per-input scores). ``retrieval accuracy`` = fraction of needle tokens predicted top-1.

Causal check (:func:`retrieval_ablation`): ablate the top-k heads by retrieval score together (zero or mean
ablation of ``z``, :mod:`attnlab.ablation`) and, as controls, ``n_random`` seeded draws of k heads from the other
heads; retrieval accuracy per input with paired bootstrap intervals over inputs
(:mod:`attnlab.dissociation.stats`).

Everything goes through :meth:`Backend.run <attnlab.backends.base.Backend.run>`: per layer, the attention pattern
is recorded only at the copying positions (``Site("pattern", layer, position=p)``), so memory stays
O(layers x heads x steps x pos) rather than O(layers x heads x pos^2).
"""

import html
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab import serialisation
from attnlab.ablation import ABLATION_METHODS, check_heads, head_ablation_interventions, mean_head_outputs
from attnlab.backends.base import Backend, RunSpec
from attnlab.errors import AblationError, ArgumentError, AttnlabError
from attnlab.progress import Progress, step_progress
from attnlab.results import _from_nested, _to_nested
from attnlab.sites import Site, SiteKind
from attnlab.tasks.needle import NeedleInputs

__all__ = ["RETRIEVAL_THRESHOLD", "RetrievalAblation", "RetrievalScores", "retrieval_ablation", "retrieval_hits",
           "retrieval_scores"]

#: Wu et al. 2024's threshold: a head with a retrieval score above it is a retrieval head
RETRIEVAL_THRESHOLD = 0.1


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= float(threshold) <= 1.0:
        raise ArgumentError(f"'threshold' must be a number in [0, 1] (got {threshold!r})")
    return float(threshold)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"'batch_size' must be a positive int (got {batch_size!r})")
    return batch_size


def retrieval_hits(
    top_source: Int[Tensor, "batch layer head_index n"],
    predictions: Int[Tensor, "batch n"],
    tokens: Int[Tensor, "batch pos"],
    needle_positions: Int[Tensor, "batch n"],
    answer_positions: Int[Tensor, "batch n"],
) -> Float[Tensor, "batch layer head_index n"]:
    """Which heads retrieve at which copying step (1.0) and which do not (0.0), from their argmax sources.

    Args:
        top_source: each head's argmax source position at the query position of each step.
        predictions: the model's top-1 token at each step's query position.
        tokens: the inputs.
        needle_positions, answer_positions: from :class:`~attnlab.tasks.needle.NeedleItem`.

    Returns:
        Float[batch, layer, head_index, n]: 1 where the prediction is the needle token being copied and the head's
        argmax lies inside the needle on a copy of that token.
    """
    target = tokens.gather(1, answer_positions)  # [b, n]
    correct = predictions == target
    lo, hi = needle_positions[:, :1], needle_positions[:, -1:]  # the needle is contiguous
    src_tok = tokens.gather(1, top_source.flatten(1)).reshape(top_source.shape)
    in_needle = (top_source >= lo[:, None, None]) & (top_source <= hi[:, None, None])
    same = src_tok == target[:, None, None, :]
    return (in_needle & same & correct[:, None, None, :]).float()


def _needle_pass(model: Backend, tokens: Tensor, query: Tensor, interventions=()) -> tuple[Tensor, Tensor | None]:
    """One pass: (predictions Int[b, n] at the query positions, or the argmax sources Int[b, layer, head, n] too).

    ``query`` Int[n] is shared by every row (inputs of one length have the same layout)."""
    info = model.info
    sites = [Site(SiteKind.PATTERN, layer, position=int(p)) for layer in range(info.n_layers) for p in query]
    out = model.run(tokens, cache=sites, interventions=list(interventions))
    preds = out.logits[:, query].argmax(-1).cpu()
    n = len(query)
    top = torch.empty(tokens.shape[0], info.n_layers, info.n_heads, n, dtype=torch.long)
    for i, site in enumerate(sites):
        top[:, site.layer, :, i % n] = out.cache[site].argmax(-1).cpu()  # [b, head] (pattern row: [b, head, src])
    return preds, top


@dataclass
class RetrievalAblation:
    """Retrieval accuracy with the top-k retrieval heads ablated, against k random heads.

    Attributes:
        method: ``"zero"`` or ``"mean"``.
        heads: the top-k (layer, head) pairs ablated together.
        random_heads: one list of k (layer, head) pairs per random draw (drawn from the other heads).
        clean: Float[input] accuracy without ablation.
        top: Float[input] accuracy with the top-k heads ablated.
        random: Float[draw, input] accuracy with each random draw ablated.
        summary: ``{condition: {"mean", "lo", "hi", "drop", "drop_lo", "drop_hi"}}`` for ``"clean"``, ``"top"``,
            ``"random"`` (draws pooled: the mean over draws per input) and ``"random_{i}"``; drops are clean minus
            ablated accuracy; intervals are paired percentile bootstraps over inputs.
        n_bootstrap, level, seed: the bootstrap's settings and the seed of the random draws and resamples.
    """

    method: str
    heads: list[tuple[int, int]]
    random_heads: list[list[tuple[int, int]]]
    clean: Tensor
    top: Tensor
    random: Tensor
    summary: dict
    n_bootstrap: int
    level: float
    seed: int

    def to_dict(self) -> dict:
        return {"method": self.method, "heads": [list(h) for h in self.heads],
                "random_heads": [[list(h) for h in draw] for draw in self.random_heads],
                "clean": _to_nested(self.clean), "top": _to_nested(self.top), "random": _to_nested(self.random),
                "summary": self.summary, "n_bootstrap": self.n_bootstrap, "level": self.level, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "RetrievalAblation":
        return cls(method=d["method"], heads=[tuple(h) for h in d["heads"]],
                   random_heads=[[tuple(h) for h in draw] for draw in d["random_heads"]],
                   clean=_from_nested(d["clean"]), top=_from_nested(d["top"]), random=_from_nested(d["random"]),
                   summary=d["summary"], n_bootstrap=d["n_bootstrap"], level=d["level"], seed=d["seed"])

    def __repr__(self) -> str:
        s = self.summary
        return (f"<RetrievalAblation ({self.method}) accuracy clean {s['clean']['mean']:.3f}, top-{len(self.heads)} "
                f"ablated {s['top']['mean']:.3f} [{s['top']['lo']:.3f}, {s['top']['hi']:.3f}], random "
                f"{len(self.heads)} heads {s['random']['mean']:.3f} [{s['random']['lo']:.3f}, "
                f"{s['random']['hi']:.3f}] ({len(self.random_heads)} draws)>")

    def plot(self, ax=None, **kw):
        """Draw accuracy bars: clean, top-k heads ablated, k random heads ablated with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_retrieval_ablation`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_retrieval_ablation

        return plot_retrieval_ablation(self, ax, **kw)


@dataclass
class RetrievalScores(serialisation.Saved):
    """Retrieval scores of every head (Wu et al. 2024), with the inputs' depths and lengths.

    Attributes:
        scores: Float[layer, head_index] fraction of needle tokens on which the head retrieved (pooled over inputs).
        per_input: Float[input, layer, head_index] the same per input.
        accuracy: Float[input] the model's retrieval accuracy (fraction of needle tokens predicted top-1).
        depths: the needle depth of each input (in [0, 1]); lengths: the haystack length of each input (tokens).
        n_needle: needle tokens per input.
        threshold: the retrieval-head threshold (default 0.1).
        needle_text: the needle as text (``""`` for token-id inputs).
        model, task, settings: provenance.
        ablation: :class:`RetrievalAblation` or None.
    """

    _record = serialisation.RETRIEVAL

    scores: Tensor
    per_input: Tensor
    accuracy: Tensor
    depths: list[float]
    lengths: list[int]
    n_needle: int
    threshold: float = RETRIEVAL_THRESHOLD
    needle_text: str = ""
    model: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    ablation: RetrievalAblation | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 2:
            raise AttnlabError(f"scores must be [layer, head] (got {tuple(self.scores.shape)})")
        if self.per_input.shape[1:] != self.scores.shape or self.per_input.shape[0] != len(self.depths):
            raise AttnlabError(f"per_input must be [input, layer, head] with {len(self.depths)} inputs "
                               f"(got {tuple(self.per_input.shape)})")

    @property
    def n_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[1]

    def ranking(self) -> list[tuple[int, int]]:
        """All heads, highest retrieval score first (ties: lower layer, then lower head)."""
        order = torch.argsort(self.scores.reshape(-1), descending=True, stable=True).tolist()
        return [divmod(i, self.n_heads) for i in order]

    def retrieval_heads(self, threshold: float | None = None) -> list[tuple[int, int]]:
        """Heads whose score exceeds ``threshold`` (default :attr:`threshold`), highest first.

        Raises:
            ArgumentError: a threshold outside [0, 1].
        """
        t = self.threshold if threshold is None else _check_threshold(threshold)
        return [(a, b) for a, b in self.ranking() if float(self.scores[a, b]) > t]

    def by_depth(self):
        """DataFrame: per (length, depth), the model's accuracy and the top head's mean score."""
        import pandas as pd

        (a, b) = self.ranking()[0]
        df = pd.DataFrame({"length": self.lengths, "depth": self.depths, "accuracy": self.accuracy.tolist(),
                           f"L{a}H{b}": self.per_input[:, a, b].tolist()})
        return df.groupby(["length", "depth"], as_index=False).mean()

    def with_ablation(self, ablation: RetrievalAblation) -> "RetrievalScores":
        return replace(self, ablation=ablation)

    def to_dataframe(self):
        """One row per head: ``component`` (``L5H1``), ``layer``, ``head``, ``retrieval_score``, its standard
        deviation over inputs, ``retrieval_head`` (above the threshold)."""
        import pandas as pd

        std = self.per_input.std(0) if self.per_input.shape[0] > 1 else torch.zeros_like(self.scores)
        rows = [{"component": f"L{a}H{b}", "layer": a, "head": b, "retrieval_score": float(self.scores[a, b]),
                 "retrieval_score_std": float(std[a, b]), "retrieval_head": bool(self.scores[a, b] > self.threshold)}
                for a in range(self.n_layers) for b in range(self.n_heads)]
        return pd.DataFrame(rows)

    def top(self, k: int = 5):
        """DataFrame of the ``k`` heads with the highest retrieval score."""
        df = self.to_dataframe()
        return df.sort_values("retrieval_score", ascending=False, kind="stable").head(k).reset_index(drop=True)

    # -- files -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary: the ``attnlab.retrieval`` record, format version 1."""
        return {**serialisation.RETRIEVAL.header(), "scores": _to_nested(self.scores),
                "per_input": _to_nested(self.per_input), "accuracy": _to_nested(self.accuracy),
                "depths": list(self.depths), "lengths": list(self.lengths), "n_needle": self.n_needle,
                "threshold": self.threshold, "needle_text": self.needle_text, "model": self.model, "task": self.task,
                "settings": self.settings, "ablation": None if self.ablation is None else self.ablation.to_dict()}

    @classmethod
    def _from_content(cls, d: dict) -> "RetrievalScores":
        return cls(scores=_from_nested(d["scores"]), per_input=_from_nested(d["per_input"]),
                   accuracy=_from_nested(d["accuracy"]), depths=list(d["depths"]), lengths=list(d["lengths"]),
                   n_needle=d["n_needle"], threshold=d.get("threshold", RETRIEVAL_THRESHOLD),
                   needle_text=d.get("needle_text", ""), model=d.get("model", {}), task=d.get("task", {}),
                   settings=d.get("settings", {}),
                   ablation=None if d.get("ablation") is None else RetrievalAblation.from_dict(d["ablation"]))

    # -- display -----------------------------------------------------------------------------------------------------
    def payload(self) -> dict:
        """Plain JSON-able data for a head-gallery tab: the [layer][head] matrix, labels and the top heads."""
        from attnlab.heads.sinks import head_matrix_payload

        return head_matrix_payload(
            "retrieval", self.scores, title=f"Retrieval scores on {self.model.get('name', '?')}",
            label="retrieval score (fraction of needle tokens copied with top-1 attention on them)",
            threshold=self.threshold, model=self.model,
            extra={"accuracy": float(self.accuracy.mean()), "n_inputs": len(self.depths),
                   "depths": sorted(set(self.depths)), "lengths": sorted(set(self.lengths)),
                   "needle_text": self.needle_text})

    def gallery_payload(self, *extra) -> dict:
        """A :class:`~attnlab.render.contract.HeadGalleryPayload` with the retrieval tab (and those of ``extra``,
        e.g. a :class:`~attnlab.heads.sinks.SinkAnalysis` of the same model)."""
        from attnlab.render.gallery import head_gallery

        return head_gallery(self, extra=extra)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.heads.sinks import static_table_html
        from attnlab.render.contract import HEADGALLERY_MIME

        top = self.top(10)
        rows = [[r.component, f"{r.retrieval_score:.3f}", "yes" if r.retrieval_head else ""] for r in top.itertuples()]
        notes = [f"{len(self.depths)} inputs, depths {sorted(set(round(d, 3) for d in self.depths))}, haystack "
                 f"lengths {sorted(set(self.lengths))}; model accuracy {float(self.accuracy.mean()):.3f}",
                 f"needle: {self.needle_text}" if self.needle_text else ""]
        if self.ablation is not None:
            notes.append(repr(self.ablation))
        return {HEADGALLERY_MIME: self.gallery_payload(), "text/plain": repr(self),
                "text/html": static_table_html(f"Retrieval heads on {self.model.get('name', '?')}",
                                               ["head", "retrieval score", f"> {self.threshold:g}"], rows, notes)}

    def __repr__(self) -> str:
        heads = self.retrieval_heads()
        (a, b) = self.ranking()[0]
        return (f"<RetrievalScores on {self.model.get('name', '?')}: {self.n_layers} layers x {self.n_heads} heads, "
                f"{len(self.depths)} inputs; top L{a}H{b} ({float(self.scores[a, b]):.3f}); {len(heads)} retrieval "
                f"heads above {self.threshold:g}; accuracy {float(self.accuracy.mean()):.3f}"
                f"{', ablation' if self.ablation is not None else ''}>")

    def plot(self, ax=None, **kw):
        """Draw the retrieval scores as a [layer, head] heatmap, the threshold on the colour bar with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_retrieval`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_retrieval

        return plot_retrieval(self, ax, **kw)


def retrieval_scores(
    model: Backend,
    inputs: NeedleInputs,
    *,
    threshold: float = RETRIEVAL_THRESHOLD,
    batch_size: int = 8,
) -> RetrievalScores:
    """The retrieval score of every head (Wu et al. 2024, section 2; see the module docstring).

    Args:
        model: any backend (nnsight needs eager attention, which :func:`attnlab.load_model` loads).
        inputs: needle-in-a-haystack inputs (:func:`~attnlab.tasks.needle.needle_haystack`).
        threshold: score above which a head is a retrieval head, in [0, 1] (Wu et al.: 0.1).
        batch_size: inputs per forward pass (inputs of one haystack length batch together).

    Returns:
        :class:`RetrievalScores` (scores Float[layer, head_index], fractions of needle tokens).

    Raises:
        ArgumentError: threshold outside [0, 1], a bad batch size.
        DatasetError: inputs from another tokenizer, ids outside the vocabulary, inputs longer than the context.

    Example:
        >>> inputs = needle_haystack(model, depths=[0.2, 0.8], lengths=[200])  # doctest: +SKIP
        >>> retrieval_scores(model, inputs).top(3)  # doctest: +SKIP
    """
    threshold = _check_threshold(threshold)
    batch_size = _check_batch_size(batch_size)
    inputs.check(model, "retrieval_scores")
    info = model.info
    n = inputs.n_needle
    per_input = torch.zeros(len(inputs), info.n_layers, info.n_heads)
    accuracy = torch.zeros(len(inputs))
    for idx, tokens, needle_pos, answer_pos in inputs.batches(batch_size):
        query = answer_pos[0] - 1
        preds, top = _needle_pass(model, tokens, query)
        hits = retrieval_hits(top, preds, tokens, needle_pos, answer_pos)
        per_input[idx] = hits.mean(-1)
        accuracy[idx] = (preds == tokens.gather(1, answer_pos)).float().mean(-1)
    return RetrievalScores(
        scores=per_input.mean(0), per_input=per_input, accuracy=accuracy, depths=inputs.depths,
        lengths=inputs.lengths, n_needle=n, threshold=threshold, needle_text=inputs.needle_text,
        model=info.to_dict(), task=inputs.describe(), settings={"threshold": threshold, "batch_size": batch_size})


def _summary(values: Tensor, clean: Tensor, n_bootstrap: int, level: float, seed: int) -> dict:
    from attnlab.dissociation.stats import bootstrap_ci

    mean, lo, hi = bootstrap_ci(values[None], n_resamples=n_bootstrap, seed=seed, level=level)
    dmean, dlo, dhi = bootstrap_ci((clean - values)[None], n_resamples=n_bootstrap, seed=seed, level=level)
    return {"mean": float(mean[0]), "lo": float(lo[0]), "hi": float(hi[0]), "drop": float(dmean[0]),
            "drop_lo": float(dlo[0]), "drop_hi": float(dhi[0])}


def retrieval_ablation(
    model: Backend,
    inputs: NeedleInputs,
    scores: RetrievalScores | Sequence[Sequence[int]],
    *,
    k: int | None = None,
    n_random: int = 5,
    method: str = "zero",
    seed: int = 0,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    batch_size: int = 8,
    progress: "bool | Progress" = True,
) -> RetrievalAblation:
    """Ablate the top-k retrieval heads together, and k random other heads as controls, on retrieval accuracy.

    Args:
        model: any backend.
        inputs: needle-in-a-haystack inputs (at least 2, for the intervals).
        scores: a :class:`RetrievalScores` (its top ``k`` heads are ablated) or an explicit list of (layer, head).
        k: heads to ablate (default: the number of retrieval heads above the threshold, at least 1; for an explicit
            list, its length).
        n_random: random draws of ``k`` heads from the heads not ablated in the top set (Wu et al. 2024, section 3,
            compare with random heads).
        method: ``"zero"`` or ``"mean"`` (mean ``z`` over every position of the inputs, :mod:`attnlab.ablation`).
        seed: seed of the random draws and the bootstrap.
        n_bootstrap, level: the paired percentile bootstrap over inputs (:mod:`attnlab.dissociation.stats`).
        batch_size: inputs per forward pass.
        progress: a tqdm bar over the forward passes (True), none (False), or a shared
            :class:`~attnlab.progress.Progress` to tick.

    Returns:
        :class:`RetrievalAblation`.

    Raises:
        AblationError: unknown method; ``k`` not in [1, heads]; not enough other heads for a random draw.
        SiteError: a head out of range. ArgumentError: fewer than 2 inputs, bad bootstrap settings.
        DatasetError: as :func:`retrieval_scores`.
    """
    from attnlab.dissociation.stats import _check
    from attnlab.tasks.base import check_seed

    if method not in ABLATION_METHODS:
        raise AblationError(f"'method' must be one of {ABLATION_METHODS} (got {method!r})")
    seed = check_seed(seed)
    _check(n_bootstrap, level)
    batch_size = _check_batch_size(batch_size)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 1:
        raise ArgumentError(f"'n_random' must be a positive int (got {n_random!r})")
    inputs.check(model, "retrieval_ablation")
    if len(inputs) < 2:
        raise ArgumentError(f"bootstrap intervals need at least 2 inputs (got {len(inputs)})")
    info = model.info
    n_all = info.n_layers * info.n_heads
    if isinstance(scores, RetrievalScores):
        ranking = scores.ranking()
        k = max(1, len(scores.retrieval_heads())) if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_all:
            raise AblationError(f"'k' must be an int in [1, {n_all}] (got {k!r})")
        heads = ranking[:k]
    else:
        heads = check_heads(model, scores)
        k = len(heads) if k is None else k
        if not heads or k != len(heads):
            raise AblationError(f"give k = len(heads) (got k={k!r} for {len(heads)} heads)")
    others = [(a, b) for a in range(info.n_layers) for b in range(info.n_heads) if (a, b) not in set(heads)]
    if len(others) < k:
        raise AblationError(f"a random draw of {k} heads needs at least {k} other heads (the model has "
                            f"{len(others)})")
    g = torch.Generator().manual_seed(seed)
    draws = [[others[i] for i in sorted(torch.randperm(len(others), generator=g)[:k].tolist())]
             for _ in range(n_random)]
    conditions = [("clean", [])] + [("top", heads)] + [(f"random_{i}", d) for i, d in enumerate(draws)]

    n_batches = sum(1 for _ in inputs.batches(batch_size))
    tracker, owned = step_progress(progress, total=n_batches * (len(conditions) + (method == "mean")),
                                   desc="retrieval ablation")
    try:
        values = _ablation_values(model, inputs, conditions, method, batch_size, tracker)
    finally:
        if owned:
            tracker.close()
    clean = values[0]
    summary = {name: _summary(values[ci], clean, n_bootstrap, level, seed) for ci, (name, _) in enumerate(conditions)}
    summary["random"] = _summary(values[2:].mean(0), clean, n_bootstrap, level, seed)
    return RetrievalAblation(method=method, heads=heads, random_heads=draws, clean=clean, top=values[1],
                             random=values[2:], summary=summary, n_bootstrap=n_bootstrap, level=float(level),
                             seed=seed)


def _ablation_values(model: Backend, inputs: NeedleInputs, conditions: list, method: str, batch_size: int,
                     tracker: Progress) -> Tensor:
    """Float[condition, input] retrieval accuracy of each input with each condition's heads ablated."""
    means = None
    if method == "mean":  # mean z over every position of every input, weighted by tokens
        total, acc = 0, None
        for _, tokens, _, _ in inputs.batches(batch_size):
            m = mean_head_outputs(model, tokens, per_position=False)
            w = tokens.numel()
            acc = {lay: v * w for lay, v in m.items()} if acc is None else {lay: acc[lay] + v * w
                                                                             for lay, v in m.items()}
            total += w
            tracker.update()
        means = {lay: v / total for lay, v in acc.items()}

    values = torch.zeros(len(conditions), len(inputs))

    def specs():
        for idx, tokens, _, answer_pos in inputs.batches(batch_size):
            for ci, (_, hs) in enumerate(conditions):
                ivs = head_ablation_interventions(model, hs, method=method, n_pos=tokens.shape[1],
                                                  batch=tokens.shape[0], means=means) if hs else []
                yield RunSpec(tokens=tokens, interventions=ivs, key=(ci, idx, answer_pos))

    for (ci, idx, answer_pos), out in model.run_many(specs()):
        tokens = torch.stack([inputs.items[i].tokens for i in idx])
        preds = out.logits[:, answer_pos[0] - 1].argmax(-1).cpu()
        values[ci, idx] = (preds == tokens.gather(1, answer_pos)).float().mean(-1)
        tracker.update()
    return values
