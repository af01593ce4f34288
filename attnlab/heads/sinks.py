"""Attention sinks: the key positions that absorb attention regardless of content, the heads that sink most, and an
ACT-style calibration that scales attention to the sinks down.

Context:
    Xiao et al. 2023 ("Efficient Streaming Language Models with Attention Sinks", arXiv 2309.17453, section 3.1)
    show that language models put a large share of attention on the first tokens whatever they say: the softmax
    must put its mass somewhere, and the first token, visible to every query, becomes the dump. Yu et al. 2024
    ("Unveiling and Harnessing Hidden Attention Sinks", ICML 2024, sections 3-4) find such sinks *inside* the
    sequence too (often punctuation or newlines), show that not all of them help, and propose the Attention
    Calibration Technique (ACT): at inference, in chosen heads, scale the attention to the sink tokens down and
    give the freed mass back to the other tokens, without training.

Definitions used here (all from attention probabilities ``A[q, k]``, query ``q``, key ``k <= q``):
    - *received mass* of key ``k`` in a head: the mean of ``A[q, k]`` over the queries strictly after it
      (``q > k``), probability units. Its *uniform share* is the same mean for a head that attends uniformly,
      ``mean_{q > k} 1 / (q + 1)``; :attr:`SinkAnalysis.ratio` is mass over uniform share.
    - ``k`` is a *sink of a head* on a sequence when at least ``query_fraction`` (default 1/2) of the queries after
      it give it more than ``alpha`` times their uniform share (``A[q, k] > alpha / (q + 1)``, default
      ``alpha = 5``), and at least ``min_queries`` (default 8) queries come after it. Counting queries rather than
      averaging mass keeps local heads out: a previous-token head gives each key everything from one query, which
      makes the last keys look like sinks on average but never on half of their queries; ``min_queries`` keeps out
      the last few keys, whose handful of queries says little.
    - ``k`` is a *sink position* of a sequence when it is a sink of at least ``head_fraction`` (default 0.1) of all
      heads. Position 0 is the *first-token sink* (StreamingLLM); any other sink position is a *hidden sink*
      (Yu et al.).
    - A head's *sink score* is the mean over queries ``q >= 1`` of the attention it puts on the sequence's sink
      positions (``k <= q``), averaged over sequences; split into ``first_token`` (``A[q, 0]``) and
      ``hidden_sink`` (the other sink positions).

Calibration (:func:`calibrate_sinks`, :func:`sink_calibration_interventions`):
    In each chosen head, every query row becomes ``A'[q, k] = A[q, k] w_k / sum_j A[q, j] w_j`` with ``w_k =
    factor`` on the chosen sink positions and 1 elsewhere (a row whose mass is all on sinks with ``factor = 0`` is
    left as it was). Backends do not intervene on patterns (:class:`~attnlab.backends.base.Intervention` refuses
    the ``pattern`` kind), so the calibrated head output ``z' = A' V`` (V of the head's key/value group) is computed
    here from the recorded pattern and values and written as a ``z`` intervention. For the head's output that is
    exactly what editing the pattern would do (a head's pattern reaches the rest of the model only through
    ``z = A V``). Layers are calibrated in order: the pattern and values of layer ``L`` are recorded with the
    calibrations of the earlier layers already applied (a pass stopped after layer ``L``), so the result equals
    editing every chosen pattern in one pass. Cost: one partial pass per calibrated layer plus the final pass.

Everything reads the model through :meth:`Backend.run <attnlab.backends.base.Backend.run>` (sites ``pattern``,
``v``, interventions on ``z``), so it runs on every backend.
"""

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from attnlab import serialisation
from attnlab.ablation import check_heads
from attnlab.backends.base import Backend, Intervention
from attnlab.errors import ArgumentError, AttnlabError, DatasetError
from attnlab.heads.patterns import attention_patterns
from attnlab.metrics import MetricLike, get_metric
from attnlab.progress import Progress, step_progress
from attnlab.results import _from_nested, _to_nested
from attnlab.sites import Site, SiteKind

__all__ = ["SINK_KINDS", "SINK_POSITIONS", "SinkAnalysis", "SinkCalibration", "calibrate_sinks", "head_matrix_payload",
           "sink_analysis", "sink_calibration_interventions", "sink_statistics", "static_table_html"]

#: the per-head scores of a :class:`SinkAnalysis`, in the order of its ``kinds``
SINK_KINDS = ("sink", "first_token", "hidden_sink")
#: which sink positions :func:`calibrate_sinks` scales down
SINK_POSITIONS = ("hidden", "first", "all")


# -- checks ---------------------------------------------------------------------------------------------------------
def _number(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        left = "(" if lo_open else "["
        raise ArgumentError(f"'{name}' must be a number in {left}{lo:g}, {hi:g}] (got {value!r})")
    return float(value)


def _check_settings(alpha, query_fraction, min_queries, head_fraction) -> tuple[float, float, int, float]:
    alpha = _number("alpha", alpha, 1.0, 1e6)
    query_fraction = _number("query_fraction", query_fraction, 0.0, 1.0, lo_open=True)
    head_fraction = _number("head_fraction", head_fraction, 0.0, 1.0, lo_open=True)
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 1:
        raise ArgumentError(f"'min_queries' must be a positive int (got {min_queries!r})")
    return alpha, query_fraction, min_queries, head_fraction


def _check_tokens(model: Backend, tokens) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
        raise DatasetError(f"tokens must be an Int[batch, pos] tensor with batch >= 1 and pos >= 2 (got {shape})")
    if tokens.shape[1] > model.info.n_ctx:
        raise DatasetError(f"sequences are {tokens.shape[1]} tokens long, longer than {model.info.name}'s context of "
                           f"{model.info.n_ctx} tokens")
    if tokens.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
        raise DatasetError(f"tokens must be integer ids (got dtype {tokens.dtype})")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.info.d_vocab:
        raise DatasetError(f"token ids must be in [0, {model.info.d_vocab}) (got {int(tokens.min())}.."
                           f"{int(tokens.max())})")
    return tokens.long()


# -- statistics -----------------------------------------------------------------------------------------------------
def sink_statistics(
    patterns: Float[Tensor, "batch layer head_index dest_pos src_pos"],
    *,
    alpha: float = 5.0,
    query_fraction: float = 0.5,
    min_queries: int = 8,
) -> dict[str, Tensor]:
    """Per-head received mass and sink flags of every key position (see the module docstring).

    Args:
        patterns: attention probabilities (rows sum to 1, causal).
        alpha, query_fraction, min_queries: the per-head sink criterion.

    Returns:
        ``{"mass": Float[batch, layer, head_index, src_pos]`` mean attention from the queries after each key,
        ``"uniform": Float[src_pos]`` the uniform share, ``"above": Float[batch, layer, head_index, src_pos]``
        fraction of those queries giving more than ``alpha`` times their uniform share, ``"eligible":
        Bool[src_pos]`` at least ``min_queries`` queries after the key, ``"head_sink": Bool[batch, layer,
        head_index, src_pos]``}. Keys with no query after them (the last) have mass and ratio 0.
    """
    a = patterns.float()
    n = a.shape[-1]
    after = torch.tril(torch.ones(n, n), diagonal=-1)  # [q, k]: 1 where q > k
    count = after.sum(0)  # [k] queries after each key: n - 1 - k
    safe = count.clamp(min=1)
    share = 1.0 / torch.arange(1, n + 1, dtype=torch.float32)  # [q] uniform share 1 / (q + 1)
    mass = torch.einsum("blhqk,qk->blhk", a, after) / safe
    uniform = (after * share[:, None]).sum(0) / safe
    above = torch.einsum("blhqk,qk->blhk", (a > alpha * share[:, None]).float(), after) / safe
    eligible = count >= min_queries
    head_sink = (above >= query_fraction) & eligible
    return {"mass": mass, "uniform": uniform, "above": above, "eligible": eligible, "head_sink": head_sink}


# -- display helpers (shared with attnlab.heads.retrieval) -----------------------------------------------------------
def head_matrix_payload(kind: str, matrix: Tensor, *, title: str, label: str, threshold: float | None, model: dict,
                        extra: dict | None = None, top_k: int = 10) -> dict:
    """Plain JSON-able data of a [layer][head] score matrix, for a head-gallery tab.

    Returns:
        ``{"kind", "title", "label", "n_layers", "n_heads", "values" ([layer][head] floats, NaN as None),
        "row_labels" (``"L0"`` ...), "col_labels" (``"H0"`` ...), "threshold", "top" ([{"layer", "head",
        "label", "value"}], highest first), "model", **extra}``. Text is plain text: a renderer must escape it.
    """
    values = [[None if math.isnan(v) else round(float(v), 6) for v in row] for row in matrix.double().tolist()]
    n_layers, n_heads = matrix.shape
    flat = torch.nan_to_num(matrix.reshape(-1).double(), nan=-math.inf)
    order = torch.argsort(flat, descending=True, stable=True)[:top_k].tolist()
    top = [{"layer": i // n_heads, "head": i % n_heads, "label": f"L{i // n_heads}H{i % n_heads}",
            "value": values[i // n_heads][i % n_heads]} for i in order]
    return {"kind": kind, "title": title, "label": label, "n_layers": int(n_layers), "n_heads": int(n_heads),
            "values": values, "row_labels": [f"L{i}" for i in range(n_layers)],
            "col_labels": [f"H{i}" for i in range(n_heads)], "threshold": threshold, "top": top,
            "model": {"name": model.get("name"), "backend": model.get("backend")}, **(extra or {})}


def static_table_html(title: str, columns: Sequence[str], rows: Sequence[Sequence], notes: Sequence[str] = ()) -> str:
    """A static HTML table; every string (titles, token text, notes) is escaped, never interpreted as HTML."""
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in row) + "</tr>" for row in rows)
    extra = "".join(f"<p>{e(n)}</p>" for n in notes if n)
    return (f"<div class='attnlab-heads-static'><p><b>{e(title)}</b></p><table><tr>{head}</tr>{body}</table>"
            f"{extra}</div>")


# -- results --------------------------------------------------------------------------------------------------------
@dataclass
class SinkCalibration:
    """The effect of ACT-style sink calibration on a task metric.

    Attributes:
        heads: the calibrated (layer, head) pairs.
        factor: attention to the sinks was multiplied by this (then rows renormalised).
        positions: ``"hidden"``, ``"first"``, ``"all"`` or ``"given"`` (an explicit mask).
        metric: :meth:`Metric.to_dict() <attnlab.metrics.Metric.to_dict>` of the metric.
        baseline: Float[prompt] the metric without calibration; calibrated: Float[prompt] with it.
        n_sinks: sink positions calibrated per prompt.
        change: ``{"mean", "lo", "hi"}`` of calibrated minus baseline (paired percentile bootstrap over prompts;
            ``lo`` and ``hi`` None for a single prompt).
        lower_is_better: whether a lower metric is better (then a rise hurts).
        hurt, helped: prompt indices where calibration made the metric worse / better (by more than 1e-5 of the
            metric's scale, and only prompts that have a sink to calibrate: rounding is not an effect).
        n_bootstrap, level, seed: the bootstrap's settings.
    """

    heads: list[tuple[int, int]]
    factor: float
    positions: str
    metric: dict
    baseline: Tensor
    calibrated: Tensor
    n_sinks: list[int]
    change: dict
    lower_is_better: bool
    hurt: list[int]
    helped: list[int]
    n_bootstrap: int
    level: float
    seed: int

    def to_dict(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "factor": self.factor, "positions": self.positions,
                "metric": self.metric, "baseline": _to_nested(self.baseline),
                "calibrated": _to_nested(self.calibrated), "n_sinks": list(self.n_sinks), "change": self.change,
                "lower_is_better": self.lower_is_better, "hurt": list(self.hurt), "helped": list(self.helped),
                "n_bootstrap": self.n_bootstrap, "level": self.level, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "SinkCalibration":
        return cls(heads=[tuple(h) for h in d["heads"]], factor=d["factor"], positions=d["positions"],
                   metric=d["metric"], baseline=_from_nested(d["baseline"]), calibrated=_from_nested(d["calibrated"]),
                   n_sinks=list(d["n_sinks"]), change=dict(d["change"]), lower_is_better=d["lower_is_better"],
                   hurt=list(d["hurt"]), helped=list(d["helped"]), n_bootstrap=d["n_bootstrap"], level=d["level"],
                   seed=d["seed"])

    def __repr__(self) -> str:
        c = self.change
        ci = "" if c["lo"] is None else f" [{c['lo']:+.4f}, {c['hi']:+.4f}]"
        return (f"<SinkCalibration x{self.factor:g} on {self.positions} sinks of {len(self.heads)} heads: "
                f"{self.metric.get('name')} {float(self.baseline.mean()):.4f} -> {float(self.calibrated.mean()):.4f} "
                f"(change {c['mean']:+.4f}{ci}); hurts {len(self.hurt)} of "
                f"{len(self.baseline)} prompts, helps {len(self.helped)}>")


@dataclass
class SinkAnalysis(serialisation.Saved):
    """Attention sinks of a batch of sequences: per-head scores, received mass per position, the sink positions.

    Attributes:
        kinds: ``["sink", "first_token", "hidden_sink"]``.
        scores: Float[kind, layer, head_index] mean over sequences (attention probability per query).
        per_sequence: Float[kind, batch, layer, head_index].
        mass: Float[layer, head_index, pos] mean attention each key position receives from the queries after it,
            averaged over sequences (probability).
        uniform: Float[pos] the uniform share of each key position (``mass / uniform`` is :attr:`ratio`).
        position_fraction: Float[batch, pos] fraction of all heads for which each position is a sink.
        sinks: the sink positions of each sequence.
        tokens: the token ids of each sequence; str_tokens: their text (displayed escaped).
        alpha, query_fraction, min_queries, head_fraction: the criterion (module docstring).
        model, task, settings: provenance.
        calibration: a :class:`SinkCalibration` or None.
    """

    _record = serialisation.SINKS

    kinds: list[str]
    scores: Tensor
    per_sequence: Tensor
    mass: Tensor
    uniform: Tensor
    position_fraction: Tensor
    sinks: list[list[int]]
    tokens: list[list[int]]
    str_tokens: list[list[str]] = field(default_factory=list)
    alpha: float = 5.0
    query_fraction: float = 0.5
    min_queries: int = 8
    head_fraction: float = 0.1
    model: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    calibration: SinkCalibration | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 3 or self.scores.shape[0] != len(self.kinds):
            raise AttnlabError(f"scores must be [kind, layer, head] with {len(self.kinds)} kinds "
                               f"(got {tuple(self.scores.shape)})")
        if len(self.sinks) != self.position_fraction.shape[0]:
            raise AttnlabError(f"sinks must list {self.position_fraction.shape[0]} sequences (got {len(self.sinks)})")

    @property
    def n_layers(self) -> int:
        return self.scores.shape[1]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[2]

    @property
    def ratio(self) -> Tensor:
        """Float[layer, head_index, pos] received mass over the uniform share (1 = uniform; 0 for the last key)."""
        return self.mass / self.uniform.clamp(min=1e-12)

    def _kind(self, kind: str) -> int:
        if kind not in self.kinds:
            raise AttnlabError(f"'kind' must be one of {self.kinds} (got {kind!r})")
        return self.kinds.index(kind)

    def score(self, kind: str = "sink") -> Tensor:
        """Float[layer, head_index] mean score of one kind."""
        return self.scores[self._kind(kind)]

    def ranking(self, kind: str = "sink") -> list[tuple[int, int]]:
        """All heads, highest score of ``kind`` first."""
        order = torch.argsort(self.score(kind).reshape(-1), descending=True, stable=True).tolist()
        return [divmod(i, self.n_heads) for i in order]

    def sink_mask(self, positions: str = "all") -> Tensor:
        """Bool[batch, pos] the sink positions of each sequence: ``"all"``, ``"first"`` (position 0 where it is a
        sink) or ``"hidden"`` (the others).

        Raises:
            ArgumentError: another value.
        """
        if positions not in SINK_POSITIONS:
            raise ArgumentError(f"'positions' must be one of {SINK_POSITIONS} (got {positions!r})")
        mask = torch.zeros(self.position_fraction.shape, dtype=torch.bool)
        for b, ks in enumerate(self.sinks):
            for k in ks:
                if positions == "all" or (positions == "first") == (k == 0):
                    mask[b, k] = True
        return mask

    def with_calibration(self, calibration: SinkCalibration) -> "SinkAnalysis":
        return replace(self, calibration=calibration)

    # -- tables ------------------------------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per head: ``component`` (``L5H1``), ``layer``, ``head``, each score kind with its standard
        deviation over sequences, and ``first_token_ratio`` (position 0's received mass over its uniform share)."""
        import pandas as pd

        ratio = self.ratio
        rows = []
        for a in range(self.n_layers):
            for b in range(self.n_heads):
                row = {"component": f"L{a}H{b}", "layer": a, "head": b}
                for i, kind in enumerate(self.kinds):
                    row[kind] = float(self.scores[i, a, b])
                    ps = self.per_sequence[i, :, a, b]
                    row[f"{kind}_std"] = float(ps.std()) if ps.numel() > 1 else 0.0
                row["first_token_ratio"] = float(ratio[a, b, 0])
                rows.append(row)
        return pd.DataFrame(rows)

    def top(self, k: int = 5, kind: str = "sink"):
        """DataFrame of the ``k`` heads with the highest score of ``kind``.

        Raises:
            AttnlabError: unknown ``kind``.
        """
        self._kind(kind)
        df = self.to_dataframe()
        return df.sort_values(kind, ascending=False, kind="stable").head(k).reset_index(drop=True)

    def sink_positions(self):
        """DataFrame, one row per (sequence, sink position): ``sequence``, ``position``, ``token`` (text),
        ``first`` (position 0), ``fraction_of_heads``."""
        import pandas as pd

        rows = []
        for b, ks in enumerate(self.sinks):
            for k in ks:
                text = self.str_tokens[b][k] if self.str_tokens else str(self.tokens[b][k])
                rows.append({"sequence": b, "position": k, "token": text, "first": k == 0,
                             "fraction_of_heads": float(self.position_fraction[b, k])})
        return pd.DataFrame(rows, columns=["sequence", "position", "token", "first", "fraction_of_heads"])

    # -- files -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary: the ``attnlab.sinks`` record, format version 1."""
        return {**serialisation.SINKS.header(), "kinds": list(self.kinds), "scores": _to_nested(self.scores),
                "per_sequence": _to_nested(self.per_sequence), "mass": _to_nested(self.mass),
                "uniform": _to_nested(self.uniform), "position_fraction": _to_nested(self.position_fraction),
                "sinks": [list(s) for s in self.sinks], "tokens": [list(t) for t in self.tokens],
                "str_tokens": [list(t) for t in self.str_tokens], "alpha": self.alpha,
                "query_fraction": self.query_fraction, "min_queries": self.min_queries,
                "head_fraction": self.head_fraction, "model": self.model, "task": self.task,
                "settings": self.settings,
                "calibration": None if self.calibration is None else self.calibration.to_dict()}

    @classmethod
    def _from_content(cls, d: dict) -> "SinkAnalysis":
        return cls(kinds=list(d["kinds"]), scores=_from_nested(d["scores"]),
                   per_sequence=_from_nested(d["per_sequence"]), mass=_from_nested(d["mass"]),
                   uniform=_from_nested(d["uniform"]), position_fraction=_from_nested(d["position_fraction"]),
                   sinks=[list(s) for s in d["sinks"]], tokens=[list(t) for t in d["tokens"]],
                   str_tokens=[list(t) for t in d.get("str_tokens", [])], alpha=d["alpha"],
                   query_fraction=d["query_fraction"], min_queries=d["min_queries"],
                   head_fraction=d["head_fraction"], model=d.get("model", {}), task=d.get("task", {}),
                   settings=d.get("settings", {}),
                   calibration=None if d.get("calibration") is None else SinkCalibration.from_dict(d["calibration"]))

    # -- display -----------------------------------------------------------------------------------------------------
    def payload(self) -> dict:
        """Plain JSON-able data for a head-gallery tab: the [layer][head] sink-score matrix, labels, the top heads,
        and the sink positions of the first sequence (token text as plain text)."""
        first = self.sinks[0] if self.sinks else []
        words = self.str_tokens[0] if self.str_tokens else [str(t) for t in self.tokens[0]]
        return head_matrix_payload(
            "sinks", self.score("sink"), title=f"Attention sinks on {self.model.get('name', '?')}",
            label="sink score (attention per query on the sink positions, probability)", threshold=None,
            model=self.model,
            extra={"first_token": [[round(float(v), 6) for v in row] for row in self.score("first_token").tolist()],
                   "alpha": self.alpha, "head_fraction": self.head_fraction,
                   "example_sinks": [{"position": k, "token": words[k]} for k in first],
                   "n_sequences": len(self.sinks)})

    def gallery_payload(self, *extra) -> dict:
        """A :class:`~attnlab.render.contract.HeadGalleryPayload` with the sink, first-token and hidden-sink tabs
        (and those of ``extra``, e.g. a :class:`~attnlab.heads.retrieval.RetrievalScores` of the same model)."""
        from attnlab.render.gallery import head_gallery

        return head_gallery(self, extra=extra)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.contract import HEADGALLERY_MIME

        top = self.top(10)
        rows = [[r.component, f"{r.sink:.3f}", f"{r.first_token:.3f}", f"{r.hidden_sink:.3f}"]
                for r in top.itertuples()]
        pos = self.sink_positions()
        hidden = pos[~pos["first"]] if len(pos) else pos
        notes = [f"sink positions: a key given more than {self.alpha:g}x its uniform share by at least "
                 f"{self.query_fraction:g} of the queries after it, in at least {self.head_fraction:g} of the heads",
                 f"first token a sink in {int(pos['first'].sum()) if len(pos) else 0} of {len(self.sinks)} sequences; "
                 f"hidden sinks: " + (", ".join(f"{t!r}@{p}" for t, p in zip(hidden["token"][:12],
                                                                               hidden["position"][:12]))
                                      if len(hidden) else "none")]
        if self.calibration is not None:
            notes.append(repr(self.calibration))
        return {HEADGALLERY_MIME: self.gallery_payload(), "text/plain": repr(self),
                "text/html": static_table_html(f"Attention sinks on {self.model.get('name', '?')}",
                                               ["head", "sink", "first token", "hidden sinks"], rows, notes)}

    def __repr__(self) -> str:
        (a, b) = self.ranking("sink")[0]
        n_hidden = sum(1 for s in self.sinks for k in s if k != 0)
        n_first = sum(1 for s in self.sinks if 0 in s)
        return (f"<SinkAnalysis on {self.model.get('name', '?')}: {self.n_layers} layers x {self.n_heads} heads, "
                f"{len(self.sinks)} sequences; first token a sink in {n_first}, {n_hidden} hidden sinks; top sink "
                f"head L{a}H{b} ({float(self.scores[0, a, b]):.3f})"
                f"{', calibration' if self.calibration is not None else ''}>")

    def plot(self, ax=None, **kw):
        """Draw one sink score kind as a [layer, head] heatmap on [0, 1] with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_sinks`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: kind (default ``"sink"``), width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_sinks

        return plot_sinks(self, ax, **kw)


# -- analysis -------------------------------------------------------------------------------------------------------
def sink_analysis(
    model: Backend,
    tokens: Int[Tensor, "batch pos"],
    *,
    alpha: float = 5.0,
    query_fraction: float = 0.5,
    min_queries: int = 8,
    head_fraction: float = 0.1,
    batch_size: int = 8,
) -> SinkAnalysis:
    """Attention sinks of every head on ``tokens``: received mass per position, sink positions, sink scores.

    Args:
        model: any backend (nnsight needs eager attention, which :func:`attnlab.load_model` loads).
        tokens: Int[batch, pos] sequences (e.g. ``model.to_tokens([...])``).
        alpha: a query's attention to a key counts when above ``alpha`` times the uniform share ``1 / (q + 1)``
            (>= 1; default 5).
        query_fraction: share of the queries after a key that must count for a head's sink, in (0, 1].
        min_queries: keys with fewer queries after them are never sinks.
        head_fraction: share of all heads in which a position must be a sink to be a sink position, in (0, 1].
        batch_size: sequences per forward pass (patterns of every layer are held for one batch at a time).

    Returns:
        :class:`SinkAnalysis`.

    Raises:
        ArgumentError: a setting out of range.
        DatasetError: tokens not [batch, pos], longer than the context, or ids outside the vocabulary.

    Example:
        >>> sinks = sink_analysis(model, model.to_tokens(["The cat sat. The dog ran."]))  # doctest: +SKIP
        >>> sinks.top(3)  # doctest: +SKIP
    """
    alpha, query_fraction, min_queries, head_fraction = _check_settings(alpha, query_fraction, min_queries,
                                                                        head_fraction)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"'batch_size' must be a positive int (got {batch_size!r})")
    tokens = _check_tokens(model, tokens)
    batch, n = tokens.shape
    mass_sum = torch.zeros(model.info.n_layers, model.info.n_heads, n)
    per_seq, fractions, uniform = [], [], None
    for start in range(0, batch, batch_size):
        part = tokens[start:start + batch_size]
        patterns = attention_patterns(model, part).float()  # [b, layer, head, q, k]
        stats = sink_statistics(patterns, alpha=alpha, query_fraction=query_fraction, min_queries=min_queries)
        uniform = stats["uniform"]
        mass_sum += stats["mass"].sum(0)
        frac = stats["head_sink"].float().mean((1, 2))  # [b, k]
        sink = frac >= head_fraction  # [b, k]
        fractions.append(frac)
        rows = patterns[..., 1:, :]  # queries q >= 1
        first = rows[..., 0].mean(-1)  # [b, layer, head]
        on_sinks = torch.einsum("blhqk,bk->blhq", rows, sink.float()).mean(-1)
        hidden = sink.clone()
        hidden[:, 0] = False
        on_hidden = torch.einsum("blhqk,bk->blhq", rows, hidden.float()).mean(-1)
        per_seq.append(torch.stack([on_sinks, first, on_hidden]))
        del patterns, stats
    per_sequence = torch.cat(per_seq, dim=1)  # [kind, batch, layer, head]
    position_fraction = torch.cat(fractions)
    sinks = [torch.nonzero(row >= head_fraction).flatten().tolist() for row in position_fraction]
    settings = {"alpha": alpha, "query_fraction": query_fraction, "min_queries": min_queries,
                "head_fraction": head_fraction, "batch_size": batch_size}
    return SinkAnalysis(
        kinds=list(SINK_KINDS), scores=per_sequence.mean(1), per_sequence=per_sequence, mass=mass_sum / batch,
        uniform=uniform, position_fraction=position_fraction, sinks=sinks,
        tokens=[[int(t) for t in row] for row in tokens],
        str_tokens=[model.to_str_tokens(row) for row in tokens], alpha=alpha, query_fraction=query_fraction,
        min_queries=min_queries, head_fraction=head_fraction, model=model.info.to_dict(),
        task={"task": "tokens", "n_sequences": batch, "n_pos": n}, settings=settings)


# -- calibration ----------------------------------------------------------------------------------------------------
def _calibrated_z(pattern: Tensor, v: Tensor, heads: list[int], mask: Tensor, factor: float,
                  n_heads: int) -> Tensor:
    """Float[b, len(heads), pos, d_head] z of the heads with the sink columns of ``pattern`` scaled and rows
    renormalised (``pattern`` [b, head, q, k], ``v`` [b, k, kv_head, d_head], ``mask`` Bool[b, k])."""
    group = n_heads // v.shape[2]
    a = pattern[:, heads].float()  # [b, h, q, k]
    w = torch.where(mask, torch.tensor(factor), torch.tensor(1.0)).float()  # [b, k]
    scaled = a * w[:, None, None, :]
    denom = scaled.sum(-1, keepdim=True)
    new = torch.where(denom > 1e-30, scaled / denom.clamp(min=1e-30), a)
    kv = torch.tensor(heads) // group
    vals = v[:, :, kv].float()  # [b, k, h, d]
    return torch.einsum("bhqk,bkhd->bhqd", new, vals)


def sink_calibration_interventions(
    model: Backend,
    tokens: Int[Tensor, "batch pos"],
    heads: Sequence[Sequence[int]],
    sink_mask: Bool[Tensor, "batch pos"],
    factor: float,
) -> list[Intervention]:
    """``z`` interventions that apply ACT-style calibration to ``heads`` on ``tokens`` (see the module docstring).

    Layers are processed in order: the pattern and values of each layer are recorded in a pass stopped after it,
    with the earlier layers' calibrations applied, so the interventions together equal editing every chosen
    pattern in one pass.

    Args:
        model: any backend.
        tokens: Int[batch, pos].
        heads: (layer, head) pairs to calibrate (query heads).
        sink_mask: Bool[batch, pos] the key positions whose attention is scaled, per sequence.
        factor: the scale in [0, 1] (0 removes the sinks, 1 changes nothing).

    Returns:
        One :class:`~attnlab.backends.base.Intervention` of kind ``z`` per layer touched, for all rows.

    Raises:
        SiteError: a head out of range. ArgumentError: factor outside [0, 1], a mask of another shape.
    """
    factor = _number("factor", factor, 0.0, 1.0)
    heads = check_heads(model, heads)
    if tuple(sink_mask.shape) != tuple(tokens.shape) or sink_mask.dtype != torch.bool:
        raise ArgumentError(f"'sink_mask' must be Bool[batch, pos] like the tokens {tuple(tokens.shape)} (got "
                            f"{sink_mask.dtype} {tuple(sink_mask.shape)})")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    batch = tokens.shape[0]
    ivs: list[Intervention] = []
    for layer in sorted(by_layer):
        hs = sorted(set(by_layer[layer]))
        sites = [Site(SiteKind.PATTERN, layer), Site(SiteKind.V, layer)]
        out = model.run(tokens, stop_layer=layer + 1, cache=sites, interventions=ivs)
        z = _calibrated_z(out.cache[sites[0]].cpu(), out.cache[sites[1]].cpu(), hs, sink_mask.cpu(), factor,
                          model.info.n_heads)  # [b, h, pos, d]
        rows = torch.arange(batch).repeat_interleave(len(hs))
        ivs.append(Intervention(SiteKind.Z, layer, rows=rows, heads=torch.tensor(hs).repeat(batch),
                                values=z.reshape(batch * len(hs), *z.shape[2:]).contiguous()))
    return ivs


def calibrate_sinks(
    model: Backend,
    data,
    *,
    heads: Sequence[Sequence[int]] | None = None,
    factor: float = 0.5,
    positions: str | Bool[Tensor, "batch pos"] = "hidden",
    metric: MetricLike = "logit_diff",
    analysis: SinkAnalysis | None = None,
    alpha: float = 5.0,
    query_fraction: float = 0.5,
    min_queries: int = 8,
    head_fraction: float = 0.1,
    lower_is_better: bool | None = None,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    progress: "bool | Progress" = True,
) -> SinkAnalysis:
    """ACT-style calibration of attention sinks (Yu et al. 2024, section 4) and its effect on a task metric.

    Scales the attention of ``heads`` to the chosen sink positions of each prompt by ``factor``, renormalising each
    row, and measures ``metric`` at the answer position (END) against the uncalibrated run, prompt by prompt.

    Args:
        model: any backend.
        data: a :class:`~attnlab.tasks.base.PatchingDataset` (its clean prompts, answers and END positions).
        heads: (layer, head) pairs to calibrate (default every head).
        factor: the scale in [0, 1].
        positions: ``"hidden"`` (default: Yu et al. calibrate sinks inside the sequence), ``"first"``, ``"all"``,
            or a Bool[batch, pos] mask of your own.
        metric: any attnlab metric (name, :class:`~attnlab.metrics.Metric` or callable).
        analysis: a :class:`SinkAnalysis` of ``data.clean_tokens`` to take the sinks from (default: computed here
            with ``alpha``, ``query_fraction``, ``min_queries``, ``head_fraction``).
        lower_is_better: whether a lower metric is better (default: True for ``kl_div``, else False); decides which
            prompts count as hurt.
        n_bootstrap, level, seed: the paired percentile bootstrap of the change over prompts.
        progress: a tqdm bar over the two forward passes (uncalibrated, calibrated; the calibrated one edits every
            chosen head's attention and takes the longer), none (False), or a shared
            :class:`~attnlab.progress.Progress` to tick.

    Returns:
        The :class:`SinkAnalysis` of the prompts with :attr:`SinkAnalysis.calibration` attached (a
        :class:`SinkCalibration`: baseline and calibrated metric per prompt, the change with its interval, and the
        prompts it hurts and helps).

    Raises:
        ArgumentError: factor or a setting out of range, an unknown ``positions``, a mask of the wrong shape, an
            analysis of other tokens, bad bootstrap settings.
        DatasetError: as :func:`sink_analysis`. MetricError: an unknown or broken metric (checked on the
            uncalibrated run, before calibrating). SiteError: a head out of range.
    """
    from attnlab.dissociation.stats import _check, bootstrap_ci
    from attnlab.tasks.base import PatchingDataset, check_seed

    if not isinstance(data, PatchingDataset):
        raise ArgumentError(f"'data' must be a PatchingDataset (clean prompts, answers, END) (got "
                            f"{type(data).__name__})")
    factor = _number("factor", factor, 0.0, 1.0)
    seed = check_seed(seed)
    _check(n_bootstrap, level)
    resolved = get_metric(metric)
    tokens = _check_tokens(model, data.clean_tokens)
    info = model.info
    heads = [(a, b) for a in range(info.n_layers) for b in range(info.n_heads)] if heads is None \
        else check_heads(model, heads)
    if not heads:
        raise ArgumentError("'heads' is empty: give at least one (layer, head) to calibrate")
    if isinstance(positions, Tensor):
        if tuple(positions.shape) != tuple(tokens.shape) or positions.dtype != torch.bool:
            raise ArgumentError(f"a 'positions' mask must be Bool[batch, pos] like the prompts {tuple(tokens.shape)}")
    elif positions not in SINK_POSITIONS:
        raise ArgumentError(f"'positions' must be one of {SINK_POSITIONS} or a Bool[batch, pos] mask "
                            f"(got {positions!r})")
    if analysis is None:
        analysis = sink_analysis(model, tokens, alpha=alpha, query_fraction=query_fraction, min_queries=min_queries,
                                 head_fraction=head_fraction)
    elif analysis.tokens != [[int(t) for t in row] for row in tokens]:
        raise ArgumentError("'analysis' was computed on other tokens than data.clean_tokens")
    mask = positions if isinstance(positions, Tensor) else analysis.sink_mask(positions)
    end = data.positions["END"]
    answers = data.answers
    tracker, owned = step_progress(progress, total=2, desc="calibrating sinks")
    try:
        base_logits = model.run(tokens, logits_at=end).logits.float()
        tracker.update()
        reference = resolved.reference(base_logits)
        baseline = resolved(base_logits, answers.to(base_logits.device), reference).detach().cpu()
        ivs = sink_calibration_interventions(model, tokens, heads, mask, factor)
        cal_logits = model.run(tokens, interventions=ivs, logits_at=end).logits.float()
        tracker.update()
    finally:
        if owned:
            tracker.close()
    calibrated = resolved(cal_logits, answers.to(cal_logits.device), reference).detach().cpu()
    change = calibrated - baseline
    if lower_is_better is None:
        lower_is_better = resolved.name == "kl_div"
    # float noise is no effect: a prompt counts as hurt or helped only past a tolerance of its metric's scale (a
    # prompt with no sink to calibrate changes by rounding only)
    tol = 1e-5 * torch.maximum(baseline.abs(), torch.ones_like(baseline))
    moved = (change.abs() > tol) & torch.tensor([int(x) > 0 for x in mask.sum(-1)])
    worse = moved & ((change > 0) if lower_is_better else (change < 0))
    better = moved & ((change < 0) if lower_is_better else (change > 0))
    if change.numel() >= 2:
        mean, lo, hi = bootstrap_ci(change[None].double(), n_resamples=n_bootstrap, seed=seed, level=level)
        summary = {"mean": float(mean[0]), "lo": float(lo[0]), "hi": float(hi[0])}
    else:
        summary = {"mean": float(change.mean()), "lo": None, "hi": None}  # one prompt: no interval
    calibration = SinkCalibration(
        heads=heads, factor=factor, positions="given" if isinstance(positions, Tensor) else positions,
        metric=resolved.to_dict(), baseline=baseline, calibrated=calibrated,
        n_sinks=[int(x) for x in mask.sum(-1)], change=summary, lower_is_better=bool(lower_is_better),
        hurt=torch.nonzero(worse).flatten().tolist(), helped=torch.nonzero(better).flatten().tolist(),
        n_bootstrap=n_bootstrap, level=float(level), seed=seed)
    return analysis.with_calibration(calibration)
