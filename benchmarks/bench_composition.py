"""attnlab's all-pairs composition scores against the naive computation, side by side in one run.

attnlab (:func:`attnlab.heads.composition_scores`) reduces each head to its ``d_head``-dimensional cores and scores
every pair at once through packed Gram matrices (float64). The naive computation is Elhage et al.'s definition
written out: for one sender-receiver pair at a time, the explicit [d_model, d_model] matrices ``W_OV`` and
``W_QK`` (pre-attention norm folded in), their product and three Frobenius norms, in float64. The naive loop is
timed on a seeded sample of pairs per mode and extrapolated linearly to every pair (all of SmolLM2-135M's 35,235
pairs x 3 modes would take hours); the sampled pairs also give the largest difference between the two.

Time is wall-clock; memory is the peak resident set size above the level before the call (sampled every 2 ms),
in MiB.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_composition.py                  # embedded SmolLM2-135M
    python benchmarks/bench_composition.py --pairs 60 --out benchmarks/results/composition.json
"""

import argparse
import json
import os
import platform
import threading
import time

import torch

from attnlab.heads import composition_scores
from attnlab.models import load_model


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (MiB), sampled from /proc."""

    def __enter__(self):
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def naive_pair(w, n_heads: int, mode: str, sender, receiver) -> float:
    """Elhage et al.'s score of one pair by explicit d_model x d_model matrices (float64, norm gain folded)."""
    group = n_heads // w.W_K.shape[1]
    d_model = w.W_Q.shape[2]
    eye = torch.eye(d_model, dtype=torch.float64)

    def reader(layer):
        if w.attn_norm_weight is None:
            return eye
        m = torch.diag(w.attn_norm_weight[layer].double())
        return (eye - 1.0 / d_model) @ m if w.attn_norm_centred else m

    def ov(layer, h):
        return reader(layer) @ w.W_V[layer, h // group].double() @ w.W_O[layer, h].double()

    def qk(layer, h):
        n = reader(layer)
        return (n @ w.W_Q[layer, h].double()) @ (n @ w.W_K[layer, h // group].double()).T

    left = ov(*sender)
    right = {"q": lambda: qk(*receiver), "k": lambda: qk(*receiver).T, "v": lambda: ov(*receiver)}[mode]()
    return float(torch.linalg.matrix_norm(left @ right) / (torch.linalg.matrix_norm(left)
                                                            * torch.linalg.matrix_norm(right)))


def bench(model, n_pairs: int, seed: int = 0) -> dict:
    info = model.info
    w = model.weights()  # read once, outside both timings
    with PeakRSS() as mem:
        start = time.perf_counter()
        scores = composition_scores(model)
        ours = time.perf_counter() - start
    g = torch.Generator().manual_seed(seed)
    total_pairs = sum(info.n_heads * (info.n_layers - 1 - ls) * info.n_heads for ls in range(info.n_layers))
    naive_time, max_diff = 0.0, 0.0
    with PeakRSS() as naive_mem:
        for mode in scores.modes:
            for _ in range(n_pairs):
                ls = int(torch.randint(0, info.n_layers - 1, (1,), generator=g))
                lr = int(torch.randint(ls + 1, info.n_layers, (1,), generator=g))
                hs, hr = (int(x) for x in torch.randint(0, info.n_heads, (2,), generator=g))
                start = time.perf_counter()
                value = naive_pair(w, info.n_heads, mode, (ls, hs), (lr, hr))
                naive_time += time.perf_counter() - start
                max_diff = max(max_diff, abs(value - float(scores.score(mode)[ls, hs, lr, hr])))
    per_pair = naive_time / (n_pairs * len(scores.modes))
    naive_total = per_pair * total_pairs * len(scores.modes)
    return {
        "model": info.name, "layers": info.n_layers, "heads": info.n_heads, "kv_heads": info.n_kv_heads,
        "d_model": info.d_model, "d_head": info.d_head, "pairs": total_pairs, "modes": len(scores.modes),
        "attnlab_s": round(ours, 2), "attnlab_peak_mib": round(mem.mib, 1),
        "naive_sampled_pairs": n_pairs * len(scores.modes), "naive_s_per_pair": round(per_pair, 5),
        "naive_extrapolated_s": round(naive_total, 1), "naive_peak_mib": round(naive_mem.mib, 1),
        "speedup": round(naive_total / ours, 1), "max_abs_diff_on_sampled_pairs": max_diff,
        "baseline_mean_k": scores.baseline_mean("k"), "baseline_std_k": scores.baseline_std("k"),
        "top_k": scores.top("k", 3)[["sender", "receiver", "k", "k_ratio"]].to_dict("records"),
        "threads": torch.get_num_threads(), "machine": platform.machine(), "torch": torch.__version__,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=40, help="naive pairs timed per mode")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    result = bench(load_model(args.model), args.pairs)
    print(f"{result['model']}: {result['pairs']} pairs x {result['modes']} modes")
    print(f"  attnlab  {result['attnlab_s']:8.2f} s   peak {result['attnlab_peak_mib']:7.1f} MiB")
    print(f"  naive    {result['naive_extrapolated_s']:8.1f} s   peak {result['naive_peak_mib']:7.1f} MiB "
          f"(extrapolated from {result['naive_sampled_pairs']} pairs, {result['naive_s_per_pair']*1e3:.1f} ms each)")
    print(f"  ratio    {result['speedup']:.0f}x faster; largest difference on the sampled pairs "
          f"{result['max_abs_diff_on_sampled_pairs']:.2e}")
    print(f"  random baseline (K) {result['baseline_mean_k']:.4f} +- {result['baseline_std_k']:.4f}; top K pairs "
          + ", ".join(f"{r['sender']}->{r['receiver']} {r['k']:.3f} ({r['k_ratio']:.1f}x)" for r in result["top_k"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
