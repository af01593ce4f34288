"""Two patching runs compared cell by cell: their difference as a result of its own.

Comparisons a researcher makes with activation patching (Heimersheim & Nanda 2024, arXiv 2404.15255, section 3):
denoising against noising on the same prompts (sufficiency against necessity), one task against another on the same
model (IOI against Colored Objects: which heads are shared), two models of the same shape, two seeds of the prompt
sampler (is a head's score stable?). :func:`compare_results` returns ``a - b`` as a
:class:`~attnlab.results.PatchingResult` (``analysis="patching_difference"``) that tables, saves, loads and draws like
any result; its ``settings["comparison"]`` names both runs.

Two kinds of scores:

- ``"normalised"``: each run's normalised scores (0 no effect, 1 the clean-corrupted gap restored in denoising, -1
  destroyed in noising), so the difference is in units of each run's own gap. This is the natural comparison across
  tasks or models whose raw metrics differ in size; a difference of 0.3 means "0.3 of its gap more in A".
- ``"raw"``: the patched metric's mean over prompts, in the metric's units (logits for the logit difference), so
  the difference is the change of the metric itself. Both runs must use the same metric.

Only cells both runs computed have a difference; a cell either run did not compute (an interrupted sweep) is NaN.
Runs are comparable when they swept the same component over the same grid (same layers, heads and number of
positions); position labels may differ (IOI's ``S1`` against Colored Objects' ``C1``): positions are then compared
by index, and the result's notes and column labels (``"S1/C1"``) say so.
"""

from dataclasses import replace

import torch

from attnlab import serialisation
from attnlab.errors import RunComparisonError

# attnlab.results is not imported here: PatchingResult.difference() calls this module, and the import graph stays
# one-way (tests/test_architecture.py). A result is recognised by its record format; the difference is built with
# the class of ``a``.

__all__ = ["RunComparisonError", "compare_results", "comparison_payloads", "metric_label_of", "result_scores", "run_name"]

SCORES = ("normalised", "raw")


def _is_result(obj) -> bool:
    """Whether ``obj`` is a :class:`~attnlab.results.PatchingResult` (recognised by its record format)."""
    return getattr(type(obj), "_record", None) is serialisation.RESULT and hasattr(obj, "values")


def run_name(result: "PatchingResult") -> str:
    """A short description of a run: ``"smollm2-135m · ioi (16 prompts, seed 0) · heads · denoising"``."""
    task = result.task or {}
    bits = [str(result.model.get("name", "?")), str(task.get("task", "?"))]
    extra = []
    if task.get("n_prompts") is not None:
        extra.append(f"{task['n_prompts']} prompts")
    if task.get("seed") is not None:
        extra.append(f"seed {task['seed']}")
    if extra:
        bits[-1] += f" ({', '.join(extra)})"
    bits += [result.component, result.direction]
    if result.metric != "logit_diff":
        bits.append(result.metric)
    if not result.complete:
        bits.append("incomplete")
    return " · ".join(bits)


def result_scores(result: "PatchingResult", scores: str = "normalised") -> torch.Tensor:
    """The values compared: the normalised scores, or the patched metric's mean over prompts (``"raw"``).

    Returns:
        Float[*dims] tensor (NaN where not computed).

    Raises:
        RunComparisonError: an unknown ``scores``, or raw scores of a result without per-prompt values.
    """
    if scores not in SCORES:
        raise RunComparisonError(f"'scores' must be one of {list(SCORES)} (got {scores!r})")
    if scores == "normalised":
        return result.values.float()
    if result.per_prompt is None:
        raise RunComparisonError("raw scores need the per-prompt patched metric, and this result has none "
                                 "(per_prompt is None); compare normalised scores instead")
    return result.per_prompt.float().mean(dim=-1)


def _check(a: "PatchingResult", b: "PatchingResult", scores: str) -> list[str]:
    """Refuse pairs that cannot be compared cell by cell; return notes on what is compared."""
    for name, r in (("a", a), ("b", b)):
        if not _is_result(r):
            raise RunComparisonError(f"'{name}' must be a PatchingResult (got {type(r).__name__})")
        if r.analysis == "patching_difference":
            raise RunComparisonError(f"'{name}' is already a difference of runs; compare the runs themselves")
    if a.component != b.component or a.dims != b.dims:
        raise RunComparisonError(
            f"the runs patched different components: A {a.component!r} {list(a.dims)}, B {b.component!r} "
            f"{list(b.dims)}; compare two sweeps of the same component")
    if tuple(a.values.shape) != tuple(b.values.shape):
        shape = " x ".join(map(str, a.values.shape)), " x ".join(map(str, b.values.shape))
        raise RunComparisonError(
            f"the grids differ: A is {shape[0]} ({', '.join(a.dims)}), B is {shape[1]}; models of the same shape and "
            "prompts of the same length compare cell by cell")
    for axis in ("layer", "head"):
        if axis in a.dims and a.index[axis] != b.index[axis]:
            raise RunComparisonError(f"the runs cover different {axis}s: A {a.index[axis]}, B {b.index[axis]}")
    notes = []
    if scores == "raw" and a.metric != b.metric:
        raise RunComparisonError(
            f"raw scores of different metrics cannot be subtracted (A {a.metric!r}, B {b.metric!r}); compare "
            "normalised scores, which are fractions of each run's own clean-corrupted gap")
    if a.metric != b.metric:
        notes.append(f"metrics differ (A {a.metric}, B {b.metric}): normalised units of each run's own gap")
    if "pos" in a.dims and a.labels["pos"] != b.labels["pos"]:
        pairs = ", ".join(f"{x}↔{y}" for x, y in zip(a.labels["pos"], b.labels["pos"]) if x != y)
        notes.append(f"positions compared by index: {pairs}")
    if a.model.get("name") != b.model.get("name"):
        notes.append(f"models differ: A {a.model.get('name', '?')}, B {b.model.get('name', '?')}")
    return notes


def compare_results(a: "PatchingResult", b: "PatchingResult", *, scores: str = "normalised",
                    names: tuple[str, str] | None = None) -> "PatchingResult":
    """``a - b`` cell by cell, as a result that tables, saves and draws like any other.

    Args:
        a, b: two :class:`~attnlab.results.PatchingResult` of the same component over the same grid (same layers,
            heads and number of positions). Position labels may differ (compared by index).
        scores: ``"normalised"`` (difference of normalised scores, dimensionless) or ``"raw"`` (difference of the
            patched metric's mean over prompts, in the metric's units; needs the same metric in both).
        names: display names of A and B (default: model, task, prompts, seed, component and direction).

    Returns:
        A :class:`~attnlab.results.PatchingResult` with ``analysis="patching_difference"``; ``values`` Float[*dims]
        is ``a - b`` (NaN where either run did not compute the cell); ``per_prompt`` None; ``labels`` A's labels
        (``"A/B"`` where position labels differ); ``settings["comparison"]`` = ``{"a", "b", "scores", "notes",
        "metric_label"}`` where ``a`` and ``b`` hold each run's name, baselines, direction, task, model and warnings;
        ``warnings`` are both runs' warnings, prefixed with ``A:`` / ``B:``; ``complete`` is true when both are.

    Raises:
        RunComparisonError: not two results, different components or grids, different layers or heads, raw scores
            of different metrics or without per-prompt values, an unknown ``scores``.
    """
    if scores not in SCORES:
        raise RunComparisonError(f"'scores' must be one of {list(SCORES)} (got {scores!r})")
    notes = _check(a, b, scores)
    va, vb = result_scores(a, scores), result_scores(b, scores)
    diff = va - vb
    name_a, name_b = names if names is not None else (run_name(a), run_name(b))
    labels = {axis: list(a.labels[axis]) for axis in a.dims}
    if "pos" in a.dims and a.labels["pos"] != b.labels["pos"]:
        labels["pos"] = [x if x == y else f"{x}/{y}" for x, y in zip(a.labels["pos"], b.labels["pos"])]
    tokens = a.tokens if a.tokens == b.tokens else None
    from attnlab.render.views import metric_label

    def summary(r: "PatchingResult", name: str) -> dict:
        return {"name": name, "direction": r.direction, "metric": r.metric, "baselines": dict(r.baselines),
                "task": dict(r.task), "model": {"name": r.model.get("name")}, "complete": r.complete,
                "warnings": [w.get("message", "") for w in r.warnings or []]}

    warnings = [{**w, "message": f"{tag}: {w.get('message', '')}"} for tag, r in (("A", a), ("B", b))
                for w in (r.warnings or [])]
    direction = a.direction if a.direction == b.direction else f"{a.direction} − {b.direction}"
    return type(a)(
        analysis="patching_difference", component=a.component, direction=direction, dims=a.dims,
        values=diff, per_prompt=None, labels=labels, index={k: list(v) for k, v in a.index.items()},
        tokens=tokens, prompt_tokens=a.prompt_tokens if a.prompt_tokens == b.prompt_tokens else None,
        metric=a.metric if a.metric == b.metric else f"{a.metric} − {b.metric}",
        metric_description=f"difference (A − B) of {'normalised scores' if scores == 'normalised' else 'the patched metric'}",
        metric_label=metric_label(a), baselines={}, model=dict(a.model) if a.model == b.model else {},
        task={}, settings={"comparison": {"a": summary(a, name_a), "b": summary(b, name_b), "scores": scores,
                                          "notes": notes, "metric_label": metric_label(a)}},
        complete=a.complete and b.complete,
        layers_done=sorted(set(a.layers_done) & set(b.layers_done)), warnings=warnings,
    )


def comparison_payloads(a: "PatchingResult", b: "PatchingResult", *, scores: str = "normalised",
                        names: tuple[str, str] | None = None) -> dict:
    """The heatmap payloads of A, B and A - B on one shared colour scale (what the Explorer's comparison view draws).

    Returns:
        ``{"a", "b", "diff"}`` :class:`~attnlab.render.contract.HeatmapPayload` dicts (``a``/``b`` show the compared
        scores: normalised, or the raw patched metric), ``"scores"``, ``"notes"``, and ``"difference"``: the
        difference result itself. Normalised scores share the fixed ±1 scale by default; raw ones the symmetric
        scale of all three.

    Raises:
        RunComparisonError: as :func:`compare_results`.
    """
    diff = compare_results(a, b, scores=scores, names=names)
    cmp = diff.settings["comparison"]
    out = {"scores": scores, "notes": list(cmp["notes"]), "difference": diff}
    for key, r in (("a", a), ("b", b)):
        shown = r if scores == "normalised" else replace(r, values=result_scores(r, "raw"), warnings=r.warnings)
        payload = dict(shown.heatmap_payload(scale="fixed" if scores == "normalised" else "symmetric"))
        payload["title"] = f"{key.upper()}: {payload['title']}"
        if scores == "raw":
            payload["value_label"] = f"patched {metric_label_of(r)} (mean over prompts)"
            payload["fixed_range"] = None
        out[key] = payload
    out["diff"] = dict(diff.heatmap_payload())
    out["diff"]["warnings"] = []  # each run's warnings show on its own panel
    if scores == "raw":  # one symmetric scale over the three
        from attnlab.render.views import scale_limit

        z = scale_limit([out[k]["values"] for k in ("a", "b", "diff")], "symmetric")
        for k in ("a", "b", "diff"):
            out[k]["zmax"] = z
            out[k]["scale"] = "symmetric"
    return out


def metric_label_of(result: "PatchingResult") -> str:
    """The metric's label with its unit (``"logit difference (logits)"``)."""
    from attnlab.render.views import metric_label

    return metric_label(result)
