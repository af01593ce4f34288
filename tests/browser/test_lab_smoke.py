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


_RACE = """\
Task exception was never retrieved
future: <Task finished name='Task-1044' coro=<WebSocketProtocol13.write_message.<locals>.wrapper() done, defined at /v/tornado/websocket.py:1138> exception=WebSocketClosedError()>
Traceback (most recent call last):
  File "/v/tornado/websocket.py", line 1140, in wrapper
    await fut
tornado.iostream.StreamClosedError: Stream is closed

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/v/tornado/websocket.py", line 1142, in wrapper
    raise WebSocketClosedError()
tornado.websocket.WebSocketClosedError
"""
_EXTENSION_FAILURE = """\
[W 2026-12-02 06:29:42.801 ServerApp] attnlab | extension failed loading with message: boom
    Traceback (most recent call last):
    ValueError: boom
"""


def test_server_log_check_ignores_only_the_websocket_close_race(tmp_path) -> None:
    """The log check drops tornado's write-after-close race and still reports every other failure."""
    log = tmp_path / "server.log"
    line = "[I 2026-12-02 06:33:29.574 LabApp] Build is up to date\n"
    server = LabServer(url="http://127.0.0.1:1", root=tmp_path, log_path=log, process=None)  # type: ignore[arg-type]
    log.write_text(line + _RACE + line)
    assert server.log_failures() == []
    log.write_text(line + _RACE + _EXTENSION_FAILURE + _RACE.replace("WebSocketClosedError\n", "ValueError: x\n"))
    failures = server.log_failures()
    assert any("extension failed loading" in f for f in failures)
    # The third block is not the race (another exception ends it): its tracebacks are reported.
    assert sum("Traceback" in f for f in failures) == 3
