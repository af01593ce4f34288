"""The circuit view: payload builder, static HTML fallback and standalone report for a :class:`~attnlab.circuits.Circuit`.

A circuit found by edge attribution patching (EAP, Syed et al. 2023, arXiv 2310.10348) or ACDC (Conmy et al. 2023,
arXiv 2304.14997) is a set of scored edges ``sender -> receiver.input`` of the model's graph
(:mod:`attnlab.circuits.graph`). labext's circuit view (``labext/src/circuit.ts``) draws it as a layered graph that
fills the notebook's width: the embeddings (``input``) at the top, one row of heads per layer that holds a node of the
circuit with the layer's MLP as a bar under it, the ``logits`` at the bottom. Every edge is drawn (up to
``max_edges``, 5,000 by default; the subtitle counts the rest): a curve whose width and opacity grow with |score| and
whose colour gives its sign on the heatmap's palette (a colour bar gives the scale), the query, key and value inputs
of a head told apart by dash pattern and attachment point, edges between bars (input, MLPs, logits) as arcs in a lane
of their own. A slider shows the top-n edges by |score| and, when a faithfulness curve is given
(:func:`attnlab.circuits.evaluate.faithfulness_curve`), steps through the curve's sizes, draws the curve with the size
shown marked, and reads the faithfulness of exactly that size (a size the curve lacks reads "not computed"). Clicking
a node lists its edges; SVG and PNG buttons export the view and the curve.

Front ends without the extension get the ``text/html`` fallback: a script-free table of the top edges. Standalone
reports inline labext's renderer, as :func:`attnlab.render.views.standalone_html` does. Every string (model and task
names, node names) is text, never HTML.
"""

import html
import json
import math
import re
from pathlib import Path

from attnlab import serialisation
from attnlab.errors import CircuitError
from attnlab.render.contract import CIRCUIT_MIME, CircuitCurve, CircuitEdge, CircuitNode, CircuitPayload
from attnlab.render.views import _renderer_js

__all__ = ["CIRCUIT_MIME", "DRAW_LIMIT", "circuit_mime_bundle", "circuit_payload", "circuit_standalone_html",
           "save_circuit_html", "static_circuit_html"]

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_KV = re.compile(r"^L(\d+)KV(\d+)$")
_MLP = re.compile(r"^MLP(\d+)$")
#: Edges drawn by default: enough for every circuit people draw (EAP circuits of a few hundred to a few thousand
#: edges); beyond it the view draws the strongest and states how many it left out and how weak they are.
DRAW_LIMIT = 5000
_POS = (178, 24, 43)  # red end of the diverging scale (labext/src/heatmap.ts)
_NEG = (33, 102, 172)  # blue end


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _node(name: str, n_layers: int, grouped: bool) -> CircuitNode:
    """The node called ``name`` (a key/value receiver of a model without grouped-query attention is its head)."""
    if name == "input":
        return CircuitNode(name=name, label="input", kind="input", layer=-1, head=None, group=None)
    if name == "logits":
        return CircuitNode(name=name, label="logits", kind="logits", layer=n_layers, head=None, group=None)
    if m := _HEAD.match(name):
        layer, head = int(m.group(1)), int(m.group(2))
        return CircuitNode(name=name, label=f"H{head}", kind="head", layer=layer, head=head, group=None)
    if m := _KV.match(name):
        layer, g = int(m.group(1)), int(m.group(2))
        if not grouped:
            return _node(f"L{layer}H{g}", n_layers, grouped)
        return CircuitNode(name=name, label=f"KV{g}", kind="kv", layer=layer, head=None, group=g)
    if m := _MLP.match(name):
        return CircuitNode(name=name, label="MLP", kind="mlp", layer=int(m.group(1)), head=None, group=None)
    raise CircuitError(f"unknown node {name!r}: expected 'input', 'L{{l}}H{{h}}', 'L{{l}}KV{{g}}', 'MLP{{l}}' or "
                       "'logits'")


def _split_edge(edge: str) -> tuple[str, str, str]:
    """(sender, receiving node, input kind) of ``"sender->receiver"``."""
    parts = edge.split("->")
    if len(parts) != 2:
        raise CircuitError(f"edge names look like 'L0H1->L3H2.q' (got {edge!r})")
    sender, receiver = parts
    if receiver == "logits":
        return sender, "logits", "logits"
    if _MLP.match(receiver):
        return sender, receiver, "mlp"
    node, _, inp = receiver.rpartition(".")
    if inp not in ("q", "k", "v") or not node:
        raise CircuitError(f"receiver of {edge!r} must be 'L{{l}}H{{h}}.q', 'L{{l}}KV{{g}}.k'/'.v', 'MLP{{l}}' or "
                           "'logits'")
    return sender, node, inp


def _curve(curve) -> CircuitCurve | None:
    """A :class:`CircuitCurve` from a ``FaithfulnessCurve`` (or any object or dict with ``sizes``,
    ``faithfulness`` and optionally ``ci95``, ``n_heads``)."""
    if curve is None:
        return None
    get = (lambda k: curve.get(k)) if isinstance(curve, dict) else (lambda k: getattr(curve, k, None))
    sizes, faith = get("sizes"), get("faithfulness")
    if sizes is None or faith is None:
        raise CircuitError("'curve' needs 'sizes' and 'faithfulness' (a FaithfulnessCurve)")
    sizes = [int(s) for s in sizes]
    faith = [_finite(f) for f in faith]
    ci, heads = get("ci95"), get("n_heads")
    ci = None if ci is None else [[_finite(lo), _finite(hi)] for lo, hi in ci]
    heads = None if heads is None else [int(h) for h in heads]
    for key, seq in (("faithfulness", faith), ("ci95", ci), ("n_heads", heads)):
        if seq is not None and len(seq) != len(sizes):
            raise CircuitError(f"curve '{key}' must have one entry per size ({len(sizes)}) (got {len(seq)})")
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    return CircuitCurve(sizes=[sizes[i] for i in order], faithfulness=[faith[i] for i in order],
                        ci95=None if ci is None else [ci[i] for i in order],
                        n_heads=None if heads is None else [heads[i] for i in order])


def _value_label(metric) -> str:
    """What an edge score means, from the circuit's recorded metric (circuits saved without one: logit difference)."""
    label = metric.get("label") if isinstance(metric, dict) else None
    return f"edge score: change of {label}" if label else "edge attribution score (logits)"


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    return str(v)


def _circuit_record(circuit) -> dict:
    """The ``attnlab.circuit.v1`` record of ``circuit`` (a :class:`~attnlab.circuits.Circuit` or its ``to_dict()``),
    checked by :func:`attnlab.serialisation.check_record`.

    The view reads the record's wire form only, so this module imports nothing from :mod:`attnlab.circuits`.

    Raises:
        CircuitFileError: (a :class:`CircuitError`) not an ``attnlab.circuit.v1`` record.
    """
    record = circuit if isinstance(circuit, dict) else getattr(circuit, "to_dict", lambda: None)()
    serialisation.check_record(record, serialisation.CIRCUIT)
    return record


def circuit_payload(circuit, *, curve=None, max_edges: int | None = None, title: str | None = None) -> CircuitPayload:
    """Payload of the circuit view for ``circuit``: all its edges, or its ``max_edges`` of largest |score|.

    Args:
        circuit: a :class:`~attnlab.circuits.Circuit` (or its ``to_dict()``).
        curve: a :class:`~attnlab.circuits.evaluate.FaithfulnessCurve` (or a dict with ``sizes``, ``faithfulness``,
            ``ci95``, ``n_heads``) for the slider's faithfulness read-out, or None.
        max_edges: draw at most this many edges (those of largest |score|; default :data:`DRAW_LIMIT`); the rest are
            counted in ``n_edges_total`` and the subtitle states how many were left out and their largest |score|.
        title: heading; default ``"Circuit: <model> on <task>"``.

    Returns:
        A :class:`~attnlab.render.contract.CircuitPayload`.

    Raises:
        CircuitError: ``max_edges`` not a positive integer, a malformed edge name, or a malformed curve.
    """
    if max_edges is None:
        max_edges = DRAW_LIMIT
    if isinstance(max_edges, bool) or not isinstance(max_edges, int) or max_edges < 1:
        raise CircuitError(f"'max_edges' must be a positive integer (got {max_edges!r})")
    record = _circuit_record(circuit)
    model, task = dict(record["model"]), dict(record["task"])
    n_layers = int(model.get("n_layers", 0))
    n_heads = model.get("n_heads")
    n_kv = model.get("n_kv_heads", n_heads)
    grouped = n_heads is not None and n_kv is not None and n_kv != n_heads
    edges_in = [(str(n), float(v)) for n, v in record["edges"]]
    ranked = sorted(edges_in, key=lambda e: -abs(e[1]))  # stable: keeps the circuit's order on ties
    shown = ranked[:max_edges]
    nodes: dict[str, CircuitNode] = {}
    edges: list[CircuitEdge] = []
    for name, score in shown:
        sender, receiver, inp = _split_edge(str(name))
        s_node, r_node = _node(sender, n_layers, grouped), _node(receiver, n_layers, grouped)
        nodes.setdefault(s_node["name"], s_node)
        nodes.setdefault(r_node["name"], r_node)
        edges.append(CircuitEdge(name=str(name), sender=s_node["name"], receiver=r_node["name"], input=inp,
                                 score=float(score)))
    order = {"input": 0, "head": 1, "kv": 2, "mlp": 3, "logits": 4}
    node_list = sorted(nodes.values(), key=lambda n: (n["layer"], order[n["kind"]], n["head"] or 0, n["group"] or 0))
    name = str(model.get("name", "?"))
    task_name = str(task.get("task", "?"))
    prov = dict(record.get("provenance", {}))
    method = f" · {prov['method']}" if prov.get("method") else ""
    if len(shown) < len(ranked):
        rest = ranked[len(shown):]
        weakest = max(abs(s) for _, s in rest)
        drawn = (f" · showing the top {len(shown):,} of {len(ranked):,} edges; the other {len(rest):,} have "
                 f"|score| <= {weakest:.3g} (together {sum(abs(s) for _, s in rest):.3g})")
    else:
        drawn = f" · all {len(ranked):,} drawn"
    subtitle = f"{name} · {task_name}{method} · {len(ranked):,} edges{drawn}"
    provenance = [["model", name], *[[f"task {k}", _text(v)] for k, v in task.items() if k != "task"],
                  ["task", task_name],
                  *[[f"selection {k}", _text(v)] for k, v in dict(record.get("selection", {})).items()],
                  *[[str(k), _text(v)] for k, v in prov.items()]]
    return CircuitPayload(
        kind="circuit", version=1,
        title=title if title is not None else f"Circuit: {name} on {task_name}",
        subtitle=subtitle,
        model_name=name,
        n_layers=n_layers,
        nodes=node_list,
        edges=edges,
        n_edges_total=len(ranked),
        value_label=_value_label(prov.get("metric")),
        curve=_curve(curve),
        provenance=provenance,
    )


def _edge_colour(score: float, top: float) -> str:
    t = min(1.0, abs(score) / top) if top > 0 else 0.0
    a = 0.15 + 0.6 * t
    r, g, b = (round(255 + (c - 255) * a) for c in (_POS if score >= 0 else _NEG))
    return f"rgb({r},{g},{b})"


def static_circuit_html(payload: CircuitPayload, *, top_k: int = 40) -> str:
    """Script-free HTML (the ``text/html`` fallback): the ``top_k`` edges as a table, scores coloured by sign.

    Every payload string is escaped.
    """
    e = html.escape
    edges = payload["edges"][:top_k]
    top = max((abs(x["score"]) for x in payload["edges"]), default=0.0)
    rows = "".join(
        f'<tr><td style="text-align:right;padding:0 6px;color:#555">{i + 1}</td>'
        f'<td style="padding:0 6px">{e(x["sender"])}</td>'
        f'<td style="padding:0 6px">{e(x["receiver"])}</td>'
        f'<td style="padding:0 6px">{e(x["input"])}</td>'
        f'<td style="padding:0 6px;text-align:right;background:{_edge_colour(x["score"], top)}">'
        f'{x["score"]:+.4f}</td></tr>'
        for i, x in enumerate(edges))
    heads = sorted({n["name"] for n in payload["nodes"] if n["kind"] == "head"})
    curve = payload["curve"]
    faith = ""
    if curve and curve["sizes"]:
        pts = ", ".join(f"{s}: {'n/a' if f is None else f'{f:.3f}'}"
                        for s, f in zip(curve["sizes"], curve["faithfulness"]))
        n = payload["n_edges_total"]
        if n in curve["sizes"]:
            f = curve["faithfulness"][curve["sizes"].index(n)]
            own = f"faithfulness of this {n:,}-edge circuit: {'n/a' if f is None else f'{f:.3f}'}"
        else:
            own = f"faithfulness of this {n:,}-edge circuit: not computed (not a size of the curve)"
        faith = (f'<div style="color:#555">{e(own)}</div>'
                 f'<div style="color:#555">faithfulness by number of edges: {e(pts)}</div>')
    more = len(payload["edges"]) - len(edges)
    return (
        '<div class="attnlab-static" style="font:11px sans-serif">'
        f'<div style="font-weight:bold;font-size:13px">{e(payload["title"])}</div>'
        f'<div style="color:#555">{e(payload["subtitle"])}</div>'
        f'<div style="color:#555">{len(payload["edges"])} edges, {len(heads)} heads: {e(", ".join(heads))}</div>'
        f'{faith}'
        f'<div style="color:#555">score: {e(payload["value_label"])}, red positive, blue negative. Static view: '
        'install the attnlab JupyterLab extension for the interactive graph.</div>'
        '<table style="border-collapse:collapse"><tr><th>#</th><th>sender</th><th>receiver</th><th>input</th>'
        f'<th>score</th></tr>{rows}</table>'
        + (f'<div style="color:#555">... and {more} more edges</div>' if more > 0 else "")
        + "</div>"
    )


def circuit_mime_bundle(circuit, *, curve=None, max_edges: int | None = None, title: str | None = None) -> dict:
    """MIME bundle of ``circuit``: the circuit type for labext, static HTML and plain text for other front ends.

    Args and Raises: as :func:`circuit_payload`.
    """
    payload = circuit_payload(circuit, curve=curve, max_edges=max_edges, title=title)
    heads = sum(1 for n in payload["nodes"] if n["kind"] == "head")
    plain = (f"Circuit({payload['model_name']!r}, {payload['n_edges_total']} edges, {heads} heads; "
             f"{payload['subtitle']})")
    return {CIRCUIT_MIME: payload, "text/html": static_circuit_html(payload), "text/plain": plain}


def circuit_standalone_html(circuit, *, curve=None, max_edges: int | None = None, title: str | None = None) -> str:
    """A self-contained HTML document drawing the circuit with labext's renderer, offline (no network, no server).

    Args: as :func:`circuit_payload`.

    Raises:
        AttnlabError: the built renderer is missing (a source checkout that was never built).
        CircuitError: as :func:`circuit_payload`.
    """
    payload = circuit_payload(circuit, curve=curve, max_edges=max_edges, title=title)
    data = serialisation.script_json(payload)  # a name "</script>" or "<!--" stays inside the JSON
    js = _renderer_js().replace("</script", "<\\/script")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(payload["title"])}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
</head><body style="margin:16px;background:#fff">
<div id="attnlab-report"></div>
<noscript>{static_circuit_html(payload)}</noscript>
<script id="attnlab-payload" type="application/json">{data}</script>
<script>{js}</script>
<script>
attnlabRender.renderCircuit(document.getElementById("attnlab-report"),
  JSON.parse(document.getElementById("attnlab-payload").textContent));
</script>
</body></html>
"""


def save_circuit_html(circuit, path: str | Path, curve=None, *, max_edges: int | None = None) -> Path:
    """Write :func:`circuit_standalone_html` of ``circuit`` to ``path`` (UTF-8, atomically); returns the path.

    Raises:
        ResultFileError: the file cannot be written (its folder does not exist, a folder of that name ...).
    """
    from attnlab.serialisation import write_text

    return write_text(path, circuit_standalone_html(circuit, curve=curve, max_edges=max_edges), what="HTML report")
