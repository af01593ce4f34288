"""attnlab's error hierarchy.

Every error attnlab raises on purpose derives from :class:`AttnlabError` and from the builtin exception that fits
(``ValueError``, ``KeyError``, ``TimeoutError`` ...), so callers can catch either. Messages say what was wrong,
what was expected, what was got, and how to proceed.
"""

__all__ = [
    "AttnlabError",
    "BackendError",
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
