"""Indirect object identification (IOI): the best-studied circuit task, as clean/corrupted prompt pairs.

Context:
    Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object Identification in GPT-2 small"
    (arXiv 2211.00593), ask a model to finish sentences such as

        "Then, Mary and John went to the store. John gave a drink to"

    with " Mary": the *indirect object* (IO), the name that appears once, rather than the *subject* (S), the name
    that appears twice. The metric is the logit difference logit(" Mary") - logit(" John") at the last position
    (GPT-2 small: 3.56 on average, IO ahead of S on 99.3% of prompts; section 2).

Positions:
    Every prompt has four named token positions, counted in the token sequence as the backend makes it
    (BOS first, for models that prepend one):

    - ``IO``: the indirect object's name in the first clause;
    - ``S1``: the subject's first occurrence, in the first clause;
    - ``S2``: the subject's second occurrence, the subject of the giving clause;
    - ``END``: the last token (``" to"``), where the next-token prediction, and so the metric, is read.

    The prompt ends *before* the final name: the model has to produce it.

Templates:
    Wang et al. use 15 sentence templates (appendix of the paper; Redwood's ``ioi_dataset.py``). In the *BABA*
    form the subject comes first: "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]", with
    ``[A]`` the IO and ``[B]`` the subject. The *ABBA* form swaps the two names of the first clause ("Then, [A] and
    [B] ..."). Mixing both orders stops a model (or an analysis) from winning with "always the first name" or
    "always the second name". ``[PLACE]`` and ``[OBJECT]`` are filled from :data:`PLACES` and :data:`OBJECTS`.

The circuit (Wang et al. section 3; GPT-2 small head numbers in ``layer.head``):
    - *duplicate-token heads* (0.1, 0.10, 3.0) at S2 attend to S1 and write "this name is repeated";
    - *previous-token heads* (2.2, 4.11) at S1+1 copy the S1 token forward, which lets
    - *induction heads* (5.5, 5.8, 5.9, 6.9) at S2 attend to S1+1 and also signal the duplication;
    - *S-inhibition heads* (7.3, 7.9, 8.6, 8.10) at END read that signal and move it into the queries of
    - *name mover heads* (9.9, 9.6, 10.0), which at END attend to the names that are *not* inhibited, i.e. the
      IO, and copy it to the logits. Backup name movers take over when these are knocked out (self-repair), and
      negative name movers (10.7, 11.10) write against the answer.

Corruptions (all token-aligned: every corrupted prompt has the same tokens as its clean prompt except the names):
    - ``"abc"``: IO, S1 and S2 are replaced by three fresh names, distinct from each other and from the originals
      ("Then, Mary and John ... John gave a drink to" -> "Then, Alice and Bob ... Carl gave a drink to"). This
      is Wang et al.'s ABC distribution (section 3.1), which removes all information about which name is
      repeated; they mean-ablate over it. Patching from it moves the model far from its clean behaviour.
    - ``"s2_swap"``: only S2 is replaced, by the IO name ("... Mary gave a drink to"). Now the other name is the
      one that appears once, so the correct answer flips while every other token, and the sentence's statistics,
      stay the same. This symmetric token replacement is what Zhang & Nanda 2023 ("Towards Best Practices of
      Activation Patching", arXiv 2309.16042, sections 3-4) recommend over Gaussian noising and over
      out-of-distribution corruptions: it changes exactly the information the circuit uses. Answers stay the
      clean IO and S, so the corrupted logit difference is negative.

Every prompt of one template tokenises to the same length as long as names, places and objects are single
tokens (with their leading space); :func:`single_token_names` and :func:`single_token_words` keep those of a
tokenizer, and :func:`ioi_dataset` refuses templates of different token lengths (see :func:`template_lengths`).

Example:
    >>> ds = ioi_dataset(backend, 8, corruption="s2_swap")  # doctest: +SKIP
    >>> ds.clean_prompts[0]  # doctest: +SKIP
    'Then, Mary and John went to the store. John gave a drink to'
"""

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.backends.base import Backend
from attnlab.errors import DatasetError, TokenizationError
from attnlab.tasks.base import PatchingDataset, check_seed

__all__ = [
    "ABBA_TEMPLATES",
    "BABA_TEMPLATES",
    "NAMES",
    "OBJECTS",
    "PLACES",
    "ioi_dataset",
    "single_token_names",
    "single_token_words",
    "template_lengths",
]

#: The 15 templates of Wang et al. 2022 in BABA order: [B] is the subject (S1, S2), [A] the indirect object.
#: The trailing " [A]" is the answer and is not part of the prompt.
BABA_TEMPLATES: tuple[str, ...] = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)


def _to_abba(template: str) -> str:
    """Swap the first clause's names: the first "[B] and [A]" becomes "[A] and [B]"."""
    if "[B] and [A]" not in template:  # pragma: no cover - guards the constant above
        raise ValueError(f"template has no '[B] and [A]' clause: {template!r}")
    return template.replace("[B] and [A]", "[A] and [B]", 1)


#: The same templates in ABBA order: the IO comes first in the first clause.
ABBA_TEMPLATES: tuple[str, ...] = tuple(_to_abba(t) for t in BABA_TEMPLATES)

#: Places of Wang et al. (each used as " the [PLACE]").
PLACES: tuple[str, ...] = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")

#: Objects of Wang et al. (each used as " a [OBJECT]").
OBJECTS: tuple[str, ...] = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")

#: 100 common English first names. Not all are single tokens in every tokenizer: filter with
#: :func:`single_token_names`.
NAMES: tuple[str, ...] = (
    "Aaron", "Adam", "Alan", "Alex", "Alice", "Amanda", "Amy", "Andrew", "Angela", "Anna",
    "Anne", "Anthony", "Arthur", "Barbara", "Ben", "Betty", "Bill", "Bob", "Brian", "Carl",
    "Carol", "Charles", "Charlie", "Chris", "Claire", "Daniel", "David", "Diana", "Donald", "Dorothy",
    "Edward", "Elizabeth", "Emily", "Emma", "Eric", "Frank", "Fred", "Gary", "George", "Grace",
    "Hannah", "Harry", "Helen", "Henry", "Jack", "Jacob", "James", "Jane", "Jason", "Jean",
    "Jeff", "Jennifer", "Jessica", "Jim", "Joe", "John", "Jonathan", "Joseph", "Joshua", "Julia",
    "Karen", "Kate", "Kelly", "Kevin", "Laura", "Lisa", "Lucy", "Maria", "Mark", "Martin",
    "Mary", "Matt", "Michael", "Michelle", "Mike", "Nancy", "Nick", "Olivia", "Paul", "Peter",
    "Rachel", "Richard", "Robert", "Roger", "Ryan", "Sam", "Sarah", "Scott", "Sean", "Simon",
    "Sophie", "Steve", "Susan", "Thomas", "Tim", "Tom", "Tony", "Victoria", "William", "Zoe",
)

_CORRUPTIONS = ("abc", "s2_swap")
_ORDERS = ("mixed", "ABBA", "BABA")
_SLOTS = ("[A]", "[B]", "[PLACE]", "[OBJECT]")


# -- single-token filtering -------------------------------------------------------------------------------------
def _is_single_token(backend: Backend, word: str) -> bool:
    return len(backend.encode(" " + word)) == 1


def single_token_words(backend: Backend, words: Sequence[str]) -> list[str]:
    """The words whose form with a leading space (``" store"``) is exactly one token in ``backend``'s tokenizer.

    Args:
        backend: the model whose tokenizer decides.
        words: candidate words, without the leading space.

    Returns:
        The single-token words, in the order given, duplicates removed.
    """
    return [w for w in dict.fromkeys(words) if _is_single_token(backend, w)]


def single_token_names(backend: Backend, names: Sequence[str] = NAMES) -> list[str]:
    """The names whose form with a leading space (``" Mary"``) is exactly one token in ``backend``'s tokenizer.

    IOI prompts must stay token-aligned when names are swapped, so every name has to be one token.

    Args:
        backend: the model whose tokenizer decides.
        names: candidate names, without the leading space (default :data:`NAMES`).

    Returns:
        The single-token names, in the order given, duplicates removed.
    """
    return single_token_words(backend, names)


# -- templates --------------------------------------------------------------------------------------------------
def _resolve_templates(templates: int | Sequence[int] | str) -> list[int]:
    n = len(BABA_TEMPLATES)
    if isinstance(templates, str):
        if templates != "all":
            raise DatasetError(f"'templates' must be a template index, a sequence of indices or 'all' "
                               f"(got {templates!r})")
        return list(range(n))
    idx = [templates] if isinstance(templates, int) else list(templates)
    if not idx:
        raise DatasetError(f"'templates' must name at least one template index in [0, {n}) (got {templates!r})")
    bad = [i for i in idx if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n]
    if bad:
        raise DatasetError(f"template indices must be integers in [0, {n}) (got {bad}); "
                           f"there are {n} IOI templates, see BABA_TEMPLATES")
    return list(dict.fromkeys(idx))


_SLOT_RE = re.compile(r"( \[(?:A|B|PLACE|OBJECT)\])")


def _pieces(index: int, order: str) -> list[str]:
    """The prompt template (final name removed) as literal text and slot pieces (" [A]", " [B]" ...)."""
    template = (ABBA_TEMPLATES if order == "ABBA" else BABA_TEMPLATES)[index]
    if not template.endswith(" [A]"):  # pragma: no cover - guards the constants
        raise ValueError(f"IOI template must end with ' [A]': {template!r}")
    return [piece for piece in _SLOT_RE.split(template[: -len(" [A]")]) if piece]


def _roles(pieces: list[str]) -> list[str | None]:
    """The role of each piece: "IO", "S1", "S2", "PLACE", "OBJECT", or None for literal text."""
    roles: list[str | None] = []
    n_b = 0
    for piece in pieces:
        if piece == " [B]":
            n_b += 1
        roles.append({" [A]": "IO", " [B]": "S1" if n_b == 1 else "S2", " [PLACE]": "PLACE",
                      " [OBJECT]": "OBJECT"}.get(piece))
    return roles


def _fill(pieces: list[str], words: dict[str, str]) -> str:
    """Join ``pieces`` with each slot replaced by " " + the word of its role."""
    return "".join(piece if role is None else " " + words[role] for piece, role in zip(pieces, _roles(pieces)))


def template_lengths(
    backend: Backend,
    templates: int | Sequence[int] | str = "all",
    *,
    name: str | None = None,
    place: str | None = None,
    obj: str | None = None,
) -> dict[int, int]:
    """Token length of each IOI prompt template in ``backend``'s tokenizer (BOS included, final name excluded).

    A dataset can only mix templates of one length (its prompts are stacked into one [batch, pos] tensor); use
    this to pick them, e.g. ``[i for i, n in template_lengths(backend).items() if n == 16]``.

    Args:
        backend: the model whose tokenizer decides.
        templates: template indices or ``"all"``.
        name, place, obj: single-token words to fill the slots with (default: the first single-token
            name, place and object); any single-token choice gives the same lengths.

    Returns:
        ``{template index: number of tokens}``, the same for ABBA and BABA order.

    Raises:
        DatasetError: a template index out of range, or no single-token name/place/object available.
    """
    idx = _resolve_templates(templates)
    names = [name] if name is not None else single_token_names(backend)[:2]
    place = place if place is not None else next(iter(single_token_words(backend, PLACES)), None)
    obj = obj if obj is not None else next(iter(single_token_words(backend, OBJECTS)), None)
    if not names or place is None or obj is None:
        raise DatasetError(f"no single-token name, place or object in {backend.info.name}'s tokenizer; "
                           "pass them explicitly (name=, place=, obj=)")
    words = {"IO": names[0], "S1": names[-1], "S2": names[-1], "PLACE": place, "OBJECT": obj}
    offset = _bos_offset(backend)
    return {i: offset + len(backend.encode(_fill(_pieces(i, "BABA"), words))) for i in idx}


def _bos_offset(backend: Backend) -> int:
    """Number of tokens ``to_tokens`` puts before the text by default: 1 with BOS (``info.prepend_bos``), else 0."""
    probe = " " + "x"
    return int(backend.to_tokens([probe]).shape[1]) - len(backend.encode(probe))


# -- input checks -----------------------------------------------------------------------------------------------
def _user_words(backend: Backend, words: Sequence[str] | None, default: Sequence[str], what: str) -> list[str]:
    """Check a user-supplied word list (every entry a single token) or filter the default list."""
    if words is None:
        return single_token_words(backend, default)
    if isinstance(words, str):
        raise DatasetError(f"'{what}' must be a list of words (got the string {words!r}); wrap it in a list")
    cleaned = []
    for w in words:
        if not isinstance(w, str) or not w.strip():
            raise DatasetError(f"'{what}' must contain non-empty strings (got {w!r})")
        cleaned.append(w.strip())
    cleaned = list(dict.fromkeys(cleaned))
    bad = [w for w in cleaned if not _is_single_token(backend, w)]
    if bad:
        raise TokenizationError(
            f"{what} {bad} are not single tokens (with a leading space) in {backend.info.name}'s tokenizer, "
            f"expected every entry to be exactly 1 token; remove them or use single_token_"
            f"{'names' if what == 'names' else 'words'}(backend, {what}) to filter the list"
        )
    return cleaned


@dataclass(frozen=True)
class _Prompt:
    template: int
    order: str
    io: str
    s: str
    place: str
    obj: str
    abc: tuple[str, str, str]  # replacements for IO, S1, S2


def _sample(rng: random.Random, n: int, idx: list[int], order: str, names: list[str], places: list[str],
            objects: list[str], corruption: str) -> list[_Prompt]:
    """Draw ``n`` prompts: templates cycled then shuffled, orders balanced then shuffled, names without repeats."""
    template_seq = [idx[k % len(idx)] for k in range(n)]
    rng.shuffle(template_seq)
    if order == "mixed":
        orders = ["ABBA", "BABA"] * (n // 2) + ([rng.choice(("ABBA", "BABA"))] if n % 2 else [])
        rng.shuffle(orders)
    else:
        orders = [order] * n
    prompts = []
    for t, o in zip(template_seq, orders):
        io, s = rng.sample(names, 2)
        # Three more names for the ABC corruption: distinct from each other and from IO and S.
        c, d, e = rng.sample([x for x in names if x not in (io, s)], 3) if corruption == "abc" else ("", "", "")
        prompts.append(_Prompt(t, o, io, s, rng.choice(places), rng.choice(objects), (c, d, e)))
    return prompts


def _words(p: _Prompt, corrupted: str | None = None) -> dict[str, str]:
    """The word of each role in the clean prompt, or in its ``corrupted`` version ("abc" or "s2_swap")."""
    io, s1, s2 = p.io, p.s, p.s
    if corrupted == "abc":
        io, s1, s2 = p.abc
    elif corrupted == "s2_swap":
        s2 = p.io
    return {"IO": io, "S1": s1, "S2": s2, "PLACE": p.place, "OBJECT": p.obj}


# -- the dataset ------------------------------------------------------------------------------------------------
def ioi_dataset(
    backend: Backend,
    n_prompts: int = 16,
    *,
    seed: int = 0,
    corruption: str = "abc",
    templates: int | Sequence[int] | str = (0,),
    order: str = "mixed",
    names: Sequence[str] | None = None,
    places: Sequence[str] | None = None,
    objects: Sequence[str] | None = None,
) -> PatchingDataset:
    """Token-aligned clean and corrupted IOI prompts for ``backend``'s tokenizer.

    Args:
        backend: the model whose tokenizer the prompts are built for (only its tokenizer is used).
        n_prompts: number of prompt pairs (>= 1).
        seed: seed of a private ``random.Random``; the same arguments give identical tokens.
        corruption: ``"abc"`` (IO, S1 and S2 replaced by three other names; Wang et al.) or ``"s2_swap"`` (S2
            replaced by the IO name, flipping the answer; Zhang & Nanda's symmetric token replacement).
        templates: template index, indices into :data:`BABA_TEMPLATES`, or ``"all"``; all must have the same
            token length (see :func:`template_lengths`). Prompts cycle through them, shuffled.
        order: ``"mixed"`` (half ABBA, half BABA, shuffled; one extra at random for odd ``n_prompts``),
            ``"ABBA"`` or ``"BABA"``.
        names, places, objects: word lists (without leading spaces) to draw from instead of :data:`NAMES`,
            :data:`PLACES`, :data:`OBJECTS`. User lists must contain single tokens only; the defaults are
            filtered to the single tokens of this tokenizer.

    Returns:
        A :class:`PatchingDataset` with task ``"ioi"``: ``clean_tokens`` and ``corrupted_tokens`` Int[batch, pos]
        as ``backend.to_tokens`` makes them (BOS first when ``info.prepend_bos``), ``answers`` Int[batch, 2]
        (column 0 the token id of " IO", column 1 of " S", for both corruptions), ``positions``
        ``{"IO", "S1", "S2", "END"}`` each Int[batch], ``position_labels`` (``"BOS"``, roles, ``"IO/S1"`` where
        ABBA and BABA put different roles at one position, ``"PLACE"``, ``"OBJECT"``, or the template's token text),
        and ``metadata`` (seed, corruption, templates, order, word counts, per-prompt template index and order).

    Raises:
        DatasetError: ``n_prompts`` < 1; unknown ``corruption`` or ``order``; a template index out of range;
            templates of different token lengths; too few single-token names (3, or 5 for ``"abc"``), places or
            objects; prompts longer than the model's context; names not found where the template puts them.
        TokenizationError: a user-supplied name, place or object is not a single token.
    """
    # ``corruption`` and ``order`` are typed ``str``, not ``Literal``, so that a wrong value reaches the clear
    # message below even under runtime type checking. Every check runs before prompts are generated or tokenised.
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise DatasetError(f"'n_prompts' must be an integer >= 1 (got {n_prompts!r})")
    if corruption not in _CORRUPTIONS:
        raise DatasetError(f"'corruption' must be one of {list(_CORRUPTIONS)} (got {corruption!r}): 'abc' replaces "
                           "IO, S1 and S2 by other names, 's2_swap' replaces S2 by the IO name")
    if order not in _ORDERS:
        raise DatasetError(f"'order' must be one of {list(_ORDERS)} (got {order!r})")
    idx = _resolve_templates(templates)

    name_list = _user_words(backend, names, NAMES, "names")
    place_list = _user_words(backend, places, PLACES, "places")
    object_list = _user_words(backend, objects, OBJECTS, "objects")
    need = 5 if corruption == "abc" else 3
    if len(name_list) < need:
        raise DatasetError(
            f"IOI with corruption {corruption!r} needs at least {need} distinct single-token names "
            f"({'IO, S and 3 replacements' if corruption == 'abc' else 'IO, S and at least one alternative'}); "
            f"got {len(name_list)} {name_list} for {backend.info.name}'s tokenizer; pass more names"
        )
    for what, lst in (("places", place_list), ("objects", object_list)):
        if not lst:
            raise DatasetError(f"no single-token {what} for {backend.info.name}'s tokenizer (expected at least 1); "
                               f"pass {what}=[...] with single-token words")

    fill = {"name": name_list[0], "place": place_list[0], "obj": object_list[0]}
    lengths = template_lengths(backend, idx, **fill)
    if len(set(lengths.values())) > 1:
        by_length: dict[int, list[int]] = {}
        for i, n in template_lengths(backend, "all", **fill).items():
            by_length.setdefault(n, []).append(i)
        best = max(by_length, key=lambda n: (len(by_length[n]), -n))
        raise DatasetError(
            f"IOI templates {idx} tokenise to different lengths {lengths} (template: tokens) in "
            f"{backend.info.name}'s tokenizer, but one dataset needs one length; choose templates of one length, "
            f"e.g. templates={by_length[best]} ({best} tokens each); see template_lengths(backend)"
        )
    n_pos = next(iter(lengths.values()))
    if n_pos > backend.info.n_ctx:
        raise DatasetError(f"IOI prompts are {n_pos} tokens, longer than {backend.info.name}'s context of "
                           f"{backend.info.n_ctx} tokens; use shorter templates")

    seed = check_seed(seed)

    rng = random.Random(seed)
    prompts = _sample(rng, n_prompts, idx, order, name_list, place_list, object_list, corruption)
    clean_texts = [_fill(_pieces(p.template, p.order), _words(p)) for p in prompts]
    corrupted_texts = [_fill(_pieces(p.template, p.order), _words(p, corruption)) for p in prompts]
    clean = backend.to_tokens(clean_texts)
    corrupted = backend.to_tokens(corrupted_texts)
    if clean.shape != (n_prompts, n_pos) or corrupted.shape != clean.shape:
        raise DatasetError(
            f"IOI prompts tokenised to shapes clean {tuple(clean.shape)}, corrupted {tuple(corrupted.shape)}, "
            f"expected ({n_prompts}, {n_pos}); {backend.info.name}'s tokenizer merges a slot word with its "
            "context; use other names, places or objects"
        )

    ids = {w: backend.single_token_id(" " + w) for w in {*name_list, *place_list, *object_list}}
    answers = torch.tensor([[ids[p.io], ids[p.s]] for p in prompts], dtype=torch.long)
    offset = _bos_offset(backend)
    positions, layouts = _locate(backend, prompts, clean, ids, offset)
    labels = _position_labels(backend, clean, layouts, offset)
    metadata = {
        "seed": seed,
        "corruption": corruption,
        "templates": idx,
        "order": order,
        "n_names": len(name_list),
        "n_places": len(place_list),
        "n_objects": len(object_list),
        "tokenizer_of": backend.info.name,
        "tokenizer_fingerprint": backend.tokenizer_fingerprint,
        "prompt_templates": [p.template for p in prompts],
        "prompt_orders": [p.order for p in prompts],
        "source": "Wang et al. 2022 (arXiv 2211.00593); s2_swap: Zhang & Nanda 2023 (arXiv 2309.16042)",
    }
    return PatchingDataset(
        task="ioi",
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        answers=answers,
        positions=positions,
        position_labels=labels,
        clean_prompts=clean_texts,
        corrupted_prompts=corrupted_texts,
        metadata=metadata,
    )


def _slot_positions(backend: Backend, p: _Prompt, offset: int) -> dict[int, str]:
    """Expected token position of every slot of ``p``'s template, ``{position: role}``, from its prefix lengths."""
    pieces, words = _pieces(p.template, p.order), _words(p)
    text, out = "", {}
    for piece, role in zip(pieces, _roles(pieces)):
        if role is None:
            text += piece
            continue
        out[offset + (len(backend.encode(text)) if text else 0)] = role
        text += " " + words[role]
    return out


def _locate(
    backend: Backend, prompts: list[_Prompt], clean: Tensor, ids: dict[str, int], offset: int
) -> tuple[dict[str, Tensor], list[dict[int, str]]]:
    """Find IO, S1 and S2 by their token ids and check that they sit where the template puts them.

    Returns:
        ``positions`` (IO, S1, S2, END, each Int[batch]) and, per prompt, ``{position: role}`` of every slot.
    """
    found: dict[str, list[int]] = {"IO": [], "S1": [], "S2": [], "END": []}
    layouts = []
    cache: dict[tuple[int, str], dict[int, str]] = {}
    for i, p in enumerate(prompts):
        row = clean[i].tolist()
        io_at = [j for j, t in enumerate(row) if t == ids[p.io]]
        s_at = [j for j, t in enumerate(row) if t == ids[p.s]]
        key = (p.template, p.order)
        if key not in cache:  # with single-token words the layout depends only on template and order
            cache[key] = _slot_positions(backend, p, offset)
        layout = cache[key]
        want = {role: j for j, role in layout.items() if role in ("IO", "S1", "S2")}
        if io_at != [want["IO"]] or s_at != [want["S1"], want["S2"]]:
            raise DatasetError(
                f"IOI prompt {i} ({_fill(_pieces(p.template, p.order), _words(p))!r}): expected IO {p.io!r} at "
                f"position {want['IO']} only and S {p.s!r} at positions {[want['S1'], want['S2']]} (BOS "
                f"included), found IO at {io_at} and S at {s_at} in {backend.info.name}'s tokens; the tokenizer "
                "merges the names with their context or a name equals a template word: use other templates or names"
            )
        for role in ("IO", "S1", "S2"):
            found[role].append(want[role])
        found["END"].append(len(row) - 1)
        layouts.append(layout)
    return {k: torch.tensor(v, dtype=torch.long) for k, v in found.items()}, layouts


def _position_labels(backend: Backend, clean: Tensor, layouts: list[dict[int, str]], offset: int) -> list[str]:
    """One label per position: the role at slots, "BOS", else the stripped token text; "/"-joined where prompts
    disagree (``"IO/S1"`` in a mixed ABBA/BABA dataset); the last position is "END"."""
    n_pos = clean.shape[1]
    per_pos: list[set[str]] = [set() for _ in range(n_pos)]
    seen: set[tuple] = set()
    for i, layout in enumerate(layouts):
        # Prompts with the same layout and the same non-slot tokens give the same labels: decode each once.
        key = (tuple(sorted(layout.items())), tuple(-1 if j in layout else t for j, t in enumerate(clean[i].tolist())))
        if key in seen:
            continue
        seen.add(key)
        strs = backend.to_str_tokens(clean[i])
        for j in range(n_pos):
            if j in layout:
                per_pos[j].add(layout[j])
            elif j < offset:
                per_pos[j].add("BOS")
            else:
                per_pos[j].add(strs[j].strip() or repr(strs[j]))
    labels = ["/".join(sorted(labels)) for labels in per_pos]
    labels[-1] = "END"
    return labels
