"""Inputs for induction-head analysis: token sequences repeated twice, and prefix-length probes.

Context:
    An *induction head* (Olsson et al. 2022, "In-context Learning and Induction Heads", transformer-circuits.pub,
    section "Definitions") completes ``[A][B] ... [A] -> [B]``: at the second ``[A]`` it attends to the token that
    followed the first ``[A]`` and copies it. On a sequence of random tokens repeated twice, nothing but such
    in-context copying can predict the second repeat, so a model's loss there falls from about ``ln(d_vocab)``
    (first repeat) to near zero, and the heads that do the copying show a stripe at a fixed offset in their
    attention pattern (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", section
    "Induction heads").

Layout of a repeated sequence (``L = seq_len``, ``o = 1`` with a BOS token, else 0)::

    position   0     o ... o+L-1      o+L ... o+2L-1
    token      BOS   r_1 ... r_L      r_1 ... r_L

- previous-token head: attends from ``p`` to ``p - 1``;
- duplicate-token head: in the second repeat, attends from ``p`` to ``p - L`` (the same token, earlier);
- induction head: in the second repeat, attends from ``p`` to ``p - (L - 1)`` (the token *after* the earlier copy).

Prefix-length probes (Kissane et al. 2024, "Interpreting Attention Layer Outputs with Sparse Autoencoders",
arXiv 2406.17759, section 5): a *long-prefix* induction head attends to ``[B]`` only when several tokens before the
current ``[A]`` also match the tokens before the earlier ``[A]``; a *short-prefix* one fires on ``[A]`` alone.
:func:`prefix_probe` builds sequences in which exactly ``n`` tokens, ending at the current token, match the earlier
occurrence, at a fixed distance, so the induction attention can be read as a function of ``n``.

Sequences are built from token ids (no tokenizer needed: tiny models work). :func:`natural_repeats` instead draws
whole words from the model's own vocabulary, so that the repeated sequence is readable text that tokenises back to
exactly the same tokens.
"""

import re
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import DatasetError, TokenizationError
from attnlab.tasks.base import check_seed

__all__ = [
    "PrefixProbe",
    "RepeatedTokens",
    "bos_token_id",
    "natural_repeats",
    "prefix_probe",
    "repeated_random_tokens",
]


@dataclass(frozen=True)
class RepeatedTokens:
    """A batch of sequences made of one random segment repeated twice (after an optional BOS token).

    Attributes:
        tokens: Int[batch, pos] token ids, ``pos = bos_offset + 2 * seq_len``.
        seq_len: ``L``, the length of one repeat.
        bos_offset: 1 if every row starts with a BOS token, else 0.
        texts: for natural-text repeats, the text of each row (one repeat followed by the other), else empty.
        metadata: JSON-serialisable provenance (seed, token range, kind ...).

    Raises:
        DatasetError: the tokens do not have the layout described above.
    """

    tokens: Int[Tensor, "batch pos"]
    seq_len: int
    bos_offset: int
    texts: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.tokens
        if t.ndim != 2 or t.shape[0] == 0:
            raise DatasetError(f"tokens must be a non-empty [batch, pos] tensor (got shape {tuple(t.shape)})")
        if t.shape[1] != self.bos_offset + 2 * self.seq_len:
            raise DatasetError(f"tokens must have {self.bos_offset + 2 * self.seq_len} positions (BOS offset "
                               f"{self.bos_offset} + 2 x seq_len {self.seq_len}) (got {t.shape[1]})")
        first, second = t[:, self.first_repeat], t[:, self.second_repeat]
        if not torch.equal(first, second):
            raise DatasetError("the two repeats differ: tokens[:, first_repeat] must equal tokens[:, second_repeat]")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_pos(self) -> int:
        """Positions per row (BOS included)."""
        return self.tokens.shape[1]

    @property
    def first_repeat(self) -> slice:
        """Positions of the first repeat."""
        return slice(self.bos_offset, self.bos_offset + self.seq_len)

    @property
    def second_repeat(self) -> slice:
        """Positions of the second repeat."""
        return slice(self.bos_offset + self.seq_len, self.bos_offset + 2 * self.seq_len)

    @property
    def induction_targets(self) -> slice:
        """Positions whose token an induction head can predict: the second repeat except its first token.

        The logits at position ``p - 1`` predict the token at ``p``; the first token of the second repeat follows
        ``r_L``, which never preceded it, so it cannot be copied in context.
        """
        return slice(self.bos_offset + self.seq_len + 1, self.bos_offset + 2 * self.seq_len)

    def describe(self) -> dict:
        """JSON-serialisable provenance."""
        return {"task": "repeated_tokens", "n_sequences": len(self), "seq_len": self.seq_len,
                "bos": bool(self.bos_offset), **self.metadata}


@dataclass(frozen=True)
class PrefixProbe:
    """Sequences in which exactly ``n`` tokens ending at the last position repeat an earlier segment.

    Layout (``D = distance``, ``T = pos``; the earlier occurrence of the current token is at ``T - 1 - D``)::

        ... [s_1 ... s_n] [y] filler ... [s_1 ... s_n]
              earlier      target          current (ends at T - 1)

    The tokens before the two copies of ``s`` differ, so the matching prefix is exactly ``n`` tokens long
    (``n = 1``: only the current token itself matches). Every other token is distinct.

    Attributes:
        tokens: Int[n_lengths, batch, pos] one batch per prefix length.
        prefix_lengths: the ``n`` of each batch.
        dest: the current (query) position, ``pos - 1``.
        target: position of ``y``, the token after the earlier copy of the current token (``pos - distance``).
        bos_offset: 1 if every row starts with BOS.
        metadata: provenance.
    """

    tokens: Int[Tensor, "n_lengths batch pos"]
    prefix_lengths: list[int]
    dest: int
    target: int
    bos_offset: int
    metadata: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-serialisable provenance."""
        return {"task": "prefix_probe", "prefix_lengths": list(self.prefix_lengths), "n_sequences":
                self.tokens.shape[1], "n_pos": self.tokens.shape[2], **self.metadata}


# -- helpers ----------------------------------------------------------------------------------------------------------
def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetError(f"'{name}' must be an int (got {value!r})")
    if value < lo or (hi is not None and value >= hi):
        bound = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
        raise DatasetError(f"'{name}' must be {'in ' if hi is not None else ''}{bound} (got {value})")
    return value


def bos_token_id(model: Backend) -> int:
    """The model's BOS token id, found through the backend's tokeniser.

    Raises:
        TokenizationError: the model has no tokeniser or no BOS token (pass ``bos_token_id=`` explicitly).
    """
    try:
        ids = model.to_tokens([""], prepend_bos=True)
    except Exception as exc:  # no tokenizer (tiny models) or no BOS token
        raise TokenizationError(f"cannot find a BOS token for {model.info.name!r} ({exc}); pass bos_token_id= or "
                                "prepend_bos=False") from None
    return int(ids[0, 0])


def _resolve_bos(model: Backend, prepend_bos: bool | None, bos_token_id_: int | None) -> int | None:
    bos = model.info.prepend_bos if prepend_bos is None else prepend_bos
    if not bos:
        return None
    if bos_token_id_ is not None:
        return _check_int("bos_token_id", bos_token_id_, 0, model.info.d_vocab)
    return bos_token_id(model)


def _check_context(model: Backend, n_pos: int, what: str) -> None:
    if n_pos > model.info.n_ctx:
        raise DatasetError(f"{what} is {n_pos} tokens long, longer than {model.info.name}'s context of "
                           f"{model.info.n_ctx} tokens; use a shorter seq_len")


def _sample_distinct(g: torch.Generator, batch: int, k: int, lo: int, hi: int, exclude: int | None) -> Tensor:
    """Int[batch, k]: k distinct ids per row, uniform from [lo, hi) without ``exclude``."""
    n = hi - lo - (1 if exclude is not None and lo <= exclude < hi else 0)
    if n < k:
        raise DatasetError(f"token_range [{lo}, {hi}) holds {n} usable ids, fewer than the {k} distinct tokens "
                           "needed per sequence; widen it or use distinct=False")
    # k smallest of n random keys = a uniformly random k-subset, in random order
    idx = torch.rand(batch, n, generator=g).argsort(dim=1)[:, :k] + lo
    if exclude is not None and lo <= exclude < hi:
        idx = idx + (idx >= exclude).long()
    return idx


def _token_range(model: Backend, token_range: tuple[int, int] | None) -> tuple[int, int]:
    v = model.info.d_vocab
    if token_range is None:
        return 0, v
    if (not isinstance(token_range, (tuple, list)) or len(token_range) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in token_range)):
        raise DatasetError(f"'token_range' must be a pair of ints (lo, hi) (got {token_range!r})")
    lo, hi = token_range
    if not 0 <= lo < hi <= v:
        raise DatasetError(f"'token_range' must satisfy 0 <= lo < hi <= d_vocab={v} (got {token_range!r})")
    return lo, hi


# -- builders ---------------------------------------------------------------------------------------------------------
def repeated_random_tokens(
    model: Backend,
    seq_len: int,
    batch: int = 16,
    *,
    seed: int = 0,
    token_range: tuple[int, int] | None = None,
    prepend_bos: bool | None = None,
    bos_token_id: int | None = None,
    distinct: bool = True,
) -> RepeatedTokens:
    """Random token segments of length ``seq_len``, each repeated twice: the standard induction-head input.

    Args:
        model: the model the tokens are for (its vocabulary size, context length and BOS convention).
        seq_len: ``L``, the length of one repeat; at least 2 (with ``L = 1`` the induction offset is 0).
        batch: number of sequences.
        seed: seed of the sampler; the same seed gives the same tokens.
        token_range: ``(lo, hi)``: sample ids from ``[lo, hi)``; default the whole vocabulary. The BOS id is never
            sampled.
        prepend_bos: start each row with BOS; default the model's convention (``model.info.prepend_bos``).
        bos_token_id: the BOS id; default the model tokeniser's.
        distinct: draw the ``L`` tokens of a segment without replacement, so each token's earlier occurrence is
            unique and the diagonal scores equal the token-matching ones of TransformerLens's ``detect_head``.

    Returns:
        A :class:`RepeatedTokens` with tokens of shape [batch, bos + 2 * seq_len].

    Raises:
        DatasetError: ``seq_len < 2``, ``batch < 1``, a bad ``token_range``, or a sequence longer than the
            model's context.

    Example:
        >>> data = repeated_random_tokens(model, 10, batch=4, seed=0)  # doctest: +SKIP
        >>> data.tokens.shape  # doctest: +SKIP
        torch.Size([4, 21])
    """
    _check_int("seq_len", seq_len, 2)
    _check_int("batch", batch, 1)
    lo, hi = _token_range(model, token_range)
    bos = _resolve_bos(model, prepend_bos, bos_token_id)
    offset = 0 if bos is None else 1
    _check_context(model, offset + 2 * seq_len, f"a repeated sequence of seq_len {seq_len}")
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if distinct:
        seg = _sample_distinct(g, batch, seq_len, lo, hi, bos)
    else:
        seg = torch.randint(lo, hi - (1 if bos is not None and lo <= bos < hi else 0), (batch, seq_len), generator=g)
        if bos is not None and lo <= bos < hi:
            seg = seg + (seg >= bos).long()
    parts = [seg, seg]
    if bos is not None:
        parts.insert(0, torch.full((batch, 1), bos, dtype=torch.long))
    meta = {"kind": "random", "seed": seed, "token_range": [lo, hi], "distinct": distinct}
    return RepeatedTokens(tokens=torch.cat(parts, dim=1), seq_len=seq_len, bos_offset=offset, metadata=meta)


_WORD = re.compile(r"^ [A-Za-z]{3,12}$")


def _word_tokens(model: Backend) -> list[int]:
    """Ids of the vocabulary's plain words with a leading space (``" house"``) that encode back to themselves."""
    strs = model.to_str_tokens(torch.arange(model.info.d_vocab))
    return [i for i, s in enumerate(strs) if _WORD.match(s)]


def natural_repeats(
    model: Backend,
    seq_len: int,
    batch: int = 16,
    *,
    seed: int = 0,
    prepend_bos: bool | None = None,
) -> RepeatedTokens:
    """Repeated sequences of real words from the model's vocabulary (``" river stone blue ... river stone blue"``).

    Random tokens are far from the text a model was trained on; these sequences are readable words in random
    order. Each word is a single vocabulary token with a leading space, and each row is checked to tokenise back to
    exactly its tokens, so :attr:`RepeatedTokens.texts` can be given to text-only tools (TransformerLens's
    ``detect_head``) with the same result.

    Args:
        model: a model with a tokeniser.
        seq_len: words per repeat (>= 2).
        batch: number of sequences.
        seed: sampler seed.
        prepend_bos: start rows with BOS; default the model's convention.

    Returns:
        A :class:`RepeatedTokens` with ``texts`` filled.

    Raises:
        DatasetError: bad sizes, too long for the context, or too few word tokens in the vocabulary.
        TokenizationError: the model has no tokeniser.
    """
    _check_int("seq_len", seq_len, 2)
    _check_int("batch", batch, 1)
    bos = _resolve_bos(model, prepend_bos, None)
    offset = 0 if bos is None else 1
    _check_context(model, offset + 2 * seq_len, f"a repeated sequence of seq_len {seq_len}")
    try:
        words = _word_tokens(model)
        words = [w for w in words if model.encode(model.to_str_tokens(torch.tensor([w]))[0]) == [w]]
    except Exception as exc:
        raise TokenizationError(f"natural_repeats needs a model with a tokeniser ({exc})") from None
    if len(words) < 4 * seq_len:
        raise DatasetError(f"{model.info.name}'s vocabulary has {len(words)} single-token words, too few for "
                           f"seq_len {seq_len}; use repeated_random_tokens")
    pool = torch.tensor(words)
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rows, texts = [], []
    attempts = 0
    while len(rows) < batch:
        attempts += 1
        if attempts > 20 * batch:
            raise DatasetError("could not build word sequences that tokenise back to themselves")
        seg = pool[torch.randperm(len(pool), generator=g)[:seq_len]]
        ids = seg.tolist()
        text = "".join(model.to_str_tokens(seg)) * 2
        if model.encode(text) != ids * 2:
            continue  # a merge across word boundaries: draw again
        rows.append(([bos] if bos is not None else []) + ids * 2)
        texts.append(text)
    meta = {"kind": "natural", "seed": seed, "n_words": len(words)}
    return RepeatedTokens(tokens=torch.tensor(rows, dtype=torch.long), seq_len=seq_len, bos_offset=offset,
                          texts=texts, metadata=meta)


def prefix_probe(
    model: Backend,
    prefix_lengths: tuple[int, ...] = (1, 2, 4, 8, 16),
    batch: int = 16,
    *,
    gap: int = 4,
    seed: int = 0,
    token_range: tuple[int, int] | None = None,
    prepend_bos: bool | None = None,
    bos_token_id: int | None = None,
) -> PrefixProbe:
    """Sequences probing how long a matching prefix an induction head needs (see :class:`PrefixProbe`).

    All batches have the same length and the same query and target positions, so only the length of the matching
    prefix changes. The distance between the two occurrences of the current token is ``max(prefix_lengths) + 1 +
    gap``, and the sequence is ``bos + max(prefix_lengths) + distance`` tokens long.

    Args:
        model: the model the tokens are for.
        prefix_lengths: numbers of matching tokens ending at the current token (1 = the current token only);
            each >= 1, sorted ascending, distinct.
        batch: sequences per prefix length (the same random filler across lengths for a given row).
        gap: random tokens between the target ``y`` and the second copy, beyond the space the longest prefix needs.
        seed, token_range, prepend_bos, bos_token_id: as in :func:`repeated_random_tokens`.

    Returns:
        A :class:`PrefixProbe`.

    Raises:
        DatasetError: an empty, unsorted or non-positive list of prefix lengths (e.g. a zero-length prefix), a
            negative gap, or a sequence longer than the model's context.
    """
    lengths = list(prefix_lengths)
    if not lengths:
        raise DatasetError("'prefix_lengths' must not be empty")
    for n in lengths:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise DatasetError(f"prefix lengths must be ints >= 1 (1 = only the current token matches) (got {n!r})")
    if lengths != sorted(set(lengths)):
        raise DatasetError(f"'prefix_lengths' must be distinct and ascending (got {lengths})")
    _check_int("gap", gap, 0)
    _check_int("batch", batch, 1)
    lo, hi = _token_range(model, token_range)
    bos = _resolve_bos(model, prepend_bos, bos_token_id)
    offset = 0 if bos is None else 1
    n_max = lengths[-1]
    distance = n_max + 1 + gap
    n_pos = offset + n_max + distance
    _check_context(model, n_pos, f"a prefix probe with prefix lengths up to {n_max}")
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    body = n_pos - offset
    fresh = _sample_distinct(g, batch, body, lo, hi, bos)  # [batch, body]: all distinct
    dest = n_pos - 1
    target = n_pos - distance
    out = []
    for n in lengths:
        t = fresh.clone()
        # earlier copy: s_1..s_n ending at the earlier occurrence of the current token (position dest - distance)
        earlier_end = dest - distance - offset  # index into the body
        seg = t[:, earlier_end - n + 1: earlier_end + 1]
        t[:, body - n:] = seg
        if bos is not None:
            t = torch.cat([torch.full((batch, 1), bos, dtype=torch.long), t], dim=1)
        out.append(t)
    meta = {"seed": seed, "gap": gap, "distance": distance, "token_range": [lo, hi]}
    return PrefixProbe(tokens=torch.stack(out), prefix_lengths=lengths, dest=dest, target=target,
                       bos_offset=offset, metadata=meta)
