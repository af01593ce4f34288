"""Tutorial 2 (exploring the IOI circuit with the Explorer): committed without outputs, and executed end to end in a
fresh python3 kernel in a temporary copy of ``tutorials/`` (see :mod:`tests.tutorial_fixtures`). The claims its text
makes about the embedded model are checked against the executed outputs."""

import re
from pathlib import Path

import nbformat
import pytest

from attnlab.explorer.widget import FALLBACK_NOTE
from tests.tutorial_fixtures import TUTORIALS, assert_committed_without_outputs, cell_stdout, execute_tutorial

NB02 = TUTORIALS / "02_exploring_ioi_circuit.ipynb"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _cell(cells, marker: str):
    (cell,) = [c for c in cells if marker in c.source]
    return cell


def test_tutorial_02_is_committed_without_outputs():
    assert_committed_without_outputs(NB02)


@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_02_executes_and_its_claims_hold(tmp_path: Path):
    executed = execute_tutorial(NB02.name, tmp_path)
    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for cell in cells:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source

    # Each section's Explorer is displayed once, by its run() (before the sweep, so its progress shows), as a widget
    # with the static fallback (note + heatmap of the finished run) for other front ends. (Other widgets, e.g. the
    # progress bar of the first model load, carry no such fallback.)
    def widgets(cell) -> list[dict]:
        return [o.data for o in cell.outputs
                if WIDGET_MIME in o.get("data", {}) and FALLBACK_NOTE in o.data.get("text/html", "")]

    heads_cell = _cell(cells, 'explorer = attnlab.Explorer(model, "ioi"')
    resid_cell = _cell(cells, 'resid = attnlab.Explorer(model, "ioi"')
    assert sum(len(widgets(c)) for c in cells) == 2
    (heads_view,), (resid_view,) = widgets(heads_cell), widgets(resid_cell)
    for view in (heads_view, resid_view):
        assert FALLBACK_NOTE in view["text/html"] and "<table" in view["text/html"]
    # ... and each shows the sweep its section describes (the explorer of section 1 is not re-used for section 4)
    assert "heads (denoising)" in heads_view["text/html"] and "resid pre" not in heads_view["text/html"]
    assert "resid pre (denoising)" in resid_view["text/html"] and ">END<" in resid_view["text/html"]

    # "The strongest head attends from END to S2 and lowers logit(S)".
    (first,) = [c for c in cells if 'explorer.selected = top["head_name"][0]' in c.source]
    text = cell_stdout(first)
    att = {k: float(v) for k, v in re.findall(r"attention END -> +(\w+): (-?\d+\.\d+)", text)}
    assert max(att, key=att.get) == "S2", text
    to_io, to_s = map(float, re.search(r"to IO ([-+]\d+\.\d+), to S ([-+]\d+\.\d+)", text).groups())
    assert to_s < -0.5 and to_s < to_io, text
    assert float(re.search(r"logit difference by ([-+]\d+\.\d+)", text).group(1)) < -0.5, text

    # Name-mover-like heads exist, at layers 23-24 of 30.
    (summary,) = [c for c in cells if "name-mover-like heads:" in c.source]
    text = cell_stdout(summary)
    heads = re.search(r"^name-mover-like heads: (.+)$", text, re.M).group(1)
    assert re.fullmatch(r"L\d+H\d+(, L\d+H\d+)*", heads), text
    layers = {int(x) for x in re.findall(r"L(\d+)H", heads)}
    assert layers <= {23, 24}, text

    # The residual-stream lens and the history round trip.
    (lens,) = [c for c in cells if "L26 @ END" in c.source]
    assert "logit lens at resid_pre 26" in cell_stdout(lens)
    assert "reloaded equal: True" in cell_stdout(cells[-1])
