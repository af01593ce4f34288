"""Errors of remote execution. Each names what happened, what to do, and the job id where there is one.

Every class derives from :class:`attnlab.errors.AttnlabError` via :class:`RemoteError` and from the builtin that
fits (``TimeoutError``, ``PermissionError``, ``ConnectionError`` ...). Messages never contain the API key.
"""

from attnlab.errors import AttnlabError, ModelNotAvailableError

__all__ = [
    "ModelNotDeployedError",
    "RemoteAuthError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteExecutionError",
    "RemoteServerError",
    "RemoteTimeoutError",
    "RemoteVersionError",
]


class RemoteError(AttnlabError, RuntimeError):
    """A remote job or request failed.

    Attributes:
        job_id: the server's id of the job, or None when the request never got one.
        passes_kept: how many finished passes of the current analysis are kept (a re-run resumes after them).
    """

    def __init__(self, message: str, *, job_id: str | None = None, passes_kept: int = 0) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.passes_kept = passes_kept


class RemoteExecutionError(RemoteError):
    """The server ran the job and it raised (the server's traceback is in the message)."""


class RemoteServerError(RemoteError):
    """The server refused or failed a request for a reason other than the key, the version or the model."""


class RemoteAuthError(RemoteError, PermissionError):
    """The server rejected the API key (or none was given)."""


class RemoteConnectionError(RemoteError, ConnectionError):
    """The server could not be reached, or the connection dropped while a job ran."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """A remote call passed its deadline (``RemoteOptions.timeout_s``)."""


class RemoteVersionError(RemoteError):
    """The server does not accept this client's nnsight version."""


class ModelNotDeployedError(RemoteError, ModelNotAvailableError):
    """The server does not deploy the requested model."""
