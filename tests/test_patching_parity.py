"""attnlab's batched patching engine against TransformerLens's own ``transformer_lens.patching`` functions.

Same model, same tokens, same metric: every sweep kind, both directions, must agree within 1e-4.
"""

import pandas as pd
import pytest
import torch
import transformer_lens.patching as tlp

from attnlab.errors import SiteError
from attnlab.metrics import logit_diff, normalise
from attnlab.models import tiny_model
from attnlab.patching import run_sweep

from .conftest import random_pair_dataset

TOL = 1e-4

REFERENCE = {
    "resid_pre": tlp.get_act_patch_resid_pre,
    "attn_out": tlp.get_act_patch_attn_out,
    "mlp_out": tlp.get_act_patch_mlp_out,
    "heads": tlp.get_act_patch_attn_head_out_all_pos,
    "heads_by_pos": tlp.get_act_patch_attn_head_out_by_pos,
}


def reference_sweep(model, dataset, component, direction, result, layers=None):
    """TransformerLens's value for every cell of ``result``, in result's axis order."""
    bridge = model.bridge
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    with torch.no_grad():
        _, source_cache = bridge.run_with_cache(source)
    rows = torch.arange(len(dataset))
    b = result.baselines

    def metric(logits):
        ld = logit_diff(logits[rows, dataset.end], dataset.answers).mean()
        return normalise(ld, b["clean"], b["corrupted"], direction)

    fn = REFERENCE[component]
    with torch.no_grad():
        if layers is None:
            ref = fn(bridge, target, source_cache, metric)
            return ref.permute(0, 2, 1) if component == "heads_by_pos" else ref
        # restrict TransformerLens to the same cells through an explicit index dataframe
        axes = {"resid_pre": ["layer", "pos"], "attn_out": ["layer", "pos"], "mlp_out": ["layer", "pos"],
                "heads": ["layer", "head"], "heads_by_pos": ["layer", "pos", "head"]}[component]
        ranges = {"layer": layers, "pos": result.index.get("pos"), "head": result.index.get("head")}
        index_df = pd.MultiIndex.from_product([ranges[a] for a in axes], names=axes).to_frame(index=False)
        # the same setter and activation as the named function, over the restricted cells
        keywords = {k: v for k, v in fn.keywords.items() if k != "index_axis_names"}
        flat = tlp.generic_activation_patch(bridge, target, source_cache, metric, index_df=index_df, **keywords)
        shape = [len(ranges[a]) for a in axes]
        ref = flat.reshape(shape)
        return ref.permute(0, 2, 1) if component == "heads_by_pos" else ref


MODELS = {
    "gqa-learned-pos": dict(n_layers=3, n_heads=4, n_kv_heads=2, seed=1),
    "rotary-attn-only": dict(n_layers=2, n_heads=4, attn_only=True, positional="rotary", seed=2),
}


@pytest.mark.parametrize("config", sorted(MODELS))
@pytest.mark.parametrize("component", sorted(REFERENCE))
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_tiny_model_parity(config, component, direction):
    model = tiny_model(**MODELS[config])
    dataset = random_pair_dataset(model, batch=3, n_pos=7, changed=(2, 5), seed=3)
    if component == "mlp_out" and not model.info.has_mlp:
        with pytest.raises(SiteError, match="attention-only"):
            run_sweep(model, dataset, component, direction=direction, progress=False)
        return
    result = run_sweep(model, dataset, component, direction=direction, progress=False, memory_budget_mb=0.05)
    assert result.complete
    ref = reference_sweep(model, dataset, component, direction, result)
    assert result.values.shape == ref.shape
    assert ref.abs().max() > 1e-3, "reference is all zeros: the comparison would prove nothing"
    torch.testing.assert_close(result.values, ref.float(), atol=TOL, rtol=0)


def test_small_memory_budget_uses_more_passes(tiny):
    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(2,))
    big = run_sweep(tiny, dataset, "heads_by_pos", progress=False)
    small = run_sweep(tiny, dataset, "heads_by_pos", progress=False, memory_budget_mb=0.01)
    assert small.settings["variants_per_pass"] < big.settings["variants_per_pass"]
    assert small.settings["forward_passes"] > big.settings["forward_passes"]
    torch.testing.assert_close(small.values, big.values, atol=1e-5, rtol=0)


def test_no_op_variants_are_skipped_and_exact(tiny):
    """Positions before the first corrupted token are identical in both runs (causal attention): skipped, and
    their value is exactly what TransformerLens computes by running them (zero)."""
    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(4,))
    result = run_sweep(tiny, dataset, "resid_pre", progress=False)
    # positions 0-3 at all 3 layers, plus positions 5-6 at layer 0 (there the residual stream is the token
    # embedding, and those tokens are unchanged)
    assert result.settings["variants_skipped_as_no_ops"] == 3 * 4 + 2
    ref = reference_sweep(tiny, dataset, "resid_pre", "denoising", result)
    torch.testing.assert_close(result.values, ref.float(), atol=TOL, rtol=0)
    assert torch.all(result.values[:, :4] == 0)


@pytest.mark.integration
@pytest.mark.parametrize(
    "component,direction",
    [("heads", "denoising"), ("heads", "noising"), ("heads_by_pos", "denoising"), ("resid_pre", "noising"),
     ("attn_out", "denoising"), ("mlp_out", "noising")],
)
def test_embedded_model_parity(embedded_model, component, direction):
    from attnlab.tasks.ioi import ioi_dataset

    dataset = ioi_dataset(embedded_model, 2, seed=1, corruption="s2_swap")
    layers = [0, 9, 29] if component != "heads" else [0, 5, 14, 22, 29]
    # by position: one query head from each of the three key/value groups keeps the reference affordable
    heads = [0, 4, 8] if component == "heads_by_pos" else None
    result = run_sweep(embedded_model, dataset, component, direction=direction, layers=layers, heads=heads,
                       progress=False)
    ref = reference_sweep(embedded_model, dataset, component, direction, result, layers=layers)
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(result.values, ref.float(), atol=TOL, rtol=0)
    # with prefix reuse: each pass ran only the positions from the S2 swap on (tests/test_prefix_reuse.py)
    reuse = result.settings["prefix_reuse"]
    assert reuse["enabled"] and reuse["fraction_run"] < 0.8, reuse
