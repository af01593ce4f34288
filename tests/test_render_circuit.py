"""The circuit view's payload, static HTML fallback and standalone report (labext draws it: tests/browser)."""

import json
import re

import pytest

import attnlab
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.graph import CircuitError, Graph
from attnlab.render.circuit import (
    CIRCUIT_MIME,
    circuit_mime_bundle,
    circuit_payload,
    circuit_standalone_html,
    save_circuit_html,
)
from attnlab.render.contract import CIRCUIT_MIME as CONTRACT_MIME

# A hand-made circuit on the tiny grouped-query model (3 layers, 4 query heads, 2 key/value heads), |score| order.
EDGES = [
    ("L2H1->logits", 0.9),
    ("L0H2->L2KV0.k", -0.7),
    ("L1H3->L2H1.q", 0.5),
    ("input->L0KV1.v", 0.4),
    ("L0H0->MLP0", -0.3),
    ("MLP0->L1H3.q", 0.2),
    ("input->L1H3.q", -0.1),
]


def make_circuit(model, name=None, edges=EDGES) -> Circuit:
    info = model.info.to_dict()
    if name is not None:
        info["name"] = name
    return Circuit(model=info, task={"task": "ioi", "n_prompts": 8}, edges=list(edges),
                   selection={"rule": "top_n", "n_edges": len(edges)}, provenance={"method": "eap", "steps": 1})


def test_edges_are_real_edges_of_the_tiny_graph(tiny) -> None:
    graph = Graph.from_info(tiny.info)
    for name, _ in EDGES:
        s, r = graph.edge_index(name)  # raises on a malformed or impossible edge
        assert bool(graph.valid[s, r]) and graph.edge_name(s, r) == name


def test_payload_nodes_edges_signs_and_inputs(tiny) -> None:
    p = circuit_payload(make_circuit(tiny))
    assert p["kind"] == "circuit" and p["version"] == 1 and CIRCUIT_MIME == CONTRACT_MIME
    assert p["n_layers"] == 3 and p["n_edges_total"] == len(EDGES)
    names = [n["name"] for n in p["nodes"]]
    assert names == ["input", "L0H0", "L0H2", "L0KV1", "MLP0", "L1H3", "L2H1", "L2KV0", "logits"]
    by = {n["name"]: n for n in p["nodes"]}
    assert by["input"]["layer"] == -1 and by["logits"]["layer"] == 3
    assert (by["L1H3"]["kind"], by["L1H3"]["layer"], by["L1H3"]["head"], by["L1H3"]["label"]) == ("head", 1, 3, "H3")
    assert (by["L2KV0"]["kind"], by["L2KV0"]["group"], by["L2KV0"]["head"]) == ("kv", 0, None)
    assert by["MLP0"]["kind"] == "mlp"
    assert [e["name"] for e in p["edges"]] == [n for n, _ in EDGES]
    assert [e["score"] for e in p["edges"]] == [s for _, s in EDGES]  # signed
    assert [e["input"] for e in p["edges"]] == ["logits", "k", "q", "v", "mlp", "q", "q"]
    assert [(e["sender"], e["receiver"]) for e in p["edges"][:3]] == [
        ("L2H1", "logits"), ("L0H2", "L2KV0"), ("L1H3", "L2H1")]
    assert p["curve"] is None
    json.dumps(p, allow_nan=False)


def test_key_value_receivers_are_heads_without_grouped_query_attention() -> None:
    model = attnlab.tiny_model(n_layers=2, n_heads=2, seed=0)
    assert model.info.n_kv_heads == model.info.n_heads
    p = circuit_payload(make_circuit(model, edges=[("L0H0->L1KV1.k", 0.3), ("L0H1->L1KV1.v", -0.2)]))
    assert [n["name"] for n in p["nodes"]] == ["L0H0", "L0H1", "L1H1"]
    assert [(e["receiver"], e["input"]) for e in p["edges"]] == [("L1H1", "k"), ("L1H1", "v")]


def test_max_edges_keeps_the_largest_scores(tiny) -> None:
    shuffled = [EDGES[i] for i in (6, 2, 0, 4, 1, 5, 3)]  # the view sorts by |score| itself
    p = circuit_payload(make_circuit(tiny, edges=shuffled), max_edges=3)
    assert [e["name"] for e in p["edges"]] == [n for n, _ in EDGES[:3]]
    assert p["n_edges_total"] == len(EDGES)
    assert {n["name"] for n in p["nodes"]} == {"L2H1", "logits", "L0H2", "L2KV0", "L1H3"}
    assert "top 3 of 7 edges" in p["subtitle"]
    with pytest.raises(CircuitError, match="'max_edges' must be a positive integer"):
        circuit_payload(make_circuit(tiny), max_edges=0)


def test_curve_is_sorted_and_checked(tiny) -> None:
    curve = {"sizes": [7, 1, 3], "faithfulness": [0.95, 0.2, float("nan")],
             "ci95": [(0.9, 1.0), (0.1, 0.3), (0.5, 0.7)], "n_heads": [4, 1, 2]}
    p = circuit_payload(make_circuit(tiny), curve=curve)
    assert p["curve"] == {"sizes": [1, 3, 7], "faithfulness": [0.2, None, 0.95],
                          "ci95": [[0.1, 0.3], [0.5, 0.7], [0.9, 1.0]], "n_heads": [1, 2, 4]}
    with pytest.raises(CircuitError, match="one entry per size"):
        circuit_payload(make_circuit(tiny), curve={"sizes": [1, 2], "faithfulness": [0.5]})


def test_malformed_edge_names_are_refused(tiny) -> None:
    with pytest.raises(CircuitError, match="edge names look like"):
        circuit_payload(make_circuit(tiny, edges=[("L0H0", 1.0)]))
    with pytest.raises(CircuitError, match="receiver of"):
        circuit_payload(make_circuit(tiny, edges=[("L0H0->L1H1.z", 1.0)]))


def test_mime_bundle_html_fallback_escapes_names(tiny) -> None:
    bundle = circuit_mime_bundle(make_circuit(tiny, name="<b>x</b>"), curve={"sizes": [3], "faithfulness": [0.5]})
    assert set(bundle) == {CIRCUIT_MIME, "text/html", "text/plain"}
    assert bundle[CIRCUIT_MIME]["model_name"] == "<b>x</b>"  # the payload keeps text; the renderer sets textContent
    fallback = bundle["text/html"]
    assert "<b>x</b>" not in fallback and "&lt;b&gt;x&lt;/b&gt;" in fallback
    assert "<script" not in fallback
    assert fallback.count("<tr>") == 1 + len(EDGES)  # header + one row per edge
    assert "+0.9000" in fallback and "-0.7000" in fallback and "3: 0.500" in fallback
    assert "'<b>x</b>'" in bundle["text/plain"] and "7 edges" in bundle["text/plain"]


def test_standalone_html_is_offline_and_embeds_the_renderer(tiny, tmp_path) -> None:
    circuit = make_circuit(tiny, name="</script><b>x</b>")
    doc = circuit_standalone_html(circuit)
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", doc), "no external resources"
    assert "attnlabRender.renderCircuit(" in doc
    assert "renderCircuit" in doc.split("<script>", 1)[1]  # the inlined bundle defines it
    assert doc.count("</script>") == 3  # the payload's "</script>" is escaped inside the JSON
    payload_json = doc.split('<script id="attnlab-payload" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(payload_json) == circuit_payload(circuit)
    path = save_circuit_html(circuit, tmp_path / "c.html")
    assert path.read_text(encoding="utf-8") == doc


def test_every_edge_is_drawn_by_default_and_the_rest_is_accounted_for(tiny) -> None:
    graph = Graph.from_info(tiny.info)
    names = graph.edge_names()
    edges = [(n, (-1) ** i / (1 + i)) for i, n in enumerate(names)]  # already in |score| order
    p = circuit_payload(make_circuit(tiny, edges=edges))
    assert len(p["edges"]) == p["n_edges_total"] == len(names)  # no 300-edge cap
    assert f"{len(names):,} edges · all {len(names):,} drawn" in p["subtitle"]
    p = circuit_payload(make_circuit(tiny, edges=edges), max_edges=10)
    rest = edges[10:]
    weakest = max(abs(s) for _, s in rest)
    assert len(p["edges"]) == 10 and p["n_edges_total"] == len(names)
    assert (f"showing the top 10 of {len(names):,} edges; the other {len(rest):,} have |score| <= {weakest:.3g} "
            f"(together {sum(abs(s) for _, s in rest):.3g})") in p["subtitle"]


def test_static_faithfulness_line_is_about_the_circuits_own_size(tiny) -> None:
    n = len(EDGES)
    on_curve = circuit_mime_bundle(make_circuit(tiny), curve={"sizes": [3, n], "faithfulness": [0.5, 0.875]})
    assert f"faithfulness of this {n}-edge circuit: 0.875" in on_curve["text/html"]
    off_curve = circuit_mime_bundle(make_circuit(tiny), curve={"sizes": [2, 3], "faithfulness": [0.4, 0.5]})
    assert f"faithfulness of this {n}-edge circuit: not computed (not a size of the curve)" in off_curve["text/html"]
    assert "nearest" not in off_curve["text/html"]
