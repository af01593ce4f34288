"""Composition scores against TransformerLens's own ``TransformerBridge.all_composition_scores`` on the same weights.

TransformerLens computes Elhage et al.'s Q-, K- and V-composition with its ``FactoredMatrix`` on the bridge's
stacked W_Q/W_K/W_V/W_O, no norm folded; attnlab computes them from the backend's weights by its own route (QR cores,
packed Gram matrices). Every pair with the receiver in a later layer must agree; TransformerLens's other cells are 0.
"""

import pytest
import torch

from attnlab.heads import composition_scores
from attnlab.models import tiny_hf_model, tiny_model

MODELS = {
    "hf-llama-gqa-rotary": lambda: tiny_hf_model("llama", n_layers=3, n_heads=4, n_kv_heads=2, d_model=64, seed=3),
    "hf-gpt2": lambda: tiny_hf_model("gpt2", n_layers=3, n_heads=4, d_model=64, seed=4),
    "native-gqa": lambda: tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=5),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_scores_equal_transformer_lens_all_composition_scores(name):
    model = MODELS[name]()
    ours = composition_scores(model, fold_norm=False, baseline_draws=2)
    for i, mode in enumerate(ours.modes):
        reference = model.bridge.all_composition_scores(mode.upper())
        reference = getattr(reference, "scores", reference).float()
        got = ours.scores[i].float()
        later = ~torch.isnan(got)
        assert later.sum() == 3 * 4 * 4  # (layer 0 -> 1, 2) + (1 -> 2): 3 layer pairs x 16 head pairs
        assert reference[later].abs().min() > 0
        torch.testing.assert_close(got[later], reference[later], atol=1e-6, rtol=1e-5)
        assert reference[~later].abs().max() == 0
