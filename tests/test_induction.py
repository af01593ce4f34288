"""Induction-head analysis: task builders, head scores (against TransformerLens's detect_head and hand-computed
stripes), ablation (against hand-built interventions), copying attribution (against the logit decomposition),
prefix probes, result files and bad input. The trained known-answer model lives in test_induction_toy.py."""

import pytest
import torch
from transformer_lens.head_detector import detect_head

from attnlab.ablation import AblationError, head_ablation_interventions, mean_head_outputs
from attnlab.errors import AttnlabError, DatasetError, MetricError, SiteError
from attnlab.heads import (
    HeadScores,
    ablation_effects,
    attention_patterns,
    copying_scores,
    induction_analysis,
    loss_by_position,
    prefix_curves,
    score_heads,
)
from attnlab.heads.scores import detection_masks, pattern_scores
from attnlab.models import tiny_model
from attnlab.render.contract import HEADGALLERY_MIME
from attnlab.sites import Site, SiteKind
from attnlab.tasks.induction import natural_repeats, prefix_probe, repeated_random_tokens

TL_NAMES = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
            "induction": "induction_head"}


@pytest.fixture(scope="module")
def model():
    """A random 2-layer attention-only model (BOS id 0 by convention here)."""
    return tiny_model(n_layers=2, n_heads=4, d_model=64, d_vocab=50, n_ctx=32, attn_only=True, seed=3)


@pytest.fixture(scope="module")
def data(model):
    return repeated_random_tokens(model, 6, 5, seed=0, prepend_bos=True, bos_token_id=0)


def _detect_head_on_tokens(model, tokens, monkeypatch, **kwargs) -> dict[str, torch.Tensor]:
    """TransformerLens's detect_head on exactly these token rows (tiny models have no tokenizer: each row gets a name
    and the bridge's to_tokens maps names to rows; detect_head itself is untouched)."""
    rows = {f"row{i}": tokens[i:i + 1] for i in range(tokens.shape[0])}

    def to_tokens(seq, *args, **kw):
        return torch.cat([rows[s] for s in seq]) if isinstance(seq, list) else rows[seq]

    monkeypatch.setattr(model.bridge, "to_tokens", to_tokens, raising=False)
    return {k: detect_head(model.bridge, list(rows), name, **kwargs) for k, name in TL_NAMES.items()}


# -- tasks --------------------------------------------------------------------------------------------------------
def test_repeated_tokens_layout(model, data):
    t = data.tokens
    assert t.shape == (5, 13) and (t[:, 0] == 0).all()
    assert torch.equal(t[:, 1:7], t[:, 7:13])
    assert all(len(set(row[1:7].tolist())) == 6 for row in t), "distinct=True: no token repeats within a segment"
    assert (t[:, 1:] != 0).all(), "BOS is never sampled"
    assert data.induction_targets == slice(8, 13)


def test_same_seed_same_tokens_and_scores(model):
    a = repeated_random_tokens(model, 5, 4, seed=7, prepend_bos=False)
    b = repeated_random_tokens(model, 5, 4, seed=7, prepend_bos=False)
    c = repeated_random_tokens(model, 5, 4, seed=8, prepend_bos=False)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    sa, sb = score_heads(model, a), score_heads(model, b)
    assert torch.equal(sa.per_sequence, sb.per_sequence)


def test_token_range_respected(model):
    d = repeated_random_tokens(model, 4, 8, seed=0, prepend_bos=False, token_range=(10, 20))
    assert d.tokens.min() >= 10 and d.tokens.max() < 20


def test_prefix_probe_layout(model):
    probe = prefix_probe(model, (1, 2, 4), 6, gap=3, seed=0, prepend_bos=True, bos_token_id=0)
    n_max, distance = 4, 4 + 1 + 3
    assert probe.tokens.shape == (3, 6, 1 + n_max + distance)
    assert probe.dest == probe.tokens.shape[2] - 1 and probe.target == probe.tokens.shape[2] - distance
    for i, n in enumerate(probe.prefix_lengths):
        for row in probe.tokens[i]:
            earlier = probe.dest - distance  # the earlier copy of the current token
            assert row[earlier] == row[probe.dest]
            assert torch.equal(row[earlier - n + 1:earlier + 1], row[probe.dest - n + 1:])
            assert row[earlier - n] != row[probe.dest - n], "the match must be exactly n tokens long"
            assert len(set(row.tolist())) == len(row) - n, "every other token is distinct"


# -- scores -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [{}, {"exclude_bos": True, "exclude_current_token": True}])
def test_scores_equal_detect_head(model, data, monkeypatch, flags):
    ref = _detect_head_on_tokens(model, data.tokens, monkeypatch, error_measure="mul", **flags)
    ours = score_heads(model, data, definition="detect_head", **flags)
    for kind, expected in ref.items():
        torch.testing.assert_close(ours.score(kind), expected, rtol=1e-5, atol=1e-6, msg=kind)


def test_detect_head_equality_with_repeated_tokens_inside(model, monkeypatch):
    """Token-equality masks on sequences that are not clean repeats (tokens recur within a segment)."""
    tokens = torch.randint(1, 6, (3, 12), generator=torch.Generator().manual_seed(0))
    ref = _detect_head_on_tokens(model, tokens, monkeypatch)
    ours = score_heads(model, tokens, definition="detect_head")
    for kind, expected in ref.items():
        torch.testing.assert_close(ours.score(kind), expected, rtol=1e-5, atol=1e-6, msg=kind)


def test_diagonal_scores_against_hand_computed_stripes(model, data):
    L, n = data.seq_len, data.n_pos
    p = attention_patterns(model, data.tokens)  # [batch, layer, head, dest, src]
    scores = score_heads(model, data)
    stripes = {
        "previous_token": p.diagonal(-1, dim1=-2, dim2=-1),  # dest 1..n-1
        "duplicate_token": p.diagonal(-L, dim1=-2, dim2=-1)[..., -L:],  # dest in the second repeat
        "induction": p.diagonal(-(L - 1), dim1=-2, dim2=-1)[..., -L:],
    }
    for kind, stripe in stripes.items():
        torch.testing.assert_close(scores.per_sequence[scores.kinds.index(kind)], stripe.mean(-1), msg=kind)
    # the two definitions differ only by normalisation on distinct-token repeats
    dh = score_heads(model, data, definition="detect_head")
    torch.testing.assert_close(dh.score("induction"), scores.score("induction") * L / n)
    torch.testing.assert_close(dh.score("previous_token"), scores.score("previous_token") * (n - 1) / n)
    assert torch.allclose(scores.std("induction"), scores.per_sequence[2].std(0))


def test_planted_patterns_score_one_on_their_kind_only(data):
    """Hand-made attention patterns: a perfect previous-token, duplicate-token and induction head each score 1 on
    their own kind and 0 on the others (up to position 1, whose previous token is BOS); a head that only attends
    to BOS scores 0 on the repeat kinds."""
    L, n, o = data.seq_len, data.n_pos, data.bos_offset
    planted = torch.zeros(len(data), 1, 4, n, n)
    planted[..., 0, 0] = 1.0  # every head's first row: BOS
    for p in range(1, n):
        planted[:, 0, 0, p, p - 1] = 1.0
        second = p >= o + L
        planted[:, 0, 1, p, p - L if second else 0] = 1.0
        planted[:, 0, 2, p, p - L + 1 if second else 0] = 1.0
        planted[:, 0, 3, p, 0] = 1.0
    masks = detection_masks(data.tokens, definition="diagonal", seq_len=L, bos_offset=o)
    s = pattern_scores(planted, masks, definition="diagonal")
    torch.testing.assert_close(s["previous_token"][0, 0], torch.tensor([1.0] + [1 / (n - 1)] * 3))  # row 1's BOS
    torch.testing.assert_close(s["duplicate_token"][0, 0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(s["induction"][0, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))


# -- ablation -----------------------------------------------------------------------------------------------------
def test_ablation_effects_match_hand_built_runs(model, data):
    heads = [(0, 1), (1, 2)]
    res = ablation_effects(model, data, heads, methods=("zero", "mean"))
    clean = loss_by_position(model.run(data.tokens).logits, data.tokens)
    clean_second = clean[:, data.induction_targets].mean(-1)
    means = mean_head_outputs(model, data.tokens)
    for mi, method in enumerate(("zero", "mean")):
        for layer, head in heads:
            ivs = head_ablation_interventions(model, [(layer, head)], method=method, n_pos=data.n_pos,
                                              batch=len(data), means=means)
            loss = loss_by_position(model.run(data.tokens, interventions=ivs).logits, data.tokens)
            expected = loss[:, data.induction_targets].mean(-1) - clean_second
            torch.testing.assert_close(res.per_sequence[mi, layer, head], expected, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(res.position_loss[mi, layer, head][1:], loss.mean(0)[1:], rtol=1e-4,
                                       atol=1e-5)
    assert torch.isnan(res.loss_increase[0, 0, 0]), "heads not ablated stay NaN"


def test_ablation_metrics_logprob_kl_and_custom(model, data, tmp_path):
    """metric="logprob" is minus the loss (so its change is minus the loss increase); "kl_div" equals KL(clean ||
    ablated) at the copyable positions computed by hand; a custom callable equals the built-in it reimplements; the
    metric is recorded, labelled, saved and loaded."""
    heads = [(0, 1), (1, 2)]
    loss = ablation_effects(model, data, heads, methods=("zero", "mean"))
    lp = ablation_effects(model, data, heads, methods=("zero", "mean"), metric="logprob")
    assert loss.metric is None and lp.metric["name"] == "logprob"
    assert loss.per_sequence[0, 1, 2].abs().max() > 1e-3, "the ablation changes nothing: the test would prove nothing"
    torch.testing.assert_close(lp.per_sequence, -loss.per_sequence, rtol=1e-4, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(lp.position_loss, loss.position_loss, equal_nan=True)
    assert lp.clean_loss["metric"] == pytest.approx(-lp.clean_loss["second_repeat"], abs=1e-5)
    assert "log-probability" in lp.label and loss.label == "second-repeat loss increase (nats/token)"

    kl = ablation_effects(model, data, [(1, 2)], methods=("zero",), metric="kl_div")
    ivs = head_ablation_interventions(model, [(1, 2)], method="zero", n_pos=data.n_pos, batch=len(data))
    at = torch.arange(data.n_pos)[data.induction_targets] - 1  # logits that predict the copyable tokens
    p = model.run(data.tokens).logits[:, at].log_softmax(-1)
    q = model.run(data.tokens, interventions=ivs).logits[:, at].log_softmax(-1)
    expected = (p.exp() * (p - q)).sum(-1).mean(-1)
    torch.testing.assert_close(kl.per_sequence[0, 1, 2], expected, rtol=1e-4, atol=1e-6)
    assert kl.clean_loss["metric"] == pytest.approx(0.0, abs=1e-6)

    def copy_prob(logits, answers, reference):
        return torch.softmax(logits, -1).gather(-1, answers[:, :1])[:, 0]

    custom = ablation_effects(model, data, heads, methods=("zero",), metric=copy_prob)
    builtin = ablation_effects(model, data, heads, methods=("zero",), metric="prob")
    torch.testing.assert_close(custom.per_sequence, builtin.per_sequence, equal_nan=True)
    assert custom.metric["name"] == "copy_prob" and not custom.metric["builtin"]

    res = score_heads(model, data).with_ablation(lp)
    back = HeadScores.load(res.save(tmp_path / "lp.json"))
    assert back.ablation.metric == lp.metric and back.ablation.label == lp.label
    assert {"logprob_change_zero", "logprob_change_mean"} <= set(res.to_dataframe().columns)
    assert res.gallery_payload()["ablation_label"] == lp.label


def test_a_broken_ablation_metric_fails_before_any_ablation(model, data, monkeypatch):
    calls = []
    monkeypatch.setattr(type(model), "run_many", lambda self, specs: calls.append(1) or iter(()))
    with pytest.raises(MetricError, match=r"must return shape \(25,\)"):
        ablation_effects(model, data, [(0, 0)], metric=lambda logits, answers, reference: logits.sum())
    with pytest.raises(MetricError, match="unknown metric"):
        ablation_effects(model, data, [(0, 0)], metric="loss")
    assert calls == []


def test_zero_ablation_zeroes_z_and_mean_ablation_writes_the_mean(model, data):
    means = mean_head_outputs(model, data.tokens)
    for method, expected in (("zero", torch.zeros(len(data), data.n_pos, 16)),
                             ("mean", means[1][:, 3].expand(len(data), -1, -1))):
        ivs = head_ablation_interventions(model, [(1, 3)], method=method, n_pos=data.n_pos, batch=len(data),
                                          means=means)
        site = Site(SiteKind.Z, 1)
        out = model.run(data.tokens, cache=[site], interventions=ivs)
        assert torch.allclose(out.cache[site][:, :, 3], expected)


def test_copying_scores_add_up_to_the_logit(model, data):
    """Per-head DLA plus the non-head terms (embeddings, biases through the frozen final LayerNorm) is the logit."""
    mean, per_seq = copying_scores(model, data)
    b = model.bridge
    o, L = data.bos_offset, data.seq_len
    pos = torch.arange(o + L, o + 2 * L - 1)
    with torch.no_grad():
        logits, cache = b.run_with_cache(data.tokens)
        x = cache["ln_final.hook_in"][:, pos]
        heads_out = sum(torch.einsum("bphd,hdm->bpm", cache[f"blocks.{layer}.attn.hook_z"][:, pos], b.W_O[layer])
                        for layer in range(2))
        rest = x - heads_out
        norm = b.ln_final.original_component
        scale = cache["ln_final.hook_scale"][:, pos]
        u = b.W_U[:, data.tokens[:, pos + 1]].permute(1, 2, 0)
        rest_dla = (((rest - rest.mean(-1, keepdim=True)) / scale * norm.weight) * u).sum(-1)
        bias = (norm.bias * u).sum(-1) + b.b_U[data.tokens[:, pos + 1]]
        target_logit = logits[:, pos].gather(-1, data.tokens[:, pos + 1, None])[..., 0]
    total = per_seq.sum((1, 2)) + (rest_dla + bias).mean(1)
    torch.testing.assert_close(total, target_logit.mean(1), rtol=1e-4, atol=1e-4)


def test_prefix_curves_read_the_target_attention(model):
    probe = prefix_probe(model, (1, 2), 3, seed=0, prepend_bos=True, bos_token_id=0)
    curves = prefix_curves(model, probe)
    p = attention_patterns(model, probe.tokens[1])
    torch.testing.assert_close(curves.values[1], p[:, :, :, probe.dest, probe.target].mean(0))


# -- results and display ------------------------------------------------------------------------------------------
def test_head_scores_save_load_exact_and_gallery(model, tmp_path):
    res = induction_analysis(model, seq_len=5, batch=3, ablate=2, prefix_lengths=(1, 2, 4),
                             token_range=(1, 50))
    path = res.save(tmp_path / "heads.json")
    back = HeadScores.load(path)
    assert torch.equal(back.scores, res.scores) and torch.equal(back.per_sequence, res.per_sequence)
    assert torch.equal(back.example_patterns, res.example_patterns)
    assert torch.equal(back.ablation.loss_increase.nan_to_num(-9), res.ablation.loss_increase.nan_to_num(-9))
    assert torch.equal(back.prefix.values, res.prefix.values) and torch.equal(back.copying, res.copying)
    df = res.to_dataframe()
    assert len(df) == 8 and {"induction", "induction_std", "loss_increase_zero", "prefix_4", "prefix_class",
                             "copying_dla"} <= set(df.columns)
    assert res.top("induction", 1)["component"][0] == "L{}H{}".format(*res.ranking("induction")[0])
    bundle = res._repr_mimebundle_()
    assert set(bundle) == {HEADGALLERY_MIME, "text/html", "text/plain"}
    payload = bundle[HEADGALLERY_MIME]
    assert payload["kind"] == "headgallery" and len(payload["heads"]) == 8
    assert payload["heads"][5]["pattern"] == [[round(v, 3) for v in row]
                                              for row in res.example_patterns[1, 1].tolist()]
    assert "<script" not in bundle["text/html"]


def test_gallery_html_escapes_strings(model, data):
    res = score_heads(model, data)
    res.model["name"] = '<img src=x onerror="alert(1)">'
    html = res._repr_mimebundle_()["text/html"]
    assert "<img" not in html and "&lt;img" in html


# -- bad input ----------------------------------------------------------------------------------------------------
def test_sequence_longer_than_context(model):
    with pytest.raises(DatasetError, match=r"33 tokens long, longer than tiny-2l's context of 32"):
        repeated_random_tokens(model, 16, 2, prepend_bos=True, bos_token_id=0)
    with pytest.raises(DatasetError, match="longer than"):
        score_heads(model, torch.zeros(1, 40, dtype=torch.long), definition="detect_head")
    with pytest.raises(DatasetError, match="context"):
        prefix_probe(model, (1, 16), 2, prepend_bos=False)


def test_zero_length_prefix(model):
    with pytest.raises(DatasetError, match=r"prefix lengths must be ints >= 1.*\(got 0\)"):
        prefix_probe(model, (0, 1, 2), 2, prepend_bos=False)
    with pytest.raises(DatasetError, match="ascending"):
        prefix_probe(model, (2, 1), 2, prepend_bos=False)


def test_heads_out_of_range(model, data):
    with pytest.raises(SiteError, match=r"'layer' must be in \[0, 2\) \(got 5\)"):
        ablation_effects(model, data, [(5, 0)])
    with pytest.raises(SiteError, match=r"'head' must be in \[0, 4\) \(got 4\)"):
        ablation_effects(model, data, [(0, 4)])
    with pytest.raises(SiteError, match="pairs of ints"):
        ablation_effects(model, data, [(0,)])


def test_other_bad_input(model, data):
    with pytest.raises(DatasetError, match=r"'seq_len' must be >= 2 \(got 1\)"):
        repeated_random_tokens(model, 1, 2)
    with pytest.raises(DatasetError, match="token_range"):
        repeated_random_tokens(model, 4, 2, token_range=(10, 99))
    with pytest.raises(DatasetError, match="fewer than"):
        repeated_random_tokens(model, 8, 2, token_range=(0, 5), prepend_bos=False)
    with pytest.raises(AttnlabError, match="'definition' must be one of"):
        score_heads(model, data, definition="abs")
    with pytest.raises(AttnlabError, match="detect_head' only"):
        score_heads(model, data, exclude_bos=True)
    with pytest.raises(DatasetError, match="needs RepeatedTokens"):
        score_heads(model, data.tokens)
    with pytest.raises(DatasetError, match=r"token ids must be in \[0, 50\)"):
        score_heads(model, torch.full((1, 4), 50), definition="detect_head")
    with pytest.raises(AblationError, match="'methods' entries"):
        ablation_effects(model, data, [(0, 0)], methods=("resample",))
    with pytest.raises(AblationError, match="positions"):
        ablation_effects(model, data, [(0, 0)], methods=("mean",), reference=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(DatasetError, match="BOS|bos"):
        repeated_random_tokens(model, 4, 2, prepend_bos=True, bos_token_id=99)


# -- the embedded model -------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_embedded_natural_repeats_equal_detect_head(embedded_model):
    """Real strings through TransformerLens's own tokenisation: detect_head on the texts equals our batched scores
    on the tokens, for all three kinds. (One text: each detect_head call caches every hook of the 30-layer model
    per text, which is slow; averaging over several texts is checked on the tiny model above.)"""
    data = natural_repeats(embedded_model, 6, 1, seed=0)
    assert data.tokens.shape == (1, 13) and len(data.texts) == 1
    assert torch.equal(embedded_model.to_tokens(data.texts), data.tokens)
    ours = score_heads(embedded_model, data, definition="detect_head")
    for kind, name in TL_NAMES.items():
        ref = detect_head(embedded_model.bridge, data.texts, name, error_measure="mul")
        torch.testing.assert_close(ours.score(kind), ref, rtol=1e-4, atol=1e-5, msg=kind)


@pytest.mark.integration
def test_embedded_model_has_induction_heads(embedded_model):
    """SmolLM2-135M copies random tokens in context, its top induction heads sit in the middle layers (not layer 0,
    which cannot compose), and ablating the top one raises the second-repeat loss. (The tutorial-04 test checks
    more: both ablation methods, controls, K-composition and prefix classes.)"""
    data = repeated_random_tokens(embedded_model, 10, 4, seed=0)
    scores = score_heads(embedded_model, data)
    top = scores.ranking("induction")[:2]
    assert all(layer > 0 for layer, _ in top) and scores.score("induction")[top[0]] > 0.5, top
    ablation = ablation_effects(embedded_model, data, top[:1], methods=("zero",))
    assert ablation.clean_loss["first_repeat"] - ablation.clean_loss["second_repeat"] > 3.0, ablation.clean_loss
    assert ablation.effect(*top[0]) > 0.3, ablation.loss_increase
