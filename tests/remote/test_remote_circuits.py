"""Circuit search on the server: EAP-IG over every edge, then the faithfulness of its top edges, through nnsight's
real client against the loopback NDIF server (which, like an NDIF worker, has autograd on and frozen parameters, and
refuses every attnlab name in a request: what attnlab runs there travels by value)."""

import pytest
import torch

from attnlab.circuits import circuit_from_scores, eap_scores
from attnlab.circuits.evaluate import faithfulness, faithfulness_curve
from attnlab.errors import MetricError
from attnlab.metrics import Metric
from attnlab.remote import RemoteExecutionError

from .loopback import remote_model
from .test_loopback_remote import _no_key, _text

pytestmark = pytest.mark.integration


def _jobs(loopback, before: tuple[int, int]) -> tuple[int, int]:
    """(jobs sent, result bytes downloaded) since ``before`` = (n_requests, len(result_sizes))."""
    return loopback.n_requests - before[0], sum(loopback.result_sizes[before[1]:])


def _mark(loopback) -> tuple[int, int]:
    return loopback.n_requests, len(loopback.result_sizes)


def test_eap_ig_then_faithfulness_on_the_server_equal_local_in_two_jobs(loopback, nnsight_remote, nnsight_local,
                                                                         embedded_model, ioi4, api_key):
    """EAP-IG over all 70,651 edges is one job that returns only the scores; the faithfulness of the top edges is a
    second job. Both equal the local nnsight run (the same programs) and the TransformerLens backend."""
    before = _mark(loopback)
    remote = eap_scores(nnsight_remote, ioi4, method="eap-ig", steps=3, progress=False)
    jobs, downloaded = _jobs(loopback, before)
    graph = remote.graph
    assert jobs == 1
    # the scores are the one large thing that travels back; per-receiver gradients would be
    # n_receivers x prompts x pos x d_model floats (481 x 4 x 16 x 576 x 4 B = 71 MB)
    assert downloaded < 1.5 * graph.n_senders * graph.n_receivers * 4
    local = eap_scores(nnsight_local, ioi4, method="eap-ig", steps=3, progress=False)
    torch.testing.assert_close(remote.scores, local.scores, atol=1e-5, rtol=1e-5)
    tl = eap_scores(embedded_model, ioi4, method="eap-ig", steps=3, progress=False)
    scale = float(tl.scores.abs().max())
    assert scale > 0.1  # the scores are not all ~0
    torch.testing.assert_close(remote.scores, tl.scores, atol=1e-4 * scale, rtol=1e-4)
    assert remote.clean_metric == pytest.approx(tl.clean_metric, rel=1e-4)
    assert remote.corrupted_metric == pytest.approx(tl.corrupted_metric, rel=1e-4)

    circuit = circuit_from_scores(remote, n_edges=300)
    before = _mark(loopback)
    f_remote = faithfulness(nnsight_remote, ioi4, circuit, batch_size=4)
    jobs, downloaded = _jobs(loopback, before)
    assert jobs == 1 and downloaded < 10_000  # 3 x 4 metric values (and pickling)
    f_tl = faithfulness(embedded_model, ioi4, circuit, batch_size=4)
    assert f_remote.faithfulness == pytest.approx(f_tl.faithfulness, rel=1e-4, abs=1e-4)
    assert f_remote.source == "mean" and 0.05 < f_tl.faithfulness < 1.5  # a real circuit, not a degenerate one
    for key in ("circuit", "full", "ablated"):
        torch.testing.assert_close(f_remote.per_prompt[key], f_tl.per_prompt[key], atol=1e-4, rtol=1e-4)
    _no_key(api_key, repr(remote.task), repr(f_remote))


def test_kl_metric_and_curve_run_on_the_server(loopback, nnsight_remote, nnsight_local, ioi4):
    """KL divergence needs the clean distribution: the server computes it in the same job (nothing d_vocab-sized
    travels). A faithfulness curve is one job for every size."""
    scores = eap_scores(nnsight_local, ioi4, method="eap-ig", steps=2, progress=False)
    circuit = circuit_from_scores(scores, n_edges=200)
    before = _mark(loopback)
    kl_remote = faithfulness(nnsight_remote, ioi4, circuit, batch_size=4, metric="kl_div", source="corrupted")
    assert _jobs(loopback, before)[0] == 1
    kl_local = faithfulness(nnsight_local, ioi4, circuit, batch_size=4, metric="kl_div", source="corrupted")
    assert kl_remote.faithfulness == pytest.approx(kl_local.faithfulness, rel=1e-5, abs=1e-6)
    assert kl_remote.full_metric == pytest.approx(0.0, abs=1e-5)  # KL of the model from itself

    before = _mark(loopback)
    curve = faithfulness_curve(nnsight_remote, ioi4, scores, sizes=[50, 400], batch_size=4)
    assert _jobs(loopback, before)[0] == 1
    local_curve = faithfulness_curve(nnsight_local, ioi4, scores, sizes=[50, 400], batch_size=4)
    assert curve.faithfulness == pytest.approx(local_curve.faithfulness, rel=1e-5, abs=1e-6)


def test_custom_metric_is_refused_before_any_job(loopback, nnsight_remote, ioi4):
    """A metric of your own is attnlab-side code: the server cannot run it, so it is refused before a job is sent."""
    mine = Metric.custom(lambda logits, answers, reference: logits[:, 0], name="mine")
    before = _mark(loopback)
    with pytest.raises(MetricError, match="runs remotely.*built-in metric"):
        eap_scores(nnsight_remote, ioi4, method="eap-ig", steps=2, metric=mine, progress=False)
    with pytest.raises(MetricError, match="runs remotely.*built-in metric"):
        faithfulness(nnsight_remote, ioi4, torch.zeros(1, dtype=torch.bool).expand(301, 481).clone(), metric=mine)
    assert _jobs(loopback, before)[0] == 0


def test_server_refuses_a_request_that_names_attnlab(loopback, nnsight_remote, ioi4, api_key):
    """What attnlab runs on a server must travel by value: a request that refers to attnlab code by name (here an
    unregistered attnlab function) fails on the loopback server as it would on an NDIF worker, which has no
    attnlab. So every remote test above shows the by-value path, not the loopback's shared process."""
    from attnlab import memory

    nn = nnsight_remote.nn
    tokens = ioi4.clean_tokens[:1]

    def execute(backend):
        with nn.session(backend=backend):
            with nn.trace(tokens):
                size = memory.edge_pass_mb(nnsight_remote.info, 1, 4)  # attnlab code, not shipped
            results = size  # noqa: F841
        return None

    with pytest.raises(RemoteExecutionError, match="a server has no attnlab") as info:
        nnsight_remote._jobs.run_session(execute, "a request naming attnlab")
    _no_key(api_key, _text(info.value))
