"""Your own prompts: ``PatchingDataset.from_prompts`` / ``from_text`` and the Explorer's "your own prompts" task.

The constructor's tokens are compared with the Hugging Face tokenizer itself (never hard-coded ids); the checks are
shown to fire, each with a message that says what to change, on a tokenizer-only backend that cannot run a model (so
every error is raised before any model run). One integration test runs a sweep on typed prompts in the Explorer's
controller (a tiny random model that reads text with the embedded model's tokenizer) and compares it with
``patch_heads`` on the same pairs.
"""

import pytest
import torch
from transformers import AutoTokenizer

from attnlab.errors import ArgumentTypeError, DatasetError, ExplorerError, TokenizationError
from attnlab.tasks.base import PatchingDataset
from attnlab.tasks.custom import PromptPair, answer_from_word, parse_prompt_pairs
from tests.test_ioi import TokenizerBackend

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
CLEAN2 = "When Anna and Tom went to the park, Tom gave a book to"
CORRUPTED2 = "When Anna and Tom went to the park, Anna gave a book to"


@pytest.fixture(scope="module")
def tok():
    """The embedded model's Hugging Face tokenizer (the reference)."""
    from attnlab.models.embedded import embedded_checkpoint

    return AutoTokenizer.from_pretrained(embedded_checkpoint())


@pytest.fixture(scope="module")
def backend(tok):
    return TokenizerBackend(tok, "SmolLM2-135M-Instruct")


def reference_ids(tok, text: str) -> list[int]:
    return [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)


def multi_token_word(tok, candidates=("Bartholomew", "Maximiliana", "Zebediah", "Anastasius", "Wolfgangus")) -> str:
    """A word that is several tokens with its leading space in this tokenizer (found, not assumed)."""
    for w in candidates:
        if len(tok.encode(" " + w, add_special_tokens=False)) > 1:
            return w
    raise AssertionError("no multi-token candidate word")


SPACED_ONLY_CANDIDATES = ("drink", "store", "gave", "Mary", "John", "went", "beautiful", "yesterday")


def test_one_pair_tokenises_as_the_tokenizer_does(backend, tok):
    ds = PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, " Mary", " John")
    clean, corrupted = reference_ids(tok, CLEAN), reference_ids(tok, CORRUPTED)
    assert ds.clean_tokens.tolist() == [clean] and ds.corrupted_tokens.tolist() == [corrupted]
    assert ds.answers.tolist() == [[tok.encode(" Mary", add_special_tokens=False)[0],
                                    tok.encode(" John", add_special_tokens=False)[0]]]
    changed = [i for i, (a, b) in enumerate(zip(clean, corrupted)) if a != b]
    assert ds.metadata["changed_positions"] == [changed] and len(changed) == 1
    assert ds.positions["CHANGED"].tolist() == changed and ds.positions["END"].tolist() == [len(clean) - 1]
    labels = ds.position_labels
    assert len(labels) == len(clean) and labels[0] == "BOS" and labels[-1] == "END"
    assert labels[changed[0]] == "John→Mary"
    assert len(set(labels)) == len(labels)  # repeated tokens get their position appended
    assert ds.task == "custom" and ds.clean_prompts == [CLEAN] and ds.corrupted_prompts == [CORRUPTED]
    assert ds.tokenizer_fingerprint == backend.tokenizer_fingerprint


def test_lists_and_pasted_lines_give_the_same_dataset(backend, tok):
    ds = PatchingDataset.from_prompts(backend, [CLEAN, CLEAN2], [CORRUPTED, CORRUPTED2], [" Mary", " Anna"],
                                      [" John", " Tom"])
    assert ds.clean_tokens.tolist() == [reference_ids(tok, CLEAN), reference_ids(tok, CLEAN2)]
    text = (f"# clean | corrupted | answer | distractor\n{CLEAN} | {CORRUPTED} | Mary | John\n\n"
            f"{CLEAN2}\t{CORRUPTED2}\t\"Anna\"\t Tom \n")
    pasted = PatchingDataset.from_text(backend, text)
    assert pasted.clean_tokens.tolist() == ds.clean_tokens.tolist()
    assert pasted.corrupted_tokens.tolist() == ds.corrupted_tokens.tolist()
    # "Anna" in quotes is taken exactly (no space): another token than " Anna"
    assert pasted.answers[0].tolist() == ds.answers[0].tolist()
    assert pasted.answers[1, 0].item() == tok.encode("Anna", add_special_tokens=False)[0] != ds.answers[1, 0].item()
    assert pasted.metadata["answer_texts"] == [[" Mary", " John"], ["Anna", " Tom"]]
    # one answer string for every pair
    shared = PatchingDataset.from_prompts(backend, [CLEAN, CLEAN2], [CORRUPTED, CORRUPTED2], " Mary", " John")
    assert shared.answers[:, 0].tolist() == [ds.answers[0, 0].item()] * 2


def test_parsing_rules():
    assert answer_from_word(" Mary ") == " Mary" and answer_from_word('"Mary"') == "Mary"
    assert answer_from_word('" Mary"') == " Mary"
    assert parse_prompt_pairs("a b | a c | x | y") == [PromptPair("a b", "a c", " x", " y")]
    with pytest.raises(DatasetError, match=r"line 2 has 3 field\(s\).*expected 4: clean \| corrupted"):
        parse_prompt_pairs("a | b | c | d\na | b | c\n")
    with pytest.raises(DatasetError, match=r"line 1: the answer is empty"):
        parse_prompt_pairs("a | b |  | d")
    with pytest.raises(DatasetError, match="no prompt pairs found"):
        parse_prompt_pairs("# only a comment\n\n")


def test_misaligned_prompts_show_both_tokenisations_and_a_fix(backend, tok):
    word = multi_token_word(tok)
    corrupted = CLEAN.replace(", John gave", f", {word} gave")
    with pytest.raises(DatasetError) as info:
        PatchingDataset.from_prompts(backend, CLEAN, corrupted, " Mary", " John")
    msg = str(info.value)
    n_clean, n_corr = len(reference_ids(tok, CLEAN)), len(reference_ids(tok, corrupted))
    assert f"the clean prompt is {n_clean} tokens and the corrupted prompt {n_corr}" in msg
    word_tokens = [tok.decode([i]) for i in tok.encode(" " + word, add_special_tokens=False)]
    assert " ".join(repr(t) for t in word_tokens) in msg  # the corrupted side's tokens of the word
    assert f"clean     ({n_clean}):" in msg and f"corrupted ({n_corr}):" in msg
    assert f"Fix: {' ' + word!r} is {len(word_tokens)} tokens where the clean prompt's ' John' is 1" in msg


def test_answers_must_be_single_tokens_with_their_space(backend, tok):
    word = multi_token_word(tok)
    with pytest.raises(TokenizationError) as info:
        PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, " " + word, " John")
    pieces = [tok.decode([i]) for i in tok.encode(" " + word, add_special_tokens=False)]
    assert f"the answer {' ' + word!r} is {len(pieces)} tokens" in str(info.value)
    assert " ".join(repr(p) for p in pieces) in str(info.value)

    # no leading space: refused, naming the spaced form; allowed on request, as the exact token
    with pytest.raises(TokenizationError, match=r"'Mary' has no leading space.*Use ' Mary'"):
        PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, "Mary", " John")
    exact = PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, "Mary", " John", require_leading_space=False)
    assert exact.answers[0, 0].item() == tok.encode("Mary", add_special_tokens=False)[0]

    # a word that is one token only with its space: the suggestion names the spaced form
    spaced_only = [w for w in SPACED_ONLY_CANDIDATES if len(tok.encode(w, add_special_tokens=False)) > 1
                   and len(tok.encode(" " + w, add_special_tokens=False)) == 1]
    assert spaced_only, "no candidate word is one token only with its leading space"
    with pytest.raises(TokenizationError, match=f"' {spaced_only[0]}' \\(with a leading space\\) is one token"):
        PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, spaced_only[0], " John")

    with pytest.raises(DatasetError, match="are the same token"):
        PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, " Mary", " Mary")


def test_other_bad_input_says_what_to_change(backend):
    with pytest.raises(DatasetError, match="pair 0: the clean prompt is empty"):
        PatchingDataset.from_prompts(backend, "  ", CORRUPTED, " Mary", " John")
    with pytest.raises(ArgumentTypeError, match="must hold strings"):
        PatchingDataset.from_prompts(backend, [CLEAN, 3], [CORRUPTED, CORRUPTED], " Mary", " John")
    with pytest.raises(DatasetError, match="one entry per pair"):
        PatchingDataset.from_prompts(backend, [CLEAN, CLEAN2], [CORRUPTED], " Mary", " John")
    with pytest.raises(DatasetError, match="same text, so there is nothing to patch"):
        PatchingDataset.from_prompts(backend, CLEAN, CLEAN, " Mary", " John")
    longer = "Then, " + CLEAN2
    with pytest.raises(DatasetError, match=r"every pair of one dataset must have the same number of tokens"):
        PatchingDataset.from_prompts(backend, [CLEAN, longer], [CORRUPTED, "Then, " + CORRUPTED2], " Mary", " Tom")
    with pytest.raises(DatasetError, match="one label per token position"):
        PatchingDataset.from_prompts(backend, CLEAN, CORRUPTED, " Mary", " John", position_labels=["a", "b"])
    with pytest.raises(ArgumentTypeError, match="load it with attnlab.load_model"):
        PatchingDataset.from_prompts("smollm2-135m", CLEAN, CORRUPTED, " Mary", " John")
    short = TokenizerBackend(backend.tokenizer, "short", n_ctx=5)
    with pytest.raises(DatasetError, match="context of 5"):
        PatchingDataset.from_prompts(short, CLEAN, CORRUPTED, " Mary", " John")


def test_explorer_controller_and_widget_take_typed_prompts(backend):
    """The form's path without a browser: a refusal shows in the widget's form state and keeps the task; accepted
    prompts select the "your own prompts" task with one prompt per pair."""
    from attnlab.explorer import Explorer

    ex = Explorer(backend, "ioi")
    assert "custom" in {t["value"] for t in ex.options["tasks"]}
    ex.set_control("task", "custom")
    with pytest.raises(ExplorerError, match="no prompts of your own yet"):
        ex.controller.dataset()
    ex.set_control("task", "ioi")
    misaligned = {"type": "custom_prompts", "clean": CLEAN,
                  "corrupted": CLEAN.replace("John gave", "John, the one, gave"), "answer": "Mary",
                  "distractor": "John", "lines": ""}
    ex._on_message(ex, misaligned, [])
    state = ex.custom_prompts
    assert state["error"].startswith("DatasetError: pair 0: the clean and corrupted prompts must have the same number")
    assert ex.controls["task"] == "ioi"
    ex._on_message(ex, {**misaligned, "corrupted": CORRUPTED}, [])
    state = ex.custom_prompts
    assert "error" not in state and state["pairs"] == 1 and state["answers"] == [" Mary", " John"]
    assert state["clean"] == backend.to_str_tokens(torch.tensor(reference_ids(backend.tokenizer, CLEAN)))
    assert ex.controls["task"] == "custom" and ex.controls["n_prompts"] == 1
    ds = ex.controller.dataset()
    assert ds.clean_prompts == [CLEAN] and ds.answers.tolist() == PatchingDataset.from_prompts(
        backend, CLEAN, CORRUPTED, " Mary", " John").answers.tolist()
    ex._on_message(ex, {"type": "custom_prompts", "clean": CLEAN, "corrupted": "", "answer": "Mary",
                        "distractor": "John", "lines": ""}, [])
    assert "the corrupted prompt is empty" in ex.custom_prompts["error"] and ex.controls["task"] == "custom"
    ex._on_message(ex, {"type": "custom_prompts", "lines": f"{CLEAN} | {CORRUPTED} | Mary\n"}, [])
    assert "line 1 has 3 field(s)" in ex.custom_prompts["error"] and ex.controller.dataset().clean_prompts == [CLEAN]


@pytest.fixture(scope="module")
def tiny_with_tokenizer(tok):
    """A tiny random Llama (2 layers) that reads text with the embedded model's tokenizer: a real sweep in seconds."""
    from attnlab.models import tiny_hf_model

    model = tiny_hf_model("llama", n_layers=2, n_heads=4, d_model=32, d_vocab=len(tok), n_ctx=64, seed=0)
    model.tokenizer = tok
    return model


def test_a_sweep_on_typed_prompts_equals_patch_heads(tiny_with_tokenizer):
    from attnlab.explorer.controller import ExplorerController
    from attnlab.patching import patch_heads

    model = tiny_with_tokenizer
    ctl = ExplorerController(model, "ioi", component="heads")
    ctl.set_prompts(f"{CLEAN} | {CORRUPTED} | Mary | John\n{CLEAN2} | {CORRUPTED2} | Anna | Tom")
    run = ctl.run()
    reference = patch_heads(model, PatchingDataset.from_prompts(
        model, [CLEAN, CLEAN2], [CORRUPTED, CORRUPTED2], [" Mary", " Anna"], [" John", " Tom"]), progress=False)
    assert run.result.complete and run.controls["task"] == "custom" and run.prompts == [CLEAN, CLEAN2]
    assert torch.allclose(torch.as_tensor(run.result.values), torch.as_tensor(reference.values), atol=1e-5)
    assert run.result.baselines["clean"] == pytest.approx(reference.baselines["clean"], abs=1e-5)
    assert run.result.values.shape == (2, 4)
    # the head panel works on typed prompts: its named positions are CHANGED (and END)
    detail = ctl.select("L1H2") and ctl.detail
    assert [e["position"] for e in detail["end_attention"]] == ["CHANGED"]
