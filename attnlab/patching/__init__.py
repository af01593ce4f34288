"""Activation patching: named sweeps over one batched engine (see :mod:`attnlab.patching.engine`)."""

from attnlab.patching.engine import COMPONENTS, run_sweep
from attnlab.patching.sweeps import (
    patch_attn_out,
    patch_heads,
    patch_heads_by_position,
    patch_mlp_out,
    patch_residual_stream,
)

__all__ = [
    "COMPONENTS",
    "patch_attn_out",
    "patch_heads",
    "patch_heads_by_position",
    "patch_mlp_out",
    "patch_residual_stream",
    "run_sweep",
]
