"""Backends: how attnlab reaches a model's internals (TransformerLens 4 locally; nnsight locally or on NDIF)."""

from attnlab.backends.base import Backend, Capability, Intervention, ModelInfo, ModelWeights, RunOutput

__all__ = ["Backend", "Capability", "Intervention", "ModelInfo", "ModelWeights", "RunOutput"]
