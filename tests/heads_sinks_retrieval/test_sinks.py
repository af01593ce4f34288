"""Attention sinks on a model built to sink: one head of a tiny attention-only model has, by construction, a constant
query and a key that is large only at position 0, so it attends to the first token whatever the input. The analysis
must find that head and that position; the ACT-style calibration (z recomputed from the recorded pattern and values)
must equal a different route: TransformerLens ``run_with_hooks`` rewriting ``hook_pattern`` and renormalising."""

import json

import pytest
import torch

from attnlab.heads import SinkAnalysis, calibrate_sinks, sink_analysis
from attnlab.heads.sinks import sink_calibration_interventions
from attnlab.metrics import get_metric
from attnlab.models import tiny_model
from attnlab.tasks.base import PatchingDataset

SINK_HEAD = (0, 2)
N_POS, BATCH = 24, 6


@pytest.fixture(scope="module")
def sinker():
    """2 layers x 4 heads, attention only; head L0H2 attends to position 0 by construction."""
    model = tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, d_vocab=50, n_ctx=32, attn_only=True, seed=0,
                       name="tiny-sinker")
    params = dict(model.bridge.named_parameters())
    get = lambda part: params[f"layers.0._original_component.attn._original_component.{part}._original_component"  # noqa: E731
                              ".weight"]
    bias = lambda part: params[f"layers.0._original_component.attn._original_component.{part}._original_component"  # noqa: E731
                               ".bias"]
    _, head = SINK_HEAD
    rows = slice(16 * head, 16 * (head + 1))
    c = torch.randn(16, generator=torch.Generator().manual_seed(0))
    c = c / c.norm()
    with torch.no_grad():
        params["tok_embed._original_component.weight"][:, 0] = 0.0  # residual dimension 0 is position 0's alone
        params["pos._original_component.weight"][:, 0] = 0.0
        params["pos._original_component.weight"][0, 0] = 50.0
        get("q")[rows] = 0.0
        bias("q")[rows] = c  # the same query at every position
        get("k")[rows] = 0.0
        get("k")[rows, 0] = 10.0 * c  # the key is large only where dimension 0 is (position 0)
        bias("k")[rows] = 0.0
    return model


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 50, (BATCH, N_POS), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def analysis(sinker, tokens):
    return sink_analysis(sinker, tokens)


def _direct_patterns(model, tokens):
    _, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return torch.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(model.info.n_layers)], 1)


def test_the_constructed_head_attends_to_the_first_token(sinker, tokens):
    """The construction works (checked on TransformerLens's own cache): L0H2 puts > 0.99 on position 0."""
    p = _direct_patterns(sinker, tokens)
    assert p[:, 0, 2, 1:, 0].min() > 0.99
    assert p[:, :, :, 1:, 0].mean((0, 3))[0, [0, 1, 3]].max() < 0.5  # the other heads of layer 0 do not


def test_sink_head_and_first_token_found(analysis):
    assert analysis.ranking("sink")[0] == SINK_HEAD
    assert analysis.ranking("first_token")[0] == SINK_HEAD
    assert analysis.score("first_token")[SINK_HEAD] > 0.99
    assert all(0 in s for s in analysis.sinks), analysis.sinks
    assert analysis.sink_mask("first")[:, 0].all()
    assert analysis.ratio[0, 2, 0] > 5  # far above the uniform share
    assert analysis.top(1)["component"][0] == "L0H2"


def test_mass_equals_direct_computation(sinker, tokens, analysis):
    """Received mass: mean over queries strictly after each key, over sequences, from TransformerLens's cache."""
    p = _direct_patterns(sinker, tokens)
    n = N_POS
    expected = torch.zeros(2, 4, n)
    for k in range(n - 1):
        expected[..., k] = p[:, :, :, k + 1:, k].mean((0, 3))
    torch.testing.assert_close(analysis.mass, expected, atol=1e-5, rtol=1e-5)
    first = p[:, :, :, 1:, 0].mean((0, 3))
    torch.testing.assert_close(analysis.score("first_token"), first, atol=1e-5, rtol=1e-5)


def _hooked_logits(model, tokens, heads, mask, factor):
    """The calibration by another route: rewrite hook_pattern rows of the chosen heads and renormalise."""
    w = torch.where(mask, torch.tensor(factor), torch.tensor(1.0))[:, None, :]  # [batch, 1, src]

    def hook_for(hs):
        def hook(pattern, hook):
            pattern = pattern.clone()
            for h in hs:
                s = pattern[:, h] * w
                total = s.sum(-1, keepdim=True)
                # a row with all its mass on the scaled positions (factor 0) is left as it was
                pattern[:, h] = torch.where(total > 0, s / total, pattern[:, h])
            return pattern
        return hook

    layers = sorted({a for a, _ in heads})
    fwd = [(f"blocks.{a}.attn.hook_pattern", hook_for([h for b, h in heads if b == a])) for a in layers]
    with torch.no_grad():
        return model.bridge.run_with_hooks(tokens, fwd_hooks=fwd)


@pytest.mark.parametrize("factor", [0.0, 0.3])
def test_calibration_equals_direct_hooks(sinker, tokens, analysis, factor):
    heads = [SINK_HEAD, (0, 1), (1, 3)]
    mask = analysis.sink_mask("all")
    mask[:, 7] = True  # a hidden position too
    ivs = sink_calibration_interventions(sinker, tokens, heads, mask, factor)
    got = sinker.run(tokens, interventions=ivs).logits
    want = _hooked_logits(sinker, tokens, heads, mask, factor)
    plain = sinker.run(tokens).logits
    assert (want - plain).abs().max() > 1e-2, "the calibration changed nothing: the comparison would prove nothing"
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_factor_one_changes_nothing(sinker, tokens, analysis):
    ivs = sink_calibration_interventions(sinker, tokens, [SINK_HEAD, (1, 0)], analysis.sink_mask("all"), 1.0)
    torch.testing.assert_close(sinker.run(tokens, interventions=ivs).logits, sinker.run(tokens).logits,
                               atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def dataset(tokens):
    g = torch.Generator().manual_seed(3)
    answers = torch.randint(0, 50, (BATCH, 2), generator=g)
    answers[:, 1] = (answers[:, 0] + 1) % 50
    return PatchingDataset(task="random", clean_tokens=tokens, corrupted_tokens=tokens, answers=answers,
                           positions={"END": torch.full((BATCH,), N_POS - 1)},
                           position_labels=[f"p{i}" for i in range(N_POS)])


@pytest.mark.parametrize("metric", ["logit_diff", "kl_div"])
def test_calibration_effect_on_a_metric(sinker, dataset, analysis, metric):
    """The metric per prompt equals the metric of the direct-hook logits; hurt and helped prompts follow the sign
    of the change (for kl_div a rise hurts)."""
    result = calibrate_sinks(sinker, dataset, heads=[SINK_HEAD], factor=0.0, positions="first", metric=metric,
                             analysis=analysis, n_bootstrap=200)
    cal = result.calibration
    m = get_metric(metric)
    end = dataset.positions["END"]
    plain = sinker.run(dataset.clean_tokens).logits[torch.arange(BATCH), end]
    hooked = _hooked_logits(sinker, dataset.clean_tokens, [SINK_HEAD], analysis.sink_mask("first"), 0.0)
    hooked = hooked[torch.arange(BATCH), end]
    ref = m.reference(plain)
    torch.testing.assert_close(cal.baseline, m(plain, dataset.answers, ref), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cal.calibrated, m(hooked, dataset.answers, ref), atol=1e-4, rtol=1e-4)
    change = cal.calibrated - cal.baseline
    worse = change > 0 if metric == "kl_div" else change < 0
    assert cal.hurt == torch.nonzero(worse).flatten().tolist()
    assert cal.lower_is_better == (metric == "kl_div")
    assert cal.change["lo"] <= cal.change["mean"] <= cal.change["hi"]
    assert cal.n_sinks == [1] * BATCH
    if metric == "kl_div":
        assert len(cal.hurt) == BATCH  # calibration moved every prompt away from the model's own distribution


def test_save_load_exact_and_escaped_display(tmp_path, dataset, sinker, analysis):
    result = calibrate_sinks(sinker, dataset, heads=[SINK_HEAD], factor=0.5, positions="first", analysis=analysis,
                             n_bootstrap=200)
    path = result.save(tmp_path / "sinks.json")
    back = SinkAnalysis.load(path)
    assert back.to_dict() == result.to_dict()
    torch.testing.assert_close(back.mass, result.mass.float())
    assert back.calibration.hurt == result.calibration.hurt
    evil = SinkAnalysis.from_dict(result.to_dict())
    evil.sinks[0] = [0, 5]  # a hidden sink whose token text is markup
    evil.str_tokens[0][5] = "<script>alert(1)</script>"
    bundle = evil._repr_mimebundle_()
    assert "<script>" not in bundle["text/html"] and "&lt;script&gt;" in bundle["text/html"]
    assert "SinkAnalysis" in bundle["text/plain"]
    payload = json.loads(json.dumps(evil.payload(), allow_nan=False))
    assert len(payload["values"]) == 2 and len(payload["values"][0]) == 4
    assert payload["top"][0]["label"] == "L0H2"
    assert payload["example_sinks"][1] == {"position": 5, "token": "<script>alert(1)</script>"}  # plain text
    df = result.to_dataframe()
    assert len(df) == 8 and {"sink", "first_token", "hidden_sink", "first_token_ratio"} <= set(df.columns)


def test_prompts_without_sinks_to_calibrate_are_neither_hurt_nor_helped(sinker, dataset, analysis):
    """Calibrating hidden sinks where there are none changes the metric by rounding only: no prompt is counted."""
    assert not analysis.sink_mask("hidden").any()
    cal = calibrate_sinks(sinker, dataset, heads=[SINK_HEAD], factor=0.5, positions="hidden", analysis=analysis,
                          n_bootstrap=100).calibration
    assert cal.n_sinks == [0] * BATCH
    assert cal.hurt == [] and cal.helped == []
