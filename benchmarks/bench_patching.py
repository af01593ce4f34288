"""attnlab's activation-patching engine side by side with TransformerLens's ``transformer_lens.patching``.

One run, same model, same tokens, same metric. For each sweep it prints the wall time of TransformerLens, of attnlab
without prefix reuse (``prefix_reuse=False``: every patched pass runs every position from the patched block on) and
of attnlab with it (each pass runs only the positions from the first one its patch can change, attending to the
target run's recorded keys and values for the earlier ones), the ratios, the peak memory each phase added, and the
largest absolute difference between attnlab's results and TransformerLens's.

The compute floor. TransformerLens runs one full forward pass per cell: every block and the unembedding at every
position. attnlab with prefix reuse computes ``block_positions_run`` block-positions (recorded in
``result.settings``), unembeds one position per patched row, and runs two full baselines. The ratio of the two
multiply-accumulate counts (from the model's shapes: a block costs its attention and MLP projections per position,
the unembedding ``d_model x d_vocab``), printed as "floor", is the speedup if time were proportional to arithmetic.
The measured ratio can exceed it: each of TransformerLens's one-cell passes also pays a fixed per-pass cost
(Python, hooks, kernel launches) that attnlab's batched passes share.

Models: (a) the embedded SmolLM2-135M on 16 IOI prompts; (b) a randomly initialised model with GPT-2 small's shape
(Hugging Face's GPT-2 modules: 12 layers, 12 heads, d_model 768, vocab 50257) on random prompts of the same shape,
corrupted at the same positions. Corruptions: S2-swap (only S2 changes) and ABC (IO, S1 and S2 replaced). Sweeps:
head output over all positions ([layer, head]), head output by position ([layer, head, pos]), residual stream by
position ([layer, pos]).

TransformerLens runs one full forward pass per cell, so its time is the same for every cell. Where a sweep has more
cells than ``--tl-max-cells``, TransformerLens runs a seeded random sample of cells and its full-sweep time is
extrapolated from the measured time per cell (stated in the output); the values are compared on the sampled cells.
``--tl-max-cells 0`` runs every cell (slow: ~4,300 passes per by-position sweep).

Usage:
    python benchmarks/bench_patching.py                 # everything (~45 min on 2 cores)
    python benchmarks/bench_patching.py --models embedded --sweeps heads --corruptions s2_swap
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
    """Random prompts with the IOI dataset's shape, corrupted at the same positions as ``ioi`` (S2 for S2-swap; IO,
    S1 and S2 for ABC)."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.info.d_vocab
    clean = torch.randint(0, vocab, tuple(ioi.clean_tokens.shape), generator=g)
    corrupted = clean.clone()
    rows = torch.arange(len(ioi))
    s2 = ioi.positions["S2"]
    changed = ["S2"] if ioi.metadata.get("corruption") == "s2_swap" else ["IO", "S1", "S2"]
    for name in changed:
        at = ioi.positions[name]
        corrupted[rows, at] = (clean[rows, at] + 1 + torch.randint(0, vocab - 1, (len(ioi),), generator=g)) % vocab
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


def block_macs(info) -> int:
    """Multiply-accumulates of one block at one position: the attention projections (q, k, v, o) and the MLP (a gated
    MLP has three d_model x d_mlp matrices, GPT-2's two). Attention scores are left out (n_pos is small here)."""
    attn = info.d_model * (2 * info.n_heads * info.d_head + 2 * info.n_kv_heads * info.d_head)
    return attn + (2 if info.family == "gpt2" else 3) * info.d_model * info.d_mlp


def compute_floor(info, cells: int, batch: int, n_pos: int, block_positions_run: int, variants_run: int) -> float:
    """TransformerLens's multiply-accumulates over attnlab's with prefix reuse (module docstring: the compute floor)."""
    fb, fu = block_macs(info), info.d_model * info.d_vocab
    full_pass = batch * n_pos * (info.n_layers * fb + fu)
    reference = cells * full_pass
    ours = block_positions_run * fb + variants_run * batch * fu + 2 * full_pass
    return reference / ours


def math_prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def bench(model, dataset, component, tl_cells, rng, budget_mb) -> dict:
    with PeakMemory() as plain_mem:
        t0 = time.perf_counter()
        plain = run_sweep(model, dataset, component, progress=False, memory_budget_mb=budget_mb, prefix_reuse=False)
        no_reuse = time.perf_counter() - t0
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
    cells = tuple(torch.tensor(idx[d]) for d in result.dims)
    diff = float((result.values[cells] - flat.float()).abs().max())
    diff_plain = float((plain.values[cells] - flat.float()).abs().max())
    tl_full = tl_seconds / len(grid) * total_cells
    reuse = result.settings["prefix_reuse"]
    floor = None
    if reuse.get("enabled"):
        floor = compute_floor(model.info, total_cells, len(dataset), dataset.n_pos, reuse["block_positions_run"],
                              result.settings["variants_run"])
    return {
        "model": model.info.name, "corruption": dataset.metadata.get("corruption", "?"), "sweep": component,
        "cells": total_cells, "tl_cells_run": len(grid),
        "transformer_lens_s": round(tl_full, 2), "attnlab_no_reuse_s": round(no_reuse, 2),
        "attnlab_s": round(ours, 2), "tl_extrapolated": len(grid) < total_cells,
        "speedup_no_reuse": round(tl_full / no_reuse, 2), "speedup": round(tl_full / ours, 2),
        "floor_estimate": None if floor is None else round(floor, 1),
        "fraction_of_positions_run": reuse.get("fraction_run"), "recorded_kv_mb": reuse.get("recorded_kv_mb"),
        "attnlab_peak_mb": round(mem.added_mb, 1), "attnlab_no_reuse_peak_mb": round(plain_mem.added_mb, 1),
        "transformer_lens_peak_mb": round(tl_mb, 1),
        "max_abs_diff": diff, "max_abs_diff_no_reuse": diff_plain,
        "forward_passes_attnlab": result.settings["forward_passes"],
        "forward_passes_attnlab_no_reuse": plain.settings["forward_passes"],
        "forward_passes_tl": total_cells + 1, "no_op_variants_skipped": result.settings["variants_skipped_as_no_ops"],
        "variants_per_pass": result.settings["variants_per_pass"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,gpt2", help="comma list of: embedded, gpt2")
    parser.add_argument("--sweeps", default="heads,heads_by_pos,resid_pre", help="comma list of sweeps")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--corruptions", default="s2_swap,abc", help="comma list of: s2_swap, abc")
    parser.add_argument("--tl-max-cells", type=int, default=120,
                        help="run TransformerLens on at most this many sampled cells (0 = all)")
    parser.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB,
                        help="attnlab's memory budget (MiB): how many variants share a batched pass")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "patching.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = random.Random(0)
    embedded = load_model("smollm2-135m")
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads"
    print(f"# bench_patching on {machine}; {args.prompts} IOI prompts; attnlab memory budget "
          f"{args.memory_budget_mb:g} MiB")
    rows = []
    gpt2 = None
    for corruption in args.corruptions.split(","):
        ioi = ioi_dataset(embedded, args.prompts, seed=0, corruption=corruption)
        for name in args.models.split(","):
            if name == "embedded":
                model, dataset = embedded, ioi
            elif name == "gpt2":
                gpt2 = gpt2 or gpt2_shaped_model()
                model, dataset = gpt2, random_like_ioi(gpt2, ioi)
                dataset.metadata["corruption"] = corruption
            else:
                raise SystemExit(f"unknown model {name!r}")
            for sweep in args.sweeps.split(","):
                row = bench(model, dataset, sweep, args.tl_max_cells, rng, args.memory_budget_mb)
                rows.append(row)
                note = f" (extrapolated from {row['tl_cells_run']} of {row['cells']} cells)" \
                    if row["tl_extrapolated"] else ""
                print(f"{row['model']:>28} {corruption:>7} {sweep:>13}: TransformerLens "
                      f"{row['transformer_lens_s']:8.1f} s{note} | attnlab no reuse {row['attnlab_no_reuse_s']:7.1f} s "
                      f"({row['speedup_no_reuse']:5.2f}x) | attnlab {row['attnlab_s']:7.1f} s ({row['speedup']:5.2f}x, "
                      f"floor {row['floor_estimate']}x, {row['fraction_of_positions_run']} of positions) | peak +MB "
                      f"{row['attnlab_peak_mb']:.0f} / {row['attnlab_no_reuse_peak_mb']:.0f} / "
                      f"{row['transformer_lens_peak_mb']:.0f} | max |diff| {row['max_abs_diff']:.2e}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "prompts": args.prompts, "memory_budget_mb": args.memory_budget_mb,
                                    "rows": rows}, indent=1))
    print(pd.DataFrame(rows)[["model", "corruption", "sweep", "transformer_lens_s", "attnlab_no_reuse_s", "attnlab_s",
                              "speedup_no_reuse", "speedup", "floor_estimate", "max_abs_diff"]].to_string(index=False))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
