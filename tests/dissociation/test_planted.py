"""Known answer for the dissociation workbench: the planted double dissociation of the trained toy.

The toy (:mod:`tests.dissociation.toy`) routes recall through MLP 0 and in-context copying through a previous-token
head in layer 0 and induction heads in layer 1, by construction. These tests first confirm the planted roles with
direct ``run_with_hooks`` computations (:mod:`tests.dissociation.reference`, one pass per component, nothing from
attnlab.dissociation), then check that :func:`attnlab.dissociation.dissociation_sweep` finds exactly that double
dissociation, with an interaction interval excluding 0, and that its random-component controls do not show it.
"""

import pytest
import torch

from attnlab.dissociation import dissociation_sweep
from tests.dissociation.reference import clean_metrics, direct_drops

HEADS = ["L0H0", "L0H1", "L1H0", "L1H1"]
COMPONENTS = HEADS + ["MLP0", "MLP1"]
BLOCKS = ["ATTN0", "MLP0", "ATTN1", "MLP1"]


@pytest.fixture(scope="module")
def direct(planted_toy):
    """Normalised logit-difference drops under mean ablation, per component, by direct hook computation."""
    comps = COMPONENTS + ["ATTN0", "ATTN1", "L1H0+L1H1"]
    return direct_drops(planted_toy.model, planted_toy.items, comps, "mean")


def _selectivity(d):
    return d["recall"] - d["reasoning"]


def test_toy_learned_both_tasks(planted_toy):
    """Training worked: every recall and copying item answered (top-1), with a wide logit-difference margin."""
    items = planted_toy.items
    clean = clean_metrics(planted_toy.model, items)
    for kind in ("recall", "reasoning"):
        rows = items.rows(kind)
        assert clean[rows, 0].mean() >= 0.95, (kind, clean[rows, 0].mean())
        assert clean[rows, 1].mean() > 4.0, (kind, clean[rows, 1].mean())


def test_copying_uses_a_previous_token_head_and_induction_heads(planted_toy):
    """Attention patterns of the copying items: a layer-0 head attends to the previous token, and the layer-1 heads
    together attend from the query at END to the token after its earlier occurrence (the answer's position)."""
    items = planted_toy.items
    rows = items.rows("reasoning")
    tokens, end = items.tokens[rows], items.end[rows]
    _, cache = planted_toy.model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    p0 = cache["blocks.0.attn.hook_pattern"]  # [batch, head, dest, src]
    dest = torch.arange(2, int(end[0]))       # inside the context t1..t8 and SEP
    prev = p0[:, :, dest, dest - 1].mean((0, 2))
    assert prev.max() > 0.8, prev
    first = [int((tokens[i, 1:int(end[i])] == tokens[i, end[i]]).nonzero()[0]) + 1 for i in range(len(rows))]
    after = torch.tensor(first) + 1
    p1 = cache["blocks.1.attn.hook_pattern"]
    to_answer = p1[torch.arange(len(rows)), :, end, after].sum(-1)  # summed over layer-1 heads
    assert to_answer.mean() > 0.8, to_answer.mean()


def test_planted_roles_by_direct_hooks(direct):
    """Mean ablation, one run_with_hooks pass per component: MLP 0 destroys recall and spares copying; the strongest
    copying head (the previous-token head) and the layer-1 induction heads together destroy copying and spare
    recall; MLP 1 writes exactly nothing."""
    assert direct["MLP0"]["recall"] > 0.8 and abs(direct["MLP0"]["reasoning"]) < 0.1, direct["MLP0"]
    head = min(HEADS, key=lambda c: _selectivity(direct[c]))
    assert direct[head]["reasoning"] > 0.8 and abs(direct[head]["recall"]) < 0.1, (head, direct[head])
    assert head.startswith("L0"), f"the strongest copying head should be layer 0's previous-token head, got {head}"
    ind = direct["L1H0+L1H1"]
    assert ind["reasoning"] > 0.8 and abs(ind["recall"]) < 0.1, ind
    assert direct["MLP1"] == {"recall": 0.0, "reasoning": 0.0}
    for block in ("ATTN0", "ATTN1"):
        assert direct[block]["reasoning"] > 0.8 and abs(direct[block]["recall"]) < 0.1, (block, direct[block])


@pytest.fixture(scope="module", params=["components", "blocks"])
def swept(request, planted_toy):
    if request.param == "components":
        result = dissociation_sweep(planted_toy.model, planted_toy.items, granularity="components",
                                    components=COMPONENTS, ablation="mean", n_bootstrap=1000, seed=0, progress=False)
    else:
        result = dissociation_sweep(planted_toy.model, planted_toy.items, granularity="blocks", ablation="mean",
                                    n_bootstrap=1000, seed=0, progress=False)
    return request.param, result


def test_sweep_drops_equal_direct_hooks(swept, direct):
    """Every component's normalised drops in the sweep's table equal the direct hook computation."""
    _, result = swept
    df = result.to_dataframe().set_index("component")
    for name in result.components:
        for kind in ("recall", "reasoning"):
            assert df.loc[name, f"{kind}_drop"] == pytest.approx(direct[name][kind], abs=1e-4), (name, kind)


def test_sweep_finds_the_planted_double_dissociation(swept, direct):
    """The pair named is the most recall-selective and the most reasoning-selective component by direct computation:
    MLP 0 against the previous-token head (components) or a layer's attention block (blocks); the crossover
    interaction equals the direct one and its interval excludes 0."""
    granularity, result = swept
    dd = result.double_dissociation
    assert dd is not None, result.dissociation_statement
    names = result.components
    best_recall = max(names, key=lambda c: _selectivity(direct[c]))
    best_reasoning = min(names, key=lambda c: _selectivity(direct[c]))
    assert best_recall == "MLP0"
    assert dd["recall_component"] == best_recall, dd
    assert dd["reasoning_component"] == best_reasoning, dd
    if granularity == "components":
        assert best_reasoning.startswith("L0H"), best_reasoning
    else:
        assert best_reasoning.startswith("ATTN"), best_reasoning
    inter = _selectivity(direct[best_recall]) - _selectivity(direct[best_reasoning])
    assert dd["interaction"] == pytest.approx(inter, abs=1e-4)
    assert 0 < dd["interaction_lo"] <= dd["interaction"] <= dd["interaction_hi"]
    assert "MLP0" in result.selective("recall") and best_reasoning in result.selective("reasoning")
    assert "MLP1" not in result.selective("recall") + result.selective("reasoning")  # writes exactly 0
    assert ("Holm" in dd["statement"]) and best_reasoning in dd["statement"]


def test_random_controls_do_not_show_it(swept):
    """Each side's selected set shows its effect; random sets of as many components, drawn from the other components,
    do not: their selectivity toward that side stays far below the selected set's."""
    _, result = swept
    controls = result.controls
    assert controls, "no controls were run"
    for side, other in (("recall", "reasoning"), ("reasoning", "recall")):
        selected = [c for c in controls if c["side"] == side and c["kind"] == "selected"]
        random_sets = [c for c in controls if c["side"] == side and c["kind"] == "random"]
        assert len(selected) == 1 and len(random_sets) == result.settings["n_control_draws"], controls
        sel = selected[0]
        effect = sel[f"{side}_drop"][0] - sel[f"{other}_drop"][0]
        assert sel[f"{side}_drop"][1] > 0.5 and effect > 0.8, sel
        for ctrl in random_sets:
            shared = set(ctrl["components"]) & set(sel["components"])
            assert not shared, f"a random control ({side}) reuses the selected components {sorted(shared)}: {ctrl}"
            assert len(ctrl["components"]) == len(sel["components"])
            assert ctrl[f"{side}_drop"][0] - ctrl[f"{other}_drop"][0] < 0.5 * effect, (side, ctrl, sel)
