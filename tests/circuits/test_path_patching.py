"""Path patching (attnlab.circuits.path_patching) against a hand-built three-run procedure.

``hand_path_patch`` below implements Wang et al.'s procedure directly on the TransformerLens bridge with
``run_with_hooks``, one sender set at a time: (1) cache the base and source runs; (2) base run with every head's
``hook_z`` frozen at its base value except the senders, taken from the source run (and ``hook_mlp_out`` frozen when
asked), saving the receivers' ``hook_q``/``hook_k``/``hook_v``; (3) base run with only those receiver entries
replaced. attnlab's batched implementation (many senders per pass, runs starting at later blocks) must give the same
logit differences.
"""

import copy

import pytest
import torch

from attnlab.circuits.path_patching import head_inputs, path_patch, path_patching_sweep
from attnlab.errors import ArgumentError, DatasetError, SiteError
from attnlab.metrics import logit_diff, normalise
from attnlab.models import tiny_model
from attnlab.patching import run_sweep
from attnlab.sites import Site, SiteKind

from tests.conftest import random_pair_dataset


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)


@pytest.fixture(scope="module")
def pairs(model):
    return random_pair_dataset(model, batch=3, n_pos=7, changed=(2, 5), seed=3)


_CACHES: dict = {}


def hand_path_patch(model, dataset, senders, receivers, *, direction="noising", freeze_mlps=False, position=None):
    """Mean patched logit difference by the three-run procedure, with raw hooks. ``receivers``: list of
    (kind, layer, head) or ["logits"]; ``position``: a dataset position name or None."""
    bridge, n_layers = model.bridge, model.info.n_layers
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    base, source = (clean, corrupted) if direction == "noising" else (corrupted, clean)
    rows = torch.arange(len(dataset))
    key = (id(model), id(dataset), direction)
    if key not in _CACHES:  # run 1 depends only on the inputs: share it between senders
        with torch.no_grad():
            _CACHES[key] = bridge.run_with_cache(base)[1], bridge.run_with_cache(source)[1]
    base_cache, source_cache = _CACHES[key]

    def freeze_z(layer):
        def hook(z, hook):
            z = base_cache[f"blocks.{layer}.attn.hook_z"].clone()
            for sl, sh in senders:
                if sl == layer:
                    z[:, :, sh] = source_cache[f"blocks.{layer}.attn.hook_z"][:, :, sh]
            return z
        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", freeze_z(layer)) for layer in range(n_layers)]
    if freeze_mlps:
        hooks += [(f"blocks.{layer}.hook_mlp_out", lambda a, hook, n=f"blocks.{layer}.hook_mlp_out": base_cache[n])
                  for layer in range(n_layers)]
    saved = {}
    if receivers != ["logits"]:
        for kind, layer, _ in receivers:
            name = f"blocks.{layer}.attn.hook_{kind}"
            hooks.append((name, lambda a, hook, n=name: saved.__setitem__(n, a.detach().clone())))
    with torch.no_grad():
        logits = bridge.run_with_hooks(base, fwd_hooks=hooks)
    if receivers == ["logits"]:
        return float(logit_diff(logits[rows, dataset.end], dataset.answers).mean())

    def patch(kind, layer, head):
        name = f"blocks.{layer}.attn.hook_{kind}"

        def hook(a, hook):
            a = a.clone()
            if position is None:
                a[:, :, head] = saved[name][:, :, head]
            else:
                p = dataset.positions[position]
                a[rows, p, head] = saved[name][rows, p, head]
            return a
        return name, hook

    with torch.no_grad():
        logits = bridge.run_with_hooks(base, fwd_hooks=[patch(*r) for r in receivers])
    return float(logit_diff(logits[rows, dataset.end], dataset.answers).mean())


CASES = {
    "q-all-positions": dict(receivers=[("q", 2, 1), ("q", 2, 3)]),
    "k-v-two-layers-at-END": dict(receivers=[("k", 2, 1), ("v", 1, 0)], position="END"),
    "q-frozen-MLPs-denoising": dict(receivers=[("q", 2, 2)], freeze_mlps=True, direction="denoising"),
    "logits": dict(receivers=["logits"]),
    "logits-frozen-MLPs": dict(receivers=["logits"], freeze_mlps=True),
}


def _sites(receivers):
    return "logits" if receivers == ["logits"] else [Site(SiteKind(k), layer, head=h) for k, layer, h in receivers]


@pytest.mark.parametrize("case", sorted(CASES))
def test_sweep_equals_the_hand_built_three_run_procedure(model, pairs, case):
    c = CASES[case]
    direction = c.get("direction", "noising")
    result = path_patching_sweep(model, pairs, _sites(c["receivers"]), direction=direction,
                                 freeze_mlps=c.get("freeze_mlps", False), receiver_position=c.get("position"),
                                 progress=False)
    b = result.baselines
    # by hand: every sender that has a path (senders in the receivers' last block have none: checked elsewhere)
    layers = [0, 1, 2] if c["receivers"] == ["logits"] else [0, 1]
    expected = torch.tensor([[hand_path_patch(model, pairs, [(layer, h)], c["receivers"], direction=direction,
                                              freeze_mlps=c.get("freeze_mlps", False), position=c.get("position"))
                              for h in range(4)] for layer in layers])
    expected = normalise(expected, b["clean"], b["corrupted"], direction).float()
    assert expected.abs().max() > 1e-3  # not vacuous
    torch.testing.assert_close(result.values[layers], expected, atol=1e-5, rtol=0)
    assert result.analysis == "path_patching" and result.dims == ("layer", "head")


def test_a_sender_set_is_patched_together(model, pairs):
    senders = [(0, 1), (1, 2)]
    receivers = [("q", 2, 1), ("v", 2, 0)]
    score = path_patch(model, pairs, senders, _sites(receivers))
    assert score.patched_logit_diff == pytest.approx(hand_path_patch(model, pairs, senders, receivers), abs=1e-5)
    singles = [path_patch(model, pairs, s, _sites(receivers)).patched_logit_diff for s in senders]
    assert score.patched_logit_diff != pytest.approx(singles[0], abs=1e-4)
    assert score.senders == ((0, 1), (1, 2)) and score.receivers == ("q:L2H1", "v:L2H0")
    clean, corrupted = score.baselines["clean"], score.baselines["corrupted"]
    assert score.value == pytest.approx((score.patched_logit_diff - clean) / (clean - corrupted))


def test_last_layer_heads_to_logits_equal_activation_patching(model, pairs):
    """A last-layer head reaches the logits only directly (through the last MLP, recomputed): path patching it to
    the logits is activation patching it (noising), which run_sweep measures independently."""
    paths = path_patching_sweep(model, pairs, "logits", layers=[2], progress=False)
    exact = run_sweep(model, pairs, "heads", direction="noising", layers=[2], progress=False)
    torch.testing.assert_close(paths.values, exact.values, atol=1e-5, rtol=0)


def test_heads_without_a_path_score_zero_and_batching_does_not_matter(model, pairs):
    receivers = head_inputs([(1, 0), (1, 2)], "q")
    small = path_patching_sweep(model, pairs, receivers, memory_budget_mb=0.05, progress=False)
    large = path_patching_sweep(model, pairs, receivers, progress=False)
    assert small.settings["variants_per_pass"] == 1 < large.settings["variants_per_pass"]
    # float32 sums in another order when more senders share a pass: 1e-5 of the clean-corrupted gap
    torch.testing.assert_close(small.values, large.values, atol=1e-5, rtol=0)
    assert torch.all(small.values[1:] == 0) and small.values[0].abs().max() > 1e-3
    assert path_patch(model, pairs, (2, 0), receivers).value == 0.0


def test_head_inputs_builds_receiver_sites():
    assert head_inputs([(9, 9), (10, 0)], ["q", "k"]) == [Site(SiteKind.Q, 9, head=9), Site(SiteKind.Q, 10, head=0),
                                                           Site(SiteKind.K, 9, head=9), Site(SiteKind.K, 10, head=0)]
    with pytest.raises(SiteError, match="'inputs' must be among 'q', 'k', 'v'"):
        head_inputs([(0, 0)], "z")


def _no_runs(model):
    clone = copy.copy(model)

    def run(*args, **kwargs):
        raise AssertionError("a forward pass started before the input was checked")

    clone.run = run
    return clone


@pytest.mark.parametrize("senders,receivers,kwargs,error,match", [
    ([(0, 4)], "logits", {}, SiteError, r"'head' must be in \[0, 4\)"),
    ([(0, 1)], [Site(SiteKind.Z, 2, head=0)], {}, SiteError, "receivers are head inputs of kind 'q', 'k' or 'v'"),
    ([(0, 1)], [Site(SiteKind.K, 2, head=2)], {}, SiteError, r"'head' must be in \[0, 2\) for kind 'k'"),
    ([(0, 1)], ["logits", Site(SiteKind.Q, 2, head=0)], {}, SiteError, "mix 'logits' with head inputs"),
    ([(0, 1)], [], {}, SiteError, "must not be empty"),
    ([], "logits", {}, SiteError, "at least one"),
    ([(0, 1)], [Site(SiteKind.Q, 2, head=0, position=3)], {}, SiteError, "receiver_position="),
    ([(0, 1)], "logits", {"receiver_position": "S2"}, DatasetError, "named position of the dataset"),
    ([(0, 1)], "nowhere", {}, SiteError, "'logits' or Site objects"),
])
def test_bad_inputs_fail_before_any_forward_pass(model, pairs, senders, receivers, kwargs, error, match):
    with pytest.raises(error, match=match):
        path_patch(_no_runs(model), pairs, senders, receivers, **kwargs)


def test_sweep_checks_its_own_arguments(model, pairs):
    with pytest.raises(SiteError, match="'layers'"):
        path_patching_sweep(_no_runs(model), pairs, "logits", layers=[5], progress=False)
    with pytest.raises(ArgumentError, match="'memory_budget_mb' must be a positive, finite number"):
        path_patching_sweep(_no_runs(model), pairs, "logits", memory_budget_mb=0, progress=False)
