"""Any metric in the patching engine: KL divergence, probability and the others against TransformerLens's own
``patching`` functions given the same metric (written here with torch.nn.functional, not attnlab's metric code),
custom callables, errors before any patched pass, and metrics reduced where the model runs."""

import pytest
import torch
import torch.nn.functional as F
import transformer_lens.patching as tlp

from attnlab.backends.base import Reduction
from attnlab.errors import BackendError, MetricError
from attnlab.metrics import Metric
from attnlab.patching import run_sweep

from .conftest import random_pair_dataset
from .test_patching_parity import REFERENCE as PARITY_REFERENCE

TOL = 1e-4

# TransformerLens's sweep functions by component (shared with the logit-difference parity tests)
REFERENCE = {k: v for k, v in PARITY_REFERENCE.items() if k != "mlp_out"}


def tl_metric(name, dataset, clean_logits):
    """The metric as a TransformerLens patching metric: patched logits [batch, pos, vocab] -> a scalar mean."""
    rows = torch.arange(len(dataset))
    answer = dataset.answers[:, 0]
    clean_logp = F.log_softmax(clean_logits[rows, dataset.end], dim=-1)

    def metric(logits):
        at_end = logits[rows, dataset.end]
        if name == "kl_div":  # torch's kl_div(input=log q, target=log p) = sum p (log p - log q), per prompt
            return F.kl_div(F.log_softmax(at_end, -1), clean_logp, log_target=True, reduction="batchmean")
        if name == "prob":
            return F.softmax(at_end, -1)[rows, answer].mean()
        if name == "logprob":
            return F.log_softmax(at_end, -1)[rows, answer].mean()
        raise ValueError(name)
    return metric


def reference(model, dataset, component, direction, metric_name):
    """TransformerLens's normalised sweep for ``metric_name``, its baselines computed by TransformerLens too."""
    bridge = model.bridge
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    with torch.no_grad():
        clean_logits = bridge(clean)
        corrupted_logits = bridge(corrupted)
        _, source_cache = bridge.run_with_cache(source)
    raw = tl_metric(metric_name, dataset, clean_logits)
    m_clean, m_corr = float(raw(clean_logits)), float(raw(corrupted_logits))
    ref_point = m_corr if direction == "denoising" else m_clean
    with torch.no_grad():
        out = REFERENCE[component](bridge, target, source_cache, lambda lg: (raw(lg) - ref_point) / (m_clean - m_corr))
    return out.permute(0, 2, 1) if component == "heads_by_pos" else out


@pytest.mark.parametrize("metric, component, direction", [
    ("kl_div", "resid_pre", "denoising"), ("kl_div", "attn_out", "noising"), ("kl_div", "heads", "denoising"),
    ("kl_div", "heads_by_pos", "noising"), ("prob", "resid_pre", "noising"), ("prob", "heads", "noising"),
    ("prob", "heads_by_pos", "denoising"), ("logprob", "attn_out", "denoising"), ("logprob", "heads", "noising"),
])
def test_tiny_model_metric_parity_with_transformer_lens(tiny, metric, component, direction):
    model = tiny
    dataset = random_pair_dataset(model, batch=3, n_pos=7, changed=(2, 5), seed=3)
    result = run_sweep(model, dataset, component, direction=direction, metric=metric, progress=False,
                       memory_budget_mb=0.05)
    ref = reference(model, dataset, component, direction, metric)
    assert result.metric == metric and ref.abs().max() > 1e-3
    torch.testing.assert_close(result.values, ref.float(), atol=TOL, rtol=0)


def test_kl_baselines_are_zero_clean_and_positive_corrupted(tiny):
    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(2,))
    result = run_sweep(tiny, dataset, "heads", metric="kl_div", progress=False)
    assert abs(result.baselines["clean"]) < 1e-6 and result.baselines["corrupted"] > 1e-3
    assert "KL" in result.heatmap_payload()["value_label"]
    assert "clean KL" in repr(result)


def test_custom_callable_equals_builtin_and_is_not_reduced(tiny):
    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(2, 5))

    def answer_prob(logits, answers, reference):
        return logits.softmax(-1).gather(-1, answers[:, :1])[:, 0]

    builtin = run_sweep(tiny, dataset, "heads", metric="prob", progress=False)
    custom = run_sweep(tiny, dataset, "heads", metric=answer_prob, progress=False)
    torch.testing.assert_close(custom.values, builtin.values, atol=1e-6, rtol=0)
    assert custom.metric == "answer_prob" and not custom.settings["metric_reduced_where_the_model_runs"]
    assert builtin.settings["metric_reduced_where_the_model_runs"]


def test_accuracy_sweep_counts_top1_answers(tiny):
    """A patch that restores the clean top-1 token on every prompt scores 1 (denoising); checked by hand."""
    dataset = random_pair_dataset(tiny, batch=4, n_pos=6, changed=(5,), seed=2)
    with torch.no_grad():
        clean_top = tiny.bridge(dataset.clean_tokens)[:, -1].argmax(-1)
    dataset.answers[:, 0] = clean_top  # the clean run is right on every prompt
    with torch.no_grad():
        corrupted_top = tiny.bridge(dataset.corrupted_tokens)[:, -1].argmax(-1)
    if bool((corrupted_top == clean_top).all()):
        pytest.skip("this seed's corruption does not change the top-1 token")  # pragma: no cover
    result = run_sweep(tiny, dataset, "resid_pre", metric="accuracy", positions=[5], progress=False)
    # patching the whole residual stream at the last position before block 0 restores the clean run exactly
    assert float(result.values[0, 0]) == pytest.approx(1.0)
    assert result.baselines["clean"] == 1.0


class CountingModel:
    """Wraps a backend and counts patched passes, to prove an error came before any of them."""

    def __init__(self, model):
        self._model, self.patched = model, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def run_many(self, specs):
        for item in self._model.run_many(specs):
            self.patched += 1
            yield item


@pytest.mark.parametrize("bad, match", [
    (lambda lg, a, r: lg.mean(), r"shape \(3,\)"),
    (lambda lg, a, r: torch.log(lg[:, 0] * 0 - 1), "non-finite"),
    (Metric.custom(lambda lg, a, r: lg[:, 0].double().exp() > 0), "floats"),
    ("bleu", "unknown metric"),
])
def test_bad_metric_fails_before_any_patched_pass(tiny, bad, match):
    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(2,))
    counting = CountingModel(tiny)
    with pytest.raises(MetricError, match=match):
        run_sweep(counting, dataset, "heads", metric=bad, progress=False)
    assert counting.patched == 0


def test_reduction_needs_logits_at_and_builtin(tiny):
    dataset = random_pair_dataset(tiny, batch=2, n_pos=5)
    with pytest.raises(BackendError, match="logits_at"):
        tiny.run(dataset.clean_tokens, reduce=Reduction("prob", dataset.answers))
    with pytest.raises(BackendError, match="only built-in"):
        Reduction("bleu", dataset.answers)
    with pytest.raises(BackendError, match="reference"):
        Reduction("kl_div", dataset.answers)
    out = tiny.run(dataset.clean_tokens, logits_at=dataset.end, reduce=Reduction("logit_diff", dataset.answers))
    rows = torch.arange(2)
    torch.testing.assert_close(out.metric, out.logits[rows, dataset.answers[:, 0]] - out.logits[rows,
                                                                                                 dataset.answers[:, 1]])


@pytest.mark.integration
@pytest.mark.parametrize("metric, component, direction", [("kl_div", "heads", "denoising"),
                                                          ("prob", "resid_pre", "noising")])
def test_embedded_model_metric_parity(embedded_model, metric, component, direction):
    from attnlab.tasks.ioi import ioi_dataset

    dataset = ioi_dataset(embedded_model, 2, seed=1, corruption="s2_swap")
    layers = [0, 14, 29]
    result = run_sweep(embedded_model, dataset, component, direction=direction, metric=metric, layers=layers,
                       progress=False)
    # TransformerLens over the same cells (index_df restricts it to the chosen layers)
    import pandas as pd

    axes = {"heads": ["layer", "head"], "resid_pre": ["layer", "pos"]}[component]
    ranges = {"layer": layers, "head": result.index.get("head"), "pos": result.index.get("pos")}
    index_df = pd.MultiIndex.from_product([ranges[a] for a in axes], names=axes).to_frame(index=False)
    bridge = embedded_model.bridge
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    with torch.no_grad():
        clean_logits, corrupted_logits = bridge(clean), bridge(corrupted)
        _, source_cache = bridge.run_with_cache(source)
        raw = tl_metric(metric, dataset, clean_logits)
        m_clean, m_corr = float(raw(clean_logits)), float(raw(corrupted_logits))
        ref_point = m_corr if direction == "denoising" else m_clean
        fn = REFERENCE[component]
        keywords = {k: v for k, v in fn.keywords.items() if k != "index_axis_names"}
        flat = tlp.generic_activation_patch(bridge, target, source_cache,
                                            lambda lg: (raw(lg) - ref_point) / (m_clean - m_corr),
                                            index_df=index_df, **keywords)
    ref = flat.reshape([len(ranges[a]) for a in axes])
    assert ref.abs().max() > 1e-2
    torch.testing.assert_close(result.values, ref.float(), atol=TOL, rtol=0)
