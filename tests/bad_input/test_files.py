"""Bad files in, clear errors out: every loader against every kind of broken file, atomic saves, and standalone
reports whose payload no string can break out of.

Loaders: ``PatchingResult.load``, ``HeadScores.load``, ``Circuit.load``, ``AgreementReport.load``,
``CircuitComparison.load``, ``DissociationResult.load``. Each bad file must raise the loader's :class:`~attnlab.errors.ResultFileError` (for the
circuits kinds, the subclass that is also the domain error) with a message naming the file and the problem; never a
raw ``JSONDecodeError``, ``KeyError``, ``UnicodeDecodeError`` or ``TypeError``. Results are built from small tensors
(no model is loaded)."""

import html.parser
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from attnlab import serialisation
from attnlab.circuits.agreement import AgreementReport, agreement
from attnlab.circuits.circuit import Circuit
from attnlab.circuits.compare import CircuitComparison, compare_circuits
from attnlab.errors import (
    AgreementError,
    AgreementFileError,
    AttnlabError,
    CircuitComparisonError,
    CircuitComparisonFileError,
    CircuitError,
    CircuitFileError,
    ResultFileError,
    ResultFileNotFoundError,
)
from attnlab.dissociation import DissociationResult
from attnlab.heads.results import HeadScores
from attnlab.render.circuit import circuit_payload, circuit_standalone_html
from attnlab.render.views import standalone_html
from attnlab.results import PatchingResult

EVIL = "</script><script>alert(1)</script>"
COMMENT = "<!--<script>"


# -- cheap result objects -----------------------------------------------------------------------------------------
def make_result(values=None, *, tokens=None, model_name="tiny", labels=None) -> PatchingResult:
    values = torch.tensor([[0.5, -0.25, float("nan")], [0.125, 1.0, 0.0]]) if values is None else values
    n_l, n_h = values.shape
    return PatchingResult(
        analysis="activation_patching", component="heads", direction="denoising", dims=("layer", "head"),
        values=values, per_prompt=torch.arange(n_l * n_h * 2, dtype=torch.float32).reshape(n_l, n_h, 2),
        labels=labels or {"layer": [f"L{i}" for i in range(n_l)], "head": [f"H{i}" for i in range(n_h)]},
        index={"layer": list(range(n_l)), "head": list(range(n_h))}, tokens=tokens, prompt_tokens=["a", "b"],
        metric_label="logit difference (logits)", baselines={"clean": 2.5, "corrupted": -1.0},
        model={"name": model_name, "n_layers": n_l}, task={"task": "ioi", "n_prompts": 2}, settings={"seed": 0},
    )


def make_headscores() -> HeadScores:
    g = torch.Generator().manual_seed(0)
    return HeadScores(kinds=["previous_token", "duplicate_token", "induction"], scores=torch.rand(3, 2, 4, generator=g),
                      per_sequence=torch.rand(3, 2, 2, 4, generator=g), definition="diagonal",
                      example_tokens=[1, 2, 3], example_str_tokens=["a", "b", "c"],
                      example_patterns=torch.rand(2, 4, 3, 3, generator=g), model={"name": "tiny"})


def make_circuit() -> Circuit:
    return Circuit(model={"name": "tiny", "n_layers": 2, "n_heads": 4}, task={"task": "ioi", "n_prompts": 8},
                   edges=[("L0H1->L1H2.q", 0.75), ("input->L0H0.k", -0.5), ("L1H2->logits", 0.125)],
                   selection={"rule": "top_n", "n_edges": 3}, provenance={"method": "eap", "steps": 1})


def make_agreement() -> AgreementReport:
    exact = make_result(torch.tensor([[0.5, 0.1, 0.3], [0.2, 0.3, 0.0]]))
    attr = make_result(torch.tensor([[0.4, 0.1, 0.2], [0.3, 0.2, 0.1]]))
    return agreement(exact, attr)


def make_comparison() -> CircuitComparison:
    return compare_circuits([(9, 9), (7, 3)], [(9, 9), (5, 5)], names=("IOI", "CO"), roles_a={(9, 9): "name mover"})


def make_dissociation() -> DissociationResult:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(6, 2, generator=g) + 1
    ablated = clean[None] - torch.rand(3, 6, 2, generator=g)
    ablated[2] = float("nan")
    return DissociationResult(
        components=["L0H0", "MLP1", "ATTN1"], layer=[0, 1, 1], head=[0, None, None],
        metrics=["accuracy", "logit_diff"], metric_labels=["top-1 accuracy", "logit difference (logits)"],
        clean=clean, ablated=ablated, kinds=["recall"] * 3 + ["reasoning"] * 3, families=["a"] * 3 + ["b"] * 3,
        prompts=[COMMENT, EVIL, "x", "y", "z", "w"], model={"name": "tiny", "n_layers": 2, "n_heads": 2},
        items={"task": "recall_reasoning"}, complete=False,
        settings={"granularity": "components", "ablation": "mean", "selectivity_metric": "logit_diff",
                  "n_bootstrap": 200, "seed": 0, "level": 0.95, "correction": "holm", "alpha": 0.05})


@dataclass(frozen=True)
class Kind:
    """One saved kind: how to build one, its loader, its format and the error its loader raises."""

    name: str
    make: object
    load: object
    fmt: serialisation.RecordFormat
    error: type
    domain: type  # the error type callers caught before (still caught)


KINDS = [
    Kind("PatchingResult", make_result, PatchingResult.load, serialisation.RESULT, ResultFileError, AttnlabError),
    Kind("HeadScores", make_headscores, HeadScores.load, serialisation.HEADSCORES, ResultFileError, AttnlabError),
    Kind("Circuit", make_circuit, Circuit.load, serialisation.CIRCUIT, CircuitFileError, CircuitError),
    Kind("AgreementReport", make_agreement, AgreementReport.load, serialisation.AGREEMENT, AgreementFileError,
         AgreementError),
    Kind("CircuitComparison", make_comparison, CircuitComparison.load, serialisation.CIRCUIT_COMPARISON,
         CircuitComparisonFileError, CircuitComparisonError),
    Kind("DissociationResult", make_dissociation, DissociationResult.load, serialisation.DISSOCIATION,
         ResultFileError, AttnlabError),
]


def _other(kind: Kind) -> Kind:
    """Another kind, to save a file of the wrong kind."""
    return KINDS[(KINDS.index(kind) + 1) % len(KINDS)]


def _record(kind: Kind) -> dict:
    return json.loads(json.dumps(kind.make().to_dict()))


def _with_version(kind: Kind, version) -> dict:
    rec = _record(kind)
    if kind.fmt.version_in_name:
        rec["format"] = f"{kind.fmt.family}.v{version}"
    else:
        rec["format_version"] = version
    return rec


def _wrong_type(kind: Kind) -> tuple[dict, str]:
    """A record whose first typed required key holds a value of a JSON type it may not have."""
    rec = _record(kind)
    key = next(k for k in kind.fmt.required if k in kind.fmt.types)
    rec[key] = next(v for v in ({"x": 1}, "text", [1], 1.5) if not isinstance(v, kind.fmt.types[key]))
    return rec, f"the key {key!r} of"


_MALFORMED = {  # valid keys and types, contents that do not make the object
    "PatchingResult": ({"labels": {"layer": ["L0"], "head": ["H0"]}}, "labels['layer'] must have 2 entries"),
    "HeadScores": ({"scores": [[1.0, 2.0]]}, "scores must be [kind, layer, head]"),
    "Circuit": ({"edges": [["L0H1->L1H2.q"]]}, "'edges' must be [edge name, score] pairs"),
    "AgreementReport": ({"points": "x"}, "the key 'points'"),
    "CircuitComparison": ({"heads_a": ["not a head"]}, "(layer, head) pairs"),
    "DissociationResult": ({"ablated": [[1.0, 2.0]]}, "'ablated' must have shape"),
}


# -- the bad files: (id, build(kind, path) -> bytes | dict | None, message fragment(kind) ) ---------------------------
def _bytes(b):
    return lambda kind: b


BAD_FILES = [
    ("missing", lambda kind: None, lambda kind: "does not exist"),
    ("folder", lambda kind: "folder", lambda kind: "is a folder"),
    ("empty", _bytes(b""), lambda kind: "is empty"),
    ("whitespace", _bytes(b"  \n\t\n"), lambda kind: "is empty"),
    ("truncated", lambda kind: json.dumps(_record(kind)).encode()[:40], lambda kind: "truncated"),
    ("truncated-at-half", lambda kind: (lambda t: t[:len(t) // 2])(json.dumps(_record(kind), indent=1).encode()),
     lambda kind: "truncated"),
    ("random-bytes", _bytes(bytes(range(255, 0, -1)) * 4), lambda kind: "is a binary file"),
    ("png-header", _bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"), lambda kind: "is a binary file"),
    ("nul-bytes", _bytes(b'{"format":\x00\x00\x00'), lambda kind: "is a binary file"),
    ("not-json-text", _bytes(b"hello, world\n"), lambda kind: "is not valid JSON"),
    ("json-list", _bytes(b"[1, 2, 3]"), lambda kind: "holds a list, not a JSON object"),
    ("json-number", _bytes(b"42"), lambda kind: "holds a number, not a JSON object"),
    ("json-null", _bytes(b"null"), lambda kind: "holds null, not a JSON object"),
    ("dict-without-format", lambda kind: {"hello": 1}, lambda kind: "has no 'format' key"),
    ("format-not-a-string", lambda kind: {"format": 3}, lambda kind: "its 'format' is a number"),
    ("foreign-format", lambda kind: {"format": "com.example.thing", "x": 1}, lambda kind: "'com.example.thing'"),
    ("unknown-attnlab-format", lambda kind: {"format": "attnlab.nonsense"}, lambda kind: "unknown attnlab kind"),
    ("another-attnlab-kind", lambda kind: _record(_other(kind)),
     lambda kind: f"is an attnlab {_other(kind).fmt.what} (format {_other(kind).fmt.name!r}), not"),
    ("another-kind-names-its-loader", lambda kind: _record(_other(kind)),
     lambda kind: f"load it with {_other(kind).fmt.loader}"),
    ("newer-version", lambda kind: _with_version(kind, 2), lambda kind: "written by a newer attnlab"),
    ("newer-version-numbers", lambda kind: _with_version(kind, 2),
     lambda kind: "format 2); this version reads format 1"),
    ("older-version", lambda kind: _with_version(kind, 0), lambda kind: "old or invalid"),
    ("version-not-an-integer", lambda kind: {**_record(kind), "format_version": "1"},
     lambda kind: "unexpected key 'format_version'" if kind.fmt.version_in_name else
     "'format_version' must be an integer"),
    ("version-missing", lambda kind: ({**_record(kind), "format": kind.fmt.family} if kind.fmt.version_in_name else
                                      {k: v for k, v in _record(kind).items() if k != "format_version"}),
     lambda kind: "has no version" if kind.fmt.version_in_name else "missing the key 'format_version'"),
    ("missing-keys", lambda kind: {k: v for k, v in _record(kind).items() if k not in kind.fmt.required[:2]},
     lambda kind: f"missing the keys {kind.fmt.required[0]!r}, {kind.fmt.required[1]!r}"
     if kind.fmt.required[0] < kind.fmt.required[1] else
     f"missing the keys {kind.fmt.required[1]!r}, {kind.fmt.required[0]!r}"),
    ("missing-one-key", lambda kind: {k: v for k, v in _record(kind).items() if k != kind.fmt.required[-1]},
     lambda kind: f"missing the key {kind.fmt.required[-1]!r}"),
    ("unexpected-keys", lambda kind: {**_record(kind), "zz_extra": 1, "aa_extra": [2]},
     lambda kind: "unexpected keys 'aa_extra', 'zz_extra'"),
    ("wrong-type", lambda kind: _wrong_type(kind)[0], lambda kind: _wrong_type(kind)[1]),
    ("malformed-contents", lambda kind: {**_record(kind), **_MALFORMED[kind.name][0]},
     lambda kind: _MALFORMED[kind.name][1]),
]


def _write_bad(kind: Kind, build, tmp_path: Path) -> Path:
    path = tmp_path / f"bad-{kind.name}.json"
    content = build(kind)
    if content is None:
        return path
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_every_loader_names_the_file_and_the_problem(kind, case, tmp_path):
    case_id, build, fragment = case
    path = _write_bad(kind, build, tmp_path)
    expected = ResultFileNotFoundError if case_id == "missing" else kind.error
    with pytest.raises(expected) as info:
        kind.load(path)
    err = info.value
    message = str(err)
    assert fragment(kind) in message, message
    assert str(path) in message and err.path == path
    assert isinstance(err, ResultFileError) and isinstance(err, AttnlabError)
    if case_id == "missing":
        assert isinstance(err, FileNotFoundError)
    else:
        assert isinstance(err, kind.domain), "callers catching the old error type still catch it"
    assert type(err) not in (json.JSONDecodeError, KeyError, UnicodeDecodeError, TypeError)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_from_dict_checks_the_same_way_and_names_the_caller(kind):
    owner = kind.name
    with pytest.raises(kind.error, match=f"the dictionary given to {owner}.from_dict is an attnlab"):
        type(kind.make()).from_dict(_record(_other(kind)))
    with pytest.raises(kind.domain, match="unexpected key 'extra'"):
        type(kind.make()).from_dict({**_record(kind), "extra": 1})
    with pytest.raises(kind.error, match="holds a list"):
        type(kind.make()).from_dict([])


def test_the_circuit_view_checks_the_record_it_reads():
    with pytest.raises(CircuitFileError, match="load it with attnlab.PatchingResult.load"):
        circuit_payload(make_result().to_dict())
    with pytest.raises(CircuitError, match="written by a newer attnlab"):
        circuit_payload({**make_circuit().to_dict(), "format": "attnlab.circuit.v2"})


# -- round trips and the existing formats -------------------------------------------------------------------------
def _same(kind: Kind, a, b) -> bool:
    return a.to_dict() == b.to_dict() if kind.name in ("PatchingResult", "HeadScores", "DissociationResult") else a == b


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_round_trip(kind, tmp_path):
    obj = kind.make()
    path = obj.save(tmp_path / "saved.json")
    assert path == tmp_path / "saved.json"
    back = kind.load(path)
    assert _same(kind, back, obj)
    assert json.loads(path.read_text())["format"] == kind.fmt.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved.json"], "no temporary file left behind"
    assert _same(kind, kind.load(obj.save(str(tmp_path / "saved.json"))), obj)  # str paths; overwriting works


def test_float32_values_and_nan_survive_exactly(tmp_path):
    r = make_result(torch.tensor([[1 / 3, float("nan"), -2e-8], [7.1, 0.0, 1e30]]))
    back = PatchingResult.load(r.save(tmp_path / "r.json"))
    assert torch.equal(back.values.nan_to_num(9.0), r.values.nan_to_num(9.0)) and back.values.dtype == torch.float32


# Files as the code before the serialisation module wrote them (same format names and versions).
OLD_RESULT = ('{"format": "attnlab.result", "format_version": 1, "analysis": "activation_patching", "component": '
              '"heads", "direction": "denoising", "dims": ["layer", "head"], "values": [[0.5, null]], "per_prompt": '
              'null, "labels": {"layer": ["L0"], "head": ["H0", "H1"]}, "index": {"layer": [0], "head": [0, 1]}, '
              '"tokens": null, "baselines": {"clean": 1.0, "corrupted": 0.0}, "model": {"name": "gpt2"}, "task": {}, '
              '"settings": {}, "complete": true, "layers_done": [0]}')  # saved before metric names and labels
OLD_CIRCUIT = ('{\n "format": "attnlab.circuit.v1",\n "model": {\n  "name": "gpt2"\n },\n "task": {\n  "task": "ioi"'
               '\n },\n "edges": [\n  [\n   "L0H1->L1H2.q",\n   0.5\n  ]\n ],\n "selection": {},\n "provenance": '
               '{\n  "method": "eap"\n }\n}')
OLD_HEADSCORES = ('{"format": "attnlab.headscores", "format_version": 1, "kinds": ["induction"], "scores": [[[0.5]]], '
                  '"per_sequence": [[[[0.5]]]], "definition": "diagonal", "example_tokens": [], '
                  '"example_str_tokens": [], "example_patterns": null, "model": {}, "task": {}, "settings": {}, '
                  '"ablation": null, "prefix": null}')  # saved before the copying scores


@pytest.mark.parametrize("loader,text", [(PatchingResult.load, OLD_RESULT), (Circuit.load, OLD_CIRCUIT),
                                         (HeadScores.load, OLD_HEADSCORES)], ids=["result", "circuit", "headscores"])
def test_files_written_by_earlier_code_still_load(loader, text, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(text)
    obj = loader(path)
    assert obj.to_dict()["format"] == json.loads(text)["format"]


def test_circuit_files_keep_their_layout(tmp_path):
    c = make_circuit()
    path = c.save(tmp_path / "c.json")
    assert path.read_text() == json.dumps(c.to_dict(), indent=1) and "format_version" not in c.to_dict()


# -- saving -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_a_write_failing_midway_leaves_the_existing_file_intact(kind, tmp_path, monkeypatch):
    path = kind.make().save(tmp_path / "keep.json")
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:len(text) // 2])
            self.f.flush()
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(serialisation.os, "fdopen", lambda *a, **kw: HalfWriter(real_fdopen(*a, **kw)))
    with pytest.raises(kind.error, match="No space left on device.*existing file is left unchanged"):
        kind.make().save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"], "the temporary file is removed"


def test_an_interrupted_save_leaves_the_existing_file_intact(tmp_path, monkeypatch):
    path = make_result().save(tmp_path / "r.json")
    before = path.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialisation.os, "fsync", interrupted)  # after the data is written, before the move
    with pytest.raises(KeyboardInterrupt):
        make_result(model_name="other").save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_record_json_cannot_hold_fails_before_touching_the_file(tmp_path, monkeypatch):
    path = make_result().save(tmp_path / "r.json")
    before = path.read_bytes()
    bad = make_result()
    bad.baselines["clean"] = float("nan")
    with pytest.raises(ResultFileError, match="cannot be written as JSON"):
        bad.save(path)
    monkeypatch.setattr(serialisation.json, "dumps", lambda *a, **kw: (_ for _ in ()).throw(TypeError("boom")))
    with pytest.raises(ResultFileError, match=r"r\.json: it cannot be written as JSON \(boom\)"):
        make_result().save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_saving_needs_an_existing_folder_and_a_file_name(kind, tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(ResultFileNotFoundError, match=f"the folder {missing} does not exist; create it first"):
        kind.make().save(missing / "x.json")
    assert not (tmp_path / "no").exists(), "no folder is created"
    with pytest.raises(kind.error, match="is a folder"):
        kind.make().save(tmp_path)
    with pytest.raises(kind.error, match="must be a str or pathlib.Path"):
        kind.make().save(None)


def test_saving_over_a_file_keeps_its_permissions(tmp_path):
    path = make_result().save(tmp_path / "r.json")
    os.chmod(path, 0o640)
    make_result(model_name="other").save(path)
    assert path.stat().st_mode & 0o777 == 0o640
    assert PatchingResult.load(path).model["name"] == "other"


# -- standalone HTML reports ----------------------------------------------------------------------------------------
class _Scripts(html.parser.HTMLParser):
    """The text of every <script> element, as an HTML parser splits the document."""

    def __init__(self):
        super().__init__()
        self.scripts, self._open = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._open = [dict(attrs), ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag == "script" and self._open is not None:
            self.scripts.append(tuple(self._open))
            self._open = None


def _payload_of(doc: str):
    parser = _Scripts()
    parser.feed(doc)
    parser.close()
    assert len(parser.scripts) == 3 and doc.count("</script>") == 3, "only the report's own script elements"
    (attrs, text), = [s for s in parser.scripts if s[0].get("id") == "attnlab-payload"]
    assert "<" not in text and ">" not in text and "&" not in text, "no markup-significant character in the payload"
    return json.loads(text)


def test_script_json_escapes_everything_that_could_end_the_element():
    value = {"s": f"{EVIL} {COMMENT} a & b > c \u2028\u2029 end"}
    text = serialisation.script_json(value)
    assert not any(c in text for c in "<>&\u2028\u2029")
    assert "\\u003c/script\\u003e" in text and json.loads(text) == value


def test_heatmap_report_keeps_hostile_tokens_and_labels_inside_the_payload():
    r = make_result(tokens=[EVIL, COMMENT, "&amp;"], model_name=f"model {EVIL}",
                    labels={"layer": [EVIL, COMMENT], "head": ["H0", COMMENT, EVIL]})
    r.dims = ("layer", "pos")  # a position axis, so tokens are shown
    r.labels = {"layer": [EVIL, COMMENT], "pos": ["S", COMMENT, EVIL]}
    r.index = {"layer": [0, 1], "pos": [0, 1, 2]}
    payload = r.heatmap_payload()
    data = _payload_of(standalone_html(payload, title=EVIL))
    assert data == json.loads(json.dumps(payload))
    assert data["col_tokens"] == [EVIL, COMMENT, "&amp;"] and data["row_labels"] == [EVIL, COMMENT]
    assert EVIL in data["subtitle"]


def test_circuit_report_keeps_hostile_names_and_provenance_inside_the_payload():
    c = make_circuit()
    c.model["name"] = EVIL
    c.task["task"] = COMMENT
    c.provenance["note"] = f"{COMMENT} {EVIL}"
    data = _payload_of(circuit_standalone_html(c, title=COMMENT))
    assert data == json.loads(json.dumps(circuit_payload(c, title=COMMENT)))
    assert data["model_name"] == EVIL and ["note", f"{COMMENT} {EVIL}"] in data["provenance"]
    assert data["title"] == COMMENT
