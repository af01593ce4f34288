"""Browser test of ``attnlab.Lab`` in JupyterLab: the analyses as tabs of one widget, on the embedded model.

The first tab (activation patching) renders at once; clicking "Head scores" builds the gallery widget in the kernel and
shows it, and a run started from its button inside the tab finishes with the kernel's scores in the grid; clicking
"Attention" shows every head's pattern on the default text. Screenshots go to test-artifacts/.
"""

import json

import pytest
from playwright.sync_api import Page

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook

TIMEOUT_MS = 180_000

SETUP = """\
import json
import attnlab
model = attnlab.load_model("smollm2-135m")
lab = attnlab.Lab(model, "ioi", tabs=["patching", "heads", "attention"],
                  options={"patching": {"n_prompts": 2}, "heads": {"seq_len": 5, "n_sequences": 4}})
lab
"""


@pytest.mark.browser
@pytest.mark.integration
def test_lab_tabs_build_on_click_and_run_inside_the_tab(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "lab_tabs.ipynb", [SETUP])
    open_notebook(page, lab, "lab_tabs.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    out = notebook_panel(page).locator(".jp-OutputArea-output:has(.lm-TabBar-tab)").first
    tabs = out.locator(".lm-TabBar-tab")
    tabs.first.wait_for(timeout=60_000)
    assert tabs.all_inner_texts() == ["Activation patching", "Head scores", "Attention"]
    explorer = out.locator(".attnlab-explorer")
    explorer.wait_for(timeout=60_000)
    assert "smollm2" in explorer.inner_text().lower()
    assert out.locator(".attnlab-gallery-widget").count() == 0  # not built before its tab is opened
    screenshot(page, "lab-patching-tab")

    tabs.nth(1).click()
    gallery = out.locator(".attnlab-gallery-widget")
    gallery.wait_for(timeout=60_000)
    gallery.locator("button.attnlab-run").click()
    page.wait_for_selector(".jp-OutputArea-output .attnlab-gallery-widget[data-status='done']", timeout=TIMEOUT_MS)
    # the grid shows induction scores first (the gallery's default kind)
    induction = json.loads(run_cell_code(
        page, "r = lab.gallery.result; print(json.dumps(r.scores[r.kinds.index('induction')].tolist()))"))
    cells = gallery.locator("rect.attnlab-gallery-cell[data-value]")
    assert cells.count() == 30 * 9
    shown = cells.evaluate_all("els => els.map(e => [+e.dataset.layer, +e.dataset.head, +e.dataset.value])")
    for layer, head, value in shown:
        assert abs(value - induction[layer][head]) < 1e-4
    out.locator(".lm-TabBar").first.scroll_into_view_if_needed()
    screenshot(page, "lab-heads-tab")

    tabs.nth(2).click()
    view = out.locator(".attnlab-av")
    view.wait_for(timeout=60_000)
    tokens = view.locator(".attnlab-av-text .attnlab-av-token").all_inner_texts()
    expected = json.loads(run_cell_code(page, "print(json.dumps(lab.attention.tokens))"))
    assert len(tokens) == len(expected) and "Mary" in "".join(tokens)
    assert view.locator(".attnlab-av-thumb").count() == 30 * 9
    out.locator(".lm-TabBar").first.scroll_into_view_if_needed()
    screenshot(page, "lab-attention-tab")
    assert not console_errors, console_errors

