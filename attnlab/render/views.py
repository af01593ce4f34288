"""Turning results into render payloads, MIME bundles, static HTML and standalone reports.

labext renders the vendor MIME type interactively. Front ends without the extension (VS Code, Colab, nbviewer,
GitHub) show the ``text/html`` fallback: a static table coloured on the same scale, with no script. Standalone reports
(``attnlab patch ... --out report.html``) inline labext's own renderer (``attnlab/render/static/attnlab-render.js``,
built from ``labext/src/standalone.ts``) so that the file renders exactly as in the lab, offline, with no server.
Every string from a prompt is escaped: tokens are text, never HTML.
"""

import html
import math
from importlib import resources

from attnlab import serialisation
from attnlab.render.contract import HEATMAP_MIME, HEATMAP_SCALES, HeatmapPayload

__all__ = ["mime_bundle", "patching_heatmap", "scale_limit", "standalone_html", "static_heatmap_html"]

_NEG = (33, 102, 172)   # blue end of the diverging scale
_POS = (178, 24, 43)    # red end


def scale_limit(values, scale: str, *, fixed_range: float | None = 1.0, percentile: float = 99.0) -> float:
    """The colour-scale limit ``zmax`` of a heatmap's scale (mirrored by ``scaleLimit`` in labext/src/heatmap.ts).

    Args:
        values: nested lists of numbers (None or NaN: not computed), any number of matrices.
        scale: ``"fixed"`` (``fixed_range``), ``"symmetric"`` (the largest |value|) or ``"percentile"`` (the
            ``percentile``-th percentile of |value| by nearest rank: the ``ceil(p/100 * n)``-th smallest of the n
            computed |values|).
        fixed_range: the fixed scale's limit (None: fall back to symmetric).
        percentile: in (0, 100].

    Returns:
        A positive limit (1 when nothing is computed or every value is 0).

    Raises:
        ArgumentError: an unknown scale or a percentile outside (0, 100].
    """
    from attnlab.errors import ArgumentError

    if scale not in HEATMAP_SCALES:
        raise ArgumentError(f"'scale' must be one of {list(HEATMAP_SCALES)} (got {scale!r})")
    if not 0 < percentile <= 100:
        raise ArgumentError(f"'percentile' must be in (0, 100] (got {percentile!r})")
    if scale == "fixed" and fixed_range is not None and fixed_range > 0:
        return float(fixed_range)
    flat: list[float] = []

    def walk(x):
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif x is not None and math.isfinite(float(x)):
            flat.append(abs(float(x)))

    walk(values)
    if not flat:
        return 1.0
    if scale == "percentile":
        flat.sort()
        top = flat[max(0, math.ceil(percentile / 100 * len(flat)) - 1)]
    else:
        top = max(flat)
    return top if top > 0 else 1.0


_ANALYSIS_TITLES = {
    "activation_patching": "Activation patching",
    "attribution_patching": "Attribution patching",
    "path_patching": "Path patching",
}


def metric_label(result) -> str:
    """The axis label of a result's metric (units included), for results saved before metrics had labels too."""
    label = getattr(result, "metric_label", "") or ""
    if label:
        return label
    from attnlab.metrics import METRICS

    m = METRICS.get(result.metric)
    return m.label if m is not None else result.metric


def patching_heatmap(result, *, scale: str | None = None, zmax: float | None = None,
                     percentile: float = 99.0) -> HeatmapPayload:
    """Heatmap payload of a :class:`~attnlab.results.PatchingResult`.

    [layer, head] and [layer, pos] results map directly; [layer, head, pos] results become
    (layer x head) rows grouped by layer, one column per position.

    The colour scale (``scale``, see :data:`~attnlab.render.contract.HEATMAP_SCALES`) defaults to symmetric (± the
    largest |value|) for a complete result, and to the fixed ±1 of normalised scores for an interrupted one (so a few
    finished cells of noise are not drawn saturated) and for a difference of normalised scores. ``zmax`` sets the
    fixed range (default 1 for normalised scores, none for raw metric values). The result's warnings (e.g. baselines
    too close) travel in the payload and show under the subtitle.

    Raises:
        ArgumentError: an unknown scale or a bad percentile.
    """
    v = result.values
    if result.dims == ("layer", "head", "pos"):
        n_l, n_h, n_p = v.shape
        matrix = v.reshape(n_l * n_h, n_p)
        rows = [f"L{layer}H{head}" for layer in result.index["layer"] for head in result.index["head"]]
        groups = [i * n_h for i in range(1, n_l)]
        row_title, col_title = "head", "position"
    elif len(result.dims) == 2:
        matrix = v
        rows = list(result.labels[result.dims[0]])
        groups = None
        row_title = result.dims[0]
        col_title = {"pos": "position"}.get(result.dims[1], result.dims[1])
    else:
        raise ValueError(f"cannot draw a heatmap of dims {result.dims}")
    cols_key = result.dims[-1]
    values = [[None if math.isnan(x) else float(x) for x in row] for row in matrix.tolist()]
    b = result.baselines
    what = "clean -> corrupted run (denoising)" if result.direction == "denoising" else \
        "corrupted -> clean run (noising)"
    from attnlab.metrics import SHORT_NAMES

    short = SHORT_NAMES.get(result.metric, result.metric)
    subtitle = (f"{result.model.get('name', '?')} · {result.task.get('task', '?')} "
                f"({result.task.get('n_prompts', '?')} prompts) · patched {what} · clean {short} "
                f"{b.get('clean', float('nan')):.3f}, corrupted {short} {b.get('corrupted', float('nan')):.3f}")
    if not result.complete:
        subtitle += " · INCOMPLETE (interrupted)"
    title = (f"{_ANALYSIS_TITLES.get(result.analysis, result.analysis.replace('_', ' ').capitalize())}: "
             f"{result.component.replace('_', ' ')} ({result.direction})")
    value_label = f"normalised {metric_label(result)}"
    comparison = result.settings.get("comparison") if result.analysis == "patching_difference" else None
    normalised = True
    if comparison is not None:
        normalised = comparison.get("scores") == "normalised"
        title = f"Difference of runs: {result.component.replace('_', ' ')} (A − B)"
        subtitle = (f"A = {comparison['a'].get('name', '?')} · B = {comparison['b'].get('name', '?')}"
                    + "".join(f" · {note}" for note in comparison.get("notes", [])))
        value_label = (f"A − B, normalised {comparison.get('metric_label', metric_label(result))}" if normalised
                       else f"A − B, patched {comparison.get('metric_label', metric_label(result))}")
    fixed_range = (zmax if zmax is not None else 1.0) if normalised else zmax
    if scale is None:
        scale = "fixed" if normalised and (not result.complete or comparison is not None) else "symmetric"
    limit = scale_limit(values, scale, fixed_range=fixed_range, percentile=percentile)
    return HeatmapPayload(
        kind="heatmap", version=1,
        title=title,
        subtitle=subtitle,
        values=values,
        row_labels=rows,
        col_labels=list(result.labels[cols_key]),
        col_tokens=list(result.tokens) if (cols_key == "pos" and result.tokens is not None) else None,
        row_title=row_title,
        col_title=col_title,
        row_groups=groups,
        value_label=value_label,
        zmax=limit,
        scale=scale,
        fixed_range=fixed_range,
        clip_percentile=float(percentile),
        complete=bool(result.complete),
        warnings=[str(w.get("message", w)) if isinstance(w, dict) else str(w) for w in (result.warnings or [])],
    )


def _colour(value: float | None, zmax: float) -> str:
    if value is None:
        return "#d9d9d9"
    t = max(-1.0, min(1.0, value / zmax))
    end = _POS if t >= 0 else _NEG
    a = abs(t)
    r, g, b = (round(255 + (c - 255) * a) for c in end)
    return f"rgb({r},{g},{b})"


def static_heatmap_html(payload: HeatmapPayload) -> str:
    """A script-free HTML table of the heatmap (the ``text/html`` fallback). All labels are escaped."""
    e = html.escape
    z = payload["zmax"]
    head = "".join(
        f'<th style="padding:2px 4px;font-weight:normal;writing-mode:vertical-rl">{e(label)}'
        + (f"<br><code>{e(tok)}</code>" if payload["col_tokens"] else "") + "</th>"
        for label, tok in zip(payload["col_labels"], payload["col_tokens"] or [""] * len(payload["col_labels"])))
    body = []
    for label, row in zip(payload["row_labels"], payload["values"]):
        cells = "".join(
            f'<td title="{e(label)} · {e(col)}: {"not computed" if v is None else f"{v:.4f}"}" '
            f'style="background:{_colour(v, z)};min-width:14px;height:12px"></td>'
            for col, v in zip(payload["col_labels"], row))
        body.append(f'<tr><th style="text-align:right;padding-right:4px;font-weight:normal">{e(label)}</th>{cells}</tr>')
    return (
        '<div class="attnlab-static" style="font:11px sans-serif">'
        f'<div style="font-weight:bold;font-size:13px">{e(payload["title"])}</div>'
        f'<div style="color:#555">{e(payload["subtitle"])}</div>'
        + "".join(f'<div style="color:#8a4b00">warning: {e(w)}</div>' for w in payload.get("warnings") or [])
        +
        f'<div style="color:#555">colour: {e(payload["value_label"])}, blue -{z:.3g} · white 0 · red +{z:.3g}; '
        f'rows: {e(payload["row_title"])}, columns: {e(payload["col_title"])}. Hover a cell for its value. '
        'Static view: install the attnlab JupyterLab extension for the interactive one.</div>'
        f'<table style="border-collapse:collapse"><tr><th></th>{head}</tr>{"".join(body)}</table></div>'
    )


def mime_bundle(payload: HeatmapPayload, *, plain: str) -> dict:
    """MIME bundle: the vendor type for labext, static HTML and plain text for other front ends."""
    return {HEATMAP_MIME: payload, "text/html": static_heatmap_html(payload), "text/plain": plain}


def _renderer_js() -> str:
    try:
        return resources.files("attnlab.render").joinpath("static/attnlab-render.js").read_text()
    except FileNotFoundError:
        from attnlab.errors import AttnlabError

        raise AttnlabError(
            "attnlab's standalone renderer (attnlab/render/static/attnlab-render.js) is missing: it is built from "
            "labext/ by the package build; reinstall attnlab (pip install attnlab) or run `make setup` in a checkout"
        ) from None


def standalone_html(payload: HeatmapPayload, *, title: str | None = None) -> str:
    """A self-contained HTML document rendering ``payload`` with labext's renderer, offline (no network, no server).

    Raises:
        AttnlabError: the built renderer is missing (a source checkout that was never built).
    """
    data = serialisation.script_json(payload)  # a token "</script>" or "<!--" stays inside the JSON
    js = _renderer_js().replace("</script", "<\\/script")
    doc_title = html.escape(title or payload["title"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{doc_title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
</head><body style="margin:16px;background:#fff">
<div id="attnlab-report"></div>
<noscript>{static_heatmap_html(payload)}</noscript>
<script id="attnlab-payload" type="application/json">{data}</script>
<script>{js}</script>
<script>
attnlabRender.renderHeatmap(document.getElementById("attnlab-report"),
  JSON.parse(document.getElementById("attnlab-payload").textContent));
</script>
</body></html>
"""
