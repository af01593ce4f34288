"""Tutorial 6 (recall versus reasoning): committed without outputs, and executed end to end in a fresh python3 kernel
in a temporary copy of ``tutorials/`` (see :mod:`tests.tutorial_fixtures`). The claims its text makes about the
embedded model (what the tokenizer drops, what the model answers, where the answers are, what the sweeps find) are
checked against the executed outputs and the displayed payloads."""

import re
from pathlib import Path

import nbformat
import pytest

from attnlab.render.contract import DISSOCIATION_MIME
from tests.tutorial_fixtures import TUTORIALS, assert_committed_without_outputs, cell_stdout, execute_tutorial

NB06 = TUTORIALS / "06_recall_vs_reasoning.ipynb"
NUM = r"(-?\d+\.\d+)"
IV = rf"{NUM} \[{NUM}, {NUM}\]"
IV_PADDED = rf"{NUM} \[ *{NUM}, +{NUM}\]"
RECALL = ["capital_of", "country_of_city", "language_of", "continent_of"]
REASONING = ["capital_chain", "transitive_order", "syllogism", "two_hop_relation"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _cell(cells, marker: str):
    (cell,) = [c for c in cells if marker in c.source]
    return cell


def _find(pattern: str, text: str) -> re.Match:
    m = re.search(pattern, text, re.M)
    assert m, f"no line matching {pattern!r} in:\n{text}"
    return m


def _table(text: str, columns: int) -> dict[str, list[str]]:
    """Rows ``family v1 v2 ...`` of a printed DataFrame whose index is a family name."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in RECALL + REASONING and len(parts) == columns + 1:
            rows[parts[0]] = parts[1:]
    assert set(rows) == set(RECALL + REASONING), text
    return rows


def _payload(cell) -> tuple[dict, dict]:
    (bundle,) = [o.data for o in cell.outputs if o.output_type == "execute_result"]
    assert {DISSOCIATION_MIME, "text/html", "text/plain"} <= set(bundle)
    return bundle[DISSOCIATION_MIME], bundle


def _check_described(payload: dict, text: str) -> None:
    """The statement, the selective lists with "spares"/"also hurts", and the not-selective example agree with the
    displayed payload."""
    comps = {c["name"]: c for c in payload["components"]}
    assert payload["statement"] in text
    dd = payload["double_dissociation"]
    if dd is None:
        assert payload["statement"].startswith("No double dissociation was found"), payload["statement"]
    else:
        assert dd["recall_component"] in payload["statement"] and dd["reasoning_component"] in payload["statement"]
    for side, other, sign in (("recall", "reasoning", 1), ("reasoning", "recall", -1)):
        expected = sorted((c for c in payload["components"] if c["significant"] and sign * c["selectivity"][0] > 0),
                          key=lambda c: -sign * c["selectivity"][0])
        listed = _find(rf"^{side}-selective after the Holm correction: (.+)$", text).group(1)
        assert listed == (", ".join(c["name"] for c in expected) or "none"), text
        for c in expected:
            m = _find(rf"^  {c['name']}: {side} drop {IV}, {other} drop {IV}: (spares|also hurts) {other}$", text)
            lo, hi = c[other][1], c[other][2]
            assert m.group(7) == ("spares" if lo <= 0 <= hi else "also hurts"), (c, text)
            assert abs(float(m.group(1)) - c[side][0]) < 0.006, (c, text)
            assert abs(float(m.group(4)) - c[other][0]) < 0.006, (c, text)
    m = re.search(r"^selectivity interval excludes 0, but not selective after the correction: (.+)$", text, re.M)
    uncorrected = [c["name"] for c in payload["components"] if not c["significant"]
                   and (c["selectivity"][1] > 0 or c["selectivity"][2] < 0)]
    assert (m.group(1).split(", ") if m else []) == uncorrected, text
    m = re.search(rf"^large drop on both, not selective: (\S+): recall drop {IV}, reasoning drop {IV}", text, re.M)
    if m:
        c = comps[m.group(1)]
        assert c["recall"][1] > 0 and c["reasoning"][1] > 0 and not c["significant"], c


def _check_controls(payload: dict, text: str) -> None:
    controls = payload["controls"]
    assert len(controls) == 2 * (1 + 5), controls  # per side: the selected set and five random sets
    for side in ("recall", "reasoning"):
        kinds = [c["kind"] for c in controls if c["side"] == side]
        assert kinds == ["selected"] + ["random"] * 5, kinds
    line = rf"^ *(recall|reasoning) side, (selected|random).* recall drop +{IV_PADDED} +reasoning drop +{IV_PADDED}$"
    lines = re.findall(line, text, re.M)
    assert len(lines) == len(controls), text
    for (side, kind, *vals), c in zip(lines, controls):
        assert (side, kind) == (c["side"], c["kind"])
        assert abs(float(vals[0]) - c["recall_drop"][0]) < 0.006, (c, text)
        assert abs(float(vals[3]) - c["reasoning_drop"][0]) < 0.006, (c, text)


def test_tutorial_06_is_committed_without_outputs():
    assert_committed_without_outputs(NB06)


@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_06_executes_and_its_claims_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)  # the NDIF section must skip itself
    executed = execute_tutorial(NB06.name, tmp_path)
    check_executed(executed, tmp_path / "tutorials")


def check_executed(executed: Path, workdir: Path) -> None:
    """Every check of the executed notebook at ``executed`` (run in the working copy ``workdir``)."""
    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for cell in cells:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source
    # Nothing is written into the tutorials folder (the kernel ran in a copy; a file left there would dirty git).
    ignore = {".ipynb_checkpoints"}
    assert {p.name for p in workdir.iterdir()} - ignore == \
        {p.name for p in TUTORIALS.iterdir()} - ignore

    # Eight families, four of each kind; the counts add up; the words the tokenizer splits are named, and split.
    text = cell_stdout(_cell(cells, "all_items = recall_reasoning_items(model)"))
    counts = _table(text, 5)
    for fam, (kind, built, multi, no_mate, kept) in counts.items():
        assert kind == ("recall" if fam in RECALL else "reasoning")
        assert int(built) - int(multi) - int(no_mate) == int(kept), text
        split = re.search(rf"^{fam}: split into several tokens: (.+)$", text, re.M)
        assert bool(split) == (int(multi) > 0), text
        if split:
            pieces = re.findall(r"-> \[([^\]]*)\]", split.group(1))
            assert pieces and all(p.count(",") >= 1 for p in pieces), split.group(0)
    usable = {fam: int(row[4]) for fam, row in counts.items()}
    n_rec, n_rea = map(int, _find(r"^usable items: (\d+) recall, (\d+) reasoning$", text).groups())
    assert n_rec == sum(usable[f] for f in RECALL) and n_rea == sum(usable[f] for f in REASONING)

    # What the model gets right, by both criteria; top-1 implies above the distractor; the sentences add up.
    text = cell_stdout(_cell(cells, 'top1 = filter_correct(model, all_items, criterion="top1")'))
    acc = _table(text, 6)
    for fam, (_, n, top1, above, p_top1, p_above) in acc.items():
        assert int(n) == usable[fam] and int(top1) <= int(above) <= int(n), text
        assert int(p_top1) == round(100 * int(top1) / int(n)) and int(p_above) == round(100 * int(above) / int(n))
    for kind, fams, total in (("recall", RECALL, n_rec), ("reasoning", REASONING, n_rea)):
        a, n1, b, n2 = map(int, _find(rf"^{kind}: (\d+) of (\d+) items answered top-1 \(\d+%\); (\d+) of (\d+) rank",
                                      text).groups())
        assert n1 == n2 == total and a == sum(int(acc[f][2]) for f in fams) and b == sum(int(acc[f][3]) for f in fams)
    worst = _find(r"^weakest family \(top-1\): (\w+), (\d+) of (\d+)$", text).group(1)
    assert int(acc[worst][4]) == min(int(r[4]) for r in acc.values()), text

    # "The answer is always in the prompt" for reasoning, never for recall; the distractor is in the prompt exactly in
    # transitive_order and two_hop_relation.
    text = cell_stdout(_cell(cells, "def words(text):"))
    for fam in RECALL + REASONING:
        a, n, d, n2 = map(int, _find(rf"{fam} +answer in the prompt: +(\d+) of +(\d+); distractor in the prompt: "
                                     rf"+(\d+) of +(\d+)$", text).groups())
        assert n == n2 == usable[fam]
        assert a == (n if fam in REASONING else 0), text
        assert d == (n if fam in ("transitive_order", "two_hop_relation") else 0), text

    # capital_chain: true and false premises cover the family; a false premise is followed "only part of the time".
    text = cell_stdout(_cell(cells, "true_continent = {"))
    (kt, nt), (kf, nf) = [map(int, _find(rf"^capital_chain, {w} premise: (\d+) of (\d+) answered", text).groups())
                          for w in ("true", "false")]
    assert nt + nf == usable["capital_chain"] and kt + kf == int(acc["capital_chain"][2]) and nt > 0
    assert 0 < kf < nf, text

    # The sweep's items: drawn per family, filtered top-1; what the view shows is what was printed.
    text = cell_stdout(_cell(cells, "N_PER_FAMILY = "))
    kept = _table(text, 5)
    s_rec, s_rea, drawn = map(int, _find(r"^sweep items: (\d+) recall, (\d+) reasoning \(drawn: (\d+) per family, "
                                         r"filter: top1\)$", text).groups())
    assert s_rec == sum(int(kept[f][4]) for f in RECALL) and s_rea == sum(int(kept[f][4]) for f in REASONING)
    assert all(int(row[4]) <= drawn for row in kept.values())

    # The blocks sweep: 60 components (attention and MLP of 30 layers), mean ablation, 1,000 resamples, Holm at 0.05.
    sweep_cell = _cell(cells, 'blocks = dissociation_sweep(model, items, granularity="blocks"')
    blocks, _ = _payload(sweep_cell)
    assert len(blocks["components"]) == 60 and blocks["granularity"] == "blocks" and blocks["ablation"] == "mean"
    assert blocks["n_layers"] == 30 and blocks["n_heads"] == 9 and blocks["complete"]
    assert (blocks["n_bootstrap"], blocks["correction"], blocks["alpha"], blocks["level"]) == (1000, "holm", 0.05, 0.95)
    assert blocks["n_items"] == {"recall": s_rec, "reasoning": s_rea}
    assert re.search(r"^60 components, \d+ forward passes, \d+ s$", cell_stdout(sweep_cell), re.M)
    text = cell_stdout(_cell(cells, 'print("clean logit difference'))
    for kind in ("recall", "reasoning"):
        assert abs(float(_find(rf"{kind} {NUM}", text).group(1)) - blocks["baselines"][kind]) < 0.006
    _check_described(blocks, cell_stdout(_cell(cells, "describe(blocks)")))
    _check_controls(blocks, cell_stdout(_cell(cells, "show_controls(blocks)")))

    # The head sweep: the 36 heads of layers 26-29.
    heads, _ = _payload(_cell(cells, "heads = dissociation_sweep("))
    assert len(heads["components"]) == 36 and heads["n_items"] == blocks["n_items"]
    assert {c["layer"] for c in heads["components"]} == {26, 27, 28, 29}
    assert all(c["head"] is not None for c in heads["components"])
    text = cell_stdout(_cell(cells, "describe(heads)"))
    _check_described(heads, text)
    _check_controls(heads, text)

    # The detail is of the most recall-selective head, with every item's effect.
    text = cell_stdout(_cell(cells, "focus = heads.ranked"))
    focus = _find(r"^(L\d+H\d+): where it looks", text).group(1)
    assert focus == max(heads["components"], key=lambda c: c["selectivity"][0])["name"]
    counts_by_family = [int(x) for x in re.findall(r"^ *(?:recall|reasoning)? +\w+ +-?\d+\.\d+ +-?\d+\.\d+ +-?\d+\.\d+ "
                                                   r"+(\d+)$", text, re.M)]
    assert sum(counts_by_family) == s_rec + s_rea, text

    # The workbench is displayed as a widget, with the static fallback; nothing ran in it.
    (wb,) = [o.data for o in _cell(cells, "workbench = attnlab.RecallReasoningWorkbench(").outputs
             if o.output_type == "execute_result"]
    assert WIDGET_MIME in wb and "text/html" in wb and "runs=0" in wb["text/plain"]

    # Save and reload are exact.
    text = cell_stdout(_cell(cells, "blocks.save("))
    for line in ("identical values: True", "identical statistics: True", "same statement: True"):
        assert line in text, text

    # The summary agrees with both payloads.
    text = cell_stdout(_cell(cells, 'for name, result in (("blocks", blocks)'))
    for name, payload in (("blocks", blocks), ("late heads", heads)):
        line = _find(rf"^{name}: .*$", text).group(0)
        dd = payload["double_dissociation"]
        assert (("no double dissociation" in line) if dd is None else
                f"double dissociation {dd['recall_component']} / {dd['reasoning_component']}" in line), line

    # Without a key, the NDIF section says it is skipped.
    assert "NDIF_API_KEY is not set: the remote run is skipped" in cell_stdout(cells[-1])
