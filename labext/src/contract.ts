/**
 * The render contract between the kernel and this front end.
 *
 * Mirrors `attnlab/render/contract.py`: a change there is a change here, and a new version of a payload gets a new
 * MIME type (`...v2+json`) rather than a silent change of meaning.
 */

/** MIME type of a heatmap payload, rendered by {@link renderHeatmap} (`./heatmap`). */
export const HEATMAP_MIME = 'application/vnd.attnlab.heatmap.v1+json';

/**
 * A labelled matrix drawn with a diverging colour scale centred at zero.
 *
 * Shapes use `n_rows = values.length` and `n_cols = values[0].length`.
 */
export interface HeatmapPayload {
  /** Always `"heatmap"`. */
  kind: 'heatmap';
  /** Always 1. */
  version: 1;
  /** Heading shown above the plot. */
  title: string;
  /** One line under the title (baselines, direction ...). */
  subtitle: string;
  /** `[n_rows][n_cols]` numbers; `null` marks a cell not computed (e.g. an interrupted sweep). */
  values: (number | null)[][];
  /** `[n_rows]` labels (`"L0"` ... or `"L9H9"`). */
  row_labels: string[];
  /** `[n_cols]` labels (`"H0"` ... or position labels such as `"S2"`, `"END"`). */
  col_labels: string[];
  /** `[n_cols]` token strings shown under the column labels, or null. Plain text, never HTML. */
  col_tokens: string[] | null;
  /** Axis title of the rows (`"layer"`). */
  row_title: string;
  /** Axis title of the columns (`"head"`, `"position"`). */
  col_title: string;
  /** Row indices at which a new group starts (a separator line is drawn before each), or null. */
  row_groups: number[] | null;
  /** What a cell's number means, with its unit (`"normalised logit difference"`). */
  value_label: string;
  /** Colour-scale limit: `-zmax` is full blue, 0 white, `+zmax` full red (the limit of `scale`, as shown first). */
  zmax: number;
  /** Optional: the scale shown first (absent: `"symmetric"` with `zmax` as given). See {@link HeatmapScale}. */
  scale?: HeatmapScale;
  /** Optional: the limit of the `"fixed"` scale (1 for normalised scores), or null without a natural range. */
  fixed_range?: number | null;
  /** Optional: the percentile of the `"percentile"` scale (99). */
  clip_percentile?: number;
  /** Optional: false for an interrupted sweep. */
  complete?: boolean;
  /** Optional: plain-text warnings shown under the subtitle (baselines too close ...). */
  warnings?: string[];
}

/**
 * A heatmap colour scale: `"fixed"` is `±fixed_range`; `"symmetric"` ± the largest |value|; `"percentile"` ± the
 * `clip_percentile`-th percentile of |value| (nearest rank), cells beyond it marked as clipped. Mirrors
 * `HEATMAP_SCALES` in `attnlab/render/contract.py`.
 */
export type HeatmapScale = 'fixed' | 'symmetric' | 'percentile';

/** `detail` of the bubbling `attnlab-cell-click` CustomEvent dispatched on the host element. */
export interface HeatmapCellClickDetail {
  /** Row index into `values`. */
  row: number;
  /** Column index into `values[row]`. */
  col: number;
  /** `row_labels[row]`. */
  rowLabel: string;
  /** `col_labels[col]`. */
  colLabel: string;
  /** `values[row][col]`; null when the cell was not computed. */
  value: number | null;
}


/** MIME type of a head-gallery payload, rendered by {@link renderGallery} (`./gallery`). */
export const HEADGALLERY_MIME = 'application/vnd.attnlab.headgallery.v1+json';

/** Details of one head, shown when its cell is clicked. `n_pos` = number of example tokens. */
export interface HeadGalleryHead {
  layer: number;
  head: number;
  /** `[n_pos][n_pos]` attention probabilities on the example sequence (dest rows, src columns), or null. */
  pattern: number[][] | null;
  /** `{method: loss increase}` in nats per token, for the ablation methods run on this head (may be empty). */
  ablation: Record<string, number>;
  /** `[n_prefix_lengths]` induction attention per prefix length, or null. */
  prefix: (number | null)[] | null;
  /** `"long-prefix"`, `"short-prefix"`, `"none"`, or null. */
  prefix_class: string | null;
  /** Direct logit attribution to the copied token (logits), or null. */
  copying: number | null;
}

/** A layer x head grid of head scores, switchable between kinds, with per-head details on click. */
export interface HeadGalleryPayload {
  /** Always `"headgallery"`. */
  kind: 'headgallery';
  /** Always 1. */
  version: 1;
  title: string;
  subtitle: string;
  /** `[n_kinds]` score kinds, e.g. `["previous_token", "duplicate_token", "induction"]`. */
  kinds: string[];
  /** `[n_kinds]` display labels. */
  kind_labels: string[];
  /** `[n_kinds][n_layers][n_heads]` mean scores in [0, 1]; null where not computed. */
  scores: (number | null)[][][];
  /** `[n_kinds][n_layers][n_heads]` standard deviation over sequences, or null. */
  score_std: (number | null)[][][] | null;
  /** `[n_layers]` labels. */
  layer_labels: string[];
  /** `[n_heads]` labels. */
  head_labels: string[];
  /** `[n_pos]` example tokens. Plain text, never HTML. */
  tokens: string[];
  /** `[n_prefix_lengths]`, or null. */
  prefix_lengths: number[] | null;
  /** What an ablation number means, with its unit. */
  ablation_label: string;
  /** Unablated losses `{first_repeat, second_repeat}`, nats per token, or null. */
  clean_loss: Record<string, number> | null;
  /** `[n_layers * n_heads]` details, row-major (`layer * n_heads + head`). */
  heads: HeadGalleryHead[];
  /** `[layer, head]` shown initially, or null. */
  selected: number[] | null;
  /** Optional `[n_kinds]`: what a score of each kind measures, with its unit (`"attention probability"`). */
  kind_units?: string[];
  /** Optional `[n_kinds][2]`: `[lo, hi]` of each kind's colour scale (white at lo, red at hi); absent: `[0, 1]`. */
  kind_ranges?: number[][];
  /** Optional `[n_kinds]`: one sentence per kind (definition, source). Plain text. */
  kind_descriptions?: string[];
  /** Optional lines of plain text shown under the grid (sink positions, the needle, retrieval accuracy ...). */
  notes?: string[];
}

/** `detail` of the bubbling `attnlab-head-click` CustomEvent dispatched on the host element. */
export interface HeadGalleryClickDetail {
  layer: number;
  head: number;
}


/** MIME type of a circuit payload, rendered by {@link renderCircuit} (`./circuit`). */
export const CIRCUIT_MIME = 'application/vnd.attnlab.circuit.v1+json';

/** One node of a circuit graph. */
export interface CircuitNode {
  /** Graph name (`"input"`, `"L3H2"`, `"L3KV1"`, `"MLP3"`, `"logits"`), unique in the payload. Plain text. */
  name: string;
  /** Short label drawn inside the node (`"H2"`, `"KV1"`, `"MLP"`). Plain text. */
  label: string;
  /** `"kv"` is a shared key/value head of a grouped-query model. */
  kind: 'input' | 'head' | 'kv' | 'mlp' | 'logits';
  /** Block index; -1 for `input`, `n_layers` for `logits`. */
  layer: number;
  /** Query head index of a `"head"` node, else null. */
  head: number | null;
  /** Key/value head index of a `"kv"` node, else null. */
  group: number | null;
}

/** One edge `sender -> receiver.input`. */
export interface CircuitEdge {
  /** The graph's edge name (`"L0H1->L3KV0.k"`). */
  name: string;
  /** Sender node name. */
  sender: string;
  /** Receiving node name. */
  receiver: string;
  /** Which input of the receiver the edge feeds. */
  input: 'q' | 'k' | 'v' | 'mlp' | 'logits';
  /** Signed attribution score (logits). */
  score: number;
}

/** Faithfulness of the top-n-edge circuits. All arrays have length `n_sizes`. */
export interface CircuitCurve {
  /** Numbers of edges, increasing. */
  sizes: number[];
  /** Faithfulness per size (fraction of the full model's metric recovered), null if not finite. */
  faithfulness: (number | null)[];
  /** `[n_sizes][2]` bootstrap 95% intervals `[low, high]`, or null. */
  ci95: (number | null)[][] | null;
  /** Heads per circuit, or null. */
  n_heads: number[] | null;
}

/** A circuit drawn as a layered graph with an edge-count slider. */
export interface CircuitPayload {
  /** Always `"circuit"`. */
  kind: 'circuit';
  /** Always 1. */
  version: 1;
  title: string;
  subtitle: string;
  /** Plain text. */
  model_name: string;
  n_layers: number;
  /** Every node touched by `edges`, in graph order. */
  nodes: CircuitNode[];
  /** `[n_edges]` edges sorted by decreasing |score|; the slider shows a prefix. */
  edges: CircuitEdge[];
  /** Edges in the circuit before truncation to `edges.length`. */
  n_edges_total: number;
  /** What a score means, with its unit. */
  value_label: string;
  curve: CircuitCurve | null;
  /** `[key, value]` text pairs in display order. */
  provenance: string[][];
}

/** `detail` of the bubbling `attnlab-node-click` CustomEvent dispatched on the host element. */
export interface CircuitNodeClickDetail {
  /** Node name (`"L3H2"`). */
  node: string;
  /** Block index (-1 for `input`, `n_layers` for `logits`). */
  layer: number;
  /** Query head index, or null for a non-head node. */
  head: number | null;
}


/** MIME type of a recall-versus-reasoning dissociation payload, rendered by {@link renderDissociation} (`./dissociation`). */
export const DISSOCIATION_MIME = 'application/vnd.attnlab.dissociation.v1+json';

/** `[estimate, CI low, CI high]`; entries are null where not computed (a cancelled sweep) or not finite. */
export type Interval = [number | null, number | null, number | null];

/** One ablated component of a dissociation sweep. */
export interface DissociationComponent {
  /** `"L3H2"`, `"ATTN3"`, `"MLP3"` or a group `"L3H2+MLP5"`. Plain text. */
  name: string;
  /** Block index (the first block of a group). */
  layer: number;
  /** Query head index, or null for attention-block, MLP and group components. */
  head: number | null;
  /** Normalised drop of the recall metric: 1 = the whole clean metric lost, 0 = no effect; with its CI. */
  recall: Interval;
  /** Normalised drop of the reasoning metric, with its CI. */
  reasoning: Interval;
  /** Recall drop minus reasoning drop, with its CI. */
  selectivity: Interval;
  /** Multiple-comparison adjusted p-value of "selectivity = 0" (null when not computed). */
  p_adjusted: number | null;
  /** Whether the selectivity interval excludes zero after the correction. */
  significant: boolean;
}

/** The strongest pair of opposite selectivities, with the crossover interaction and its interval. */
export interface DoubleDissociation {
  recall_component: string;
  reasoning_component: string;
  interaction: number | null;
  interaction_lo: number | null;
  interaction_hi: number | null;
  /** A sentence stating the finding. Plain text. */
  statement: string;
}

/** One control row: the selected components, or a random draw of as many components, ablated together. */
export interface DissociationControl {
  kind: 'selected' | 'random' | string;
  side: 'recall' | 'reasoning' | string;
  components: string[];
  recall_drop: Interval;
  reasoning_drop: Interval;
}

/**
 * A recall-versus-reasoning ablation sweep: a scatter of recall drop (x) against reasoning drop (y) per component,
 * the layer x head matrices of both drops (granularity `"heads"`) or a layer strip, the double-dissociation statement
 * and the control rows.
 */
export interface DissociationPayload {
  /** Always `"dissociation"`. */
  kind: 'dissociation';
  /** 1 (optional). */
  version?: 1;
  title: string;
  /** Selectivity metric name (`"logit_diff"`) and its label with unit (`"logit difference"`). */
  metric: string;
  metric_label: string;
  /** `"heads"`, `"attn"`, `"mlp"`, `"blocks"` or `"components"`. */
  granularity: string;
  /** `"zero"`, `"mean"` or `"resample"`. */
  ablation?: string;
  n_layers: number;
  n_heads: number;
  /** `"holm"` or `"bh"`. */
  correction: string;
  alpha: number;
  /** Confidence level of the intervals (0.95). */
  level: number;
  n_bootstrap: number;
  /** False when the sweep was cancelled: components not run have null intervals. */
  complete: boolean;
  /** Items kept per task: `{recall, reasoning}`. */
  n_items: Record<string, number>;
  /** Clean mean of the metric per task, in its unit. */
  baselines: Record<string, number>;
  /** `[n_components]`, in sweep order. */
  components: DissociationComponent[];
  double_dissociation: DoubleDissociation | null;
  /** The finding in one sentence, also when no double dissociation was found. Plain text. */
  statement?: string;
  controls: DissociationControl[];
}

/** `detail` of the bubbling `attnlab-component-click` CustomEvent dispatched on the host element. */
export interface DissociationClickDetail {
  /** Index into `components`. */
  index: number;
  /** `components[index].name`. */
  name: string;
  layer: number;
  head: number | null;
}


/** MIME type of a composition payload, rendered by {@link renderComposition} (`./composition`). */
export const COMPOSITION_MIME = 'application/vnd.attnlab.composition.v1+json';

/** The random baseline of one mode: the score of Gaussian factors of the model's shapes. */
export interface CompositionBaseline {
  mean: number;
  std: number;
  draws: number;
}

/** Precomputed singular values of one sender-receiver pair (`composition_svd`). */
export interface CompositionChannelData {
  /** `"q"`, `"k"` or `"v"`. */
  mode: string;
  /** `[layer, head]`. */
  sender: number[];
  /** `[layer, head]`. */
  receiver: number[];
  /** The composition score (root sum of squares of the singular values). */
  score: number | null;
  /** `[d_head]` singular values of the normalised composed matrix, largest first. */
  singular_values: (number | null)[];
  /** Fewest singular directions holding 90% of the squared norm. */
  rank90: number;
}

/** One pair of a path-patching comparison. */
export interface CompositionPathPair {
  /** `[layer, head]`. */
  sender: number[];
  /** `[n][2]` receiving query heads patched together. */
  receivers: number[][];
  /** Path-patching effect (the sweep's metric, signed), or null. */
  effect: number | null;
  /** Composition score compared with it (mean over `receivers`), or null. */
  composition: number | null;
}

/** The comparison of one mode's composition scores with path patching. */
export interface CompositionPathPatching {
  mode: string;
  spearman: number | null;
  n: number;
  absolute: boolean;
  /** What an effect means. Plain text. */
  effect_label: string;
  pairs: CompositionPathPair[];
}

/**
 * Sender x receiver composition scores. Rows: `n_senders` sender heads of layers `0 .. n_layers - 2`; columns:
 * `n_receivers` receiver heads of layers `1 .. n_layers - 1`; both by layer, then head.
 */
export interface CompositionPayload {
  /** Always `"composition"`. */
  kind: 'composition';
  /** Always 1. */
  version: 1;
  title: string;
  subtitle: string;
  /** Plain text. */
  model_name: string;
  n_layers: number;
  n_heads: number;
  /** Subset of `["q", "k", "v"]`, in that order. */
  modes: string[];
  /** Mode shown first. */
  mode: string;
  /** `[n_senders][2]` `[layer, head]` of each row. */
  senders: number[][];
  /** `[n_receivers][2]` `[layer, head]` of each column. */
  receivers: number[][];
  /** `{mode: [n_senders][n_receivers]}` scores in [0, 1]; null where the receiver is not in a later layer. */
  matrices: Record<string, (number | null)[][]>;
  /** `{mode: [0, hi]}` colour scale. */
  ranges: Record<string, number[]>;
  baseline: Record<string, CompositionBaseline>;
  /** Precomputed singular values (top pairs per mode, compared path-patching pairs). */
  channels: CompositionChannelData[];
  /** Top pairs per mode precomputed (0 when no model was given). */
  top_n: number;
  path_patching: CompositionPathPatching | null;
  /** `[key, value]` text pairs. */
  settings: string[][];
}

/** `detail` of the bubbling `attnlab-pair-click` CustomEvent dispatched on the host element. */
export interface CompositionPairClickDetail {
  mode: string;
  /** `[layer, head]`. */
  sender: number[];
  /** `[layer, head]`. */
  receiver: number[];
  /** The cell's score, or null. */
  value: number | null;
}
