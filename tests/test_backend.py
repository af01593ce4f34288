"""The TransformerLens backend: exact runs from a middle block, recording, interventions, END-only logits."""

import pytest
import torch

from attnlab.backends.base import Intervention
from attnlab.errors import BackendError, SiteError
from attnlab.models import tiny_model
from attnlab.sites import Site


@pytest.mark.parametrize("config", [dict(n_layers=4, n_heads=4, n_kv_heads=2), dict(n_layers=3, attn_only=True,
                                                                                     positional="rotary")])
def test_start_layer_skips_early_blocks_exactly(config):
    model = tiny_model(**config)
    tokens = torch.randint(0, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    full = model.run(tokens, cache=[Site("resid_pre", 2), Site("z", 2)])
    assert model.skips_early_blocks is None  # checked on first use (that check runs the bridge's own path once)
    model.run(tokens, resid=full.cache[Site("resid_pre", 2)], start_layer=2)
    calls = []
    first_block = model.bridge.blocks[0]
    handle = first_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        fast = model.run(tokens, resid=full.cache[Site("resid_pre", 2)], start_layer=2, cache=[Site("z", 2)])
    finally:
        handle.remove()
    assert model.skips_early_blocks is True
    assert calls == [], "block 0 ran although the run started at block 2"
    assert torch.equal(fast.logits, full.logits)
    assert torch.equal(fast.cache[Site("z", 2)], full.cache[Site("z", 2)])
    model.skips_early_blocks = False  # the bridge's own path gives the same numbers
    slow = model.run(tokens, resid=full.cache[Site("resid_pre", 2)], start_layer=2)
    assert torch.equal(slow.logits, full.logits)


def test_blocks_are_restored_after_an_error(tiny):
    blocks_before = list(tiny.bridge.blocks)
    resid = tiny.run(torch.zeros(2, 5, dtype=torch.long), stop_layer=2).resid
    bad = Intervention("z", 2, rows=torch.arange(2), values=torch.zeros(2, 99, 16), heads=torch.tensor([0, 1]))
    with pytest.raises(RuntimeError):
        tiny.run(torch.zeros(2, 5, dtype=torch.long), resid=resid, start_layer=2, interventions=[bad])
    assert list(tiny.bridge.blocks) == blocks_before


def test_logits_at_equals_full_logits(tiny):
    tokens = torch.randint(0, 50, (4, 7), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([6, 3, 0, 5])
    full = tiny.run(tokens).logits
    picked = tiny.run(tokens, logits_at=positions).logits
    torch.testing.assert_close(picked, full[torch.arange(4), positions], atol=1e-5, rtol=0)


def test_intervention_overwrites_exactly_the_given_entries(tiny):
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(2))
    values = torch.randn(2, 16)
    iv = Intervention("z", 1, rows=torch.tensor([0, 1]), values=values, heads=torch.tensor([3, 1]),
                      positions=torch.tensor([4, 2]))
    base = tiny.run(tokens, cache=[Site("z", 1)]).cache[Site("z", 1)]
    patched = tiny.run(tokens, cache=[Site("z", 1)], interventions=[iv]).cache[Site("z", 1)]
    assert torch.equal(patched[0, 4, 3], values[0]) and torch.equal(patched[1, 2, 1], values[1])
    mask = torch.ones_like(base, dtype=torch.bool)
    mask[0, 4, 3] = mask[1, 2, 1] = False
    assert torch.equal(patched[mask], base[mask])


def test_run_argument_errors(tiny):
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(BackendError, match="resid="):
        tiny.run(tokens, start_layer=1)
    with pytest.raises(SiteError, match=r"'start_layer' must be in \[0, 3\)"):
        tiny.run(tokens, start_layer=5)
    with pytest.raises(SiteError, match="cannot record"):
        tiny.run(tokens, resid=torch.zeros(1, 4, 64), start_layer=2, cache=[Site("z", 0)])
    with pytest.raises(BackendError, match="no tokenizer"):
        tiny.to_tokens(["hello"])
    with pytest.raises(SiteError, match="attention-only"):
        tiny_model(attn_only=True).run(tokens, cache=[Site("mlp_out", 0)])


@pytest.mark.parametrize("component", ["resid_pre", "heads", "heads_by_pos", "mlp_out"])
def test_backends_may_ignore_the_start_layer_hint(tiny, component):
    """A backend that runs every pass from the tokens (as a remote one may) computes the same sweep."""
    from attnlab.patching import run_sweep

    from .conftest import random_pair_dataset

    class FromTokens:
        def __init__(self, model):
            self._model = model

        def __getattr__(self, name):
            return getattr(self._model, name)

        def run_many(self, specs):
            for spec in specs:
                yield spec.key, self._model.run(**spec.run_kwargs(use_start_layer=False))

    ds = random_pair_dataset(tiny, changed=(3,))
    fast = run_sweep(tiny, ds, component, progress=False)
    slow = run_sweep(FromTokens(tiny), ds, component, progress=False)
    torch.testing.assert_close(slow.values, fast.values, atol=1e-5, rtol=0)
