"""Tutorial 4 (induction heads): committed without outputs, and executed end to end in a fresh python3 kernel in a
temporary copy of ``tutorials/`` (see :mod:`tests.tutorial_fixtures`)."""

import re
from pathlib import Path

import nbformat
import pytest

from attnlab.render.contract import HEADGALLERY_MIME
from tests.tutorial_fixtures import TUTORIALS, assert_committed_without_outputs, cell_stdout, execute_tutorial

NB04 = TUTORIALS / "04_induction_heads.ipynb"



def test_tutorial_04_is_committed_without_outputs():
    assert_committed_without_outputs(NB04)


@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_04_executes(tmp_path: Path):
    executed = execute_tutorial(NB04.name, tmp_path)
    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for cell in cells:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source

    # The gallery is displayed through its MIME type, with the static fallbacks, for all 30 x 9 heads.
    bundles = [o.data for c in cells for o in c.outputs
               if o.output_type == "execute_result" and HEADGALLERY_MIME in o.get("data", {})]
    assert len(bundles) == 1 and {"text/html", "text/plain"} <= set(bundles[0])
    payload = bundles[0][HEADGALLERY_MIME]
    assert len(payload["heads"]) == 30 * 9 and payload["prefix_lengths"] == [1, 2, 4, 8, 16]
    assert sum(1 for h in payload["heads"] if h["ablation"]) == 8

    # The model copies: the second repeat is much easier than the first.
    (abl_cell,) = [c for c in cells if "ablation_effects(" in c.source]
    text = cell_stdout(abl_cell)
    first, second = map(float, re.search(r"first repeat (\d+\.\d+), second repeat (\d+\.\d+)", text).groups())
    assert first - second > 3.0, text

    # The summary names induction heads, and at least one is verified by ablation.
    (summary,) = [c for c in cells if "induction heads (score > 0.2)" in c.source]
    text = cell_stdout(summary)
    assert re.search(r"induction heads \(score > 0\.2\): L\d+H\d", text), text
    assert re.search(r"by > 0\.1 nats: L\d+H\d", text), text
    assert "identical scores: True" in cell_stdout(cells[-1])

    # K-composition: ablating the previous-token heads lowers every listed induction head's score.
    (kcomp,) = [c for c in cells if "induction_scores_with(upstream)" in c.source]
    pairs = re.findall(r"induction score (\d+\.\d+) -> (\d+\.\d+)", cell_stdout(kcomp))
    assert pairs and all(float(after) < float(before) for before, after in pairs), cell_stdout(kcomp)

    # Every listed head got a prefix class.
    (prefix,) = [c for c in cells if "prefix_curves(model, probe)" in c.source]
    assert re.search(r"-> (short|long)-prefix", cell_stdout(prefix)), cell_stdout(prefix)
