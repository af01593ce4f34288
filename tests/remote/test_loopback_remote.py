"""The remote tier: nnsight's real client against a loopback server speaking nnsight 0.8.1's protocol.

Every test here goes through the network path (HTTP + websocket on 127.0.0.1) and nnsight's own server-side
deserialisation of the embedded model. The API key is random per session and must never show up in a result, a
printed line, a log record, an exception or a saved file.
"""

import inspect
import logging
import traceback

import pytest
import torch

from attnlab.models import load_model
from attnlab.patching import run_sweep
from attnlab.remote import (
    ModelNotDeployedError,
    RemoteAuthError,
    RemoteConnectionError,
    RemoteExecutionError,
    RemoteTimeoutError,
    RemoteVersionError,
    status,
)

from .loopback import remote_model

pytestmark = pytest.mark.integration

TOL = 1e-4


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def _no_key(api_key: str, *texts) -> None:
    for text in texts:
        assert api_key not in str(text), "the API key leaked"


def test_contract_nnsight_client_endpoints_and_fields(loopback, nnsight_remote, api_key, monkeypatch):
    """nnsight's own, unmodified client: the paths, form fields and headers it uses are the ones the server (and
    NDIF) expect. An nnsight upgrade that changes the protocol fails here, loudly."""
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.schema.config import CONFIG

    monkeypatch.setattr(CONFIG.API, "APIKEY", api_key)  # nnsight read NDIF_API_KEY at import, before the fixture
    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)
    source = inspect.getsource(RemoteBackend)
    for needle in ('"/subscribe"', "/request", "/response/", 'data={"data"', 'files={"blob"', '"ndif-api-key"',
                   '"nnsight-version"', '"python-version"', '["session_id"]'):
        assert needle.strip('"') in source, f"nnsight's RemoteBackend no longer uses {needle}"
    for method in ("_serialize", "send", "parse", "handle", "note", "_post", "poll", "submit", "download_result",
                   "finalize"):
        assert callable(getattr(RemoteBackend, method, None)), f"RemoteBackend.{method} is gone"

    model = nnsight_remote.nn
    tokens = torch.tensor([[1, 2, 3, 4]])
    start = len(loopback.log)
    with model.trace(tokens, remote=loopback.url):
        logits = model.lm_head.output.save()
    blocking = loopback.log[start:]
    with model.trace(tokens, remote=loopback.url, blocking=False) as tracer:
        nn_logits = model.lm_head.output.save()  # noqa: F841  (fetched by polling below)
    backend = tracer.backend
    result = None
    for _ in range(200):  # bounded poll
        result = backend.poll()
        if result is not None:
            break
        import time

        time.sleep(0.05)
    assert result is not None and torch.equal(next(iter(result.values())), logits)
    polling = loopback.log[start + len(blocking):]

    sub = [e for e in blocking if e["path"] == "/subscribe"]
    post = [e for e in blocking if e["path"] == "/request"]
    assert len(sub) == 1 and "ndif-api-key" in sub[0]["headers"]
    assert len(post) == 1
    assert post[0]["fields"] == ["data"] and post[0]["files"] == ["blob"]
    assert post[0]["data_keys"] == ["compress", "env", "model_key", "session_id"]
    assert {"ndif-api-key", "nnsight-version", "python-version"} <= set(post[0]["headers"])
    assert not [e for e in polling if e["path"] == "/subscribe"], "non-blocking mode must not open a websocket"
    assert [e for e in polling if e["path"] == "/request"]
    assert [e for e in polling if e["path"].startswith("/response/")]
    assert [e for e in polling if e["path"].startswith("/result/")]
    assert logits.shape == (1, 4, nnsight_remote.info.d_vocab)
    _no_key(api_key, loopback.log)


def test_status_lists_the_deployed_model(loopback):
    deployed = status(loopback.url)
    assert list(deployed) == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert deployed["HuggingFaceTB/SmolLM2-135M-Instruct"]["state"] == "RUNNING"


def test_undeployed_model_fails_before_anything_is_built(loopback):
    requests = loopback.n_requests
    with pytest.raises(ModelNotDeployedError, match="not deployed.*SmolLM2-135M-Instruct") as info:
        load_model("meta-llama/Llama-3.1-70B", backend="nnsight", remote=loopback.url)
    assert isinstance(info.value, LookupError)
    assert loopback.n_requests == requests


@pytest.mark.parametrize("component,direction,layers", [("heads", "denoising", [0, 5, 29]),
                                                          ("resid_pre", "noising", [0, 9])])
def test_remote_sweep_equals_local_in_one_job(loopback, nnsight_remote, nnsight_local, ioi4, component, direction,
                                              layers, capfd, caplog, tmp_path, api_key):
    caplog.set_level(logging.DEBUG)
    local = run_sweep(nnsight_local, ioi4, component, direction=direction, layers=layers, progress=False)
    before = loopback.n_requests
    remote = run_sweep(nnsight_remote, ioi4, component, direction=direction, layers=layers, progress=False)
    torch.testing.assert_close(remote.values, local.values, atol=TOL, rtol=0)
    assert remote.complete
    # two baseline runs, then every patched pass in ONE job
    n_jobs = loopback.n_requests - before
    assert n_jobs == 2 + (component == "resid_pre") + 1, n_jobs
    # the status line saw the sweep job's whole lifecycle, in order, under one job id
    events = nnsight_remote._jobs.progress.events
    statuses = [s for _, _, s in events]
    assert [statuses.index(s) for s in ("RECEIVED", "QUEUED", "RUNNING", "COMPLETED")] == \
        sorted(statuses.index(s) for s in ("RECEIVED", "QUEUED", "RUNNING", "COMPLETED"))
    assert {job for _, job, _ in events} == {nnsight_remote.job_ids[-1]}
    saved = tmp_path / "result"
    remote.save(saved)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert api_key.encode() not in p.read_bytes()
    out, err = capfd.readouterr()
    _no_key(api_key, out, err, caplog.text, repr(remote.to_dict()), repr(nnsight_remote), nnsight_remote.info)


def test_non_blocking_submit_and_poll(loopback, nnsight_local, ioi4):
    model = remote_model(loopback, blocking=False, poll_interval_s=0.05)
    start = len(loopback.log)
    local = run_sweep(nnsight_local, ioi4, "heads", layers=[3], progress=False)
    remote = run_sweep(model, ioi4, "heads", layers=[3], progress=False)
    torch.testing.assert_close(remote.values, local.values, atol=TOL, rtol=0)
    paths = [e["path"] for e in loopback.log[start:]]
    assert "/subscribe" not in paths
    assert any(p.startswith("/response/") for p in paths)


def test_server_exception_arrives_as_remote_execution_error(loopback, nnsight_remote, ioi4, api_key):
    loopback.faults[loopback.n_requests + 1] = "fail"
    with pytest.raises(RemoteExecutionError) as info:
        nnsight_remote.run(ioi4.clean_tokens, logits_at=ioi4.end)
    message = str(info.value)
    assert info.value.job_id and info.value.job_id in message
    assert "injected failure" in message and "What to do" in message
    _no_key(api_key, _text(info.value))


@pytest.mark.parametrize("blocking", [True, False])
def test_bad_key_is_rejected_with_a_clear_error(loopback, ioi4, api_key, monkeypatch, blocking):
    model = remote_model(loopback, blocking=blocking)
    wrong = "ndif-wrong-" + api_key[::-1]
    monkeypatch.setenv("NDIF_API_KEY", wrong)
    with pytest.raises(RemoteAuthError, match="rejected the API key.*NDIF_API_KEY") as info:
        model.run(ioi4.clean_tokens, logits_at=ioi4.end)
    assert isinstance(info.value, PermissionError)
    _no_key(api_key, _text(info.value))
    _no_key(wrong, _text(info.value))


def test_version_mismatch_says_which_version(loopback, ioi4, monkeypatch):
    model = remote_model(loopback)
    monkeypatch.setattr(loopback, "accepted_versions", {"0.9.0"})
    with pytest.raises(RemoteVersionError, match=r"0\.9\.0.*pip install nnsight"):
        model.run(ioi4.clean_tokens, logits_at=ioi4.end)


def _client_side_logit_diff(logits, answers, reference):
    """The logit difference as a custom metric: computed on the client, so every patched row's logits come back."""
    return logits.gather(-1, answers[:, :1])[:, 0] - logits.gather(-1, answers[:, 1:])[:, 0]


@pytest.mark.parametrize("fault,error", [("drop", RemoteConnectionError), ("stall", RemoteTimeoutError)])
def test_failed_chunk_keeps_finished_chunks_and_resumes(loopback, nnsight_local, ioi4, fault, error, api_key):
    """A sweep split into 3 chunks; the second job drops its connection (or stalls past the deadline). The error names
    the job and what is kept; running the same sweep again sends only the missing chunks and equals the local one."""
    layers = [2, 11, 20]
    kw = dict(layers=layers, metric=_client_side_logit_diff, progress=False)  # full logits back: 3 chunks at 7 MB
    loopback._release.clear()
    model = remote_model(loopback, job_budget_mb=7.0, timeout_s=6.0 if fault == "stall" else 60.0)
    local = run_sweep(nnsight_local, ioi4, "heads", **kw)
    first = loopback.n_requests
    loopback.faults[first + 2 + 2] = fault  # two baselines, chunk 1 finishes, chunk 2 fails
    with pytest.raises(error) as info:
        run_sweep(model, ioi4, "heads", **kw)
    loopback.release_stalled()
    exc = info.value
    assert exc.job_id and exc.job_id in str(exc)
    assert exc.passes_kept >= 3  # 2 baselines + chunk 1
    assert "resume" in str(exc)
    _no_key(api_key, _text(exc))
    sent = loopback.n_requests
    resumed = run_sweep(model, ioi4, "heads", **kw)
    torch.testing.assert_close(resumed.values, local.values, atol=TOL, rtol=0)
    assert loopback.n_requests - sent == 2, "only the failed and the unsent chunk are sent again"
    assert not model._jobs.kept, "kept passes are dropped once a sweep has all of them"


def test_large_request_is_chunked(loopback, nnsight_local, ioi4):
    """A client-side metric brings every patched row's logits back: passes are split into jobs by size."""
    model = remote_model(loopback, job_budget_mb=2.0)
    kw = dict(layers=[1, 7], metric=_client_side_logit_diff, progress=False)
    local = run_sweep(nnsight_local, ioi4, "heads", **kw)
    before = loopback.n_requests
    remote = run_sweep(model, ioi4, "heads", **kw)
    torch.testing.assert_close(remote.values, local.values, atol=TOL, rtol=0)
    chunks = loopback.n_requests - before - 2
    assert chunks == 2, chunks  # one 36-row pass (~7 MB of logits) per job


def test_unreachable_host_is_a_connection_error(api_key):
    from attnlab.remote import RemoteOptions

    with pytest.raises(RemoteConnectionError, match="could not reach"):
        load_model("smollm2-135m", backend="nnsight", remote=RemoteOptions(host="http://127.0.0.1:9", timeout_s=5))


def test_metric_reduced_on_the_server_downloads_one_number_per_row(loopback, ioi4, nnsight_local):
    """A built-in metric is computed by the server: the sweep downloads O(rows) numbers, not O(rows x d_vocab)
    logits, and with a job budget that full logits exceed it fits in fewer jobs. Same values either way."""
    model = remote_model(loopback, job_budget_mb=4.0)
    layers = [10, 20]

    def measured(metric):
        """(result, patched-pass jobs, their result bytes): the two baseline jobs come first."""
        n0, done0 = loopback.n_requests, len(loopback.result_sizes)
        result = run_sweep(model, ioi4, "heads", layers=layers, metric=metric, progress=False)
        return result, loopback.n_requests - n0 - 2, sum(loopback.result_sizes[done0 + 2:])

    reduced, reduced_jobs, reduced_bytes = measured("logit_diff")
    full, full_jobs, full_bytes = measured(_client_side_logit_diff)
    torch.testing.assert_close(reduced.values, full.values, atol=TOL, rtol=0)
    rows = len(layers) * model.info.n_heads * len(ioi4)
    logits_bytes = rows * model.info.d_vocab * 4  # what the patched passes' logits weigh
    assert full_bytes > logits_bytes / 2  # the full-logits path really downloads them (zstd shrinks them a bit) ...
    assert reduced_bytes < logits_bytes / 1000  # ... and the reduced one does not (72 floats and pickling)
    assert reduced_jobs == 1 and full_jobs > reduced_jobs  # 4 MB budget: 72 rows of logits are 14 MB
    kl_remote = run_sweep(model, ioi4, "heads", layers=layers, metric="kl_div", progress=False)
    kl_local = run_sweep(nnsight_local, ioi4, "heads", layers=layers, metric="kl_div", progress=False)
    torch.testing.assert_close(kl_remote.values, kl_local.values, atol=TOL, rtol=0)
