"""The computational graph of a transformer, and a runner that ablates any set of its edges exactly.

Context:
    Edge-level circuit discovery (ACDC, Conmy et al. 2023, arXiv 2304.14997, section 2; EAP, Syed et al. 2023,
    arXiv 2310.10348, section 2) views the residual stream as a set of *edges*: every component (the embeddings,
    each attention head, each MLP) writes its output into the residual stream, and every later component reads the
    *sum* of what was written before it. Edge ``s->r`` is sender ``s``'s contribution to receiver ``r``'s input.

Nodes and names:
    - senders: ``"input"`` (token + positional embeddings, the residual stream entering block 0), every head
      ``"L{l}H{h}"`` (its output ``z_h W_O^h`` in d_model space, without the shared output bias) and every MLP
      ``"MLP{l}"``;
    - receivers: each query head's query input ``"L{l}H{h}.q"``; each key/value head's key and value input
      ``"L{l}KV{g}.k"``, ``"L{l}KV{g}.v"``; each MLP's input ``"MLP{l}"``; and ``"logits"`` (the final residual
      stream entering the final norm and the unembedding).

Grouped-query attention:
    On a grouped-query model (SmolLM2-135M: 9 query heads, 3 key/value heads) the query heads of one group share a
    single key and value projection computed from one input. The graph therefore has one key receiver and one
    value receiver per *key/value head* (``L{l}KV{g}.k``), not per query head: an edge into ``L{l}KV{g}.k`` changes
    the keys that all query heads ``g * n_heads/n_kv_heads ... (g+1) * n_heads/n_kv_heads - 1`` read, which is what
    the architecture computes, so every edge ablation is a real forward pass of the model. (Per-query-head key
    receivers would need a key projection per query head, a computation the model never performs.) Without
    grouped-query attention ``KV{g}`` coincides with head ``g``.

Edges:
    Every sender feeds every receiver of a later block; an MLP also receives from the heads of its own block (they
    run before it); ``logits`` receives from every sender. Since senders are ordered (input, then per block its heads
    then its MLP), every receiver's senders are a *prefix* of the sender list, which the runner exploits.
    SmolLM2-135M has 301 senders, 481 receivers and 70,651 edges (:func:`Graph.n_edges`).

Exact edge ablation (:class:`GraphRunner`):
    A receiver's input is the residual stream it would normally read minus, for every ablated edge ``s->r``,
    ``a_s(this run) - a_s(source)``: the sender's contribution on this run is swapped for its contribution on the
    ablation source (the corrupted run, or the mean over the corrupted distribution per position and template as
    in Wang et al. 2022, arXiv 2211.00593, section 3.1). Because the pre-attention norm is nonlinear, the
    correction must be applied *before* the norm and separately per head: each head's query, key and value
    projection is recomputed as ``norm(resid_pre - correction_h) W^h + b^h`` from its own copy of the residual
    stream; the MLP and the logits read corrected copies of theirs. The correction algebra is here
    (:class:`GraphRunner`); the receiver-split pass is the backend's (``Backend.edge_runner()``, behind
    ``Capability.EDGE_GRAPH``: :mod:`attnlab.backends.edges`, for TransformerLens
    :mod:`attnlab.backends.transformer_lens_graph`). With no edge
    ablated the runner is the model's own forward pass; tests check both this and a hand-built ablation
    (tests/circuits/test_evaluate.py).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from attnlab import edge_ops, memory
from attnlab.backends.base import Backend, Capability, ModelInfo, check_model
from attnlab.errors import CapabilityError, CircuitError, MemoryBudgetError
from attnlab.tasks.base import PatchingDataset

__all__ = [
    "AblationSource",
    "CircuitError",
    "Graph",
    "GraphRunner",
    "GradientNotSupportedError",
    "MemoryBudgetError",
    "corrupted_source",
    "estimate_memory_mb",
    "mean_source",
]


#: The former name of :class:`~attnlab.errors.CapabilityError` (kept so that existing ``except`` clauses work).
GradientNotSupportedError = CapabilityError


def same_architecture(a, b) -> bool:
    """Whether two models (:class:`ModelInfo` or its dict) have the same graph: equal but for the backend and the
    weights' source, so a circuit found through one backend applies to the same model through the other."""
    drop = ("backend", "source")
    a, b = (x.to_dict() if hasattr(x, "to_dict") else dict(x) for x in (a, b))
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


# -- the graph ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Graph:
    """Senders, receivers and edges of a model's computational graph (see the module docstring).

    Build it with :meth:`from_info`. Edges are addressed by (sender index, receiver index) into the dense
    ``[n_senders, n_receivers]`` matrices that scores and masks use; :attr:`valid` marks the real edges.

    Attributes:
        info: the model's :class:`~attnlab.backends.base.ModelInfo`.
        senders: sender names in order: ``input``, then per block ``L{l}H0..`` and ``MLP{l}``.
        receivers: receiver names: per block ``L{l}H{h}.q`` (n_heads), ``L{l}KV{g}.k``, ``L{l}KV{g}.v``
            (n_kv_heads each), ``MLP{l}``; then ``logits``.
        prefix: Int[n_receivers] number of senders (a prefix of ``senders``) feeding each receiver.
    """

    info: ModelInfo
    senders: tuple[str, ...]
    receivers: tuple[str, ...]
    prefix: tuple[int, ...]
    _sender_index: dict = field(default_factory=dict, repr=False, compare=False)
    _receiver_index: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_info(cls, info: ModelInfo) -> "Graph":
        """The full graph of a model described by ``info``."""
        H, G, L = info.n_heads, info.n_kv_heads, info.n_layers
        senders = ["input"]
        receivers: list[str] = []
        prefix: list[int] = []
        for layer in range(L):
            n_before = len(senders)
            receivers += [f"L{layer}H{h}.q" for h in range(H)]
            receivers += [f"L{layer}KV{g}.k" for g in range(G)]
            receivers += [f"L{layer}KV{g}.v" for g in range(G)]
            prefix += [n_before] * (H + 2 * G)
            senders += [f"L{layer}H{h}" for h in range(H)]
            if info.has_mlp:
                receivers.append(f"MLP{layer}")
                prefix.append(len(senders))
                senders.append(f"MLP{layer}")
        receivers.append("logits")
        prefix.append(len(senders))
        return cls(info, tuple(senders), tuple(receivers), tuple(prefix),
                   {s: i for i, s in enumerate(senders)}, {r: i for i, r in enumerate(receivers)})

    @property
    def n_senders(self) -> int:
        """Number of senders (input, heads, MLPs)."""
        return len(self.senders)

    @property
    def n_receivers(self) -> int:
        """Number of receivers (q per query head, k and v per key/value head, MLP inputs, logits)."""
        return len(self.receivers)

    @property
    def n_edges(self) -> int:
        """Number of edges (sum of every receiver's sender count)."""
        return sum(self.prefix)

    @property
    def valid(self) -> Bool[Tensor, "n_senders n_receivers"]:
        """True where (sender, receiver) is an edge of the graph."""
        s = torch.arange(self.n_senders)[:, None]
        return s < torch.tensor(self.prefix)[None, :]

    # -- names <-> indices ------------------------------------------------------------------------------------
    def sender_index(self, name: str) -> int:
        """Index of sender ``name``.

        Raises:
            CircuitError: not a sender of this graph.
        """
        try:
            return self._sender_index[name]
        except KeyError:
            raise CircuitError(f"{name!r} is not a sender of {self.info.name}'s graph; senders are 'input', "
                               f"'L{{l}}H{{h}}' and 'MLP{{l}}' (e.g. {self.senders[1]!r})") from None

    def receiver_index(self, name: str) -> int:
        """Index of receiver ``name``.

        Raises:
            CircuitError: not a receiver of this graph.
        """
        try:
            return self._receiver_index[name]
        except KeyError:
            raise CircuitError(f"{name!r} is not a receiver of {self.info.name}'s graph; receivers are "
                               "'L{l}H{h}.q', 'L{l}KV{g}.k', 'L{l}KV{g}.v', 'MLP{l}' and 'logits'") from None

    def edge_index(self, edge: str) -> tuple[int, int]:
        """(sender index, receiver index) of ``"sender->receiver"``.

        Raises:
            CircuitError: malformed name, unknown node, or a pair that is not an edge (receiver before sender).
        """
        parts = edge.split("->")
        if len(parts) != 2:
            raise CircuitError(f"edge names look like 'L0H1->L3H2.q' (got {edge!r})")
        s, r = self.sender_index(parts[0]), self.receiver_index(parts[1])
        if s >= self.prefix[r]:
            raise CircuitError(f"{edge!r} is not an edge: {parts[0]} runs after {parts[1]} reads the residual stream")
        return s, r

    def edge_name(self, s: int, r: int) -> str:
        """``"sender->receiver"`` for sender index ``s`` and receiver index ``r``."""
        return f"{self.senders[s]}->{self.receivers[r]}"

    def edge_names(self) -> list[str]:
        """Every edge name, receiver-major (receivers in order, each with its senders in order)."""
        return [self.edge_name(s, r) for r in range(self.n_receivers) for s in range(self.prefix[r])]

    def mask(self, edges: Iterable[str]) -> Bool[Tensor, "n_senders n_receivers"]:
        """Boolean matrix with True at the named edges.

        Raises:
            CircuitError: an unknown or impossible edge.
        """
        m = torch.zeros(self.n_senders, self.n_receivers, dtype=torch.bool)
        for e in edges:
            m[self.edge_index(e)] = True
        return m

    def receiver_node(self, r: int) -> str:
        """The node a receiver belongs to: ``L3H2.q`` -> ``L3H2``; ``L3KV1.k`` -> ``L3KV1``; ``MLP3``; ``logits``."""
        return self.receivers[r].split(".")[0]

    def heads_of_receiver(self, r: int) -> list[str]:
        """Head nodes whose computation reads receiver ``r`` (all query heads of a key/value group)."""
        name = self.receivers[r]
        if ".q" in name or name in ("logits",) or name.startswith("MLP"):
            return [name.split(".")[0]] if ".q" in name else []
        layer, g = name[1:].split(".")[0].split("KV")
        per = self.info.n_heads // self.info.n_kv_heads
        return [f"L{layer}H{h}" for h in range(int(g) * per, (int(g) + 1) * per)]

    def layer_groups(self) -> list[tuple[int, str, list[int]]]:
        """Receivers grouped as the runner corrects them: (layer, kind in q/k/v/mlp/logits, receiver indices)."""
        out = []
        i = 0
        H, G = self.info.n_heads, self.info.n_kv_heads
        for layer in range(self.info.n_layers):
            out.append((layer, "q", list(range(i, i + H))))
            out.append((layer, "k", list(range(i + H, i + H + G))))
            out.append((layer, "v", list(range(i + H + G, i + H + 2 * G))))
            i += H + 2 * G
            if self.info.has_mlp:
                out.append((layer, "mlp", [i]))
                i += 1
        out.append((self.info.n_layers, "logits", [i]))
        return out

    def prune_dangling(self, kept: Bool[Tensor, "n_senders n_receivers"]) -> Bool[Tensor, "n_senders n_receivers"]:
        """``kept`` without the edges into nodes that send no kept edge (their output is ablated everywhere, so what
        they receive cannot reach the logits): removing these edges leaves every metric of the circuit unchanged.
        A key/value receiver is dangling when no query head of its group sends a kept edge."""
        kept = kept.clone()
        changed = True
        while changed:
            changed = False
            sends = kept.any(1)
            for r in range(self.n_receivers - 1):
                if not kept[:, r].any():
                    continue
                heads = self.heads_of_receiver(r)
                nodes = heads if heads else [self.receiver_node(r)]
                if not any(bool(sends[self._sender_index[n]]) for n in nodes):
                    kept[:, r] = False
                    changed = True
        return kept

    def sender_slice(self, layer: int) -> tuple[int, int]:
        """Sender index range [start, stop) of block ``layer``'s heads."""
        stride = self.info.n_heads + (1 if self.info.has_mlp else 0)
        start = 1 + layer * stride
        return start, start + self.info.n_heads

    def layout(self) -> edge_ops.Layout:
        """The graph as plain data (:class:`attnlab.edge_ops.Layout`), for the edge-level programs that run where
        the model is."""
        L = self.info.n_layers
        return edge_ops.Layout(
            n_senders=self.n_senders, n_layers=L, d_model=self.info.d_model, groups=self.layer_groups(),
            prefix=self.prefix, head_senders=[self.sender_slice(layer) for layer in range(L)],
            mlp_senders=[self._sender_index.get(f"MLP{layer}") for layer in range(L)])


def estimate_memory_mb(info: ModelInfo, n_prompts: int, n_pos: int, *, mode: str = "ablate",
                       n_variants: int = 1) -> float:
    """Rough peak memory, in MiB, of one batched graph pass (float32): :func:`attnlab.memory.edge_pass_mb`.

    Args:
        info: the model.
        n_prompts: prompts per pass; n_pos: tokens per prompt.
        mode: ``"ablate"`` (a no-grad pass with edge ablation: one sender-delta buffer per row) or ``"gradient"``
            (a pass that keeps autograd for EAP: the per-receiver input copies, their gradients and the activations
            of the whole pass).
        n_variants: circuits sharing the pass (rows = n_variants * n_prompts).

    Returns:
        MiB (an estimate, good to a factor of about 2).

    Raises:
        CircuitError: unknown ``mode``.
    """
    if mode not in ("ablate", "gradient"):
        raise CircuitError(f"'mode' must be 'ablate' or 'gradient' (got {mode!r})")
    return memory.edge_pass_mb(info, n_prompts, n_pos, mode=mode, n_variants=n_variants)


# -- ablation sources ------------------------------------------------------------------------------------------
@dataclass
class AblationSource:
    """What an ablated edge carries instead of its sender's output: per-sender values, grouped.

    Attributes:
        values: Float[n_groups, pos, n_senders, d_model] sender outputs on the source (a mean per group and
            position, or one group per prompt for the corrupted run itself).
        index: Int[batch] the group of each prompt.
        kind: ``"mean"`` (mean over the corrupted distribution) or ``"corrupted"`` (the corrupted run, patching).
        description: provenance (grouping, number of prompts).
    """

    values: Tensor
    index: Tensor
    kind: str
    description: dict = field(default_factory=dict)

    def per_prompt(self, rows: Tensor | None = None) -> Float[Tensor, "batch pos n_senders d_model"]:
        """The source's sender outputs for each prompt (``rows`` of the dataset, default all)."""
        idx = self.index if rows is None else self.index[rows]
        return self.values[idx]


def template_groups(dataset: PatchingDataset) -> tuple[Int[Tensor, " batch"], list]:
    """Group prompts by template, as Wang et al. compute per-template means: (group per prompt, group keys).

    Uses ``metadata["prompt_templates"]`` (and ``"prompt_orders"``: ABBA and BABA put names at different positions)
    when present; otherwise every prompt is in one group.
    """
    meta = dataset.metadata
    templates = meta.get("prompt_templates")
    if not templates or len(templates) != len(dataset):
        return torch.zeros(len(dataset), dtype=torch.long), ["all"]
    orders = meta.get("prompt_orders") or [""] * len(dataset)
    keys = [f"{t}{o}" for t, o in zip(templates, orders)]
    uniq = sorted(set(keys))
    return torch.tensor([uniq.index(k) for k in keys], dtype=torch.long), uniq


def corrupted_source(runner: "GraphRunner", dataset: PatchingDataset, *, batch_size: int = 16) -> AblationSource:
    """Ablation source = the corrupted run itself (each prompt gets its own corrupted prompt's sender outputs).

    This is patching: an ablated edge carries the sender's output on the corrupted prompt (ACDC's default;
    Conmy et al. 2023, section 2).
    """
    values, index = runner.program("ablation_source", corrupted=dataset.corrupted_tokens, kind="corrupted",
                                   index=None, n_groups=len(dataset), batch_size=batch_size)
    return AblationSource(values, index, "corrupted", {"n_prompts": len(dataset)})


def mean_source(runner: "GraphRunner", dataset: PatchingDataset, *, per_template: bool = True,
                batch_size: int = 16) -> AblationSource:
    """Ablation source = mean sender outputs over the corrupted prompts, per position (and per template).

    Following Wang et al. 2022 (section 3.1 and appendix), means are taken over the corrupted distribution (ABC for
    IOI) separately for each template, so that each position holds the same kind of token in every prompt averaged.

    Args:
        runner: the graph runner.
        dataset: clean/corrupted pairs; the corrupted prompts are averaged.
        per_template: group by ``metadata["prompt_templates"]`` (and order) when present; False = one mean.
        batch_size: prompts per forward pass.

    Returns:
        An :class:`AblationSource` of kind ``"mean"`` with one group per template.
    """
    if per_template:
        index, keys = template_groups(dataset)
    else:
        index, keys = torch.zeros(len(dataset), dtype=torch.long), ["all"]
    values, index = runner.program("ablation_source", corrupted=dataset.corrupted_tokens, kind="mean", index=index,
                                   n_groups=len(keys), batch_size=batch_size)
    return AblationSource(values, index, "mean", {"groups": keys, "n_prompts": len(dataset),
                                                 "per_template": per_template})


# -- the runner --------------------------------------------------------------------------------------------------
@dataclass
class GraphRun:
    """What :meth:`GraphRunner.run` returns.

    Attributes:
        logits: Float[rows, d_vocab] at ``logits_at`` (or Float[rows, pos, d_vocab] without it).
        senders: Float[rows, pos, n_senders, d_model] sender outputs (only with ``record=True``).
        inputs: receiver inputs kept for autograd, ``{(layer, kind): tensor}`` (only with ``capture=True``):
            q Float[rows, pos, n_heads, d_model], k/v Float[rows, pos, n_kv_heads, d_model], mlp and logits
            Float[rows, pos, d_model].
    """

    logits: Tensor
    senders: Tensor | None = None
    inputs: dict = field(default_factory=dict)


class GraphRunner:
    """Runs a model as a graph of edges, ablating any set of edges exactly.

    The correction algebra is :class:`attnlab.edge_ops.EdgeAblation`; the receiver-split pass itself is the
    backend's (:meth:`~attnlab.backends.base.Backend.edge_runner`, :mod:`attnlab.backends.edges`). Whole analyses
    (EAP, EAP-IG, circuit evaluation) run as programs (:meth:`program`): where the model is, in one job on a remote
    server.

    Args:
        model: a :class:`~attnlab.backends.Backend` with ``Capability.EDGE_GRAPH`` (single passes from here:
            TransformerLens, nnsight locally), or, with ``need=Capability.EDGE_PROGRAMS``, a backend that runs
            whole edge-level programs (also a remote nnsight model).
        graph: the graph (default :meth:`Graph.from_info` of the model).
        need: the capability the analysis needs (``EDGE_GRAPH`` for analyses that make single passes: ACDC, path
            patching; ``EDGE_PROGRAMS`` for EAP, EAP-IG and the circuit evaluations).

    Raises:
        CapabilityError: the backend lacks ``need``, or the attention has no separate q/k/v projections.
        CircuitError: the graph is of another model.
    """

    def __init__(self, model: Backend, graph: Graph | None = None, *,
                 need: Capability = Capability.EDGE_GRAPH) -> None:
        check_model(model, "edge-level circuit analyses")
        model.require(need, "edge-level circuit analyses")
        self.model = model
        self.info = model.info
        self.graph = graph or Graph.from_info(model.info)
        if not same_architecture(self.graph.info, model.info):
            raise CircuitError(f"graph is for {self.graph.info.name}, model is {model.info.name}")
        self.edges = model.edge_runner()
        self.layout = self.graph.layout()

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """The model's tokenizer fingerprint (:attr:`Backend.tokenizer_fingerprint`): a runner checks datasets as
        its model does."""
        return self.model.tokenizer_fingerprint

    @property
    def local(self) -> bool:
        """Whether single passes (:meth:`run`) can be made from here (False: a remote model, programs only)."""
        return Capability.EDGE_GRAPH in self.model.capabilities

    def program(self, name: str, *, progress=None, **args):
        """Run the edge-level program ``name`` of :mod:`attnlab.edge_ops` on this graph, where the model is (one job
        on a remote server). ``progress``: a tqdm-like bar updated once per pass (locally), or None."""
        return self.edges.program(name, {"layout": self.layout, **args}, progress=progress)

    # -- recording ------------------------------------------------------------------------------------------
    def sender_outputs(self, tokens: Int[Tensor, "batch pos"], *, batch_size: int = 16
                       ) -> Float[Tensor, "batch pos n_senders d_model"]:
        """Every sender's output on ``tokens`` (no ablation), in d_model space; batched over prompts.

        Args:
            tokens: Int[batch, pos] prompts.
            batch_size: prompts per forward pass.

        Returns:
            Float[batch, pos, n_senders, d_model]: the embeddings, each head's ``z_h W_O^h`` and each MLP's output.
        """
        return self.program("sender_outputs", tokens=tokens, batch_size=batch_size)

    # -- the pass -------------------------------------------------------------------------------------------
    def run(
        self,
        tokens: Int[Tensor, "batch pos"],
        *,
        ablate: Bool[Tensor, "... n_senders n_receivers"] | None = None,
        source: AblationSource | None = None,
        source_rows: Int[Tensor, " batch"] | None = None,
        logits_at: Int[Tensor, " batch"] | None = None,
        record: bool = False,
        capture: bool = False,
        input_embed: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> GraphRun:
        """One forward pass with the edges in ``ablate`` ablated.

        Args:
            tokens: Int[batch, pos] prompts.
            ablate: Bool[n_senders, n_receivers] edges to ablate, or Bool[n_variants, n_senders, n_receivers]: the
                batch is repeated once per variant (variant v in rows [v*batch, (v+1)*batch)), each with its edges.
                None or all False: the model's own forward pass.
            source: what ablated edges carry (:func:`mean_source`, :func:`corrupted_source`); needed with ``ablate``.
            source_rows: Int[batch] which of the source's prompts each row of ``tokens`` is (default 0..batch-1).
            logits_at: Int[batch] position per prompt at which to return logits (END); None: every position.
            record: return every sender's output (Float[rows, pos, n_senders, d_model]).
            capture: keep autograd and return each receiver's input (see :class:`GraphRun`), recomputing every
                head's q/k/v from its own copy of the residual stream so that gradients are per receiver.
            input_embed: Float[batch, pos, d_model] replaces the residual stream entering block 0 (EAP-IG's
                interpolated embeddings).

        Returns:
            A :class:`GraphRun`.

        Raises:
            CircuitError: ``ablate`` of the wrong shape, ablating edges that are not in the graph, or no source.
            CapabilityError: a remote model (single passes call attnlab's callbacks inside the trace; use the
                analyses that run as programs).
        """
        masks, n_var, src = self._plan(tokens, ablate, source, source_rows)
        ablation = edge_ops.EdgeAblation(self.layout, masks, src, n_var, *tokens.shape, record=record,
                                         capture=capture, input_embed=input_embed)
        logits = self.edges.run(tokens.repeat(n_var, 1), ablation, grad=capture,
                                logits_at=None if logits_at is None else logits_at.repeat(n_var))
        senders = None if ablation.acts is None else ablation.acts.permute(1, 2, 0, 3)
        return GraphRun(logits=logits, senders=senders, inputs=ablation.inputs)

    def _plan(self, tokens: Tensor, ablate: Tensor | None, source: AblationSource | None,
              source_rows: Tensor | None) -> tuple[Tensor | None, int, Tensor | None]:
        """Validate a :meth:`run` request: (Bool[n_var or 1, S, R] masks or None, variants stacked,
        Float[S, batch, pos, D] the ablation source per prompt or None)."""
        g = self.graph
        batch, n_pos = tokens.shape
        n_var, masks = 1, None
        if ablate is not None:
            if ablate.shape[-2:] != (g.n_senders, g.n_receivers):
                raise CircuitError(f"'ablate' must end in ({g.n_senders}, {g.n_receivers}) (got {tuple(ablate.shape)})")
            masks = ablate.reshape(-1, g.n_senders, g.n_receivers).bool()
            if (masks & ~g.valid).any():
                raise CircuitError("'ablate' marks pairs that are not edges of the graph (a receiver before its "
                                   "sender); build masks with graph.mask(...) or inside graph.valid")
            n_var = masks.shape[0] if ablate.ndim == 3 else 1
            if not masks.any():
                masks = None
            elif source is None:
                raise CircuitError("ablating edges needs source= (mean_source(...) or corrupted_source(...))")
        src = None
        if masks is not None:
            sr = torch.arange(batch) if source_rows is None else source_rows
            src = source.per_prompt(sr)  # [batch, pos, S, D]
            if src.shape[1] != n_pos or src.shape[0] != batch:
                raise CircuitError(f"the ablation source gives {tuple(src.shape[:2])} (prompts, positions) for "
                                   f"prompts of shape {(batch, n_pos)}; build it from the same dataset")
            src = src.permute(2, 0, 1, 3).contiguous()  # [S, batch, pos, D]
        return masks, n_var, src


def check_budget(what: str, needed_mb: float, budget_mb: float | int | None, hint: str) -> None:
    """:func:`attnlab.memory.check_budget`, with a :class:`CircuitError` for a malformed budget.

    Raises:
        CircuitError: ``budget_mb`` is not a positive number.
        MemoryBudgetError: ``needed_mb`` exceeds ``budget_mb`` (None = no limit).
    """
    try:
        memory.check_budget(what, needed_mb, budget_mb, hint)
    except MemoryBudgetError:
        raise
    except ValueError as exc:
        raise CircuitError(str(exc)) from None


def split_rows(n: int, size: int) -> Sequence[tuple[int, int]]:
    """[(start, stop)] chunks of ``range(n)`` of at most ``size``."""
    return edge_ops.split_rows(n, size)
