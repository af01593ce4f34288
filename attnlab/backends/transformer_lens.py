"""The local backend: TransformerLens 4's ``TransformerBridge``.

Sites map to TransformerLens hook names (``blocks.{L}.attn.hook_z`` ...). Runs can start at any block from a given
residual stream, and can unembed only the positions a metric reads (the residual stream is narrowed at
``ln_final.hook_in``), which saves the [pos, d_model] x [d_model, d_vocab] product at every other position.

Starting at block k: TransformerLens 4's ``start_at_layer`` swaps the given residual stream in at block k but still
executes blocks 0..k-1 and discards their output (see ``TransformerBridge.forward``). A patch at block k cannot change
anything before it, so for the duration of such a call this backend swaps blocks 0..k-1 in ``bridge.blocks`` (the
Hugging Face model's own layer list) for no-op stand-ins that pass their input through: the earlier blocks are not
computed at all, while block indices, hook names and the bridge's residual injection at block k are untouched. The
first time, the backend checks on a tiny input that this gives exactly the bridge's own result; if it does not (an
architecture whose layers return another format), it falls back to the bridge's path: same numbers, more slowly.
"""

import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.backends.base import (
    Backend,
    Capability,
    Intervention,
    KVPrefix,
    ModelInfo,
    ModelWeights,
    Reduction,
    RunOutput,
    final_norm_params,
    narrow,
    stack_tokens,
)
from attnlab.backends.edges import EdgeRunner
from attnlab.errors import BackendError, TokenizationError
from attnlab.sites import Site, SiteKind

__all__ = ["TransformerLensBackend", "hook_name"]

_HOOKS = {
    SiteKind.RESID_PRE: "blocks.{layer}.hook_resid_pre",
    SiteKind.RESID_MID: "blocks.{layer}.hook_resid_mid",
    SiteKind.RESID_POST: "blocks.{layer}.hook_resid_post",
    SiteKind.ATTN_OUT: "blocks.{layer}.hook_attn_out",
    SiteKind.MLP_OUT: "blocks.{layer}.hook_mlp_out",
    SiteKind.Z: "blocks.{layer}.attn.hook_z",
    SiteKind.PATTERN: "blocks.{layer}.attn.hook_pattern",
    SiteKind.Q: "blocks.{layer}.attn.hook_q",
    SiteKind.K: "blocks.{layer}.attn.hook_k",
    SiteKind.V: "blocks.{layer}.attn.hook_v",
}


def hook_name(kind: SiteKind | str, layer: int) -> str:
    """TransformerLens hook name of activation ``kind`` at block ``layer`` (e.g. ``blocks.9.attn.hook_z``)."""
    return _HOOKS[SiteKind(kind)].format(layer=layer)


class TransformerLensBackend(Backend):
    """A model run through TransformerLens 4's ``TransformerBridge``.

    Args:
        bridge: a ``TransformerBridge`` (put in eval mode here).
        info: the model's :class:`ModelInfo`.
        tokenizer: a Hugging Face tokenizer, or None for models without one (tiny random models: pass token ids).
    """

    capabilities = frozenset(Capability)

    def __init__(self, bridge, info: ModelInfo, tokenizer=None) -> None:
        self.bridge = bridge.eval()
        self.info = info
        self.tokenizer = tokenizer
        #: whether blocks before ``start_layer`` are left out of a run: None until checked (module docstring)
        self.skips_early_blocks: bool | None = None if info.n_layers > 1 else False
        self._weights: ModelWeights | None = None
        #: whether suffix passes over a key/value prefix reproduce full runs: None until checked (:meth:`supports`)
        self.prefix_reuse_checked: bool | None = None
        if info.family == "native":  # TransformerLens-native attention takes no key/value cache
            self.capabilities = self.capabilities - {Capability.PREFIX_REUSE}
            self.prefix_reuse_checked = False

    def supports(self, capability: Capability | str) -> bool:
        """Whether this backend has ``capability``. For ``prefix_reuse`` the first call checks, on a tiny input, that
        a suffix pass over a recorded key/value prefix gives the full run's logits (from block 0 and from a later
        block); a model whose attention ignores the cache loses the capability (the patching engine then runs every
        position)."""
        cap = Capability(capability)
        if cap is Capability.PREFIX_REUSE and self.prefix_reuse_checked is None and cap in self.capabilities:
            self.prefix_reuse_checked = self._check_prefix_reuse()
            if not self.prefix_reuse_checked:
                self.capabilities = self.capabilities - {Capability.PREFIX_REUSE}
        return super().supports(cap)

    def _check_prefix_reuse(self) -> bool:
        n = min(8, self.info.n_ctx)
        if n < 3:
            return False
        tokens = torch.arange(n).remainder(self.info.d_vocab).repeat(2, 1)
        tokens[1] = tokens[1].flip(0)
        try:
            full = self.run(tokens, record_kv=True)
            p0 = n // 2
            start = 1 if self.info.n_layers > 1 else 0
            ok = True
            if start:
                resid = self.run(tokens, stop_layer=start).resid
                out = self.run(tokens[:, p0:], resid=resid[:, p0:], start_layer=start, prefix=full.kv.narrow(p0, start))
                ok = torch.allclose(out.logits, full.logits[:, p0:], atol=1e-4, rtol=1e-4)
            out = self.run(tokens[:, p0:], prefix=full.kv.narrow(p0))
            return bool(ok and torch.allclose(out.logits, full.logits[:, p0:], atol=1e-4, rtol=1e-4))
        except Exception:  # an architecture whose attention does not take the cache: run every position instead
            return False

    def edge_runner(self) -> EdgeRunner:
        """A :class:`~attnlab.backends.transformer_lens_graph.TransformerLensEdgeRunner` over this bridge.

        Raises:
            CapabilityError: the attention has no separate q/k/v/o projections or pre-attention norm (or this
                instance's capabilities were narrowed to exclude ``edge_graph``).
        """
        from attnlab.backends.transformer_lens_graph import TransformerLensEdgeRunner

        self.require(Capability.EDGE_GRAPH, "edge-level circuit analyses")
        return TransformerLensEdgeRunner(self)

    @contextmanager
    def _blocks_from(self, start: int) -> Iterator[None]:
        """Within the context, blocks 0..start-1 are no-op stand-ins (the real blocks are restored on exit)."""
        if start == 0 or not self.skips_early_blocks:
            yield
            return
        blocks = self.bridge.blocks
        original = blocks._modules
        tuple_output = self.info.family == "native"
        swapped = [(str(i), _SkippedBlock(tuple_output) if i < start else module)
                   for i, module in enumerate(original.values())]
        blocks._modules = OrderedDict(swapped)
        try:
            yield
        finally:
            blocks._modules = original

    def _check_block_skipping(self) -> None:
        """Decide once whether leaving out early blocks reproduces the bridge's own ``start_at_layer`` exactly."""
        self.skips_early_blocks = False
        try:
            tokens = torch.zeros(1, 3, dtype=torch.long)
            with torch.no_grad():
                resid = self.bridge(tokens, stop_at_layer=1)
                reference = self.bridge(resid, start_at_layer=1)
                self.skips_early_blocks = True
                with self._blocks_from(1):
                    fast = self.bridge(resid, start_at_layer=1)
            self.skips_early_blocks = bool(torch.equal(fast, reference))
        except Exception:  # an architecture the stand-ins do not fit: use the bridge's own (slower) path
            self.skips_early_blocks = False

    # -- tokenisation ---------------------------------------------------------------------------------------------
    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise BackendError(f"model {self.info.name!r} has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._require_tokenizer().encode(text, add_special_tokens=False))

    def to_tokens(self, texts: Sequence[str], prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        tok = self._require_tokenizer()
        if isinstance(texts, str):
            texts = [texts]
        bos = self.info.prepend_bos if prepend_bos is None else prepend_bos
        if bos and tok.bos_token_id is None:
            raise TokenizationError(f"model {self.info.name!r}'s tokenizer has no BOS token; use prepend_bos=False")
        rows = [([tok.bos_token_id] if bos else []) + self.encode(t) for t in texts]
        return stack_tokens(rows)

    def to_str_tokens(self, tokens: Int[Tensor, " pos"]) -> list[str]:
        ids = [int(t) for t in tokens.reshape(-1)]
        if self.tokenizer is None:
            return [f"<{i}>" for i in ids]
        return [self.tokenizer.decode([i]) for i in ids]

    # -- execution ------------------------------------------------------------------------------------------------
    def run(
        self,
        tokens: Int[Tensor, "batch pos"] | None = None,
        *,
        resid: Float[Tensor, "batch pos d_model"] | None = None,
        start_layer: int = 0,
        stop_layer: int | None = None,
        cache: Iterable[Site] = (),
        interventions: Sequence[Intervention] = (),
        logits_at: Int[Tensor, " batch"] | None = None,
        grad: bool = False,
        reduce: Reduction | None = None,
        prefix: KVPrefix | None = None,
        record_kv: bool = False,
    ) -> RunOutput:
        n_layers = self.info.n_layers
        end, cache = self.check_run(tokens, resid, start_layer, stop_layer, cache, interventions, reduce, logits_at)
        self.check_prefix(prefix, record_kv, tokens, resid, start_layer, stop_layer, grad)

        hooks: list[tuple[str, Callable]] = []
        for iv in interventions:
            hooks.append((hook_name(iv.kind, iv.layer), _intervention_hook(iv)))
        recorded: dict[Site, Tensor] = {}
        for site in cache:
            hooks.append((hook_name(site.kind, site.layer), _record_hook(site, recorded, grad)))
        if logits_at is not None and stop_layer is None:
            hooks.append(("unembed.hook_in", _select_positions_hook(logits_at)))  # after the final norm: GPT-2 reshapes its output

        if start_layer > 0 and self.skips_early_blocks is None:
            self._check_block_skipping()
        x = resid if start_layer > 0 else tokens
        kwargs = {}
        if start_layer > 0:
            kwargs["start_at_layer"] = start_layer
        if stop_layer is not None and stop_layer < n_layers:
            kwargs["stop_at_layer"] = stop_layer
        kv_cache = None
        if record_kv or prefix is not None:
            kv_cache = _prefix_cache(prefix)
            kwargs["past_key_values"] = kv_cache
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self.bridge.hooks(fwd_hooks=hooks), self._cache_kwarg(kv_cache), self._blocks_from(start_layer):
            with warnings.catch_warnings():  # transformers >= 5.24 renamed past_key_values (the bridge's name) cache
                warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
                out = self.bridge(x, **kwargs)
        if stop_layer is not None and stop_layer < n_layers:
            return RunOutput(logits=None, cache=recorded, resid=out)
        if logits_at is not None:
            out = out[:, 0]
        metric = None if reduce is None else reduce.evaluate(out)
        kv = None
        if record_kv:
            layers = kv_cache.layers
            kv = KVPrefix(tuple(layer.keys.detach() for layer in layers), tuple(layer.values.detach() for layer in layers),
                          int(tokens.shape[1]))
        return RunOutput(logits=out, cache=recorded, metric=metric, kv=kv)

    @contextmanager
    def _cache_kwarg(self, kv_cache) -> Iterator[None]:
        """Within the context, every block's attention sees a key/value cache passed to the Hugging Face model.

        Hugging Face's decoder layers pass the cache on as ``cache=`` (transformers >= 5.24) or
        ``past_key_values=`` (earlier); TransformerLens 4.3's attention bridges read only ``past_key_values``. A
        forward pre-hook on each attention bridge hands the cache over under that name (a no-op where it is there
        already); without it the bridge would silently attend to the suffix alone.
        """
        if kv_cache is None:
            yield
            return

        def hand_over(module, args, kwargs):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return args, kwargs

        handles = [block.attn.register_forward_pre_hook(hand_over, with_kwargs=True) for block in self.bridge.blocks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


    # -- weights --------------------------------------------------------------------------------------------------
    def weights(self) -> ModelWeights:
        """W_O, W_U, b_U and the final norm, read from the bridge once (``bridge.W_O`` [layer, head_index, d_head,
        d_model], ``bridge.W_U``, ``bridge.b_U``, ``bridge.ln_final.original_component``), and the attention
        projections with each block's pre-attention norm gain (:meth:`_attention_weights`).

        Raises:
            BackendError: the bridge's final norm is not a module this reader knows.
        """
        if self._weights is None:
            b = self.bridge
            b_u = getattr(b, "b_U", None)
            self._weights = ModelWeights(
                W_O=b.W_O.detach().float(), W_U=b.W_U.detach().float(),
                b_U=None if b_u is None else b_u.detach().float(),
                **final_norm_params(getattr(b.ln_final, "original_component", b.ln_final)),
                **self._attention_weights())
        return self._weights

    def _attention_weights(self) -> dict:
        """The :class:`ModelWeights` fields W_Q [layer, head_index, d_model, d_head], W_K and W_V [layer, kv_head,
        d_model, d_head] (``bridge.W_Q`` ..., as stored: no norm folded, no rotary rotation) and each block's
        pre-attention norm gain (``blocks[l].ln1``; None where a block has no norm with a weight)."""
        b = self.bridge
        gains, centred = [], None
        for block in b.blocks:
            ln = getattr(block, "ln1", None)
            ln = getattr(ln, "original_component", ln)
            weight = getattr(ln, "weight", None)
            if not isinstance(weight, Tensor):
                gains = None
                break
            gains.append(weight.detach().float())
            centred = "RMS" not in type(ln).__name__
        return {"W_Q": b.W_Q.detach().float(), "W_K": b.W_K.detach().float(), "W_V": b.W_V.detach().float(),
                "attn_norm_weight": None if gains is None else torch.stack(gains),
                "attn_norm_centred": None if gains is None else centred}


def _prefix_cache(prefix: KVPrefix | None):
    """A Hugging Face ``DynamicCache`` holding ``prefix`` (empty for ``None``: the run fills it).

    Blocks the prefix does not hold (those before a pass's start block, which are not run) get a zero stand-in of
    the prefix's length: Hugging Face reads the number of cached positions from block 0 to place the suffix at its
    true positions (position ids, rotary phases, the causal mask's offset).
    """
    from transformers import DynamicCache

    cache = DynamicCache()
    if prefix is None:
        return cache
    like = prefix.block(prefix.start_layer)[0]
    for layer in range(len(prefix.keys)):
        kv = prefix.block(layer)
        if kv is None:
            kv = (torch.zeros((), dtype=like.dtype, device=like.device).expand(like.shape),) * 2
        cache.update(*kv, layer)
    return cache


class _SkippedBlock(torch.nn.Module):
    """Stands in for a block before ``start_layer``: returns its input unchanged, in the block's output format."""

    def __init__(self, tuple_output: bool) -> None:
        super().__init__()
        self.tuple_output = tuple_output

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        return (hidden_states,) if self.tuple_output else hidden_states


def _intervention_hook(iv: Intervention) -> Callable:
    def hook(act: Tensor, hook=None) -> Tensor:
        return iv.apply(act)

    return hook


def _record_hook(site: Site, store: dict, grad: bool) -> Callable:
    def hook(act: Tensor, hook=None) -> Tensor:
        value = narrow(act, site)
        store[site] = value if grad else value.detach().clone()
        return act

    return hook


def _select_positions_hook(positions: Tensor) -> Callable:
    def hook(resid: Tensor, hook=None) -> Tensor:
        rows = torch.arange(resid.shape[0], device=resid.device)
        return resid[rows, positions.to(resid.device)].unsqueeze(1)

    return hook
