"""Attention-head analyses: find previous-token, duplicate-token and induction heads, verify them causally, and split
induction heads by the length of matching prefix they need.

- :mod:`attnlab.heads.patterns`: every head's attention pattern through the backend (:func:`attention_patterns`).
- :mod:`attnlab.heads.scores`: pattern scores of every head (:func:`score_heads`), including TransformerLens's
  ``detect_head`` definition.
- :mod:`attnlab.heads.verification`: ablation effects on in-context loss, or any metric (:func:`ablation_effects`).
- :mod:`attnlab.heads.attribution`: direct logit attribution to the copied token (:func:`copying_scores`).
- :mod:`attnlab.heads.prefix`: long- versus short-prefix induction (:func:`prefix_curves`, :func:`classify_prefix`).
- :mod:`attnlab.heads.results`: :class:`HeadScores`, displayed as the head gallery.
- :mod:`attnlab.heads.sinks`: attention sinks, first-token and hidden (:func:`sink_analysis`, :class:`SinkAnalysis`),
  and ACT-style calibration of them with its effect on a metric (:func:`calibrate_sinks`).
- :mod:`attnlab.heads.retrieval`: retrieval heads on needle-in-a-haystack inputs (:func:`retrieval_scores`,
  :class:`RetrievalScores`) and their causal check against random heads (:func:`retrieval_ablation`).
- :mod:`attnlab.heads.composition`: weight-based Q-, K- and V-composition between heads
  (:func:`composition_scores`, :class:`CompositionScores`), the SVD of one pair's composed matrix
  (:func:`composition_svd`) and its agreement with path patching (:func:`compare_with_path_patching`).

:func:`induction_analysis` runs all of it in one call. Everything reads the model through
:meth:`Backend.run <attnlab.backends.base.Backend.run>` and :meth:`Backend.weights
<attnlab.backends.base.Backend.weights>` only, so it runs on every backend (copying scores need the weights, which
remote models keep on the server).
"""

from attnlab.heads.analysis import induction_analysis
from attnlab.heads.attribution import copying_scores
from attnlab.heads.composition import (
    COMPOSITION_MODES,
    CompositionChannel,
    CompositionComparison,
    CompositionScores,
    compare_with_path_patching,
    composition_scores,
    composition_svd,
)
from attnlab.heads.prefix import PrefixCurves, classify_prefix, prefix_curves
from attnlab.heads.results import HeadScores
from attnlab.heads.retrieval import RetrievalAblation, RetrievalScores, retrieval_ablation, retrieval_scores
from attnlab.heads.patterns import attention_patterns
from attnlab.heads.scores import SCORE_KINDS, score_heads
from attnlab.heads.sinks import SinkAnalysis, SinkCalibration, calibrate_sinks, sink_analysis
from attnlab.heads.verification import HeadAblation, ablation_effects, loss_by_position

__all__ = [
    "COMPOSITION_MODES",
    "CompositionChannel",
    "CompositionComparison",
    "CompositionScores",
    "HeadAblation",
    "HeadScores",
    "PrefixCurves",
    "RetrievalAblation",
    "RetrievalScores",
    "SCORE_KINDS",
    "SinkAnalysis",
    "SinkCalibration",
    "ablation_effects",
    "attention_patterns",
    "calibrate_sinks",
    "classify_prefix",
    "compare_with_path_patching",
    "composition_scores",
    "composition_svd",
    "copying_scores",
    "induction_analysis",
    "loss_by_position",
    "prefix_curves",
    "retrieval_ablation",
    "retrieval_scores",
    "score_heads",
    "sink_analysis",
]
