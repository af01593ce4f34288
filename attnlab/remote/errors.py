"""Errors of remote execution (defined in :mod:`attnlab.errors`, re-exported here under their old home).

Each names what happened, what to do, and the job id where there is one. Every class derives from
:class:`attnlab.errors.AttnlabError` via :class:`RemoteError` and from the builtin that fits (``TimeoutError``,
``PermissionError``, ``ConnectionError`` ...). Messages never contain the API key.
"""

from attnlab.errors import (
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

__all__ = [
    "InsecureHostError",
    "ModelNotDeployedError",
    "RemoteAuthError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteExecutionError",
    "RemoteServerError",
    "RemoteTimeoutError",
    "RemoteVersionError",
]
