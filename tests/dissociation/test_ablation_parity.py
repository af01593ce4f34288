"""Zero, mean and resample ablation in :func:`attnlab.dissociation.dissociation_sweep` against direct hook
computations, and the batched sweep against one component at a time.

References (:mod:`tests.dissociation.reference`): one TransformerLens ``run_with_hooks`` pass over the whole prompts
per component, overwriting ``blocks.{L}.attn.hook_z`` (one query head), ``blocks.{L}.hook_attn_out`` or
``blocks.{L}.hook_mlp_out`` with zeros, the per-family per-position mean of the clean run (over the rows whose END
reaches that position, written as loops), or the corrupted run's activation. The sweep batches components into
shared passes that start at the ablated block from the cached residual stream, so agreement checks both the
replacement values and the batching.

Models: random tiny models (2 layers x 4 heads with MLPs, and a grouped-query one with 4 query heads sharing 2
key/value heads). Items: two recall-like and two reasoning-like families of random token ids, families of different
lengths, one family whose items end at different positions (so the per-position mean has rows that stop early).
"""

import pytest
import torch

from attnlab.dissociation import dissociation_sweep
from attnlab.models import tiny_model
from attnlab.tasks.recall_reasoning import RecallReasoningItems
from tests.dissociation.reference import ablated_metrics, clean_metrics

VOCAB = 50
#            family, kind, items, lengths (a family may mix lengths)
FAMILIES = [("rec_a", "recall", 5, (4,)), ("rec_b", "recall", 4, (6,)),
            ("rsn_a", "reasoning", 5, (7,)), ("rsn_b", "reasoning", 6, (5, 8, 6))]
COMPONENTS = ["L0H1", "L1H3", "ATTN0", "ATTN1", "MLP0", "MLP1", "L0H2+MLP1"]


def random_items(seed: int = 0) -> RecallReasoningItems:
    """Random prompts right-padded to one width; corrupted counterparts are other random tokens with the same ENDs."""
    g = torch.Generator().manual_seed(seed)
    tokens, corrupted, end, kinds, families = [], [], [], [], []
    for fam, kind, n, lengths in FAMILIES:
        for i in range(n):
            length = lengths[i % len(lengths)]
            tokens.append(torch.randint(1, VOCAB, (length,), generator=g))
            corrupted.append(torch.randint(1, VOCAB, (length,), generator=g))
            end.append(length - 1)
            kinds.append(kind)
            families.append(fam)
    width = max(len(t) for t in tokens)
    pad = lambda t: torch.cat([t, torch.zeros(width - len(t), dtype=torch.long)])  # noqa: E731
    answers = torch.randint(1, VOCAB, (len(tokens), 2), generator=g)
    answers[:, 1] = (answers[:, 0] + 1 + torch.randint(0, VOCAB - 2, (len(tokens),), generator=g)) % (VOCAB - 1) + 1
    return RecallReasoningItems.from_tokens(torch.stack([pad(t) for t in tokens]),
                                            torch.stack([pad(t) for t in corrupted]), answers, torch.tensor(end),
                                            kinds, families)


@pytest.fixture(scope="module", params=["mha", "gqa"])
def setup(request):
    kv = None if request.param == "mha" else 2
    model = tiny_model(n_layers=2, n_heads=4, n_kv_heads=kv, d_model=32, d_head=8, d_vocab=VOCAB, n_ctx=16, seed=3)
    return model, random_items()


def _sweep(model, items, ablation, components, **kw):
    return dissociation_sweep(model, items, granularity="components", components=components, ablation=ablation,
                              n_bootstrap=100, n_control_draws=0, progress=False, **kw)


def test_items_exercise_the_mean(setup):
    """The items are what the parity claims rest on: families of different widths, one with mixed ENDs."""
    _, items = setup
    ends = {f: sorted({int(e) for e, g in zip(items.end, items.families) if g == f}) for f in set(items.families)}
    assert ends["rsn_b"] == [4, 5, 7] and ends["rec_a"] != ends["rec_b"]


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_sweep_equals_direct_hooks(setup, ablation):
    """Per-item ablated accuracy and logit difference of a head, an attention block, an MLP block and a group equal
    one run_with_hooks pass per component (1e-5); the clean values equal a plain forward pass."""
    model, items = setup
    result = _sweep(model, items, ablation, COMPONENTS)
    assert result.metrics == ["accuracy", "logit_diff"]
    clean = clean_metrics(model, items)
    torch.testing.assert_close(result.clean, clean, atol=1e-5, rtol=0)
    for c, name in enumerate(result.components):
        ref = ablated_metrics(model, items, name, ablation)
        torch.testing.assert_close(result.ablated[c], ref, atol=1e-5, rtol=0, msg=f"{ablation} ablation of {name}")
        if not name.startswith("MLP1"):  # a real effect somewhere, so the comparison is not vacuous
            assert (ref[:, 1] - clean[:, 1]).abs().max() > 1e-3, (ablation, name)


def test_mean_is_per_family_and_position(setup):
    """Mean ablation is not one mean over all items: pooling the families (or the positions) gives other values."""
    model, items = setup
    pooled = RecallReasoningItems.from_tokens(items.tokens, items.corrupted_tokens, items.answers, items.end,
                                              items.kinds, ["all"] * len(items))
    name = "ATTN0"
    per_family = ablated_metrics(model, items, name, "mean")[:, 1]
    assert (ablated_metrics(model, pooled, name, "mean")[:, 1] - per_family).abs().max() > 1e-3
    ours = _sweep(model, items, "mean", [name]).ablated[0, :, 1]
    torch.testing.assert_close(ours, per_family, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_batched_equals_one_at_a_time(setup, ablation):
    """Every head and block in one batched sweep, in many small passes (a tiny memory budget), and one component per
    sweep: the same per-item values."""
    model, items = setup
    names = [f"L{layer}H{h}" for layer in range(2) for h in range(4)] + ["ATTN0", "MLP0", "ATTN1", "MLP1",
                                                                        "L0H2+MLP1"]
    batched = _sweep(model, items, ablation, names)
    tiny = _sweep(model, items, ablation, names, memory_budget_mb=0.05)
    assert batched.settings["components_per_pass"] >= len(names)
    assert tiny.settings["components_per_pass"] < len(names) and tiny.settings["forward_passes"] > \
        batched.settings["forward_passes"], (tiny.settings, batched.settings)
    torch.testing.assert_close(tiny.ablated, batched.ablated, atol=1e-6, rtol=0)
    for c, name in enumerate(names):
        single = _sweep(model, items, ablation, [name])
        torch.testing.assert_close(single.ablated[0], batched.ablated[c], atol=1e-6, rtol=0, msg=name)
        torch.testing.assert_close(single.clean, batched.clean, atol=0, rtol=0)


def test_heads_granularity_is_every_query_head(setup):
    """granularity='heads' runs every query head (on the grouped-query model too), equal to the direct hooks."""
    model, items = setup
    result = dissociation_sweep(model, items, granularity="heads", ablation="mean", n_bootstrap=100,
                                n_control_draws=0, progress=False)
    assert result.components == [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
    for c, name in enumerate(result.components):
        torch.testing.assert_close(result.ablated[c], ablated_metrics(model, items, name, "mean"), atol=1e-5, rtol=0)
