"""The whole induction-head analysis in one call: scores, causal checks, copying and prefix-length curves.

See :mod:`attnlab.heads` for the pieces and the papers they follow.
"""

from collections.abc import Iterable, Sequence

from attnlab.backends.base import Backend
from attnlab.errors import BackendError
from attnlab.heads.attribution import copying_scores
from attnlab.heads.prefix import prefix_curves
from attnlab.heads.results import HeadScores
from attnlab.heads.scores import score_heads
from attnlab.heads.verification import ablation_effects
from attnlab.metrics import MetricLike
from attnlab.tasks.induction import prefix_probe, repeated_random_tokens

__all__ = ["induction_analysis"]


def induction_analysis(
    model: Backend,
    *,
    seq_len: int = 10,
    batch: int = 8,
    seed: int = 0,
    ablate: int | Iterable[tuple[int, int]] | None = 6,
    methods: Sequence[str] = ("zero", "mean"),
    prefix_lengths: Sequence[int] | None = (1, 2, 4, 8, 16),
    prefix_batch: int | None = None,
    copying: bool = True,
    token_range: tuple[int, int] | None = None,
    metric: MetricLike | None = None,
) -> HeadScores:
    """Score every head on repeated random tokens and verify the candidates, in one call.

    Args:
        model: any backend (copying scores need the weights, :meth:`~attnlab.backends.base.Backend.weights`, and
            are skipped on backends that do not expose them, e.g. remote ones).
        seq_len, batch, seed, token_range: the repeated sequences
            (:func:`~attnlab.tasks.induction.repeated_random_tokens`).
        ablate: which heads to ablate: an int k ablates the top k heads by induction score, the top k by
            previous-token score and k other heads chosen at random (seeded) as controls; a list of (layer, head)
            pairs ablates those; None skips ablation; ``-1`` ablates every head.
        methods: ablation methods.
        prefix_lengths: prefix lengths of the prefix-length probe; None skips it. Lengths whose probe would not fit in
            the model's context are dropped.
        prefix_batch: sequences per prefix length (default ``batch``).
        copying: compute the direct logit attribution to the copied token.
        metric: what the ablations measure: None (default) for the second-repeat loss in nats per token, or a metric
            (see :func:`~attnlab.heads.verification.ablation_effects`).

    Returns:
        A :class:`~attnlab.heads.results.HeadScores` with ablation, prefix curves and copying attached.
    """
    data = repeated_random_tokens(model, seq_len, batch, seed=seed, token_range=token_range)
    result = score_heads(model, data)
    if ablate is not None:
        if isinstance(ablate, int):
            if ablate < 0:
                heads = None
            else:
                import random

                chosen = result.ranking("induction")[:ablate] + result.ranking("previous_token")[:ablate]
                chosen = list(dict.fromkeys(chosen))
                rest = [h for h in result.ranking("induction") if h not in chosen]
                chosen += random.Random(seed).sample(rest, min(ablate, len(rest)))
                heads = chosen
        else:
            heads = list(ablate)
        result = result.with_ablation(ablation_effects(model, data, heads, methods=methods, metric=metric))
    if prefix_lengths is not None:
        gap = 4
        fits = [n for n in prefix_lengths if data.bos_offset + 2 * n + 1 + gap <= model.info.n_ctx]
        if fits:
            probe = prefix_probe(model, tuple(fits), prefix_batch or batch, seed=seed + 1, gap=gap,
                                 token_range=token_range)
            result = result.with_prefix(prefix_curves(model, probe))
    if copying:
        try:
            result = result.with_copying(copying_scores(model, data)[0])
        except BackendError:
            pass
    return result
