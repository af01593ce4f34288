"""Head analyses and the Explorer's head panel through the nnsight backend (run locally) against the TransformerLens
backend, on the embedded SmolLM2-135M (grouped-query attention, RMSNorm, tied unembedding): the weights both
backends read, the previous-token / duplicate-token / induction scores, ablation effects (the loss and a metric),
copying scores (direct logit attribution), and the Explorer's head detail (attention pattern, direct logit
attribution, mean and zero ablation) and logit lens must agree within 1e-4 (relative where values are large).

The two backends share no code below :class:`~attnlab.backends.base.Backend`: TransformerLens reads hooks and the
bridge's weights, nnsight reads the Hugging Face modules' inputs/outputs and parameters. A GPT-2-layout model (random
weights, built offline) checks the nnsight weight reader's other branch (Conv1D stores its weight transposed,
LayerNorm) against the model's own forward pass.
"""

import pytest
import torch

from attnlab.errors import BackendError, MetricError
from attnlab.explorer.details import RunCache, head_detail
from attnlab.heads import ablation_effects, copying_scores, score_heads
from attnlab.models import load_model
from attnlab.sites import Site
from attnlab.tasks.induction import repeated_random_tokens

TOL = 1e-4


def close(actual, expected, msg=""):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=TOL,
                               rtol=TOL, equal_nan=True, msg=msg)


@pytest.fixture(scope="module")
def repeats(embedded_model):
    """4 random sequences of 6 tokens repeated twice, after BOS (13 tokens)."""
    return repeated_random_tokens(embedded_model, 6, 4, seed=0)


@pytest.fixture(scope="module")
def ioi4(embedded_model):
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(embedded_model, 4, seed=2, corruption="abc")


@pytest.mark.integration
def test_weights_are_the_same(embedded_model, embedded_nnsight):
    a, b = embedded_model.weights(), embedded_nnsight.weights()
    assert embedded_nnsight.weights() is b, "read once, then cached"
    assert a.W_O.shape == b.W_O.shape == (30, 9, 64, 576)
    close(b.W_O, a.W_O)
    close(b.W_U, a.W_U)
    close(b.norm_weight, a.norm_weight)
    assert (b.norm_eps, b.norm_centred, b.norm_bias) == pytest.approx((a.norm_eps, False, None))
    assert a.norm_bias is None and not a.norm_centred
    close(torch.zeros(a.W_U.shape[1]) if b.b_U is None else b.b_U,
          torch.zeros(a.W_U.shape[1]) if a.b_U is None else a.b_U)


@pytest.mark.integration
def test_head_scores_are_equal(embedded_model, embedded_nnsight, repeats):
    ref = score_heads(embedded_model, repeats)
    got = score_heads(embedded_nnsight, repeats)
    assert ref.score("induction").max() > 0.3, "no induction head found: the comparison would prove little"
    close(got.per_sequence, ref.per_sequence)
    close(got.example_patterns, ref.example_patterns)
    assert got.ranking("induction")[:5] == ref.ranking("induction")[:5]


@pytest.mark.integration
@pytest.mark.parametrize("metric,methods", [(None, ("zero", "mean")), ("kl_div", ("mean",))])
def test_ablation_effects_are_equal(embedded_model, embedded_nnsight, repeats, metric, methods):
    heads = [(4, 4), (18, 6)]
    ref = ablation_effects(embedded_model, repeats, heads, methods=methods, metric=metric)
    got = ablation_effects(embedded_nnsight, repeats, heads, methods=methods, metric=metric)
    done = ref.per_sequence[~torch.isnan(ref.per_sequence)]
    assert done.abs().max() > 1e-3, "no ablation changed anything: the comparison would prove nothing"
    close(got.per_sequence, ref.per_sequence)
    close(got.position_loss, ref.position_loss)
    assert got.clean_loss == pytest.approx(ref.clean_loss, abs=TOL, rel=TOL)
    assert got.metric == ref.metric


@pytest.mark.integration
def test_copying_scores_are_equal(embedded_model, embedded_nnsight, repeats):
    ref_mean, ref = copying_scores(embedded_model, repeats)
    got_mean, got = copying_scores(embedded_nnsight, repeats)
    assert ref.abs().max() > 0.1
    close(got, ref)
    close(got_mean, ref_mean)


@pytest.fixture(scope="module")
def run_caches(embedded_model, embedded_nnsight, ioi4):
    """What the Explorer records after a sweep, on each backend (TransformerLens first)."""
    return RunCache(embedded_model, ioi4), RunCache(embedded_nnsight, ioi4)


@pytest.mark.integration
@pytest.mark.parametrize("metric", ["logit_diff", "prob"])
def test_explorer_head_detail_is_equal(run_caches, metric):
    ref_cache, got_cache = (c.with_metric(metric) for c in run_caches)
    for layer, head in ((9, 8), (26, 5)):
        ref = head_detail(ref_cache, layer, head, prompt=1, answer_names=("IO", "S"))
        got = head_detail(got_cache, layer, head, prompt=1, answer_names=("IO", "S"))
        name = f"L{layer}H{head}"
        close(got["pattern"], ref["pattern"], msg=f"{name} pattern")
        for a, b in zip(got["end_attention"], ref["end_attention"]):
            assert a["position"] == b["position"]
            close(a["per_prompt"], b["per_prompt"], msg=f"{name} END attention to {a['position']}")
        assert got["dla"] is not None and ref["dla"] is not None
        for key in ("answer", "distractor", "difference"):
            close(got["dla"][key]["per_prompt"], ref["dla"][key]["per_prompt"], msg=f"{name} DLA {key}")
        for method in ("mean", "zero"):
            for key in ("value", "change"):
                close(got["ablation"][method][key]["per_prompt"], ref["ablation"][method][key]["per_prompt"],
                      msg=f"{name} {method} ablation {key}")
        assert got["ablation"]["metric"] == ref["ablation"]["metric"] == {
            "name": metric, "label": ref_cache.metric.label}
        close(got["clean_metric"]["per_prompt"], ref["clean_metric"]["per_prompt"])
    changes = [abs(v) for method in ("mean", "zero") for v in ref["ablation"][method]["change"]["per_prompt"]]
    assert max(changes) > 1e-5, "ablating L26H5 changed nothing: the comparison would prove little"


@pytest.mark.integration
def test_explorer_recordings_and_logit_lens_are_equal(run_caches, ioi4):
    """The recorded residual stream, and the cell panel's logit lens (final norm and unembedding from the weights)
    at a middle layer and after the last one (where it must give the model's own logits)."""
    ref, got = run_caches
    close(got.resid, ref.resid)
    close(got.mean_z[12], ref.mean_z[12])
    b = torch.arange(len(ioi4))
    for layer in (12, 30):
        close(got.lens.logits(got.resid[layer][b, ioi4.end]), ref.lens.logits(ref.resid[layer][b, ioi4.end]),
              msg=f"lens at {layer}")
    close(ref.lens.logits(ref.resid[30][b, ioi4.end]), ref.clean_logits)


# -- the nnsight weight reader on a GPT-2 layout (no embedded model) --------------------------------------------------

@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.test_nnsight_parity import _tiny_tokenizer

    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=16, attn_implementation="eager")
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial norm parameters, so that a missing gain or bias would show
        hf.transformer.ln_f.weight.uniform_(0.5, 1.5)
        hf.transformer.ln_f.bias.normal_(0, 0.3)
    hf.save_pretrained(folder)
    _tiny_tokenizer(folder)
    return hf, load_model(str(folder), backend="nnsight")


def test_gpt2_weights_rebuild_the_attention_output_and_the_logits(gpt2):
    """Conv1D ``c_proj`` stores [in, out]: sum over heads of z_h @ W_O[l, h] plus c_proj's bias is the attention
    output; the final LayerNorm (centred, with bias) and W_U applied to the last residual stream are the logits."""
    hf, model = gpt2
    w = model.weights()
    assert w.norm_centred and w.norm_bias is not None and w.norm_eps == hf.transformer.ln_f.eps
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    out = model.run(tokens, cache=[Site("z", 1), Site("attn_out", 1), Site("resid_post", 1)])
    heads = torch.einsum("bphd,hdm->bpm", out.cache[Site("z", 1)], w.W_O[1])
    close(heads + hf.transformer.h[1].attn.c_proj.bias, out.cache[Site("attn_out", 1)])
    close(w.logits(out.cache[Site("resid_post", 1)]), out.logits)
    # with a frozen scale the map is linear: the pieces of the residual stream add up to the logits minus biases
    x = out.cache[Site("resid_post", 1)]
    scale = w.scale(x)
    parts = w.apply(x - heads, scale) + w.apply(heads, scale)
    close(parts @ w.W_U + w.norm_bias @ w.W_U, out.logits)


def test_remote_models_keep_their_weights_on_the_server(gpt2):
    from attnlab.backends.nnsight import NNsightBackend

    _, model = gpt2
    simulated = NNsightBackend(model.nn, model.info, model.tokenizer, remote="local")
    with pytest.raises(BackendError, match="weights stay on the server"):
        simulated.weights()
    data = repeated_random_tokens(model, 3, 2, seed=0, prepend_bos=False)
    with pytest.raises(BackendError, match="stay on the server"):
        copying_scores(simulated, data)
    with pytest.raises(MetricError, match="unknown metric"):
        ablation_effects(model, data, [(0, 0)], metric="nope")


def test_heads_and_explorer_import_no_backend_library_and_no_cycle():
    """heads/, explorer/ and ablation.py reach models only through the Backend interface (no transformer_lens or
    nnsight import, no hook-name strings), and the heads modules import each other without a cycle."""
    import ast
    from pathlib import Path

    import attnlab

    root = Path(attnlab.__file__).parent
    files = sorted(root.glob("heads/*.py")) + sorted(root.glob("explorer/*.py")) + [root / "ablation.py"]
    graph = {}
    for path in files:
        tree = ast.parse(path.read_text())
        mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = sorted(m for m in mods if m.split(".")[0] in ("transformer_lens", "nnsight"))
        assert not bad, f"{path.relative_to(root)} imports {bad}"
        code = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        assert not [c for c in code if "hook_" in c or ".bridge" in c], path
        if path.parent.name == "heads":
            graph[path.stem] = {m.rsplit(".", 1)[1] for m in mods if m.startswith("attnlab.heads.")}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])

    for node in graph:
        visit(node, [])
