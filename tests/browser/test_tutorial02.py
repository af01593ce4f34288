"""Tutorial 2 in JupyterLab after Run All: every section shows the view its text names.

The notebook is tutorials/02 as committed, with one line added to its settings cell, the test suite's small settings
(``ATTNLAB_TUTORIAL_SMALL=1``: 4 prompts per sweep). During Run > Run All Cells, the first Explorer is on screen
while its sweep runs, its status line counting passes with the time elapsed and left. After the run the test checks,
section by section:

1. *Run a head sweep*: the Explorer in that cell shows the [layer, head] heatmap (title, 30 layer rows, 9 head
   columns), its component menu says heads, and its controls equal the kernel's ``explorer.controller.controls``;
2. *Name movers*: the role table, with the columns the text describes;
3. *One prompt*: the head that the cell selected from Python is the one the first Explorer highlights, with its
   detail panel (the kernel's ``explorer.selected``);
4. *Residual stream*: the Explorer in that cell shows the [layer, position] heatmap of the residual stream (title,
   30 rows, the prompt's position labels as columns, END among them, none clipped), its component menu says
   resid_pre, and its controls equal the kernel's ``resid.controller.controls``;
5. *History*: the history table and the export round trip.

Each Explorer is displayed once, by its own ``run()``. Nothing is written next to the notebook. A screenshot per
section goes to test-artifacts/.
"""

import json
import re

import pytest
from playwright.sync_api import Locator, Page

from tests.tutorial_fixtures import TUTORIALS

from .jupyter import _WATCH_START, LabServer, _wait_for_run, collect_console_errors, notebook_panel, open_notebook, \
    run_cell_code, screenshot

NB02 = TUTORIALS / "02_exploring_ioi_circuit.ipynb"
EXPLORER = ".attnlab-explorer"
TIMEOUT_MS = 420_000  # Run All: model load, two sweeps of 4 prompts with their activation records, twelve detail panels
SMALL = 'os.environ["ATTNLAB_TUTORIAL_SMALL"] = "1"  # the test suite\'s small settings (added by the test)\n'


def _code_cell(page: Page, marker: str) -> Locator:
    """The one code cell whose source contains ``marker``."""
    cells = notebook_panel(page).locator(".jp-CodeCell").filter(
        has=page.locator(".jp-InputArea .cm-content", has_text=marker))
    assert cells.count() == 1, f"{cells.count()} code cells contain {marker!r}"
    return cells.first


def _heatmap(view: Locator) -> dict:
    """What the Explorer's heatmap shows: title, row and column labels, the component menu, the status."""
    plot = view.locator(".attnlab-explorer-plot")
    return {
        "title": plot.locator(".attnlab-title").inner_text(),
        "rows": plot.locator(".attnlab-row-labels text").all_text_contents(),
        "cols": plot.locator(".attnlab-col-labels:not(.attnlab-col-labels-top) text").all_text_contents(),
        "component": view.locator("select[name=component]").input_value(),
        "status": view.get_attribute("data-status"),
    }


def _form(view: Locator) -> dict:
    """The Explorer's controls as the form shows them."""
    return {
        "component": view.locator("select[name=component]").input_value(),
        "direction": view.locator("select[name=direction]").input_value(),
        "corruption": view.locator("select[name=corruption]").input_value(),
        "n_prompts": int(view.locator("input[name=n_prompts]").input_value()),
        "seed": int(view.locator("input[name=seed]").input_value()),
    }


# Labels drawn outside their SVG's box, or outside the Explorer, are cut off on screen.
_CLIPPED = """
(view) => {
  const out = [];
  const box = view.getBoundingClientRect();
  for (const text of view.querySelectorAll('.attnlab-explorer-plot svg text')) {
    const svg = text.ownerSVGElement.getBoundingClientRect();
    const r = text.getBoundingClientRect();
    const inside = (b) => r.left >= b.left - 0.5 && r.right <= b.right + 0.5 && r.top >= b.top - 0.5
      && r.bottom <= b.bottom + 0.5;
    if (r.width > 0 && (!inside(svg) || !inside(box))) {
      const f = (b) => `[${Math.round(b.left)}, ${Math.round(b.top)}, ${Math.round(b.right)}, ${Math.round(b.bottom)}]`;
      out.push(`${text.textContent} ${f(r)} in svg ${f(svg)} of view ${f(box)}`);
    }
  }
  return out;
}
"""


def _shot(page: Page, target: Locator, name: str) -> None:
    """Scroll ``target``'s top to the top of the notebook and save a screenshot."""
    target.evaluate("(e) => e.scrollIntoView({block: 'start'})")
    screenshot(page, name)


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_02_sections_show_their_views_after_run_all(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    folder = lab.root / "tutorial02"
    folder.mkdir()
    nb = json.loads(NB02.read_text())
    settings = next(c for c in nb["cells"] if c["cell_type"] == "code" and "N_PROMPTS =" in "".join(c["source"]))
    source = "".join(settings["source"])
    assert source.startswith("import os\n"), source
    settings["source"] = source.replace("import os\n", "import os\n" + SMALL, 1)
    (folder / NB02.name).write_text(json.dumps(nb))
    before = {p.name for p in folder.iterdir()}

    open_notebook(page, lab, f"tutorial02/{NB02.name}")
    panel = notebook_panel(page)
    # Run All; while the first sweep runs, its Explorer is already on screen, counting passes with a time estimate.
    panel.evaluate(_WATCH_START)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))').click()
    running = panel.locator(f'{EXPLORER}[data-status="running"] .attnlab-status-text', has_text="left").first
    running.wait_for(timeout=TIMEOUT_MS)
    line = running.inner_text()
    assert re.search(r"^running · pass (\d+)/(\d+) · (\d+ s|\d+:\d\d) elapsed · about (\d+ s|\d+:\d\d) left", line), line
    done, total = map(int, re.search(r"pass (\d+)/(\d+)", line).groups())
    assert 1 < done < total, line
    _shot(page, panel.locator(EXPLORER).first, "tutorial02-0-running")
    _wait_for_run(page, TIMEOUT_MS, allow_errors=False)
    assert panel.locator(EXPLORER).count() == 2, "each section's Explorer is displayed once, by its run()"

    kernel = json.loads(run_cell_code(page, (
        "import json\n"
        "keys = ('component', 'direction', 'corruption', 'n_prompts', 'seed')\n"
        "print(json.dumps({'heads': {k: explorer.controller.controls[k] for k in keys},\n"
        "                  'resid': {k: resid.controller.controls[k] for k in keys},\n"
        "                  'selected': str(explorer.selected), 'resid_selected': str(resid.selected),\n"
        "                  'n_pos': resid.result.values.shape[1],\n"
        "                  'pos_labels': list(resid.result.labels['pos'])}))"), timeout=TIMEOUT_MS).strip())

    # 1. The head sweep: [layer, head], component heads, controls as in the kernel.
    heads_view = _code_cell(page, 'explorer = attnlab.Explorer(model, "ioi"').locator(EXPLORER)
    assert heads_view.count() == 1
    shown = _heatmap(heads_view)
    assert shown["status"] == "done" and shown["component"] == "heads"
    assert "heads" in shown["title"] and "resid" not in shown["title"], shown["title"]
    assert shown["rows"] == [f"L{i}" for i in range(30)] and shown["cols"] == [f"H{i}" for i in range(9)]
    assert _form(heads_view) == kernel["heads"]
    assert not heads_view.evaluate(_CLIPPED)
    _shot(page, heads_view, "tutorial02-1-head-sweep")

    # 2. The name movers: the role table the text describes.
    table = _code_cell(page, 'table["role"] = table.apply(role, axis=1)').locator(".jp-OutputArea-output table")
    headers = table.locator("thead th").all_text_contents()
    assert {"head", "END->IO", "END->S2", "DLA IO-S", "mean ablation", "role"} <= set(headers), headers
    _shot(page, table, "tutorial02-2-name-movers")

    # 3. One prompt: the first Explorer highlights the head the cell selected, with its detail panel.
    heads_view.locator(f'.attnlab-explorer-detail[data-name="{kernel["selected"]}"]').wait_for(timeout=30_000)
    layer, head = map(int, re.fullmatch(r"L(\d+)H(\d+)", kernel["selected"]).groups())
    selected = heads_view.locator("rect.attnlab-cell-selected")
    assert (selected.get_attribute("data-row"), selected.get_attribute("data-col")) == (str(layer), str(head))
    _shot(page, heads_view.locator(".attnlab-explorer-detail"), "tutorial02-3-one-prompt")

    # 4. The residual stream: [layer, position], component resid_pre, its own controls; the labels all visible.
    resid_view = _code_cell(page, 'resid = attnlab.Explorer(model, "ioi"').locator(EXPLORER)
    assert resid_view.count() == 1
    shown = _heatmap(resid_view)
    assert shown["status"] == "done" and shown["component"] == "resid_pre"
    assert "resid" in shown["title"] and "heads" not in shown["title"], shown["title"]
    assert shown["rows"] == [f"L{i}" for i in range(30)]
    assert shown["cols"] == kernel["pos_labels"] and {"S2", "END", "IO/S1"} <= set(shown["cols"]), shown["cols"]
    assert _form(resid_view) == kernel["resid"] and kernel["resid_selected"] == "L26 @ END"
    resid_view.locator('.attnlab-explorer-detail[data-kind="cell"] .attnlab-lens').wait_for(timeout=30_000)
    _shot(page, resid_view, "tutorial02-4-residual-stream")
    _shot(page, resid_view.locator(".attnlab-explorer-plot svg").last, "tutorial02-4-residual-stream-columns")
    clipped = resid_view.evaluate(_CLIPPED)
    assert not clipped, f"labels cut off: {clipped}"
    # the legend in the section's text names every role label of the columns
    legend = page.locator(".jp-MarkdownCell", has_text="The column labels").inner_text()
    assert all(label in legend for label in ("BOS", "IO/S1", "PLACE", "OBJECT", "S2", "END"))

    # 5. History and export: both runs listed; the export reloaded equal (to a temporary folder).
    history = _code_cell(page, "explorer.history + resid.history").locator(".jp-OutputArea-output")
    text = "\n".join(history.all_inner_texts())
    assert "reloaded equal: True" in text and "heads" in text and "resid" in text, text
    _shot(page, history.first, "tutorial02-5-history")

    assert {p.name for p in folder.iterdir()} - before <= {".ipynb_checkpoints"}, "the tutorial wrote files"
    assert not [e for e in console_errors if "attnlab" in e.lower()], console_errors
