"""Prefix reuse: patched passes that compute only the positions a patch can change (issue "compute floor").

A patch at position p cannot change any position before p (causal attention), so the engine runs each patched pass
over the positions from its first changed position on, attending to the target run's recorded keys and values for
the positions before. Checked here:

- every sweep kind, both directions, equals TransformerLens's own ``transformer_lens.patching`` functions within
  1e-4 with prefix reuse on, on tiny Hugging Face models (Llama: rotary + grouped-query attention; GPT-2: learned
  absolute positions), with the suffix passes actually used (``fraction_run < 1``);
- a suffix pass at the wrong positions (ids from 0, as a naive "drop the prefix" would run it) does not reproduce the
  full run on the rotary model, while the backend's suffix pass does: the parity check can fail;
- reuse on and off give the same numbers with fewer positions computed, and a tight memory budget only splits passes;
- models whose attention takes no key/value cache (TransformerLens-native) run every position and say why.
"""

import pytest
import torch
import transformer_lens.patching as tlp

from attnlab.backends.base import Capability
from attnlab.errors import BackendError, CapabilityError
from attnlab.models import tiny_hf_model, tiny_model
from attnlab.patching import run_sweep
from attnlab.patching.engine import _group_by_first_position

from .conftest import random_pair_dataset
from .test_patching_parity import REFERENCE, TOL, reference_sweep

HF_MODELS = {
    "llama-rotary-gqa": dict(architecture="llama", n_layers=3, n_heads=4, n_kv_heads=2, d_model=64, d_vocab=50,
                             seed=1),
    "gpt2-learned-pos": dict(architecture="gpt2", n_layers=3, n_heads=4, d_model=64, d_vocab=50, seed=2),
}


@pytest.fixture(scope="module", params=sorted(HF_MODELS))
def hf_model(request):
    return tiny_hf_model(**HF_MODELS[request.param])


def test_hf_tiny_models_have_prefix_reuse_and_native_ones_do_not():
    assert tiny_hf_model(**HF_MODELS["llama-rotary-gqa"]).supports(Capability.PREFIX_REUSE)
    native = tiny_model(n_layers=2, positional="rotary")
    assert not native.supports(Capability.PREFIX_REUSE)
    with pytest.raises(CapabilityError, match="prefix_reuse"):
        native.run(torch.zeros(1, 4, dtype=torch.long), record_kv=True)


@pytest.mark.parametrize("component", sorted(REFERENCE))
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_prefix_reuse_equals_transformer_lens(hf_model, component, direction):
    dataset = random_pair_dataset(hf_model, batch=3, n_pos=9, changed=(3, 6), seed=4)
    result = run_sweep(hf_model, dataset, component, direction=direction, progress=False)
    reuse = result.settings["prefix_reuse"]
    assert reuse["enabled"] and reuse["fraction_run"] < 1.0, reuse
    ref = reference_sweep(hf_model, dataset, component, direction, result)
    assert result.values.shape == ref.shape
    assert torch.allclose(result.values, ref.float(), atol=TOL), (result.values - ref).abs().max()


def test_reuse_on_and_off_agree_and_reuse_computes_less(hf_model):
    dataset = random_pair_dataset(hf_model, batch=4, n_pos=10, changed=(5,), seed=5)
    for component in ("heads", "heads_by_pos", "resid_pre"):
        on = run_sweep(hf_model, dataset, component, progress=False)
        off = run_sweep(hf_model, dataset, component, progress=False, prefix_reuse=False)
        assert off.settings["prefix_reuse"] == {"enabled": False, "reason": "turned off (prefix_reuse=False)"}
        assert torch.allclose(on.per_prompt, off.per_prompt, atol=1e-5)
        # the corruption changes position 5 only: a head's patch runs positions 5-9, a patch at p >= 5 runs from p
        # on (passes share their smallest p), positions before 5 are no-ops and never run
        fraction = on.settings["prefix_reuse"]["fraction_run"]
        if component == "heads":
            assert fraction == pytest.approx(5 / 10)
        else:
            assert 3 / 10 <= fraction <= 5 / 10


def test_tight_budget_splits_passes_without_changing_numbers(hf_model):
    dataset = random_pair_dataset(hf_model, batch=3, n_pos=8, changed=(2, 4), seed=6)
    wide = run_sweep(hf_model, dataset, "heads_by_pos", progress=False)
    tight = run_sweep(hf_model, dataset, "heads_by_pos", progress=False, memory_budget_mb=0.02)
    assert tight.settings["forward_passes"] > wide.settings["forward_passes"]
    assert torch.allclose(wide.per_prompt, tight.per_prompt, atol=1e-5)


def test_suffix_pass_at_wrong_positions_would_fail_on_a_rotary_model():
    """Without the true position ids a suffix pass is wrong: the parity tests above can fail."""
    from transformers import DynamicCache

    model = tiny_hf_model(**HF_MODELS["llama-rotary-gqa"])
    tokens = torch.randint(0, 50, (2, 9), generator=torch.Generator().manual_seed(0))
    p0 = 5
    full = model.run(tokens, record_kv=True)
    right = model.run(tokens[:, p0:], prefix=full.kv.narrow(p0))
    assert torch.allclose(right.logits, full.logits[:, p0:], atol=1e-5)

    cache = DynamicCache()  # the same keys and values, but the suffix placed at positions 0..3
    for layer, (k, v) in enumerate(zip(full.kv.keys, full.kv.values)):
        cache.update(k[:, :, :p0], v[:, :, :p0], layer)
    wrong_positions = torch.arange(tokens.shape[1] - p0).expand(2, -1)
    with torch.no_grad(), model._cache_kwarg(cache):
        wrong = model.bridge(tokens[:, p0:], past_key_values=cache, position_ids=wrong_positions)
    assert (wrong - full.logits[:, p0:]).abs().max() > 10 * TOL  # far outside the parity tolerance


def test_native_models_run_every_position_and_say_why():
    model = tiny_model(n_layers=2, n_heads=4, seed=3)
    dataset = random_pair_dataset(model, batch=2, n_pos=6, changed=(3,), seed=1)
    result = run_sweep(model, dataset, "heads", progress=False)
    reuse = result.settings["prefix_reuse"]
    assert reuse["enabled"] is False and "key/value cache" in reuse["reason"]


def test_bad_prefixes_are_refused_before_any_pass(hf_model):
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    kv = hf_model.run(tokens, record_kv=True).kv
    with pytest.raises(BackendError, match="rows"):
        hf_model.run(tokens[:1, 4:], prefix=kv.narrow(4))
    with pytest.raises(BackendError, match="every block from start_layer"):
        hf_model.run(tokens[:, 4:], prefix=kv.narrow(4, 2), resid=torch.zeros(2, 4, 64), start_layer=1)
    with pytest.raises(BackendError, match="context"):
        hf_model.run(torch.zeros(2, 62, dtype=torch.long), prefix=kv.narrow(4))
    with pytest.raises(BackendError, match="full run"):
        hf_model.run(tokens, record_kv=True, stop_layer=1)


def test_grouping_covers_every_variant_once_and_respects_the_cap():
    variants = [(h, p) for h in range(3) for p in range(8)]
    firsts = [p for _, p in variants]
    groups = _group_by_first_position(variants, firsts, lambda p0: 5, n_pos=8, batch=2)
    seen = [v for _, chunk in groups for v in chunk]
    assert sorted(seen) == sorted(variants)
    for p0, chunk in groups:
        assert len(chunk) <= 5
        assert p0 == min(p for _, p in chunk)
    # a large per-pass overhead is not worth paying for a few positions: one pass per cap-full group
    assert len(groups) == 5
