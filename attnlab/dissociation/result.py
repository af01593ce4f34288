"""The result of a dissociation sweep: per-item values, drops with intervals, selectivity, the double dissociation.

Definitions (all computed from the stored per-item values, so a saved and reloaded result gives the same numbers):

- *drop* of a metric when a component is ablated, on a task (recall or reasoning): the mean over the task's items of
  (clean value - ablated value), in the metric's units; the *normalised drop* divides it by the task's mean clean
  value (1 = the whole clean metric lost, 0 = no effect, negative = ablation helps);
- *selectivity* of a component: normalised recall drop - normalised reasoning drop of the selectivity metric
  (positive: the component matters more for recall);
- intervals: paired percentile bootstrap over items (:mod:`attnlab.dissociation.stats`): recall and reasoning items
  are resampled separately, the same draws for every component, and a normalised drop is recomputed as a ratio of
  resampled means; p-values of "selectivity = 0" from the replicates' standard error, corrected over all components (Holm or
  Benjamini-Hochberg); a component is *selective* when its corrected p-value is below alpha;
- *double dissociation* (Shallice 1988, "From Neuropsychology to Mental Structure", ch. 10; Fartale et al. 2025): a
  component A that is recall-selective and whose recall drop interval excludes 0, and a component B that is
  reasoning-selective with its reasoning drop interval excluding 0; the evidence is their *crossover interaction*
  (recall_A - reasoning_A) - (recall_B - reasoning_B) = selectivity_A - selectivity_B, with its interval. The pair
  reported is the most selective of each side.
- *controls*: the selective set of each side ablated together, and random sets of as many components, so an effect
  can be compared with an arbitrary one of the same size.
"""

import html
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnlab import serialisation
from attnlab.dissociation import stats
from attnlab.errors import ArgumentError, MetricError

__all__ = ["DissociationResult", "check_stats_settings"]

KINDS = ("recall", "reasoning")


def check_stats_settings(*, n_bootstrap, level, correction, alpha, items=None) -> None:
    """Check the bootstrap and correction settings before any work.

    Raises:
        ArgumentError: fewer than 100 resamples, a level outside [0.5, 1), an unknown correction, alpha outside
            (0, 1), or fewer than 2 recall or reasoning items (an interval needs 2).
    """
    stats._check(n_bootstrap, level)
    if correction not in stats.CORRECTIONS:
        raise ArgumentError(f"'correction' must be one of {stats.CORRECTIONS} (got {correction!r})")
    if not isinstance(alpha, float | int) or not 0 < float(alpha) < 1:
        raise ArgumentError(f"'alpha' must be in (0, 1), e.g. 0.05 (got {alpha!r})")
    if items is not None:
        n = items.n_items()
        for kind in KINDS:
            if n[kind] < 2:
                raise ArgumentError(f"the bootstrap needs at least 2 {kind} items (got {n[kind]}; counts per family "
                                    f"{items.counts}); add items or relax the filter")


def _nested(t: Tensor | None):
    if t is None:
        return None
    return [[[None if math.isnan(x) else x for x in row] for row in mat] for mat in t.tolist()] if t.ndim == 3 else \
        [[None if math.isnan(x) else x for x in row] for row in t.tolist()]


def _tensor(data) -> Tensor | None:
    if data is None:
        return None

    def fix(x):
        return [fix(y) for y in x] if isinstance(x, list) else (float("nan") if x is None else x)

    return torch.tensor(fix(data), dtype=torch.float32)


@dataclass(eq=False)
class DissociationResult(serialisation.Saved):
    """Per-item values of every metric, clean and with each component ablated, and the statistics derived from them.

    Attributes:
        components: component names (``"L3H2"``, ``"ATTN3"``, ``"MLP3"``, groups ``"L3H2+MLP5"``), C of them.
        layer, head: each component's first block and head (None for blocks and groups).
        metrics: metric names, M of them; metric_labels: their axis labels with units.
        clean: Float[N, M] the clean value of each metric on each item.
        ablated: Float[C, N, M] the value with each component ablated (NaN: not run, the sweep was cancelled).
        kinds, families, prompts: per item.
        model: the model's description; items: the items' provenance (counts per family, filter, seed).
        settings: ablation, granularity, bootstrap, correction, batching, timing.
        complete: False when the sweep was cancelled or interrupted.
        control_sets: the control sets (``kind`` "selected" or "random", ``side``, ``components``).
        control_ablated: Float[K, N, M] the values with each control set ablated (None: no controls).
    """

    components: list[str]
    layer: list[int]
    head: list
    metrics: list[str]
    metric_labels: list[str]
    clean: Tensor
    ablated: Tensor
    kinds: list[str]
    families: list[str]
    prompts: list[str]
    model: dict
    items: dict
    settings: dict
    complete: bool = True
    control_sets: list = field(default_factory=list)
    control_ablated: Tensor | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    _record = serialisation.DISSOCIATION

    # -- construction (used by the sweep) -------------------------------------------------------------------------
    @classmethod
    def from_sweep(cls, model, items, plan, settings: dict) -> "DissociationResult":
        comps = plan.components
        return cls(
            components=[c.name for c in comps], layer=[c.start_layer for c in comps], head=[c.head for c in comps],
            metrics=[m.name for m in plan.metrics], metric_labels=[m.label for m in plan.metrics],
            clean=plan.clean, ablated=torch.full((len(comps), *plan.clean.shape), float("nan")),
            kinds=list(items.kinds), families=list(items.families),
            prompts=list(items.prompts) or [""] * len(items), model=model.info.to_dict(), items=items.describe(),
            settings=dict(settings), complete=False)

    def with_ablated(self, ablated: Tensor, complete: bool, passes: tuple[int, int]) -> "DissociationResult":
        self.ablated, self.complete = ablated, complete
        self.settings.update(forward_passes=passes[1] + 2, forward_passes_run=passes[0] + 2)
        self._cache.clear()
        return self

    def with_controls(self, sets: list[dict], ablated: Tensor) -> "DissociationResult":
        self.control_sets, self.control_ablated = sets, ablated
        self._cache.clear()
        return self

    def check_baselines(self) -> None:
        """Raise before any ablated pass when a task's clean baseline of the selectivity metric is 0 or not finite
        (a normalised drop would divide by it).

        Raises:
            MetricError: naming the task, the metric and its baseline.
        """
        j = self.metrics.index(self.settings["selectivity_metric"])
        for kind in KINDS:
            base = float(self.clean[self._rows(kind), j].double().mean())
            if not math.isfinite(base) or abs(base) < 1e-6:
                raise MetricError(f"the clean {kind} baseline of {self.metrics[j]!r} is {base:.3g}: normalised drops "
                                  "would divide by it; filter the items (filter_correct) or choose another "
                                  "selectivity_metric")

    # -- statistics -----------------------------------------------------------------------------------------------
    def _rows(self, kind: str) -> Tensor:
        return torch.tensor([i for i, k in enumerate(self.kinds) if k == kind], dtype=torch.long)

    def _weights(self, kind: str) -> Tensor:
        """Float[B, n]: how often each item of ``kind`` is drawn in each bootstrap resample."""
        key = ("w", kind)
        if key not in self._cache:
            s = self.settings
            n = len(self._rows(kind))
            idx = stats.bootstrap_indices(n, s["n_bootstrap"], s["seed"] + KINDS.index(kind))
            self._cache[key] = stats.resample_weights(idx, n)
        return self._cache[key]

    def _drops(self, values: Tensor, kind: str, j: int, normalised: bool) -> tuple[Tensor, Tensor]:
        """(point Float[C], bootstrap replicates Float[C, B]) of the (normalised) drop of metric j on ``kind``."""
        rows = self._rows(kind)
        clean = self.clean[rows, j].double()                   # [n]
        drop = clean[None, :] - values[:, rows, j].double()     # [C, n]
        w = self._weights(kind).double()                        # [B, n]
        n = len(rows)
        point, boot = drop.mean(-1), drop @ w.T / n
        if normalised:
            point, boot = point / clean.mean(), boot / (w @ clean / n)[None, :]
        return point, boot

    def _stats(self) -> dict:
        if "stats" in self._cache:
            return self._cache["stats"]
        s = self.settings
        level, j = s["level"], self.metrics.index(s["selectivity_metric"])
        out: dict = {}
        for kind in KINDS:
            for jm, m in enumerate(self.metrics):
                point, boot = self._drops(self.ablated, kind, jm, normalised=False)
                lo, hi = stats.percentile_interval(boot, level)
                out[(kind, m)] = (point, lo, hi)
            point, boot = self._drops(self.ablated, kind, j, normalised=True)
            lo, hi = stats.percentile_interval(boot, level)
            out[kind] = (point, lo, hi)
            out[("boot", kind)] = boot
        sel_boot = out[("boot", "recall")] - out[("boot", "reasoning")]
        sel = out["recall"][0] - out["reasoning"][0]
        lo, hi = stats.percentile_interval(sel_boot, level)
        p = stats.bootstrap_p(sel_boot, sel)
        p_adj = stats.adjust_p(p, s["correction"])
        out["selectivity"] = (sel, lo, hi)
        out["sel_boot"] = sel_boot
        out["p"], out["p_adjusted"] = p, p_adj
        out["significant"] = (p_adj < s["alpha"]) & ~torch.isnan(p_adj)
        self._cache["stats"] = out
        return out

    def to_dataframe(self):
        """One row per component (pandas DataFrame): ``component, layer, head``; ``recall_drop, recall_lo, recall_hi,
        reasoning_drop, reasoning_lo, reasoning_hi`` (normalised drops of the selectivity metric with their
        intervals); ``recall_<metric>_drop, _lo, _hi`` and ``reasoning_<metric>_drop ...`` for every metric, in its
        units; ``selectivity, selectivity_lo, selectivity_hi, p_value, p_adjusted, significant``."""
        import pandas as pd

        st = self._stats()
        cols: dict = {"component": self.components, "layer": self.layer, "head": self.head}
        for kind in KINDS:
            v, lo, hi = st[kind]
            cols.update({f"{kind}_drop": v.tolist(), f"{kind}_lo": lo.tolist(), f"{kind}_hi": hi.tolist()})
        for kind in KINDS:
            for m in self.metrics:
                v, lo, hi = st[(kind, m)]
                cols.update({f"{kind}_{m}_drop": v.tolist(), f"{kind}_{m}_lo": lo.tolist(),
                             f"{kind}_{m}_hi": hi.tolist()})
        v, lo, hi = st["selectivity"]
        cols.update(selectivity=v.tolist(), selectivity_lo=lo.tolist(), selectivity_hi=hi.tolist(),
                    p_value=st["p"].tolist(), p_adjusted=st["p_adjusted"].tolist(),
                    significant=st["significant"].tolist())
        return pd.DataFrame(cols)

    def selective(self, side: str = "recall") -> list[str]:
        """Components whose selectivity is significant after the correction, for ``side`` (``"recall"``: positive
        selectivity, most selective first; ``"reasoning"``: negative)."""
        if side not in KINDS:
            raise ArgumentError(f"side must be one of {KINDS} (got {side!r})")
        st = self._stats()
        sel, sig = st["selectivity"][0], st["significant"]
        sign = 1 if side == "recall" else -1
        idx = [i for i in range(len(self.components)) if bool(sig[i]) and sign * float(sel[i]) > 0]
        return [self.components[i] for i in sorted(idx, key=lambda i: -sign * float(sel[i]))]

    def ranked(self, side: str = "recall") -> list[str]:
        """Every component that ran, most selective for ``side`` first (significant or not)."""
        sel = self._stats()["selectivity"][0]
        sign = 1 if side == "recall" else -1
        idx = [i for i in range(len(self.components)) if not math.isnan(float(sel[i]))]
        return [self.components[i] for i in sorted(idx, key=lambda i: -sign * float(sel[i]))]

    def top(self, k: int = 10):
        """The ``k`` components of largest absolute selectivity (DataFrame rows)."""
        df = self.to_dataframe()
        return df.loc[df["selectivity"].abs().sort_values(ascending=False).index].head(k).reset_index(drop=True)

    @property
    def double_dissociation(self) -> dict | None:
        """The strongest double dissociation, or None (see :attr:`dissociation_statement` for why none).

        Keys: ``recall_component``, ``reasoning_component``, ``interaction`` (selectivity of the first minus the
        second, normalised units), ``interaction_lo``, ``interaction_hi``, ``statement``.
        """
        return self._dd()[0]

    @property
    def dissociation_statement(self) -> str:
        """One paragraph: the double dissociation found, or a plain statement that none was, and why."""
        return self._dd()[1]

    def _dd(self) -> tuple[dict | None, str]:
        if "dd" in self._cache:
            return self._cache["dd"]
        st = self._stats()
        s = self.settings
        names = self.components
        corr = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[s["correction"]]
        how = (f"{s['level']:.0%} paired bootstrap intervals ({s['n_bootstrap']} resamples), {corr} correction over "
               f"{sum(not math.isnan(float(x)) for x in st['p'])} components at alpha {s['alpha']}")
        a_side = [n for n in self.selective("recall") if float(st["recall"][1][names.index(n)]) > 0]
        b_side = [n for n in self.selective("reasoning") if float(st["reasoning"][1][names.index(n)]) > 0]
        if not a_side or not b_side:
            missing = [side for side, lst in (("recall", a_side), ("reasoning", b_side)) if not lst]
            text = (f"No double dissociation was found: no component is selective for {' or '.join(missing)} "
                    f"with its {' and '.join(missing)} drop interval excluding 0 ({how}).")
            self._cache["dd"] = (None, text)
            return self._cache["dd"]
        a, b = names.index(a_side[0]), names.index(b_side[0])
        inter = float(st["selectivity"][0][a] - st["selectivity"][0][b])
        lo, hi = stats.percentile_interval(st["sel_boot"][a] - st["sel_boot"][b], s["level"])

        def eff(i):
            return ", ".join(f"{kind} drop {float(st[kind][0][i]):.2f} [{float(st[kind][1][i]):.2f}, "
                             f"{float(st[kind][2][i]):.2f}]" for kind in KINDS)

        text = (f"Double dissociation: ablating {names[a]} hurts recall more than reasoning ({eff(a)}); ablating "
                f"{names[b]} does the reverse ({eff(b)}). Crossover interaction {inter:.2f} [{float(lo):.2f}, "
                f"{float(hi):.2f}] (normalised {s['selectivity_metric']} drops; {how}).")
        dd = {"recall_component": names[a], "reasoning_component": names[b], "interaction": inter,
              "interaction_lo": float(lo), "interaction_hi": float(hi), "statement": text}
        self._cache["dd"] = (dd, text)
        return self._cache["dd"]

    @property
    def controls(self) -> list[dict]:
        """Each control set with its normalised recall and reasoning drops ``[value, lo, hi]`` (selectivity metric)."""
        if self.control_ablated is None:
            return []
        j = self.metrics.index(self.settings["selectivity_metric"])
        out = []
        drops = {}
        for kind in KINDS:
            point, boot = self._drops(self.control_ablated, kind, j, normalised=True)
            lo, hi = stats.percentile_interval(boot, self.settings["level"])
            drops[kind] = (point, lo, hi)
        for i, meta in enumerate(self.control_sets):
            out.append({**meta, **{f"{kind}_drop": [float(drops[kind][0][i]), float(drops[kind][1][i]),
                                                    float(drops[kind][2][i])] for kind in KINDS}})
        return out

    # -- files ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The ``attnlab.dissociation`` record (NaN as null); :meth:`load` gives back equal values and statistics."""
        return {
            **self._record.header(),
            "components": self.components, "layer": self.layer, "head": self.head, "metrics": self.metrics,
            "metric_labels": self.metric_labels, "clean": _nested(self.clean), "ablated": _nested(self.ablated),
            "kinds": self.kinds, "families": self.families, "prompts": self.prompts, "model": self.model,
            "items": self.items, "settings": self.settings, "complete": self.complete,
            "control_sets": self.control_sets, "control_ablated": _nested(self.control_ablated),
        }

    @classmethod
    def _from_content(cls, kw: dict) -> "DissociationResult":
        kw = dict(kw)
        for key in ("clean", "ablated", "control_ablated"):
            kw[key] = _tensor(kw.get(key))
        if kw["ablated"].ndim != 3 or kw["ablated"].shape[1:] != kw["clean"].shape:
            raise ValueError("'ablated' must have shape [components, items, metrics] matching 'clean'")
        return cls(**kw)

    # -- display --------------------------------------------------------------------------------------------------
    def payload(self) -> dict:
        """The view's payload (MIME ``application/vnd.attnlab.dissociation.v1+json``; see
        :class:`attnlab.render.contract.DissociationPayload`)."""
        st = self._stats()
        s = self.settings

        def trio(key, i):
            return [_num(st[key][0][i]), _num(st[key][1][i]), _num(st[key][2][i])]

        comps = [{"name": n, "layer": self.layer[i], "head": self.head[i], "recall": trio("recall", i),
                  "reasoning": trio("reasoning", i), "selectivity": trio("selectivity", i),
                  "p_adjusted": _num(st["p_adjusted"][i]), "significant": bool(st["significant"][i])}
                 for i, n in enumerate(self.components)]
        j = self.metrics.index(s["selectivity_metric"])
        label = self.metric_labels[j]
        return {
            "kind": "dissociation", "title": self.title, "metric": s["selectivity_metric"], "metric_label": label,
            "granularity": s["granularity"], "ablation": s["ablation"],
            "n_layers": self.model.get("n_layers"), "n_heads": self.model.get("n_heads"),
            "correction": s["correction"], "alpha": s["alpha"], "level": s["level"], "n_bootstrap": s["n_bootstrap"],
            "complete": self.complete, "n_items": {k: self.kinds.count(k) for k in KINDS},
            "baselines": {k: _num(self.clean[self._rows(k), j].double().mean()) for k in KINDS},
            "components": comps, "double_dissociation": self.double_dissociation,
            "statement": self.dissociation_statement, "controls": self.controls,
        }

    @property
    def title(self) -> str:
        s = self.settings
        what = {"heads": "every head", "attn": "every attention block", "mlp": "every MLP block",
                "blocks": "every attention and MLP block", "components": f"{len(self.components)} components"}
        return (f"Recall versus reasoning: {s['ablation']} ablation of {what.get(s['granularity'], '')} "
                f"({self.model.get('name', '?')})")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.contract import DISSOCIATION_MIME

        return {DISSOCIATION_MIME: self.payload(), "text/html": self._html(), "text/plain": repr(self)}

    def _html(self) -> str:
        """A static table of the most selective components (escaped text; for front ends without labext)."""
        rows = []
        for _, r in self.top(12).iterrows():
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
                r["component"], f"{r['recall_drop']:.3f} [{r['recall_lo']:.3f}, {r['recall_hi']:.3f}]",
                f"{r['reasoning_drop']:.3f} [{r['reasoning_lo']:.3f}, {r['reasoning_hi']:.3f}]",
                f"{r['selectivity']:.3f}", f"{r['p_adjusted']:.3g}", "yes" if r["significant"] else "")) + "</tr>")
        head = "".join(f"<th>{h}</th>" for h in ("component", "recall drop", "reasoning drop", "selectivity",
                                                  "p (corrected)", "selective"))
        return (f"<div class='attnlab-dissociation-static'><p><b>{html.escape(self.title)}</b></p>"
                f"<p>{html.escape(self.dissociation_statement)}</p><table><tr>{head}</tr>{''.join(rows)}</table></div>")

    def __repr__(self) -> str:
        n = {k: self.kinds.count(k) for k in KINDS}
        state = "" if self.complete else f", INCOMPLETE ({int((~torch.isnan(self.ablated[:, 0, 0])).sum())} of " \
                                         f"{len(self.components)} components run)"
        dd = self.double_dissociation
        found = (f"double dissociation {dd['recall_component']} / {dd['reasoning_component']}" if dd else
                 "no double dissociation")
        return (f"<DissociationResult {self.settings['ablation']} ablation of {len(self.components)} components on "
                f"{self.model.get('name', '?')}: {n['recall']} recall, {n['reasoning']} reasoning items; "
                f"{len(self.selective('recall'))} recall- and {len(self.selective('reasoning'))} reasoning-selective; "
                f"{found}{state}>")

    def plot(self, ax=None, **kw):
        """Draw recall drop against reasoning drop, with intervals with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_dissociation`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_dissociation

        return plot_dissociation(self, ax, **kw)


def _num(x) -> float | None:
    v = float(x)
    return None if math.isnan(v) else v
