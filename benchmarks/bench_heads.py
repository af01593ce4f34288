"""attnlab's head scores side by side with TransformerLens's ``head_detector.detect_head``.

One run, same model, same inputs: the time to score every head of the model for all three kinds (previous-token,
duplicate-token, induction) with ``attnlab.heads.score_heads(..., definition="detect_head")`` (one batched forward
pass for all kinds and all heads) and with ``detect_head`` (called once per kind; it runs one forward pass per
sequence and loops over heads in Python), the ratio of the two, and the largest absolute difference of the scores
(they compute the same definition, so it should be float noise).

Models: (a) the embedded SmolLM2-135M (30 x 9 heads) on natural-text repeats (real strings, so ``detect_head``
tokenises them itself); (b) a randomly initialised model with GPT-2 small's shape (12 x 12 heads), which has no
tokenizer: ``detect_head`` gets each sequence by name through a stand-in ``to_tokens`` that returns its token row
(detect_head's own code is untouched).

The further head analyses of ``attnlab.heads`` have benchmarks of their own, which ``--analyses`` runs after these
(each against its naive loop, on the embedded model): ``retrieval`` and ``sinks`` (``bench_heads_extra.py``: one
``run_with_cache`` per input and a Python loop over heads), ``composition`` (``bench_composition.py``: one head pair
at a time with explicit matrices).

Usage:
    python benchmarks/bench_heads.py                       # both models, 8 sequences of 2 x 20 tokens
    python benchmarks/bench_heads.py --models gpt2 --batch 16 --seq-len 32 --out benchmarks/results/heads.json
    python benchmarks/bench_heads.py --analyses detect,retrieval_sinks,composition
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformer_lens.head_detector import detect_head

from attnlab.heads import score_heads
from attnlab.models import gpt2_shaped_model, load_model
from attnlab.tasks.induction import natural_repeats, repeated_random_tokens

TL_NAMES = {"previous_token": "previous_token_head", "duplicate_token": "duplicate_token_head",
            "induction": "induction_head"}


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def bench(model, data, texts, label: str) -> dict:
    """Time both implementations on the same sequences (one warm-up call each first)."""
    score_heads(model, data, definition="detect_head")
    detect_head(model.bridge, texts[:1], "previous_token_head")
    ours, t_ours = _timed(lambda: score_heads(model, data, definition="detect_head"))
    ref, t_ref = _timed(lambda: {k: detect_head(model.bridge, texts, name) for k, name in TL_NAMES.items()})
    diff = max(float((ours.score(k) - ref[k]).abs().max()) for k in TL_NAMES)
    return {"model": label, "n_layers": model.info.n_layers, "n_heads": model.info.n_heads,
            "n_sequences": len(data), "n_pos": data.n_pos, "attnlab_s": round(t_ours, 3),
            "detect_head_s": round(t_ref, 3), "speedup": round(t_ref / t_ours, 2), "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="embedded,gpt2", help="comma-separated: embedded, gpt2")
    parser.add_argument("--batch", type=int, default=8, help="sequences")
    parser.add_argument("--seq-len", type=int, default=20, help="tokens per repeat")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--analyses", default="detect",
                        help="comma list of: detect (this file), retrieval_sinks, composition (their own benchmarks)")
    args = parser.parse_args()
    analyses = args.analyses.split(",")
    unknown = set(analyses) - {"detect", "retrieval_sinks", "composition"}
    if unknown:
        parser.error(f"unknown analyses {sorted(unknown)}")
    if "detect" in analyses:
        detect(args, parser)
    here = Path(__file__).parent
    for name, script in (("retrieval_sinks", "bench_heads_extra.py"), ("composition", "bench_composition.py")):
        if name in analyses:
            print(f"\n# {name}: {script}", flush=True)
            subprocess.run([sys.executable, str(here / script)], check=True)


def detect(args, parser) -> None:
    """Previous-token, duplicate-token and induction scores against ``detect_head``."""
    torch.manual_seed(0)
    rows = []
    for name in args.models.split(","):
        if name == "embedded":
            model = load_model("smollm2-135m")
            data = natural_repeats(model, args.seq_len, args.batch, seed=0)
            rows.append(bench(model, data, data.texts, "smollm2-135m"))
        elif name == "gpt2":
            model = gpt2_shaped_model(architecture="native")  # the model its README figure was measured on
            data = repeated_random_tokens(model, args.seq_len, args.batch, seed=0, prepend_bos=True,
                                          bos_token_id=50256)
            by_name = {f"seq{i}": data.tokens[i:i + 1] for i in range(len(data))}
            model.bridge.to_tokens = lambda seq, *a, **k: (torch.cat([by_name[s] for s in seq])
                                                           if isinstance(seq, list) else by_name[seq])
            rows.append(bench(model, data, list(by_name), "gpt2-small-shaped (random)"))
        else:
            parser.error(f"unknown model {name!r}")
    print(f"{'model':<28} {'heads':>7} {'seqs x pos':>11} {'attnlab (s)':>12} {'detect_head (s)':>16} "
          f"{'ratio':>7} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['model']:<28} {r['n_layers'] * r['n_heads']:>7} {r['n_sequences']:>5} x {r['n_pos']:<4} "
              f"{r['attnlab_s']:>12.3f} {r['detect_head_s']:>16.3f} {r['speedup']:>6.1f}x {r['max_abs_diff']:>11.2e}")
    if args.out:
        meta = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
