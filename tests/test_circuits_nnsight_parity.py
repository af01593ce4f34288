"""Gradients and edge-level circuit analyses through the nnsight backend (local) against the TransformerLens backend,
on the embedded SmolLM2-135M (grouped-query attention): node attribution patching, EAP and EAP-IG edge scores, path
patching, faithfulness of a fixed circuit, ACDC on a few receivers and the unablated graph pass agree within 1e-4
(relative where scores are large). The two backends are independent implementations of the same model (a
TransformerBridge's hooks and weight layout, and nnsight's module sites over the Hugging Face modules), so equal
numbers check both."""

import pytest
import torch

from attnlab.backends.base import Capability, Intervention
from attnlab.circuits import (
    GraphRunner,
    acdc,
    attribution_patching,
    circuit_from_scores,
    eap_scores,
    faithfulness,
    path_patch,
)
from attnlab.errors import CapabilityError
from attnlab.sites import Site

from .test_capabilities import _Unchanged as _Recorder  # EdgeCallbacks that change nothing, recording calls

pytestmark = pytest.mark.integration

TOL = 1e-4


def close(actual, expected, *, rtol=TOL, atol=TOL, msg=None):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=msg)


@pytest.fixture(scope="module")
def ioi4(embedded_model):
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(embedded_model, 4, seed=1, corruption="abc", templates=(0,))


@pytest.fixture(scope="module")
def eap_tl(embedded_model, ioi4):
    return eap_scores(embedded_model, ioi4, progress=False)


def test_local_nnsight_declares_gradients_and_edge_graph(embedded_nnsight):
    assert {Capability.GRADIENTS, Capability.EDGE_GRAPH, Capability.WEIGHTS} <= embedded_nnsight.capabilities


def test_graph_runner_with_nothing_ablated_is_the_models_forward_pass(embedded_model, embedded_nnsight, ioi4):
    tokens, end = ioi4.clean_tokens, ioi4.end
    own = embedded_nnsight.run(tokens, logits_at=end).logits
    graph_logits = GraphRunner(embedded_nnsight).run(tokens, logits_at=end).logits
    assert torch.equal(graph_logits, own)  # the same modules, in the same order: bit for bit
    close(graph_logits, embedded_model.run(tokens, logits_at=end).logits, rtol=0)
    # the same callbacks, in the same order, with the same shapes, as the TransformerLens runner
    calls = []
    for model in (embedded_model, embedded_nnsight):
        rec = _Recorder()
        model.edge_runner().run(tokens[:2], rec, logits_at=end[:2])
        calls.append(rec.calls)
    assert calls[0] == calls[1]
    assert calls[1][:7] == [("resid_pre", 0), ("q", 0), ("k", 0), ("v", 0), ("heads", 0, (2, tokens.shape[1], 9, 576)),
                            ("mlp_in", 0), ("mlp_out", 0)]


def test_split_receivers_and_senders_match_transformer_lens(embedded_model, embedded_nnsight, ioi4):
    """Every receiver kind replaced (per-head q/k/v recomputed from a perturbed residual stream, the MLP input and the
    logits input shifted) and every sender recorded: the same logits and sender outputs on both backends."""
    tokens, end = ioi4.clean_tokens[:2], ioi4.end[:2]
    g = torch.Generator().manual_seed(0)
    info = embedded_model.info
    noise = {kind: torch.randn(info.n_layers, info.d_model, generator=g) * 0.5 for kind in ("q", "k", "v", "mlp")}
    noise["logits"] = torch.randn(info.d_model, generator=g)

    class Perturb(_Recorder):
        def __init__(self):
            super().__init__()
            self.senders = {}

        def head_input(self, layer, kind, resid):
            n = info.n_heads if kind == "q" else info.n_kv_heads
            x = resid[:, :, None].expand(-1, -1, n, -1).clone()
            x[:, :, layer % n] += noise[kind][layer]  # one head gets its own input
            return x

        def head_outputs(self, layer, outputs):
            self.senders[("heads", layer)] = outputs

        def mlp_input(self, layer, act):
            return act + noise["mlp"][layer]

        def mlp_output(self, layer, act):
            self.senders[("mlp", layer)] = act

        def logits_input(self, act):
            return act + noise["logits"]

    out = []
    for model in (embedded_model, embedded_nnsight):
        cb = Perturb()
        out.append((model.edge_runner().run(tokens, cb, logits_at=end), cb.senders))
    (tl_logits, tl_senders), (nn_logits, nn_senders) = out
    close(nn_logits, tl_logits, rtol=0)
    assert (tl_logits - embedded_model.run(tokens, logits_at=end).logits).abs().max() > 0.1  # the noise mattered
    assert tl_senders.keys() == nn_senders.keys()
    for key in tl_senders:
        close(nn_senders[key], tl_senders[key], rtol=0, msg=str(key))


def test_grad_runs_keep_autograd_with_interventions(embedded_model, embedded_nnsight, ioi4):
    """``run(grad=True)``: recorded activations carry the graph; interventions (applied to clones, or in place at
    resid_mid, whose tensor the residual branch also reads) give the same values as without gradients; the gradients
    equal TransformerLens's."""
    tokens, end, answers = ioi4.clean_tokens, ioi4.end, ioi4.answers
    sites = [Site("resid_pre", 3), Site("q", 5), Site("z", 6), Site("resid_mid", 8), Site("mlp_out", 10)]
    g = torch.Generator().manual_seed(1)
    ivs = [Intervention("resid_pre", 3, rows=torch.tensor([0, 2]), positions=torch.tensor([4, 6]),
                        values=torch.randn(2, 576, generator=g)),
           Intervention("z", 6, rows=torch.arange(2), heads=torch.tensor([1, 4]),
                        values=torch.randn(2, tokens.shape[1], 64, generator=g))]
    mid = Intervention("resid_mid", 8, rows=torch.tensor([3]), positions=torch.tensor([5]),
                       values=torch.randn(1, 576, generator=g))
    plain = embedded_nnsight.run(tokens, cache=sites, interventions=ivs + [mid], logits_at=end)
    kept = embedded_nnsight.run(tokens, cache=sites, interventions=ivs + [mid], logits_at=end, grad=True)
    assert kept.logits.requires_grad and all(kept.cache[s].requires_grad for s in sites)
    assert torch.equal(kept.logits.detach(), plain.logits)
    for s in sites:
        assert torch.equal(kept.cache[s].detach(), plain.cache[s]), s.name
    # TransformerLens's grad=True path applies a resid_mid patch to the MLP branch only (a clone returned from the
    # hook), so the gradient comparison leaves that intervention out
    grads = []
    for model in (embedded_model, embedded_nnsight):
        out = model.run(tokens, cache=sites, interventions=ivs, logits_at=end, grad=True)
        ld = out.logits.gather(1, answers.to(out.logits.device))
        grads.append(torch.autograd.grad((ld[:, 0] - ld[:, 1]).sum(), [out.cache[s] for s in sites]))
    for s, a, b in zip(sites, *grads):
        close(b, a, rtol=1e-3, atol=1e-5, msg=s.name)
        assert a.abs().max() > 1e-3


def test_attribution_patching_matches(embedded_model, embedded_nnsight, ioi4):
    a = attribution_patching(embedded_model, ioi4, ["heads", "resid_pre"])
    b = attribution_patching(embedded_nnsight, ioi4, ["heads", "resid_pre"])
    for component in ("heads", "resid_pre"):
        close(b[component].per_prompt, a[component].per_prompt, msg=component)
        close(b[component].values, a[component].values, msg=component)
        assert a[component].values.abs().max() > 0.05  # not a trivially zero comparison


@pytest.mark.parametrize("method,steps", [("eap", 1), ("eap-ig", 2)])
def test_eap_scores_match(embedded_model, embedded_nnsight, ioi4, eap_tl, method, steps):
    a = eap_tl if method == "eap" else eap_scores(embedded_model, ioi4, method=method, steps=steps, progress=False)
    b = eap_scores(embedded_nnsight, ioi4, method=method, steps=steps, progress=False)
    scale = float(a.scores.abs().max())
    assert scale > 0.1
    close(b.scores, a.scores, rtol=TOL, atol=TOL * scale)
    assert b.clean_metric == pytest.approx(a.clean_metric, abs=TOL)
    assert b.corrupted_metric == pytest.approx(a.corrupted_metric, abs=TOL)
    assert [e for e, _ in b.edge_scores()[:20]] == [e for e, _ in a.edge_scores()[:20]]


def test_path_patching_matches(embedded_model, embedded_nnsight, ioi4):
    senders, receivers = [(9, 6), (10, 3)], [Site("q", 14), Site("v", 14, head=1)]
    for rec in (receivers, "logits"):
        a = path_patch(embedded_model, ioi4, senders, rec)
        b = path_patch(embedded_nnsight, ioi4, senders, rec)
        close(b.per_prompt, a.per_prompt)
        assert b.value == pytest.approx(a.value, abs=TOL)


def test_faithfulness_of_a_fixed_circuit_matches(embedded_model, embedded_nnsight, ioi4, eap_tl):
    # a circuit found through TransformerLens applies to the same model through nnsight
    circuit = circuit_from_scores(eap_tl, n_edges=200)
    a = faithfulness(embedded_model, ioi4, circuit)
    b = faithfulness(embedded_nnsight, ioi4, circuit)
    for key in ("circuit", "full", "ablated"):
        close(b.per_prompt[key], a.per_prompt[key], msg=key)
    assert b.faithfulness == pytest.approx(a.faithfulness, abs=1e-3)
    assert a.full_metric - a.ablated_metric > 0.5


def test_acdc_on_a_few_receivers_matches(embedded_model, embedded_nnsight, ioi4):
    """Edges into the logits, the first 16 tests (one batched pass): the same measured effects and kept edges."""
    kwargs = dict(receivers=["logits"], max_tests=16, progress=False)
    a = acdc(embedded_model, ioi4, 0.05, **kwargs)
    b = acdc(embedded_nnsight, ioi4, 0.05, **kwargs)
    tested = ~a.effects.isnan()
    assert int(tested.sum()) == kwargs["max_tests"] and torch.equal(tested, ~b.effects.isnan())
    close(b.effects[tested], a.effects[tested])
    assert torch.equal(b.kept, a.kept)
    assert b.metric == pytest.approx(a.metric, abs=TOL)
    assert (a.kept != GraphRunner(embedded_model).graph.valid).any()  # the threshold removed something


def test_remote_models_refuse_single_pass_and_gradient_analyses_before_any_work(embedded_nnsight, ioi4):
    """A remote model (simulated) runs edge-level *programs* (EAP, EAP-IG, faithfulness: tests/remote), but
    analyses that need autograd on this side or attnlab's callbacks inside single passes are refused up front."""
    from attnlab.backends.nnsight import NNsightBackend
    from attnlab.circuits.acdc import acdc

    m = embedded_nnsight
    simulated = NNsightBackend(m.nn, m.info, m.tokenizer, remote="local")
    assert not {Capability.GRADIENTS, Capability.EDGE_GRAPH} & simulated.capabilities
    assert Capability.EDGE_PROGRAMS in simulated.capabilities

    def no_run(*args, **kwargs):
        raise AssertionError("a forward pass started before the capability was checked")

    simulated._execute = no_run
    for call, pattern in ((lambda: attribution_patching(simulated, ioi4, ["heads"]), "local models only"),
                          (lambda: simulated.run(ioi4.clean_tokens, grad=True), "local models only"),
                          (lambda: GraphRunner(simulated), "only a local model can run"),
                          (lambda: acdc(simulated, ioi4, threshold=0.1), "only a local model can run")):
        with pytest.raises(CapabilityError, match=pattern) as caught:
            call()
        assert caught.value.capability in (Capability.GRADIENTS, Capability.EDGE_GRAPH)


def test_gpt2_fused_qkv_has_gradients_but_no_edge_runner(tmp_path):
    """GPT-2's fused c_attn: ``grad=True`` runs (q recorded from the split output carries the graph, and its gradient
    equals one taken by hand through a plain PyTorch hook); the edge runner refuses with a clear message."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from attnlab.models import load_model

    from .test_nnsight_parity import _tiny_tokenizer

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=16, attn_implementation="eager")
    hf = GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    _tiny_tokenizer(tmp_path)
    model = load_model(str(tmp_path), backend="nnsight")
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    out = model.run(tokens, cache=[Site("q", 1), Site("z", 1)], grad=True)
    gq, gz = torch.autograd.grad(out.logits[:, -1, 3].sum(), [out.cache[Site("q", 1)], out.cache[Site("z", 1)]])

    seen = {}

    def leaf_qkv(module, args, output):
        seen["qkv"] = output
        return output

    def leaf_z(module, args):
        seen["z"] = args[0]

    hooks = [hf.transformer.h[1].attn.c_attn.register_forward_hook(leaf_qkv),
             hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(leaf_z)]
    logits = hf(tokens).logits
    for h in hooks:
        h.remove()
    g_qkv, g_z = torch.autograd.grad(logits[:, -1, 3].sum(), [seen["qkv"], seen["z"]])
    close(gq, g_qkv[..., :32].reshape(2, 6, 4, 8), rtol=1e-5, atol=1e-6)
    close(gz, g_z.reshape(2, 6, 4, 8), rtol=1e-5, atol=1e-6)
    with pytest.raises(CapabilityError, match="fused") as caught:
        model.edge_runner()
    assert caught.value.capability is Capability.EDGE_GRAPH
