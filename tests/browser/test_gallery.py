"""Browser test of the head gallery in JupyterLab: the grid renders from the vendor MIME type, the kind buttons switch
the scores, and clicking a head shows its attention pattern, ablation effect and prefix-length curve."""

import pytest
from playwright.sync_api import Page

from attnlab.render.contract import HEADGALLERY_MIME

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, screenshot, \
    write_notebook

TIMEOUT_MS = 60_000
GALLERY_OUTPUT = ".jp-OutputArea-output.jp-RenderedAttnlabHeadGallery"

# Run in the kernel and here (deterministic: seeded model and data), so the test knows the payload.
BUILD = """\
import attnlab
from attnlab.heads import induction_analysis

model = attnlab.tiny_model(n_layers=2, n_heads=4, d_model=64, d_vocab=50, n_ctx=32, attn_only=True, seed=3,
                           name='<b>tiny</b>')
result = induction_analysis(model, seq_len=5, batch=3, ablate=2, prefix_lengths=(1, 2, 4), token_range=(1, 50))
"""


@pytest.mark.browser
def test_gallery_renders_and_answers_a_click(lab: LabServer, browser_page: Page) -> None:
    scope: dict = {}
    exec(BUILD, scope)  # noqa: S102  (our own constant code: the expected payload)
    payload = scope["result"].gallery_payload()
    assert payload["kinds"] == ["previous_token", "duplicate_token", "induction"]

    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "gallery.ipynb", [BUILD + "result"])
    open_notebook(page, lab, "gallery.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    gallery = panel.locator(f"{GALLERY_OUTPUT} > .attnlab-gallery")
    gallery.locator("rect.attnlab-gallery-cell").first.wait_for(timeout=TIMEOUT_MS)
    assert panel.locator(".attnlab-static").count() == 0, "the vendor renderer must win over the HTML fallback"
    assert gallery.locator("rect.attnlab-gallery-cell").count() == 2 * 4
    assert gallery.locator(".attnlab-title").inner_text() == "Attention heads of <b>tiny</b>"  # text, not markup
    assert gallery.locator("b").count() == 0

    # Induction scores are shown first; the initially selected head is the top induction head.
    ind = payload["kinds"].index("induction")
    cell = gallery.locator('rect.attnlab-gallery-cell[data-layer="1"][data-head="2"]')
    assert float(cell.get_attribute("data-value")) == payload["scores"][ind][1][2]
    top_l, top_h = payload["selected"]
    detail = gallery.locator(".attnlab-gallery-detail")
    assert detail.locator(".attnlab-gallery-detail-title").inner_text() == f"L{top_l}H{top_h}"
    gallery.scroll_into_view_if_needed()
    screenshot(page, "gallery-initial")

    # Switch to previous-token scores.
    prev = payload["kinds"].index("previous_token")
    gallery.locator('button.attnlab-gallery-kind[data-kind="previous_token"]').click()
    assert gallery.locator('button[data-kind="previous_token"]').get_attribute("aria-pressed") == "true"
    assert float(cell.get_attribute("data-value")) == payload["scores"][prev][1][2]

    # Click a head: the panel shows its pattern, ablation effect and prefix curve; an event reaches the host.
    page.evaluate("""() => { window.__headClicks = [];
        document.addEventListener('attnlab-head-click', e => window.__headClicks.push(e.detail)); }""")
    target = next((layer, head) for layer in range(2) for head in range(4)
                  if payload["heads"][layer * 4 + head]["ablation"] and (layer, head) != (top_l, top_h))
    layer, head = target
    gallery.locator(f'rect.attnlab-gallery-cell[data-layer="{layer}"][data-head="{head}"]').click()
    assert detail.locator(".attnlab-gallery-detail-title").inner_text() == f"L{layer}H{head}"
    assert page.evaluate("() => window.__headClicks") == [{"layer": layer, "head": head}]
    info = payload["heads"][layer * 4 + head]
    n_pos = len(payload["tokens"])
    assert detail.locator("svg.attnlab-gallery-pattern rect").count() == n_pos * (n_pos + 1) // 2 + 1  # + border
    assert detail.locator(".attnlab-gallery-token").first.text_content() == payload["tokens"][0]  # "<0>": text
    assert detail.locator("circle.attnlab-gallery-prefix-point").count() == 3
    ablation_text = detail.locator(".attnlab-gallery-ablation").inner_text()
    assert f"zero {info['ablation']['zero']:.3f}" in ablation_text and "mean" in ablation_text
    screenshot(page, "gallery-clicked")

    assert console_errors == [], "\n".join(console_errors)
    assert HEADGALLERY_MIME.endswith("v1+json")
