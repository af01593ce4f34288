"""The attention view's numbers: ``read_attention`` equals TransformerLens's ``run_with_cache`` patterns, on tiny models
(TransformerLens-native, and Hugging Face Llama with grouped-query attention through the bridge) and on the embedded
model with text (both backends); the browser payload decodes to the same weights within its quantisation step; bad
input fails before the model runs, saying what to change."""

import numpy as np
import pytest
import torch

from attnlab.attention_view import AttentionPatterns, read_attention
from attnlab.attention_view.patterns import QUANT_SCALE
from attnlab.errors import ArgumentError, ArgumentTypeError, SiteError
from attnlab.models import tiny_hf_model

TEXT = "When Mary and John went to the store, John gave a drink to"


def tl_patterns(backend, tokens: torch.Tensor) -> torch.Tensor:
    """Float[layer, head, q, k] from TransformerLens's own run_with_cache (the reference)."""
    with torch.no_grad():
        _, cache = backend.bridge.run_with_cache(tokens[None])
    return torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(backend.info.n_layers)])


@pytest.fixture(scope="module")
def tiny_llama():
    return tiny_hf_model("llama", n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_vocab=40, seed=3)


@pytest.mark.parametrize("which", ["native", "llama"])
def test_patterns_equal_run_with_cache(which, tiny, tiny_llama):
    model = tiny if which == "native" else tiny_llama
    tokens = torch.randint(0, model.info.d_vocab, (11,), generator=torch.Generator().manual_seed(0))
    att = read_attention(model, tokens)
    reference = tl_patterns(model, tokens)
    assert att.patterns.shape == (model.info.n_layers, model.info.n_heads, 11, 11)
    torch.testing.assert_close(att.patterns, reference.float(), atol=1e-6, rtol=0)
    assert att.token_ids == tokens.tolist() and att.text is None and att.causal
    assert torch.allclose(att.patterns.sum(-1), torch.ones(model.info.n_layers, model.info.n_heads, 11), atol=1e-5)


def test_payload_decodes_to_the_patterns(tiny):
    att = read_attention(tiny, list(range(1, 10)))
    n, heads = att.n_tokens, att.n_layers * att.n_heads
    raw = att.encoded()
    assert len(raw) == heads * n * (n + 1) // 2 * 2  # only the causal lower triangle, 2 bytes a weight
    first = np.frombuffer(raw, dtype="<u2")[:3]  # head L0H0: row 0 (1 key), row 1 (2 keys)
    p = att.patterns[0, 0]
    assert first.tolist() == [round(float(p[0, 0]) * QUANT_SCALE), round(float(p[1, 0]) * QUANT_SCALE),
                              round(float(p[1, 1]) * QUANT_SCALE)]
    assert float((att.decoded() - att.patterns).abs().max()) <= 0.5 / QUANT_SCALE + 1e-7
    meta = att.meta()
    assert meta["encoding"] == "uint16-lower" and meta["n_tokens"] == n and meta["tokens"] == att.tokens
    with pytest.raises(SiteError, match=r"'head' must be in \[0, 4\)"):
        att.head(0, 4)


def test_bad_input_fails_before_the_model_runs(tiny, tiny_llama):
    class NoRun:  # a model that must never run
        info, tokenizer = tiny.info, None
        to_str_tokens = tiny.to_str_tokens

        def run(self, *a, **k):
            raise AssertionError("the model ran")

    with pytest.raises(ArgumentError, match=r"the text is 20 tokens, more than the view's limit of 16: 3 layers x "
                                            r"4 heads x 20² weights would send 5\.0 kB.*max_tokens=20"):
        read_attention(NoRun(), list(range(20)), max_tokens=16)
    with pytest.raises(ArgumentError, match=r"'max_tokens' must be an integer in \[1, 512\]"):
        read_attention(NoRun(), [1, 2], max_tokens=0)
    with pytest.raises(ArgumentTypeError, match="has no tokenizer, so it cannot read a text; pass token ids"):
        read_attention(NoRun(), "some text")
    with pytest.raises(ArgumentError, match=r"token ids must be in \[0, 50\)"):
        read_attention(NoRun(), [1, 50])
    with pytest.raises(ArgumentError, match="context of 32"):
        read_attention(NoRun(), list(range(40)) * 1, max_tokens=64)
    with pytest.raises(ArgumentTypeError, match="load it with attnlab.load_model"):
        read_attention("smollm2-135m", TEXT)


def test_widget_state(tiny):
    from attnlab import AttentionView

    view = AttentionView(tiny, list(range(1, 8)), layer=2, head=1)
    assert view.selected == [2, 1] and view.weights == view.attention.encoded()
    assert view.meta == view.attention.meta() and view.patterns.shape == (3, 4, 7, 7)
    view.select(1, 3)
    assert view.selected == [1, 3]
    with pytest.raises(SiteError, match=r"'layer' must be in \[0, 3\)"):
        view.select(3, 0)
    assert view.selected == [1, 3]
    with pytest.raises(ArgumentError, match="'scale' must be 'unit'"):
        view.scale = "log"
    with pytest.raises(SiteError):
        AttentionView(tiny, [1, 2, 3], head=9)
    bundle, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "&lt;" in bundle["text/html"]  # "<1>" escaped
    assert "3 layers x 4 heads" in repr(view)


@pytest.mark.integration
def test_text_on_the_embedded_model_both_backends(embedded_model, embedded_nnsight):
    att = read_attention(embedded_model, TEXT)
    tokens = embedded_model.bridge.to_tokens(TEXT)[0]
    assert att.token_ids == tokens.tolist() and att.text == TEXT
    assert att.tokens == embedded_model.bridge.to_str_tokens(TEXT)
    torch.testing.assert_close(att.patterns, tl_patterns(embedded_model, tokens).float(), atol=1e-5, rtol=0)
    other = read_attention(embedded_nnsight, TEXT)
    assert isinstance(other, AttentionPatterns) and other.token_ids == att.token_ids
    torch.testing.assert_close(other.patterns, att.patterns, atol=2e-4, rtol=0)
