"""The Metric type: built-ins against independent torch formulas, custom callables, and the errors for bad metrics."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.errors import MetricError
from attnlab.metrics import METRICS, Metric, get_metric, normalise


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=g)  # 2 variants x 3 prompts
    answers = torch.tensor([[1, 2], [3, 4], [5, 0]])
    clean = torch.randn(3, 11, generator=g)
    return logits, answers, clean


def test_builtins_equal_independent_formulas(batch):
    logits, answers, clean = batch
    tiled = answers.repeat(2, 1)
    rows = torch.arange(6)
    ref = METRICS["kl_div"].reference(clean)
    expected = {
        "logit_diff": logits[rows, tiled[:, 0]] - logits[rows, tiled[:, 1]],
        "prob": F.softmax(logits, -1)[rows, tiled[:, 0]],
        "logprob": F.log_softmax(logits, -1)[rows, tiled[:, 0]],
        "accuracy": (logits.argmax(-1) == tiled[:, 0]).float(),
        # torch's own kl_div(input=log q, target=log p, log_target) = sum p (log p - log q)
        "kl_div": F.kl_div(F.log_softmax(logits, -1), F.log_softmax(clean, -1).repeat(2, 1), log_target=True,
                           reduction="none").sum(-1),
    }
    for name, want in expected.items():
        got = get_metric(name)(logits, answers, ref)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_kl_of_clean_run_is_zero(batch):
    _, answers, clean = batch
    m = get_metric("kl")
    assert float(m(clean, answers, m.reference(clean)).abs().max()) < 1e-6


def test_custom_callable_gets_tiled_answers_and_reference(batch):
    logits, answers, clean = batch
    seen = {}

    def my_metric(lg, ans, reference):
        seen["shapes"] = (tuple(ans.shape), None if reference is None else tuple(reference.shape))
        return lg.gather(-1, ans[:, :1])[:, 0]

    m = get_metric(my_metric)
    assert m.name == "my_metric" and not m.builtin
    m(logits, answers)
    assert seen["shapes"] == ((6, 2), None)
    m2 = Metric.custom(my_metric, needs_reference=True)
    m2(logits, answers, m2.reference(clean))
    assert seen["shapes"] == ((6, 2), (6, 11))


@pytest.mark.parametrize("fn, match", [
    (lambda lg, a, r: lg.sum(), r"shape \(6,\)"),
    (lambda lg, a, r: lg[:, :2], r"shape \(6,\)"),
    (lambda lg, a, r: torch.full((6,), float("nan")), "non-finite"),
    (lambda lg, a, r: [0.0] * 6, "torch tensor"),
    (lambda lg, a, r: lg.argmax(-1), "floats"),
])
def test_bad_custom_metrics_raise_clear_errors(batch, fn, match):
    logits, answers, _ = batch
    with pytest.raises(MetricError, match=match):
        Metric.custom(fn)(logits, answers)


def test_metric_needing_reference_without_one_raises(batch):
    logits, answers, _ = batch
    with pytest.raises(MetricError, match="clean reference"):
        get_metric("kl_div")(logits, answers)


def test_unknown_and_malformed_metrics(batch):
    with pytest.raises(MetricError, match="unknown metric"):
        get_metric("bleu")
    with pytest.raises(MetricError, match="three positional"):
        get_metric(lambda logits: logits)
    with pytest.raises(MetricError, match="must be a name"):
        get_metric(3)
    with pytest.raises(MetricError, match="piecewise constant"):
        get_metric("accuracy").require_differentiable("EAP")


def test_normalise_works_for_any_metric():
    # KL: clean 0, corrupted 2 nats; a patch that halves the divergence restores half the gap
    assert math.isclose(float(normalise(1.0, 0.0, 2.0, "denoising")), 0.5)
    assert math.isclose(float(normalise(1.0, 0.0, 2.0, "noising")), -0.5)
    with pytest.raises(MetricError, match="another metric"):
        normalise(1.0, 1.0, 1.0, "denoising")
