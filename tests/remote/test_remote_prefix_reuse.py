"""Prefix reuse on the remote path (the loopback NDIF-protocol server): suffix passes run on the server, equal the
TransformerLens backend, and the recorded keys and values travel once per job, not once per pass."""

import torch

from attnlab.patching import run_sweep

TOL = 1e-4


def _sweep(loopback, model, dataset, **kwargs):
    """(result, bytes uploaded for the patched passes, patched-pass jobs): the baselines are the first two jobs."""
    n0, up0 = loopback.n_requests, loopback.bytes_uploaded
    result = run_sweep(model, dataset, "heads", layers=[3, 9, 20, 29], progress=False, **kwargs)
    return result, loopback.bytes_uploaded - up0, loopback.n_requests - n0


def test_remote_suffix_passes_equal_transformer_lens_and_ship_the_prefix_once(loopback, nnsight_remote, ioi4,
                                                                              embedded_model):
    reference = run_sweep(embedded_model, ioi4, "heads", layers=[3, 9, 20, 29], progress=False, prefix_reuse=False)
    reused, up_reused, jobs_reused = _sweep(loopback, nnsight_remote, ioi4)
    plain, up_plain, jobs_plain = _sweep(loopback, nnsight_remote, ioi4, prefix_reuse=False)

    reuse = reused.settings["prefix_reuse"]
    assert reuse["enabled"] and reuse["fraction_run"] < 0.5, reuse
    assert reference.values.abs().max() > 1e-3
    torch.testing.assert_close(reused.values, reference.values, atol=TOL, rtol=0)
    torch.testing.assert_close(plain.values, reference.values, atol=TOL, rtol=0)
    assert jobs_reused == jobs_plain == 3  # two baselines (the target's records its keys and values) + one sweep job

    # the sweep's 4 passes read the same recorded keys and values: serialised once in the job, not 4 times
    kv_bytes = reuse["recorded_kv_mb"] * 2**20
    assert reused.settings["forward_passes"] - 2 >= 4
    assert up_reused - up_plain < 1.5 * kv_bytes, (up_reused, up_plain, kv_bytes)
