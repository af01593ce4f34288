"""Which models a remote (NDIF-protocol) server deploys: ``GET {host}/status``."""

from attnlab.remote.errors import (
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteConnectionError,
    RemoteServerError,
    RemoteTimeoutError,
)
from attnlab.remote.keys import api_key, redact

__all__ = ["check_deployed", "resolve_host", "status"]

# NDIF deployment levels that count as deployed (COLD: downloaded, not serving), as nnsight.ndif.status reads them.
_DEPLOYED_LEVELS = {"HOT", "WARM"}


def resolve_host(host: str | None = None) -> str:
    """``host``, else ``NDIF_HOST``, else nnsight's configured host (``https://api.ndif.us`` by default)."""
    import os

    if not host:
        host = os.environ.get("NDIF_HOST")
    if not host:
        from attnlab.backends.nnsight_adapter import CONFIG

        host = CONFIG.API.HOST
    if not host.startswith(("http://", "https://")):
        raise RemoteConnectionError(f"the remote host must be an http:// or https:// URL (got {redact(host)!r})")
    return host.rstrip("/")


def status(host: str | None = None, *, timeout_s: float = 10.0) -> dict[str, dict]:
    """The models the server deploys, keyed by Hugging Face repo id.

    Args:
        host: server URL (default: ``NDIF_HOST`` or nnsight's config).
        timeout_s: deadline of the request, in seconds.

    Returns:
        ``{repo_id: {"repo_id", "model_key", "state", "level", "revision"}}`` for every HOT or WARM deployment.

    Raises:
        RemoteConnectionError: the server is unreachable. RemoteTimeoutError: it did not answer in ``timeout_s``.
        RemoteAuthError: it rejected the key. RemoteServerError: any other failure.

    Example:
        >>> "meta-llama/Llama-3.1-8B" in attnlab.remote.status()  # doctest: +SKIP
        True
    """
    import httpx

    host = resolve_host(host)
    key = api_key()
    try:
        response = httpx.get(f"{host}/status", timeout=httpx.Timeout(timeout_s),
                             headers={"ndif-api-key": key} if key else None)
    except httpx.TimeoutException:
        raise RemoteTimeoutError(f"{host} did not answer GET /status within {timeout_s:g} s; try again later or "
                                 "raise RemoteOptions.timeout_s") from None
    except httpx.HTTPError as exc:
        raise RemoteConnectionError(f"could not reach {host} ({redact(type(exc).__name__)}: {redact(exc)}); check "
                                    "your network and NDIF_HOST") from None
    if response.status_code in (401, 403):
        raise RemoteAuthError(f"{host} rejected the API key when listing models (HTTP {response.status_code}); set "
                              "NDIF_API_KEY to a valid key") from None
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
    host = resolve_host(options.host)
    deployed = status(host, timeout_s=min(options.timeout_s, 30.0))
    if repo_id not in deployed:
        listed = ", ".join(sorted(deployed)) or "none"
        raise ModelNotDeployedError(
            f"{repo_id!r} is not deployed on {host} (deployed: {listed}). Pick a deployed model, or run locally "
            "with remote=False")
