"""The recall-versus-reasoning workbench refuses bad input before any ablated pass: a family whose answers are several
tokens, no items left after filtering, a granularity the model does not have, an unknown component, items of another
tokenizer, bad ablation, bootstrap, correction and control settings, a selectivity baseline of 0."""

import pytest
import torch

from attnlab.dissociation import dissociation_sweep
from attnlab.errors import ArgumentError, ArgumentTypeError, DatasetError, MetricError, SiteError
from attnlab.models import tiny_model
from attnlab.tasks.recall_reasoning import (
    RecallReasoningItems,
    custom_family,
    filter_correct,
    recall_reasoning_items,
)

pytestmark = pytest.mark.integration


def toy_items(model, n=4, n_pos=6, seed=0) -> RecallReasoningItems:
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(1, model.info.d_vocab, (2 * n, n_pos), generator=g)
    cor = torch.randint(1, model.info.d_vocab, (2 * n, n_pos), generator=g)
    ans = torch.randint(1, model.info.d_vocab, (2 * n, 2), generator=g)
    return RecallReasoningItems.from_tokens(tok, cor, ans, torch.full((2 * n,), n_pos - 1),
                                            ["recall"] * n + ["reasoning"] * n, ["a"] * n + ["b"] * n)


@pytest.fixture
def no_passes(monkeypatch):
    """Make every forward pass fail: a check that runs after any pass would then raise this, not its own error."""
    def boom(*a, **k):
        raise AssertionError("a forward pass ran before the check")

    def install(model):
        monkeypatch.setattr(model, "run", boom)
        monkeypatch.setattr(model, "run_many", boom)
    return install


def test_a_family_whose_answers_split_is_dropped_and_counted(embedded_model):
    fam = custom_family("long_names", "reasoning", [
        ("Anna met Bartholomew. Then Anna waved at", " Bartholomew", " Anna"),
        ("Ben met Maximilianus. Then Ben waved at", " Maximilianus", " Ben"),
    ])
    with pytest.raises(DatasetError, match="no reasoning items are left") as e:
        recall_reasoning_items(embedded_model, ["capital_of"], extra=[fam])
    assert "'dropped_multitoken': 2" in str(e.value)
    items = recall_reasoning_items(embedded_model, ["capital_of", "syllogism"], extra=[fam])
    assert items.counts["long_names"]["dropped_multitoken"] == 2 and "long_names" not in items.families


def test_no_items_left_after_filtering(embedded_model):
    wrong = custom_family("wrong_facts", "recall", [("The capital of France is", " banana", " Paris"),
                                                   ("The capital of Italy is", " banana", " Rome")],
                          corrupted=["The capital of Spain is", "The capital of Japan is"])
    items = recall_reasoning_items(embedded_model, ["syllogism"], extra=[wrong])
    for criterion in ("top1", "above_distractor"):
        with pytest.raises(DatasetError, match="no recall item is answered correctly") as e:
            filter_correct(embedded_model, items, criterion=criterion)
        assert "'dropped_wrong': 2" in str(e.value)
    with pytest.raises(DatasetError, match="criterion must be"):
        filter_correct(embedded_model, items, criterion="majority")


def test_custom_family_checks_its_triples():
    with pytest.raises(DatasetError, match="triple"):
        custom_family("x", "recall", [("prompt", " a")])
    with pytest.raises(DatasetError, match="answer and distractor are both"):
        custom_family("x", "recall", [("prompt", " a", " a")])
    with pytest.raises(DatasetError, match="built-in family"):
        custom_family("capital_of", "recall", [("prompt", " a", " b")])
    with pytest.raises(DatasetError, match="kind must be"):
        custom_family("x", "memory", [("prompt", " a", " b")])


def test_unknown_family_and_model_without_tokenizer(embedded_model):
    with pytest.raises(DatasetError, match="unknown family 'capitals'"):
        recall_reasoning_items(embedded_model, ["capitals"])
    with pytest.raises(ArgumentTypeError, match="load it with attnlab.load_model"):
        recall_reasoning_items("smollm2-135m")


def test_a_granularity_the_model_does_not_have(no_passes):
    model = tiny_model(n_layers=2, n_heads=2, attn_only=True, seed=0)
    items = toy_items(model)
    no_passes(model)
    for g in ("mlp", "blocks"):
        with pytest.raises(SiteError, match="attention-only"):
            dissociation_sweep(model, items, granularity=g, progress=False)
    with pytest.raises(SiteError, match="attention-only"):
        dissociation_sweep(model, items, granularity="components", components=["MLP0"], progress=False)
    with pytest.raises(SiteError, match="'granularity' must be one of"):
        dissociation_sweep(model, items, granularity="neurons", progress=False)


@pytest.mark.parametrize("components,fragment", [
    (["L9H0"], "has layers 0..1"),
    (["L0H7"], "heads 0..1"),
    (["FOO3"], "unknown component 'FOO3'"),
    (["L0H1+L0H1"], "names a part twice"),
    (["L0H1", "L0H1"], "given twice"),
    ([], "needs components="),
    ([3.5], "a component is a name"),
])
def test_an_unknown_component_in_a_user_given_set(no_passes, components, fragment):
    model = tiny_model(n_layers=2, n_heads=2, seed=0)
    items = toy_items(model)
    no_passes(model)
    with pytest.raises(SiteError, match=fragment):
        dissociation_sweep(model, items, granularity="components", components=components, progress=False)


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"ablation": "gaussian"}, ArgumentError, "'ablation' must be one of"),
    ({"n_bootstrap": 10}, ArgumentError, "n_bootstrap"),
    ({"level": 1.5}, ArgumentError, "'level'"),
    ({"correction": "bonferroni"}, ArgumentError, "'correction' must be one of"),
    ({"alpha": 0}, ArgumentError, "'alpha'"),
    ({"n_control_draws": -1}, ArgumentError, "n_control_draws"),
    ({"control_size": 0}, ArgumentError, "control_size"),
    ({"seed": -2}, ArgumentError, "non-negative"),
    ({"metrics": ()}, ArgumentError, "at least one metric"),
    ({"metrics": ("logit_diff", "logit_diff")}, ArgumentError, "duplicates"),
    ({"components": ["L0H0"]}, SiteError, "is for granularity='components'"),
    ({"memory_budget_mb": float("nan")}, ArgumentError, "budget"),
])
def test_bad_settings_before_any_pass(no_passes, kwargs, error, fragment):
    model = tiny_model(n_layers=2, n_heads=2, seed=0)
    items = toy_items(model)
    no_passes(model)
    with pytest.raises(error, match=fragment):
        dissociation_sweep(model, items, progress=False, **kwargs)


def test_items_of_another_tokenizer_and_not_items(embedded_model):
    items = recall_reasoning_items(embedded_model, ["capital_of", "syllogism"], n_per_family=3)
    other = tiny_model(n_layers=2, n_heads=2, d_vocab=embedded_model.info.d_vocab, seed=0)
    with pytest.raises(DatasetError, match="tokenised by 'smollm2-135m'"):
        dissociation_sweep(other, items, progress=False)
    with pytest.raises(ArgumentTypeError, match="needs RecallReasoningItems"):
        dissociation_sweep(other, [("The capital of France is", " Paris", " Rome")], progress=False)


def test_fewer_than_two_items_of_a_kind():
    model = tiny_model(n_layers=2, n_heads=2, seed=0)
    items = toy_items(model).subset([0, 1, 4])
    with pytest.raises(ArgumentError, match="at least 2 reasoning items"):
        dissociation_sweep(model, items, progress=False)


def test_a_selectivity_baseline_of_zero_before_the_ablated_passes(monkeypatch):
    model = tiny_model(n_layers=2, n_heads=2, seed=0)
    items = toy_items(model)
    items = RecallReasoningItems.from_tokens(items.tokens, items.corrupted_tokens,
                                             items.answers[:, :1].repeat(1, 2), items.end, items.kinds, items.families)
    calls = []
    monkeypatch.setattr(model, "run_many", lambda specs: calls.append(1) or iter(()))
    with pytest.raises(MetricError, match="clean recall baseline of 'logit_diff' is 0"):
        dissociation_sweep(model, items, metrics=("logit_diff",), progress=False)
    assert not calls
