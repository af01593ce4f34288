"""attnlab's error hierarchy.

Every error attnlab raises on purpose derives from :class:`AttnlabError` and from the builtin exception that fits
(``ValueError``, ``KeyError``, ``TimeoutError`` ...), so callers can catch either. Messages say what was wrong,
what was expected, what was got, and how to proceed.

Every error class lives here (the modules that raise them re-export them under their old names): general input
errors, backend limitations (:class:`CapabilityError`), analyses' errors (circuits, ablations, agreement), the
Explorer's, saved files' (:class:`ResultFileError` and its subclasses: each names the file and what is wrong with
it), and remote execution's (:class:`RemoteError` and its subclasses: each names what happened, what to do,
and the job id where there is one; messages never contain the API key). This module imports nothing.
"""

__all__ = [
    "AblationError",
    "AgreementError",
    "AgreementFileError",
    "ArgumentError",
    "ArgumentTypeError",
    "AttnlabError",
    "BackendError",
    "CapabilityError",
    "CircuitComparisonError",
    "CircuitComparisonFileError",
    "CircuitError",
    "CircuitFileError",
    "DatasetError",
    "ExplorerError",
    "InsecureHostError",
    "MemoryBudgetError",
    "MetricError",
    "ModelNotAvailableError",
    "ModelNotDeployedError",
    "RemoteAuthError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteExecutionError",
    "RemoteServerError",
    "RemoteTimeoutError",
    "RemoteVersionError",
    "ResultFileError",
    "ResultFileNotFoundError",
    "RunComparisonError",
    "SiteError",
    "TaskError",
    "TokenizationError",
    "WorkbenchError",
]


class AttnlabError(Exception):
    """Base class of every error raised by attnlab on purpose."""


class ModelNotAvailableError(AttnlabError, LookupError):
    """A model could not be found or loaded (unknown name, offline with no local copy, missing package)."""


class SiteError(AttnlabError, ValueError):
    """An activation site is invalid for the model: layer or head out of range, unknown kind."""


class TokenizationError(AttnlabError, ValueError):
    """A word that must be a single token in the model's tokenizer is not."""


class ArgumentError(AttnlabError, ValueError):
    """An argument outside what it may be: a memory budget that is NaN, infinite or not positive, a negative seed."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of the wrong type: a model's name where a loaded model is expected, a list where a dataset is, a
    string where a number is."""


class DatasetError(AttnlabError, ValueError):
    """A dataset is malformed: empty, clean/corrupted batches misaligned, positions out of range."""


class MetricError(AttnlabError, ValueError):
    """A metric cannot be computed, e.g. its clean and corrupted baselines are equal (division by zero)."""


class BackendError(AttnlabError, RuntimeError):
    """A backend could not perform a requested operation."""


class CapabilityError(BackendError, NotImplementedError):
    """A backend lacks a capability an analysis needs (gradients, weights, the edge graph ...), raised before any
    work by :meth:`attnlab.backends.base.Backend.require`.

    A :class:`BackendError` (so one ``except BackendError`` catches every backend limitation) and a
    ``NotImplementedError``.

    Attributes:
        capability: the missing :class:`attnlab.backends.base.Capability` (a ``str`` enum: compares equal to its
            value, e.g. ``"gradients"``).
        backend: the backend's name (``ModelInfo.backend``), or None.
    """

    def __init__(self, capability, message: str | None = None, *, backend: str | None = None) -> None:
        self.capability = capability
        self.backend = backend
        if message is None:
            value = getattr(capability, "value", capability)
            message = f"the {backend or 'model'!s} backend does not support the {value!r} capability"
        super().__init__(message)

    def __reduce__(self):  # picklable across processes (remote job errors travel pickled)
        return (_rebuild_capability_error, (type(self), self.capability, str(self), self.backend))


def _rebuild_capability_error(cls, capability, message, backend):
    return cls(capability, message, backend=backend)


# -- analyses -----------------------------------------------------------------------------------------------------
class CircuitError(AttnlabError, ValueError):
    """A circuit request is malformed: unknown edge or node, threshold out of range, mismatched graph."""


class MemoryBudgetError(AttnlabError, MemoryError):
    """An analysis would need more memory than its ``memory_budget_mb`` allows (see :mod:`attnlab.memory`)."""


class CircuitComparisonError(AttnlabError, ValueError):
    """A circuit or a role table given to :func:`attnlab.circuits.compare_circuits` is malformed."""


class AgreementError(AttnlabError, ValueError):
    """Two results cannot be compared cell by cell (different component, direction, axes or cells)."""


class AblationError(AttnlabError, ValueError):
    """An ablation request is malformed: unknown method, missing or mismatched mean values."""


# -- saved files --------------------------------------------------------------------------------------------------
class ResultFileError(AttnlabError, ValueError):
    """A saved record (a file, or a dictionary given to ``from_dict``) cannot be read or written: not JSON, empty,
    binary, not attnlab's, another attnlab kind, a newer or older format version, missing or unexpected keys,
    malformed contents; or a save that cannot be done (see :mod:`attnlab.serialisation`).

    Attributes:
        path: the file (a :class:`pathlib.Path`), or None for a dictionary.
        expected: the format name expected (``"attnlab.result"``, ``"attnlab.circuit.v1"`` ...), or None.
        found: the format name found in the record, where it had one, else None.
    """

    def __init__(self, message: str, *, path=None, expected: str | None = None, found: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.found = found

    def __reduce__(self):  # keeps the attributes through pickling
        return (_rebuild_result_file_error, (type(self), str(self), self.path, self.expected, self.found))


def _rebuild_result_file_error(cls, message, path, expected, found):
    return cls(message, path=path, expected=expected, found=found)


class ResultFileNotFoundError(ResultFileError, FileNotFoundError):
    """A file to load does not exist, or the folder to save into does not exist (a ``FileNotFoundError`` too)."""


class CircuitFileError(ResultFileError, CircuitError):
    """A saved circuit cannot be read or written (a :class:`ResultFileError` and a :class:`CircuitError`)."""


class AgreementFileError(ResultFileError, AgreementError):
    """A saved agreement report cannot be read or written (a :class:`ResultFileError` and an
    :class:`AgreementError`)."""


class CircuitComparisonFileError(ResultFileError, CircuitComparisonError):
    """A saved circuit comparison cannot be read or written (a :class:`ResultFileError` and a
    :class:`CircuitComparisonError`)."""


# -- the Explorer -------------------------------------------------------------------------------------------------
class RunComparisonError(ArgumentError):
    """Two results that cannot be compared cell by cell (different component or grid, or raw scores of different
    metrics); raised by :func:`attnlab.compare_runs.compare_results`."""


class ExplorerError(AttnlabError, ValueError):
    """An Explorer request is invalid: a control value out of range, a selection outside the result, no run yet."""


class WorkbenchError(ExplorerError):
    """A workbench control given a value it cannot take (the old value is kept)."""


class TaskError(AttnlabError, ValueError):
    """An unknown task name, or a task registered twice with different definitions."""


# -- remote execution ---------------------------------------------------------------------------------------------
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


class InsecureHostError(RemoteError, PermissionError):
    """A remote host attnlab will not talk to as given: plain ``http://`` to a host that is not this machine (whoever
    answers there can run code in the kernel: nnsight unpickles the server's answers), or a URL carrying
    credentials."""


class ModelNotDeployedError(RemoteError, ModelNotAvailableError):
    """The server does not deploy the requested model."""
