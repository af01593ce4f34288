"""Tutorial 5 (circuit search on IOI and Colored Objects): committed without outputs, and executed end to end in a
fresh python3 kernel in a temporary copy of ``tutorials/`` (see :mod:`tests.tutorial_fixtures`). The claims its text
makes about the embedded model are checked against the executed outputs."""

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from attnlab.render.contract import CIRCUIT_MIME
from tests.tutorial_fixtures import REPO, TUTORIALS, assert_committed_without_outputs, cell_stdout, execute_tutorial

NB05 = TUTORIALS / "05_circuit_search_ioi_colored_objects.ipynb"
NUM = r"(-?\d+\.\d+)"



def _cell(cells, marker: str):
    (cell,) = [c for c in cells if marker in c.source]
    return cell


def _find(pattern: str, text: str) -> re.Match:
    m = re.search(pattern, text, re.M)
    assert m, f"no line matching {pattern!r} in:\n{text}"
    return m


def test_tutorial_05_is_committed_without_outputs():
    assert_committed_without_outputs(NB05)


@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_05_executes_and_its_claims_hold(tmp_path: Path):
    executed = execute_tutorial(NB05.name, tmp_path)
    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for cell in cells:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source

    # "Ablating the 70,651 edges one at a time"; the circuit keeps 1,000 of them, "1.4% of the graph".
    n_edges = int(_find(r"^\d+ senders, \d+ receivers, ([\d,]+) edges$", cell_stdout(cells[0])).group(1).replace(",", ""))
    assert n_edges == 70651
    assert round(100 * 1000 / n_edges, 1) == 1.4

    # The circuit is displayed through its MIME type (the graph view), with the static HTML fallback.
    (shown,) = [o.data for o in _cell(cells, "circuit = circuit_from_scores(scores").outputs
                if o.output_type == "execute_result"]
    assert CIRCUIT_MIME in shown and "text/html" in shown
    # The HTML report goes to a temporary folder, outside the repository (execute_tutorial checks `git status`).
    report = Path(_find(r"^report: (.+ioi_circuit\.html)$", cell_stdout(_cell(cells, "faithfulness_curve(runner, ioi")))
                  .group(1))
    try:
        assert report.is_file() and REPO not in report.resolve().parents
        assert "<html" in report.read_text()[:500].lower()
    finally:
        shutil.rmtree(report.parent, ignore_errors=True)

    # The 1,000-edge circuit recovers >= 80% of the logit difference; the curve is not monotonic.
    text = cell_stdout(_cell(cells, "faithfulness_curve(runner, ioi"))
    f, n, heads = _find(rf"^faithfulness {NUM} at (\d+) edges, (\d+) heads$", text).groups()
    f, n, heads = float(f), int(n), int(heads)
    assert n == 1000 and f >= 0.8, text
    points = [(int(a), int(b), float(c)) for a, b, c in
              re.findall(rf"^ *(\d+) edges, +(\d+) heads: faithfulness {NUM}", text, re.M)]
    assert len(points) >= 4, text
    assert (n, heads, f) in points, text
    curve = [p[2] for p in points]
    assert any(b < a for a, b in zip(curve, curve[1:])), text

    # EAP-IG's circuit is more faithful than EAP's at the same size, "although the two share many of their edges".
    text = cell_stdout(_cell(cells, 'method="eap", batch_size=16'))
    f_ig = float(_find(rf"^EAP-IG: faithfulness {NUM} at 1000 edges", text).group(1))
    f_eap = float(_find(rf"^EAP: +faithfulness {NUM} at 1000 edges", text).group(1))
    assert f_ig == f and f_ig > f_eap, text
    assert int(_find(r"^edges in both circuits: (\d+) of 1000$", text).group(1)) >= 500, text

    # Name-mover-like heads at layers 23-24 (tutorial 2), every one of the role heads in the circuit.
    text = cell_stdout(_cell(cells, "name-mover-like heads (END -> IO)"))
    movers = _find(r"^name-mover-like heads \(END -> IO\): (L\d+H\d+(?:, L\d+H\d+)*)$", text).group(1)
    assert {int(x) for x in re.findall(r"L(\d+)H", movers)} <= {23, 24}, text
    k, m = map(int, _find(r"^in the IOI circuit: (\d+) of these (\d+) heads$", text).groups())
    assert k == m >= 1, text

    # Colored Objects: about four times as long as IOI, one prompt per template; the model is weak.
    text = cell_stdout(_cell(cells, "colored_objects_baselines(model, co)"))
    co_pos, ioi_pos = map(int, _find(r"^(\d+) tokens per prompt \(IOI: (\d+)\)", text).groups())
    assert 3.5 <= co_pos / ioi_pos <= 4.5, text
    templates = [int(t) for t in re.findall(r"\d+", _find(r"question templates \[([\d, ]+)\]$", text).group(1))]
    assert len(templates) == len(set(templates)) == 8, text
    acc, cf_acc, chance = map(float, _find(rf"clean {NUM}, counterfactual {NUM} \(chance {NUM}\)$", text).groups())
    assert chance < acc < 0.5, text  # "more often than chance, but it is wrong on most prompts"
    ld, cf_ld = map(float, _find(r"clean ([-+]\d+\.\d+), counterfactual ([-+]\d+\.\d+) logits$", text).groups())
    assert 0 < ld < 1, text  # "a fraction of a logit"
    assert 0 < cf_ld < ld, text  # "It stays positive, only smaller"

    # The Colored Objects circuit: faithfulness at a stated size, whatever it is.
    text = cell_stdout(_cell(cells, "co_faith = faithfulness("))
    co_f, co_n, co_heads = _find(rf"^faithfulness {NUM} at (\d+) edges, (\d+) heads", text).groups()
    assert int(co_n) == 1000, text
    # "much less faithful than the IOI circuit, and its bootstrap interval is wide"; "M_full - M_ablated, under one logit"
    assert float(co_f) < 0.75 * f, text
    lo, hi = map(float, _find(rf"\(95% CI \[{NUM}, {NUM}\]\)$", text).groups())
    assert hi - lo > 0.3, text
    full, ablated = map(float, _find(r"^M_full ([-+]\d+\.\d+), M_ablated ([-+]\d+\.\d+)", text).groups())
    assert 0 < full - ablated < 1, text

    # The head overlap figures are consistent with the circuits' sizes.
    text = cell_stdout(_cell(cells, "compare_circuits(circuit, co_circuit"))
    na, nb_, shared = map(int, _find(r"^IOI circuit: (\d+) heads; Colored Objects circuit: (\d+) heads; "
                                     r"shared: (\d+)$", text).groups())
    assert na == heads and nb_ == int(co_heads), text
    jac = float(_find(rf"^Jaccard {NUM}$", text).group(1))
    b_in_a, chance_b = map(float, _find(rf"^Colored Objects heads also in IOI: {NUM} \(chance {NUM}\)$", text).groups())
    a_in_b, chance_a = map(float, _find(rf"^IOI heads also in Colored Objects: {NUM} \(chance {NUM}\)$", text).groups())
    assert abs(jac - shared / (na + nb_ - shared)) < 1e-3 and abs(b_in_a - shared / nb_) < 1e-3, text
    assert abs(a_in_b - shared / na) < 1e-3 and abs(chance_b - na / 270) < 1e-3, text
    # "Both overlaps are above the chance level"; "circuits of 1,000 edges each touch over a hundred of the 270 heads"
    assert b_in_a > chance_b and a_in_b > chance_a, text
    assert na > 100 and nb_ > 100, text
    # The IOI role heads are all in the Colored Objects circuit; at least one is a mover in both tasks.
    k, m = map(int, _find(r"^IOI role heads also in the Colored Objects circuit: (\d+) of (\d+)$", text).groups())
    assert k == m >= 1, text
    both = _find(r"^movers in both tasks: (.+)$", text).group(1)
    assert re.fullmatch(r"L\d+H\d+(, L\d+H\d+)*", both), text

    # Against Wang et al.: "as faithful" as their 87%, "far more heads" than 26; faithfulness falls with fewer edges.
    assert f >= 0.87 and heads > 2 * 26
    assert points[0][0] < 1000 and points[0][2] < f
