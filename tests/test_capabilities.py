"""Capabilities are part of a backend's type: one error, named for the capability, before any work."""

import copy
import pickle

import pytest
import torch

from attnlab.backends.base import Backend, Capability
from attnlab.backends.transformer_lens import TransformerLensBackend
from attnlab.circuits import GradientNotSupportedError, GraphRunner, attribution_sweep, eap_scores
from attnlab.errors import BackendError, CapabilityError

from .conftest import random_pair_dataset


def _without(model: Backend, *missing: Capability) -> Backend:
    """A copy of ``model`` lacking ``missing``, whose runs fail (the refusal must come before any work)."""
    clone = copy.copy(model)
    clone.capabilities = model.capabilities - set(missing)

    def run(*args, **kwargs):
        raise AssertionError("a forward pass started before the capability was checked")

    clone.run = run
    return clone


def test_capabilities_are_declared_per_backend_class():
    from attnlab.backends.nnsight import NNsightBackend

    assert TransformerLensBackend.capabilities == frozenset(Capability)
    assert Capability.PATCHING in NNsightBackend.capabilities
    assert Capability.EDGE_GRAPH not in NNsightBackend.capabilities  # remote models: patching only
    # local nnsight models add these per instance (tests/test_circuits_nnsight_parity.py runs them)
    assert NNsightBackend.LOCAL_CAPABILITIES == {Capability.GRADIENTS, Capability.WEIGHTS, Capability.EDGE_GRAPH}
    assert Backend.capabilities == frozenset({Capability.PATCHING})
    assert Capability("gradients") is Capability.GRADIENTS and Capability.GRADIENTS == "gradients"


def test_require_raises_one_error_naming_capability_backend_and_remedy(tiny):
    tiny.require(Capability.GRADIENTS, "anything")  # present: no error
    model = _without(tiny, Capability.GRADIENTS)
    with pytest.raises(CapabilityError) as caught:
        model.require("gradients", "attribution patching")
    err = caught.value
    assert err.capability is Capability.GRADIENTS and err.backend == "transformer_lens"
    assert isinstance(err, BackendError) and isinstance(err, NotImplementedError)
    message = str(err)
    assert "attribution patching" in message and "'gradients'" in message and "TransformerLensBackend" in message
    assert "backend='transformer_lens'" in message
    with pytest.raises(ValueError):
        tiny.require("telepathy", "x")
    # the error survives pickling (remote errors travel pickled) with its attributes
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is CapabilityError and again.capability is Capability.GRADIENTS and str(again) == message


@pytest.mark.parametrize("missing,call", [
    (Capability.GRADIENTS, lambda m, ds: attribution_sweep(m, ds, "heads")),
    # EAP runs as a program where the model is (gradients taken there): it needs EDGE_PROGRAMS
    (Capability.EDGE_PROGRAMS, lambda m, ds: eap_scores(m, ds, progress=False)),
    (Capability.EDGE_GRAPH, lambda m, ds: GraphRunner(m)),
])
def test_analyses_refuse_a_missing_capability_before_work(tiny, missing, call):
    ds = random_pair_dataset(tiny, batch=2, n_pos=5, changed=(2,), seed=0)
    with pytest.raises(CapabilityError) as caught:
        call(_without(tiny, missing), ds)
    assert caught.value.capability is missing
    assert GradientNotSupportedError is CapabilityError  # the old name still catches it


class _Unchanged:
    """EdgeCallbacks that change nothing and record what the runner reports, in order."""

    records_senders = True

    def __init__(self):
        self.calls = []

    def resid_pre(self, layer, resid):
        self.calls.append(("resid_pre", layer))
        return resid

    def head_input(self, layer, kind, resid):
        self.calls.append((kind, layer))
        return None

    def head_outputs(self, layer, outputs):
        self.calls.append(("heads", layer, tuple(outputs.shape)))

    def mlp_input(self, layer, act):
        self.calls.append(("mlp_in", layer))
        return act

    def mlp_output(self, layer, act):
        self.calls.append(("mlp_out", layer))

    def logits_input(self, act):
        self.calls.append(("logits",))
        return act


def test_edge_runner_with_unchanged_callbacks_is_the_models_forward_pass(tiny):
    ds = random_pair_dataset(tiny, batch=3, n_pos=6, changed=(2,), seed=1)
    callbacks = _Unchanged()
    logits = tiny.edge_runner().run(ds.clean_tokens, callbacks, logits_at=ds.end)
    expected = tiny.run(ds.clean_tokens, logits_at=ds.end).logits
    assert torch.equal(logits, expected)
    i = tiny.info
    per_block = lambda layer: [("resid_pre", layer), ("q", layer), ("k", layer), ("v", layer),  # noqa: E731
                               ("heads", layer, (3, 6, i.n_heads, i.d_model)), ("mlp_in", layer), ("mlp_out", layer)]
    assert callbacks.calls == [c for layer in range(i.n_layers) for c in per_block(layer)] + [("logits",)]


def test_a_backend_without_edge_graph_refuses_edge_runner(tiny):
    with pytest.raises(CapabilityError, match="'edge_graph' capability"):
        _without(tiny, Capability.EDGE_GRAPH).edge_runner()
