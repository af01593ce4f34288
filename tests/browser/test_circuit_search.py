"""Browser test of ``attnlab.CircuitSearch`` in JupyterLab: a circuit search run from the widget, the size slider, a
head node clicked, the comparison with another task, and SVG/PNG export of the circuit view.

Every number the page shows is checked against the kernel's: the faithfulness read for the size the slider is on
equals ``search.faithfulness_at(size)`` (the engines' number for exactly that size, see tests/test_circuit_search.py),
the head panel's attention and ablation bars equal ``search.detail``, the overlap equals
``search.comparison.summary()``. A tiny random model with token-id tasks keeps the test fast: the claims do not need
the embedded model. Screenshots go to test-artifacts/.
"""

import json
import time

import pytest
from playwright.sync_api import Page

from .jupyter import ARTIFACTS_DIR, LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, \
    run_cell_code, screenshot, write_notebook

TIMEOUT_MS = 120_000

SETUP = """\
import dataclasses, torch
import attnlab
from attnlab.explorer import ExplorerTask, register_task
from attnlab.tasks.base import PatchingDataset

model = attnlab.tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1)

def toy_task(name, offset):
    def build(model, n, *, seed=0, corruption="swap"):
        g = torch.Generator().manual_seed(seed + offset)
        clean = torch.randint(0, model.info.d_vocab, (n, 6), generator=g)
        corrupted = clean.clone()
        corrupted[:, 2:4] = (clean[:, 2:4] + 1) % model.info.d_vocab
        answers = torch.randint(0, model.info.d_vocab, (n, 2), generator=g)
        answers[:, 1] = (answers[:, 0] + 1) % model.info.d_vocab
        prompts = [f"{name} prompt {i}" for i in range(n)]
        return PatchingDataset(task=name, clean_tokens=clean, corrupted_tokens=corrupted, answers=answers,
                               positions={"S": torch.full((n,), 2), "END": torch.full((n,), 5)},
                               position_labels=["p0", "p1", "S", "p3", "p4", "END"], clean_prompts=prompts,
                               corrupted_prompts=prompts)
    return register_task(ExplorerTask(name=name, title=f"toy task {name}", build=build, corruptions=("swap",),
                                      answer_names=("A", "B")))

toy, toy_b = toy_task("toy", 0), toy_task("toy_b", 100)
search = attnlab.CircuitSearch(model, "toy", n_prompts=6, batch_size=3, n_sizes=8)
search
"""

WIDGET = ".jp-OutputArea-output .attnlab-circuitsearch"


def _kernel_json(page: Page, expr: str):
    out = run_cell_code(page, f"import json\nprint(json.dumps({expr}))", timeout=TIMEOUT_MS)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.browser
def test_circuit_search_run_slide_click_compare_export(lab: LabServer, browser_page: Page) -> None:
    t0 = time.perf_counter()
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "circuit_search.ipynb", [SETUP])
    open_notebook(page, lab, "circuit_search.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    panel = notebook_panel(page)
    w = panel.locator(WIDGET).first
    w.wait_for(timeout=30_000)
    assert w.locator("select[name=task]").input_value() == "toy"
    assert w.locator("select[name=method]").input_value() == "eap"

    # Run from the widget: EAP-IG with 2 steps, chosen in the form.
    w.locator("select[name=method]").select_option("eap-ig")
    w.locator("label:has(input[name=steps])").wait_for(state="visible", timeout=TIMEOUT_MS)
    w.locator("input[name=steps]").fill("2")
    w.locator("button.attnlab-run").click()
    page.wait_for_selector(f'{WIDGET}[data-status="done"]', timeout=TIMEOUT_MS)
    view = w.locator(".attnlab-circuitsearch-circuit .attnlab-circuit")
    view.locator("path.attnlab-circuit-edge").first.wait_for(state="attached", timeout=TIMEOUT_MS)
    kernel = _kernel_json(page, "{'method': search.controller.run_shown.scores.method, "
                                "'steps': search.controller.run_shown.scores.steps, 'sizes': search.curve['sizes'], "
                                "'size': search.size, 'n_payload': len(search.circuit['edges'])}")
    assert (kernel["method"], kernel["steps"]) == ("eap-ig", 2)
    assert view.locator("path.attnlab-circuit-edge").count() == kernel["n_payload"] == kernel["sizes"][-1]
    assert w.locator(".attnlab-status-text").inner_text().startswith("done")
    w.locator(".attnlab-explorer-title").scroll_into_view_if_needed()
    page.mouse.wheel(0, -40)
    screenshot(page, "circuit-search-after-run")

    # The slider steps through the sizes the kernel evaluated; the faithfulness shown is the kernel's for that size.
    slider = view.locator("input.attnlab-circuit-slider")
    assert slider.get_attribute("max") == str(len(kernel["sizes"]) - 1)
    i = len(kernel["sizes"]) // 2
    slider.fill(str(i))
    n = kernel["sizes"][i]
    faith = view.locator(".attnlab-circuit-faith")
    assert faith.get_attribute("data-size") == str(n)
    shown_value = float(faith.get_attribute("data-value"))
    page.wait_for_selector(f'{WIDGET}[data-size="{n}"]', timeout=TIMEOUT_MS)  # the kernel heard the move
    k = _kernel_json(page, f"{{'size': search.size, 'f': search.faithfulness_at({n})}}")
    assert k["size"] == n
    assert shown_value == k["f"]  # the same double, not a neighbour's or a rounded one
    assert faith.inner_text().startswith(f"faithfulness {k['f']:.3f} at {n} edges")
    assert view.locator("path.attnlab-circuit-edge:not([display])").count() == n
    point = view.locator("circle.attnlab-curve-point-current")
    assert point.get_attribute("data-size") == str(n) and float(point.get_attribute("data-faithfulness")) == k["f"]
    view.scroll_into_view_if_needed()
    screenshot(page, "circuit-search-slider")

    # Click a head node: the head panel is the kernel's.
    head = view.locator("g.attnlab-circuit-node[data-kind='head']:not([display])").first
    name = head.get_attribute("data-node")
    head.click()
    detail = w.locator(f'.attnlab-explorer-detail[data-name="{name}"]')
    detail.wait_for(timeout=TIMEOUT_MS)
    d = _kernel_json(page, "{'name': search.detail['name'], 'row': search.detail['pattern'][5], "
                           "'mean': search.detail['ablation']['mean']['change']['mean'], "
                           "'zero': search.detail['ablation']['zero']['change']['mean'], "
                           "'inc': search.detail['circuit']['incoming'], 'out': search.detail['circuit']['outgoing']}")
    assert d["name"] == name
    shown = [float(a) for a in detail.locator(".attnlab-pattern .attnlab-token").evaluate_all(
        "els => els.map(e => e.getAttribute('data-attn'))")]
    assert shown == pytest.approx(d["row"], abs=1e-6)
    bars = detail.locator(".attnlab-ablation .attnlab-bar-value").all_text_contents()
    assert bars == [f"{d['mean']:.2f}", f"{d['zero']:.2f}"]
    assert f"{d['inc']} incoming edges" in detail.locator(".attnlab-head-circuit").inner_text()
    detail.scroll_into_view_if_needed()
    screenshot(page, "circuit-search-head-clicked")

    # Export the circuit view as SVG and PNG: files with the title, the legend and the colour bar's labels.
    title = view.locator(".attnlab-circuit-header .attnlab-title").inner_text()
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        view.locator(".attnlab-circuit-header button.attnlab-export-svg").click()
    svg_path = ARTIFACTS_DIR / "circuit-search-export.svg"
    dl.value.save_as(svg_path)
    svg = svg_path.read_text(encoding="utf-8")
    assert dl.value.suggested_filename.endswith(".svg") and svg.startswith("<?xml")
    assert title.replace("&", "&amp;") in svg
    label = view.locator(".attnlab-circuit-colorbar-label").text_content()
    ticks = view.locator(".attnlab-circuit-colorbar-tick").all_text_contents()
    assert label and label in svg and len(ticks) == 3 and all(f">{t}<" in svg for t in ticks)
    assert "query input (lands left)" in svg and "Faithfulness of the top-n-edge circuits" in svg
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        view.locator(".attnlab-circuit-header button.attnlab-export-png").click()
    png_path = ARTIFACTS_DIR / "circuit-search-export.png"
    dl.value.save_as(png_path)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 5_000
    with page.expect_download(timeout=TIMEOUT_MS) as dl:
        view.locator(".attnlab-circuit-curve-box button.attnlab-export-svg").click()
    curve_svg = ARTIFACTS_DIR / "circuit-search-curve.svg"
    dl.value.save_as(curve_svg)
    assert "faithfulness" in curve_svg.read_text(encoding="utf-8")

    # Compare with the other task: the overlap shown is the kernel's.
    w.locator("select[name=compare_task]").select_option("toy_b")
    w.locator("button.attnlab-compare-btn").click()
    out = w.locator(".attnlab-compare-out[data-shared]")
    out.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_selector(f'{WIDGET}[data-status="done"]', timeout=TIMEOUT_MS)
    s = _kernel_json(page, "search.comparison.summary()")
    text = out.inner_text()
    assert out.get_attribute("data-shared") == str(s["n_shared"])
    assert f"{s['n_shared']} shared" in text and f"Jaccard {s['jaccard']:.3f}" in text
    assert f"shared ({len(s['shared'])}): {' '.join(s['shared']) or '–'}" in text
    assert w.locator(".attnlab-history-select option").count() == 2
    out.scroll_into_view_if_needed()
    screenshot(page, "circuit-search-compare")

    assert not [e for e in console_errors if "attnlab" in e or "anywidget" in e], console_errors
    print(f"circuit search browser test: {time.perf_counter() - t0:.1f} s")
