"""Receiver-split edge passes on nnsight, locally and on a remote server (the
:class:`~attnlab.backends.edges.EdgeRunner` of :class:`~attnlab.backends.nnsight.NNsightBackend`).

How the split is done (the same receivers as :mod:`attnlab.backends.transformer_lens_graph`, at nnsight's sites):
    One ``model.trace(tokens)`` per pass, whose body is :func:`attnlab.backends._nnsight_ops.edge_pass`: at each
    block's input (the residual stream entering it) the callbacks' ``resid_pre`` answer is set as the block's input;
    for each of ``"q"``, ``"k"``, ``"v"`` the per-head inputs ``x_h`` they give replace the projection's output
    (``q_proj`` / ``k_proj`` / ``v_proj``: before the rotary embeddings, as nnsight's q/k/v sites are) by
    ``norm(x_h) W^h + b^h``, computed with the block's own pre-attention norm module (called through its envoy) and
    that head's rows of the projection's weight (and bias, if any). Head outputs ``z_h W_O^h`` (no output bias) come
    from the output projection's input, viewed per head. The MLP input is replaced at the post-attention norm's input
    (the residual branch keeps reading the uncorrected stream, as at TransformerLens's ``ln2.hook_in``), the MLP
    output read at the MLP's output, and the logits input replaced at the final norm's input, narrowed to
    ``logits_at`` there. With callbacks that change nothing this is the model's own forward pass.

Local and remote:
    The callbacks are :class:`attnlab.edge_ops.EdgeAblation` objects and the pass is a function of
    :mod:`attnlab.backends._nnsight_ops`: both torch-only modules that the backend ships by value, so the same pass
    runs on a server. A *program* (:meth:`NNsightEdgeRunner.program`: EAP, EAP-IG, circuit evaluation) runs in one
    ``model.session()``: locally here, remotely as one job in which the server makes every pass, takes the gradients
    (autograd is on on NDIF workers; their parameters are frozen, so only the receiver inputs the callbacks mark
    need gradients) and reduces them, so that only scores or metric values travel back. Single passes with arbitrary
    Python callbacks (:meth:`NNsightEdgeRunner.run`: ACDC, path patching) run locally only
    (``Capability.EDGE_GRAPH``); a remote model has ``Capability.EDGE_PROGRAMS``. Remote programs take built-in
    metrics (:mod:`attnlab.metric_ops`); a metric of your own runs locally.

Supported attention: separate q/k/v/o linear projections with a pre-attention norm module (the Llama family:
Llama, Mistral, Qwen, SmolLM2). GPT-2's fused ``c_attn`` raises :class:`~attnlab.errors.CapabilityError` when the
runner is built.
"""

import functools

import nnsight
import torch
from jaxtyping import Int
from torch import Tensor

from attnlab import edge_ops, metric_ops
from attnlab.backends import _nnsight_ops, nnsight_adapter
from attnlab.backends.base import Capability
from attnlab.backends.edges import EdgeCallbacks, EdgeRunner
from attnlab.errors import CapabilityError, MetricError

__all__ = ["NNsightEdgeRunner"]

#: the programs that differentiate (run with autograd on)
_GRAD_PROGRAMS = frozenset({"eap"})
# what a remote job's progress bar calls each program of attnlab.edge_ops
_PROGRAM_LABELS = {"evaluate_circuits": "circuit evaluation", "ablation_source": "mean ablation values",
                   "sender_outputs": "sender outputs"}


def _path(obj, path: str):
    return functools.reduce(getattr, path.split("."), obj)


class NNsightEdgeRunner(EdgeRunner):
    """Runs receiver-split passes and edge-level programs through an nnsight model (see the module docstring).

    Args:
        backend: an :class:`~attnlab.backends.nnsight.NNsightBackend` (local, simulated or remote).

    Raises:
        CapabilityError: fused q/k/v projections (GPT-2's ``c_attn``), or a block whose projections do not have the
            shapes the model's dimensions imply.
    """

    def __init__(self, backend) -> None:
        self.backend = backend
        self.info = info = backend.info
        self.nn = backend.nn
        family = backend.family
        if family.qkv is not None or family.ln_attn is None:
            raise CapabilityError(
                Capability.EDGE_GRAPH,
                f"{info.name} ({info.family}) computes q, k and v with one fused projection "
                f"({family.qkv!r}); the nnsight backend's edge passes need separate q/k/v projections (Llama-family "
                "models). Load it with backend='transformer_lens' for edge-level analyses",
                backend=info.backend)
        hf_layers = _path(backend.nn._module, family.layers)  # meta tensors on a remote model: shapes only
        for layer in range(info.n_layers):
            self._check_shapes(_path(hf_layers[layer], family.attn), family, layer)
        self.sites = {
            "layers": [{**e, "ln": _path(e["block"], family.ln_attn)} for e in backend._envoys],
            "final_norm": backend._final_norm,
            "unembed": backend._unembed,
        }
        self.dims = (info.n_layers, info.n_heads, info.n_kv_heads, info.d_head)

    def _check_shapes(self, attn, family, layer: int) -> None:
        H, G, dh, D = self.info.n_heads, self.info.n_kv_heads, self.info.d_head, self.info.d_model
        for what, path, shape in (("q projection", family.q, (H * dh, D)), ("k projection", family.k, (G * dh, D)),
                                  ("v projection", family.v, (G * dh, D)), ("output projection", family.o_proj,
                                                                             (D, H * dh))):
            weight = _path(attn, path).weight
            if tuple(weight.shape) != shape:
                raise CapabilityError(Capability.EDGE_GRAPH, f"{self.info.name}: block {layer}'s {what} has weight "
                                      f"shape {tuple(weight.shape)}, expected {shape}; edge passes support separate "
                                      "q/k/v/o linear projections only", backend=self.info.backend)

    # -- one pass (local models) ----------------------------------------------------------------------------------
    def run(
        self,
        tokens: Int[Tensor, "rows pos"],
        callbacks: EdgeCallbacks,
        *,
        logits_at: Int[Tensor, " rows"] | None = None,
        grad: bool = False,
    ) -> Tensor:
        """One pass with ``callbacks`` (any Python object) inside the trace: local models only.

        Raises:
            CapabilityError: a remote model (or ``remote="local"``): a server cannot call this process's callbacks;
                the analyses that run as programs (EAP, EAP-IG, faithfulness) run there.
        """
        self.backend.require(Capability.EDGE_GRAPH, "single receiver-split passes (ACDC, path patching, "
                             "GraphRunner.run)")
        sites, dims = self.sites, self.dims
        with torch.enable_grad() if grad else torch.no_grad(), self.nn.trace(tokens.long()):
            logits = nnsight.save(_nnsight_ops.edge_pass(sites, callbacks, logits_at, dims))
        return logits

    # -- whole programs (local and remote) ------------------------------------------------------------------------
    def program(self, name: str, args: dict, *, progress=None):
        """Run the program ``name`` of :mod:`attnlab.edge_ops` in one nnsight session: here for a local model, as one
        job on the server for a remote one (progress then follows the job).

        Raises:
            MetricError: a remote model and a metric that is not built in (it would have to run on the server).
        """
        getattr(edge_ops, name)  # an unknown program fails here, before any work
        args = dict(args)
        metric = args.pop("metric", None)
        remote = self.backend.remote is not False
        if metric is not None:
            if remote and not getattr(metric, "builtin", False):
                raise MetricError(f"{self.info.name} runs remotely: edge-level analyses there take a built-in metric "
                                  f"({sorted(metric_ops.BUILTIN)}), which the server computes; the metric "
                                  f"{getattr(metric, 'name', metric)!r} is attnlab code that exists only here. Run "
                                  "it on a local model (backend='nnsight' or 'transformer_lens')")
            if remote:
                args["metric_name"] = metric.name
            else:
                args["metric"] = metric
        if not remote:
            with torch.enable_grad() if name in _GRAD_PROGRAMS else torch.no_grad():
                return self._session(name, args, None, progress)
        if self.backend._jobs is None:  # remote="local": nnsight's in-process simulation of the remote path
            return self._session(name, args, nnsight_adapter.local_simulation(self.nn), None)
        what = _PROGRAM_LABELS.get(name, name)
        if name == "eap":
            what = "EAP-IG" if args.get("n_steps", 1) > 1 else "EAP"
        return self.backend._jobs.run_session(lambda nn_backend: self._session(name, args, nn_backend, None),
                                              f"{what} on {self.info.name} (one job)")

    def _session(self, name: str, args: dict, backend, progress):
        """The session block a server re-executes: it may call only torch, functools and the shipped modules
        (:mod:`attnlab.edge_ops`, :mod:`attnlab.metric_ops`, :mod:`attnlab.backends._nnsight_ops`)."""
        model, sites, dims = self.nn, self.sites, self.dims
        eops, mops, ops = edge_ops, metric_ops, _nnsight_ops
        results = None  # the name a non-blocking job's result is read back under (attnlab.remote.jobs)
        with model.session(backend=backend):
            if "metric_name" in args:
                args["metric"] = functools.partial(mops.evaluate, args.pop("metric_name"))

            def run_pass(tokens, cb, logits_at, grad):
                with model.trace(tokens):
                    logits = ops.edge_pass(sites, cb, logits_at, dims)
                if progress is not None:
                    progress.update(1)
                return logits

            results = getattr(eops, name)(run_pass, **args)
            nnsight.save(results)
        return results
