"""A circuit: a set of scored edges of a model's graph, with provenance, saved as exact JSON.

A circuit is what a discovery method (EAP, EAP-IG, ACDC) returns and what :mod:`attnlab.circuits.evaluate`
tests: everything outside it gets ablated. Nodes are derived from the edges: every sender of an edge (``input``,
``L{l}H{h}``, ``MLP{l}``) and every receiving node (``L{l}H{h}`` for a query input, ``L{l}KV{g}`` for a key/value
input of a grouped-query model, ``MLP{l}``, ``logits``).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from attnlab import serialisation
from attnlab.circuits.graph import CircuitError, Graph

__all__ = ["Circuit", "circuit_from_scores"]

_HEAD = re.compile(r"^L(\d+)H(\d+)$")


@dataclass
class Circuit(serialisation.Saved):
    """A set of edges with their scores.

    Attributes:
        model: the model's ``ModelInfo.to_dict()``.
        task: the dataset's ``describe()`` (task, size, seed, corruption ...).
        edges: ``[(edge name, score)]``, sorted by decreasing |score|; scores in the units of the metric that
            produced them (logits for the default logit difference; see :attr:`metric` and the method's module).
        selection: how the edges were chosen, e.g. ``{"rule": "top_n", "n_edges": 200}`` or
            ``{"rule": "threshold", "threshold": 0.01}`` or ``{"rule": "acdc", "threshold": 0.05}``.
        provenance: method, steps, source of ablations, the metric (``provenance["metric"]``, a
            :meth:`attnlab.metrics.Metric.to_dict`), timings ...
    """

    _record = serialisation.CIRCUIT
    _save_options = {"indent": 1, "allow_nan": True}  # the layout of earlier circuit files


    model: dict
    task: dict
    edges: list[tuple[str, float]]
    selection: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    # -- derived ------------------------------------------------------------------------------------------------
    @property
    def edge_names(self) -> list[str]:
        return [name for name, _ in self.edges]

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def metric(self) -> dict | None:
        """The metric the edge scores measure (``{"name": "kl_div", "label": ..., ...}``), or None for a circuit
        saved without one (before metrics were recorded: those used the logit difference)."""
        return self.provenance.get("metric")

    @property
    def nodes(self) -> list[str]:
        """Sorted node names: senders of edges and receiving nodes (``L3H2``, ``L3KV1``, ``MLP3``, ``logits``)."""
        out = set()
        for name in self.edge_names:
            s, r = name.split("->")
            out.add(s)
            out.add(r.split(".")[0])
        return sorted(out, key=_node_key)

    @property
    def heads(self) -> list[tuple[int, int]]:
        """Sorted (layer, head) of every attention head among :attr:`nodes` (as sender or by its query input)."""
        heads = []
        for node in self.nodes:
            m = _HEAD.match(node)
            if m:
                heads.append((int(m.group(1)), int(m.group(2))))
        return sorted(heads)

    def top_edges(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` edges of largest |score|.

        Raises:
            CircuitError: ``n`` negative or not an int.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise CircuitError(f"'n' must be a non-negative integer (got {n!r})")
        return list(self.edges[:n])

    def mask(self, graph: Graph):
        """Bool[n_senders, n_receivers] of this circuit's edges in ``graph``.

        Raises:
            CircuitError: the graph is of another model, or an edge is not in it.
        """
        from attnlab.circuits.graph import same_architecture

        if not same_architecture(graph.info, self.model):
            raise CircuitError(f"circuit is for model {self.model.get('name')!r}, graph for {graph.info.name!r}")
        return graph.mask(self.edge_names)

    def pruned(self, graph: Graph) -> "Circuit":
        """The circuit without dangling edges (:meth:`Graph.prune_dangling`): same metrics, fewer edges.

        Raises:
            CircuitError: the graph is of another model.
        """
        kept = graph.prune_dangling(self.mask(graph))
        edges = [(e, s) for e, s in self.edges if kept[graph.edge_index(e)]]
        return Circuit(self.model, dict(self.task), edges, {**self.selection, "pruned_dangling": True,
                                                            "n_edges": len(edges)}, dict(self.provenance))

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict (the ``attnlab.circuit.v1`` record); :meth:`from_dict` inverts it exactly (floats
        round-trip through JSON)."""
        return {
            **serialisation.CIRCUIT.header(),
            "model": dict(self.model),
            "task": dict(self.task),
            "edges": [[name, float(score)] for name, score in self.edges],
            "selection": dict(self.selection),
            "provenance": dict(self.provenance),
        }

    @classmethod
    def _from_content(cls, d: dict) -> "Circuit":
        edges = []
        for entry in d["edges"]:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str) \
                    or isinstance(entry[1], bool) or not isinstance(entry[1], (int, float)):
                raise CircuitError(f"'edges' must be [edge name, score] pairs (got {entry!r})")
            edges.append((entry[0], float(entry[1])))
        return cls(model=d["model"], task=d["task"], edges=edges, selection=d.get("selection", {}),
                   provenance=d.get("provenance", {}))


    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """Jupyter display: labext's circuit view, a static HTML table elsewhere (:mod:`attnlab.render.circuit`)."""
        from attnlab.render.circuit import circuit_mime_bundle

        return circuit_mime_bundle(self)

    def to_html(self, path: str | Path, curve=None) -> Path:
        """Write a self-contained offline HTML report of this circuit (``curve``: its faithfulness curve)."""
        from attnlab.render.circuit import save_circuit_html

        return save_circuit_html(self, path, curve=curve)

    def __repr__(self) -> str:
        return (f"Circuit({self.model.get('name')!r}, task={self.task.get('task')!r}, {self.n_edges} edges, "
                f"{len(self.heads)} heads, selection={self.selection})")

    def plot(self, ax=None, **kw):
        """Draw the strongest edges as bars with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_circuit`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: n (edges shown, default 20), width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_circuit

        return plot_circuit(self, ax, **kw)


def _node_key(node: str) -> tuple:
    if node == "input":
        return (-1, 0, 0)
    if node == "logits":
        return (10**9, 0, 0)
    m = re.match(r"^L(\d+)(H|KV)(\d+)$", node)
    if m:
        return (int(m.group(1)), 0 if m.group(2) == "H" else 1, int(m.group(3)))
    m = re.match(r"^MLP(\d+)$", node)
    return (int(m.group(1)), 2, 0) if m else (10**9 - 1, 0, 0)


def circuit_from_scores(scores, *, n_edges: int | None = None, threshold: float | int | None = None,
                        provenance: dict | None = None) -> Circuit:
    """Build a circuit from :class:`~attnlab.circuits.eap.EdgeScores`: the top ``n_edges`` by |score|, or every
    edge with ``|score| >= threshold``.

    Args:
        scores: an :class:`~attnlab.circuits.eap.EdgeScores`.
        n_edges: keep this many edges (1 .. number of edges in the graph).
        threshold: keep edges with |score| >= threshold (the scores' units); must lie in (0, max |score|].
        provenance: extra provenance to record.

    Returns:
        A :class:`Circuit`.

    Raises:
        CircuitError: neither or both of ``n_edges`` and ``threshold``; ``n_edges`` out of range; ``threshold`` not
            positive, or above the largest |score| (the circuit would be empty).
    """
    if (n_edges is None) == (threshold is None):
        raise CircuitError("pass exactly one of n_edges= or threshold=")
    ranked = scores.edge_scores()
    if n_edges is not None:
        if isinstance(n_edges, bool) or not isinstance(n_edges, int) or not 1 <= n_edges <= len(ranked):
            raise CircuitError(f"'n_edges' must be an integer in [1, {len(ranked)}] (got {n_edges!r})")
        kept = ranked[:n_edges]
        selection = {"rule": "top_n", "n_edges": n_edges}
    else:
        top = abs(ranked[0][1]) if ranked else 0.0
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold <= top:
            raise CircuitError(f"'threshold' must be in (0, {top:.6g}] (the largest |score|) so that the circuit "
                               f"is not empty (got {threshold!r}); use n_edges= to choose a size instead")
        kept = [(e, s) for e, s in ranked if abs(s) >= threshold]
        selection = {"rule": "threshold", "threshold": float(threshold), "n_edges": len(kept)}
    prov = {"method": scores.method, "steps": scores.steps, "metric": dict(scores.metric),
            "clean_metric": scores.clean_metric,
            "corrupted_metric": scores.corrupted_metric, "seconds": scores.seconds, **(provenance or {})}
    return Circuit(model=scores.graph.info.to_dict(), task=dict(scores.task), edges=kept, selection=selection,
                   provenance=prov)
