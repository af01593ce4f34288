"""What attnlab's anywidgets share: loading their front-end bundle, and making payloads JSON-safe.

Each widget (Explorer, RecallReasoningWorkbench, CircuitSearch, HeadGalleryWidget, AttentionView) ships one
esbuild bundle from labext/ as its ``_esm`` trait, and sends payloads the browser parses as JSON.
"""

import math
from importlib import resources

from attnlab.errors import AttnlabError

__all__ = ["front_end", "json_safe"]


def front_end(package: str, filename: str, what: str) -> str:
    """The text of the bundle ``static/<filename>`` inside ``package`` (e.g. ``"attnlab.explorer"``).

    Args:
        package: the widget's package.
        filename: the bundle's file name under the package's ``static/`` folder.
        what: the widget's name as the error says it (``"the Explorer"``).

    Raises:
        AttnlabError: the bundle is missing (a source checkout that was never built), naming how to build it.
    """
    try:
        return resources.files(package).joinpath(f"static/{filename}").read_text()
    except FileNotFoundError:
        path = f"{package.replace('.', '/')}/static/{filename}"
        raise AttnlabError(
            f"{what}'s front end ({path}) is missing: it is built from labext/ by `make setup` (or `pip install -e .`, "
            "which runs `npm run build` in labext/)"
        ) from None


def json_safe(value):
    """``value`` with every non-finite float replaced by None, through dicts, lists and tuples (JSON has no NaN; the
    browser's parser rejects it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
