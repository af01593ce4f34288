"""Browser test of ``attnlab.AttentionView`` in JupyterLab, on the embedded model (real words).

Hovering a token highlights its row (where it attends) and its column (what attends to it) in the enlarged head; the
weights the DOM shows (``data-weight``) equal the kernel's patterns (``view.patterns``) within the payload's
quantisation step. Clicking a thumbnail enlarges that head (the kernel's ``view.selected`` follows), its matrix cells
equal the kernel's pattern, the colour bars carry their range, and the head exports as an SVG holding its title, token
labels and colour bar. Screenshots go to test-artifacts/.
"""

import json

import pytest
from playwright.sync_api import Page

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook

TIMEOUT_MS = 240_000
TOL = 0.5 / 65535 + 1e-6  # the payload's 16-bit quantisation, plus the 6 decimals of data-weight

SETUP = """\
import attnlab
model = attnlab.load_model("smollm2-135m")
view = attnlab.AttentionView(model, "When Mary and John went to the store, John gave a drink to", layer=0, head=0)
view
"""

VIEW = ".jp-OutputArea-output .attnlab-av"
LONG_TEXT = ("Interpretability researchers study transformer language models by patching activations between clean "
             "and corrupted prompts; the supercalifragilisticexpialidocious tokenisation of unusual words, such as "
             "antidisestablishmentarianism, makes long tokens that must stay readable on every axis of the view.")


def weights(locator) -> list[float | None]:
    raw = locator.evaluate_all("els => els.map(e => e.getAttribute('data-weight'))")
    return [None if w == "null" else float(w) for w in raw]


@pytest.mark.browser
@pytest.mark.integration
def test_attention_view_hover_and_enlarge(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "attention_view.ipynb", [SETUP])
    open_notebook(page, lab, "attention_view.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    view = notebook_panel(page).locator(VIEW).first
    view.wait_for(timeout=30_000)
    assert view.locator(".attnlab-av-thumb").count() == 30 * 9
    tokens = view.locator(".attnlab-av-text .attnlab-av-token")
    n = tokens.count()
    assert n > 10
    view.scroll_into_view_if_needed()
    screenshot(page, "attention-view-initial")

    # Enlarge L5H3 by clicking its thumbnail: the kernel's selection follows.
    view.locator('.attnlab-av-thumb[data-layer="5"][data-head="3"]').click()
    head = view.locator('.attnlab-av-head[data-layer="5"][data-head="3"]')
    head.wait_for(timeout=30_000)
    out = run_cell_code(page, "import json\nprint(json.dumps({'selected': view.selected, 'tokens': view.tokens, "
                              "'p': view.patterns[5, 3].tolist()}))", timeout=TIMEOUT_MS)
    kernel = json.loads(out.strip().splitlines()[-1])
    assert kernel["selected"] == [5, 3] and len(kernel["tokens"]) == n
    assert tokens.all_text_contents() == [t.replace(" ", "·") for t in kernel["tokens"]]
    p = kernel["p"]
    cells = head.locator("rect.attnlab-av-cell")
    for q, k, w in cells.evaluate_all(
            "els => els.map(e => [Number(e.dataset.q), Number(e.dataset.k), Number(e.dataset.weight)])"):
        assert w == pytest.approx(p[q][k], abs=TOL)
    assert cells.count() == n * (n + 1) // 2  # causal: the lower triangle

    # Hover a token: its row and its column in the enlarged head, with the weights shown.
    focus = n - 1 - 3
    tokens.nth(focus).hover()
    row = view.locator(f'.attnlab-av-row[data-focus="{focus}"][data-layer="5"][data-head="3"]')
    row.wait_for(timeout=30_000)
    row_w = weights(row.locator(".attnlab-av-weight"))
    assert row_w[:focus + 1] == pytest.approx(p[focus][:focus + 1], abs=TOL)
    assert all(w is None for w in row_w[focus + 1:])
    col_w = weights(view.locator(".attnlab-av-col .attnlab-av-weight"))
    assert col_w[focus:] == pytest.approx([p[q][focus] for q in range(focus, n)], abs=TOL)
    assert all(w is None for w in col_w[:focus])
    shown_numbers = row.locator(".attnlab-av-wnum").all_text_contents()[:focus + 1]
    assert [float(x) for x in shown_numbers] == pytest.approx(row_w[:focus + 1], abs=0.005 + 1e-9)
    assert head.locator(".attnlab-av-hl rect").count() == 2
    assert view.locator(".attnlab-av-grid .attnlab-av-hl rect").count() == 2 * 270

    # Colour bars with their range: the grid's 0..1; the enlarged head's 0..its largest weight off token 0 on
    # request (token 0 attends only to itself, so every head's largest weight is 1).
    grid_bar = view.locator(".attnlab-av-grid-panel svg.attnlab-colorbar")
    assert grid_bar.get_attribute("data-range") == "0,1"
    assert grid_bar.locator(".attnlab-colorbar-tick").all_text_contents() == ["0", "0.50", "1.00"]
    head.locator("select.attnlab-av-scale").select_option("max")
    head_bar = view.locator('.attnlab-av-head svg.attnlab-colorbar:not([data-range="0,1"])')
    head_bar.wait_for(timeout=30_000)  # redrawn with the head's own range
    hi = float(head_bar.get_attribute("data-range").split(",")[1])
    assert hi == pytest.approx(max(max(r[1:]) for r in p[1:]), abs=TOL)  # off token 0 (its own weight is 1)
    assert hi < 1 and "max off token 0" in head_bar.locator(".attnlab-colorbar-caption").text_content()
    assert head_bar.locator(".attnlab-colorbar-tick").all_text_contents()[-1] == f"≥{hi:.2f}"
    assert run_cell_code(page, "print(view.scale)", timeout=TIMEOUT_MS).strip() == "max"
    # Long or odd tokens never overflow their axis: every label lies inside its SVG.
    inside = head.locator("svg.attnlab-av-matrix").evaluate(
        "svg => { const b = svg.getBoundingClientRect(); return Array.from(svg.querySelectorAll('text')).every(t => {"
        " const r = t.getBoundingClientRect(); return r.left >= b.left - 1 && r.top >= b.top - 1 &&"
        " r.right <= b.right + 1 && r.bottom <= b.bottom + 1; }); }")
    assert inside
    # The enlarged head exports as one SVG with its title, its token labels and its colour bar's labels.
    with page.expect_download() as download:
        head.locator("button.attnlab-export-svg").click()
    svg = open(download.value.path(), encoding="utf-8").read()
    assert download.value.suggested_filename == "attention-L5H3.svg"
    assert "L5H3 · smollm2-135m" in svg and f"≥{hi:.2f}" in svg and "max off token 0" in svg
    assert "·gave" in svg and svg.count('class="attnlab-av-cell"') == n * (n + 1) // 2
    tokens.nth(focus).hover()
    view.scroll_into_view_if_needed()
    screenshot(page, "attention-view-hover-enlarged")
    head.scroll_into_view_if_needed()
    screenshot(page, "attention-view-enlarged-head")

    # A longer text with long tokens: the enlarged matrix scrolls inside the view, labels are never clipped.
    run_cell_code(page, "long = attnlab.AttentionView(model, LONG, layer=2, head=4)\nlong".replace(
        "LONG", repr(LONG_TEXT)), timeout=TIMEOUT_MS)
    second = notebook_panel(page).locator(VIEW).nth(1)
    second.locator('.attnlab-av-head[data-layer="2"][data-head="4"] rect.attnlab-av-cell').first.wait_for(timeout=30_000)
    m = second.locator(".attnlab-av-token").count()
    assert m >= 50 and second.locator("rect.attnlab-av-cell").count() == m * (m + 1) // 2
    klabels = second.locator(".attnlab-av-klabel").evaluate_all("els => els.map(e => e.firstChild.textContent)")
    assert klabels[1:] == [
        t if len(t) <= 14 else t[:13] + "…" for t in second.locator(".attnlab-av-token").all_text_contents()[1:]]
    box = second.locator(".attnlab-av-matrixbox").evaluate("b => [b.scrollWidth, b.clientWidth]")
    panel_right = second.evaluate("el => el.getBoundingClientRect().right")
    assert second.locator(".attnlab-av-matrixbox").evaluate("b => b.getBoundingClientRect().right") <= panel_right + 1
    text_box = second.locator(".attnlab-av-text").evaluate("b => [b.scrollWidth, b.clientWidth]")
    assert text_box[0] <= text_box[1] + 1  # the tokens wrap: none is cut off on the right
    second.locator(".attnlab-av-token").nth(40).hover()
    second.scroll_into_view_if_needed()
    screenshot(page, "attention-view-long-text")
    second.locator(".attnlab-av-head").scroll_into_view_if_needed()
    screenshot(page, "attention-view-long-text-head")
    assert box[0] >= box[1]
    assert not [e for e in console_errors if "attnlab" in e or "anywidget" in e], console_errors
