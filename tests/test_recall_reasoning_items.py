"""Recall and reasoning items on the embedded model's tokenizer: single-token answers checked per model, aligned
counterparts, the counts per family adding up, the filter keeping exactly what the model answers correctly (checked
against TransformerLens's own forward pass), users' own families."""

import pytest
import torch

from attnlab.tasks.recall_reasoning import (
    FAMILIES,
    REASONING_FAMILIES,
    RECALL_FAMILIES,
    custom_family,
    filter_correct,
    recall_reasoning_items,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def items(embedded_model):
    return recall_reasoning_items(embedded_model, seed=0)


def test_at_least_four_recall_and_three_reasoning_families():
    assert len(RECALL_FAMILIES) >= 4 and len(REASONING_FAMILIES) >= 3
    for fam in FAMILIES.values():
        assert len({it.prompt for it in fam.items}) == len(fam.items)  # no duplicate prompts
        assert all(it.answer != it.distractor for it in fam.items)


def test_every_answer_and_distractor_is_one_token_and_counts_add_up(embedded_model, items):
    tok = embedded_model.tokenizer
    for i in range(len(items)):
        for j in range(2):
            # decoding the id and re-encoding gives back the one id: a whole word with its leading space
            text = tok.decode([int(items.answers[i, j])])
            assert embedded_model.encode(text) == [int(items.answers[i, j])]
    for fam, c in items.counts.items():
        assert c["built"] == len(FAMILIES[fam].items)
        assert c["built"] == c["dropped_multitoken"] + c["dropped_no_counterpart"] + c["kept"]
        assert items.families.count(fam) == c["kept"]
    # the embedded tokenizer splits some capitals (the counts say which were dropped), and keeps most items
    assert items.counts["capital_of"]["dropped_multitoken"] > 0
    assert len(items) > 0.8 * sum(len(f.items) for f in FAMILIES.values())


def test_prompts_and_counterparts_are_aligned_and_differ(embedded_model, items):
    for i in range(len(items)):
        end = int(items.end[i])
        ids = embedded_model.to_tokens([items.prompts[i]])[0]
        assert torch.equal(items.tokens[i, :end + 1], ids)
        cids = embedded_model.to_tokens([items.corrupted_prompts[i]])[0]
        assert torch.equal(items.corrupted_tokens[i, :end + 1], cids)  # same length as the clean prompt
        assert items.corrupted_prompts[i] != items.prompts[i]
        assert FAMILIES[items.families[i]].kind == items.kinds[i]


def test_filter_keeps_exactly_the_items_answered_correctly(embedded_model, items):
    bridge = embedded_model.bridge
    with torch.no_grad():
        logits = torch.stack([bridge(items.tokens[i:i + 1, :int(items.end[i]) + 1])[0, -1] for i in range(len(items))])
    top1 = logits.argmax(-1) == items.answers[:, 0]
    above = logits.gather(-1, items.answers)[:, 0] > logits.gather(-1, items.answers)[:, 1]
    for criterion, ok in (("top1", top1), ("above_distractor", above)):
        kept = filter_correct(embedded_model, items, criterion=criterion)
        assert kept.prompts == [p for p, k in zip(items.prompts, ok.tolist()) if k]
        for fam, c in kept.counts.items():
            assert c["kept"] + c["dropped_wrong"] == items.counts[fam]["kept"]
        assert kept.metadata["filter"] == criterion
    assert int(above.sum()) >= int(top1.sum())
    # what FACTS found by hand: the capital of France is recalled, and the nonce two-hop capital chain is followed
    kept = filter_correct(embedded_model, items, criterion="top1")
    assert "The capital of France is" in kept.prompts
    assert kept.counts["capital_chain"]["kept"] > 0


def test_own_family_from_triples(embedded_model):
    mine = custom_family("colour_of", "recall", [("The colour of the sky is", " blue", " green"),
                                                 ("The colour of the grass is", " green", " blue"),
                                                 ("The colour of a ripe tomato is", " red", " blue")])
    items = recall_reasoning_items(embedded_model, ["syllogism"], extra=[mine])
    assert items.families.count("colour_of") == 2
    # the tomato has no item of its length to be paired with: dropped and counted
    assert items.counts["colour_of"]["dropped_no_counterpart"] == 1
    rows = [i for i, f in enumerate(items.families) if f == "colour_of"]
    assert sorted(items.corrupted_prompts[i] for i in rows) == sorted(items.prompts[i] for i in rows)
    assert items.metadata["families"]["colour_of"]["kind"] == "recall"


def test_n_per_family_and_seed(embedded_model):
    a = recall_reasoning_items(embedded_model, n_per_family=3, seed=1)
    b = recall_reasoning_items(embedded_model, n_per_family=3, seed=1)
    c = recall_reasoning_items(embedded_model, n_per_family=3, seed=2)
    assert a.prompts == b.prompts and a.prompts != c.prompts
    assert all(a.families.count(f) <= 3 for f in FAMILIES)
