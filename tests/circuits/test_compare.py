"""Cross-task circuit comparison (attnlab.circuits.compare) on hand-made circuits with known overlaps."""

import json
import math

import pandas as pd
import pytest

from attnlab.circuits.compare import CircuitComparison, CircuitComparisonError, circuit_heads, compare_circuits

# GPT-2 small's IOI circuit heads (Wang et al. 2022) and a made-up second circuit sharing 4 of them
IOI = [(9, 9), (9, 6), (10, 0), (7, 3), (7, 9), (8, 6), (8, 10), (5, 5), (6, 9), (0, 1), (3, 0), (2, 2), (4, 11)]
OTHER = [(9, 9), (10, 0), (7, 3), (5, 5), (12, 3), (13, 4)]
ROLES = {(9, 9): "name mover", (9, 6): "name mover", (10, 0): "name mover", (7, 3): "S-inhibition",
         (5, 5): "induction", (0, 1): "duplicate token"}


class FakeCircuit:
    """Stands in for a circuit-discovery result: anything with a ``.heads`` list."""

    def __init__(self, heads):
        self.heads = heads


def test_overlap_numbers_on_hand_made_circuits():
    c = compare_circuits(FakeCircuit(IOI), OTHER, names=("IOI", "CO"), roles_a=ROLES,
                         roles_b={"L9H9": "mover", "L12H3": "colour mover"})
    assert c.shared == [(5, 5), (7, 3), (9, 9), (10, 0)] and c.n_shared == 4
    assert c.only_b == [(12, 3), (13, 4)] and len(c.only_a) == 9
    assert c.jaccard == pytest.approx(4 / 15)  # |A | B| = 13 + 6 - 4
    assert c.overlap_a_in_b == pytest.approx(4 / 13) and c.overlap_b_in_a == pytest.approx(4 / 6)
    assert c.shared_roles() == {"L5H5": ("induction", None), "L7H3": ("S-inhibition", None),
                                "L9H9": ("name mover", "mover"), "L10H0": ("name mover", None)}
    table = c.table()
    assert list(table.columns) == ["head", "layer", "head_index", "in_IOI", "in_CO", "role_IOI", "role_CO", "shared"]
    assert len(table) == 15 and table["shared"].sum() == 4
    row = table.set_index("head").loc["L12H3"]
    assert not row["in_IOI"] and row["in_CO"] and row["role_CO"] == "colour mover" and pd.isna(row["role_IOI"])
    assert list(table["head"])[:3] == ["L0H1", "L2H2", "L3H0"]  # sorted by layer, then head
    assert "4 shared" in repr(c)


def test_identical_disjoint_and_empty_circuits():
    same = compare_circuits(OTHER, list(reversed(OTHER)) + [(9, 9)])
    assert same.jaccard == same.overlap_a_in_b == same.overlap_b_in_a == 1.0
    apart = compare_circuits([(0, 0)], [(1, 1), (2, 2)])
    assert apart.n_shared == 0 and apart.jaccard == 0.0 and apart.overlap_b_in_a == 0.0
    empty = compare_circuits([], [(1, 1)])
    assert math.isnan(empty.overlap_a_in_b) and empty.overlap_b_in_a == 0.0 and empty.jaccard == 0.0
    assert math.isnan(compare_circuits([], []).jaccard)
    assert compare_circuits([], []).summary()["jaccard"] is None


def test_round_trip_and_summary_are_json():
    c = compare_circuits(IOI, FakeCircuit(OTHER), names=("IOI", "CO"), roles_a=ROLES)
    data = json.loads(json.dumps(c.to_dict()))
    assert data["summary"]["n_shared"] == 4 and data["summary"]["shared"] == ["L5H5", "L7H3", "L9H9", "L10H0"]
    back = CircuitComparison.from_dict(data)
    assert back == c
    with pytest.raises(CircuitComparisonError, match="not an attnlab circuit comparison"):
        CircuitComparison.from_dict({"names": ["A", "B"]})


def test_heads_come_from_attributes_iterables_or_names():
    assert circuit_heads(FakeCircuit([(1, 2), (0, 3), (1, 2)])) == [(0, 3), (1, 2)]
    assert circuit_heads({"L10H7", "L2H0"}) == [(2, 0), (10, 7)]
    assert circuit_heads(iter([[3, 1]])) == [(3, 1)]


@pytest.mark.parametrize("a,kwargs,match", [
    ([(1, 2, 3)], {}, r"\(layer, head\) pairs"),
    ([(1, -2)], {}, r"\(layer, head\) pairs"),
    (["head 9.9"], {}, "'head 9.9'"),
    (42, {}, "iterable of"),
    ("L9H9", {}, "iterable of"),
    ([(1, 2)], dict(names=("A", "A")), "two different"),
    ([(1, 2)], dict(roles_a={(1, 2): 3}), "must be a string"),
])
def test_malformed_circuits_are_refused(a, kwargs, match):
    with pytest.raises(CircuitComparisonError, match=match):
        compare_circuits(a, [(0, 0)], **kwargs)
