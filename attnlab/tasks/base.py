"""Clean/corrupted prompt pairs: the input of every patching analysis.

A :class:`PatchingDataset` holds token-aligned clean and corrupted batches (same length, same structure, differing
only in the tokens the corruption changed), the answer pair whose logit difference is the metric, and the named
positions of each prompt (for IOI: IO, S1, S2 and END). Tasks (:mod:`attnlab.tasks.ioi` ...) build these.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.errors import ArgumentTypeError, DatasetError

__all__ = ["PatchingDataset", "check_dataset", "check_seed", "check_token_ids"]


@dataclass(frozen=True)
class PatchingDataset:
    """Token-aligned clean and corrupted prompts with an answer pair per prompt.

    Attributes:
        task: task name (``"ioi"`` ...).
        clean_tokens: Int[batch, pos] clean prompts.
        corrupted_tokens: Int[batch, pos] corrupted prompts, aligned position by position with the clean ones.
        answers: Int[batch, 2] token ids: column 0 the correct answer on the clean prompt (IOI: the indirect
            object), column 1 the distractor (IOI: the subject). The metric is logit(col 0) - logit(col 1).
        positions: named positions per prompt, each Int[batch]; must include ``"END"`` (where the metric is read).
        position_labels: one label per position for plots (``"S2"``, ``"END"``, ``"IO/S1"`` ...).
        clean_prompts, corrupted_prompts: the prompt strings (without BOS).
        metadata: JSON-serialisable description (seed, corruption, templates ...), kept as provenance.

    Raises:
        DatasetError: empty dataset; clean and corrupted shapes differ; answers or positions of the wrong shape or
            out of range; missing END.
    """

    task: str
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch 2"]
    positions: dict[str, Int[Tensor, " batch"]]
    position_labels: list[str]
    clean_prompts: list[str] = field(default_factory=list)
    corrupted_prompts: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, k = self.clean_tokens, self.corrupted_tokens
        if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
            raise DatasetError(f"dataset {self.task!r} is empty: clean_tokens has shape {tuple(c.shape)}; "
                               "generate at least one prompt")
        if k.shape != c.shape:
            raise DatasetError(
                f"clean and corrupted batches must have the same shape [batch, pos] (got clean {tuple(c.shape)}, "
                f"corrupted {tuple(k.shape)}); corruptions must keep every prompt token-aligned"
            )
        batch, n_pos = c.shape
        if self.answers.shape != (batch, 2):
            raise DatasetError(f"answers must have shape ({batch}, 2) (got {tuple(self.answers.shape)})")
        if "END" not in self.positions:
            raise DatasetError("positions must include 'END', the position where the metric is read")
        for name, pos in self.positions.items():
            if pos.shape != (batch,):
                raise DatasetError(f"positions[{name!r}] must have shape ({batch},) (got {tuple(pos.shape)})")
            if int(pos.min()) < 0 or int(pos.max()) >= n_pos:
                raise DatasetError(f"positions[{name!r}] must be in [0, {n_pos}) (got {pos.tolist()})")
        if len(self.position_labels) != n_pos:
            raise DatasetError(f"position_labels must have {n_pos} entries (got {len(self.position_labels)})")

    @classmethod
    def from_prompts(cls, model, clean: "str | Sequence[str]", corrupted: "str | Sequence[str]",
                     answer: "str | Sequence[str]", distractor: "str | Sequence[str]", *,
                     position_labels: Sequence[str] | None = None, task: str = "custom",
                     require_leading_space: bool = True) -> "PatchingDataset":
        """A dataset from your own prompts: one clean/corrupted pair (strings) or several (lists), each with the
        answer token on the clean prompt and a distractor token, checked and tokenised by ``model``'s tokenizer.

        Every check runs before any model run, and its message says what to change (see
        :mod:`attnlab.tasks.custom` for why each matters):

        - the clean and corrupted prompts of a pair have the same number of tokens (patching copies activations
          position by position); where they do not, the error shows both tokenisations, the span that differs and
          how many tokens each side has; and they differ somewhere;
        - every pair has the same number of tokens (one [batch, pos] batch);
        - ``answer`` and ``distractor`` are exactly one token each, as given: the text is used exactly, so the
          leading space is part of it (``" Mary"``, the token the model writes after "... gave a drink to"; ``"Mary"``
          is another token). With ``require_leading_space`` (the default), an answer without a leading space after a
          prompt that does not end in whitespace is refused, naming the space-prefixed form; they are different
          tokens;
        - the prompts fit the model's context.

        Example:
            >>> ds = PatchingDataset.from_prompts(  # doctest: +SKIP
            ...     model, "When Mary and John went to the store, John gave a drink to",
            ...     "When Mary and John went to the store, Mary gave a drink to", " Mary", " John")
            >>> attnlab.patch_heads(model, ds)  # doctest: +SKIP

        Args:
            model: a loaded model with a tokenizer (:func:`attnlab.load_model`).
            clean: the clean prompt, or a list of them.
            corrupted: the corrupted prompt(s), one per clean prompt, token-aligned with it.
            answer: the correct next token on each clean prompt (exact text, e.g. ``" Mary"``); one string is used
                for every pair.
            distractor: the competing token (usually the corrupted prompt's answer, e.g. ``" John"``); one string is
                used for every pair. The metric is logit(answer) - logit(distractor) at the last position.
            position_labels: one label per token position (BOS included) for plots; default: ``"BOS"``, each
                token's text (``"clean→corrupted"`` where a pair changes it), ``"END"`` last.
            task: the dataset's task name (results record it).
            require_leading_space: refuse answers without a leading space after a prompt that ends in a
                non-space character (False: take them as given).

        Returns:
            A :class:`PatchingDataset`: ``clean_tokens``/``corrupted_tokens`` Int[batch, pos] as ``model.to_tokens``
            makes them, ``answers`` Int[batch, 2] (answer, distractor ids), positions ``"END"`` (the last token)
            and ``"CHANGED"`` (the first position where the pair's prompts differ), ``metadata`` with the answer
            texts, the changed positions of each pair and the tokenizer's fingerprint.

        Raises:
            ArgumentTypeError: ``model`` is not a loaded model or has no tokenizer; a prompt or answer that is not a
                string.
            DatasetError: an empty text; lists of different lengths; clean and corrupted prompts that differ in
                length (both tokenisations shown) or not at all; pairs of different lengths; an answer equal to its
                distractor; prompts longer than the context; ``position_labels`` of the wrong length.
            TokenizationError: an answer or distractor that is not exactly one token (its tokens shown, the
                space-prefixed form suggested), or that lacks its leading space.
        """
        from attnlab.tasks.custom import custom_dataset_fields

        return cls(**custom_dataset_fields(model, clean, corrupted, answer, distractor,
                                           position_labels=position_labels, task=task,
                                           require_leading_space=require_leading_space))

    @classmethod
    def from_text(cls, model, text: str, *, position_labels: Sequence[str] | None = None,
                  task: str = "custom") -> "PatchingDataset":
        """A dataset from pasted lines, one pair a line: ``clean | corrupted | answer | distractor`` (or the four
        fields separated by tabs, as copied from a spreadsheet); blank lines and ``#`` comments are skipped.

        Answers are words: ``Mary`` means ``" Mary"`` (the word with the space before it); put one in double quotes
        to give its exact text (``"Mary"``). Then the checks of :meth:`from_prompts` run.

        Example:
            >>> lines = ("When Mary and John went to the store, John gave a drink to | "
            ...          "When Mary and John went to the store, Mary gave a drink to | Mary | John")
            >>> PatchingDataset.from_text(model, lines)  # doctest: +SKIP

        Raises:
            DatasetError: a line without four fields, or with an empty one (its number is given); no line; and
                every error of :meth:`from_prompts`.
            TokenizationError: as :meth:`from_prompts`.
        """
        from attnlab.tasks.custom import custom_dataset_fields, parse_prompt_pairs

        pairs = parse_prompt_pairs(text)
        return cls(**custom_dataset_fields(
            model, [p.clean for p in pairs], [p.corrupted for p in pairs], [p.answer for p in pairs],
            [p.distractor for p in pairs], position_labels=position_labels, task=task,
            require_leading_space=False))  # answers are words here: their leading space is already added

    def __len__(self) -> int:
        return self.clean_tokens.shape[0]

    @property
    def n_pos(self) -> int:
        """Number of token positions per prompt (BOS included)."""
        return self.clean_tokens.shape[1]

    @property
    def end(self) -> Int[Tensor, " batch"]:
        """Position of the final token of each prompt, where the answer is predicted."""
        return self.positions["END"]

    def subset(self, index: Sequence[int] | slice) -> "PatchingDataset":
        """A new dataset with the prompts selected by ``index``."""
        idx = torch.arange(len(self))[index]
        pick = lambda seq: [seq[i] for i in idx.tolist()] if seq else []  # noqa: E731
        return PatchingDataset(
            task=self.task,
            clean_tokens=self.clean_tokens[idx],
            corrupted_tokens=self.corrupted_tokens[idx],
            answers=self.answers[idx],
            positions={k: v[idx] for k, v in self.positions.items()},
            position_labels=list(self.position_labels),
            clean_prompts=pick(self.clean_prompts),
            corrupted_prompts=pick(self.corrupted_prompts),
            metadata={**self.metadata, "subset_of": len(self)},
        )

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """The :attr:`~attnlab.backends.base.Backend.tokenizer_fingerprint` of the model whose tokenizer built these
        token ids (None: not recorded, e.g. random token ids)."""
        return self.metadata.get("tokenizer_fingerprint")

    def assume_tokenizer(self, model) -> "PatchingDataset":
        """The same dataset, declared to be tokenised as ``model`` tokenises: the explicit override of the check
        that a dataset runs only on a model that reads its token ids as the same strings (:func:`check_dataset`).

        Use it only when the two tokenizers truly agree on these ids (for example, two fine-tunes that share a
        vocabulary but whose tokenizer files differ in an unused special token). The original fingerprint is kept
        in ``metadata["tokenizer_assumed_from"]``."""
        return PatchingDataset(
            task=self.task, clean_tokens=self.clean_tokens, corrupted_tokens=self.corrupted_tokens,
            answers=self.answers, positions=dict(self.positions), position_labels=list(self.position_labels),
            clean_prompts=list(self.clean_prompts), corrupted_prompts=list(self.corrupted_prompts),
            metadata={**self.metadata, "tokenizer_fingerprint": model.tokenizer_fingerprint,
                      "tokenizer_of": model.info.name,
                      "tokenizer_assumed_from": [self.metadata.get("tokenizer_of"), self.tokenizer_fingerprint]},
        )

    def swapped(self) -> "PatchingDataset":
        """The same pairs with clean and corrupted exchanged (answers kept)."""
        return PatchingDataset(
            task=self.task, clean_tokens=self.corrupted_tokens, corrupted_tokens=self.clean_tokens,
            answers=self.answers, positions=dict(self.positions), position_labels=list(self.position_labels),
            clean_prompts=list(self.corrupted_prompts), corrupted_prompts=list(self.clean_prompts),
            metadata={**self.metadata, "swapped": True},
        )

    def describe(self) -> dict:
        """JSON-serialisable provenance: task, size, and metadata."""
        return {"task": self.task, "n_prompts": len(self), "n_pos": self.n_pos, **self.metadata}


def check_dataset(model, dataset, *, analysis: str = "this analysis") -> None:
    """Check, before any work, that ``dataset`` can run on ``model``: the model is a loaded model, the dataset is a
    :class:`PatchingDataset` whose token ids the model reads as the same strings, that fit its vocabulary and its
    context.

    Args:
        model: a :class:`~attnlab.backends.base.Backend` (what :func:`attnlab.load_model` returns).
        dataset: the clean/corrupted pairs.
        analysis: the analysis's name, for the messages.

    Raises:
        ArgumentTypeError: ``model`` is a name or anything but a loaded model
            ("load it with attnlab.load_model first"), or ``dataset`` is not a PatchingDataset.
        DatasetError: the dataset was built with another tokenizer (its recorded fingerprint differs from the
            model's: the ids would mean other strings; rebuild it with this model, or declare the tokenizers equal
            with :meth:`PatchingDataset.assume_tokenizer`); ids outside the vocabulary; prompts longer than the
            context.
    """
    from attnlab.backends.base import check_model

    check_model(model, analysis)
    if not isinstance(dataset, PatchingDataset):
        raise ArgumentTypeError(f"{analysis} needs a PatchingDataset (ioi_dataset(model, ...), "
                                f"colored_objects_dataset(model, ...)), got a {type(dataset).__name__}")
    check_token_ids(model, fingerprint=dataset.tokenizer_fingerprint, built_by=dataset.metadata.get("tokenizer_of"),
                    subject=f"the {dataset.task!r} dataset", analysis=analysis,
                    rebuild="Rebuild the dataset with this model (e.g. ioi_dataset(model, ...)), or, if the two "
                            "tokenizers truly agree on these ids, pass dataset.assume_tokenizer(model)",
                    arrays={"clean_tokens": dataset.clean_tokens, "corrupted_tokens": dataset.corrupted_tokens,
                            "answers": dataset.answers})


def check_token_ids(model, *, fingerprint: str | None, built_by: str | None, subject: str, analysis: str,
                    rebuild: str, arrays: dict) -> None:
    """The checks every tokenised input shares, before any work: the ids were made by a tokenizer that reads them as
    this model does (the recorded fingerprint), they fit the vocabulary, and the prompts fit the context.

    Args:
        model: the loaded model.
        fingerprint, built_by: the recorded tokenizer fingerprint (None: not recorded) and the model that made it.
        subject: what the ids are, for the messages (``"the 'ioi' dataset"``).
        analysis: the analysis's name; rebuild: the remedy the message ends with.
        arrays: name -> Int tensor of ids; those of two dimensions are [batch, pos] prompts.

    Raises:
        DatasetError: another tokenizer; ids outside the vocabulary; prompts longer than the context.
    """
    info = model.info
    ours = getattr(model, "tokenizer_fingerprint", None)
    if fingerprint is not None and fingerprint != ours:
        mine = "has no tokenizer" if ours is None else "tokenises differently"
        raise DatasetError(f"{subject} was tokenised by {built_by or 'another model'!r}, and {info.name!r} {mine}: its "
                           f"token ids would mean other strings, and {analysis} would measure nonsense. {rebuild}")
    n_pos = max(t.shape[1] for t in arrays.values() if t.ndim == 2)
    if n_pos > info.n_ctx:
        raise DatasetError(f"prompts are {n_pos} tokens but {info.name} has a context of {info.n_ctx}")
    for name, toks in arrays.items():
        if int(toks.min()) < 0 or int(toks.max()) >= info.d_vocab:
            raise DatasetError(f"{name} has ids outside the vocabulary [0, {info.d_vocab}) of {info.name}")


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as a Python int, checked before any work: a non-negative integer (numpy and torch integers too).

    Raises:
        ArgumentTypeError: not an integer (None, a float, a string: each would silently give other prompts).
        ArgumentError: negative.
    """
    from attnlab.errors import ArgumentError
    from attnlab.sites import as_int

    value = as_int(seed)
    if value is None:
        raise ArgumentTypeError(f"'{name}' must be a non-negative integer, which makes the run reproducible (got "
                                f"{type(seed).__name__} {seed!r})")
    if value < 0:
        raise ArgumentError(f"'{name}' must be a non-negative integer (got {value})")
    return value
