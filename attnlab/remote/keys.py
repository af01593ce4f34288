"""The NDIF API key: where it comes from, and keeping it out of everything attnlab shows or saves.

The key is read at call time from ``NDIF_API_KEY``, else from nnsight's configuration (``nnsight.CONFIG.API.APIKEY``,
set by ``CONFIG.set_default_api_key`` or ``nnsight.login``). attnlab never prints, logs, saves or puts it in an
exception message: every text that reaches the user from a remote call goes through :func:`redact`.
"""

import os

__all__ = ["api_key", "looks_like_a_key", "redact", "remember_secret"]

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


def remember_secret(value: str) -> None:
    """Treat ``value`` as a secret from now on: :func:`redact` masks it wherever it appears (for a key put in the
    wrong place: a URL's user info, the ``remote=`` argument, an option)."""
    if isinstance(value, str) and len(value) >= 4:
        _SEEN.add(value)


def looks_like_a_key(value: object) -> bool:
    """Whether a string passed where no key belongs could be one (long, no spaces, not a URL): it is then never
    echoed back, and is redacted from then on."""
    return (isinstance(value, str) and len(value) >= 16 and " " not in value
            and not value.startswith(("http://", "https://")))


def redact(text: object) -> str:
    """``str(text)`` with every API key attnlab has seen in this process replaced by ``<redacted>``."""
    text = str(text)
    env = os.environ.get("NDIF_API_KEY")
    for secret in sorted(_SEEN | ({env} if env else set()), key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text
