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
  /** Colour-scale limit: `-zmax` is full blue, 0 white, `+zmax` full red. */
  zmax: number;
}

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

