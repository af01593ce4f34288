"""Retrieval heads on the needle toy (:mod:`tests.heads_sinks_retrieval.toy`): the retrieval score equals a direct
computation from TransformerLens's cached patterns; the head that does the copying, found by direct zero ablation
through ``run_with_hooks``, is ranked first; ablating it destroys retrieval while ablating random heads does not."""

import pytest
import torch

from attnlab.heads import RetrievalScores, retrieval_ablation, retrieval_scores
from attnlab.tasks.needle import needle_haystack_tokens
from tests.heads_sinks_retrieval.toy import BOS, HAY0, N_HAY, QUERY, random_needle, train_toy


@pytest.fixture(scope="module")
def toy():
    return train_toy()


@pytest.fixture(scope="module")
def inputs(toy):
    needle = random_needle(torch.Generator().manual_seed(5))
    return needle_haystack_tokens(toy, needle=needle, question=[QUERY], depths=[0.0, 0.25, 0.5, 0.75, 1.0],
                                  lengths=[16, 32, 48], token_range=(HAY0, HAY0 + N_HAY), bos_token_id=BOS, seed=3)


@pytest.fixture(scope="module")
def scores(toy, inputs):
    return retrieval_scores(toy, inputs)


def _direct_scores(model, inputs):
    """Wu et al.'s score from run_with_cache, one input at a time, nothing from attnlab.heads."""
    out = []
    for item in inputs.items:
        tokens = item.tokens[None]
        logits, cache = model.bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
        steps = item.answer_positions.tolist()
        needle = set(item.needle_positions.tolist())
        score = torch.zeros(model.info.n_layers, model.info.n_heads)
        for ans in steps:
            target = int(tokens[0, ans])
            if int(logits[0, ans - 1].argmax()) != target:
                continue
            for layer in range(model.info.n_layers):
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, :, ans - 1]  # [head, src]
                for head in range(model.info.n_heads):
                    src = int(pattern[head].argmax())
                    score[layer, head] += float(src in needle and int(tokens[0, src]) == target)
        out.append(score / len(steps))
    return torch.stack(out)


def _direct_accuracy(model, inputs, ablate=None):
    """Fraction of needle tokens predicted top-1, with one head's z zeroed through run_with_hooks."""
    def zero(z, hook):
        z = z.clone()
        z[:, :, ablate[1]] = 0.0
        return z

    hooks = [] if ablate is None else [(f"blocks.{ablate[0]}.attn.hook_z", zero)]
    acc = []
    for item in inputs.items:
        with torch.no_grad():
            logits = model.bridge.run_with_hooks(item.tokens[None], fwd_hooks=hooks)
        pred = logits[0, item.query_positions].argmax(-1)
        acc.append(float((pred == item.tokens[item.answer_positions]).float().mean()))
    return torch.tensor(acc)


def test_the_toy_retrieves(scores, inputs):
    assert scores.accuracy.mean() > 0.95, scores.accuracy
    assert len(inputs) == 15 and sorted(set(inputs.lengths)) == [16, 32, 48]
    assert sorted(set(inputs.depths)) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_scores_equal_direct_computation(toy, inputs, scores):
    direct = _direct_scores(toy, inputs)
    assert direct.max() > 0.5, "no head retrieves: the comparison would prove little"
    torch.testing.assert_close(scores.per_input, direct)
    torch.testing.assert_close(scores.scores, direct.mean(0))


def test_copying_head_ranked_first(toy, inputs, scores):
    """The head whose zero ablation (direct hooks) costs the most accuracy is the top retrieval head; it is a
    retrieval head (> 0.1), and ablating it costs more than half of the accuracy."""
    clean = _direct_accuracy(toy, inputs).mean()
    drops = {h: float(clean - _direct_accuracy(toy, inputs, (0, h)).mean()) for h in range(toy.info.n_heads)}
    copier = max(drops, key=drops.get)
    assert drops[copier] > 0.5, drops
    assert scores.ranking()[0] == (0, copier)
    assert (0, copier) in scores.retrieval_heads()
    assert scores.top(1)["component"][0] == f"L0H{copier}"


def test_ablating_the_top_head_destroys_retrieval_random_heads_do_not(toy, inputs, scores):
    result = retrieval_ablation(toy, inputs, scores, k=1, n_random=3, method="zero", seed=0, n_bootstrap=500)
    s = result.summary
    torch.testing.assert_close(result.top, _direct_accuracy(toy, inputs, result.heads[0]))
    assert s["top"]["mean"] < 0.5 and s["top"]["hi"] < s["clean"]["lo"], s
    assert s["random"]["mean"] > 0.9 and s["random"]["drop_lo"] <= 0.05, s
    assert all(h not in draw for draw in result.random_heads for h in result.heads)
    assert s["top"]["drop_lo"] > 0.3
    mean = retrieval_ablation(toy, inputs, scores, k=1, n_random=2, method="mean", n_bootstrap=200)
    assert mean.summary["top"]["mean"] < 0.5, mean.summary


def test_save_load_exact_and_display(tmp_path, toy, inputs, scores):
    result = scores.with_ablation(retrieval_ablation(toy, inputs, scores, k=1, n_random=2, n_bootstrap=200))
    back = RetrievalScores.load(result.save(tmp_path / "retrieval.json"))
    assert back.to_dict() == result.to_dict()
    assert back.ablation.random_heads == result.ablation.random_heads
    bundle = result._repr_mimebundle_()
    assert bundle["text/html"].startswith("<div") and "RetrievalScores" in bundle["text/plain"]
    payload = result.payload()
    assert payload["kind"] == "retrieval" and len(payload["values"]) == 1 and len(payload["values"][0]) == 4
    assert payload["top"][0]["label"] == result.top(1)["component"][0]
    assert set(result.by_depth()["depth"]) == {0.0, 0.25, 0.5, 0.75, 1.0}
