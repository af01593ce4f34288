"""EAP against a reference that shares nothing with it: exact finite differences of the metric with respect to one
scaled edge, in float64, computed with plain PyTorch hooks on the Hugging Face modules of a small random Llama.

EAP's score of edge s->r is the first-order change of the metric when r's input moves by a_s(corrupted) - a_s(clean)
(Syed et al. 2023, section 2): d/d(alpha) M(input_r + alpha * delta_s) at alpha = 0, with every other reader of s
left alone. The reference runs exactly that, at alpha = +-h and +-h/2, and takes the central differences (combined so
that their h^2 errors cancel). It uses no autograd,
no TransformerLens and nothing of attnlab but the loaded weights: the receiver's input is rebuilt from the recorded
residual stream through the layer's own norm and projection, so a mistake in attnlab's receiver split, its
correction algebra or its gradient plumbing shows here.
"""

import shutil

import pytest
import torch

from attnlab.circuits import eap_scores
from attnlab.models import load_model
from attnlab.models.embedded import embedded_checkpoint
from tests.conftest import random_pair_dataset

pytestmark = pytest.mark.integration

H, G, D, L = 4, 2, 64, 3  # query heads, key/value heads, d_model, layers


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random 3-layer Llama (grouped-query attention, SmolLM2's tokenizer), saved as a Hugging Face checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=D, intermediate_size=128, num_hidden_layers=L,
                         num_attention_heads=H, num_key_value_heads=G, max_position_embeddings=64,
                         tie_word_embeddings=False, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # make the norms' scales matter (they are 1 at initialisation)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("tiny_llama") / "ckpt"
    model.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(embedded_checkpoint() / f, folder / f)
    return folder


@pytest.fixture(scope="module")
def reference(checkpoint):
    from transformers import AutoModelForCausalLM

    # sdpa: in float64 it computes in float64 throughout (eager attention takes its softmax in float32)
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float64, attn_implementation="sdpa").eval()


class Hooks:
    """Plain forward hooks on a Hugging Face Llama: record sender outputs, or move one receiver's input."""

    def __init__(self, model):
        self.model, self.layers = model, model.model.layers
        self.d_head = model.config.hidden_size // model.config.num_attention_heads
        self.handles, self.resid = [], {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _hidden(self, args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def record_residuals(self):
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(
                lambda m, a, k, i=i: self.resid.__setitem__(("pre", i), self._hidden(a, k)), with_kwargs=True))
            self.handles.append(layer.post_attention_layernorm.register_forward_pre_hook(
                lambda m, a, i=i: self.resid.__setitem__(("mid", i), a[0])))

    def sender_outputs(self, tokens):
        """Every sender's output in d_model space, {name: Float64[batch, pos, d_model]}."""
        out = {}
        dh = self.d_head
        self.handles.append(self.model.model.embed_tokens.register_forward_hook(
            lambda m, a, o: out.__setitem__("input", o)))
        for i, layer in enumerate(self.layers):
            def per_head(m, a, i=i):
                z = a[0]
                for h in range(H):
                    out[f"L{i}H{h}"] = z[..., h * dh:(h + 1) * dh] @ m.weight[:, h * dh:(h + 1) * dh].T
            self.handles.append(layer.self_attn.o_proj.register_forward_pre_hook(per_head))
            self.handles.append(layer.mlp.register_forward_hook(lambda m, a, o, i=i: out.__setitem__(f"MLP{i}", o)))
        with torch.no_grad():
            self.model(tokens)
        self.__exit__()
        self.handles = []
        return out

    def move_receiver(self, receiver: str, shift):
        """Make ``receiver``'s input (only its) ``input + shift``; ``shift`` Float64[batch, pos, d_model]."""
        self.record_residuals()
        dh = self.d_head
        if receiver == "logits":
            self.handles.append(self.model.model.norm.register_forward_pre_hook(lambda m, a: (a[0] + shift,)))
            return
        if receiver.startswith("MLP"):
            i = int(receiver[3:])
            layer = self.layers[i]
            self.handles.append(layer.mlp.register_forward_pre_hook(
                lambda m, a: (layer.post_attention_layernorm.forward(self.resid[("mid", i)] + shift),)))
            return
        node, kind = receiver.split(".")
        if kind == "q":
            i, idx = map(int, node[1:].split("H"))
        else:
            i, idx = map(int, node[1:].split("KV"))
        layer = self.layers[i]
        proj = {"q": layer.self_attn.q_proj, "k": layer.self_attn.k_proj, "v": layer.self_attn.v_proj}[kind]

        def replace(m, a, o):
            # .forward: the module's own computation, without running its hooks again
            moved = m.forward(layer.input_layernorm.forward(self.resid[("pre", i)] + shift))
            o = o.clone()
            o[..., idx * dh:(idx + 1) * dh] = moved[..., idx * dh:(idx + 1) * dh]
            return o

        self.handles.append(proj.register_forward_hook(replace))


def mean_logit_diff(model, tokens, end, answers) -> float:
    with torch.no_grad():
        logits = model(tokens).logits[torch.arange(len(tokens)), end]
    return float((logits.gather(1, answers[:, :1]) - logits.gather(1, answers[:, 1:])).mean())


def finite_difference(model, pairs, edge: str, h: float = 1e-2) -> float:
    """dM/d(alpha) at 0 by central differences at h and h/2, combined (Richardson) so the h^2 error cancels."""
    sender, receiver = edge.split("->")
    delta = Hooks(model).sender_outputs(pairs.corrupted_tokens)[sender] - \
        Hooks(model).sender_outputs(pairs.clean_tokens)[sender]

    def central(step: float) -> float:
        values = []
        for alpha in (step, -step):
            with Hooks(model) as hooks:
                hooks.move_receiver(receiver, alpha * delta)
                values.append(mean_logit_diff(model, pairs.clean_tokens, pairs.end, pairs.answers))
        return (values[0] - values[1]) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def test_eap_equals_finite_differences_of_one_scaled_edge(checkpoint, reference):
    model = load_model(str(checkpoint))  # float32, as analyses run
    pairs = random_pair_dataset(model, batch=3, n_pos=6, changed=(2, 4), seed=4)
    # the two stacks agree on the forward pass before anything is compared
    torch.testing.assert_close(
        torch.tensor(mean_logit_diff(reference, pairs.clean_tokens, pairs.end, pairs.answers), dtype=torch.float64),
        model.run(pairs.clean_tokens, logits_at=pairs.end).logits.double().gather(1, pairs.answers)
        .diff(dim=1).neg().mean(), atol=1e-4, rtol=1e-4)
    scores = eap_scores(model, pairs, method="eap", progress=False)
    g = scores.graph
    edges = ["input->L0H1.q", "input->L0KV1.k", "input->L0KV0.v", "input->MLP0", "L0H2->L1H3.q", "L0H0->L2KV1.k",
             "L1H1->L2KV0.v", "MLP0->L1H0.q", "MLP1->L2KV1.v", "L0H3->MLP0", "L1H2->MLP2", "MLP0->MLP2",
             "input->logits", "L2H0->logits", "MLP2->logits", "L1H3->logits"]
    edges += [e for e, _ in scores.edge_scores()[:6] if e not in edges]  # and the strongest edges
    assert {e.split("->")[1].split(".")[-1][:3] for e in edges} >= {"q", "k", "v", "MLP", "log"}
    fd = torch.tensor([finite_difference(reference, pairs, e) for e in edges], dtype=torch.float64)
    ours = torch.tensor([scores.score(e) for e in edges], dtype=torch.float64)
    scale = float(fd.abs().max())
    assert scale > 1e-2 and (fd.abs() > 1e-3 * scale).sum() >= len(edges) // 2  # not a comparison of zeros
    torch.testing.assert_close(ours, fd, atol=2e-4 * scale, rtol=2e-3)
    assert len(g.edge_names()) == g.n_edges
