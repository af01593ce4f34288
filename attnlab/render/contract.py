"""The render contract between the kernel and labext: versioned MIME types and their JSON payloads.

Mirrored in TypeScript by ``labext/src/contract.ts``; a change here is a change there, and a new version of a payload
gets a new MIME type (``...v2+json``) rather than a silent change of meaning.
"""

from typing import Literal, NotRequired, TypedDict

__all__ = ["HEATMAP_MIME", "HEATMAP_SCALES", "HeatmapPayload"]

#: The colour scales a heatmap offers (its scale menu): ``"fixed"`` ``-fixed_range .. +fixed_range``;
#: ``"symmetric"`` ± the largest |value|; ``"percentile"`` ± the ``clip_percentile``-th percentile of |value|
#: (nearest rank over the computed cells), cells beyond it marked as clipped.
HEATMAP_SCALES = ("fixed", "symmetric", "percentile")

#: MIME type of a heatmap payload, rendered by labext's heatmap view.
HEATMAP_MIME = "application/vnd.attnlab.heatmap.v1+json"


class HeatmapPayload(TypedDict):
    """A labelled matrix drawn with a diverging colour scale centred at zero.

    Keys:
        kind: always ``"heatmap"``.
        version: always 1.
        title: heading shown above the plot.
        subtitle: one line under the title (baselines, direction ...).
        values: [n_rows][n_cols] numbers; ``null`` marks a cell not computed (e.g. an interrupted sweep).
        row_labels: n_rows labels (``"L0"`` ... or ``"L9H9"``).
        col_labels: n_cols labels (``"H0"`` ... or position labels such as ``"S2"``, ``"END"``).
        col_tokens: n_cols token strings shown under the column labels, or null. Plain text, never HTML.
        row_title: axis title of the rows (``"layer"``).
        col_title: axis title of the columns (``"head"``, ``"position"``).
        row_groups: row indices at which a new group starts (a separator line is drawn), or null.
        value_label: what a cell's number means, with its unit (``"normalised logit difference"``).
        zmax: colour-scale limit: -zmax is full blue, 0 white, +zmax full red (the limit of ``scale``; renderers
            that know no scales use it as is).
        scale: optional, the scale shown first, one of :data:`HEATMAP_SCALES`; absent means ``"symmetric"`` with
            ``zmax`` as given.
        fixed_range: optional, the limit of the ``"fixed"`` scale (1 for normalised scores), or null when the
            values have no natural range (then the menu offers a fixed range only as typed by the user).
        clip_percentile: optional, the percentile of the ``"percentile"`` scale (99).
        complete: optional, false for an interrupted sweep (its scale never defaults to the few finished cells).
        warnings: optional, plain-text warnings shown under the subtitle (e.g. baselines too close for normalised
            scores to mean much).
    """

    kind: Literal["heatmap"]
    version: Literal[1]
    title: str
    subtitle: str
    values: list[list[float | None]]
    row_labels: list[str]
    col_labels: list[str]
    col_tokens: list[str] | None
    row_title: str
    col_title: str
    row_groups: list[int] | None
    value_label: str
    zmax: float
    scale: NotRequired[Literal["fixed", "symmetric", "percentile"]]
    fixed_range: NotRequired[float | None]
    clip_percentile: NotRequired[float]
    complete: NotRequired[bool]
    warnings: NotRequired[list[str]]


__all__ += ["HEADGALLERY_MIME", "HeadGalleryHead", "HeadGalleryPayload"]

#: MIME type of a head-gallery payload, rendered by labext's gallery view (``labext/src/gallery.ts``).
HEADGALLERY_MIME = "application/vnd.attnlab.headgallery.v1+json"


class HeadGalleryHead(TypedDict):
    """Details of one head, shown when its cell of the gallery grid is clicked.

    Keys:
        layer, head: the head.
        pattern: [n_pos][n_pos] attention probabilities on the example sequence (dest rows, src columns), or null.
        ablation: {method: loss increase in nats per token} for the methods run on this head (may be empty).
        prefix: one induction attention value per prefix length, or null.
        prefix_class: ``"long-prefix"``, ``"short-prefix"``, ``"none"``, or null.
        copying: direct logit attribution to the copied token (logits), or null.
    """

    layer: int
    head: int
    pattern: list[list[float]] | None
    ablation: dict[str, float]
    prefix: list[float] | None
    prefix_class: str | None
    copying: float | None


class HeadGalleryPayload(TypedDict):
    """A layer x head grid of head scores (switchable between kinds), with per-head details on click.

    Keys:
        kind: always ``"headgallery"``.
        version: always 1.
        title: heading shown above the grid.
        subtitle: one line under the title (model, data, definition).
        kinds: score kinds, e.g. ``["previous_token", "duplicate_token", "induction"]``.
        kind_labels: a display label per kind (``"induction"``).
        scores: [n_kinds][n_layers][n_heads] mean scores in [0, 1]; null where not computed.
        score_std: [n_kinds][n_layers][n_heads] standard deviation over sequences, or null.
        layer_labels: n_layers labels (``"L0"`` ...).
        head_labels: n_heads labels (``"H0"`` ...).
        tokens: the example sequence's tokens (plain text, never HTML), labels of the pattern's axes.
        prefix_lengths: the prefix lengths of the ``prefix`` curves, or null.
        ablation_label: what an ablation number means (``"second-repeat loss increase (nats/token)"``).
        clean_loss: {"first_repeat", "second_repeat"} losses without ablation, or null.
        heads: [n_layers * n_heads] details, row-major (index ``layer * n_heads + head``).
        selected: [layer, head] shown initially (the top head of the first kind), or null.
        kind_units: optional, [n_kinds] what a score of each kind measures, with its unit (``"attention
            probability"``, ``"fraction of needle tokens"``). Absent in payloads written before retrieval and sink
            tabs existed; a renderer then shows no unit.
        kind_ranges: optional, [n_kinds] ``[lo, hi]`` of each kind's colour scale (white at ``lo``, full red at
            ``hi``); absent means ``[0, 1]``.
        kind_descriptions: optional, [n_kinds] one sentence per kind (definition and source), plain text.
        notes: optional, lines of plain text shown under the grid (sink positions of an example sequence, the
            needle and the model's retrieval accuracy ...).
    """

    kind: Literal["headgallery"]
    version: Literal[1]
    title: str
    subtitle: str
    kinds: list[str]
    kind_labels: list[str]
    scores: list[list[list[float | None]]]
    score_std: list[list[list[float | None]]] | None
    layer_labels: list[str]
    head_labels: list[str]
    tokens: list[str]
    prefix_lengths: list[int] | None
    ablation_label: str
    clean_loss: dict[str, float] | None
    heads: list[HeadGalleryHead]
    selected: list[int] | None
    kind_units: NotRequired[list[str]]
    kind_ranges: NotRequired[list[list[float]]]
    kind_descriptions: NotRequired[list[str]]
    notes: NotRequired[list[str]]


__all__ += ["CIRCUIT_MIME", "CircuitCurve", "CircuitEdge", "CircuitNode", "CircuitPayload"]

#: MIME type of a circuit payload, rendered by labext's circuit view (``labext/src/circuit.ts``).
CIRCUIT_MIME = "application/vnd.attnlab.circuit.v1+json"


class CircuitNode(TypedDict):
    """One node of a circuit graph: a sender, a receiving component, or both.

    Keys:
        name: graph name (``"input"``, ``"L3H2"``, ``"L3KV1"``, ``"MLP3"``, ``"logits"``); unique in the payload.
        label: short label drawn inside the node (``"H2"``, ``"KV1"``, ``"MLP"``, ``"input"``, ``"logits"``).
        kind: ``"input"``, ``"head"`` (a query head; on a model without grouped-query attention also the key/value
            receivers of that head), ``"kv"`` (a shared key/value head of a grouped-query model), ``"mlp"`` or
            ``"logits"``.
        layer: block index; -1 for ``input``, n_layers for ``logits``.
        head: query head index for ``"head"`` nodes, else null.
        group: key/value head index for ``"kv"`` nodes, else null.
    """

    name: str
    label: str
    kind: Literal["input", "head", "kv", "mlp", "logits"]
    layer: int
    head: int | None
    group: int | None


class CircuitEdge(TypedDict):
    """One edge ``sender -> receiver.input`` with its score.

    Keys:
        name: the graph's edge name (``"L0H1->L3KV0.k"``).
        sender: sender node name.
        receiver: receiving node name (a :class:`CircuitNode` ``name``).
        input: which input of the receiver: ``"q"``, ``"k"``, ``"v"``, ``"mlp"`` or ``"logits"``.
        score: signed attribution score (logits; the method's metric change when the edge is ablated).
    """

    name: str
    sender: str
    receiver: str
    input: Literal["q", "k", "v", "mlp", "logits"]
    score: float


class CircuitCurve(TypedDict):
    """Faithfulness of the top-n-edge circuits, for the size slider.

    Keys:
        sizes: [n_sizes] numbers of edges (increasing).
        faithfulness: [n_sizes] faithfulness (fraction of the full model's metric recovered); null if not finite.
        ci95: [n_sizes] [low, high] bootstrap 95% intervals, or null.
        n_heads: [n_sizes] heads in each circuit, or null.
    """

    sizes: list[int]
    faithfulness: list[float | None]
    ci95: list[list[float | None]] | None
    n_heads: list[int] | None


class CircuitPayload(TypedDict):
    """A circuit drawn as a layered graph (input at the top, logits at the bottom), with a size slider.

    Keys:
        kind: always ``"circuit"``.
        version: always 1.
        title: heading shown above the graph.
        subtitle: one line under the title (model, task, method).
        model_name: the model's name (plain text).
        n_layers: the model's number of blocks.
        nodes: every node touched by ``edges``, in graph order.
        edges: [n_edges] edges sorted by decreasing |score| (the slider shows a prefix of this list).
        n_edges_total: number of edges in the circuit before ``max_edges`` truncation.
        value_label: what a score means, with its unit.
        curve: faithfulness by circuit size, or null.
        provenance: ``[key, value]`` text pairs (task, selection, method, steps ...), in display order.
    """

    kind: Literal["circuit"]
    version: Literal[1]
    title: str
    subtitle: str
    model_name: str
    n_layers: int
    nodes: list[CircuitNode]
    edges: list[CircuitEdge]
    n_edges_total: int
    value_label: str
    curve: CircuitCurve | None
    provenance: list[list[str]]


__all__ += ["DISSOCIATION_MIME", "DissociationComponent", "DissociationControl", "DissociationPayload",
            "DoubleDissociation"]

#: MIME type of a recall-versus-reasoning dissociation payload, rendered by labext's dissociation view
#: (``labext/src/dissociation.ts``).
DISSOCIATION_MIME = "application/vnd.attnlab.dissociation.v1+json"


class DissociationComponent(TypedDict):
    """One ablated component of a dissociation sweep.

    Keys:
        name: ``"L3H2"``, ``"ATTN3"``, ``"MLP3"`` or a group ``"L3H2+MLP5"`` (plain text).
        layer: block index (the first block of a group).
        head: query head index, or null for attention-block, MLP and group components.
        recall, reasoning: [normalised drop, CI low, CI high] of the selectivity metric on that task (1 = the whole
            clean metric lost, 0 = no effect); nulls where not computed (a cancelled sweep).
        selectivity: [recall drop - reasoning drop, CI low, CI high].
        p_adjusted: multiple-comparison adjusted p-value of "selectivity = 0", or null.
        significant: whether the selectivity interval excludes zero after the correction.
    """

    name: str
    layer: int
    head: int | None
    recall: list[float | None]
    reasoning: list[float | None]
    selectivity: list[float | None]
    p_adjusted: float | None
    significant: bool


class DoubleDissociation(TypedDict):
    """The strongest pair: ``recall_component`` hurts recall and spares reasoning, ``reasoning_component`` the reverse.

    Keys:
        recall_component, reasoning_component: component names.
        interaction, interaction_lo, interaction_hi: the crossover interaction and its interval.
        statement: one sentence stating the finding (plain text).
    """

    recall_component: str
    reasoning_component: str
    interaction: float | None
    interaction_lo: float | None
    interaction_hi: float | None
    statement: str


class DissociationControl(TypedDict):
    """A control row: the selective components of one side ablated together (``kind="selected"``), or a random set
    of as many components (``kind="random"``).

    Keys:
        kind: ``"selected"`` or ``"random"``.
        side: ``"recall"`` or ``"reasoning"``.
        components: the names ablated together.
        recall_drop, reasoning_drop: [normalised drop, CI low, CI high].
    """

    kind: str
    side: str
    components: list[str]
    recall_drop: list[float | None]
    reasoning_drop: list[float | None]


class DissociationPayload(TypedDict, total=False):
    """A recall-versus-reasoning ablation sweep, drawn as a scatter of recall drop against reasoning drop, the drops
    as layer x head matrices (or a layer strip), the double-dissociation statement and the control rows.

    Keys:
        kind: always ``"dissociation"``.
        title: heading shown above the view.
        metric, metric_label: the selectivity metric's name and its label with unit (``"logit difference"``).
        granularity: ``"heads"``, ``"attn"``, ``"mlp"``, ``"blocks"`` or ``"components"``.
        ablation: ``"zero"``, ``"mean"`` or ``"resample"``.
        n_layers, n_heads: the model's blocks and query heads per block.
        correction: ``"holm"`` or ``"bh"``; alpha: its level.
        level: coverage of the intervals (0.95); n_bootstrap: resamples of the paired bootstrap.
        complete: false when the sweep was cancelled (components not run have null intervals).
        n_items: items per task, ``{"recall": n, "reasoning": n}``.
        baselines: clean mean of the metric per task, in its unit.
        components: [n_components] :class:`DissociationComponent`, in sweep order.
        double_dissociation: a :class:`DoubleDissociation`, or null when none was found.
        statement: the finding in one sentence (also when no double dissociation was found).
        controls: [n_controls] :class:`DissociationControl`.
    """

    kind: Literal["dissociation"]
    title: str
    metric: str
    metric_label: str
    granularity: str
    ablation: str
    n_layers: int
    n_heads: int
    correction: str
    alpha: float
    level: float
    n_bootstrap: int
    complete: bool
    n_items: dict[str, int]
    baselines: dict[str, float | None]
    components: list[DissociationComponent]
    double_dissociation: DoubleDissociation | None
    statement: str
    controls: list[DissociationControl]


__all__ += ["COMPOSITION_MIME", "CompositionBaseline", "CompositionChannelData", "CompositionPathPair",
            "CompositionPathPatching", "CompositionPayload"]

#: MIME type of a composition payload, rendered by labext's composition view (``labext/src/composition.ts``).
COMPOSITION_MIME = "application/vnd.attnlab.composition.v1+json"


class CompositionBaseline(TypedDict):
    """The random baseline of one mode: the score of Gaussian factors of the model's shapes.

    Keys:
        mean, std: over the seeded draws (dimensionless, like the scores).
        draws: number of draws.
    """

    mean: float
    std: float
    draws: int


class CompositionChannelData(TypedDict):
    """The singular values of one sender-receiver pair's composed matrix (``composition_svd``), precomputed.

    Keys:
        mode: ``"q"``, ``"k"`` or ``"v"``.
        sender, receiver: ``[layer, head]`` query heads.
        score: the composition score (root sum of squares of ``singular_values``).
        singular_values: [d_head] singular values of ``W_OV^s R / (||W_OV^s|| ||R||)``, largest first.
        rank90: fewest singular directions holding 90% of the squared norm (the channel's effective rank).
    """

    mode: str
    sender: list[int]
    receiver: list[int]
    score: float
    singular_values: list[float]
    rank90: int


class CompositionPathPair(TypedDict):
    """One pair of a path-patching comparison.

    Keys:
        sender: ``[layer, head]``.
        receivers: ``[[layer, head], ...]`` the receiving query heads patched together (one head, or every query
            head of a key/value group on a grouped-query model).
        effect: the path-patching effect (the sweep's metric, signed), or null when not finite.
        composition: the composition score compared with it (mean over ``receivers``), or null.
    """

    sender: list[int]
    receivers: list[list[int]]
    effect: float | None
    composition: float | None


class CompositionPathPatching(TypedDict):
    """A :class:`~attnlab.heads.composition.CompositionComparison` of one mode with path patching.

    Keys:
        mode: the composition mode compared.
        spearman: rank correlation over the pairs (null when not finite).
        n: pairs compared.
        absolute: whether the effect's magnitude was ranked.
        effect_label: what an effect number means (plain text).
        pairs: every compared pair.
    """

    mode: str
    spearman: float | None
    n: int
    absolute: bool
    effect_label: str
    pairs: list[CompositionPathPair]


class CompositionPayload(TypedDict):
    """Sender x receiver composition scores (Q, K, V switchable), with per-pair singular values and path patching.

    Rows are the sender heads of layers ``0 .. n_layers - 2`` and columns the receiver heads of layers
    ``1 .. n_layers - 1``, both ordered by layer then head (a head in the last layer sends to nothing, one in layer
    0 receives from nothing). A cell whose receiver is not in a later layer than its sender is null.

    Keys:
        kind: always ``"composition"``.
        version: always 1.
        title, subtitle: heading and one line under it (plain text).
        model_name: the model's name (plain text).
        n_layers, n_heads: the model's blocks and query heads per block.
        modes: the modes present, a subset of ``["q", "k", "v"]`` in that order.
        mode: the mode shown first.
        senders: [n_senders] ``[layer, head]`` of each row.
        receivers: [n_receivers] ``[layer, head]`` of each column.
        matrices: {mode: [n_senders][n_receivers] scores in [0, 1], null where not defined}.
        ranges: {mode: ``[0, hi]``} the colour scale of each mode.
        baseline: {mode: :class:`CompositionBaseline`}.
        channels: precomputed singular values (the top pairs of each mode, and the compared path-patching pairs).
        top_n: how many top pairs per mode were precomputed (0 when no model was given).
        path_patching: the comparison with path patching, or null.
        settings: ``[key, value]`` text pairs (norm folding, seed, draws), in display order.
    """

    kind: Literal["composition"]
    version: Literal[1]
    title: str
    subtitle: str
    model_name: str
    n_layers: int
    n_heads: int
    modes: list[str]
    mode: str
    senders: list[list[int]]
    receivers: list[list[int]]
    matrices: dict[str, list[list[float | None]]]
    ranges: dict[str, list[float]]
    baseline: dict[str, CompositionBaseline]
    channels: list[CompositionChannelData]
    top_n: int
    path_patching: CompositionPathPatching | None
    settings: list[list[str]]
