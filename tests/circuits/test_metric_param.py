"""``metric=`` in every circuit analysis: routing, independent checks per metric, and early errors.

- Routing: a custom callable that computes a built-in metric by hand, written differently (advanced indexing,
  ``torch.nn.functional.kl_div``), gives the built-in's results in every analysis (bit for bit for the logit
  difference), and the other metrics give different numbers: the metric reaches every place that reads one.
- Independent checks: attribution patching with KL and probability equals a gradient computed here with plain
  TransformerLens hooks and ``torch.autograd``; circuit evaluation with probability and KL equals runs built another
  way (all edges kept = the model; no edge kept with corrupted ablation = the corrupted run, since every receiver
  then reads the corrupted residual stream; the single edge ``input->logits`` = the corrupted run with the clean
  embeddings added at the final norm); EAP with KL at the clean run is ~0 (the gradient of KL at its minimum
  vanishes) while EAP-IG's is not; EAP-IG with one step is EAP for every metric; ACDC with KL keeps exactly the
  edges whose removal moved the circuit's KL by at least the threshold.
- Errors: accuracy in a gradient method, and custom metrics with the wrong shape, NaN values, or reading a reference
  they did not declare, raise MetricError before any patched pass or backward pass (passes are counted).
"""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from attnlab.circuits import (
    GraphRunner,
    attribution_patching,
    attribution_sweep,
    circuit_from_scores,
    circuit_metrics,
    completeness,
    eap_scores,
    faithfulness,
    faithfulness_curve,
    head_inputs,
    minimality,
    path_patch,
    path_patching_sweep,
)
from attnlab.circuits.acdc import acdc
from attnlab.circuits.agreement import AgreementError, agreement, agreement_report  # the modules shadow these names
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.graph import corrupted_source
from attnlab.errors import MetricError
from attnlab.metrics import METRICS, Metric
from attnlab.models import tiny_model
from attnlab.render.circuit import circuit_payload

from ..conftest import random_pair_dataset


# -- hand-written metrics (deliberately not the code of attnlab.metric_ops) ---------------------------------------
def hand_logit_diff(logits, answers, reference):
    rows = torch.arange(logits.shape[0])
    return logits[rows, answers[:, 0]] - logits[rows, answers[:, 1]]


def hand_kl(logits, answers, reference):
    """KL(clean || run) from torch's own kl_div (reference: clean log-probabilities)."""
    return F.kl_div(F.log_softmax(logits, dim=-1), reference, log_target=True, reduction="none").sum(-1)


def hand_prob(logits, answers, reference):
    return F.softmax(logits, dim=-1)[torch.arange(logits.shape[0]), answers[:, 0]]


def hand_logprob(logits, answers, reference):
    return F.log_softmax(logits, dim=-1)[torch.arange(logits.shape[0]), answers[:, 0]]


CUSTOM = {
    "logit_diff": Metric.custom(hand_logit_diff),
    "kl_div": Metric.custom(hand_kl, needs_reference=True),
    "prob": Metric.custom(hand_prob),
    "logprob": Metric.custom(hand_logprob),
}


@pytest.fixture(scope="module")
def small():
    return tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_head=8, seed=4)


@pytest.fixture(scope="module")
def pairs(small):
    return random_pair_dataset(small, batch=3, n_pos=6, changed=(1, 3), seed=2)


@pytest.fixture(scope="module")
def fixed(small, pairs):
    """A fixed circuit and fixed edge scores (default metric), so that evaluations differ only by the metric."""
    scores = eap_scores(small, pairs, progress=False)
    return circuit_from_scores(scores, n_edges=12), scores


_RUNS: dict = {}


def run_all(small, pairs, fixed, metric) -> dict:
    """Every circuit analysis with ``metric``, as a dict of tensors (cached per metric)."""
    key = (metric if isinstance(metric, str) else id(metric), id(pairs))
    if key in _RUNS:
        return _RUNS[key]
    circuit, scores = fixed
    g = GraphRunner(small).graph
    kept = torch.stack([g.valid, torch.zeros_like(g.valid), circuit.mask(g)])
    out = {}
    no_grad = metric == "accuracy"
    if not no_grad:
        res = attribution_patching(small, pairs, ["heads", "resid_pre"], metric=metric)
        out["attr_heads"], out["attr_resid"] = res["heads"].values, res["resid_pre"].per_prompt
        out["attr_sweep"] = attribution_sweep(small, pairs, "heads", direction="noising", metric=metric).values
        eap = eap_scores(small, pairs, metric=metric, progress=False)
        ig = eap_scores(small, pairs, method="eap-ig", steps=2, batch_size=2, ablation="mean", metric=metric,
                        progress=False)
        out["eap"], out["eap_ig"] = eap.scores, ig.scores
        out["eap_baselines"] = torch.tensor([eap.clean_metric, eap.corrupted_metric, ig.clean_metric,
                                             ig.corrupted_metric])
    pp = path_patch(small, pairs, (0, 1), "logits", metric=metric)
    out["path_patch"] = torch.cat([pp.per_prompt, torch.tensor([pp.value])])
    out["path_sweep"] = path_patching_sweep(small, pairs, head_inputs([(1, 0)], "q"), direction="denoising",
                                            metric=metric, progress=False).per_prompt
    out["circuit_metrics"] = circuit_metrics(small, pairs, kept, source="corrupted", batch_size=2, metric=metric)
    f = faithfulness(small, pairs, circuit, metric=metric)
    out["faithfulness"] = torch.cat([f.per_prompt["circuit"], f.per_prompt["ablated"], torch.tensor([f.faithfulness])])
    out["curve"] = faithfulness_curve(small, pairs, scores, [3, 12], metric=metric).per_prompt
    out["minimality"] = torch.tensor(minimality(small, pairs, circuit, metric=metric).drop)
    out["completeness"] = completeness(small, pairs, circuit, [["L0H1"], ["L0H1", "L1H2"]],
                                       metric=metric).per_prompt_circuit
    a = acdc(small, pairs, 0.01, receivers=["logits", "MLP1"], metric=metric, progress=False)
    out["acdc_effects"] = torch.nan_to_num(a.effects, nan=0.0)
    out["acdc_kept"] = a.kept.float()
    out["_records"] = {"attr": None if no_grad else res["heads"], "eap": None if no_grad else eap, "path": pp,
                       "faithfulness": f, "acdc": a}
    _RUNS[key] = out
    return out


def _compare(a: dict, b: dict, exact: bool):
    assert set(a) == set(b)
    for k in a:
        if k == "_records":
            continue
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_custom_logit_difference_gives_the_default_results_bit_for_bit(small, pairs, fixed):
    default = run_all(small, pairs, fixed, "logit_diff")
    _compare(run_all(small, pairs, fixed, CUSTOM["logit_diff"]), default, exact=True)
    assert default["_records"]["attr"].metric == "logit_diff"
    assert CUSTOM["logit_diff"].name == "hand_logit_diff"
    assert run_all(small, pairs, fixed, CUSTOM["logit_diff"])["_records"]["attr"].metric == "hand_logit_diff"


@pytest.mark.parametrize("name", ["kl_div", "prob", "logprob"])
def test_every_analysis_takes_the_builtin_and_an_equal_hand_written_custom_metric(small, pairs, fixed, name):
    builtin = run_all(small, pairs, fixed, name)
    _compare(run_all(small, pairs, fixed, CUSTOM[name]), builtin, exact=False)
    default = run_all(small, pairs, fixed, "logit_diff")
    for k in ("attr_heads", "eap_ig", "path_patch", "path_sweep", "circuit_metrics", "curve", "acdc_effects"):
        assert not torch.allclose(builtin[k], default[k], atol=1e-4), f"{k} ignores metric={name!r}"
    rec = builtin["_records"]
    assert rec["attr"].metric == name and METRICS[name].label in rec["attr"].metric_description
    assert rec["eap"].metric == METRICS[name].to_dict() and rec["path"].metric == name
    assert rec["faithfulness"].metric["name"] == name and rec["acdc"].metric_info["name"] == name
    assert rec["acdc"].circuit.provenance["metric"]["name"] == name


def test_accuracy_runs_in_the_exact_analyses(small, pairs, fixed):
    """Answers chosen as the clean run's top-1 token: clean accuracy 1, corrupted lower, so everything normalises."""
    with torch.no_grad():
        clean_top = small.bridge(pairs.clean_tokens)[torch.arange(len(pairs)), pairs.end].argmax(-1)
        corr_top = small.bridge(pairs.corrupted_tokens)[torch.arange(len(pairs)), pairs.end].argmax(-1)
    assert bool((clean_top != corr_top).any())
    answers = torch.stack([clean_top, corr_top], 1)
    answers[answers[:, 0] == answers[:, 1], 1] = (clean_top[answers[:, 0] == answers[:, 1]] + 1) % small.info.d_vocab
    acc_pairs = dataclasses.replace(pairs, answers=answers)
    acc = run_all(small, acc_pairs, fixed, "accuracy")
    assert set(torch.unique(acc["circuit_metrics"]).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(acc["circuit_metrics"][0], torch.ones(len(pairs)))  # the full model
    torch.testing.assert_close(acc["circuit_metrics"][1], (corr_top == clean_top).float())  # = the corrupted run
    assert acc["_records"]["path"].metric == "accuracy" and acc["_records"]["acdc"].metric_info["name"] == "accuracy"


# -- independent checks -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny3():
    return tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)


@pytest.fixture(scope="module")
def pairs3(tiny3):
    return random_pair_dataset(tiny3, batch=3, n_pos=7, changed=(2, 5), seed=3)


def _end_logits(logits, ds):
    return logits[torch.arange(len(ds)), ds.end]


def hand_attribution_heads(model, ds, direction, which):
    """(source - target) . d mean M / d z on the target run, per [layer, head], from raw hooks and autograd."""
    bridge = model.bridge
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.info.n_layers)]
    c, k = ds.clean_tokens, ds.corrupted_tokens
    source_tokens, target_tokens = (c, k) if direction == "denoising" else (k, c)
    with torch.no_grad():
        clean_logp = F.log_softmax(_end_logits(bridge(c), ds), -1)
        corr_logp = F.log_softmax(_end_logits(bridge(k), ds), -1)
        _, source_cache = bridge.run_with_cache(source_tokens, names_filter=lambda n: n in names)
        _, target_cache = bridge.run_with_cache(target_tokens, names_filter=lambda n: n in names)

    def m(logp):  # per-prompt metric from log-probabilities at END
        if which == "kl_div":
            return F.kl_div(logp, clean_logp, log_target=True, reduction="none").sum(-1)
        return logp.exp()[torch.arange(len(ds)), ds.answers[:, 0]]

    probes = {n: torch.zeros_like(target_cache[n], requires_grad=True) for n in names}
    hooks = [(n, lambda act, hook, p=probes[n]: act + p) for n in names]
    logits = bridge.run_with_hooks(target_tokens, fwd_hooks=hooks)
    grads = torch.autograd.grad(m(F.log_softmax(_end_logits(logits, ds), -1)).mean(), [probes[n] for n in names])
    cells = torch.stack([((source_cache[n] - target_cache[n]) * g).sum(dim=(0, 1, 3)) for n, g in zip(names, grads)])
    gap = float(m(clean_logp).mean() - m(corr_logp).mean())
    return cells / gap, gap


@pytest.mark.parametrize("which", ["kl_div", "prob"])
def test_attribution_patching_with_kl_and_prob_equals_a_hand_gradient(tiny3, pairs3, which):
    res = attribution_sweep(tiny3, pairs3, "heads", metric=which)
    hand, gap = hand_attribution_heads(tiny3, pairs3, "denoising", which)
    assert abs(gap) > 1e-4
    torch.testing.assert_close(res.values, hand, rtol=1e-3, atol=1e-5)
    assert res.baselines["clean"] - res.baselines["corrupted"] == pytest.approx(gap, rel=1e-4)
    if which == "kl_div":
        assert res.baselines["clean"] == pytest.approx(0.0, abs=1e-6)


def test_attribution_noising_with_kl_is_zero_at_the_clean_minimum(tiny3, pairs3):
    """The gradient of KL(clean || run) on the clean run vanishes: noising estimates are all ~0 (module docstring),
    while probability's are not."""
    kl = attribution_sweep(tiny3, pairs3, "heads", direction="noising", metric="kl_div")
    prob = attribution_sweep(tiny3, pairs3, "heads", direction="noising", metric="prob")
    assert float(kl.values.abs().max()) < 1e-4 * float(prob.values.abs().max()) + 1e-6
    assert float(prob.values.abs().max()) > 1e-3


def test_circuit_evaluation_with_prob_and_kl_equals_runs_built_another_way(small, pairs):
    runner = GraphRunner(small)
    g = runner.graph
    bridge = small.bridge
    input_only = g.mask(["input->logits"])
    kept = torch.stack([g.valid, torch.zeros_like(g.valid), input_only])
    with torch.no_grad():
        clean = _end_logits(bridge(pairs.clean_tokens), pairs)
        corrupted = _end_logits(bridge(pairs.corrupted_tokens), pairs)
        embed = "blocks.0.hook_resid_pre"
        _, clean_cache = bridge.run_with_cache(pairs.clean_tokens, names_filter=lambda n: n == embed)
        _, corr_cache = bridge.run_with_cache(pairs.corrupted_tokens, names_filter=lambda n: n == embed)
        shift = clean_cache[embed] - corr_cache[embed]
        # input->logits alone: the final residual stream is the corrupted one with the clean embeddings instead
        only = _end_logits(bridge.run_with_hooks(pairs.corrupted_tokens,
                                                 fwd_hooks=[("ln_final.hook_in", lambda act, hook: act + shift)]),
                           pairs)
    prob = lambda lg: lg.softmax(-1)[torch.arange(len(pairs)), pairs.answers[:, 0]]  # noqa: E731
    out = circuit_metrics(small, pairs, kept, source="corrupted", metric="prob")
    torch.testing.assert_close(out, torch.stack([prob(clean), prob(corrupted), prob(only)]), rtol=1e-4, atol=1e-6)

    kl = lambda lg: (clean.softmax(-1) * (clean.log_softmax(-1) - lg.log_softmax(-1))).sum(-1)  # noqa: E731
    out_kl = circuit_metrics(small, pairs, kept, source="corrupted", metric="kl_div")
    torch.testing.assert_close(out_kl, torch.stack([kl(clean), kl(corrupted), kl(only)]), rtol=1e-4, atol=1e-6)

    f = faithfulness(small, pairs, input_only, source="corrupted", metric="prob")
    expected = float((prob(only).mean() - prob(corrupted).mean()) / (prob(clean).mean() - prob(corrupted).mean()))
    # input->logits alone barely moves the probability on this model (expected ~0 up to float32 rounding of the
    # numerator, which depends on the thread count): an absolute tolerance of 1e-5 on a ratio of order 1
    assert f.faithfulness == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert f.full_metric == pytest.approx(float(prob(clean).mean()), rel=1e-5)
    assert f.metric["name"] == "prob"


def test_eap_with_kl_vanishes_at_the_clean_run_but_eap_ig_does_not(tiny3, pairs3):
    eap = eap_scores(tiny3, pairs3, metric="kl_div", progress=False)
    ig = eap_scores(tiny3, pairs3, method="eap-ig", steps=4, metric="kl_div", progress=False)
    ld = eap_scores(tiny3, pairs3, progress=False)
    assert eap.clean_metric == pytest.approx(0.0, abs=1e-7) and eap.corrupted_metric > 1e-3
    assert float(ig.scores.abs().max()) > 1e-3
    assert float(eap.scores.abs().max()) < 1e-5 * float(ig.scores.abs().max())
    assert float(ld.scores.abs().max()) > 1e-2  # the same edges under the logit difference are far from 0


@pytest.mark.parametrize("metric", ["kl_div", "prob", "logprob", CUSTOM["kl_div"]], ids=str)
def test_eap_ig_with_one_step_is_eap_for_any_metric(small, pairs, metric):
    eap = eap_scores(small, pairs, metric=metric, progress=False)
    ig1 = eap_scores(small, pairs, method="eap-ig", steps=1, metric=metric, progress=False)
    torch.testing.assert_close(ig1.scores, eap.scores, rtol=1e-5, atol=1e-9)
    assert ig1.steps == 1 and ig1.metric == eap.metric


def test_acdc_with_kl_keeps_exactly_the_edges_above_threshold(small, pairs):
    tau = 0.005
    res = acdc(small, pairs, tau, metric="kl_div", progress=False)
    runner = GraphRunner(small)
    g = runner.graph
    src = corrupted_source(runner, pairs)
    assert res.full_metric == pytest.approx(0.0, abs=1e-6)  # the full model against itself
    assert res.complete and 0 < res.circuit.n_edges < g.n_edges
    # the reported KL is the exact KL of the returned circuit
    again = circuit_metrics(runner, pairs, res.kept, source=src, metric="kl_div").mean()
    assert float(again) == pytest.approx(res.metric, abs=1e-6)
    tested = ~torch.isnan(res.effects)
    assert bool((res.effects[tested & res.kept].abs() >= tau).all())
    assert bool((res.effects[tested & ~res.kept].abs() < tau).all())
    # the first receiver is tested against the full model: its effects are single-edge KLs (built by hand here)
    r = g.receiver_index("logits")
    for s in (0, g.n_senders - 1):
        m = g.valid.clone()
        m[s, r] = False
        exact = circuit_metrics(runner, pairs, m, source=src, metric=CUSTOM["kl_div"]).mean()
        assert float(res.effects[s, r]) == pytest.approx(float(exact), abs=1e-6)
    c = Circuit.from_dict(json.loads(json.dumps(res.circuit.to_dict())))
    assert c.metric == METRICS["kl_div"].to_dict() == res.metric_info


def test_results_record_the_metric_and_circuits_keep_it_through_json(small, pairs, tmp_path):
    scores = eap_scores(small, pairs, method="eap-ig", steps=2, metric="prob", progress=False)
    circuit = circuit_from_scores(scores, n_edges=5)
    path = circuit.save(tmp_path / "c.json")
    back = Circuit.load(path)
    assert back == circuit and back.metric["name"] == "prob" and back.metric["label"] == METRICS["prob"].label
    assert "probability" in circuit_payload(back)["value_label"]
    old = Circuit.from_dict({**circuit.to_dict(), "provenance": {"method": "eap"}})  # saved before metrics
    assert old.metric is None and circuit_payload(old)["value_label"] == "edge attribution score (logits)"
    curve = faithfulness_curve(small, pairs, scores, [2, 5], metric="prob")
    assert curve.metric["name"] == "prob"
    pp = path_patch(small, pairs, (0, 1), "logits", metric="logprob")
    d = json.loads(json.dumps(pp.to_dict()))
    assert d["metric"] == "logprob" and d["patched_metric"] == pytest.approx(pp.patched_logit_diff)


def test_agreement_refuses_results_of_different_metrics(small, pairs):
    attr = attribution_sweep(small, pairs, "heads")
    other = dataclasses.replace(attr, metric="kl_div")
    with pytest.raises(AgreementError, match="metric"):
        agreement(other, attr)
    assert agreement(attr, attr).metric == "logit_diff"


def test_agreement_report_passes_the_metric_to_both_sweeps(small, pairs):
    rep = agreement_report(small, pairs, "heads", metric="prob")
    assert rep.metric == "prob" and rep.n == small.info.n_layers * small.info.n_heads


# -- errors before any work ---------------------------------------------------------------------------------------
@pytest.fixture
def passes(small, monkeypatch):
    """Counts forward passes (patched ones apart) and backward passes made by the analyses."""
    log = {"passes": 0, "patched": 0, "backward": 0}
    backend_run, runner_run, grad = small.run, GraphRunner.run, torch.autograd.grad

    def count_backend(*args, **kwargs):
        log["passes"] += 1
        log["patched"] += bool(kwargs.get("interventions"))
        return backend_run(*args, **kwargs)

    def count_runner(self, *args, **kwargs):
        log["passes"] += 1
        ablate = kwargs.get("ablate")
        log["patched"] += bool((ablate is not None and bool(ablate.any())) or kwargs.get("input_embed") is not None)
        return runner_run(self, *args, **kwargs)

    def count_grad(*args, **kwargs):
        log["backward"] += 1
        return grad(*args, **kwargs)

    monkeypatch.setattr(small, "run", count_backend)
    monkeypatch.setattr(GraphRunner, "run", count_runner)
    monkeypatch.setattr(torch.autograd, "grad", count_grad)
    return log


def _analyses(small, pairs, fixed):
    circuit, scores = fixed
    g = GraphRunner(small).graph
    q = head_inputs([(1, 0)], "q")
    return {
        "attribution_patching": lambda m: attribution_patching(small, pairs, ["heads"], metric=m),
        "attribution_sweep": lambda m: attribution_sweep(small, pairs, "mlp_out", direction="noising", metric=m),
        "eap": lambda m: eap_scores(small, pairs, batch_size=2, metric=m, progress=False),
        "eap-ig": lambda m: eap_scores(small, pairs, method="eap-ig", batch_size=2, metric=m, progress=False),
        "path_patch": lambda m: path_patch(small, pairs, (0, 1), q, metric=m),
        "path_patching_sweep": lambda m: path_patching_sweep(small, pairs, "logits", metric=m, progress=False),
        "circuit_metrics": lambda m: circuit_metrics(small, pairs, g.valid, metric=m),
        "faithfulness": lambda m: faithfulness(small, pairs, circuit, metric=m),
        "faithfulness_curve": lambda m: faithfulness_curve(small, pairs, scores, [4], metric=m),
        "minimality": lambda m: minimality(small, pairs, circuit, metric=m),
        "completeness": lambda m: completeness(small, pairs, circuit, metric=m),
        "acdc": lambda m: acdc(small, pairs, 0.1, receivers=["logits"], metric=m, progress=False),
    }


GRADIENT = ("attribution_patching", "attribution_sweep", "eap", "eap-ig")


@pytest.mark.parametrize("analysis", GRADIENT)
def test_accuracy_is_refused_by_gradient_methods_before_any_pass(small, pairs, fixed, passes, analysis):
    with pytest.raises(MetricError, match="piecewise constant"):
        _analyses(small, pairs, fixed)[analysis]("accuracy")
    assert passes == {"passes": 0, "patched": 0, "backward": 0}


def test_agreement_report_refuses_accuracy_before_any_pass(small, pairs, passes):
    with pytest.raises(MetricError, match="piecewise constant"):
        agreement_report(small, pairs, "heads", metric="accuracy")
    assert passes["passes"] == 0


def wrong_shape(logits, answers, reference):
    return logits[:, :2]


def nan_metric(logits, answers, reference):
    return hand_logit_diff(logits, answers, reference) * float("nan")


def undeclared_reference(logits, answers, reference):  # reads the reference without needs_reference=True
    return (reference.exp() * logits).sum(-1)


def detached(logits, answers, reference):
    return hand_logit_diff(logits, answers, reference).detach()


BROKEN = {"wrong_shape": (wrong_shape, r"shape \(\d+,\)"), "nan": (nan_metric, "non-finite"),
          "undeclared_reference": (undeclared_reference, "needs_reference=True")}


@pytest.mark.parametrize("broken", sorted(BROKEN))
@pytest.mark.parametrize("analysis", ["attribution_patching", "attribution_sweep", "eap", "eap-ig", "path_patch",
                                      "path_patching_sweep", "circuit_metrics", "faithfulness", "faithfulness_curve",
                                      "minimality", "completeness", "acdc"])
def test_a_broken_custom_metric_fails_before_any_patched_or_backward_pass(small, pairs, fixed, passes, analysis,
                                                                          broken):
    fn, match = BROKEN[broken]
    with pytest.raises(MetricError, match=match):
        _analyses(small, pairs, fixed)[analysis](fn)
    assert passes["patched"] == 0 and passes["backward"] == 0
    assert passes["passes"] <= 2  # the baseline runs (or the one unablated check) at most


@pytest.mark.parametrize("analysis", GRADIENT)
def test_a_custom_metric_without_gradient_fails_before_the_backward_pass(small, pairs, fixed, passes, analysis):
    with pytest.raises(MetricError, match="detached"):
        _analyses(small, pairs, fixed)[analysis](detached)
    assert passes["backward"] == 0 and passes["patched"] == 0


def test_a_declared_reference_reaches_custom_metrics_everywhere(small, pairs, fixed):
    """A custom metric declared with needs_reference=True gets Float[rows, d_vocab] clean log-probabilities."""
    seen = []

    def record(logits, answers, reference):
        seen.append(None if reference is None else tuple(reference.shape))
        return hand_kl(logits, answers, reference)

    m = Metric.custom(record, needs_reference=True)
    for name, run in _analyses(small, pairs, fixed).items():
        seen.clear()
        run(m)
        assert seen and all(s is not None and s[1] == small.info.d_vocab for s in seen), name
