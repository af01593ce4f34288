"""How fast the Explorer answers a click, side by side with computing the same panel from scratch in TransformerLens.

One run, the embedded SmolLM2-135M, IOI prompts (16 by default), after a head sweep:

- ``record``: the one-off cost per run of :class:`~attnlab.explorer.details.RunCache` (two forward passes recording
  patterns, head outputs and the residual stream);
- ``click``: the time from a selection to a finished detail panel (attention pattern, END attention, direct logit
  attribution, mean and zero ablation), for the ``--heads`` strongest heads of the sweep: median and maximum;
- ``reference``: the same panel computed with TransformerLens directly, without the cache: ``run_with_cache`` on the
  clean and corrupted prompts, ``stack_head_results``/``apply_ln_to_stack`` for the attribution and two
  ``run_with_hooks`` passes for the ablations. This is what a notebook without attnlab would run per click.

The issue's target: a head's detail in under 2 s on this machine with 16 prompts.

Usage:
    python benchmarks/bench_explorer.py [--n-prompts 16] [--heads 8] [--out benchmarks/results/explorer.json]
"""

import argparse
import json
import platform
import statistics
import time

import torch

from attnlab.explorer import ExplorerController
from attnlab.explorer.details import RunCache
from attnlab.models import load_model


def _reference_detail(model, ds, layer: int, head: int) -> dict:
    """The head panel's numbers, computed from scratch with TransformerLens (no attnlab cache)."""
    bridge = model.bridge
    b = torch.arange(len(ds))
    end = ds.end
    z_name, p_name = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ds.clean_tokens)
        _, corrupted = bridge.run_with_cache(ds.corrupted_tokens, names_filter=lambda n: n == z_name)
        pattern = cache[p_name][:, head]
        end_att = {k: pattern[b, end, v].mean() for k, v in ds.positions.items() if k != "END"}
        stack, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
        scaled = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)[labels.index(f"L{layer}H{head}")]
        w_u = bridge.W_U
        dla = (scaled * (w_u[:, ds.answers[:, 0]] - w_u[:, ds.answers[:, 1]]).T).sum(-1)
        mean_z = corrupted[z_name].mean(0)

        def ld(out):
            last = out[b, end]
            return last[b, ds.answers[:, 0]] - last[b, ds.answers[:, 1]]

        def zero(z, hook):
            z[:, :, head] = 0
            return z

        def mean(z, hook):
            z[:, :, head] = mean_z[:, head]
            return z

        clean = ld(logits)
        zero_ld = ld(bridge.run_with_hooks(ds.clean_tokens, fwd_hooks=[(z_name, zero)]))
        mean_ld = ld(bridge.run_with_hooks(ds.clean_tokens, fwd_hooks=[(z_name, mean)]))
    return {"end_attention": end_att, "dla": dla, "zero": zero_ld - clean, "mean": mean_ld - clean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--heads", type=int, default=8, help="strongest heads of the sweep to click")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()

    model = load_model("smollm2-135m")
    ctl = ExplorerController(model, "ioi", n_prompts=args.n_prompts, component="heads")
    run = ctl.run()
    ds = run.cache.dataset
    start = time.perf_counter()
    RunCache(model, ds)
    record_s = time.perf_counter() - start

    heads = list(run.result.top(args.heads)["head_name"])
    ours, ref, diffs = [], [], []
    _reference_detail(model, ds, 0, 0)  # warm-up
    for name in heads:
        start = time.perf_counter()
        ctl.select(name)
        ours.append(time.perf_counter() - start)
        sel = ctl.selected
        start = time.perf_counter()
        r = _reference_detail(model, ds, sel.layer, sel.head)
        ref.append(time.perf_counter() - start)
        d = ctl.detail
        diffs.append(max(
            float((torch.tensor(d["ablation"]["zero"]["change"]["per_prompt"]) - r["zero"]).abs().max()),
            float((torch.tensor(d["ablation"]["mean"]["change"]["per_prompt"]) - r["mean"]).abs().max()),
        ))
    out = {
        "model": model.info.name, "n_prompts": args.n_prompts, "n_pos": ds.n_pos, "heads": heads,
        "sweep_s": round(run.seconds, 2), "record_s": round(record_s, 3),
        "click_median_s": round(statistics.median(ours), 3), "click_max_s": round(max(ours), 3),
        "reference_median_s": round(statistics.median(ref), 3), "reference_max_s": round(max(ref), 3),
        "speedup_median": round(statistics.median(ref) / statistics.median(ours), 2),
        "ablation_max_abs_diff_logits": max(diffs), "target_s": 2.0,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
    }
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
