"""What the workbench shows for one component: its attention on a recall and a reasoning item, and its per-item
effects (computed by the kernel when a point or a cell is clicked)."""

import torch

from attnlab.dissociation.sweep import check_items, parse_component
from attnlab.errors import SiteError
from attnlab.sites import Site, SiteKind

__all__ = ["component_detail"]


def component_detail(model, items, result, name, *, item_index: dict | None = None) -> dict:
    """The detail of component ``name`` of ``result`` (a sweep of ``items`` on ``model``).

    Args:
        model, items: what the sweep ran on.
        result: the :class:`~attnlab.dissociation.result.DissociationResult`.
        name: a component of the result (``"L3H2"``, ``"MLP5"`` ...).
        item_index: which recall and which reasoning item to show the attention pattern on
            (``{"recall": row, "reasoning": row}``, rows of ``items``; default: the first of each kind).

    Returns:
        ``{"component", "metric", "patterns": {"recall": {...} | None, "reasoning": {...} | None},
        "per_item": [{"row", "prompt", "kind", "family", "clean", "ablated", "drop"}]}``. A pattern (heads only;
        one forward pass) is ``{"row", "prompt", "tokens": [str] (up to END), "end_row": Float[pos] (the head's
        attention from the item's END to every position up to END)}``. ``clean``/``ablated``/``drop`` are the
        selectivity metric's values (NaN as None when the component was not run).

    Raises:
        SiteError: ``name`` is not a component of the result; DatasetError: see ``check_items``.
    """
    check_items(model, items, "component_detail")
    comp = parse_component(model, name)
    if comp.name not in result.components:
        raise SiteError(f"{comp.name!r} is not a component of this result; it has {len(result.components)} "
                        f"(e.g. {result.components[:3]})")
    if len(items) != len(result.kinds) or list(items.kinds) != list(result.kinds):
        raise SiteError("these items are not the items the result was computed on")
    ci = result.components.index(comp.name)
    j = result.metrics.index(result.settings["selectivity_metric"])
    per_item = []
    for i in range(len(items)):
        c, a = float(result.clean[i, j]), float(result.ablated[ci, i, j])
        per_item.append({"row": i, "prompt": result.prompts[i], "kind": result.kinds[i], "family": result.families[i],
                         "clean": c, "ablated": None if a != a else a, "drop": None if a != a else c - a})
    patterns = {"recall": None, "reasoning": None}
    part = comp.parts[0]
    if len(comp.parts) == 1 and part.kind is SiteKind.Z:
        rows = {}
        for kind in patterns:
            idx = (item_index or {}).get(kind)
            rows[kind] = int(idx) if idx is not None else int(items.rows(kind)[0])
        order = list(rows.values())
        site = Site(SiteKind.PATTERN, part.layer, head=part.head)
        out = model.run(items.tokens[order], cache=[site], logits_at=items.end[order])
        pat = out.cache[site]  # [b, q, k]
        for b, (kind, row) in enumerate(rows.items()):
            end = int(items.end[row])
            toks = model.to_str_tokens(items.tokens[row, :end + 1]) if getattr(model, "tokenizer", None) is not None \
                else [str(int(t)) for t in items.tokens[row, :end + 1]]
            patterns[kind] = {"row": row, "prompt": result.prompts[row], "tokens": toks,
                              "end_row": pat[b, end, :end + 1].float().tolist()}
    return {"component": comp.name, "metric": result.metrics[j], "patterns": patterns, "per_item": per_item}
