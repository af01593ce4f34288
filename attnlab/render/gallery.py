"""The head gallery: payload builder and static HTML fallback for :class:`~attnlab.heads.results.HeadScores`.

labext's gallery view (``labext/src/gallery.ts``) draws a layer x head grid of one score kind at a time (buttons
switch between previous-token, duplicate-token and induction scores); clicking a head shows its attention pattern on
the example repeated sequence, its ablation effect and its prefix-length curve. Front ends without the extension get
the ``text/html`` fallback: one static table per score kind and a list of the top heads, with no script. Every token
string is escaped.

Retrieval scores (:class:`~attnlab.heads.retrieval.RetrievalScores`, Wu et al. 2024) and attention sinks
(:class:`~attnlab.heads.sinks.SinkAnalysis`, Xiao et al. 2023; Yu et al. 2024) join the gallery as further tabs, each
with its label, unit, colour range and a one-line description: ``head_gallery(scores, extra=[retrieval, sinks])``
builds the payload and ``HeadGallery(scores, retrieval, sinks)`` (or ``scores.gallery(retrieval, sinks)``) displays
it. A :class:`RetrievalScores` or :class:`SinkAnalysis` also makes a gallery on its own (its tabs only). The
attachments are a display, not part of the saved :class:`HeadScores` record: save each result on its own.
"""

import html
import math

from attnlab.render.contract import HEADGALLERY_MIME, HeadGalleryHead, HeadGalleryPayload

def _is(obj, name: str) -> bool:
    """Whether ``obj`` is an ``attnlab.heads`` result of class ``name`` (render never imports the analyses:
    tests/test_architecture.py)."""
    return type(obj).__name__ == name and type(obj).__module__.startswith("attnlab.heads")


__all__ = ["HeadGallery", "gallery_bundle", "gallery_tabs", "head_gallery", "static_gallery_html"]

_KIND_LABELS = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction"}
_KIND_DESCRIPTIONS = {
    "previous_token": "attention from each token to the token just before it",
    "duplicate_token": "attention from a token of the second repeat to its earlier copy in the first",
    "induction": "attention from a token of the second repeat to the token after its earlier copy (induction)",
}


def _num(x, digits: int = 4) -> float | None:
    """A float (a Python number or a 0-d tensor) rounded for JSON, or None for NaN/inf."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, digits)


def _nested(matrix, digits: int = 4) -> list[list[float | None]]:
    return [[_num(v, digits) for v in row] for row in matrix.tolist()]


def _std(per: "object") -> "object":
    """Float[layer, head] standard deviation over the first axis of ``per`` [n, layer, head] (0 for one item)."""
    import torch

    return per.std(0) if per.shape[0] > 1 else torch.zeros_like(per[0])


def gallery_tabs(result) -> list[dict]:
    """The gallery tabs of a :class:`~attnlab.heads.retrieval.RetrievalScores` or
    :class:`~attnlab.heads.sinks.SinkAnalysis`: one dict per score kind with ``kind``, ``label``, ``unit``,
    ``range`` (``[lo, hi]``), ``description``, ``scores`` and ``std`` ([layer][head], rounded to 4 digits, None for
    NaN), plus ``notes`` (lines of plain text) on the first tab.

    Raises:
        ArgumentTypeError: any other type.
    """
    from attnlab.errors import ArgumentTypeError

    if _is(result, "RetrievalScores"):
        acc = float(result.accuracy.mean())
        notes = [f"retrieval: {len(result.depths)} needle inputs, haystacks of {sorted(set(result.lengths))} tokens, "
                 f"depths {sorted(set(round(d, 3) for d in result.depths))}; the model predicts {acc:.1%} of the "
                 f"needle tokens top-1; {len(result.retrieval_heads())} heads above {result.threshold:g}"]
        if result.needle_text:
            notes.append(f"needle: {result.needle_text}")
        return [{
            "kind": "retrieval", "label": "retrieval", "unit": "fraction of needle tokens",
            "range": [0.0, 1.0],
            "description": (f"Wu et al. 2024: fraction of the needle's tokens on which the head's top-1 attention "
                            f"lands on the token being copied; retrieval heads score above {result.threshold:g}"),
            "scores": _nested(result.scores), "std": _nested(_std(result.per_input)), "notes": notes}]
    if _is(result, "SinkAnalysis"):
        words = result.str_tokens[0] if result.str_tokens else [str(t) for t in result.tokens[0]]
        first = result.sinks[0] if result.sinks else []
        where = ", ".join(f"{words[k]!r} at {k}" for k in first[:12]) + (" ..." if len(first) > 12 else "")
        n_first = sum(1 for s in result.sinks if 0 in s)
        notes = [f"sinks: {len(result.sinks)} sequences; the first token is a sink position in {n_first}; sink "
                 f"positions of sequence 0: {where or 'none'} (a key given more than {result.alpha:g}x its uniform "
                 f"share by at least {result.query_fraction:g} of the later queries, in at least "
                 f"{result.head_fraction:g} of the heads)"]
        described = {
            "sink": ("sink", "Xiao et al. 2023, Yu et al. 2024: mean attention per query on the sequence's sink "
                             "positions (first token and hidden sinks)"),
            "first_token": ("first-token sink", "mean attention per query on the first token (StreamingLLM's sink)"),
            "hidden_sink": ("hidden sink", "Yu et al. 2024: mean attention per query on sink positions after the "
                                           "first token"),
        }
        tabs = []
        for i, kind in enumerate(result.kinds):
            label, description = described.get(kind, (kind, kind))
            tabs.append({"kind": kind, "label": label, "unit": "attention probability per query", "range": [0.0, 1.0],
                         "description": description, "scores": _nested(result.scores[i]),
                         "std": _nested(_std(result.per_sequence[i])), "notes": notes if i == 0 else []})
        return tabs
    raise ArgumentTypeError(f"a gallery tab needs a RetrievalScores or SinkAnalysis (got {type(result).__name__})")


def _check_same_heads(what: str, shape: tuple[int, int], other) -> None:
    from attnlab.errors import ArgumentError

    got = (other.n_layers, other.n_heads)
    if got != shape:
        raise ArgumentError(f"{type(other).__name__} has {got[0]} layers x {got[1]} heads but the gallery's {what} "
                            f"has {shape[0]} x {shape[1]}: every tab must describe the same model")


def head_gallery(result, *, extra=(), pattern_digits: int = 3) -> HeadGalleryPayload:
    """Gallery payload of a :class:`~attnlab.heads.results.HeadScores` (patterns rounded to ``pattern_digits``),
    with further tabs from ``extra``.

    Args:
        result: a :class:`~attnlab.heads.results.HeadScores`, or a :class:`~attnlab.heads.retrieval.RetrievalScores`
            or :class:`~attnlab.heads.sinks.SinkAnalysis` for a gallery of its tabs alone.
        extra: further :class:`RetrievalScores` / :class:`SinkAnalysis` of the same model, each adding its tabs
            (:func:`gallery_tabs`) after ``result``'s.
        pattern_digits: rounding of the attention patterns.

    Returns:
        :class:`~attnlab.render.contract.HeadGalleryPayload` (scores rounded to 4 digits).

    Raises:
        ArgumentTypeError: an unsupported result type. ArgumentError: results of different layer x head shapes, or
            two tabs of the same kind.
    """
    from attnlab.errors import ArgumentError

    extra = list(extra)
    if not _is(result, "HeadScores"):
        extra = [result, *extra]
        shape = (result.n_layers, result.n_heads) if hasattr(result, "n_layers") else None
        if shape is None:
            gallery_tabs(result)  # raises the type error
        payload = _tabs_only(result, shape)
    else:
        payload = _head_scores_gallery(result, pattern_digits)
        shape = (result.n_layers, result.n_heads)
    for other in extra:
        tabs = gallery_tabs(other)
        _check_same_heads("first result", shape, other)
        for tab in tabs:
            if tab["kind"] in payload["kinds"]:
                raise ArgumentError(f"the gallery already has a {tab['kind']!r} tab: give each result once")
            payload["kinds"].append(tab["kind"])
            payload["kind_labels"].append(tab["label"])
            payload["kind_units"].append(tab["unit"])
            payload["kind_ranges"].append(tab["range"])
            payload["kind_descriptions"].append(tab["description"])
            payload["scores"].append(tab["scores"])
            payload["score_std"].append(tab["std"])
            payload["notes"].extend(tab["notes"])
    if payload["selected"] is None:
        flat = [(v, li, hi) for li, row in enumerate(payload["scores"][0]) for hi, v in enumerate(row)
                if v is not None]
        if flat:
            best = max(flat, key=lambda x: (x[0], -x[1], -x[2]))
            payload["selected"] = [best[1], best[2]]
    return payload


def _tabs_only(result, shape: tuple[int, int]) -> HeadGalleryPayload:
    """The frame of a gallery with no :class:`HeadScores`: no patterns, ablations or prefix curves."""
    n_layers, n_heads = shape
    name = result.model.get("name", "?")
    return HeadGalleryPayload(
        kind="headgallery", version=1, title=f"Attention heads of {name}",
        subtitle="click a head for its scores of every tab", kinds=[], kind_labels=[], scores=[], score_std=[],
        layer_labels=[f"L{i}" for i in range(n_layers)], head_labels=[f"H{i}" for i in range(n_heads)], tokens=[],
        prefix_lengths=None, ablation_label="", clean_loss=None,
        heads=[HeadGalleryHead(layer=a, head=b, pattern=None, ablation={}, prefix=None, prefix_class=None,
                               copying=None) for a in range(n_layers) for b in range(n_heads)],
        selected=None, kind_units=[], kind_ranges=[], kind_descriptions=[], notes=[])


def _head_scores_gallery(result, pattern_digits: int) -> HeadGalleryPayload:
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
        kind_units=["attention probability"] * len(result.kinds),
        kind_ranges=[[0.0, 1.0] for _ in result.kinds],
        kind_descriptions=[f"{_KIND_DESCRIPTIONS.get(k, k)} ({result.definition} score)" for k in result.kinds],
        notes=[],
    )


class HeadGallery:
    """A head gallery to display: ``HeadGallery(head_scores, retrieval, sinks)`` shows every tab of each result.

    Attributes:
        payload: the :class:`~attnlab.render.contract.HeadGalleryPayload` (:func:`head_gallery`).
    """

    def __init__(self, result, *extra) -> None:
        self.payload = head_gallery(result, extra=extra)
        self._plain = (f"<HeadGallery of {self.payload['title'][len('Attention heads of '):]}: tabs "
                       f"{', '.join(self.payload['kind_labels'])}>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return gallery_bundle(self.payload, plain=self._plain)

    def __repr__(self) -> str:
        return self._plain


def _cell_colour(v: float | None) -> str:
    if v is None:
        return "#d9d9d9"
    t = max(0.0, min(1.0, v))
    r, g, b = (round(255 + (c - 255) * t) for c in (178, 24, 43))
    return f"rgb({r},{g},{b})"


def static_gallery_html(payload: HeadGalleryPayload, *, top_k: int = 5) -> str:
    """Script-free HTML: per score kind, a layer x head table (white at the kind's range low, red at its high; 0
    and 1 by default), its description and the top heads, then the notes. Escaped."""
    e = html.escape
    parts = ['<div class="attnlab-static" style="font:11px sans-serif">',
             f'<div style="font-weight:bold;font-size:13px">{e(payload["title"])}</div>',
             f'<div style="color:#555">{e(payload["subtitle"])}</div>',
             '<div style="color:#555">colour: score, white low · red high. Static view: install the attnlab JupyterLab '
             'extension for the interactive gallery.</div>']
    n_heads = len(payload["head_labels"])
    ranges = payload.get("kind_ranges") or [[0.0, 1.0]] * len(payload["kinds"])
    descriptions = payload.get("kind_descriptions") or [""] * len(payload["kinds"])
    units = payload.get("kind_units") or [""] * len(payload["kinds"])
    for k, (kind, label) in enumerate(zip(payload["kinds"], payload["kind_labels"])):
        zlo, zhi = ranges[k]
        grid = [[None if v is None else (v - zlo) / (zhi - zlo) if zhi > zlo else 0.0 for v in row]
                for row in payload["scores"][k]]
        raw = payload["scores"][k]
        flat = [(v, li, hi) for li, row in enumerate(raw) for hi, v in enumerate(row) if v is not None]
        best = sorted(flat, key=lambda x: -x[0])[:top_k]
        tops = ", ".join(f"L{li}H{hi} {v:.3f}" for v, li, hi in best)
        head = "".join(f'<th style="font-weight:normal;padding:0 3px">{e(h)}</th>' for h in payload["head_labels"])
        body = []
        for li, row in enumerate(grid):
            cells = "".join(
                f'<td title="{e(payload["layer_labels"][li])}{e(payload["head_labels"][hi])} {e(label)}: '
                f'{"not computed" if v is None else f"{v:.4f}"}" '
                f'style="background:{_cell_colour(c)};min-width:14px;height:12px"></td>'
                for hi, (v, c) in enumerate(zip(raw[li][:n_heads], row[:n_heads])))
            body.append(f'<tr><th style="text-align:right;font-weight:normal;padding-right:4px">'
                        f'{e(payload["layer_labels"][li])}</th>{cells}</tr>')
        parts.append(f'<div style="display:inline-block;vertical-align:top;margin:6px 12px 0 0">'
                     f'<div style="font-weight:bold">{e(label)} score'
                     f'{f" ({e(units[k])}, white {zlo:g} · red {zhi:g})" if units[k] else ""}</div>'
                     f'<div style="color:#555;max-width:420px">{e(descriptions[k])}</div>'
                     f'<div style="color:#555">top: {e(tops)}</div>'
                     f'<table style="border-collapse:collapse"><tr><th></th>{head}</tr>{"".join(body)}</table></div>')
    parts.extend(f'<div style="color:#555;margin-top:4px">{e(n)}</div>' for n in payload.get("notes") or [])
    parts.append("</div>")
    return "".join(parts)


def gallery_bundle(payload: HeadGalleryPayload, *, plain: str) -> dict:
    """MIME bundle: the gallery type for labext, static HTML and plain text for other front ends."""
    return {HEADGALLERY_MIME: payload, "text/html": static_gallery_html(payload), "text/plain": plain}
