"""The ``attnlab`` command line.

    attnlab patch ioi --model smollm2-135m --component heads            # print the top heads
    attnlab patch ioi --component heads_by_pos --out report.html       # also write an offline HTML report
    attnlab prepare                                                     # convert and cache the embedded model
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from attnlab.memory import DEFAULT_BUDGET_MB

__all__ = ["main"]

_COMPONENTS = ("heads", "heads_by_pos", "resid_pre", "attn_out", "mlp_out")
_TASKS = ("ioi",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="Activation patching on real language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    patch = sub.add_parser("patch", help="run an activation-patching sweep and print the top components")
    patch.add_argument("task", choices=_TASKS, help="task whose clean/corrupted prompts to patch")
    patch.add_argument("--model", default="smollm2-135m",
                       help="attnlab model name or Hugging Face id (default: the embedded smollm2-135m)")
    patch.add_argument("--component", choices=_COMPONENTS, default="heads", help="what to patch (default: heads)")
    patch.add_argument("--direction", choices=("denoising", "noising"), default="denoising")
    patch.add_argument("--n-prompts", type=int, default=16, help="number of prompts (default 16)")
    patch.add_argument("--seed", type=int, default=0)
    patch.add_argument("--corruption", choices=("s2_swap", "abc"), default="s2_swap",
                       help="s2_swap: symmetric token replacement (Zhang & Nanda 2023); abc: three new names "
                            "(Wang et al. 2022)")
    patch.add_argument("--top", type=int, default=10, help="how many components to print (default 10)")
    patch.add_argument("--out", type=Path, help="write a standalone, offline HTML report to this file")
    # dest is not "save": nnsight, once imported, gives every object a .save() method, and argparse does not set the
    # default of a name the namespace already has
    patch.add_argument("--save", type=Path, dest="save_json",
                       help="save the result as JSON (reload with PatchingResult.load)")
    patch.add_argument("--memory-budget-mb", type=float, default=DEFAULT_BUDGET_MB)
    patch.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("prepare", help="convert and cache the embedded SmolLM2-135M model (done once, ~40 s)")
    return parser


def _check_output(path: Path | None, flag: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output path that cannot be written, before the model is loaded (not after a long sweep)."""
    from attnlab.errors import AttnlabError

    if path is None:
        return
    if suffixes and path.suffix.lower() not in suffixes:
        raise AttnlabError(f"{flag} must name a {' or '.join(suffixes)} file (got {path})")
    if path.is_dir():
        raise AttnlabError(f"{flag} {path} is a folder; give a file name inside it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AttnlabError(f"{flag}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise AttnlabError(f"{flag}: {path} cannot be written (no write permission in {parent})")


def _cmd_patch(args) -> int:
    from attnlab.errors import AttnlabError
    from attnlab.memory import check_budget_value
    from attnlab.tasks.base import check_seed

    if args.n_prompts < 1:
        raise AttnlabError(f"--n-prompts must be at least 1 (got {args.n_prompts})")
    if args.top < 1:
        raise AttnlabError(f"--top must be at least 1 (got {args.top})")
    check_seed(args.seed, "--seed")
    check_budget_value(args.memory_budget_mb)
    _check_output(args.out, "--out", (".html", ".htm"))
    _check_output(args.save_json, "--save", (".json",))
    from attnlab.models import load_model
    from attnlab.patching import run_sweep
    from attnlab.render.views import standalone_html
    from attnlab.serialisation import write_text
    from attnlab.tasks.ioi import ioi_dataset

    model = load_model(args.model)
    dataset = ioi_dataset(model, args.n_prompts, seed=args.seed, corruption=args.corruption)
    result = run_sweep(model, dataset, args.component, direction=args.direction,
                       memory_budget_mb=args.memory_budget_mb, progress=not args.quiet)
    print(repr(result))
    s = result.settings
    if result.complete:
        print(f"{s['forward_passes']} forward passes ({s['variants_per_pass']} variants per pass, "
              f"{s['variants_skipped_as_no_ops']} no-op variants skipped) in {s['seconds']:.1f} s")
    else:
        print(f"INTERRUPTED: the result is partial: {s['forward_passes_run']} of {s['forward_passes']} forward passes "
              f"ran in {s['seconds']:.1f} s; cells not run are NaN")
    columns = [c for c in ("component", "token", "value", "patched_logit_diff") if c in result.top(1).columns]
    import pandas as pd

    with pd.option_context("display.width", 120, "display.float_format", "{:+.4f}".format):
        print(result.top(args.top)[columns].to_string(index=False))
    partial = "" if result.complete else " (partial)"
    if args.save_json:
        print(f"saved result{partial} to {result.save(args.save_json)}")
    if args.out:
        write_text(args.out, standalone_html(result.heatmap_payload()))
        print(f"wrote HTML report{partial} to {args.out}")
    if not result.complete:
        from attnlab import interrupts

        interrupts.clear()  # handled here: the command ends with the partial result
        print("attnlab: interrupted: the result above is partial", file=sys.stderr)
        return 130
    return 0


def _cmd_prepare(args) -> int:
    from attnlab.models.embedded import embedded_checkpoint

    print(f"embedded model ready in {embedded_checkpoint()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``attnlab`` command. Returns the exit status: 0, 2 for a bad input or any other failure
    (one line on stderr, never a traceback; ``ATTNLAB_DEBUG=1`` shows it), 130 after Ctrl-C (a partial result is
    still printed and saved)."""
    from attnlab.errors import AttnlabError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        return {"patch": _cmd_patch, "prepare": _cmd_prepare}[args.command](args)
    except KeyboardInterrupt:
        print("attnlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, whatever failed (a missing folder, corrupt weights, a bad budget ...)
        if os.environ.get("ATTNLAB_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        kind = "" if isinstance(exc, AttnlabError) else f"{type(exc).__name__}: "
        print(f"attnlab: error: {kind}{' '.join(text) if text else type(exc).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
