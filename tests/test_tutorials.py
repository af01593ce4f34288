"""Tutorials: committed clean, and executed end to end in a fresh kernel against the installed attnlab.

The execution itself lives in :mod:`tests.tutorial_fixtures` (a session-scoped fixture), so that browser tests can
open the executed notebook in JupyterLab without running it again.
"""

import math
import re
from pathlib import Path

import nbformat
import pytest

from attnlab.render.contract import HEATMAP_MIME
from tests.tutorial_fixtures import TUTORIAL_TEST_TIMEOUT_S, TUTORIALS

NB01 = TUTORIALS / "01_ioi_activation_patching.ipynb"
REPO = TUTORIALS.parent

# The embedded SmolLM2-135M: 30 layers of 9 query heads; tutorial 1's IOI template is 16 tokens long (BOS included).
N_LAYERS, N_HEADS, N_POS = 30, 9, 16


def _code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _output_text(output) -> str:
    """All text of one output: stream text, every text-like MIME entry of a bundle, an error's traceback."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join([output.ename, output.evalue, *output.traceback])
    return "\n".join(v for k, v in output.get("data", {}).items() if isinstance(v, str))


def _stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _cells_calling(cells: list, call: str) -> list:
    return [cell for cell in cells if call in cell.source]


def _heatmap(cell) -> dict:
    """The heatmap payload the cell displayed as its result (exactly one)."""
    bundles = [o.data for o in cell.outputs if o.output_type == "execute_result" and HEATMAP_MIME in o.data]
    assert len(bundles) == 1, f"expected one {HEATMAP_MIME} result from cell:\n{cell.source}\ngot {cell.outputs}"
    assert "text/html" in bundles[0] and "text/plain" in bundles[0], "heatmaps must carry static fallbacks"
    return bundles[0][HEATMAP_MIME]


def test_tutorial_01_is_committed_without_outputs():
    """The committed notebook is valid, uses the python3 kernelspec, and stores no outputs or execution counts."""
    nb = nbformat.read(NB01, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    stored = [i for i, cell in enumerate(nb.cells)
              if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not stored, f"code cells {stored} of {NB01.name} store outputs or execution counts; clear them"


@pytest.mark.tutorial
@pytest.mark.timeout(TUTORIAL_TEST_TIMEOUT_S)
def test_tutorial_01_executes(executed_tutorial_01: Path):  # the session fixture of tests/conftest.py
    assert REPO not in executed_tutorial_01.resolve().parents, "the executed notebook must be written outside the repo"
    nb = nbformat.read(executed_tutorial_01, as_version=4)
    cells = _code_cells(nb)
    assert all(cell.execution_count is not None for cell in cells), "every code cell must have run"

    for cell in cells:
        for output in cell.outputs:
            assert output.output_type != "error", f"cell raised:\n{cell.source}\n{_output_text(output)}"
            assert "Traceback" not in _output_text(output), f"a traceback in the output of cell:\n{cell.source}"

    # The head sweeps (denoising, noising) display [layer, head] heatmaps through the attnlab MIME type.
    head_cells = _cells_calling(cells, "attnlab.patch_heads(")
    assert len(head_cells) == 2
    for cell in head_cells:
        payload = _heatmap(cell)
        assert payload["kind"] == "heatmap"
        assert payload["row_labels"] == [f"L{layer}" for layer in range(N_LAYERS)]
        assert payload["col_labels"] == [f"H{head}" for head in range(N_HEADS)]
        values = [v for row in payload["values"] for v in row]
        assert len(values) == N_LAYERS * N_HEADS and all(v is not None and math.isfinite(v) for v in values)
        assert max(abs(v) for v in values) > 0.05, "no head moved the logit difference by 5% of the gap"

    # The residual-stream sweeps display [layer, pos] heatmaps whose columns include S2 and END.
    resid_cells = _cells_calling(cells, "attnlab.patch_residual_stream(")
    assert len(resid_cells) == 2
    for cell in resid_cells:
        payload = _heatmap(cell)
        assert len(payload["values"]) == N_LAYERS and len(payload["col_labels"]) == N_POS
        assert {"S2", "END"} <= set(payload["col_labels"])

    # Heads by position: a few layers x 9 heads, at S2 and END only.
    (by_pos_cell,) = _cells_calling(cells, "attnlab.patch_heads_by_position(")
    payload = _heatmap(by_pos_cell)
    assert payload["col_labels"] == ["S2", "END"]
    assert 0 < len(payload["row_labels"]) <= 5 * N_HEADS and len(payload["row_labels"]) % N_HEADS == 0

    # The prose says the model does the task and the S2-swap corruption flips its answer.
    (ld_cell,) = _cells_calling(cells, 'print(f"clean     LD')
    text = _stdout(ld_cell)
    clean = float(re.search(r"clean\s+LD ([+-]\d+\.\d+)", text).group(1))
    corrupted = float(re.search(r"corrupted LD ([+-]\d+\.\d+)", text).group(1))
    assert clean > 0 > corrupted, text

    # A saved result loads back identical, and the notebook removed its temporary directory.
    (save_cell,) = _cells_calling(cells, "PatchingResult.load(")
    assert "identical values: True" in _stdout(save_cell)
    assert _cells_calling(cells, "shutil.rmtree(workdir)")
