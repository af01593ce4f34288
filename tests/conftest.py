"""Shared fixtures. Tiers: unit tests use tiny random models (seconds); ``integration`` tests use the embedded
SmolLM2-135M (one load per session, treated as read-only); ``browser`` and ``tutorial`` tests drive JupyterLab."""

import os
import secrets

import pytest
import torch

from attnlab.models import load_model, tiny_model
from attnlab.tasks.base import PatchingDataset
from tests.remote.loopback import embedded_server, remote_model
from tests.tutorial_fixtures import executed_tutorial_01  # noqa: F401  (one session fixture: tutorial 01 runs once)


@pytest.fixture(autouse=True)
def _no_interrupt_carried_between_tests():
    """A sweep interrupted in one test must not stop the next test's sweep (attnlab.interrupts)."""
    from attnlab import interrupts

    interrupts.clear()
    yield
    interrupts.clear()


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


# -- the remote tier: a loopback NDIF-protocol server on 127.0.0.1 serving the embedded model ----------------------
@pytest.fixture(scope="session")
def api_key():
    """A fresh random key, set as NDIF_API_KEY for the session (restored afterwards); tests check it never leaks."""
    key = "ndif-test-" + secrets.token_hex(16)
    old = os.environ.get("NDIF_API_KEY")
    os.environ["NDIF_API_KEY"] = key
    yield key
    if old is None:
        os.environ.pop("NDIF_API_KEY", None)
    else:
        os.environ["NDIF_API_KEY"] = old


@pytest.fixture(scope="session")
def loopback(api_key):
    """The loopback server (faults reset by each test that sets them). It lives for the whole session: the first test
    that uses it (tests/bad_input) and the remote tier can be more than its default 15 idle minutes apart on a busy
    2-core machine, so it stops itself only after 90 idle minutes (CI's limit), still bounded."""
    server = embedded_server({api_key}, idle_stop_s=5400.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nnsight_remote(loopback):
    """The embedded model on the loopback server."""
    return remote_model(loopback)
