"""Tests of the IOI task (attnlab.tasks.ioi): token alignment, positions, answers, seeding and input checks.

Only tokenizers are needed: ``TokenizerBackend`` is a test double of :class:`attnlab.backends.base.Backend` that wraps
a Hugging Face tokenizer and cannot run a model. ``tokenizer_backend`` uses the embedded SmolLM2-135M-Instruct
tokenizer; ``toy_backend`` a byte-level BPE trained here on a small corpus that contains only half of the names, so
the other half are several tokens there.
"""

import re
from collections.abc import Sequence

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from attnlab.backends.base import Backend, ModelInfo, RunOutput
from attnlab.errors import DatasetError, TokenizationError
from attnlab.tasks.base import PatchingDataset
from attnlab.tasks.ioi import (
    ABBA_TEMPLATES,
    BABA_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    ioi_dataset,
    single_token_names,
    single_token_words,
    template_lengths,
)

class TokenizerBackend(Backend):
    """A tokenizer-only Backend: tokenises like a real backend (BOS first), cannot run a model."""

    def __init__(self, tokenizer, name: str, n_ctx: int = 8192) -> None:
        self.tokenizer = tokenizer
        self.info = ModelInfo(name=name, n_layers=1, n_heads=1, n_kv_heads=1, d_model=1, d_head=1, d_mlp=1,
                              d_vocab=len(tokenizer), n_ctx=n_ctx, backend="test", family="test")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def to_tokens(self, texts: Sequence[str], prepend_bos: bool | None = None) -> torch.Tensor:
        bos = self.info.prepend_bos if prepend_bos is None else prepend_bos
        rows = [([self.tokenizer.bos_token_id] if bos else []) + self.encode(t) for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise TokenizationError(f"texts tokenise to different lengths {sorted({len(r) for r in rows})}")
        return torch.tensor(rows, dtype=torch.long)

    def to_str_tokens(self, tokens: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode([t]) for t in tokens.tolist()]

    def run(self, *args, **kwargs) -> RunOutput:
        raise NotImplementedError("TokenizerBackend has no model")


@pytest.fixture(scope="module")
def tokenizer_backend() -> Backend:
    """The embedded model's tokenizer, from the checkpoint that ``make setup`` prepares (``attnlab prepare``)."""
    from attnlab.models.embedded import embedded_checkpoint

    return TokenizerBackend(AutoTokenizer.from_pretrained(embedded_checkpoint()), "SmolLM2-135M-Instruct")


# Half of the names appear in the toy tokenizer's training corpus (so become single tokens); the rest do not.
TOY_NAMES = NAMES[::2]


@pytest.fixture(scope="module")
def toy_backend() -> Backend:
    """A GPT-2-style byte-level BPE trained on IOI sentences that use only ``TOY_NAMES``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = []
    for k, template in enumerate(BABA_TEMPLATES + ABBA_TEMPLATES):
        for j in range(len(TOY_NAMES)):
            corpus.append(template.replace("[A]", TOY_NAMES[j]).replace("[B]", TOY_NAMES[(j + k + 1) % len(TOY_NAMES)])
                          .replace("[PLACE]", PLACES[j % len(PLACES)]).replace("[OBJECT]", OBJECTS[j % len(OBJECTS)]))
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=1, special_tokens=["<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return TokenizerBackend(PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>"), "toy-bpe")


@pytest.fixture(scope="module", params=["abc", "s2_swap"])
def dataset(request, tokenizer_backend) -> PatchingDataset:
    return ioi_dataset(tokenizer_backend, 16, seed=1, corruption=request.param)


# -- constants ----------------------------------------------------------------------------------------------------
def test_templates_are_the_15_of_wang_et_al_in_both_orders():
    assert len(BABA_TEMPLATES) == len(ABBA_TEMPLATES) == 15
    for baba, abba in zip(BABA_TEMPLATES, ABBA_TEMPLATES):
        assert "[B] and [A]" in baba and "[A] and [B]" in abba
        assert baba.endswith(" [A]") and abba.endswith(" [A]")
        assert baba.count("[B]") == abba.count("[B]") == 2 and baba.count("[A]") == 2
    assert len(NAMES) == len(set(NAMES)) >= 90


# -- filtering ----------------------------------------------------------------------------------------------------
def test_single_token_names_are_single_tokens(tokenizer_backend):
    names = single_token_names(tokenizer_backend)
    assert len(names) >= 50
    assert all(len(tokenizer_backend.encode(" " + n)) == 1 for n in names)
    dropped = [n for n in NAMES if n not in names]
    assert dropped and all(len(tokenizer_backend.encode(" " + n)) > 1 for n in dropped)
    assert single_token_words(tokenizer_backend, PLACES) == list(PLACES)  # all of Wang et al.'s are single tokens


def test_filtering_is_per_tokenizer(tokenizer_backend, toy_backend):
    smol, toy = single_token_names(tokenizer_backend), single_token_names(toy_backend)
    assert set(TOY_NAMES) <= set(toy)
    assert "Christopher" not in NAMES and len(toy_backend.encode(" Christopher")) > 1
    assert len(toy) < len(NAMES) and set(toy) != set(smol)
    unseen_multi = [n for n in NAMES if n not in toy]
    assert len(unseen_multi) >= 20 and all(len(toy_backend.encode(" " + n)) > 1 for n in unseen_multi)
    # A dataset on the toy tokenizer only draws its single-token names, and its positions check out.
    ds = ioi_dataset(toy_backend, 12, seed=3)
    used = {n for p in ds.clean_prompts + ds.corrupted_prompts for n in re.findall(r"[A-Z][a-z]+", p)}
    assert used - {"Then"} <= set(toy)
    assert ds.metadata["n_names"] == len(toy)
    rows = torch.arange(len(ds))
    assert torch.equal(ds.clean_tokens[rows, ds.positions["IO"]], ds.answers[:, 0])
    # A name that is one token in SmolLM2 but several in the toy tokenizer is rejected there, by name.
    multi_here = next(n for n in smol if n not in toy)
    with pytest.raises(TokenizationError, match=rf"{multi_here}.*toy-bpe"):
        ioi_dataset(toy_backend, 4, names=[*TOY_NAMES[:5], multi_here])
    ioi_dataset(tokenizer_backend, 4, names=[*smol[:5], multi_here])


# -- alignment, positions, answers --------------------------------------------------------------------------------
def test_clean_and_corrupted_differ_exactly_at_the_corrupted_names(dataset):
    assert dataset.clean_tokens.shape == dataset.corrupted_tokens.shape == (16, dataset.n_pos)
    expected_roles = {"abc": ("IO", "S1", "S2"), "s2_swap": ("S2",)}[dataset.metadata["corruption"]]
    for i in range(len(dataset)):
        differ = set(torch.nonzero(dataset.clean_tokens[i] != dataset.corrupted_tokens[i]).flatten().tolist())
        assert differ == {int(dataset.positions[r][i]) for r in expected_roles}


def test_positions_point_at_the_answer_tokens(dataset):
    rows = torch.arange(len(dataset))
    clean, corrupted, ans = dataset.clean_tokens, dataset.corrupted_tokens, dataset.answers
    assert torch.equal(clean[rows, dataset.positions["IO"]], ans[:, 0])
    assert torch.equal(clean[rows, dataset.positions["S1"]], ans[:, 1])
    assert torch.equal(clean[rows, dataset.positions["S2"]], ans[:, 1])
    assert bool((ans[:, 0] != ans[:, 1]).all())
    assert bool((dataset.positions["END"] == dataset.n_pos - 1).all())
    assert bool((dataset.positions["S1"] < dataset.positions["S2"]).all())
    if dataset.metadata["corruption"] == "s2_swap":
        # The corrupted prompt's IO is the clean S: the answer flips, answers stay the clean ones.
        assert torch.equal(corrupted[rows, dataset.positions["S2"]], ans[:, 0])
    else:
        new = torch.stack([corrupted[rows, dataset.positions[r]] for r in ("IO", "S1", "S2")], 1)
        for i in range(len(dataset)):
            assert len(set(new[i].tolist()) | set(ans[i].tolist())) == 5


def test_prompts_end_before_the_final_name(dataset, tokenizer_backend):
    for i, text in enumerate(dataset.clean_prompts):
        assert text.endswith(" to")
        assert tokenizer_backend.to_tokens([text]).tolist()[0] == dataset.clean_tokens[i].tolist()
    assert dataset.task == "ioi" and dataset.position_labels[0] == "BOS"


# -- order, labels, seeding ---------------------------------------------------------------------------------------
def test_mixed_order_is_half_abba_half_baba(tokenizer_backend):
    ds = ioi_dataset(tokenizer_backend, 10, order="mixed")
    assert sorted(ds.metadata["prompt_orders"]) == ["ABBA"] * 5 + ["BABA"] * 5
    io_first = ds.positions["IO"] < ds.positions["S1"]
    assert io_first.tolist() == [o == "ABBA" for o in ds.metadata["prompt_orders"]]
    assert "IO/S1" in ds.position_labels
    labels = ds.position_labels
    assert labels.count("IO/S1") == 2 and labels.count("S2") == 1 and labels[-1] == "END"
    assert labels[int(ds.positions["S2"][0])] == "S2"
    assert {"PLACE", "OBJECT", "went", ","} <= set(labels)
    for order in ("ABBA", "BABA"):
        single = ioi_dataset(tokenizer_backend, 6, order=order)
        assert set(single.metadata["prompt_orders"]) == {order}
        assert "IO/S1" not in single.position_labels and {"IO", "S1"} <= set(single.position_labels)


def test_seeded_and_reproducible(tokenizer_backend):
    a = ioi_dataset(tokenizer_backend, 8, seed=5, corruption="abc")
    b = ioi_dataset(tokenizer_backend, 8, seed=5, corruption="abc")
    c = ioi_dataset(tokenizer_backend, 8, seed=6, corruption="abc")
    assert torch.equal(a.clean_tokens, b.clean_tokens) and torch.equal(a.corrupted_tokens, b.corrupted_tokens)
    assert a.clean_prompts == b.clean_prompts
    assert not torch.equal(a.clean_tokens, c.clean_tokens)
    assert a.metadata["seed"] == 5 and a.metadata["corruption"] == "abc" and a.metadata["templates"] == [0]
    import json

    json.dumps(a.describe())


def test_templates_of_one_length_can_be_mixed(tokenizer_backend):
    lengths = template_lengths(tokenizer_backend)
    assert set(lengths) == set(range(15))
    n0 = lengths[0]
    same = [i for i, n in lengths.items() if n == n0]
    ds = ioi_dataset(tokenizer_backend, 2 * len(same), templates=same, corruption="s2_swap")
    assert ds.n_pos == n0 and set(ds.metadata["prompt_templates"]) == set(same)


# -- bad input ----------------------------------------------------------------------------------------------------
def test_templates_of_different_lengths_are_refused(tokenizer_backend):
    lengths = template_lengths(tokenizer_backend)
    i, j = next((i, j) for i in lengths for j in lengths if lengths[i] != lengths[j])
    with pytest.raises(DatasetError, match=rf"different lengths.*{i}: {lengths[i]}.*choose templates of one length"):
        ioi_dataset(tokenizer_backend, 4, templates=(i, j))
    with pytest.raises(DatasetError, match="different lengths"):
        ioi_dataset(tokenizer_backend, 4, templates="all")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_prompts": 0}, DatasetError, r"'n_prompts' must be an integer >= 1 \(got 0\)"),
        ({"corruption": "gaussian"}, DatasetError, r"'corruption' must be one of \['abc', 's2_swap'\].*gaussian"),
        ({"order": "AABB"}, DatasetError, r"'order' must be one of .*'AABB'"),
        ({"templates": (0, 15)}, DatasetError, r"integers in \[0, 15\) \(got \[15\]\)"),
        ({"templates": "some"}, DatasetError, r"'templates' must be .*'some'"),
        ({"names": ["Mary", "John", "Xylophonia"]}, TokenizationError, r"\['Xylophonia'\] are not single tokens"),
        ({"places": ["store", "Xylophonia"]}, TokenizationError, r"places \['Xylophonia'\]"),
        ({"objects": ["Xylophonia"]}, TokenizationError, r"objects \['Xylophonia'\]"),
        ({"names": ["Mary", "John", "Tom", "Anna"]}, DatasetError, r"at least 5 .*got 4"),
        ({"names": ["Mary", "John"], "corruption": "s2_swap"}, DatasetError, r"at least 3 .*got 2"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tokenizer_backend, kwargs, error, match):
    n = kwargs.pop("n_prompts", 4)
    with pytest.raises(error, match=match):
        ioi_dataset(tokenizer_backend, n, **kwargs)


def test_prompts_longer_than_the_context_are_refused(tokenizer_backend):
    short = TokenizerBackend(tokenizer_backend.tokenizer, "short-context", n_ctx=8)
    with pytest.raises(DatasetError, match=r"16 tokens, longer than short-context's context of 8"):
        ioi_dataset(short, 4)
