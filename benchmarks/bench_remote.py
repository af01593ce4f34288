"""A remote head sweep done attnlab's way (one job, or a few chunks, the metric reduced on the server) versus
the same sweep downloading every patched row's logits, and versus one request per head.

Against the loopback NDIF-protocol server (``tests/remote/loopback.py``, 127.0.0.1, serving the embedded SmolLM2-135M
with nnsight's own server-side deserialisation), in one run:

- **attnlab**: ``attnlab.patch_heads`` on the remote model: two baseline jobs, then every patched pass of the sweep
  in one nnsight session (one trace per pass), split into chunks of at most ``--job-budget-mb``.
- **full logits**: the same sweep with the metric computed on the client: a custom metric that is the logit
  difference, so every patched row downloads its d_vocab logits (what attnlab did before metrics were reduced where
  the model runs).
- **per head**: the naive client loop, one remote request per (layer, head): the same patch (the head's clean ``z``
  into the corrupted run) and the same metric, each as its own job.

and, for circuit search, EAP-IG (Hanna et al. 2024) over every edge of the embedded model's graph (70,651 edges):

- **attnlab, remote**: ``eap_scores(..., method="eap-ig")`` on the remote model: the whole program (baselines,
  every integration step's forward and backward pass) runs on the server as one job; only the scores come back.
- **TransformerLens, local**: the same call on the TransformerLens backend, here (the reference: TransformerLens has
  no edge attribution of its own, so the reference is attnlab's local path on TransformerLens's model, hooks and
  autograd; its scores are checked against exact edge ablation in ``bench_circuits.py``).

It prints (and writes to ``benchmarks/results/remote.json``) the number of requests the server received, the bytes
uploaded and downloaded, the wall time of each, their ratios, and the largest difference between the results (they
compute the same numbers).
The loopback server shares this machine's CPU, so the times are compute plus protocol overhead with no network
latency; against NDIF every request also pays a round trip and a queue, which the per-head loop pays 270 times.

Usage:
    python benchmarks/bench_remote.py                    # all 30 layers x 9 heads, 4 prompts
    python benchmarks/bench_remote.py --layers 0,10,20   # a quicker look
    python benchmarks/bench_remote.py --skip-sweep       # EAP-IG only
"""

import argparse
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.remote.loopback

import attnlab  # noqa: E402
from attnlab.backends.base import Intervention  # noqa: E402
from attnlab.circuits import eap_scores  # noqa: E402
from attnlab.metrics import logit_diff, normalise  # noqa: E402
from attnlab.remote import RemoteOptions  # noqa: E402
from attnlab.sites import Site  # noqa: E402
from attnlab.tasks.ioi import ioi_dataset  # noqa: E402
from tests.remote.loopback import embedded_server  # noqa: E402


def per_head_loop(model, dataset, layers, heads):
    """One remote request per (layer, head): the naive loop. Returns Float[layer, head] normalised scores."""
    clean, corrupted, end, answers = dataset.clean_tokens, dataset.corrupted_tokens, dataset.end, dataset.answers
    source = model.run(clean, cache=[Site("z", layer) for layer in layers], logits_at=end)
    target = model.run(corrupted, logits_at=end)
    clean_ld, corrupted_ld = float(logit_diff(source.logits, answers).mean()), \
        float(logit_diff(target.logits, answers).mean())
    scores = torch.zeros(len(layers), len(heads))
    rows = torch.arange(len(dataset))
    for i, layer in enumerate(layers):
        z = source.cache[Site("z", layer)]
        for j, head in enumerate(heads):
            iv = Intervention("z", layer, rows=rows, heads=torch.full_like(rows, head), values=z[:, :, head])
            out = model.run(corrupted, interventions=[iv], logits_at=end)
            scores[i, j] = normalise(logit_diff(out.logits, answers).mean(), clean_ld, corrupted_ld, "denoising")
    return scores


def client_logit_diff(logits, answers, reference):
    """The logit difference as a custom metric: attnlab computes it from downloaded logits (not on the server)."""
    return logits.gather(-1, answers[:, :1])[:, 0] - logits.gather(-1, answers[:, 1:])[:, 0]


def measure(server, fn):
    """(result, requests, MB uploaded, MB downloaded, seconds) of ``fn()`` against ``server``."""
    n0, up0, down0, t0 = server.n_requests, server.bytes_uploaded, server.bytes_downloaded, time.perf_counter()
    result = fn()
    return (result, server.n_requests - n0, (server.bytes_uploaded - up0) / 2**20,
            (server.bytes_downloaded - down0) / 2**20, time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="all", help="'all' or a comma list of layers")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--job-budget-mb", type=float, default=256.0)
    parser.add_argument("--eap-prompts", type=int, default=8, help="IOI prompts for EAP-IG over every edge")
    parser.add_argument("--eap-steps", type=int, default=5, help="EAP-IG integration steps")
    parser.add_argument("--skip-sweep", action="store_true", help="run only the EAP-IG comparison")
    parser.add_argument("--skip-eap", action="store_true", help="run only the head sweeps")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "remote.json")
    args = parser.parse_args()

    key = "bench-" + secrets.token_hex(12)
    os.environ["NDIF_API_KEY"] = key
    rows = []
    with embedded_server({key}) as server:
        model = attnlab.load_model("smollm2-135m", backend="nnsight", remote=RemoteOptions(
            host=server.url, timeout_s=3600, job_budget_mb=args.job_budget_mb, progress=False))
        if not args.skip_sweep:
            rows.append(head_sweeps(server, model, args))
        if not args.skip_eap:
            rows.append(eap_ig_all_edges(server, model, args))
    machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
               "torch_threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


def head_sweeps(server, model, args) -> dict:
    """The head sweep three ways (see the module docstring); returns the result row."""
    layers = list(range(model.info.n_layers)) if args.layers == "all" else [int(x) for x in args.layers.split(",")]
    heads = list(range(model.info.n_heads))
    dataset = ioi_dataset(model, args.prompts, seed=0, corruption="s2_swap")

    attnlab.patch_heads(model, dataset, layers=layers[:1], progress=False)  # warm-up: first-call costs
    ours, ours_requests, ours_up, ours_down, ours_s = measure(
        server, lambda: attnlab.patch_heads(model, dataset, layers=layers, progress=False))
    full, full_requests, full_up, full_down, full_s = measure(
        server, lambda: attnlab.patch_heads(model, dataset, layers=layers, metric=client_logit_diff,
                                            progress=False))
    naive, naive_requests, naive_up, naive_down, naive_s = measure(
        server, lambda: per_head_loop(model, dataset, layers, heads))

    diff = max(float((ours.values - naive).abs().max()), float((ours.values - full.values).abs().max()))
    row = {
        "analysis": "head sweep",
        "cells": len(layers) * len(heads), "prompts": args.prompts, "job_budget_mb": args.job_budget_mb,
        "attnlab_requests": ours_requests, "attnlab_seconds": round(ours_s, 2),
        "attnlab_mb_up": round(ours_up, 2), "attnlab_mb_down": round(ours_down, 3),
        "full_logits_requests": full_requests, "full_logits_seconds": round(full_s, 2),
        "full_logits_mb_up": round(full_up, 2), "full_logits_mb_down": round(full_down, 3),
        "per_head_requests": naive_requests, "per_head_seconds": round(naive_s, 2),
        "per_head_mb_up": round(naive_up, 2), "per_head_mb_down": round(naive_down, 3),
        "request_ratio": round(naive_requests / ours_requests, 1), "time_ratio": round(naive_s / ours_s, 2),
        "download_ratio_vs_full_logits": round(full_down / ours_down, 1),
        "time_ratio_vs_full_logits": round(full_s / ours_s, 2),
        "max_abs_diff": diff,
    }
    print(f"head sweep, {row['cells']} cells ({len(layers)} layers x {len(heads)} heads), {args.prompts} prompts, "
          f"job budget {args.job_budget_mb:g} MB, loopback server on 127.0.0.1")
    for name, n, up, down, sec in (("attnlab, metric on the server", ours_requests, ours_up, ours_down, ours_s),
                                   ("attnlab, full logits back", full_requests, full_up, full_down, full_s),
                                   ("one request per head", naive_requests, naive_up, naive_down, naive_s)):
        print(f"  {name:30s} {n:4d} requests  {up:8.2f} MB up  {down:9.3f} MB down  {sec:8.1f} s")
    print(f"  metric on the server: {row['download_ratio_vs_full_logits']}x fewer bytes down and "
          f"{row['time_ratio_vs_full_logits']}x faster than full logits; {row['request_ratio']}x fewer requests and "
          f"{row['time_ratio']}x faster than one request per head; max |diff| {diff:.2e}")
    return row


def eap_ig_all_edges(server, model, args) -> dict:
    """EAP-IG over every edge: one remote job against the local TransformerLens run; returns the result row."""
    tl = attnlab.load_model("smollm2-135m")
    dataset = ioi_dataset(tl, args.eap_prompts, seed=0, corruption="s2_swap")
    kw = dict(method="eap-ig", steps=args.eap_steps, batch_size=args.eap_prompts, progress=False)
    small = ioi_dataset(tl, 2, seed=1, corruption="s2_swap")
    eap_scores(model, small, method="eap-ig", steps=1, progress=False)  # warm-up: first-call costs on both sides
    eap_scores(tl, small, method="eap-ig", steps=1, progress=False)
    remote, jobs, up, down, remote_s = measure(server, lambda: eap_scores(model, dataset, **kw))
    t0 = time.perf_counter()
    local = eap_scores(tl, dataset, **kw)
    local_s = time.perf_counter() - t0
    scale = float(local.scores.abs().max())
    diff = float((remote.scores - local.scores).abs().max())
    g = remote.graph
    row = {
        "analysis": "eap-ig, every edge", "edges": g.n_edges, "prompts": args.eap_prompts, "steps": args.eap_steps,
        "remote_requests": jobs, "remote_seconds": round(remote_s, 2), "remote_mb_up": round(up, 3),
        "remote_mb_down": round(down, 3), "scores_mb": round(g.n_edges * 4 / 2**20, 3),
        "local_transformer_lens_seconds": round(local_s, 2),
        "time_ratio_remote_vs_local": round(remote_s / local_s, 2),
        "max_abs_diff": diff, "max_abs_score": scale,
    }
    print(f"EAP-IG over every edge ({g.n_edges:,} edges), {args.eap_prompts} prompts, {args.eap_steps} steps")
    print(f"  attnlab, remote (loopback)     {jobs:4d} requests  {up:8.3f} MB up  {down:9.3f} MB down  "
          f"{remote_s:8.1f} s")
    print(f"  TransformerLens backend, local                                              {local_s:8.1f} s")
    print(f"  the scores themselves: {row['scores_mb']} MB; max |diff| {diff:.2e} (max |score| {scale:.2f})")
    return row


if __name__ == "__main__":
    main()
