"""Tests of the Colored Objects task (attnlab.tasks.colored_objects): prompt format, token alignment, answers,
positions, seeding, single-token filtering, input checks and the accuracy / logit-difference baselines.

Two tokenizers: the embedded SmolLM2-135M's (a real BPE, in which mug, leash and bracelet are several tokens), and
``WordBackend``, a test double whose tokenizer is one token per word except for the words it is told to split, so
that filtering and error paths can be forced.
"""

import dataclasses
import re
from collections.abc import Sequence

import pytest
import torch

from attnlab.backends.base import Backend, ModelInfo, RunOutput
from attnlab.errors import DatasetError, TokenizationError
from attnlab.tasks.colored_objects import (
    COLORED_OBJECTS,
    COLORS,
    PHRASES,
    SURFACES,
    colored_objects_baselines,
    colored_objects_dataset,
    colored_objects_templates,
    single_token_colors,
)

QUESTION = re.compile(
    r"Q: On the (table|desk|floor), (there is|you see|I see) an? (\w+) (\w+), an? (\w+) (\w+), and an? (\w+) (\w+)\. "
    r"What color is the (\w+)\?\nA:"
)


class WordBackend(Backend):
    """One token per word / punctuation mark (with its leading space), except words in ``split``: two tokens.
    ``logits_fn(tokens) -> Float[batch, d_vocab]`` plays the model for :func:`colored_objects_baselines`."""

    def __init__(self, split: Sequence[str] = (), logits_fn=None) -> None:
        self.split = set(split)  # case-sensitive: "Black" splits the label only
        self.vocab: dict[str, int] = {"<bos>": 0}
        self.logits_fn = logits_fn
        self.tokenizer = self
        self.info = ModelInfo(name="word-level", n_layers=1, n_heads=1, n_kv_heads=1, d_model=1, d_head=1, d_mlp=1,
                              d_vocab=4096, n_ctx=512, backend="test", family="test")

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def encode(self, text: str) -> list[int]:
        out = []
        for piece in re.findall(r" ?[A-Za-z]+| ?[^A-Za-z ]", text):
            if piece.strip() in self.split:
                out += [self._id(piece[:2]), self._id(piece[2:])]
            else:
                out.append(self._id(piece))
        return out

    def to_tokens(self, texts, prepend_bos=None):
        rows = [[0] + self.encode(t) for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise TokenizationError("different lengths")
        return torch.tensor(rows)

    def to_str_tokens(self, tokens):
        inverse = {v: k for k, v in self.vocab.items()}
        return [inverse[int(t)] for t in tokens]

    def run(self, tokens=None, *, logits_at=None, **kwargs) -> RunOutput:
        return RunOutput(logits=self.logits_fn(tokens))


class TokenizerBackend(WordBackend):
    """A Hugging Face tokenizer behind the Backend interface (BOS first, like the real backend); no model."""

    def __init__(self, tokenizer, name: str) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.info = ModelInfo(name=name, n_layers=1, n_heads=1, n_kv_heads=1, d_model=1, d_head=1, d_mlp=1,
                              d_vocab=len(tokenizer), n_ctx=8192, backend="test", family="test")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def to_tokens(self, texts, prepend_bos=None):
        rows = [[self.tokenizer.bos_token_id] + self.encode(t) for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise TokenizationError("different lengths")
        return torch.tensor(rows)

    def to_str_tokens(self, tokens):
        return [self.tokenizer.decode([int(t)]) for t in tokens]


@pytest.fixture(scope="module")
def smol():
    """The embedded SmolLM2-135M-Instruct's tokenizer (no weights are loaded)."""
    from transformers import AutoTokenizer

    from attnlab.models.embedded import embedded_checkpoint

    return TokenizerBackend(AutoTokenizer.from_pretrained(embedded_checkpoint(progress=False)), "SmolLM2-135M")


@pytest.fixture(scope="module")
def dataset(smol):
    return colored_objects_dataset(smol, 24, seed=1)


# -- constants -------------------------------------------------------------------------------------------------------
def test_word_lists_and_templates_follow_merullo_et_al():
    assert len(COLORS) == len(set(COLORS)) == 8
    assert len(COLORED_OBJECTS) == len(set(COLORED_OBJECTS)) == 17
    templates = colored_objects_templates()
    assert len(templates) == 9 and set(templates.values()) == {(s, p) for s in SURFACES for p in PHRASES}


# -- prompts, answers, alignment -------------------------------------------------------------------------------------
def test_prompts_have_one_solved_example_and_the_question(dataset):
    for clean, corrupted, ans in zip(dataset.clean_prompts, dataset.corrupted_prompts, dataset.answers.tolist()):
        example, question = clean.split("\n", 2)[:2], clean.split("\n", 2)[2]
        ex = QUESTION.fullmatch(example[0] + "\nA:")
        assert ex is not None and example[1].startswith("A: ")
        ex_colors, ex_objects = ex.group(3, 5, 7), ex.group(4, 6, 8)
        assert example[1] == "A: " + ex_colors[ex_objects.index(ex.group(9))].capitalize()
        q, k = QUESTION.fullmatch(question), QUESTION.fullmatch(corrupted.split("\n", 2)[2])
        colors, objects = q.group(3, 5, 7), q.group(4, 6, 8)
        assert len(set(colors)) == 3 and len(set(objects)) == 3
        assert k.group(*range(1, 9)) == q.group(*range(1, 9))  # the counterfactual changes only the question
        assert q.group(9) in objects and k.group(9) in objects and q.group(9) != k.group(9)
        # answers: the colour labels of the asked objects, read off the text independently of the dataset code
        clean_colour, cf_colour = colors[objects.index(q.group(9))], colors[objects.index(k.group(9))]
        assert ans == [dataset.metadata["label_ids"][clean_colour], dataset.metadata["label_ids"][cf_colour]]
        # the example never gives away the clean or counterfactual answer
        assert example[1][3:].lower() not in (clean_colour, cf_colour)
        for colour, obj in zip(colors, objects):
            assert f"{'an' if colour == 'orange' else 'a'} {colour} {obj}" in question


def test_clean_and_counterfactual_differ_only_at_the_queried_object(dataset, smol):
    rows = torch.arange(len(dataset))
    for i in range(len(dataset)):
        differ = torch.nonzero(dataset.clean_tokens[i] != dataset.corrupted_tokens[i]).flatten().tolist()
        assert differ == [int(dataset.positions["QOBJ"][i])]
        assert smol.to_tokens([dataset.clean_prompts[i]])[0].tolist() == dataset.clean_tokens[i].tolist()
    clean, corrupted, pos = dataset.clean_tokens, dataset.corrupted_tokens, dataset.positions
    # the queried object token is the listed object QO; the counterfactual asks about the object after CFCOL
    assert torch.equal(clean[rows, pos["QOBJ"]], clean[rows, pos["QO"]])
    assert torch.equal(corrupted[rows, pos["QOBJ"]], clean[rows, pos["CFCOL"] + 1])
    assert bool((pos["QCOL"] != pos["CFCOL"]).all()) and bool((dataset.answers[:, 0] != dataset.answers[:, 1]).all())
    assert bool((pos["END"] == dataset.n_pos - 1).all())
    assert smol.to_str_tokens(clean[0, -1:]) == [":"]


def test_positions_and_labels_name_the_slots(dataset, smol):
    rows = torch.arange(len(dataset))
    pos, labels, clean = dataset.positions, dataset.position_labels, dataset.clean_tokens
    for k in (1, 2, 3):
        assert labels[int(pos[f"C{k}"][0])] == f"C{k}" and labels[int(pos[f"O{k}"][0])] == f"O{k}"
        colour_words = [smol.to_str_tokens(t.view(1))[0].strip() for t in clean[rows, pos[f"C{k}"]]]
        assert set(colour_words) <= set(COLORS)
    assert labels[int(pos["QOBJ"][0])] == "QOBJ" and labels[-1] == "END" and labels[0] == "BOS"
    assert {"EX_C1", "EX_O3", "EX_QOBJ", "EX_ANS", "SURFACE", "EX_SURFACE", "What", "color"} <= set(labels)
    # the answer label is the capitalised colour at QCOL
    for i in range(len(dataset)):
        colour = smol.to_str_tokens(clean[i, pos["QCOL"][i]].view(1))[0]
        assert smol.encode(colour.replace(colour.strip(), colour.strip().capitalize())) == [int(dataset.answers[i, 0])]


def test_filtering_drops_exactly_the_multi_token_words(smol, dataset):
    dropped = dataset.metadata["dropped_objects"]
    assert dropped and all(len(smol.encode(" " + o)) > 1 for o in dropped)
    assert all(len(smol.encode(" " + o)) == 1 for o in dataset.metadata["objects"])
    assert set(dropped) | set(dataset.metadata["objects"]) == set(COLORED_OBJECTS)
    assert single_token_colors(smol) == list(COLORS) == dataset.metadata["colors"]
    used = {w for p in dataset.clean_prompts + dataset.corrupted_prompts for w in re.findall(r"[a-z]+", p)}
    assert not used & set(dropped)


def test_templates_and_asked_objects_are_balanced(smol):
    ds = colored_objects_dataset(smol, 18, seed=3)
    assert sorted(ds.metadata["prompt_templates"]) == sorted(list(range(9)) * 2)
    assert sorted(ds.metadata["asked"]) == [0] * 6 + [1] * 6 + [2] * 6
    one = colored_objects_dataset(smol, 4, seed=3, templates=[4])
    assert set(one.metadata["prompt_templates"]) == {4}
    assert all(", you see a" in p.split("\n")[2] or ", you see an" in p.split("\n")[2] for p in one.clean_prompts)
    assert all("On the desk" in p.split("\n")[2] for p in one.clean_prompts)


def test_seeded_and_reproducible(smol):
    a, b = colored_objects_dataset(smol, 8, seed=5), colored_objects_dataset(smol, 8, seed=5)
    c = colored_objects_dataset(smol, 8, seed=6)
    assert torch.equal(a.clean_tokens, b.clean_tokens) and torch.equal(a.corrupted_tokens, b.corrupted_tokens)
    assert torch.equal(a.answers, b.answers) and a.clean_prompts == b.clean_prompts
    assert not torch.equal(a.clean_tokens, c.clean_tokens)
    assert a.metadata["seed"] == 5 and a.task == "colored_objects"
    import json

    json.dumps(a.describe())


# -- word-level tokenizer: filtering and errors ----------------------------------------------------------------------
def test_a_word_level_tokenizer_keeps_what_is_single_and_reports_the_rest():
    backend = WordBackend(split=["purple", "Black", "ball", "jug"])
    ds = colored_objects_dataset(backend, 6, seed=0)
    # "Black" splits as a label only: black is dropped because its label is not one token
    assert ds.metadata["dropped_colors"] == ["purple", "black"]
    assert ds.metadata["dropped_objects"] == ["jug", "ball"]
    assert len(ds.metadata["colors"]) == 6 and len(ds.metadata["objects"]) == 15
    # one token per word: BOS, the example (31 tokens: "Q", ":", " On", " the", surface, ",", 2 phrase words, ...,
    # "?", "\n", "A", ":", answer, "\n"), then "Q: On the desk, you see a" puts C1 at 42, QOBJ at 58, END at 62
    assert {k: set(v.tolist()) for k, v in ds.positions.items() if k in ("C1", "O3", "QOBJ", "END")} == {
        "C1": {42}, "O3": {52}, "QOBJ": {58}, "END": {62}}
    assert ds.n_pos == 63 and ds.position_labels[:7] == ["BOS", "Q", ":", "On", "the", "EX_SURFACE", ","]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(n_prompts=0), DatasetError, "'n_prompts' must be an integer >= 1"),
    (dict(n_prompts=True), DatasetError, "'n_prompts'"),
    (dict(n_prompts=4, templates=[9]), DatasetError, r"template indices must be in \[0, 9\)"),
    (dict(n_prompts=4, templates="some"), DatasetError, "'templates'"),
    (dict(n_prompts=4, templates=[]), DatasetError, "must not be empty"),
    (dict(n_prompts=4, colors="red"), DatasetError, "list of words"),
    (dict(n_prompts=4, colors=["red", "blue"]), DatasetError, "at least 3 distinct single-token colours"),
    (dict(n_prompts=4, objects=["pen", "cup", "plate", "bracelet"]), TokenizationError, r"\['bracelet'\]"),
])
def test_bad_arguments_fail_with_a_clear_message(kwargs, error, match):
    backend = WordBackend(split=["bracelet"])
    with pytest.raises(error, match=match):
        colored_objects_dataset(backend, **kwargs)


def test_too_few_single_token_defaults_is_a_clear_error():
    backend = WordBackend(split=[c.capitalize() for c in COLORS[2:]])
    with pytest.raises(DatasetError, match=r"at least 3 distinct single-token colours \(a prompt shows three\); "
                                           r"got 2 \['red', 'orange'\].*dropped as multi-token: \['yellow'"):
        colored_objects_dataset(backend, 4)
    with pytest.raises(DatasetError, match="objects"):
        colored_objects_dataset(WordBackend(split=COLORED_OBJECTS[2:]), 4)


# -- baselines -------------------------------------------------------------------------------------------------------
def test_baselines_count_accuracy_among_labels_and_over_the_vocabulary():
    backend = WordBackend()
    ds = colored_objects_dataset(backend, 8, seed=2)
    labels = torch.tensor(sorted(ds.metadata["label_ids"].values()))
    clean_rows = {tuple(r) for r in ds.clean_tokens.tolist()}

    def logits_fn(tokens):
        out = torch.zeros(tokens.shape[0], backend.info.d_vocab)
        for i, row in enumerate(tokens.tolist()):
            j = next(k for k, r in enumerate(ds.clean_tokens.tolist() + ds.corrupted_tokens.tolist()) if r == row)
            k = j % len(ds)
            clean = tuple(row) in clean_rows
            correct, other = ds.answers[k].tolist() if clean else ds.answers[k].flip(0).tolist()
            # clean prompts 0-5 right (LD +2), 6-7 wrong; every corrupted prompt right among labels (LD -1 on
            # clean answers), but a non-label token wins over the vocabulary on corrupted prompts 0-3
            right = k < 6 or not clean
            out[i, labels] = -1.0
            out[i, correct if right else other] = 1.0 if clean else 0.5
            out[i, other if right else correct] = -1.0 if clean else -0.5
            if not clean and k < 4:
                out[i, backend.info.d_vocab - 1] = 9.0  # an id no word got
        return out

    backend.logits_fn = logits_fn
    b = colored_objects_baselines(backend, ds)
    assert b.n_labels == 8 and b.chance == 1 / 8 and b.n_prompts == 8
    assert b.clean_accuracy == pytest.approx(6 / 8) and b.clean_top1 == pytest.approx(6 / 8)
    assert b.corrupted_accuracy == 1.0 and b.corrupted_top1 == pytest.approx(4 / 8)
    assert b.clean_logit_diff == pytest.approx((6 * 2 - 2 * 2) / 8)
    assert b.corrupted_logit_diff == pytest.approx(-1.0)
    with pytest.raises(DatasetError, match="colored_objects_dataset"):
        colored_objects_baselines(backend, dataclasses.replace(ds, task="ioi"))


@pytest.mark.integration
def test_embedded_model_prefers_the_asked_objects_colour(embedded_model):
    ds = colored_objects_dataset(embedded_model, 16, seed=0)
    b = colored_objects_baselines(embedded_model, ds)
    # Asking about another object moves the logit difference towards the other colour, and the model picks the
    # asked colour among the 8 labels more often than chance (pooled over clean and counterfactual prompts).
    assert b.clean_logit_diff > b.corrupted_logit_diff
    assert (b.clean_accuracy + b.corrupted_accuracy) / 2 > b.chance
