"""Payload builders of issue 14's views: retrieval and sink tabs of the head gallery, and the composition view.

The payloads must carry the results' own numbers (checked against the result tensors and against
:func:`~attnlab.heads.composition.composition_svd`), be plain JSON (no NaN), keep token and model strings as plain
text in the payload and escaped in the HTML fallbacks, and refuse results that do not belong together.
"""

import json

import pytest
import torch

from attnlab.errors import ArgumentError, ArgumentTypeError
from attnlab.heads.composition import compare_with_path_patching, composition_svd
from attnlab.render.composition import CompositionView, composition_view
from attnlab.render.contract import COMPOSITION_MIME, HEADGALLERY_MIME
from attnlab.render.gallery import HeadGallery, head_gallery
from tests.render_heads_extra.build import COMPOSITION_BUILD, GALLERY_BUILD


@pytest.fixture(scope="module")
def built() -> dict:
    scope: dict = {}
    exec(GALLERY_BUILD, scope)  # noqa: S102  (our own constant code)
    exec(COMPOSITION_BUILD, scope)  # noqa: S102
    return scope


def _plain_json(obj) -> dict:
    return json.loads(json.dumps(obj, allow_nan=False))


def test_gallery_tabs_carry_the_results_numbers(built):
    heads, retrieval, sinks = built["heads"], built["retrieval"], built["sinks"]
    payload = _plain_json(heads.gallery_payload(retrieval, sinks))
    assert payload["kinds"] == [*heads.kinds, "retrieval", "sink", "first_token", "hidden_sink"]
    n = len(payload["kinds"])
    assert len(payload["kind_labels"]) == len(payload["kind_units"]) == len(payload["kind_ranges"]) == n
    assert len(payload["kind_descriptions"]) == len(payload["scores"]) == len(payload["score_std"]) == n
    k = payload["kinds"].index("retrieval")
    torch.testing.assert_close(torch.tensor(payload["scores"][k]), retrieval.scores, atol=5e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(payload["score_std"][k]), retrieval.per_input.std(0), atol=5e-5, rtol=0)
    assert payload["kind_units"][k] == "fraction of needle tokens" and payload["kind_ranges"][k] == [0.0, 1.0]
    assert "0.1" in payload["kind_descriptions"][k]  # the threshold is stated
    for i, kind in enumerate(sinks.kinds):
        j = payload["kinds"].index(kind)
        torch.testing.assert_close(torch.tensor(payload["scores"][j]), sinks.scores[i], atol=5e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(payload["score_std"][j]), sinks.per_sequence[i].std(0), atol=5e-5,
                                   rtol=0)
    assert payload["scores"][payload["kinds"].index("sink")][1][2] == pytest.approx(1.0, abs=1e-3)  # the planted sink
    # the original tabs are unchanged by the extras
    assert payload["scores"][:3] == _plain_json(heads.gallery_payload())["scores"]
    assert payload["selected"] == _plain_json(heads.gallery_payload())["selected"]
    assert any("'<5>' at 0" in note for note in payload["notes"])  # token text, raw in the payload


def test_retrieval_and_sinks_display_as_galleries_on_their_own(built):
    retrieval, sinks = built["retrieval"], built["sinks"]
    bundle = retrieval._repr_mimebundle_()
    assert set(bundle) == {HEADGALLERY_MIME, "text/html", "text/plain"}
    payload = _plain_json(bundle[HEADGALLERY_MIME])
    assert payload["kinds"] == ["retrieval"] and payload["ablation_label"] == "" and payload["tokens"] == []
    assert len(payload["heads"]) == 8 and all(h["pattern"] is None for h in payload["heads"])
    top = retrieval.ranking()[0]
    assert payload["selected"] == list(top)
    sink_payload = _plain_json(sinks._repr_mimebundle_()[HEADGALLERY_MIME])
    assert sink_payload["kinds"] == ["sink", "first_token", "hidden_sink"] and sink_payload["selected"] == [1, 2]
    both = _plain_json(head_gallery(sinks, extra=[retrieval]))
    assert both["kinds"] == ["sink", "first_token", "hidden_sink", "retrieval"]


def test_gallery_html_fallback_is_escaped(built):
    sinks = built["sinks"]
    evil = type(sinks).from_dict(sinks.to_dict())
    evil.str_tokens[0][0] = "<script>alert(1)</script>"
    evil.model["name"] = "<img src=x onerror=alert(1)>"
    shown = HeadGallery(evil, built["retrieval"])
    bundle = shown._repr_mimebundle_()
    html = bundle["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    assert any("<script>alert(1)</script>" in n for n in bundle[HEADGALLERY_MIME]["notes"])  # raw text in the payload
    assert "HeadGallery" in bundle["text/plain"]
    assert "attention probability per query" in html  # units reach the fallback too


def test_gallery_refuses_mismatched_or_repeated_results(built):
    heads, retrieval = built["heads"], built["retrieval"]
    other = type(retrieval).from_dict(retrieval.to_dict())
    other.scores = torch.zeros(3, 4)
    other.per_input = torch.zeros(len(other.depths), 3, 4)
    with pytest.raises(ArgumentError, match=r"3 layers x 4 heads but the gallery's first result has 2 x 4"):
        heads.gallery_payload(other)
    with pytest.raises(ArgumentError, match="already has a 'retrieval' tab"):
        heads.gallery_payload(retrieval, retrieval)
    with pytest.raises(ArgumentTypeError, match="RetrievalScores or SinkAnalysis"):
        heads.gallery_payload(built["composition"])


def test_composition_view_payload(built):
    composition, tiny3, comparison = built["composition"], built["tiny3"], built["comparison"]
    payload = _plain_json(composition_view(composition, model=tiny3, comparison=comparison, top_n=3))
    assert payload["kind"] == "composition" and payload["version"] == 1 and payload["mode"] == "k"
    assert payload["model_name"] == "<i>tiny3</i>"  # plain text in the payload
    assert payload["senders"] == [[a, b] for a in range(2) for b in range(4)]
    assert payload["receivers"] == [[a, b] for a in range(1, 3) for b in range(4)]
    for m in ("q", "k", "v"):
        matrix = payload["matrices"][m]
        for i, (ls, hs) in enumerate(payload["senders"]):
            for j, (lr, hr) in enumerate(payload["receivers"]):
                if lr <= ls:
                    assert matrix[i][j] is None
                else:
                    assert matrix[i][j] == pytest.approx(float(composition.score(m)[ls, hs, lr, hr]), abs=1e-6)
        assert payload["baseline"][m]["mean"] == pytest.approx(composition.baseline_mean(m), abs=1e-6)
        assert payload["baseline"][m]["draws"] == 8
        assert payload["ranges"][m][1] >= max(v for row in matrix for v in row if v is not None)
    # the top 3 pairs of every mode, plus the 3 largest |effect| pairs of the comparison, each with composition_svd's
    # singular values
    for m in ("q", "k", "v"):
        top = {((r.sender_layer, r.sender_head), (r.receiver_layer, r.receiver_head))
               for r in composition.top(m, 3).itertuples()}
        have = {(tuple(c["sender"]), tuple(c["receiver"])) for c in payload["channels"] if c["mode"] == m}
        assert top <= have
    compared = {(tuple(c["sender"]), tuple(c["receiver"])) for c in payload["channels"] if c["mode"] == "k"}
    assert {((0, 1), (2, 0)), ((1, 3), (2, 1)), ((0, 2), (1, 1))} <= compared and ((0, 0), (2, 3)) not in compared
    for c in payload["channels"]:
        ch = composition_svd(tiny3, tuple(c["sender"]), tuple(c["receiver"]), mode=c["mode"])
        assert c["singular_values"] == pytest.approx(ch.singular_values.tolist(), abs=1e-6)
        assert c["score"] == pytest.approx(ch.score, abs=1e-6) and c["rank90"] == ch.rank_for(0.9)
    pp = payload["path_patching"]
    assert pp["mode"] == "k" and pp["n"] == 4 and pp["spearman"] == pytest.approx(comparison.spearman, abs=1e-4)
    effects = {(tuple(p["sender"]), tuple(map(tuple, p["receivers"]))): p["effect"] for p in pp["pairs"]}
    assert effects[((0, 1), ((2, 0),))] == 0.8 and effects[((1, 3), ((2, 1),))] == -0.3


def test_composition_view_without_model_and_bundles(built):
    composition = built["composition"]
    bundle = composition._repr_mimebundle_()
    assert set(bundle) == {COMPOSITION_MIME, "text/html", "text/plain"}
    payload = _plain_json(bundle[COMPOSITION_MIME])
    assert payload["channels"] == [] and payload["top_n"] == 0 and payload["path_patching"] is None
    view = composition.view(built["tiny3"], top_n=1, mode="v")
    assert isinstance(view, CompositionView) and view.payload["mode"] == "v"
    html = view._repr_mimebundle_()["text/html"]
    assert "&lt;i&gt;tiny3&lt;/i&gt;" in html and "<i>" not in html
    assert "top V-composition" in html


def test_composition_view_refuses_bad_input(built):
    composition, tiny3 = built["composition"], built["tiny3"]
    with pytest.raises(ArgumentError, match=r"'top_n' must be at least 0 \(got -1\)"):
        composition_view(composition, top_n=-1)
    with pytest.raises(ArgumentTypeError, match="'top_n' must be an integer"):
        composition_view(composition, top_n="many")
    with pytest.raises(ArgumentTypeError, match="must be a CompositionScores"):
        composition_view(built["retrieval"])
    with pytest.raises(ArgumentTypeError, match="must be a CompositionComparison"):
        composition_view(composition, comparison={"k": 1})
    with pytest.raises(ArgumentError, match="the model has 2 layers x 4 heads but the scores 3 x 4"):
        composition_view(composition, model=built["model"])
    only_k = type(composition)(modes=["k"], scores=composition.scores[1:2], baseline=composition.baseline[1:2],
                               model=composition.model, settings=composition.settings)
    v_cmp = compare_with_path_patching(composition, {((0, 1), (2, 0)): 0.5}, mode="v")
    with pytest.raises(ArgumentError, match="V-composition, which these scores do not have"):
        composition_view(only_k, comparison=v_cmp)
    with pytest.raises(ArgumentError, match="was not computed"):
        composition_view(only_k, mode="q")
    assert tiny3.info.n_layers == 3
