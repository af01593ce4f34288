"""Remote trust: attnlab talks to a server that can run code in the kernel (nnsight unpickles its answers), so it
refuses plain http:// to another machine unless told to, and keeps every API key, wherever the user put it, out of
what it shows."""

import traceback

import pytest

import attnlab
from attnlab.errors import AttnlabError, InsecureHostError, RemoteConnectionError, RemoteExecutionError
from attnlab.remote import RemoteOptions, redact
from attnlab.remote.deployments import resolve_host, status

SECRET = "ndif-" + "k3y" * 8  # looks like a key: long, no spaces


def _chain(exc: BaseException) -> str:
    """The text of an exception and of every exception it holds (__context__, __cause__), formatted or not."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        texts += ["".join(traceback.format_exception(exc)), repr(exc), str(exc.args)]
        exc = exc.__context__ or exc.__cause__
    return "\n".join(texts)


@pytest.mark.parametrize("host", ["http://example.org", "http://10.1.2.3:5001", "http://api.ndif.us"])
def test_plain_http_to_another_machine_is_refused_before_any_request(host):
    with pytest.raises(InsecureHostError, match="refusing plain http://.*run code in this Python process.*https://"):
        resolve_host(host)
    with pytest.raises(InsecureHostError, match="allow_insecure_http=True"):
        status(host, timeout_s=0.1)  # refused before connecting: an unroutable address would time out instead
    with pytest.raises(InsecureHostError):
        RemoteOptions(host=host)
    with pytest.raises(InsecureHostError):
        attnlab.load_model("smollm2-135m", backend="nnsight", remote=host)


def test_plain_http_is_allowed_to_this_machine_or_when_the_user_opts_in(monkeypatch):
    for host in ("http://127.0.0.1:8765", "http://localhost:8765/", "http://[::1]:8765", "http://127.8.0.1"):
        assert resolve_host(host) == host.rstrip("/")
    assert resolve_host("https://example.org/") == "https://example.org"
    assert RemoteOptions(host="http://10.1.2.3:5001", allow_insecure_http=True).allow_insecure_http
    assert resolve_host("http://10.1.2.3:5001", allow_insecure_http=True) == "http://10.1.2.3:5001"
    monkeypatch.setenv("NDIF_HOST", "http://example.org")  # the environment is checked the same way
    with pytest.raises(InsecureHostError):
        resolve_host(None)


def test_credentials_in_the_url_are_refused_and_redacted():
    url = f"https://tester:{SECRET}@api.example.org"
    with pytest.raises(InsecureHostError, match="carries credentials.*NDIF_API_KEY") as info:
        RemoteOptions(host=url)
    assert SECRET not in _chain(info.value)
    assert SECRET not in redact(f"a log line with {SECRET} in it")


@pytest.mark.parametrize("where", ["remote=", "host=", "timeout_s="])
def test_a_key_in_the_wrong_argument_is_never_echoed(where):
    secret = SECRET + where[0]
    with pytest.raises((AttnlabError, RemoteConnectionError)) as info:
        if where == "remote=":
            attnlab.load_model("smollm2-135m", backend="nnsight", remote=secret)
        elif where == "host=":
            RemoteOptions(host=secret)
        else:
            RemoteOptions(timeout_s=secret)
    text = _chain(info.value)
    assert secret not in text and "not shown" in text, text
    assert secret not in redact(f"later, {secret} again")  # redacted from then on


def test_a_key_echoed_by_the_server_survives_nowhere_in_the_error(loopback, nnsight_remote, api_key):
    import torch

    loopback.faults[loopback.n_requests + 1] = "echo_key"
    tokens = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(RemoteExecutionError, match="injected failure: request from key <redacted>") as info:
        nnsight_remote.run(tokens)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert api_key not in _chain(info.value)
