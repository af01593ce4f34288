"""Rendering: MIME bundles for JupyterLab (labext), static HTML fallbacks and standalone reports."""
