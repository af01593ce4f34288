"""Recall versus reasoning: which components a model needs for fact recall and which for reasoning over premises,
as a causal double dissociation with intervals and controls.

- :func:`dissociation_sweep` (:mod:`attnlab.dissociation.sweep`): ablate every head, block or given component on
  matched recall and reasoning items (:mod:`attnlab.tasks.recall_reasoning`) in batched passes, on any backend;
- :class:`DissociationResult` (:mod:`attnlab.dissociation.result`): drops with paired bootstrap intervals,
  selectivity, the corrected list of selective components, the double dissociation and random-set controls;
- :func:`component_detail`: the attention pattern and per-item effects of one component;
- :mod:`attnlab.dissociation.stats`: the bootstrap and the Holm / Benjamini-Hochberg corrections.
"""

from attnlab.dissociation import stats
from attnlab.dissociation.details import component_detail
from attnlab.dissociation.result import DissociationResult
from attnlab.dissociation.sweep import (
    ABLATIONS,
    GRANULARITIES,
    Component,
    Part,
    dissociation_sweep,
    granularity_components,
    parse_component,
)

__all__ = ["ABLATIONS", "GRANULARITIES", "Component", "DissociationResult", "Part", "component_detail",
           "dissociation_sweep", "granularity_components", "parse_component", "stats"]
