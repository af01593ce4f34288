"""Fixtures of the remote tier: local nnsight models and datasets. The loopback NDIF-protocol server, the session's
random API key and the remote model are in ``tests/conftest.py`` (the bad-input tests use them too)."""

import pytest

from attnlab.models import load_model


@pytest.fixture(scope="session")
def nnsight_local():
    """The embedded model through the nnsight backend, run here."""
    return load_model("smollm2-135m", backend="nnsight")


@pytest.fixture(scope="session")
def ioi4(nnsight_local):
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(nnsight_local, 4, seed=1, corruption="s2_swap")
