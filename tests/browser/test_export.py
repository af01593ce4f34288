"""Figure export from a heatmap (labext/src/export.ts through heatmap.ts's header buttons), in headless Chromium.

A real sweep of a tiny model is rendered by the standalone renderer (the one HTML reports inline; the lab's MIME
renderer draws with the same renderHeatmap). Clicking SVG and PNG downloads files (Playwright download events): the
SVG parses as XML and holds the title and the colour bar's tick labels as shown on the page; the PNG has the PNG
signature and twice the SVG's size. The colour-scale menu is driven too: clipping at a percentile marks exactly the
cells beyond the nearest-rank percentile computed here, and the colour bar says so. Screenshots go to test-artifacts/.
"""

import math
import struct
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from playwright.sync_api import Browser

from attnlab.render.views import standalone_html

from .jupyter import ARTIFACTS_DIR, collect_console_errors, screenshot

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def result():
    from attnlab.models import tiny_model
    from attnlab.patching import run_sweep
    from tests.conftest import random_pair_dataset

    model = tiny_model(n_layers=3, n_heads=4, seed=1)
    ds = random_pair_dataset(model, batch=4, n_pos=8, changed=(3,), seed=2)
    return run_sweep(model, ds, "resid_pre", progress=False)


def _texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@pytest.mark.browser
def test_svg_and_png_exported_from_a_heatmap(browser: Browser, result) -> None:
    payload = dict(result.heatmap_payload(percentile=80.0))
    context = browser.new_context(viewport={"width": 1100, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors = collect_console_errors(page)
    try:
        page.set_content(standalone_html(payload))
        heat = page.locator(".attnlab-heatmap")
        heat.locator("rect.attnlab-cell").first.wait_for()
        shown_ticks = heat.locator(".attnlab-legend text.attnlab-legend-value").all_text_contents()
        assert shown_ticks[-1] == "+" + f"{payload['zmax']:.3g}"  # the symmetric scale: ± the largest |value|
        screenshot(page, "export-heatmap-page")

        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        with page.expect_download() as svg_dl:
            heat.locator("button.attnlab-export-svg").click()
        assert svg_dl.value.suggested_filename.endswith(".svg")
        svg_path = ARTIFACTS_DIR / "export-heatmap.svg"
        svg_dl.value.save_as(svg_path)
        assert svg_path.stat().st_size > 1000
        root = ET.parse(svg_path).getroot()
        texts = _texts(root)
        assert payload["title"] in " ".join(texts), texts[:5]  # (a long title may wrap over lines)
        for tick in shown_ticks:
            assert tick in texts, (tick, texts)
        assert payload["value_label"] in texts
        assert len(root.findall(f".//{SVG}rect[@class='attnlab-cell']")) == len(result.values.reshape(-1))
        # gradient and hatching are referenced inside the file, never through the page's address
        assert "http://" not in svg_path.read_text().replace("http://www.w3.org", "")

        with page.expect_download() as png_dl:
            heat.locator("button.attnlab-export-png").click()
        png_path = ARTIFACTS_DIR / "export-heatmap.png"
        png_dl.value.save_as(png_path)
        data = png_path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (2 * int(root.get("width")), 2 * int(root.get("height")))
        assert width > 400 and height > 300 and len(data) > 5000

        # the exported SVG drawn by the browser: looked at in test-artifacts/export-heatmap-svg-rendered.png
        page.set_content(f"<body style='margin:0;background:#eee'>{svg_path.read_text().split('?>', 1)[1]}</body>")
        screenshot(page, "export-heatmap-svg-rendered")
    finally:
        context.close()
    assert not errors, errors


@pytest.mark.browser
def test_scale_menu_clips_at_the_percentile_and_fixed_range(browser: Browser, result) -> None:
    payload = dict(result.heatmap_payload(percentile=80.0))
    values = np.array([[np.nan if v is None else v for v in row] for row in payload["values"]], dtype=float)
    finite = np.abs(values[~np.isnan(values)])
    limit = float(np.percentile(finite, 80, method="inverted_cdf"))
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        page.set_content(standalone_html(payload))
        heat = page.locator(".attnlab-heatmap")
        assert heat.get_attribute("data-scale") == "symmetric"
        assert heat.locator("rect.attnlab-cell-clipped").count() == 0
        heat.locator("select.attnlab-scale-mode").select_option("percentile")
        assert heat.get_attribute("data-scale") == "percentile"
        assert float(heat.get_attribute("data-zmax")) == pytest.approx(limit, rel=1e-9)
        clipped = heat.locator("rect.attnlab-cell-clipped")
        assert clipped.count() == int((finite > limit * (1 + 1e-9)).sum()) > 0
        assert heat.locator("circle.attnlab-clip-mark").count() == clipped.count() + 1  # + the legend's swatch
        caption = heat.locator(".attnlab-legend-caption").text_content()
        assert "clipped at p80" in caption and f"{clipped.count()} cell" in caption
        ticks = heat.locator(".attnlab-legend text.attnlab-legend-value").all_text_contents()
        assert ticks[0].startswith("≤") and any(t.startswith("≥") for t in ticks)
        screenshot(page, "export-heatmap-clipped-p80")
        # a fixed range typed in: every |value| beyond it is marked
        heat.locator("select.attnlab-scale-mode").select_option("fixed")
        heat.locator("input.attnlab-scale-fixed").fill("0.05")
        heat.locator("input.attnlab-scale-fixed").dispatch_event("change")
        assert float(heat.get_attribute("data-zmax")) == 0.05
        assert heat.locator("rect.attnlab-cell-clipped").count() == int((finite > 0.05 * (1 + 1e-9)).sum())
        assert "fixed ±0.05" in heat.locator(".attnlab-legend-caption").text_content()
        fills = heat.locator("rect.attnlab-cell").evaluate_all("els => els.map(e => e.getAttribute('fill'))")
        assert len(set(fills)) > 1 and not any(math.isnan(x) for x in finite)
    finally:
        page.close()


@pytest.mark.browser
def test_a_cancelled_run_is_drawn_on_the_fixed_normalised_scale(browser: Browser) -> None:
    from attnlab.models import tiny_model
    from attnlab.patching import run_sweep
    from tests.conftest import random_pair_dataset

    model = tiny_model(n_layers=3, n_heads=4, seed=1)
    passes = iter(range(100))
    partial = run_sweep(model, random_pair_dataset(model, batch=4, n_pos=8, changed=(3,), seed=2), "heads",
                        progress=False, should_stop=lambda: next(passes) >= 1)
    assert not partial.complete
    finished = partial.values[~partial.values.isnan()]
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        page.set_content(standalone_html(partial.heatmap_payload()))
        heat = page.locator(".attnlab-heatmap")
        heat.locator("rect.attnlab-cell").first.wait_for()
        # not the range of the few finished cells: the fixed ±1 of normalised scores
        assert heat.get_attribute("data-scale") == "fixed" and float(heat.get_attribute("data-zmax")) == 1.0
        assert float(finished.abs().max()) != 1.0
        assert "scale: fixed ±1" in heat.locator(".attnlab-legend-caption").text_content()
        assert heat.locator("rect.attnlab-cell-missing").count() == int(partial.values.isnan().sum()) > 0
        screenshot(page, "export-heatmap-cancelled-run")
        # the symmetric scale is one click away, and then spans the finished cells
        heat.locator("select.attnlab-scale-mode").select_option("symmetric")
        assert float(heat.get_attribute("data-zmax")) == pytest.approx(float(finished.abs().max()), rel=1e-6)
    finally:
        page.close()
