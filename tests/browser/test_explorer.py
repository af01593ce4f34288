"""Browser test of ``attnlab.Explorer`` in JupyterLab on the embedded model.

The test clicks Run, waits for the head sweep, clicks a head's cell and checks that the detail panel shows that head's
attention pattern and ablation effect, as the kernel computed them, and that ``explorer.selected`` in the kernel is the
clicked head. It then selects a head from Python and checks that the view follows. A second explorer runs on prompts
that contain HTML, which must show as literal text everywhere. Screenshots go to test-artifacts/.
"""

import json
import re

import pytest
from playwright.sync_api import Page

from .jupyter import LabServer, collect_console_errors, notebook_panel, open_notebook, run_all_cells, run_cell_code, \
    screenshot, write_notebook

TIMEOUT_MS = 240_000

SETUP = """\
import attnlab
model = attnlab.load_model("smollm2-135m")
explorer = attnlab.Explorer(model, "ioi", n_prompts=4, seed=1, component="heads")
explorer
"""

# A task whose prompts start with HTML: IOI prompts behind a prefix, clean and corrupted alike (token-aligned).
HTML_TASK = """\
import torch
from attnlab.explorer import ExplorerTask
from attnlab.tasks.base import PatchingDataset
from attnlab.tasks.ioi import ioi_dataset

PREFIX = '<b>x</b> <img src=x onerror="window.__xss=1"> '

def html_ioi(model, n, *, seed=0, corruption="abc"):
    base = ioi_dataset(model, n, seed=seed, corruption=corruption)
    clean = [PREFIX + p for p in base.clean_prompts]
    corrupted = [PREFIX + p for p in base.corrupted_prompts]
    shift = model.to_tokens(clean).shape[1] - base.n_pos
    labels = base.position_labels[:1] + ['HTML'] * shift + base.position_labels[1:]
    return PatchingDataset(task="html_ioi", clean_tokens=model.to_tokens(clean), corrupted_tokens=model.to_tokens(corrupted),
                           answers=base.answers, positions={k: v + shift for k, v in base.positions.items()},
                           position_labels=labels, clean_prompts=clean, corrupted_prompts=corrupted)

task = ExplorerTask(name="html_ioi", title="IOI behind <i>HTML</i>", build=html_ioi, corruptions=("abc",),
                    answer_names=("IO", "S"))
hx = attnlab.Explorer(model, task, n_prompts=4, component="heads")
hx.run()
hx
"""

EXPLORER = ".jp-OutputArea-output .attnlab-explorer"


@pytest.mark.browser
@pytest.mark.integration
def test_explorer_run_click_and_select_from_python(lab: LabServer, browser_page: Page) -> None:
    page = browser_page
    console_errors = collect_console_errors(page)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    write_notebook(lab.root / "explorer.ipynb", [SETUP])
    open_notebook(page, lab, "explorer.ipynb")
    run_all_cells(page, timeout=TIMEOUT_MS)

    panel = notebook_panel(page)
    ex = panel.locator(EXPLORER).first
    try:
        ex.wait_for(timeout=30_000)
    except Exception:
        screenshot(page, "explorer-debug")
        raise AssertionError(panel.locator(".jp-OutputArea").all_inner_texts().__repr__() + repr(console_errors))
    assert "SmolLM2" in ex.locator(".attnlab-explorer-title").inner_text() or "smollm2" in \
        ex.locator(".attnlab-explorer-title").inner_text()
    assert ex.locator("select[name=component]").input_value() == "heads"
    assert ex.locator("input[name=n_prompts]").input_value() == "4"
    screenshot(page, "explorer-before-run")

    # Run from the browser; the progress bar runs; the heatmap appears with the baselines.
    ex.locator("button.attnlab-run").click()
    page.wait_for_selector(f'{EXPLORER}[data-status="done"]', timeout=TIMEOUT_MS)
    cells = ex.locator("rect.attnlab-cell")
    assert cells.count() == 30 * 9
    assert "clean logit difference" in ex.locator(".attnlab-baselines").inner_text()
    ex.scroll_into_view_if_needed()
    screenshot(page, "explorer-before-click")

    # Click the cell of head L23H3 (row 23, column 3).
    ex.locator('rect.attnlab-cell[data-row="23"][data-col="3"]').click()
    detail = ex.locator('.attnlab-explorer-detail[data-name="L23H3"]')
    detail.wait_for(timeout=TIMEOUT_MS)
    assert detail.get_attribute("data-kind") == "head"
    tokens = detail.locator(".attnlab-pattern .attnlab-token")
    shown = [float(a) if a != "null" else None
             for a in tokens.evaluate_all("els => els.map(e => e.getAttribute('data-attn'))")]
    ablation_text = detail.locator(".attnlab-ablation").inner_text()
    assert "mean ablation" in ablation_text and "zero ablation" in ablation_text
    screenshot(page, "explorer-after-click")

    # The kernel agrees: the selection is the clicked head, and the panel shows the kernel's numbers for it.
    out = run_cell_code(page, "import json\nd = explorer.detail\n"
                              "print(explorer.selected == 'L23H3', str(explorer.selected))\n"
                              "print(json.dumps({'row': d['pattern'][d['prompt']['end']], 'end': d['prompt']['end'],"
                              " 'mean': d['ablation']['mean']['change']['mean'],"
                              " 'zero': d['ablation']['zero']['change']['mean']}))", timeout=TIMEOUT_MS)
    first, second = out.strip().splitlines()[:2]
    assert first == "True L23H3"
    kernel = json.loads(second)
    end = kernel["end"]
    assert len(shown) == len(kernel["row"])
    assert shown[:end + 1] == pytest.approx(kernel["row"][:end + 1], abs=1e-6)  # END's row of the pattern
    assert all(v is None for v in shown[end + 1:])
    assert sum(shown[:end + 1]) == pytest.approx(1.0, abs=1e-4)
    bar_values = detail.locator(".attnlab-ablation .attnlab-bar-value").all_text_contents()
    assert bar_values == [f"{kernel['mean']:.2f}", f"{kernel['zero']:.2f}"]

    # Another destination token: the strip shades attention from there.
    tokens.nth(end - 2).click()
    assert detail.locator(".attnlab-pattern").get_attribute("data-dest") == str(end - 2)

    # Select a head from Python: the heatmap and the panel follow.
    run_cell_code(page, "explorer.selected = (17, 4)", timeout=TIMEOUT_MS)
    ex.locator('.attnlab-explorer-detail[data-name="L17H4"]').wait_for(timeout=TIMEOUT_MS)
    selected = ex.locator("rect.attnlab-cell-selected")
    assert selected.count() == 1
    assert (selected.get_attribute("data-row"), selected.get_attribute("data-col")) == ("17", "4")
    ex.scroll_into_view_if_needed()
    screenshot(page, "explorer-selected-from-python")

    # A circuit shown in the Explorer: clicking a head node opens that head's panel.
    run_cell_code(page, "from attnlab.circuits.circuit import Circuit\n"
                        "explorer.show_circuit(Circuit(model=model.info.to_dict(), task={'task': 'ioi'},\n"
                        "    edges=[('L20H0->logits', 1.0), ('L17H4->L20H0.q', 0.5)]))", timeout=TIMEOUT_MS)
    node = ex.locator('.attnlab-explorer-circuit g.attnlab-circuit-node[data-node="L20H0"]')
    node.click()
    ex.locator('.attnlab-explorer-detail[data-name="L20H0"]').wait_for(timeout=TIMEOUT_MS)
    assert (selected.get_attribute("data-row"), selected.get_attribute("data-col")) == ("20", "0")
    ex.locator(".attnlab-explorer-detail").scroll_into_view_if_needed()
    screenshot(page, "explorer-circuit-node-click")
    assert run_cell_code(page, "print(explorer.selected)", timeout=TIMEOUT_MS).strip() == "L20H0"

    # The metric menu: a KL-divergence run from the browser; baselines, heatmap legend and panels say so.
    assert "KL divergence from clean (nats)" in ex.locator("select[name=metric]").inner_text()
    ex.locator("select[name=metric]").select_option("kl_div")
    ex.locator("button.attnlab-run").click()
    ex.locator(".attnlab-baselines", has_text="KL divergence").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_selector(f'{EXPLORER}[data-status="done"]', timeout=TIMEOUT_MS)
    assert "normalised KL divergence from clean (nats)" in ex.locator(".attnlab-explorer-plot").inner_text()
    ex.locator('rect.attnlab-cell[data-row="23"][data-col="3"]').click()
    ex.locator('.attnlab-explorer-detail[data-name="L23H3"] .attnlab-ablation', has_text="KL divergence").wait_for(
        timeout=TIMEOUT_MS)
    assert run_cell_code(page, "print(explorer.result.metric)", timeout=TIMEOUT_MS).strip() == "kl_div"
    ex.scroll_into_view_if_needed()
    screenshot(page, "explorer-kl-run")

    # Prompts with HTML: literal text in the prompt menu, the token strip, the heatmap and the logit lens.
    run_cell_code(page, HTML_TASK, timeout=TIMEOUT_MS)
    hx = panel.locator(EXPLORER).nth(1)
    hx.locator("rect.attnlab-cell").first.wait_for(timeout=TIMEOUT_MS)
    hx.locator('rect.attnlab-cell[data-row="20"][data-col="0"]').click()
    hx.locator('.attnlab-explorer-detail[data-name="L20H0"]').wait_for(timeout=TIMEOUT_MS)
    option = hx.locator(".attnlab-prompt-select option").first.text_content()
    assert option.startswith('0: <b>x</b> <img src=x onerror="window.__xss=1">')
    strip = hx.locator(".attnlab-pattern").inner_text()
    assert "<b>" in strip and "<img" in strip
    assert hx.locator(".attnlab-explorer-title").inner_text().startswith("attnlab Explorer")
    assert "IOI behind <i>HTML</i>" in hx.locator("select[name=task]").inner_text()
    run_cell_code(page, "hx.set_control('component', 'resid_pre'); hx.run(); None", timeout=TIMEOUT_MS)
    hx.locator('rect.attnlab-cell[data-row="0"][data-col="1"]').wait_for(timeout=TIMEOUT_MS)
    col_tokens = " ".join(hx.locator(".attnlab-col-tokens text").all_text_contents())
    assert "<b" in col_tokens or "<" in col_tokens
    hx.locator('rect.attnlab-cell[data-row="12"][data-col="1"]').click()
    lens = hx.locator(".attnlab-explorer-detail[data-kind='cell'] .attnlab-lens")
    lens.wait_for(timeout=TIMEOUT_MS)
    assert re.search(r"prompt 0: <b>x</b> <img src=x", lens.inner_text())
    assert panel.locator(".attnlab-explorer b, .attnlab-explorer i, .attnlab-explorer img").count() == 0
    assert page.evaluate("() => window.__xss === undefined")
    assert not dialogs
    hx.scroll_into_view_if_needed()
    screenshot(page, "explorer-html-prompts")
    assert not [e for e in console_errors if "attnlab" in e or "anywidget" in e], console_errors
