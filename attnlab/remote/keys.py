"""The NDIF API key: where it comes from, and keeping it out of everything attnlab shows or saves.

The key is read at call time from ``NDIF_API_KEY``, else from nnsight's configuration (``nnsight.CONFIG.API.APIKEY``,
set by ``CONFIG.set_default_api_key`` or ``nnsight.login``). attnlab never prints, logs, saves or puts it in an
exception message: every text that reaches the user from a remote call goes through :func:`redact`.
"""

import os

__all__ = ["api_key", "redact"]

_SEEN: set[str] = set()
_MASK = "<redacted>"


def api_key() -> str | None:
    """The API key to send, or None when none is configured (``NDIF_API_KEY`` wins over nnsight's config)."""
    key = os.environ.get("NDIF_API_KEY")
    if not key:
        from attnlab.backends.nnsight_adapter import CONFIG

        key = CONFIG.API.APIKEY
    if key:
        _SEEN.add(key)
    return key or None


def redact(text: object) -> str:
    """``str(text)`` with every API key attnlab has seen in this process replaced by ``<redacted>``."""
    text = str(text)
    env = os.environ.get("NDIF_API_KEY")
    for secret in sorted(_SEEN | ({env} if env else set()), key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text
