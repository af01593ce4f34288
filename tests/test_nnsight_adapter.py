"""The nnsight private names attnlab relies on still exist, with the shapes it relies on, in the installed nnsight.

Fails loudly when an nnsight upgrade moves one (attnlab/backends/nnsight_adapter.py confines them all); a change of
version fails here too, so that the pin and the adapter are revisited together.
"""

import importlib
import inspect

import nnsight
import pytest

from attnlab.backends import nnsight_adapter
from attnlab.errors import BackendError


def test_installed_nnsight_is_the_pinned_version():
    assert nnsight.__version__ == nnsight_adapter.NNSIGHT_VERSION
    nnsight_adapter.check_version()


def test_check_version_names_the_pin(monkeypatch):
    monkeypatch.setattr(nnsight, "__version__", "9.9.9")
    with pytest.raises(BackendError, match=r"nnsight==0\.8\.1 \(found 9\.9\.9\).*pip install"):
        nnsight_adapter.check_version()


@pytest.mark.parametrize("module, name", nnsight_adapter.PRIVATE_NAMES)
def test_private_name_exists(module, name):
    value = getattr(importlib.import_module(module), name, None)
    assert value is not None, f"{module}.{name} is gone: update attnlab/backends/nnsight_adapter.py"
    if name == "_ID_CACHE":
        assert isinstance(value, dict)
    if name.endswith("_TIMEOUT"):
        assert isinstance(value, (int, float)) and value > 0
    if name in ("inc", "dec", "_saves"):
        assert callable(value)


@pytest.mark.parametrize("method, params", sorted(nnsight_adapter.REMOTE_BACKEND_METHODS.items()))
def test_remote_backend_methods_keep_their_parameters(method, params):
    fn = getattr(nnsight_adapter.RemoteBackend, method, None)
    assert callable(fn), f"RemoteBackend.{method} is gone: update attnlab/remote/jobs.py's DeadlineRemoteBackend"
    names = [p for p in inspect.signature(fn).parameters if p != "self"]
    assert names[:len(params)] == list(params), (method, names)


def test_http_timeouts_are_bounded_and_restored():
    remote = importlib.import_module("nnsight.intervention.backends.remote")
    before = remote._CONNECT_TIMEOUT, remote._READ_TIMEOUT
    with nnsight_adapter.http_timeouts(0.5):
        assert remote._CONNECT_TIMEOUT <= 0.5 and remote._READ_TIMEOUT <= 0.5
    assert (remote._CONNECT_TIMEOUT, remote._READ_TIMEOUT) == before


def test_no_other_attnlab_module_reaches_into_nnsight_privates():
    """Only the adapter names nnsight's private modules and attributes."""
    import re
    from pathlib import Path

    import attnlab

    root = Path(attnlab.__file__).parent
    names = {name for _, name in nnsight_adapter.PRIVATE_NAMES if name.startswith("_")}
    names |= {"_remoteable_get_env", "_remoteable_set_env", "_remoteable_persistent_objects", "LocalSimulationBackend"}
    modules = {module for module, _ in nnsight_adapter.PRIVATE_NAMES} | {"nnsight.intervention", "nnsight.schema"}
    pattern = re.compile("|".join([rf"\b{re.escape(n)}\b" for n in sorted(names)]
                                  + [re.escape(m) for m in sorted(modules)]))
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "nnsight_adapter.py":
            continue
        for match in pattern.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(root)}: {match.group()}")
    assert not offenders, offenders
