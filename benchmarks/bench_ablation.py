"""The recall-versus-reasoning ablation sweep side by side with one TransformerLens ``run_with_hooks`` per component.

One run, same model, same items, same ablation values, same metrics. attnlab's sweep
(:func:`attnlab.dissociation.sweep.run_components`: batched passes, several components per pass, each pass starting
at its components' block from the clean run's residual stream, the metric read at END only) against the plain way a
researcher writes it in TransformerLens: one full forward pass per component, ``bridge.run_with_hooks`` with a hook
on ``blocks.{L}.attn.hook_z`` (a head) or ``blocks.{L}.hook_attn_out`` / ``hook_mlp_out`` (a block) that overwrites
the component with its ablation value, and both metrics (top-1 accuracy and logit difference) computed from the
returned logits.

The ablation values are computed independently on each side: attnlab's mean ablation (per family and position, over
the items whose END is at or after the position) from its own clean pass; the reference's from
``bridge.run_with_cache`` with an explicit loop over families and positions. The printed ``max |diff|`` compares the
per-item metric values of the two on every component the reference ran.

The reference's time per component is constant (one full pass each), so for sweeps of more than
``--tl-max-components`` components it runs a seeded random sample and its full-sweep time is the measured time per
component times the number of components (stated in the output); ``--tl-max-components 0`` runs every component.

Usage:
    python benchmarks/bench_ablation.py                          # every head of the embedded model, mean ablation
    python benchmarks/bench_ablation.py --granularity blocks --ablation zero --n-per-family 4
"""

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.bench_patching

from attnlab.dissociation.sweep import granularity_components, plan_sweep, run_components  # noqa: E402
from attnlab.memory import DEFAULT_BUDGET_MB  # noqa: E402
from attnlab.models import load_model  # noqa: E402
from attnlab.sites import SiteKind  # noqa: E402
from attnlab.tasks.recall_reasoning import recall_reasoning_items  # noqa: E402
from benchmarks.bench_patching import PeakMemory  # noqa: E402

_HOOK = {SiteKind.Z: "blocks.{}.attn.hook_z", SiteKind.ATTN_OUT: "blocks.{}.hook_attn_out",
         SiteKind.MLP_OUT: "blocks.{}.hook_mlp_out"}


def reference_sources(bridge, items, components, ablation: str) -> dict[str, torch.Tensor]:
    """The ablation value of every hook the components touch, computed with TransformerLens directly."""
    names = sorted({_HOOK[p.kind].format(p.layer) for c in components for p in c.parts})
    if ablation == "zero":
        return {}
    tokens = items.tokens if ablation == "mean" else items.corrupted_tokens
    with torch.no_grad():
        _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n in names)
    if ablation == "resample":
        return {n: cache[n].detach().clone() for n in names}
    out = {}
    for n in names:
        act = cache[n].detach()
        mean = torch.zeros_like(act)
        for fam in dict.fromkeys(items.families):
            rows = [i for i, f in enumerate(items.families) if f == fam]
            for pos in range(act.shape[1]):
                valid = [i for i in rows if int(items.end[i]) >= pos]
                if valid:
                    mean[rows, pos] = act[valid, pos].mean(0)
        out[n] = mean
    return out


def reference_component(bridge, items, component, sources: dict, ablation: str) -> torch.Tensor:
    """One ``run_with_hooks`` pass with the component ablated: Float[N, 2] (accuracy, logit difference) per item."""
    hooks = []
    for part in component.parts:
        name = _HOOK[part.kind].format(part.layer)

        def hook(act, hook=None, part=part, name=name):
            value = torch.zeros_like(act) if ablation == "zero" else sources[name]
            if part.kind is SiteKind.Z:
                act[:, :, part.head] = value[:, :, part.head]
            else:
                act[:] = value
            return act

        hooks.append((name, hook))
    with torch.no_grad():
        logits = bridge.run_with_hooks(items.tokens, fwd_hooks=hooks)
    rows = torch.arange(len(items))
    final = logits[rows, items.end].float()
    correct, distractor = items.answers[:, 0], items.answers[:, 1]
    accuracy = (final.argmax(-1) == correct).float()
    logit_diff = final[rows, correct] - final[rows, distractor]
    return torch.stack([accuracy, logit_diff], dim=-1)


def bench(model, items, granularity: str, ablation: str, tl_max: int, budget_mb: float, seed: int) -> dict:
    components = granularity_components(model, granularity)
    metrics = ("accuracy", "logit_diff")
    # warm-up: one small pass each, so neither side pays first-call costs in its timing
    warm = plan_sweep(model, items, components[:1], ablation=ablation, metrics=metrics, memory_budget_mb=budget_mb)
    run_components(model, items, warm, progress=False)
    reference_component(model.bridge, items, components[0], reference_sources(model.bridge, items, components[:1],
                                                                             ablation), ablation)

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        plan = plan_sweep(model, items, components, ablation=ablation, metrics=metrics, memory_budget_mb=budget_mb)
        ours, complete, passes, _ = run_components(model, items, plan, progress=True)
        t_ours = time.perf_counter() - t0
    assert complete

    sample = list(range(len(components)))
    if 0 < tl_max < len(components):
        sample = sorted(random.Random(seed).sample(sample, tl_max))
    with PeakMemory() as tl_mem:
        t0 = time.perf_counter()
        sources = reference_sources(model.bridge, items, components, ablation)
        ref = {ci: reference_component(model.bridge, items, components[ci], sources, ablation) for ci in sample}
        t_sample = time.perf_counter() - t0
    t_ref = t_sample * len(components) / len(sample)
    diff = max(float((ours[ci] - ref[ci]).abs().max()) for ci in sample)
    accuracy_agrees = all(torch.equal(ours[ci][:, 0], ref[ci][:, 0]) for ci in sample)
    return {"model": model.info.name, "granularity": granularity, "ablation": ablation, "components": len(components),
            "items": len(items), "n_pos": items.n_pos, "attnlab_passes": passes,
            "components_per_pass": plan.max_variants, "attnlab_s": round(t_ours, 2),
            "reference_passes": len(sample), "reference_s": round(t_ref, 2),
            "reference_extrapolated": len(sample) < len(components), "speedup": round(t_ref / t_ours, 2),
            "attnlab_peak_mb": round(mem.added_mb, 1), "reference_peak_mb": round(tl_mem.added_mb, 1),
            "max_abs_diff_logit_diff": diff, "accuracy_equal": accuracy_agrees,
            "memory_budget_mb": budget_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--granularity", default="heads", choices=["heads", "attn", "mlp", "blocks"])
    parser.add_argument("--ablation", default="mean", choices=["zero", "mean", "resample"])
    parser.add_argument("--n-per-family", type=int, default=4, help="items per family (8 families)")
    parser.add_argument("--tl-max-components", type=int, default=60,
                        help="run the reference on at most this many components (seeded sample; 0: all)")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    items = recall_reasoning_items(model, n_per_family=args.n_per_family, seed=args.seed)
    row = bench(model, items, args.granularity, args.ablation, args.tl_max_components, args.memory_budget_mb,
                args.seed)
    note = (f" (extrapolated from {row['reference_passes']} sampled components)" if row["reference_extrapolated"]
            else "")
    print(f"{row['model']}: {row['ablation']} ablation of {row['components']} {row['granularity']} on "
          f"{row['items']} items x {row['n_pos']} positions")
    print(f"  attnlab batched   {row['attnlab_s']:8.1f} s  ({row['attnlab_passes']} passes, "
          f"{row['components_per_pass']} components/pass)  peak +{row['attnlab_peak_mb']:.0f} MB")
    print(f"  run_with_hooks    {row['reference_s']:8.1f} s{note}  peak +{row['reference_peak_mb']:.0f} MB")
    print(f"  speedup {row['speedup']:.2f}x | max |diff| logit diff {row['max_abs_diff_logit_diff']:.2e} | "
          f"accuracy equal on every item: {row['accuracy_equal']}")
    if args.out:
        meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "result": row}, f, indent=2)


if __name__ == "__main__":
    main()
