"""Tick labels that never collide (labext/src/heatmap.ts), measured in headless Chromium.

Dense and awkward heatmaps (a layer x head x position sweep of a 30-layer model with long tokens, a 600-row matrix,
80 columns of long labels, a colour scale of +-0.0123 whose half-ticks are wide) are drawn by the standalone
renderer; the on-screen boxes of the row labels, column labels, tokens and colour-bar ticks are measured, and no two
labels of one band may overlap, nor may a colour-bar tick leave its SVG. Screenshots go to test-artifacts/.
"""

import pytest
from playwright.sync_api import Browser

from attnlab.render.views import standalone_html

from .jupyter import screenshot

BOXES = """
(sel) => Array.from(document.querySelectorAll(sel)).map(e => {
  const r = e.getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom, e.textContent];
})
"""


def _payload(name, n_rows, n_cols, *, row_label, col_label, tokens=None, zmax=None, groups=None):
    values = [[((i * 7 + j * 13) % 29 - 14) / 14 * (zmax or 1) for j in range(n_cols)] for i in range(n_rows)]
    return {
        "kind": "heatmap", "version": 1, "title": name, "subtitle": "synthetic payload for label collisions",
        "values": values, "row_labels": [row_label(i) for i in range(n_rows)],
        "col_labels": [col_label(j) for j in range(n_cols)], "col_tokens": tokens, "row_title": "row",
        "col_title": "column", "row_groups": groups, "value_label": "normalised logit difference",
        "zmax": zmax or 1.0,
    }


CASES = {
    "heads-by-pos-30x9x20": _payload(
        "heads by position, 30 layers", 270, 20, row_label=lambda i: f"L{i // 9}H{i % 9}",
        col_label=lambda j: ["S1", "IO", "S2", "END"][j % 4] + str(j),
        tokens=[" Mary", " and", " John", " went", "\n", " the", " store", ",", " John", " gave", " a", " drink",
                " to", " a very long token that is shortened", " x", " y", " z", "<b>", " w", " END"],
        zmax=0.0123, groups=[9 * k for k in range(1, 30)]),
    "rows-600": _payload("600 rows", 600, 24, row_label=lambda i: f"row{i}", col_label=lambda j: f"c{j}"),
    "cols-80-long": _payload("80 long columns", 12, 80, row_label=lambda i: f"L{i}",
                             col_label=lambda j: f"position{j:03d}", zmax=0.00615),
}


def _overlaps(boxes, tol=0.5):
    """Pairs of boxes that overlap by more than ``tol`` px in both directions."""
    bad = []
    boxes = sorted(boxes, key=lambda b: (b[0], b[1]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b[0] >= a[2] - tol:
                break
            if min(a[3], b[3]) - max(a[1], b[1]) > tol and min(a[2], b[2]) - max(a[0], b[0]) > tol:
                bad.append((a[4], b[4]))
    return bad


@pytest.mark.browser
@pytest.mark.parametrize("case", sorted(CASES))
def test_labels_never_collide(browser: Browser, case: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.set_content(standalone_html(CASES[case]))
        page.locator("rect.attnlab-cell").first.wait_for()
        bands = {
            "row labels": ".attnlab-row-labels text",
            "column labels": ".attnlab-col-labels:not(.attnlab-col-labels-top) text",
            "tokens": ".attnlab-col-tokens text",
            "colour-bar ticks": ".attnlab-legend text.attnlab-legend-value",
        }
        for band, sel in bands.items():
            boxes = page.evaluate(BOXES, sel)
            assert _overlaps(boxes) == [], f"{case}: {band} collide"
        legend = page.evaluate(BOXES, ".attnlab-legend")[0]
        for left, _, right, _, text in page.evaluate(BOXES, ".attnlab-legend text"):
            assert left >= legend[0] - 0.5 and right <= legend[2] + 0.5, f"{case}: colour-bar text {text!r} clipped"
        # every row keeps a label where rows are tall enough; dense rows are thinned, never dropped entirely
        n_rows = len(CASES[case]["row_labels"])
        shown_rows = page.locator(".attnlab-row-labels text").count()
        assert (shown_rows == n_rows) if n_rows <= 400 else (n_rows // 13 <= shown_rows < n_rows)
        screenshot(page, f"heatmap-labels-{case}")
    finally:
        page.close()
