"""Colored Objects: "what colour is the X?" over three coloured objects, as clean/counterfactual prompt pairs.

Context:
    Merullo, Eickhoff & Pavlick 2023 ("Circuit Component Reuse Across Tasks in Transformer Language Models",
    arXiv 2310.08744) compare the IOI circuit with the circuit a model uses on a task adapted from BIG-bench's
    ``reasoning_about_colored_objects``. The model reads three objects, each with a colour, and is asked the colour
    of one of them, after one solved example:

        Q: On the desk, you see a blue pen, a black cup, and a red ball. What color is the pen?
        A: Blue
        Q: On the table, there is a red pencil, a green plate, and a brown bottle. What color is the plate?
        A:

    The answer is a space and the capitalised colour (``" Green"``). The task needs the same moves as IOI: find
    the right token among several candidates (the colour next to the queried object) and copy it to the output.
    Merullo et al. find that GPT2-medium's circuit for it shares 78% of its in-circuit heads with its IOI circuit.

Counterfactual (corrupted) prompt:
    The same prompt asking about a *different* object of the three ("... What color is the bottle?"). Only the
    queried object's token changes, so the pair is token-aligned, and the correct colour changes: the symmetric
    token replacement Zhang & Nanda 2023 (arXiv 2309.16042) recommend. ``answers[:, 0]`` is the clean answer's
    colour label and ``answers[:, 1]`` the counterfactual prompt's; the metric is their logit difference at END.
    Colours are distinct within a prompt, so the two always differ.

Positions (token positions, BOS included for models that prepend one):
    ``C1``, ``O1``, ``C2``, ``O2``, ``C3``, ``O3``: the three colour and object words of the question;
    ``QOBJ``: the queried object in "What color is the X?" (the only token the corruption changes);
    ``QCOL`` and ``QO``: the colour and the listed object the clean question asks about (one of C1..C3 / O1..O3);
    ``CFCOL``: the colour the counterfactual question asks about; ``END``: the final ``":"`` of ``"A:"``, where
    the answer is predicted. The solved example's slots are labelled ``EX_C1`` ... ``EX_QOBJ``, ``EX_ANS`` in
    ``position_labels``; its surface and the query's are ``EX_SURFACE`` and ``SURFACE``.

Templates:
    The question's surface (:data:`SURFACES`) and phrase (:data:`PHRASES`) give 9 templates, numbered
    ``3 * surface + phrase``; ``metadata["prompt_templates"]`` holds each prompt's, so means can be taken per
    template (e.g. for mean ablation). The example draws its own template, colours and objects; its answer is
    never the clean or the counterfactual answer, so copying the example's answer cannot score. The article
    follows the colour ("an orange cup"); " a" and " an" are both single tokens in common tokenizers.

Every colour (in lower case in the question and capitalised as a label) and object must be a single token with its
leading space; the defaults are filtered to this tokenizer's single tokens (``metadata["dropped_colors"]`` and
``["dropped_objects"]`` list what was dropped; SmolLM2 drops mug, leash and bracelet).

Example:
    >>> ds = colored_objects_dataset(backend, 8, seed=0)  # doctest: +SKIP
    >>> ds.clean_prompts[0].splitlines()[-1]  # doctest: +SKIP
    'A:'
"""

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import DatasetError, TokenizationError
from attnlab.metrics import logit_diff
from attnlab.tasks.base import PatchingDataset, check_dataset, check_seed

__all__ = [
    "COLORS",
    "COLORED_OBJECTS",
    "ColoredObjectsBaselines",
    "PHRASES",
    "SURFACES",
    "colored_objects_baselines",
    "colored_objects_dataset",
    "colored_objects_templates",
    "single_token_colors",
]

#: The 8 colours of Merullo et al. 2023 (lower case, as in the question; labels are capitalised).
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black")

#: The 17 objects of Merullo et al. 2023 / BIG-bench reasoning_about_colored_objects.
COLORED_OBJECTS: tuple[str, ...] = (
    "pencil", "notebook", "pen", "cup", "plate", "jug", "mug", "puzzle", "textbook", "leash", "necklace",
    "bracelet", "bottle", "ball", "envelope", "lighter", "bowl",
)

#: Where the objects are: "On the [SURFACE], ...".
SURFACES: tuple[str, ...] = ("table", "desk", "floor")

#: How they are introduced: "..., [PHRASE] a red pen, ...".
PHRASES: tuple[str, ...] = ("there is", "you see", "I see")

_N_TEMPLATES = len(SURFACES) * len(PHRASES)


def colored_objects_templates() -> dict[int, tuple[str, str]]:
    """The 9 question templates: ``{index: (surface, phrase)}`` with index ``3 * surface + phrase``."""
    return {i: (SURFACES[i // len(PHRASES)], PHRASES[i % len(PHRASES)]) for i in range(_N_TEMPLATES)}


# -- single-token filtering -------------------------------------------------------------------------------------
def _is_single_token(backend: Backend, word: str) -> bool:
    return len(backend.encode(" " + word)) == 1


def _label(color: str) -> str:
    """The answer label of a colour: a space and the capitalised word (``" Blue"``)."""
    return " " + color.capitalize()


def single_token_colors(backend: Backend, colors: Sequence[str] = COLORS) -> list[str]:
    """The colours usable in ``backend``'s tokenizer: ``" red"`` and the label ``" Red"`` both single tokens.

    Args:
        backend: the model whose tokenizer decides.
        colors: lower-case colour words (default :data:`COLORS`).

    Returns:
        The usable colours, in the order given.
    """
    return [c for c in colors if _is_single_token(backend, c) and len(backend.encode(_label(c))) == 1]


def _word_list(backend: Backend, words: Sequence[str] | None, default: Sequence[str], what: str,
               keep) -> tuple[list[str], list[str]]:
    """A user word list (every entry must pass ``keep``) or the filtered default; returns (kept, dropped)."""
    if words is None:
        kept = keep(backend, default)
        return kept, [w for w in default if w not in kept]
    if isinstance(words, str):
        raise DatasetError(f"'{what}' must be a list of words (got the string {words!r}); wrap it in a list")
    cleaned = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise DatasetError(f"'{what}' must contain non-empty strings (got {w!r})")
        cleaned.append(w.strip().lower() if what == "colors" else w.strip())
    cleaned = list(dict.fromkeys(cleaned))
    kept = keep(backend, cleaned)
    bad = [w for w in cleaned if w not in kept]
    if bad:
        forms = "' word' and the label ' Word'" if what == "colors" else "' word'"
        raise TokenizationError(
            f"{what} {bad} are not single tokens in {backend.info.name}'s tokenizer (each of {forms} must be "
            f"exactly 1 token); remove them, or leave {what}=None to use the filtered defaults"
        )
    return kept, []


def _single_token_objects(backend: Backend, words: Sequence[str]) -> list[str]:
    return [w for w in words if _is_single_token(backend, w)]


# -- prompts ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Question:
    template: int
    colors: tuple[str, str, str]
    objects: tuple[str, str, str]
    asked: int  # index (0-2) of the object the question asks about


def _pieces(q: _Question, prefix: str, asked: int | None = None) -> list[tuple[str, str | None]]:
    """The question as (text, role) pieces; a role marks a single-token slot word (with its leading space)."""
    surface, phrase = colored_objects_templates()[q.template]
    asked = q.asked if asked is None else asked
    c, o = q.colors, q.objects
    return [
        ("Q: On the", None), (" " + surface, prefix + "SURFACE"), (f", {phrase} {_article(c[0])}", None),
        (" " + c[0], prefix + "C1"), (" " + o[0], prefix + "O1"), (f", {_article(c[1])}", None),
        (" " + c[1], prefix + "C2"), (" " + o[1], prefix + "O2"), (f", and {_article(c[2])}", None),
        (" " + c[2], prefix + "C3"), (" " + o[2], prefix + "O3"), (". What color is the", None),
        (" " + o[asked], prefix + "QOBJ"), ("?\nA:", None),
    ]


def _article(word: str) -> str:
    """ "an" before a vowel ("an orange pen"), else "a"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _prompt_pieces(example: _Question, question: _Question, asked: int | None = None) -> list[tuple[str, str | None]]:
    """Solved example, then the question (asking about object ``asked``, default the question's own)."""
    return [*_pieces(example, "EX_"), (_label(example.colors[example.asked]), "EX_ANS"), ("\n", None),
            *_pieces(question, "", asked)]


def _text(pieces: list[tuple[str, str | None]]) -> str:
    return "".join(text for text, _ in pieces)


def _layout(backend: Backend, pieces: list[tuple[str, str | None]], offset: int) -> dict[str, int]:
    """Expected token position of every slot role, from the token lengths of the text before it."""
    out, text = {}, ""
    for piece, role in pieces:
        if role is not None:
            out[role] = offset + (len(backend.encode(text)) if text else 0)
        text += piece
    return out


def _bos_offset(backend: Backend) -> int:
    """Tokens ``to_tokens`` puts before the text by default (1 with BOS, else 0)."""
    probe = " x"
    return int(backend.to_tokens([probe]).shape[1]) - len(backend.encode(probe))


def _resolve_templates(templates: int | Sequence[int] | str) -> list[int]:
    if isinstance(templates, str):
        if templates != "all":
            raise DatasetError(f"'templates' must be a template index, a list of indices or 'all' (got {templates!r})")
        return list(range(_N_TEMPLATES))
    idx = [templates] if isinstance(templates, int) else list(templates)
    if not idx:
        raise DatasetError("'templates' must not be empty")
    bad = [t for t in idx if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < _N_TEMPLATES]
    if bad:
        raise DatasetError(f"template indices must be in [0, {_N_TEMPLATES}) (got {bad}); see "
                           "colored_objects_templates()")
    return list(dict.fromkeys(idx))


def _sample(rng: random.Random, n: int, idx: list[int], colors: list[str], objects: list[str]
            ) -> list[tuple[_Question, _Question, int]]:
    """``n`` (example, question, counterfactual object index) triples; templates and asked objects balanced."""
    templates = [idx[k % len(idx)] for k in range(n)]
    asked = [k % 3 for k in range(n)]
    rng.shuffle(templates)
    rng.shuffle(asked)
    out = []
    for t, a in zip(templates, asked):
        question = _Question(t, tuple(rng.sample(colors, 3)), tuple(rng.sample(objects, 3)), a)
        counterfactual = rng.choice([k for k in range(3) if k != a])
        # The example's answer is neither the clean nor the counterfactual answer, so copying it never wins.
        while True:
            example = _Question(rng.choice(idx), tuple(rng.sample(colors, 3)), tuple(rng.sample(objects, 3)),
                                rng.randrange(3))
            if example.colors[example.asked] not in (question.colors[a], question.colors[counterfactual]):
                break
        out.append((example, question, counterfactual))
    return out


# -- the dataset ------------------------------------------------------------------------------------------------
def colored_objects_dataset(
    backend: Backend,
    n_prompts: int = 16,
    *,
    seed: int = 0,
    templates: int | Sequence[int] | str = "all",
    colors: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> PatchingDataset:
    """Token-aligned Colored Objects prompts and their counterfactuals for ``backend``'s tokenizer.

    Args:
        backend: the model whose tokenizer the prompts are built for (only its tokenizer is used).
        n_prompts: number of prompt pairs (>= 1).
        seed: seed of a private ``random.Random``; the same arguments give identical tokens.
        templates: question template index (see :func:`colored_objects_templates`), a list of them, or ``"all"``
            (default). Prompts cycle through them, shuffled; the queried object (first, second, third) is balanced
            the same way.
        colors: lower-case colour words to draw from instead of :data:`COLORS`; objects: instead of
            :data:`COLORED_OBJECTS`. User lists must be single tokens (colours also as capitalised labels); the
            defaults are filtered to this tokenizer's single tokens.

    Returns:
        A :class:`PatchingDataset` with task ``"colored_objects"``: ``clean_tokens`` and ``corrupted_tokens``
        Int[batch, pos] (BOS first when ``info.prepend_bos``), differing only at ``QOBJ``; ``answers``
        Int[batch, 2] (column 0 the clean answer's label id, e.g. " Blue", column 1 the counterfactual's);
        ``positions`` C1, O1, C2, O2, C3, O3, QOBJ, QCOL, QO, CFCOL, END, each Int[batch]; ``position_labels``;
        ``metadata`` (seed, templates, per-prompt template, asked and counterfactual object index, example
        template, colour label ids ``label_ids``, the colours and objects used and dropped).

    Raises:
        DatasetError: ``n_prompts`` < 1; a bad template index; fewer than 3 usable colours or objects (a prompt
            needs three distinct of each); templates of different token lengths; prompts longer than the model's
            context; slot words not found where the template puts them (the tokenizer merges them with context).
        TokenizationError: a user-supplied colour or object is not a single token.
    """
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise DatasetError(f"'n_prompts' must be an integer >= 1 (got {n_prompts!r})")
    idx = _resolve_templates(templates)
    color_list, dropped_colors = _word_list(backend, colors, COLORS, "colors", single_token_colors)
    object_list, dropped_objects = _word_list(backend, objects, COLORED_OBJECTS, "objects", _single_token_objects)
    for what, kept, dropped in (("colours", color_list, dropped_colors), ("objects", object_list, dropped_objects)):
        if len(kept) < 3:
            raise DatasetError(
                f"Colored Objects needs at least 3 distinct single-token {what} (a prompt shows three); got "
                f"{len(kept)} {kept} for {backend.info.name}'s tokenizer (dropped as multi-token: {dropped}); "
                f"pass {'colors' if what == 'colours' else 'objects'}=[...] with single-token words"
            )

    # Every template must tokenise to one length (checked with the first words; single tokens give all the same).
    offset = _bos_offset(backend)
    probe = [_Question(t, tuple(color_list[:3]), tuple(object_list[:3]), 0) for t in idx]
    lengths = {q.template: offset + len(backend.encode(_text(_prompt_pieces(probe[0], q)))) for q in probe}
    if len(set(lengths.values())) > 1:
        raise DatasetError(
            f"Colored Objects templates {idx} tokenise to different lengths {lengths} (template: tokens) in "
            f"{backend.info.name}'s tokenizer; choose templates of one length with templates=[...]"
        )
    n_pos = next(iter(lengths.values()))
    if n_pos > backend.info.n_ctx:
        raise DatasetError(f"Colored Objects prompts are {n_pos} tokens, longer than {backend.info.name}'s context "
                           f"of {backend.info.n_ctx}")

    seed = check_seed(seed)

    rng = random.Random(seed)
    triples = _sample(rng, n_prompts, idx, color_list, object_list)
    clean_pieces = [_prompt_pieces(ex, q) for ex, q, _ in triples]
    corrupted_pieces = [_prompt_pieces(ex, q, cf) for ex, q, cf in triples]
    clean_texts = [_text(p) for p in clean_pieces]
    corrupted_texts = [_text(p) for p in corrupted_pieces]
    try:
        clean = backend.to_tokens(clean_texts)
        corrupted = backend.to_tokens(corrupted_texts)
    except TokenizationError as exc:
        raise DatasetError(f"Colored Objects prompts tokenise to different lengths in {backend.info.name}'s "
                           f"tokenizer ({exc}); a slot word merges with its context: use other colours or objects"
                           ) from None
    if clean.shape != (n_prompts, n_pos) or corrupted.shape != clean.shape:
        raise DatasetError(
            f"Colored Objects prompts tokenised to shapes clean {tuple(clean.shape)}, corrupted "
            f"{tuple(corrupted.shape)}, expected ({n_prompts}, {n_pos}); {backend.info.name}'s tokenizer merges a "
            "slot word with its context; use other colours or objects"
        )

    word_ids = {w: backend.single_token_id(" " + w) for w in {*color_list, *object_list, *SURFACES}
                if _is_single_token(backend, w)}
    label_ids = {c: backend.single_token_id(_label(c)) for c in color_list}
    layouts: dict[tuple[int, int], dict[str, int]] = {}
    positions: dict[str, list[int]] = {k: [] for k in ("C1", "O1", "C2", "O2", "C3", "O3", "QOBJ", "QCOL", "QO",
                                                         "CFCOL", "END")}
    answers = []
    for i, ((ex, q, cf), pieces) in enumerate(zip(triples, clean_pieces)):
        key = (ex.template, q.template)
        if key not in layouts:  # with single-token words the layout depends only on the two templates
            layouts[key] = _layout(backend, pieces, offset)
        layout = layouts[key]
        expected = {role: _slot_id(word_ids, label_ids, text) for text, role in pieces if role is not None}
        row = clean[i].tolist()
        wrong = {role: (layout[role], tok) for role, tok in expected.items()
                 if tok is not None and row[layout[role]] != tok}
        if wrong:
            raise DatasetError(
                f"Colored Objects prompt {i} ({clean_texts[i]!r}): slot words not at the positions the template "
                f"puts them ({sorted(wrong)}) in {backend.info.name}'s tokens; the tokenizer merges a word with its "
                "context: use other colours or objects"
            )
        differ = torch.nonzero(clean[i] != corrupted[i]).flatten().tolist()
        if differ != [layout["QOBJ"]]:
            raise DatasetError(f"Colored Objects prompt {i}: clean and counterfactual differ at positions {differ}, "
                               f"expected only the queried object at {layout['QOBJ']}")
        for role in ("C1", "O1", "C2", "O2", "C3", "O3", "QOBJ"):
            positions[role].append(layout[role])
        positions["QCOL"].append(layout[f"C{q.asked + 1}"])
        positions["QO"].append(layout[f"O{q.asked + 1}"])
        positions["CFCOL"].append(layout[f"C{cf + 1}"])
        positions["END"].append(n_pos - 1)
        answers.append([label_ids[q.colors[q.asked]], label_ids[q.colors[cf]]])

    metadata = {
        "seed": seed,
        "templates": idx,
        "prompt_templates": [q.template for _, q, _ in triples],
        "example_templates": [ex.template for ex, _, _ in triples],
        "asked": [q.asked for _, q, _ in triples],
        "counterfactual_asked": [cf for _, _, cf in triples],
        "corruption": "ask_other_object",
        "colors": color_list,
        "objects": object_list,
        "dropped_colors": dropped_colors,
        "dropped_objects": dropped_objects,
        "label_ids": label_ids,
        "n_colors": len(color_list),
        "n_objects": len(object_list),
        "tokenizer_of": backend.info.name,
        "tokenizer_fingerprint": backend.tokenizer_fingerprint,
        "source": "Merullo, Eickhoff & Pavlick 2023 (arXiv 2310.08744); BIG-bench reasoning_about_colored_objects",
    }
    return PatchingDataset(
        task="colored_objects",
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        answers=torch.tensor(answers, dtype=torch.long),
        positions={k: torch.tensor(v, dtype=torch.long) for k, v in positions.items()},
        position_labels=_position_labels(backend, clean, list(layouts.values()), offset),
        clean_prompts=clean_texts,
        corrupted_prompts=corrupted_texts,
        metadata=metadata,
    )


def _slot_id(word_ids: dict[str, int], label_ids: dict[str, int], text: str) -> int | None:
    """Token id a slot piece must have: a word's id, or a label's (``" Blue"``); None if unknown (not checked)."""
    word = text.strip()
    if word.lower() in label_ids and word[:1].isupper() and word not in word_ids:
        return label_ids[word.lower()]
    return word_ids.get(word)


def _position_labels(backend: Backend, clean: Tensor, layouts: list[dict[str, int]], offset: int) -> list[str]:
    """Slot roles where a layout puts one, "BOS", else the stripped token text ("/"-joined where prompts differ)."""
    n_pos = clean.shape[1]
    per_pos: list[set[str]] = [set() for _ in range(n_pos)]
    for layout in layouts:
        for role, j in layout.items():
            per_pos[j].add(role)
    roles_at = {j for layout in layouts for j in layout.values()}
    # non-slot tokens depend only on the templates: decode each distinct row pattern once
    seen: set[tuple[int, ...]] = set()
    for row in clean:
        key = tuple(-1 if j in roles_at else t for j, t in enumerate(row.tolist()))
        if key in seen:
            continue
        seen.add(key)
        strs = backend.to_str_tokens(row)
        for j in range(n_pos):
            if j in roles_at:
                continue
            per_pos[j].add("BOS" if j < offset else (strs[j].strip() or repr(strs[j])))
    labels = ["/".join(sorted(s)) for s in per_pos]
    labels[-1] = "END"
    return labels


# -- baselines --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColoredObjectsBaselines:
    """How well a model does the task, clean and counterfactual.

    Attributes:
        n_prompts: prompts evaluated.
        n_labels: colour labels competing (the dataset's colours); ``chance`` = 1 / n_labels.
        clean_accuracy: fraction of clean prompts whose correct label has the highest logit *among the colour
            labels* (the task's multiple-choice accuracy).
        corrupted_accuracy: the same for the counterfactual prompts and their own answer (``answers[:, 1]``).
        clean_top1, corrupted_top1: fraction whose correct label is the argmax over the *whole vocabulary*.
        clean_logit_diff, corrupted_logit_diff: mean logit(answers[:, 0]) - logit(answers[:, 1]) at END, in
            logits (positive on clean prompts and negative on counterfactual ones when the model does the task).
        chance: 1 / n_labels.
    """

    n_prompts: int
    n_labels: int
    clean_accuracy: float
    corrupted_accuracy: float
    clean_top1: float
    corrupted_top1: float
    clean_logit_diff: float
    corrupted_logit_diff: float
    chance: float

    def to_dict(self) -> dict:
        """A JSON-serialisable copy."""
        return asdict(self)


def colored_objects_baselines(model: Backend, dataset: PatchingDataset) -> ColoredObjectsBaselines:
    """Accuracy and logit difference of ``model`` on a Colored Objects dataset (2 forward passes).

    Args:
        model: any backend.
        dataset: from :func:`colored_objects_dataset` (its ``metadata["label_ids"]`` gives the colour labels).

    Returns:
        A :class:`ColoredObjectsBaselines`.

    Raises:
        DatasetError: ``dataset`` is not a Colored Objects dataset.
    """
    check_dataset(model, dataset, analysis="colored_objects_baselines")
    if dataset.task != "colored_objects" or "label_ids" not in dataset.metadata:
        raise DatasetError(f"colored_objects_baselines needs a dataset from colored_objects_dataset (got task "
                           f"{dataset.task!r})")
    label_ids = torch.tensor(sorted(dataset.metadata["label_ids"].values()), dtype=torch.long)
    out = {}
    for name, tokens, col in (("clean", dataset.clean_tokens, 0), ("corrupted", dataset.corrupted_tokens, 1)):
        logits = model.run(tokens, logits_at=dataset.end).logits.float()
        correct = dataset.answers[:, col]
        among = label_ids[logits[:, label_ids].argmax(dim=-1)]
        out[f"{name}_accuracy"] = float((among == correct).float().mean())
        out[f"{name}_top1"] = float((logits.argmax(dim=-1) == correct).float().mean())
        out[f"{name}_logit_diff"] = float(logit_diff(logits, dataset.answers).mean())
    n = len(label_ids)
    return ColoredObjectsBaselines(n_prompts=len(dataset), n_labels=n, chance=1.0 / n, **out)
