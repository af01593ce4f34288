"""Every head's attention pattern on one text, read through the backend, and its compact form for the browser.

An attention pattern is the softmax of a head's query-key scores: ``pattern[layer, head, q, k]`` is how much the
token at position ``q`` (the query, or destination) attends to the token at position ``k`` (the key, or source),
each row summing to 1 over ``k <= q`` in a causal model (Vaswani et al. 2017, section 3.2.1; Elhage et al. 2021, "A
Mathematical Framework for Transformer Circuits", section "Attention heads as information movement"). CircuitsVis's
``attention_heads`` view (Cooney & Nanda 2022) shows them per head with the tokens on both axes; this module gives
the numbers such a view needs, on every backend (:func:`attnlab.heads.patterns.attention_patterns`, one forward pass).

Payload size: a model of L layers and H heads has L x H x n² weights on an n-token text (SmolLM2: 270 x n²). The
browser gets each weight as a 16-bit integer ``round(w * 65535)`` (an error of at most 7.7e-6, far below what a colour
or a three-decimal label shows), and only the causal lower triangle (the weights above the diagonal are exactly 0),
about L x H x n² bytes: 0.55 MB for 45 tokens on SmolLM2, 4.4 MB at the default cap of 128 tokens.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from attnlab.errors import ArgumentError, ArgumentTypeError, SiteError

__all__ = ["DEFAULT_MAX_TOKENS", "MAX_TOKENS", "QUANT_SCALE", "AttentionPatterns", "read_attention"]

#: the longest text :func:`read_attention` takes unless told otherwise (tokens, BOS included)
DEFAULT_MAX_TOKENS = 128
#: the longest it takes at all (the payload grows as n²: 270 heads x 512² x 2 bytes / 2 = 71 MB on SmolLM2)
MAX_TOKENS = 512
#: weights travel to the browser as integers round(w * QUANT_SCALE) in [0, QUANT_SCALE]
QUANT_SCALE = 65535
#: weights above the diagonal larger than this mean the model is not causal: then the whole matrix is sent
_CAUSAL_TOL = 1e-6


@dataclass(frozen=True, eq=False)
class AttentionPatterns:
    """Every head's attention pattern on one text.

    Attributes:
        patterns: Float[layer, head_index, dest_pos, src_pos]: ``patterns[l, h, q, k]`` is the attention of the token
            at position ``q`` (query) to the token at position ``k`` (key), a probability; rows sum to 1.
        tokens: the text of each token (``to_str_tokens``; ``"<id>"`` for a model without a tokenizer).
        token_ids: the token ids (BOS included where the model prepends one).
        model_name: the model's name.
        text: the text the tokens came from (None when token ids were given).
    """

    patterns: Float[Tensor, "layer head_index dest_pos src_pos"]
    tokens: list[str]
    token_ids: list[int]
    model_name: str
    text: str | None = None

    @property
    def n_layers(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.patterns.shape[1])

    @property
    def n_tokens(self) -> int:
        return int(self.patterns.shape[2])

    @property
    def causal(self) -> bool:
        """Whether every weight above the diagonal is 0 (a causal model): then only the lower triangle is sent."""
        upper = torch.triu(torch.ones(self.n_tokens, self.n_tokens, dtype=torch.bool), diagonal=1)
        return self.n_tokens < 2 or float(self.patterns[..., upper].abs().max()) <= _CAUSAL_TOL

    def head(self, layer: int, head: int) -> Float[Tensor, "dest_pos src_pos"]:
        """The pattern of one head.

        Raises:
            SiteError: ``layer`` or ``head`` out of range.
        """
        for name, value, n in (("layer", layer, self.n_layers), ("head", head, self.n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
                raise SiteError(f"'{name}' must be in [0, {n}) (got {value!r})")
        return self.patterns[layer, head]

    def encoded(self) -> bytes:
        """The weights as the browser gets them: little-endian uint16 ``round(w * 65535)``, heads in (layer, head)
        order, each head's rows in order; of each row only the keys ``k <= q`` when :attr:`causal`, else all."""
        q = torch.round(self.patterns.detach().float().clamp(0, 1) * QUANT_SCALE).to(torch.int32).numpy()
        if self.causal:
            rows, cols = np.tril_indices(self.n_tokens)
            q = q[:, :, rows, cols]
        return np.ascontiguousarray(q, dtype="<u2").tobytes()

    def decoded(self) -> Float[Tensor, "layer head_index dest_pos src_pos"]:
        """What the browser shows: :meth:`encoded` read back as weights (within 1 / 65535 / 2 of :attr:`patterns`)."""
        n = self.n_tokens
        flat = torch.from_numpy(np.frombuffer(self.encoded(), dtype="<u2").astype(np.float32)) / QUANT_SCALE
        if not self.causal:
            return flat.reshape(self.n_layers, self.n_heads, n, n)
        out = torch.zeros(self.n_layers, self.n_heads, n, n)
        rows, cols = np.tril_indices(n)
        out[:, :, torch.from_numpy(rows), torch.from_numpy(cols)] = flat.reshape(self.n_layers, self.n_heads, -1)
        return out

    def meta(self) -> dict:
        """The JSON side of the browser payload: model, text, tokens, dimensions, encoding, per-head maxima."""
        return {
            "model": self.model_name,
            "text": self.text,
            "tokens": list(self.tokens),
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_tokens": self.n_tokens,
            "encoding": "uint16-lower" if self.causal else "uint16-full",
            "scale": QUANT_SCALE,
        }

    def __repr__(self) -> str:
        return (f"<AttentionPatterns {self.model_name!r}: {self.n_layers} layers x {self.n_heads} heads on "
                f"{self.n_tokens} tokens>")


def read_attention(model, text: "str | Sequence[int] | Tensor", *, max_tokens: int = DEFAULT_MAX_TOKENS,
                   prepend_bos: bool | None = None) -> AttentionPatterns:
    """Every head's attention pattern on ``text``, from one forward pass through the backend.

    Args:
        model: a loaded model (:func:`attnlab.load_model`; either backend).
        text: the text (tokenised by the model, BOS first where it prepends one), or token ids Int[pos] (for models
            without a tokenizer).
        max_tokens: the longest text taken, in tokens (default 128, at most 512): the browser payload grows as n².
        prepend_bos: override the model's BOS default for a text.

    Returns:
        An :class:`AttentionPatterns` with ``patterns`` Float[layer, head_index, dest_pos, src_pos].

    Raises:
        ArgumentTypeError: ``model`` is not a loaded model; a text for a model without a tokenizer; ``text`` of
            another type.
        ArgumentError: an empty text; more tokens than ``max_tokens`` (the message gives the count and the payload
            size) or than the model's context; ids outside the vocabulary; ``max_tokens`` outside [1, 512].
    """
    from attnlab.backends.base import check_model
    from attnlab.heads.patterns import attention_patterns

    check_model(model, "the attention view")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise ArgumentError(f"'max_tokens' must be an integer in [1, {MAX_TOKENS}] (got {max_tokens!r})")
    info = model.info
    source = None
    if isinstance(text, str):
        if not text.strip():
            raise ArgumentError("the text is empty: pass the prompt whose attention patterns you want to see")
        if getattr(model, "tokenizer", None) is None:
            raise ArgumentTypeError(f"{info.name} has no tokenizer, so it cannot read a text; pass token ids "
                                    "(a list of ints or an Int[pos] tensor) instead")
        tokens = model.to_tokens([text], prepend_bos=prepend_bos)[0]
        source = text
    elif isinstance(text, Tensor) or (isinstance(text, Sequence) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in text)):
        tokens = torch.as_tensor(text, dtype=torch.long).reshape(-1) if len(text) else torch.zeros(0)
        if tokens.numel() == 0:
            raise ArgumentError("no token ids given: pass at least one")
        if int(tokens.min()) < 0 or int(tokens.max()) >= info.d_vocab:
            raise ArgumentError(f"token ids must be in [0, {info.d_vocab}) for {info.name} (got "
                                f"[{int(tokens.min())}, {int(tokens.max())}])")
    else:
        raise ArgumentTypeError(f"'text' must be a string or token ids (got {type(text).__name__})")
    n = int(tokens.shape[0])
    if n > max_tokens:
        size = info.n_layers * info.n_heads * n * (n + 1)  # bytes: uint16 lower triangle, 2 x n(n+1)/2 a head
        shown = f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"
        raise ArgumentError(
            f"the text is {n} tokens, more than the view's limit of {max_tokens}: {info.n_layers} layers x "
            f"{info.n_heads} heads x {n}² weights would send {shown} to the browser; shorten the text, or pass "
            f"max_tokens={min(MAX_TOKENS, n)} (at most {MAX_TOKENS})")
    if n > info.n_ctx:
        raise ArgumentError(f"the text is {n} tokens but {info.name} has a context of {info.n_ctx}; shorten it")
    patterns = attention_patterns(model, tokens[None])[0].detach().float().cpu()
    return AttentionPatterns(patterns=patterns, tokens=list(model.to_str_tokens(tokens)),
                             token_ids=[int(t) for t in tokens], model_name=info.name, text=source)
