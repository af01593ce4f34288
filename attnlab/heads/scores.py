"""Attention-pattern scores of every head: previous-token, duplicate-token and induction scores.

Context:
    Three kinds of attention head are recognised from where they attend on a sequence of random tokens repeated
    twice (Olsson et al. 2022, "In-context Learning and Induction Heads", section "Definitions"; Elhage et al.
    2021, "A Mathematical Framework for Transformer Circuits", section "Induction heads"; the IOI circuit of Wang et
    al. 2022, arXiv 2211.00593, section 3, uses all three):

    - a *previous-token* head attends from each token to the one before it (offset -1);
    - a *duplicate-token* head attends from a token to its earlier occurrence (offset ``-L`` in the second repeat,
      ``L`` = length of one repeat);
    - an *induction* head attends from a token to the token *after* its earlier occurrence (offset ``-(L - 1)``),
      then copies it: the mechanism of in-context copying. In a model without MLPs it is built by K-composition
      with a previous-token head of an earlier layer, whose output tells the key at ``p`` which token was at
      ``p - 1``.

Definitions (``definition=``):
    ``"diagonal"`` (default): the standard stripe definitions. For each sequence, the mean attention probability at
    the offset, over the destination positions where the offset is meaningful: every position after the first for
    the previous-token score; the ``L`` positions of the second repeat for the duplicate-token and induction scores.
    A perfect head scores 1, a head that never attends there 0. Needs a
    :class:`~attnlab.tasks.induction.RepeatedTokens`.

    ``"detect_head"``: exactly TransformerLens's ``head_detector.detect_head(..., error_measure="mul")``: the
    detection pattern marks, for every destination, the source positions holding the previous token / an earlier
    copy of the same token / the token after an earlier copy (found by token equality, so it works on any text), and
    the score is ``sum(pattern * detection) / sum(pattern)`` over the whole ``[dest, src]`` matrix, i.e. the
    fraction of *all* the head's attention (every row counted, including rows with nothing to detect) that lands on
    the detected positions; ``exclude_bos`` / ``exclude_current_token`` first zero the BOS column / the diagonal.
    Over a batch, the score is the mean of per-sequence scores, as ``detect_head`` does for a list of strings. On a
    repeated sequence of distinct tokens with BOS the two definitions differ only by that normalisation:
    ``detect_head = diagonal * L / pos`` for duplicate and induction scores (``(pos - 1) / pos`` for previous-token).

    All heads of all layers are scored from one batched forward pass, instead of one pass per string and a Python
    loop over heads (``benchmarks/bench_heads.py`` measures the difference).
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import AttnlabError, DatasetError
from attnlab.heads.patterns import attention_patterns
from attnlab.heads.results import HeadScores
from attnlab.progress import Progress, step_progress
from attnlab.tasks.induction import RepeatedTokens

__all__ = ["DEFINITIONS", "SCORE_KINDS", "attention_patterns", "detection_masks", "pattern_scores", "score_heads"]

#: the score kinds, in the order of :attr:`HeadScores.kinds <attnlab.heads.results.HeadScores>`
SCORE_KINDS = ("previous_token", "duplicate_token", "induction")
#: score definitions (see the module docstring)
DEFINITIONS = ("diagonal", "detect_head")


def detection_masks(
    tokens: Int[Tensor, "batch pos"],
    *,
    definition: str,
    seq_len: int | None = None,
    bos_offset: int = 0,
) -> dict[str, Float[Tensor, "batch dest_pos src_pos"]]:
    """The 0/1 detection pattern of each score kind, per sequence.

    Args:
        tokens: Int[batch, pos].
        definition: ``"diagonal"`` (needs ``seq_len`` and ``bos_offset``: the layout of a repeated sequence) or
            ``"detect_head"`` (token equality, as TransformerLens's ``get_*_detection_pattern``).
        seq_len: ``L`` for ``"diagonal"``.
        bos_offset: 1 if the rows start with BOS (``"diagonal"``).

    Returns:
        ``{kind: Float[batch, dest_pos, src_pos]}``, lower triangular.
    """
    batch, n = tokens.shape
    prev = torch.zeros(n, n)
    prev[torch.arange(1, n), torch.arange(n - 1)] = 1.0
    if definition == "diagonal":
        if seq_len is None:
            raise AttnlabError("definition='diagonal' needs seq_len")
        dup = torch.zeros(n, n)
        ind = torch.zeros(n, n)
        dest = torch.arange(bos_offset + seq_len, bos_offset + 2 * seq_len)
        dup[dest, dest - seq_len] = 1.0
        ind[dest, dest - seq_len + 1] = 1.0
        masks = {"previous_token": prev, "duplicate_token": dup, "induction": ind}
        return {k: v.expand(batch, n, n) for k, v in masks.items()}
    if definition == "detect_head":
        eq = (tokens[:, :, None] == tokens[:, None, :]).float()  # [batch, dest, src]
        dup = torch.tril(eq, diagonal=-1)  # earlier copies of the same token (the current one excluded)
        ind = torch.zeros_like(dup)
        ind[:, :, 1:] = dup[:, :, :-1]  # the token after each earlier copy ...
        ind = torch.tril(ind)  # ... that is not in the future
        return {"previous_token": prev.expand(batch, n, n), "duplicate_token": dup, "induction": ind}
    raise AttnlabError(f"'definition' must be one of {DEFINITIONS} (got {definition!r})")


def pattern_scores(
    patterns: Float[Tensor, "batch layer head_index dest_pos src_pos"],
    masks: dict[str, Float[Tensor, "batch dest_pos src_pos"]],
    *,
    definition: str,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> dict[str, Float[Tensor, "batch layer head_index"]]:
    """Per-sequence scores of every head from its attention pattern and the detection masks.

    ``"diagonal"``: mean over masked destination rows of the attention on the mask. ``"detect_head"``:
    ``sum(A * M) / sum(A)`` with the BOS column / diagonal of ``A`` zeroed first if asked.
    """
    a = patterns.float()
    if definition == "detect_head":
        if exclude_bos or exclude_current_token:
            a = a.clone()
            if exclude_bos:
                a[..., 0] = 0.0
            if exclude_current_token:
                a.diagonal(dim1=-2, dim2=-1).zero_()
        denom = a.sum((-2, -1))
        return {k: torch.einsum("blhqk,bqk->blh", a, m) / denom for k, m in masks.items()}
    out = {}
    for k, m in masks.items():
        rows = (m.sum(-1) > 0).float().sum(-1)  # [batch] destinations with something to detect
        out[k] = torch.einsum("blhqk,bqk->blh", a, m) / rows[:, None, None]
    return out


def score_heads(
    model: Backend,
    data: RepeatedTokens | Int[Tensor, "batch pos"],
    *,
    definition: str = "diagonal",
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    batch_size: int = 32,
    example: int = 0,
    progress: "bool | Progress" = False,
) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head, with their spread over sequences.

    Args:
        model: any backend.
        data: repeated sequences (:func:`~attnlab.tasks.induction.repeated_random_tokens`); with
            ``definition="detect_head"`` any Int[batch, pos] token tensor works too.
        definition: ``"diagonal"`` or ``"detect_head"`` (see the module docstring).
        exclude_bos, exclude_current_token: as in ``detect_head`` (``"detect_head"`` only).
        batch_size: sequences per forward pass.
        example: the row whose attention patterns are kept for display (the gallery's pattern view).
        progress: a tqdm bar over the forward passes (True; one pass per ``batch_size`` sequences), none (False), or
            a shared :class:`~attnlab.progress.Progress` to tick.

    Returns:
        A :class:`~attnlab.heads.results.HeadScores` (scores Float[kind, layer, head_index] and per-sequence
        Float[kind, batch, layer, head_index]).

    Raises:
        AttnlabError: unknown definition, or exclusion flags with ``"diagonal"``.
        DatasetError: a token tensor where ``"diagonal"`` needs repeated sequences; sequences longer than the
            model's context; token ids outside the vocabulary.

    Example:
        >>> data = repeated_random_tokens(model, 10, batch=8)  # doctest: +SKIP
        >>> scores = score_heads(model, data)  # doctest: +SKIP
        >>> scores.top("induction", 3)  # doctest: +SKIP
    """
    if definition not in DEFINITIONS:
        raise AttnlabError(f"'definition' must be one of {DEFINITIONS} (got {definition!r})")
    if definition == "diagonal" and (exclude_bos or exclude_current_token):
        raise AttnlabError("exclude_bos and exclude_current_token apply to definition='detect_head' only")
    if isinstance(data, RepeatedTokens):
        tokens, task = data.tokens, data.describe()
    else:
        if definition == "diagonal":
            raise DatasetError("definition='diagonal' needs RepeatedTokens (it reads the repeat length); build them "
                               "with attnlab.tasks.induction.repeated_random_tokens or use definition='detect_head'")
        tokens, task = data, {"task": "tokens", "n_sequences": int(data.shape[0])}
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise DatasetError(f"tokens must be [batch, pos] with batch >= 1 and pos >= 2 (got {tuple(tokens.shape)})")
    if tokens.shape[1] > model.info.n_ctx:
        raise DatasetError(f"sequences are {tokens.shape[1]} tokens long, longer than {model.info.name}'s context "
                           f"of {model.info.n_ctx} tokens")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.info.d_vocab:
        raise DatasetError(f"token ids must be in [0, {model.info.d_vocab}) (got {int(tokens.min())}.."
                           f"{int(tokens.max())})")
    if not 0 <= example < tokens.shape[0]:
        raise DatasetError(f"'example' must be in [0, {tokens.shape[0]}) (got {example})")
    seq_len = data.seq_len if isinstance(data, RepeatedTokens) else None
    bos_offset = data.bos_offset if isinstance(data, RepeatedTokens) else 0

    chunks: dict[str, list[Tensor]] = {k: [] for k in SCORE_KINDS}
    example_pattern = None
    starts = range(0, tokens.shape[0], batch_size)
    tracker, owned = step_progress(progress, total=len(starts), desc="scoring heads")
    try:
        for start in starts:
            part = tokens[start:start + batch_size]
            patterns = attention_patterns(model, part)
            masks = detection_masks(part, definition=definition, seq_len=seq_len, bos_offset=bos_offset)
            scores = pattern_scores(patterns, masks, definition=definition, exclude_bos=exclude_bos,
                                    exclude_current_token=exclude_current_token)
            for k in SCORE_KINDS:
                chunks[k].append(scores[k])
            if start <= example < start + part.shape[0]:
                example_pattern = patterns[example - start].clone()
            tracker.update()
    finally:
        if owned:
            tracker.close()
    per_sequence = torch.stack([torch.cat(chunks[k]) for k in SCORE_KINDS])  # [kind, batch, layer, head]
    return HeadScores(
        kinds=list(SCORE_KINDS),
        scores=per_sequence.mean(1),
        per_sequence=per_sequence,
        definition=definition,
        example_tokens=[int(t) for t in tokens[example]],
        example_str_tokens=model.to_str_tokens(tokens[example]),
        example_patterns=example_pattern,
        model=model.info.to_dict(),
        task=task,
        settings={"definition": definition, "exclude_bos": exclude_bos,
                  "exclude_current_token": exclude_current_token, "example": example},
    )
