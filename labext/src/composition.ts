/**
 * A pure, dependency-free DOM renderer for attnlab composition payloads
 * (`application/vnd.attnlab.composition.v1+json`).
 *
 * Layout: a header (title, subtitle), one button per mode (`button.attnlab-composition-mode[data-mode]`, the pressed
 * one has `aria-pressed="true"`), the precomputed pairs of that mode as buttons (`button.attnlab-composition-pair`),
 * then the sender x receiver matrix beside a detail panel. The matrix is a canvas (`canvas.attnlab-composition-canvas`
 * with `data-rows`, `data-cols`, `data-cell`: thousands of cells, 261 x 261 for a 30-layer, 9-head model) under an SVG
 * that carries the layer labels (every layer, or every k-th when the layers are too thin for a label; head labels
 * too once the cells are large enough), the layer separators, the selection outline and a colour bar with labelled
 * ticks and the random baseline marked. Cells whose receiver is not in a later layer than the sender are left blank.
 *
 * Clicking a cell (or arrow keys on the focused canvas) selects the pair and fills the panel
 * (`div.attnlab-composition-detail`): the pair's score against the random baseline, then side by side the singular
 * values of its composed matrix (a bar chart, `rect.attnlab-composition-sv-bar[data-value]`) and its path-patching
 * effect (`.attnlab-composition-path-value[data-value]`), each, when the payload does not hold it, replaced by a
 * sentence that says so. A bubbling `CustomEvent('attnlab-pair-click', {detail: {mode, sender, receiver, value}})`
 * is dispatched on the host. Nothing touches the network; payload strings reach the page as text only.
 */

import type {
  CompositionChannelData,
  CompositionPairClickDetail,
  CompositionPathPair,
  CompositionPayload
} from './contract';
import { Attrs, htmlEl, svgEl } from './dom';

/** Name of the bubbling CustomEvent dispatched on the host element when a pair is selected. */
export const PAIR_CLICK_EVENT = 'attnlab-pair-click';

const FONT = 'var(--jp-ui-font-family, system-ui, sans-serif)';
const MUTED = 'var(--jp-ui-font-color2, #555)';

/** Sequential colour stops (ColorBrewer YlOrRd): pale yellow at the scale's 0, so a 0 differs from a blank cell. */
const STOPS: [number, number, number][] = [
  [255, 255, 204],
  [254, 217, 118],
  [253, 141, 60],
  [227, 26, 28],
  [128, 0, 38]
];

/** Colour of `t` in [0, 1] (clamped). */
export function compositionColor(t: number): string {
  const x = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const [a, b] = [STOPS[i], STOPS[i + 1]];
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function fmt(v: number | null, digits = 4): string {
  return v === null ? 'n/a' : v.toFixed(digits);
}

function headLabel(h: number[] | undefined): string {
  return h ? `L${h[0]}H${h[1]}` : '?';
}

function svgText(doc: Document, parent: Element, text: string, attrs: Attrs): SVGTextElement {
  const el = svgEl(doc, 'text', { 'font-size': 10, 'font-family': FONT, fill: 'currentColor', ...attrs }, parent);
  el.textContent = text;
  return el;
}

/** Evenly spaced round tick values from 0 to `hi` (4 or 5 of them). */
export function ticks(hi: number): number[] {
  if (!(hi > 0)) {
    return [0];
  }
  const raw = hi / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * p).find(s => s >= raw - 1e-12) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= hi + 1e-9; v += step) {
    out.push(Number(v.toFixed(10)));
  }
  return out;
}

// ---- Layout -------------------------------------------------------------------------------------------------

/** Cell size, margins and label strides (px) of the matrix. */
export interface CompositionLayout {
  /** Side of a cell. */
  cell: number;
  /** Top left corner of the matrix. */
  gx: number;
  gy: number;
  /** Matrix size. */
  mw: number;
  mh: number;
  /** Whole drawing, colour bar included. */
  width: number;
  height: number;
  /** Label every `rowStride`-th layer of rows and every `colStride`-th of columns. */
  rowStride: number;
  colStride: number;
  /** Whether each row / column also gets its head label. */
  rowHeads: boolean;
  colHeads: boolean;
  /** Top of the colour bar. */
  barY: number;
}

export function compositionLayout(nRows: number, nCols: number, nHeads: number, nLayers: number): CompositionLayout {
  const cell = Math.max(1, Math.min(28, Math.floor(560 / Math.max(nRows, nCols, 1))));
  const group = cell * nHeads; // a layer's extent along either axis
  const rowHeads = cell >= 12;
  const colHeads = cell >= 20;
  const layerChars = String(Math.max(nLayers - 1, 0)).length + 1;
  const labelW = 7 * layerChars + 8; // a horizontal "L29" at 10px plus a gap
  const rowStride = Math.max(1, Math.ceil(13 / group));
  const colStride = Math.max(1, Math.ceil(labelW / group));
  const gx = 24 + (rowHeads ? 28 : 0) + labelW;
  const gy = 34 + (colHeads ? 14 : 0);
  const mw = nCols * cell;
  const mh = nRows * cell;
  const barY = gy + mh + 34;
  const width = Math.max(gx + mw + 16, gx + 300);
  const height = barY + 12 + 40;
  return { cell, gx, gy, mw, mh, width, height, rowStride, colStride, rowHeads, colHeads, barY };
}

// ---- State --------------------------------------------------------------------------------------------------

interface CompositionState {
  mode: string;
  /** `[row, col]` of the selected cell, or null. */
  selected: [number, number] | null;
}

interface CompositionView {
  host: HTMLElement;
  payload: CompositionPayload;
  layout: CompositionLayout;
  buttons: HTMLButtonElement[];
  pairs: HTMLElement;
  statement: HTMLElement;
  canvas: HTMLCanvasElement;
  bar: SVGGElement;
  selBox: SVGRectElement;
  panel: HTMLElement;
  state: CompositionState;
}

function value(payload: CompositionPayload, mode: string, row: number, col: number): number | null {
  return num(payload.matrices[mode]?.[row]?.[col]);
}

function findIndex(list: number[][], h: number[]): number {
  return list.findIndex(x => x[0] === h[0] && x[1] === h[1]);
}

function channelOf(payload: CompositionPayload, mode: string, s: number[], r: number[]): CompositionChannelData | null {
  return (
    (payload.channels ?? []).find(
      c => c.mode === mode && c.sender[0] === s[0] && c.sender[1] === s[1] && c.receiver[0] === r[0] && c.receiver[1] === r[1]
    ) ?? null
  );
}

function pathOf(payload: CompositionPayload, s: number[], r: number[]): CompositionPathPair | null {
  const pp = payload.path_patching;
  if (!pp) {
    return null;
  }
  return (
    pp.pairs.find(p => p.sender[0] === s[0] && p.sender[1] === s[1] && findIndex(p.receivers, r) >= 0) ?? null
  );
}

// ---- Drawing ------------------------------------------------------------------------------------------------

function drawHeader(doc: Document, root: HTMLElement, payload: CompositionPayload): void {
  const title = htmlEl(doc, 'div', 'attnlab-title', root, String(payload.title ?? ''));
  title.style.fontWeight = '600';
  title.style.fontSize = '15px';
  const sub = htmlEl(doc, 'div', 'attnlab-subtitle', root, String(payload.subtitle ?? ''));
  sub.style.color = MUTED;
  sub.style.maxWidth = '1000px';
}

function drawModeButtons(doc: Document, root: HTMLElement, payload: CompositionPayload): HTMLButtonElement[] {
  const bar = htmlEl(doc, 'div', 'attnlab-composition-modes', root);
  bar.setAttribute('role', 'group');
  bar.style.margin = '6px 0 2px';
  return payload.modes.map(m => {
    const b = doc.createElement('button');
    b.className = 'attnlab-composition-mode';
    b.type = 'button';
    b.setAttribute('data-mode', m);
    b.textContent = `${m.toUpperCase()}-composition`;
    b.style.marginRight = '4px';
    bar.appendChild(b);
    return b;
  });
}

/** Layer (and, when there is room, head) labels on both axes, the axis titles and the layer separators. */
function drawAxes(doc: Document, svg: SVGSVGElement, payload: CompositionPayload, layout: CompositionLayout): void {
  const { cell, gx, gy, mw, mh } = layout;
  const H = payload.n_heads;
  const rowLayers = payload.senders.filter((_, i) => i % H === 0).map(s => s[0]);
  const colLayers = payload.receivers.filter((_, i) => i % H === 0).map(r => r[0]);
  const group = cell * H;
  rowLayers.forEach((layer, g) => {
    if (g % layout.rowStride === 0) {
      svgText(doc, svg, `L${layer}`, {
        x: gx - 4 - (layout.rowHeads ? 28 : 0),
        y: gy + (g + 0.5) * group,
        'text-anchor': 'end',
        'dominant-baseline': 'central',
        class: 'attnlab-composition-row-label'
      });
    }
  });
  colLayers.forEach((layer, g) => {
    if (g % layout.colStride === 0) {
      svgText(doc, svg, `L${layer}`, {
        x: gx + (g + 0.5) * group,
        y: gy - 6 - (layout.colHeads ? 14 : 0),
        'text-anchor': 'middle',
        class: 'attnlab-composition-col-label'
      });
    }
  });
  if (layout.rowHeads) {
    payload.senders.forEach((s, i) => {
      svgText(doc, svg, `H${s[1]}`, {
        x: gx - 4,
        y: gy + (i + 0.5) * cell,
        'text-anchor': 'end',
        'dominant-baseline': 'central',
        fill: MUTED
      });
    });
  }
  if (layout.colHeads) {
    payload.receivers.forEach((r, j) => {
      svgText(doc, svg, `H${r[1]}`, { x: gx + (j + 0.5) * cell, y: gy - 5, 'text-anchor': 'middle', fill: MUTED });
    });
  }
  svgText(doc, svg, 'receiver head (columns, by layer)', {
    x: gx + mw / 2,
    y: 11,
    'text-anchor': 'middle',
    'font-size': 11,
    'font-weight': 600
  });
  svgText(doc, svg, 'sender head (rows, by layer)', {
    transform: `translate(11, ${gy + mh / 2}) rotate(-90)`,
    'text-anchor': 'middle',
    'font-size': 11,
    'font-weight': 600
  });
  for (let g = 1; g < rowLayers.length; g++) {
    svgEl(doc, 'line', { x1: gx, x2: gx + mw, y1: gy + g * group, y2: gy + g * group, stroke: 'rgba(0,0,0,0.3)' }, svg);
  }
  for (let g = 1; g < colLayers.length; g++) {
    svgEl(doc, 'line', { x1: gx + g * group, x2: gx + g * group, y1: gy, y2: gy + mh, stroke: 'rgba(0,0,0,0.3)' }, svg);
  }
  svgEl(doc, 'rect', { x: gx, y: gy, width: mw, height: mh, fill: 'none', stroke: 'rgba(0,0,0,0.5)' }, svg);
}

/** The colour bar of the shown mode: gradient, labelled ticks, the random baseline marked and stated. */
function drawColourBar(doc: Document, view: CompositionView): void {
  const { bar, payload, layout } = view;
  const mode = view.state.mode;
  bar.replaceChildren();
  const hi = num(payload.ranges[mode]?.[1]) ?? 1;
  const x0 = layout.gx;
  const w = Math.max(240, Math.min(layout.mw, 420));
  const y = layout.barY;
  const steps = 48;
  for (let i = 0; i < steps; i++) {
    svgEl(doc, 'rect', { x: x0 + (i * w) / steps, y, width: w / steps + 0.5, height: 12, fill: compositionColor((i + 0.5) / steps) }, bar);
  }
  svgEl(doc, 'rect', { x: x0, y, width: w, height: 12, fill: 'none', stroke: 'rgba(0,0,0,0.5)' }, bar);
  for (const t of ticks(hi)) {
    const x = x0 + (t / hi) * w;
    svgEl(doc, 'line', { x1: x, x2: x, y1: y + 12, y2: y + 16, stroke: '#333' }, bar);
    svgText(doc, bar, String(t), { x, y: y + 26, 'text-anchor': 'middle', class: 'attnlab-composition-tick' });
  }
  svgText(doc, bar, `${mode.toUpperCase()}-composition score (dimensionless); blank: receiver not in a later layer`, {
    x: x0,
    y: y + 40,
    fill: MUTED
  });
  const base = payload.baseline[mode];
  const mean = num(base?.mean);
  if (mean !== null) {
    const x = x0 + (Math.min(mean, hi) / hi) * w;
    svgEl(doc, 'line', { x1: x, x2: x, y1: y - 4, y2: y + 12, stroke: '#000', 'stroke-width': 2, class: 'attnlab-composition-baseline-mark' }, bar);
    svgText(doc, bar, `random ${fmt(mean, 3)}`, { x, y: y - 7, 'text-anchor': 'middle', 'font-weight': 600 });
  }
}

/** Paint the canvas with the shown mode's matrix. */
function paintCanvas(view: CompositionView): void {
  const { canvas, payload, layout } = view;
  const ctx = canvas.getContext('2d');
  if (!ctx) {
    return;
  }
  const scale = canvas.width / Math.max(layout.mw, 1);
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.clearRect(0, 0, layout.mw, layout.mh);
  const m = payload.matrices[view.state.mode] ?? [];
  const hi = num(payload.ranges[view.state.mode]?.[1]) ?? 1;
  const c = layout.cell;
  m.forEach((row, i) => {
    row.forEach((v, j) => {
      const x = num(v);
      if (x !== null) {
        ctx.fillStyle = compositionColor(x / hi);
        ctx.fillRect(j * c, i * c, c, c);
      }
    });
  });
}

function drawPairButtons(doc: Document, view: CompositionView): void {
  const { pairs, payload } = view;
  const mode = view.state.mode;
  pairs.replaceChildren();
  const list = (payload.channels ?? [])
    .filter(ch => ch.mode === mode)
    .sort((a, b) => (num(b.score) ?? 0) - (num(a.score) ?? 0))
    .slice(0, 12);
  htmlEl(
    doc,
    'span',
    'attnlab-composition-pairs-label',
    pairs,
    list.length
      ? `singular values precomputed (${list.length < 12 ? list.length : 'first 12'} shown): `
      : 'no singular values precomputed (give the model: scores.view(model)); '
  ).style.color = MUTED;
  for (const ch of list) {
    const b = doc.createElement('button');
    b.type = 'button';
    b.className = 'attnlab-composition-pair';
    b.setAttribute('data-sender', ch.sender.join(','));
    b.setAttribute('data-receiver', ch.receiver.join(','));
    b.textContent = `${headLabel(ch.sender)}→${headLabel(ch.receiver)} ${fmt(num(ch.score), 3)}`;
    b.style.margin = '0 3px 3px 0';
    b.style.fontSize = '11px';
    pairs.appendChild(b);
  }
}

/** The singular values as bars (largest first), the effective rank under them. */
function drawSingularValues(doc: Document, box: HTMLElement, ch: CompositionChannelData): void {
  const values = ch.singular_values.map(v => num(v) ?? 0);
  const n = values.length;
  const w = 260;
  const h = 150;
  const x0 = 40;
  const y0 = 8;
  const pw = w - x0 - 8;
  const ph = h - y0 - 30;
  const top = Math.max(...values, 1e-12);
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-composition-sv',
    width: w,
    height: h,
    viewBox: `0 0 ${w} ${h}`,
    role: 'img',
    'aria-label': 'singular values of the composed matrix, largest first'
  });
  box.appendChild(svg);
  svgEl(doc, 'line', { x1: x0, x2: x0, y1: y0, y2: y0 + ph, stroke: '#999' }, svg);
  svgEl(doc, 'line', { x1: x0, x2: x0 + pw, y1: y0 + ph, y2: y0 + ph, stroke: '#999' }, svg);
  for (const t of [0, top / 2, top]) {
    svgText(doc, svg, t.toFixed(3), { x: x0 - 4, y: y0 + ph - (t / top) * ph, 'text-anchor': 'end', 'dominant-baseline': 'central' });
  }
  const bw = pw / Math.max(n, 1);
  const stride = Math.max(1, Math.ceil(14 / bw));
  values.forEach((v, i) => {
    const bh = (v / top) * ph;
    const r = svgEl(
      doc,
      'rect',
      {
        class: 'attnlab-composition-sv-bar',
        x: x0 + i * bw + bw * 0.1,
        y: y0 + ph - bh,
        width: bw * 0.8,
        height: bh,
        fill: 'rgb(227, 26, 28)',
        'data-index': i,
        'data-value': String(ch.singular_values[i])
      },
      svg
    );
    svgEl(doc, 'title', {}, r).textContent = `σ${i + 1} = ${v.toFixed(5)}`;
    if (i % stride === 0) {
      svgText(doc, svg, String(i + 1), { x: x0 + (i + 0.5) * bw, y: y0 + ph + 12, 'text-anchor': 'middle' });
    }
  });
  svgText(doc, svg, 'singular direction (largest first)', { x: x0 + pw / 2, y: h - 4, 'text-anchor': 'middle' });
  htmlEl(
    doc,
    'div',
    'attnlab-composition-rank',
    box,
    `effective rank (90% of the squared norm): ${ch.rank90} of ${n}; score √Σσ² = ${fmt(num(ch.score))}`
  );
}

function pairCaption(mode: string, s: number[], r: number[]): string {
  const recv = mode === 'v' ? 'W_OV' : mode === 'q' ? 'W_QK' : 'W_QKᵀ';
  return `singular values of W_OV(${headLabel(s)}) · ${recv}(${headLabel(r)}), normalised`;
}

/** The side-by-side boxes: singular values and path patching (or what is missing). */
function drawPairDetail(doc: Document, panel: HTMLElement, payload: CompositionPayload, mode: string, s: number[], r: number[]): void {
  const row = htmlEl(doc, 'div', 'attnlab-composition-sides', panel);
  row.style.display = 'flex';
  row.style.flexWrap = 'wrap';
  row.style.gap = '18px';
  row.style.alignItems = 'flex-start';
  row.style.marginTop = '6px';

  const svdBox = htmlEl(doc, 'div', 'attnlab-composition-svd', row);
  svdBox.style.width = '270px';
  htmlEl(doc, 'div', 'attnlab-composition-caption', svdBox, pairCaption(mode, s, r)).style.fontWeight = '600';
  const ch = channelOf(payload, mode, s, r);
  if (ch) {
    drawSingularValues(doc, svdBox, ch);
  } else {
    const why =
      payload.top_n > 0
        ? `Not precomputed for this pair: the view holds the singular values of the top ${payload.top_n} pairs of ` +
          'each mode (and of the compared path-patching pairs). Run composition_svd(model, ' +
          `(${s[0]}, ${s[1]}), (${r[0]}, ${r[1]}), mode='${mode}') for this one.`
        : 'Not precomputed: this view was built without the model. Build it with scores.view(model) (or ' +
          'composition_view(scores, model=model)) to precompute the top pairs, or run composition_svd(model, ' +
          `(${s[0]}, ${s[1]}), (${r[0]}, ${r[1]}), mode='${mode}').`;
    const m = htmlEl(doc, 'div', 'attnlab-composition-sv-missing', svdBox, why);
    m.style.color = MUTED;
  }

  const pathBox = htmlEl(doc, 'div', 'attnlab-composition-path', row);
  pathBox.style.width = '230px';
  htmlEl(doc, 'div', 'attnlab-composition-caption', pathBox, 'path patching').style.fontWeight = '600';
  const pp = payload.path_patching;
  const pair = pp && pp.mode === mode ? pathOf(payload, s, r) : null;
  if (pp && pair) {
    const v = htmlEl(doc, 'div', 'attnlab-composition-path-value', pathBox, fmt(num(pair.effect)));
    v.setAttribute('data-value', pair.effect === null ? 'null' : String(pair.effect));
    v.style.fontSize = '22px';
    v.style.fontWeight = '600';
    v.style.margin = '8px 0';
    htmlEl(doc, 'div', 'attnlab-composition-path-label', pathBox, pp.effect_label).style.color = MUTED;
    if (pair.receivers.length > 1) {
      htmlEl(doc, 'div', 'attnlab-composition-path-set', pathBox,
        `patched into ${pair.receivers.map(headLabel).join(' + ')} together (one key/value head); composition compared: mean ${fmt(num(pair.composition))}`);
    }
    htmlEl(doc, 'div', 'attnlab-composition-path-rho', pathBox,
      `over all ${pp.n} compared pairs, Spearman ${fmt(num(pp.spearman), 3)} between composition and ${pp.absolute ? '|effect|' : 'effect'}`);
  } else {
    const missing = htmlEl(doc, 'div', 'attnlab-composition-path-missing', pathBox, 'not computed');
    missing.style.fontSize = '16px';
    missing.style.margin = '8px 0';
    const why = !pp
      ? 'No path-patching comparison was given (composition_view(..., comparison=compare_with_path_patching(...))).'
      : pp.mode !== mode
      ? `The comparison is of ${pp.mode.toUpperCase()}-composition; switch to it to see path-patching values.`
      : `This pair is not among the ${pp.n} pairs compared with path patching.`;
    htmlEl(doc, 'div', 'attnlab-composition-path-why', pathBox, why).style.color = MUTED;
  }
}

function renderDetail(view: CompositionView): void {
  const { panel, payload } = view;
  const doc = panel.ownerDocument;
  panel.replaceChildren();
  const sel = view.state.selected;
  if (!sel) {
    htmlEl(doc, 'div', 'attnlab-composition-hint', panel, 'click a cell to see its singular values and path patching');
    return;
  }
  const mode = view.state.mode;
  const s = payload.senders[sel[0]];
  const r = payload.receivers[sel[1]];
  const title = htmlEl(doc, 'div', 'attnlab-composition-detail-title', panel, `${headLabel(s)} → ${headLabel(r)} · ${mode.toUpperCase()}-composition`);
  title.style.fontWeight = '600';
  title.style.fontSize = '14px';
  const v = value(payload, mode, sel[0], sel[1]);
  const base = payload.baseline[mode];
  const mean = num(base?.mean);
  const score = htmlEl(doc, 'div', 'attnlab-composition-detail-score', panel);
  score.setAttribute('data-value', v === null ? 'null' : String(v));
  if (v === null) {
    score.textContent = `${headLabel(r)} cannot read ${headLabel(s)}: a receiver must be in a later layer than its sender.`;
    return;
  }
  score.textContent =
    `score ${fmt(v)}` +
    (mean ? ` = ${(v / mean).toFixed(2)}× the random baseline (${fmt(mean)} ± ${fmt(num(base.std))} over ${base.draws} draws)` : '');
  drawPairDetail(doc, panel, payload, mode, s, r);
}

function placeSelection(view: CompositionView): void {
  const { selBox, layout } = view;
  const sel = view.state.selected;
  if (!sel) {
    selBox.setAttribute('visibility', 'hidden');
    return;
  }
  const pad = Math.max(0, (6 - layout.cell) / 2);
  selBox.setAttribute('x', String(layout.gx + sel[1] * layout.cell - pad));
  selBox.setAttribute('y', String(layout.gy + sel[0] * layout.cell - pad));
  selBox.setAttribute('width', String(layout.cell + 2 * pad));
  selBox.setAttribute('height', String(layout.cell + 2 * pad));
  selBox.setAttribute('visibility', 'visible');
}

function select(view: CompositionView, row: number, col: number, notify: boolean): void {
  view.state.selected = [row, col];
  placeSelection(view);
  renderDetail(view);
  if (notify) {
    const { payload } = view;
    const detail: CompositionPairClickDetail = {
      mode: view.state.mode,
      sender: payload.senders[row],
      receiver: payload.receivers[col],
      value: value(payload, view.state.mode, row, col)
    };
    view.host.dispatchEvent(new CustomEvent(PAIR_CLICK_EVENT, { detail, bubbles: true, composed: true }));
  }
}

function setMode(view: CompositionView, mode: string): void {
  view.state.mode = mode;
  view.buttons.forEach(b => {
    const on = b.getAttribute('data-mode') === mode;
    b.setAttribute('aria-pressed', on ? 'true' : 'false');
    b.style.fontWeight = on ? '700' : '400';
  });
  const base = view.payload.baseline[mode];
  view.statement.textContent =
    `Random baseline for ${mode.toUpperCase()}-composition: ${fmt(num(base?.mean))} ± ${fmt(num(base?.std))} ` +
    `(Gaussian factors of the model's shapes, ${base?.draws ?? '?'} seeded draws); the black mark on the colour bar.`;
  paintCanvas(view);
  drawColourBar(view.host.ownerDocument, view);
  drawPairButtons(view.host.ownerDocument, view);
  renderDetail(view);
}

/** The cell under a mouse event, or null outside the matrix. */
function cellAt(view: CompositionView, ev: MouseEvent): [number, number] | null {
  const rect = view.canvas.getBoundingClientRect();
  const { layout, payload } = view;
  const x = ((ev.clientX - rect.left) / Math.max(rect.width, 1)) * layout.mw;
  const y = ((ev.clientY - rect.top) / Math.max(rect.height, 1)) * layout.mh;
  const row = Math.floor(y / layout.cell);
  const col = Math.floor(x / layout.cell);
  return row >= 0 && row < payload.senders.length && col >= 0 && col < payload.receivers.length ? [row, col] : null;
}

function bindEvents(view: CompositionView): void {
  const { canvas, payload } = view;
  view.buttons.forEach(b => b.addEventListener('click', () => setMode(view, b.getAttribute('data-mode') ?? view.state.mode)));
  canvas.addEventListener('click', ev => {
    const c = cellAt(view, ev);
    if (c) {
      canvas.focus();
      select(view, c[0], c[1], true);
    }
  });
  canvas.addEventListener('mousemove', ev => {
    const c = cellAt(view, ev);
    if (c) {
      const v = value(payload, view.state.mode, c[0], c[1]);
      canvas.title = `${headLabel(payload.senders[c[0]])} → ${headLabel(payload.receivers[c[1]])}: ${
        v === null ? 'not a later layer' : fmt(v)
      }`;
    }
  });
  canvas.addEventListener('keydown', ev => {
    const sel = view.state.selected ?? [0, 0];
    const moves: Record<string, [number, number]> = {
      ArrowUp: [-1, 0],
      ArrowDown: [1, 0],
      ArrowLeft: [0, -1],
      ArrowRight: [0, 1]
    };
    const d = moves[ev.key];
    if (d) {
      ev.preventDefault();
      const row = Math.max(0, Math.min(payload.senders.length - 1, sel[0] + d[0]));
      const col = Math.max(0, Math.min(payload.receivers.length - 1, sel[1] + d[1]));
      select(view, row, col, true);
    }
  });
  view.pairs.addEventListener('click', ev => {
    const b = (ev.target as Element | null)?.closest?.('.attnlab-composition-pair');
    if (!b) {
      return;
    }
    const s = (b.getAttribute('data-sender') ?? '').split(',').map(Number);
    const r = (b.getAttribute('data-receiver') ?? '').split(',').map(Number);
    const row = findIndex(payload.senders, s);
    const col = findIndex(payload.receivers, r);
    if (row >= 0 && col >= 0) {
      select(view, row, col, true);
    }
  });
}

/** The matrix box: a canvas for the cells under an SVG for labels, separators, selection and colour bar. */
function drawMatrix(doc: Document, box: HTMLElement, payload: CompositionPayload, layout: CompositionLayout) {
  const wrap = htmlEl(doc, 'div', 'attnlab-composition-matrix', box);
  wrap.style.position = 'relative';
  wrap.style.width = `${layout.width}px`;
  wrap.style.height = `${layout.height}px`;
  const canvas = doc.createElement('canvas');
  canvas.className = 'attnlab-composition-canvas';
  const dpr = Math.max(1, Math.min(3, (doc.defaultView?.devicePixelRatio ?? 1) || 1));
  canvas.width = Math.max(1, Math.round(layout.mw * dpr));
  canvas.height = Math.max(1, Math.round(layout.mh * dpr));
  canvas.style.position = 'absolute';
  canvas.style.left = `${layout.gx}px`;
  canvas.style.top = `${layout.gy}px`;
  canvas.style.width = `${layout.mw}px`;
  canvas.style.height = `${layout.mh}px`;
  canvas.style.cursor = 'pointer';
  canvas.style.imageRendering = 'pixelated';
  canvas.tabIndex = 0;
  canvas.setAttribute('role', 'img');
  canvas.setAttribute('aria-label', 'composition scores: sender rows, receiver columns; arrow keys move the selection');
  canvas.setAttribute('data-rows', String(payload.senders.length));
  canvas.setAttribute('data-cols', String(payload.receivers.length));
  canvas.setAttribute('data-cell', String(layout.cell));
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-composition-axes',
    width: layout.width,
    height: layout.height,
    viewBox: `0 0 ${layout.width} ${layout.height}`
  });
  svg.style.position = 'absolute';
  svg.style.left = '0';
  svg.style.top = '0';
  svg.style.pointerEvents = 'none';
  svg.style.overflow = 'visible';
  wrap.appendChild(canvas);
  wrap.appendChild(svg);
  drawAxes(doc, svg, payload, layout);
  const bar = svgEl(doc, 'g', { class: 'attnlab-composition-colourbar' }, svg);
  const selBox = svgEl(
    doc,
    'rect',
    { class: 'attnlab-composition-selection', fill: 'none', stroke: '#000', 'stroke-width': 2, visibility: 'hidden' },
    svg
  );
  return { canvas, bar, selBox };
}

/** Draw `payload` into `host`, replacing whatever `host` held. See the module comment for the DOM it produces. */
export function renderComposition(host: HTMLElement, payload: CompositionPayload): void {
  const doc = host.ownerDocument;
  host.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-composition', host);
  root.style.fontFamily = FONT;
  root.style.fontSize = '12px';
  root.style.padding = '4px 8px';
  if (!payload || !Array.isArray(payload.modes) || !payload.matrices || !Array.isArray(payload.senders)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed composition payload.');
    return;
  }
  drawHeader(doc, root, payload);
  const buttons = drawModeButtons(doc, root, payload);
  const statement = htmlEl(doc, 'div', 'attnlab-composition-baseline', root);
  statement.style.color = MUTED;
  const pairs = htmlEl(doc, 'div', 'attnlab-composition-pairs', root);
  pairs.style.margin = '4px 0 6px';
  const body = htmlEl(doc, 'div', 'attnlab-composition-body', root);
  body.style.display = 'flex';
  body.style.flexWrap = 'wrap';
  body.style.gap = '16px';
  body.style.alignItems = 'flex-start';
  const box = htmlEl(doc, 'div', 'attnlab-composition-grid', body);
  const panel = htmlEl(doc, 'div', 'attnlab-composition-detail', body);
  panel.style.minWidth = '300px';
  panel.style.maxWidth = '540px';
  const layout = compositionLayout(payload.senders.length, payload.receivers.length, payload.n_heads, payload.n_layers);
  const { canvas, bar, selBox } = drawMatrix(doc, box, payload, layout);
  const mode = payload.modes.includes(payload.mode) ? payload.mode : payload.modes[0];
  const view: CompositionView = {
    host,
    payload,
    layout,
    buttons,
    pairs,
    statement,
    canvas,
    bar,
    selBox,
    panel,
    state: { mode, selected: null }
  };
  bindEvents(view);
  const first = (payload.channels ?? [])
    .filter(c => c.mode === mode)
    .sort((a, b) => (num(b.score) ?? 0) - (num(a.score) ?? 0))[0];
  if (first) {
    const row = findIndex(payload.senders, first.sender);
    const col = findIndex(payload.receivers, first.receiver);
    view.state.selected = row >= 0 && col >= 0 ? [row, col] : null;
  }
  setMode(view, mode);
  placeSelection(view);
}
