"""The head gallery: payload builder and static HTML fallback for :class:`~attnlab.heads.results.HeadScores`.

labext's gallery view (``labext/src/gallery.ts``) draws a layer x head grid of one score kind at a time (buttons
switch between previous-token, duplicate-token and induction scores); clicking a head shows its attention pattern on
the example repeated sequence, its ablation effect and its prefix-length curve. Front ends without the extension get
the ``text/html`` fallback: one static table per score kind and a list of the top heads, with no script. Every token
string is escaped.
"""

import html
import math

from attnlab.render.contract import HEADGALLERY_MIME, HeadGalleryHead, HeadGalleryPayload

__all__ = ["gallery_bundle", "head_gallery", "static_gallery_html"]

_KIND_LABELS = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction"}


def _num(x, digits: int = 4) -> float | None:
    """A float (a Python number or a 0-d tensor) rounded for JSON, or None for NaN/inf."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, digits)


def head_gallery(result, *, pattern_digits: int = 3) -> HeadGalleryPayload:
    """Gallery payload of a :class:`~attnlab.heads.results.HeadScores` (patterns rounded to ``pattern_digits``)."""
    n_layers, n_heads = result.n_layers, result.n_heads
    scores = [[[_num(v) for v in row] for row in result.scores[k].tolist()] for k in range(len(result.kinds))]
    std = [[[_num(v) for v in row] for row in result.std(kind).tolist()] for kind in result.kinds]
    classes = result.prefix_classes() if result.prefix is not None else {}
    heads: list[HeadGalleryHead] = []
    for layer in range(n_layers):
        for head in range(n_heads):
            pattern = None
            if result.example_patterns is not None:
                pattern = [[round(float(v), pattern_digits) for v in row]
                           for row in result.example_patterns[layer, head].tolist()]
            ablation = {}
            if result.ablation is not None:
                for mi, m in enumerate(result.ablation.methods):
                    v = _num(result.ablation.loss_increase[mi, layer, head])
                    if v is not None:
                        ablation[m] = v
            heads.append(HeadGalleryHead(
                layer=layer, head=head, pattern=pattern, ablation=ablation,
                prefix=None if result.prefix is None else [_num(v) for v in result.prefix.curve(layer, head)],
                prefix_class=classes.get((layer, head)),
                copying=None if result.copying is None else _num(result.copying[layer, head]),
            ))
    kind0 = "induction" if "induction" in result.kinds else result.kinds[0]
    top = result.ranking(kind0)[0]
    n_seq = result.per_sequence.shape[1]
    task = result.task
    what = f"{task.get('task', '?')}, seq_len {task['seq_len']}" if "seq_len" in task else task.get("task", "?")
    clean = None
    if result.ablation is not None:
        clean = {k: round(v, 4) for k, v in result.ablation.clean_loss.items()}
    return HeadGalleryPayload(
        kind="headgallery", version=1,
        title=f"Attention heads of {result.model.get('name', '?')}",
        subtitle=f"{n_seq} sequences ({what}) · {result.definition} scores · click a head for its pattern, "
                 "ablation effect and prefix-length curve",
        kinds=list(result.kinds),
        kind_labels=[_KIND_LABELS.get(k, k) for k in result.kinds],
        scores=scores,
        score_std=std,
        layer_labels=[f"L{i}" for i in range(n_layers)],
        head_labels=[f"H{i}" for i in range(n_heads)],
        tokens=list(result.example_str_tokens),
        prefix_lengths=None if result.prefix is None else list(result.prefix.prefix_lengths),
        ablation_label=("second-repeat loss increase (nats/token)" if result.ablation is None
                        else result.ablation.label),
        clean_loss=clean,
        heads=heads,
        selected=[int(top[0]), int(top[1])],
    )


def _cell_colour(v: float | None) -> str:
    if v is None:
        return "#d9d9d9"
    t = max(0.0, min(1.0, v))
    r, g, b = (round(255 + (c - 255) * t) for c in (178, 24, 43))
    return f"rgb({r},{g},{b})"


def static_gallery_html(payload: HeadGalleryPayload, *, top_k: int = 5) -> str:
    """Script-free HTML: per score kind, a layer x head table (white 0, red 1) and the top heads. Escaped."""
    e = html.escape
    parts = ['<div class="attnlab-static" style="font:11px sans-serif">',
             f'<div style="font-weight:bold;font-size:13px">{e(payload["title"])}</div>',
             f'<div style="color:#555">{e(payload["subtitle"])}</div>',
             '<div style="color:#555">colour: score, white 0 · red 1. Static view: install the attnlab JupyterLab '
             'extension for the interactive gallery.</div>']
    n_heads = len(payload["head_labels"])
    for k, (kind, label) in enumerate(zip(payload["kinds"], payload["kind_labels"])):
        grid = payload["scores"][k]
        flat = [(v, li, hi) for li, row in enumerate(grid) for hi, v in enumerate(row) if v is not None]
        best = sorted(flat, key=lambda x: -x[0])[:top_k]
        tops = ", ".join(f"L{li}H{hi} {v:.3f}" for v, li, hi in best)
        head = "".join(f'<th style="font-weight:normal;padding:0 3px">{e(h)}</th>' for h in payload["head_labels"])
        body = []
        for li, row in enumerate(grid):
            cells = "".join(
                f'<td title="{e(payload["layer_labels"][li])}{e(payload["head_labels"][hi])} {e(label)}: '
                f'{"not computed" if v is None else f"{v:.4f}"}" '
                f'style="background:{_cell_colour(v)};min-width:14px;height:12px"></td>'
                for hi, v in enumerate(row[:n_heads]))
            body.append(f'<tr><th style="text-align:right;font-weight:normal;padding-right:4px">'
                        f'{e(payload["layer_labels"][li])}</th>{cells}</tr>')
        parts.append(f'<div style="display:inline-block;vertical-align:top;margin:6px 12px 0 0">'
                     f'<div style="font-weight:bold">{e(label)} score</div>'
                     f'<div style="color:#555">top: {e(tops)}</div>'
                     f'<table style="border-collapse:collapse"><tr><th></th>{head}</tr>{"".join(body)}</table></div>')
    parts.append("</div>")
    return "".join(parts)


def gallery_bundle(payload: HeadGalleryPayload, *, plain: str) -> dict:
    """MIME bundle: the gallery type for labext, static HTML and plain text for other front ends."""
    return {HEADGALLERY_MIME: payload, "text/html": static_gallery_html(payload), "text/plain": plain}
