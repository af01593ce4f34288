"""Bad input gets typed errors before any forward pass (a model that counts its runs)."""

import pytest
import torch

from attnlab.errors import ArgumentError, AttnlabError, DatasetError, TokenizationError
from attnlab.heads import calibrate_sinks, retrieval_ablation, retrieval_scores, sink_analysis
from attnlab.models import tiny_model
from attnlab.tasks.needle import needle_haystack, needle_haystack_tokens


class Counting:
    """Behaves as the model and counts forward passes."""

    def __init__(self, model):
        self._model, self.runs = model, 0
        self.info, self.tokenizer = model.info, None

    def run(self, *args, **kwargs):
        self.runs += 1
        return self._model.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(n_layers=2, n_heads=2, d_vocab=50, n_ctx=32, attn_only=True, seed=0)


@pytest.fixture
def counting(tiny):
    return Counting(tiny)


@pytest.fixture(scope="module")
def inputs(tiny):
    return needle_haystack_tokens(tiny, needle=[40, 41], question=[1], depths=[0.5, 1.0], lengths=[10],
                                  token_range=(2, 30))


@pytest.mark.parametrize("depth", [-0.1, 1.5, float("nan"), "half", True])
def test_depth_out_of_range(tiny, depth):
    with pytest.raises(DatasetError, match="'depths' must be numbers in \\[0, 1\\]"):
        needle_haystack_tokens(tiny, needle=[40], question=[1], depths=[depth], token_range=(2, 30))


def test_haystack_longer_than_context(tiny):
    with pytest.raises(DatasetError, match="longer than tiny-2l's context of 32 tokens; use lengths up to 27"):
        needle_haystack_tokens(tiny, needle=[40, 41], question=[1], lengths=[28], token_range=(2, 30))


def test_ids_outside_vocabulary(tiny):
    with pytest.raises(DatasetError, match="outside the vocabulary"):
        needle_haystack_tokens(tiny, needle=[60], question=[1], lengths=[8], token_range=(2, 30))


def test_model_without_tokenizer_is_sent_to_token_ids(tiny):
    with pytest.raises(TokenizationError, match="needle_haystack_tokens"):
        needle_haystack(tiny)


@pytest.mark.parametrize("threshold", [-0.1, 1.1, "0.1", None])
def test_threshold_out_of_range(counting, inputs, threshold):
    with pytest.raises(ArgumentError, match="'threshold' must be a number in \\[0, 1\\]"):
        retrieval_scores(counting, inputs, threshold=threshold)
    assert counting.runs == 0


@pytest.mark.parametrize("kwargs,match", [({"alpha": 0.5}, "'alpha'"), ({"alpha": float("inf")}, "'alpha'"),
                                          ({"query_fraction": 0}, "'query_fraction'"),
                                          ({"head_fraction": 1.5}, "'head_fraction'"),
                                          ({"min_queries": 0}, "'min_queries'")])
def test_sink_settings_out_of_range(counting, kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        sink_analysis(counting, torch.zeros(1, 8, dtype=torch.long), **kwargs)
    assert counting.runs == 0


def test_sink_tokens_checked(counting):
    with pytest.raises(DatasetError, match="longer than"):
        sink_analysis(counting, torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(DatasetError, match="token ids must be in \\[0, 50\\)"):
        sink_analysis(counting, torch.full((1, 8), 50))
    with pytest.raises(DatasetError, match="Int\\[batch, pos\\]"):
        sink_analysis(counting, torch.zeros(8, dtype=torch.long))
    assert counting.runs == 0


def test_calibration_arguments_checked(counting):
    from attnlab.tasks.base import PatchingDataset

    tok = torch.zeros(2, 12, dtype=torch.long)
    data = PatchingDataset(task="t", clean_tokens=tok, corrupted_tokens=tok, answers=torch.tensor([[1, 2], [1, 2]]),
                           positions={"END": torch.tensor([11, 11])}, position_labels=[str(i) for i in range(12)])
    for kwargs, err in [({"factor": 1.5}, ArgumentError), ({"positions": "middle"}, ArgumentError),
                        ({"heads": [(5, 0)]}, AttnlabError), ({"metric": "nonsense"}, AttnlabError),
                        ({"positions": torch.ones(2, 3, dtype=torch.bool)}, ArgumentError)]:
        with pytest.raises(err):
            calibrate_sinks(counting, data, **kwargs)
    with pytest.raises(ArgumentError, match="PatchingDataset"):
        calibrate_sinks(counting, tok)
    assert counting.runs == 0


def test_ablation_arguments_checked(counting, inputs):
    for kwargs in [{"method": "resample"}, {"k": 0}, {"n_random": 0}, {"n_bootstrap": 10}]:
        with pytest.raises(AttnlabError):
            retrieval_ablation(counting, inputs, [(0, 0)], **kwargs)
    assert counting.runs == 0


@pytest.mark.integration
def test_multi_token_needle_word(embedded_model):
    with pytest.raises(TokenizationError, match="' Dolores' is 2 tokens"):
        needle_haystack(embedded_model, needle=[" The", " Dolores", " park"])
    with pytest.raises(DatasetError, match="longer than smollm2-135m's context|shorter than the longest length"):
        needle_haystack(embedded_model, lengths=[5000])
