"""Browser tests of the circuit view: in JupyterLab (from the vendor MIME type) and as an offline standalone report.
The graph draws one curve per edge (all 1,000 of a 1,000-edge circuit) across the notebook's width, the slider
re-filters edges and reads the faithfulness curve for exactly the size shown (a size the curve lacks reads "not
computed"), clicking a node lists its edges and dispatches an event, and names stay text."""

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, Route

from attnlab.render.circuit import circuit_payload, save_circuit_html
from attnlab.render.contract import CIRCUIT_MIME

from .conftest import VIEWPORT
from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, screenshot, \
    write_notebook

TIMEOUT_MS = 60_000
CIRCUIT_OUTPUT = ".jp-OutputArea-output.jp-RenderedAttnlabCircuit"
N_EDGES = 40

# Run in the kernel and here (seeded), so the test knows the payload: 40 random edges of a 6-layer grouped-query
# model's graph (and three fixed ones from the input and into the logits) with signed scores, and a faithfulness curve as faithfulness_curve would give it.
BUILD = f"""\
import random
import attnlab
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.graph import Graph

model = attnlab.tiny_model(n_layers=6, n_heads=4, n_kv_heads=2, seed=1, name='<b>x</b>')
rng = random.Random(0)
fixed = ['input->L0H1.q', 'input->L3KV1.v', 'L0H3->logits']
names = fixed + rng.sample([n for n in Graph.from_info(model.info).edge_names() if n not in fixed], {N_EDGES - 3})
edges = sorted(((n, rng.uniform(-1, 1)) for n in names), key=lambda e: -abs(e[1]))
circuit = Circuit(model=model.info.to_dict(), task={{'task': '<i>ioi</i>', 'n_prompts': 8}}, edges=edges,
                  selection={{'rule': 'top_n', 'n_edges': {N_EDGES}}}, provenance={{'method': 'eap'}})
curve = {{'sizes': [5, 10, 20, 40], 'faithfulness': [0.31, 0.62, 0.845, 0.97],
          'ci95': [(0.2, 0.4), (0.5, 0.7), (0.8, 0.9), (0.95, 0.99)], 'n_heads': [3, 5, 9, 14]}}
"""

# Here only (the standalone report): a 1,000-edge circuit of a 10-layer model, scores decaying as in an EAP ranking.
BIG = """\
big_model = attnlab.tiny_model(n_layers=10, n_heads=4, n_kv_heads=2, seed=1)
big_names = rng.sample(Graph.from_info(big_model.info).edge_names(), 1000)
big = Circuit(model=big_model.info.to_dict(), task={'task': 'ioi', 'n_prompts': 8},
              edges=[(n, (-1) ** i * 2.0 / (1 + i) ** 0.7) for i, n in enumerate(big_names)],
              selection={'rule': 'top_n', 'n_edges': 1000}, provenance={'method': 'eap'})
big_curve = {'sizes': [250, 500, 1000], 'faithfulness': [0.55, 0.8, 0.91],
              'ci95': [(0.5, 0.6), (0.75, 0.85), (0.88, 0.94)], 'n_heads': [10, 20, 30]}
"""

DISPLAY = """\
from IPython.display import display
from attnlab.render.circuit import circuit_mime_bundle
display(circuit_mime_bundle(circuit, curve=curve), raw=True)
"""


def _built(big: bool = False) -> dict:
    scope: dict = {}
    exec(BUILD + (BIG if big else ""), scope)  # noqa: S102  (our own constant code: the expected payload)
    return scope


def _visible(scope) -> int:
    return scope.locator("path.attnlab-circuit-edge:not([display])").count()


@pytest.mark.browser
def test_circuit_view_in_lab(lab: LabServer, browser_page: Page) -> None:
    scope = _built()
    payload = circuit_payload(scope["circuit"], curve=scope["curve"])
    edges = payload["edges"]

    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "circuit.ipynb", [BUILD, DISPLAY])
    open_notebook(page, lab, "circuit.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    view = panel.locator(f"{CIRCUIT_OUTPUT} > .attnlab-circuit")
    view.locator("path.attnlab-circuit-edge").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    assert panel.locator(".attnlab-static").count() == 0, "the vendor renderer must win over the HTML fallback"
    assert view.locator("path.attnlab-circuit-edge").count() == N_EDGES
    assert _visible(view) == N_EDGES
    assert view.locator("g.attnlab-circuit-node").count() == len(payload["nodes"])
    title = view.locator(".attnlab-circuit-header .attnlab-title")
    assert title.inner_text() == "Circuit: <b>x</b> on <i>ioi</i>"  # text, not markup
    assert view.locator("b, i").count() == 0
    # Strongest edge: its tooltip, its sign's colour family, the widest stroke.
    top = view.locator('path.attnlab-circuit-edge[data-rank="0"]')
    receiver = edges[0]["name"].split("->")[1]  # on a grouped-query model, the receiving node's name and input
    assert top.locator("title").text_content() == f"{edges[0]['sender']} → {receiver}: {edges[0]['score']:+.4f}"
    assert float(top.get_attribute("stroke-width")) == pytest.approx(6.0)
    assert float(top.get_attribute("stroke-opacity")) == pytest.approx(1.0)
    faith = view.locator(".attnlab-circuit-faith")
    assert faith.inner_text() == "faithfulness 0.970 at 40 edges (95% CI 0.950 to 0.990)"
    # The graph fills the notebook's width (no fixed box); the curve is drawn with the size shown marked.
    view_w = view.bounding_box()["width"]  # the output area's width
    assert view_w > 800
    assert view.locator("svg.attnlab-circuit-graph").bounding_box()["width"] >= view_w - 360  # less the info panel
    assert view.locator("circle.attnlab-curve-point").count() == 4
    assert view.locator("circle.attnlab-curve-point-current").get_attribute("data-size") == "40"
    yticks = [float(t) for t in view.locator("text.attnlab-curve-ytick").all_text_contents()]
    steps = {round(b - a, 6) for a, b in zip(yticks, yticks[1:])}
    assert len(yticks) >= 4 and len(steps) == 1 and 0.0 in yticks and 1.0 in yticks  # round, evenly spaced labels
    assert view.locator(".attnlab-circuit-colorbar-tick").all_text_contents() == [
        f"{-abs(edges[0]['score']):+.3f}", "0", f"{abs(edges[0]['score']):+.3f}"]
    view.scroll_into_view_if_needed()
    screenshot(page, "circuit-initial")

    # The slider steps through the curve's sizes: 10 edges shown, the faithfulness of the 10-edge circuit.
    slider = view.locator("input.attnlab-circuit-slider")
    assert view.locator("input.attnlab-circuit-snap-box").is_checked()
    slider.fill("1")
    assert _visible(view) == 10
    assert faith.inner_text() == "faithfulness 0.620 at 10 edges (95% CI 0.500 to 0.700)"
    heads = {e[k] for e in edges[:10] for k in ("sender", "receiver")
             if e[k] in {n["name"] for n in payload["nodes"] if n["kind"] == "head"}}
    counts = view.locator(".attnlab-circuit-counts").inner_text()
    assert counts.startswith(f"10 of {N_EDGES} edges · {len(heads)} heads")
    slider.press("ArrowLeft")
    assert _visible(view) == 5
    assert "faithfulness 0.310 at 5 edges" in view.locator(".attnlab-circuit-faith").inner_text()
    live = {e[k] for e in edges[:5] for k in ("sender", "receiver")}
    assert view.locator("g.attnlab-circuit-node:not([display])").count() == len(live)
    screenshot(page, "circuit-slider-5")
    # Every count: a size the curve lacks says so, and shows no neighbour's number.
    view.locator("input.attnlab-circuit-snap-box").uncheck()
    slider.fill("9")
    assert _visible(view) == 9
    assert view.locator(".attnlab-circuit-faith").inner_text() == \
        "faithfulness at 9 edges: not computed (the curve has 5, 10, 20, 40 edges)"
    assert view.locator(".attnlab-circuit-faith").get_attribute("data-value") == ""
    slider.fill(str(N_EDGES))

    # Click the strongest edge's sender: its info panel lists its edges and the event reaches the document.
    page.evaluate("""() => { window.__nodeClicks = [];
        document.addEventListener('attnlab-node-click', e => window.__nodeClicks.push(e.detail)); }""")
    node = next(n for n in payload["nodes"] if n["kind"] == "head")
    view.locator(f'g.attnlab-circuit-node[data-node="{node["name"]}"]').click()
    info = view.locator(".attnlab-circuit-info")
    assert info.locator(".attnlab-circuit-info-title").inner_text() == node["name"]
    assert page.evaluate("() => window.__nodeClicks") == [
        {"node": node["name"], "layer": node["layer"], "head": node["head"]}]
    n_in = sum(e["receiver"] == node["name"] for e in edges)
    n_out = sum(e["sender"] == node["name"] for e in edges)
    assert info.locator(".attnlab-circuit-in li").count() == n_in
    assert info.locator(".attnlab-circuit-out li").count() == n_out
    assert view.locator("path.attnlab-circuit-edge-highlight").count() == n_in + n_out
    # Keyboard: focus another node and press Enter.
    other = next(n for n in payload["nodes"] if n["kind"] == "mlp")
    view.locator(f'g.attnlab-circuit-node[data-node="{other["name"]}"]').focus()
    page.keyboard.press("Enter")
    assert info.locator(".attnlab-circuit-info-title").inner_text() == other["name"]
    assert page.evaluate("() => window.__nodeClicks")[-1] == {"node": other["name"], "layer": other["layer"],
                                                              "head": None}
    screenshot(page, "circuit-selected")

    assert console_errors == [], "\n".join(console_errors)
    assert CIRCUIT_MIME.endswith("v1+json")


@pytest.mark.browser
def test_circuit_standalone_report_offline(browser: Browser, tmp_path: Path) -> None:
    scope = _built(big=True)
    path = save_circuit_html(scope["circuit"], tmp_path / "circuit.html", curve=scope["curve"])
    context = browser.new_context(viewport=VIEWPORT)
    context.set_offline(True)
    attempted: list[str] = []

    def on_request(request: Request) -> None:
        if not request.url.startswith("file://"):
            attempted.append(f"{request.method} {request.url}")

    def abort_network(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            attempted.append(f"routed {route.request.url}")
            route.abort()

    context.on("request", on_request)
    context.route("**/*", abort_network)
    page = context.new_page()
    console_errors = collect_console_errors(page)
    try:
        page.goto(path.as_uri(), wait_until="load", timeout=TIMEOUT_MS)
        report = page.locator("#attnlab-report")
        report.locator("path.attnlab-circuit-edge").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        assert report.locator("path.attnlab-circuit-edge").count() == N_EDGES
        title = report.locator(".attnlab-circuit-header .attnlab-title")
        assert title.inner_text() == "Circuit: <b>x</b> on <i>ioi</i>"
        assert page.locator("style#attnlab-render-css").count() == 1
        report.locator("input.attnlab-circuit-slider").fill("2")  # the third of the curve's sizes
        assert _visible(report) == 20
        assert report.locator(".attnlab-circuit-faith").inner_text() == \
            "faithfulness 0.845 at 20 edges (95% CI 0.800 to 0.900)"
        screenshot(page, "circuit-report-offline")

        # A 1,000-edge circuit: every edge drawn, the counts and the faithfulness line agree with the heading.
        big = save_circuit_html(scope["big"], tmp_path / "big.html", curve=scope["big_curve"])
        page.goto(big.as_uri(), wait_until="load", timeout=TIMEOUT_MS)
        report = page.locator("#attnlab-report")
        report.locator("path.attnlab-circuit-edge").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        assert report.locator("path.attnlab-circuit-edge").count() == 1000 == _visible(report)
        subtitle = report.locator(".attnlab-circuit-header .attnlab-subtitle").inner_text()
        assert "1,000 edges · all 1,000 drawn" in subtitle
        assert report.locator(".attnlab-circuit-counts").inner_text().startswith("1,000 of 1,000 edges")
        assert report.locator(".attnlab-circuit-faith").inner_text() == \
            "faithfulness 0.910 at 1,000 edges (95% CI 0.880 to 0.940)"
        screenshot(page, "circuit-report-1000-edges")
        assert attempted == [], f"the offline report tried the network: {attempted}"
        assert console_errors == [], "\n".join(console_errors)
    finally:
        context.close()
