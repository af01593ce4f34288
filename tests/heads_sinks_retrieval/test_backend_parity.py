"""Sinks, calibration and retrieval scores through the nnsight backend (run locally) against the TransformerLens
backend on the embedded SmolLM2-135M (grouped-query attention: 9 query heads share 3 key/value heads). The two
backends share no code below the Backend interface."""

import pytest
import torch

from attnlab.heads import retrieval_scores, sink_analysis
from attnlab.heads.sinks import sink_calibration_interventions
from attnlab.tasks.needle import DEFAULT_NEEDLE, needle_haystack

TOL = 1e-4
TEXT = ["The river was slow and brown. The children walked to school on the hill, carrying their books.",
        "On market days the square filled with carts. Farmers sold apples and cheese, and fish came in boxes."]


@pytest.fixture(scope="module")
def tokens(embedded_model):
    rows = [embedded_model.to_tokens([t])[0, :20] for t in TEXT]
    return torch.stack(rows)


@pytest.mark.integration
def test_sinks_agree(embedded_model, embedded_nnsight, tokens):
    ref = sink_analysis(embedded_model, tokens)
    got = sink_analysis(embedded_nnsight, tokens)
    assert all(0 in s for s in ref.sinks), "the first token should be a sink of a real model (StreamingLLM)"
    torch.testing.assert_close(got.mass, ref.mass, atol=TOL, rtol=TOL)
    torch.testing.assert_close(got.scores, ref.scores, atol=TOL, rtol=TOL)
    assert got.sinks == ref.sinks


@pytest.mark.integration
def test_calibration_agrees(embedded_model, embedded_nnsight, tokens):
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, 0] = True
    heads = [(2, 4), (3, 0), (3, 8)]
    logits = [m.run(tokens, interventions=sink_calibration_interventions(m, tokens, heads, mask, 0.5)).logits
              for m in (embedded_model, embedded_nnsight)]
    plain = embedded_model.run(tokens).logits
    assert (logits[0] - plain).abs().max() > 1e-2
    torch.testing.assert_close(logits[1], logits[0], atol=1e-3, rtol=1e-3)


@pytest.mark.integration
def test_retrieval_scores_agree(embedded_model, embedded_nnsight):
    inputs = needle_haystack(embedded_model, depths=[0.3, 0.7], lengths=[60])
    item = inputs.items[0]
    assert embedded_model.to_str_tokens(item.tokens[item.needle_positions]) == list(DEFAULT_NEEDLE)
    assert item.tokens[0] == embedded_model.tokenizer.bos_token_id
    ref = retrieval_scores(embedded_model, inputs)
    got = retrieval_scores(embedded_nnsight, inputs)
    assert ref.accuracy.mean() > 0.5, "the model hardly copies the needle: the comparison would prove little"
    assert ref.scores.max() > 0.3
    torch.testing.assert_close(got.accuracy, ref.accuracy)
    torch.testing.assert_close(got.per_input, ref.per_input, atol=1 / inputs.n_needle + 1e-6, rtol=0)
    assert (got.per_input != ref.per_input).float().mean() < 0.02  # argmax ties may flip on a rare head
