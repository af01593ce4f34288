"""Two runs compared in the Explorer, in JupyterLab in headless Chromium, on a tiny random model.

Two head sweeps (denoising, noising) run from Python; in the browser, run A and run B are chosen in the comparison
menus and Compare is clicked. The difference cells' ``data-value`` must equal ``a.values - b.values`` computed in the
kernel, the A and B panels each run's own values, and all three share one colour scale (fixed +-1 by default,
switchable). Raw scores compare the patched metric's means. A pair of different components is refused with a
message. The comparison view and a detail panel export as SVG (Playwright downloads), and the baseline warning sits
next to the baselines exactly when the kernel's result carries one. Screenshots go to test-artifacts/.
"""

import json
import xml.etree.ElementTree as ET

import pytest
from playwright.sync_api import Page

from .jupyter import ARTIFACTS_DIR, LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, \
    run_cell_code, screenshot, write_notebook

TIMEOUT_MS = 120_000
EXPLORER = ".jp-OutputArea-output .attnlab-explorer"
SVG = "{http://www.w3.org/2000/svg}"

SETUP = """\
import json, math, torch
import attnlab
from attnlab.explorer import ExplorerTask
from attnlab.tasks.base import PatchingDataset

def build(model, n, *, seed=0, corruption="one"):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 50, (n, 6), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 7) % 50
    answers = torch.randint(0, 50, (n, 2), generator=g)
    answers[:, 1] = (answers[:, 0] + 1) % 50
    return PatchingDataset(task="random", clean_tokens=clean, corrupted_tokens=corrupted, answers=answers,
                           positions={"END": torch.full((n,), 5)}, position_labels=[f"p{i}" for i in range(6)])

model = attnlab.tiny_model(n_layers=3, n_heads=4, seed=1)
task = ExplorerTask(name="random", title="random pairs", build=build, corruptions=("one",))
ex = attnlab.Explorer(model, task, n_prompts=6, seed=4, component="heads")
ex.run()
ex.set_control("direction", "noising")
ex.run()
ex
"""


def _cells(locator) -> dict[tuple[int, int], float | None]:
    raw = locator.locator("rect.attnlab-cell").evaluate_all(
        "els => els.map(e => [+e.dataset.row, +e.dataset.col, e.getAttribute('data-value')])")
    return {(r, c): (None if v == "null" else float(v)) for r, c, v in raw}


def _kernel_json(page: Page, expr: str):
    out = run_cell_code(page, f"print(json.dumps({expr}))", timeout=TIMEOUT_MS)
    return json.loads(out.strip().splitlines()[-1])


NAN_LIST = "[[None if math.isnan(v) else v for v in row] for row in ({}).tolist()]"


def _assert_grid(shown: dict, expected: list[list[float | None]]) -> None:
    assert len(shown) == sum(len(r) for r in expected)
    for (r, c), v in shown.items():
        want = expected[r][c]
        assert (v is None) == (want is None), (r, c, v, want)
        if v is not None:
            assert v == pytest.approx(want, abs=1e-6), (r, c)


@pytest.mark.browser
def test_two_runs_compared_in_the_explorer(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    errors = collect_console_errors(page)
    write_notebook(lab.root / "compare.ipynb", [SETUP])
    open_notebook(page, lab, "compare.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)
    ex = notebook_panel(page).locator(EXPLORER).first
    ex.locator("rect.attnlab-cell").first.wait_for(timeout=TIMEOUT_MS)

    # the baseline warning sits next to the baselines exactly when the kernel's result carries one
    warnings = _kernel_json(page, "[w['message'] for w in ex.result.warnings]")
    shown_warnings = ex.locator(".attnlab-baselines .attnlab-baseline-warning").all_text_contents()
    assert [w.lstrip("⚠ ") for w in shown_warnings] == warnings

    # A = run 0 (denoising), B = run 1 (noising), normalised scores
    ex.locator("select.attnlab-compare-a").select_option("0")
    ex.locator("select.attnlab-compare-b").select_option("1")
    ex.locator("button.attnlab-compare-run").click()
    view = ex.locator(".attnlab-explorer-compare")
    view.locator('[data-panel="diff"] rect.attnlab-cell').first.wait_for(timeout=TIMEOUT_MS)
    assert view.get_attribute("data-scores") == "normalised"
    kernel = _kernel_json(page, "{" + ", ".join([
        f"'a': {NAN_LIST.format('ex.controller.runs[0].result.values')}",
        f"'b': {NAN_LIST.format('ex.controller.runs[1].result.values')}",
        f"'diff': {NAN_LIST.format('ex.controller.runs[0].result.values - ex.controller.runs[1].result.values')}",
        "'zmax': float(torch.stack([r.result.values for r in ex.controller.runs[:2]] + "
        "[ex.controller.runs[0].result.values - ex.controller.runs[1].result.values]).abs().max())",
    ]) + "}")
    for key in ("a", "b", "diff"):
        _assert_grid(_cells(view.locator(f'[data-panel="{key}"]')), kernel[key])
    legends = view.locator(".attnlab-legend")
    assert legends.count() == 3
    assert {legends.nth(i).get_attribute("data-zmax") for i in range(3)} == {"1"}  # one shared fixed ±1 scale
    view.scroll_into_view_if_needed()
    screenshot(page, "compare-runs-normalised")

    # one scale menu for the three: symmetric = the largest |value| of all three
    view.locator(":scope > .attnlab-heatmap-toolbar select.attnlab-scale-mode").select_option("symmetric")
    zs = {float(legends.nth(i).get_attribute("data-zmax")) for i in range(3)}
    assert len(zs) == 1 and zs.pop() == pytest.approx(kernel["zmax"], rel=1e-6)

    # the comparison view exports as one SVG: its title, the three panels' titles and colour bars
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    with page.expect_download() as dl:
        view.locator(":scope > .attnlab-heatmap-toolbar button.attnlab-export-svg").click()
    path = ARTIFACTS_DIR / "compare-runs.svg"
    dl.value.save_as(path)
    text = " ".join("".join(t.itertext()) for t in ET.parse(path).getroot().iter(f"{SVG}text"))
    assert "Runs compared" in text and "Difference of runs" in text and text.count("A − B") >= 1
    assert text.count("scale: symmetric") == 3

    # raw scores: the patched metric's mean over prompts, A - B
    ex.locator("select.attnlab-compare-scores").select_option("raw")
    ex.locator("button.attnlab-compare-run").click()
    page.wait_for_selector(f'{EXPLORER} .attnlab-explorer-compare[data-scores="raw"]', timeout=TIMEOUT_MS)
    raw = _kernel_json(page, NAN_LIST.format(
        "ex.controller.runs[0].result.per_prompt.mean(-1) - ex.controller.runs[1].result.per_prompt.mean(-1)"))
    _assert_grid(_cells(view.locator('[data-panel="diff"]')), raw)
    view.scroll_into_view_if_needed()
    screenshot(page, "compare-runs-raw")

    # a detail panel's attention pattern exports with its colour bar
    ex.locator('.attnlab-explorer-plot rect.attnlab-cell[data-row="2"][data-col="1"]').click()
    att = ex.locator('.attnlab-explorer-detail[data-name="L2H1"] section.attnlab-attention')
    att.wait_for(timeout=TIMEOUT_MS)
    assert att.locator("svg.attnlab-pattern-legend").count() == 1
    with page.expect_download() as dl:
        att.locator(".attnlab-detail-heading button.attnlab-export-svg").click()
    path = ARTIFACTS_DIR / "compare-runs-attention-detail.svg"
    dl.value.save_as(path)
    text = " ".join("".join(t.itertext()) for t in ET.parse(path).getroot().iter(f"{SVG}text"))
    assert "Attention pattern" in text and "attention probability" in text and "SVG" not in text
    att.scroll_into_view_if_needed()
    screenshot(page, "compare-runs-attention-detail")

    # different components are refused, with the reason
    run_cell_code(page, "ex.set_control('component', 'resid_pre'); ex.run(); None", timeout=TIMEOUT_MS)
    ex.locator("select.attnlab-compare-a").select_option("0")
    ex.locator("select.attnlab-compare-b").select_option("2")
    ex.locator("button.attnlab-compare-run").click()
    err = view.locator(".attnlab-compare-error")
    err.wait_for(timeout=TIMEOUT_MS)
    assert "different components" in err.text_content()
    view.scroll_into_view_if_needed()
    screenshot(page, "compare-runs-refused")
    assert not [e for e in errors if "attnlab" in e or "anywidget" in e], errors
