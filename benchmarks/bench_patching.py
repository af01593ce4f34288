"""attnlab's activation-patching engine side by side with TransformerLens's ``transformer_lens.patching``.

One run, same model, same tokens, same metric. For each sweep it prints the wall time of both, the ratio, the peak
memory each phase added, and the largest absolute difference between their results.

Models: (a) the embedded SmolLM2-135M on 16 IOI prompts (S2-swap corruption); (b) a randomly initialised model with
GPT-2 small's shape (12 layers, 12 heads, d_model 768, vocab 50257) on random prompts of the same shape, corrupted at
the same position. Sweeps: head output over all positions ([layer, head]), head output by position
([layer, head, pos]), residual stream by position ([layer, pos]).

TransformerLens runs one full forward pass per cell, so its time is the same for every cell. Where a sweep has more
cells than ``--tl-max-cells``, TransformerLens runs a seeded random sample of cells and its full-sweep time is
extrapolated from the measured time per cell (stated in the output); the values are compared on the sampled cells.
``--tl-max-cells 0`` runs every cell (slow: ~4,300 passes per by-position sweep).

Usage:
    python benchmarks/bench_patching.py                 # everything (~25 min on 2 cores)
    python benchmarks/bench_patching.py --models embedded --sweeps heads
"""

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import pandas as pd
import torch
import transformer_lens.patching as tlp

from attnlab.memory import DEFAULT_BUDGET_MB
from attnlab.metrics import logit_diff, normalise
from attnlab.models import gpt2_shaped_model, load_model
from attnlab.patching import run_sweep
from attnlab.tasks.base import PatchingDataset
from attnlab.tasks.ioi import ioi_dataset

REFERENCE = {
    "heads": (tlp.get_act_patch_attn_head_out_all_pos, ("layer", "head")),
    "heads_by_pos": (tlp.get_act_patch_attn_head_out_by_pos, ("layer", "pos", "head")),
    "resid_pre": (tlp.get_act_patch_resid_pre, ("layer", "pos")),
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak resident memory added during a block (Linux: resets the high-water mark via /proc/self/clear_refs)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.before = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.added_mb = max(0, _status_kb("VmHWM") - self.before) / 1024


def random_like_ioi(model, ioi: PatchingDataset, seed: int = 0) -> PatchingDataset:
    """Random prompts with the IOI dataset's shape, corrupted at the same S2 positions."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.info.d_vocab
    clean = torch.randint(0, vocab, tuple(ioi.clean_tokens.shape), generator=g)
    corrupted = clean.clone()
    rows = torch.arange(len(ioi))
    s2 = ioi.positions["S2"]
    corrupted[rows, s2] = (clean[rows, s2] + 1 + torch.randint(0, vocab - 1, (len(ioi),), generator=g)) % vocab
    answers = torch.stack([clean[rows, ioi.positions["IO"]], clean[rows, s2]], dim=1)
    return PatchingDataset(task="random (IOI-shaped)", clean_tokens=clean, corrupted_tokens=corrupted,
                           answers=answers, positions={"END": ioi.end, "S2": s2},
                           position_labels=list(ioi.position_labels), metadata={"seed": seed})


def reference(model, dataset, component, baselines, cells, rng):
    """TransformerLens on all cells, or on a sample of ``cells`` cells; returns (values by cell, seconds, MB, n)."""
    fn, axes = REFERENCE[component]
    info = model.info
    sizes = {"layer": info.n_layers, "head": info.n_heads, "pos": dataset.n_pos}
    grid = pd.MultiIndex.from_product([range(sizes[a]) for a in axes], names=axes).to_frame(index=False)
    if cells and len(grid) > cells:
        grid = grid.iloc[sorted(rng.sample(range(len(grid)), cells))].reset_index(drop=True)
    rows = torch.arange(len(dataset))

    def metric(logits):
        ld = logit_diff(logits[rows, dataset.end], dataset.answers).mean()
        return normalise(ld, baselines["clean"], baselines["corrupted"], "denoising")

    keywords = {k: v for k, v in fn.keywords.items() if k != "index_axis_names"}
    with PeakMemory() as mem, torch.no_grad():
        t0 = time.perf_counter()
        _, clean_cache = model.bridge.run_with_cache(dataset.clean_tokens)
        flat = tlp.generic_activation_patch(model.bridge, dataset.corrupted_tokens, clean_cache, metric,
                                            index_df=grid, **keywords)
        seconds = time.perf_counter() - t0
    return grid, flat, seconds, mem.added_mb, math_prod(sizes[a] for a in axes)


def math_prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def bench(model, dataset, component, tl_cells, rng, budget_mb) -> dict:
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        result = run_sweep(model, dataset, component, progress=False, memory_budget_mb=budget_mb)
        ours = time.perf_counter() - t0
    grid, flat, tl_seconds, tl_mb, total_cells = reference(model, dataset, component, result.baselines,
                                                           tl_cells, rng)
    # our value at each sampled cell (TransformerLens's by-position axes are [layer, pos, head])
    idx = {"layer": grid["layer"].tolist()}
    if "head" in grid:
        idx["head"] = grid["head"].tolist()
    if "pos" in grid:
        idx["pos"] = grid["pos"].tolist()
    ours_at = result.values[tuple(torch.tensor(idx[d]) for d in result.dims)]
    diff = float((ours_at - flat.float()).abs().max())
    tl_full = tl_seconds / len(grid) * total_cells
    return {
        "model": model.info.name, "sweep": component, "cells": total_cells, "tl_cells_run": len(grid),
        "attnlab_s": round(ours, 2), "transformer_lens_s": round(tl_full, 2),
        "tl_extrapolated": len(grid) < total_cells, "speedup": round(tl_full / ours, 2),
        "attnlab_peak_mb": round(mem.added_mb, 1), "transformer_lens_peak_mb": round(tl_mb, 1),
        "max_abs_diff": diff, "forward_passes_attnlab": result.settings["forward_passes"],
        "forward_passes_tl": total_cells + 1, "no_op_variants_skipped": result.settings["variants_skipped_as_no_ops"],
        "variants_per_pass": result.settings["variants_per_pass"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,gpt2", help="comma list of: embedded, gpt2")
    parser.add_argument("--sweeps", default="heads,heads_by_pos,resid_pre", help="comma list of sweeps")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tl-max-cells", type=int, default=120,
                        help="run TransformerLens on at most this many sampled cells (0 = all)")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB,
                        help="attnlab's memory budget (MiB): how many variants share a batched pass")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "patching.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    embedded = load_model("smollm2-135m")
    ioi = ioi_dataset(embedded, args.prompts, seed=0, corruption="s2_swap")
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"
    print(f"# bench_patching on {machine}; {args.prompts} prompts x {ioi.n_pos} tokens; attnlab memory budget "
          f"{args.memory_budget_mb:g} MiB")
    rows = []
    for name in args.models.split(","):
        if name == "embedded":
            model, dataset = embedded, ioi
        elif name == "gpt2":
            model = gpt2_shaped_model()
            dataset = random_like_ioi(model, ioi)
        else:
            raise SystemExit(f"unknown model {name!r}")
        for sweep in args.sweeps.split(","):
            row = bench(model, dataset, sweep, args.tl_max_cells, rng, args.memory_budget_mb)
            rows.append(row)
            note = f" (extrapolated from {row['tl_cells_run']} of {row['cells']} cells)" if row["tl_extrapolated"] \
                else ""
            print(f"{row['model']:>28} {sweep:>13}: attnlab {row['attnlab_s']:8.1f} s | TransformerLens "
                  f"{row['transformer_lens_s']:8.1f} s{note} | speedup {row['speedup']:5.2f}x | peak +MB "
                  f"{row['attnlab_peak_mb']:.0f} vs {row['transformer_lens_peak_mb']:.0f} | max |diff| "
                  f"{row['max_abs_diff']:.2e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "prompts": args.prompts, "memory_budget_mb": args.memory_budget_mb,
                                    "rows": rows}, indent=1))
    print(pd.DataFrame(rows)[["model", "sweep", "attnlab_s", "transformer_lens_s", "speedup", "attnlab_peak_mb",
                              "transformer_lens_peak_mb", "max_abs_diff"]].to_string(index=False))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
