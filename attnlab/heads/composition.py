"""Weight-based composition between attention heads: Q-, K- and V-composition scores, the low-rank channels behind
them, and how they compare with path patching.

Context:
    In "A Mathematical Framework for Transformer Circuits" (Elhage et al. 2021, section "Three kinds of composition")
    a head in a later layer can read what an earlier head wrote into the residual stream in three ways: through its
    queries (Q-composition), its keys (K-composition, e.g. an induction head reading a previous-token head) or its
    values (V-composition, virtual attention heads). How much a *sender* head's OV circuit feeds a *receiver*
    head's input is measured on the weights alone, with no data, as a normalised Frobenius norm. In
    TransformerLens's row-vector convention (``x @ W``; ``W_OV = W_V W_O`` and ``W_QK = W_Q W_K^T``, all
    [d_model, d_model]):

        Q-composition  = ||W_OV^s W_QK^r||_F   / (||W_OV^s||_F ||W_QK^r||_F)
        K-composition  = ||W_OV^s W_QK^r^T||_F / (||W_OV^s||_F ||W_QK^r||_F)
        V-composition  = ||W_OV^s W_OV^r||_F   / (||W_OV^s||_F ||W_OV^r||_F)

    (the paper writes the same products transposed, in column-vector form; TransformerLens's classic
    ``HookedTransformer.all_composition_scores(mode)`` computes these). A score lies in [0, 1]. Its size alone says
    little: matrices of rank ``d_head`` in ``d_model`` dimensions compose somewhat even at random, so the paper
    compares with random matrices of the same shapes. :func:`composition_scores` records that baseline (Gaussian
    factors of the same shapes, several seeded draws) so a score reads as "x times random" or a z-score.

    "Talking Heads" (Merullo, Eickhoff & Pavlick 2024, arXiv 2406.09519, sections 3-4) looks inside one score: the
    singular value decomposition of the composed matrix shows whether the sender writes into a *low-rank* subspace
    that the receiver reads (a communication channel): a few large singular values, then a drop.
    :func:`composition_svd` returns those singular values and directions. :func:`compare_with_path_patching` asks
    whether the weights predict what path patching measures on a task (rank correlation over sender-receiver pairs).

What is computed, exactly:
    - **Heads.** Every query head is a head. On grouped-query models (SmolLM2-135M: 9 query heads share 3
      key/value heads) query head ``h`` uses the ``W_K`` and ``W_V`` of key/value head ``h // (n_heads //
      n_kv_heads)``, and its own ``W_Q`` and ``W_O``.
    - **Norms.** The pre-attention norm's gain is folded into what a head reads (``W_Q``, ``W_K``, ``W_V`` rows
      scaled by it), and for LayerNorm the centring too (rows minus their mean over d_model), as TransformerLens's
      ``fold_ln`` does; ``fold_norm=False`` uses the projections as stored. The norm's division by the residual
      stream's scale is a scalar per token and cancels in the normalised score. Biases are left out (the
      framework's weight-only view). The final norm plays no part.
    - **Rotary models.** Composition is computed on the weights without the rotary rotation of queries and keys
      (TransformerLens does the same): the score describes the projections, not the position-dependent bilinear
      form, so Q- and K-composition of rotary models are an approximation.
    - **Pairs.** ``scores[mode, layer_s, head_s, layer_r, head_r]`` is defined for ``layer_r > layer_s`` and NaN
      elsewhere (a head cannot read a head of its own or a later layer).

Weights come from :meth:`Backend.weights() <attnlab.backends.base.Backend.weights>` (``W_Q``, ``W_K``, ``W_V``,
``W_O`` and the pre-attention norm gains), so every backend that holds its weights locally works (TransformerLens;
nnsight without ``remote``); a remote model raises :class:`~attnlab.errors.CapabilityError` before any work.

Speed: the score of a pair only needs the ``d_head``-dimensional cores of the four factors. Every sender's left
factor is reduced by a QR decomposition to ``X_s = R_s W_O^s`` [d_head, d_model] and every receiver's right factor
to ``Y_r`` [d_model, d_head] with ``||W_OV^s right_r|| = ||X_s Y_r||``; then ``||X_s Y_r||^2 = <X_s^T X_s, Y_r
Y_r^T>`` is one matrix product over all pairs of packed (upper-triangular) Gram matrices, in float64.
``benchmarks/bench_composition.py`` times it against the explicit one-pair-at-a-time computation.
"""

import html
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from attnlab import serialisation
from attnlab.backends.base import Backend, Capability, ModelWeights, check_model
from attnlab.errors import ArgumentError, ArgumentTypeError, BackendError, SiteError
from attnlab.results import _from_nested, _to_nested
from attnlab.sites import as_int

__all__ = ["COMPOSITION_MODES", "CompositionChannel", "CompositionComparison", "CompositionScores",
           "compare_with_path_patching", "composition_scores", "composition_svd"]

#: The three kinds of composition (Elhage et al. 2021): through the receiver's queries, keys or values.
COMPOSITION_MODES = ("q", "k", "v")

Head = tuple[int, int]


# -- input checks -------------------------------------------------------------------------------------------------
def _check_mode(mode) -> str:
    if isinstance(mode, str) and mode.lower() in COMPOSITION_MODES:
        return mode.lower()
    raise ArgumentError(f"'mode' must be one of 'q', 'k', 'v' (Q-, K- or V-composition; got {mode!r})")


def _check_modes(modes) -> tuple[str, ...]:
    if isinstance(modes, str):
        modes = [modes]
    try:
        modes = [_check_mode(m) for m in modes]
    except TypeError:
        raise ArgumentTypeError(f"'modes' must be a sequence of 'q', 'k', 'v' (got {modes!r})") from None
    if not modes:
        raise ArgumentError("'modes' must name at least one of 'q', 'k', 'v'")
    return tuple(m for m in COMPOSITION_MODES if m in modes)


def _check_count(value, name: str, minimum: int) -> int:
    n = as_int(value)
    if n is None:
        raise ArgumentTypeError(f"'{name}' must be an integer (got {value!r})")
    if n < minimum:
        raise ArgumentError(f"'{name}' must be at least {minimum} (got {n})")
    return n


def _check_head(model: Backend, head, name: str) -> Head:
    """``(layer, head)`` of a query head of ``model``, or a SiteError naming the argument."""
    pair = [as_int(x) for x in head] if hasattr(head, "__len__") and len(head) == 2 else None
    if pair is None or None in pair:
        raise SiteError(f"'{name}' must be a (layer, head) pair of integers (got {head!r})")
    layer, h = pair
    n_layers, n_heads = model.info.n_layers, model.info.n_heads
    if not 0 <= layer < n_layers:
        raise SiteError(f"'{name}' layer must be in [0, {n_layers}) (got {layer})")
    if not 0 <= h < n_heads:
        raise SiteError(f"'{name}' head must be in [0, {n_heads}) (got {h}; heads are query heads)")
    return layer, h


def _attention_weights(model: Backend, analysis: str) -> ModelWeights:
    """The model's weights with W_Q, W_K, W_V, after the WEIGHTS capability check (before any work)."""
    check_model(model, analysis)
    model.require(Capability.WEIGHTS, analysis)
    w = model.weights()
    if w.W_Q is None or w.W_K is None or w.W_V is None:
        raise BackendError(f"{analysis} needs W_Q, W_K and W_V, which {type(model).__name__}.weights() does not "
                           "give for this model")
    return w


# -- the factors --------------------------------------------------------------------------------------------------
@dataclass
class _Factors:
    """Float64 per-query-head factors: W_OV = V O, W_QK = Q K^T (norm folded where asked)."""

    Q: Tensor  # [layer, head, d_model, d_head]
    K: Tensor  # [layer, head, d_model, d_head] (of each query head's key/value head)
    V: Tensor  # [layer, head, d_model, d_head]
    O: Tensor  # [layer, head, d_head, d_model]  # noqa: E741
    folded: str


def _factors(w: ModelWeights, n_heads: int, fold_norm: bool) -> _Factors:
    group = n_heads // w.W_K.shape[1]

    def per_query_head(x: Tensor) -> Tensor:
        return x.double().repeat_interleave(group, dim=1) if group > 1 else x.double()

    q, k, v = w.W_Q.double(), per_query_head(w.W_K), per_query_head(w.W_V)
    folded = "none"
    if fold_norm and w.attn_norm_weight is not None:
        gain = w.attn_norm_weight.double()[:, None, :, None]  # [layer, 1, d_model, 1]
        q, k, v = q * gain, k * gain, v * gain
        folded = "gain"
        if w.attn_norm_centred:
            q, k, v = (x - x.mean(dim=2, keepdim=True) for x in (q, k, v))
            folded = "gain and centring (LayerNorm)"
    return _Factors(Q=q, K=k, V=v, O=w.W_O.double(), folded=folded)


def _receiver_factors(f: _Factors, mode: str) -> tuple[Tensor, Tensor]:
    """(A, B^T) with the receiver's matrix A @ B: W_QK (q), W_QK^T (k), W_OV (v); each [layer, head, d_model,
    d_head]."""
    if mode == "q":
        return f.Q, f.K
    if mode == "k":
        return f.K, f.Q
    return f.V, f.O.transpose(-1, -2)


def _sender_cores(f: _Factors) -> Tensor:
    """X_s = R_s O_s [layer, head, d_head, d_model] with V_s = Q_s R_s: ||V_s O_s M|| = ||X_s M|| for any M."""
    r = torch.linalg.qr(f.V, mode="r").R
    return r @ f.O


def _receiver_cores(f: _Factors, mode: str) -> Tensor:
    """Y_r = A_r T_r^T [layer, head, d_model, d_head] with B_r^T = P_r T_r: ||M A_r B_r|| = ||M Y_r||."""
    a, bt = _receiver_factors(f, mode)
    t = torch.linalg.qr(bt, mode="r").R
    return a @ t.transpose(-1, -2)


def _packed_gram(x: Tensor, rows: bool, iu: tuple[Tensor, Tensor], double_off_diagonal: bool) -> Tensor:
    """Upper triangle of x^T x (rows=True, x [n, d_head, d]) or x x^T (x [n, d, d_head]), [n, d (d + 1) / 2];
    off-diagonal entries doubled on one side so the packed dot product is the full Frobenius inner product."""
    g = x.transpose(-1, -2) @ x if rows else x @ x.transpose(-1, -2)
    packed = g[:, iu[0], iu[1]]
    if double_off_diagonal:
        packed = packed * torch.where(iu[0] == iu[1], 1.0, 2.0).to(packed.dtype)
    return packed


def _all_scores(f: _Factors, modes: Sequence[str]) -> Tensor:
    """Float64 [mode, layer_s, head_s, layer_r, head_r], NaN where layer_r <= layer_s."""
    n_layers, n_heads, d_model, _ = f.Q.shape
    x = _sender_cores(f)  # [L, H, d_head, d_model]
    x_norm = x.flatten(-2).norm(dim=-1)  # [L, H]
    iu = tuple(torch.triu_indices(d_model, d_model))
    out = torch.full((len(modes), n_layers, n_heads, n_layers, n_heads), math.nan, dtype=torch.float64)
    # packed sender Grams of every layer but the last: [(L - 1) * H, d_model (d_model + 1) / 2]
    bank = torch.empty((n_layers - 1) * n_heads, iu[0].numel(), dtype=torch.float64)
    for layer in range(n_layers - 1):
        bank[layer * n_heads:(layer + 1) * n_heads] = _packed_gram(x[layer], True, iu, False)
    for m, mode in enumerate(modes):
        y = _receiver_cores(f, mode)  # [L, H, d_model, d_head]
        y_norm = y.flatten(-2).norm(dim=-1)
        for layer_r in range(1, n_layers):
            senders = bank[:layer_r * n_heads]  # [layer_r * H, P]
            gy = _packed_gram(y[layer_r], False, iu, True)  # [H, P]
            num = (senders @ gy.T).clamp_min(0).sqrt().reshape(layer_r, n_heads, n_heads)
            den = x_norm[:layer_r, :, None] * y_norm[layer_r][None, None, :]
            out[m, :layer_r, :, layer_r, :] = num / den
    return out


def _random_baseline(d_model: int, d_head: int, modes: Sequence[str], draws: int, seed: int) -> Tensor:
    """Float64 [mode, draw]: the score of Gaussian factors of the model's shapes (sender V [d_model, d_head],
    O [d_head, d_model]; receiver A [d_model, d_head], B [d_head, d_model])."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(len(modes), draws, dtype=torch.float64)
    for m in range(len(modes)):
        v, a, bt = (torch.randn(draws, d_model, d_head, generator=g, dtype=torch.float64) for _ in range(3))
        o = torch.randn(draws, d_head, d_model, generator=g, dtype=torch.float64)
        x = torch.linalg.qr(v, mode="r").R @ o  # ||V O M|| = ||X M||, as in _sender_cores
        y = a @ torch.linalg.qr(bt, mode="r").R.transpose(-1, -2)  # ||M A B|| = ||M Y||
        out[m] = (x @ y).flatten(1).norm(dim=-1) / (x.flatten(1).norm(dim=-1) * y.flatten(1).norm(dim=-1))
    return out


# -- the result ---------------------------------------------------------------------------------------------------
@dataclass
class CompositionScores(serialisation.Saved):
    """Q-, K- and V-composition scores between every pair of heads, with the random baseline.

    Attributes:
        modes: the modes computed, a subset of ``("q", "k", "v")`` in that order.
        scores: Float[mode, layer_s, head_s, layer_r, head_r] (float32) composition score of sender head
            ``(layer_s, head_s)`` into receiver ``(layer_r, head_r)``, in [0, 1]; NaN where ``layer_r <= layer_s``.
        baseline: Float[mode, draw] (float64) the same score for Gaussian random factors of the model's shapes, one
            per seeded draw (:attr:`baseline_mean`, :attr:`baseline_std`).
        model: provenance, :meth:`ModelInfo.to_dict <attnlab.backends.base.ModelInfo.to_dict>`.
        settings: how it was computed (``fold_norm``, what was folded, seed, draws, seconds).
    """

    _record = serialisation.COMPOSITION

    modes: list[str]
    scores: Tensor
    baseline: Tensor
    model: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modes = [_check_mode(m) for m in self.modes]
        s = self.scores
        if s.ndim != 5 or s.shape[0] != len(self.modes) or s.shape[1:3] != s.shape[3:5]:
            raise ArgumentError(f"scores must be [mode, layer_s, head_s, layer_r, head_r] with {len(self.modes)} "
                                f"modes (got {tuple(s.shape)})")
        if self.baseline.ndim != 2 or self.baseline.shape[0] != len(self.modes):
            raise ArgumentError(f"baseline must be [mode, draw] with {len(self.modes)} modes (got "
                                f"{tuple(self.baseline.shape)})")

    # -- access ------------------------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.scores.shape[1]

    @property
    def n_heads(self) -> int:
        return self.scores.shape[2]

    def _index(self, mode) -> int:
        mode = _check_mode(mode)
        if mode not in self.modes:
            raise ArgumentError(f"'mode' {mode!r} was not computed; this result has modes {self.modes}")
        return self.modes.index(mode)

    def score(self, mode: str) -> Float[Tensor, "layer head_index layer head_index"]:
        """Float[layer_s, head_s, layer_r, head_r] scores of one mode (NaN where layer_r <= layer_s).

        Raises:
            ArgumentError: a mode other than q, k, v, or one not computed.
        """
        return self.scores[self._index(mode)]

    def baseline_mean(self, mode: str) -> float:
        """Mean score of random factors of the model's shapes."""
        return float(self.baseline[self._index(mode)].mean())

    def baseline_std(self, mode: str) -> float:
        """Standard deviation of the random factors' score over draws (0 for one draw)."""
        b = self.baseline[self._index(mode)]
        return float(b.std()) if b.numel() > 1 else 0.0

    def ratio(self, mode: str) -> Float[Tensor, "layer head_index layer head_index"]:
        """Scores as multiples of the random baseline's mean."""
        return self.score(mode) / self.baseline_mean(mode)

    def z_scores(self, mode: str) -> Float[Tensor, "layer head_index layer head_index"]:
        """(score - baseline mean) / baseline std (NaN when the baseline has one draw)."""
        std = self.baseline_std(mode)
        return (self.score(mode) - self.baseline_mean(mode)) / (std if std > 0 else math.nan)

    # -- tables ------------------------------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per sender-receiver pair with ``layer_r > layer_s``: ``sender``, ``receiver`` (``L0H1``),
        ``sender_layer``, ``sender_head``, ``receiver_layer``, ``receiver_head``, and for each mode ``m`` its score
        ``m``, ``m_ratio`` (times the random mean) and ``m_z`` (z-score against the random draws)."""
        import pandas as pd

        L, H = self.n_layers, self.n_heads
        ls, hs, lr, hr = torch.meshgrid(*(torch.arange(n) for n in (L, H, L, H)), indexing="ij")
        valid = lr > ls
        cols = {"sender": [f"L{a}H{b}" for a, b in zip(ls[valid].tolist(), hs[valid].tolist())],
                "receiver": [f"L{a}H{b}" for a, b in zip(lr[valid].tolist(), hr[valid].tolist())],
                "sender_layer": ls[valid].numpy(), "sender_head": hs[valid].numpy(),
                "receiver_layer": lr[valid].numpy(), "receiver_head": hr[valid].numpy()}
        for mode in self.modes:
            cols[mode] = self.score(mode)[valid].double().numpy()
            cols[f"{mode}_ratio"] = self.ratio(mode)[valid].double().numpy()
            cols[f"{mode}_z"] = self.z_scores(mode)[valid].double().numpy()
        return pd.DataFrame(cols)

    def top(self, mode: str, k: int = 10):
        """DataFrame of the ``k`` pairs with the highest ``mode`` score (see :meth:`to_dataframe`).

        Raises:
            ArgumentError: an unknown or not computed mode, ``k`` below 1.
            ArgumentTypeError: ``k`` not an integer.
        """
        mode = self.modes[self._index(mode)]
        k = _check_count(k, "k", 1)
        df = self.to_dataframe()
        return df.sort_values(mode, ascending=False, kind="stable").head(k).reset_index(drop=True)

    # -- files -------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dictionary (NaN as null): the ``attnlab.composition`` record, format version 1."""
        return {**serialisation.COMPOSITION.header(), "modes": list(self.modes), "scores": _to_nested(self.scores),
                "baseline": _to_nested(self.baseline), "model": self.model, "settings": self.settings}

    @classmethod
    def _from_content(cls, d: dict) -> "CompositionScores":
        return cls(modes=list(d["modes"]), scores=_from_nested(d["scores"]),
                   baseline=_from_nested(d["baseline"], dtype=torch.float64), model=d.get("model", {}),
                   settings=d.get("settings", {}))

    # -- display -----------------------------------------------------------------------------------------------------
    def labels(self) -> list[str]:
        """Head labels ``L{layer}H{head}`` in the order of :meth:`payload`'s rows and columns."""
        return [f"L{layer}H{head}" for layer in range(self.n_layers) for head in range(self.n_heads)]

    def payload(self, mode: str = "k") -> dict:
        """Plain JSON-able data for a view: the sender x receiver matrix of one mode.

        Returns:
            ``{"kind": "composition", "mode", "modes", "model", "n_layers", "n_heads", "senders", "receivers"
            (labels, rows and columns), "matrix" ([sender][receiver] scores, None where the receiver is not in a
            later layer), "baseline": {"mean", "std"}, "settings"}``.

        Raises:
            ArgumentError: an unknown or not computed mode.
        """
        s = self.score(mode)
        n = self.n_layers * self.n_heads
        matrix = _to_nested(s.reshape(n, n))
        labels = self.labels()
        return {"kind": "composition", "mode": _check_mode(mode), "modes": list(self.modes),
                "model": self.model.get("name", ""), "n_layers": self.n_layers, "n_heads": self.n_heads,
                "senders": labels, "receivers": list(labels), "matrix": matrix,
                "baseline": {"mean": self.baseline_mean(mode), "std": self.baseline_std(mode)},
                "settings": dict(self.settings)}

    def _html(self, k: int = 10) -> str:
        parts = [f"<div><p>{html.escape(self._summary())}</p>"]
        for mode in self.modes:
            top = self.top(mode, k)
            rows = "".join(
                f"<tr><td>{html.escape(str(r.sender))}</td><td>{html.escape(str(r.receiver))}</td>"
                f"<td>{getattr(r, mode):.4f}</td><td>{getattr(r, mode + '_ratio'):.2f}x</td>"
                f"<td>{getattr(r, mode + '_z'):.1f}</td></tr>" for r in top.itertuples())
            parts.append(f"<table><caption>top {mode.upper()}-composition (random: "
                         f"{self.baseline_mean(mode):.4f} &plusmn; {self.baseline_std(mode):.4f})</caption>"
                         "<tr><th>sender</th><th>receiver</th><th>score</th><th>vs random</th><th>z</th></tr>"
                         f"{rows}</table>")
        return "".join(parts) + "</div>"

    def channel(self, model, sender, receiver, *, mode: str = "k", fold_norm: bool = True, k: int = 1):
        """:func:`composition_svd` of one pair of this result's model (what the view precomputes for a clicked
        pair)."""
        return composition_svd(model, sender, receiver, mode=mode, k=k, fold_norm=fold_norm)

    def view(self, model: Backend | None = None, *, comparison: "CompositionComparison | None" = None,
             top_n: int = 20, mode: str | None = None):
        """The interactive sender x receiver view (:func:`attnlab.render.composition.composition_view`): with
        ``model``, the singular values of the ``top_n`` pairs of each mode are precomputed; with ``comparison``,
        each compared pair's path-patching effect is shown beside them.

        Returns:
            A :class:`~attnlab.render.composition.CompositionView` (displays itself; ``.payload`` holds the data).

        Raises:
            ArgumentError, ArgumentTypeError: as :func:`~attnlab.render.composition.composition_view`.
        """
        from attnlab.render.composition import CompositionView

        return CompositionView(self, model=model, comparison=comparison, top_n=top_n, mode=mode)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from attnlab.render.composition import COMPOSITION_MIME, composition_view

        return {COMPOSITION_MIME: composition_view(self, top_n=0), "text/plain": repr(self),
                "text/html": self._html()}

    def _summary(self) -> str:
        return (f"composition scores on {self.model.get('name', '?')}: {self.n_layers} layers x {self.n_heads} "
                f"heads, modes {', '.join(m.upper() for m in self.modes)}")

    def __repr__(self) -> str:
        parts = []
        for mode in self.modes:
            top = self.top(mode, 1).iloc[0]
            parts.append(f"top {mode.upper()} {top.sender}->{top.receiver} ({top[mode]:.3f}, "
                         f"{top[mode + '_ratio']:.1f}x random)")
        return f"<CompositionScores {self._summary()}; {'; '.join(parts)}>"

    def plot(self, ax=None, **kw):
        """Draw the sender x receiver scores of one mode with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_composition`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: mode (default ``"k"``), width, height, title, vmin, vmax, clip_percentile, cmap.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_composition

        return plot_composition(self, ax, **kw)


# -- the analyses -------------------------------------------------------------------------------------------------
def composition_scores(
    model: Backend,
    *,
    modes: Sequence[str] = COMPOSITION_MODES,
    fold_norm: bool = True,
    baseline_draws: int = 32,
    seed: int = 0,
) -> CompositionScores:
    """Q-, K- and V-composition scores of every sender head into every head of a later layer (Elhage et al. 2021,
    "A Mathematical Framework for Transformer Circuits", section "Three kinds of composition").

    ``score = ||W_OV^s R||_F / (||W_OV^s||_F ||R||_F)`` with ``R`` the receiver's ``W_QK`` (q), ``W_QK^T`` (k) or
    ``W_OV`` (v), in TransformerLens's row-vector convention (see the module docstring for the norms, grouped-query
    and rotary models).

    Args:
        model: a backend that holds its weights (TransformerLens, or nnsight run locally).
        modes: which of ``"q"``, ``"k"``, ``"v"`` to compute (upper case accepted).
        fold_norm: fold each block's pre-attention norm gain (and LayerNorm's centring) into W_Q, W_K and W_V.
        baseline_draws: random draws for the baseline (Gaussian factors of the same shapes).
        seed: seed of the baseline's draws.

    Returns:
        :class:`CompositionScores`: ``scores`` Float[mode, layer_s, head_s, layer_r, head_r] (dimensionless, in
        [0, 1]; NaN where ``layer_r <= layer_s``) and the baseline Float[mode, draw].

    Raises:
        ArgumentTypeError: ``model`` is not a loaded model; a count that is not an integer.
        ArgumentError: an unknown mode, ``baseline_draws`` below 1, a negative seed.
        CapabilityError: the model's weights are not here (a remote model), before any work.
        BackendError: the backend does not give W_Q, W_K, W_V.

    Example:
        >>> import attnlab
        >>> scores = composition_scores(attnlab.tiny_model(n_layers=2, seed=0))
        >>> tuple(scores.scores.shape), 0.0 < scores.baseline_mean("k") < 1.0
        ((3, 2, 4, 2, 4), True)
    """
    check_model(model, "composition scores")
    modes = _check_modes(modes)
    draws = _check_count(baseline_draws, "baseline_draws", 1)
    seed = _check_count(seed, "seed", 0)
    w = _attention_weights(model, "composition scores")
    t0 = time.perf_counter()
    info = model.info
    f = _factors(w, info.n_heads, bool(fold_norm))
    scores = _all_scores(f, modes).float()
    baseline = _random_baseline(info.d_model, info.d_head, modes, draws, seed)
    return CompositionScores(
        modes=list(modes), scores=scores, baseline=baseline, model=info.to_dict(),
        settings={"fold_norm": bool(fold_norm), "folded": f.folded, "baseline_draws": draws, "seed": seed,
                  "rotary_ignored": True, "seconds": round(time.perf_counter() - t0, 3),
                  "definition": "Elhage et al. 2021; TransformerLens all_composition_scores"},
    )


@dataclass(frozen=True)
class CompositionChannel:
    """The singular value decomposition of one sender's OV composed with one receiver's QK (or OV): the
    communication channel between two heads (Merullo et al. 2024, "Talking Heads", sections 3-4).

    Attributes:
        sender, receiver: ``(layer, head)`` query heads.
        mode: ``"q"``, ``"k"`` or ``"v"``.
        singular_values: Float[d_head] of the composed matrix ``W_OV^s R`` divided by ``||W_OV^s|| ||R||``,
            largest first, so that their root sum of squares is the composition score. A rank-r channel shows as r
            large values and then a drop.
        sender_inputs: Float[k, d_model] the left singular vectors ``u_i``: unit residual directions at the
            sender's source position; reading ``u_i`` makes the sender write channel i.
        written: Float[k, d_model] unit residual directions the sender writes for channel i (``u_i^T W_OV^s``
            normalised): the subspace the receiver reads.
        receiver_directions: Float[k, d_model] unit right singular vectors ``v_i`` (the receiver's other side:
            the query-side residual for K-composition, the key side for Q, the output for V).
        score: the composition score (the norm of ``singular_values``).
    """

    sender: Head
    receiver: Head
    mode: str
    singular_values: Tensor
    sender_inputs: Tensor
    written: Tensor
    receiver_directions: Tensor
    score: float

    def rank_for(self, fraction: float = 0.9) -> int:
        """The fewest singular directions whose squared values hold ``fraction`` of the composed matrix's squared
        Frobenius norm (a channel's effective rank).

        Raises:
            ArgumentError: ``fraction`` outside (0, 1].
        """
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ArgumentError(f"'fraction' must be in (0, 1] (got {fraction!r})")
        energy = self.singular_values.double().pow(2)
        cumulative = energy.cumsum(0) / energy.sum()
        return int((cumulative < fraction - 1e-12).sum()) + 1

    def __repr__(self) -> str:
        sv = ", ".join(f"{v:.3f}" for v in self.singular_values[:6].tolist())
        (ls, hs), (lr, hr) = self.sender, self.receiver
        return (f"<CompositionChannel {self.mode.upper()}: L{ls}H{hs} -> L{lr}H{hr}, score {self.score:.3f}, "
                f"singular values [{sv}{', ...' if self.singular_values.numel() > 6 else ''}]>")


def composition_svd(
    model: Backend,
    sender: Head,
    receiver: Head,
    *,
    mode: str = "k",
    k: int = 8,
    fold_norm: bool = True,
) -> CompositionChannel:
    """The singular values and directions of a sender's OV composed with a receiver's QK (``mode="q"`` or
    ``"k"``) or OV (``"v"``): Merullo et al. 2024, "Talking Heads" (arXiv 2406.09519), sections 3-4.

    The composed matrix ``C = W_OV^s R`` (R as in :func:`composition_scores`) has rank at most ``d_head``; it is
    decomposed exactly through the QR factors of its outer factors (``C = Q_1 (R_1 W_O^s A T^T) Q_2^T``, then the
    SVD of the [d_head, d_head] core), in float64.

    Args:
        model: a backend that holds its weights.
        sender, receiver: ``(layer, head)`` query heads, the receiver in a later layer.
        mode: ``"q"``, ``"k"`` or ``"v"``.
        k: how many singular directions to return (all ``d_head`` singular values are returned).
        fold_norm: fold the pre-attention norm into what heads read, as :func:`composition_scores`.

    Returns:
        :class:`CompositionChannel`.

    Raises:
        SiteError: a head out of range, or a receiver not in a later layer than the sender.
        ArgumentError: an unknown mode, ``k`` below 1.
        CapabilityError: the weights are not here (a remote model), before any work.
    """
    check_model(model, "composition SVD")
    mode = _check_mode(mode)
    s = _check_head(model, sender, "sender")
    r = _check_head(model, receiver, "receiver")
    if r[0] <= s[0]:
        raise SiteError(f"the receiver must be in a later layer than the sender (sender layer {s[0]}, receiver "
                        f"layer {r[0]})")
    k = min(_check_count(k, "k", 1), model.info.d_head)
    w = _attention_weights(model, "composition SVD")
    f = _factors(w, model.info.n_heads, bool(fold_norm))
    v_s, o_s = f.V[s], f.O[s]
    a, bt = (x[r] for x in _receiver_factors(f, mode))
    q1, r1 = torch.linalg.qr(v_s)
    q2, r2 = torch.linalg.qr(bt)
    core = r1 @ o_s @ a @ r2.T  # [d_head, d_head]
    u, sv, vh = torch.linalg.svd(core)
    scale = (v_s @ o_s).norm() * (a @ bt.T).norm()
    written = u[:, :k].T @ r1 @ o_s  # [k, d_model]: u_i^T V_s O_s with u_i = q1 @ u[:, i]
    written = written / written.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    values = (sv / scale).float()
    return CompositionChannel(
        sender=s, receiver=r, mode=mode, singular_values=values, sender_inputs=(q1 @ u[:, :k]).T.float(),
        written=written.float(), receiver_directions=(q2 @ vh[:k].T).T.float(), score=float(sv.norm() / scale))


# -- against path patching -----------------------------------------------------------------------------------------
_RECEIVER_NAME = re.compile(r"^(?P<kind>[qkv]):L(?P<layer>\d+)H(?P<head>\d+)$")


@dataclass(frozen=True)
class CompositionComparison:
    """Weight-based composition against path patching over the same sender-receiver pairs.

    Attributes:
        mode: the composition mode compared (the path-patching receivers' input: q, k or v).
        spearman: Spearman's rank correlation of the composition score with the path-patching effect (its absolute
            value when ``absolute``); NaN for fewer than 2 pairs or a constant column.
        n: pairs compared.
        absolute: whether the effect's magnitude was ranked (composition scores carry no sign).
        table: DataFrame, one row per pair: ``sender``, ``receiver`` (a head label, or labels joined by ``+`` for
            a receiver set), ``composition``, ``path_effect``, ``composition_rank``, ``effect_rank`` (1 = largest).
    """

    mode: str
    spearman: float
    n: int
    absolute: bool
    table: object

    def __repr__(self) -> str:
        return (f"<CompositionComparison {self.mode.upper()}-composition vs path patching: Spearman "
                f"{self.spearman:.3f} over {self.n} pairs{' (|effect|)' if self.absolute else ''}>")


def _receivers_of(names: Iterable[str], n_heads: int, n_kv_heads: int) -> tuple[str, list[Head]]:
    """(mode, query heads) of path-patching receiver names (``"q:L9H9"``; k/v name key/value heads)."""
    kinds, heads = set(), []
    group = n_heads // n_kv_heads
    for name in names:
        m = _RECEIVER_NAME.match(str(name))
        if m is None:
            raise ArgumentError(f"path-patching receiver {name!r} is not a head input ('q:L9H9', 'k:L5H1', "
                                "'v:L5H1'); composition compares with receivers that are heads' queries, keys or "
                                "values, not 'logits'")
        kinds.add(m["kind"])
        layer, head = int(m["layer"]), int(m["head"])
        if m["kind"] == "q" or group == 1:
            heads.append((layer, head))
        else:  # a key/value head: every query head of its group reads it
            heads += [(layer, h) for h in range(head * group, (head + 1) * group)]
    if len(kinds) != 1:
        raise ArgumentError(f"path-patching receivers mix inputs {sorted(kinds)}; compare one of q, k, v at a time")
    return kinds.pop(), heads


def _pairs_from(path_patching, n_heads: int, n_kv_heads: int, mode: str | None):
    """[(sender, receivers, effect)] and the mode, from the accepted path-patching inputs."""
    from attnlab.circuits.path_patching import PathPatchingScore
    from attnlab.results import PatchingResult

    items = path_patching if isinstance(path_patching, (list, tuple)) else [path_patching]
    pairs, modes = [], set()
    if isinstance(path_patching, Mapping):
        if mode is None:
            raise ArgumentError("'mode' is needed when path-patching effects are given as a mapping "
                                "{(sender, receiver): effect}")
        for key, effect in path_patching.items():
            try:
                (ls, hs), (lr, hr) = key
            except (TypeError, ValueError):
                raise ArgumentError(f"mapping keys must be ((layer_s, head_s), (layer_r, head_r)) (got {key!r})") \
                    from None
            pairs.append(((int(ls), int(hs)), [(int(lr), int(hr))], float(effect)))
        return pairs, mode
    for item in items:
        if isinstance(item, PatchingResult):
            if item.analysis != "path_patching" or tuple(item.dims) != ("layer", "head"):
                raise ArgumentError(f"expected a path_patching_sweep result (analysis 'path_patching', dims "
                                    f"(layer, head)); got analysis {item.analysis!r}, dims {tuple(item.dims)}")
            kind, receivers = _receivers_of(item.settings.get("receivers", []), n_heads, n_kv_heads)
            modes.add(kind)
            for i, layer in enumerate(item.index["layer"]):
                for j, head in enumerate(item.index["head"]):
                    pairs.append(((int(layer), int(head)), receivers, float(item.values[i, j])))
        elif isinstance(item, PathPatchingScore):
            if len(item.senders) != 1:
                raise ArgumentError(f"a PathPatchingScore with one sender is needed per pair (got senders "
                                    f"{item.senders})")
            kind, receivers = _receivers_of(item.receivers, n_heads, n_kv_heads)
            modes.add(kind)
            pairs.append((tuple(item.senders[0]), receivers, float(item.value)))
        else:
            raise ArgumentTypeError(f"path_patching must be a path_patching_sweep result, PathPatchingScore, a list "
                                    f"of them, or a mapping {{(sender, receiver): effect}} (got "
                                    f"{type(item).__name__})")
    if len(modes) > 1:
        raise ArgumentError(f"the path-patching results patch different inputs {sorted(modes)}; compare one of q, "
                            "k, v at a time")
    found = modes.pop() if modes else mode
    if mode is not None and found != mode:
        raise ArgumentError(f"mode={mode!r} but the path-patching receivers are {found!r} inputs")
    return pairs, found


def compare_with_path_patching(
    composition: CompositionScores,
    path_patching,
    *,
    mode: str | None = None,
    absolute: bool = True,
) -> CompositionComparison:
    """Does the weights' composition predict what path patching measures? Spearman's rank correlation between the
    composition score and the path-patching effect over the same sender-receiver pairs (Merullo et al. 2024 ask the
    same of their channels).

    A pair's composition score is that of the sender into the receiver; for a set of receivers (several sites in
    one sweep, or a key/value head on a grouped-query model, read by every query head of its group) it is the mean
    over them. Only senders in a layer before every receiver are compared (the others have no path, or only to
    part of the set).

    Args:
        composition: :func:`composition_scores` of the model the path patching ran on.
        path_patching: a :func:`~attnlab.circuits.path_patching.path_patching_sweep` result whose receivers are the
            ``q``, ``k`` or ``v`` inputs of heads; a :class:`~attnlab.circuits.path_patching.PathPatchingScore`
            with one sender; a list of either; or a mapping ``{((layer_s, head_s), (layer_r, head_r)): effect}``.
        mode: the composition mode (read from the receivers' kind when given results; required for a mapping).
        absolute: rank the effect's magnitude (default: a head that hurts and one that helps both compose).

    Returns:
        :class:`CompositionComparison` (Spearman, number of pairs, the pairs table).

    Raises:
        ArgumentError: receivers that are not head inputs (``"logits"``), mixed q/k/v, a mode that disagrees with
            them or was not computed, pairs outside the model, results from another model.
        ArgumentTypeError: ``composition`` is not a :class:`CompositionScores`, or an unknown path-patching type.
    """
    import pandas as pd

    from attnlab.circuits.agreement import spearman

    if not isinstance(composition, CompositionScores):
        raise ArgumentTypeError(f"'composition' must be a CompositionScores (from composition_scores); got "
                                f"{type(composition).__name__}")
    if mode is not None:
        mode = _check_mode(mode)
    n_heads = composition.n_heads
    n_kv = int(composition.model.get("n_kv_heads") or n_heads)
    pairs, mode = _pairs_from(path_patching, n_heads, n_kv, mode)
    for item in (path_patching if isinstance(path_patching, (list, tuple)) else [path_patching]):
        other = getattr(item, "model", None)
        if isinstance(other, dict) and other.get("name") and composition.model.get("name") \
                and other["name"] != composition.model["name"]:
            raise ArgumentError(f"the path patching ran on {other['name']!r} but the composition scores are of "
                                f"{composition.model['name']!r}")
    scores = composition.score(mode)
    rows = []
    for (ls, hs), receivers, effect in pairs:
        for layer, head in [(ls, hs), *receivers]:
            if not (0 <= layer < composition.n_layers and 0 <= head < n_heads):
                raise ArgumentError(f"head L{layer}H{head} is outside the model ({composition.n_layers} layers x "
                                    f"{n_heads} heads)")
        if not receivers or ls >= min(layer for layer, _ in receivers) or math.isnan(effect):
            continue
        value = float(torch.stack([scores[ls, hs, lr, hr] for lr, hr in receivers]).double().mean())
        rows.append({"sender": f"L{ls}H{hs}", "receiver": "+".join(f"L{a}H{b}" for a, b in receivers),
                     "composition": value, "path_effect": effect})
    table = pd.DataFrame(rows, columns=["sender", "receiver", "composition", "path_effect"])
    if rows:
        effect = table["path_effect"].abs() if absolute else table["path_effect"]
        table["composition_rank"] = table["composition"].rank(ascending=False, method="average")
        table["effect_rank"] = effect.rank(ascending=False, method="average")
        rho = spearman(torch.tensor(table["composition"].to_numpy()), torch.tensor(effect.to_numpy()))
    else:
        rho = math.nan
    return CompositionComparison(mode=mode, spearman=rho, n=len(rows), absolute=bool(absolute), table=table)
