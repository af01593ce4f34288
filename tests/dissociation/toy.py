"""A toy transformer trained in the test suite with recall and in-context copying routed through different parts.

The planted double dissociation (the known answer for the dissociation workbench, issue 11):

- **recall** ``[BOS, REL, key] -> value(key)``: a fixed random map from 24 key tokens to 24 value tokens, memorised in
  the weights. The key is the *current* token at END, so no head has to move it there, and no linear path can store
  the map (phase 1 fixes the embedding, unembedding and attention before recall is ever trained): only an MLP can.
- **reasoning** ``[BOS, t1 .. t8, SEP, ti] -> t(i+1)``: in-context copying of the token that followed ``ti``, with
  eight distinct random tokens per prompt, so the answer is given by the prompt and not memorised. A two-layer model
  solves it only with a previous-token head in layer 0 and an induction head in layer 1 whose keys read it (Olsson
  et al. 2022; Elhage et al. 2021, "Induction heads").

Training routes the tasks by construction, in two phases:

1. Every MLP starts with its output weights (``fc_out``) at 0, so it writes exactly nothing, and stays frozen, while
   embeddings, attention and unembedding learn copying (1,200 Adam steps of 32 prompts, each with 5 queries after
   SEP so that one prompt gives 5 targets; only the targets after SEP are scored).
2. Everything is frozen except MLP 0, which learns recall (800 steps of 32 recall + 32 copying prompts, so that the
   MLP also learns not to disturb copying). MLP 1 keeps writing exactly 0: an inert component by construction.

Vocabulary: BOS 0, REL 1, SEP 2, keys 3-26, values 27-50, copying tokens 51-82 (disjoint sets: an MLP that reads a
key cannot leak into copying through a shared token). 2 layers x 2 heads, d_model 64, d_head 16, d_mlp 256,
learned positions, context 15. About 20-30 s on one CPU thread; seeded; nothing is cached or committed.

Which head is the previous-token head and which layer-1 heads carry induction is *not* assumed here: the tests find
the roles by direct hook computation (:func:`direct_drops`) and check the workbench against them.
"""

import torch

from attnlab.models import tiny_model
from attnlab.tasks.recall_reasoning import RecallReasoningItems

BOS, REL, SEP = 0, 1, 2
N_KEYS, N_COPY, CONTEXT, N_QUERIES = 24, 32, 8, 5
KEY0 = 3
VAL0 = KEY0 + N_KEYS
COPY0 = VAL0 + N_KEYS
VOCAB = COPY0 + N_COPY
N_CTX = 1 + CONTEXT + 1 + N_QUERIES
PHASE1_STEPS, PHASE2_STEPS, BATCH, LR = 1200, 800, 32, 3e-3
SEED = 1
RECALL, COPYING = "kv_recall", "induction_copy"


def value_map(seed: int = SEED) -> torch.Tensor:
    """Int[N_KEYS]: the value token of key ``KEY0 + i`` (a fixed random permutation of the value tokens)."""
    return VAL0 + torch.randperm(N_KEYS, generator=torch.Generator().manual_seed(1000 + seed))


def _recall_batch(g, n, values):
    keys = KEY0 + torch.randint(0, N_KEYS, (n,), generator=g)
    tok = torch.stack([torch.full((n,), BOS), torch.full((n,), REL), keys], 1)
    return tok, values[keys - KEY0]


def _copy_batch(g, n, n_queries=N_QUERIES):
    """Prompts [BOS, t1..t8, SEP, q1..qk] with targets: the token after each query's occurrence in t1..t8."""
    ctx = torch.stack([COPY0 + torch.randperm(N_COPY, generator=g)[:CONTEXT] for _ in range(n)])
    i = torch.randint(0, CONTEXT - 1, (n, n_queries), generator=g)
    tok = torch.cat([torch.full((n, 1), BOS), ctx, torch.full((n, 1), SEP), ctx.gather(1, i)], 1)
    return tok, ctx.gather(1, i + 1), ctx


def _nll(logits, targets):
    return -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()


def train_toy(seed: int = SEED):
    """Train the toy (see the module docstring). Returns the attnlab backend (eval mode, parameters frozen)."""
    torch.manual_seed(seed)
    model = tiny_model(n_layers=2, n_heads=2, d_model=64, d_head=16, d_mlp=256, d_vocab=VOCAB, n_ctx=N_CTX,
                       seed=seed, name="toy-recall-vs-copying")
    bridge = model.bridge
    bridge.train()
    values = value_map(seed)
    mlp = {n: p for n, p in bridge.named_parameters() if ".mlp." in n}
    assert len(mlp) == 8, sorted(mlp)  # fc_in / fc_out weight and bias of 2 layers (a TransformerLens layout change)
    with torch.no_grad():
        for n, p in mlp.items():
            if "fc_out" in n:
                p.zero_()
    rest = [p for n, p in bridge.named_parameters() if n not in mlp]
    mlp0 = [p for n, p in mlp.items() if "layers.0." in n]
    g = torch.Generator().manual_seed(1 + seed)
    first_query = 1 + CONTEXT + 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and the machine is shared
    try:
        for p in mlp.values():
            p.requires_grad_(False)
        opt = torch.optim.Adam(rest, lr=LR)
        for _ in range(PHASE1_STEPS):
            tok, target, _ = _copy_batch(g, BATCH)
            loss = _nll(bridge(tok)[:, first_query:], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for p in rest:
            p.requires_grad_(False)
        for p in mlp0:
            p.requires_grad_(True)
        opt = torch.optim.Adam(mlp0, lr=LR)
        for _ in range(PHASE2_STEPS):
            rtok, rtarget = _recall_batch(g, BATCH, values)
            ctok, ctarget, _ = _copy_batch(g, BATCH)
            loss = _nll(bridge(rtok)[:, -1], rtarget) + _nll(bridge(ctok)[:, first_query:], ctarget)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return model


def toy_items(seed: int = SEED, n_copy: int = 40, item_seed: int = 7) -> RecallReasoningItems:
    """Recall items (every key once) and copying items, right-padded with BOS to one width.

    Distractors are of the same family: the value of another key for recall, another context token (neither the
    query nor the answer) for copying. Corrupted counterparts keep the template and change the entities: another key
    for recall, another random context and query for copying.
    """
    values = value_map(seed)
    g = torch.Generator().manual_seed(item_seed)
    keys = KEY0 + torch.arange(N_KEYS)
    other = KEY0 + (torch.arange(N_KEYS) + 1 + torch.randint(0, N_KEYS - 1, (N_KEYS,), generator=g)) % N_KEYS
    recall = torch.stack([torch.full((N_KEYS,), BOS), torch.full((N_KEYS,), REL), keys], 1)
    recall_corrupted = torch.stack([torch.full((N_KEYS,), BOS), torch.full((N_KEYS,), REL), other], 1)
    recall_answers = torch.stack([values[keys - KEY0], values[other - KEY0]], 1)

    copy, copy_target, ctx = _copy_batch(g, n_copy, n_queries=1)
    copy_corrupted, _, _ = _copy_batch(g, n_copy, n_queries=1)
    answer, query = copy_target[:, 0], copy[:, -1]
    distractor = torch.empty_like(answer)
    for r in range(n_copy):
        choices = [int(t) for t in ctx[r] if int(t) not in (int(answer[r]), int(query[r]))]
        distractor[r] = choices[int(torch.randint(0, len(choices), (1,), generator=g))]
    copy_answers = torch.stack([answer, distractor], 1)

    width = copy.shape[1]
    pad = lambda t: torch.cat([t, torch.full((t.shape[0], width - t.shape[1]), BOS)], 1)  # noqa: E731
    tokens = torch.cat([pad(recall), copy])
    corrupted = torch.cat([pad(recall_corrupted), copy_corrupted])
    answers = torch.cat([recall_answers, copy_answers])
    end = torch.cat([torch.full((N_KEYS,), recall.shape[1] - 1), torch.full((n_copy,), width - 1)])
    kinds = ["recall"] * N_KEYS + ["reasoning"] * n_copy
    families = [RECALL] * N_KEYS + [COPYING] * n_copy
    return RecallReasoningItems.from_tokens(tokens, corrupted, answers, end, kinds, families)
