"""attnlab: click through the circuits inside attention layers.

Activation patching, circuit search and attention-head analyses on real language models, with results rendered in
JupyterLab. Start with :func:`load_model` (the embedded SmolLM2-135M works offline), build a task dataset
(:func:`attnlab.tasks.ioi.ioi_dataset`), and run a sweep (:func:`patch_heads` ...).

Importing attnlab is cheap and has no side effects: torch, TransformerLens and transformers load on first use.
"""

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "AttentionView",
    "AttnlabError",
    "Backend",
    "Capability",
    "CapabilityError",
    "CircuitSearch",
    "Explorer",
    "HeadGalleryWidget",
    "HeadScores",
    "Intervention",
    "Lab",
    "ModelInfo",
    "PatchingDataset",
    "PatchingResult",
    "RecallReasoningWorkbench",
    "Site",
    "SiteKind",
    "__version__",
    "ablation_effects",
    "compare_results",
    "gpt2_shaped_model",
    "induction_analysis",
    "load_model",
    "patch_attn_out",
    "patch_heads",
    "patch_heads_by_position",
    "patch_mlp_out",
    "patch_residual_stream",
    "prefix_curves",
    "read_attention",
    "repeated_random_tokens",
    "run_sweep",
    "score_heads",
    "tiny_hf_model",
    "tiny_model",
]

_LAZY = {
    "AttentionView": "attnlab.attention_view",
    "AttnlabError": "attnlab.errors",
    "Backend": "attnlab.backends.base",
    "Capability": "attnlab.backends.base",
    "CapabilityError": "attnlab.errors",
    "CircuitSearch": "attnlab.circuit_search.widget",
    "Explorer": "attnlab.explorer",
    "HeadGalleryWidget": "attnlab.gallery_widget.widget",
    "HeadScores": "attnlab.heads.results",
    "Intervention": "attnlab.backends.base",
    "Lab": "attnlab.lab",
    "ModelInfo": "attnlab.backends.base",
    "PatchingDataset": "attnlab.tasks.base",
    "PatchingResult": "attnlab.results",
    "RecallReasoningWorkbench": "attnlab.dissociation.widget",
    "Site": "attnlab.sites",
    "SiteKind": "attnlab.sites",
    "ablation_effects": "attnlab.heads",
    "compare_results": "attnlab.compare_runs",
    "gpt2_shaped_model": "attnlab.models",
    "induction_analysis": "attnlab.heads",
    "load_model": "attnlab.models",
    "patch_attn_out": "attnlab.patching",
    "patch_heads": "attnlab.patching",
    "patch_heads_by_position": "attnlab.patching",
    "patch_mlp_out": "attnlab.patching",
    "patch_residual_stream": "attnlab.patching",
    "prefix_curves": "attnlab.heads",
    "read_attention": "attnlab.attention_view",
    "repeated_random_tokens": "attnlab.tasks.induction",
    "run_sweep": "attnlab.patching",
    "score_heads": "attnlab.heads",
    "tiny_hf_model": "attnlab.models",
    "tiny_model": "attnlab.models",
}


_SUBPACKAGES = ("attention_view", "backends", "circuits", "errors", "explorer", "metrics", "models", "patching",
                "remote", "render", "results", "sites", "tasks")


def __getattr__(name: str):
    if name in _SUBPACKAGES:  # attnlab.remote.status() works after a plain `import attnlab`
        return importlib.import_module(f"attnlab.{name}")
    if name == "__version__":
        from attnlab._version import version

        return version()
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds attnlab's prebuilt extension (used by ``jupyter labextension develop``)."""
    return [{"src": "labextension", "dest": "attnlab"}]


if TYPE_CHECKING:  # pragma: no cover
    from attnlab.attention_view import read_attention
    from attnlab.attention_view.widget import AttentionView
    from attnlab.backends.base import Backend, Capability, Intervention, ModelInfo
    from attnlab.circuit_search.widget import CircuitSearch
    from attnlab.compare_runs import compare_results
    from attnlab.errors import AttnlabError, CapabilityError
    from attnlab.explorer.widget import Explorer
    from attnlab.gallery_widget.widget import HeadGalleryWidget
    from attnlab.heads import ablation_effects, induction_analysis, prefix_curves, score_heads
    from attnlab.heads.results import HeadScores
    from attnlab.lab import Lab
    from attnlab.models import gpt2_shaped_model, load_model, tiny_hf_model, tiny_model
    from attnlab.patching import (
        patch_attn_out,
        patch_heads,
        patch_heads_by_position,
        patch_mlp_out,
        patch_residual_stream,
        run_sweep,
    )
    from attnlab.results import PatchingResult
    from attnlab.sites import Site, SiteKind
    from attnlab.tasks.base import PatchingDataset
    from attnlab.tasks.induction import repeated_random_tokens
