"""The batched activation-patching engine.

Activation patching (Meng et al. 2022; Wang et al. 2022, section 3; practice in Heimersheim & Nanda 2024,
arXiv 2404.15255) runs a model on one input while overwriting one activation with its value from another input, and
measures how much the output moves. *Denoising* patches clean activations into the corrupted run: a component whose
clean value restores the clean answer is *sufficient* (given the rest of the corrupted run) to carry it. *Noising*
patches corrupted activations into the clean run: a component whose corruption destroys the answer is *necessary*.

The reference implementation (TransformerLens ``patching.py``) runs one full forward pass of the batch per patched
component. This engine computes the same numbers with far less work:

1. Two baseline runs record every activation a sweep needs (the source run's activations to patch in and the target
   run's residual stream entering each block).
2. A patch at block L cannot change blocks before L, so every patched run *starts at block L* from the target run's
   recorded residual stream (``start_layer``): on average half the blocks are skipped.
3. Many patched variants (all heads of a layer, all positions ...) share one batched forward pass: variant v occupies
   rows [v*batch, (v+1)*batch) and gets its own entries of one vectorised :class:`~attnlab.backends.Intervention`.
   The number of variants per pass is chosen from a memory budget.
4. The metric reads only the final position, so only that position is unembedded; a built-in metric is reduced where
   the model runs (:class:`~attnlab.backends.base.Reduction`), so a remote pass returns one number per row.
5. A variant whose source and target activations are bitwise equal for every prompt (e.g. positions before the first
   token the corruption changes: attention is causal) cannot change the output: it is not run, and its patched
   metric is the target baseline.
6. *Prefix reuse* (backends with ``Capability.PREFIX_REUSE``). A patch at block L and position p cannot change any
   position before p, at any block: attention is causal. So a patched pass computes only the positions from p on
   (p = the patched position, or for a head over all positions the first position where its source and target
   outputs differ), from block L on, attending to the target run's own keys and values for the positions before p,
   recorded once in the target baseline run (:class:`~attnlab.backends.base.KVPrefix`), at their true positions
   (rotary phases included). Variants of a block are sorted by their first position and split into passes that
   minimise the positions computed plus a per-pass overhead (:func:`_group_by_first_position`), within the memory
   budget (which counts the key/value cache: :func:`attnlab.memory.suffix_row_bytes`). TransformerLens, pyvene and
   nnsight loops recompute every position of every block for every patch.

The metric is a parameter (:mod:`attnlab.metrics`: logit difference by default, KL divergence from the clean run,
probability, log-probability, accuracy, or a callable). Results equal TransformerLens's ``get_act_patch_*`` functions
given the same metric, to float32 precision (tests/test_patching_parity.py).

The sweep is three steps: :func:`_plan` (validation, baselines, the metric checked on them, live variants, batching),
:func:`_execute` (the patched passes, streamed through :meth:`Backend.run_many`) and :func:`_assemble` (the result).
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab import interrupts, memory
from attnlab.backends.base import Backend, Capability, Intervention, Reduction, RunSpec
from attnlab.errors import SiteError
from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import Direction, Metric, MetricLike, check_direction, get_metric, normalise
from attnlab.results import PatchingResult
from attnlab.sites import Site, SiteKind, as_int, index_list
from attnlab.tasks.base import PatchingDataset, check_dataset

__all__ = ["COMPONENTS", "ComponentSpec", "run_sweep"]


@dataclass(frozen=True)
class ComponentSpec:
    """What a sweep patches: activation ``kind``, and whether it iterates over heads and/or positions."""

    name: str
    kind: SiteKind
    by_head: bool
    by_pos: bool
    description: str

    @property
    def dims(self) -> tuple[str, ...]:
        return ("layer",) + (("head",) if self.by_head else ()) + (("pos",) if self.by_pos else ())


COMPONENTS: dict[str, ComponentSpec] = {
    spec.name: spec
    for spec in (
        ComponentSpec("resid_pre", SiteKind.RESID_PRE, False, True, "residual stream entering each block"),
        ComponentSpec("attn_out", SiteKind.ATTN_OUT, False, True, "attention layer output"),
        ComponentSpec("mlp_out", SiteKind.MLP_OUT, False, True, "MLP layer output"),
        ComponentSpec("heads", SiteKind.Z, True, False, "each attention head's output (all positions)"),
        ComponentSpec("heads_by_pos", SiteKind.Z, True, True, "each attention head's output at each position"),
    )
}

_DEFAULT_BUDGET_MB = DEFAULT_BUDGET_MB  # the one default (attnlab.memory)


def run_sweep(
    model: Backend,
    dataset: PatchingDataset,
    component: str,
    *,
    direction: Direction = "denoising",
    metric: MetricLike = "logit_diff",
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    memory_budget_mb: float = _DEFAULT_BUDGET_MB,
    progress: bool = True,
    on_pass: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prefix_reuse: bool = True,
) -> PatchingResult:
    """Patch every (layer[, head][, position]) of one component and measure the normalised metric.

    Args:
        model: any :class:`~attnlab.backends.Backend`.
        dataset: clean/corrupted pairs (e.g. :func:`attnlab.tasks.ioi.ioi_dataset`).
        component: one of ``"resid_pre"``, ``"attn_out"``, ``"mlp_out"`` ([layer, pos]), ``"heads"``
            ([layer, head], all positions at once) or ``"heads_by_pos"`` ([layer, head, pos]).
        direction: ``"denoising"`` (clean activations into the corrupted run) or ``"noising"`` (corrupted into clean).
        metric: what to measure at END: ``"logit_diff"`` (default), ``"kl_div"`` (KL divergence from the clean run's
            distribution), ``"prob"``, ``"logprob"``, ``"accuracy"``, a :class:`~attnlab.metrics.Metric`, or a
            callable ``fn(logits, answers, reference) -> Float[rows]`` (see :class:`~attnlab.metrics.Metric`).
            Built-in metrics are computed where the model runs (on an NDIF server a patched row returns one number,
            not its logits); custom ones from the returned logits.
        layers, heads, positions: restrict the sweep (default: all).
        memory_budget_mb: peak memory the batched passes may use, in MiB; sets how many variants share a pass.
        progress: show a tqdm progress bar.
        on_pass: called as ``on_pass(done, total)`` after each batched forward pass (e.g. to drive a widget's
            progress bar); ``total`` counts the patched passes, not the two baseline runs.
        should_stop: polled after each pass; when it returns True the sweep stops as if interrupted (the finished
            cells are kept, the rest NaN, ``complete == False``). Used by the Explorer's Cancel button.
        prefix_reuse: run each patched pass over the positions it can change only, attending to the target run's
            recorded keys and values for the positions before (point 6 of the module docstring), where the backend
            can (``Capability.PREFIX_REUSE``); the same numbers, less compute. ``False`` runs every position.
            ``result.settings["prefix_reuse"]`` records what was reused.

    Returns:
        A :class:`~attnlab.results.PatchingResult` with normalised scores (0 = no effect; denoising 1 = fully
        restored, noising -1 = fully destroyed) and the per-prompt patched metric. Interrupting the sweep
        (KeyboardInterrupt) returns the rows finished so far, the rest NaN, with ``result.complete == False``; the
        next sweep started in the same cell or script then raises KeyboardInterrupt (:mod:`attnlab.interrupts`).

    Raises:
        SiteError: unknown component, layer/head/position out of range.
        DatasetError: the dataset does not fit the model (context length, vocabulary), or was tokenised by another
            tokenizer (:func:`attnlab.tasks.base.check_dataset`).
        ArgumentTypeError: ``model`` is not a loaded model (a name: load it with attnlab.load_model first).
        MetricError: an unknown or broken metric (wrong shape, non-finite values), or clean and corrupted baselines
            that are equal; all checked on the two baseline runs, before any patched pass.
    """
    interrupts.raise_pending(f"the {component} sweep")
    plan = _plan(model, dataset, component, direction, get_metric(metric), layers, heads, positions,
                 memory_budget_mb, bool(prefix_reuse))
    return _assemble(model, dataset, plan, *_execute(model, plan, progress, on_pass, should_stop))


@dataclass
class _Plan:
    """Everything a sweep decided before its patched passes: baselines, live variants, batching."""

    spec: ComponentSpec
    direction: str
    metric: Metric
    layers: list[int]
    heads: list[int] | None
    positions: list[int] | None
    baselines: tuple[float, float]
    target_metric: Tensor
    reference: Tensor | None
    variants_by_layer: list[tuple[int, list[tuple[int | None, int | None]]]]
    max_variants: int
    source: object
    start_resid: dict
    target_tokens: Tensor
    answers: Tensor
    end: Tensor
    memory_budget_mb: float
    t0: float
    passes: list[tuple[int, int, list[tuple[int | None, int | None]]]]  # (layer, first position run, variants)
    kv: object  # the target run's KVPrefix (prefix reuse), or None
    reuse: dict  # what prefix reuse did (result.settings["prefix_reuse"])
    baselines_per_prompt: dict | None = None  # {"clean": [prompt], "corrupted": [prompt]} metric values

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(x) for x in (self.layers, self.heads, self.positions) if x is not None)

    @property
    def n_passes(self) -> int:
        return len(self.passes)

    def cell(self, layer: int, h: int | None, p: int | None) -> tuple:
        idx = (self.layers.index(layer),)
        if self.heads is not None:
            idx += (self.heads.index(h),)
        if self.positions is not None:
            idx += (self.positions.index(p),)
        return idx


def _plan(model, dataset, component, direction, metric, layers, heads, positions, memory_budget_mb,
          prefix_reuse: bool = True) -> _Plan:
    """Validate, run the two baselines, check the metric on them, and find the variants that can change anything."""
    check_dataset(model, dataset, analysis="the patching sweep")
    spec = COMPONENTS.get(component)
    if spec is None:
        raise SiteError(f"'component' must be one of {sorted(COMPONENTS)} (got {component!r})")
    check_direction(direction)
    info = model.info
    layers = _check_index("layers", layers, info.n_layers)
    heads = _check_index("heads", heads, info.n_heads) if spec.by_head else None
    positions = _check_index("positions", positions, dataset.n_pos) if spec.by_pos else None
    for layer in layers[:1]:
        model.check_site(Site(spec.kind, layer))
    memory_budget_mb = memory.check_budget_value(memory_budget_mb)

    t0 = time.perf_counter()
    clean, corrupted = dataset.clean_tokens, dataset.corrupted_tokens
    source_tokens, target_tokens = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    end, answers = dataset.end, dataset.answers

    # 1. baselines: source activations to patch in, target residual stream to start from
    act_sites = [Site(spec.kind, layer) for layer in layers]
    resid_sites = [Site(SiteKind.RESID_PRE, layer) for layer in layers if layer > 0]
    # a built-in metric without a clean reference is reduced where the model runs for the baselines too
    reduce = Reduction(metric.name, answers) if metric.builtin and not metric.needs_reference else None
    reuse = prefix_reuse and model.supports(Capability.PREFIX_REUSE)
    # with prefix reuse both baselines run the cached path (a key/value cache can change the attention kernel, so
    # source and target activations stay comparable bit for bit where the prompts agree)
    kv_kwargs = {"record_kv": True} if reuse else {}
    source = model.run(source_tokens, cache=act_sites, logits_at=end, reduce=reduce, **kv_kwargs)
    target = model.run(target_tokens, cache=resid_sites + (act_sites if spec.kind is not SiteKind.RESID_PRE else []),
                       logits_at=end, reduce=reduce, **kv_kwargs)
    source.kv = None  # only the target run's keys and values are attended to
    clean_run, corrupted_run = (source, target) if direction == "denoising" else (target, source)
    if reduce is not None:
        reference, clean_m, corrupted_m = None, clean_run.metric, corrupted_run.metric
    else:
        reference, clean_m, corrupted_m = metric.baselines(clean_run.logits, corrupted_run.logits, answers)
    target_m = corrupted_m if direction == "denoising" else clean_m
    baselines = float(clean_m.mean()), float(corrupted_m.mean())
    normalise(torch.tensor(0.0), *baselines, direction)  # fail now, not after the sweep

    # 2. the variants of each layer, and which of them can change anything at all
    start_resid = {layer: target.cache[Site(SiteKind.RESID_PRE, layer)] for layer in layers if layer > 0}
    if spec.kind is SiteKind.RESID_PRE:
        target_acts = dict(start_resid)
        if 0 in layers:
            site0 = Site(SiteKind.RESID_PRE, 0)
            target_acts[0] = model.run(target_tokens, cache=[site0], stop_layer=1).cache[site0]
    else:
        target_acts = {layer: target.cache[Site(spec.kind, layer)] for layer in layers}
    variants_by_layer = []
    first: dict[tuple, int] = {}  # (layer, head, pos) -> the first position the variant can change
    last_first = int(end.min())  # a pass must reach every row's END
    for layer in layers:
        src, tgt = source.cache[Site(spec.kind, layer)], target_acts[layer]
        live = [(h, p) for h in (heads if heads is not None else [None])
                for p in (positions if positions is not None else [None]) if not _slices_equal(src, tgt, h, p)]
        variants_by_layer.append((layer, live))
        if reuse:
            for h, p in live:
                first[(layer, h, p)] = min(_first_changed(src, tgt, h, p), last_first)
    n_pos, batch = dataset.n_pos, len(dataset)
    max_variants = memory.max_variants(info, n_pos, memory_budget_mb, rows_per_variant=batch)
    passes, computed, full = [], 0, 0
    for layer, live in variants_by_layer:
        blocks = info.n_layers - layer
        if not reuse:
            passes += [(layer, 0, live[i:i + max_variants]) for i in range(0, len(live), max_variants)]
            continue
        budget_rows = memory_budget_mb * 2**20 / batch

        def cap(p0: int, blocks: int = blocks) -> int:  # variants of one pass starting at position p0
            return max(1, int(budget_rows // memory.suffix_row_bytes(info, n_pos - p0, p0, blocks)))

        for p0, chunk in _group_by_first_position(live, [first[(layer, h, p)] for h, p in live], cap,
                                                  n_pos=n_pos, batch=batch):
            passes.append((layer, p0, chunk))
            computed += len(chunk) * batch * (n_pos - p0) * blocks
            full += len(chunk) * batch * n_pos * blocks
    kv = target.kv if reuse else None
    if reuse:
        reuse_info = {"enabled": True, "recorded_kv_mb": round(kv.nbytes / 2**20, 3),
                      "block_positions_run": computed, "block_positions_without_reuse": full,
                      "fraction_run": round(computed / full, 4) if full else 1.0}
    else:
        why = ("turned off (prefix_reuse=False)" if not prefix_reuse else
               f"the {info.backend!r} backend cannot run suffix passes on {info.name} (its attention takes no "
               "key/value cache)")
        reuse_info = {"enabled": False, "reason": why}
    return _Plan(spec, direction, metric, layers, heads, positions, baselines, target_m, reference,
                 variants_by_layer, max_variants, source, start_resid, target_tokens, answers, end,
                 memory_budget_mb, t0, passes, kv, reuse_info,
                 baselines_per_prompt={"clean": [float(x) for x in clean_m.reshape(-1).tolist()],
                                       "corrupted": [float(x) for x in corrupted_m.reshape(-1).tolist()]})


#: The fixed cost of one forward pass, in positions of the base batch: the module calls, hooks and kernel launches a
#: pass pays whatever its size. A heuristic, measured on 2 CPU cores: suffix passes of SmolLM2 from block 15 with 144
#: rows cost 0.21 s plus 0.083 s per suffix position, so a pass costs what about 24 more positions of a 16-prompt
#: batch cost. It only steers how variants share passes, never what they compute.
_PASS_OVERHEAD_POSITIONS = 24


def _group_by_first_position(variants: list, firsts: list[int], cap: Callable[[int], int], *, n_pos: int,
                             batch: int) -> list[tuple[int, list]]:
    """Split one block's variants into passes: each pass runs from the smallest first position of its variants.

    The variants are sorted by first position (latest first) and cut into contiguous groups that minimise the
    positions computed, ``len(group) * batch * (n_pos - min first) + overhead``, with at most ``cap(p0)`` variants
    in a pass starting at ``p0`` (dynamic programming over the cut points; a few hundred variants at most).

    Returns:
        ``[(p0, variants), ...]``.
    """
    order = sorted(range(len(variants)), key=lambda i: -firsts[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of the first j sorted variants
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        p0 = firsts[order[j - 1]]  # the smallest first position of any group ending at j
        limit = cap(p0)
        for i in range(max(0, j - limit), j):
            cost = best[i] + (j - i) * batch * (n_pos - p0) + _PASS_OVERHEAD_POSITIONS * batch
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        i = cut[j]
        members = [order[k] for k in range(i, j)]
        groups.append((firsts[order[j - 1]], sorted((variants[k] for k in members), key=_variant_key)))
        j = i
    return groups[::-1]


def _variant_key(v: tuple) -> tuple:
    return tuple(-1 if x is None else x for x in v)


def _first_changed(src: Tensor, tgt: Tensor, head: int | None, pos: int | None) -> int:
    """The first position a variant's patch changes: its position, or for a whole-sequence patch the first position
    where source and target differ for any prompt."""
    if pos is not None:
        return pos
    a, b = (src[:, :, head], tgt[:, :, head]) if head is not None else (src, tgt)
    differs = (a != b).reshape(a.shape[0], a.shape[1], -1).any(-1).any(0)
    return int(differs.nonzero()[0, 0]) if bool(differs.any()) else 0


def _execute(model, plan: _Plan, progress, on_pass, should_stop) -> tuple[Tensor, list[int], bool, int]:
    """Run the patched passes; return (per-prompt metric Float[*shape, batch], finished layers, complete, passes run)."""
    from attnlab.progress import progress_bar

    ds_answers, batch = plan.answers, plan.target_tokens.shape[0]
    per_prompt = torch.full(plan.shape + (batch,), float("nan"))
    layer_index = {layer: i for i, layer in enumerate(plan.layers)}
    n_passes = plan.n_passes
    passes_left = {layer: 0 for layer in plan.layers}
    for layer, _, _ in plan.passes:
        passes_left[layer] += 1
    done_layers: list[int] = []
    reduce = (Reduction(plan.metric.name, ds_answers, plan.reference) if plan.metric.builtin else None)
    bar = progress_bar(total=n_passes, desc=f"patching {plan.spec.name} ({plan.direction}, {plan.metric.name})",
                       disable=not progress)
    widest = max((len(v) for _, _, v in plan.passes), default=1)
    bar.set_postfix_str(f"up to {widest} variants/pass" + (", prefix reuse" if plan.kv is not None else ""))
    complete, passes_done = True, 0

    def finish(layer: int) -> None:  # variants never run (no-ops) take the target baseline
        _fill_no_ops(per_prompt[layer_index[layer]], plan.target_metric)
        done_layers.append(layer)

    try:
        for (layer, chunk), out in model.run_many(_pass_specs(plan, reduce)):
            values = out.metric if out.metric is not None else plan.metric(out.logits, ds_answers, plan.reference)
            for (h, p), v in zip(chunk, values.detach().float().split(batch)):
                per_prompt[plan.cell(layer, h, p)] = v
            bar.update(1)
            passes_left[layer] -= 1
            if passes_left[layer] == 0:
                finish(layer)
            passes_done += 1
            if on_pass is not None:
                on_pass(passes_done, n_passes)
            if should_stop is not None and should_stop():
                complete = False
                break
        for layer, left in passes_left.items():  # layers with no live variant at all
            if left == 0 and layer not in done_layers:
                finish(layer)
    except KeyboardInterrupt:
        complete = False
        interrupts.note_interrupt(f"the {plan.spec.name} sweep", passes_done, n_passes)
    finally:
        bar.close()
    return per_prompt, sorted(done_layers), complete, passes_done


def _assemble(model, dataset, plan: _Plan, per_prompt: Tensor, done_layers: list[int], complete: bool,
              passes_done: int) -> PatchingResult:
    """The :class:`PatchingResult` of a sweep: normalised values, labels, provenance."""
    clean_mean, corrupted_mean = plan.baselines
    values = normalise(per_prompt.mean(dim=-1), clean_mean, corrupted_mean, plan.direction).float()
    clean = dataset.clean_tokens
    tokens = model.to_str_tokens(clean[0]) if getattr(model, "tokenizer", None) is not None else None
    layers, heads, positions = plan.layers, plan.heads, plan.positions
    labels: dict[str, list[str]] = {"layer": [f"L{layer}" for layer in layers]}
    if heads is not None:
        labels["head"] = [f"H{h}" for h in heads]
    if positions is not None:
        labels["pos"] = [dataset.position_labels[p] for p in positions]
    n_run = sum(len(v) for _, v in plan.variants_by_layer)
    return PatchingResult(
        analysis="activation_patching",
        component=plan.spec.name,
        direction=plan.direction,
        dims=plan.spec.dims,
        values=values,
        per_prompt=per_prompt,
        labels=labels,
        index={"layer": list(layers), **({"head": list(heads)} if heads is not None else {}),
               **({"pos": list(positions)} if positions is not None else {})},
        tokens=[tokens[p] for p in positions] if (tokens is not None and positions is not None) else None,
        prompt_tokens=tokens,
        metric=plan.metric.name,
        metric_description=f"normalised {plan.metric.description}",
        metric_label=plan.metric.label,
        baselines={"clean": clean_mean, "corrupted": corrupted_mean},
        baselines_per_prompt=dict(plan.baselines_per_prompt or {}),
        model=model.info.to_dict(),
        task=dataset.describe(),
        settings={
            "memory_budget_mb": plan.memory_budget_mb,
            "variants_per_pass": max((len(c) for _, _, c in plan.passes), default=0),
            "forward_passes": plan.n_passes + 2,
            "forward_passes_run": passes_done + 2,
            "variants_run": n_run,
            "variants_skipped_as_no_ops": math.prod(plan.shape) - n_run,
            "prefix_reuse": dict(plan.reuse),
            "metric_reduced_where_the_model_runs": plan.metric.builtin,
            "seconds": round(time.perf_counter() - plan.t0, 3),
        },
        complete=complete,
        layers_done=done_layers,
    )


def _fill_no_ops(layer_values: Tensor, target_metric: Tensor) -> None:
    """Variants never run (no-ops) get the target run's metric values: exactly what patching them gives."""
    layer_values[torch.isnan(layer_values).all(dim=-1)] = target_metric.to(layer_values.dtype)


def _pass_specs(plan: _Plan, reduce: Reduction | None):
    """Yield one :class:`RunSpec` per batched pass: variant v of a pass occupies rows [v*batch, (v+1)*batch).

    A pass with first position ``p0 > 0`` is a suffix pass: tokens, residual stream, patch positions and END are
    shifted by ``p0``, and the target run's keys and values of positions [0, p0) from the pass's block on go with it.
    """
    spec, source, start_resid = plan.spec, plan.source, plan.start_resid
    target_tokens, end = plan.target_tokens, plan.end
    batch = target_tokens.shape[0]
    for layer, p0, chunk in plan.passes:
        src = source.cache[Site(spec.kind, layer)]
        n = len(chunk)
        rows = torch.arange(n * batch)
        src_rows = rows % batch
        hs = torch.tensor([h for h, _ in chunk]).repeat_interleave(batch) if spec.by_head else None
        ps = torch.tensor([p for _, p in chunk]).repeat_interleave(batch) if spec.by_pos else None
        if hs is not None and ps is not None:
            values = src[src_rows, ps, hs]
        elif hs is not None:
            values = src.transpose(1, 2)[src_rows, hs][:, p0:]
        elif ps is not None:
            values = src[src_rows, ps]
        else:
            values = src[src_rows][:, p0:]
        iv = Intervention(kind=spec.kind, layer=layer, rows=rows, values=values, heads=hs,
                          positions=None if ps is None else ps - p0)
        is_resid = spec.kind is SiteKind.RESID_PRE
        resid = start_resid.get(layer)
        yield RunSpec(
            tokens=target_tokens[:, p0:], repeat=n, logits_at=end - p0, start_layer=layer,
            resid=None if resid is None else resid[:, p0:],
            interventions=[] if is_resid else [iv], resid_patch=iv if is_resid else None, reduce=reduce,
            key=(layer, chunk), prefix=plan.kv.narrow(p0, layer) if p0 > 0 else None,
        )


def _slices_equal(src: Tensor, tgt: Tensor, head: int | None, pos: int | None) -> bool:
    a, b = src, tgt
    if pos is not None:
        a, b = a[:, pos], b[:, pos]
    if head is not None:
        a, b = (a[:, head], b[:, head]) if pos is not None else (a[:, :, head], b[:, :, head])
    return torch.equal(a, b)


def _check_index(name: str, values: Sequence[int] | None, limit: int) -> list[int]:
    if values is None:
        return list(range(limit))
    values = index_list(name, values)
    if not values:
        raise SiteError(f"'{name}' must not be empty")
    bad = [v for v in values if not isinstance(v, int) or not 0 <= v < limit]
    if bad:
        raise SiteError(f"'{name}' must be in [0, {limit}) (got {bad})")
    if len(set(values)) != len(values):
        raise SiteError(f"'{name}' has duplicates: {values}")
    return values
