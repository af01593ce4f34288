"""The composition view: payload builder and static HTML fallback for
:class:`~attnlab.heads.composition.CompositionScores`.

labext's composition view (``labext/src/composition.ts``) draws the sender x receiver matrix of one mode at a time
(buttons switch between Q-, K- and V-composition, Elhage et al. 2021) on a canvas, with the layers labelled along
both axes and a colour bar that marks the random baseline. Clicking a cell shows, side by side, the singular values
of that pair's composed matrix (Merullo et al. 2024, "Talking Heads": a few large values then a drop is a low-rank
channel) and the path-patching effect of the same pair. Both are precomputed here, for the top ``top_n`` pairs of
each mode (:func:`~attnlab.heads.composition.composition_svd`, which needs the model's weights) and for every pair
of a :class:`~attnlab.heads.composition.CompositionComparison`; a cell outside that set says so.

Front ends without the extension get the ``text/html`` fallback: the top pairs of each mode as tables, escaped.
"""

import html
import math

from attnlab.render.contract import (
    COMPOSITION_MIME,
    CompositionBaseline,
    CompositionChannelData,
    CompositionPathPair,
    CompositionPathPatching,
    CompositionPayload,
)

__all__ = ["CompositionView", "composition_bundle", "composition_view", "static_composition_html"]

_DIGITS = 6


def _num(x, digits: int = _DIGITS) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else round(x, digits)


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= x (1 for x <= 0)."""
    if not x > 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    return next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= x * (1 - 1e-12))


def _parse_head(label: str) -> list[int]:
    layer, head = label[1:].split("H")
    return [int(layer), int(head)]


def _path_patching(comparison, scores) -> CompositionPathPatching:
    pairs: list[CompositionPathPair] = []
    for row in comparison.table.itertuples():
        pairs.append(CompositionPathPair(
            sender=_parse_head(row.sender), receivers=[_parse_head(r) for r in str(row.receiver).split("+")],
            effect=_num(row.path_effect), composition=_num(row.composition)))
    return CompositionPathPatching(
        mode=comparison.mode, spearman=_num(comparison.spearman, 4), n=int(comparison.n),
        absolute=bool(comparison.absolute),
        effect_label="path-patching effect (the sweep's metric change when the sender's path into the receiver "
                     "is patched)",
        pairs=pairs)


def _channel(scores, model, mode: str, sender: tuple[int, int], receiver: tuple[int, int], fold_norm: bool):
    # the analysis runs in attnlab.heads (render never imports the analyses: tests/test_architecture.py)
    ch = scores.channel(model, sender, receiver, mode=mode, fold_norm=fold_norm)
    return CompositionChannelData(
        mode=mode, sender=list(ch.sender), receiver=list(ch.receiver), score=_num(ch.score),
        singular_values=[_num(v) for v in ch.singular_values.tolist()], rank90=ch.rank_for(0.9))


def composition_view(scores, *, model=None, comparison=None, top_n: int = 20, mode: str | None = None) \
        -> CompositionPayload:
    """The :class:`~attnlab.render.contract.CompositionPayload` of ``scores``.

    Args:
        scores: a :class:`~attnlab.heads.composition.CompositionScores`.
        model: the backend the scores were computed on; with it the singular values of the ``top_n`` pairs of each
            mode (and of the compared path-patching pairs) are precomputed with
            :func:`~attnlab.heads.composition.composition_svd` (same norm folding as the scores). Without it, no
            singular values.
        comparison: a :class:`~attnlab.heads.composition.CompositionComparison` of these scores with path patching;
            its pairs' effects are shown beside the singular values (up to ``top_n`` of its pairs, largest
            \\|effect\\| first, get their singular values too).
        top_n: pairs per mode to precompute (>= 0).
        mode: the mode shown first (default ``"k"`` when computed, else the first mode).

    Returns:
        The payload (scores rounded to 6 decimals; null where the receiver is not in a later layer).

    Raises:
        ArgumentTypeError: ``scores`` or ``comparison`` of the wrong type, ``top_n`` not an integer.
        ArgumentError: ``top_n`` below 0; a mode not computed; a model or comparison of another shape or mode.
    """
    from attnlab.errors import ArgumentError, ArgumentTypeError
    from attnlab.sites import as_int

    if not type(scores).__name__ == "CompositionScores":
        raise ArgumentTypeError(f"'scores' must be a CompositionScores (got {type(scores).__name__})")
    n = as_int(top_n)
    if n is None:
        raise ArgumentTypeError(f"'top_n' must be an integer (got {top_n!r})")
    if n < 0:
        raise ArgumentError(f"'top_n' must be at least 0 (got {n})")
    if comparison is not None and not type(comparison).__name__ == "CompositionComparison":
        raise ArgumentTypeError(f"'comparison' must be a CompositionComparison (from compare_with_path_patching; got "
                                f"{type(comparison).__name__})")
    if comparison is not None and comparison.mode not in scores.modes:
        raise ArgumentError(f"the comparison is of {comparison.mode.upper()}-composition, which these scores do not "
                            f"have (modes {scores.modes})")
    first = scores.modes[scores._index(mode)] if mode is not None else ("k" if "k" in scores.modes
                                                                       else scores.modes[0])
    L, H = scores.n_layers, scores.n_heads
    if model is not None and (model.info.n_layers, model.info.n_heads) != (L, H):
        raise ArgumentError(f"the model has {model.info.n_layers} layers x {model.info.n_heads} heads but the scores "
                            f"{L} x {H}: give the model the scores were computed on")
    senders = [[a, b] for a in range(L - 1) for b in range(H)]
    receivers = [[a, b] for a in range(1, L) for b in range(H)]
    matrices, ranges, baseline = {}, {}, {}
    for m in scores.modes:
        s = scores.score(m)[: L - 1, :, 1:, :].reshape((L - 1) * H, (L - 1) * H)
        matrices[m] = [[_num(v) for v in row] for row in s.double().tolist()]
        finite = [v for row in matrices[m] for v in row if v is not None]
        ranges[m] = [0.0, _nice_ceiling(max(finite, default=1.0))]
        baseline[m] = CompositionBaseline(mean=_num(scores.baseline_mean(m)), std=_num(scores.baseline_std(m)),
                                          draws=int(scores.baseline.shape[1]))
    channels: list[CompositionChannelData] = []
    fold = bool(scores.settings.get("fold_norm", True))
    if model is not None and n > 0:
        wanted: list[tuple[str, tuple[int, int], tuple[int, int]]] = []
        for m in scores.modes:
            for row in scores.top(m, n).itertuples():
                wanted.append((m, (int(row.sender_layer), int(row.sender_head)),
                               (int(row.receiver_layer), int(row.receiver_head))))
        if comparison is not None and comparison.n:
            table = comparison.table.assign(_abs=comparison.table["path_effect"].abs())
            for row in table.sort_values("_abs", ascending=False, kind="stable").head(n).itertuples():
                for receiver in str(row.receiver).split("+"):
                    wanted.append((comparison.mode, tuple(_parse_head(row.sender)), tuple(_parse_head(receiver))))
        for key in dict.fromkeys(wanted):
            channels.append(_channel(scores, model, *key, fold))
    model_name = str(scores.model.get("name", "?"))
    settings = scores.settings
    return CompositionPayload(
        kind="composition", version=1,
        title=f"Composition between the heads of {model_name}",
        subtitle=("rows: sender heads, columns: receiver heads of later layers; score = ||W_OV(sender) R(receiver)|| "
                  "/ (||W_OV|| ||R||), R the receiver's W_QK (Q, K) or W_OV (V); Elhage et al. 2021. Click a cell "
                  "for its singular values (Merullo et al. 2024) and path patching"),
        model_name=model_name, n_layers=L, n_heads=H, modes=list(scores.modes), mode=first,
        senders=senders, receivers=receivers, matrices=matrices, ranges=ranges, baseline=baseline,
        channels=channels, top_n=n if model is not None else 0,
        path_patching=None if comparison is None else _path_patching(comparison, scores),
        settings=[["norm folded", str(settings.get("folded", "?"))],
                  ["baseline", f"{int(scores.baseline.shape[1])} Gaussian draws, seed {settings.get('seed', '?')}"],
                  ["rotary", "ignored (scores of the projections)" if settings.get("rotary_ignored") else "n/a"]])


def static_composition_html(payload: CompositionPayload, *, top_k: int = 10) -> str:
    """Script-free HTML: the top ``top_k`` pairs of each mode with their multiple of the random baseline. Escaped."""
    e = html.escape
    parts = ['<div class="attnlab-static" style="font:11px sans-serif">',
             f'<div style="font-weight:bold;font-size:13px">{e(payload["title"])}</div>',
             f'<div style="color:#555">{e(payload["subtitle"])}</div>',
             '<div style="color:#555">Static view: install the attnlab JupyterLab extension for the interactive '
             'sender x receiver matrix.</div>']
    for m in payload["modes"]:
        cells = [(v, i, j) for i, row in enumerate(payload["matrices"][m]) for j, v in enumerate(row) if v is not None]
        best = sorted(cells, key=lambda x: -x[0])[:top_k]
        base = payload["baseline"][m]
        rows = "".join(
            f"<tr><td>L{payload['senders'][i][0]}H{payload['senders'][i][1]}</td>"
            f"<td>L{payload['receivers'][j][0]}H{payload['receivers'][j][1]}</td><td>{v:.4f}</td>"
            f"<td>{v / base['mean']:.2f}x</td></tr>" for v, i, j in best if base["mean"])
        parts.append(f'<table style="display:inline-table;margin:6px 12px 0 0;vertical-align:top">'
                     f"<caption>top {e(m.upper())}-composition (random {base['mean']:.4f} &plusmn; "
                     f"{base['std']:.4f})</caption><tr><th>sender</th><th>receiver</th><th>score</th>"
                     f"<th>vs random</th></tr>{rows}</table>")
    parts.append("</div>")
    return "".join(parts)


def composition_bundle(payload: CompositionPayload, *, plain: str) -> dict:
    """MIME bundle: the composition type for labext, static HTML and plain text for other front ends."""
    return {COMPOSITION_MIME: payload, "text/html": static_composition_html(payload), "text/plain": plain}


class CompositionView:
    """A composition view to display: ``CompositionView(scores, model=model, comparison=cmp, top_n=20)``.

    Attributes:
        payload: the :class:`~attnlab.render.contract.CompositionPayload` (:func:`composition_view`).
    """

    def __init__(self, scores, *, model=None, comparison=None, top_n: int = 20, mode: str | None = None) -> None:
        self.payload = composition_view(scores, model=model, comparison=comparison, top_n=top_n, mode=mode)
        self._plain = repr(scores)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return composition_bundle(self.payload, plain=self._plain)

    def __repr__(self) -> str:
        return self._plain
