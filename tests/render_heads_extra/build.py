"""Tiny, seeded results for the retrieval/sink gallery tabs and the composition view, built with the real analyses.

``GALLERY_BUILD`` and ``COMPOSITION_BUILD`` are source text: the browser test runs them in the notebook kernel and
here, so it knows the payload the page must show (everything is seeded and deterministic).
"""

GALLERY_BUILD = """\
import torch
import attnlab
from attnlab.heads import induction_analysis, retrieval_scores, sink_analysis
from attnlab.tasks.needle import needle_haystack_tokens

# 2 layers x 4 heads, vocabulary of 8 (a random model then copies some needle tokens top-1), named with markup.
model = attnlab.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, d_vocab=8, n_ctx=48, attn_only=True, seed=5,
                           name='<b>tiny</b>')
# Plant a sink in L1H2 (constant query; a key large only at position 0), as tests/heads_sinks_retrieval does in L0.
params = dict(model.bridge.named_parameters())
attn = 'layers.1._original_component.attn._original_component.'
c = torch.randn(16, generator=torch.Generator().manual_seed(0))
c = c / c.norm()
with torch.no_grad():
    params['tok_embed._original_component.weight'][:, 0] = 0.0
    params['pos._original_component.weight'][:, 0] = 0.0
    params['pos._original_component.weight'][0, 0] = 50.0
    params[attn + 'q._original_component.weight'][32:48] = 0.0
    params[attn + 'q._original_component.bias'][32:48] = c
    params[attn + 'k._original_component.weight'][32:48] = 0.0
    params[attn + 'k._original_component.weight'][32:48, 0] = 10.0 * c
    params[attn + 'k._original_component.bias'][32:48] = 0.0
    params[attn + 'v._original_component.weight'][32:48, 0] = 0.0  # it reads nothing of position 0's large feature

inputs = needle_haystack_tokens(model, needle=[5, 6, 7, 5, 6, 7], question=[1], depths=[0.0, 0.5, 1.0],
                                lengths=[16, 24], token_range=(2, 5), bos_token_id=0, seed=0)
retrieval = retrieval_scores(model, inputs)
sinks = sink_analysis(model, torch.randint(0, 8, (4, 24), generator=torch.Generator().manual_seed(1)))
heads = induction_analysis(model, seq_len=5, batch=3, ablate=2, prefix_lengths=None, token_range=(1, 8))
gallery = heads.gallery(retrieval, sinks)
"""

COMPOSITION_BUILD = """\
import attnlab
from attnlab.heads.composition import compare_with_path_patching, composition_scores, composition_svd

tiny3 = attnlab.tiny_model(n_layers=3, n_heads=4, n_kv_heads=2, seed=1, name='<i>tiny3</i>')
composition = composition_scores(tiny3, baseline_draws=8, seed=0)
# Path-patching effects of four K-composition pairs (a mapping: the comparison's real code path, made-up effects).
effects = {((0, 1), (2, 0)): 0.8, ((1, 3), (2, 1)): -0.3, ((0, 2), (1, 1)): 0.1, ((0, 0), (2, 3)): 0.05}
comparison = compare_with_path_patching(composition, effects, mode='k')
view = composition.view(tiny3, comparison=comparison, top_n=3)
"""
