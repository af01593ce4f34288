"""Composition scores (Elhage et al. 2021) and channels (Merullo et al. 2024) against things attnlab did not write:

- parity with Elhage's definition computed here the plain way: the explicit [d_model, d_model] OV and QK matrices of
  every pair in float64, the pre-attention norm folded by an explicit diagonal (and centring) matrix, on tiny
  models with and without grouped-query attention;
- a known answer: a two-layer attention-only model whose weights plant a rank-2 channel from L0H1's output into
  L1H2's keys must rank that pair first for K-composition, show two large singular values then a drop, and leave
  the random heads at the random baseline;
- the weights both backends read (a tiny random Hugging Face Llama with grouped-query attention, loaded through
  TransformerLens and through nnsight) give equal scores and reproduce the model's own queries, keys and values;
  a remote model refuses before any work;
- the comparison with path patching against pandas' Spearman; bad input; exact save/load; the payload.
"""

import json
import math
import shutil

import pytest
import torch

import attnlab
from attnlab.errors import ArgumentError, ArgumentTypeError, CapabilityError, ResultFileError, SiteError
from attnlab.heads import (
    CompositionScores,
    HeadScores,
    compare_with_path_patching,
    composition_scores,
    composition_svd,
)
from attnlab.sites import Site

# -- the reference: Elhage et al.'s definition, explicit matrices ----------------------------------------------------


def reference_scores(w, n_heads: int, fold: bool) -> torch.Tensor:
    """[mode, L, H, L, H] by explicit d_model x d_model matrices, one pair at a time (row-vector convention:
    Q: ||OV_s QK_r||, K: ||OV_s QK_r^T||, V: ||OV_s OV_r||, each over ||OV_s|| ||QK_r or OV_r||)."""
    L, d_model = w.W_Q.shape[0], w.W_Q.shape[2]
    group = n_heads // w.W_K.shape[1]
    eye = torch.eye(d_model, dtype=torch.float64)
    out = torch.full((3, L, n_heads, L, n_heads), math.nan, dtype=torch.float64)

    def reader(layer):  # the map from the residual stream to what the projections read (norm gain, centring)
        if not fold or w.attn_norm_weight is None:
            return eye
        m = torch.diag(w.attn_norm_weight[layer].double())
        if w.attn_norm_centred:
            m = (eye - torch.full_like(eye, 1.0 / d_model)) @ m
        return m

    def ov(layer, h):
        return reader(layer) @ w.W_V[layer, h // group].double() @ w.W_O[layer, h].double()

    def qk(layer, h):
        n = reader(layer)
        return (n @ w.W_Q[layer, h].double()) @ (n @ w.W_K[layer, h // group].double()).T

    for ls in range(L):
        for hs in range(n_heads):
            left = ov(ls, hs)
            for lr in range(ls + 1, L):
                for hr in range(n_heads):
                    for m, right in enumerate((qk(lr, hr), qk(lr, hr).T, ov(lr, hr))):
                        out[m, ls, hs, lr, hr] = torch.linalg.matrix_norm(left @ right) / (
                            torch.linalg.matrix_norm(left) * torch.linalg.matrix_norm(right))
    return out


@pytest.mark.parametrize("kwargs", [
    dict(n_layers=3, n_heads=4, seed=3),                                           # multi-head attention
    dict(n_layers=3, n_heads=6, n_kv_heads=2, positional="rotary", seed=4),        # grouped-query, rotary
])
@pytest.mark.parametrize("fold", [True, False])
def test_scores_equal_the_explicit_definition(kwargs, fold):
    model = attnlab.tiny_model(d_model=48, d_head=8, **kwargs)
    w = model.weights()
    with torch.no_grad():  # make the pre-attention norms' gains matter (they are 1 at initialisation)
        w.attn_norm_weight.copy_(torch.rand(w.attn_norm_weight.shape, generator=torch.Generator().manual_seed(0))
                                 + 0.5)
    got = composition_scores(model, fold_norm=fold)
    ref = reference_scores(w, model.info.n_heads, fold)
    assert got.scores.shape == ref.shape
    torch.testing.assert_close(got.scores.double(), ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert got.settings["folded"] == ("gain and centring (LayerNorm)" if fold else "none")
    ls, _, lr, _ = torch.meshgrid(*(torch.arange(n) for n in got.scores.shape[1:]), indexing="ij")
    assert torch.isnan(got.scores[:, lr <= ls]).all() and not torch.isnan(got.scores[:, lr > ls]).any()
    # folding changes the answer (else the fold would not be tested)
    if fold:
        plain = reference_scores(w, model.info.n_heads, False)
        assert (plain - ref).nan_to_num().abs().max() > 1e-3


def test_svd_values_rebuild_the_score_and_the_composed_matrix():
    model = attnlab.tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, d_model=48, d_head=8, seed=5)
    w = model.weights()
    scores = composition_scores(model, fold_norm=False)
    for mode in ("q", "k", "v"):
        ch = composition_svd(model, (0, 3), (2, 1), mode=mode, k=8, fold_norm=False)
        assert ch.score == pytest.approx(float(scores.score(mode)[0, 3, 2, 1]), rel=1e-5)
        assert float(ch.singular_values.double().norm()) == pytest.approx(ch.score, rel=1e-5)
        # the singular values are those of the explicit composed matrix, normalised
        left = w.W_V[0, 1].double() @ w.W_O[0, 3].double()
        qk = w.W_Q[2, 1].double() @ w.W_K[2, 0].double().T
        right = {"q": qk, "k": qk.T, "v": w.W_V[2, 0].double() @ w.W_O[2, 1].double()}[mode]
        c = left @ right
        expected = torch.linalg.svdvals(c)[:8] / (left.norm() * right.norm())
        torch.testing.assert_close(ch.singular_values.double(), expected, rtol=1e-4, atol=1e-7)
        # u_i^T C = s_i v_i (in the composed matrix's scale)
        s0 = torch.linalg.svdvals(c)[0]
        torch.testing.assert_close(ch.sender_inputs[0].double() @ c, s0 * ch.receiver_directions[0].double(),
                                   rtol=1e-4, atol=1e-4 * float(s0))


# -- the known answer: a planted rank-2 channel -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    """2 layers, attention only, 4 heads, d_model 64, d_head 16: L0H1 writes only into span(e_0, e_1) of the
    residual stream and L1H2's keys read only that span (a rank-2 channel); every other weight is random."""
    model = attnlab.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, seed=7)
    g = torch.Generator().manual_seed(1)
    blocks = model.bridge.blocks
    p0 = dict(blocks[0].attn.named_parameters())
    p1 = dict(blocks[1].attn.named_parameters())
    dh, sender, receiver = 16, 1, 2
    with torch.no_grad():
        o = p0["_original_component.o._original_component.weight"]  # Linear [d_model, n_heads * d_head]
        block = torch.zeros(64, dh)
        block[:2] = torch.randn(2, dh, generator=g)  # writes into e_0, e_1 only
        o[:, sender * dh:(sender + 1) * dh] = block
        k = p1["_original_component.k._original_component.weight"]  # [n_heads * d_head, d_model]
        reads = torch.zeros(dh, 64)
        reads[:, :2] = torch.randn(dh, 2, generator=g) * 3.0  # reads e_0, e_1 only
        k[receiver * dh:(receiver + 1) * dh] = reads
    return model, (0, sender), (1, receiver)


def test_the_planted_pair_is_the_top_k_composition_pair(planted):
    model, sender, receiver = planted
    scores = composition_scores(model)
    top = scores.top("k", 3)
    assert (top.loc[0, "sender"], top.loc[0, "receiver"]) == ("L0H1", "L1H2")
    planted_score = float(scores.score("k")[sender + receiver])
    assert planted_score > 3 * scores.baseline_mean("k")
    assert planted_score > 2 * top.loc[1, "k"]
    # the random pairs sit at the random baseline: mean within a few percent, no outlier
    df = scores.to_dataframe()
    others = df[~((df.sender == "L0H1") & (df.receiver == "L1H2"))]
    for mode in ("q", "k", "v"):
        values = torch.tensor(others[mode].to_numpy())
        if mode == "k":
            values = values[torch.tensor((others.receiver != "L1H2").to_numpy())]  # L1H2's keys are planted
        assert abs(float(values.mean()) / scores.baseline_mean(mode) - 1) < 0.15, mode
        assert float(values.max()) < 1.6 * scores.baseline_mean(mode), mode


def test_the_planted_channel_shows_its_rank(planted):
    model, sender, receiver = planted
    ch = composition_svd(model, sender, receiver, mode="k", k=4)
    sv = ch.singular_values
    assert sv[1] > 0.2 * sv[0] and sv[2] < 1e-5 * sv[1], sv[:4]  # two large values, then nothing
    assert ch.rank_for(0.999) == 2
    # the sender writes into span(e_0, e_1): the channel's written directions lie there
    assert float(ch.written[:2, :2].norm(dim=-1).min()) > 0.999
    # a random pair has no such drop
    rnd = composition_svd(model, (0, 0), (1, 0), mode="k").singular_values
    assert rnd[8] > 0.1 * rnd[0]


# -- both backends ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 3-layer Llama (grouped-query attention: 4 query heads, 2 key/value heads; rotary; RMSNorm gains
    away from 1), saved as a Hugging Face checkpoint and loaded through both backends."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from attnlab.models.embedded import embedded_checkpoint

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, rms_norm_eps=1e-5)
    hf = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("composition_llama") / "ckpt"
    hf.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(embedded_checkpoint() / f, folder / f)
    return attnlab.load_model(str(folder)), attnlab.load_model(str(folder), backend="nnsight")


def test_both_backends_give_the_same_scores(tiny_llama):
    tl, nn = tiny_llama
    a, b = tl.weights(), nn.weights()
    for name in ("W_Q", "W_K", "W_V", "attn_norm_weight"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-6, atol=1e-7, msg=name)
    assert a.W_K.shape == (3, 2, 64, 16) and a.attn_norm_centred is False and b.attn_norm_centred is False
    sa, sb = composition_scores(tl), composition_scores(nn)
    torch.testing.assert_close(sb.scores, sa.scores, rtol=1e-5, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(sb.baseline, sa.baseline)
    ca = composition_svd(tl, (0, 1), (2, 3), mode="v")
    cb = composition_svd(nn, (0, 1), (2, 3), mode="v")
    torch.testing.assert_close(cb.singular_values, ca.singular_values, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", [0, 1])
def test_the_weights_reproduce_the_models_queries_keys_and_values(tiny_llama, backend):
    """At position 0 the rotary rotation is the identity: q, k, v are RMSNorm(x) * gain @ W (no biases)."""
    model = tiny_llama[backend]
    w = model.weights()
    tokens = torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(2))
    layer = 1
    out = model.run(tokens, cache=[Site("resid_pre", layer), Site("q", layer), Site("k", layer), Site("v", layer)])
    x = out.cache[Site("resid_pre", layer)][:, 0]  # [batch, d_model]
    normed = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * w.attn_norm_weight[layer]
    for kind, weight in (("q", w.W_Q), ("k", w.W_K), ("v", w.W_V)):
        expected = torch.einsum("bm,hmd->bhd", normed, weight[layer])
        torch.testing.assert_close(out.cache[Site(kind, layer)][:, 0], expected, rtol=1e-4, atol=1e-5, msg=kind)


def test_a_remote_model_refuses_before_any_work(tiny_llama):
    from attnlab.backends.nnsight import NNsightBackend

    _, nn = tiny_llama
    simulated = NNsightBackend(nn.nn, nn.info, nn.tokenizer, remote="local")

    def no_weights():
        raise AssertionError("weights were read before the capability was checked")

    simulated.weights = no_weights
    with pytest.raises(CapabilityError, match="composition scores") as caught:
        composition_scores(simulated)
    assert caught.value.capability == "weights"
    with pytest.raises(CapabilityError):
        composition_svd(simulated, (0, 0), (1, 0))


# -- against path patching -------------------------------------------------------------------------------------------
def test_spearman_against_pandas_and_known_orders():
    import pandas as pd

    model = attnlab.tiny_model(n_layers=3, n_heads=4, d_model=32, d_head=8, seed=2)
    scores = composition_scores(model, baseline_draws=4)
    k = scores.score("k")
    pairs = [((ls, hs), (2, 1)) for ls in range(2) for hs in range(4)]
    comp = [float(k[s + r]) for s, r in pairs]
    same = compare_with_path_patching(scores, {p: -3 * c ** 2 for p, c in zip(pairs, comp)}, mode="k")
    assert same.n == 8 and same.spearman == pytest.approx(1.0)  # magnitudes in the same order
    signed = compare_with_path_patching(scores, {p: -3 * c ** 2 for p, c in zip(pairs, comp)}, mode="k",
                                        absolute=False)
    assert signed.spearman == pytest.approx(-1.0)
    effects = torch.randn(8, generator=torch.Generator().manual_seed(0)).tolist()
    effects[3] = effects[5]  # a tie
    got = compare_with_path_patching(scores, dict(zip(pairs, effects)), mode="k")
    # pandas' DataFrame.corr(method="spearman") ranks in its own Cython code (Series.corr would need SciPy)
    expected = pd.DataFrame({"c": comp, "e": [abs(e) for e in effects]}).corr(method="spearman").iloc[0, 1]
    assert got.spearman == pytest.approx(expected, abs=1e-12)
    assert list(got.table.columns[:4]) == ["sender", "receiver", "composition", "path_effect"]


def test_compare_with_a_real_path_patching_sweep(tiny):
    """path_patching_sweep into a key/value head of a grouped-query model: the receiver is every query head of its
    group, and the table's composition is their mean."""
    from attnlab.circuits.path_patching import head_inputs, path_patching_sweep
    from tests.conftest import random_pair_dataset

    scores = composition_scores(tiny, baseline_draws=4)
    data = random_pair_dataset(tiny, batch=3, n_pos=6, changed=(1, 2))
    pp = path_patching_sweep(tiny, data, head_inputs([(2, 1)], "k"), progress=False)
    got = compare_with_path_patching(scores, pp)
    assert got.mode == "k" and got.n == 8  # senders of layers 0 and 1; key/value head 1 = query heads 2, 3
    row = got.table.set_index("sender").loc["L1H0"]
    assert row.receiver == "L2H2+L2H3"
    k = scores.score("k")
    assert row.composition == pytest.approx(float((k[1, 0, 2, 2].double() + k[1, 0, 2, 3].double()) / 2))
    assert row.path_effect == pytest.approx(float(pp.values[1, 0]))
    expected = got.table[["composition"]].assign(e=got.table["path_effect"].abs()).corr(method="spearman").iloc[0, 1]
    assert got.spearman == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ArgumentError, match="mode='q' but"):
        compare_with_path_patching(scores, pp, mode="q")
    logits = path_patching_sweep(tiny, data, "logits", layers=[0], progress=False)
    with pytest.raises(ArgumentError, match="not 'logits'"):
        compare_with_path_patching(scores, logits)


# -- bad input, before any work ---------------------------------------------------------------------------------------
class _NoWeights:
    """A model whose weights must not be read (the check must come first)."""

    def __init__(self, model):
        self.info, self.run, self.require = model.info, model.run, model.require

    def weights(self):
        raise AssertionError("weights were read before the arguments were checked")


@pytest.mark.parametrize("call,error,match", [
    (lambda m: composition_scores(m, modes=["x"]), ArgumentError, r"'mode' must be one of 'q', 'k', 'v'"),
    (lambda m: composition_scores(m, modes=[]), ArgumentError, "at least one"),
    (lambda m: composition_scores(m, baseline_draws=0), ArgumentError, r"'baseline_draws' must be at least 1"),
    (lambda m: composition_scores(m, seed=1.5), ArgumentTypeError, "'seed' must be an integer"),
    (lambda m: composition_svd(m, (3, 0), (1, 0)), SiteError, r"'sender' layer must be in \[0, 3\) \(got 3\)"),
    (lambda m: composition_svd(m, (0, 0), (1, 4)), SiteError, r"'receiver' head must be in \[0, 4\) \(got 4"),
    (lambda m: composition_svd(m, (1, 0), (1, 2)), SiteError, "later layer than the sender"),
    (lambda m: composition_svd(m, (0, 0), "L1H0"), SiteError, r"\(layer, head\) pair"),
    (lambda m: composition_svd(m, (0, 0), (1, 0), mode="o"), ArgumentError, "got 'o'"),
    (lambda m: composition_svd(m, (0, 0), (1, 0), k=0), ArgumentError, "'k' must be at least 1"),
])
def test_bad_input_fails_before_any_work(tiny, call, error, match):
    with pytest.raises(error, match=match):
        call(_NoWeights(tiny))


def test_a_name_is_not_a_model():
    with pytest.raises(ArgumentTypeError, match="load_model"):
        composition_scores("smollm2-135m")


# -- the result: tables, files, display --------------------------------------------------------------------------------
def test_result_tables_save_load_and_payload(tmp_path, tiny):
    scores = composition_scores(tiny, modes=("K", "v"), baseline_draws=5, seed=3)
    assert scores.modes == ["k", "v"] and scores.baseline.shape == (2, 5)
    df = scores.to_dataframe()
    assert len(df) == (3 * 2 // 2) * 16  # 3 layer pairs x 4 x 4 heads
    top = scores.top("k", 4)
    assert list(top["k"]) == sorted(df["k"], reverse=True)[:4]
    assert top.loc[0, "k_ratio"] == pytest.approx(top.loc[0, "k"] / scores.baseline_mean("k"), rel=1e-6)
    with pytest.raises(ArgumentError, match="was not computed"):
        scores.top("q")
    path = scores.save(tmp_path / "comp.json")
    again = CompositionScores.load(path)
    torch.testing.assert_close(again.scores, scores.scores, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(again.baseline, scores.baseline, rtol=0, atol=0)
    assert again.to_dict() == scores.to_dict() and again.model == scores.model
    with pytest.raises(ResultFileError, match="CompositionScores.load"):
        HeadScores.load(path)
    payload = scores.payload("v")
    text = json.dumps(payload, allow_nan=False)  # plain JSON: NaN cells are null
    assert len(payload["matrix"]) == len(payload["senders"]) == 12 and payload["matrix"][4][0] is None
    assert payload["matrix"][0][4] == pytest.approx(float(scores.score("v")[0, 0, 1, 0]))
    assert json.loads(text)["baseline"]["mean"] == pytest.approx(scores.baseline_mean("v"))
    scores.model["name"] = "<script>alert(1)</script>"
    bundle = scores._repr_mimebundle_()
    assert "<script>" not in bundle["text/html"] and "&lt;script&gt;" in bundle["text/html"]
    assert "CompositionScores" in bundle["text/plain"]
