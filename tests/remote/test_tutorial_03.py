"""Tutorial 3 (remote large models): committed clean, and executed end to end against the loopback server.

The notebook's one switch (``ATTNLAB_TUTORIAL_MODEL``) selects the embedded model; ``NDIF_HOST`` points nnsight and
attnlab at the loopback server started here, ``NDIF_API_KEY`` holds the session's random key, which must appear
nowhere in the executed notebook.
"""

import math

import nbformat
import pytest

from attnlab.render.contract import CIRCUIT_MIME, HEATMAP_MIME
from tests.tutorial_fixtures import TUTORIAL_TEST_TIMEOUT_S, TUTORIALS, execute_tutorial

NB03 = TUTORIALS / "03_remote_large_models.ipynb"


def test_tutorial_03_is_committed_without_outputs():
    nb = nbformat.read(NB03, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    stored = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stored, f"code cells {stored} store outputs; clear them"
    assert 'os.environ.get("ATTNLAB_TUTORIAL_MODEL", "meta-llama/Llama-3.1-8B")' in nb.cells[2].source


@pytest.mark.tutorial
@pytest.mark.integration
@pytest.mark.timeout(TUTORIAL_TEST_TIMEOUT_S)
def test_tutorial_03_executes_against_the_loopback_server(loopback, api_key, monkeypatch, tmp_path):
    monkeypatch.setenv("NDIF_HOST", loopback.url)
    monkeypatch.setenv("NDIF_API_KEY", api_key)
    monkeypatch.setenv("ATTNLAB_TUTORIAL_MODEL", "smollm2-135m")
    before = loopback.n_requests
    executed = execute_tutorial("03_remote_large_models.ipynb", tmp_path)
    text = executed.read_text()
    assert api_key not in text, "the API key leaked into the notebook"
    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for c in cells:
        assert not [o for o in c.outputs if o.output_type == "error"], c.source
    (sweep,) = [c for c in cells if "attnlab.patch_heads(model, dataset)\nresult" in c.source]
    (bundle,) = [o.data for o in sweep.outputs if o.output_type == "execute_result"]
    payload = bundle[HEATMAP_MIME]
    assert payload["row_labels"] == [f"L{layer}" for layer in range(30)]
    values = [v for row in payload["values"] for v in row]
    assert len(values) == 270 and all(v is not None and math.isfinite(v) for v in values)
    assert max(abs(v) for v in values) > 0.05
    # per sweep: two baselines + the patched passes in one job (the metric is reduced on the server); EAP-IG over
    # every edge is one job, the faithfulness of its circuit one more
    assert loopback.n_requests - before == 3 + 3 + 1 + 1
    (kl_cell,) = [c for c in cells if 'metric="kl_div"' in c.source]
    printed = "".join(o.get("text", "") for o in kl_cell.outputs)
    assert "KL sweep: 3 jobs" in printed and "reduced on the server: True" in printed
    (kl_bundle,) = [o.data for o in kl_cell.outputs if o.output_type == "execute_result"]
    kl_payload = kl_bundle[HEATMAP_MIME]
    assert kl_payload["row_labels"] == [f"L{layer}" for layer in range(24, 30)]
    assert "KL divergence" in kl_payload["value_label"]
    assert max(abs(v) for row in kl_payload["values"] for v in row) > 0.05
    (eap_cell,) = [c for c in cells if "eap_scores(model, dataset" in c.source]
    printed = "".join(o.get("text", "") for o in eap_cell.outputs)
    assert "EAP-IG over 70,651 edges (301 senders x 481 receivers): 1 job" in printed, printed
    (faith_cell,) = [c for c in cells if "faithfulness(model, dataset, circuit)" in c.source]
    printed = "".join(o.get("text", "") for o in faith_cell.outputs)
    assert "faithfulness of the top 300 edges" in printed and "), 1 job" in printed, printed
    faith = float(printed.split("edges (")[1].split(": ")[1].split(" ")[0])
    assert 0.05 < faith < 1.5, printed  # a real circuit: better than ablating everything, not a degenerate one
    (circuit_bundle,) = [o.data for o in faith_cell.outputs if o.output_type == "execute_result"]
    assert len(circuit_bundle[CIRCUIT_MIME]["edges"]) == 300
    assert "identical values: True" in "".join(o.get("text", "") for c in cells for o in c.outputs)
