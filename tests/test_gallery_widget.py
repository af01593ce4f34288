"""The head-gallery widget's controller and widget, driven from Python (no browser), on a tiny model.

A run (block by block from the residual stream) must give exactly :func:`~attnlab.heads.scores.score_heads` on the
same sequences; Cancel must keep the blocks finished (equal to the full run's scores) and leave the others NaN; a
clicked head's detail must be the kernel's: its pattern from the run and
:func:`~attnlab.heads.verification.ablation_effects` of that head.
"""

import math

import pytest
import torch

from attnlab.errors import ExplorerError
from attnlab.gallery_widget.controller import BATCH_SIZE, GalleryController
from attnlab.heads import ablation_effects, score_heads
from attnlab.tasks.induction import repeated_random_tokens

N_SEQ = BATCH_SIZE + 8  # two passes per block


@pytest.fixture(scope="module")
def reference(tiny):
    data = repeated_random_tokens(tiny, 5, N_SEQ, seed=1)
    return data, score_heads(tiny, data)


@pytest.fixture(scope="module")
def finished(tiny):
    c = GalleryController(tiny, seq_len=5, n_sequences=N_SEQ, seed=1)
    events = []
    c.on_change(events.append)
    run = c.run()
    return c, run, events


def test_a_run_equals_score_heads(tiny, reference, finished):
    data, ref = reference
    c, run, events = finished
    assert torch.equal(run.data.tokens, data.tokens)
    torch.testing.assert_close(run.result.per_sequence, ref.per_sequence, atol=1e-5, rtol=0)
    torch.testing.assert_close(run.result.scores, ref.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(run.result.example_patterns, ref.example_patterns, atol=1e-5, rtol=0)
    assert run.complete and run.layers_done == list(range(tiny.info.n_layers))
    total = 2 * tiny.info.n_layers
    assert c.progress == (total, total) and c.status == "done"
    assert events.count("progress") >= total and events.count("result") >= tiny.info.n_layers
    assert c.eta is None and c.elapsed > 0


def test_cancel_keeps_the_finished_blocks(tiny, reference):
    _, ref = reference
    c = GalleryController(tiny, seq_len=5, n_sequences=N_SEQ, seed=1)

    def cancel_in_block_two(what):
        if what == "progress" and c.progress[0] == 3:  # the first pass of block 1: block 1 is not kept
            c.cancel()

    c.on_change(cancel_in_block_two)
    run = c.run()
    assert not run.complete and run.layers_done == [0] and c.status == "cancelled"
    assert "1 of 3 blocks" in c.message
    torch.testing.assert_close(run.result.scores[:, 0], ref.scores[:, 0], atol=1e-5, rtol=0)
    assert run.result.scores[:, 1:].isnan().all()
    assert run.result.example_patterns[1:].isnan().all()
    assert run.result.settings["complete"] is False
    assert run.result.ranking("induction")[0][0] == 0  # the heads not computed rank last
    # drawn with matplotlib: the blocks not reached are hatched "not computed", the scale stays [0, 1]
    import matplotlib

    matplotlib.use("Agg")
    fig = run.result.plot()
    (im,) = fig.axes[0].images
    assert im.get_clim() == (0.0, 1.0) and im.get_array().mask[1:].all() and not im.get_array().mask[0].any()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["not computed"]
    # the not-computed heads are null in the gallery payload
    from attnlab.render.gallery import head_gallery

    payload = head_gallery(run.result)
    assert payload["scores"][2][1] == [None] * tiny.info.n_heads


def test_a_click_is_answered_by_the_kernel(tiny, reference, finished):
    data, ref = reference
    c, run, _ = finished
    assert c.select("L1H2") == (1, 2)
    d = c.detail
    assert d["computed"] and (d["layer"], d["head"]) == (1, 2)
    for i, kind in enumerate(ref.kinds):
        assert d["scores"][kind] == pytest.approx(float(ref.scores[i, 1, 2]), abs=1e-5)
        assert d["std"][kind] == pytest.approx(float(ref.std(kind)[1, 2]), abs=1e-5)
    pattern = torch.tensor(d["pattern"])
    torch.testing.assert_close(pattern, ref.example_patterns[1, 2].float(), atol=1e-4, rtol=0)
    abl = ablation_effects(tiny, data, [(1, 2)], methods=("zero", "mean"))
    assert d["ablation"] == pytest.approx({m: abl.effect(1, 2, m) for m in ("zero", "mean")}, abs=1e-6)
    assert d["ablation_label"] == abl.label
    assert d["tokens"] == tiny.to_str_tokens(data.tokens[0])
    assert (1, 2) in run.ablations  # cached: a second click does not recompute
    c.select(None)
    assert c.selected is None and c.detail is None


def _max_seq_len(model) -> int:
    """Two repeats (and BOS where the model prepends one) fit the context."""
    return (model.info.n_ctx - int(model.info.prepend_bos)) // 2


def test_bad_input_is_refused_before_any_work(tiny):
    with pytest.raises(ExplorerError, match=rf"'seq_len' must be an integer in \[2, {_max_seq_len(tiny)}\]"):
        GalleryController(tiny, seq_len=40)
    c = GalleryController(tiny)
    for name, value, pattern in [("n_sequences", 0, "n_sequences"), ("seed", -1, "seed"), ("seq_len", 2.5, "seq_len"),
                                 ("layers", 1, "unknown control")]:
        with pytest.raises(ExplorerError, match=pattern):
            c.set_control(name, value)
    assert c.controls == {"seq_len": 10, "n_sequences": 8, "seed": 0}
    with pytest.raises(ExplorerError, match="run the gallery first"):
        c.select((0, 0))
    c.run()
    with pytest.raises(ExplorerError, match=r"layer in \[0, 3\)"):
        c.select((3, 0))


def test_widget_state_and_messages(tiny):
    import attnlab

    w = attnlab.HeadGalleryWidget(tiny, seq_len=4, n_sequences=3, seed=2)
    assert w.controls == {"seq_len": 4, "n_sequences": 3, "seed": 2}
    assert w.limits["seq_len"] == [2, _max_seq_len(tiny)]
    assert "no run yet" in w._repr_mimebundle_()[0]["text/html"]
    w._on_message(w, {"type": "controls", "controls": {"seq_len": 99}}, [])  # rejected: the view is reset
    assert w.controls["seq_len"] == 4 and "seq_len" in w.message
    w.run()
    assert w.status == "done" and w.progress == [tiny.info.n_layers, tiny.info.n_layers]
    p = w.payload
    result = w.result
    for k, kind in enumerate(result.kinds):
        for layer in range(tiny.info.n_layers):
            for head in range(tiny.info.n_heads):
                assert p["scores"][k][layer][head] == pytest.approx(float(result.scores[k, layer, head]), abs=1e-4)
    assert all(h["pattern"] is None for h in p["heads"])  # patterns travel on a click only
    assert p["selected"] == list(max(((layer, head) for layer in range(3) for head in range(4)),
                                     key=lambda lh: float(result.score("induction")[lh])))
    w._on_message(w, {"type": "select", "head": [2, 1]}, [])
    assert w.selected == (2, 1) and w.selected_head == [2, 1]
    assert w.detail_payload["layer"] == 2 and w.detail_payload["pattern"] is not None
    assert all(v is None or math.isfinite(v) for v in w.detail_payload["scores"].values())
    w.selected = "L0H3"
    assert w.detail_payload["head"] == 3
    html = w._repr_mimebundle_()[0]["text/html"]
    assert "cannot run Jupyter widgets" in html and "induction" in html
