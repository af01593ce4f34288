"""Edge-level circuit discovery on the embedded SmolLM2-135M: EAP and EAP-IG over every edge against exact ablation.

One run, one model, one IOI dataset (ABC corruption, templates of one length), one metric (mean logit difference at
END). It measures

- EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024, ``--steps``) scoring all 70,651 edges: wall time and peak
  memory;
- the exact baseline: single-edge ablations (corrupted patching: the quantity EAP estimates) on a seeded sample of
  edges (half the top edges by |EAP-IG|, half uniformly random), batched several edges per forward pass. Its cost
  for every edge is extrapolated from the measured time per edge test; ACDC (Conmy et al. 2023) tests every edge at
  least once in its first sweep, so this is a lower bound on a full ACDC run;
- ACDC-style pruning (:func:`attnlab.circuits.acdc`) on a restricted subgraph: the receivers of the last
  ``--acdc-layers`` blocks and the logits, stopped after ``--acdc-tests`` edge tests. Its time per edge test is the
  figure to extrapolate with (stated in the output);
- agreement: Spearman rank correlation between EAP / EAP-IG scores and the exact single-edge effects on the sample.

Usage:
    python benchmarks/bench_circuits.py                       # defaults: 32 prompts, 5 IG steps
    python benchmarks/bench_circuits.py --prompts 16 --sample-edges 16 --acdc-tests 32
"""

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch

from attnlab.circuits import GraphRunner, acdc, circuit_metrics, corrupted_source, eap_scores
from attnlab.models import load_model
from attnlab.tasks.ioi import ioi_dataset


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


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (no tie correction; scores are continuous)."""
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per gradient pass")
    parser.add_argument("--sample-edges", type=int, default=32, help="edges ablated exactly for the agreement")
    parser.add_argument("--variants", type=int, default=4, help="edge tests per batched exact pass")
    parser.add_argument("--acdc-layers", type=int, default=1)
    parser.add_argument("--acdc-tests", type=int, default=64)
    parser.add_argument("--acdc-threshold", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "circuits.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    ds = ioi_dataset(model, args.prompts, seed=0, corruption="abc", templates=(0,))
    runner = GraphRunner(model)
    g = runner.graph
    machine = f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}, " \
              f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start"
    print(f"# bench_circuits on {machine}; {model.info.name}: {g.n_edges} edges; {args.prompts} IOI prompts x "
          f"{ds.n_pos} tokens (ABC corruption)", flush=True)
    out: dict = {"machine": machine, "prompts": args.prompts, "n_edges": g.n_edges, "args": vars(args) | {
        "out": str(args.out)}}

    # warm-up (untimed): first-call costs (allocator growth, lazy initialisation) would otherwise land on EAP
    eap_scores(model, ds.__class__(**{**ds.__dict__, "clean_tokens": ds.clean_tokens[:2],
                                      "corrupted_tokens": ds.corrupted_tokens[:2], "answers": ds.answers[:2],
                                      "positions": {k: v[:2] for k, v in ds.positions.items()},
                                      "clean_prompts": ds.clean_prompts[:2],
                                      "corrupted_prompts": ds.corrupted_prompts[:2],
                                      "metadata": {}}), batch_size=2, progress=False)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        eap = eap_scores(model, ds, method="eap", batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - t0
    out["eap"] = {"seconds": seconds, "peak_mb": mem.added_mb}
    print(f"EAP     all {g.n_edges} edges: {out['eap']['seconds']:7.1f} s, peak +{mem.added_mb:.0f} MB "
          f"(clean LD {eap.clean_metric:.2f}, corrupted {eap.corrupted_metric:.2f})", flush=True)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        ig = eap_scores(model, ds, method="eap-ig", steps=args.steps, batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - t0
    out["eap_ig"] = {"seconds": seconds, "peak_mb": mem.added_mb, "steps": args.steps}
    print(f"EAP-IG  all {g.n_edges} edges: {out['eap_ig']['seconds']:7.1f} s, peak +{mem.added_mb:.0f} MB "
          f"({args.steps} steps)", flush=True)

    # exact single-edge ablations on a sample of edges
    rng = random.Random(0)
    ranked = [e for e, _ in ig.edge_scores()]
    half = args.sample_edges // 2
    sample = ranked[:half] + rng.sample(ranked[half:], args.sample_edges - half)
    src = corrupted_source(runner, ds)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        masks = g.valid[None].repeat(len(sample) + 1, 1, 1)
        for i, e in enumerate(sample):
            masks[i + 1][g.edge_index(e)] = False
        vals = torch.cat([circuit_metrics(runner, ds, masks[i:i + args.variants], source=src, memory_budget_mb=8192)
                          .mean(1) for i in range(0, len(masks), args.variants)])
        exact_s = time.perf_counter() - t0
    effects = vals[1:] - vals[0]
    per_edge = exact_s / (len(sample) + 1)
    eap_s = torch.tensor([eap.score(e) for e in sample])
    ig_s = torch.tensor([ig.score(e) for e in sample])
    out["exact"] = {"edges": len(sample), "seconds": exact_s, "seconds_per_edge": per_edge, "peak_mb": mem.added_mb,
                    "extrapolated_all_edges_s": per_edge * g.n_edges,
                    "spearman_eap": spearman(eap_s, effects), "spearman_eap_ig": spearman(ig_s, effects),
                    "spearman_eap_top_half": spearman(eap_s[:half], effects[:half]),
                    "spearman_eap_ig_top_half": spearman(ig_s[:half], effects[:half]),
                    "sample": [[e, float(x), float(a), float(b)] for e, x, a, b in zip(sample, effects, eap_s, ig_s)]}
    ex = out["exact"]
    print(f"exact   {len(sample)} sampled edges: {exact_s:7.1f} s ({per_edge:.2f} s per edge test, "
          f"{args.variants} per pass), peak +{mem.added_mb:.0f} MB; all {g.n_edges} edges extrapolated: "
          f"{ex['extrapolated_all_edges_s'] / 3600:.1f} h", flush=True)
    print(f"speed   EAP {ex['extrapolated_all_edges_s'] / out['eap']['seconds']:.0f}x, EAP-IG "
          f"{ex['extrapolated_all_edges_s'] / out['eap_ig']['seconds']:.0f}x faster than exact ablation of every edge",
          flush=True)
    print(f"agree   Spearman(score, exact effect) on the sample: EAP {ex['spearman_eap']:.3f}, EAP-IG "
          f"{ex['spearman_eap_ig']:.3f}; top-{half} edges only: EAP {ex['spearman_eap_top_half']:.3f}, EAP-IG "
          f"{ex['spearman_eap_ig_top_half']:.3f}", flush=True)

    # ACDC on a restricted subgraph with a test budget
    L = model.info.n_layers
    def block_of(receiver: str) -> int:
        node = receiver.split(".")[0]
        return int(node[3:]) if node.startswith("MLP") else int(node[1:].split("H")[0].split("KV")[0])

    receivers = ["logits"] + [r for r in g.receivers if r != "logits" and block_of(r) >= L - args.acdc_layers]
    with PeakMemory() as mem:
        res = acdc(runner, ds, args.acdc_threshold, source=src, receivers=receivers, max_tests=args.acdc_tests,
                   variants_per_pass=args.variants, memory_budget_mb=8192, progress=False)
    per_test = res.seconds / max(1, res.n_tests)
    out["acdc"] = {"threshold": args.acdc_threshold, "receivers": len(receivers), "tests": res.n_tests,
                   "passes": res.n_passes, "seconds": res.seconds, "seconds_per_test": per_test,
                   "complete": res.complete, "kept_edges": res.circuit.n_edges, "peak_mb": mem.added_mb,
                   "extrapolated_full_graph_first_sweep_s": per_test * g.n_edges}
    print(f"ACDC    {len(receivers)} receivers (last {args.acdc_layers} block(s) + logits), tau {args.acdc_threshold}: "
          f"{res.n_tests} edge tests in {res.seconds:.1f} s ({per_test:.2f} s per test, complete={res.complete}), "
          f"peak +{mem.added_mb:.0f} MB; one test of every edge would take {per_test * g.n_edges / 3600:.1f} h",
          flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
