"""``result.plot()`` for every result type: a matplotlib Figure whose drawn numbers are the result's own.

Each result is computed on a tiny random model (module-scoped, so each analysis runs once), drawn with the Agg
backend, and the drawing is read back: the heatmap's array (``AxesImage.get_array()``), the lines' y data, the bars'
heights, the scatter's offsets must equal the values the result holds; the title, the axis labels and every heatmap's
colour-bar label must be set; the figure must save. The colour scales are checked too: ±1 for normalised scores,
``±max|value|`` for raw ones, a cancelled result hatched and not rescaled.
"""

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PatchCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import attnlab  # noqa: E402
from attnlab.errors import ArgumentError  # noqa: E402
from attnlab.plotting import COLUMN_WIDTH, DOUBLE_WIDTH, color_limits  # noqa: E402

from .conftest import random_pair_dataset  # noqa: E402


# -- the results (each computed once) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs(tiny):
    return random_pair_dataset(tiny, batch=4, n_pos=6, changed=(1, 3), seed=2)


@pytest.fixture(scope="module")
def patching(tiny, pairs):
    return attnlab.patch_heads(tiny, pairs, progress=False)


@pytest.fixture(scope="module")
def by_position(tiny, pairs):
    return attnlab.patch_heads_by_position(tiny, pairs, progress=False)


@pytest.fixture(scope="module")
def heads(tiny):
    from attnlab.heads import induction_analysis

    return induction_analysis(tiny, seq_len=5, batch=3, ablate=2, prefix_lengths=(1, 2, 4), token_range=(1, 50))


@pytest.fixture(scope="module")
def edge_scores(tiny, pairs):
    from attnlab.circuits import eap_scores

    return eap_scores(tiny, pairs, progress=False)


@pytest.fixture(scope="module")
def circuit(edge_scores):
    from attnlab.circuits import circuit_from_scores

    return circuit_from_scores(edge_scores, n_edges=12)


def _image(fig: Figure):
    (im,) = fig.axes[0].images
    return im


def _colorbar_label(fig: Figure) -> str:
    return fig.axes[1].get_ylabel().replace("\n", " ")


def _check_figure(fig, tmp_path, *, name: str, colorbar: bool) -> None:
    """A Figure with a title and labelled axes (and a labelled colour bar on a heatmap) that saves."""
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title(loc="left").strip(), "no title"
    assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), "unlabelled axes"
    if colorbar:
        assert _colorbar_label(fig).strip(), "no colour-bar label"
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 2000
    fig.savefig(tmp_path / f"{name}.pdf")


def _masked_equal(got, expected) -> None:
    """``got`` (a masked array from get_array) equals ``expected`` (NaN where masked)."""
    got = np.ma.filled(np.ma.asarray(got, dtype=float), np.nan)
    np.testing.assert_allclose(got, np.asarray(expected, dtype=float), rtol=0, atol=1e-6, equal_nan=True)


# -- patching ---------------------------------------------------------------------------------------------------
def test_patching_heatmap_is_the_scores_on_plus_minus_one(patching, tmp_path):
    fig = patching.plot()
    assert fig.get_figwidth() == pytest.approx(COLUMN_WIDTH)
    im = _image(fig)
    _masked_equal(im.get_array(), patching.values.numpy())
    assert im.get_clim() == (-1.0, 1.0)  # normalised scores: a fixed ±1 scale
    assert im.get_cmap().name.startswith("RdBu_r")
    assert patching.metric_label in _colorbar_label(fig) and "normalised" in _colorbar_label(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == patching.labels["layer"]
    _check_figure(fig, tmp_path, name="patching", colorbar=True)


def test_patching_by_position_rows_are_heads_and_the_width_option(by_position, tmp_path):
    fig = by_position.plot(width="double")
    assert fig.get_figwidth() == pytest.approx(DOUBLE_WIDTH)
    n_l, n_h, n_p = by_position.values.shape
    _masked_equal(_image(fig).get_array(), by_position.values.reshape(n_l * n_h, n_p).numpy())
    assert fig.axes[0].get_xlabel() == "position"
    _check_figure(fig, tmp_path, name="patching-by-position", colorbar=True)


def test_a_cancelled_sweep_is_hatched_and_keeps_the_full_scale(patching, tmp_path):
    from dataclasses import replace

    values = patching.values.clone()
    values[1:] = float("nan")  # the sweep stopped after layer 0
    partial = replace(patching, values=values, complete=False, layers_done=[0])
    fig = partial.plot()
    im = _image(fig)
    _masked_equal(im.get_array(), values.numpy())
    assert im.get_clim() == (-1.0, 1.0), "a partial run is drawn on the complete run's scale"
    hatched = [c for c in fig.axes[0].collections if isinstance(c, PatchCollection)]
    assert len(hatched) == 1 and hatched[0].get_hatch() == "////"
    assert len(hatched[0].get_paths()) == values.shape[0] - 1  # one merged rectangle per missing row
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["not computed"]
    assert "cancelled" in fig.axes[0].get_title(loc="left")
    _check_figure(fig, tmp_path, name="patching-partial", colorbar=True)


def test_scale_options(patching):
    v = patching.values.numpy()
    fig = patching.plot(vmax=0.25)
    assert _image(fig).get_clim() == (-0.25, 0.25)  # one end given: the other mirrors it
    below, above = bool((v < -0.25).any()), bool((v > 0.25).any())
    assert _image(fig).colorbar_extend == {(False, False): "neither", (True, False): "min", (False, True): "max",
                                           (True, True): "both"}[(below, above)]
    fig = patching.plot(clip_percentile=50)
    lim = float(np.percentile(np.abs(patching.values.numpy()), 50))
    assert _image(fig).get_clim() == pytest.approx((-lim, lim))
    with pytest.raises(ArgumentError, match="clip_percentile"):
        patching.plot(clip_percentile=0)
    with pytest.raises(ArgumentError, match="vmin/vmax or clip_percentile"):
        patching.plot(vmax=1, clip_percentile=99)
    with pytest.raises(ArgumentError, match="width"):
        patching.plot(width="triple")


def test_color_limits():
    v = np.array([[-0.5, 0.2], [np.nan, 2.0]])
    assert color_limits(v) == (-2.0, 2.0, "neither")  # ±max|value|, NaN ignored
    assert color_limits(v, fixed=(-1, 1)) == (-1.0, 1.0, "max")
    assert color_limits(v, vmin=-0.4) == (-0.4, 0.4, "both")  # one end mirrors
    assert color_limits(v, signed=False, fixed=(0, 1)) == (0.0, 1.0, "both")
    assert color_limits(np.full((2, 2), np.nan)) == (-1.0, 1.0, "neither")  # nothing computed: a unit scale
    with pytest.raises(ArgumentError, match="vmin < vmax"):
        color_limits(v, vmin=1, vmax=0)


def test_drawing_into_an_axes_of_your_own(patching, heads):
    fig = Figure(figsize=(7, 3))
    a, b = fig.subplots(1, 2)
    assert patching.plot(ax=a) is fig
    assert heads.plot(ax=b, kind="previous_token") is fig
    _masked_equal(b.images[0].get_array(), heads.score("previous_token").numpy())


# -- heads -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["induction", "duplicate_token"])
def test_head_scores_heatmap(heads, kind, tmp_path):
    fig = heads.plot(kind=kind)
    im = _image(fig)
    _masked_equal(im.get_array(), heads.score(kind).numpy())
    assert im.get_clim() == (0.0, 1.0)  # attention probability: a sequential [0, 1] scale
    assert "attention probability" in _colorbar_label(fig)
    _check_figure(fig, tmp_path, name=f"heads-{kind}", colorbar=True)


def test_head_ablation_heatmap_hatches_heads_not_ablated(heads, tmp_path):
    abl = heads.ablation
    fig = abl.plot(method="mean")
    im = _image(fig)
    effects = abl.loss_increase[abl.methods.index("mean")]
    _masked_equal(im.get_array(), effects.numpy())
    top = float(effects[~effects.isnan()].abs().max())
    assert im.get_clim() == pytest.approx((-top, top))  # raw effects: ±max|value|
    assert abl.label in _colorbar_label(fig)
    assert len(abl.heads) < heads.n_layers * heads.n_heads
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["not ablated"]
    _check_figure(fig, tmp_path, name="head-ablation", colorbar=True)
    with pytest.raises(ArgumentError, match="method"):
        abl.plot(method="resample")


def test_prefix_curves_lines(heads, tmp_path):
    prefix = heads.prefix
    fig = prefix.plot(heads=[(0, 1), (2, 3)])
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["L0H1", "L2H3"]
    for line, (layer, head) in zip(lines, [(0, 1), (2, 3)]):
        np.testing.assert_allclose(line.get_xdata(), prefix.prefix_lengths)
        np.testing.assert_allclose(line.get_ydata(), prefix.curve(layer, head), atol=1e-7)
    assert len(prefix.plot(k=3).axes[0].get_lines()) == 3
    _check_figure(fig, tmp_path, name="prefix", colorbar=False)


def test_composition_heatmap(tiny, tmp_path):
    from attnlab.heads import composition_scores

    comp = composition_scores(tiny, baseline_draws=4)
    fig = comp.plot(mode="k")
    im = _image(fig)
    n = comp.n_layers * comp.n_heads
    _masked_equal(im.get_array(), comp.score("k").reshape(n, n).numpy())
    lo, hi = im.get_clim()
    assert lo == 0.0 and hi == pytest.approx(float(comp.score("k").nan_to_num(0).max()))
    assert "K-composition" in _colorbar_label(fig)
    _check_figure(fig, tmp_path, name="composition", colorbar=True)


def test_sink_heatmap(tiny, tmp_path):
    from attnlab.heads import sink_analysis

    tokens = torch.randint(0, tiny.info.d_vocab, (3, 20), generator=torch.Generator().manual_seed(0))
    sinks = sink_analysis(tiny, tokens)
    fig = sinks.plot(kind="first_token")
    _masked_equal(_image(fig).get_array(), sinks.score("first_token").numpy())
    _check_figure(fig, tmp_path, name="sinks", colorbar=True)


def test_retrieval_heatmap_and_ablation_bars(tiny, tmp_path):
    from attnlab.heads import retrieval_ablation, retrieval_scores
    from attnlab.tasks.needle import needle_haystack_tokens

    inputs = needle_haystack_tokens(tiny, needle=[7, 8, 9], question=[3], depths=[0.0, 0.5, 1.0], lengths=[12],
                                    token_range=(10, 50), seed=0)
    scores = retrieval_scores(tiny, inputs)
    fig = scores.plot()
    _masked_equal(_image(fig).get_array(), scores.scores.numpy())
    assert "retrieval score" in _colorbar_label(fig)
    _check_figure(fig, tmp_path, name="retrieval", colorbar=True)

    abl = retrieval_ablation(tiny, inputs, scores, k=1, n_random=2, n_bootstrap=100)
    fig = abl.plot()
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([abl.summary[c]["mean"] for c in ("clean", "top",
                                                                                              "random")])
    (dots,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "random draws"]
    np.testing.assert_allclose(dots.get_ydata(), abl.random.double().mean(1).numpy())
    _check_figure(fig, tmp_path, name="retrieval-ablation", colorbar=False)


# -- dissociation ------------------------------------------------------------------------------------------------
def test_dissociation_scatter(tiny, tmp_path):
    from attnlab.dissociation import dissociation_sweep
    from tests.test_dissociation_controller import FAMS, toy_items

    items = toy_items(tiny, FAMS, n_per_family=3, seed=0, criterion="none")
    result = dissociation_sweep(tiny, items, n_bootstrap=100, n_control_draws=0, progress=False)
    fig = result.plot()
    (points,) = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    df = result.to_dataframe()
    np.testing.assert_allclose(points.get_offsets(), df[["recall_drop", "reasoning_drop"]].to_numpy(), atol=1e-9)
    assert "recall drop" in fig.axes[0].get_xlabel() and "reasoning drop" in fig.axes[0].get_ylabel()
    _check_figure(fig, tmp_path, name="dissociation", colorbar=False)


# -- circuits ----------------------------------------------------------------------------------------------------
def test_edge_scores_heatmap_masks_non_edges(edge_scores, tmp_path):
    fig = edge_scores.plot()
    im = _image(fig)
    expected = edge_scores.scores.double().numpy().copy()
    expected[~edge_scores.graph.valid.numpy()] = np.nan
    _masked_equal(im.get_array(), expected)
    top = float(np.nanmax(np.abs(expected)))
    assert im.get_clim() == pytest.approx((-top, top))
    assert "edge score" in _colorbar_label(fig)
    _check_figure(fig, tmp_path, name="edge-scores", colorbar=True)


def test_circuit_bars(circuit, tmp_path):
    fig = circuit.plot(n=8)
    bars = fig.axes[0].patches
    assert [b.get_width() for b in bars] == pytest.approx([s for _, s in circuit.edges[:8]])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [e for e, _ in circuit.edges[:8]]
    _check_figure(fig, tmp_path, name="circuit", colorbar=False)


def test_circuit_comparison_grid(circuit, tmp_path):
    from attnlab.circuits import compare_circuits

    cmp = compare_circuits(circuit, [(0, 0), (2, 3)], names=("EAP", "hand-picked"))
    fig = cmp.plot(n_layers=3, n_heads=4)
    grid = np.zeros((3, 4))
    for h in cmp.heads_a:
        grid[h] += 1
    for h in cmp.heads_b:
        grid[h] += 2
    _masked_equal(_image(fig).get_array(), grid)
    assert "Jaccard" in fig.axes[0].get_title(loc="left")
    _check_figure(fig, tmp_path, name="comparison", colorbar=False)
    with pytest.raises(ArgumentError, match="too small"):
        cmp.plot(n_layers=1, n_heads=1)


def test_faithfulness_curve_line(tiny, pairs, edge_scores, tmp_path):
    from attnlab.circuits import faithfulness_curve

    curve = faithfulness_curve(tiny, pairs, edge_scores, [5, 20, 60])
    fig = curve.plot()
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "circuit"]
    np.testing.assert_allclose(line.get_xdata(), curve.sizes)
    np.testing.assert_allclose(line.get_ydata(), curve.faithfulness)
    _check_figure(fig, tmp_path, name="faithfulness", colorbar=False)


def test_acdc_trace(tiny, pairs, tmp_path):
    from attnlab.circuits import acdc

    result = acdc(tiny, pairs, 0.05, max_tests=40, progress=False)
    fig = result.plot()
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "circuit"]
    np.testing.assert_allclose(line.get_ydata(), [t[3] for t in result.trace])
    (full,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "full model"]
    assert full.get_ydata()[0] == pytest.approx(result.full_metric)
    assert "stopped early" in fig.axes[0].get_title(loc="left")
    _check_figure(fig, tmp_path, name="acdc", colorbar=False)


def test_agreement_scatter(tiny, pairs, tmp_path):
    from attnlab.circuits import agreement_report

    report = agreement_report(tiny, pairs, "heads")
    fig = report.plot()
    (points,) = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points.get_offsets(), [[p["exact"], p["attribution"]] for p in report.points])
    assert f"{report.spearman:.2f}" in fig.axes[0].get_title(loc="left")
    _check_figure(fig, tmp_path, name="agreement", colorbar=False)


def test_every_result_type_has_a_plot_method():
    """The list of the issue: each class draws itself (and its docstring says it returns a Figure)."""
    from attnlab.circuits.acdc import ACDCResult
    from attnlab.circuits.agreement import AgreementReport
    from attnlab.circuits.circuit import Circuit
    from attnlab.circuits.compare import CircuitComparison
    from attnlab.circuits.eap import EdgeScores
    from attnlab.circuits.evaluate import FaithfulnessCurve
    from attnlab.dissociation.result import DissociationResult
    from attnlab.heads import (CompositionScores, HeadAblation, HeadScores, PrefixCurves, RetrievalAblation,
                               RetrievalScores, SinkAnalysis)
    from attnlab.results import PatchingResult

    for cls in (PatchingResult, HeadScores, CompositionScores, SinkAnalysis, RetrievalScores, PrefixCurves,
                RetrievalAblation, HeadAblation, DissociationResult, Circuit, CircuitComparison, AgreementReport,
                EdgeScores, FaithfulnessCurve, ACDCResult):
        assert "matplotlib.figure.Figure" in cls.plot.__doc__, cls.__name__


def test_import_attnlab_does_not_load_matplotlib():
    import subprocess
    import sys

    code = "import sys, attnlab; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
