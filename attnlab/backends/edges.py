"""Receiver-split edge passes: what a backend does for edge-level circuit analyses.

Context:
    Edge-level circuit discovery (ACDC, Conmy et al. 2023, arXiv 2304.14997; EAP, Syed et al. 2023, arXiv
    2310.10348) gives every receiver (each head's query, key and value input, each MLP's input, the logits) its own
    copy of the residual stream, from which chosen senders' contributions are removed. Because the pre-attention norm
    is nonlinear, a head's corrected input must pass through the norm and the head's own projection separately per
    head; no forward pass of the model as written does that.

The split of work:
    The *algebra* (which senders to remove from which receiver, with what values, and the autograd copies of the
    receiver inputs) is backend-independent and lives in :mod:`attnlab.circuits.graph` as an :class:`EdgeCallbacks`
    object. The *plumbing* (where the residual stream, the head outputs and the receiver inputs are in a given
    library, and how to recompute one head's q/k/v projection from its own input) is a backend's
    :class:`EdgeRunner`, returned by :meth:`attnlab.backends.base.Backend.edge_runner` for a backend with
    :attr:`~attnlab.backends.base.Capability.EDGE_GRAPH`. The runner calls the callbacks in execution order:

    for each block ``layer``: :meth:`EdgeCallbacks.resid_pre`, then :meth:`EdgeCallbacks.head_input` for
    ``"q"``, ``"k"``, ``"v"``, then :meth:`EdgeCallbacks.head_outputs`, then (models with MLPs)
    :meth:`EdgeCallbacks.mlp_input` and :meth:`EdgeCallbacks.mlp_output`; finally :meth:`EdgeCallbacks.logits_input`.

    With callbacks that change nothing the pass is the model's own forward pass.

Implementations: :mod:`attnlab.backends.transformer_lens_graph` (TransformerLens 4) and
:mod:`attnlab.backends.nnsight_graph` (local nnsight models, Llama family).
"""

from abc import ABC, abstractmethod
from typing import Protocol

from jaxtyping import Float, Int
from torch import Tensor

from attnlab import edge_ops

__all__ = ["EdgeCallbacks", "EdgeRunner"]


class EdgeCallbacks(Protocol):
    """The backend-independent side of a receiver-split pass (implemented by :mod:`attnlab.circuits.graph`).

    Shapes: ``rows`` is the batch the runner was given (variants stacked), ``n`` a number of heads.

    Attributes:
        records_senders: whether :meth:`head_outputs` / :meth:`mlp_output` want values (a runner may skip computing
            per-head outputs when False).
    """

    records_senders: bool

    def resid_pre(self, layer: int, resid: Float[Tensor, "rows pos d_model"]) -> Float[Tensor, "rows pos d_model"]:
        """The residual stream entering block ``layer``; returns what the block reads (may be replaced at block 0).
        This is also the base of the block's q/k/v receiver inputs."""

    def head_input(self, layer: int, kind: str,
                   resid: Float[Tensor, "rows pos d_model"]) -> Float[Tensor, "rows pos n d_model"] | None:
        """Per-head input of projection ``kind`` (``"q"``: n = n_heads; ``"k"``, ``"v"``: n = n_kv_heads) computed from
        ``resid`` (what :meth:`resid_pre` returned), before the norm; or None to keep the model's own projection."""

    def head_outputs(self, layer: int, outputs: Float[Tensor, "rows pos n_heads d_model"]) -> None:
        """Each head's output ``z_h W_O^h`` (d_model space, without the output bias), detached."""

    def mlp_input(self, layer: int, act: Float[Tensor, "rows pos d_model"]) -> Float[Tensor, "rows pos d_model"]:
        """The residual stream the MLP's norm reads (only the MLP branch reads it); returns the MLP's input."""

    def mlp_output(self, layer: int, act: Float[Tensor, "rows pos d_model"]) -> None:
        """The MLP's output."""

    def logits_input(self, act: Float[Tensor, "rows pos d_model"]) -> Float[Tensor, "rows pos d_model"]:
        """The final residual stream entering the final norm and the unembedding; returns what they read."""


class EdgeRunner(ABC):
    """A backend's runner of receiver-split passes (see the module docstring)."""

    @abstractmethod
    def run(
        self,
        tokens: Int[Tensor, "rows pos"],
        callbacks: EdgeCallbacks,
        *,
        logits_at: Int[Tensor, " rows"] | None = None,
        grad: bool = False,
    ) -> Tensor:
        """One forward pass on ``tokens`` with the callbacks in place.

        Args:
            tokens: Int[rows, pos] token ids (variants already stacked).
            callbacks: the :class:`EdgeCallbacks` of the pass.
            logits_at: Int[rows] one position per row: unembed only there.
            grad: keep the autograd graph (receiver-input gradients); otherwise run under ``torch.no_grad``.

        Returns:
            Float[rows, d_vocab] logits at ``logits_at``, or Float[rows, pos, d_vocab] without it.
        """

    def program(self, name: str, args: dict, *, progress=None):
        """Run the edge-level program ``name`` of :mod:`attnlab.edge_ops` (``eap``, ``evaluate_circuits``,
        ``sender_outputs`` ...) with this runner's passes, here, one :meth:`run` per pass.

        A backend that runs the model elsewhere overrides this to run the whole program there (the nnsight backend:
        one session, one job on a remote server).

        Args:
            name: the program (a function of :mod:`attnlab.edge_ops`).
            args: its keyword arguments (plain tensors, a :class:`~attnlab.edge_ops.Layout`, the metric callable).
            progress: a tqdm-like bar updated once per pass, or None.

        Returns:
            What the program returns.
        """
        fn = getattr(edge_ops, name)

        def run_pass(tokens, callbacks, logits_at, grad):
            logits = self.run(tokens, callbacks, logits_at=logits_at, grad=grad)
            if progress is not None:
                progress.update(1)
            return logits

        return fn(run_pass, **args)
