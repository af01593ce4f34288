"""Known-answer test of the head detectors: a 2-layer attention-only transformer trained here to copy.

A model with no MLPs and two layers can predict the second half of a repeated random sequence only one way
(Olsson et al. 2022; Elhage et al. 2021, section "Induction heads"): a layer-0 *previous-token* head writes "the token
before me was A" into each position, and a layer-1 *induction* head whose keys read that (K-composition) attends from
the current A to the token after the earlier A and copies it. So after training, the answer is known: the top
induction head must sit in layer 1, the top previous-token head in layer 0, ablating either must break copying, and
ablating the previous-token head must take away the induction head's induction attention. A head the detectors rank
low must not matter.

Training: 2 layers x 2 heads, d_model 64, vocabulary 48, context 32, learned positions; sequences of random tokens in
which a random segment (4-10 tokens) reappears at a random later position, so no fixed positional offset can solve the
task. 1,500 Adam steps of 32 sequences (about 30-60 s on 2 CPU cores), seeded; nothing is cached or committed.
"""

import math

import pytest
import torch

from attnlab.ablation import head_ablation_interventions
from attnlab.heads import ablation_effects, copying_scores, prefix_curves, score_heads
from attnlab.models import tiny_model
from attnlab.sites import Site, SiteKind
from attnlab.tasks.induction import prefix_probe, repeated_random_tokens

V, N_CTX, BOS = 48, 32, 0
STEPS, BATCH, LR = 1500, 32, 3e-3


def _training_batch(g: torch.Generator, n: int) -> torch.Tensor:
    tok = torch.randint(1, V, (n, N_CTX), generator=g)
    tok[:, 0] = BOS
    for i in range(n):
        length = int(torch.randint(4, 11, (1,), generator=g))
        gap = int(torch.randint(0, N_CTX - 2 * length, (1,), generator=g))
        s1 = 1 + int(torch.randint(0, N_CTX - 2 * length - gap, (1,), generator=g))
        s2 = s1 + length + gap
        tok[i, s2:s2 + length] = tok[i, s1:s1 + length]
    return tok


@pytest.fixture(scope="module")
def toy():
    """The trained toy model (an attnlab backend), trained once per module."""
    torch.manual_seed(0)
    model = tiny_model(n_layers=2, n_heads=2, d_model=64, d_head=32, d_vocab=V, n_ctx=N_CTX, attn_only=True,
                       seed=0, name="toy-induction-2l")
    bridge = model.bridge
    bridge.train()
    opt = torch.optim.Adam(bridge.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and the machine is shared
    try:
        for _ in range(STEPS):
            tok = _training_batch(g, BATCH)
            logits = bridge(tok)
            loss = -logits[:, :-1].log_softmax(-1).gather(-1, tok[:, 1:, None]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def data(toy):
    return repeated_random_tokens(toy, 10, 32, seed=1, prepend_bos=True, bos_token_id=BOS, token_range=(1, V))


@pytest.fixture(scope="module")
def found(toy, data):
    scores = score_heads(toy, data)
    return scores, scores.ranking("induction")[0], scores.ranking("previous_token")[0]


@pytest.fixture(scope="module")
def ablation(toy, data):
    return ablation_effects(toy, data, methods=("zero", "mean"))


def test_toy_model_copies(ablation):
    """Training worked: the second repeat is predicted far better than chance, the first repeat is not."""
    first, second = ablation.clean_loss["first_repeat"], ablation.clean_loss["second_repeat"]
    assert first > 0.95 * math.log(V - 1), ablation.clean_loss  # random tokens: about ln(47) nats
    assert second < 1.5 and first - second > 2.0, ablation.clean_loss


def test_detectors_find_the_known_heads(found):
    """Top induction head in layer 1, top previous-token head in layer 0, each clearly ahead of every other head."""
    scores, ind, prev = found
    ind_scores, prev_scores = scores.score("induction"), scores.score("previous_token")
    assert ind[0] == 1, f"the top induction head must be in layer 1 (needs composition), got L{ind[0]}H{ind[1]}"
    assert prev[0] == 0, f"the top previous-token head must be in layer 0, got L{prev[0]}H{prev[1]}"
    assert ind_scores[ind] > 0.5 and prev_scores[prev] > 0.7
    assert ind_scores[0].max() < 0.1, "no layer-0 head can do induction"
    others = [h for h in scores.ranking("previous_token")[1:]]
    assert all(prev_scores[h] < prev_scores[prev] - 0.4 for h in others)


def test_ablation_contrast(found, ablation):
    """Ablating the found heads breaks copying; ablating a head the detectors rank low does not."""
    scores, ind, prev = found
    flagged = {ind, prev} | {h for h in scores.ranking("induction") if scores.score("induction")[h] > 0.3}
    controls = [(layer, head) for layer in range(2) for head in range(2) if (layer, head) not in flagged]
    assert controls, "no unflagged head to serve as control"
    for method in ("zero", "mean"):
        ind_effect = ablation.effect(*ind, method)
        prev_effect = ablation.effect(*prev, method)
        control = max(abs(ablation.effect(*h, method)) for h in controls)
        assert ind_effect > 0.3, (method, ind_effect)
        assert prev_effect > 1.0, (method, prev_effect)
        assert control < 0.15 and ind_effect > 4 * control, (method, ind_effect, control)


def test_previous_token_head_feeds_the_induction_head(toy, data, found):
    """K-composition, causally: ablating the previous-token head removes the induction head's induction stripe."""
    scores, ind, prev = found
    tokens = data.tokens
    ivs = head_ablation_interventions(toy, [prev], method="zero", n_pos=tokens.shape[1], batch=tokens.shape[0])
    site = Site(SiteKind.PATTERN, ind[0], head=ind[1])
    pattern = toy.run(tokens, cache=[site], interventions=ivs).cache[site]  # [batch, dest, src]
    dest = torch.arange(data.second_repeat.start, data.second_repeat.stop)
    ablated = float(pattern[:, dest, dest - data.seq_len + 1].mean())
    assert ablated < 0.3 * float(scores.score("induction")[ind]), ablated


def test_loss_curve_by_position(ablation, found):
    """First repeat near chance at every position; ablating the induction head lifts the second repeat's curve."""
    _, ind, _ = found
    clean = ablation.clean_position_loss
    o, L = ablation.bos_offset, ablation.seq_len
    assert math.isnan(float(clean[0]))
    assert clean[o + 1:o + L].min() > 3.0
    ablated = ablation.position_loss[0, ind[0], ind[1]]
    assert (ablated[o + L + 1:] - clean[o + L + 1:]).mean() > 0.3


def test_induction_head_copies(toy, data, found):
    """The induction head's OV circuit copies: its direct logit attribution to the copied token is large and
    positive on almost every sequence, while layer-0 heads (which cannot know the next token) write little of it."""
    _, ind, _ = found
    mean, per_seq = copying_scores(toy, data)
    assert mean[ind] > 1.0 and mean[ind] > 3 * mean[0].abs().max(), mean
    assert (per_seq[:, ind[0], ind[1]] > 0).float().mean() > 0.9


def test_toy_induction_is_short_prefix(toy, found):
    """A 2-layer attention-only model sees one previous token only: its induction head fires at prefix length 1."""
    _, ind, _ = found
    probe = prefix_probe(toy, (1, 2, 4, 8), 32, seed=2, prepend_bos=True, bos_token_id=BOS, token_range=(1, V))
    curves = prefix_curves(toy, probe)
    curve = curves.curve(*ind)
    assert curve[0] > 0.3 and curve[0] > 0.5 * max(curve), curve
