"""EAP and EAP-IG edge scores against a hand-built gradient-times-difference, and their error paths."""

import copy

import pytest
import torch

from attnlab.backends.base import Capability, ModelInfo
from attnlab.circuits import (
    GradientNotSupportedError,
    MemoryBudgetError,
    eap_scores,
)
from attnlab.circuits.graph import CircuitError, Graph, estimate_memory_mb
from attnlab.errors import CapabilityError
from attnlab.metrics import logit_diff
from attnlab.sites import Site, SiteKind

from ..conftest import random_pair_dataset


@pytest.fixture(scope="module")
def pairs(tiny):
    return random_pair_dataset(tiny, batch=6, n_pos=7, changed=(2, 4), seed=3)


@pytest.fixture(scope="module")
def eap(tiny, pairs):
    return eap_scores(tiny, pairs, batch_size=4, progress=False)


def _sender_output(model, tokens, sender):
    """A sender's output in d_model space from the backend's own cache (not the graph runner)."""
    if sender == "input":
        site = Site(SiteKind.RESID_PRE, 0)
        return model.run(tokens, cache=[site]).cache[site]
    if sender.startswith("MLP"):
        site = Site(SiteKind.MLP_OUT, int(sender[3:]))
        return model.run(tokens, cache=[site]).cache[site]
    layer, head = map(int, sender[1:].split("H"))
    z = model.run(tokens, cache=[Site(SiteKind.Z, layer, head=head)]).cache[Site(SiteKind.Z, layer, head=head)]
    d_head = model.info.d_head
    w_o = model.bridge.blocks[layer].attn.o.original_component.weight[:, head * d_head:(head + 1) * d_head]
    with torch.no_grad():
        return z @ w_o.T


def _receiver_gradient(model, ds, receiver):
    """dM/d(receiver input) on the clean run, by adding a zero perturbation at a hand-built split of the input."""
    bridge = model.bridge
    tokens, end = ds.clean_tokens, ds.end
    eps = torch.zeros(*tokens.shape, model.info.d_model, requires_grad=True)
    hooks = []
    if receiver == "logits":
        hooks.append(("ln_final.hook_in", lambda act, hook: act + eps))
    elif receiver.startswith("MLP"):
        hooks.append((f"blocks.{int(receiver[3:])}.ln2.hook_in", lambda act, hook: act + eps))
    else:
        node, kind = receiver.split(".")
        layer = int(node[1:].split("H" if kind == "q" else "KV")[0])
        index = int(node.split("H" if kind == "q" else "KV")[1])
        block = bridge.blocks[layer]
        lin = getattr(block.attn, kind).original_component
        d_head = model.info.d_head
        saved = {}

        def keep_resid(act, hook):
            saved["resid"] = act
            return act

        def split(act, hook):
            x = block.ln1.original_component(saved["resid"] + eps)
            w = lin.weight[index * d_head:(index + 1) * d_head]
            b = lin.bias[index * d_head:(index + 1) * d_head]
            act = act.clone()
            act[:, :, index] = x @ w.T + b
            return act

        hooks += [(f"blocks.{layer}.hook_resid_pre", keep_resid), (f"blocks.{layer}.attn.hook_{kind}", split)]
    with torch.enable_grad(), bridge.hooks(fwd_hooks=hooks):
        logits = bridge(tokens)
    metric = logit_diff(logits[torch.arange(len(ds)), end], ds.answers).mean()
    (grad,) = torch.autograd.grad(metric, eps)
    return grad


@pytest.mark.parametrize("edge", ["MLP0->logits", "L0H1->MLP1", "input->L2H3.q", "L1H2->L2KV1.k",
                                  "L0H0->L1KV0.v", "input->logits"])
def test_eap_equals_gradient_times_activation_difference(tiny, pairs, eap, edge):
    sender, receiver = edge.split("->")
    diff = _sender_output(tiny, pairs.corrupted_tokens, sender) - _sender_output(tiny, pairs.clean_tokens, sender)
    expected = float((diff * _receiver_gradient(tiny, pairs, receiver)).sum())
    assert eap.score(edge) == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_eap_scores_cover_exactly_the_graph_and_baselines_match(tiny, pairs, eap):
    g = Graph.from_info(tiny.info)
    assert eap.scores.shape == (g.n_senders, g.n_receivers)
    assert torch.all(eap.scores[~g.valid] == 0)
    assert (eap.scores[g.valid] != 0).float().mean() > 0.5  # a random model: most edges matter a little
    clean = logit_diff(tiny.run(pairs.clean_tokens, logits_at=pairs.end).logits, pairs.answers).mean()
    assert eap.clean_metric == pytest.approx(float(clean), abs=1e-5)
    names = [e for e, _ in eap.edge_scores()]
    assert len(names) == g.n_edges == len(set(names))


def test_batch_size_does_not_change_scores(tiny, pairs, eap):
    other = eap_scores(tiny, pairs, batch_size=6, progress=False)
    torch.testing.assert_close(other.scores, eap.scores, atol=1e-6, rtol=1e-5)


def test_eap_ig_with_one_step_is_eap(tiny, pairs, eap):
    ig1 = eap_scores(tiny, pairs, method="eap-ig", steps=1, batch_size=4, progress=False)
    torch.testing.assert_close(ig1.scores, eap.scores, atol=1e-6, rtol=1e-5)


def test_eap_ig_averages_gradients_along_the_embedding_path(tiny, pairs, eap):
    """With two steps the gradient is the mean of those at alpha=1/2 and alpha=1 (hand-built for one edge)."""
    ig2 = eap_scores(tiny, pairs, method="eap-ig", steps=2, batch_size=6, progress=False)
    edge, receiver = "MLP0->logits", "logits"
    clean_e = _sender_output(tiny, pairs.clean_tokens, "input")
    corr_e = _sender_output(tiny, pairs.corrupted_tokens, "input")
    mid = corr_e + 0.5 * (clean_e - corr_e)
    eps = torch.zeros_like(mid, requires_grad=True)
    hooks = [("blocks.0.hook_resid_pre", lambda act, hook: mid), ("ln_final.hook_in", lambda act, hook: act + eps)]
    with torch.enable_grad(), tiny.bridge.hooks(fwd_hooks=hooks):
        logits = tiny.bridge(pairs.clean_tokens)
    (g_mid,) = torch.autograd.grad(logit_diff(logits[torch.arange(len(pairs)), pairs.end], pairs.answers).mean(),
                                   eps)
    g_clean = _receiver_gradient(tiny, pairs, receiver)
    diff = _sender_output(tiny, pairs.corrupted_tokens, "MLP0") - _sender_output(tiny, pairs.clean_tokens, "MLP0")
    expected = float((diff * (g_mid + g_clean) / 2).sum())
    assert ig2.score(edge) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert ig2.score(edge) != pytest.approx(eap.score(edge), rel=1e-3)


def test_backend_without_edge_programs_is_refused(tiny, pairs):
    patch_only = copy.copy(tiny)  # a Backend whose info says nnsight and that can only patch (no model is loaded)
    patch_only.info = ModelInfo(**{**tiny.info.to_dict(), "backend": "nnsight"})
    patch_only.capabilities = frozenset({Capability.PATCHING})
    with pytest.raises(GradientNotSupportedError,
                       match="'edge_programs' capability.*'nnsight' backend.*transformer_lens") as caught:
        eap_scores(patch_only, pairs, progress=False)
    assert caught.value.capability is Capability.EDGE_PROGRAMS and isinstance(caught.value, CapabilityError)


def test_memory_budget_is_checked_before_any_work(tiny, pairs):
    need = estimate_memory_mb(tiny.info, 4, pairs.n_pos, mode="gradient")
    with pytest.raises(MemoryBudgetError, match=r"needs about .* MiB.*batch_size=|memory_budget_mb"):
        eap_scores(tiny, pairs, batch_size=4, memory_budget_mb=need / 10, progress=False)
    assert estimate_memory_mb(tiny.info, 8, 16, mode="gradient") > estimate_memory_mb(tiny.info, 4, 16,
                                                                                       mode="gradient")


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "acdc"}, "'method' must be one of"),
    ({"method": "eap-ig", "steps": 0}, "'steps' must be an integer >= 1"),
    ({"batch_size": 0}, "'batch_size' must be"),
])
def test_bad_arguments(tiny, pairs, kwargs, match):
    with pytest.raises(CircuitError, match=match):
        eap_scores(tiny, pairs, progress=False, **kwargs)
