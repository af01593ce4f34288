"""attnlab's error hierarchy.

Every error attnlab raises on purpose derives from :class:`AttnlabError` and from the builtin exception that fits
(``ValueError``, ``KeyError``, ``TimeoutError`` ...), so callers can catch either. Messages say what was wrong,
what was expected, what was got, and how to proceed.
"""

__all__ = [
    "AttnlabError",
    "BackendError",
    "CapabilityError",
    "DatasetError",
    "MetricError",
    "ModelNotAvailableError",
    "SiteError",
    "TokenizationError",
]


class AttnlabError(Exception):
    """Base class of every error raised by attnlab on purpose."""


class ModelNotAvailableError(AttnlabError, LookupError):
    """A model could not be found or loaded (unknown name, offline with no local copy, missing package)."""


class SiteError(AttnlabError, ValueError):
    """An activation site is invalid for the model: layer or head out of range, unknown kind."""


class TokenizationError(AttnlabError, ValueError):
    """A word that must be a single token in the model's tokenizer is not."""


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
