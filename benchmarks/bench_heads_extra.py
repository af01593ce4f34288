"""Retrieval scores and attention-sink analysis of every head of the embedded SmolLM2-135M (30 x 9 heads), against
the naive loop, as time and peak-memory ratios.

- attnlab: :func:`attnlab.heads.retrieval_scores` (one batched pass per haystack length, the pattern recorded only at
  the copying positions) and :func:`attnlab.heads.sink_analysis` (one batched pass, received mass reduced per batch).
- naive: TransformerLens ``run_with_cache`` on one input at a time (every activation cached), then a Python loop over
  every (layer, head) reading that head's full pattern: the way the scores are usually written in notebooks.

The two compute the same numbers; the largest difference is reported. Each method runs in its own child process
(spawned, the model loaded there first), so its peak memory is the child's peak resident set minus its resident set
after loading the model and a warm-up pass (Linux ``VmHWM`` / ``VmRSS``). Times are wall-clock seconds, best of
``--repeat``.

Usage:
    python benchmarks/bench_heads_extra.py                        # 6 needle inputs of 200 haystack tokens, 8 texts
    python benchmarks/bench_heads_extra.py --length 400 --out benchmarks/results/heads_extra.json
"""

import argparse
import json
import multiprocessing as mp
import platform
import time

import torch


def _mem(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def _inputs(model, length: int):
    from attnlab.tasks.needle import needle_haystack

    return needle_haystack(model, depths=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0], lengths=[length])


def _sink_tokens(model, n_pos: int, batch: int):
    from attnlab.tasks.needle import HAYSTACK

    ids = model.encode(HAYSTACK)
    bos = model.tokenizer.bos_token_id
    return torch.tensor([[bos] + ids[i * 50:i * 50 + n_pos - 1] for i in range(batch)])


def naive_retrieval(model, inputs) -> torch.Tensor:
    bridge, info = model.bridge, model.info
    out = []
    for item in inputs.items:
        logits, cache = bridge.run_with_cache(item.tokens[None])
        needle = item.needle_positions.tolist()
        score = torch.zeros(info.n_layers, info.n_heads)
        for ans in item.answer_positions.tolist():
            target = int(item.tokens[ans])
            if int(logits[0, ans - 1].argmax()) != target:
                continue
            for layer in range(info.n_layers):
                for head in range(info.n_heads):
                    src = int(cache[f"blocks.{layer}.attn.hook_pattern"][0, head, ans - 1].argmax())
                    score[layer, head] += float(src in needle and int(item.tokens[src]) == target)
        out.append(score / len(item.answer_positions))
        del cache
    return torch.stack(out).mean(0)


def naive_sinks(model, tokens) -> torch.Tensor:
    bridge, info = model.bridge, model.info
    n = tokens.shape[1]
    mass = torch.zeros(info.n_layers, info.n_heads, n)
    for row in tokens:
        _, cache = bridge.run_with_cache(row[None])
        for layer in range(info.n_layers):
            for head in range(info.n_heads):
                p = cache[f"blocks.{layer}.attn.hook_pattern"][0, head]
                for k in range(n - 1):
                    mass[layer, head, k] += p[k + 1:, k].mean()
        del cache
    return mass / tokens.shape[0]


def _child(method: str, args: dict, queue) -> None:
    torch.set_num_threads(args["threads"])
    from attnlab.heads import retrieval_scores, sink_analysis
    from attnlab.models import load_model

    model = load_model("smollm2-135m")
    inputs = _inputs(model, args["length"])
    tokens = _sink_tokens(model, args["n_pos"], args["batch"])
    with torch.no_grad():
        model.run(tokens[:1])  # warm-up
    base = _mem("VmRSS")
    fns = {"attnlab_retrieval": lambda: retrieval_scores(model, inputs, batch_size=6).scores,
           "naive_retrieval": lambda: naive_retrieval(model, inputs),
           "attnlab_sinks": lambda: sink_analysis(model, tokens).mass,
           "naive_sinks": lambda: naive_sinks(model, tokens)}
    best, value = float("inf"), None
    for _ in range(args["repeat"]):
        start = time.perf_counter()
        with torch.no_grad():
            value = fns[method]()
        best = min(best, time.perf_counter() - start)
    queue.put({"method": method, "seconds": best, "peak_mb": (_mem("VmHWM") - base) / 2 ** 20,
               "value": value.tolist()})


def run(method: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(method, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=200, help="haystack tokens of the needle inputs")
    parser.add_argument("--n-pos", type=int, default=128, help="tokens per sink sequence")
    parser.add_argument("--batch", type=int, default=8, help="sink sequences")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = vars(parser.parse_args())
    results = {m: run(m, args) for m in ("attnlab_retrieval", "naive_retrieval", "attnlab_sinks", "naive_sinks")}
    report = {"machine": platform.processor() or platform.machine(), "torch_threads": args["threads"],
              "settings": {k: args[k] for k in ("length", "n_pos", "batch", "repeat")}}
    for what in ("retrieval", "sinks"):
        ours, ref = results[f"attnlab_{what}"], results[f"naive_{what}"]
        diff = float((torch.tensor(ours["value"]) - torch.tensor(ref["value"])).abs().max())
        report[what] = {"attnlab_s": round(ours["seconds"], 3), "naive_s": round(ref["seconds"], 3),
                        "speedup": round(ref["seconds"] / ours["seconds"], 2),
                        "attnlab_peak_mb": round(ours["peak_mb"], 1), "naive_peak_mb": round(ref["peak_mb"], 1),
                        "memory_ratio": round(ref["peak_mb"] / max(ours["peak_mb"], 1e-3), 2),
                        "max_abs_diff": diff}
    print(json.dumps(report, indent=2))
    if args["out"]:
        with open(args["out"], "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
