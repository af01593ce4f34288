"""Browser test of ``attnlab.HeadGalleryWidget`` in JupyterLab on a tiny Hugging Face Llama model.

Run from the widget's button: the progress bar and the time estimate show while the blocks are scored, then the
gallery (grid, colour bar, export buttons). Click a head: the detail panel shows the kernel's scores, pattern and
ablation effects for it, and ``gallery.selected`` follows. A run cancelled after two blocks keeps their heads and shows
the others as "not computed". Screenshots go to test-artifacts/.
"""

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page

from .jupyter import ARTIFACTS_DIR, LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook


def to_fixed(value: float, digits: int = 3) -> str:
    """JavaScript's ``value.toFixed(digits)``: the exact binary value rounded half away from zero, the sign kept
    (``-0.0001`` gives ``"-0.000"``)."""
    from decimal import ROUND_HALF_UP, Decimal

    return format(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP), "f")

TIMEOUT_MS = 120_000
N_LAYERS, N_HEADS = 4, 4

SETUP = f"""\
import json
import attnlab
model = attnlab.tiny_hf_model("llama", n_layers={N_LAYERS}, n_heads={N_HEADS}, d_model=64, n_ctx=64, seed=0,
                              name="tiny-llama")
gallery = attnlab.HeadGalleryWidget(model, seq_len=8, n_sequences=96, seed=0)
gallery
"""

WIDGET = ".jp-OutputArea-output .attnlab-gallery-widget"

# Records every status line the widget shows (each kernel message is its own task, so none is missed).
WATCH_STATUS = """
(root) => {
  window.__statusLines = [];
  const text = root.querySelector('.attnlab-status');
  const record = () => window.__statusLines.push(text.textContent);
  new MutationObserver(record).observe(text, {subtree: true, childList: true, characterData: true});
}
"""

KERNEL_DETAIL = """\
d = gallery.detail
r = gallery.result
print(json.dumps({"selected": list(gallery.selected),
                  "scores": {k: float(r.score(k)[d["layer"], d["head"]]) for k in r.kinds},
                  "ablation": d["ablation"], "pattern": d["pattern"], "tokens": d["tokens"]}))
"""


@pytest.mark.browser
def test_gallery_widget_run_click_and_cancel(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "gallery_widget.ipynb", [SETUP])
    open_notebook(page, lab, "gallery_widget.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    w = panel.locator(WIDGET).first
    w.wait_for(timeout=30_000)
    assert w.locator(".attnlab-explorer-title").inner_text().endswith("tiny-llama")
    assert w.locator("input[name=seq_len]").input_value() == "8"
    assert w.locator("input[name=n_sequences]").input_value() == "96"
    assert "press Run" in w.locator(".attnlab-gallery-widget-view").inner_text()

    # Run from the browser: progress with a time estimate while it runs, then the gallery.
    w.evaluate(WATCH_STATUS)
    w.locator("button.attnlab-run").click()
    page.wait_for_selector(f'{WIDGET}[data-status="done"]', timeout=TIMEOUT_MS)
    total = N_LAYERS * 3  # 96 sequences: 3 passes of 32 per block
    lines = page.evaluate("() => window.__statusLines")
    running = [s for s in lines if s.startswith("running · pass")]
    assert running, lines
    assert any(f"/{total}" in s and "left" in s for s in running), running  # progress and the time estimate
    assert w.locator("progress.attnlab-progress").get_attribute("data-done") == str(total)
    assert "took" in w.locator(".attnlab-eta").inner_text()
    gallery = w.locator(".attnlab-gallery")
    cells = gallery.locator("rect.attnlab-gallery-cell")
    assert cells.count() == N_LAYERS * N_HEADS
    assert gallery.locator('rect.attnlab-gallery-cell[data-value="null"]').count() == 0
    # the colour bar: its range and unit labelled; export buttons
    bar = gallery.locator("svg.attnlab-gallery-colorbar")
    assert bar.locator("text.attnlab-gallery-colorbar-tick").all_text_contents() == ["0", "0.5", "1"]
    assert "attention probability" in bar.locator("text.attnlab-gallery-colorbar-label").text_content()
    assert gallery.locator("button.attnlab-export-svg").count() == 1
    assert gallery.locator("button.attnlab-export-png").count() == 1
    w.scroll_into_view_if_needed()
    screenshot(page, "gallery-widget-after-run")
    # the exported figure holds the title, the grid and the colour bar with its labels
    with page.expect_download() as download:
        gallery.locator("button.attnlab-export-svg").click()
    svg = Path(download.value.path()).read_text()
    assert download.value.suggested_filename == "Attention-heads-of-tiny-llama.svg"
    assert "Attention heads of tiny-llama" in svg and "induction score (attention probability)" in svg
    assert ">0.5</text>" in svg and svg.count("attnlab-gallery-cell") == N_LAYERS * N_HEADS
    with page.expect_download() as download:
        gallery.locator("button.attnlab-export-png").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    download.value.save_as(ARTIFACTS_DIR / "gallery-widget-export.png")  # to look at

    # Click a head: the kernel answers with its detail; the panel shows the kernel's numbers.
    layer, head = 2, 1
    gallery.locator(f'rect.attnlab-gallery-cell[data-layer="{layer}"][data-head="{head}"]').click()
    detail = gallery.locator(f'.attnlab-gallery-detail[data-layer="{layer}"][data-head="{head}"]:not([data-pending])')
    detail.wait_for(timeout=TIMEOUT_MS)
    assert detail.locator(".attnlab-gallery-detail-title").inner_text() == f"L{layer}H{head}"
    kernel = json.loads(run_cell_code(page, KERNEL_DETAIL, timeout=TIMEOUT_MS).strip().splitlines()[-1])
    assert kernel["selected"] == [layer, head]
    for kind, value in kernel["scores"].items():
        shown = detail.locator(f'.attnlab-gallery-score[data-kind="{kind}"]')
        assert float(shown.get_attribute("data-value")) == pytest.approx(value, abs=1e-4)  # 4-digit payload
        assert f"score {to_fixed(round(value, 4))}" in shown.inner_text()
    ablation = detail.locator(".attnlab-gallery-ablation").inner_text()
    for method, value in kernel["ablation"].items():
        assert f"{method} {to_fixed(value)}" in ablation, ablation
    n_pos = len(kernel["tokens"])
    rects = detail.locator("svg.attnlab-gallery-pattern rect")
    assert rects.count() == n_pos * (n_pos + 1) // 2 + 1  # lower triangle + border
    titles = detail.locator("svg.attnlab-gallery-pattern rect title").all_text_contents()
    shown_pattern = [float(t.rsplit(": ", 1)[1]) for t in titles]
    expected = [kernel["pattern"][i][j] for i in range(n_pos) for j in range(i + 1)]
    assert shown_pattern == pytest.approx(expected, abs=6e-4)  # shown to 3 decimals
    detail.scroll_into_view_if_needed()
    screenshot(page, "gallery-widget-clicked")

    # Select from Python: the grid's outline and the panel follow.
    run_cell_code(page, "gallery.selected = 'L3H0'", timeout=TIMEOUT_MS)
    gallery.locator('.attnlab-gallery-detail[data-layer="3"][data-head="0"]').wait_for(timeout=TIMEOUT_MS)
    pressed = gallery.locator('rect.attnlab-gallery-cell[aria-pressed="true"]')
    assert (pressed.get_attribute("data-layer"), pressed.get_attribute("data-head")) == ("3", "0")

    # A run cancelled after two blocks: their heads are kept, the others are "not computed".
    run_cell_code(page, "gallery.controller.on_change(lambda what: gallery.cancel() if what == 'result' and "
                        "gallery.controller.running and len(gallery.controller.current.layers_done) == 2 else None)\n"
                        "gallery.set_control('seed', 1)\n"
                        "run = gallery.run()\nprint(run.complete, run.layers_done)", timeout=TIMEOUT_MS)
    page.wait_for_selector(f'{WIDGET}[data-status="cancelled"]', timeout=TIMEOUT_MS)
    gallery = w.locator(".attnlab-gallery")
    missing = gallery.locator('rect.attnlab-gallery-cell[data-value="null"]')
    assert missing.count() == (N_LAYERS - 2) * N_HEADS
    assert all(int(x) >= 2 for x in missing.evaluate_all("els => els.map(e => e.dataset.layer)"))
    assert "not computed" in missing.first.locator("title").text_content()
    assert "cancelled" in w.locator(".attnlab-status-text").inner_text()
    assert "cancelled: 2 of 4 blocks scored" in gallery.locator(".attnlab-subtitle").inner_text()
    gallery.locator('rect.attnlab-gallery-cell[data-layer="3"][data-head="2"]').click()
    d = gallery.locator('.attnlab-gallery-detail[data-layer="3"][data-head="2"]:not([data-pending])')
    d.wait_for(timeout=TIMEOUT_MS)
    assert "not computed" in d.locator('.attnlab-gallery-score[data-kind="induction"]').inner_text()
    w.scroll_into_view_if_needed()
    screenshot(page, "gallery-widget-cancelled")
    assert not console_errors, console_errors
