"""A one-layer attention-only toy trained in the test suite to copy a needle out of a long random context.

Vocabulary: BOS 0, QUERY 1, haystack tokens 2-33, needle tokens 34-57 in ``N_SLOTS`` = 4 slot groups of 6 tokens
(slot ``j``'s token is drawn from group ``j``). An input is ``[BOS] haystack[:i] needle haystack[i:] [QUERY]
needle`` (teacher-forced answer) with a haystack of 12-40 tokens and a random depth, so no positional rule finds the
needle: the model must attend, by content, from the token before answer slot ``j`` (QUERY, or the slot ``j - 1``
token) to the needle's slot-``j`` token and copy it.

Left to itself, training spreads that copying over all four heads, so that no single head matters (each head's
ablation costs a few per cent). Training therefore has two phases, like the dissociation toy's:

1. Heads 1-3 write nothing (their output columns of ``W_O`` are 0 and frozen) while the model learns the needle
   task (500 Adam steps of 32 inputs, loss on the answer tokens only).
2. Everything trains, on the needle task plus a second job for the other heads: the haystack is periodic (period
   ``PERIOD``), and the loss also covers the haystack tokens after the first period, which a head attending
   ``PERIOD - 1`` tokens back can predict (300 steps).

So the copying head is planted by the schedule, but its identity is *not* assumed by the tests: they find it by
direct ``run_with_hooks`` ablation. About 15-20 s on one CPU thread, seeded; nothing is cached or committed.
"""

import torch

from attnlab.models import tiny_model

BOS, QUERY = 0, 1
HAY0, N_HAY = 2, 32
NEEDLE0, N_SLOTS, PER_SLOT = HAY0 + N_HAY, 4, 6
VOCAB = NEEDLE0 + N_SLOTS * PER_SLOT
N_CTX, N_HEADS, PERIOD = 64, 4, 5
PHASE1, PHASE2, BATCH, LR, SEED = 500, 300, 32, 3e-3, 0


def random_needle(g: torch.Generator) -> list[int]:
    """One needle: a token of each slot group, in slot order."""
    return [NEEDLE0 + j * PER_SLOT + int(torch.randint(0, PER_SLOT, (1,), generator=g)) for j in range(N_SLOTS)]


def training_batch(g: torch.Generator, n: int, periodic: bool):
    """(tokens Int[n, pos], answer start, Bool[n, pos] haystack targets) with one haystack length per batch."""
    length = int(torch.randint(12, 41, (1,), generator=g))
    rows, hay_targets = [], []
    for _ in range(n):
        hay = (HAY0 + torch.randint(0, N_HAY, (length,), generator=g)).tolist()
        if periodic:
            hay = [hay[p % PERIOD] for p in range(length)]
        i = int(torch.randint(0, length + 1, (1,), generator=g))
        needle = random_needle(g)
        rows.append([BOS] + hay[:i] + needle + hay[i:] + [QUERY] + needle)
        # haystack positions after the first period whose period-back token is haystack too (not the needle)
        pos = [1 + p if p < i else 1 + p + N_SLOTS for p in range(length)]
        ok = [q for p, q in zip(range(length), pos) if p >= PERIOD and (p - PERIOD < i) == (p < i)]
        mask = torch.zeros(len(rows[-1]), dtype=torch.bool)
        mask[ok] = True
        hay_targets.append(mask)
    tokens = torch.tensor(rows)
    return tokens, tokens.shape[1] - N_SLOTS, torch.stack(hay_targets)


def _nll(logits, tokens, mask):
    """Mean loss of the tokens at ``mask`` positions (Bool[n, pos]) from the logits one position earlier."""
    lp = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()


def train_toy():
    """The trained toy (an attnlab backend, eval mode, parameters frozen)."""
    torch.manual_seed(SEED)
    model = tiny_model(n_layers=1, n_heads=N_HEADS, d_model=64, d_head=16, d_vocab=VOCAB, n_ctx=N_CTX,
                       attn_only=True, seed=SEED, name="toy-needle-1l")
    bridge = model.bridge
    bridge.train()
    (w_o,) = [p for n, p in bridge.named_parameters() if n.endswith("attn._original_component.o._original_component.weight")]
    d_head = w_o.shape[1] // N_HEADS
    with torch.no_grad():
        w_o[:, d_head:] = 0.0
    handle = w_o.register_hook(lambda grad: torch.cat([grad[:, :d_head], torch.zeros_like(grad[:, d_head:])], 1))
    opt = torch.optim.Adam(bridge.parameters(), lr=LR)
    g = torch.Generator().manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(PHASE1 + PHASE2):
            if step == PHASE1:
                handle.remove()
                opt = torch.optim.Adam(bridge.parameters(), lr=LR)
            tokens, start, hay = training_batch(g, BATCH, periodic=step >= PHASE1)
            answer = torch.zeros_like(hay)
            answer[:, start:] = True
            loss = _nll(bridge(tokens), tokens, answer | hay if step >= PHASE1 else answer)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return model
