"""Remote models: run attnlab's analyses on a model served by NDIF (or any server speaking nnsight's protocol).

Load a remote model with ``attnlab.load_model("meta-llama/Llama-3.1-8B", backend="nnsight", remote=True)``; every
analysis then runs unchanged, a sweep as one job (or a few chunks). :func:`status` lists the deployed models;
:class:`RemoteOptions` sets the host, the deadline, the job size and blocking or polling; the errors below say what
went wrong and what to do. The API key comes from ``NDIF_API_KEY`` or nnsight's config and never appears in
anything attnlab prints, logs, raises or saves.

nnsight loads lazily: importing this package is cheap.
"""

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "InsecureHostError",
    "ModelNotDeployedError",
    "RemoteAuthError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteExecutionError",
    "RemoteOptions",
    "RemoteServerError",
    "RemoteTimeoutError",
    "RemoteVersionError",
    "redact",
    "status",
]

_LAZY = {
    "RemoteOptions": "attnlab.remote.jobs",
    "redact": "attnlab.remote.keys",
    "status": "attnlab.remote.deployments",
    **{name: "attnlab.remote.errors" for name in __all__ if name.endswith("Error")},
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnlab.remote' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from attnlab.remote.errors import (
        InsecureHostError,
        ModelNotDeployedError,
        RemoteAuthError,
        RemoteConnectionError,
        RemoteError,
        RemoteExecutionError,
        RemoteServerError,
        RemoteTimeoutError,
        RemoteVersionError,
    )
    from attnlab.remote.jobs import RemoteOptions
    from attnlab.remote.keys import redact
    from attnlab.remote.deployments import status
