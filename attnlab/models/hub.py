"""Finding a model on the Hugging Face hub or in the local cache, shared by every loader (no backend imports)."""

from attnlab.errors import ModelNotAvailableError
from attnlab.models.embedded import EMBEDDED_MODEL

__all__ = ["check_hub_or_cache", "load_weights", "local_folder", "looks_like_path", "offline_message"]


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


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a path on disk, not a Hugging Face id (``org/model``): it starts like one
    (``/``, ``./``, ``../``, ``~``) or exists."""
    import os
    from pathlib import Path

    return (name.startswith(("/", "./", "../", "~", ".\\")) or (os.sep != "/" and os.sep in name)
            or Path(name).expanduser().exists())


def local_folder(name: str):
    """The local checkpoint folder ``name`` names, None for a Hugging Face id.

    A name is a path when it starts like one (``/``, ``./``, ``../``, ``~``) or exists on disk; a Hugging Face id
    (``org/model``) is not. A path that is not a folder is an error here, not a hub lookup that fails later.

    Raises:
        ModelNotAvailableError: the path does not exist ("folder not found"), or is a file, not a folder.
    """
    from pathlib import Path

    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotAvailableError(f"model folder not found: {name!r} is a file, not a folder. Give the folder "
                                     "that holds config.json and the weights")
    if looks_like_path(name):
        raise ModelNotAvailableError(f"model folder not found: {str(path)!r} does not exist. Give a folder that "
                                     "holds a Hugging Face checkpoint (config.json, the weights, the tokenizer), or "
                                     "a Hugging Face id such as 'gpt2'")
    return None


def load_weights(load, name: str, folder, what: str = "weights"):
    """``load()`` (a ``from_pretrained`` call) with its failures said plainly: for a local ``folder``, a corrupt or
    missing weight file is named. ``what``: ``"weights"`` or ``"tokenizer"``, for the message.

    Raises:
        ModelNotAvailableError: the weights could not be read (which file, and why).
    """
    try:
        return load()
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as exc:  # safetensors, torch.load and transformers raise many types for a bad file
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if folder is None:
            raise ModelNotAvailableError(offline_message(name, f"{type(exc).__name__}: {why}")) from None
        if what == "weights":
            files = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
        else:
            files = sorted(p.name for p in folder.iterdir() if p.name.startswith(("tokenizer", "vocab", "merges")))
        shown = ", ".join(files) if files else f"no {what} file"
        raise ModelNotAvailableError(f"could not read the {what} of the local model {str(folder)!r} ({shown}): "
                                     f"{type(exc).__name__}: {why}. The file may be truncated or corrupt: copy or "
                                     "download it again") from None
