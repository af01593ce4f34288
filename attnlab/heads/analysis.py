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
from attnlab.progress import Progress, ProgressCallback
from attnlab.tasks.induction import RepeatedTokens, prefix_probe, repeated_random_tokens

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
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
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
        progress: show one tqdm bar over every forward pass of the analysis (scoring, ablation, prefix curves,
            copying); each step adds its passes to the total when it starts, so the total grows as the steps begin.
        on_progress: called as ``on_progress(done, total)`` after every pass (and when the total grows), e.g. to
            drive a widget's progress line.

    Returns:
        A :class:`~attnlab.heads.results.HeadScores` with ablation, prefix curves and copying attached.
    """
    data = repeated_random_tokens(model, seq_len, batch, seed=seed, token_range=token_range)
    with Progress("induction analysis", bar=progress, on_progress=on_progress) as tracker:
        return _induction_analysis(model, data, seed=seed, ablate=ablate, methods=methods,
                                   prefix_lengths=prefix_lengths, prefix_batch=prefix_batch, batch=batch,
                                   copying=copying, token_range=token_range, metric=metric, tracker=tracker)


def _induction_analysis(model: Backend, data: RepeatedTokens, *, seed: int, ablate, methods: Sequence[str],
                        prefix_lengths: Sequence[int] | None, prefix_batch: int | None, batch: int, copying: bool,
                        token_range: tuple[int, int] | None, metric: MetricLike | None,
                        tracker: Progress) -> HeadScores:
    """:func:`induction_analysis` on its repeated sequences ``data``, every pass ticking ``tracker``."""
    result = score_heads(model, data, progress=tracker)
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
        result = result.with_ablation(ablation_effects(model, data, heads, methods=methods, metric=metric,
                                                       progress=tracker))
    if prefix_lengths is not None:
        gap = 4
        fits = [n for n in prefix_lengths if data.bos_offset + 2 * n + 1 + gap <= model.info.n_ctx]
        if fits:
            probe = prefix_probe(model, tuple(fits), prefix_batch or batch, seed=seed + 1, gap=gap,
                                 token_range=token_range)
            result = result.with_prefix(prefix_curves(model, probe, progress=tracker))
    if copying:
        try:
            result = result.with_copying(copying_scores(model, data, progress=tracker)[0])
        except BackendError:
            pass
    return result
