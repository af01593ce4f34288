"""Results draw themselves with matplotlib: ``result.plot()`` returns a Figure sized for a paper column.

Every result type has a thin ``plot(ax=None, **kw)`` method that calls the function of this module drawing it; the
figure can then be restyled (it is an ordinary :class:`matplotlib.figure.Figure`) and saved with ``savefig``. The
drawing follows one set of habits, so that figures from different analyses read alike and do not mislead:

- **Size.** One column of a two-column paper: 3.4 inches wide (``width="column"``, the default); ``width="double"``
  (7.0 inches) for a figure across both columns, or any width in inches. Fonts are 6 to 8 points, so that the figure
  prints at its size without scaling. Passing ``ax=`` draws into an existing axes instead (a panel of your own
  figure); the axes' figure is returned.
- **Labels.** Every figure has a title (the analysis, the model and, where it matters, the task), labelled axes with
  units, and every heatmap has a colour bar labelled with the metric and its unit. Tick labels are thinned so that
  they never overlap (a heatmap of 30 layers x 9 heads labels every layer; one of 270 heads labels every layer's
  first head).
- **Honest colour scales.** Signed quantities (patching scores, ablation effects, edge scores) use a diverging
  colour map centred at 0: ``RdBu_r``, red positive, blue negative, as labext's heatmaps. The default range is
  ``±1`` for normalised scores (a patching result says it is normalised: 1 = the clean run restored), so runs can
  be compared by eye, and ``±max|value|`` for raw values. Quantities that cannot be negative and have a natural
  range (attention probabilities, head scores in [0, 1]) use a sequential map (white to red, as the head gallery) on
  that range. ``vmin=`` / ``vmax=`` fix the range; ``clip_percentile=99`` clips it at that percentile of |value|
  (outliers then saturate, and the colour bar shows arrows). Values outside the range always get an arrow on the
  colour bar.
- **What was not computed is shown as such.** NaN cells of a cancelled or partial result (layers a sweep did not
  reach, heads not ablated, edges ACDC never tested) are drawn grey and hatched, with a "not computed" legend, and
  never change the colour range: a partial normalised result is still drawn on ±1. Cells that do not exist (a
  receiver before its sender, a composition pair within one layer) are plain grey.

matplotlib is imported inside the functions, so ``import attnlab`` does not load it. This module reads results by
their attributes only and imports no analysis module (``tests/test_architecture.py``: the analyses import it, lazily).
"""

import math
import textwrap
from collections.abc import Sequence

import numpy as np

from attnlab.errors import ArgumentError, ArgumentTypeError

__all__ = [
    "COLUMN_WIDTH",
    "COMPARISON_CODES",
    "DOUBLE_WIDTH",
    "NOT_COMPUTED_COLOUR",
    "color_limits",
    "figure_width",
    "plot_acdc",
    "plot_agreement",
    "plot_circuit",
    "plot_circuit_comparison",
    "plot_composition",
    "plot_dissociation",
    "plot_edge_scores",
    "plot_faithfulness_curve",
    "plot_head_ablation",
    "plot_head_matrix",
    "plot_head_scores",
    "plot_patching",
    "plot_prefix_curves",
    "plot_retrieval",
    "plot_retrieval_ablation",
    "plot_sinks",
]

#: inches: one column of a two-column paper (ACL, NeurIPS, ICML columns are 3.25 to 3.5 in)
COLUMN_WIDTH = 3.4
#: inches: a figure across both columns
DOUBLE_WIDTH = 7.0
#: cells that were not computed (hatched) or do not exist (plain)
NOT_COMPUTED_COLOUR = "#d9d9d9"
_HATCH_EDGE = "#8c8c8c"
_DIVERGING = "RdBu_r"
_SEQUENTIAL = "Reds"
_POS = "#b2182b"  # the red end of RdBu_r, labext's positive colour
_NEG = "#2166ac"  # the blue end
_MAX_HEIGHT = 4.8  # inches: the tallest default height

# Paper sizes: 7 pt text, 8 pt titles, 6 pt ticks.
_STYLE = {
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "legend.fontsize": 6,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "hatch.linewidth": 0.6,
    "savefig.dpi": 300,
    "figure.dpi": 150,
}


# -- figure, axes, text ------------------------------------------------------------------------------------------
def figure_width(width) -> float:
    """Figure width in inches: ``"column"`` (3.4), ``"double"`` (7.0) or a positive number of inches.

    Raises:
        ArgumentError: another string, or a width that is not positive and finite.
        ArgumentTypeError: neither a string nor a number.
    """
    if isinstance(width, str):
        named = {"column": COLUMN_WIDTH, "single": COLUMN_WIDTH, "double": DOUBLE_WIDTH, "page": DOUBLE_WIDTH}
        if width not in named:
            raise ArgumentError(f"'width' must be 'column', 'double' or a number of inches (got {width!r})")
        return named[width]
    if isinstance(width, bool) or not isinstance(width, int | float):
        raise ArgumentTypeError(f"'width' must be 'column', 'double' or a number of inches (got {width!r})")
    if not math.isfinite(width) or width <= 0:
        raise ArgumentError(f"'width' must be a positive number of inches (got {width!r})")
    return float(width)


def _mpl():
    """matplotlib, imported on first use (never at ``import attnlab``)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("result.plot() needs matplotlib: pip install matplotlib") from exc
    return matplotlib


class _Canvas:
    """The figure and axes to draw into, with the paper style applied while drawing (``with _Canvas(...) as c``)."""

    def __init__(self, ax, width, height: float | None, default_height: float) -> None:
        mpl = _mpl()
        self._rc = mpl.rc_context(_STYLE)
        self._rc.__enter__()
        try:
            if ax is None:
                from matplotlib.figure import Figure

                w = figure_width(width)
                h = default_height if height is None else _check_height(height)
                # A bare Figure, not pyplot: nothing global changes, and a notebook shows it once (as the value).
                self.fig = Figure(figsize=(w, h), layout="constrained")
                self.ax = self.fig.add_subplot()
                self.width = w
                self.own = True
            else:
                from matplotlib.axes import Axes

                if not isinstance(ax, Axes):
                    raise ArgumentTypeError(f"'ax' must be a matplotlib Axes or None (got {type(ax).__name__})")
                self.ax = ax
                root = getattr(ax.figure, "figure", None)  # an axes of a SubFigure: return the root Figure
                self.fig = root if root is not None else ax.figure
                self.width = ax.get_position().width * self.fig.get_figwidth()
                self.own = False
        except BaseException:
            self._rc.__exit__(None, None, None)
            raise

    def __enter__(self) -> "_Canvas":
        return self

    def __exit__(self, *exc) -> None:
        self._rc.__exit__(*exc)


def _check_height(height) -> float:
    if isinstance(height, bool) or not isinstance(height, int | float) or not math.isfinite(height) or height <= 0:
        raise ArgumentError(f"'height' must be a positive number of inches or None (got {height!r})")
    return float(height)


def _wrap(text: str, width_in: float, points: float = 8.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``points`` (about 0.6 em per character)."""
    chars = max(20, int(width_in * 72 / (points * 0.6)))
    return "\n".join(textwrap.wrap(text, chars)) if text else ""


def _title(canvas: _Canvas, text: str, custom: str | None) -> None:
    """The title, left-aligned with the axes and wrapped to the room right of the axis labels."""
    room = max(1.5, canvas.width - 0.6) if canvas.own else canvas.width
    canvas.ax.set_title(_wrap(custom if custom is not None else text, room), loc="left")


def _ylabel(canvas: _Canvas, text: str) -> None:
    """A y label wrapped to the axes' height (a long label with its unit never runs off the figure)."""
    height = canvas.fig.get_figheight() * (0.72 if canvas.own else canvas.ax.get_position().height)
    canvas.ax.set_ylabel(_wrap(text, max(1.2, height), 7.0))


def _thin(n: int, length_in: float, points: float = 6.0) -> int:
    """A label stride such that ``n`` labels of ``points`` size fit ``length_in`` inches without touching."""
    fits = max(1, int(length_in * 72 / (points * 1.35)))
    return max(1, math.ceil(n / fits))


def _heatmap_height(n_rows: int, n_cols: int, width: float) -> float:
    """A height that keeps cells near square where it can, within [1.9, 4.8] inches (title and labels included):
    a 30-layer x 9-head grid gets tall cells rather than a figure taller than a column's page."""
    plot_w = width * 0.72
    return max(1.9, min(_MAX_HEIGHT, plot_w * n_rows / max(n_cols, 1) + 0.9))


def _set_ticks(ax, axis: str, labels: Sequence[str], stride: int | None = None, *, rotate: bool = False,
               positions: Sequence[int] | None = None) -> None:
    """Tick labels ``labels`` at ``positions`` (default 0..n-1), every ``stride``-th one (default: as many as fit)."""
    positions = list(range(len(labels))) if positions is None else list(positions)
    fig = ax.figure
    bbox = ax.get_position()
    length = bbox.width * fig.get_figwidth() if axis == "x" else bbox.height * fig.get_figheight()
    if stride is None:
        longest = max((len(s) for s in labels), default=1)
        if axis == "x" and not rotate:
            stride = max(_thin(len(labels), length, 6.0 * max(1.0, longest * 0.6)), 1)
        else:
            stride = _thin(len(labels), length)
    keep = [(p, s) for i, (p, s) in enumerate(zip(positions, labels)) if i % stride == 0]
    ticks = [p for p, _ in keep]
    texts = [s for _, s in keep]
    if axis == "x":
        ax.set_xticks(ticks, texts, rotation=90 if rotate else 0)
    else:
        ax.set_yticks(ticks, texts)


def _layer_ticks(ax, axis: str, n_layers: int, per_layer: int) -> None:
    """For a head axis of ``n_layers * per_layer`` rows: a tick at each layer's first head, labelled ``L{l}``."""
    _set_ticks(ax, axis, [f"L{i}" for i in range(n_layers)], positions=[i * per_layer for i in range(n_layers)])


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


# -- colour scales -------------------------------------------------------------------------------------------------
def color_limits(values, *, vmin=None, vmax=None, clip_percentile=None, fixed: tuple[float, float] | None = None,
                 signed: bool = True) -> tuple[float, float, str]:
    """The colour range of a heatmap, and which ends of the colour bar need an arrow.

    Args:
        values: the numbers drawn (any shape; NaN cells are ignored: they never set the range).
        vmin, vmax: a fixed range. For a signed (diverging, centred) scale, giving one end mirrors it: ``vmax=0.5``
            means ``[-0.5, 0.5]``. Otherwise the missing end is 0 (below) or the largest value (above).
        clip_percentile: in (0, 100]: the range ends at this percentile of |value| (signed) or of the values.
        fixed: the default range when neither is given (``(-1, 1)`` for normalised scores, ``(0, 1)`` for
            probabilities); None: ``±max|value|`` (signed) or ``[0, max]``.
        signed: a diverging scale centred at 0 (True) or a sequential one (False).

    Returns:
        ``(lo, hi, extend)``: ``extend`` is ``"neither"``, ``"min"``, ``"max"`` or ``"both"`` (matplotlib's colour bar
        arrows), marking values beyond the range.

    Raises:
        ArgumentError: ``vmin >= vmax``, a non-finite limit, a percentile outside (0, 100], or both a range and a
            percentile.
    """
    arr = np.asarray(values, dtype=float)
    finite = _finite(arr)
    for name, v in (("vmin", vmin), ("vmax", vmax)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            raise ArgumentError(f"'{name}' must be a finite number or None (got {v!r})")
    if clip_percentile is not None:
        if vmin is not None or vmax is not None:
            raise ArgumentError("pass either vmin/vmax or clip_percentile, not both")
        p = clip_percentile
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 100:
            raise ArgumentError(f"'clip_percentile' must be in (0, 100], e.g. 99 (got {p!r})")
    top = float(np.abs(finite).max()) if signed and finite.size else float(finite.max()) if finite.size else 0.0
    if vmin is not None or vmax is not None:
        if signed:
            lo = -abs(vmax) if vmin is None else float(vmin)
            hi = abs(vmin) if vmax is None else float(vmax)
        else:
            lo = 0.0 if vmin is None else float(vmin)
            hi = (top if top > lo else lo + 1.0) if vmax is None else float(vmax)
    elif clip_percentile is not None:
        lim = float(np.percentile(np.abs(finite) if signed else finite, clip_percentile)) if finite.size else 1.0
        lim = lim if lim > 0 else 1.0
        lo, hi = (-lim, lim) if signed else (0.0, lim)
    elif fixed is not None:
        lo, hi = float(fixed[0]), float(fixed[1])
    else:
        lim = top if top > 0 else 1.0
        lo, hi = (-lim, lim) if signed else (0.0, lim)
    if not lo < hi:
        raise ArgumentError(f"the colour range must have vmin < vmax (got [{lo:g}, {hi:g}])")
    below = bool(finite.size and finite.min() < lo)
    above = bool(finite.size and finite.max() > hi)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    return lo, hi, extend[(below, above)]


def _hatch_missing(canvas: "_Canvas", missing: np.ndarray, label: str) -> bool:
    """Grey hatched rectangles over the True cells of ``missing`` [rows, cols] (runs of a row merged), and a legend
    entry ``label``: under the figure when it is ours (constrained layout keeps it clear of the tick labels), in the
    axes' corner when it is the caller's. Returns whether anything was hatched."""
    ax = canvas.ax
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    rects = []
    for i, row in enumerate(missing):
        j, n = 0, len(row)
        while j < n:
            if row[j]:
                k = j
                while k < n and row[k]:
                    k += 1
                rects.append(Rectangle((j - 0.5, i - 0.5), k - j, 1))
                j = k
            else:
                j += 1
    if not rects:
        return False
    ax.add_collection(PatchCollection(rects, facecolor=NOT_COMPUTED_COLOUR, edgecolor=_HATCH_EDGE, hatch="////",
                                      linewidth=0.0, zorder=2))
    handle = Patch(facecolor=NOT_COMPUTED_COLOUR, edgecolor=_HATCH_EDGE, hatch="////", linewidth=0.0, label=label)
    if canvas.own:
        canvas.fig.legend(handles=[handle], loc="outside lower left", frameon=False, handlelength=1.2,
                          handleheight=1.0)
    else:
        ax.legend(handles=[handle], loc="upper right", framealpha=0.9, handlelength=1.2, handleheight=1.0)
    return True


def _heatmap(canvas: _Canvas, matrix: np.ndarray, *, value_label: str, signed: bool, fixed, vmin, vmax,
             clip_percentile, cmap, missing: np.ndarray | None, missing_label: str = "not computed",
             marks: Sequence[tuple[float, str]] = ()):
    """Draw ``matrix`` [rows, cols] (NaN: grey; ``missing`` cells also hatched) with a labelled colour bar.

    ``marks``: values drawn as black lines across the colour bar (a threshold, a random baseline), each named in the
    colour bar's label (``"...; line: random 0.031"``). Returns the AxesImage (its ``get_array()`` is ``matrix``, NaN
    masked).
    """
    from matplotlib import colormaps
    from matplotlib.colors import Colormap, Normalize

    lo, hi, extend = color_limits(matrix, vmin=vmin, vmax=vmax, clip_percentile=clip_percentile, fixed=fixed,
                                  signed=signed)
    if not isinstance(cmap, Colormap):
        name = cmap or (_DIVERGING if signed else _SEQUENTIAL)
        if name not in colormaps:
            raise ArgumentError(f"'cmap' must be a matplotlib colormap or its name, e.g. 'RdBu_r' (got {cmap!r})")
        cmap = colormaps[name]
    cm = cmap.with_extremes(bad=NOT_COMPUTED_COLOUR)
    ax = canvas.ax
    data = np.ma.masked_invalid(np.asarray(matrix, dtype=float))
    im = ax.imshow(data, cmap=cm, norm=Normalize(lo, hi), aspect="auto", interpolation="nearest")
    if missing is not None:
        _hatch_missing(canvas, np.asarray(missing, dtype=bool), missing_label)
    cb = ax.figure.colorbar(im, ax=ax, extend=extend, fraction=0.06, pad=0.03, aspect=25)
    shown = [(v, text) for v, text in marks if lo <= v <= hi]
    for value, _ in shown:
        cb.ax.axhline(value, color="black", linewidth=0.8)
    lines = "; ".join(f"line: {text}" for _, text in shown)
    cb.set_label(_wrap(f"{value_label}{'; ' + lines if lines else ''}", 2.6, 7.0))
    cb.outline.set_linewidth(0.5)
    im.colorbar_extend = extend  # read by the tests and by users restyling the bar
    return im


def _figure(canvas: _Canvas):
    return canvas.fig


def _model_name(obj) -> str:
    model = getattr(obj, "model", None) or {}
    return str(model.get("name", "?")) if isinstance(model, dict) else "?"


# -- patching ----------------------------------------------------------------------------------------------------
def plot_patching(result, ax=None, *, width="column", height=None, title=None, vmin=None, vmax=None,
                  clip_percentile=None, cmap=None):
    """Heatmap of a :class:`~attnlab.results.PatchingResult` (activation or attribution patching).

    ``[layer, head]`` and ``[layer, pos]`` results are drawn as they are (layers down, heads or positions across,
    positions labelled with prompt 0's tokens); ``[layer, head, pos]`` results as ``L{l}H{h}`` rows grouped by layer.
    The scores are normalised (denoising: 1 = clean run restored), so the default range is ±1; cells a cancelled
    sweep did not reach are hatched "not computed".

    Args:
        result: the result.
        ax: draw into this axes (default: a new figure).
        width: ``"column"`` (3.4 in), ``"double"`` (7 in) or inches. height: inches (default from the shape).
        title: replaces the default title (analysis, component, direction, model, task).
        vmin, vmax, clip_percentile, cmap: the colour scale (see :func:`color_limits`).

    Returns:
        matplotlib.figure.Figure.

    Raises:
        ArgumentError: a bad width, height or colour range.
    """
    values = result.values.detach().double().cpu().numpy()
    dims = tuple(result.dims)
    if dims == ("layer", "head", "pos"):
        n_l, n_h, n_p = values.shape
        matrix = values.reshape(n_l * n_h, n_p)
        row_title, col_title = "head", "position"
    elif len(dims) == 2:
        matrix = values
        row_title, col_title = dims[0], {"pos": "position"}.get(dims[1], dims[1])
    else:
        raise ArgumentError(f"cannot draw a heatmap of dims {dims}: expected 2 axes or (layer, head, pos)")
    label = getattr(result, "metric_label", "") or result.metric
    normalised = True  # PatchingResult.values are normalised by definition (see its docstring)
    w = figure_width(width) if ax is None else None
    default_h = _heatmap_height(matrix.shape[0], matrix.shape[1], w or COLUMN_WIDTH)
    with _Canvas(ax, width, height, default_h) as c:
        _heatmap(c, matrix, value_label=f"normalised {label} ({result.direction})", signed=True,
                 fixed=(-1.0, 1.0) if normalised else None, vmin=vmin, vmax=vmax,
                 clip_percentile=clip_percentile, cmap=cmap, missing=np.isnan(matrix))
        ax_ = c.ax
        if dims == ("layer", "head", "pos"):
            _set_ticks(ax_, "y", [f"L{layer}" for layer in result.index["layer"]],
                       positions=[i * values.shape[1] for i in range(values.shape[0])])
            for i in range(1, values.shape[0]):
                ax_.axhline(i * values.shape[1] - 0.5, color="white", linewidth=0.6)
        else:
            _set_ticks(ax_, "y", list(result.labels[dims[0]]))
        cols = dims[-1]
        col_labels = list(result.labels[cols])
        if cols == "pos" and result.tokens is not None:
            col_labels = [f"{lab} {_short_token(tok)}" if lab != tok else lab
                          for lab, tok in zip(col_labels, result.tokens)]
        _set_ticks(ax_, "x", col_labels, rotate=cols == "pos")
        ax_.set_ylabel(row_title)
        ax_.set_xlabel(col_title)
        analysis = {"activation_patching": "Activation patching", "attribution_patching": "Attribution patching",
                    "path_patching": "Path patching"}.get(result.analysis, str(result.analysis).replace("_", " "))
        task = result.task.get("task", "?") if isinstance(result.task, dict) else "?"
        state = "" if result.complete else " (cancelled: hatched cells not computed)"
        _title(c, f"{analysis}: {str(result.component).replace('_', ' ')}, {result.direction}; "
                  f"{_model_name(result)}, {task}{state}", title)
        return _figure(c)


def _short_token(tok) -> str:
    s = str(tok).replace("\n", "\\n").replace("\t", "\\t")
    return s if len(s) <= 10 else s[:9] + "…"


# -- heads -------------------------------------------------------------------------------------------------------
def plot_head_matrix(matrix, ax=None, *, title: str, value_label: str, width="column", height=None, signed=False,
                     fixed=(0.0, 1.0), vmin=None, vmax=None, clip_percentile=None, cmap=None,
                     missing_label="not computed", marks=()):
    """A [layer, head_index] matrix as a heatmap (layers down, heads across), NaN cells hatched ``missing_label``.

    The shared drawing of :func:`plot_head_scores`, :func:`plot_sinks`, :func:`plot_retrieval` and
    :func:`plot_head_ablation`; use it for any per-head tensor of your own.

    Args:
        matrix: Float[layer, head_index] (tensor or array).
        title, value_label: the title and the colour bar's label (with the unit).
        signed, fixed: a diverging scale (default range ±max|value|) or a sequential one on ``fixed``.
        width, height, vmin, vmax, clip_percentile, cmap, marks: as :func:`plot_patching` and :func:`_heatmap`.

    Returns:
        matplotlib.figure.Figure.
    """
    m = _array(matrix)
    if m.ndim != 2:
        raise ArgumentError(f"a head matrix must be [layer, head] (got shape {m.shape})")
    n_l, n_h = m.shape
    w = figure_width(width) if ax is None else COLUMN_WIDTH
    with _Canvas(ax, width, height, _heatmap_height(n_l, n_h, w)) as c:
        _heatmap(c, m, value_label=value_label, signed=signed, fixed=fixed, vmin=vmin, vmax=vmax,
                 clip_percentile=clip_percentile, cmap=cmap, missing=np.isnan(m), missing_label=missing_label,
                 marks=marks)
        _set_ticks(c.ax, "y", [f"L{i}" for i in range(n_l)])
        _set_ticks(c.ax, "x", [f"H{i}" for i in range(n_h)])
        _ylabel(c, "layer")
        c.ax.set_xlabel("head")
        _title(c, title, None)
        return _figure(c)


def _array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=float)


_KIND_TEXT = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction",
              "sink": "sink", "first_token": "first-token sink", "hidden_sink": "hidden sink"}


def plot_head_scores(result, ax=None, *, kind: str = "induction", width="column", height=None, title=None,
                     vmin=None, vmax=None, clip_percentile=None, cmap=None):
    """Heatmap of one score kind of a :class:`~attnlab.heads.results.HeadScores` ([layer, head], attention
    probability on the white-to-red scale of the head gallery, [0, 1] by default).

    Args:
        kind: ``"previous_token"``, ``"duplicate_token"`` or ``"induction"`` (default).
        ax, width, height, title, vmin, vmax, clip_percentile, cmap: as :func:`plot_patching`.

    Returns:
        matplotlib.figure.Figure.

    Raises:
        AttnlabError: an unknown kind.
    """
    scores = result.score(kind)
    n = result.per_sequence.shape[1]
    text = _KIND_TEXT.get(kind, kind)
    partial = bool(np.isnan(_array(scores)).any())
    return plot_head_matrix(
        scores, ax, width=width, height=height, vmin=vmin, vmax=vmax, clip_percentile=clip_percentile, cmap=cmap,
        title=title if title is not None else
        f"{text.capitalize()} scores of {_model_name(result)} ({result.definition}, {n} sequences"
        f"{', cancelled' if partial else ''})",
        value_label=f"{text} score (attention probability)")


def plot_sinks(result, ax=None, *, kind: str = "sink", width="column", height=None, title=None, vmin=None,
               vmax=None, clip_percentile=None, cmap=None):
    """Heatmap of one score kind of a :class:`~attnlab.heads.sinks.SinkAnalysis` (``"sink"``, ``"first_token"``,
    ``"hidden_sink"``; attention per query on the sink positions, [0, 1]).

    Returns:
        matplotlib.figure.Figure.
    """
    text = _KIND_TEXT.get(kind, kind)
    return plot_head_matrix(
        result.score(kind), ax, width=width, height=height, vmin=vmin, vmax=vmax, clip_percentile=clip_percentile,
        cmap=cmap, title=title if title is not None else
        f"Attention sinks of {_model_name(result)}: {text} score ({len(result.sinks)} sequences)",
        value_label=f"{text} score (attention probability per query)")


def plot_retrieval(result, ax=None, *, width="column", height=None, title=None, vmin=None, vmax=None,
                   clip_percentile=None, cmap=None):
    """Heatmap of a :class:`~attnlab.heads.retrieval.RetrievalScores` (fraction of needle tokens each head
    retrieves, [0, 1]), the retrieval-head threshold marked on the colour bar.

    Returns:
        matplotlib.figure.Figure.
    """
    return plot_head_matrix(
        result.scores, ax, width=width, height=height, vmin=vmin, vmax=vmax, clip_percentile=clip_percentile,
        cmap=cmap, marks=[(float(result.threshold), f"retrieval-head threshold {result.threshold:g}")],
        title=title if title is not None else
        f"Retrieval scores of {_model_name(result)} ({len(result.depths)} needle inputs; "
        f"accuracy {float(result.accuracy.mean()):.2f})",
        value_label="retrieval score (fraction of needle tokens)")


def plot_head_ablation(result, ax=None, *, method: str | None = None, width="column", height=None, title=None,
                       vmin=None, vmax=None, clip_percentile=None, cmap=None):
    """Heatmap of a :class:`~attnlab.heads.verification.HeadAblation`: the effect of ablating each head
    (second-repeat loss increase in nats per token, or the change of the metric), diverging at 0, ±max|effect| by
    default; heads that were not ablated are hatched.

    Args:
        method: ``"zero"``, ``"mean"`` ... (default the first method run).

    Raises:
        ArgumentError: a method that was not run.
    """
    method = result.methods[0] if method is None else method
    if method not in result.methods:
        raise ArgumentError(f"'method' must be one of {result.methods} (got {method!r})")
    effects = result.loss_increase[result.methods.index(method)]
    return plot_head_matrix(
        effects, ax, width=width, height=height, signed=True, fixed=None, vmin=vmin, vmax=vmax,
        clip_percentile=clip_percentile, cmap=cmap, missing_label="not ablated",
        title=title if title is not None else f"Ablating one head at a time ({method} ablation, "
                                              f"{len(result.heads)} heads)",
        value_label=result.label)


def plot_composition(result, ax=None, *, mode: str = "k", width="column", height=None, title=None, vmin=None,
                     vmax=None, clip_percentile=None, cmap=None):
    """Sender x receiver heatmap of a :class:`~attnlab.heads.composition.CompositionScores` for one mode (Elhage
    et al. 2021): rows are senders, columns receivers, both ``L{l}H{h}`` in layer order; pairs that cannot compose
    (receiver not in a later layer) are plain grey. The scale starts at 0 (a score lies in [0, 1]) and ends at the
    largest score; the random baseline's mean is marked on the colour bar.

    Args:
        mode: ``"q"``, ``"k"`` (default) or ``"v"``.

    Returns:
        matplotlib.figure.Figure.

    Raises:
        ArgumentError: a mode that was not computed.
    """
    s = _array(result.score(mode))  # [L, H, L, H]
    n_l, n_h = s.shape[0], s.shape[1]
    matrix = s.reshape(n_l * n_h, n_l * n_h)
    mean = result.baseline_mean(mode)
    w = figure_width(width) if ax is None else COLUMN_WIDTH
    with _Canvas(ax, width, height, w * 0.78 + 0.6) as c:
        _heatmap(c, matrix, value_label=f"{mode.upper()}-composition score (normalised Frobenius norm)",
                 signed=False, fixed=None, vmin=vmin, vmax=vmax, clip_percentile=clip_percentile, cmap=cmap,
                 missing=None, marks=[(mean, f"random baseline {mean:.3f}")])
        _layer_ticks(c.ax, "y", n_l, n_h)
        _layer_ticks(c.ax, "x", n_l, n_h)
        _ylabel(c, "sender head")
        c.ax.set_xlabel("receiver head")
        _title(c, title if title is not None else
               f"{mode.upper()}-composition between heads of {_model_name(result)} (random {mean:.3f})", None)
        return _figure(c)


def plot_prefix_curves(result, ax=None, *, heads: Sequence[tuple[int, int]] | None = None, k: int = 5,
                       width="column", height=None, title=None):
    """Induction attention against matching prefix length (Kissane et al. 2024) for some heads of a
    :class:`~attnlab.heads.prefix.PrefixCurves`: one line per head, x on a log-2 axis, y in [0, 1].

    Args:
        heads: (layer, head) pairs to draw (default the ``k`` heads with the largest value anywhere on the curve).
        k: how many heads by default.

    Returns:
        matplotlib.figure.Figure (one Line2D per head, in the order drawn, labelled ``L{l}H{h}``).

    Raises:
        ArgumentError: a head outside the result, ``k`` below 1.
    """
    values = _array(result.values)  # [n_lengths, layer, head]
    _, n_l, n_h = values.shape
    if heads is None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArgumentError(f"'k' must be an integer >= 1 (got {k!r})")
        top = np.nan_to_num(values, nan=-1.0).max(0).reshape(-1)
        order = np.argsort(-top, kind="stable")[:k]
        heads = [divmod(int(i), n_h) for i in order]
    heads = [tuple(h) for h in heads]
    for layer, head in heads:
        if not (0 <= layer < n_l and 0 <= head < n_h):
            raise ArgumentError(f"head ({layer}, {head}) is outside the curves' {n_l} layers x {n_h} heads")
    lengths = list(result.prefix_lengths)
    with _Canvas(ax, width, height, 2.3) as c:
        for layer, head in heads:
            c.ax.plot(lengths, values[:, layer, head], marker="o", label=f"L{layer}H{head}")
        c.ax.set_xscale("log", base=2)
        c.ax.set_xticks(lengths, [str(n) for n in lengths])
        c.ax.minorticks_off()
        c.ax.set_ylim(0, 1)
        c.ax.set_xlabel("matching prefix length (tokens)")
        _ylabel(c, "induction attention (probability)")
        c.ax.legend(loc="best", frameon=False)
        _title(c, title if title is not None else "Induction attention by matching prefix length", None)
        return _figure(c)


def plot_retrieval_ablation(result, ax=None, *, width="column", height=None, title=None):
    """Bars of a :class:`~attnlab.heads.retrieval.RetrievalAblation`: retrieval accuracy without ablation, with the
    top-k retrieval heads ablated, and with k random heads ablated (draws pooled), each with its bootstrap interval;
    the random draws as dots.

    Returns:
        matplotlib.figure.Figure (the bars' heights are ``summary[c]["mean"]`` for ``c`` in clean, top, random).
    """
    k = len(result.heads)
    conds = [("clean", "no ablation"), ("top", f"top {k} retrieval heads"), ("random", f"{k} random heads")]
    s = result.summary
    means = [float(s[key]["mean"]) for key, _ in conds]
    lows = [s[key].get("lo") for key, _ in conds]
    highs = [s[key].get("hi") for key, _ in conds]
    err = np.array([[m - lo if lo is not None else 0.0 for m, lo in zip(means, lows)],
                    [hi - m if hi is not None else 0.0 for m, hi in zip(means, highs)]])
    with _Canvas(ax, width, height, 2.2) as c:
        x = np.arange(len(conds))
        c.ax.bar(x, means, yerr=err, color=["#969696", _POS, "#6baed6"], width=0.6, capsize=2,
                 error_kw={"elinewidth": 0.8})
        draws = _array(result.random).mean(1) if result.random.numel() else np.array([])
        if draws.size:
            c.ax.plot(np.full(draws.size, 2.0), draws, linestyle="none", marker="o", markersize=2.5,
                      color="black", label="random draws")
            c.ax.legend(loc="upper right", frameon=False)
        c.ax.set_xticks(x, [label for _, label in conds])
        c.ax.set_xlabel("heads ablated together")
        c.ax.set_ylim(0, 1.05)
        _ylabel(c, "retrieval accuracy (fraction of needle tokens)")
        _title(c, title if title is not None else f"Retrieval heads ablated ({result.method} ablation, "
                                                  f"{100 * result.level:.0f}% intervals)", None)
        return _figure(c)


# -- dissociation ------------------------------------------------------------------------------------------------
def plot_dissociation(result, ax=None, *, width="column", height=None, title=None):
    """Recall drop against reasoning drop of every component of a
    :class:`~attnlab.dissociation.result.DissociationResult` (normalised drops of the selectivity metric with their
    bootstrap intervals); selective components filled, others hollow, the double dissociation's pair named, the
    diagonal (equal drops) dashed. Components a cancelled sweep did not run are left out (the title says how many).

    Returns:
        matplotlib.figure.Figure (the scatter's offsets are the components' ``(recall_drop, reasoning_drop)``).
    """
    df = result.to_dataframe()
    ran = df[df["recall_drop"].notna() & df["reasoning_drop"].notna()]
    metric = result.settings.get("selectivity_metric", "")
    label = result.metric_labels[result.metrics.index(metric)] if metric in result.metrics else metric
    with _Canvas(ax, width, height, 2.9) as c:
        x, y = ran["recall_drop"].to_numpy(float), ran["reasoning_drop"].to_numpy(float)
        xerr = np.abs(np.vstack([x - ran["recall_lo"].to_numpy(float), ran["recall_hi"].to_numpy(float) - x]))
        yerr = np.abs(np.vstack([y - ran["reasoning_lo"].to_numpy(float), ran["reasoning_hi"].to_numpy(float) - y]))
        c.ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="none", ecolor="#bdbdbd",
                      elinewidth=0.5, zorder=1)
        sig = ran["significant"].to_numpy(bool)
        colours = np.where(x - y > 0, _POS, _NEG)
        c.ax.scatter(x, y, s=12, facecolors=np.where(sig, colours, "white"), edgecolors=colours, linewidths=0.7,
                     zorder=3)
        finite = np.concatenate([x, y, ran["recall_hi"].to_numpy(float), ran["reasoning_hi"].to_numpy(float),
                                 ran["recall_lo"].to_numpy(float), ran["reasoning_lo"].to_numpy(float)])
        finite = _finite(finite)
        lo = min(0.0, float(finite.min())) if finite.size else 0.0
        hi = max(0.0, float(finite.max())) if finite.size else 1.0
        pad = 0.05 * (hi - lo or 1.0)
        c.ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], linestyle="--", color="#969696", linewidth=0.6,
                  zorder=0)
        c.ax.axhline(0, color="#969696", linewidth=0.4, zorder=0)
        c.ax.axvline(0, color="#969696", linewidth=0.4, zorder=0)
        c.ax.set_xlim(lo - pad, hi + pad)
        c.ax.set_ylim(lo - pad, hi + pad)
        dd = result.double_dissociation
        if dd:
            for name in (dd["recall_component"], dd["reasoning_component"]):
                row = ran[ran["component"] == name]
                if len(row):
                    c.ax.annotate(name, (float(row["recall_drop"].iloc[0]), float(row["reasoning_drop"].iloc[0])),
                                  xytext=(3, 3), textcoords="offset points", fontsize=6)
        c.ax.set_xlabel(_wrap(f"recall drop (fraction of the clean {label})", c.width * 0.9, 7))
        _ylabel(c, f"reasoning drop (fraction of the clean {label})")
        n_run, n_all = len(ran), len(df)
        state = "" if n_run == n_all else f"; cancelled: {n_run} of {n_all} components run"
        _title(c, title if title is not None else f"{result.title}{state}", None)
        return _figure(c)


# -- circuits ----------------------------------------------------------------------------------------------------
def _metric_label(metric) -> str:
    if isinstance(metric, dict):
        return str(metric.get("label") or metric.get("name") or "metric")
    return "logit difference (logits)"


def plot_circuit(circuit, ax=None, *, n: int = 20, width="column", height=None, title=None):
    """The ``n`` strongest edges of a :class:`~attnlab.circuits.circuit.Circuit` as horizontal bars (edge scores in
    the metric's units, red positive, blue negative), strongest on top.

    Args:
        n: edges to show (at most the circuit's).

    Returns:
        matplotlib.figure.Figure (bar widths are the edges' scores, top to bottom).

    Raises:
        ArgumentError: ``n`` below 1.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArgumentError(f"'n' must be an integer >= 1 (got {n!r})")
    edges = list(circuit.edges[:n])
    names = [e for e, _ in edges]
    scores = np.array([s for _, s in edges], dtype=float)
    with _Canvas(ax, width, height, max(1.8, 0.9 + 0.12 * len(edges))) as c:
        y = np.arange(len(edges))
        c.ax.barh(y, scores, color=[_POS if s >= 0 else _NEG for s in scores], height=0.7)
        c.ax.set_yticks(y, names)
        c.ax.invert_yaxis()
        c.ax.axvline(0, color="black", linewidth=0.5)
        c.ax.set_xlabel(f"edge score ({_metric_label(circuit.metric)})")
        _ylabel(c, "edge (sender -> receiver input)")
        method = circuit.provenance.get("method", "?") if isinstance(circuit.provenance, dict) else "?"
        task = circuit.task.get("task", "?") if isinstance(circuit.task, dict) else "?"
        _title(c, title if title is not None else
               f"Circuit of {_model_name(circuit)} on {task} ({str(method).upper()}): {circuit.n_edges} edges, "
               f"{len(circuit.heads)} heads; top {len(edges)} shown", None)
        return _figure(c)


#: codes of :func:`plot_circuit_comparison`'s grid
COMPARISON_CODES = {"neither": 0, "only A": 1, "only B": 2, "both": 3}


def plot_circuit_comparison(comparison, ax=None, *, n_layers: int | None = None, n_heads: int | None = None,
                            width="column", height=None, title=None):
    """A layer x head grid of a :class:`~attnlab.circuits.compare.CircuitComparison`: each head coloured by the
    circuits it belongs to (only A, only B, both, neither), with the overlap numbers in the title.

    Args:
        n_layers, n_heads: the grid's size (default: just large enough for every head of either circuit).

    Returns:
        matplotlib.figure.Figure (the image's array holds :data:`COMPARISON_CODES`: 0 neither, 1 only A, 2 only B,
        3 both).

    Raises:
        ArgumentError: a grid too small for the circuits' heads.
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    heads = list(comparison.heads_a) + list(comparison.heads_b)
    need_l = 1 + max((h[0] for h in heads), default=0)
    need_h = 1 + max((h[1] for h in heads), default=0)
    n_layers = need_l if n_layers is None else n_layers
    n_heads = need_h if n_heads is None else n_heads
    if n_layers < need_l or n_heads < need_h:
        raise ArgumentError(f"the grid of {n_layers} layers x {n_heads} heads is too small for the circuits' heads "
                            f"(need {need_l} x {need_h})")
    grid = np.zeros((n_layers, n_heads))
    for (layer, head) in comparison.heads_a:
        grid[layer, head] += 1
    for (layer, head) in comparison.heads_b:
        grid[layer, head] += 2
    na, nb = comparison.names
    colours = ["white", _NEG, "#f4a582", "#542788"]
    w = figure_width(width) if ax is None else COLUMN_WIDTH
    with _Canvas(ax, width, height, _heatmap_height(n_layers, n_heads, w)) as c:
        c.ax.imshow(grid, cmap=ListedColormap(colours), norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], 4),
                    aspect="auto", interpolation="nearest")
        c.ax.set_xticks(np.arange(-0.5, n_heads, 1), minor=True)
        c.ax.set_yticks(np.arange(-0.5, n_layers, 1), minor=True)
        c.ax.grid(which="minor", color="#e0e0e0", linewidth=0.4)
        c.ax.tick_params(which="minor", length=0)
        _set_ticks(c.ax, "y", [f"L{i}" for i in range(n_layers)])
        _set_ticks(c.ax, "x", [f"H{i}" for i in range(n_heads)])
        _ylabel(c, "layer")
        c.ax.set_xlabel("head")
        handles = [Patch(facecolor=colours[1], label=f"only {na}"), Patch(facecolor=colours[2], label=f"only {nb}"),
                   Patch(facecolor=colours[3], label="both")]
        c.ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, borderaxespad=0)
        _title(c, title if title is not None else
               f"{na} vs {nb}: {comparison.n_shared} shared heads, Jaccard {comparison.jaccard:.2f}, "
               f"{na} in {nb} {comparison.overlap_a_in_b:.0%}, {nb} in {na} {comparison.overlap_b_in_a:.0%}", None)
        return _figure(c)


def plot_agreement(report, ax=None, *, width="column", height=None, title=None):
    """Attribution patching against exact patching, one dot per cell of an
    :class:`~attnlab.circuits.agreement.AgreementReport` (normalised scores); the cells where the linear
    approximation fails in red; the diagonal dashed; Spearman and Pearson in the title.

    Returns:
        matplotlib.figure.Figure (the scatter's offsets are the points' ``(exact, attribution)``, in order).
    """
    exact = np.array([p["exact"] for p in report.points], dtype=float)
    attr = np.array([p["attribution"] for p in report.points], dtype=float)
    failing = {f["component"] for f in report.failures}
    fails = np.array([p["component"] in failing for p in report.points], dtype=bool)
    with _Canvas(ax, width, height, 2.9) as c:
        c.ax.scatter(exact, attr, s=9, c=np.where(fails, _POS, "#525252"), linewidths=0, zorder=3)
        both = _finite(np.concatenate([exact, attr]))
        lo = min(0.0, float(both.min())) if both.size else -1.0
        hi = max(0.0, float(both.max())) if both.size else 1.0
        pad = 0.05 * (hi - lo or 1.0)
        c.ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], linestyle="--", color="#969696", linewidth=0.6)
        c.ax.set_xlim(lo - pad, hi + pad)
        c.ax.set_ylim(lo - pad, hi + pad)
        c.ax.set_xlabel(f"exact patching (normalised {report.metric})")
        _ylabel(c, f"attribution patching (normalised {report.metric})")
        if fails.any():
            from matplotlib.lines import Line2D

            c.ax.legend(handles=[Line2D([], [], linestyle="none", marker="o", color=_POS, markersize=3,
                                        label=f"fails (|error| > {report.rel_threshold:g} x scale)")],
                        loc="upper left", frameon=False)
        _title(c, title if title is not None else
               f"Attribution vs exact patching: {report.component} ({report.direction}), {report.n} cells; "
               f"Spearman {report.spearman:.2f}, Pearson {report.pearson:.2f}", None)
        return _figure(c)


def plot_edge_scores(scores, ax=None, *, width="column", height=None, title=None, vmin=None, vmax=None,
                     clip_percentile=None, cmap=None):
    """Every edge score of an :class:`~attnlab.circuits.eap.EdgeScores` as a sender x receiver heatmap (raw scores
    in the metric's units, diverging at 0, ±max|score| by default); pairs that are not edges are plain grey.
    Senders and receivers are ticked at each layer's first node.

    Returns:
        matplotlib.figure.Figure (the image's array is ``scores.scores`` with the non-edges masked).
    """
    g = scores.graph
    matrix = _array(scores.scores).copy()
    valid = g.valid.cpu().numpy()
    matrix[~valid] = np.nan
    w = figure_width(width) if ax is None else COLUMN_WIDTH
    with _Canvas(ax, width, height, w * 0.8 + 0.7) as c:
        _heatmap(c, matrix, value_label=f"edge score ({_metric_label(scores.metric)})", signed=True, fixed=None,
                 vmin=vmin, vmax=vmax, clip_percentile=clip_percentile, cmap=cmap, missing=None)
        _node_ticks(c.ax, "y", list(g.senders))
        _node_ticks(c.ax, "x", list(g.receivers))
        _ylabel(c, "sender")
        c.ax.set_xlabel("receiver")
        task = scores.task.get("task", "?") if isinstance(scores.task, dict) else "?"
        state = ""
        if not scores.complete:
            state = f"; interrupted: {scores.task.get('prompts_scored', '?')} prompts scored"
        steps = f", {scores.steps} steps" if scores.method == "eap-ig" else ""
        _title(c, title if title is not None else
               f"{scores.method.upper()}{steps} edge scores of {g.info.name} on {task}{state}", None)
        return _figure(c)


def _node_ticks(ax, axis: str, names: list[str]) -> None:
    """Ticks at the first node of each layer (``L3...`` or ``MLP3``), labelled ``L{l}``; ``input`` and
    ``logits`` labelled too."""
    import re

    positions, labels, seen = [], [], set()
    for i, name in enumerate(names):
        m = re.match(r"^(?:L(\d+)|MLP(\d+))", name)
        key = name if m is None else int(m.group(1) or m.group(2))
        if key in seen:
            continue
        seen.add(key)
        positions.append(i)
        labels.append(name if m is None else f"L{key}")
    _set_ticks(ax, axis, labels, positions=positions, rotate=axis == "x")


def plot_faithfulness_curve(curve, ax=None, *, width="column", height=None, title=None):
    """Faithfulness of the top-n-edge circuits against n, from a
    :class:`~attnlab.circuits.evaluate.FaithfulnessCurve`: the curve with its 95% bootstrap band, 1 (the full model)
    and 0 (everything ablated) dashed; a log x axis when the sizes span a wide range.

    Returns:
        matplotlib.figure.Figure (the curve's line has ``ydata == curve.faithfulness``).
    """
    sizes = np.array(curve.sizes, dtype=float)
    faith = np.array([math.nan if v is None else v for v in curve.faithfulness], dtype=float)
    lo = np.array([math.nan if ci is None or ci[0] is None else ci[0] for ci in curve.ci95], dtype=float)
    hi = np.array([math.nan if ci is None or ci[1] is None else ci[1] for ci in curve.ci95], dtype=float)
    with _Canvas(ax, width, height, 2.3) as c:
        c.ax.fill_between(sizes, lo, hi, color=_POS, alpha=0.18, linewidth=0, label="95% interval")
        c.ax.plot(sizes, faith, marker="o", color=_POS, label="circuit")
        c.ax.axhline(1.0, linestyle="--", color="#525252", linewidth=0.6)
        c.ax.axhline(0.0, linestyle=":", color="#525252", linewidth=0.6)
        if sizes.size and sizes.min() > 0 and sizes.max() / sizes.min() >= 20:
            c.ax.set_xscale("log")
        c.ax.set_xlabel("edges in the circuit")
        _ylabel(c, f"faithfulness (fraction of the full model's {_metric_label(curve.metric)})")
        c.ax.legend(loc="lower right", frameon=False)
        _title(c, title if title is not None else "Faithfulness by circuit size (1: full model, 0: all ablated)", None)
        return _figure(c)


def plot_acdc(result, ax=None, *, width="column", height=None, title=None):
    """The circuit metric as ACDC (Conmy et al. 2023) prunes, from an :class:`~attnlab.circuits.acdc.ACDCResult`:
    one point per processed receiver (its value after that receiver's edges were tested), the full model's value
    dashed; the edges still kept on a second axis.

    Returns:
        matplotlib.figure.Figure (the metric line has ``ydata`` = the trace's metric after each receiver).
    """
    trace = list(result.trace)
    steps = np.arange(1, len(trace) + 1)
    after = np.array([t[3] for t in trace], dtype=float)
    removed = np.cumsum([t[2] for t in trace]) if trace else np.array([])
    n_total = int(result.kept.sum()) + int(removed[-1]) if len(removed) else int(result.kept.sum())
    label = _metric_label(result.metric_info)
    with _Canvas(ax, width, height, 2.3) as c:
        c.ax.plot(steps, after, marker="o", markersize=2, color=_POS, label="circuit")
        c.ax.axhline(result.full_metric, linestyle="--", color="#525252", linewidth=0.6, label="full model")
        c.ax.set_xlabel("receivers processed (output first)")
        _ylabel(c, label)
        if c.own:
            c.fig.legend(loc="outside lower center", ncols=2, frameon=False)
        else:
            c.ax.legend(loc="best", frameon=False)
        if trace:
            twin = c.ax.twinx()
            twin.plot(steps, n_total - removed, color="#969696", linewidth=0.8)
            twin.set_ylabel("edges kept", color="#737373")
            twin.tick_params(axis="y", colors="#737373")
        thr = result.circuit.selection.get("threshold", "?")
        state = "" if result.complete else " (stopped early: max_tests)"
        _title(c, title if title is not None else
               f"ACDC (threshold {thr:g}): {result.circuit.n_edges} edges kept after {result.n_tests} tests{state}"
               if isinstance(thr, int | float) else f"ACDC: {result.circuit.n_edges} edges kept{state}", None)
        return _figure(c)
