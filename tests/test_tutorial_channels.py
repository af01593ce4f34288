"""Tutorial 7 (retrieval heads, attention sinks, composition): committed without outputs, and executed end to end in a
fresh python3 kernel in a temporary copy of ``tutorials/`` (see :mod:`tests.tutorial_fixtures`) with its small
settings (``ATTNLAB_TUTORIAL_SMALL=1``: five needle inputs, four prose passages, eight IOI prompts, path patching from
the five layers before the receivers).

What the text says about the embedded model is checked against the printed outputs. The printed numbers are checked
against each other (counts that must add up, verdicts that must follow from their intervals, a Spearman recomputed
from ranks) and against attnlab's functions called again here, in the test's own process: the top retrieval head,
the top composition pairs and their baseline, and the rank correlation with a path-patching sweep run here."""

import re
import statistics
import subprocess
from pathlib import Path

import nbformat
import pytest
import torch

from tests.tutorial_fixtures import TUTORIALS, assert_committed_without_outputs, cell_stdout, execute_tutorial

NB07 = TUTORIALS / "07_retrieval_sinks_and_channels.ipynb"
REPO = TUTORIALS.parent
NUM = r"-?\d+\.\d+"
N_ALL = 30 * 9  # the embedded SmolLM2-135M: 30 layers x 9 query heads
# the notebook's small settings (asserted against its settings cell below)
DEPTHS, LENGTHS, N_TEXTS, N_IOI, BACK = [0.1, 0.3, 0.5, 0.7, 0.9], [128], 4, 8, 5
SAVED_FILES = ("retrieval.json", "ioi_sinks.json")  # what the notebook writes, to a temporary folder


def _cell(cells, marker: str):
    (cell,) = [c for c in cells if marker in c.source]
    return cell


def _find(pattern: str, text: str) -> re.Match:
    m = re.search(pattern, text, re.M)
    assert m, f"no line matching {pattern!r} in:\n{text}"
    return m


def _head(label: str) -> tuple[int, int]:
    layer, head = re.fullmatch(r"L(\d+)H(\d+)", label).groups()
    return int(layer), int(head)


def _git_status() -> set[str] | None:
    """``git status --porcelain`` lines of the repository (untracked files listed one by one), or None outside git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(out.stdout.splitlines())


def test_tutorial_07_is_committed_without_outputs():
    assert_committed_without_outputs(NB07)
    nb = nbformat.read(NB07, as_version=4)
    assert not [c for c in nb.cells if "../shared" in c.source], "a tutorial must not reference ../shared"
    settings = _cell([c for c in nb.cells if c.cell_type == "code"], "SMALL = os.environ.get(").source
    for line in (f"DEPTHS = {DEPTHS}", f"LENGTHS = {LENGTHS} if SMALL", f"N_TEXTS = {N_TEXTS} if SMALL",
                 f"N_IOI = {N_IOI} if SMALL", f"SENDER_LAYERS_BACK = {BACK} if SMALL", "SEED = 0"):
        assert line in settings, f"the test mirrors the notebook's small settings; {line!r} is not in:\n{settings}"


@pytest.mark.tutorial
@pytest.mark.timeout(900)
def test_tutorial_07_executes_and_its_claims_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded_model):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)  # the NDIF section must skip itself
    monkeypatch.setenv("ATTNLAB_TUTORIAL_SMALL", "1")
    before = _git_status()
    executed = execute_tutorial(NB07.name, tmp_path)
    after = _git_status()
    if before is not None and after is not None:  # nothing new in the repository (others may work beside us)
        new = sorted(after - before)
        assert not [line for line in new if "tutorials/" in line or line.endswith(SAVED_FILES)], new
    check_executed(executed, tmp_path / "tutorials", embedded_model)


def check_executed(executed: Path, workdir: Path, model) -> None:
    """Every check of the executed notebook at ``executed`` (run in the working copy ``workdir``)."""
    from attnlab.circuits.path_patching import head_inputs, path_patching_sweep
    from attnlab.heads import compare_with_path_patching, composition_scores, retrieval_scores
    from attnlab.sites import Site, SiteKind
    from attnlab.tasks.ioi import ioi_dataset
    from attnlab.tasks.needle import needle_haystack

    nb = nbformat.read(executed, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in cells)
    for cell in cells:
        assert all(o.output_type != "error" for o in cell.outputs), cell.source
    ignore = {".ipynb_checkpoints"}  # the kernel ran in a copy; nothing may be left in it
    assert {p.name for p in workdir.iterdir()} - ignore == {p.name for p in TUTORIALS.iterdir()} - ignore

    # -- 1. retrieval heads --------------------------------------------------------------------------------------
    text = cell_stdout(_cell(cells, "inputs = needle_haystack(model, depths=DEPTHS, lengths=LENGTHS)"))
    n_inputs = int(_find(r"^(\d+) inputs: haystack lengths \[128\] tokens x 5 depths$", text).group(1))
    assert n_inputs == len(DEPTHS) * len(LENGTHS)
    n_needle = int(_find(r"^needle \((\d+) tokens\)", text).group(1))
    total, n0, n1, a0, a1 = map(int, _find(r"^input 0: (\d+) tokens; position 0 is '<\|im_start\|>'; the needle at "
                                           r"positions (\d+)-(\d+) \(depth [\d.]+\); the answer at positions "
                                           r"(\d+)-(\d+)$", text).groups())
    assert n1 - n0 + 1 == a1 - a0 + 1 == n_needle and a1 == total - 1 and n1 < a0

    inputs = needle_haystack(model, depths=DEPTHS, lengths=LENGTHS)
    scores = retrieval_scores(model, inputs)
    found = scores.retrieval_heads()
    text = cell_stdout(_cell(cells, "retrieval = retrieval_scores(model, inputs)"))
    top_label, top_score = _find(rf"^top retrieval head: (L\d+H\d+), score ({NUM})$", text).groups()
    assert _head(top_label) == scores.ranking()[0], (top_label, scores.ranking()[:3])
    assert abs(float(top_score) - float(scores.scores[scores.ranking()[0]])) < 1e-3
    n_found, share, side = _find(rf"^retrieval heads \(score > 0\.1\): (\d+) of {N_ALL} heads \(({NUM})%\); "
                                 r"(more|fewer) than Wu et al.'s 5%$", text).groups()
    assert int(n_found) == len(found) and side == ("more" if float(share) > 5 else "fewer")
    layers, zero = _find(rf"^their layers: \[([\d, ]+)\]; heads that never retrieve \(score 0\): (\d+) of {N_ALL}$",
                         text).groups()
    assert [int(x) for x in layers.split(", ")] == sorted({a for a, _ in found})
    assert int(zero) == int((scores.scores == 0).sum())
    # "a handful of heads in the middle-to-late layers ...: most of the 270 heads never do"
    assert min(a for a, _ in found) >= 10 and int(zero) > N_ALL // 2
    acc = float(_find(rf"^the model copies ({NUM}) of the needle tokens top-1", text).group(1))
    assert abs(acc - float(scores.accuracy.mean())) < 1e-3

    text = cell_stdout(_cell(cells, "ablation = retrieval_ablation(model, inputs, retrieval"))
    line = rf" +accuracy ({NUM}) \[({NUM}), ({NUM})\] +drop ([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]$"
    k = int(_find(r"^top (\d+) retrieval heads", text).group(1))
    assert k == len(found)
    clean = [float(x) for x in _find(r"^no ablation" + line, text).groups()]
    top = [float(x) for x in _find(rf"^top {k} retrieval heads" + line, text).groups()]
    draws = [[float(x) for x in m] for m in re.findall(r"^  random draw \d" + line, text, re.M)]
    assert len(draws) == 5 and clean[3] == 0.0
    for row in [top, *draws]:
        assert row[1] <= row[0] <= row[2] and row[4] <= row[3] <= row[5]
        assert abs(clean[0] - row[0] - row[3]) < 2e-3  # drop = clean - ablated
    # the causal check holds: the retrieval heads' drop interval lies above every random draw's drop
    assert all(top[4] > d[3] for d in draws), text
    ratio, t_drop, worst = map(float, _find(rf"^the top-{k} drop is ({NUM})x the largest random drop \(({NUM}) "
                                            rf"against ({NUM})\)$", text).groups())
    assert worst == max(d[3] for d in draws) and abs(t_drop - top[3]) < 1e-3 and ratio > 1

    # -- 2. sinks ------------------------------------------------------------------------------------------------
    text = cell_stdout(_cell(cells, "sinks = sink_analysis(model, texts)"))
    n_first, n_texts = map(int, _find(r"^first token a sink position in (\d+) of (\d+) passages", text).groups())
    assert n_first == n_texts == N_TEXTS  # the first-token sink is everywhere
    n_hidden, tokens = _find(r"^hidden sinks: (\d+) in \d+ passages, by token: (.+)$", text).groups()
    counts = [(tok, int(n)) for tok, n in re.findall(r"'([^']*)' x(\d+)", tokens)]
    assert counts and counts[0][0] == " the" and {".", "\\n"} & {t for t, _ in counts}, tokens  # the prose says so
    assert sum(n for _, n in counts) <= int(n_hidden)
    rows = re.findall(rf"^\d+ +(L\d+H\d+) +({NUM}) +({NUM}) +({NUM}) +{NUM}$", text, re.M)
    assert len(rows) == 12, text  # two tables of six heads
    sink_top, hidden_top = rows[:6], rows[6:]
    assert all(float(r[2]) > 0.9 for r in sink_top[:3])  # heads that put nearly all their attention on the first token
    assert all(_head(r[0])[0] < 10 for r in hidden_top)  # hidden-sink heads sit in early layers
    assert [float(r[3]) for r in hidden_top] == sorted((float(r[3]) for r in hidden_top), reverse=True)

    text = cell_stdout(_cell(cells, "first_rank = {head: i + 1"))
    listed = re.findall(rf"^(L\d+H\d+): retrieval score ({NUM}); on plain prose ({NUM}) of its attention per query on "
                        rf"the first token \(rank (\d+) of {N_ALL}\)$", text, re.M)
    assert [_head(h) for h, *_ in listed] == found[:5]
    assert float(listed[0][2]) > 0.5, text  # the top retrieval head is dormant on prose: it sits on the first token
    assert int(_find(r"the first token: (\d+) of (\d+)$", text).group(2)) == len(found)

    text = cell_stdout(_cell(cells, "cal_inputs = needle_haystack("))
    per_prompt = [int(x) for x in _find(r"^hidden sinks per prompt: \[([\d, ]+)\]$", text).group(1).split(", ")]
    assert per_prompt and all(n > 0 for n in per_prompt)  # the long prompts have hidden sinks
    first_ioi, n_ioi, hidden_ioi = map(int, _find(r"^IOI sink positions: first token in (\d+) of (\d+) prompts, "
                                                  r"(\d+) hidden sinks", text).groups())
    assert first_ioi == n_ioi == N_IOI and hidden_ioi == 0  # on IOI only the first token is a sink

    text = cell_stdout(_cell(cells, "def calibrate(task, data, analysis"))
    table = {}
    for m in re.finditer(rf"^(needle, chosen heads|needle, every head|IOI, every head) .*? (hidden|first|all) +({NUM}) "
                         rf"+(\w+) +({NUM}) +({NUM}) +({NUM}) +({NUM}) +({NUM}) +(helps|hurts|no clear change) +(\d+) "
                         r"+(\d+) +(\d+)$", text, re.M):
        name, sink, factor, metric, before, after_, change, lo, hi, verdict, hurt, helped, n = m.groups()
        table[name] = dict(metric=metric, before=float(before), after=float(after_), change=float(change),
                           lo=float(lo), hi=float(hi), verdict=verdict, hurt=int(hurt), helped=int(helped), n=int(n))
        assert float(factor) == 0.5 and sink == ("first" if name.startswith("IOI") else "hidden")
    assert set(table) == {"needle, chosen heads", "needle, every head", "IOI, every head"}, text
    for name, r in table.items():
        assert r["metric"] == ("logit_diff" if name.startswith("IOI") else "logprob")  # higher is better for both
        assert r["hurt"] + r["helped"] <= r["n"] and r["n"] == (N_IOI if name.startswith("IOI") else len(per_prompt))
        assert abs(r["after"] - r["before"] - r["change"]) < 2e-4 and r["lo"] <= r["change"] <= r["hi"]
        expected = "helps" if r["lo"] > 0 else "hurts" if r["hi"] < 0 else "no clear change"
        assert r["verdict"] == expected, (name, r)
    chosen, every = table["needle, chosen heads"], table["needle, every head"]
    # the prose: every head hurts on every prompt; the chosen heads change several times less and, with the suite's
    # small settings, help on every prompt; hundredths of a nat, on a token predicted with probability above 0.9
    assert every["verdict"] == "hurts" and every["hurt"] == every["n"]
    assert chosen["verdict"] == "helps" and chosen["helped"] == chosen["n"]
    assert 3 * abs(chosen["change"]) < abs(every["change"])
    assert max(abs(chosen["change"]), abs(every["change"])) < 0.1 and chosen["before"] > -0.105
    m = _find(rf"^hidden sinks scaled by 0\.5 on the needle step: in the 9 chosen heads {chosen['verdict']} \(change "
              rf"([+-]\d+\.\d+)\), in every head {every['verdict']} \(change ([+-]\d+\.\d+), (\d+)x as large\)$", text)
    assert abs(float(m.group(1)) - chosen["change"]) < 2e-4 and abs(float(m.group(2)) - every["change"]) < 2e-4

    text = cell_stdout(_cell(cells, 'cal = runs["IOI, every head"][0].calibration'))
    marks = re.findall(rf"^  prompt +(\d+) '.*' +([+-]\d+\.\d+) -> ([+-]\d+\.\d+) *(hurt|helped|)$", text, re.M)
    assert len(marks) == N_IOI, text
    for _, b, a, mark in marks:
        if float(a) != float(b):
            assert mark == ("hurt" if float(a) < float(b) else "helped"), (b, a, mark)
    n_hurt, n_all, n_helped = map(int, _find(r"^hurts (\d+) of (\d+) prompts, helps (\d+)$", text).groups())
    assert n_hurt == sum(m == "hurt" for *_, m in marks) == table["IOI, every head"]["hurt"] and n_all == N_IOI
    assert n_helped == sum(m == "helped" for *_, m in marks) == table["IOI, every head"]["helped"]
    assert n_hurt > 0  # the per-prompt view shows where it hurts

    # -- 3. composition ------------------------------------------------------------------------------------------
    composition = composition_scores(model, modes=("q", "k"))
    text = cell_stdout(_cell(cells, "composition = composition_scores(model)"))
    printed = {}
    for m in re.finditer(rf"^([QKV])-composition: random ({NUM}) ± ({NUM}); top pair (L\d+H\d+) -> (L\d+H\d+) score "
                         rf"({NUM}) = ({NUM})x random \(z = (\d+)\); (\d+) of (\d+) pairs above 2x random$", text, re.M):
        mode, mean, std, s, r, score, ratio, z, above, pairs = m.groups()
        printed[mode.lower()] = (s, r)
        mean, std, score = float(mean), float(std), float(score)
        assert score > mean + 3 * std, m.group(0)  # the top pair is far above the random baseline
        assert abs(float(ratio) - score / mean) < 0.1 and int(pairs) == 9 * 9 * 30 * 29 // 2
        assert int(above) < 0.05 * int(pairs)  # the typical pair is close to random
        if mode.lower() in composition.modes:
            assert abs(mean - composition.baseline_mean(mode)) < 1e-4
            top = composition.top(mode, 1).iloc[0]
            assert (s, r) == (top.sender, top.receiver) and abs(score - top[mode.lower()]) < 1e-4
    assert set(printed) == {"q", "k", "v"}, text

    text = cell_stdout(_cell(cells, 'for row in composition.top("k", 5).itertuples():'))
    receivers_k = re.findall(rf"^(L\d+H\d+) -> (L\d+H\d+): K-composition {NUM}x random; the receiver's retrieval score "
                             rf"({NUM}), first-token attention on prose ({NUM})$", text, re.M)
    assert len(receivers_k) == 5 and receivers_k[0][:2] == printed["k"]
    for _, r, score, _ in receivers_k:
        assert abs(float(score) - float(scores.scores[_head(r)])) < 6e-3

    text = cell_stdout(_cell(cells, "channel = composition_svd(model"))
    values = [float(x) for x in _find(r"singular values ([\d., ]+), \.\.\.;", text).group(1).split(", ")]
    assert values == sorted(values, reverse=True)
    r50, r90 = map(int, _find(r"directions holding 50% / 90%: (\d+) / (\d+) of 64$", text).groups())
    assert 1 <= r50 <= r90 <= 64
    ranks, median = _find(rf"^10 random pairs: directions holding 90%: \[([\d, ]+)\] \(median ([\d.]+)\)$",
                          text).groups()
    ranks = [int(x) for x in ranks.split(", ")]
    assert len(ranks) == 10 and statistics.median(ranks) == float(median)
    word = _find(r"^the strongest pair needs (fewer|as many or more) directions", text).group(1)
    assert word == ("fewer" if r90 < float(median) else "as many or more")

    # The path-patching comparison, run again here with the notebook's settings.
    text = cell_stdout(_cell(cells, "paths = path_patching_sweep("))
    receivers = [_head(h) for h in
                 _find(r"^receivers: the queries at END of ([LH\d, ]+) \(layer", text).group(1).split(", ")]
    ioi = ioi_dataset(model, N_IOI, seed=0)
    end = int(ioi.positions["END"][0])
    rows_ = torch.arange(N_IOI)
    sites = [Site(SiteKind.PATTERN, layer, position=end) for layer in range(model.info.n_layers)]
    cache = model.run(ioi.clean_tokens, cache=sites).cache
    movers = []
    for site in sites:
        att = {k: cache[site][rows_, :, ioi.positions[k]].mean(0) for k in ("IO", "S1", "S2")}
        movers += [(site.layer, h) for h in range(model.info.n_heads)
                   if att["IO"][h] >= 0.25 and att["IO"][h] > max(att["S1"][h], att["S2"][h])]
    layer_r = receivers[0][0]
    assert receivers == [h for h in movers if h[0] == layer_r] and len(receivers) >= 2
    first_l, last_l = map(int, _find(rf"^path patching: senders in layers (\d+)-(\d+), {N_IOI} prompts", text).groups())
    assert (first_l, last_l) == (layer_r - BACK, layer_r - 1)
    paths = path_patching_sweep(model, ioi, head_inputs(receivers, "q"), receiver_position="END",
                                layers=list(range(first_l, layer_r)), progress=False)
    comparison = compare_with_path_patching(composition, paths)
    rho, n_pairs, from_ranks, p = _find(rf"^Spearman ({NUM}) over (\d+) sender-receiver pairs \(from the ranks: "
                                        rf"({NUM})\); permutation p = ({NUM})", text).groups()
    assert int(n_pairs) == comparison.n == BACK * model.info.n_heads  # one pair per sender (the receivers as a set)
    assert abs(float(rho) - comparison.spearman) < 2e-3 and abs(float(from_ranks) - float(rho)) < 1.5e-3
    assert 0 < float(p) <= 1
    table_rows = re.findall(rf"^ *(L\d+H\d+) +({NUM}) +(\d+\.\d+) +({NUM}) +(\d+\.\d+)$", text, re.M)
    assert len(table_rows) == 8 and [float(r[2]) for r in table_rows] == sorted(float(r[2]) for r in table_rows)
    mine = comparison.table.set_index("sender")
    for sender, effect, effect_rank, comp, comp_rank in table_rows:
        assert abs(float(comp) - mine.loc[sender, "composition"]) < 1e-4
        assert abs(float(effect) - mine.loc[sender, "path_effect"]) < 2e-3

    # -- 4.-6. summary, files, remote ----------------------------------------------------------------------------
    text = cell_stdout(_cell(cells, 'print(f"retrieval: {len(found)} of'))
    assert f"retrieval: {len(found)} of {N_ALL} heads above 0.1 (top {top_label}," in text
    for name, r in table.items():
        assert f"calibration, {name}: {r['metric']}" in text and f"({r['verdict']}; hurts {r['hurt']} of {r['n']}" \
            in text
    assert f"Spearman {float(rho):.3f} over {n_pairs} pairs, permutation p = {float(p):.3f}" in text
    text = cell_stdout(_cell(cells, "workdir = Path(tempfile.mkdtemp())"))
    assert "retrieval scores identical: True" in text and "sink analysis and calibration identical: True" in text
    assert "shutil.rmtree(workdir)" in _cell(cells, "workdir = Path(tempfile.mkdtemp())").source
    text = cell_stdout(_cell(cells, 'backend="nnsight", remote="local"'))
    assert "CapabilityError (weights): composition scores needs the model's weights" in text, text
    assert "NDIF_API_KEY is not set: the remote run is skipped" in cell_stdout(cells[-1])
