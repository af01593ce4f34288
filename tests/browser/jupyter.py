"""Helpers that drive a running JupyterLab from Playwright (sync API).

The server itself is started by the ``lab`` fixture in ``conftest.py``; this module holds
what a test calls: writing notebooks, opening them, running cells, waiting for the kernel
and saving screenshots.  Every wait is a wait-for on the DOM, never a fixed sleep.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import nbformat
from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

# Timeouts are in milliseconds, as Playwright takes them.
DEFAULT_TIMEOUT_MS = 60_000

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# A status-bar item reads "Python 3 (ipykernel) | Idle" once the kernel is up and quiet.
_IDLE_TEXT = re.compile(r"\|\s*Idle\s*$")

# Server-log lines that mean a server extension, a lab extension or the settings failed to load
# (jupyter_server logs extension failures as warnings with ``exc_info``, hence the traceback).
_LOG_FAILURE = re.compile(
    r"Traceback \(most recent call last\)"
    r"|error (?:adding|linking) extension"
    r"|extension failed (?:loading|starting)"
    r"|is not a valid extension"
    r"|Failed loading overrides",
    re.IGNORECASE,
)

# tornado's write-after-close race when a browser page goes away while the server is still
# writing kernel messages to its websocket: asyncio logs "Task exception was never retrieved"
# with a WebSocketClosedError traceback.  Known upstream and harmless (voila-dashboards/voila#237,
# jupyter/notebook#5867); it says nothing about attnlab or an extension, so it is cut out of the
# log before the check.  Any other traceback, in the same log, still fails the check.
_WEBSOCKET_CLOSED_RACE = re.compile(
    r"Task exception was never retrieved\n"
    r"future: <Task finished name='[^']*' coro=<WebSocketProtocol13\.write_message\.<locals>\.wrapper\(\)[^\n]*"
    r"exception=WebSocketClosedError\(\)>\n"
    r"(?:(?!\[[IWE] \d{4}-).*\n)*?"
    r"tornado\.websocket\.WebSocketClosedError\n",
)


@dataclass
class LabServer:
    """A JupyterLab started by the ``lab`` fixture."""

    url: str  # "http://127.0.0.1:PORT", no trailing slash
    root: Path  # the server's root_dir: put notebooks here
    log_path: Path  # the server's combined stdout and stderr
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_failures(self) -> list[str]:
        """Server-log lines that say an extension failed to load, or a traceback."""
        text = _WEBSOCKET_CLOSED_RACE.sub("", self.log_text())
        return [line for line in text.splitlines() if _LOG_FAILURE.search(line)]

    def api(self, method: str, path: str) -> object:
        """A JSON request to the server's REST API (no token: the server runs without one)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Delete every session (and so its kernel), so tests do not share kernels."""
        sessions = self.api("GET", "/api/sessions")
        assert isinstance(sessions, list), f"expected a list from /api/sessions, got {sessions!r}"
        for session in sessions:
            self.api("DELETE", f"/api/sessions/{session['id']}")


def write_notebook(path: Path, cells: list[str]) -> Path:
    """Write a notebook of code cells (sources in order) with the python3 kernelspec."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def notebook_panel(page: Page):
    """The notebook in the main area that is currently shown."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def wait_for_idle(page: Page, timeout: float = DEFAULT_TIMEOUT_MS) -> None:
    """Wait until the status bar shows the kernel as Idle (not the execution indicator)."""
    status = page.locator("#jp-main-statusbar").get_by_text(_IDLE_TEXT)
    status.first.wait_for(state="visible", timeout=timeout)


def open_notebook(page: Page, lab: LabServer, relpath: str, timeout: float = DEFAULT_TIMEOUT_MS) -> None:
    """Open ``relpath`` (relative to ``lab.root``) in a fresh workspace; wait for its kernel to be Idle."""
    url = f"{lab.url}/lab/tree/{quote(relpath)}?reset"
    page.goto(url, wait_until="domcontentloaded", timeout=timeout)
    name = Path(relpath).name
    page.locator(f'.lm-TabBar-tab.lm-mod-current[title^="Name: {name}"]').first.wait_for(timeout=timeout)
    notebook_panel(page).locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout)
    wait_for_idle(page, timeout)


_COLLECT_CELLS = """
(panel) => Array.from(panel.querySelectorAll('.jp-Notebook .jp-CodeCell')).map((cell) => ({
  prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
  empty: (cell.querySelector('.cm-content')?.textContent ?? '').trim() === '',
  stderr: Array.from(cell.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'))
    .map((node) => node.textContent).join('\\n'),
}))
"""


def _code_cells(page: Page) -> list[dict[str, str | bool]]:
    return notebook_panel(page).evaluate(_COLLECT_CELLS)


# Marks the panel when any prompt turns to "[*]:" (queued or running).  Installed before the
# run is triggered, so a cell that finishes before the first poll is still seen to have started.
_WATCH_START = """
(panel) => {
  panel.dataset.attnlabRunStarted = 'false';
  const check = () => {
    for (const node of panel.querySelectorAll('.jp-InputArea-prompt')) {
      if (node.textContent.includes('*')) {
        panel.dataset.attnlabRunStarted = 'true';
        observer.disconnect();
        return;
      }
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(panel, {subtree: true, childList: true, characterData: true});
}
"""

# Finished once a run was seen to start and no prompt is "[*]:" any more (a cell aborted by an
# earlier error goes back to an empty prompt; ``_wait_for_run`` reports it).
_RUN_FINISHED = """
(panel) => panel.dataset.attnlabRunStarted === 'true'
  && !Array.from(panel.querySelectorAll('.jp-InputArea-prompt')).some((node) => node.textContent.includes('*'))
"""


# Error outputs and stderr streams share one MIME type in the DOM; a traceback tells them apart
# (IPython prints "Cell In[n], line k" even for a SyntaxError, which has no "Traceback" line).
_RAISED = re.compile(r"Traceback \(most recent call last\)|Cell In\[\d+\], line \d+")


def _wait_for_run(page: Page, timeout: float, allow_errors: bool) -> None:
    panel = notebook_panel(page)
    try:
        page.wait_for_function(_RUN_FINISHED, arg=panel.element_handle(), timeout=timeout, polling=100)
    except PlaywrightTimeoutError:
        started = panel.get_attribute("data-attnlab-run-started")
        raise AssertionError(
            f"cells still running after {timeout / 1000:.0f} s (a run was seen to start: {started}); "
            f"code cells: {_code_cells(page)!r}"
        ) from None
    wait_for_idle(page, timeout)
    cells = _code_cells(page)
    errors = [f"cell {i} {c['prompt']}\n{c['stderr']}" for i, c in enumerate(cells) if _RAISED.search(str(c["stderr"]))]
    if errors and not allow_errors:
        raise AssertionError("notebook cells raised:\n" + "\n\n".join(errors))
    # A cell still at "[ ]:" after the run was aborted by an earlier error (stop_on_error).
    unrun = [i for i, c in enumerate(cells) if not c["empty"] and not re.match(r"^\[\d+\]", str(c["prompt"]))]
    if unrun and not allow_errors:
        raise AssertionError(f"code cells {unrun} have no execution count after the run: {cells!r}")


def run_all_cells(page: Page, timeout: float = DEFAULT_TIMEOUT_MS, allow_errors: bool = False) -> None:
    """Run > Run All Cells; wait until every non-empty code cell has an execution count and the kernel is Idle.

    Raises ``AssertionError`` with the traceback text when a cell raised (unless ``allow_errors``).
    """
    panel = notebook_panel(page)
    panel.evaluate(_WATCH_START)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator('.lm-Menu-item:has(.lm-Menu-itemLabel:text-is("Run All Cells"))').click()
    _wait_for_run(page, timeout, allow_errors)


def run_cell_code(page: Page, code: str, timeout: float = DEFAULT_TIMEOUT_MS, allow_errors: bool = False) -> str:
    """Append a code cell holding ``code`` to the open notebook, run it, and return its output text."""
    panel = notebook_panel(page)
    cells = panel.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    cells.nth(count - 1).locator(".jp-InputArea-prompt").click()  # select the last cell
    page.keyboard.press("Escape")  # command mode
    page.keyboard.press("b")  # insert a cell below, selected
    new_cell = cells.nth(count)
    new_cell.wait_for(timeout=timeout)
    page.keyboard.press("Enter")  # edit mode
    new_cell.locator(".cm-content").wait_for(timeout=timeout)
    page.keyboard.insert_text(code)  # no auto-closed brackets, unlike typing
    panel.evaluate(_WATCH_START)
    page.keyboard.press("Control+Enter")  # run in place
    _wait_for_run(page, timeout, allow_errors)
    outputs = new_cell.locator(".jp-OutputArea-output")  # the outputs, without their "[n]:" prompts
    return "\n".join(outputs.all_inner_texts())


def screenshot(page: Page, name: str) -> Path:
    """Save a full-window PNG as ``<repo>/test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS_DIR / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def collect_console_errors(page: Page) -> list[str]:
    """A live list of the page's uncaught exceptions and ``console.error`` messages."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.error: {msg.text}") if msg.type == "error" else None)
    return errors
