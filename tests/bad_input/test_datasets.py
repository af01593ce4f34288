"""A dataset runs only on a model that reads its token ids as the same strings, and analyses are given loaded models:
each case a typed error before any forward pass, with an explicit override for tokenizers that are truly shared."""

import pytest
import torch

import attnlab
from attnlab.circuits import acdc, attribution_patching, eap_scores
from attnlab.circuits.evaluate import faithfulness
from attnlab.circuits.graph import Graph
from attnlab.circuits.path_patching import path_patch
from attnlab.errors import ArgumentTypeError, DatasetError
from attnlab.explorer.details import RunCache
from attnlab.models import tiny_model
from attnlab.tasks.ioi import ioi_dataset

pytestmark = pytest.mark.integration

def _every_edge(model):
    """The full graph's mask (a placeholder where ``model`` is not a model: the analysis refuses it first)."""
    return Graph.from_info(model.info).valid if hasattr(model, "info") else torch.ones(1, 1, dtype=torch.bool)


ANALYSES = {
    "patch_heads": lambda m, d: attnlab.patch_heads(m, d, progress=False),
    "attribution_patching": lambda m, d: attribution_patching(m, d),
    "eap_scores": lambda m, d: eap_scores(m, d, progress=False),
    "faithfulness": lambda m, d: faithfulness(m, d, _every_edge(m)),
    "acdc": lambda m, d: acdc(m, d, 0.1, progress=False),
    "path_patch": lambda m, d: path_patch(m, d, (0, 0), "logits"),
    "explorer": lambda m, d: RunCache(m, d),
}


@pytest.fixture(scope="module")
def smol_ioi(embedded_model):
    return ioi_dataset(embedded_model, 2, seed=0)


@pytest.fixture(scope="module")
def same_vocab_tiny():
    """A random model with SmolLM2's vocabulary size but no tokenizer: every id is in range, none means anything."""
    return tiny_model(n_layers=2, n_heads=4, d_vocab=49152, n_ctx=64)


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_a_dataset_from_another_tokenizer_is_refused(analysis, smol_ioi, same_vocab_tiny):
    with pytest.raises(DatasetError, match=r"tokenised by 'smollm2-135m'.*has no tokenizer.*assume_tokenizer"):
        ANALYSES[analysis](same_vocab_tiny, smol_ioi)


def test_the_override_declares_the_tokenizers_equal(smol_ioi, same_vocab_tiny):
    assumed = smol_ioi.assume_tokenizer(same_vocab_tiny)
    assert assumed.metadata["tokenizer_assumed_from"] == ["smollm2-135m", smol_ioi.tokenizer_fingerprint]
    result = attnlab.patch_heads(same_vocab_tiny, assumed, progress=False)
    assert result.complete


def test_both_backends_of_one_model_share_the_fingerprint(embedded_model, embedded_nnsight, smol_ioi):
    assert smol_ioi.tokenizer_fingerprint == embedded_model.tokenizer_fingerprint == \
        embedded_nnsight.tokenizer_fingerprint
    assert len(smol_ioi.tokenizer_fingerprint) == 24


def test_a_different_tokenizer_of_the_same_size_is_told_apart(embedded_model, smol_ioi):
    """Two tokenizers with the same number of tokens but one id swapped have different fingerprints."""

    class Swapped:
        def __init__(self, tok):
            self.tok = tok
            self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id

        def get_vocab(self):
            v = dict(self.tok.get_vocab())
            a, b = sorted(v)[:2]
            v[a], v[b] = v[b], v[a]
            return v

    class Other(type(embedded_model)):
        def __init__(self, base):
            self.__dict__.update({k: v for k, v in base.__dict__.items() if k != "_tokenizer_fingerprint"})
            self.tokenizer = Swapped(base.tokenizer)

    other = Other(embedded_model)
    assert other.tokenizer_fingerprint != embedded_model.tokenizer_fingerprint
    with pytest.raises(DatasetError, match="tokenises differently"):
        attnlab.patch_heads(other, smol_ioi, progress=False)


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_a_model_name_instead_of_a_model_says_load_it_first(analysis, smol_ioi):
    with pytest.raises(ArgumentTypeError, match=r"got the string 'smollm2-135m'; load it with "
                                                r"attnlab.load_model\('smollm2-135m'\) first"):
        ANALYSES[analysis]("smollm2-135m", smol_ioi)


def test_a_list_of_prompts_instead_of_a_dataset_is_refused(embedded_model):
    with pytest.raises(ArgumentTypeError, match="needs a PatchingDataset.*got a list"):
        attnlab.patch_heads(embedded_model, ["When Mary and John went to the store"], progress=False)
