"""Needle-in-a-haystack inputs: a sentence hidden in ordinary text, then a request to repeat it, with the answer.

Context:
    Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality", arXiv 2404.15574, section 2)
    find *retrieval heads* by hiding a *needle* sentence at some *depth* of a long *haystack* text and letting the
    model repeat it: while the model copies the needle token by token, a retrieval head attends to the needle token
    being copied. :mod:`attnlab.heads.retrieval` scores heads on the inputs built here.

Layout of one input (``o = 1`` with a BOS token, else 0; ``L`` haystack tokens, the needle inserted after ``i`` of
them; ``n`` needle tokens; ``m`` question tokens)::

    BOS | haystack[:i] | needle (n) | haystack[i:] | question (m) | needle again (n, teacher-forced answer)

The answer is *teacher-forced*: the needle's tokens follow the question, so the token the model should emit at every
copying step is known, and one forward pass gives every step. Step ``j`` (0-based) predicts answer token ``j`` from
the logits at position ``answer_positions[j] - 1`` (:attr:`NeedleItem.query_positions`); the needle's own copy of
that token sits at ``needle_positions[j]``.

Depth ``d`` in [0, 1] places the needle at the sentence boundary of the haystack nearest to ``d * L`` tokens (0: at
the start, 1: at the end), as in the usual needle-in-a-haystack tests; the depth actually used (``i / L``) is
recorded. Inputs of the same haystack length have the same number of tokens and batch together
(:meth:`NeedleInputs.batches`).

Two constructors:

- :func:`needle_haystack` for a model with a tokenizer: the needle is a list of words, each of which must be a single
  token of the model's tokenizer (checked, :class:`~attnlab.errors.TokenizationError` otherwise); the haystack is the
  plain prose of :data:`HAYSTACK` (written for attnlab, free of rights) or any text you pass.
- :func:`needle_haystack_tokens` for tiny models without a tokenizer: give token ids (or a token range for a random
  haystack).
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import DatasetError, TokenizationError
from attnlab.tasks.base import check_seed

__all__ = ["DEFAULT_NEEDLE", "DEFAULT_QUESTION", "HAYSTACK", "NeedleInputs", "NeedleItem", "needle_haystack",
           "needle_haystack_tokens"]

#: the default needle: words that are single tokens (with their leading space) in the embedded SmolLM2's tokenizer,
#: no word twice
DEFAULT_NEEDLE: tuple[str, ...] = (" The", " best", " thing", " to", " do", " in", " the", " blue", " castle", " is",
                                   " eat", " a", " sandwich")

#: the default request after the haystack (it names none of the needle's content words)
DEFAULT_QUESTION = "\n\nQuestion: Repeat the special sentence that was hidden in the text above.\nAnswer:"

#: a few paragraphs of plain prose, written for attnlab (no rights reserved), used as the default haystack
HAYSTACK = """The village sat at the bend of a slow river, where the water turned brown in spring and clear in \
autumn. Most of the houses were built of grey stone, and their roofs were covered with moss that grew thicker every \
year. In the mornings the baker opened his shop before the sun came up, and the smell of warm bread drifted along the \
narrow streets. Children walked to the school on the hill, carrying their books in cloth bags. The teacher was a tall \
woman who had lived in the city for many years before she came back to the place where she was born.

On market days the square filled with carts from the farms around the valley. Farmers sold apples, potatoes, onions \
and cheese, and a man from the coast brought salted fish in wooden boxes. People bargained loudly, but they rarely \
argued for long, because everyone knew that they would meet again the next week. The old clock on the church tower \
had stopped at a quarter past three many years ago, and nobody had found the money to repair it. Visitors often \
asked about the clock, and the villagers told them a different story each time.

In the summer the fields turned yellow and the air was full of dust and the sound of insects. The men worked from \
early morning until the light faded, cutting the wheat and tying it into bundles. Women brought them water, bread and \
cold meat at noon, and they all rested for an hour in the shade of the tall trees at the edge of the fields. In the \
evenings the young people gathered by the river to swim, to talk and to watch the birds flying low over the water. \
Sometimes a traveller passed through on his way to the mountains, and he was given a bed for the night and a hot \
meal.

Winter came early in that part of the country. The first snow usually fell before the end of autumn, and by the \
middle of winter the road to the town was often closed for days. Families kept wood stacked against the walls of \
their houses and stored food in cold cellars. The long nights were spent around the fire, telling stories, mending \
clothes and playing cards. When the weather was clear, the stars were so bright that the children stayed outside \
until their fingers were numb, trying to count them and giving names to the brightest ones.

The doctor lived in a small house near the bridge. He was an old man with a white beard and a quiet voice, and he \
walked to visit the sick with a leather bag in one hand and a stick in the other. He had seen three generations of \
the same families grow up, and he remembered the name of every child he had ever treated. In his free hours he read \
books about plants and kept a garden full of herbs that he used to make teas and ointments. Many people said that \
his teas worked better than the medicine from the city.

Spring brought the river back to life. The ice broke with a noise like thunder, and the water rose over the low \
meadows for a few weeks. The farmers repaired their fences and ploughed the wet earth, and the first green shoots \
appeared in the gardens. Birds returned from the south and built their nests under the roofs. The village held a \
small festival when the water went down again, with music, dancing and long tables of food in the square, and even \
the oldest people stayed up late to watch the fireworks over the hills.
"""


@dataclass(frozen=True)
class NeedleItem:
    """One needle-in-a-haystack input (see the module docstring for the layout).

    Attributes:
        tokens: Int[pos] the whole input, teacher-forced answer included.
        needle_positions: Int[n] positions of the needle's tokens in the haystack.
        answer_positions: Int[n] positions of the needle's tokens in the answer.
        depth: the depth actually used, ``i / L`` in [0, 1].
        requested_depth: the depth asked for.
        length: ``L``, haystack tokens (needle, question and answer not counted).
    """

    tokens: Int[Tensor, " pos"]
    needle_positions: Int[Tensor, " n"]
    answer_positions: Int[Tensor, " n"]
    depth: float
    requested_depth: float
    length: int

    @property
    def query_positions(self) -> Int[Tensor, " n"]:
        """Int[n] positions whose logits predict each answer token (one before each answer position)."""
        return self.answer_positions - 1

    @property
    def needle_ids(self) -> Int[Tensor, " n"]:
        """Int[n] the needle's token ids."""
        return self.tokens[self.answer_positions]


@dataclass(frozen=True)
class NeedleInputs:
    """Needle-in-a-haystack inputs at several depths and haystack lengths.

    Attributes:
        items: the inputs, in the order (length, depth) of the request.
        needle: the needle's token ids.
        needle_text: the needle as text (decoded pieces joined), or ``""`` for token-id inputs.
        question: the question's token ids.
        bos_offset: 1 if every input starts with BOS, else 0.
        tokenizer_fingerprint, built_by: the tokenizer that made the ids (None for token-id inputs) and the model.
        metadata: JSON-serialisable description (depths, lengths, how the haystack was made).
    """

    items: list[NeedleItem]
    needle: list[int]
    needle_text: str = ""
    question: list[int] = field(default_factory=list)
    bos_offset: int = 0
    tokenizer_fingerprint: str | None = None
    built_by: str | None = None
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def depths(self) -> list[float]:
        """The depth actually used by each input."""
        return [it.depth for it in self.items]

    @property
    def lengths(self) -> list[int]:
        """The haystack length (tokens) of each input."""
        return [it.length for it in self.items]

    @property
    def n_needle(self) -> int:
        """Needle tokens (copying steps per input)."""
        return len(self.needle)

    def batches(self, batch_size: int = 8) -> Iterator[tuple[list[int], Tensor, Tensor, Tensor]]:
        """Inputs of equal length, batched: yields ``(indices, tokens Int[b, pos], needle_positions Int[b, n],
        answer_positions Int[b, n])``, ``indices`` into :attr:`items`."""
        groups: dict[int, list[int]] = {}
        for i, it in enumerate(self.items):
            groups.setdefault(int(it.tokens.shape[0]), []).append(i)
        for _, idx in sorted(groups.items()):
            for s in range(0, len(idx), batch_size):
                part = idx[s:s + batch_size]
                yield (part, torch.stack([self.items[i].tokens for i in part]),
                       torch.stack([self.items[i].needle_positions for i in part]),
                       torch.stack([self.items[i].answer_positions for i in part]))

    def describe(self) -> dict:
        """A JSON-serialisable description (provenance for results)."""
        return {"task": "needle_in_a_haystack", "n_inputs": len(self.items), "needle": list(self.needle),
                "needle_text": self.needle_text, "depths": self.depths, "lengths": self.lengths,
                "requested_depths": [it.requested_depth for it in self.items], "bos_offset": self.bos_offset,
                **self.metadata}

    def check(self, model: Backend, analysis: str) -> None:
        """Check the inputs against ``model`` before any work.

        Raises:
            DatasetError: made by another tokenizer, ids outside the vocabulary, inputs longer than the context.
        """
        from attnlab.tasks.base import check_token_ids

        if not self.items:
            raise DatasetError("the needle-in-a-haystack inputs are empty: give at least one depth and one length")
        check_token_ids(model, fingerprint=self.tokenizer_fingerprint, built_by=self.built_by,
                        subject="the needle-in-a-haystack inputs", analysis=analysis,
                        rebuild="Build them again with attnlab.tasks.needle.needle_haystack(model, ...).",
                        arrays={f"input {i}": it.tokens[None] for i, it in enumerate(self.items)})


def _check_depths_lengths(depths, lengths) -> tuple[list[float], list[int]]:
    depths, lengths = list(depths), list(lengths)
    if not depths or not lengths:
        raise DatasetError(f"give at least one depth and one length (got {len(depths)} depths, {len(lengths)} "
                           "lengths)")
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 <= float(d) <= 1.0:
            raise DatasetError(f"'depths' must be numbers in [0, 1] (got {d!r})")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DatasetError(f"'lengths' must be positive ints, haystack tokens (got {n!r})")
    return [float(d) for d in depths], lengths


def _assemble(haystack: list[int], boundaries: list[int], needle: list[int], question: list[int],
              depths: list[float], lengths: list[int], bos: int | None) -> list[NeedleItem]:
    items = []
    o = 0 if bos is None else 1
    n, m = len(needle), len(question)
    for length in lengths:
        hay = haystack[:length]
        cuts = sorted({0, length, *[b for b in boundaries if 0 < b < length]})
        for d in depths:
            i = min(cuts, key=lambda c: (abs(c - d * length), c))
            ids = ([] if bos is None else [bos]) + hay[:i] + needle + hay[i:] + question + needle
            needle_pos = torch.arange(o + i, o + i + n)
            answer_pos = torch.arange(o + length + n + m, o + length + 2 * n + m)
            items.append(NeedleItem(tokens=torch.tensor(ids, dtype=torch.long), needle_positions=needle_pos,
                                    answer_positions=answer_pos, depth=i / length, requested_depth=d,
                                    length=length))
    return items


def _check_context(model: Backend | None, n_ctx: int | None, lengths, n: int, m: int, o: int) -> None:
    limit = model.info.n_ctx if model is not None else n_ctx
    if limit is None:
        return
    longest = o + max(lengths) + 2 * n + m
    if longest > limit:
        name = model.info.name if model is not None else "the model"
        raise DatasetError(f"a haystack of {max(lengths)} tokens makes inputs of {longest} tokens (with the needle "
                           f"twice and the question), longer than {name}'s context of {limit} tokens; use lengths "
                           f"up to {limit - o - 2 * n - m}")


def needle_haystack(
    model: Backend,
    *,
    depths: Sequence[float] = (0.1, 0.5, 0.9),
    lengths: Sequence[int] = (128,),
    needle: Sequence[str] = DEFAULT_NEEDLE,
    haystack: str = HAYSTACK,
    question: str = DEFAULT_QUESTION,
    prepend_bos: bool | None = None,
) -> NeedleInputs:
    """Needle-in-a-haystack inputs for a model with a tokenizer: one input per (length, depth).

    Args:
        model: the model whose tokenizer checks and encodes the words.
        depths: where the needle goes, each in [0, 1] (fraction of the haystack before it; snapped to the nearest
            sentence boundary).
        lengths: haystack lengths in tokens (the haystack text is cut to each length).
        needle: the needle's words, each a single token with its leading space (``" The", " best", ...``).
        haystack: the text the needle hides in (default :data:`HAYSTACK`, about 800 tokens).
        question: the request after the haystack; the needle follows it as the teacher-forced answer.
        prepend_bos: start with BOS (default: the model's habit, ``model.info.prepend_bos``).

    Returns:
        :class:`NeedleInputs`, ``len(lengths) * len(depths)`` items.

    Raises:
        TokenizationError: a needle word that is not exactly one token; a model without a tokenizer (use
            :func:`needle_haystack_tokens`).
        DatasetError: a depth outside [0, 1], a length that is not a positive int, a haystack shorter than a
            requested length, inputs longer than the model's context.
    """
    depths, lengths = _check_depths_lengths(depths, lengths)
    if getattr(model, "tokenizer", None) is None:
        raise TokenizationError(f"{model.info.name} has no tokenizer: build the inputs from token ids with "
                                "attnlab.tasks.needle.needle_haystack_tokens")
    if isinstance(needle, str) or not needle:
        raise TokenizationError("'needle' must be a non-empty list of words, each one token with its leading space "
                                f"(got {needle!r})")
    needle_ids = [model.single_token_id(w) for w in needle]
    question_ids = model.encode(question)
    bos = model.info.prepend_bos if prepend_bos is None else prepend_bos
    bos_id = getattr(model.tokenizer, "bos_token_id", None) if bos else None
    if bos and bos_id is None:
        raise TokenizationError(f"{model.info.name}'s tokenizer has no BOS token; use prepend_bos=False")
    _check_context(model, None, lengths, len(needle_ids), len(question_ids), int(bos))
    hay = model.encode(haystack)
    if max(lengths) > len(hay):
        raise DatasetError(f"the haystack text is {len(hay)} tokens, shorter than the longest length asked for "
                           f"({max(lengths)}); pass a longer haystack= text or shorter lengths")
    pieces = model.to_str_tokens(torch.tensor(hay))
    boundaries = [i + 1 for i, p in enumerate(pieces) if p.rstrip(" ").endswith((".", "\n", "?", "!"))]
    items = _assemble(hay, boundaries, needle_ids, question_ids, depths, lengths, bos_id)
    return NeedleInputs(items=items, needle=needle_ids, needle_text="".join(needle), question=question_ids,
                        bos_offset=int(bos), tokenizer_fingerprint=model.tokenizer_fingerprint,
                        built_by=model.info.name,
                        metadata={"haystack": "attnlab.tasks.needle.HAYSTACK" if haystack == HAYSTACK else "custom",
                                  "question_text": question})


def needle_haystack_tokens(
    model: Backend | None = None,
    *,
    needle: Sequence[int],
    question: Sequence[int],
    depths: Sequence[float] = (0.1, 0.5, 0.9),
    lengths: Sequence[int] = (32,),
    haystack: Sequence[int] | None = None,
    token_range: tuple[int, int] | None = None,
    boundaries: Sequence[int] | None = None,
    bos_token_id: int | None = None,
    seed: int = 0,
    n_ctx: int | None = None,
) -> NeedleInputs:
    """Needle-in-a-haystack inputs from token ids, for tiny models without a tokenizer.

    Args:
        model: the model (checks ids against its vocabulary and context), or None.
        needle: the needle's token ids.
        question: the question's token ids (e.g. one query token).
        depths: each in [0, 1].
        lengths: haystack lengths in tokens.
        haystack: the haystack's ids (at least ``max(lengths)``), or None for random ids from ``token_range``
            (a fresh draw per length, seeded).
        token_range: [lo, hi) of random haystack ids.
        boundaries: positions in the haystack where the needle may go (default: every position).
        bos_token_id: a BOS id to start every input with, or None.
        seed: seed of the random haystack.
        n_ctx: the context to check against when ``model`` is None.

    Returns:
        :class:`NeedleInputs`.

    Raises:
        DatasetError: a depth outside [0, 1], a bad length, an empty needle, neither or both of ``haystack`` and
            ``token_range``, a haystack shorter than a length, ids outside the vocabulary, inputs longer than the
            context.
    """
    depths, lengths = _check_depths_lengths(depths, lengths)
    seed = check_seed(seed)
    needle, question = [int(t) for t in needle], [int(t) for t in question]
    if not needle:
        raise DatasetError("'needle' must hold at least one token id")
    if (haystack is None) == (token_range is None):
        raise DatasetError("give exactly one of haystack= (token ids) and token_range= (random ids [lo, hi))")
    o = 0 if bos_token_id is None else 1
    _check_context(model, n_ctx, lengths, len(needle), len(question), o)
    items: list[NeedleItem] = []
    if haystack is not None:
        hay = [int(t) for t in haystack]
        if max(lengths) > len(hay):
            raise DatasetError(f"the haystack is {len(hay)} tokens, shorter than the longest length asked for "
                               f"({max(lengths)})")
        cuts = list(range(len(hay) + 1)) if boundaries is None else [int(b) for b in boundaries]
        items = _assemble(hay, cuts, needle, question, depths, lengths, bos_token_id)
    else:
        lo, hi = token_range
        if not 0 <= lo < hi:
            raise DatasetError(f"'token_range' must be [lo, hi) with 0 <= lo < hi (got {token_range!r})")
        g = torch.Generator().manual_seed(seed)
        for length in lengths:
            hay = torch.randint(lo, hi, (length,), generator=g).tolist()
            cuts = list(range(length + 1)) if boundaries is None else [int(b) for b in boundaries]
            items += _assemble(hay, cuts, needle, question, depths, [length], bos_token_id)
    inputs = NeedleInputs(items=items, needle=needle, question=question, bos_offset=o,
                          built_by=None if model is None else model.info.name,
                          metadata={"haystack": "token ids" if haystack is not None else f"random ids {token_range}",
                                    "seed": seed})
    if model is not None:
        inputs.check(model, "needle-in-a-haystack inputs")
    return inputs
