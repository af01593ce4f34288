/**
 * A pure, dependency-free DOM renderer for attnlab heatmap payloads.
 *
 * Used both by the JupyterLab MIME renderer (`./index`) and by the standalone bundle for offline HTML reports
 * (`./standalone`). Nothing here touches the network, and every string from the payload (titles, labels, tokens)
 * reaches the page through `textContent` / SVG text nodes only, never as HTML.
 *
 * Tooltip text (the tooltip is a `div.attnlab-tooltip`, lines joined with "\n", shown with `white-space: pre`):
 *
 *     line 1:                  `${row_label} · ${col_label}`
 *     line 2 (col_tokens only): `token ${JSON.stringify(col_tokens[col])}`
 *     line 3:                  `${value.toFixed(4)} ${value_label}`   (or `not computed` for a null cell)
 *
 * e.g. "L9 · END\ntoken \" Mary\"\n0.8123 normalised logit difference". See {@link formatTooltip}.
 */

import type { HeatmapCellClickDetail, HeatmapPayload, HeatmapScale } from './contract';
import { Attrs, htmlEl, svgEl } from './dom';
import { exportButtons, fileStem } from './export';

/** Name of the bubbling CustomEvent dispatched on the host element when a cell is clicked. */
export const CELL_CLICK_EVENT = 'attnlab-cell-click';

/** What {@link renderHeatmap} returns: select a cell from code (no click event is dispatched), change the scale. */
export interface HeatmapHandle {
  select(row: number | null, col?: number): void;
  /** Redraw the cells and the colour bar on another scale (no event is dispatched). */
  setScale(choice: ScaleChoice): void;
  /** The scale shown now. */
  scale(): ScaleChoice;
}

const NO_HANDLE: HeatmapHandle = {
  select: () => undefined,
  setScale: () => undefined,
  scale: () => ({ mode: 'symmetric', fixed: null, percentile: 99 })
};

/** A colour-scale choice: the mode, the fixed range (null: none given) and the clipping percentile. */
export interface ScaleChoice {
  mode: HeatmapScale;
  fixed: number | null;
  percentile: number;
}

/** Options of {@link renderHeatmap}. */
export interface HeatmapOptions {
  /** The scale shown first (default: the payload's `scale`, `fixed_range` and `clip_percentile`). */
  scale?: ScaleChoice;
  /** Matrices whose values set the automatic scales (default: the payload's own); views on one shared scale pass all. */
  scaleValues?: (number | null)[][][];
  /** Draw the scale menu in the header (default true); views that share one scale draw their own. */
  scaleControl?: boolean;
  /** Draw the SVG/PNG export buttons in the header (default true). */
  exportControls?: boolean;
}


// Font sizes in px; they mirror style/index.css and drive the layout estimates below.
const LABEL_FONT = 12;
const SMALL_FONT = 11;
const TOKEN_FONT = 11;
const AXIS_FONT = 12;
/** Generous estimates of a character's advance in em: labels (sans-serif, often capitals) and tokens (monospace). */
const LABEL_EM = 0.68;
const MONO_EM = 0.62;
/** Tokens longer than this are shown shortened (the tooltip always has the full token). */
const MAX_TOKEN_CHARS = 32;

const LEGEND_BAR_WIDTH = 200;
/** Value labels longer than this go on their own line under the colour bar's ticks. */
const LEGEND_LABEL_INLINE_CHARS = 28;

/** Colour stops of the diverging scale, t in [-1, 1]: blue, light blue, white, light red, red. */
const STOPS: ReadonlyArray<readonly [number, readonly [number, number, number]]> = [
  [-1, [33, 102, 172]],
  [-0.5, [146, 197, 222]],
  [0, [255, 255, 255]],
  [0.5, [244, 165, 130]],
  [1, [178, 24, 43]]
];

let instances = 0;

/**
 * Colour of `value` on the diverging scale: -zmax full blue, 0 white, +zmax full red (clamped outside).
 */
export function divergingColor(value: number, zmax: number): string {
  const t = Math.max(-1, Math.min(1, value / zmax));
  let i = 0;
  while (i < STOPS.length - 2 && t > STOPS[i + 1][0]) {
    i++;
  }
  const [t0, c0] = STOPS[i];
  const [t1, c1] = STOPS[i + 1];
  const f = (t - t0) / (t1 - t0);
  const mix = (k: number) => Math.round(c0[k] + (c1[k] - c0[k]) * f);
  return `rgb(${mix(0)}, ${mix(1)}, ${mix(2)})`;
}

/** The number at `[row][col]`, or null when absent, null or not a finite number. */
function cellValue(payload: HeatmapPayload, row: number, col: number): number | null {
  const v = payload.values[row]?.[col];
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function label(list: readonly unknown[] | null | undefined, index: number): string {
  const v = list?.[index];
  return v === undefined || v === null ? String(index) : String(v);
}

/**
 * The exact tooltip text of cell `[row][col]` (see the module comment for the format).
 */
export function formatTooltip(payload: HeatmapPayload, row: number, col: number): string {
  const lines = [`${label(payload.row_labels, row)} · ${label(payload.col_labels, col)}`];
  if (payload.col_tokens) {
    lines.push(`token ${JSON.stringify(label(payload.col_tokens, col))}`);
  }
  const value = cellValue(payload, row, col);
  if (value === null) {
    lines.push('not computed');
  } else {
    lines.push(payload.value_label ? `${value.toFixed(4)} ${payload.value_label}` : value.toFixed(4));
  }
  return lines.join('\n');
}

/** Token as displayed under a column: control characters made visible, very long tokens shortened. */
function displayToken(token: string): string {
  const shown = token.replace(/\r\n|\n/g, '↵').replace(/\t/g, '⇥').replace(/\r/g, '↵');
  return shown.length > MAX_TOKEN_CHARS ? `${shown.slice(0, MAX_TOKEN_CHARS - 1)}…` : shown;
}

/** Short tick label: at most three significant digits, no float noise. */
function formatTick(v: number): string {
  if (v === 0) {
    return '0';
  }
  const s = String(Number(v.toPrecision(3)));
  return v > 0 ? `+${s}` : s;
}

/**
 * The colour-scale limit of `choice` over `matrices` (mirrors `scale_limit` in `attnlab/render/views.py`):
 * `fixed` is the fixed range (symmetric when none); `symmetric` the largest |value|; `percentile` the
 * `ceil(p/100 * n)`-th smallest |value| of the n finite cells. 1 when nothing is computed or all values are 0.
 */
export function scaleLimit(matrices: readonly (readonly (number | null)[])[][], choice: ScaleChoice): number {
  if (choice.mode === 'fixed' && choice.fixed !== null && Number.isFinite(choice.fixed) && choice.fixed > 0) {
    return choice.fixed;
  }
  const flat: number[] = [];
  for (const m of matrices) {
    for (const row of m ?? []) {
      for (const v of row ?? []) {
        if (typeof v === 'number' && Number.isFinite(v)) {
          flat.push(Math.abs(v));
        }
      }
    }
  }
  if (flat.length === 0) {
    return 1;
  }
  let top: number;
  if (choice.mode === 'percentile') {
    flat.sort((a, b) => a - b);
    const p = Math.min(100, Math.max(1e-9, choice.percentile));
    top = flat[Math.max(0, Math.ceil((p / 100) * flat.length) - 1)];
  } else {
    top = Math.max(...flat);
  }
  return top > 0 ? top : 1;
}

/** The payload's own scale choice (absent fields: symmetric, no fixed range, p99). */
export function payloadScale(payload: HeatmapPayload): ScaleChoice {
  const fixed = typeof payload.fixed_range === 'number' && payload.fixed_range > 0 ? payload.fixed_range : null;
  const mode: HeatmapScale =
    payload.scale === 'fixed' || payload.scale === 'percentile' || payload.scale === 'symmetric' ? payload.scale : 'symmetric';
  const percentile = typeof payload.clip_percentile === 'number' ? payload.clip_percentile : 99;
  return { mode, fixed, percentile };
}

/** `99` -> `"p99"`, `99.5` -> `"p99.5"`. */
const pct = (p: number): string => `p${Number(p.toPrecision(4))}`;

/** One line saying which scale is shown, e.g. `"scale: clipped at p99 (±0.412); 3 cells beyond, marked ●"`. */
export function scaleCaption(choice: ScaleChoice, zmax: number, clipped: number): string {
  const what =
    choice.mode === 'fixed' && choice.fixed !== null
      ? `fixed ±${formatTick(zmax).replace('+', '')}`
      : choice.mode === 'percentile'
        ? `clipped at ${pct(choice.percentile)} (±${formatTick(zmax).replace('+', '')})`
        : `symmetric ±max |value| (${formatTick(zmax).replace('+', '')})`;
  return `scale: ${what}` + (clipped > 0 ? `; ${clipped} cell${clipped === 1 ? '' : 's'} beyond, marked ●` : '');
}

/**
 * The colour bar's tick labels at fractions `f` of the bar (-1 .. 1), thinned so that no two collide: the five
 * ticks -z, -z/2, 0, +z/2, +z when their labels fit the spacing, else -z, 0, +z. The end labels get `≤` / `≥`
 * when cells beyond the limit are clipped.
 */
export function legendTicks(zmax: number, clipped: boolean, barWidth = LEGEND_BAR_WIDTH): { f: number; text: string }[] {
  const ticks = [-1, -0.5, 0, 0.5, 1].map(f => ({ f, text: formatTick(f * zmax) }));
  if (clipped) {
    ticks[0].text = `≤${ticks[0].text}`;
    ticks[4].text = `≥${ticks[4].text}`;
  }
  const fits = (ts: { f: number; text: string }[]): boolean =>
    ts.every((t, i) => {
      if (i === 0) {
        return true;
      }
      const prev = ts[i - 1];
      const gap = ((t.f - prev.f) / 2) * barWidth;
      return gap >= (textWidth(t.text, SMALL_FONT) + textWidth(prev.text, SMALL_FONT)) / 2 + 4;
    });
  return fits(ticks) ? ticks : [ticks[0], ticks[2], ticks[4]];
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, x));
}

function textWidth(text: string, fontPx: number, em = LABEL_EM): number {
  return Math.ceil(text.length * em * fontPx);
}



/** An SVG text element whose content is set as a text node (never parsed as markup). */
function svgText(doc: Document, parent: Element, text: string, attrs: Attrs): SVGTextElement {
  const el = svgEl(doc, 'text', attrs, parent);
  el.textContent = text;
  return el;
}


/** A grey, diagonally hatched fill for cells that were not computed. */
function hatchPattern(doc: Document, defs: Element, id: string): void {
  const p = svgEl(
    doc,
    'pattern',
    { id, patternUnits: 'userSpaceOnUse', width: 6, height: 6, patternTransform: 'rotate(45)' },
    defs
  );
  svgEl(doc, 'rect', { width: 6, height: 6, class: 'attnlab-hatch-bg' }, p);
  svgEl(doc, 'line', { x1: 0, y1: 0, x2: 0, y2: 6, class: 'attnlab-hatch-line' }, p);
}

/** What the colour bar says besides its range: which scale, and how many cells it clips. */
interface LegendInfo {
  caption: string;
  clipped: number;
}

/**
 * Colour bar from -zmax to +zmax with ticks that never collide ({@link legendTicks}), the value label, a "not
 * computed" swatch if needed, a "clipped" swatch when cells lie beyond the limit, and a caption naming the scale.
 */
function renderLegend(
  doc: Document,
  parent: Element,
  uid: string,
  zmax: number,
  valueLabel: string,
  hasMissing: boolean,
  info?: LegendInfo
): SVGSVGElement {
  const clipped = info?.clipped ?? 0;
  const ticks = legendTicks(zmax, clipped > 0);
  const x0 = Math.max(20, Math.ceil(textWidth(ticks[0].text, SMALL_FONT) / 2) + 4);
  const barY = 4;
  const barH = 12;
  const afterBar = x0 + LEGEND_BAR_WIDTH + Math.max(14, Math.ceil(textWidth(ticks[ticks.length - 1].text, SMALL_FONT) / 2) + 6);
  // a long value label goes on its own line under the ticks, so the colour bar stays narrow enough for side-by-side
  // views; a short one sits right of the bar
  const labelBelow = valueLabel.length > LEGEND_LABEL_INLINE_CHARS;
  const labelX = labelBelow ? 4 : afterBar;
  let width = labelBelow ? afterBar - 6 : labelX + textWidth(valueLabel, LABEL_FONT) + 8;
  const missingX = width + 12;
  const missingText = 'not computed';
  if (hasMissing) {
    width = missingX + 18 + textWidth(missingText, SMALL_FONT) + 8;
  }
  const clipX = width + 12;
  const clipText = 'clipped';
  if (clipped > 0) {
    width = clipX + 18 + textWidth(clipText, SMALL_FONT) + 8;
  }
  const caption = info?.caption ?? '';
  if (caption) {
    width = Math.max(width, 8 + textWidth(caption, SMALL_FONT));
  }
  if (labelBelow) {
    width = Math.max(width, 8 + textWidth(valueLabel, LABEL_FONT));
  }
  const lineY = (k: number): number => barY + barH + 29 + 15 * k; // baselines of the lines under the ticks
  const captionLine = labelBelow ? 1 : 0;
  const height = 38 + 15 * ((labelBelow ? 1 : 0) + (caption ? 1 : 0)) - (caption || labelBelow ? 1 : 0);
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-legend',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `colour scale from ${formatTick(-zmax)} (blue) through 0 (white) to ${formatTick(zmax)} (red)`,
    'data-zmax': String(zmax),
    'data-clipped': String(clipped)
  });
  parent.appendChild(svg);
  const defs = svgEl(doc, 'defs', {}, svg);
  const grad = svgEl(doc, 'linearGradient', { id: `${uid}-grad`, x1: 0, x2: 1, y1: 0, y2: 0 }, defs);
  for (const [t, [r, g, b]] of STOPS) {
    svgEl(doc, 'stop', { offset: `${((t + 1) / 2) * 100}%`, 'stop-color': `rgb(${r}, ${g}, ${b})` }, grad);
  }
  svgEl(
    doc,
    'rect',
    { x: x0, y: barY, width: LEGEND_BAR_WIDTH, height: barH, fill: `url(#${uid}-grad)`, class: 'attnlab-legend-bar' },
    svg
  );
  for (const { f, text } of ticks) {
    const x = x0 + ((f + 1) / 2) * LEGEND_BAR_WIDTH;
    svgEl(doc, 'line', { x1: x, x2: x, y1: barY + barH, y2: barY + barH + 4, class: 'attnlab-tick' }, svg);
    svgText(doc, svg, text, {
      x,
      y: barY + barH + 13,
      'text-anchor': 'middle',
      class: 'attnlab-legend-tick attnlab-legend-value'
    });
  }
  svgText(doc, svg, valueLabel, labelBelow
    ? { x: labelX, y: lineY(0), class: 'attnlab-legend-label' }
    : { x: labelX, y: barY + barH / 2, 'dominant-baseline': 'central', class: 'attnlab-legend-label' });
  if (hasMissing) {
    const defsId = `${uid}-hatch-legend`;
    hatchPattern(doc, defs, defsId);
    svgEl(
      doc,
      'rect',
      { x: missingX, y: barY, width: 14, height: barH, fill: `url(#${defsId})`, class: 'attnlab-legend-missing' },
      svg
    );
    svgText(doc, svg, missingText, {
      x: missingX + 18,
      y: barY + barH / 2,
      'dominant-baseline': 'central',
      class: 'attnlab-legend-tick'
    });
  }
  if (clipped > 0) {
    svgEl(doc, 'rect', { x: clipX, y: barY, width: 14, height: barH, fill: divergingColor(1, 1), class: 'attnlab-legend-clip' }, svg);
    svgEl(doc, 'circle', { cx: clipX + 7, cy: barY + barH / 2, r: 2.5, class: 'attnlab-clip-mark' }, svg);
    svgText(doc, svg, clipText, {
      x: clipX + 18,
      y: barY + barH / 2,
      'dominant-baseline': 'central',
      class: 'attnlab-legend-tick'
    });
  }
  if (caption) {
    svgText(doc, svg, caption, { x: 4, y: lineY(captionLine), class: 'attnlab-legend-tick attnlab-legend-caption' });
  }
  return svg;
}

// ---- Data and layout (pure) ---------------------------------------------------------------------------------

/** What the drawing needs from a payload: its size, its labels as strings and the colour-scale limit. */
export interface HeatmapData {
  nRows: number;
  nCols: number;
  rowLabels: string[];
  colLabels: string[];
  /** `[nCols]` tokens, or null when the payload has none. */
  tokens: string[] | null;
  /** The payload's `zmax` when valid, else the largest |value| (1 for an all-zero or empty matrix). */
  zmax: number;
  /** Whether some cell was not computed. */
  hasMissing: boolean;
}

/** Sizes and positions (px) of the matrix and its labels. */
export interface HeatmapLayout {
  /** Cell width and height. */
  cw: number;
  ch: number;
  rotateColLabels: boolean;
  /** Row labels: their font size, every how many rows one is drawn, and their width. */
  rowFont: number;
  rowStride: number;
  rowLabelW: number;
  /** Tokens as displayed (null without tokens), and whether they are rotated. */
  shownTokens: string[] | null;
  rotateTokens: boolean;
  gridX: number;
  gridY: number;
  gridW: number;
  gridH: number;
  /** Height of a band of column labels; tall plots repeat them above the grid. */
  colLabelsH: number;
  repeatTop: boolean;
  bottomLabelsY: number;
  tokensY: number;
  tokensH: number;
  colTitleY: number;
  colTitleH: number;
  width: number;
  height: number;
}

/** Size, labels and colour-scale limit of `payload` (rows of unequal length count as long as the longest). */
export function heatmapData(payload: HeatmapPayload): HeatmapData {
  const nRows = payload.values.length;
  let nCols = Array.isArray(payload.col_labels) ? payload.col_labels.length : 0;
  for (const row of payload.values) {
    nCols = Math.max(nCols, Array.isArray(row) ? row.length : 0);
  }
  const rowLabels = Array.from({ length: nRows }, (_, i) => label(payload.row_labels, i));
  const colLabels = Array.from({ length: nCols }, (_, j) => label(payload.col_labels, j));
  const tokens = payload.col_tokens ? Array.from({ length: nCols }, (_, j) => label(payload.col_tokens, j)) : null;

  let absMax = 0;
  let hasMissing = false;
  for (let i = 0; i < nRows; i++) {
    for (let j = 0; j < nCols; j++) {
      const v = cellValue(payload, i, j);
      if (v === null) {
        hasMissing = true;
      } else {
        absMax = Math.max(absMax, Math.abs(v));
      }
    }
  }
  const zmax =
    typeof payload.zmax === 'number' && Number.isFinite(payload.zmax) && payload.zmax > 0
      ? payload.zmax
      : absMax > 0
        ? absMax
        : 1;
  return { nRows, nCols, rowLabels, colLabels, tokens, zmax, hasMissing };
}

function longest(xs: readonly string[]): string {
  return xs.reduce((m, s) => (s.length > m.length ? s : m), '');
}

/** The layout, chosen from the matrix dimensions and the label lengths. */
export function heatmapLayout(payload: HeatmapPayload, data: HeatmapData): HeatmapLayout {
  const { nRows, nCols, rowLabels, colLabels, tokens } = data;
  let cw = clamp(Math.floor(560 / nCols), 16, 40);
  const colLabelW = textWidth(longest(colLabels), LABEL_FONT);
  let rotateColLabels = colLabelW > cw - 6;
  if (rotateColLabels && colLabelW + 8 <= 64 && nCols * (colLabelW + 8) <= 960) {
    cw = Math.ceil(colLabelW + 8); // widen the columns a little rather than rotate short labels
    rotateColLabels = false;
  }
  const ch = nRows <= 400 ? clamp(Math.floor(640 / nRows), 13, 22) : clamp(Math.floor(4800 / nRows), 3, 12);
  const rowFont = ch >= 16 ? LABEL_FONT : SMALL_FONT;
  const rowStride = ch >= 13 ? 1 : Math.ceil(13 / ch); // 11px labels need 13px rows
  const rowLabelW = textWidth(longest(rowLabels), rowFont);
  const shownTokens = tokens ? tokens.map(displayToken) : null;
  const tokenW = shownTokens ? textWidth(longest(shownTokens), TOKEN_FONT, MONO_EM) : 0;
  const rotateTokens = tokenW > cw - 6;

  const gridW = nCols * cw;
  const gridH = nRows * ch;
  const rowTitleW = payload.row_title ? AXIS_FONT + 10 : 0;
  const gridX = 8 + rowTitleW + rowLabelW + 10;
  const colLabelsH = rotateColLabels ? colLabelW + 10 : LABEL_FONT + 10;
  const repeatTop = gridH > 720; // tall plots also get column labels above the grid
  const gridY = 6 + (repeatTop ? colLabelsH : 0);
  const bottomLabelsY = gridY + gridH + 4;
  const tokensY = bottomLabelsY + colLabelsH;
  const tokensH = shownTokens ? (rotateTokens ? tokenW + 8 : TOKEN_FONT + 10) : 0;
  const colTitleY = tokensY + tokensH + 4;
  const colTitleH = payload.col_title ? AXIS_FONT + 10 : 0;
  const height = Math.ceil(colTitleY + colTitleH + 6);
  const colTitleW = payload.col_title ? textWidth(String(payload.col_title), AXIS_FONT) : 0;
  const width = Math.ceil(Math.max(gridX + gridW + 12, gridX + gridW / 2 + colTitleW / 2 + 12));
  return {
    cw,
    ch,
    rotateColLabels,
    rowFont,
    rowStride,
    rowLabelW,
    shownTokens,
    rotateTokens,
    gridX,
    gridY,
    gridW,
    gridH,
    colLabelsH,
    repeatTop,
    bottomLabelsY,
    tokensY,
    tokensH,
    colTitleY,
    colTitleH,
    width,
    height
  };
}

/**
 * Where the tooltip goes, relative to the root: below right of the pointer `(px, py)`, flipped to the other side
 * where it would overflow the root (`rootW` x `rootH`), never left of or above the root.
 */
export function tooltipPosition(
  px: number,
  py: number,
  rootRect: { left: number; top: number },
  rootW: number,
  rootH: number,
  tw: number,
  th: number
): { left: number; top: number } {
  let left = px - rootRect.left + 14;
  let top = py - rootRect.top + 14;
  if (left + tw > rootW) {
    left = px - rootRect.left - tw - 10;
  }
  if (top + th > rootH) {
    top = py - rootRect.top - th - 10;
  }
  return { left: Math.max(0, left), top: Math.max(0, top) };
}

// ---- DOM builders -------------------------------------------------------------------------------------------

/** The header's parts that change with the scale: the toolbar (scale menu, export buttons) and the legend box. */
interface HeaderParts {
  header: HTMLElement;
  toolbar: HTMLElement;
  legendBox: HTMLElement;
}

/** Title, subtitle (HTML, so long lines wrap), warnings, a toolbar, and a box for the colour legend. */
function drawHeader(doc: Document, root: Element, payload: HeatmapPayload): HeaderParts {
  const header = htmlEl(doc, 'div', 'attnlab-heatmap-header', root);
  if (payload.title) {
    htmlEl(doc, 'div', 'attnlab-title', header, String(payload.title));
  }
  if (payload.subtitle) {
    htmlEl(doc, 'div', 'attnlab-subtitle', header, String(payload.subtitle));
  }
  for (const w of Array.isArray(payload.warnings) ? payload.warnings : []) {
    const el = htmlEl(doc, 'div', 'attnlab-warning', header, `⚠ ${String(w)}`);
    el.setAttribute('data-export-text', '');
  }
  const toolbar = htmlEl(doc, 'div', 'attnlab-heatmap-toolbar', header);
  toolbar.setAttribute('data-export', 'skip');
  const legendBox = htmlEl(doc, 'div', 'attnlab-legend-box', header);
  return { header, toolbar, legendBox };
}

/**
 * The colour-scale menu (`select.attnlab-scale-mode`: fixed, symmetric, clip at a percentile) and the fixed range
 * (`input.attnlab-scale-fixed`, shown for the fixed scale). `current()` reads the scale shown; `onChange` gets the
 * new choice. Marked `data-export="skip"`.
 */
export function scaleControl(
  parent: HTMLElement,
  current: () => { choice: ScaleChoice; zmax: number },
  onChange: (choice: ScaleChoice) => void
): HTMLElement {
  const doc = parent.ownerDocument;
  const box = htmlEl(doc, 'label', 'attnlab-scale-control', parent, 'colour scale ');
  box.setAttribute('data-export', 'skip');
  const sel = doc.createElement('select');
  sel.className = 'attnlab-scale-mode';
  const { choice } = current();
  const items: [HeatmapScale, string][] = [
    ['fixed', choice.fixed !== null ? `fixed ±${formatTick(choice.fixed).replace('+', '')}` : 'fixed range'],
    ['symmetric', 'symmetric (± largest |value|)'],
    ['percentile', `clip outliers at ${pct(choice.percentile)}`]
  ];
  for (const [value, text] of items) {
    const o = doc.createElement('option');
    o.value = value;
    o.textContent = text;
    sel.appendChild(o);
  }
  sel.value = choice.mode;
  box.appendChild(sel);
  const input = doc.createElement('input');
  input.type = 'number';
  input.className = 'attnlab-scale-fixed';
  input.min = '0';
  input.step = 'any';
  input.title = 'the fixed range: cells from -range (blue) to +range (red); larger |values| are marked as clipped';
  box.appendChild(input);
  const sync = (): void => {
    const { choice: c, zmax } = current();
    sel.value = c.mode;
    input.hidden = c.mode !== 'fixed';
    input.value = String(Number((c.fixed ?? zmax).toPrecision(4)));
  };
  sync();
  sel.addEventListener('change', () => {
    const { choice: c, zmax } = current();
    const mode = sel.value as HeatmapScale;
    onChange({ ...c, mode, fixed: mode === 'fixed' && c.fixed === null ? Number(zmax.toPrecision(4)) : c.fixed });
    sync();
  });
  input.addEventListener('change', () => {
    const v = Number(input.value);
    if (Number.isFinite(v) && v > 0) {
      onChange({ ...current().choice, mode: 'fixed', fixed: v });
    }
    sync();
  });
  return box;
}

/** The matrix's SVG in its scroll box, with the hatch pattern for cells not computed. */
function drawMatrixSvg(
  doc: Document,
  root: Element,
  payload: HeatmapPayload,
  uid: string,
  layout: HeatmapLayout
): SVGSVGElement {
  const { width, height } = layout;
  const scroll = htmlEl(doc, 'div', 'attnlab-heatmap-scroll', root);
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-matrix',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'group',
    'aria-label': String(payload.title || 'heatmap')
  });
  scroll.appendChild(svg);
  const defs = svgEl(doc, 'defs', {}, svg);
  hatchPattern(doc, defs, `${uid}-hatch`);
  return svg;
}

/** One `rect.attnlab-cell` per cell (only the first is in the tab order) and the grid's border. */
function drawCells(
  doc: Document,
  svg: Element,
  payload: HeatmapPayload,
  uid: string,
  data: HeatmapData,
  layout: HeatmapLayout,
  zmax: number
): SVGRectElement[][] {
  const { gridX, gridY, cw, ch } = layout;
  const cellsG = svgEl(doc, 'g', { class: 'attnlab-cells' }, svg);
  const cells: SVGRectElement[][] = [];
  for (let i = 0; i < data.nRows; i++) {
    const rowCells: SVGRectElement[] = [];
    for (let j = 0; j < data.nCols; j++) {
      const v = cellValue(payload, i, j);
      const rect = svgEl(
        doc,
        'rect',
        {
          class: v === null ? 'attnlab-cell attnlab-cell-missing' : 'attnlab-cell',
          x: gridX + j * cw,
          y: gridY + i * ch,
          width: cw,
          height: ch,
          fill: v === null ? `url(#${uid}-hatch)` : divergingColor(v, zmax),
          'data-row': i,
          'data-col': j,
          'data-value': v === null ? 'null' : String(v),
          tabindex: i === 0 && j === 0 ? 0 : -1
        },
        cellsG
      );
      rowCells.push(rect);
    }
    cells.push(rowCells);
  }
  const border = { x: gridX, y: gridY, width: layout.gridW, height: layout.gridH, class: 'attnlab-grid-border' };
  svgEl(doc, 'rect', border, svg);
  return cells;
}

/**
 * Colour every cell on `±zmax` and mark the cells beyond it (`rect.attnlab-cell-clipped[data-clipped]`, with a
 * dot `circle.attnlab-clip-mark` drawn in `g.attnlab-clip-marks` on top). Returns the number of clipped cells.
 */
function colourCells(doc: Document, svg: Element, view: { cells: SVGRectElement[][]; payload: HeatmapPayload }, layout: HeatmapLayout, zmax: number): number {
  svg.querySelector('g.attnlab-clip-marks')?.remove();
  const marks = svgEl(doc, 'g', { class: 'attnlab-clip-marks', 'pointer-events': 'none' });
  const limit = zmax * (1 + 1e-9);
  let clipped = 0;
  view.cells.forEach((row, i) =>
    row.forEach((rect, j) => {
      const v = cellValue(view.payload, i, j);
      if (v === null) {
        return;
      }
      rect.setAttribute('fill', divergingColor(v, zmax));
      const beyond = Math.abs(v) > limit;
      rect.classList.toggle('attnlab-cell-clipped', beyond);
      if (beyond) {
        clipped++;
        rect.setAttribute('data-clipped', 'true');
        const r = Math.max(1, Math.min(layout.cw, layout.ch) / 5);
        svgEl(doc, 'circle', { cx: layout.gridX + (j + 0.5) * layout.cw, cy: layout.gridY + (i + 0.5) * layout.ch, r, class: 'attnlab-clip-mark' }, marks);
      } else {
        rect.removeAttribute('data-clipped');
      }
    })
  );
  const border = svg.querySelector('rect.attnlab-grid-border');
  svg.insertBefore(marks, border ? border.nextSibling : null);
  return clipped;
}

/** Group separators: a thin line before each group start, through the row labels and across the grid. */
function drawGroupSeparators(
  doc: Document,
  svg: Element,
  groups: number[] | null,
  nRows: number,
  layout: HeatmapLayout
): void {
  const { gridX, gridY, gridW, ch, rowLabelW } = layout;
  for (const g of groups ?? []) {
    if (Number.isInteger(g) && g > 0 && g < nRows) {
      const y = gridY + g * ch;
      const line = { x1: gridX - rowLabelW - 8, x2: gridX + gridW, y1: y, y2: y, class: 'attnlab-group-sep' };
      svgEl(doc, 'line', line, svg);
    }
  }
}

/** Row labels (every `rowStride`-th row) and the rotated row title. */
function drawRowLabels(
  doc: Document,
  svg: Element,
  payload: HeatmapPayload,
  data: HeatmapData,
  layout: HeatmapLayout
): void {
  const { gridX, gridY, gridH, ch, rowFont } = layout;
  const rowG = svgEl(doc, 'g', { class: 'attnlab-row-labels' }, svg);
  for (let i = 0; i < data.nRows; i += layout.rowStride) {
    svgText(doc, rowG, data.rowLabels[i], {
      x: gridX - 6,
      y: gridY + (i + 0.5) * ch,
      'text-anchor': 'end',
      'dominant-baseline': 'central',
      class: rowFont === LABEL_FONT ? 'attnlab-label' : 'attnlab-label attnlab-label-small'
    });
  }
  if (payload.row_title) {
    const cy = gridY + Math.min(gridH, 480) / 2;
    svgText(doc, svg, String(payload.row_title), {
      transform: `translate(${8 + AXIS_FONT / 2 + 2}, ${cy}) rotate(-90)`,
      'text-anchor': 'middle',
      'dominant-baseline': 'central',
      class: 'attnlab-axis-title'
    });
  }
}

/** A band of column labels whose top is at `top`, rotated when they are too wide for their columns. */
function drawColLabels(
  doc: Document,
  svg: Element,
  labels: string[],
  layout: HeatmapLayout,
  top: number,
  cls: string
): void {
  const g = svgEl(doc, 'g', { class: cls }, svg);
  labels.forEach((text, j) => {
    const x = layout.gridX + (j + 0.5) * layout.cw;
    if (layout.rotateColLabels) {
      svgText(doc, g, text, {
        transform: `translate(${x}, ${top + 4}) rotate(-90)`,
        'text-anchor': 'end',
        'dominant-baseline': 'central',
        class: 'attnlab-label'
      });
    } else {
      svgText(doc, g, text, {
        x,
        y: top + layout.colLabelsH / 2,
        'text-anchor': 'middle',
        'dominant-baseline': 'central',
        class: 'attnlab-label'
      });
    }
  });
}

/** The tokens under the column labels, `text.attnlab-token[data-col]`. */
function drawTokens(doc: Document, svg: Element, shownTokens: string[], layout: HeatmapLayout): void {
  const { gridX, cw, tokensY, tokensH } = layout;
  const g = svgEl(doc, 'g', { class: 'attnlab-col-tokens' }, svg);
  shownTokens.forEach((text, j) => {
    const x = gridX + (j + 0.5) * cw;
    const attrs: Attrs = layout.rotateTokens
      ? {
          transform: `translate(${x}, ${tokensY + 2}) rotate(-90)`,
          'text-anchor': 'end',
          'dominant-baseline': 'central'
        }
      : { x, y: tokensY + tokensH / 2, 'text-anchor': 'middle', 'dominant-baseline': 'central' };
    const t = svgText(doc, g, text, { ...attrs, class: 'attnlab-token' });
    t.setAttribute('data-col', String(j));
  });
}

/** Column labels (below the grid, and above it too for tall plots), tokens and the column title. */
function drawColumnAxis(
  doc: Document,
  svg: Element,
  payload: HeatmapPayload,
  data: HeatmapData,
  layout: HeatmapLayout
): void {
  drawColLabels(doc, svg, data.colLabels, layout, layout.bottomLabelsY, 'attnlab-col-labels');
  if (layout.repeatTop) {
    drawColLabels(doc, svg, data.colLabels, layout, 2, 'attnlab-col-labels attnlab-col-labels-top');
  }
  if (layout.shownTokens) {
    drawTokens(doc, svg, layout.shownTokens, layout);
  }
  if (payload.col_title) {
    svgText(doc, svg, String(payload.col_title), {
      x: layout.gridX + layout.gridW / 2,
      y: layout.colTitleY + layout.colTitleH / 2,
      'text-anchor': 'middle',
      'dominant-baseline': 'central',
      class: 'attnlab-axis-title'
    });
  }
}

/** A hover or selection outline, one cell in size, hidden until placed. */
function outlineBox(doc: Document, svg: Element, cls: string, layout: HeatmapLayout): SVGRectElement {
  return svgEl(doc, 'rect', { class: cls, width: layout.cw, height: layout.ch, visibility: 'hidden' }, svg);
}

function drawTooltip(doc: Document, root: Element, uid: string): HTMLElement {
  const tooltip = htmlEl(doc, 'div', 'attnlab-tooltip', root);
  tooltip.setAttribute('role', 'tooltip');
  tooltip.id = `${uid}-tooltip`;
  tooltip.hidden = true;
  return tooltip;
}

// ---- Interaction --------------------------------------------------------------------------------------------

/** The drawn matrix and what the event handlers share; `selected` is the one piece of state. */
interface HeatmapView {
  host: HTMLElement;
  root: HTMLElement;
  payload: HeatmapPayload;
  data: HeatmapData;
  cells: SVGRectElement[][];
  tooltip: HTMLElement;
  hoverBox: SVGRectElement;
  selectBox: SVGRectElement;
  selected: SVGRectElement | null;
}

function cellOf(target: EventTarget | null): SVGRectElement | null {
  const el = target as Element | null;
  const cell = el && typeof el.closest === 'function' ? el.closest('.attnlab-cell') : null;
  return cell as SVGRectElement | null;
}

function indexOf(cell: Element): [number, number] {
  return [Number(cell.getAttribute('data-row')), Number(cell.getAttribute('data-col'))];
}

/** Move an outline onto `cell` and show it. */
function placeBox(box: SVGRectElement, cell: SVGRectElement): void {
  box.setAttribute('x', cell.getAttribute('x') ?? '0');
  box.setAttribute('y', cell.getAttribute('y') ?? '0');
  box.setAttribute('visibility', 'visible');
}

/** Show the tooltip of `cell` next to the pointer, or next to the cell's bottom right corner (keyboard focus). */
function showTooltip(view: HeatmapView, cell: SVGRectElement, clientX?: number, clientY?: number): void {
  const { tooltip, root } = view;
  const [i, j] = indexOf(cell);
  tooltip.textContent = formatTooltip(view.payload, i, j);
  tooltip.hidden = false;
  placeBox(view.hoverBox, cell);
  const rootRect = root.getBoundingClientRect();
  const cellRect = cell.getBoundingClientRect();
  const px = clientX ?? cellRect.right;
  const py = clientY ?? cellRect.bottom;
  const tw = tooltip.offsetWidth;
  const th = tooltip.offsetHeight;
  const { left, top } = tooltipPosition(px, py, rootRect, root.clientWidth, root.clientHeight, tw, th);
  tooltip.style.left = `${left}px`;
  tooltip.style.top = `${top}px`;
}

function hideTooltip(view: HeatmapView): void {
  view.tooltip.hidden = true;
  view.hoverBox.setAttribute('visibility', 'hidden');
}

/** Mark `cell` as the selected one (null clears the selection); dispatches nothing. */
function mark(view: HeatmapView, cell: SVGRectElement | null): void {
  if (view.selected) {
    view.selected.classList.remove('attnlab-cell-selected');
    view.selected.removeAttribute('aria-selected');
  }
  view.selected = cell;
  if (!cell) {
    view.selectBox.setAttribute('visibility', 'hidden');
    return;
  }
  cell.classList.add('attnlab-cell-selected');
  cell.setAttribute('aria-selected', 'true');
  placeBox(view.selectBox, cell);
}

/** Select `cell` and dispatch the cell-click event on the host. */
function selectCell(view: HeatmapView, cell: SVGRectElement): void {
  const [row, col] = indexOf(cell);
  mark(view, cell);
  const detail: HeatmapCellClickDetail = {
    row,
    col,
    rowLabel: view.data.rowLabels[row],
    colLabel: view.data.colLabels[col],
    value: cellValue(view.payload, row, col)
  };
  view.host.dispatchEvent(new CustomEvent(CELL_CLICK_EVENT, { detail, bubbles: true, composed: true }));
}

/** Enter/Space select the focused cell; arrow keys, Home and End move the focus (and the tab stop). */
function onKeydown(view: HeatmapView, ev: KeyboardEvent): void {
  const cell = cellOf(ev.target);
  if (!cell) {
    return;
  }
  const { nRows, nCols } = view.data;
  const [i, j] = indexOf(cell);
  const moves: Record<string, [number, number]> = {
    ArrowUp: [i - 1, j],
    ArrowDown: [i + 1, j],
    ArrowLeft: [i, j - 1],
    ArrowRight: [i, j + 1],
    Home: [i, 0],
    End: [i, nCols - 1]
  };
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    selectCell(view, cell);
  } else if (ev.key in moves) {
    ev.preventDefault();
    const [ni, nj] = moves[ev.key];
    const next = view.cells[clamp(ni, 0, nRows - 1)][clamp(nj, 0, nCols - 1)];
    cell.setAttribute('tabindex', '-1');
    next.setAttribute('tabindex', '0');
    next.focus();
  }
}

/** One set of delegated listeners for all cells: hover and focus show the tooltip, click and keys select. */
function bindEvents(view: HeatmapView, svg: SVGSVGElement): void {
  const hide = () => hideTooltip(view);
  svg.addEventListener('mousemove', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      showTooltip(view, cell, ev.clientX, ev.clientY);
    } else {
      hide();
    }
  });
  svg.addEventListener('mouseleave', hide);
  svg.addEventListener('click', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      selectCell(view, cell);
    }
  });
  svg.addEventListener('focusin', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      cell.setAttribute('aria-describedby', view.tooltip.id);
      showTooltip(view, cell);
    }
  });
  svg.addEventListener('focusout', hide);
  svg.addEventListener('keydown', ev => onKeydown(view, ev));
}

/**
 * Draw `payload` into `host`, replacing whatever `host` held.
 *
 * Produces `div.attnlab-heatmap` with a header (title, subtitle, colour legend), an SVG matrix whose cells are
 * `rect.attnlab-cell[data-row][data-col][data-value]` (`data-value="null"` and class `attnlab-cell-missing` for
 * cells not computed), and a hover/focus tooltip `div.attnlab-tooltip`. Clicking a cell (or Enter/Space on a focused
 * cell) selects it and dispatches a bubbling `CustomEvent('attnlab-cell-click', {detail: {row, col, rowLabel,
 * colLabel, value}})` on `host`. Arrow keys move the focus between cells.
 *
 * Returns a handle whose `select(row, col)` marks a cell as selected from code (e.g. a selection made in the kernel)
 * without dispatching the click event; `select(null)` clears the selection; `setScale(choice)` redraws on another
 * colour scale.
 *
 * The header holds the warnings (`div.attnlab-warning`), a toolbar with the colour-scale menu ({@link scaleControl})
 * and the SVG/PNG export buttons (`./export`), and the colour bar, whose caption names the scale and how many cells
 * it clips (marked with a dot). `options` choose the first scale, share one scale between views, and turn the
 * toolbar's parts off.
 */
export function renderHeatmap(host: HTMLElement, payload: HeatmapPayload, options: HeatmapOptions = {}): HeatmapHandle {
  const doc = host.ownerDocument;
  const uid = `attnlab-${++instances}`;
  host.replaceChildren();

  const root = htmlEl(doc, 'div', 'attnlab-heatmap', host);
  if (!payload || !Array.isArray(payload.values)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed heatmap payload (no "values" matrix).');
    return NO_HANDLE;
  }
  const data = heatmapData(payload);
  const parts = drawHeader(doc, root, payload);
  const scaleValues = options.scaleValues ?? [payload.values];
  let choice: ScaleChoice = options.scale ?? payloadScale(payload);
  // The payload's zmax is the kernel's limit of its own scale; a scale given here is computed here.
  let zmax = options.scale || options.scaleValues ? scaleLimit(scaleValues, choice) : data.zmax;
  if (data.nRows === 0 || data.nCols === 0) {
    renderLegend(doc, parts.legendBox, uid, zmax, String(payload.value_label ?? ''), data.hasMissing);
    htmlEl(doc, 'div', 'attnlab-empty', root, 'empty matrix');
    return NO_HANDLE;
  }

  const layout = heatmapLayout(payload, data);
  const svg = drawMatrixSvg(doc, root, payload, uid, layout);
  const cells = drawCells(doc, svg, payload, uid, data, layout, zmax);
  drawGroupSeparators(doc, svg, payload.row_groups, data.nRows, layout);
  drawRowLabels(doc, svg, payload, data, layout);
  drawColumnAxis(doc, svg, payload, data, layout);
  // Hover and selection outlines are drawn on top (adjacent cells would hide a cell's own stroke).
  const hoverBox = outlineBox(doc, svg, 'attnlab-hover-outline', layout);
  const selectBox = outlineBox(doc, svg, 'attnlab-selected-outline', layout);
  const tooltip = drawTooltip(doc, root, uid);

  const view: HeatmapView = { host, root, payload, data, cells, tooltip, hoverBox, selectBox, selected: null };
  const applyScale = (): void => {
    const clipped = colourCells(doc, svg, view, layout, zmax);
    parts.legendBox.replaceChildren();
    renderLegend(doc, parts.legendBox, uid, zmax, String(payload.value_label ?? ''), data.hasMissing, {
      caption: scaleCaption(choice, zmax, clipped),
      clipped
    });
    root.setAttribute('data-scale', choice.mode);
    root.setAttribute('data-zmax', String(zmax));
  };
  const setScale = (c: ScaleChoice): void => {
    choice = c;
    zmax = scaleLimit(scaleValues, choice);
    applyScale();
  };
  applyScale();
  if (options.scaleControl !== false) {
    scaleControl(parts.toolbar, () => ({ choice, zmax }), setScale);
  }
  if (options.exportControls !== false) {
    exportButtons(parts.toolbar, () => root, () => fileStem(String(payload.title || 'attnlab-heatmap')));
  }
  bindEvents(view, svg);
  return {
    select: (row, col) => {
      const cell = row === null ? null : cells[row]?.[col ?? 0];
      mark(view, cell ?? null);
    },
    setScale,
    scale: () => ({ ...choice })
  };
}
