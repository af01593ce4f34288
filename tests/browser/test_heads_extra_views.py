"""Browser test of issue 14's views in JupyterLab: retrieval and sink scores as further tabs of the head gallery, and
the composition view (sender x receiver matrix on a canvas, Q/K/V switch, colour bar with the random baseline, a
click that shows the pair's singular values beside its path-patching effect).

The results are built on tiny models by the real analyses (``tests/render_heads_extra/build.py``), in the kernel and
here; the page's numbers must equal the kernel's: the gallery cells equal the result's scores, and the bars of a
clicked composition cell equal :func:`~attnlab.heads.composition.composition_svd`'s singular values.
"""

import pytest
from playwright.sync_api import Page

from attnlab.render.contract import COMPOSITION_MIME, HEADGALLERY_MIME
from tests.render_heads_extra.build import COMPOSITION_BUILD, GALLERY_BUILD

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, screenshot, \
    write_notebook

TIMEOUT_MS = 120_000
GALLERY_OUTPUT = ".jp-OutputArea-output.jp-RenderedAttnlabHeadGallery"
COMPOSITION_OUTPUT = ".jp-OutputArea-output.jp-RenderedAttnlabComposition"

# A model of the embedded model's shape (30 layers x 9 heads, 3 key/value heads), small widths: 261 x 261 cells.
BIG_BUILD = """\
big = attnlab.tiny_model(n_layers=30, n_heads=9, n_kv_heads=3, d_model=72, d_head=8, attn_only=True, seed=2,
                         name='wide-30x9')
big_scores = composition_scores(big, baseline_draws=4)
big_scores.view(big, top_n=2)
"""


def _cell_values(gallery, n_layers: int, n_heads: int) -> list[list[float | None]]:
    out = []
    for layer in range(n_layers):
        row = []
        for head in range(n_heads):
            v = gallery.locator(f'rect.attnlab-gallery-cell[data-layer="{layer}"][data-head="{head}"]') \
                .get_attribute("data-value")
            row.append(None if v == "null" else float(v))
        out.append(row)
    return out


@pytest.mark.browser
def test_gallery_tabs_and_composition_view(lab: LabServer, browser_page: Page) -> None:
    import torch

    scope: dict = {}
    exec(GALLERY_BUILD, scope)  # noqa: S102  (our own constant code: the expected payloads)
    exec(COMPOSITION_BUILD, scope)  # noqa: S102
    gallery_payload = scope["gallery"].payload
    view_payload = scope["view"].payload
    kinds = gallery_payload["kinds"]
    assert kinds == ["previous_token", "duplicate_token", "induction", "retrieval", "sink", "first_token",
                     "hidden_sink"]

    page = browser_page
    console_errors = collect_console_errors(page)
    write_notebook(lab.root / "heads_extra.ipynb",
                   [GALLERY_BUILD + "gallery", "retrieval", COMPOSITION_BUILD + "view", BIG_BUILD])
    open_notebook(page, lab, "heads_extra.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    panel = notebook_panel(page)

    # -- the gallery with retrieval and sink tabs ---------------------------------------------------------------
    gallery = panel.locator(f"{GALLERY_OUTPUT} > .attnlab-gallery").first
    gallery.locator("rect.attnlab-gallery-cell").first.wait_for(timeout=TIMEOUT_MS)
    assert gallery.locator("button.attnlab-gallery-kind").count() == len(kinds)
    assert gallery.locator(".attnlab-title").inner_text() == "Attention heads of <b>tiny</b>"  # text, not markup
    assert gallery.locator("b").count() == 0
    notes = gallery.locator(".attnlab-gallery-note").all_inner_texts()
    assert len(notes) == 2 and "'<5>' at 0" in notes[1], notes  # a token string, shown as text

    retrieval = scope["retrieval"]
    gallery.locator('button.attnlab-gallery-kind[data-kind="retrieval"]').click()
    assert gallery.locator('button[data-kind="retrieval"]').get_attribute("aria-pressed") == "true"
    shown = _cell_values(gallery, 2, 4)
    assert shown == gallery_payload["scores"][kinds.index("retrieval")]
    torch.testing.assert_close(torch.tensor(shown), retrieval.scores, atol=1e-4, rtol=0)  # the kernel's numbers
    assert max(max(r) for r in shown) > 0, "the tiny model copies some needle tokens: not an all-zero tab"
    description = gallery.locator(".attnlab-gallery-kind-description").inner_text()
    assert "Wu et al. 2024" in description and "fraction of needle tokens" in description
    gallery.scroll_into_view_if_needed()
    screenshot(page, "heads-extra-gallery-retrieval")

    sinks = scope["sinks"]
    gallery.locator('button.attnlab-gallery-kind[data-kind="sink"]').click()
    shown = _cell_values(gallery, 2, 4)
    torch.testing.assert_close(torch.tensor(shown), sinks.score("sink"), atol=1e-4, rtol=0)
    gallery.locator('rect.attnlab-gallery-cell[data-layer="1"][data-head="2"]').click()  # the planted sink head
    detail = gallery.locator(".attnlab-gallery-detail")
    assert detail.locator(".attnlab-gallery-detail-title").inner_text() == "L1H2"
    sink_line = detail.locator('.attnlab-gallery-score[data-kind="sink"]').inner_text()
    assert sink_line.startswith(f"sink score {float(sinks.score('sink')[1, 2]):.3f}"), sink_line
    assert "attention probability per query" in sink_line
    retrieval_line = detail.locator('.attnlab-gallery-score[data-kind="retrieval"]').inner_text()
    assert retrieval_line.startswith(f"retrieval score {float(retrieval.scores[1, 2]):.3f}")
    screenshot(page, "heads-extra-gallery-sink-clicked")

    # RetrievalScores on its own displays as a gallery of its one tab.
    alone = panel.locator(f"{GALLERY_OUTPUT} > .attnlab-gallery").nth(1)
    assert alone.locator("button.attnlab-gallery-kind").all_inner_texts() == ["retrieval"]
    assert alone.locator(".attnlab-gallery-ablation").count() == 0

    # -- the composition view --------------------------------------------------------------------------------------
    comp = panel.locator(f"{COMPOSITION_OUTPUT} > .attnlab-composition").first
    canvas = comp.locator("canvas.attnlab-composition-canvas")
    canvas.wait_for(timeout=TIMEOUT_MS)
    assert comp.locator(".attnlab-title").inner_text() == "Composition between the heads of <i>tiny3</i>"
    assert comp.locator("i").count() == 0
    assert (canvas.get_attribute("data-rows"), canvas.get_attribute("data-cols")) == ("8", "8")
    cell = int(canvas.get_attribute("data-cell"))
    assert comp.locator('button.attnlab-composition-mode[data-mode="k"]').get_attribute("aria-pressed") == "true"
    bar_text = " ".join(comp.locator(".attnlab-composition-colourbar text").all_text_contents())
    mean_k = view_payload["baseline"]["k"]["mean"]
    assert f"random {mean_k:.3f}" in bar_text and "0.1" in bar_text, bar_text
    assert comp.locator(".attnlab-composition-baseline-mark").count() == 1
    assert f"{mean_k:.4f}" in comp.locator(".attnlab-composition-baseline").inner_text()
    assert comp.locator(".attnlab-composition-row-label").all_text_contents() == ["L0", "L1"]
    assert comp.locator(".attnlab-composition-col-label").all_text_contents() == ["L1", "L2"]
    comp.scroll_into_view_if_needed()
    screenshot(page, "heads-extra-composition-initial")

    page.evaluate("""() => { window.__pairClicks = [];
        document.addEventListener('attnlab-pair-click', e => window.__pairClicks.push(e.detail)); }""")

    def click(sender: tuple[int, int], receiver: tuple[int, int]) -> None:
        row = sender[0] * 4 + sender[1]
        col = (receiver[0] - 1) * 4 + receiver[1]
        canvas.click(position={"x": (col + 0.5) * cell, "y": (row + 0.5) * cell})

    # A compared pair: its singular values (composition_svd's) beside its path-patching effect.
    composition, tiny3 = scope["composition"], scope["tiny3"]
    click((0, 1), (2, 0))
    detail = comp.locator(".attnlab-composition-detail")
    assert detail.locator(".attnlab-composition-detail-title").inner_text() == "L0H1 → L2H0 · K-composition"
    score = float(detail.locator(".attnlab-composition-detail-score").get_attribute("data-value"))
    assert score == pytest.approx(float(composition.score("k")[0, 1, 2, 0]), abs=1e-6)
    bars = detail.locator("rect.attnlab-composition-sv-bar")
    shown_sv = [float(bars.nth(i).get_attribute("data-value")) for i in range(bars.count())]
    expected = scope["composition_svd"](tiny3, (0, 1), (2, 0), mode="k").singular_values
    assert len(shown_sv) == expected.numel() == tiny3.info.d_head
    torch.testing.assert_close(torch.tensor(shown_sv, dtype=torch.float64), expected.double(), atol=2e-6, rtol=0)
    path = detail.locator(".attnlab-composition-path-value")
    assert float(path.get_attribute("data-value")) == 0.8 and path.inner_text() == "0.8000"
    box_svd = detail.locator(".attnlab-composition-svd").bounding_box()
    box_path = detail.locator(".attnlab-composition-path").bounding_box()
    assert box_path["x"] >= box_svd["x"] + box_svd["width"] - 1 and abs(box_path["y"] - box_svd["y"]) < 2, \
        "singular values and path patching side by side"
    assert page.evaluate("() => window.__pairClicks")[-1] == {
        "mode": "k", "sender": [0, 1], "receiver": [2, 0], "value": view_payload["matrices"]["k"][1][4]}
    screenshot(page, "heads-extra-composition-clicked")

    # A pair outside the precomputed set and the comparison says so plainly.
    precomputed = {(tuple(c["sender"]), tuple(c["receiver"])) for c in view_payload["channels"] if c["mode"] == "k"}
    pair = next(((0, h), (1, r)) for h in range(4) for r in range(4) if ((0, h), (1, r)) not in precomputed
                and ((0, h), (1, r)) != ((0, 2), (1, 1)))
    click(*pair)
    assert "Not precomputed for this pair" in detail.locator(".attnlab-composition-sv-missing").inner_text()
    assert detail.locator(".attnlab-composition-path-missing").inner_text() == "not computed"
    assert "not among the 4 pairs" in detail.locator(".attnlab-composition-path-why").inner_text()

    # Another mode: its own matrix; the comparison was of K only.
    comp.locator('button.attnlab-composition-mode[data-mode="v"]').click()
    assert comp.locator('button[data-mode="v"]').get_attribute("aria-pressed") == "true"
    click((1, 3), (2, 2))
    assert float(detail.locator(".attnlab-composition-detail-score").get_attribute("data-value")) == \
        pytest.approx(float(composition.score("v")[1, 3, 2, 2]), abs=1e-6)
    assert "comparison is of K-composition" in detail.locator(".attnlab-composition-path-why").inner_text()
    click((1, 0), (1, 2))  # same layer: no composition
    assert "must be in a later layer" in detail.locator(".attnlab-composition-detail-score").inner_text()

    # The embedded model's shape: 261 x 261 cells, layers labelled without collisions.
    big = panel.locator(f"{COMPOSITION_OUTPUT} > .attnlab-composition").nth(1)
    big_canvas = big.locator("canvas.attnlab-composition-canvas")
    assert (big_canvas.get_attribute("data-rows"), big_canvas.get_attribute("data-cols")) == ("261", "261")
    for cls in ("row", "col"):
        boxes = [b.bounding_box() for b in big.locator(f".attnlab-composition-{cls}-label").all()]
        assert len(boxes) >= 10
        for a, b in zip(boxes, boxes[1:]):
            if cls == "row":
                assert a["y"] + a["height"] <= b["y"] + 0.5, (a, b)
            else:
                assert a["x"] + a["width"] <= b["x"] + 0.5, (a, b)
    big.scroll_into_view_if_needed()
    screenshot(page, "heads-extra-composition-30x9")

    assert console_errors == [], "\n".join(console_errors)
    assert HEADGALLERY_MIME.endswith("v1+json") and COMPOSITION_MIME.endswith("v1+json")
