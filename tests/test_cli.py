"""The ``attnlab`` command line."""

import json
import re

import pytest

from attnlab.cli import main
from attnlab.results import PatchingResult


@pytest.mark.parametrize("argv,message", [
    (["patch", "ioi", "--n-prompts", "0"], "--n-prompts must be at least 1 (got 0)"),
    (["patch", "ioi", "--out", "report.txt"], "--out must name a .html or .htm file"),
])
def test_bad_arguments_fail_before_loading_the_model(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.integration
def test_patch_ioi_prints_top_heads_and_writes_report(tmp_path, capsys):
    out, saved = tmp_path / "report.html", tmp_path / "result.json"
    code = main(["patch", "ioi", "--model", "smollm2-135m", "--component", "heads", "--n-prompts", "2",
                 "--top", "5", "--quiet", "--out", str(out), "--save", str(saved)])
    printed = capsys.readouterr().out
    assert code == 0
    result = PatchingResult.load(saved)
    top = result.top(5)
    # the five printed rows are the result's top five heads, with their values
    rows = re.findall(r"^\s*(L\d+H\d)\s+([+-]\d\.\d{4})", printed, flags=re.M)
    assert [name for name, _ in rows] == top["component"].tolist()
    assert [float(v) for _, v in rows] == pytest.approx(top["value"].tolist(), abs=5e-5)
    assert "clean LD" in printed and "corrupted LD" in printed
    page = out.read_text()
    payload = json.loads(re.search(r'<script id="attnlab-payload" type="application/json">(.*?)</script>', page,
                                   flags=re.S).group(1))
    assert payload["kind"] == "heatmap" and len(payload["values"]) == 30 and len(payload["values"][0]) == 9
    assert "attnlabRender.renderHeatmap" in page
    # no network reference: the only URL is the SVG namespace name, which is an identifier, never fetched
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
