"""Fixtures for the browser tier: one JupyterLab server and one headless Chromium per session.

JupyterLab runs from the interpreter running pytest (the project venv) with an isolated
config, runtime, settings and workspaces directory, so the developer's own setup never leaks
in.  The data path keeps the venv's ``share/jupyter``, so the installed lab extensions and the
venv's ``python3`` kernelspec are the ones used.  Chromium is the Debian binary; Playwright's
own browser download is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from .jupyter import LabServer

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_TIMEOUT_S = 60.0

# Written to the app settings dir: no news pop-up, no update check, every cell in the DOM.
SETTINGS_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _venv_kernelspec_ok() -> bool:
    """True when the venv's data dir has a python3 kernelspec (which then runs ``sys.executable``)."""
    return (Path(sys.prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").is_file()


def _ensure_kernelspec() -> None:
    if not _venv_kernelspec_ok():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"],
            check=True,
            capture_output=True,
        )


def _wait_for_server(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {process.returncode} before answering {url}/api/status; "
                f"server log ({log_path}):\n{log_path.read_text(errors='replace')}"
            )
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.2)
    raise RuntimeError(
        f"JupyterLab did not answer {url}/api/status within {SERVER_START_TIMEOUT_S:.0f} s "
        f"(last error: {last_error!r}); server log ({log_path}):\n{log_path.read_text(errors='replace')}"
    )


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM lets the server shut its kernels down (they run in their own sessions).
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server on 127.0.0.1 with no token, serving ``lab.root``."""
    _ensure_kernelspec()
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    dirs = {name: base / name for name in ("config", "data", "runtime", "user-settings", "workspaces", "app-settings")}
    for path in (root, *dirs.values()):
        path.mkdir()
    (dirs["app-settings"] / "overrides.json").write_text(json.dumps(SETTINGS_OVERRIDES, indent=2))
    # The server side of the news feed off as well (None cannot be given on the command line).
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps({"LabApp": {"news_url": None}}))

    venv_data = Path(sys.prefix) / "share" / "jupyter"
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        # A private user data dir, so nothing from ~/.local/share/jupyter shadows the venv's
        # kernelspec or lab extensions; the venv's share/jupyter is put first on the data path.
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_PATH=os.pathsep.join([str(venv_data), *filter(None, [os.environ.get("JUPYTER_PATH")])]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTERLAB_SETTINGS_DIR=str(dirs["user-settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]),
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("JUPYTER_CONFIG_PATH", None)

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = base / "server.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        # Lets ``LabServer.api`` delete sessions without first fetching an _xsrf cookie.
        "--ServerApp.disable_check_xsrf=True",
        "--ServerApp.terminals_enabled=False",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={dirs['app-settings']}",
        f"--LabApp.user_settings_dir={dirs['user-settings']}",
        f"--LabApp.workspaces_dir={dirs['workspaces']}",
        "--LabApp.extension_manager=readonly",  # never query PyPI
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = LabServer(url=url, root=root, log_path=log_path, process=process)
    try:
        _wait_for_server(url, process, log_path)
        yield server
    finally:
        _stop_process_group(process)


def _chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "Debian chromium is not installed (looked for `chromium` on PATH and /usr/bin/chromium). "
            "Run `make test`, which installs it; never `playwright install`.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright."""
    executable = _chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_page(browser: Browser, lab: LabServer) -> Iterator[Page]:
    """A fresh 1400x900 page; its kernels are shut down afterwards."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        yield page
    finally:
        # Kernels first, while the page's websockets are open: closing the page first leaves
        # the server writing kernel messages to closed sockets (tornado's write-after-close race).
        lab.shutdown_kernels()
        context.close()
