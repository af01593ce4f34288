"""Comparing circuits across tasks: which attention heads two circuits share, and in which roles.

Context:
    Merullo, Eickhoff & Pavlick 2023 ("Circuit Component Reuse Across Tasks in Transformer Language Models",
    arXiv 2310.08744) find the circuit GPT2-medium uses for Colored Objects and compare it with its IOI circuit:
    78% of the Colored Objects circuit's in-circuit heads are also in the IOI circuit, in similar roles (mover
    heads, inhibition heads, induction / duplicate-token heads). Their overlap number is *asymmetric*: the fraction
    of one circuit's heads found in the other. This module computes it in both directions, together with the
    symmetric Jaccard index ``|A & B| / |A | B|``, and lines the two circuits up head by head with the roles each
    task's analysis gave them (e.g. "name mover", "S-inhibition" from IOI patching).

A circuit is anything with a ``.heads`` attribute listing ``(layer, head)`` pairs (such as the circuit-discovery
results of :mod:`attnlab.circuits`), or any iterable of ``(layer, head)`` pairs. Only heads are compared: MLPs and
edges are ignored here.

Example:
    >>> cmp = compare_circuits([(9, 9), (9, 6), (7, 3)], [(9, 9), (7, 3), (5, 5), (3, 0)], names=("IOI", "CO"))
    >>> cmp.n_shared, cmp.overlap_b_in_a, cmp.jaccard
    (2, 0.5, 0.4)
"""

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from attnlab import serialisation
from attnlab.errors import CircuitComparisonError

__all__ = ["CircuitComparison", "CircuitComparisonError", "circuit_heads", "compare_circuits"]

Head = tuple[int, int]

_HEAD_RE = re.compile(r"^L(\d+)H(\d+)$")


def _parse_head(item, what: str) -> Head:
    """A ``(layer, head)`` pair from a pair of ints or a ``"L9H9"`` string."""
    if isinstance(item, str):
        m = _HEAD_RE.match(item.strip())
        if m:
            return int(m.group(1)), int(m.group(2))
    elif (isinstance(item, (tuple, list)) and len(item) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in item)):
        return int(item[0]), int(item[1])
    raise CircuitComparisonError(f"{what} must be (layer, head) pairs of non-negative ints or 'L{{layer}}H{{head}}' "
                                 f"strings (got {item!r})")


def circuit_heads(circuit, what: str = "circuit") -> list[Head]:
    """The sorted, de-duplicated ``(layer, head)`` pairs of a circuit object (``.heads``) or an iterable of pairs.

    Raises:
        CircuitComparisonError: not iterable, or an entry that is not a (layer, head) pair.
    """
    heads = getattr(circuit, "heads", circuit)
    if callable(heads):
        heads = heads()
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
        raise CircuitComparisonError(f"{what} must have a .heads list or be an iterable of (layer, head) pairs "
                                     f"(got {type(circuit).__name__})")
    return sorted({_parse_head(h, f"{what}'s heads") for h in heads})


def _roles(roles: Mapping | None, what: str) -> dict[Head, str]:
    if roles is None:
        return {}
    if not isinstance(roles, Mapping):
        raise CircuitComparisonError(f"{what} must be a dict head -> role (got {type(roles).__name__})")
    out = {}
    for head, role in roles.items():
        if not isinstance(role, str):
            raise CircuitComparisonError(f"{what}: the role of {head!r} must be a string (got {role!r})")
        out[_parse_head(head, f"{what} keys")] = role
    return out


def _name(head: Head) -> str:
    return f"L{head[0]}H{head[1]}"


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


@dataclass
class CircuitComparison(serialisation.Saved):
    """Head overlap of two circuits A and B.

    Attributes:
        names: display names of A and B (e.g. ``("IOI", "Colored Objects")``).
        heads_a, heads_b: each circuit's heads, sorted ``(layer, head)`` pairs.
        roles_a, roles_b: role of each head in its own task, where given (``{(layer, head): "name mover"}``).

    Derived numbers (properties): ``shared``, ``only_a``, ``only_b``, ``n_shared``, ``jaccard``
    (``|A & B| / |A | B|``), ``overlap_a_in_b`` (fraction of A's heads that are also in B: Merullo et al.'s
    overlap when A is the circuit being explained) and ``overlap_b_in_a``. Ratios over an empty circuit are NaN.
    """

    _record = serialisation.CIRCUIT_COMPARISON


    names: tuple[str, str]
    heads_a: list[Head]
    heads_b: list[Head]
    roles_a: dict[Head, str] = field(default_factory=dict)
    roles_b: dict[Head, str] = field(default_factory=dict)

    @property
    def shared(self) -> list[Head]:
        """Heads in both circuits, sorted."""
        return sorted(set(self.heads_a) & set(self.heads_b))

    @property
    def only_a(self) -> list[Head]:
        return sorted(set(self.heads_a) - set(self.heads_b))

    @property
    def only_b(self) -> list[Head]:
        return sorted(set(self.heads_b) - set(self.heads_a))

    @property
    def n_shared(self) -> int:
        return len(self.shared)

    @property
    def jaccard(self) -> float:
        """|A & B| / |A | B| (NaN when both are empty)."""
        return _ratio(self.n_shared, len(set(self.heads_a) | set(self.heads_b)))

    @property
    def overlap_a_in_b(self) -> float:
        """Fraction of A's heads that are also in B (Merullo et al. 2023's overlap of A with B; NaN if A is empty)."""
        return _ratio(self.n_shared, len(self.heads_a))

    @property
    def overlap_b_in_a(self) -> float:
        """Fraction of B's heads that are also in A (NaN if B is empty)."""
        return _ratio(self.n_shared, len(self.heads_b))

    def shared_roles(self) -> dict[str, tuple[str | None, str | None]]:
        """For each shared head (``"L9H9"``), its role in A and in B (None where no role was given)."""
        return {_name(h): (self.roles_a.get(h), self.roles_b.get(h)) for h in self.shared}

    def table(self):
        """Side-by-side DataFrame, one row per head of either circuit, sorted by (layer, head): ``head``
        (``"L9H9"``), ``layer``, ``head_index``, ``in_<A>``, ``in_<B>`` (bool), ``role_<A>``, ``role_<B>``
        (str; missing where no role was given), ``shared`` (bool)."""
        import pandas as pd

        a, b = set(self.heads_a), set(self.heads_b)
        na, nb = self.names
        rows = [{"head": _name(h), "layer": h[0], "head_index": h[1], f"in_{na}": h in a, f"in_{nb}": h in b,
                 f"role_{na}": self.roles_a.get(h), f"role_{nb}": self.roles_b.get(h), "shared": h in a and h in b}
                for h in sorted(a | b)]
        columns = ["head", "layer", "head_index", f"in_{na}", f"in_{nb}", f"role_{na}", f"role_{nb}", "shared"]
        return pd.DataFrame(rows, columns=columns)

    def summary(self) -> dict:
        """The headline numbers: sizes, shared count, Jaccard and both overlaps (JSON-serialisable; NaN as None)."""
        clean = lambda x: None if isinstance(x, float) and math.isnan(x) else x  # noqa: E731
        return {"names": list(self.names), "n_a": len(self.heads_a), "n_b": len(self.heads_b),
                "n_shared": self.n_shared, "jaccard": clean(self.jaccard),
                "overlap_a_in_b": clean(self.overlap_a_in_b), "overlap_b_in_a": clean(self.overlap_b_in_a),
                "shared": [_name(h) for h in self.shared]}

    def to_dict(self) -> dict:
        """JSON-serialisable: the inputs (heads as ``"L9H9"``) plus :meth:`summary` (the
        ``attnlab.circuit_comparison`` record, format version 1)."""
        return {
            **serialisation.CIRCUIT_COMPARISON.header(),
            "names": list(self.names),
            "heads_a": [_name(h) for h in self.heads_a], "heads_b": [_name(h) for h in self.heads_b],
            "roles_a": {_name(h): r for h, r in sorted(self.roles_a.items())},
            "roles_b": {_name(h): r for h, r in sorted(self.roles_b.items())},
            "summary": self.summary(),
        }

    @classmethod
    def _from_content(cls, data: dict) -> "CircuitComparison":
        return compare_circuits(data["heads_a"], data["heads_b"], names=tuple(data["names"]),
                                roles_a=data.get("roles_a"), roles_b=data.get("roles_b"))


    def __repr__(self) -> str:
        na, nb = self.names
        return (f"<CircuitComparison {na} ({len(self.heads_a)} heads) vs {nb} ({len(self.heads_b)} heads): "
                f"{self.n_shared} shared, Jaccard {self.jaccard:.2f}, {na} in {nb} {self.overlap_a_in_b:.0%}, "
                f"{nb} in {na} {self.overlap_b_in_a:.0%}>")

    def plot(self, ax=None, **kw):
        """Draw a layer x head grid: heads of A only, B only, both with matplotlib.

        The drawing is :func:`attnlab.plotting.plot_circuit_comparison`; its options pass through ``kw``.

        Args:
            ax: a matplotlib Axes to draw into (default: a new figure, 3.4 in wide for a paper column).
            **kw: n_layers, n_heads, width, height, title.

        Returns:
            matplotlib.figure.Figure (``fig.savefig("figure.pdf")`` saves it).
        """
        from attnlab.plotting import plot_circuit_comparison

        return plot_circuit_comparison(self, ax, **kw)


def compare_circuits(
    a,
    b,
    *,
    names: tuple[str, str] = ("A", "B"),
    roles_a: Mapping | None = None,
    roles_b: Mapping | None = None,
) -> CircuitComparison:
    """Compare the heads of two circuits (Merullo et al. 2023, section 4: component reuse across tasks).

    Args:
        a, b: circuits: objects with a ``.heads`` list of ``(layer, head)`` pairs, or iterables of such pairs (or
            ``"L9H9"`` strings).
        names: display names of the two circuits (used as column suffixes of :meth:`CircuitComparison.table`).
        roles_a, roles_b: optional ``{head: role}`` for each circuit, heads as pairs or ``"L9H9"`` strings, e.g.
            ``{(9, 9): "name mover", (7, 3): "S-inhibition"}``. Roles of heads outside the circuit are kept (they
            show which role a head had in its own task) but only in-circuit heads appear in the table.

    Returns:
        A :class:`CircuitComparison`.

    Raises:
        CircuitComparisonError: a circuit or role table that is not made of (layer, head) pairs; two equal names.
    """
    if (not isinstance(names, (tuple, list)) or len(names) != 2 or not all(isinstance(n, str) and n for n in names)
            or names[0] == names[1]):
        raise CircuitComparisonError(f"'names' must be two different non-empty strings (got {names!r})")
    return CircuitComparison(
        names=(names[0], names[1]),
        heads_a=circuit_heads(a, f"circuit {names[0]!r}"),
        heads_b=circuit_heads(b, f"circuit {names[1]!r}"),
        roles_a=_roles(roles_a, "roles_a"),
        roles_b=_roles(roles_b, "roles_b"),
    )
