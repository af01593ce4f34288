"""The backend interface: the one door through which every analysis reaches a model's internals.

An analysis is written once against :class:`Backend` and runs on every backend: TransformerLens 4
(``TransformerBridge``, local) and nnsight (local, or remote on NDIF). A backend knows how to tokenise, run the model
from tokens or from a residual stream at some layer (``start_layer``), record activations at :class:`~attnlab.sites.Site`
addresses, and overwrite activations with :class:`Intervention` objects, which are plain data (index tensors and
values) so that they can be shipped to a remote executor.

Capabilities are part of a backend's type: :attr:`Backend.capabilities` lists the :class:`Capability` values a
backend class implements, and an analysis calls :meth:`Backend.require` before any work, which raises one error type,
:class:`~attnlab.errors.CapabilityError`, naming the capability, the backend and what to do.
"""

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.backends.edges import EdgeRunner
from attnlab.errors import BackendError, CapabilityError, SiteError, TokenizationError
from attnlab.sites import Site, SiteKind

__all__ = ["Backend", "Capability", "Intervention", "KVPrefix", "ModelInfo", "ModelWeights", "Reduction", "RunOutput",
           "RunSpec"]


class Capability(str, Enum):
    """What a backend can do beyond tokenising and running the model, as analyses ask for it.

    Members:
        PATCHING: record activations at sites and overwrite them (:meth:`Backend.run` with ``cache=`` and
            ``interventions=``); every backend has it.
        GRADIENTS: ``Backend.run(..., grad=True)`` keeps the autograd graph, so recorded activations have gradients
            (attribution patching, EAP).
        WEIGHTS: ``Backend.weights()`` gives the weights analyses read (W_O per head, W_U, the final norm's scale).
        EDGE_GRAPH: :meth:`Backend.edge_runner` runs receiver-split passes (per-head q/k/v inputs, the MLP input and
            the logits input computed from a residual stream with chosen senders removed) for edge-level circuit
            analyses (:class:`attnlab.circuits.graph.GraphRunner`), one pass at a time, with attnlab's Python
            callbacks inside the pass.
        EDGE_PROGRAMS: whole edge-level analyses (EAP, EAP-IG, circuit evaluation and faithfulness: the programs of
            :mod:`attnlab.edge_ops`) run where the model is, gradients included: on a remote server, one job per
            analysis. Every backend with ``EDGE_GRAPH`` has it; a remote nnsight model has it without ``EDGE_GRAPH``.
        PREFIX_REUSE: suffix passes. ``run(..., record_kv=True)`` returns every block's attention keys and values
            (:class:`KVPrefix`), and ``run(..., prefix=kv)`` runs only the positions after ``kv.length``, attending
            to the given keys and values for the positions before, at their true positions (rotary models
            included). The patching engine uses it to skip the positions a patch cannot change. Models whose
            attention cannot take a key/value cache (TransformerLens-native tiny models) lack it.
    """

    PATCHING = "patching"
    GRADIENTS = "gradients"
    WEIGHTS = "weights"
    EDGE_GRAPH = "edge_graph"
    EDGE_PROGRAMS = "edge_programs"
    PREFIX_REUSE = "prefix_reuse"

    @property
    def description(self) -> str:
        """What the capability means, for error messages."""
        return _CAPABILITY_DESCRIPTIONS[self]


_CAPABILITY_DESCRIPTIONS = {
    Capability.PATCHING: "recording and overwriting activations",
    Capability.GRADIENTS: "gradients through the model: run(..., grad=True) keeping the autograd graph",
    Capability.WEIGHTS: "reading weights: model.weights() (W_O per head, W_U, the final norm's scale)",
    Capability.EDGE_GRAPH: "receiver-split edge passes: per-head q/k/v, MLP and logits inputs with chosen senders "
                           "removed",
    Capability.EDGE_PROGRAMS: "edge-level analyses run where the model is (EAP, EAP-IG, circuit evaluation)",
    Capability.PREFIX_REUSE: "suffix passes: run(..., prefix=KVPrefix) attends to recorded keys and values of the "
                             "positions before the suffix",
}


@dataclass(frozen=True)
class ModelInfo:
    """Static description of a loaded model, recorded in every result as provenance.

    Attributes:
        name: attnlab name or Hugging Face id the model was loaded by.
        n_layers, n_heads, n_kv_heads, d_model, d_head, d_mlp, d_vocab, n_ctx: dimensions. ``n_heads`` counts query
            heads; ``n_kv_heads`` key/value heads (equal to ``n_heads`` without grouped-query attention).
        backend: ``"transformer_lens"`` or ``"nnsight"``.
        family: architecture family (``"llama"``, ``"gpt2"``, ``"native"`` ...).
        prepend_bos: whether :meth:`Backend.to_tokens` prepends a beginning-of-sequence token by default.
        source: where the weights came from (path, package or hub id); never a secret.
        has_mlp: False for attention-only models.
    """

    name: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    backend: str
    family: str
    prepend_bos: bool = True
    source: str = ""
    has_mlp: bool = True

    def to_dict(self) -> dict:
        """A JSON-serialisable copy."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class ModelWeights:
    """The weights that weight-reading analyses need: each head's output projection, the unembedding and the final
    norm. Returned by :meth:`Backend.weights`; every tensor is detached float32 on the model's device.

    Direct logit attribution (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", section
    "Direct logit attribution") writes the logits as a sum over components: a component's contribution ``c``
    [..., d_model] to the final residual stream ``x`` reaches the logits as ``apply(c, scale(x)) @ W_U``, the final
    norm's scale *frozen* at its value on ``x`` (and ``c`` centred for LayerNorm), so that the contributions add up
    to the logits minus the bias terms (``norm_bias @ W_U + b_U``).

    Attributes:
        W_O: Float[layer, head_index, d_head, d_model] output projection of every query head (``z[h] @ W_O[l, h]``
            is head h's term of the attention output, the output bias excluded).
        W_U: Float[d_model, d_vocab] unembedding.
        b_U: Float[d_vocab] unembedding bias, or None.
        norm_weight: Float[d_model] the final norm's gain.
        norm_bias: Float[d_model] the final norm's bias (LayerNorm), or None.
        norm_eps: the final norm's epsilon.
        norm_centred: True for LayerNorm (subtracts the mean over d_model), False for RMSNorm.
        W_Q: Float[layer, head_index, d_model, d_head] query projection of every query head, as the model stores it
            (no norm folded in, no rotary rotation; ``norm(x) @ W_Q[l, h] + b_Q`` is head h's query), or None where
            a backend does not read it. Weight-based composition (:mod:`attnlab.heads.composition`) reads it.
        W_K, W_V: Float[layer, kv_head, d_model, d_head] key and value projections of every key/value head
            (``kv_head`` = ``n_kv_heads``; on grouped-query models query head h uses key/value head
            ``h // (n_heads // n_kv_heads)``), as stored, or None.
        attn_norm_weight: Float[layer, d_model] gain of each block's pre-attention norm (what W_Q, W_K and W_V
            read), or None (no such norm, or not read).
        attn_norm_centred: True when that norm is a LayerNorm (centres over d_model), False for RMSNorm, None when
            unknown.
    """

    W_O: Float[Tensor, "layer head_index d_head d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, " d_vocab"] | None
    norm_weight: Float[Tensor, " d_model"]
    norm_bias: Float[Tensor, " d_model"] | None
    norm_eps: float
    norm_centred: bool
    W_Q: Float[Tensor, "layer head_index d_model d_head"] | None = None
    W_K: Float[Tensor, "layer kv_head d_model d_head"] | None = None
    W_V: Float[Tensor, "layer kv_head d_model d_head"] | None = None
    attn_norm_weight: Float[Tensor, "layer d_model"] | None = None
    attn_norm_centred: bool | None = None

    def scale(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... 1"]:
        """The final norm's scale of residual vectors: sqrt(mean((x - centre)^2) + eps), centre = mean(x) for
        LayerNorm and 0 for RMSNorm."""
        x = x.float()
        if self.norm_centred:
            x = x - x.mean(-1, keepdim=True)
        return (x.pow(2).mean(-1, keepdim=True) + self.norm_eps).sqrt()

    def apply(self, x: Float[Tensor, "... d_model"], scale: Tensor | None = None) -> Float[Tensor, "... d_model"]:
        """The final norm of ``x``.

        Args:
            x: residual vectors, or one component's contribution to them.
            scale: a frozen scale (:meth:`scale` of the full residual stream; any shape that broadcasts against
                ``x[..., :1]``, e.g. one scale per position for every head's output at that position): the linear
                map DLA uses, with no bias added (the bias belongs to no component). None: the norm of ``x`` itself,
                bias included.
        """
        x = x.float()
        s = self.scale(x) if scale is None else scale
        if self.norm_centred:
            x = x - x.mean(-1, keepdim=True)
        y = x / s * self.norm_weight
        return y if (self.norm_bias is None or scale is not None) else y + self.norm_bias

    def logits(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Next-token logits of final residual vectors ``x`` (the logit lens, nostalgebraist 2020, at any layer)."""
        y = self.apply(x) @ self.W_U
        return y if self.b_U is None else y + self.b_U


@dataclass(frozen=True, eq=False)
class KVPrefix:
    """The attention keys and values of a run's first ``length`` positions, per block: what a suffix pass attends to.

    Attention is causal: a patch at position p cannot change any position before p, at any block. A patched pass
    therefore needs to compute only the positions from p on, attending to the unpatched run's own keys and values for
    the positions before (recorded once with ``Backend.run(..., record_kv=True)``), as incremental decoding attends
    to a key/value cache. The keys are stored as the model's attention reads them (after rotary position
    embeddings), so the suffix positions must be run at their true positions, which the backends do.

    The recorded tensors are shared, never copied, by the prefixes cut from them (:meth:`narrow`, :meth:`repeat`
    only change ``length``, ``start_layer`` and ``repeat_count``): the many passes of a sweep hold the same tensor
    objects, so a remote job serialises them once, however many of its passes read them.

    Attributes:
        keys: per block, Float[batch, n_kv_heads, recorded_pos, d_head], as recorded.
        values: per block, like ``keys``.
        length: the prefix's positions, [0, length) of the recorded ones.
        start_layer: the first block a pass reads (a pass starting at a later block does not run the earlier ones).
        repeat_count: copies of the batch the pass runs (variant v's rows [v*batch, (v+1)*batch), like
            :class:`RunSpec`).
    """

    keys: tuple
    values: tuple
    length: int
    start_layer: int = 0
    repeat_count: int = 1

    @property
    def batch(self) -> int:
        """Rows of the pass the prefix serves (the recorded batch times ``repeat_count``)."""
        return self.keys[0].shape[0] * self.repeat_count

    def narrow(self, length: int, start_layer: int = 0) -> "KVPrefix":
        """The first ``length`` positions, read from block ``start_layer`` on (no copy).

        Raises:
            SiteError: ``length`` outside [1, recorded positions], or ``start_layer`` outside the blocks.
        """
        recorded = self.keys[0].shape[2]
        if not 1 <= length <= recorded:
            raise SiteError(f"a key/value prefix of {recorded} recorded positions cannot give {length}")
        if not 0 <= start_layer < len(self.keys):
            raise SiteError(f"start_layer must be in [0, {len(self.keys)}) (got {start_layer})")
        return dataclasses.replace(self, length=length, start_layer=start_layer)

    def repeat(self, n: int) -> "KVPrefix":
        """The prefix of ``n`` copies of the batch (no copy until :meth:`block`)."""
        return dataclasses.replace(self, repeat_count=self.repeat_count * n)

    def block(self, layer: int) -> tuple[Tensor, Tensor] | None:
        """Keys and values of block ``layer`` as a pass reads them: Float[batch, n_kv_heads, length, d_head] each,
        repeated ``repeat_count`` times (a copy); None for blocks before ``start_layer``."""
        if layer < self.start_layer:
            return None
        k, v = self.keys[layer][:, :, :self.length], self.values[layer][:, :, :self.length]
        if self.repeat_count > 1:
            k, v = k.repeat(self.repeat_count, 1, 1, 1), v.repeat(self.repeat_count, 1, 1, 1)
        return k, v

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded keys and values."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


@dataclass(frozen=True)
class Intervention:
    """Overwrite entries of one activation during a run: ``act[rows, positions, heads] = values``.

    Many patched variants of a prompt batch can share one forward pass: each variant occupies its own rows of the
    batch and gets its own entries here. Index tensors all have length ``n``.

    Attributes:
        kind: activation kind (see :mod:`attnlab.sites` for shapes).
        layer: block index.
        rows: Int[n] batch rows to overwrite.
        values: the new values, shape ``[n, *rest]`` where ``rest`` is the activation's shape after removing the
            batch axis and, when given, the position and head axes. E.g. kind ``z`` with heads and no positions:
            ``[n, pos, d_head]``; with both: ``[n, d_head]``; kind ``resid_pre`` with positions: ``[n, d_model]``.
        heads: Int[n] head index per entry, or None for every head (head kinds only).
        positions: Int[n] token position per entry, or None for every position.
    """

    kind: SiteKind
    layer: int
    rows: Int[Tensor, " n"]
    values: Tensor
    heads: Int[Tensor, " n"] | None = None
    positions: Int[Tensor, " n"] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SiteKind(self.kind))
        n = self.rows.shape[0]
        for name in ("heads", "positions"):
            idx = getattr(self, name)
            if idx is not None and idx.shape != (n,):
                raise SiteError(f"Intervention.{name} must have shape ({n},) like rows (got {tuple(idx.shape)})")
        if self.values.shape[0] != n:
            raise SiteError(f"Intervention.values must have {n} entries on its first axis (got {self.values.shape[0]})")
        if self.heads is not None and not self.kind.has_heads:
            raise SiteError(f"kind {self.kind.value!r} has no head axis; heads must be None")
        if self.kind is SiteKind.PATTERN:
            raise SiteError("interventions on attention patterns are not supported; intervene on q, k, v or z")

    def apply(self, act: Tensor) -> Tensor:
        """Return ``act`` with this intervention applied (in place where possible).

        Works for every kind whose head axis (if any) is axis 2: ``[batch, pos, head, ...]``.
        """
        idx: list = [self.rows]
        idx.append(self.positions if self.positions is not None else slice(None))
        if self.heads is not None:
            idx.append(self.heads)
        values = self.values.to(device=act.device, dtype=act.dtype)
        if act.requires_grad:  # keep autograd's saved tensors intact
            act = act.clone()
        if self.positions is None and self.heads is not None:
            # Mixed advanced/basic indexing: act[rows, :, heads] has shape [n, pos, ...]; assign per entry via
            # moving the position axis, which keeps the expected layout of ``values``.
            act.transpose(1, 2)[self.rows, self.heads] = values
        else:
            act[tuple(idx)] = values
        return act


@dataclass(frozen=True)
class Reduction:
    """A built-in metric computed where the model runs, returned instead of the logits.

    A patched pass needs one number per row, not the row's ``d_vocab`` logits: with a reduction a backend returns
    ``RunOutput.metric`` (Float[rows]) and no logits, so a remote sweep downloads O(rows) numbers instead of
    O(rows x d_vocab) (128,256 floats a row on Llama-3). The computation is :func:`attnlab.metric_ops.evaluate`,
    which the nnsight backend ships to the server with every request.

    Attributes:
        metric: a built-in metric name (:data:`attnlab.metric_ops.BUILTIN`), or several joined by ``"+"``
            (``"accuracy+logit_diff"``): then ``RunOutput.metric`` is Float[rows, k], one column per name.
        answers: Int[batch, 2] correct and distractor ids of the base batch (tiled over the pass's variants).
        reference: Float[batch, d_vocab] clean log-probabilities at END, for metrics that need them (``kl_div``);
            sent once per job, however many passes read it.
    """

    metric: str
    answers: Tensor
    reference: Tensor | None = None

    def __post_init__(self) -> None:
        from attnlab import metric_ops

        names = metric_ops.parts(self.metric)
        if not all(n in metric_ops.BUILTIN for n in names):
            raise BackendError(f"only built-in metrics {sorted(metric_ops.BUILTIN)} can be computed where the model "
                               f"runs (got {self.metric!r}); custom metrics are computed from the returned logits")
        if any(metric_ops.BUILTIN[n] for n in names) and self.reference is None:
            raise BackendError(f"metric {self.metric!r} needs the clean reference distribution: pass reference=")

    def evaluate(self, logits: Float[Tensor, "rows d_vocab"]) -> Float[Tensor, " rows"]:
        """The metric of every row of ``logits`` (``rows`` a multiple of the base batch)."""
        from attnlab import metric_ops

        return metric_ops.evaluate(self.metric, logits, self.answers, self.reference)


@dataclass
class RunOutput:
    """What :meth:`Backend.run` returns.

    Attributes:
        logits: Float[batch, pos, d_vocab], or Float[batch, d_vocab] when ``logits_at`` was given; None when the run
            stopped early (``stop_layer``), in which case ``resid`` holds the residual stream.
        cache: recorded activations, keyed by the requested sites, narrowed to their head and position if given.
        resid: Float[batch, pos, d_model], the residual stream at ``stop_layer`` (only when ``stop_layer`` was set).
        metric: Float[batch], the :class:`Reduction` asked for (then ``logits`` may be None: not returned).
        kv: every block's keys and values (a :class:`KVPrefix` of all positions), when the run was asked for them
            (``record_kv=True``).
    """

    logits: Tensor | None
    cache: dict[Site, Tensor] = field(default_factory=dict)
    resid: Tensor | None = None
    metric: Tensor | None = None
    kv: KVPrefix | None = None


@dataclass
class RunSpec:
    """One forward pass, described as data, for :meth:`Backend.run_many`.

    The batch is ``tokens`` repeated ``repeat`` times (variant v occupies rows [v*batch, (v+1)*batch)). ``resid``
    and ``start_layer`` are an optimisation a backend may use or ignore: ``resid`` (repeated like the tokens) is the
    residual stream entering block ``start_layer`` in the unpatched run, so starting there gives exactly the result of
    running from the tokens. ``resid_patch`` is applied to the repeated ``resid`` when starting at ``start_layer`` and
    at ``resid_pre`` of that block when running from the tokens.

    With ``prefix`` (a :class:`KVPrefix` of the base batch) the pass is a *suffix pass*: ``tokens``, ``resid``,
    ``logits_at`` and the interventions' positions cover only the positions after ``prefix.length`` (position 0 of
    the pass is position ``prefix.length`` of the prompt), and the backend must honour the prefix (it is not an
    optimisation it may ignore); the prefix is repeated like the tokens.

    Attributes:
        tokens: Int[batch, pos] base token ids.
        repeat: how many copies of the batch the pass runs.
        interventions: applied during the pass (rows index the repeated batch).
        logits_at: Int[batch] position per base row (repeated like the tokens), or None for all positions.
        start_layer: block the pass may start at.
        resid: Float[batch, pos, d_model] residual entering ``start_layer`` (None when start_layer is 0).
        resid_patch: an intervention of kind ``resid_pre`` at ``start_layer``, or None.
        reduce: a :class:`Reduction` to compute where the model runs (needs ``logits_at``), or None for logits.
        key: anything that identifies the pass to the caller (returned with its output).
    """

    tokens: Tensor
    repeat: int = 1
    interventions: list = field(default_factory=list)
    logits_at: Tensor | None = None
    start_layer: int = 0
    resid: Tensor | None = None
    resid_patch: Intervention | None = None
    reduce: Reduction | None = None
    key: object = None
    prefix: KVPrefix | None = None

    def run_kwargs(self, *, use_start_layer: bool = True) -> dict:
        """Keyword arguments of :meth:`Backend.run` for this pass (materialises the repeated tensors)."""
        n = self.repeat
        tokens = self.tokens.repeat(n, 1)
        logits_at = None if self.logits_at is None else self.logits_at.repeat(n)
        interventions = list(self.interventions)
        extra = {} if self.prefix is None else {"prefix": self.prefix.repeat(n)}
        if use_start_layer and self.start_layer > 0:
            resid = self.resid.repeat(n, 1, 1)
            if self.resid_patch is not None:
                resid = self.resid_patch.apply(resid)
            return dict(tokens=tokens, resid=resid, start_layer=self.start_layer, interventions=interventions,
                        logits_at=logits_at, reduce=self.reduce, **extra)
        if self.resid_patch is not None:
            interventions.insert(0, self.resid_patch)
        return dict(tokens=tokens, interventions=interventions, logits_at=logits_at, reduce=self.reduce, **extra)


def narrow(act: Tensor, site: Site) -> Tensor:
    """Narrow a full activation tensor to ``site.head`` and ``site.position`` (if given)."""
    if site.kind is SiteKind.PATTERN:
        if site.head is not None:
            act = act[:, site.head]
            if site.position is not None:
                act = act[:, site.position]
        elif site.position is not None:
            act = act[:, :, site.position]
        return act
    if site.position is not None and site.head is not None:
        return act[:, site.position, site.head]
    if site.position is not None:
        return act[:, site.position]
    if site.head is not None:
        return act[:, :, site.head]
    return act


def check_model(model, analysis: str = "this analysis") -> None:
    """Raise unless ``model`` is a loaded model (a :class:`Backend`, what :func:`attnlab.load_model` returns, or an
    object with its ``info`` and ``run``).

    Raises:
        ArgumentTypeError: ``model`` is a name ("load it with attnlab.load_model(name) first") or anything else.
    """
    if isinstance(model, Backend) or (hasattr(model, "info") and hasattr(model, "run")):
        return  # a Backend, or a wrapper that behaves as one (tests' counting models, user proxies)
    from attnlab.errors import ArgumentTypeError

    if isinstance(model, str):
        raise ArgumentTypeError(f"{analysis} needs a loaded model, got the string {model!r}; load it with "
                                f"attnlab.load_model({model!r}) first and pass the loaded model")
    raise ArgumentTypeError(f"{analysis} needs a loaded model, got a {type(model).__name__}; pass the model that "
                            "attnlab.load_model returns")


class Backend(ABC):
    """A loaded model, as every attnlab analysis sees it.

    Subclasses implement :meth:`run` and the tokeniser methods. Instances are what :func:`attnlab.load_model`
    returns; pass them to any analysis.
    """

    info: ModelInfo
    #: the :class:`Capability` values this backend class implements (a class attribute per backend)
    capabilities: frozenset[Capability] = frozenset({Capability.PATCHING})

    # -- identity -------------------------------------------------------------------------------------------------
    @property
    def tokenizer_fingerprint(self) -> str | None:
        """A digest of what token ids mean to this model: its tokenizer's vocabulary (every string and its id) and its
        BOS/EOS ids; None for a model without a tokenizer (tiny random models). Two models with the same fingerprint
        read the same ids as the same strings, so a dataset built with one runs on the other. Cached."""
        cached = self.__dict__.get("_tokenizer_fingerprint", False)
        if cached is not False:
            return cached
        tok = getattr(self, "tokenizer", None)
        digest = None
        if tok is not None and hasattr(tok, "get_vocab"):
            import hashlib
            import json

            vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
            specials = [getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)]
            blob = json.dumps([vocab, specials], ensure_ascii=False).encode()
            digest = hashlib.blake2b(blob, digest_size=12).hexdigest()
        self.__dict__["_tokenizer_fingerprint"] = digest
        return digest

    # -- capabilities ---------------------------------------------------------------------------------------------
    def supports(self, capability: Capability | str) -> bool:
        """Whether this backend has ``capability``."""
        return Capability(capability) in self.capabilities

    def require(self, capability: Capability | str, analysis: str) -> None:
        """Raise unless this backend has ``capability``; call it before any work.

        Args:
            capability: a :class:`Capability` (or its value, e.g. ``"gradients"``).
            analysis: what needs it, for the message (e.g. ``"attribution patching"``).

        Raises:
            CapabilityError: the backend lacks the capability (the message names it, the backend and what to do).
            ValueError: ``capability`` is not a :class:`Capability` value.
        """
        cap = Capability(capability)
        if cap in self.capabilities:
            return
        backend = self.info.backend
        raise CapabilityError(
            cap,
            f"{analysis} needs the {cap.value!r} capability ({cap.description}), which the {backend!r} backend "
            f"({type(self).__name__}) does not have; load the model with attnlab.load_model(name, "
            f"backend='transformer_lens'), which has every capability",
            backend=backend,
        )

    def edge_runner(self) -> EdgeRunner:
        """This backend's runner of receiver-split edge passes (:mod:`attnlab.backends.edges`).

        Raises:
            CapabilityError: the backend lacks :attr:`Capability.EDGE_GRAPH`, or the model's attention has a layout
                its runner does not support.
        """
        self.require(Capability.EDGE_GRAPH, "edge-level circuit analyses")
        raise NotImplementedError(f"{type(self).__name__} declares {Capability.EDGE_GRAPH.value!r} but does not "
                                  "implement edge_runner()")

    # -- tokenisation ---------------------------------------------------------------------------------------------
    @abstractmethod
    def to_tokens(self, texts: Sequence[str], prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        """Tokenise ``texts`` (which must tokenise to equal lengths) into a [batch, pos] LongTensor.

        Raises:
            TokenizationError: the texts tokenise to different lengths.
        """

    @abstractmethod
    def to_str_tokens(self, tokens: Int[Tensor, " pos"]) -> list[str]:
        """Decode each token of a 1-D token tensor separately (for labels)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""

    def single_token_id(self, word: str) -> int:
        """The id of ``word`` if it is exactly one token (leading space included), else raise.

        Raises:
            TokenizationError: ``word`` is not a single token in this model's tokenizer.
        """
        ids = self.encode(word)
        if len(ids) != 1:
            raise TokenizationError(
                f"{word!r} is {len(ids)} tokens in {self.info.name}'s tokenizer, expected exactly 1; "
                "choose words that are single tokens (with their leading space)"
            )
        return ids[0]

    # -- execution ------------------------------------------------------------------------------------------------
    @abstractmethod
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
        """Run the model once, recording and overwriting activations.

        Args:
            tokens: Int[batch, pos] input ids; required when ``start_layer`` is 0.
            resid: Float[batch, pos, d_model] residual stream entering block ``start_layer``; required when
                ``start_layer`` > 0 (the blocks before it are not recomputed). ``tokens`` may still be given for
                backends that need positions or masks.
            start_layer: first block to run.
            stop_layer: stop before this block and return the residual stream instead of logits.
            cache: sites whose activations to record (blocks before ``start_layer`` cannot be recorded).
            interventions: activation overwrites, applied in the order given.
            logits_at: Int[batch] one position per row: return logits only there ([batch, d_vocab]), skipping the
                unembedding of every other position.
            grad: keep the autograd graph (for attribution patching); otherwise runs under ``torch.no_grad``.
            reduce: compute this built-in metric where the model runs and return it as ``RunOutput.metric``
                (Float[batch]) instead of the logits; needs ``logits_at``.
            prefix: run a suffix pass (``Capability.PREFIX_REUSE``): ``tokens``/``resid`` hold the positions after
                ``prefix.length``, which attend to the prefix's keys and values for the positions before, at their
                true positions; ``logits_at``, sites and interventions index the suffix.
            record_kv: also return every block's attention keys and values (``RunOutput.kv``;
                ``Capability.PREFIX_REUSE``).

        Returns:
            A :class:`RunOutput`.

        Raises:
            SiteError: a site or intervention outside the model.
            BackendError: ``reduce`` without ``logits_at``, or with ``stop_layer``; a prefix that does not fit the
                pass.
            CapabilityError: ``prefix`` or ``record_kv`` on a backend without ``Capability.PREFIX_REUSE``.
        """

    def run_many(self, specs: Iterable[RunSpec]) -> Iterator[tuple[object, RunOutput]]:
        """Run many passes, yielding ``(spec.key, output)`` in order as each finishes.

        The default runs them one by one (lazily: a spec is materialised only when its turn comes). Remote backends
        override this to send many passes as one job.
        """
        for spec in specs:
            yield spec.key, self.run(**spec.run_kwargs())

    # -- helpers shared by backends -------------------------------------------------------------------------------
    def check_run(
        self,
        tokens: Tensor | None,
        resid: Tensor | None,
        start_layer: int,
        stop_layer: int | None,
        cache: Iterable[Site],
        interventions: Sequence[Intervention],
        reduce: "Reduction | None" = None,
        logits_at: Tensor | None = None,
    ) -> tuple[int, list[Site]]:
        """Validate the arguments of :meth:`run` before any work; return (end block, the sites to record).

        Raises:
            SiteError: blocks out of range, or a site/intervention outside the blocks the run covers.
            BackendError: missing ``tokens``/``resid``.
        """
        self.check_layer(start_layer, name="start_layer")
        if stop_layer is not None:
            self.check_layer(stop_layer, name="stop_layer", allow_end=True)
            if stop_layer <= start_layer:
                raise SiteError(f"'stop_layer' must be greater than start_layer={start_layer} (got {stop_layer})")
        if start_layer > 0 and resid is None:
            raise BackendError("start_layer > 0 needs the residual stream entering that block: pass resid=")
        if start_layer == 0 and tokens is None and resid is None:
            raise BackendError("pass tokens= (or resid= with start_layer)")
        if reduce is not None and (logits_at is None or stop_layer is not None):
            raise BackendError("reduce= computes a metric at one position per row: it needs logits_at= and a run "
                               "to the logits (no stop_layer)")
        end = stop_layer if stop_layer is not None else self.info.n_layers
        sites = list(cache)
        for site in sites:
            self.check_site(site)
            if not start_layer <= site.layer < end:
                raise SiteError(f"cannot record {site.name}: this run covers blocks [{start_layer}, {end})")
        for iv in interventions:
            if not start_layer <= iv.layer < end:
                raise SiteError(f"cannot intervene at block {iv.layer}: this run covers blocks [{start_layer}, {end})")
        return end, sites

    def check_prefix(self, prefix: "KVPrefix | None", record_kv: bool, tokens: Tensor | None, resid: Tensor | None,
                     start_layer: int, stop_layer: int | None, grad: bool) -> None:
        """Validate the ``prefix`` and ``record_kv`` arguments of :meth:`run` before any work.

        Raises:
            CapabilityError: this backend lacks ``Capability.PREFIX_REUSE``.
            BackendError: a prefix that does not hold every block the pass runs, whose batch differs from the
                pass's, that makes the sequence longer than the model's context, or combined with ``stop_layer``
                or ``grad``; ``record_kv`` with ``start_layer``, ``stop_layer`` or ``grad``.
        """
        if prefix is None and not record_kv:
            return
        self.require(Capability.PREFIX_REUSE, "suffix passes over a recorded key/value prefix")
        if record_kv and (start_layer > 0 or stop_layer is not None or grad or prefix is not None):
            raise BackendError("record_kv=True records every block's keys and values: it needs a full run from the "
                               "tokens (no start_layer, stop_layer, grad or prefix)")
        if prefix is None:
            return
        if stop_layer is not None or grad:
            raise BackendError("a suffix pass (prefix=) runs to the logits without gradients: no stop_layer or grad")
        if len(prefix.keys) != self.info.n_layers or len(prefix.values) != self.info.n_layers:
            raise BackendError(f"the key/value prefix must have one entry per block ({self.info.n_layers}); got "
                               f"{len(prefix.keys)}")
        if prefix.start_layer > start_layer:
            raise BackendError(f"the key/value prefix is read from block {prefix.start_layer} on; this pass starts at "
                               f"block {start_layer}: it must hold every block from start_layer={start_layer} on")
        x = resid if start_layer > 0 else tokens
        if x is None:
            raise BackendError("a suffix pass needs the suffix's tokens (or resid= with start_layer)")
        if prefix.batch != x.shape[0]:
            raise BackendError(f"the key/value prefix has {prefix.batch} rows; the pass has {x.shape[0]}")
        if prefix.length + x.shape[1] > self.info.n_ctx:
            raise BackendError(f"prefix ({prefix.length}) plus suffix ({x.shape[1]}) positions exceed the model's "
                               f"context of {self.info.n_ctx}")

    def check_site(self, site: Site) -> Site:
        """Validate ``site`` against this model's dimensions (see :meth:`Site.validate`).

        Raises:
            SiteError: out of range, or an MLP site on an attention-only model.
        """
        if site.kind in (SiteKind.MLP_OUT, SiteKind.RESID_MID) and not self.info.has_mlp:
            raise SiteError(f"{self.info.name} is attention-only: it has no {site.kind.value!r} activation")
        return site.validate(self.info.n_layers, self.info.n_heads, self.info.n_kv_heads)

    def check_layer(self, layer: int, *, name: str = "layer", allow_end: bool = False) -> int:
        """Validate a block index.

        Raises:
            SiteError: ``layer`` not in [0, n_layers) (or [0, n_layers] with ``allow_end``).
        """
        hi = self.info.n_layers + (1 if allow_end else 0)
        if not isinstance(layer, int) or not 0 <= layer < hi:
            raise SiteError(f"'{name}' must be in [0, {hi}) (got {layer!r})")
        return layer

    # -- weights --------------------------------------------------------------------------------------------------
    def weights(self) -> ModelWeights:
        """The weights weight-reading analyses need (direct logit attribution, the logit lens), read once and kept.

        Raises:
            CapabilityError: this backend cannot give the weights (e.g. a remote model: they stay on the server).
        """
        self.require(Capability.WEIGHTS, "reading the model's weights (W_O, W_U, the final norm)")
        raise NotImplementedError(f"{type(self).__name__} declares Capability.WEIGHTS but does not implement weights()")

    @property
    def name(self) -> str:
        """The name the model was loaded by."""
        return self.info.name

    def __repr__(self) -> str:
        i = self.info
        return (
            f"<{type(self).__name__} {i.name!r}: {i.n_layers} layers, {i.n_heads} heads"
            f" ({i.n_kv_heads} key/value), d_model {i.d_model}>"
        )


def final_norm_params(norm: torch.nn.Module) -> dict:
    """The :class:`ModelWeights` fields of a final-norm module (torch ``LayerNorm``, Hugging Face ``*RMSNorm``):
    ``norm_weight``, ``norm_bias``, ``norm_eps``, ``norm_centred``.

    Raises:
        BackendError: the module has no ``weight`` (a norm this reader does not know).
    """
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, Tensor):
        raise BackendError(f"cannot read the final norm's weights from {type(norm).__name__}")
    eps = getattr(norm, "variance_epsilon", None)
    eps = getattr(norm, "eps", 1e-5) if eps is None else eps
    bias = getattr(norm, "bias", None)
    return {"norm_weight": weight.detach().float(), "norm_bias": None if bias is None else bias.detach().float(),
            "norm_eps": float(eps), "norm_centred": "RMS" not in type(norm).__name__}


def stack_tokens(rows: list[list[int]]) -> Tensor:
    """Stack equal-length token id lists into a LongTensor, or raise a TokenizationError naming the lengths."""
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise TokenizationError(
            f"texts tokenise to different lengths {lengths}; a batch needs equal lengths (token-aligned prompts)"
        )
    return torch.tensor(rows, dtype=torch.long)
