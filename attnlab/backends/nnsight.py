"""The nnsight backend: the same analyses on a local Hugging Face model or on a model served by NDIF.

nnsight (Fiotto-Kaufman et al. 2024, "NNsight and NDIF: Democratizing Access to Foundation Model Internals",
arXiv 2407.14561) wraps a Hugging Face model so that a ``with model.trace(tokens):`` block can read and overwrite
the inputs and outputs of any submodule. The block's *source* is captured; locally it runs interleaved with the
forward pass, remotely it is serialised and re-executed by an NDIF server next to a model that never leaves it.

Sites map to module paths per architecture family (:data:`FAMILIES`):

=============  ==========================================  =========================================
kind           Llama / Mistral / Qwen / SmolLM              GPT-2
=============  ==========================================  =========================================
resid_pre      input of ``model.layers[L]``                 input of ``transformer.h[L]``
z              input of ``self_attn.o_proj``, viewed        input of ``attn.c_proj``, viewed
               ``[batch, pos, n_heads, d_head]``            ``[batch, pos, n_heads, d_head]``
q, k, v        outputs of ``q_proj``/``k_proj``/``v_proj``  thirds of ``attn.c_attn``'s output
               (before rotary embeddings)
pattern        second output of ``self_attn`` (eager)       second output of ``attn`` (eager)
attn_out       first output of ``self_attn``                first output of ``attn``
resid_mid      input of ``post_attention_layernorm``        input of ``ln_2``
mlp_out        output of ``mlp``                            output of ``mlp``
resid_post     output of ``model.layers[L]``                output of ``transformer.h[L]``
=============  ==========================================  =========================================

Grouped-query attention needs nothing special for ``z``: ``o_proj`` reads one ``d_head`` slice per *query* head,
so a head's output is its slice whatever key/value head it shares; ``k`` and ``v`` have ``n_kv_heads`` heads.

Interventions overwrite activations in place, so every alias of the tensor sees the new values (in a pre-norm block
the residual branch and the norm read the same tensor). In transformers 5 decoder blocks return a plain tensor, so
``block.output`` *is* the residual stream (the old ``.output[0]`` idiom would take batch row 0).

Capabilities: every nnsight model records and patches (``Capability.PATCHING``) and runs the edge-level programs
of :mod:`attnlab.edge_ops` (``Capability.EDGE_PROGRAMS``: EAP, EAP-IG, circuit evaluation and faithfulness; remotely
each analysis is one job, its gradients taken on the server). A local model (``remote=False``)
also has ``GRADIENTS``, ``WEIGHTS`` and ``EDGE_GRAPH`` (:attr:`NNsightBackend.LOCAL_CAPABILITIES`): the trace body
runs in this process, so values saved in it keep their autograd graph when the trace runs with autograd on
(``run(..., grad=True)``: an activation that gets an intervention is cloned and the patched clone set back at its
site, except ``resid_mid``, patched in place because the residual branch reads the same tensor; recordings are the
tensors on the forward path, not copies), the weights are here, and the receiver-split edge passes of
:mod:`attnlab.backends.nnsight_graph` can call attnlab's Python callbacks inside the trace (Llama-family layouts;
GPT-2's fused ``c_attn`` is refused). A remote model (or ``remote="local"``, which simulates one) has
``PATCHING`` and ``EDGE_PROGRAMS`` only; the other capabilities raise :class:`~attnlab.errors.CapabilityError`
before any work.

Many passes, one job: :meth:`NNsightBackend.run_many` puts many :class:`~attnlab.backends.base.RunSpec` passes into
one ``model.session()`` holding one ``model.trace()`` per pass. Locally each pass is its own session (results stream
as they finish). Remotely a session is one NDIF job; passes are grouped into chunks by a size budget (request and
result bytes), each chunk one job, and finished passes are kept (see :mod:`attnlab.remote.jobs`) so that a failed
sweep, run again, resumes where it stopped.
"""

import functools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import nnsight
import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab import edge_ops, metric_ops
from attnlab.backends import _nnsight_ops, nnsight_adapter
from attnlab.backends.base import (
    Backend,
    Capability,
    Intervention,
    KVPrefix,
    ModelInfo,
    ModelWeights,
    Reduction,
    RunOutput,
    RunSpec,
    final_norm_params,
    stack_tokens,
)
from attnlab.errors import BackendError, CapabilityError, ModelNotAvailableError, TokenizationError
from attnlab.sites import Site, SiteKind

__all__ = ["FAMILIES", "Family", "NNsightBackend", "family_of"]

nnsight_adapter.check_version()
# Functions called inside trace blocks must exist on the server, which has no attnlab: ship them by value.
nnsight.register(_nnsight_ops)
nnsight.register(metric_ops)
nnsight.register(edge_ops)


@dataclass(frozen=True)
class Family:
    """Where each activation lives in one architecture family (module paths relative to the model or a block).

    Attributes:
        layers: path of the block list from the model root.
        attn, o_proj, mlp, ln_mid: paths inside a block (``o_proj`` inside ``attn``).
        ln_attn: the pre-attention norm inside a block (what q/k/v read; edge passes recompute it per head).
        q, k, v: projection paths inside ``attn`` (None when fused into ``qkv``).
        qkv: fused projection inside ``attn`` whose output splits into q, k, v thirds (GPT-2's ``c_attn``).
        final_norm: path of the final norm from the root; unembed: path of the unembedding.
    """

    layers: str
    attn: str
    o_proj: str
    mlp: str
    ln_mid: str
    final_norm: str
    unembed: str
    ln_attn: str | None = None
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None


_LLAMA = Family(layers="model.layers", attn="self_attn", o_proj="o_proj", mlp="mlp", ln_mid="post_attention_layernorm",
                final_norm="model.norm", unembed="lm_head", ln_attn="input_layernorm", q="q_proj", k="k_proj",
                v="v_proj")
_GPT2 = Family(layers="transformer.h", attn="attn", o_proj="c_proj", mlp="mlp", ln_mid="ln_2",
               final_norm="transformer.ln_f", unembed="lm_head", ln_attn="ln_1", qkv="c_attn")

#: Hugging Face ``model_type`` -> module layout.
FAMILIES: dict[str, Family] = {"llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "gpt2": _GPT2}


def family_of(model_type: str) -> Family:
    """The :class:`Family` of a Hugging Face ``model_type``.

    Raises:
        ModelNotAvailableError: an architecture whose module layout attnlab does not know.
    """
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ModelNotAvailableError(
            f"the nnsight backend does not know the module layout of {model_type!r} models; supported: "
            f"{sorted(FAMILIES)}. Use backend='transformer_lens' locally, or add a Family to FAMILIES"
        ) from None


def _path(envoy, path: str):
    return functools.reduce(getattr, path.split("."), envoy)


def model_info_from_config(config, *, name: str, source: str, family: str) -> ModelInfo:
    """A :class:`ModelInfo` from a Hugging Face config (Llama-style or GPT-2-style attribute names)."""
    get = lambda *names, default=None: next((getattr(config, n) for n in names  # noqa: E731
                                             if getattr(config, n, None) is not None), default)
    d_model = get("hidden_size", "n_embd")
    n_heads = get("num_attention_heads", "n_head")
    return ModelInfo(
        name=name,
        n_layers=get("num_hidden_layers", "n_layer"),
        n_heads=n_heads,
        n_kv_heads=get("num_key_value_heads", default=n_heads),
        d_model=d_model,
        d_head=get("head_dim", default=d_model // n_heads),
        d_mlp=get("intermediate_size", "n_inner", default=4 * d_model),
        d_vocab=get("vocab_size"),
        n_ctx=get("max_position_embeddings", "n_positions", default=2048),
        backend="nnsight",
        family=family,
        prepend_bos=True,
        source=source,
    )


@dataclass(frozen=True)
class PlannedPass:
    """One validated pass: its wire form, which is all that reaches the trace block (here or on a server), and the
    :class:`~attnlab.sites.Site` objects its recordings map back to (they stay here).

    Attributes:
        wire: the :class:`attnlab.backends._nnsight_ops.WirePass`.
        sites: the recorded sites; the recording ``wire.records[...].index == i`` is ``sites[i]``.
    """

    wire: _nnsight_ops.WirePass
    sites: tuple[Site, ...]

    def starting_at(self, layer: int, resid: Tensor, repeat: int) -> "PlannedPass":
        """The same pass started at block ``layer`` from ``resid`` (Float[base_batch, pos, d_model], repeated
        ``repeat`` times on the server), so the blocks before it are skipped and the base rows travel once."""
        kv = self.wire.kv
        if kv is not None:  # the prefix is read from the new start block on
            kv = kv[:3] + (layer,) + kv[4:]
        return PlannedPass(self.wire._replace(start=layer, resid=resid.detach(), repeat=repeat, lo=0, kv=kv),
                           self.sites)


class NNsightBackend(Backend):
    """A Hugging Face causal LM run through nnsight, locally or on a remote NDIF-protocol server.

    Args:
        model: an ``nnsight.TransformersModel``.
        info: the model's :class:`ModelInfo`.
        tokenizer: its Hugging Face tokenizer.
        remote: ``False`` (run here), ``"local"`` (serialise and re-execute in-process: nnsight's simulation of the
            remote path), or a :class:`attnlab.remote.jobs.RemoteOptions` (run on a server).
    """

    #: every nnsight model records and patches, and runs edge-level programs (EAP, EAP-IG, faithfulness: on a server
    #: as one job); a local one (``remote=False``) also has :data:`LOCAL_CAPABILITIES`
    #: (set per instance): gradients and edge passes run the trace body in this process, and the weights are here
    capabilities = frozenset({Capability.PATCHING, Capability.EDGE_PROGRAMS, Capability.PREFIX_REUSE})
    #: what a local model adds to :attr:`capabilities`
    LOCAL_CAPABILITIES = frozenset({Capability.GRADIENTS, Capability.WEIGHTS, Capability.EDGE_GRAPH})

    def __init__(self, model, info: ModelInfo, tokenizer, remote=False) -> None:
        self.nn = model
        self.info = info
        self.tokenizer = tokenizer
        self.remote = remote
        if remote is False:
            self.capabilities = self.capabilities | self.LOCAL_CAPABILITIES
        self.family = family_of(info.family)
        self.attn_implementation = getattr(model._module.config, "_attn_implementation", None)
        f = self.family
        layers = _path(model, f.layers)
        self._envoys = []
        for i in range(info.n_layers):
            block = layers[i]
            attn = _path(block, f.attn)
            e = {"block": block, "attn": attn, "o": _path(attn, f.o_proj), "mlp": _path(block, f.mlp),
                 "mid": _path(block, f.ln_mid)}
            if f.qkv is not None:
                e["qkv"] = _path(attn, f.qkv)
            else:
                e.update(q=_path(attn, f.q), k=_path(attn, f.k), v=_path(attn, f.v))
            self._envoys.append(e)
        self._final_norm = _path(model, f.final_norm)
        self._unembed = _path(model, f.unembed)
        self._jobs = None
        if remote not in (False, "local"):
            from attnlab.remote.jobs import JobRunner

            self._jobs = JobRunner(self, remote)

    @property
    def job_ids(self) -> list[str]:
        """Ids of the remote jobs this model has sent, oldest first (empty when it runs locally)."""
        return list(self._jobs.job_ids) if self._jobs is not None else []

    @property
    def passes_kept(self) -> int:
        """Finished remote passes kept for resuming a failed analysis (0 locally)."""
        return len(self._jobs.kept) if self._jobs is not None else 0

    # -- capabilities ---------------------------------------------------------------------------------------------
    def edge_runner(self):
        """A :class:`~attnlab.backends.nnsight_graph.NNsightEdgeRunner` over this model: single passes locally,
        whole programs (EAP, EAP-IG, circuit evaluation) locally and remotely.

        Raises:
            CapabilityError: an attention layout the runner does not support (GPT-2's fused ``c_attn``).
        """
        from attnlab.backends.nnsight_graph import NNsightEdgeRunner

        self.require(Capability.EDGE_PROGRAMS, "edge-level circuit analyses")
        return NNsightEdgeRunner(self)

    def require(self, capability: Capability | str, analysis: str) -> None:
        """As :meth:`Backend.require`; a remote model's missing local-only capabilities get their own explanation."""
        cap = Capability(capability)
        if cap in self.capabilities or self.remote is False:
            super().require(cap, analysis)
            return
        if cap is Capability.EDGE_GRAPH:
            raise CapabilityError(cap, f"{analysis} makes single receiver-split passes with attnlab's Python callbacks "
                                       f"inside the trace, which only a local model can run; {self.info.name} runs "
                                       "remotely (or simulates it). Edge attribution (eap_scores: EAP, EAP-IG) and "
                                       "circuit evaluation (faithfulness, faithfulness_curve, circuit_metrics) run "
                                       "remotely as one job each; run this analysis on a local model",
                                  backend=self.info.backend)
        if cap is Capability.WEIGHTS:
            raise CapabilityError(cap, f"{analysis} needs the model's weights, but {self.info.name} runs remotely "
                                       "(or simulates it): its weights stay on the server; run this analysis on a "
                                       "local copy of the model", backend=self.info.backend)
        if cap in self.LOCAL_CAPABILITIES:
            raise CapabilityError(cap, f"{analysis} needs the {cap.value!r} capability ({cap.description}), which "
                                       f"the nnsight backend has for local models only; {self.info.name} runs "
                                       "remotely (or simulates it). Load the model with attnlab.load_model(name, "
                                       "backend='nnsight') or backend='transformer_lens' to run it here",
                                  backend=self.info.backend)
        super().require(cap, analysis)

    def weights(self) -> ModelWeights:
        """W_O, W_U and the final norm, read from the local Hugging Face module's parameters once (family paths).

        ``W_O[l, h]`` is head h's ``d_head`` rows of the output projection's input side: ``o_proj.weight.T`` (a
        ``Linear`` stores [d_model, n_heads * d_head]) or GPT-2's ``Conv1D`` ``c_proj.weight`` as stored
        ([n_heads * d_head, d_model]), viewed [n_heads, d_head, d_model]. ``W_U`` is ``lm_head.weight.T``. ``W_Q``,
        ``W_K``, ``W_V`` and the pre-attention norm's gain are read as stored (:meth:`_attention_weights`).

        Raises:
            BackendError: a remote model (also ``remote="local"``, which simulates one): the weights stay on the
                server; or a module layout this reader does not know.
        """
        cached = getattr(self, "_weights_cache", None)
        if cached is not None:
            return cached
        self.require(Capability.WEIGHTS, "reading the model's weights (W_O, W_U, the final norm: direct logit "
                     "attribution, the logit lens, copying scores)")
        hf, f, info = self.nn._module, self.family, self.info
        layers = _path(hf, f.layers)
        w_o = []
        for layer in range(info.n_layers):
            proj = _path(_path(layers[layer], f.attn), f.o_proj)
            w = proj.weight.detach()
            w = w.T if isinstance(proj, torch.nn.Linear) else w  # Conv1D stores [in, out]
            if w.shape != (info.n_heads * info.d_head, info.d_model):
                raise BackendError(f"layer {layer}'s output projection has shape {tuple(w.shape)}; expected "
                                   f"({info.n_heads * info.d_head}, {info.d_model}) (input, output)")
            w_o.append(w.reshape(info.n_heads, info.d_head, info.d_model))
        unembed = _path(hf, f.unembed)
        b_u = getattr(unembed, "bias", None)
        self._weights_cache = ModelWeights(
            W_O=torch.stack(w_o).float(), W_U=unembed.weight.detach().T.float(),
            b_U=None if b_u is None else b_u.detach().float(), **final_norm_params(_path(hf, f.final_norm)),
            **self._attention_weights(layers))
        return self._weights_cache

    def _attention_weights(self, layers) -> dict:
        """The :class:`ModelWeights` fields W_Q [layer, head_index, d_model, d_head], W_K and W_V [layer, kv_head,
        d_model, d_head], as stored (``q_proj``/``k_proj``/``v_proj`` weights transposed, or the thirds of GPT-2's
        ``Conv1D`` ``c_attn``, stored [d_model, 3 * d_model]), and each block's pre-attention norm gain.

        Raises:
            BackendError: a projection of an unexpected shape.
        """
        f, info = self.family, self.info
        d, dh = info.d_model, info.d_head
        out = {"W_Q": [], "W_K": [], "W_V": []}
        gains, centred = [], None
        for layer in range(info.n_layers):
            block = layers[layer]
            attn = _path(block, f.attn)
            if f.qkv is not None:
                w = _path(attn, f.qkv).weight.detach()  # Conv1D: [in, out]
                parts = dict(zip(("W_Q", "W_K", "W_V"), w.split(info.n_heads * dh, dim=1)))
            else:
                parts = {name: _path(attn, path).weight.detach().T  # Linear: [out, in]
                         for name, path in (("W_Q", f.q), ("W_K", f.k), ("W_V", f.v))}
            for name, w in parts.items():
                heads = info.n_heads if name == "W_Q" else info.n_kv_heads
                if w.shape != (d, heads * dh):
                    raise BackendError(f"layer {layer}'s {name[-1]} projection has shape {tuple(w.shape)}; expected "
                                       f"({d}, {heads * dh}) (input, output)")
                out[name].append(w.reshape(d, heads, dh).permute(1, 0, 2))
            norm = _path(block, f.ln_attn) if f.ln_attn is not None else None
            weight = getattr(norm, "weight", None)
            if gains is not None and isinstance(weight, torch.Tensor):
                gains.append(weight.detach().float())
                centred = "RMS" not in type(norm).__name__
            else:
                gains = None
        return {**{k: torch.stack(v).float() for k, v in out.items()},
                "attn_norm_weight": None if gains is None else torch.stack(gains),
                "attn_norm_centred": None if gains is None else centred}

    # -- tokenisation ---------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def to_tokens(self, texts: Sequence[str], prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
        tok = self.tokenizer
        if isinstance(texts, str):
            texts = [texts]
        bos = self.info.prepend_bos if prepend_bos is None else prepend_bos
        if bos and tok.bos_token_id is None:
            raise TokenizationError(f"model {self.info.name!r}'s tokenizer has no BOS token; use prepend_bos=False")
        rows = [([tok.bos_token_id] if bos else []) + self.encode(t) for t in texts]
        return stack_tokens(rows)

    def to_str_tokens(self, tokens: Int[Tensor, " pos"]) -> list[str]:
        return [self.tokenizer.decode([int(t)]) for t in tokens.reshape(-1)]

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
        pass_ = self._plan(tokens, resid=resid, start_layer=start_layer, stop_layer=stop_layer, cache=cache,
                           interventions=interventions, logits_at=logits_at, grad=grad, reduce=reduce,
                           prefix=prefix, record_kv=record_kv)
        if self._jobs is not None:
            return self._jobs.run_one(pass_)
        return self._outputs([pass_], self._execute([pass_]))[0]

    def run_many(self, specs: Iterable[RunSpec]) -> Iterator[tuple[object, RunOutput]]:
        """Run many passes: locally one by one as they are asked for; remotely many passes per job.

        A pass starts at ``spec.start_layer`` from the recorded residual stream: earlier blocks are skipped
        (``envoy.skip``), not computed. Remotely the request carries the *base* residual stream once per pass
        (``[batch, pos, d_model]``, repeated on the server) and the patch values, never a materialised repeated batch.
        """
        if self._jobs is not None:
            yield from self._jobs.run_many(specs)
            return
        for spec in specs:
            pass_ = self._plan(**spec.run_kwargs(use_start_layer=True))
            yield spec.key, self._outputs([pass_], self._execute([pass_]))[0]

    # -- internals ------------------------------------------------------------------------------------------------
    def _plan(self, tokens=None, *, resid=None, start_layer=0, stop_layer=None, cache=(), interventions=(),
              logits_at=None, grad=False, reduce=None, prefix=None, record_kv=False) -> "PlannedPass":
        """Validate one pass and describe it in its wire form (what a trace block, local or remote, reads)."""
        n_layers = self.info.n_layers
        if grad:
            self.require(Capability.GRADIENTS, "run(..., grad=True)")
        if tokens is None:
            raise BackendError("the nnsight backend runs from token ids: pass tokens= (with resid= and start_layer "
                               "to start at a later block)")
        end, sites = self.check_run(tokens, resid, start_layer, stop_layer, cache, interventions, reduce, logits_at)
        self.check_prefix(prefix, record_kv, tokens, resid, start_layer, stop_layer, grad)
        for site in sites:
            if site.kind is SiteKind.PATTERN and self.attn_implementation != "eager":
                raise BackendError(f"attention patterns need eager attention; this model runs "
                                   f"{self.attn_implementation!r} attention")
        patches: dict[int, list] = {}
        for iv in interventions:
            patches.setdefault(iv.layer, []).append(_nnsight_ops.PatchOp(
                iv.kind.value, iv.rows.long(), None if iv.positions is None else iv.positions.long(),
                None if iv.heads is None else iv.heads.long(), iv.values.detach()))
        records: dict[int, list] = {}
        for i, site in enumerate(sites):
            records.setdefault(site.layer, []).append(
                _nnsight_ops.RecordOp(i, site.kind.value, site.head, site.position))
        touched = set(patches) | set(records)
        if start_layer > 0:
            touched.add(start_layer - 1)
        wire = _nnsight_ops.WirePass(
            tokens=tokens.long(),
            start=start_layer,
            resid=None if start_layer == 0 else resid.detach(),
            repeat=1,
            stop=stop_layer if stop_layer is not None and stop_layer < n_layers else None,
            patches={layer: tuple(ops) for layer, ops in patches.items()},
            records={layer: tuple(ops) for layer, ops in records.items()},
            logits_at=None if logits_at is None else logits_at.long(),
            metric=None if reduce is None else _nnsight_ops.MetricOp(reduce.metric, reduce.answers.long(),
                                                                     reduce.reference),
            grad=bool(grad),
            lo=0 if start_layer > 0 else min(touched, default=0),
            hi=max(touched, default=-1) + 1,
            kv=None if prefix is None else (tuple(prefix.keys), tuple(prefix.values), prefix.length,
                                            prefix.start_layer, prefix.repeat_count),
            record_kv=bool(record_kv),
        )
        return PlannedPass(wire, tuple(sites))

    def _execute(self, passes: "list[PlannedPass]", backend=None):
        """:meth:`_execute_session`, quiet about transformers >= 5.24 renaming ``past_key_values`` (the name suffix
        passes use, which every transformers 5 release accepts) to ``cache``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
            return self._execute_session(passes, backend)

    def _execute_session(self, passes: "list[PlannedPass]", backend=None):
        """Run ``passes`` in one nnsight session (one trace per pass) and return the raw per-pass results.

        ``backend`` is None (run here) or an nnsight backend (remote job, local simulation). The block below is what
        a server re-executes: it may call only torch and :mod:`attnlab.backends._nnsight_ops`.
        """
        model = self.nn
        E = self._envoys
        final_norm, unembed = self._final_norm, self._unembed
        n_heads, n_kv = self.info.n_heads, self.info.n_kv_heads
        fused = self.family.qkv is not None
        ops, mops = _nnsight_ops, metric_ops
        # only the wire form travels (attnlab's Site objects do not exist on a server)
        jobs = [p.wire for p in passes]
        if backend is None and self.remote == "local":
            backend = nnsight_adapter.local_simulation(model)
        grad = any(p.grad for p in jobs)
        results = None
        with (torch.enable_grad() if grad else torch.no_grad()), model.session(backend=backend):
            results = []
            for p in jobs:
                kv_cache = ops.prefix_cache(p.kv) if (p.kv is not None or p.record_kv) else None
                trace_kwargs = {} if kv_cache is None else {"past_key_values": kv_cache}
                with model.trace(p.tokens, **trace_kwargs) as tracer:
                    recorded = {}
                    g = p.grad
                    if p.start > 0:
                        start_resid = p.resid if p.repeat == 1 else p.resid.repeat(p.repeat, 1, 1)
                    for L in range(p.lo, p.hi):
                        e = E[L]
                        if L < p.start:
                            e["block"].skip(start_resid)
                            continue
                        ivs = p.patches.get(L, ())
                        want = p.records.get(L, ())
                        kinds = {iv.kind for iv in ivs} | {w.kind for w in want}
                        if g:  # autograd kept: patched clones are set back at their sites (_nnsight_ops)
                            if "resid_pre" in kinds:
                                act = e["block"].input
                                new = ops.handle_grad(act, "resid_pre", ivs, want, recorded)
                                if new is not act:
                                    e["block"].input = new
                            if kinds & {"q", "k", "v"}:
                                if fused:
                                    qkv = e["qkv"].output
                                    q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
                                    q = ops.handle_grad(ops.split_heads(q, n_heads), "q", ivs, want, recorded)
                                    k = ops.handle_grad(ops.split_heads(k, n_kv), "k", ivs, want, recorded)
                                    v = ops.handle_grad(ops.split_heads(v, n_kv), "v", ivs, want, recorded)
                                    e["qkv"].output = torch.cat([q.flatten(2), k.flatten(2), v.flatten(2)], dim=-1)
                                else:  # each projection set back before the next one runs
                                    e["q"].output = ops.handle_grad(ops.split_heads(e["q"].output, n_heads), "q",
                                                                    ivs, want, recorded).flatten(2)
                                    e["k"].output = ops.handle_grad(ops.split_heads(e["k"].output, n_kv), "k",
                                                                    ivs, want, recorded).flatten(2)
                                    e["v"].output = ops.handle_grad(ops.split_heads(e["v"].output, n_kv), "v",
                                                                    ivs, want, recorded).flatten(2)
                            if "z" in kinds:
                                e["o"].input = ops.handle_grad(ops.split_heads(e["o"].input, n_heads), "z",
                                                               ivs, want, recorded).flatten(2)
                            if kinds & {"attn_out", "pattern"}:
                                attn_output = e["attn"].output
                                out0 = ops.handle_grad(attn_output[0], "attn_out", ivs, want, recorded)
                                if "pattern" in kinds:  # recorded only (no interventions on patterns)
                                    ops.handle_grad(attn_output[1], "pattern", ivs, want, recorded)
                                if out0 is not attn_output[0]:
                                    e["attn"].output = (out0,) + tuple(attn_output[1:])
                            if "resid_mid" in kinds:  # in place: the residual branch aliases the norm's input
                                ops.handle_grad(e["mid"].input, "resid_mid", ivs, want, recorded, True)
                            if "mlp_out" in kinds:
                                act = e["mlp"].output
                                new = ops.handle_grad(act, "mlp_out", ivs, want, recorded)
                                if new is not act:
                                    e["mlp"].output = new
                            if "resid_post" in kinds:
                                act = e["block"].output
                                new = ops.handle_grad(act, "resid_post", ivs, want, recorded)
                                if new is not act:
                                    e["block"].output = new
                            continue
                        acts = {}
                        if "resid_pre" in kinds:
                            acts["resid_pre"] = e["block"].input
                            ops.handle(acts["resid_pre"], "resid_pre", ivs, want, recorded)
                        if kinds & {"q", "k", "v"}:
                            if fused:
                                qkv = e["qkv"].output
                                q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
                            else:
                                q, k, v = e["q"].output, e["k"].output, e["v"].output
                            ops.handle(ops.split_heads(q, n_heads), "q", ivs, want, recorded)
                            ops.handle(ops.split_heads(k, n_kv), "k", ivs, want, recorded)
                            ops.handle(ops.split_heads(v, n_kv), "v", ivs, want, recorded)
                        if "z" in kinds:
                            ops.handle(ops.split_heads(e["o"].input, n_heads), "z", ivs, want, recorded)
                        if kinds & {"attn_out", "pattern"}:
                            attn_output = e["attn"].output
                            ops.handle(attn_output[0], "attn_out", ivs, want, recorded)
                            if "pattern" in kinds:
                                ops.handle(attn_output[1], "pattern", ivs, want, recorded)
                        if "resid_mid" in kinds:
                            ops.handle(e["mid"].input, "resid_mid", ivs, want, recorded)
                        if "mlp_out" in kinds:
                            ops.handle(e["mlp"].output, "mlp_out", ivs, want, recorded)
                        if "resid_post" in kinds:
                            ops.handle(e["block"].output, "resid_post", ivs, want, recorded)
                    out = {"cache": recorded, "logits": None, "resid": None}
                    if p.stop is not None:
                        out["resid"] = ops.output(E[p.stop]["block"].input, g)
                        results.append(out)
                        tracer.stop()
                    else:
                        if p.logits_at is not None:
                            h = final_norm.input
                            final_norm.input = h[torch.arange(h.shape[0]), p.logits_at].unsqueeze(1)
                        logits = unembed.output
                        if p.metric is not None:  # one number per row travels back, not d_vocab logits
                            m = p.metric
                            out["metric"] = ops.output(mops.evaluate(m.name, logits[:, 0], m.answers, m.reference), g)
                        elif p.logits_at is not None:
                            out["logits"] = ops.output(logits[:, 0], g)
                        else:
                            out["logits"] = ops.output(logits, g)
                        if p.record_kv:  # every block has run: the cache holds all their keys and values
                            out["kv"] = ops.cache_tensors(kv_cache)
                        results.append(out)
            nnsight.save(results)
        return results

    def _outputs(self, passes: "list[PlannedPass]", raw: list[dict]) -> list[RunOutput]:
        """Turn raw per-pass results back into :class:`RunOutput` objects keyed by :class:`Site`."""
        if raw is None or len(raw) != len(passes):
            raise BackendError(f"the nnsight session returned {0 if raw is None else len(raw)} results for "
                               f"{len(passes)} passes")
        outputs = []
        for p, r in zip(passes, raw):
            cache = {site: r["cache"][i] for i, site in enumerate(p.sites)}
            kv = r.get("kv")
            kv = None if kv is None else KVPrefix(tuple(kv[0]), tuple(kv[1]), int(p.wire.tokens.shape[1]))
            outputs.append(RunOutput(logits=r["logits"], cache=cache, resid=r["resid"], metric=r.get("metric"),
                                     kv=kv))
        return outputs


#: The Hugging Face id of the embedded model, as a server that deploys it lists it.
EMBEDDED_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
