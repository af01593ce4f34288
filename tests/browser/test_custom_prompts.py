"""Browser test of the Explorer's "Your own prompts" form in JupyterLab, on the embedded model.

A researcher types a clean prompt whose corrupted version is not token-aligned: the form shows why, as text (both
tokenisations and the fix). Then they paste two pairs, the task switches to "your own prompts", Run sweeps the heads
on them, and every heatmap cell equals the kernel's result (``explorer.result.values``). Screenshots go to
test-artifacts/.
"""

import json

import pytest
from playwright.sync_api import Page

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook

TIMEOUT_MS = 240_000

SETUP = """\
import attnlab
model = attnlab.load_model("smollm2-135m")
explorer = attnlab.Explorer(model, "ioi", component="heads")
explorer
"""

EXPLORER = ".jp-OutputArea-output .attnlab-explorer"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
MISALIGNED = "When Mary and John went to the store, John, the tall one, gave a drink to"
PAIRS = (f"{CLEAN} | {CORRUPTED} | Mary | John\n"
         "When Anna and Tom went to the park, Tom gave a book to | "
         "When Anna and Tom went to the park, Anna gave a book to | Anna | Tom\n")


@pytest.mark.browser
@pytest.mark.integration
def test_typed_prompts_error_then_sweep(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "custom_prompts.ipynb", [SETUP])
    open_notebook(page, lab, "custom_prompts.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    panel = notebook_panel(page)
    ex = panel.locator(EXPLORER).first
    ex.wait_for(timeout=30_000)
    form = ex.locator("details.attnlab-custom")
    form.locator("summary").click()
    assert form.get_attribute("open") is not None

    # Misaligned prompts: the explanation shows in the form, as text; the task stays IOI.
    form.locator("input[name=custom_clean]").fill(CLEAN)
    form.locator("input[name=custom_corrupted]").fill(MISALIGNED)
    form.locator("input[name=custom_answer]").fill("Mary")
    form.locator("input[name=custom_distractor]").fill("John")
    form.locator("button.attnlab-custom-use").click()
    page.wait_for_selector(f'{EXPLORER} details.attnlab-custom[data-state="error"]', timeout=TIMEOUT_MS)
    error = form.locator(".attnlab-custom-error").inner_text()
    assert "the clean and corrupted prompts must have the same number of tokens" in error
    assert "clean     (" in error and "corrupted (" in error and "Fix:" in error
    assert "' tall'" in error  # the corrupted side's extra tokens, shown as tokens
    assert ex.locator("select[name=task]").input_value() == "ioi"
    form.scroll_into_view_if_needed()
    screenshot(page, "custom-prompts-misaligned")

    # Two pairs pasted: accepted, previewed, the task switches; Run sweeps them.
    form.locator("textarea[name=custom_lines]").fill(PAIRS)
    form.locator("button.attnlab-custom-use").click()
    page.wait_for_selector(f'{EXPLORER} details.attnlab-custom[data-state="ok"]', timeout=TIMEOUT_MS)
    assert form.locator(".attnlab-custom-error").inner_text() == ""
    info = form.locator(".attnlab-custom-info").inner_text()
    assert info.startswith("2 pairs of") and '" Mary"' in info and '" John"' in info
    assert form.locator(".attnlab-token-changed").count() == 2  # one changed token, in the clean and corrupted strips
    assert ex.locator("select[name=task]").input_value() == "custom"
    assert ex.locator("input[name=n_prompts]").input_value() == "2"
    screenshot(page, "custom-prompts-accepted")

    ex.locator("button.attnlab-run").click()
    page.wait_for_selector(f'{EXPLORER}[data-status="done"]', timeout=TIMEOUT_MS)
    cells = ex.locator("rect.attnlab-cell")
    assert cells.count() == 30 * 9
    shown = cells.evaluate_all(
        "els => els.map(e => [Number(e.dataset.row), Number(e.dataset.col), e.dataset.value])")
    out = run_cell_code(page, "import json\nr = explorer.result\n"
                              "print(json.dumps({'values': r.values.tolist(), 'task': explorer.controls['task'],"
                              " 'prompts': explorer.controller.dataset().clean_prompts}))", timeout=TIMEOUT_MS)
    kernel = json.loads(out.strip().splitlines()[-1])
    assert kernel["task"] == "custom" and kernel["prompts"][0] == CLEAN and len(kernel["prompts"]) == 2
    for row, col, value in shown:
        assert float(value) == pytest.approx(kernel["values"][row][col], abs=1e-9)
    assert "#0 · custom" in ex.locator(".attnlab-history-select").inner_text()
    ex.locator(".attnlab-explorer-plot").scroll_into_view_if_needed()
    screenshot(page, "custom-prompts-sweep")
    assert not [e for e in console_errors if "attnlab" in e or "anywidget" in e], console_errors
