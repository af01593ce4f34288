"""Shared fixtures. Tiers: unit tests use tiny random models (seconds); ``integration`` tests use the embedded
SmolLM2-135M (one load per session, treated as read-only); ``browser`` and ``tutorial`` tests drive JupyterLab."""

import pytest
import torch

from attnlab.models import load_model, tiny_model
from attnlab.tasks.base import PatchingDataset
from tests.tutorial_fixtures import executed_tutorial_01  # noqa: F401  (one session fixture: tutorial 01 runs once)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct through TransformerLens (read-only: do not add hooks or train it)."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def embedded_nnsight():
    """The embedded SmolLM2-135M-Instruct through the nnsight backend, run locally (eager attention; read-only)."""
    return load_model("smollm2-135m", backend="nnsight")


@pytest.fixture(scope="session")
def ioi16(embedded_model):
    """16 IOI prompts on the embedded model (S2-swap corruption, seed 0)."""
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(embedded_model, 16, seed=0, corruption="s2_swap")


def random_pair_dataset(model, *, batch=4, n_pos=8, changed=(4,), seed=0) -> PatchingDataset:
    """Random clean prompts and a corruption that changes the tokens at ``changed`` positions."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.info.d_vocab
    clean = torch.randint(0, vocab, (batch, n_pos), generator=g)
    corrupted = clean.clone()
    for p in changed:
        corrupted[:, p] = (clean[:, p] + 1 + torch.randint(0, vocab - 1, (batch,), generator=g)) % vocab
    answers = torch.randint(0, vocab, (batch, 2), generator=g)
    answers[:, 1] = (answers[:, 0] + 1) % vocab
    return PatchingDataset(
        task="random-pairs", clean_tokens=clean, corrupted_tokens=corrupted, answers=answers,
        positions={"END": torch.full((batch,), n_pos - 1)}, position_labels=[f"p{i}" for i in range(n_pos)],
        metadata={"seed": seed},
    )


@pytest.fixture(scope="session")
def tiny():
    """A 3-layer tiny model with grouped-query attention (4 query heads, 2 key/value heads)."""
    return tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)
