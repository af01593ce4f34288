"""Browser tier: JupyterLab driven by headless Chromium (Debian binary, Playwright sync API)."""
