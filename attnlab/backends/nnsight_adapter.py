"""Every name attnlab uses from inside nnsight, in one place, pinned to one nnsight version.

attnlab's nnsight backend and remote job runner need a few of nnsight's private or undocumented names: the repo-id
cache that lets a model key be resolved offline, the module-level HTTP timeouts its client reads on every call (bound
here by a job's deadline), the ``RemoteBackend`` methods the deadline-aware client overrides, the environment a request
carries, and, on the server side (the test suite's loopback NDIF server), the tracer's save bookkeeping. They can move
in any nnsight release, so they are reached only through this module, and ``tests/test_nnsight_adapter.py`` checks
every one of them (:data:`PRIVATE_NAMES`, :data:`REMOTE_BACKEND_METHODS`) against the installed nnsight: an upgrade
that moves one fails that test loudly instead of breaking a remote job at run time.

The pin is :data:`NNSIGHT_VERSION` (also in pyproject.toml); :func:`check_version` raises a clear error on another one.
"""

import importlib
import io
from contextlib import contextmanager

import nnsight
from nnsight.intervention.backends import remote as _remote
from nnsight.intervention.backends.local import LocalSimulationBackend
from nnsight.intervention.backends.remote import RemoteBackend
from nnsight.intervention.serialization import CustomCloudUnpickler
from nnsight.schema.config import CONFIG
from nnsight.schema.response import Status

from attnlab.errors import BackendError

__all__ = [
    "CONFIG",
    "NNSIGHT_VERSION",
    "NNsightRemoteError",
    "PRIVATE_NAMES",
    "REMOTE_BACKEND_METHODS",
    "RemoteBackend",
    "ServerUnpickler",
    "Status",
    "check_version",
    "http_timeouts",
    "local_simulation",
    "register_repo_id",
    "remote_env",
    "server_execute",
]

#: the nnsight release attnlab is tested against (pyproject.toml pins the same)
NNSIGHT_VERSION = "0.8.1"

#: (module, attribute) of every private or undocumented nnsight name attnlab uses
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("nnsight.modeling.huggingface", "_ID_CACHE"),
    ("nnsight.intervention.backends.remote", "_CONNECT_TIMEOUT"),
    ("nnsight.intervention.backends.remote", "_READ_TIMEOUT"),
    ("nnsight.intervention.backends.remote", "_NNSIGHT_VERSION"),
    ("nnsight.intervention.backends.remote", "RemoteError"),
    ("nnsight.tracing.tracer", "inc"),
    ("nnsight.tracing.tracer", "dec"),
    ("nnsight.tracing.tracer", "_saves"),
    ("nnsight.schema.request", "RequestModel"),
    ("nnsight.intervention.serialization", "CustomCloudUnpickler"),
)

#: ``RemoteBackend`` methods that :class:`attnlab.remote.jobs.DeadlineRemoteBackend` overrides or calls, with the
#: parameters (after ``self``) it relies on
REMOTE_BACKEND_METHODS: dict[str, tuple[str, ...]] = {
    "_post": ("request", "blob"),
    "_serialize": ("tracer",),
    "download_result": ("url",),
    "poll": ("tracer",),
    "request": ("request", "tracer"),
    "note": ("response",),
    "send": ("request", "blob"),
    "parse": ("message",),
    "handle": ("response",),
}

#: nnsight's own client error (a traceback sent back by the server, an HTTP failure)
NNsightRemoteError = _remote.RemoteError


def check_version() -> None:
    """Raise unless the installed nnsight is :data:`NNSIGHT_VERSION`.

    Raises:
        BackendError: another nnsight version is installed (its private names may have moved).
    """
    found = getattr(nnsight, "__version__", "unknown")
    if found != NNSIGHT_VERSION:
        raise BackendError(f"attnlab's nnsight backend needs nnsight=={NNSIGHT_VERSION} (found {found}); install it "
                           f"with: pip install nnsight=={NNSIGHT_VERSION}")


def register_repo_id(path: str, repo_id: str) -> None:
    """Let nnsight resolve the model key of ``path`` to the Hugging Face ``repo_id`` without asking the hub."""
    importlib.import_module("nnsight.modeling.huggingface")._ID_CACHE[path] = repo_id


@contextmanager
def http_timeouts(limit_s: float):
    """Within the context, nnsight's client HTTP connect and read timeouts are at most ``limit_s`` seconds."""
    saved = _remote._CONNECT_TIMEOUT, _remote._READ_TIMEOUT
    left = max(0.1, float(limit_s))
    _remote._CONNECT_TIMEOUT, _remote._READ_TIMEOUT = min(saved[0], left), min(saved[1], left)
    try:
        yield
    finally:
        _remote._CONNECT_TIMEOUT, _remote._READ_TIMEOUT = saved


def remote_env(nn_model) -> dict:
    """The environment description a remote request carries for ``nn_model`` (an nnsight model)."""
    return nn_model._remoteable_get_env()


def local_simulation(nn_model):
    """nnsight's in-process simulation of the remote path (serialise, re-execute) for ``nn_model``."""
    return LocalSimulationBackend(nn_model)


class ServerUnpickler(CustomCloudUnpickler):
    """nnsight's request unpickler, refusing every attnlab name: a server has torch and nnsight, not attnlab.

    What attnlab ships must travel *by value* (``nnsight.register``: :mod:`attnlab.metric_ops`,
    :mod:`attnlab.edge_ops`, :mod:`attnlab.backends._nnsight_ops`). A server that shares the client's process (the
    test suite's loopback server) could otherwise import attnlab and hide a request that an NDIF worker would
    reject; with this unpickler it fails the same way.
    """

    def find_class(self, module: str, name: str):
        _refuse(module, name)
        found = super().find_class(module, name)
        if module.startswith("cloudpickle") and name == "subimport":  # a module object pickled by reference

            def subimport(module_name: str):
                _refuse(module_name, None)
                return found(module_name)

            return subimport
        return found


def _refuse(module: str, name: str | None) -> None:
    if module == "attnlab" or module.startswith("attnlab."):
        import pickle

        what = module if name is None else f"{module}.{name}"
        raise pickle.UnpicklingError(f"the request refers to {what} by name; a server has no attnlab (ship the "
                                     "module by value with nnsight.register)")


def server_execute(nn_model, blob: bytes, *, compress: bool, env) -> dict:
    """Execute one remote request the way an NDIF worker does; return the values the trace saved, by name.

    Server side (the loopback test server): deserialise the request against ``nn_model``'s persistent objects, set
    the client's environment, run the trace's code with nnsight's save bookkeeping, and collect the saved locals.
    """
    import linecache

    request_model = importlib.import_module("nnsight.schema.request").RequestModel
    tracer_module = importlib.import_module("nnsight.tracing.tracer")
    persistent = nn_model._remoteable_persistent_objects()
    # deserialize registers the block's source in linecache under the client's file name; a server that shares the
    # client's process keeps the client's entry (as nnsight's LocalSimulationBackend does)
    snapshot = dict(linecache.cache)
    filename = saved_line = None
    try:
        tracer = request_model.deserialize(blob, persistent, compress=compress, unpickler=ServerUnpickler)
        filename = tracer.info.frame.f_code.co_filename
        saved_line = snapshot.get(filename)
    finally:
        if filename is not None:
            if saved_line is not None:
                linecache.cache[filename] = saved_line
            else:
                linecache.cache.pop(filename, None)
    nn_model._remoteable_set_env(env)
    tracer_module.inc()
    try:
        # autograd on, as on an NDIF worker (its parameters are frozen with requires_grad_(False) instead): a
        # request that makes a tensor require grad (attnlab's gradient passes) can differentiate; others track nothing
        tracer.execute(tracer.info.code)
        saves = tracer_module._saves()
        return {k: v for k, v in tracer.info.frame.f_locals.items() if id(v) in saves}
    finally:
        tracer_module.dec()


def serialise_result(result: dict, *, compress: bool) -> bytes:
    """The bytes a server sends back for ``result`` (``torch.save``, zstd-compressed when the client asked)."""
    import torch

    buffer = io.BytesIO()
    torch.save(result, buffer)
    data = buffer.getvalue()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor(level=3).compress(data)
    return data
