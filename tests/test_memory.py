"""The one memory estimator and default budget (attnlab.memory)."""

import pytest

from attnlab import memory
from attnlab.backends.base import ModelInfo
from attnlab.circuits.graph import Graph, estimate_memory_mb
from attnlab.errors import MemoryBudgetError

SMOLLM = ModelInfo(name="smollm2-like", n_layers=30, n_heads=9, n_kv_heads=3, d_model=576, d_head=64, d_mlp=1536,
                   d_vocab=49152, n_ctx=2048, backend="transformer_lens", family="llama")


def test_row_bytes_is_the_documented_formula_by_hand():
    i, n_pos = SMOLLM, 15
    per_pos = 8 * 576 + 3 * 1536 + 3 * 9 * 64 + 2 * 9 * 15
    assert memory.row_bytes(i, n_pos) == 4 * (15 * per_pos + 2 * 49152)
    assert memory.row_bytes(i, n_pos, layers_held=30) == 4 * (15 * 30 * per_pos + 2 * 49152)


def test_the_patching_engine_batches_by_the_one_estimator(tiny):
    """The engine's variants per pass are what memory.max_variants gives for its budget (one estimator)."""
    from attnlab.patching import run_sweep

    from .conftest import random_pair_dataset

    dataset = random_pair_dataset(tiny, batch=3, n_pos=7, changed=(2,))
    for budget in (0.5, 2.0):
        result = run_sweep(tiny, dataset, "heads_by_pos", memory_budget_mb=budget, progress=False)
        expected = memory.max_variants(tiny.info, 7, budget, rows_per_variant=3)
        assert result.settings["variants_per_pass"] == expected > 1


def test_max_variants_fills_the_budget_and_never_returns_zero():
    per = memory.row_bytes(SMOLLM, 15) * 8
    assert memory.max_variants(SMOLLM, 15, 10 * per / 2**20, rows_per_variant=8) == 10
    assert memory.max_variants(SMOLLM, 15, 1e-6, rows_per_variant=8) == 1


@pytest.mark.parametrize("has_mlp", [True, False])
def test_edge_pass_counts_the_graphs_senders_and_receivers(has_mlp):
    info = ModelInfo(**{**SMOLLM.to_dict(), "has_mlp": has_mlp})
    g = Graph.from_info(info)
    f = 4 * 8 * 15
    model = 8 * memory.row_bytes(info, 15, layers_held=30)
    ablate = (f * g.n_senders * 576 + 4 * 8 * 15 * g.n_senders * 576 + model) / 2**20
    assert memory.edge_pass_mb(info, 8, 15) == ablate == estimate_memory_mb(info, 8, 15)
    grad = ablate + (3 * f * g.n_receivers * 576 + 2 * model + f * g.n_senders * 576) / 2**20
    assert memory.edge_pass_mb(info, 8, 15, mode="gradient") == pytest.approx(grad, rel=1e-12)
    # EAP on the embedded model, 16 prompts of 15 tokens, fits the one default budget
    assert memory.edge_pass_mb(SMOLLM, 16, 15, mode="gradient") < memory.DEFAULT_BUDGET_MB
    with pytest.raises(ValueError, match="'mode' must be"):
        memory.edge_pass_mb(info, 1, 1, mode="backward")


def test_check_budget():
    memory.check_budget("x", 10.0, None, "hint")
    memory.check_budget("x", 10.0, 10, "hint")
    with pytest.raises(MemoryBudgetError, match=r"EAP needs about 11 MiB but memory_budget_mb=10; pass batch_size=1"):
        memory.check_budget("EAP", 11.0, 10, "pass batch_size=1")
    for bad in (0, -1, float("nan"), True, "1024"):
        with pytest.raises(ValueError, match="'memory_budget_mb' must be a (positive, finite )?number"):
            memory.check_budget("x", 1.0, bad, "hint")


def test_circuits_default_to_the_one_budget():
    import inspect

    from attnlab.circuits import acdc, eap_scores, faithfulness, path_patching_sweep

    for fn in (acdc, eap_scores, faithfulness, path_patching_sweep):
        assert inspect.signature(fn).parameters["memory_budget_mb"].default == memory.DEFAULT_BUDGET_MB, fn
