"""Your own prompts: clean/corrupted pairs typed (or pasted) by a researcher, checked and tokenised for patching.

Context:
    Activation patching copies an activation from one run into another *at the same position* (Meng et al. 2022,
    arXiv 2202.05262; Wang et al. 2022, arXiv 2211.00593). A clean prompt and its corrupted version must therefore
    tokenise to the same number of tokens, position by position: "When Mary and John went to the store, John gave a
    drink to" against "... , Mary gave a drink to" changes one token and keeps every other in place. Zhang & Nanda
    2023 (arXiv 2309.16042, section 2) and Heimersheim & Nanda 2024 (arXiv 2404.15255, section 2) recommend such
    minimal, token-aligned corruptions. The metric is the logit difference between two single tokens at the last
    position: the clean prompt's answer and a distractor (usually the corrupted prompt's answer).

The checks (every one runs before any model run, and says what to change):
    - the four texts are non-empty strings; lists have one entry per pair;
    - clean and corrupted prompts of a pair have the same number of tokens (both tokenisations are shown where they
      differ, with the span that differs and how many tokens each side has); they differ somewhere;
    - every pair has the same number of tokens (one dataset is one [batch, pos] batch);
    - the answer and the distractor are exactly one token each, *with their leading space* (after "... gave a drink
      to" the next word is ``" Mary"``, a different token from ``"Mary"``); they are different tokens;
    - the prompts fit the model's context.

This module holds the text side (parsing pasted lines, checking, tokenising, explaining); the dataset constructor is
:meth:`attnlab.tasks.base.PatchingDataset.from_prompts` (and :meth:`~attnlab.tasks.base.PatchingDataset.from_text` for
pasted lines), which calls :func:`custom_dataset_fields` here.

Pasted lines (:func:`parse_prompt_pairs`): one pair a line, ``clean | corrupted | answer | distractor`` (or the four
fields separated by tabs, as copied from a spreadsheet); blank lines and lines starting with ``#`` are skipped. Fields
are stripped. Answers are *words*: ``Mary`` means ``" Mary"``, the word with the space that precedes it in running
text; put an answer in double quotes to give its exact text (``"Mary"`` without a space, ``" Mary"``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from attnlab.errors import ArgumentTypeError, DatasetError, TokenizationError

__all__ = ["PromptPair", "answer_from_word", "custom_dataset_fields", "parse_prompt_pairs", "prompt_pair",
           "show_tokens"]

#: how many tokens of a prompt an error message lists before eliding the rest
_SHOW_MAX = 48


@dataclass(frozen=True)
class PromptPair:
    """One clean/corrupted pair with its two answer tokens' texts (exact strings, leading space included).

    Attributes:
        clean: the clean prompt.
        corrupted: the corrupted prompt (token-aligned with ``clean``).
        answer: the correct next token on the clean prompt (``" Mary"``).
        distractor: the competing token (``" John"``; usually the corrupted prompt's answer).
    """

    clean: str
    corrupted: str
    answer: str
    distractor: str


def answer_from_word(field: str) -> str:
    """The answer text of a typed or pasted field: a word gets its leading space (``"Mary"`` -> ``" Mary"``); a field
    in double quotes is taken exactly (``'"Mary"'`` -> ``"Mary"``, ``'" Mary"'`` -> ``" Mary"``).

    Raises:
        ArgumentTypeError: not a string.
        DatasetError: empty (or empty quotes).
    """
    if not isinstance(field, str):
        raise ArgumentTypeError(f"an answer must be a string (got {type(field).__name__} {field!r})")
    s = field.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        s = s[1:-1]
        if not s:
            raise DatasetError('an answer in quotes must hold a token\'s text (got ""); write Mary or " Mary"')
        return s
    if not s:
        raise DatasetError("the answer is empty: type the word the model should predict (e.g. Mary)")
    return " " + s


def prompt_pair(clean: str, corrupted: str, answer: str, distractor: str) -> PromptPair:
    """A :class:`PromptPair` from four typed fields: prompts stripped, answers read as words
    (:func:`answer_from_word`).

    Raises:
        ArgumentTypeError: a field is not a string.
        DatasetError: an empty field (the message names it).
    """
    fields = {"clean prompt": clean, "corrupted prompt": corrupted, "answer": answer, "distractor": distractor}
    for name, value in fields.items():
        if not isinstance(value, str):
            raise ArgumentTypeError(f"the {name} must be a string (got {type(value).__name__} {value!r})")
        if not value.strip():
            raise DatasetError(f"the {name} is empty: fill in all four fields (clean prompt, corrupted prompt, "
                               "answer, distractor)")
    return PromptPair(clean.strip(), corrupted.strip(), answer_from_word(answer), answer_from_word(distractor))


def parse_prompt_pairs(text: str) -> list[PromptPair]:
    """Parse pasted lines, one pair a line: ``clean | corrupted | answer | distractor`` (or tab-separated).

    Blank lines and lines starting with ``#`` are skipped. A line holding a tab is split on tabs (prompts may then
    contain ``|``); otherwise on ``|``. Answers are words (see :func:`answer_from_word`).

    Args:
        text: the pasted lines.

    Returns:
        One :class:`PromptPair` per line, in order.

    Raises:
        ArgumentTypeError: ``text`` is not a string.
        DatasetError: no pair at all, or a line without exactly four fields or with an empty field (the message
            gives the line's number and text and the expected format).
    """
    if not isinstance(text, str):
        raise ArgumentTypeError(f"pasted pairs must be a string of lines (got {type(text).__name__})")
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split("|")
        if len(fields) != 4:
            sep = "tabs" if "\t" in line else "'|'"
            raise DatasetError(
                f"line {number} has {len(fields)} field(s) separated by {sep}, expected 4: "
                f"clean | corrupted | answer | distractor (got {line.strip()!r}); e.g. "
                "When Mary and John went to the store, John gave a drink to | When Mary and John went to the store, "
                "Mary gave a drink to | Mary | John"
            )
        try:
            pairs.append(prompt_pair(*fields))
        except DatasetError as exc:
            raise DatasetError(f"line {number}: {exc}") from None
    if not pairs:
        raise DatasetError("no prompt pairs found: paste one pair a line, clean | corrupted | answer | distractor")
    return pairs


# -- tokenisation and its explanations ----------------------------------------------------------------------------
def show_tokens(strings: Sequence[str], limit: int = _SHOW_MAX) -> str:
    """Tokens as a readable line: each token's text quoted (``'When' ' Mary' ' and'``), elided past ``limit``."""
    if not strings:
        return "(no tokens)"
    shown = " ".join(repr(s) for s in strings[:limit])
    return shown + (f" ... (+{len(strings) - limit} more)" if len(strings) > limit else "")


def _bos_offset(model) -> int:
    """How many tokens ``to_tokens`` puts before the text (1 with a BOS token, else 0)."""
    return int(model.to_tokens(["x"]).shape[1]) - len(model.encode("x"))


def _differing_span(a: list[int], b: list[int]) -> tuple[int, int, int]:
    """``(start, end_a, end_b)``: ``a[start:end_a]`` and ``b[start:end_b]`` are what remains once the common prefix
    and the common suffix are removed."""
    n = min(len(a), len(b))
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and a[-1 - s] == b[-1 - s]:
        s += 1
    return p, len(a) - s, len(b) - s


def _alignment_error(model, i: int, clean: list[int], corrupted: list[int]) -> DatasetError:
    name = model.info.name
    cs, ks = model.to_str_tokens(torch.tensor(clean)), model.to_str_tokens(torch.tensor(corrupted))
    start, end_c, end_k = _differing_span(clean, corrupted)
    span_c, span_k = cs[start:end_c], ks[start:end_k]
    text_c, text_k = "".join(span_c), "".join(span_k)
    if not span_c or not span_k:  # one prompt is the other plus some tokens
        extra, side = (span_k, "corrupted") if not span_c else (span_c, "clean")
        fix = (f"the {side} prompt has {len(extra)} extra token(s) {show_tokens(extra)}: remove them, or replace a "
               "word instead of adding one")
    elif len(span_c) > len(span_k):
        fix = (f"{text_k!r} is {len(span_k)} token(s) where the clean prompt's {text_c!r} is {len(span_c)}: replace it "
               f"by a word of {len(span_c)} token(s) (or change the clean prompt's word to one of {len(span_k)})")
    else:
        fix = (f"{text_k!r} is {len(span_k)} tokens where the clean prompt's {text_c!r} is {len(span_c)}: replace it "
               f"by a word of {len(span_c)} token(s), as the clean one is (most common first names and nouns are one "
               "token with their leading space)")
    return DatasetError(
        f"pair {i}: the clean and corrupted prompts must have the same number of tokens, because patching copies "
        f"activations position by position; in {name}'s tokenizer the clean prompt is {len(clean)} tokens and the "
        f"corrupted prompt {len(corrupted)}.\n"
        f"  clean     ({len(clean)}): {show_tokens(cs)}\n"
        f"  corrupted ({len(corrupted)}): {show_tokens(ks)}\n"
        f"  They differ from token {start}: clean {show_tokens(span_c)} vs corrupted {show_tokens(span_k)}.\n"
        f"  Fix: {fix}."
    )


def _answer_id(model, i: int, role: str, text: str, prompt: str, require_leading_space: bool) -> int:
    """The single token id of ``text``, or a TokenizationError explaining how it tokenises and what to use."""
    name = model.info.name
    ids = model.encode(text)
    spaced = " " + text.strip()
    spaced_ids = model.encode(spaced) if spaced != text else ids
    if len(ids) != 1:
        shown = show_tokens(model.to_str_tokens(torch.tensor(ids))) if ids else "(no tokens)"
        if len(spaced_ids) == 1 and spaced != text:
            hint = f"{spaced!r} (with a leading space) is one token: use that"
        else:
            hint = "choose a word that is one token with its leading space (e.g. a common first name or noun)"
        raise TokenizationError(
            f"pair {i}: the {role} {text!r} is {len(ids)} tokens in {name}'s tokenizer: {shown}; the metric reads one "
            f"logit per answer, so it must be exactly 1 token. {hint}")
    if require_leading_space and not text[:1].isspace() and prompt and not prompt[-1:].isspace():
        if len(spaced_ids) == 1:
            detail = (f"the model writes the next word with its space, {spaced!r} (token {spaced_ids[0]}), a "
                      f"different token from {text!r} (token {ids[0]}). Use {spaced!r}")
        else:
            detail = (f"the next word would start with a space, and {spaced!r} is {len(spaced_ids)} tokens "
                      f"({show_tokens(model.to_str_tokens(torch.tensor(spaced_ids)))}): choose a word that is one "
                      "token with its leading space")
        raise TokenizationError(
            f"pair {i}: the {role} {text!r} has no leading space, but the prompt ends with "
            f"{prompt[-12:]!r}, so {detail}; or pass require_leading_space=False if you mean the token without a "
            "space")
    return ids[0]


def _as_list(value, what: str, n: int) -> list[str]:
    """``value`` as a list of strings: a single string is repeated ``n`` times."""
    if isinstance(value, str):
        return [value] * n
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        items = list(value)
        for x in items:
            if not isinstance(x, str):
                raise ArgumentTypeError(f"'{what}' must hold strings (got {type(x).__name__} {x!r})")
        return items
    raise ArgumentTypeError(f"'{what}' must be a string or a list of strings (got {type(value).__name__})")


def _position_labels(model, clean: torch.Tensor, corrupted: torch.Tensor, offset: int) -> list[str]:
    """One label per position: ``BOS``; the clean token's text, ``clean→corrupted`` where a pair changes it (``/``
    between up to two variants across pairs, ``…`` for more); ``END`` last; a position number appended to repeats."""
    n_pos = clean.shape[1]

    def text(ids: set[int]) -> str:
        words = sorted({(s.strip() or repr(s)) for s in model.to_str_tokens(torch.tensor(sorted(ids)))})
        return "/".join(words) if len(words) <= 2 else "…"

    labels = []
    for j in range(n_pos):
        if j < offset:
            labels.append("BOS")
            continue
        c, k = set(clean[:, j].tolist()), set(corrupted[:, j].tolist())
        label = text(c)
        if bool((clean[:, j] != corrupted[:, j]).any()):
            label += "→" + text(k)
        labels.append(label if len(label) <= 24 else label[:23] + "…")
    labels[-1] = "END"
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    return [f"{lab} ({j})" if counts[lab] > 1 else lab for j, lab in enumerate(labels)]


def custom_dataset_fields(model, clean, corrupted, answers, distractors, *, position_labels=None,
                          task: str = "custom", require_leading_space: bool = True) -> dict:
    """Check and tokenise clean/corrupted pairs; return the keyword arguments of
    :class:`~attnlab.tasks.base.PatchingDataset` (what :meth:`PatchingDataset.from_prompts` builds).

    Args and errors: see :meth:`attnlab.tasks.base.PatchingDataset.from_prompts`.
    """
    from attnlab.backends.base import check_model

    check_model(model, "PatchingDataset.from_prompts")
    if getattr(model, "tokenizer", None) is None:
        raise ArgumentTypeError(f"{model.info.name} has no tokenizer, so it cannot read typed prompts; build a "
                                "PatchingDataset from token ids instead, or load a model with a tokenizer")
    if not isinstance(task, str) or not task:
        raise ArgumentTypeError(f"'task' must be a non-empty string (got {task!r})")
    cleans = _as_list(clean, "clean", 1)
    n = len(cleans)
    corrupteds = _as_list(corrupted, "corrupted", 1)
    answer_list = _as_list(answers, "answers", n)
    distractor_list = _as_list(distractors, "distractors", n)
    if n == 0:
        raise DatasetError("no prompts given: pass a clean prompt (or a list of them), its corrupted version and the "
                           "two answers")
    lengths = {"clean": n, "corrupted": len(corrupteds), "answers": len(answer_list),
               "distractors": len(distractor_list)}
    if len(set(lengths.values())) > 1:
        raise DatasetError(f"one entry per pair in each list is needed, got {lengths}; give every pair its clean and "
                           "corrupted prompt, answer and distractor")
    pairs = [PromptPair(*p) for p in zip(cleans, corrupteds, answer_list, distractor_list)]
    for i, p in enumerate(pairs):
        for what, value in (("clean prompt", p.clean), ("corrupted prompt", p.corrupted)):
            if not value.strip():
                raise DatasetError(f"pair {i}: the {what} is empty; type the text the model reads")
        for what, value in (("answer", p.answer), ("distractor", p.distractor)):
            if not value.strip():
                raise DatasetError(f"pair {i}: the {what} is empty; type the token the metric compares (e.g. ' Mary')")
        if p.clean == p.corrupted:
            raise DatasetError(f"pair {i}: the clean and corrupted prompts are the same text, so there is nothing to "
                               "patch; change the token(s) the corruption should change (e.g. swap a name)")

    # answers first: a cheap check, and the commonest mistake (a missing leading space)
    answer_ids = []
    for i, p in enumerate(pairs):
        a = _answer_id(model, i, "answer", p.answer, p.clean, require_leading_space)
        d = _answer_id(model, i, "distractor", p.distractor, p.clean, require_leading_space)
        if a == d:
            raise DatasetError(f"pair {i}: the answer {p.answer!r} and the distractor {p.distractor!r} are the same "
                               "token, so their logit difference is always 0; the distractor should be the competing "
                               "answer (usually the corrupted prompt's answer)")
        answer_ids.append([a, d])

    rows_c = [model.to_tokens([p.clean])[0].tolist() for p in pairs]
    rows_k = [model.to_tokens([p.corrupted])[0].tolist() for p in pairs]
    for i, (c, k) in enumerate(zip(rows_c, rows_k)):
        if len(c) != len(k):
            raise _alignment_error(model, i, c, k)
        if c == k:
            raise DatasetError(f"pair {i}: the clean and corrupted prompts tokenise to the same tokens "
                               f"({show_tokens(model.to_str_tokens(torch.tensor(c)))}), so there is nothing to "
                               "patch; change a word, not only spacing the tokenizer ignores")
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(rows_c):
        by_length.setdefault(len(c), []).append(i)
    if len(by_length) > 1:
        desc = "; ".join(f"{n_tok} tokens: pairs {idx}" for n_tok, idx in sorted(by_length.items()))
        most = max(by_length, key=lambda k: len(by_length[k]))
        raise DatasetError(f"every pair of one dataset must have the same number of tokens (the prompts form one "
                           f"[batch, pos] batch), but they differ in {model.info.name}'s tokenizer: {desc}. Keep the "
                           f"pairs of one length together (e.g. the {most}-token pairs {by_length[most]}) and build a "
                           "dataset for each length, or reword the others")
    n_pos = len(rows_c[0])
    if n_pos > model.info.n_ctx:
        raise DatasetError(f"the prompts are {n_pos} tokens but {model.info.name} has a context of "
                           f"{model.info.n_ctx}; shorten them")
    clean_t = torch.tensor(rows_c, dtype=torch.long)
    corrupted_t = torch.tensor(rows_k, dtype=torch.long)
    offset = _bos_offset(model)
    if position_labels is None:
        labels = _position_labels(model, clean_t, corrupted_t, offset)
    else:
        if isinstance(position_labels, str) or not isinstance(position_labels, Sequence) or not all(
                isinstance(x, str) for x in position_labels):
            raise ArgumentTypeError("'position_labels' must be a list of strings, one per token position")
        labels = list(position_labels)
        if len(labels) != n_pos:
            shown = show_tokens(model.to_str_tokens(clean_t[0]))
            raise DatasetError(f"'position_labels' must have one label per token position, {n_pos} here (got "
                               f"{len(labels)}); the clean prompt's tokens are: {shown}")
    changed = clean_t != corrupted_t
    first_changed = changed.float().argmax(dim=1)  # the first position each pair changes (every pair changes one)
    end = torch.full((len(pairs),), n_pos - 1, dtype=torch.long)
    return dict(
        task=task,
        clean_tokens=clean_t,
        corrupted_tokens=corrupted_t,
        answers=torch.tensor(answer_ids, dtype=torch.long),
        positions={"CHANGED": first_changed, "END": end},
        position_labels=labels,
        clean_prompts=[p.clean for p in pairs],
        corrupted_prompts=[p.corrupted for p in pairs],
        metadata={
            "source": "custom prompts",
            "answer_texts": [[p.answer, p.distractor] for p in pairs],
            "changed_positions": [torch.nonzero(row).flatten().tolist() for row in changed],
            "require_leading_space": bool(require_leading_space),
            "tokenizer_of": model.info.name,
            "tokenizer_fingerprint": model.tokenizer_fingerprint,
        },
    )
