"""Recall and reasoning items over the same entities: the input of the recall-versus-reasoning workbench.

Context:
    Fartale et al. 2025 ("Disentangling Recall and Reasoning in Transformer Models through Layer-wise Attention and
    Activation Analysis", arXiv 2510.03366) compare matched pairs over one fact: a *recall* item asks for a fact
    stored in the weights ("The capital of Thailand is" -> " Bangkok"), a *reasoning* item gives premises in the
    prompt and asks for what follows from them in two or more steps ("If Zorb is the capital of Thailand and Thailand
    is in Asia, then Zorb is in" -> " Asia"). A component whose ablation hurts one kind and spares the other is
    evidence that the model keeps the two apart; a pair of components with opposite effects is a *double
    dissociation* (:mod:`attnlab.dissociation`).

Families (``RECALL_FAMILIES``, ``REASONING_FAMILIES``):
    - recall: ``capital_of``, ``country_of_city``, ``language_of``, ``continent_of``, over one table of countries
      (:data:`COUNTRIES`);
    - reasoning: ``capital_chain`` (a nonce capital of a real country, two hops to the continent, Fartale et al.'s
      template), ``transitive_order`` ("A is older than B. B is older than C. So A is older than" -> " C"; the
      distractor B is the stated, one-step relation, so the logit difference measures the inferred answer over the
      copied one), ``syllogism`` over nonce words ("All wugs are blue. Tim is a wug. So Tim is" -> " blue") and
      ``two_hop_relation`` ("A's mother is B. B's mother is C. So A's grandmother is" -> " C").

    Every family has one template, so its items differ only in their entities. Each item has a *distractor* (another
    answer of the same family, for the logit difference) and a *corrupted counterpart*: another item of the same
    family whose prompt has the same number of tokens and another answer, for resample ablation and patching.

Per-model checks (:func:`recall_reasoning_items`):
    answers and distractors must be one token with their leading space in *this* model's tokenizer; items whose
    words split, and items left without a same-length counterpart, are dropped and counted per family
    (``items.counts``). :func:`filter_correct` then keeps the items the model answers correctly on its clean run.

Your own families: :func:`custom_family` from ``(prompt, answer, distractor)`` triples, passed as ``extra=``.
"""

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from attnlab.errors import ArgumentTypeError, DatasetError, TokenizationError
from attnlab.tasks.base import check_seed, check_token_ids

__all__ = [
    "COUNTRIES",
    "FAMILIES",
    "Family",
    "Item",
    "REASONING_FAMILIES",
    "RECALL_FAMILIES",
    "RecallReasoningItems",
    "check_items",
    "custom_family",
    "filter_correct",
    "recall_reasoning_items",
]

KINDS = ("recall", "reasoning")


@dataclass(frozen=True)
class Item:
    """One text-level item.

    Attributes:
        family: the family's name (``"capital_of"`` ...).
        kind: ``"recall"`` (a fact stored in the weights) or ``"reasoning"`` (follows from premises in the prompt).
        prompt: the prompt without BOS, ending right before the answer.
        answer: the correct continuation, with its leading space (``" Paris"``); must be one token.
        distractor: another answer of the same family (``" Berlin"``); must be one token.
        entity: the entity the item is about (``"France"``), so recall and reasoning items can be matched.
        corrupted_prompt: a token-aligned prompt of the same template with other entities, or None to let
            :func:`recall_reasoning_items` pick another item of the family with the same token length.
    """

    family: str
    kind: str
    prompt: str
    answer: str
    distractor: str
    entity: str = ""
    corrupted_prompt: str | None = None


@dataclass(frozen=True)
class Family:
    """A named set of items of one kind that share a template.

    Raises:
        DatasetError: unknown kind, no items, or items of another family or kind.
    """

    name: str
    kind: str
    description: str
    items: tuple[Item, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DatasetError(f"family {self.name!r}: kind must be one of {KINDS} (got {self.kind!r})")
        if not self.items:
            raise DatasetError(f"family {self.name!r} has no items")
        for it in self.items:
            if it.family != self.name or it.kind != self.kind:
                raise DatasetError(f"family {self.name!r} holds an item of family {it.family!r} ({it.kind})")


# country, capital, official language, continent, another large city ("" where no single-word answer fits)
COUNTRIES: tuple[tuple[str, str, str, str, str], ...] = (
    ("France", "Paris", "French", "Europe", "Lyon"),
    ("Germany", "Berlin", "German", "Europe", "Munich"),
    ("Italy", "Rome", "Italian", "Europe", "Milan"),
    ("Spain", "Madrid", "Spanish", "Europe", "Barcelona"),
    ("Portugal", "Lisbon", "Portuguese", "Europe", "Porto"),
    ("Greece", "Athens", "Greek", "Europe", ""),
    ("Poland", "Warsaw", "Polish", "Europe", "Krakow"),
    ("Sweden", "Stockholm", "Swedish", "Europe", ""),
    ("Norway", "Oslo", "Norwegian", "Europe", ""),
    ("Finland", "Helsinki", "Finnish", "Europe", ""),
    ("Denmark", "Copenhagen", "Danish", "Europe", ""),
    ("Netherlands", "Amsterdam", "Dutch", "Europe", "Rotterdam"),
    ("Hungary", "Budapest", "Hungarian", "Europe", ""),
    ("Russia", "Moscow", "Russian", "", ""),
    ("Japan", "Tokyo", "Japanese", "Asia", "Osaka"),
    ("China", "Beijing", "Chinese", "Asia", "Shanghai"),
    ("Thailand", "Bangkok", "Thai", "Asia", ""),
    ("Vietnam", "Hanoi", "Vietnamese", "Asia", ""),
    ("Iran", "Tehran", "Persian", "Asia", ""),
    ("Iraq", "Baghdad", "Arabic", "Asia", ""),
    ("Egypt", "Cairo", "Arabic", "Africa", "Alexandria"),
    ("Kenya", "Nairobi", "Swahili", "Africa", ""),
    ("Nigeria", "Abuja", "English", "Africa", "Lagos"),
    ("Morocco", "Rabat", "Arabic", "Africa", "Casablanca"),
    ("Turkey", "Ankara", "Turkish", "", "Istanbul"),
    ("Brazil", "", "Portuguese", "", ""),
)

NONCE_PLACES = ("Zorb", "Plim", "Vask", "Trel", "Quen", "Drob", "Fesk", "Grul", "Mirt", "Snad", "Blen", "Kro")
NONCE_KINDS = ("wug", "blick", "dax", "fep", "zup", "tove", "gorp", "nim")
PEOPLE = ("Anna", "Ben", "Carl", "Lena", "Max", "Tom", "Sara", "John", "Mary", "Kate", "Paul", "Emma", "Mark",
          "Lisa", "Jack", "Anne")
COLOURS = ("red", "blue", "green", "yellow", "black", "white")


def _others(values: Sequence[str], value: str, rng: random.Random) -> str:
    pool = sorted({v for v in values if v and v != value})
    return rng.choice(pool)


def _recall_families() -> dict[str, Family]:
    rng = random.Random(0)
    caps = [c[1] for c in COUNTRIES]
    langs = [c[2] for c in COUNTRIES]
    conts = [c[3] for c in COUNTRIES]
    names = [c[0] for c in COUNTRIES]
    rows: dict[str, list[Item]] = {"capital_of": [], "country_of_city": [], "language_of": [], "continent_of": []}
    for country, capital, language, continent, city in COUNTRIES:
        if capital:
            rows["capital_of"].append(Item("capital_of", "recall", f"The capital of {country} is", f" {capital}",
                                           f" {_others(caps, capital, rng)}", country))
        for c in (capital, city):
            if c:
                rows["country_of_city"].append(Item("country_of_city", "recall", f"{c} is a city in the country of",
                                                    f" {country}", f" {_others(names, country, rng)}", country))
        if language:
            rows["language_of"].append(Item("language_of", "recall", f"The official language of {country} is",
                                            f" {language}", f" {_others(langs, language, rng)}", country))
        if continent:
            rows["continent_of"].append(Item("continent_of", "recall",
                                             f"{country} is a country in the continent of", f" {continent}",
                                             f" {_others(conts, continent, rng)}", country))
    desc = {"capital_of": "the capital of a country (single-hop fact)",
            "country_of_city": "the country a city is in (single-hop fact)",
            "language_of": "the official language of a country (single-hop fact)",
            "continent_of": "the continent a country is in (single-hop fact)"}
    return {k: Family(k, "recall", desc[k], tuple(v)) for k, v in rows.items()}


def _reasoning_families() -> dict[str, Family]:
    rng = random.Random(1)
    conts = sorted({c[3] for c in COUNTRIES if c[3]})
    chain = []
    for i, (country, _, _, continent, _) in enumerate(c for c in COUNTRIES if c[3]):
        x = NONCE_PLACES[i % len(NONCE_PLACES)]
        # the premise states a continent, which need not be the true one: the answer follows from the prompt only
        stated = continent if i % 2 == 0 else _others(conts, continent, rng)
        chain.append(Item("capital_chain", "reasoning",
                          f"If {x} is the capital of {country} and {country} is in {stated}, then {x} is in",
                          f" {stated}", f" {_others(conts, stated, rng)}", country))
    order, hops, syll = [], [], []
    people = list(PEOPLE)
    for i in range(len(people)):
        a, b, c = people[i], people[(i + 5) % len(people)], people[(i + 11) % len(people)]
        order.append(Item("transitive_order", "reasoning",
                          f"{a} is older than {b}. {b} is older than {c}. So {a} is older than", f" {c}", f" {b}", a))
        hops.append(Item("two_hop_relation", "reasoning",
                         f"{a}'s mother is {b}. {b}'s mother is {c}. So {a}'s grandmother is", f" {c}", f" {b}", a))
    for i, kind in enumerate(NONCE_KINDS):
        for j in range(2):
            colour = COLOURS[(i + 3 * j) % len(COLOURS)]
            who = people[(2 * i + j) % len(people)]
            syll.append(Item("syllogism", "reasoning", f"All {kind}s are {colour}. {who} is a {kind}. So {who} is",
                             f" {colour}", f" {_others(COLOURS, colour, rng)}", kind))
    return {
        "capital_chain": Family("capital_chain", "reasoning",
                                "two hops stated in the prompt: a nonce capital of a country, the country's continent",
                                tuple(chain)),
        "transitive_order": Family("transitive_order", "reasoning",
                                   "a transitive comparison over two stated relations", tuple(order)),
        "syllogism": Family("syllogism", "reasoning", "a syllogism over a nonce category", tuple(syll)),
        "two_hop_relation": Family("two_hop_relation", "reasoning",
                                   "two stated parent relations composed into a grandparent", tuple(hops)),
    }


RECALL_FAMILIES: dict[str, Family] = _recall_families()
REASONING_FAMILIES: dict[str, Family] = _reasoning_families()
#: every built-in family by name
FAMILIES: dict[str, Family] = {**RECALL_FAMILIES, **REASONING_FAMILIES}


def custom_family(name: str, kind: str, triples: Iterable[Sequence[str]], *, description: str = "",
                  corrupted: Sequence[str] | None = None) -> Family:
    """A family of your own items, from ``(prompt, answer, distractor)`` triples.

    Args:
        name: the family's name (must not be a built-in family's).
        kind: ``"recall"`` or ``"reasoning"``.
        triples: ``(prompt, answer, distractor)``; answers and distractors with their leading space (``" Paris"``).
        description: shown in reports.
        corrupted: one corrupted prompt per triple (same template, other entities, same token length), or None to
            pair each item with another item of the family of the same token length.

    Raises:
        DatasetError: a triple that is not three strings, an empty prompt, answer equal to the distractor, a
            built-in name, or ``corrupted`` of the wrong length.
    """
    if name in FAMILIES:
        raise DatasetError(f"{name!r} is a built-in family; give your family another name")
    triples = [tuple(t) for t in triples]
    if corrupted is not None and len(corrupted) != len(triples):
        raise DatasetError(f"corrupted has {len(corrupted)} prompts for {len(triples)} items")
    items = []
    for i, t in enumerate(triples):
        if len(t) != 3 or not all(isinstance(s, str) for s in t):
            raise DatasetError(f"family {name!r}: item {i} must be a (prompt, answer, distractor) triple of strings "
                               f"(got {t!r})")
        prompt, answer, distractor = t
        if not prompt.strip():
            raise DatasetError(f"family {name!r}: item {i} has an empty prompt")
        if answer == distractor:
            raise DatasetError(f"family {name!r}: item {i}'s answer and distractor are both {answer!r}")
        items.append(Item(name, kind, prompt, answer, distractor, "",
                          None if corrupted is None else corrupted[i]))
    return Family(name, kind, description or f"user family {name!r}", tuple(items))


@dataclass(frozen=True)
class RecallReasoningItems:
    """Token-level recall and reasoning items for one model: what :func:`attnlab.dissociation.dissociation_sweep`
    reads.

    Attributes:
        tokens: Int[N, pos] clean prompts (BOS first where the model prepends one), right-padded to the longest;
            causal attention means the padding never reaches a prompt's END.
        corrupted_tokens: Int[N, pos] each row's corrupted counterpart, token-aligned with it up to its END.
        answers: Int[N, 2] answer and distractor ids.
        end: Int[N] position of each prompt's last token, where the metric is read.
        kinds: ``"recall"`` or ``"reasoning"`` per row.
        families: family name per row.
        prompts, corrupted_prompts: the text per row (empty for items built from tokens).
        counts: per family: ``built``, ``dropped_multitoken``, ``dropped_no_counterpart``, ``dropped_wrong``
            (by :func:`filter_correct`) and ``kept``.
        metadata: provenance (tokenizer fingerprint, model, seed, filter).

    Raises:
        DatasetError: no items; shapes that disagree; an unknown kind; END outside the prompt.
    """

    tokens: Int[Tensor, "n pos"]
    corrupted_tokens: Int[Tensor, "n pos"]
    answers: Int[Tensor, "n 2"]
    end: Int[Tensor, " n"]
    kinds: list[str]
    families: list[str]
    prompts: list[str] = field(default_factory=list)
    corrupted_prompts: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.tokens
        if t.ndim != 2 or t.shape[0] == 0:
            raise DatasetError("no recall or reasoning items: every item was dropped (see the counts per family "
                               f"{self.counts}); add items or families, or relax the filter")
        n, n_pos = t.shape
        if self.corrupted_tokens.shape != t.shape:
            raise DatasetError(f"corrupted_tokens must have shape {tuple(t.shape)} like tokens "
                               f"(got {tuple(self.corrupted_tokens.shape)})")
        if self.answers.shape != (n, 2):
            raise DatasetError(f"answers must have shape ({n}, 2) (got {tuple(self.answers.shape)})")
        if self.end.shape != (n,) or int(self.end.min()) < 0 or int(self.end.max()) >= n_pos:
            raise DatasetError(f"end must be {n} positions in [0, {n_pos})")
        if len(self.kinds) != n or len(self.families) != n:
            raise DatasetError(f"kinds and families must have {n} entries")
        bad = sorted(set(self.kinds) - set(KINDS))
        if bad:
            raise DatasetError(f"kinds must be 'recall' or 'reasoning' (got {bad})")

    @classmethod
    def from_tokens(cls, tokens, corrupted_tokens, answers, end, kinds, families, **kw) -> "RecallReasoningItems":
        """Items given as token ids (for models without a tokenizer, such as the test suite's trained toys); shapes
        as in the attributes."""
        kinds, families = list(kinds), list(families)
        counts = kw.pop("counts", None) or {f: {"built": families.count(f), "kept": families.count(f)}
                                            for f in dict.fromkeys(families)}
        return cls(torch.as_tensor(tokens).long(), torch.as_tensor(corrupted_tokens).long(),
                   torch.as_tensor(answers).long(), torch.as_tensor(end).long(), kinds, families, counts=counts, **kw)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_pos(self) -> int:
        return self.tokens.shape[1]

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """The fingerprint of the tokenizer that built these ids (None: built from token ids)."""
        return self.metadata.get("tokenizer_fingerprint")

    def rows(self, kind: str) -> Int[Tensor, " n"]:
        """Row indices of the ``"recall"`` or ``"reasoning"`` items."""
        if kind not in KINDS:
            raise DatasetError(f"kind must be one of {KINDS} (got {kind!r})")
        return torch.tensor([i for i, k in enumerate(self.kinds) if k == kind], dtype=torch.long)

    def n_items(self) -> dict[str, int]:
        """Number of recall and reasoning items."""
        return {k: self.kinds.count(k) for k in KINDS}

    def subset(self, index, *, counts: dict | None = None, **metadata) -> "RecallReasoningItems":
        """The items selected by ``index`` (a list of rows, a bool mask or a slice), trimmed to the longest."""
        idx = torch.arange(len(self))[index]
        if idx.numel() == 0:
            raise DatasetError("no recall or reasoning items: every item was dropped (see the counts per family "
                               f"{counts or self.counts}); add items or families, or relax the filter")
        ids = idx.tolist()
        width = int(self.end[idx].max()) + 1
        pick = lambda seq: [seq[i] for i in ids] if seq else []  # noqa: E731
        return RecallReasoningItems(
            self.tokens[idx, :width], self.corrupted_tokens[idx, :width], self.answers[idx], self.end[idx],
            pick(self.kinds), pick(self.families), pick(self.prompts), pick(self.corrupted_prompts),
            counts=counts if counts is not None else self.counts, metadata={**self.metadata, **metadata})

    def describe(self) -> dict:
        """JSON-serialisable provenance: counts per family, sizes and metadata."""
        return {"task": "recall_reasoning", "n_items": self.n_items(), "n_pos": self.n_pos,
                "counts": self.counts, **self.metadata}

    def to_dataframe(self):
        """One row per item: kind, family, prompt, end (pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame({"kind": self.kinds, "family": self.families,
                             "prompt": self.prompts or [""] * len(self), "end": self.end.tolist()})


def _resolve_families(families, extra) -> list[Family]:
    if families is None:
        chosen = list(FAMILIES.values())
    else:
        if isinstance(families, str):
            families = [families]
        chosen = []
        for f in families:
            if isinstance(f, Family):
                chosen.append(f)
            elif f in FAMILIES:
                chosen.append(FAMILIES[f])
            else:
                raise DatasetError(f"unknown family {f!r}; built-in families: {sorted(FAMILIES)} (or pass a Family "
                                   "from custom_family)")
    for f in extra:
        if not isinstance(f, Family):
            raise DatasetError(f"extra= takes Family objects from custom_family (got {type(f).__name__})")
        chosen.append(f)
    names = [f.name for f in chosen]
    if len(set(names)) != len(names):
        raise DatasetError(f"a family is given twice: {names}")
    return chosen


def recall_reasoning_items(model, families=None, *, n_per_family: int | None = None, seed: int = 0,
                           extra: Iterable[Family] = ()) -> RecallReasoningItems:
    """Tokenise recall and reasoning items for ``model``, dropping (and counting) what its tokenizer cannot take.

    Args:
        model: a loaded backend with a tokenizer.
        families: family names or :class:`Family` objects (default: every built-in family).
        n_per_family: keep at most this many items per family, drawn with ``seed`` (default: all).
        seed: the draw's seed.
        extra: further families (:func:`custom_family`).

    Returns:
        :class:`RecallReasoningItems`; ``counts[family]`` says how many were built, dropped because an answer or
        distractor is not one token (``dropped_multitoken``), dropped for want of a same-length counterpart
        (``dropped_no_counterpart``), and kept.

    Raises:
        DatasetError: unknown family; no items left (with the counts); no recall or no reasoning family at all.
        ArgumentTypeError: ``model`` is not a loaded model, or a bad seed.
        TokenizationError: the model has no tokenizer (build items with ``RecallReasoningItems.from_tokens``).
    """
    from attnlab.backends.base import check_model

    check_model(model, "recall_reasoning_items")
    seed = check_seed(seed)
    if n_per_family is not None and (not isinstance(n_per_family, int) or n_per_family < 2):
        raise DatasetError(f"n_per_family must be an int >= 2 (each item needs a counterpart; got {n_per_family!r})")
    chosen = _resolve_families(families, extra)
    if getattr(model, "tokenizer", None) is None:
        raise TokenizationError(f"{model.info.name} has no tokenizer: build items from token ids with "
                                "RecallReasoningItems.from_tokens")
    rng = random.Random(seed)
    bos = [model.tokenizer.bos_token_id] if model.info.prepend_bos else []
    rows, counts = [], {}
    for fam in chosen:
        c = counts[fam.name] = {"built": len(fam.items), "dropped_multitoken": 0, "dropped_no_counterpart": 0,
                                "dropped_wrong": 0, "kept": 0}
        ok = []
        for it in fam.items:
            a, d = model.encode(it.answer), model.encode(it.distractor)
            if len(a) != 1 or len(d) != 1:
                c["dropped_multitoken"] += 1
                continue
            ok.append((it, bos + model.encode(it.prompt), a[0], d[0]))
        fam_rows = []
        for it, ids, a, d in ok:
            if it.corrupted_prompt is not None:
                cids = bos + model.encode(it.corrupted_prompt)
                ctext = it.corrupted_prompt
            else:
                mates = [o for o in ok if len(o[1]) == len(ids) and o[2] != a]
                if mates:
                    mate = mates[rng.randrange(len(mates))]
                    cids, ctext = mate[1], mate[0].prompt
                else:
                    cids, ctext = None, None
            if cids is None or len(cids) != len(ids):
                c["dropped_no_counterpart"] += 1
                continue
            fam_rows.append((it, ids, cids, ctext, a, d))
        if n_per_family is not None and len(fam_rows) > n_per_family:
            fam_rows = [fam_rows[i] for i in sorted(rng.sample(range(len(fam_rows)), n_per_family))]
        c["kept"] = len(fam_rows)
        rows.extend(fam_rows)
    kinds = {r[0].kind for r in rows}
    if not rows:
        raise DatasetError(f"no recall or reasoning items are left for {model.info.name}: {counts}")
    for kind in KINDS:
        if kind not in kinds:
            raise DatasetError(f"no {kind} items are left for {model.info.name} (counts per family: {counts}); the "
                               f"workbench compares recall with reasoning: add a {kind} family")
    width = max(len(r[1]) for r in rows)
    pad = model.tokenizer.pad_token_id if getattr(model.tokenizer, "pad_token_id", None) is not None else \
        (model.tokenizer.eos_token_id or 0)
    tok = torch.full((len(rows), width), pad, dtype=torch.long)
    cor = tok.clone()
    for i, r in enumerate(rows):
        tok[i, :len(r[1])] = torch.tensor(r[1])
        cor[i, :len(r[2])] = torch.tensor(r[2])
    return RecallReasoningItems(
        tokens=tok, corrupted_tokens=cor, answers=torch.tensor([[r[4], r[5]] for r in rows]),
        end=torch.tensor([len(r[1]) - 1 for r in rows]), kinds=[r[0].kind for r in rows],
        families=[r[0].family for r in rows], prompts=[r[0].prompt for r in rows],
        corrupted_prompts=[r[3] for r in rows], counts=counts,
        metadata={"tokenizer_fingerprint": model.tokenizer_fingerprint, "tokenizer_of": model.info.name,
                  "seed": seed, "n_per_family": n_per_family, "filter": None,
                  "families": {f.name: {"kind": f.kind, "description": f.description} for f in chosen}},
    )


def check_items(model, items, analysis: str = "the dissociation sweep") -> None:
    """Check before any work that ``items`` can run on ``model`` (a loaded model, the same tokenizer, ids in the
    vocabulary, prompts within the context).

    Raises:
        ArgumentTypeError: ``model`` is not a loaded model, or ``items`` are not RecallReasoningItems.
        DatasetError: items tokenised by another tokenizer, ids outside the vocabulary, prompts longer than the
            context.
    """
    from attnlab.backends.base import check_model

    check_model(model, analysis)
    if not isinstance(items, RecallReasoningItems):
        raise ArgumentTypeError(f"{analysis} needs RecallReasoningItems (recall_reasoning_items(model, ...)), got a "
                                f"{type(items).__name__}")
    check_token_ids(model, fingerprint=items.tokenizer_fingerprint, built_by=items.metadata.get("tokenizer_of"),
                    subject="these items", analysis=analysis,
                    rebuild="Rebuild them with recall_reasoning_items(model, ...)",
                    arrays={"items.tokens": items.tokens, "items.corrupted_tokens": items.corrupted_tokens,
                            "items.answers": items.answers})


def filter_correct(model, items: RecallReasoningItems, *, criterion: str = "top1") -> RecallReasoningItems:
    """Keep the items the model answers correctly on its clean run; one batched forward pass.

    Args:
        model: the model the items were built for.
        items: from :func:`recall_reasoning_items` (or ``from_tokens``).
        criterion: ``"top1"`` (the answer is the model's top next token) or ``"above_distractor"`` (the answer's
            logit beats the distractor's).

    Returns:
        The kept items; ``counts[family]["dropped_wrong"]`` and ``["kept"]`` updated, and
        ``metadata["filter"] = criterion``.

    Raises:
        DatasetError: unknown criterion; no recall or no reasoning item left (with the counts); items built by
            another tokenizer.
    """
    if criterion not in ("top1", "above_distractor"):
        raise DatasetError(f"criterion must be 'top1' or 'above_distractor' (got {criterion!r})")
    check_items(model, items, "filter_correct")
    logits = model.run(items.tokens, logits_at=items.end).logits
    if criterion == "top1":
        ok = logits.argmax(-1) == items.answers[:, 0]
    else:
        picked = logits.gather(-1, items.answers)
        ok = picked[:, 0] > picked[:, 1]
    counts = {f: dict(c) for f, c in items.counts.items()}
    for f in counts:
        rows = [i for i, fam in enumerate(items.families) if fam == f]
        counts[f]["kept"] = int(ok[rows].sum()) if rows else 0
        counts[f]["dropped_wrong"] = counts[f].get("dropped_wrong", 0) + len(rows) - counts[f]["kept"]
    kept = [i for i in range(len(items)) if ok[i]]
    left = {k: sum(items.kinds[i] == k for i in kept) for k in KINDS}
    for kind in KINDS:
        if left[kind] == 0:
            raise DatasetError(f"no {kind} item is answered correctly ({criterion}) by {model.info.name}, so there is "
                               f"nothing to ablate: counts per family {counts}; try criterion='above_distractor', "
                               "more items, or other families")
    return items.subset(kept, counts=counts, filter=criterion)
