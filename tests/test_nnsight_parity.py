"""The nnsight backend (run locally) against the TransformerLens backend: every patching sweep kind, both
directions, on the embedded SmolLM2-135M (grouped-query attention), must agree within 1e-4; and a GPT-2-style model
(random weights, built offline) maps its sites correctly."""

import pytest
import torch

from attnlab.models import load_model
from attnlab.patching import run_sweep
from attnlab.sites import Site

TOL = 1e-4

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nnsight_model(embedded_nnsight):
    return embedded_nnsight


@pytest.fixture(scope="module")
def ioi4(embedded_model):
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(embedded_model, 4, seed=1, corruption="s2_swap")


def test_same_model_same_tokens(embedded_model, nnsight_model, ioi4):
    info_tl, info_nn = embedded_model.info, nnsight_model.info
    for field in ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp", "d_vocab", "prepend_bos"):
        assert getattr(info_nn, field) == getattr(info_tl, field), field
    texts = ["When Mary and John went to the store, John gave a drink to"]
    assert torch.equal(nnsight_model.to_tokens(texts), embedded_model.to_tokens(texts))
    a = embedded_model.run(ioi4.clean_tokens, logits_at=ioi4.end).logits
    b = nnsight_model.run(ioi4.clean_tokens, logits_at=ioi4.end).logits
    torch.testing.assert_close(b, a, atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "component,direction,layers",
    [("heads", "denoising", [0, 14, 29]), ("heads", "noising", [5, 22]), ("heads_by_pos", "denoising", [9]),
     ("heads_by_pos", "noising", [20]), ("resid_pre", "denoising", [0, 9]), ("resid_pre", "noising", [0, 17]),
     ("attn_out", "denoising", [0, 9]), ("attn_out", "noising", [0, 13]), ("mlp_out", "denoising", [0, 21]),
     ("mlp_out", "noising", [0, 28])],
)
def test_sweep_parity_with_transformer_lens(embedded_model, nnsight_model, ioi4, component, direction, layers):
    # heads_by_pos: the second half of the prompt (S2 to END), where the corruption acts
    positions = list(range(8, 16)) if component == "heads_by_pos" else None
    kwargs = dict(direction=direction, layers=layers, progress=False, **({"positions": positions} if positions else {}))
    reference = run_sweep(embedded_model, ioi4, component, **kwargs)
    result = run_sweep(nnsight_model, ioi4, component, **kwargs)
    assert reference.values.abs().max() > 1e-3, "reference is all zeros: the comparison would prove nothing"
    assert result.settings["variants_run"] == reference.settings["variants_run"]
    torch.testing.assert_close(result.values, reference.values, atol=TOL, rtol=0)
    torch.testing.assert_close(result.per_prompt, reference.per_prompt, atol=10 * TOL, rtol=0)


@pytest.mark.parametrize("metric,component,direction,layers", [
    ("kl_div", "heads", "denoising", [14, 29]), ("prob", "resid_pre", "noising", [17]),
    ("accuracy", "mlp_out", "denoising", [0]),
])
def test_metric_sweeps_reduced_inside_the_trace(embedded_model, nnsight_model, ioi4, metric, component, direction,
                                                layers):
    """Built-in metrics are computed inside the nnsight trace (one number per row comes back) and equal the
    TransformerLens backend's."""
    kwargs = dict(direction=direction, layers=layers, metric=metric, progress=False)
    reference = run_sweep(embedded_model, ioi4, component, **kwargs)
    result = run_sweep(nnsight_model, ioi4, component, **kwargs)
    assert result.settings["metric_reduced_where_the_model_runs"] and result.metric == metric
    if metric != "accuracy":
        assert reference.values.abs().max() > 1e-3
    torch.testing.assert_close(result.values, reference.values, atol=TOL, rtol=0)


def test_reduced_run_returns_the_metric_not_the_logits(embedded_model, nnsight_model, ioi4):
    from attnlab.backends.base import Reduction
    from attnlab.metrics import get_metric

    kl = get_metric("kl_div")
    clean = embedded_model.run(ioi4.clean_tokens, logits_at=ioi4.end).logits
    reduce = Reduction("kl_div", ioi4.answers, kl.reference(clean))
    a = embedded_model.run(ioi4.corrupted_tokens, logits_at=ioi4.end, reduce=reduce)
    b = nnsight_model.run(ioi4.corrupted_tokens, logits_at=ioi4.end, reduce=reduce)
    assert b.logits is None and b.metric.shape == (4,)
    torch.testing.assert_close(b.metric, a.metric, atol=TOL, rtol=0)
    assert float(a.metric.min()) > 0


def test_custom_metric_on_nnsight_uses_returned_logits(embedded_model, nnsight_model, ioi4):
    def top_logit_margin(logits, answers, reference):
        return logits.gather(-1, answers[:, :1])[:, 0] - logits.max(-1).values

    kwargs = dict(layers=[3, 25], metric=top_logit_margin, progress=False)
    reference = run_sweep(embedded_model, ioi4, "heads", **kwargs)
    result = run_sweep(nnsight_model, ioi4, "heads", **kwargs)
    assert not result.settings["metric_reduced_where_the_model_runs"]
    torch.testing.assert_close(result.values, reference.values, atol=TOL, rtol=0)


def test_recorded_activations_match(embedded_model, nnsight_model, ioi4):
    """Every kind the engine records or patches, plus the attention pattern and resid_mid/resid_post."""
    sites = [Site("resid_pre", 4), Site("z", 4), Site("z", 4, head=7, position=3), Site("attn_out", 4),
             Site("resid_mid", 4), Site("mlp_out", 4), Site("resid_post", 4), Site("pattern", 4, head=2)]
    a = embedded_model.run(ioi4.clean_tokens, cache=sites, stop_layer=5)
    b = nnsight_model.run(ioi4.clean_tokens, cache=sites, stop_layer=5)
    torch.testing.assert_close(b.resid, a.resid, atol=TOL, rtol=0)
    for site in sites:
        torch.testing.assert_close(b.cache[site], a.cache[site], atol=TOL, rtol=0, msg=site.name)


def test_gpt2_style_sites(tmp_path):
    """GPT-2 layout (fused c_attn, Conv1D c_proj, ln_2): a random tiny GPT-2 through nnsight equals the same
    computation written out by hand with PyTorch hooks."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=16, attn_implementation="eager")
    hf = GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path)
    _tiny_tokenizer(tmp_path)
    model = load_model(str(tmp_path), backend="nnsight")
    assert model.info.family == "gpt2" and model.info.n_heads == 4
    tokens = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    seen = {}
    hooks = [hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0])),
             hf.transformer.h[1].ln_2.register_forward_pre_hook(lambda m, a: seen.__setitem__("mid", a[0]))]
    with torch.no_grad():
        logits = hf(tokens).logits
    for h in hooks:
        h.remove()
    out = model.run(tokens, cache=[Site("z", 1), Site("resid_mid", 1), Site("q", 1)])
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cache[Site("z", 1)], seen["z"].view(2, 6, 4, 8))
    torch.testing.assert_close(out.cache[Site("resid_mid", 1)], seen["mid"])
    # zeroing head 2's z changes the logits exactly as zeroing its slice of c_proj's input by hand does
    from attnlab.backends.base import Intervention

    iv = Intervention("z", 1, rows=torch.arange(2), heads=torch.tensor([2, 2]), values=torch.zeros(2, 6, 8))
    patched = model.run(tokens, interventions=[iv]).logits

    def zero_head(m, a):
        x = a[0].clone()
        x.view(2, 6, 4, 8)[:, :, 2] = 0
        return (x,)

    h = hf.transformer.h[1].attn.c_proj.register_forward_pre_hook(zero_head)
    with torch.no_grad():
        expected = hf(tokens).logits
    h.remove()
    torch.testing.assert_close(patched, expected, atol=1e-5, rtol=0)
    assert (patched - logits).abs().max() > 1e-4


def _tiny_tokenizer(folder) -> None:
    """A 64-symbol word-level tokenizer saved next to the tiny GPT-2 (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(63)} | {"<|endoftext|>": 63}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
