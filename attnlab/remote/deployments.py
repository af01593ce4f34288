"""Which models a remote (NDIF-protocol) server deploys: ``GET {host}/status``."""

from attnlab.remote.errors import (
    InsecureHostError,
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteConnectionError,
    RemoteServerError,
    RemoteTimeoutError,
)
from attnlab.remote.keys import api_key, redact, remember_secret

__all__ = ["check_deployed", "is_loopback", "resolve_host", "status"]

# NDIF deployment levels that count as deployed (COLD: downloaded, not serving), as nnsight.ndif.status reads them.
_DEPLOYED_LEVELS = {"HOT", "WARM"}


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def is_loopback(hostname: str | None) -> bool:
    """Whether ``hostname`` is this machine: ``localhost``, 127.0.0.0/8 or ::1 (no name lookup)."""
    import ipaddress

    if not hostname:
        return False
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_host(host: str | None = None, *, allow_insecure_http: bool = False) -> str:
    """``host``, else ``NDIF_HOST``, else nnsight's configured host (``https://api.ndif.us`` by default), checked.

    The trust model: nnsight deserialises a server's answers with pickle, so **the server can run any code in this
    Python process**. attnlab therefore talks only to a host you chose, over ``https://`` (the server proves who it
    is; nobody on the network can answer in its place), or over plain ``http://`` to this machine (a loopback
    address: a local test server). Plain ``http://`` to any other host lets whoever answers on that address, or
    anyone on the network path, run code here; it needs ``allow_insecure_http=True``.

    Args:
        host: a URL, or None for the environment / nnsight's config.
        allow_insecure_http: accept plain ``http://`` to a host that is not this machine (you trust the network and
            the server fully).

    Returns:
        The URL without a trailing slash.

    Raises:
        RemoteConnectionError: not an ``http://`` or ``https://`` URL (the value is not echoed: it may be a key).
        InsecureHostError: plain ``http://`` to another machine without ``allow_insecure_http``, or a URL with user
            info (``https://user:secret@host``: put the API key in ``NDIF_API_KEY``; the secret is redacted from
            then on).
    """
    import os
    from urllib.parse import urlsplit

    if not host:
        host = os.environ.get("NDIF_HOST")
    if not host:
        from attnlab.backends.nnsight_adapter import CONFIG

        host = CONFIG.API.HOST
    if not isinstance(host, str) or not host.startswith(("http://", "https://")):
        shown = f"a {type(host).__name__} of {len(host)} characters" if isinstance(host, str) else type(host).__name__
        raise RemoteConnectionError(f"the remote host must be an http:// or https:// URL (got {shown}, not shown: it "
                                    "may be a key; an API key belongs in NDIF_API_KEY)")
    parts = urlsplit(host)
    if parts.username is not None or parts.password is not None:
        for secret in (parts.username, parts.password, parts.netloc.rpartition("@")[0]):
            remember_secret(secret)
        raise InsecureHostError(f"the remote host URL carries credentials ({parts.scheme}://<redacted>@"
                                f"{parts.hostname}); attnlab sends the API key in a request header only. Remove them "
                                "from the URL and put the key in NDIF_API_KEY")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise InsecureHostError(
            f"refusing plain http:// to {parts.hostname}: nnsight unpickles what the server sends back, so whoever "
            "answers on that address (or anyone on the network path) could run code in this Python process. Use "
            "https://, or, if you trust the network and the server fully, pass "
            "RemoteOptions(host=..., allow_insecure_http=True) (status(..., allow_insecure_http=True)). Plain http:// "
            "to this machine (127.0.0.1, localhost) is allowed")
    return host.rstrip("/")


def status(host: str | None = None, *, timeout_s: float = 10.0, allow_insecure_http: bool = False) -> dict[str, dict]:
    """The models the server deploys, keyed by Hugging Face repo id.

    Args:
        host: server URL (default: ``NDIF_HOST`` or nnsight's config).
        timeout_s: deadline of the request, in seconds.
        allow_insecure_http: accept plain ``http://`` to another machine (see :func:`resolve_host`).

    Returns:
        ``{repo_id: {"repo_id", "model_key", "state", "level", "revision"}}`` for every HOT or WARM deployment.

    Raises:
        RemoteConnectionError: the server is unreachable. RemoteTimeoutError: it did not answer in ``timeout_s``.
        RemoteAuthError: it rejected the key. RemoteServerError: any other failure. InsecureHostError: see
        :func:`resolve_host`.

    Example:
        >>> "meta-llama/Llama-3.1-8B" in attnlab.remote.status()  # doctest: +SKIP
        True
    """
    import httpx

    host = resolve_host(host, allow_insecure_http=allow_insecure_http)
    key = api_key()
    failure = None  # raised outside the except block, so the original (which may echo the key) is not its context
    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(timeout_s),
                             headers={"ndif-api-key": key} if key else None)
    except httpx.TimeoutException:
        failure = RemoteTimeoutError(f"{host} did not answer GET /status within {timeout_s:g} s; try again later or "
                                     "raise RemoteOptions.timeout_s")
    except httpx.HTTPError as exc:
        failure = RemoteConnectionError(f"could not reach {host} ({redact(type(exc).__name__)}: {redact(exc)}); "
                                        "check your network and NDIF_HOST")
    if failure is not None:
        raise failure
    if response.status_code in (401, 403):
        raise RemoteAuthError(f"{host} rejected the API key when listing models (HTTP {response.status_code}); set "
                              "NDIF_API_KEY to a valid key")
    if response.status_code != 200:
        raise RemoteServerError(f"{host} answered GET /status with HTTP {response.status_code}: "
                                f"{redact(response.text[:300])}")
    deployments = {}
    for name, value in response.json().get("deployments", {}).items():
        if value.get("deployment_level") not in _DEPLOYED_LEVELS:
            continue
        repo_id = value.get("repo_id", name)
        deployments[repo_id] = {"repo_id": repo_id, "model_key": value.get("model_key", name),
                                "state": value.get("application_state", "UNKNOWN"),
                                "level": value.get("deployment_level"), "revision": value.get("revision") or "main"}
    return deployments


def check_deployed(repo_id: str, options) -> None:
    """Raise :class:`ModelNotDeployedError` unless ``repo_id`` is deployed on ``options``' host."""
    host = resolve_host(options.host, allow_insecure_http=options.allow_insecure_http)
    deployed = status(host, timeout_s=min(options.timeout_s, 30.0), allow_insecure_http=options.allow_insecure_http)
    if repo_id not in deployed:
        listed = ", ".join(sorted(deployed)) or "none"
        raise ModelNotDeployedError(
            f"{repo_id!r} is not deployed on {host} (deployed: {listed}). Pick a deployed model, or run locally "
            "with remote=False")
