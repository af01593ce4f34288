"""The package version. Its one source is ``labext/package.json`` (read by hatch-nodejs-version at build time)."""

import json
from importlib import metadata
from pathlib import Path

__all__ = ["version"]


def version() -> str:
    """attnlab's version: from the installed distribution, else from ``labext/package.json`` in a checkout."""
    try:
        return metadata.version("attnlab")
    except metadata.PackageNotFoundError:
        package_json = Path(__file__).resolve().parent.parent / "labext" / "package.json"
        return json.loads(package_json.read_text())["version"]
