"""Finding a model on the Hugging Face hub or in the local cache, shared by every loader (no backend imports)."""

from attnlab.errors import ModelNotAvailableError
from attnlab.models.embedded import EMBEDDED_MODEL

__all__ = ["check_hub_or_cache", "offline_message"]


def offline_message(name: str, why: str) -> str:
    """The message of a model that could not be loaded: ``why``, and the offline way out (the embedded model)."""
    return (f"could not load model {name!r} from the Hugging Face hub or the local cache ({why}). If you are "
            f"offline, use the embedded model: attnlab.load_model({EMBEDDED_MODEL!r}); otherwise check the id, your "
            "network, or HF_HOME")


def check_hub_or_cache(name: str, timeout: float = 3.0) -> None:
    """Fail in seconds, not after a minute of retries, when a model is neither cached nor reachable.

    Raises:
        ModelNotAvailableError: ``name`` is not in the local Hugging Face cache and the hub is offline or unreachable.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # cached: transformers can load it offline
    if constants.HF_HUB_OFFLINE:
        raise ModelNotAvailableError(offline_message(name, "not in the local cache and HF_HUB_OFFLINE is set"))
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as exc:
        raise ModelNotAvailableError(
            offline_message(name, f"not in the local cache and the hub is unreachable: {exc.strerror or exc}")
        ) from None
