"""Fixtures of the remote tier: a loopback NDIF-protocol server on 127.0.0.1 serving the embedded model, a random
API key in ``NDIF_API_KEY`` (tests check it never leaks), and remote and local nnsight models."""

import os
import secrets

import pytest

from attnlab.models import load_model

from .loopback import embedded_server


@pytest.fixture(scope="session")
def api_key():
    """A fresh random key, set as NDIF_API_KEY for the session (restored afterwards)."""
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
    """The loopback server (faults reset by each test that sets them)."""
    server = embedded_server({api_key}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nnsight_local():
    """The embedded model through the nnsight backend, run here."""
    return load_model("smollm2-135m", backend="nnsight")


def remote_model(server, **options):
    """The embedded model on ``server`` (progress off, short deadline unless given)."""
    from attnlab.remote import RemoteOptions

    options = {"timeout_s": 120.0, "progress": False, **options}
    return load_model("smollm2-135m", backend="nnsight", remote=RemoteOptions(host=server.url, **options))


@pytest.fixture(scope="session")
def nnsight_remote(loopback):
    return remote_model(loopback)


@pytest.fixture(scope="session")
def ioi4(nnsight_local):
    from attnlab.tasks.ioi import ioi_dataset

    return ioi_dataset(nnsight_local, 4, seed=1, corruption="s2_swap")
