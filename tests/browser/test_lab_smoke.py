"""Smoke test of the browser tier: JupyterLab loads, runs a notebook and renders HTML output."""

from __future__ import annotations

import sys

import pytest
from playwright.sync_api import Page

from .jupyter import (
    LabServer,
    collect_console_errors,
    notebook_panel,
    open_notebook,
    run_all_cells,
    run_cell_code,
    screenshot,
    write_notebook,
)

HELLO_CELL = (
    "from IPython.display import display\n"
    "display({'text/plain': 'plain', 'text/html': \"<b id='hello-attnlab'>hello</b>\"}, raw=True)"
)


@pytest.mark.browser
def test_notebook_renders_html_output(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "smoke.ipynb", [HELLO_CELL])

    open_notebook(page, lab, "smoke.ipynb")
    run_all_cells(page, timeout=30_000)

    hello = notebook_panel(page).locator(".jp-OutputArea-output #hello-attnlab")
    assert hello.inner_text() == "hello"
    assert hello.is_visible()
    # The kernel runs the interpreter running the tests (the project venv).
    assert run_cell_code(page, "import sys; print(sys.executable)", timeout=30_000).strip() == sys.executable
    screenshot(page, "lab-smoke")

    # No news or update pop-up, no extension that failed to load on either side.
    assert page.locator(".jp-toast-message, .Toastify__toast").count() == 0
    assert lab.log_failures() == [], f"server log ({lab.log_path}) reports failures:\n{lab.log_text()}"
    activation_failures = [e for e in console_errors if "activat" in e.lower() or "extension" in e.lower()]
    assert activation_failures == [], "\n".join(console_errors)
