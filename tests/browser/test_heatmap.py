"""Browser tests of the attnlab heatmap in JupyterLab: hover tooltips on saved tutorial outputs, and tokens that
look like HTML rendered as plain text (no markup, no script)."""

from __future__ import annotations

import json
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

from attnlab.render.contract import HEATMAP_MIME
from tests.tutorial_fixtures import TUTORIAL_TEST_TIMEOUT_S

from .jupyter import (
    LabServer,
    collect_console_errors,
    notebook_panel,
    open_notebook,
    run_all_cells,
    screenshot,
    write_notebook,
)

TIMEOUT_MS = 60_000
# The rendered output of the heatmap MIME type (the extension's widget sets no ``data-mime-type`` attribute).
HEATMAP_OUTPUT = ".jp-OutputArea-output.jp-RenderedAttnlabHeatmap"

IMG_TOKEN = '<img src=x onerror="window.__xss=1">'
BOLD_TOKEN = "<b>bold</b>"
SHORT_IMG_TOKEN = "<img src=y onerror=__xss2=1>"  # short enough to be shown in full under its column


def js_to_fixed_4(value: float) -> str:
    """``Number.prototype.toFixed(4)`` exactly: ties away from zero on the exact binary value, and no "-0.0000"
    for negative zero (Python's ``f"{v:.4f}"`` rounds ties to even and keeps the sign of -0.0)."""
    if value == 0:
        return "0.0000"
    return format(Decimal(value).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP), "f")


def expected_tooltip(payload: dict, row: int, col: int) -> str:
    """The tooltip text the renderer documents (labext/src/heatmap.ts), computed from the payload."""
    lines = [f"{payload['row_labels'][row]} · {payload['col_labels'][col]}"]
    if payload.get("col_tokens"):
        lines.append(f"token {json.dumps(payload['col_tokens'][col], ensure_ascii=False)}")
    value = payload["values"][row][col]
    if value is None:
        lines.append("not computed")
    else:
        lines.append(f"{js_to_fixed_4(value)} {payload['value_label']}")
    return "\n".join(lines)


def heatmap_outputs(notebook: dict) -> list[dict]:
    """The data bundles of every output carrying the heatmap MIME type, in notebook order."""
    found = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if HEATMAP_MIME in output.get("data", {}):
                found.append(output["data"])
    return found


def hover_cell(page: Page, heatmap: Locator, row: int, col: int) -> str:
    """Hover cell ``[row][col]`` of ``heatmap`` (a ``.attnlab-heatmap``) and return the shown tooltip's text."""
    page.mouse.move(0, 0)  # away from any heatmap: hides a tooltip left from an earlier hover
    tooltip = heatmap.locator(".attnlab-tooltip")
    tooltip.wait_for(state="hidden", timeout=TIMEOUT_MS)
    heatmap.locator(f'rect.attnlab-cell[data-row="{row}"][data-col="{col}"]').hover(timeout=TIMEOUT_MS)
    tooltip.wait_for(state="visible", timeout=TIMEOUT_MS)
    return tooltip.evaluate("(node) => node.textContent")


@pytest.mark.browser
@pytest.mark.timeout(TUTORIAL_TEST_TIMEOUT_S)  # the first test to ask for the executed tutorial runs it (minutes)
def test_tutorial_heatmap_hover(lab: LabServer, browser_page: Page, executed_tutorial_01: Path) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    notebook = json.loads(executed_tutorial_01.read_text())
    bundles = heatmap_outputs(notebook)
    assert bundles, f"the executed tutorial {executed_tutorial_01} has no {HEATMAP_MIME} output"
    # The first head-patching heatmap: a [layer, head] result (columns are heads).
    heads = [i for i, b in enumerate(bundles) if b[HEATMAP_MIME]["col_title"] == "head"]
    assert heads, f"no [layer, head] heatmap among {[b[HEATMAP_MIME]['title'] for b in bundles]}"
    index = heads[0]
    payload = bundles[index][HEATMAP_MIME]
    # The saved output also carries the static fallback, so the test below means something.
    assert "attnlab-static" in "".join(bundles[index].get("text/html", ""))
    n_rows, n_cols = len(payload["row_labels"]), len(payload["col_labels"])

    relpath = "tutorial-01-executed.ipynb"
    shutil.copy(executed_tutorial_01, lab.root / relpath)
    open_notebook(page, lab, relpath)

    # Every saved heatmap output is drawn by the vendor renderer, in notebook order.
    panel = notebook_panel(page)
    outputs = panel.locator(f".jp-OutputArea-child:has(> {HEATMAP_OUTPUT})")
    outputs.nth(len(bundles) - 1).locator("rect.attnlab-cell").first.wait_for(timeout=TIMEOUT_MS)
    assert outputs.count() == len(bundles)
    output = outputs.nth(index)  # the output area child: its prompt and its one rendered output
    assert output.locator(".jp-OutputArea-output").count() == 1
    heatmap = output.locator(f"{HEATMAP_OUTPUT} > .attnlab-heatmap")
    assert heatmap.locator(".attnlab-title").inner_text() == payload["title"]
    assert heatmap.locator("rect.attnlab-cell").count() == n_rows * n_cols
    # The vendor renderer won over the static text/html fallback carried in the same bundle.
    assert output.locator(".attnlab-static").count() == 0
    assert panel.locator(".attnlab-static").count() == 0

    # The cells with the largest and the smallest score.
    cells = [(v, r, c) for r, row in enumerate(payload["values"]) for c, v in enumerate(row) if v is not None]
    _, top_r, top_c = max(cells)
    _, low_r, low_c = min(cells)
    top_cell = heatmap.locator(f'rect.attnlab-cell[data-row="{top_r}"][data-col="{top_c}"]')
    assert float(top_cell.get_attribute("data-value")) == payload["values"][top_r][top_c]

    heatmap.scroll_into_view_if_needed()
    screenshot(page, "heatmap-tutorial-before-hover")
    text = hover_cell(page, heatmap, top_r, top_c)
    assert text == expected_tooltip(payload, top_r, top_c)
    assert text.splitlines()[0] == f"{payload['row_labels'][top_r]} · {payload['col_labels'][top_c]}"
    screenshot(page, "heatmap-tutorial-hover")
    assert hover_cell(page, heatmap, low_r, low_c) == expected_tooltip(payload, low_r, low_c)

    assert console_errors == [], "\n".join(console_errors)


XSS_TOKENS = ["<|endoftext|>", "When", IMG_TOKEN, BOLD_TOKEN, SHORT_IMG_TOKEN, " Mary"]

# Run both in the kernel and here (for the expected payload); the model name is HTML too.
BUILD_RESULT = f"""\
import torch
from attnlab.results import PatchingResult

tokens = {XSS_TOKENS!r}
n_layers, n_pos = 3, len(tokens)
values = torch.linspace(-0.5, 1.0, n_layers * n_pos).reshape(n_layers, n_pos)
result = PatchingResult(
    analysis="activation_patching", component="resid_pre", direction="denoising", dims=("layer", "pos"),
    values=values, per_prompt=values.unsqueeze(-1).repeat(1, 1, 2),
    labels={{"layer": [f"L{{i}}" for i in range(n_layers)], "pos": [f"p{{i}}" for i in range(n_pos)]}},
    index={{"layer": list(range(n_layers)), "pos": list(range(n_pos))}},
    tokens=tokens, prompt_tokens=tokens, baselines={{"clean": 3.0, "corrupted": -1.0}},
    model={{"name": "<i>model</i>"}}, task={{"task": "ioi", "n_prompts": 2}},
)"""

XSS_CELLS = [
    BUILD_RESULT + "\nfrom IPython.display import display\ndisplay(result)",
    # The text/html fallback alone, as a front end without the extension would show it.
    "from attnlab.render.views import static_heatmap_html\n"
    'display({"text/html": static_heatmap_html(result.heatmap_payload()), "text/plain": "fallback"}, raw=True)',
]


@pytest.mark.browser
def test_html_tokens_render_as_text(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "html-tokens.ipynb", XSS_CELLS)
    open_notebook(page, lab, "html-tokens.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    output = panel.locator(HEATMAP_OUTPUT)
    heatmap = output.locator(".attnlab-heatmap")
    heatmap.locator("rect.attnlab-cell").first.wait_for(timeout=TIMEOUT_MS)
    assert heatmap.locator("rect.attnlab-cell").count() == 3 * 6
    heatmap.scroll_into_view_if_needed()
    screenshot(page, "heatmap-html-tokens")

    # Tokens are text: shown literally under their columns (tokens over 32 characters are shortened).
    shown = heatmap.locator("text.attnlab-token").all_text_contents()
    assert shown[3] == BOLD_TOKEN
    assert shown[4] == SHORT_IMG_TOKEN
    assert len(IMG_TOKEN) > 32 and shown[2] == IMG_TOKEN[:31] + "…"
    text = heatmap.evaluate("(node) => node.textContent")
    for token in (BOLD_TOKEN, SHORT_IMG_TOKEN, IMG_TOKEN[:31]):
        assert token in text
    assert "<i>model</i>" in heatmap.locator(".attnlab-subtitle").inner_text()

    # ... and never markup: no element made from them, no handler run, anywhere in the notebook.
    for selector in ("img", "b", "i"):
        assert output.locator(selector).count() == 0, f"a <{selector}> was created in the heatmap output"
    assert panel.locator(".jp-OutputArea-output img").count() == 0
    assert panel.locator(".jp-OutputArea-output b").count() == 0
    assert page.evaluate("() => [typeof window.__xss, typeof window.__xss2]") == ["undefined", "undefined"]

    # The static fallback (second cell) shows the full tokens as text too.
    static = panel.locator(".jp-OutputArea-output .attnlab-static")
    static.wait_for(timeout=TIMEOUT_MS)
    static_codes = static.locator("code").all_text_contents()
    assert static_codes[2:5] == [IMG_TOKEN, BOLD_TOKEN, SHORT_IMG_TOKEN]

    # The tooltip of the HTML token's column shows the full token, JSON-quoted, as text.
    namespace: dict = {}
    exec(BUILD_RESULT, namespace)  # the same result, built here: the payload the kernel sent
    payload = namespace["result"].heatmap_payload()
    assert payload["col_tokens"] == XSS_TOKENS
    text = hover_cell(page, heatmap, 1, 2)
    assert text.splitlines()[1] == 'token "<img src=x onerror=\\"window.__xss=1\\">"'
    assert text == expected_tooltip(payload, 1, 2)
    tooltip = heatmap.locator(".attnlab-tooltip")
    assert tooltip.locator("*").count() == 0
    screenshot(page, "heatmap-html-tokens-hover")
    text = hover_cell(page, heatmap, 0, 3)
    assert text.splitlines()[1] == f"token {json.dumps(BOLD_TOKEN)}"
    assert tooltip.locator("*").count() == 0

    assert page.evaluate("() => [typeof window.__xss, typeof window.__xss2]") == ["undefined", "undefined"]
    assert console_errors == [], "\n".join(console_errors)
