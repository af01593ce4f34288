"""Attribution patching (attnlab.circuits.attribution) against independent computations.

- On a tiny random model in float64, every cell equals a direct autograd computation written here with raw
  TransformerLens hooks (a zero probe added to each activation; its gradient is the activation's gradient).
- The estimate is the derivative of exact patching: patching ``target + eps * (source - target)`` (raw hooks) and
  taking a central difference in ``eps`` gives the same number (the linear regime), while the full patch
  (``eps = 1``, what ``run_sweep`` measures) differs from it by the curvature of the model.
- Results are laid out like ``run_sweep``'s, so the two compare cell by cell.
- On the embedded model (integration), attribution ranks IOI heads like exact patching.
"""

import copy
import dataclasses

import pytest
import torch

from attnlab.backends.base import Capability
from attnlab.circuits.attribution import ATTRIBUTION_COMPONENTS, attribution_patching, attribution_sweep
from attnlab.errors import BackendError, DatasetError, SiteError
from attnlab.metrics import logit_diff
from attnlab.models import tiny_model
from attnlab.patching import run_sweep

from tests.conftest import random_pair_dataset

HOOKS = {"heads": "blocks.{}.attn.hook_z", "heads_by_pos": "blocks.{}.attn.hook_z",
         "resid_pre": "blocks.{}.hook_resid_pre", "attn_out": "blocks.{}.hook_attn_out",
         "mlp_out": "blocks.{}.hook_mlp_out"}


@pytest.fixture(scope="module")
def model64():
    model = tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)
    model.bridge.double()
    return model


@pytest.fixture(scope="module")
def pairs(model64):
    return random_pair_dataset(model64, batch=3, n_pos=7, changed=(2, 5), seed=3)


def _tokens(dataset, direction):
    c, k = dataset.clean_tokens, dataset.corrupted_tokens
    return (c, k) if direction == "denoising" else (k, c)


def _mean_ld(bridge, tokens, dataset, hooks=()):
    logits = bridge.run_with_hooks(tokens, fwd_hooks=list(hooks))
    return logit_diff(logits[torch.arange(len(dataset)), dataset.end], dataset.answers).mean()


def direct_autograd(model, dataset, component, direction):
    """(source - target) . d mean LD / d act on the target run, per cell, by hand; normalised by the gap."""
    bridge, n_layers = model.bridge, model.info.n_layers
    source_tokens, target_tokens = _tokens(dataset, direction)
    names = [HOOKS[component].format(layer) for layer in range(n_layers)]
    with torch.no_grad():
        _, source_cache = bridge.run_with_cache(source_tokens, names_filter=lambda n: n in names)
        _, target_cache = bridge.run_with_cache(target_tokens, names_filter=lambda n: n in names)
        clean = _mean_ld(bridge, dataset.clean_tokens, dataset)
        corrupted = _mean_ld(bridge, dataset.corrupted_tokens, dataset)
    probes = {n: torch.zeros_like(target_cache[n], requires_grad=True) for n in names}
    hooks = [(n, lambda act, hook, probe=probes[n]: act + probe) for n in names]
    _mean_ld(bridge, target_tokens, dataset, hooks).backward()
    out = []
    for n in names:
        prod = (source_cache[n] - target_cache[n]) * probes[n].grad
        if component == "heads":
            cell = prod.sum(dim=(0, 1, 3))  # [head]
        elif component == "heads_by_pos":
            cell = prod.sum(dim=(0, 3)).T  # [head, pos]
        else:
            cell = prod.sum(dim=(0, 2))  # [pos]
        out.append(cell)
    return torch.stack(out) / (clean - corrupted)


def scaled_patch(model, dataset, component, direction, layer, head, pos, eps):
    """Mean LD of the target run with one cell moved by ``eps`` of the way to its source value (raw hooks)."""
    bridge = model.bridge
    source_tokens, target_tokens = _tokens(dataset, direction)
    name = HOOKS[component].format(layer)
    with torch.no_grad():
        _, source_cache = bridge.run_with_cache(source_tokens, names_filter=lambda n: n == name)
    src = source_cache[name]

    def hook(act, hook):
        act = act.clone()
        idx = (slice(None), slice(None) if pos is None else pos) + (() if head is None else (head,))
        act[idx] = act[idx] + eps * (src[idx] - act[idx])
        return act

    with torch.no_grad():
        return _mean_ld(bridge, target_tokens, dataset, [(name, hook)])


# -- equality with a direct autograd computation ------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_every_cell_equals_a_direct_autograd_dot_product(model64, pairs, direction):
    results = attribution_patching(model64, pairs, list(ATTRIBUTION_COMPONENTS), direction=direction)
    for component, result in results.items():
        expected = direct_autograd(model64, pairs, component, direction)
        assert expected.abs().max() > 1e-2, component  # the check is not vacuous
        torch.testing.assert_close(result.values.double(), expected, rtol=1e-5, atol=1e-6, msg=component)
        assert result.analysis == "attribution_patching" and result.settings["forward_passes"] == 2


# -- the linear regime: attribution is the derivative of exact patching -------------------------------------------
@pytest.fixture(scope="module")
def attributions(model64, pairs):
    return {d: attribution_patching(model64, pairs, list(ATTRIBUTION_COMPONENTS), direction=d)
            for d in ("denoising", "noising")}


@pytest.mark.parametrize("component,cell", [
    ("heads", (1, 2, None)), ("heads", (2, 0, None)), ("heads_by_pos", (1, 3, 5)), ("heads_by_pos", (2, 1, 6)),
    ("resid_pre", (1, None, 5)),
    ("attn_out", (0, None, 6)), ("mlp_out", (1, None, 5)), ("resid_pre", (0, None, 2)),
])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_attribution_is_the_derivative_of_exact_patching(model64, pairs, attributions, component, cell, direction):
    layer, head, pos = cell
    result = attributions[direction][component]
    named = {"layer": layer, "head": head, "pos": pos}
    idx = tuple(named[d] for d in result.dims)
    gap = result.baselines["clean"] - result.baselines["corrupted"]
    eps = 1e-4
    plus = scaled_patch(model64, pairs, component, direction, layer, head, pos, eps)
    minus = scaled_patch(model64, pairs, component, direction, layer, head, pos, -eps)
    slope = float((plus - minus) / (2 * eps)) / gap
    assert abs(slope) > 1e-3
    assert float(result.values[idx]) == pytest.approx(slope, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_full_patches_differ_from_the_estimate_but_correlate(direction):
    """Attribution is an approximation: on random weights and a two-token corruption it is not exact (the full patch,
    eps = 1, is what run_sweep measures), yet ranks heads like exact patching; cells whose source and target
    activations are equal are exactly 0 in both."""
    model = tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)
    pairs = random_pair_dataset(model, batch=3, n_pos=7, changed=(2, 5), seed=3)
    attr = attribution_sweep(model, pairs, "heads_by_pos", direction=direction)
    exact = run_sweep(model, pairs, "heads_by_pos", direction=direction, progress=False)
    assert attr.dims == exact.dims and attr.labels == exact.labels and attr.index == exact.index
    assert attr.baselines == pytest.approx(exact.baselines)
    a, e = attr.values.flatten().double(), exact.values.flatten().double()
    assert (a - e).abs().max() > 1e-3
    assert torch.corrcoef(torch.stack([a, e]))[0, 1] > 0.5
    # positions before the first corrupted token (2): attention is causal, nothing differs there
    assert torch.all(attr.values[:, :, :2] == 0) and torch.all(exact.values[:, :, :2] == 0)


def test_per_prompt_estimates_average_to_the_values(model64, pairs):
    r = attribution_sweep(model64, pairs, "heads", direction="noising")
    gap = r.baselines["clean"] - r.baselines["corrupted"]
    torch.testing.assert_close(((r.per_prompt.double().mean(-1) - r.baselines["clean"]) / gap).float(), r.values,
                               atol=1e-5, rtol=0)
    assert r.per_prompt.shape == (3, 4, len(pairs))
    df = r.to_dataframe()
    assert set(df["component"]) >= {"L0H0", "L2H3"} and len(df) == 12


def test_layers_restrict_the_result(model64, pairs):
    full = attribution_sweep(model64, pairs, "mlp_out")
    part = attribution_sweep(model64, pairs, "mlp_out", layers=[2, 0])
    assert part.index["layer"] == [2, 0] and part.labels["layer"] == ["L2", "L0"]
    torch.testing.assert_close(part.values, full.values[[2, 0]])


# -- input checks, before any work --------------------------------------------------------------------------------
def _no_runs(model):
    """A copy of ``model`` whose runs fail: errors must come before any forward pass."""
    clone = copy.copy(model)

    def run(*args, **kwargs):
        raise AssertionError("a forward pass started before the input was checked")

    clone.run = run
    return clone


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(components=["heads", "neurons"]), SiteError, r"'components' must be among .*\['neurons'\]"),
    (dict(components=[]), SiteError, "must not be empty"),
    (dict(components=["heads"], layers=[3]), SiteError, r"'layers' must be distinct ints in \[0, 3\)"),
    (dict(components=["heads"], layers=[0, 0]), SiteError, "'layers'"),
    (dict(components=["heads"], direction="sideways"), Exception, "'direction' must be 'denoising' or 'noising'"),
])
def test_bad_inputs_fail_before_any_forward_pass(model64, pairs, kwargs, error, match):
    with pytest.raises(error, match=match):
        attribution_patching(_no_runs(model64), pairs, **kwargs)


def test_mlp_components_on_an_attention_only_model_are_refused():
    model = tiny_model(n_layers=2, n_heads=2, attn_only=True, seed=0)
    pairs = random_pair_dataset(model, batch=2, n_pos=5, changed=(3,))
    with pytest.raises(SiteError, match="attention-only"):
        attribution_patching(_no_runs(model), pairs, ["heads", "mlp_out"])
    assert attribution_sweep(model, pairs, "heads").values.shape == (2, 2)


def test_a_dataset_outside_the_vocabulary_is_refused(model64, pairs):
    bad = dataclasses.replace(pairs, answers=pairs.answers + model64.info.d_vocab)
    with pytest.raises(DatasetError, match="answers has ids outside the vocabulary"):
        attribution_sweep(_no_runs(model64), bad, "heads")


def test_a_backend_without_gradients_is_refused_by_name(model64, pairs):
    nnsight_like = _no_runs(model64)
    nnsight_like.info = dataclasses.replace(model64.info, backend="nnsight")
    nnsight_like.capabilities = frozenset({Capability.PATCHING})
    with pytest.raises(BackendError, match="'gradients' capability.*'nnsight' backend.*backend='transformer_lens'"):
        attribution_sweep(nnsight_like, pairs, "heads")


# -- the embedded model -------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_embedded_ioi_heads_rank_like_exact_patching(embedded_model, ioi16):
    layers = EMBEDDED_LAYERS
    attr = attribution_sweep(embedded_model, ioi16, "heads", layers=layers)
    exact = run_sweep(embedded_model, ioi16, "heads", layers=layers, progress=False)
    a, e = attr.values.flatten(), exact.values.flatten()
    ranks = lambda x: x.argsort().argsort().double()  # noqa: E731 (no ties in float scores)
    spearman = float(torch.corrcoef(torch.stack([ranks(a), ranks(e)]))[0, 1])
    assert spearman > 0.3
    # the head exact patching finds most important is among attribution's top 3
    top_exact = int(e.abs().argmax())
    assert top_exact in a.abs().argsort(descending=True)[:3].tolist()


# the blocks holding the heads exact patching ranks highest on these prompts (L23H3, L24H4, L29H1 ...): keeps the
# exact sweep to a few seconds
EMBEDDED_LAYERS = [23, 24, 29]
