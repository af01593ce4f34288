"""Typed addresses of activations inside a transformer.

A :class:`Site` names one activation (kind, layer) and optionally narrows it to one attention head and/or one
token position. Analyses address activations only through sites; each backend maps a site to its own hook name
(TransformerLens) or module path (nnsight). Head indices are always *query* heads: on grouped-query models
(SmolLM2-135M: 9 query heads sharing 3 key/value heads) ``head`` ranges over the 9 query heads for ``z`` and
``pattern``, and over the key/value heads for ``k`` and ``v``.

Activation shapes by kind (``batch pos`` first, as in TransformerLens):

=============  =====================================  ===========================================
kind           shape                                  meaning
=============  =====================================  ===========================================
resid_pre      [batch, pos, d_model]                  residual stream entering block ``layer``
resid_mid      [batch, pos, d_model]                  after attention, before the MLP
resid_post     [batch, pos, d_model]                  residual stream leaving block ``layer``
attn_out       [batch, pos, d_model]                  attention output written to the residual stream
mlp_out        [batch, pos, d_model]                  MLP output written to the residual stream
z              [batch, pos, head_index, d_head]       each head's output before the output projection
pattern        [batch, head_index, dest_pos, src_pos] attention probabilities
q              [batch, pos, head_index, d_head]       queries (one per query head)
k, v           [batch, pos, kv_head_index, d_head]    keys and values (one per key/value head)
=============  =====================================  ===========================================
"""

from dataclasses import dataclass
from enum import Enum

from attnlab.errors import SiteError

__all__ = ["Site", "SiteKind", "as_int", "index_list"]


class SiteKind(str, Enum):
    """The kinds of activation a :class:`Site` can address."""

    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    MLP_OUT = "mlp_out"
    Z = "z"
    PATTERN = "pattern"
    Q = "q"
    K = "k"
    V = "v"

    @property
    def has_heads(self) -> bool:
        """Whether activations of this kind have a head axis."""
        return self in (SiteKind.Z, SiteKind.PATTERN, SiteKind.Q, SiteKind.K, SiteKind.V)

    @property
    def head_axis(self) -> int | None:
        """Index of the head axis in the activation tensor, or None."""
        if self is SiteKind.PATTERN:
            return 1
        return 2 if self.has_heads else None


@dataclass(frozen=True, order=True)
class Site:
    """One activation: ``kind`` at ``layer``, optionally one ``head`` and/or one token ``position``.

    Args:
        kind: a :class:`SiteKind` or its string value (``"z"``, ``"resid_pre"`` ...).
        layer: block index, 0-based.
        head: query-head index for head kinds (key/value-head index for ``k`` and ``v``); None for all heads.
        position: token position (destination position for ``pattern``); None for all positions.

    Raises:
        SiteError: ``head`` given for a kind with no head axis, or a negative layer/head/position.

    Example:
        >>> Site("z", 9, head=9).name
        'L9H9'
    """

    kind: SiteKind
    layer: int
    head: int | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", SiteKind(self.kind))
        except ValueError:
            kinds = ", ".join(k.value for k in SiteKind)
            raise SiteError(f"unknown site kind {self.kind!r}; expected one of: {kinds}") from None
        for field in ("layer", "head", "position"):
            value = getattr(self, field)
            if value is None and field != "layer":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SiteError(f"'{field}' must be a non-negative int (got {value!r})")
        if self.head is not None and not self.kind.has_heads:
            raise SiteError(f"site kind {self.kind.value!r} has no head axis, but head={self.head} was given")

    @property
    def name(self) -> str:
        """Short label: ``L9H9`` for a head, ``L9`` otherwise, with ``@p`` for a position."""
        label = f"L{self.layer}" + (f"H{self.head}" if self.head is not None else "")
        if self.kind not in (SiteKind.Z,) and self.head is None:
            label = f"{self.kind.value}:{label}"
        return label + (f"@{self.position}" if self.position is not None else "")

    def validate(self, n_layers: int, n_heads: int, n_kv_heads: int | None = None) -> "Site":
        """Check the site against a model's dimensions and return it.

        Raises:
            SiteError: layer not in [0, n_layers) or head not in [0, n_heads).
        """
        if not 0 <= self.layer < n_layers:
            raise SiteError(f"'layer' must be in [0, {n_layers}) (got {self.layer})")
        if self.head is not None:
            limit = n_kv_heads if self.kind in (SiteKind.K, SiteKind.V) and n_kv_heads else n_heads
            if not 0 <= self.head < limit:
                raise SiteError(f"'head' must be in [0, {limit}) for kind {self.kind.value!r} (got {self.head})")
        return self


def as_int(x) -> int | None:
    """``x`` as a Python int when it is an integer of any kind (Python, numpy, a one-element integer torch tensor),
    else None. Booleans are not integers here (``True`` as a layer is a mistake)."""
    import numbers

    if isinstance(x, bool):
        return None
    if isinstance(x, numbers.Integral):
        return int(x)
    dtype = getattr(x, "dtype", None)
    if dtype is not None and getattr(x, "numel", lambda: getattr(x, "size", 0))() == 1:
        if getattr(dtype, "is_floating_point", None) is False and not getattr(dtype, "is_complex", False) \
                and str(dtype) != "torch.bool":
            return int(x.item())  # a torch integer tensor
        if getattr(dtype, "kind", None) in ("i", "u"):
            return int(x.item())  # a numpy integer array of one element
    return None


def index_list(name: str, values) -> list:
    """``values`` (a list, tuple, range, numpy array or torch tensor of integers) as a list of Python ints.

    Raises:
        SiteError: not a sequence of integers (names the first bad entry).
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        if as_int(values) is not None:
            raise SiteError(f"'{name}' must be a list of ints (got the single value {values!r}: use [{values!r}])")
        raise SiteError(f"'{name}' must be a list of ints (got {type(values).__name__} {values!r})")
    if getattr(values, "ndim", 1) != 1:
        raise SiteError(f"'{name}' must be a flat list of ints (got an array of shape {tuple(values.shape)})")
    out = []
    for v in values:
        i = as_int(v)
        if i is None:
            raise SiteError(f"'{name}' must hold ints (got {v!r} of type {type(v).__name__})")
        out.append(i)
    return out
