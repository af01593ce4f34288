"""Browser test of the standalone HTML report: it renders a real patching result offline, from a file, with no
network request at all, and its tooltip works as in JupyterLab."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Request, Route

from attnlab.patching import run_sweep
from attnlab.render.views import standalone_html
from attnlab.tasks.ioi import ioi_dataset

from .conftest import VIEWPORT
from .jupyter import collect_console_errors, screenshot

TIMEOUT_MS = 30_000
LAYERS = [22, 23]  # ~5 s a layer on two busy cores

# The full CLI (`attnlab patch ioi --n-prompts 2 --out report.html`) sweeps every layer: about 2 minutes on two
# busy cores, too slow for this tier, so the report is built from the library the CLI uses (`standalone_html`).


def js_to_fixed_4(value: float) -> str:
    """``Number.prototype.toFixed(4)`` exactly (ties away from zero, no "-0.0000" for negative zero)."""
    if value == 0:
        return "0.0000"
    return format(Decimal(value).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP), "f")


def expected_tooltip(payload: dict, row: int, col: int) -> str:
    """The tooltip text documented in labext/src/heatmap.ts, computed from the payload."""
    lines = [f"{payload['row_labels'][row]} · {payload['col_labels'][col]}"]
    if payload.get("col_tokens"):
        lines.append(f"token {json.dumps(payload['col_tokens'][col], ensure_ascii=False)}")
    value = payload["values"][row][col]
    lines.append("not computed" if value is None else f"{js_to_fixed_4(value)} {payload['value_label']}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def report_payload(embedded_model) -> dict:
    dataset = ioi_dataset(embedded_model, 2, seed=0, corruption="s2_swap")
    result = run_sweep(embedded_model, dataset, "heads", layers=LAYERS, progress=False)
    return result.heatmap_payload()


@pytest.mark.browser
def test_offline_html_report(browser: Browser, report_payload: dict, tmp_path: Path) -> None:
    payload = report_payload
    n_rows, n_cols = len(payload["row_labels"]), len(payload["col_labels"])
    assert (n_rows, n_cols) == (len(LAYERS), 9)  # SmolLM2-135M: 9 query heads per layer
    path = tmp_path / "report.html"
    path.write_text(standalone_html(payload), encoding="utf-8")

    context = browser.new_context(viewport=VIEWPORT)
    context.set_offline(True)
    attempted: list[str] = []  # every request that is not the report file itself

    def on_request(request: Request) -> None:
        if not request.url.startswith("file://"):
            attempted.append(f"{request.method} {request.url}")

    def abort_network(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            attempted.append(f"routed {route.request.url}")
            route.abort()

    context.on("request", on_request)
    context.route("**/*", abort_network)
    page = context.new_page()
    console_errors = collect_console_errors(page)
    try:
        page.goto(path.as_uri(), wait_until="load", timeout=TIMEOUT_MS)
        cells = page.locator("#attnlab-report rect.attnlab-cell")
        cells.first.wait_for(timeout=TIMEOUT_MS)
        assert cells.count() == n_rows * n_cols
        assert page.locator("#attnlab-report .attnlab-title").inner_text() == payload["title"]
        assert page.locator("#attnlab-report .attnlab-subtitle").inner_text() == payload["subtitle"]
        assert page.locator("#attnlab-report text.attnlab-label").all_text_contents()[:n_rows] == payload["row_labels"]
        # The renderer's own CSS was injected (no stylesheet is fetched).
        assert page.locator("style#attnlab-render-css").count() == 1
        screenshot(page, "report-offline")

        # The cell with the largest score, as in the lab.
        _, row, col = max((v, r, c) for r, vs in enumerate(payload["values"]) for c, v in enumerate(vs) if v is not None)
        cell = page.locator(f'#attnlab-report rect.attnlab-cell[data-row="{row}"][data-col="{col}"]')
        assert float(cell.get_attribute("data-value")) == payload["values"][row][col]
        tooltip = page.locator("#attnlab-report .attnlab-tooltip")
        assert tooltip.is_hidden()
        cell.hover(timeout=TIMEOUT_MS)
        tooltip.wait_for(state="visible", timeout=TIMEOUT_MS)
        assert tooltip.evaluate("(node) => node.textContent") == expected_tooltip(payload, row, col)
        screenshot(page, "report-offline-hover")
        page.mouse.move(0, 0)
        tooltip.wait_for(state="hidden", timeout=TIMEOUT_MS)

        # A click selects the cell and dispatches the documented event.
        page.evaluate(
            """() => document.getElementById('attnlab-report').addEventListener('attnlab-cell-click',
                 (e) => { window.__clicked = e.detail; })"""
        )
        cell.click(timeout=TIMEOUT_MS)
        detail = page.evaluate("() => window.__clicked")
        assert detail == {
            "row": row,
            "col": col,
            "rowLabel": payload["row_labels"][row],
            "colLabel": payload["col_labels"][col],
            "value": payload["values"][row][col],
        }
        assert "attnlab-cell-selected" in (cell.get_attribute("class") or "")

        assert attempted == [], f"the offline report tried the network: {attempted}"
        assert console_errors == [], "\n".join(console_errors)
    finally:
        context.close()
