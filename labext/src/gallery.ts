/**
 * A pure, dependency-free DOM renderer for attnlab head-gallery payloads
 * (`application/vnd.attnlab.headgallery.v1+json`).
 *
 * Layout: a header (title, subtitle), one button per score kind (`button.attnlab-gallery-kind[data-kind]`, the
 * pressed one has `aria-pressed="true"`), a layer x head grid of the chosen score (`rect.attnlab-gallery-cell`
 * with `data-layer`, `data-head`, `data-value`; white 0 to red 1), and a detail panel (`div.attnlab-gallery-detail`)
 * for the selected head: its scores, its attention pattern on the example repeated sequence (an SVG matrix with the
 * tokens as axis labels), its ablation effects, its prefix-length curve and its prefix class.
 *
 * Under the grid, a colour bar (`svg.attnlab-gallery-colorbar`) shows the shown kind's scale with its ends and middle
 * labelled, its unit, and the hatched grey of heads that were not computed (a cancelled run). SVG and PNG export
 * buttons sit beside the kind buttons (`export.ts`).
 *
 * Clicking a cell (or Enter/Space on a focused cell) selects the head, redraws the panel and dispatches a bubbling
 * `CustomEvent('attnlab-head-click', {detail: {layer, head}})` on the host. Nothing touches the network, and every
 * payload string reaches the page through `textContent` / SVG text nodes, never as HTML.
 */

import type { HeadGalleryClickDetail, HeadGalleryHead, HeadGalleryPayload } from './contract';
import { Attrs, htmlEl, svgEl } from './dom';
import { exportButtons } from './export';

/** Name of the bubbling CustomEvent dispatched on the host element when a head is selected. */
export const HEAD_CLICK_EVENT = 'attnlab-head-click';

const FONT = 'var(--jp-ui-font-family, system-ui, sans-serif)';
const MONO = 'var(--jp-code-font-family, ui-monospace, monospace)';



function svgText(doc: Document, parent: Element, text: string, attrs: Attrs): SVGTextElement {
  const el = svgEl(doc, 'text', { 'font-size': 11, 'font-family': FONT, fill: 'currentColor', ...attrs }, parent);
  el.textContent = text;
  return el;
}


/** White (0) to red (1), clamped; grey for a missing value. */
export function sequentialColor(value: number | null): string {
  if (value === null || !Number.isFinite(value)) {
    return 'rgb(217, 217, 217)';
  }
  const t = Math.max(0, Math.min(1, value));
  const mix = (c: number) => Math.round(255 + (c - 255) * t);
  return `rgb(${mix(178)}, ${mix(24)}, ${mix(43)})`;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function fmt(v: number | null, digits = 3): string {
  return v === null ? 'n/a' : v.toFixed(digits);
}

/** Token as shown on an axis: control characters visible, long tokens shortened. */
function shortToken(t: string): string {
  const s = t.replace(/\r\n|\n|\r/g, '↵').replace(/\t/g, '⇥');
  return s.length > 12 ? `${s.slice(0, 11)}…` : s;
}

/** The attention pattern of one head as a small matrix, tokens along both axes. */
function drawPattern(doc: Document, parent: Element, pattern: number[][], tokens: string[]): void {
  const n = pattern.length;
  const cell = Math.max(6, Math.min(16, Math.floor(320 / Math.max(n, 1))));
  const longest = tokens.slice(0, n).reduce((m, t) => Math.max(m, shortToken(t).length), 1);
  const labelW = Math.min(84, 10 + Math.ceil(longest * 6.2)); // room for the longest shown token (10px monospace)
  const width = labelW + n * cell + 8;
  const height = labelW + n * cell + 8;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-gallery-pattern',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': 'attention pattern: destination rows, source columns'
  });
  parent.appendChild(svg);
  for (let i = 0; i < n; i++) {
    const row = pattern[i] ?? [];
    for (let j = 0; j <= i && j < row.length; j++) {
      const v = num(row[j]) ?? 0;
      const r = svgEl(
        doc,
        'rect',
        { x: labelW + j * cell, y: labelW + i * cell, width: cell, height: cell, fill: sequentialColor(v) },
        svg
      );
      const title = svgEl(doc, 'title', {}, r);
      title.textContent = `dest ${i} ${JSON.stringify(tokens[i] ?? '')} → src ${j} ${JSON.stringify(tokens[j] ?? '')}: ${v.toFixed(3)}`;
    }
  }
  svgEl(
    doc,
    'rect',
    { x: labelW, y: labelW, width: n * cell, height: n * cell, fill: 'none', stroke: '#999', 'stroke-width': 0.5 },
    svg
  );
  if (cell >= 9) {
    tokens.slice(0, n).forEach((t, i) => {
      svgText(doc, svg, shortToken(t), {
        x: labelW - 4,
        y: labelW + (i + 0.5) * cell,
        'text-anchor': 'end',
        'dominant-baseline': 'central',
        'font-family': MONO,
        'font-size': 10,
        class: 'attnlab-gallery-token'
      });
      svgText(doc, svg, shortToken(t), {
        transform: `translate(${labelW + (i + 0.5) * cell}, ${labelW - 4}) rotate(-90)`,
        'dominant-baseline': 'central',
        'font-family': MONO,
        'font-size': 10,
        class: 'attnlab-gallery-token'
      });
    });
  }
}

/** The prefix-length curve: induction attention against the matching prefix length (log-spaced x axis). */
function drawPrefixCurve(doc: Document, parent: Element, lengths: number[], values: (number | null)[]): void {
  const w = 300;
  const h = 160;
  const x0 = 40;
  const y0 = 10;
  const pw = w - x0 - 12;
  const ph = h - y0 - 34;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-gallery-prefix',
    width: w,
    height: h,
    viewBox: `0 0 ${w} ${h}`,
    role: 'img',
    'aria-label': 'induction attention by matching prefix length'
  });
  parent.appendChild(svg);
  const lx = lengths.map(n => Math.log2(Math.max(n, 1)));
  const xmin = Math.min(...lx);
  const xmax = Math.max(...lx);
  const px = (i: number) => x0 + (xmax > xmin ? ((lx[i] - xmin) / (xmax - xmin)) * pw : pw / 2);
  const py = (v: number) => y0 + (1 - Math.max(0, Math.min(1, v))) * ph;
  svgEl(doc, 'line', { x1: x0, x2: x0, y1: y0, y2: y0 + ph, stroke: '#999' }, svg);
  svgEl(doc, 'line', { x1: x0, x2: x0 + pw, y1: y0 + ph, y2: y0 + ph, stroke: '#999' }, svg);
  for (const t of [0, 0.5, 1]) {
    svgText(doc, svg, String(t), { x: x0 - 4, y: py(t), 'text-anchor': 'end', 'dominant-baseline': 'central' });
  }
  lengths.forEach((n, i) => {
    svgText(doc, svg, String(n), { x: px(i), y: y0 + ph + 12, 'text-anchor': 'middle' });
  });
  svgText(doc, svg, 'matching prefix length (tokens)', { x: x0 + pw / 2, y: h - 4, 'text-anchor': 'middle' });
  const pts = values
    .map((v, i) => (v === null ? null : `${px(i)},${py(v)}`))
    .filter((p): p is string => p !== null);
  svgEl(doc, 'polyline', { points: pts.join(' '), fill: 'none', stroke: 'rgb(178, 24, 43)', 'stroke-width': 2 }, svg);
  values.forEach((v, i) => {
    if (v !== null) {
      const c = svgEl(
        doc,
        'circle',
        { cx: px(i), cy: py(v), r: 3.5, fill: 'rgb(178, 24, 43)', class: 'attnlab-gallery-prefix-point' },
        svg
      );
      const title = svgEl(doc, 'title', {}, c);
      title.textContent = `prefix ${lengths[i]}: ${v.toFixed(3)}`;
    }
  });
}

/** `[lo, hi]` of a kind's colour scale (`[0, 1]` unless the payload says otherwise). */
export function kindRange(payload: HeadGalleryPayload, kind: number): [number, number] {
  const r = payload.kind_ranges?.[kind];
  const lo = num(r?.[0]);
  const hi = num(r?.[1]);
  return lo !== null && hi !== null && hi > lo ? [lo, hi] : [0, 1];
}

/** The colour of `value` on `kind`'s scale. */
function kindColor(payload: HeadGalleryPayload, kind: number, value: number | null): string {
  if (value === null) {
    return sequentialColor(null);
  }
  const [lo, hi] = kindRange(payload, kind);
  return sequentialColor((value - lo) / (hi - lo));
}

/** The head's name and its score of every kind (± the standard deviation where the payload has one). */
function drawScores(doc: Document, panel: HTMLElement, payload: HeadGalleryPayload, layer: number, head: number): void {
  const name = `${payload.layer_labels[layer] ?? `L${layer}`}${payload.head_labels[head] ?? `H${head}`}`;
  const title = htmlEl(doc, 'div', 'attnlab-gallery-detail-title', panel, name);
  title.style.fontWeight = '600';
  title.style.fontSize = '14px';
  const scores = htmlEl(doc, 'div', 'attnlab-gallery-detail-scores', panel);
  payload.kinds.forEach((_, k) => {
    const v = num(payload.scores[k]?.[layer]?.[head]);
    const sd = num(payload.score_std?.[k]?.[layer]?.[head]);
    const label = payload.kind_labels[k] ?? payload.kinds[k];
    const unit = payload.kind_units?.[k];
    const el = htmlEl(
      doc,
      'div',
      'attnlab-gallery-score',
      scores,
      `${label} score ${v === null ? 'not computed' : fmt(v)}${sd === null ? '' : ` ± ${fmt(sd)}`}${unit ? ` (${unit})` : ''}`
    );
    el.setAttribute('data-kind', payload.kinds[k]);
    el.setAttribute('data-value', v === null ? 'null' : String(v));
  });
}

/** The ablation effects (with the unablated losses) and the direct logit attribution to the copied token. */
function drawEffects(doc: Document, panel: HTMLElement, payload: HeadGalleryPayload, info: HeadGalleryHead): void {
  const abl = htmlEl(doc, 'div', 'attnlab-gallery-ablation', panel);
  const methods = Object.keys(info.ablation ?? {});
  if (methods.length === 0 && !payload.ablation_label) {
    abl.remove(); // a gallery of retrieval or sink tabs alone: no ablation was part of it
  } else if (methods.length === 0) {
    abl.textContent = 'ablation: not run for this head';
  } else {
    abl.textContent = `${payload.ablation_label}: ${methods
      .map(m => `${m} ${fmt(num(info.ablation[m]))}`)
      .join(', ')}`;
    if (payload.clean_loss) {
      const c = payload.clean_loss;
      htmlEl(
        doc,
        'div',
        'attnlab-gallery-clean',
        panel,
        `unablated loss: first repeat ${fmt(num(c.first_repeat), 2)}, second repeat ${fmt(num(c.second_repeat), 2)} nats/token`
      );
    }
  }
  if (info.copying !== null && info.copying !== undefined) {
    htmlEl(doc, 'div', 'attnlab-gallery-copying', panel, `direct logit attribution to the copied token: ${fmt(num(info.copying))}`);
  }
}

/** The attention pattern and the prefix-length curve, side by side, where the payload has them. */
function drawPlots(doc: Document, panel: HTMLElement, payload: HeadGalleryPayload, info: HeadGalleryHead): void {
  const row = htmlEl(doc, 'div', 'attnlab-gallery-plots', panel);
  row.style.display = 'flex';
  row.style.flexWrap = 'wrap';
  row.style.gap = '16px';
  row.style.alignItems = 'flex-start';
  if (info.pattern) {
    const box = htmlEl(doc, 'div', 'attnlab-gallery-pattern-box', row);
    htmlEl(doc, 'div', 'attnlab-gallery-caption', box, 'attention on the example repeated sequence');
    drawPattern(doc, box, info.pattern, payload.tokens ?? []);
  }
  if (info.prefix && payload.prefix_lengths) {
    const box = htmlEl(doc, 'div', 'attnlab-gallery-prefix-box', row);
    htmlEl(
      doc,
      'div',
      'attnlab-gallery-caption',
      box,
      `induction attention by prefix length${info.prefix_class ? ` (${info.prefix_class})` : ''}`
    );
    drawPrefixCurve(doc, box, payload.prefix_lengths, info.prefix.map(num));
  }
}

/** Draw the details of one head into `panel` (replacing its content). */
export function renderDetail(panel: HTMLElement, payload: HeadGalleryPayload, layer: number, head: number): void {
  const doc = panel.ownerDocument;
  panel.replaceChildren();
  const nHeads = payload.head_labels.length;
  const info: HeadGalleryHead | undefined = payload.heads[layer * nHeads + head];
  drawScores(doc, panel, payload, layer, head);
  if (!info) {
    return;
  }
  drawEffects(doc, panel, payload, info);
  drawPlots(doc, panel, payload, info);
}

// ---- Colour bar and "not computed" hatching ---------------------------------------------------------------

let uniqueId = 0;

/** A document-unique id for an SVG pattern or gradient (several galleries can share a page). */
function nextId(prefix: string): string {
  uniqueId += 1;
  return `${prefix}-${uniqueId}`;
}

/** A grey pattern hatched with darker lines, for heads that were not computed; returns its `url(#id)`. */
function hatchPattern(doc: Document, svg: Element): string {
  const id = nextId('attnlab-gallery-hatch');
  const defs = svgEl(doc, 'defs', {}, svg);
  const p = svgEl(
    doc,
    'pattern',
    { id, width: 4, height: 4, patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
    defs
  );
  svgEl(doc, 'rect', { width: 4, height: 4, fill: 'rgb(217, 217, 217)' }, p);
  svgEl(doc, 'line', { x1: 0, y1: 0, x2: 0, y2: 4, stroke: '#8c8c8c', 'stroke-width': 1.2 }, p);
  return `url(#${id})`;
}

/** A tick label: at most 3 significant digits, no trailing zeros (`0`, `0.5`, `1`, `0.125`). */
function tickText(v: number): string {
  return String(Number(v.toPrecision(3)));
}

/**
 * The colour bar of kind `kind` into `box` (replacing its content): the white-to-red gradient from the scale's low
 * to its high end, ticks at both ends and the middle (`text.attnlab-gallery-colorbar-tick`), the kind's label and unit
 * (`text.attnlab-gallery-colorbar-label`), and a hatched swatch for "not computed".
 */
export function drawColorBar(box: HTMLElement, payload: HeadGalleryPayload, kind: number): void {
  const doc = box.ownerDocument;
  box.replaceChildren();
  const [lo, hi] = kindRange(payload, kind);
  const unit = payload.kind_units?.[kind];
  const label = `${payload.kind_labels[kind] ?? payload.kinds[kind]} score${unit ? ` (${unit})` : ''}`;
  const barW = 160;
  const x0 = 10;
  const width = Math.max(x0 + barW + 110, Math.ceil(label.length * 6.2) + 2 * x0);
  const height = 50;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-gallery-colorbar',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img',
    'aria-label': `colour scale: ${label}, white ${tickText(lo)} to red ${tickText(hi)}`
  });
  box.appendChild(svg);
  const gradId = nextId('attnlab-gallery-gradient');
  const grad = svgEl(doc, 'linearGradient', { id: gradId, x1: 0, x2: 1, y1: 0, y2: 0 }, svgEl(doc, 'defs', {}, svg));
  for (let i = 0; i <= 10; i++) {
    svgEl(doc, 'stop', { offset: `${i * 10}%`, 'stop-color': sequentialColor(i / 10) }, grad);
  }
  svgEl(doc, 'rect', { x: x0, y: 4, width: barW, height: 11, fill: `url(#${gradId})`, stroke: '#999', 'stroke-width': 0.5 }, svg);
  [lo, (lo + hi) / 2, hi].forEach((v, i) => {
    const x = x0 + (i * barW) / 2;
    svgEl(doc, 'line', { x1: x, x2: x, y1: 15, y2: 19, stroke: '#999' }, svg);
    svgText(doc, svg, tickText(v), {
      x,
      y: 28,
      'text-anchor': i === 0 ? 'start' : i === 2 ? 'end' : 'middle',
      'font-size': 10,
      class: 'attnlab-gallery-colorbar-tick'
    });
  });
  svgText(doc, svg, label, { x: x0, y: 44, 'font-size': 10, class: 'attnlab-gallery-colorbar-label' });
  const sx = x0 + barW + 14;
  svgEl(doc, 'rect', { x: sx, y: 4, width: 11, height: 11, fill: hatchPattern(doc, svg), stroke: '#999', 'stroke-width': 0.5 }, svg);
  svgText(doc, svg, 'not computed', { x: sx + 15, y: 13, 'font-size': 10 });
}

// ---- The grid -----------------------------------------------------------------------------------------------

/** Cell size and margins (px) of the layer x head grid. */
export interface GalleryGridLayout {
  cw: number;
  ch: number;
  /** Top left corner of the grid (room for the head labels above and the layer labels to the left). */
  gx: number;
  gy: number;
  width: number;
  height: number;
  /** A layer label every `rowStride` rows (10px labels need 11px rows). */
  rowStride: number;
}

export function galleryGridLayout(nLayers: number, nHeads: number): GalleryGridLayout {
  const cw = Math.max(14, Math.min(28, Math.floor(360 / Math.max(nHeads, 1))));
  const ch = Math.max(8, Math.min(20, Math.floor(600 / Math.max(nLayers, 1))));
  const gx = 40;
  const gy = 18;
  const width = gx + nHeads * cw + 8;
  const height = gy + nLayers * ch + 8;
  const rowStride = ch >= 11 ? 1 : Math.ceil(11 / ch);
  return { cw, ch, gx, gy, width, height, rowStride };
}

/** What the user changes: the score kind shown and the selected `[layer, head]`. */
interface GalleryState {
  kind: number;
  selected: [number, number] | null;
}

/** The drawn gallery and what the event handlers share. */
interface GalleryView {
  host: HTMLElement;
  payload: HeadGalleryPayload;
  nLayers: number;
  nHeads: number;
  buttons: HTMLButtonElement[];
  /** One line under the buttons: the shown kind's description, unit and colour range. */
  describe: HTMLElement;
  /** Row-major (`layer * nHeads + head`). */
  cells: SVGRectElement[];
  selBox: SVGRectElement;
  panel: HTMLElement;
  state: GalleryState;
  /** The colour bar's box under the grid, and the grid's fill for heads not computed. */
  colorBar: HTMLElement;
  missingFill: string;
}

/** Induction scores first when the payload has them; the payload's selected head, if it names one; `initial`
 * (a redraw that keeps what the user chose) overrides both. */
function initialState(payload: HeadGalleryPayload, initial?: Partial<GalleryState>): GalleryState {
  let kind = Math.max(0, payload.kinds.indexOf('induction'));
  if (initial?.kind !== undefined && initial.kind >= 0 && initial.kind < payload.kinds.length) {
    kind = initial.kind;
  }
  let selected: [number, number] | null =
    payload.selected && payload.selected.length === 2 ? [payload.selected[0], payload.selected[1]] : null;
  if (initial?.selected !== undefined) {
    selected = initial.selected;
  }
  return { kind, selected };
}

function drawHeader(doc: Document, root: HTMLElement, payload: HeadGalleryPayload): void {
  const title = htmlEl(doc, 'div', 'attnlab-title', root, String(payload.title ?? ''));
  title.style.fontWeight = '600';
  title.style.fontSize = '15px';
  const sub = htmlEl(doc, 'div', 'attnlab-subtitle', root, String(payload.subtitle ?? ''));
  sub.style.color = 'var(--jp-ui-font-color2, #555)';
}

/** One button per score kind, then the SVG and PNG export buttons. */
function drawKindButtons(doc: Document, root: HTMLElement, payload: HeadGalleryPayload): HTMLButtonElement[] {
  const bar = htmlEl(doc, 'div', 'attnlab-gallery-kinds', root);
  bar.setAttribute('role', 'group');
  bar.style.margin = '6px 0';
  const buttons = payload.kinds.map((k, i) => {
    const b = doc.createElement('button');
    b.className = 'attnlab-gallery-kind';
    b.type = 'button';
    b.setAttribute('data-kind', k);
    b.textContent = payload.kind_labels[i] ?? k;
    b.style.marginRight = '4px';
    b.setAttribute('data-export', 'skip');
    bar.appendChild(b);
    return b;
  });
  exportButtons(bar, () => root, () => String(payload.title ?? 'attnlab-gallery'));
  return buttons;
}

/** The grid's box and the detail panel beside it (below it when narrow). */
function drawBody(doc: Document, root: HTMLElement): { gridBox: HTMLElement; panel: HTMLElement } {
  const body = htmlEl(doc, 'div', 'attnlab-gallery-body', root);
  body.style.display = 'flex';
  body.style.flexWrap = 'wrap';
  body.style.gap = '20px';
  body.style.alignItems = 'flex-start';
  const gridBox = htmlEl(doc, 'div', 'attnlab-gallery-grid', body);
  const panel = htmlEl(doc, 'div', 'attnlab-gallery-detail', body);
  panel.style.minWidth = '320px';
  return { gridBox, panel };
}

/** Head labels above the grid, layer labels to its left. */
function drawGridLabels(doc: Document, svg: Element, payload: HeadGalleryPayload, layout: GalleryGridLayout): void {
  const { cw, ch, gx, gy } = layout;
  payload.head_labels.forEach((t, j) => {
    svgText(doc, svg, t, { x: gx + (j + 0.5) * cw, y: gy - 6, 'text-anchor': 'middle', 'font-size': 10 });
  });
  payload.layer_labels.forEach((t, i) => {
    if (i % layout.rowStride === 0) {
      svgText(doc, svg, t, {
        x: gx - 4,
        y: gy + (i + 0.5) * ch,
        'text-anchor': 'end',
        'dominant-baseline': 'central',
        'font-size': 10
      });
    }
  });
}

/** One focusable `rect.attnlab-gallery-cell` per head (row-major, each with an empty title filled by paint). */
function drawCells(
  doc: Document,
  svg: Element,
  nLayers: number,
  nHeads: number,
  layout: GalleryGridLayout
): SVGRectElement[] {
  const { cw, ch, gx, gy } = layout;
  const cells: SVGRectElement[] = [];
  for (let i = 0; i < nLayers; i++) {
    for (let j = 0; j < nHeads; j++) {
      const r = svgEl(
        doc,
        'rect',
        {
          class: 'attnlab-gallery-cell',
          x: gx + j * cw,
          y: gy + i * ch,
          width: cw,
          height: ch,
          stroke: 'rgba(0,0,0,0.08)',
          'data-layer': i,
          'data-head': j,
          tabindex: i === 0 && j === 0 ? 0 : -1,
          role: 'button'
        },
        svg
      );
      r.style.cursor = 'pointer';
      svgEl(doc, 'title', {}, r);
      cells.push(r);
    }
  }
  return cells;
}

/** The grid: labels, cells and the (hidden) selection outline. */
function drawGrid(
  doc: Document,
  gridBox: HTMLElement,
  payload: HeadGalleryPayload,
  nLayers: number,
  nHeads: number
): { svg: SVGSVGElement; cells: SVGRectElement[]; selBox: SVGRectElement; missingFill: string } {
  const layout = galleryGridLayout(nLayers, nHeads);
  const { width, height } = layout;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-gallery-matrix',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'group',
    'aria-label': 'heads by layer'
  });
  gridBox.appendChild(svg);
  const missingFill = hatchPattern(doc, svg);
  drawGridLabels(doc, svg, payload, layout);
  const cells = drawCells(doc, svg, nLayers, nHeads, layout);
  const selBox = svgEl(
    doc,
    'rect',
    { width: layout.cw, height: layout.ch, fill: 'none', stroke: '#000', 'stroke-width': 2, visibility: 'hidden' },
    svg
  );
  return { svg, cells, selBox, missingFill };
}

// ---- State updates and interaction --------------------------------------------------------------------------

/** Press the chosen kind's button and colour the cells by that kind's scores. */
function paint(view: GalleryView): void {
  const { payload, buttons } = view;
  const kind = view.state.kind;
  buttons.forEach((b, i) => b.setAttribute('aria-pressed', i === kind ? 'true' : 'false'));
  buttons.forEach((b, i) => (b.style.fontWeight = i === kind ? '700' : '400'));
  const label = payload.kind_labels[kind] ?? payload.kinds[kind];
  const [lo, hi] = kindRange(payload, kind);
  const unit = payload.kind_units?.[kind];
  const description = payload.kind_descriptions?.[kind];
  view.describe.textContent =
    `${label}${description ? `: ${description}` : ' score'}. Colour: ${unit ? `${unit}, ` : ''}white ${lo} → red ${hi}` +
    '; hatched grey: not computed.';
  for (const r of view.cells) {
    const i = Number(r.getAttribute('data-layer'));
    const j = Number(r.getAttribute('data-head'));
    const v = num(payload.scores[kind]?.[i]?.[j]);
    r.setAttribute('fill', v === null ? view.missingFill : kindColor(payload, kind, v));
    r.setAttribute('data-value', v === null ? 'null' : String(v));
    const t = r.firstChild as SVGTitleElement;
    t.textContent = `${payload.layer_labels[i]}${payload.head_labels[j]} ${label} score: ${v === null ? 'not computed' : fmt(v, 4)}`;
  }
  drawColorBar(view.colorBar, payload, kind);
}

/** Select a head: outline its cell, redraw the panel and, with `notify`, dispatch the head-click event. */
function select(view: GalleryView, layer: number, head: number, notify: boolean): void {
  view.state.selected = [layer, head];
  const { selBox } = view;
  for (const r of view.cells) {
    const on = Number(r.getAttribute('data-layer')) === layer && Number(r.getAttribute('data-head')) === head;
    if (on) {
      r.setAttribute('aria-pressed', 'true');
      selBox.setAttribute('x', r.getAttribute('x') ?? '0');
      selBox.setAttribute('y', r.getAttribute('y') ?? '0');
      selBox.setAttribute('visibility', 'visible');
    } else {
      r.removeAttribute('aria-pressed');
    }
  }
  renderDetail(view.panel, view.payload, layer, head);
  if (notify) {
    const detail: HeadGalleryClickDetail = { layer, head };
    view.host.dispatchEvent(new CustomEvent(HEAD_CLICK_EVENT, { detail, bubbles: true, composed: true }));
  }
}

function cellOf(target: EventTarget | null): SVGRectElement | null {
  const el = target as Element | null;
  return el && typeof el.closest === 'function' ? (el.closest('.attnlab-gallery-cell') as SVGRectElement | null) : null;
}

/** Enter/Space select the focused head; arrow keys move the focus (and the tab stop). */
function onKeydown(view: GalleryView, ev: KeyboardEvent): void {
  const c = cellOf(ev.target);
  if (!c) {
    return;
  }
  const { nLayers, nHeads } = view;
  const i = Number(c.getAttribute('data-layer'));
  const j = Number(c.getAttribute('data-head'));
  const moves: Record<string, [number, number]> = {
    ArrowUp: [i - 1, j],
    ArrowDown: [i + 1, j],
    ArrowLeft: [i, j - 1],
    ArrowRight: [i, j + 1]
  };
  if (ev.key === 'Enter' || ev.key === ' ') {
    ev.preventDefault();
    select(view, i, j, true);
  } else if (ev.key in moves) {
    ev.preventDefault();
    const [ni, nj] = moves[ev.key];
    const next = view.cells[Math.max(0, Math.min(nLayers - 1, ni)) * nHeads + Math.max(0, Math.min(nHeads - 1, nj))];
    c.setAttribute('tabindex', '-1');
    next.setAttribute('tabindex', '0');
    next.focus();
  }
}

function bindEvents(view: GalleryView, svg: SVGSVGElement): void {
  view.buttons.forEach((b, i) =>
    b.addEventListener('click', () => {
      view.state.kind = i;
      paint(view);
    })
  );
  svg.addEventListener('click', ev => {
    const c = cellOf(ev.target);
    if (c) {
      select(view, Number(c.getAttribute('data-layer')), Number(c.getAttribute('data-head')), true);
    }
  });
  svg.addEventListener('keydown', ev => onKeydown(view, ev));
}

/** What a caller can do with a drawn gallery (a widget redrawing it, or answering a click from its kernel). */
export interface GalleryHandle {
  /** Select a head as a click does, without dispatching the click event. */
  select(layer: number, head: number): void;
  /** The score kind shown (an index into `payload.kinds`) and the selected `[layer, head]`. */
  state(): { kind: number; selected: [number, number] | null };
  /** The detail panel (`div.attnlab-gallery-detail`), for {@link renderDetail}. */
  panel: HTMLElement;
}

/**
 * Draw `payload` into `host`, replacing whatever `host` held. See the module comment for the DOM it produces.
 *
 * `initial` starts the view on another kind or selection (a redraw that keeps what the user chose). Returns a
 * {@link GalleryHandle}, or null for a malformed payload (an error line is drawn instead).
 */
export function renderGallery(
  host: HTMLElement,
  payload: HeadGalleryPayload,
  initial?: { kind?: number; selected?: [number, number] | null }
): GalleryHandle | null {
  const doc = host.ownerDocument;
  host.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-gallery', host);
  root.style.fontFamily = FONT;
  root.style.fontSize = '12px';
  root.style.padding = '4px 8px';
  if (!payload || !Array.isArray(payload.scores) || !Array.isArray(payload.kinds)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed head-gallery payload.');
    return null;
  }
  drawHeader(doc, root, payload);
  const nLayers = payload.layer_labels.length;
  const nHeads = payload.head_labels.length;
  const state = initialState(payload, initial);
  const buttons = drawKindButtons(doc, root, payload);
  const describe = htmlEl(doc, 'div', 'attnlab-gallery-kind-description', root);
  describe.style.color = 'var(--jp-ui-font-color2, #555)';
  describe.style.margin = '0 0 6px';
  describe.style.maxWidth = '900px';
  describe.setAttribute('data-export-text', 'true');
  const { gridBox, panel } = drawBody(doc, root);
  const { svg, cells, selBox, missingFill } = drawGrid(doc, gridBox, payload, nLayers, nHeads);
  const colorBar = htmlEl(doc, 'div', 'attnlab-gallery-colorbar-box', gridBox);
  colorBar.style.marginTop = '4px';
  for (const line of payload.notes ?? []) {
    const note = htmlEl(doc, 'div', 'attnlab-gallery-note', gridBox, String(line));
    note.style.color = 'var(--jp-ui-font-color2, #555)';
    note.style.maxWidth = '420px';
    note.style.marginTop = '4px';
  }
  const view: GalleryView = {
    host,
    payload,
    nLayers,
    nHeads,
    buttons,
    describe,
    cells,
    selBox,
    panel,
    state,
    colorBar,
    missingFill
  };
  bindEvents(view, svg);

  paint(view);
  const selected = state.selected;
  if (selected && selected[0] < nLayers && selected[1] < nHeads) {
    select(view, selected[0], selected[1], false);
  } else {
    htmlEl(doc, 'div', 'attnlab-gallery-hint', panel, 'click a head to see its pattern, ablation and prefix curve');
  }
  return {
    select: (layer: number, head: number) => select(view, layer, head, false),
    state: () => ({ kind: view.state.kind, selected: view.state.selected }),
    panel
  };
}
