"""The wire form of a pass: what the nnsight backend sends to a trace block (here, or on a server) is one immutable,
typed :class:`~attnlab.backends._nnsight_ops.WirePass` of tensors, ints and strings, never attnlab objects, and it
survives the trip through the server's unpickler (which refuses every attnlab name)."""

import dataclasses
import io

import cloudpickle
import pytest
import torch

from attnlab.backends import _nnsight_ops as wire_ops
from attnlab.backends.base import Intervention, Reduction
from attnlab.backends.nnsight_adapter import ServerUnpickler
from attnlab.sites import Site

pytestmark = pytest.mark.integration

WIRE_TYPES = (wire_ops.WirePass, wire_ops.PatchOp, wire_ops.RecordOp, wire_ops.MetricOp)


@pytest.fixture(scope="module")
def planned(embedded_nnsight):
    """A pass with every part: two recorded sites, a head intervention, END-only logits and a reduced metric."""
    model = embedded_nnsight
    tokens = model.to_tokens(["When Mary and John went to the store, John gave a drink to"] * 2)
    rows = torch.arange(2)
    values = torch.randn(2, tokens.shape[1], model.info.d_head)
    iv = Intervention("z", 3, rows=rows, heads=torch.tensor([1, 4]), values=values)
    end = torch.full((2,), tokens.shape[1] - 1)
    reduce = Reduction("logit_diff", answers=torch.tensor([[10, 11], [12, 13]]))
    cache = [Site("z", 3, head=4), Site("resid_pre", 7, position=2)]
    return model._plan(tokens, cache=cache, interventions=[iv], logits_at=end, reduce=reduce), tokens, values


def _leaves(x):
    """Every value in the wire form that is not a container."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield k
            yield from _leaves(v)
    elif isinstance(x, tuple):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def test_the_wire_form_is_typed_and_holds_only_plain_data(planned):
    plan, tokens, values = planned
    wire = plan.wire
    assert isinstance(wire, wire_ops.WirePass)
    assert torch.equal(wire.tokens, tokens) and wire.start == 0 and wire.resid is None and wire.repeat == 1
    (patch,) = wire.patches[3]
    assert isinstance(patch, wire_ops.PatchOp) and patch.kind == "z" and patch.positions is None
    assert patch.heads.tolist() == [1, 4] and torch.equal(patch.values, values)
    assert wire.records[3] == (wire_ops.RecordOp(0, "z", 4, None),)
    assert wire.records[7] == (wire_ops.RecordOp(1, "resid_pre", None, 2),)
    assert isinstance(wire.metric, wire_ops.MetricOp) and wire.metric.name == "logit_diff"
    assert (wire.lo, wire.hi) == (3, 8)  # only the blocks with a patch or a recording are visited
    assert plan.sites == (Site("z", 3, head=4), Site("resid_pre", 7, position=2))
    for leaf in _leaves(wire):
        assert leaf is None or isinstance(leaf, (torch.Tensor, bool, int, str)), type(leaf)


def test_the_wire_form_and_the_plan_are_immutable(planned):
    plan, _, _ = planned
    with pytest.raises(AttributeError):
        plan.wire.tokens = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(AttributeError):
        plan.wire.patches[3][0].kind = "q"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.sites = ()
    later = plan.starting_at(5, torch.zeros(2, plan.wire.tokens.shape[1], 576), repeat=3)
    assert (later.wire.start, later.wire.repeat, later.wire.lo) == (5, 3, 0)
    assert plan.wire.start == 0 and plan.wire.repeat == 1  # a new plan; the old one is unchanged


def test_the_wire_form_travels_by_value_and_attnlab_objects_do_not(planned):
    """The server unpickler rebuilds the wire classes from the request itself (nnsight.register ships their module
    by value); the client-side plan, which holds attnlab Site objects, is refused by name."""
    plan, _, _ = planned
    # the unpickler refuses to import any attnlab name, so loading at all means the classes came in the bytes
    # (cloudpickle then reuses the live class in this same process; a server rebuilds it)
    back = ServerUnpickler(io.BytesIO(cloudpickle.dumps(plan.wire)), None).load()
    assert type(back).__name__ == "WirePass" and back._fields == wire_ops.WirePass._fields
    assert torch.equal(back.tokens, plan.wire.tokens) and back.records[7][0].position == 2
    assert torch.equal(back.patches[3][0].values, plan.wire.patches[3][0].values)
    with pytest.raises(Exception, match="attnlab.*by name"):
        ServerUnpickler(io.BytesIO(cloudpickle.dumps(plan)), None).load()
