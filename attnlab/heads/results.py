"""The result of a head analysis: scores of every head, with optional ablation effects and prefix-length curves.

A :class:`HeadScores` holds the previous-token, duplicate-token and induction scores of every head (mean and
per-sequence), one example sequence's attention patterns, and, once attached, the causal checks
(:class:`~attnlab.heads.verification.HeadAblation`), the prefix-length curves
(:class:`~attnlab.heads.prefix.PrefixCurves`) and the direct logit attribution to the copied token. It converts to a
DataFrame, lists the top heads of each kind, saves to JSON and loads back exactly, and displays in JupyterLab as the
head gallery (``application/vnd.attnlab.headgallery.v1+json``) with static HTML and plain-text fallbacks.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from attnlab import serialisation
from attnlab.errors import AttnlabError
from attnlab.heads.prefix import PrefixCurves, classify_prefix
from attnlab.heads.verification import HeadAblation
from attnlab.results import _from_nested, _to_nested

__all__ = ["HeadScores"]


@dataclass
class HeadScores(serialisation.Saved):
    """Attention-pattern scores of every head, and what verifies them.

    Attributes:
        kinds: score kinds, ``["previous_token", "duplicate_token", "induction"]``.
        scores: Float[kind, layer, head_index] mean over sequences.
        per_sequence: Float[kind, batch, layer, head_index].
        definition: ``"diagonal"`` or ``"detect_head"`` (see :mod:`attnlab.heads.scores`).
        example_tokens, example_str_tokens: the example sequence (ids and text).
        example_patterns: Float[layer, head_index, dest_pos, src_pos] attention on the example sequence, or None.
        model, task, settings: provenance.
        ablation: :class:`~attnlab.heads.verification.HeadAblation` or None.
        prefix: :class:`~attnlab.heads.prefix.PrefixCurves` or None.
        copying: Float[layer, head_index] direct logit attribution of each head to the copied token (logits), or
            None (:func:`~attnlab.heads.attribution.copying_scores`).
    """

    _record = serialisation.HEADSCORES


    kinds: list[str]
    scores: Tensor
    per_sequence: Tensor
    definition: str
    example_tokens: list[int] = field(default_factory=list)
    example_str_tokens: list[str] = field(default_factory=list)
    example_patterns: Tensor | None = None
    model: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    ablation: HeadAblation | None = None
    prefix: PrefixCurves | None = None
    copying: Tensor | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 3 or self.scores.shape[0] != len(self.kinds):
            raise AttnlabError(f"scores must be [kind, layer, head] with {len(self.kinds)} kinds "
                               f"(got {tuple(self.scores.shape)})")

    # -- access ------------------------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.scores.shape[1]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[2]

    def _kind(self, kind: str) -> int:
        if kind not in self.kinds:
            raise AttnlabError(f"'kind' must be one of {self.kinds} (got {kind!r})")
        return self.kinds.index(kind)

    def score(self, kind: str) -> Tensor:
        """Float[layer, head_index] mean score of one kind."""
        return self.scores[self._kind(kind)]

    def std(self, kind: str) -> Tensor:
        """Float[layer, head_index] standard deviation of the score over sequences (0 for one sequence)."""
        ps = self.per_sequence[self._kind(kind)]
        return ps.std(0) if ps.shape[0] > 1 else torch.zeros_like(ps[0])

    def ranking(self, kind: str) -> list[tuple[int, int]]:
        """All heads, highest score of ``kind`` first (heads not computed, NaN, last)."""
        s = self.score(kind).nan_to_num(nan=float("-inf"))
        order = torch.argsort(s.reshape(-1), descending=True, stable=True).tolist()
        return [divmod(i, self.n_heads) for i in order]

    def top(self, kind: str, k: int = 5):
        """DataFrame of the ``k`` heads with the highest score of ``kind``.

        Raises:
            HeadAnalysisError: unknown ``kind``.
        """
        self._kind(kind)  # a clear error for an unknown kind
        df = self.to_dataframe()
        return df.sort_values(kind, ascending=False, kind="stable").head(k).reset_index(drop=True)

    def prefix_classes(self, **kwargs) -> dict[tuple[int, int], str]:
        """:func:`~attnlab.heads.prefix.classify_prefix` of the attached curves.

        Raises:
            AttnlabError: no prefix curves attached.
        """
        if self.prefix is None:
            raise AttnlabError("no prefix-length curves attached: use with_prefix(prefix_curves(...))")
        return classify_prefix(self.prefix, **kwargs)

    def with_ablation(self, ablation: HeadAblation) -> "HeadScores":
        return replace(self, ablation=ablation)

    def with_prefix(self, prefix: PrefixCurves) -> "HeadScores":
        return replace(self, prefix=prefix)

    def with_copying(self, copying: Tensor) -> "HeadScores":
        return replace(self, copying=copying)

    # -- tables ------------------------------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per head: ``layer``, ``head``, ``component`` (``L5H1``), each score with its standard deviation
        over sequences, and when attached the ablation effects (``loss_increase_zero`` ...; ``{metric}_change_zero``
        ... when the ablation measured a metric), the copying DLA, the prefix curve values (``prefix_1`` ...) and
        the prefix class."""
        import pandas as pd

        classes = self.prefix_classes() if self.prefix is not None else None
        rows = []
        for layer in range(self.n_layers):
            for head in range(self.n_heads):
                row = {"component": f"L{layer}H{head}", "layer": layer, "head": head}
                for i, kind in enumerate(self.kinds):
                    row[kind] = float(self.scores[i, layer, head])
                    row[f"{kind}_std"] = float(self.std(kind)[layer, head])
                if self.ablation is not None:
                    metric = self.ablation.metric
                    prefix = "loss_increase" if metric is None else f"{metric['name']}_change"
                    for mi, m in enumerate(self.ablation.methods):
                        row[f"{prefix}_{m}"] = float(self.ablation.loss_increase[mi, layer, head])
                if self.copying is not None:
                    row["copying_dla"] = float(self.copying[layer, head])
                if self.prefix is not None:
                    for ni, n in enumerate(self.prefix.prefix_lengths):
                        row[f"prefix_{n}"] = float(self.prefix.values[ni, layer, head])
                    row["prefix_class"] = classes[(layer, head)]
                rows.append(row)
        return pd.DataFrame(rows)

    # -- files -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary (NaN as null): the ``attnlab.headscores`` record, format version 1."""
        return {
            **serialisation.HEADSCORES.header(), "kinds": self.kinds,
            "scores": _to_nested(self.scores), "per_sequence": _to_nested(self.per_sequence),
            "definition": self.definition, "example_tokens": self.example_tokens,
            "example_str_tokens": self.example_str_tokens,
            "example_patterns": None if self.example_patterns is None else _to_nested(self.example_patterns),
            "model": self.model, "task": self.task, "settings": self.settings,
            "ablation": None if self.ablation is None else self.ablation.to_dict(),
            "prefix": None if self.prefix is None else self.prefix.to_dict(),
            "copying": None if self.copying is None else _to_nested(self.copying),
        }

    @classmethod
    def _from_content(cls, d: dict) -> "HeadScores":
        nested = lambda key: None if d.get(key) is None else _from_nested(d[key])  # noqa: E731
        return cls(
            kinds=list(d["kinds"]), scores=_from_nested(d["scores"]), per_sequence=_from_nested(d["per_sequence"]),
            definition=d["definition"], example_tokens=list(d.get("example_tokens", [])),
            example_str_tokens=list(d.get("example_str_tokens", [])),
            example_patterns=nested("example_patterns"),
            model=d.get("model", {}), task=d.get("task", {}), settings=d.get("settings", {}),
            ablation=None if d.get("ablation") is None else HeadAblation.from_dict(d["ablation"]),
            prefix=None if d.get("prefix") is None else PrefixCurves.from_dict(d["prefix"]),
            copying=nested("copying"),
        )


    # -- display -----------------------------------------------------------------------------------------------------
    def gallery_payload(self, *extra):
        """The :class:`~attnlab.render.contract.HeadGalleryPayload` of this result, with a further tab for each score
        kind of ``extra`` (:class:`~attnlab.heads.retrieval.RetrievalScores`,
        :class:`~attnlab.heads.sinks.SinkAnalysis` of the same model).

        Raises:
            ArgumentError: an extra result of another layer x head shape, or one given twice.
            ArgumentTypeError: an extra of another type.
        """
        from attnlab.render.gallery import head_gallery

        return head_gallery(self, extra=extra)

    def gallery(self, *extra):
        """The head gallery with retrieval and sink tabs joined: ``scores.gallery(retrieval, sinks)`` displays as
        :meth:`gallery_payload` (a :class:`~attnlab.render.gallery.HeadGallery`; the extras are not saved with
        this result).

        Raises:
            ArgumentError, ArgumentTypeError: as :meth:`gallery_payload`.
        """
        from attnlab.render.gallery import HeadGallery

        return HeadGallery(self, *extra)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.gallery import gallery_bundle

        return gallery_bundle(self.gallery_payload(), plain=repr(self))

    def __repr__(self) -> str:
        parts = []
        for kind in self.kinds:
            (layer, head) = self.ranking(kind)[0]
            parts.append(f"top {kind} L{layer}H{head} ({float(self.scores[self._kind(kind), layer, head]):.3f})")
        n = self.per_sequence.shape[1]
        extra = "".join([", ablation" if self.ablation is not None else "",
                         ", prefix curves" if self.prefix is not None else "",
                         ", copying" if self.copying is not None else ""])
        return (f"<HeadScores ({self.definition}) on {self.model.get('name', '?')}: {self.n_layers} layers x "
                f"{self.n_heads} heads, {n} sequences; {'; '.join(parts)}{extra}>")

    def plot(self, ax=None, **kw):
        """Draw one score kind as a [layer, head] heatmap on [0, 1] with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_head_scores`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: kind (default ``"induction"``), width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_head_scores

        return plot_head_scores(self, ax, **kw)
