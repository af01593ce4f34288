"""Arguments: numpy and torch integers are integers; a memory budget that is NaN, infinite, not positive or not a
number, a seed that is negative or not an integer, a device this machine lacks: each refused before any work."""

import math

import numpy as np
import pytest
import torch

import attnlab
from attnlab.circuits import eap_scores
from attnlab.circuits.evaluate import faithfulness
from attnlab.circuits.graph import Graph
from attnlab.circuits.path_patching import path_patching_sweep
from attnlab.errors import ArgumentError, ArgumentTypeError, SiteError
from attnlab.models import tiny_model
from attnlab.patching import run_sweep
from attnlab.tasks.induction import repeated_random_tokens
from tests.conftest import random_pair_dataset


@pytest.fixture(scope="module")
def model():
    return tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=3)


@pytest.fixture(scope="module")
def pairs(model):
    return random_pair_dataset(model, batch=3, n_pos=6, changed=(2,), seed=1)


@pytest.mark.parametrize("layers,heads", [
    (np.array([0, 2]), np.array([1, 3])),
    (torch.tensor([0, 2]), torch.tensor([1, 3])),
    ((np.int64(0), np.int32(2)), [torch.tensor(1), np.int16(3)]),
    (range(0, 3, 2), (1, 3)),
])
def test_numpy_and_torch_integers_select_the_same_cells_as_ints(model, pairs, layers, heads):
    want = run_sweep(model, pairs, "heads", layers=[0, 2], heads=[1, 3], progress=False)
    got = run_sweep(model, pairs, "heads", layers=layers, heads=heads, progress=False)
    assert got.index == want.index and got.index["layer"] == [0, 2]
    assert all(type(x) is int for x in got.index["layer"] + got.index["head"])  # plain ints: results save as JSON
    torch.testing.assert_close(got.values, want.values, rtol=0, atol=0)


@pytest.mark.parametrize("layers,message", [
    ([True, 1], "must hold ints.*True"),
    ([0.0, 1], "must hold ints.*0.0"),
    (np.array([[0, 1]]), "flat list of ints.*shape \\(1, 2\\)"),
    (torch.tensor([0.5]), "must hold ints"),
    (1, "single value 1: use \\[1\\]"),
    ("01", "must be a list of ints"),
])
def test_layers_that_are_not_integers_are_refused(model, pairs, layers, message):
    with pytest.raises(SiteError, match=message):
        run_sweep(model, pairs, "heads", layers=layers, progress=False)


BAD_BUDGETS = [(math.nan, ArgumentError, "positive, finite"), (math.inf, ArgumentError, "positive, finite"),
               (-1, ArgumentError, "positive, finite"), (0, ArgumentError, "positive, finite"),
               ("4096", ArgumentTypeError, "number of MiB.*str"), (True, ArgumentTypeError, "number of MiB.*bool"),
               ([4096], ArgumentTypeError, "number of MiB.*list")]


@pytest.mark.parametrize("analysis", ["run_sweep", "eap_scores", "faithfulness", "path_patching_sweep"])
@pytest.mark.parametrize("budget,error,message", BAD_BUDGETS, ids=[repr(b[0]) for b in BAD_BUDGETS])
def test_a_bad_memory_budget_is_refused_before_any_pass(model, pairs, analysis, budget, error, message, monkeypatch):
    calls = []

    def no_pass(*args, **kwargs):
        calls.append(1)
        pytest.fail("a pass ran")

    # every way a pass can run: single runs, batched sweeps, and the receiver-split passes of edge analyses
    monkeypatch.setattr(model, "run", no_pass)
    monkeypatch.setattr(model, "run_many", no_pass)
    monkeypatch.setattr(type(model.edge_runner()), "run", no_pass)
    with pytest.raises(error, match=message):
        if analysis == "run_sweep":
            run_sweep(model, pairs, "heads", memory_budget_mb=budget, progress=False)
        elif analysis == "eap_scores":
            eap_scores(model, pairs, memory_budget_mb=budget, progress=False)
        elif analysis == "faithfulness":
            faithfulness(model, pairs, Graph.from_info(model.info).valid, memory_budget_mb=budget)
        else:
            path_patching_sweep(model, pairs, "logits", memory_budget_mb=budget, progress=False)
    assert not calls


def test_numpy_and_torch_budgets_are_numbers(model, pairs):
    a = run_sweep(model, pairs, "heads", layers=[1], memory_budget_mb=np.float32(64), progress=False)
    b = run_sweep(model, pairs, "heads", layers=[1], memory_budget_mb=torch.tensor(64.0), progress=False)
    torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    assert a.settings["memory_budget_mb"] == b.settings["memory_budget_mb"] == 64.0


@pytest.mark.parametrize("seed,error,message", [
    (-1, ArgumentError, "non-negative integer \\(got -1\\)"),
    (None, ArgumentTypeError, "non-negative integer.*NoneType"),
    ("7", ArgumentTypeError, "non-negative integer.*str '7'"),
    (1.5, ArgumentTypeError, "non-negative integer.*float 1.5"),
])
def test_a_seed_must_be_a_non_negative_integer(model, seed, error, message):
    with pytest.raises(error, match=message):
        repeated_random_tokens(model, 5, 2, seed=seed)


def test_numpy_seeds_are_seeds(model):
    assert torch.equal(repeated_random_tokens(model, 5, 2, seed=np.int64(4)).tokens,
                       repeated_random_tokens(model, 5, 2, seed=4).tokens)


@pytest.mark.parametrize("device,message", [
    ("cuda:99", "CUDA|GPU"), ("tpu", "torch device|attnlab runs on"), ("not a device", "torch device"),
])
def test_a_device_this_machine_lacks_is_refused_before_loading(device, message, monkeypatch):
    monkeypatch.setattr("attnlab.models.embedded_checkpoint", lambda: pytest.fail("the model started loading"))
    with pytest.raises(ArgumentError, match=message):
        attnlab.load_model("smollm2-135m", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is a real device here")
def test_cuda_on_a_cpu_only_machine_says_so():
    with pytest.raises(ArgumentError, match="asked for a GPU.*use device='cpu'"):
        attnlab.load_model("smollm2-135m", device="cuda")
