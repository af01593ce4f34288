"""Circuit search: edge-level discovery (EAP, EAP-IG, ACDC) and exact evaluation of circuits.

Modules:
    - :mod:`attnlab.circuits.graph`: the computational graph (senders, receivers, edges) and the exact edge-ablation
      runner;
    - :mod:`attnlab.circuits.eap`: edge attribution patching and EAP with integrated gradients;
    - :mod:`attnlab.circuits.circuit`: the :class:`Circuit` record (JSON round trip);
    - :mod:`attnlab.circuits.evaluate`: faithfulness, faithfulness curves, completeness, minimality;
    - :mod:`attnlab.circuits.acdc`: ACDC-style greedy pruning with exact forward passes;
    - :mod:`attnlab.circuits.attribution`: node-level attribution patching (every head, MLP and residual position
      from two forward passes and one backward pass);
    - :mod:`attnlab.circuits.path_patching`: path patching from senders to receivers (Wang et al. 2022);
    - :mod:`attnlab.circuits.agreement`: attribution against exact patching (when to trust the fast method);
    - :mod:`attnlab.circuits.compare`: head overlap of circuits across tasks (Jaccard, Merullo et al.'s overlap).

Every analysis takes ``metric=`` (:mod:`attnlab.metrics`): the logit difference by default, KL divergence from the
clean run (``"kl_div"``), the answer's probability or log-probability, accuracy (exact analyses only), or a callable
``fn(logits, answers, reference)``; results record which metric produced them.

Names load lazily (importing this package does not import torch).
"""

import importlib

__all__ = [
    "ACDCResult",
    "ATTRIBUTION_COMPONENTS",
    "AblationSource",
    "AgreementError",
    "AgreementReport",
    "Circuit",
    "CircuitComparison",
    "CircuitComparisonError",
    "CircuitError",
    "CompletenessResult",
    "EdgeScores",
    "FaithfulnessCurve",
    "FaithfulnessResult",
    "GradientNotSupportedError",
    "Graph",
    "GraphRunner",
    "MemoryBudgetError",
    "MinimalityResult",
    "PathPatchingScore",
    "acdc",
    "agreement",
    "agreement_report",
    "attribution_patching",
    "attribution_sweep",
    "circuit_from_scores",
    "circuit_heads",
    "circuit_metrics",
    "clean_reference",
    "compare_circuits",
    "completeness",
    "corrupted_source",
    "eap_scores",
    "estimate_memory_mb",
    "faithfulness",
    "faithfulness_curve",
    "head_inputs",
    "mean_source",
    "minimality",
    "path_patch",
    "path_patching_sweep",
]

_LAZY = {
    "ACDCResult": "attnlab.circuits.acdc",
    "ATTRIBUTION_COMPONENTS": "attnlab.circuits.attribution",
    "AblationSource": "attnlab.circuits.graph",
    "AgreementError": "attnlab.circuits.agreement",
    "AgreementReport": "attnlab.circuits.agreement",
    "Circuit": "attnlab.circuits.circuit",
    "CircuitComparison": "attnlab.circuits.compare",
    "CircuitComparisonError": "attnlab.circuits.compare",
    "CircuitError": "attnlab.circuits.graph",
    "CompletenessResult": "attnlab.circuits.evaluate",
    "EdgeScores": "attnlab.circuits.eap",
    "FaithfulnessCurve": "attnlab.circuits.evaluate",
    "FaithfulnessResult": "attnlab.circuits.evaluate",
    "GradientNotSupportedError": "attnlab.circuits.graph",
    "Graph": "attnlab.circuits.graph",
    "GraphRunner": "attnlab.circuits.graph",
    "MemoryBudgetError": "attnlab.circuits.graph",
    "MinimalityResult": "attnlab.circuits.evaluate",
    "PathPatchingScore": "attnlab.circuits.path_patching",
    "acdc": "attnlab.circuits.acdc",
    "agreement": "attnlab.circuits.agreement",
    "agreement_report": "attnlab.circuits.agreement",
    "attribution_patching": "attnlab.circuits.attribution",
    "attribution_sweep": "attnlab.circuits.attribution",
    "circuit_from_scores": "attnlab.circuits.circuit",
    "circuit_heads": "attnlab.circuits.compare",
    "circuit_metrics": "attnlab.circuits.evaluate",
    "clean_reference": "attnlab.circuits.evaluate",
    "compare_circuits": "attnlab.circuits.compare",
    "completeness": "attnlab.circuits.evaluate",
    "corrupted_source": "attnlab.circuits.graph",
    "eap_scores": "attnlab.circuits.eap",
    "estimate_memory_mb": "attnlab.circuits.graph",
    "faithfulness": "attnlab.circuits.evaluate",
    "faithfulness_curve": "attnlab.circuits.evaluate",
    "head_inputs": "attnlab.circuits.path_patching",
    "mean_source": "attnlab.circuits.graph",
    "minimality": "attnlab.circuits.evaluate",
    "path_patch": "attnlab.circuits.path_patching",
    "path_patching_sweep": "attnlab.circuits.path_patching",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnlab.circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
