"""Browser tests of the recall-versus-reasoning view and workbench.

1. The dissociation view on hand-written payloads (``fixtures/dissociation_*.json``), through the standalone bundle:
   the tooltip text, the click event, selection from code, one point per component, both matrices, the statement and
   the controls shown as text.
2. ``attnlab.RecallReasoningWorkbench`` in JupyterLab on the embedded model with small settings (three families of
   three items, the heads of two layers): Run from the browser, click a point of the scatter, and check that the
   detail panel shows the kernel's numbers for that component and that ``workbench.selected`` follows; select from
   Python and check that the view follows; a family whose prompts hold HTML shows it as text. The result's own MIME
   bundle renders in the lab too. Screenshots go to test-artifacts/.
"""

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook

TIMEOUT_MS = 240_000
FIXTURES = Path(__file__).parent / "fixtures"
XSS = '<img src=x onerror="window.__xss=1">'


def _renderer_js() -> str:
    from attnlab.render.views import _renderer_js

    return _renderer_js()


def js_fixed(value: float, digits: int = 3) -> str:
    """What the view shows for ``value``: ``Number.prototype.toFixed(digits)`` (ties away from zero on the exact binary
    value, which Python's format does not do), without the sign of a number that rounds to zero."""
    if value == 0:
        return f"{0:.{digits}f}"
    text = format(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP), "f")
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # the view shows 0.000, not -0.000


def expected_tooltip(c: dict) -> str:
    """The tooltip text documented in labext/src/dissociation.ts (formatComponentTooltip)."""
    def iv(t):
        return "not computed" if t[0] is None else f"{js_fixed(t[0])} [{js_fixed(t[1])}, {js_fixed(t[2])}]"

    where = f"layer {c['layer']}" if c["head"] is None else f"layer {c['layer']}, head {c['head']}"
    p = c["p_adjusted"]
    p_text = "–" if p is None else "< 0.001" if p < 0.001 else f"{float(f'{p:.3g}'):g}"
    return "\n".join([f"{c['name']} · {where}", f"recall drop {iv(c['recall'])}",
                      f"reasoning drop {iv(c['reasoning'])}",
                      f"selectivity {iv(c['selectivity'])} · adjusted p {p_text}"
                      + (" · significant" if c["significant"] else "")])


@pytest.mark.browser
@pytest.mark.parametrize("name,below_first", [("dissociation_heads", "L1H0"), ("dissociation_blocks", "ATTN1")])
def test_dissociation_view_on_fixtures(browser: Browser, name: str, below_first: str) -> None:
    payload = json.loads((FIXTURES / f"{name}.json").read_text())
    context = browser.new_context(viewport={"width": 1250, "height": 1000})
    page = context.new_page()
    errors = collect_console_errors(page)
    try:
        page.set_content(f"<!DOCTYPE html><html><body style='margin:16px'><div id='r'></div>"
                         f"<script>{_renderer_js()}</script></body></html>")
        page.evaluate("p => { window.clicks = []; const r = document.getElementById('r');"
                      " r.addEventListener(attnlabRender.componentClickEvent, e => window.clicks.push(e.detail));"
                      " window.h = attnlabRender.renderDissociation(r, p); }", payload)
        comps = payload["components"]
        drawn = [c for c in comps if c["recall"][0] is not None and c["reasoning"][0] is not None]
        assert page.locator(".attnlab-dis-point").count() == len(drawn)
        cells = page.locator("rect.attnlab-dis-cell")
        assert cells.count() == 2 * len(comps)
        # a component not run is hatched in the matrices (and not plotted)
        missing = [c["name"] for c in comps if c["recall"][0] is None]
        assert page.locator("rect.attnlab-dis-cell-missing").count() == 2 * len(missing)
        # the strongest effect is drawn on top: hover and click it
        top = max(drawn, key=lambda c: (c["recall"][0] ** 2 + c["reasoning"][0] ** 2))
        point = page.locator(f'.attnlab-dis-point[data-name="{top["name"]}"]')
        point.hover()
        tooltip = page.locator(".attnlab-tooltip")
        tooltip.wait_for(state="visible")
        assert tooltip.evaluate("n => n.textContent") == expected_tooltip(top)
        point.click()
        clicks = page.evaluate("() => window.clicks")
        assert clicks == [{"index": comps.index(top), "name": top["name"], "layer": top["layer"],
                           "head": top["head"]}]
        assert page.locator(".attnlab-dissociation").get_attribute("data-selected") == top["name"]
        assert page.locator(".attnlab-dis-selected-label").text_content() == top["name"]
        # a cell selects too; select() from code marks without an event
        other = drawn[0]
        page.locator(f'rect.attnlab-dis-cell[data-name="{other["name"]}"][data-side="reasoning"]').click()
        assert page.evaluate("() => window.clicks.length") == 2
        assert page.evaluate("() => window.clicks[1].name") == other["name"]
        # the keyboard: the first cell is in the tab order; arrows move, Enter selects
        page.locator('rect.attnlab-dis-cell[data-side="recall"][tabindex="0"]').focus()
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        assert page.evaluate("() => window.clicks.length") == 3
        assert page.evaluate("() => window.clicks[2].name") == below_first
        page.evaluate(f"() => window.h.select({json.dumps(top['name'])})")
        assert page.evaluate("() => window.clicks.length") == 3
        assert page.locator(".attnlab-dis-point.attnlab-dis-selected").get_attribute("data-name") == top["name"]
        # text, never markup
        dd = payload["double_dissociation"]
        statement = page.locator(".attnlab-dis-statement").inner_text()
        if dd:
            assert dd["statement"] in statement and XSS in statement
        assert page.locator(".attnlab-dissociation img").count() == 0
        assert page.evaluate("() => window.__xss === undefined")
        assert page.locator("table.attnlab-dis-controls tbody tr").count() == len(payload["controls"])
        # nothing drawn outside the page: the view fits a 1250 px window without a horizontal scroll bar
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.mouse.move(0, 0)
        point.hover()
        screenshot(page, f"dissociation-view-{name.split('_')[1]}")
        assert not errors, errors
    finally:
        context.close()


SETUP = f"""\
import json
import attnlab
from attnlab.tasks.recall_reasoning import custom_family

model = attnlab.load_model("smollm2-135m")
HTML = {XSS!r} + " "
html_capitals = custom_family("html_capitals", "recall", [
    (HTML + "The capital of France is", " Paris", " Rome"),
    (HTML + "The capital of Italy is", " Rome", " Paris"),
    (HTML + "The capital of Spain is", " Madrid", " Paris"),
])
wb = attnlab.RecallReasoningWorkbench(model, families=["capital_of", "transitive_order", "html_capitals"],
                                      extra=[html_capitals], n_per_family=3, layers="28-29", criterion="none",
                                      ablation="mean", n_bootstrap=200, n_control_draws=2)
wb
"""

WORKBENCH = ".jp-OutputArea-output .attnlab-workbench"

KERNEL_DETAIL = """\
d = wb.detail
print(wb.selected)
print(json.dumps({"per_item": [[r["row"], r["clean"], r["ablated"], r["drop"]] for r in d["per_item"]],
                  "patterns": {k: (None if v is None else [v["row"], v["end_row"]]) for k, v in d["patterns"].items()},
                  "html_rows": [i for i, f in enumerate(wb.result.families) if f == "html_capitals"]}))
"""


def _shown_items(detail) -> dict[int, list[float | None]]:
    rows = detail.locator("tr.attnlab-wb-item")
    out = rows.evaluate_all("""els => els.map(tr => [Number(tr.dataset.row),
        ...['clean', 'ablated', 'drop'].map(k => { const v = tr.querySelector(`td[data-field=${k}]`).dataset.value;
                                                  return v === 'null' ? null : Number(v); })])""")
    return {r[0]: r[1:] for r in out}


def _shown_pattern(detail, kind: str) -> tuple[int, list[float]]:
    box = detail.locator(f'.attnlab-wb-pattern[data-kind="{kind}"]')
    attn = box.locator(".attnlab-token").evaluate_all("els => els.map(e => Number(e.dataset.attn))")
    return int(box.get_attribute("data-row")), attn


def _check_against_kernel(page: Page, detail, name: str) -> dict:
    out = run_cell_code(page, KERNEL_DETAIL, timeout=TIMEOUT_MS).strip().splitlines()
    assert out[0] == name, out
    kernel = json.loads(out[1])
    shown = _shown_items(detail)
    assert sorted(shown) == [r[0] for r in kernel["per_item"]]
    for row, clean, ablated, drop in kernel["per_item"]:
        assert shown[row] == pytest.approx([clean, ablated, drop], abs=1e-6), row
    for kind in ("recall", "reasoning"):
        row, end_row = kernel["patterns"][kind]
        shown_row, attn = _shown_pattern(detail, kind)
        assert shown_row == row
        assert attn == pytest.approx(end_row, abs=1e-6)
        assert sum(attn) == pytest.approx(1.0, abs=1e-4)
    return kernel


@pytest.mark.browser
@pytest.mark.integration
def test_workbench_run_click_and_select_from_python(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    write_notebook(lab.root / "workbench.ipynb", [SETUP])
    open_notebook(page, lab, "workbench.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    wb = panel.locator(WORKBENCH).first
    wb.wait_for(timeout=30_000)
    assert wb.locator(".attnlab-wb-title").inner_text().endswith("smollm2-135m")
    checked = wb.locator("input[name=families]:checked").evaluate_all("els => els.map(e => e.value)")
    assert checked == ["capital_of", "html_capitals", "transitive_order"]  # recall families first
    assert wb.locator("input[name=layers]").input_value() == "28-29"
    assert wb.locator("input[name=n_per_family]").input_value() == "3"
    screenshot(page, "workbench-before-run")

    # Run from the browser: the progress bar runs, then the view shows one point per head of layers 28 and 29.
    wb.locator("button.attnlab-run").click()
    page.wait_for_selector(f'{WORKBENCH}[data-status="done"]', timeout=TIMEOUT_MS)
    points = wb.locator(".attnlab-dis-point")
    assert points.count() == 2 * 9
    assert wb.locator("rect.attnlab-dis-cell").count() == 2 * 2 * 9
    assert "html_capitals 3/3" in wb.locator(".attnlab-wb-counts").inner_text()
    assert wb.locator(".attnlab-dis-statement").inner_text().strip()
    wb.scroll_into_view_if_needed()
    screenshot(page, "workbench-after-run")

    # Click the point drawn on top (the strongest effect): the panel shows the kernel's numbers for it.
    top = points.last
    name = top.get_attribute("data-name")
    top.click()
    detail = wb.locator(f'.attnlab-wb-detail[data-name="{name}"]:not([data-pending])')
    detail.wait_for(timeout=TIMEOUT_MS)
    assert wb.get_attribute("data-selected") == name
    kernel = _check_against_kernel(page, detail, name)
    detail.scroll_into_view_if_needed()
    screenshot(page, "workbench-after-click")

    # Select from Python: the scatter, the matrices and the panel follow.
    other = "L28H3" if name != "L28H3" else "L29H0"
    run_cell_code(page, f"wb.selected = {other!r}", timeout=TIMEOUT_MS)
    detail = wb.locator(f'.attnlab-wb-detail[data-name="{other}"]')
    detail.wait_for(timeout=TIMEOUT_MS)
    assert wb.locator(".attnlab-dis-point.attnlab-dis-selected").get_attribute("data-name") == other
    assert wb.locator(".attnlab-dissociation").get_attribute("data-selected") == other
    _check_against_kernel(page, detail, other)
    wb.locator(".attnlab-dis-plots").scroll_into_view_if_needed()
    screenshot(page, "workbench-selected-from-python")

    # A cell of the matrices selects as well, and the kernel follows.
    wb.locator('rect.attnlab-dis-cell[data-name="L29H5"][data-side="recall"]').click()
    wb.locator('.attnlab-wb-detail[data-name="L29H5"]:not([data-pending])').wait_for(timeout=TIMEOUT_MS)
    assert run_cell_code(page, "print(wb.selected)", timeout=TIMEOUT_MS).strip() == "L29H5"

    # Prompts holding HTML are text: in the per-item table and, once clicked, in the attention strip.
    html_row = kernel["html_rows"][0]
    item = wb.locator(f'tr.attnlab-wb-item[data-row="{html_row}"]')
    assert XSS in item.locator(".attnlab-wb-prompt").inner_text()
    item.click()
    strip = wb.locator(f'.attnlab-wb-pattern[data-kind="recall"][data-row="{html_row}"]')
    strip.wait_for(timeout=TIMEOUT_MS)
    assert XSS in strip.locator(".attnlab-pattern-caption").inner_text()
    assert "<img" in strip.locator(".attnlab-pattern").inner_text()
    _check_against_kernel(page, wb.locator('.attnlab-wb-detail[data-name="L29H5"]'), "L29H5")
    assert panel.locator(".attnlab-workbench img").count() == 0
    assert page.evaluate("() => window.__xss === undefined")
    assert not dialogs
    strip.scroll_into_view_if_needed()
    screenshot(page, "workbench-html-prompts")

    # The result's own MIME bundle renders with labext's dissociation view.
    run_cell_code(page, "wb.result", timeout=TIMEOUT_MS)
    view = panel.locator(".jp-OutputArea-output.jp-RenderedAttnlabDissociation").last
    view.wait_for(timeout=TIMEOUT_MS)
    assert view.locator(".attnlab-dis-point").count() == 2 * 9
    view.scroll_into_view_if_needed()
    screenshot(page, "workbench-result-mime")
    assert not [e for e in console_errors if "attnlab" in e or "anywidget" in e], console_errors
