"""The recall-versus-reasoning sweep on the server: the same call on the loopback NDIF server as locally, with the
ablated passes of the whole sweep in one job and only the metric values coming back."""

import pytest
import torch

from attnlab.dissociation import dissociation_sweep
from attnlab.tasks.recall_reasoning import recall_reasoning_items

from .test_remote_circuits import _jobs, _mark
from .test_loopback_remote import _no_key

pytestmark = pytest.mark.integration

FAMILIES = ["capital_of", "language_of", "capital_chain", "syllogism"]
COMPONENTS = ["L27H1", "L28H3", "ATTN28", "MLP28", "L29H0+MLP29"]


@pytest.fixture(scope="module")
def items_remote(nnsight_local):
    return recall_reasoning_items(nnsight_local, FAMILIES, n_per_family=3, seed=0)


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_remote_sweep_equals_local_in_a_few_jobs(loopback, nnsight_remote, embedded_model, items_remote, api_key,
                                                  ablation):
    """Clean pass, (resample: the corrupted pass), every ablated pass in ONE job, and the controls in one more; the
    per-item values of both metrics equal the TransformerLens backend's."""
    before = _mark(loopback)
    remote = dissociation_sweep(nnsight_remote, items_remote, granularity="components", components=COMPONENTS,
                                ablation=ablation, n_bootstrap=200, n_control_draws=2, progress=False)
    jobs, downloaded = _jobs(loopback, before)
    expected = {"mean": 1, "resample": 2}[ablation] + 1 + 1  # source passes, the sweep, the controls
    assert jobs == expected
    # the sweep's job returns rows x metrics numbers per pass, not d_vocab logits (12 x 49,152 floats = 2.4 MB a pass)
    sweep_job = loopback.result_sizes[before[1]:][-2]
    assert sweep_job < 50_000, sweep_job
    assert remote.complete and remote.settings["forward_passes_run"] == remote.settings["forward_passes"]
    local = dissociation_sweep(embedded_model, items_remote, granularity="components", components=COMPONENTS, ablation=ablation, n_bootstrap=200,
                               n_control_draws=2, progress=False)
    torch.testing.assert_close(remote.clean, local.clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(remote.ablated, local.ablated, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(remote.control_ablated, local.control_ablated, atol=2e-4, rtol=1e-4)
    assert float((local.clean[None] - local.ablated).abs().max()) > 0.1  # the ablations do something
    assert remote.model["backend"] == "nnsight"
    _no_key(api_key, repr(remote), str(remote.to_dict()))
