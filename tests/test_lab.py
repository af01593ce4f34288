"""attnlab.Lab: one widget hosting every analysis, a tab each, built when first opened."""

import ipywidgets
import pytest
import torch

from attnlab import Lab
from attnlab.circuit_search.widget import CircuitSearch
from attnlab.errors import AttnlabError
from attnlab.explorer.widget import Explorer
from attnlab.gallery_widget.widget import HeadGalleryWidget
from attnlab.heads import score_heads
from tests.test_circuit_search import TOY


def test_the_first_tab_opens_at_once_and_the_others_when_selected(tiny):
    lab = Lab(tiny, TOY, tabs=["patching", "circuits", "heads"],
              options={"patching": {"n_prompts": 2}, "heads": {"seq_len": 6, "n_sequences": 2}})
    assert [lab.get_title(i) for i in range(3)] == ["Activation patching", "Circuit search", "Head scores"]
    assert isinstance(lab.children[0], Explorer)
    assert lab.explorer is lab.children[0]
    assert lab.explorer.controller.controls["n_prompts"] == 2
    assert all(isinstance(c, ipywidgets.Label) for c in lab.children[1:])  # not built until opened

    lab.selected_index = 2  # as a click on the tab does
    gallery = lab.children[2]
    assert isinstance(gallery, HeadGalleryWidget) and lab.gallery is gallery
    assert isinstance(lab.children[1], ipywidgets.Label)
    run = gallery.run()
    # the tab's widget is the real one: its scores are score_heads' on the same sequences
    torch.testing.assert_close(run.result.scores, score_heads(tiny, run.data).scores, atol=1e-5, rtol=0)

    search = lab.circuit_search
    assert isinstance(search, CircuitSearch) and lab.children[1] is search
    assert search.controller.task.name == TOY.name  # the lab's task reaches the tabs that take one


def test_bad_tabs_and_options_are_refused_before_any_widget_is_built(tiny):
    with pytest.raises(AttnlabError, match="unknown tab"):
        Lab(tiny, TOY, tabs=["patching", "nope"])
    with pytest.raises(AttnlabError, match="not shown"):
        Lab(tiny, TOY, tabs=["heads"], options={"patching": {"n_prompts": 2}})
    lab = Lab(tiny, TOY, tabs=["heads"])
    with pytest.raises(AttnlabError, match="no tab 'patching'"):
        lab.tab("patching")
