/**
 * Front end of `attnlab.AttentionView`, an anywidget module (ES module with a default `{ render }` export): every
 * head's attention pattern on one text, CircuitsVis-style, offline.
 *
 * esbuild bundles this file into `attnlab/attention_view/static/attention.js`; the Python widget sends that text as its
 * `_esm` trait. State (see `attnlab/attention_view/widget.py`): `meta` (model, text, tokens, n_layers, n_heads,
 * n_tokens, encoding, scale), `weights` (binary: little-endian uint16 round(w * scale), heads in (layer, head) order,
 * rows in order; encoding `uint16-lower` sends only the keys k <= q of each row, `uint16-full` every key), `selected`
 * ([layer, head], the enlarged head; set here on a click) and `scale` ('unit': the enlarged head's colours span 0..1;
 * 'max': 0..its largest weight).
 *
 * What the DOM exposes (for tests and scripts):
 * - `.attnlab-av-token[data-pos]`: the text's tokens; hovering one sets the focus (`.attnlab-av[data-focus]`).
 * - `.attnlab-av-row .attnlab-av-weight[data-pos][data-weight]`: where the focused token attends in the enlarged head
 *   (its row), and `.attnlab-av-col ...`: what attends to it (its column); `data-weight` holds the decoded weight.
 * - `.attnlab-av-thumb[data-layer][data-head]`: the thumbnails (click one to enlarge it);
 * - `.attnlab-av-matrix rect.attnlab-av-cell[data-q][data-k][data-weight]`: the enlarged head's matrix
 *   (`.attnlab-av-head[data-layer][data-head]`).
 * Every token is set as text, never as HTML.
 */

import { htmlEl, svgEl } from './dom';
import { exportButtons } from './export';

// ---- The slice of anywidget's model API used here.
interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string, cb?: (...args: any[]) => void): void;
}

/** The JSON side of the payload (see the module comment). */
export interface AttentionMeta {
  model: string;
  text: string | null;
  tokens: string[];
  n_layers: number;
  n_heads: number;
  n_tokens: number;
  encoding: 'uint16-lower' | 'uint16-full';
  scale: number;
}

/** Decoded patterns: `get(l, h, q, k)` is the weight of query q on key k in head (l, h). */
export interface Patterns {
  n: number;
  nLayers: number;
  nHeads: number;
  /** Float32[layer * nHeads + head][q * n + k] */
  data: Float32Array;
  get(layer: number, head: number, q: number, k: number): number;
  /** The head's largest weight. */
  headMax(layer: number, head: number): number;
  /** The head's largest weight off token 0 (queries and keys from 1 on): token 0 attends only to itself (weight 1),
   * and it is where attention sinks put most weight, so this is the range that shows the rest. 0 for one token. */
  restMax(layer: number, head: number): number;
}

const STYLE_ID = 'attnlab-attention-css';
const CSS = `
.attnlab-av { font-family: var(--jp-ui-font-family, sans-serif); font-size: 13px; color: #222; }
.attnlab-av .attnlab-title { font-weight: 600; font-size: 14px; margin: 2px 0; }
.attnlab-av .attnlab-subtitle { color: #555; font-size: 12px; margin: 2px 0 6px; }
.attnlab-av-text { line-height: 1.9; margin: 4px 0; }
.attnlab-av-token { display: inline-block; border: 1px solid #ccc; border-radius: 3px; padding: 1px 3px; margin: 0 1px; cursor: default;
  font-family: var(--jp-code-font-family, monospace); white-space: pre; }
.attnlab-av-token.attnlab-av-focus { border-color: #08306b; box-shadow: 0 0 0 1px #08306b; }
.attnlab-av-lists { margin: 4px 0 8px; min-height: 6.4em; }
.attnlab-av-list { margin: 2px 0; line-height: 2.4; }
.attnlab-av-list-label { color: #555; font-size: 12px; margin-right: 4px; }
.attnlab-av-weight { display: inline-flex; flex-direction: column; align-items: center; border: 1px solid #ddd;
  border-radius: 3px; padding: 0 3px; margin: 0 1px; vertical-align: middle; line-height: 1.25; }
.attnlab-av-weight .attnlab-av-wtok { font-family: var(--jp-code-font-family, monospace); white-space: pre; }
.attnlab-av-weight .attnlab-av-wnum { font-size: 10px; color: #333; }
.attnlab-av-weight.attnlab-av-none { color: #aaa; border-style: dashed; }
.attnlab-av-main { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.attnlab-av-gridbox { max-height: 600px; overflow: auto; border: 1px solid #eee; padding: 4px; }
.attnlab-av-thumb { cursor: pointer; }
.attnlab-av-panel { display: flex; flex-direction: column; gap: 4px; min-width: 0; max-width: 100%; }
.attnlab-av-matrixbox { overflow: auto; max-width: 100%; max-height: 760px; }
.attnlab-av-toolbar { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; font-size: 12px; }
.attnlab-av-matrix rect.attnlab-av-cell:hover { stroke: #000; stroke-width: 1; }
.attnlab-export-btn { font-size: 11px; margin-left: 4px; }
`;

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = CSS;
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}

// ---- Data.

/** Bytes from what the widget model holds for a `traitlets.Bytes` trait (a DataView, ArrayBuffer or typed array). */
function bytesOf(raw: unknown): DataView {
  if (raw instanceof DataView) {
    return raw;
  }
  if (raw instanceof ArrayBuffer) {
    return new DataView(raw);
  }
  if (ArrayBuffer.isView(raw)) {
    return new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  }
  return new DataView(new ArrayBuffer(0));
}

/**
 * Decode the weights (see the module comment). Throws `Error` when the byte count does not match the dimensions.
 */
export function decodePatterns(meta: AttentionMeta, raw: unknown): Patterns {
  const n = meta.n_tokens;
  const heads = meta.n_layers * meta.n_heads;
  const view = bytesOf(raw);
  const lower = meta.encoding === 'uint16-lower';
  const perHead = lower ? (n * (n + 1)) / 2 : n * n;
  if (view.byteLength !== heads * perHead * 2) {
    throw new Error(`attnlab: the attention payload has ${view.byteLength} bytes, expected ${heads * perHead * 2}`);
  }
  const data = new Float32Array(heads * n * n);
  const scale = meta.scale || 65535;
  let at = 0;
  for (let h = 0; h < heads; h++) {
    const base = h * n * n;
    for (let q = 0; q < n; q++) {
      const kmax = lower ? q : n - 1;
      for (let k = 0; k <= kmax; k++) {
        data[base + q * n + k] = view.getUint16(at, true) / scale;
        at += 2;
      }
    }
  }
  const maxes = new Float32Array(heads);
  const rest = new Float32Array(heads);
  for (let h = 0; h < heads; h++) {
    let m = 0;
    let r = 0;
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const w = data[h * n * n + q * n + k];
        m = Math.max(m, w);
        if (q > 0 && k > 0) {
          r = Math.max(r, w);
        }
      }
    }
    maxes[h] = m;
    rest[h] = r;
  }
  return {
    n,
    nLayers: meta.n_layers,
    nHeads: meta.n_heads,
    data,
    get: (l, hd, q, k) => data[(l * meta.n_heads + hd) * n * n + q * n + k],
    headMax: (l, hd) => maxes[l * meta.n_heads + hd],
    restMax: (l, hd) => rest[l * meta.n_heads + hd]
  };
}

// ---- Colours and labels.

/** White (0) to dark blue (1), clamped: the sequential scale of attention weights. */
export function attentionColor(t: number): string {
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0));
  const mix = (lo: number, hi: number) => Math.round(lo + (hi - lo) * x);
  return `rgb(${mix(255, 8)}, ${mix(255, 48)}, ${mix(255, 107)})`;
}

/** A token as shown: spaces as ·, newlines as ↵, tabs as ⇥. */
export function showToken(t: string): string {
  return t.replace(/\r\n|\n|\r/g, '↵').replace(/\t/g, '⇥').replace(/ /g, '·');
}

/** A token on an axis: shown as `showToken`, cut to `max` characters with an ellipsis (the full text in a tooltip). */
export function axisToken(t: string, max = 14): string {
  const s = showToken(t);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Ticks of a colour bar from 0 to `hi`: 0, hi/2, hi, labelled with enough digits to tell them apart. */
export function colorbarTicks(hi: number, clipped = false): { value: number; label: string }[] {
  const digits = hi >= 0.1 ? 2 : hi >= 0.01 ? 3 : 4;
  return [0, hi / 2, hi].map((v, i) => ({
    value: v,
    label: v === 0 ? '0' : (clipped && i === 2 ? '≥' : '') + v.toFixed(digits)
  }));
}

/** A vertical colour bar from 0 (bottom) to `hi` (top), with tick labels and a caption, as its own SVG. */
function colorbar(doc: Document, parent: Element, hi: number, height: number, caption: string, clipped = false): SVGSVGElement {
  const w = 70;
  const h = Math.max(90, height);
  const barX = 8;
  const barW = 12;
  const top = 8;
  const bh = h - 2 * top;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-colorbar', width: w + 16, height: h, viewBox: `0 0 ${w + 16} ${h}` }, parent);
  const id = `attnlab-av-grad-${Math.random().toString(36).slice(2)}`;
  const defs = svgEl(doc, 'defs', {}, svg);
  const grad = svgEl(doc, 'linearGradient', { id, x1: 0, y1: 1, x2: 0, y2: 0 }, defs);
  for (let i = 0; i <= 10; i++) {
    svgEl(doc, 'stop', { offset: `${i * 10}%`, 'stop-color': attentionColor(i / 10) }, grad);
  }
  svgEl(doc, 'rect', { x: barX, y: top, width: barW, height: bh, fill: `url(#${id})`, stroke: '#999', 'stroke-width': 0.5 }, svg);
  for (const t of colorbarTicks(hi, clipped)) {
    const y = top + bh - (hi > 0 ? t.value / hi : 0) * bh;
    svgEl(doc, 'line', { x1: barX + barW, x2: barX + barW + 4, y1: y, y2: y, stroke: '#555' }, svg);
    const txt = svgEl(doc, 'text', { x: barX + barW + 6, y, 'dominant-baseline': 'central', 'font-size': 10, fill: '#222', class: 'attnlab-colorbar-tick' }, svg);
    txt.textContent = t.label;
  }
  const cap = svgEl(doc, 'text', {
    transform: `translate(${w + 8}, ${top + bh / 2}) rotate(-90)`, 'text-anchor': 'middle', 'font-size': 10, fill: '#444',
    class: 'attnlab-colorbar-caption'
  }, svg);
  cap.textContent = caption;
  svg.setAttribute('data-range', `0,${hi}`);
  return svg;
}

/** A horizontal colour bar from 0 (left) to `hi` (right), with tick labels and a caption, as its own SVG. */
function hColorbar(doc: Document, parent: Element, hi: number, length: number, caption: string): SVGSVGElement {
  const left = 6;
  const w = left + length + 16;
  const h = 40;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-colorbar', width: w, height: h, viewBox: `0 0 ${w} ${h}` }, parent);
  const id = `attnlab-av-grad-${Math.random().toString(36).slice(2)}`;
  const defs = svgEl(doc, 'defs', {}, svg);
  const grad = svgEl(doc, 'linearGradient', { id, x1: 0, y1: 0, x2: 1, y2: 0 }, defs);
  for (let i = 0; i <= 10; i++) {
    svgEl(doc, 'stop', { offset: `${i * 10}%`, 'stop-color': attentionColor(i / 10) }, grad);
  }
  const cap = svgEl(doc, 'text', { x: left, y: 9, 'font-size': 10, fill: '#444', class: 'attnlab-colorbar-caption' }, svg);
  cap.textContent = caption;
  svgEl(doc, 'rect', { x: left, y: 13, width: length, height: 10, fill: `url(#${id})`, stroke: '#999', 'stroke-width': 0.5 }, svg);
  for (const t of colorbarTicks(hi)) {
    const x = left + (hi > 0 ? t.value / hi : 0) * length;
    svgEl(doc, 'line', { x1: x, x2: x, y1: 23, y2: 27, stroke: '#555' }, svg);
    const txt = svgEl(doc, 'text', { x, y: 36, 'text-anchor': 'middle', 'font-size': 10, fill: '#222', class: 'attnlab-colorbar-tick' }, svg);
    txt.textContent = t.label;
  }
  svg.setAttribute('data-range', `0,${hi}`);
  return svg;
}

// ---- The view.

interface View {
  model: WidgetModel;
  meta: AttentionMeta;
  pat: Patterns;
  root: HTMLElement;
  tokensBox: HTMLElement;
  lists: HTMLElement;
  gridPanel: HTMLElement;
  headPanel: HTMLElement;
  focus: number;
  thumbs: { g: SVGGElement; size: number; cell: number; hl: SVGGElement; frame: SVGRectElement; layer: number; head: number }[];
}

const THUMB = 32;

function selectedHead(v: View): [number, number] {
  const s = v.model.get('selected') ?? [0, 0];
  const l = Math.max(0, Math.min(v.meta.n_layers - 1, Number(s[0]) || 0));
  const h = Math.max(0, Math.min(v.meta.n_heads - 1, Number(s[1]) || 0));
  return [l, h];
}

/** A canvas image of one head's pattern (k x k pixels per weight), as a PNG data URL for an SVG `<image>`. */
function headImage(doc: Document, pat: Patterns, layer: number, head: number, k: number): string {
  const n = pat.n;
  const canvas = doc.createElement('canvas');
  canvas.width = n * k;
  canvas.height = n * k;
  const ctx = canvas.getContext('2d');
  if (!ctx) {
    return '';
  }
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, n * k, n * k);
  for (let q = 0; q < n; q++) {
    for (let kk = 0; kk < n; kk++) {
      const w = pat.get(layer, head, q, kk);
      if (w > 0) {
        ctx.fillStyle = attentionColor(w);
        ctx.fillRect(kk * k, q * k, k, k);
      }
    }
  }
  return canvas.toDataURL('image/png');
}

/** The layers x heads grid of thumbnails, with its colour bar (0 to 1) and export buttons. */
function drawGrid(v: View): void {
  const doc = v.root.ownerDocument;
  const { pat, meta } = v;
  v.gridPanel.replaceChildren();
  const bar = htmlEl(doc, 'div', 'attnlab-av-toolbar', v.gridPanel);
  const title = htmlEl(doc, 'span', 'attnlab-title', bar, `All heads · ${meta.model}`);
  title.title = 'each thumbnail: query (row, down) attends to key (column, across)';
  exportButtons(bar, () => v.gridPanel, () => `attention-heads-${meta.model}`);
  htmlEl(doc, 'div', 'attnlab-subtitle', v.gridPanel,
    `${meta.n_layers} layers × ${meta.n_heads} heads on ${meta.n_tokens} tokens; each: query ↓ attends to key →; click one to enlarge`);
  hColorbar(doc, v.gridPanel, 1, 160, 'attention weight (0 to 1)');
  const box = htmlEl(doc, 'div', 'attnlab-av-gridbox', v.gridPanel);
  const n = pat.n;
  const k = n <= THUMB ? Math.max(1, Math.floor(THUMB / n)) : 1;
  const size = n <= THUMB ? n * k : THUMB;
  const cell = size / n;
  const gap = 6;
  const left = 34;
  const top = 18;
  const width = left + meta.n_heads * (size + gap);
  const height = top + meta.n_layers * (size + gap);
  const svg = svgEl(doc, 'svg', { class: 'attnlab-av-grid', width, height, viewBox: `0 0 ${width} ${height}` }, box);
  v.gridPanel.style.maxWidth = `${Math.max(width + 24, 260)}px`; // the texts wrap instead of widening the panel
  for (let h = 0; h < meta.n_heads; h++) {
    const t = svgEl(doc, 'text', { x: left + h * (size + gap) + size / 2, y: top - 6, 'text-anchor': 'middle', 'font-size': 10, fill: '#444' }, svg);
    t.textContent = `H${h}`;
  }
  v.thumbs = [];
  for (let l = 0; l < meta.n_layers; l++) {
    const y = top + l * (size + gap);
    const t = svgEl(doc, 'text', { x: left - 6, y: y + size / 2, 'text-anchor': 'end', 'dominant-baseline': 'central', 'font-size': 10, fill: '#444' }, svg);
    t.textContent = `L${l}`;
    for (let h = 0; h < meta.n_heads; h++) {
      const x = left + h * (size + gap);
      const g = svgEl(doc, 'g', {
        class: 'attnlab-av-thumb', transform: `translate(${x}, ${y})`, 'data-layer': l, 'data-head': h
      }, svg);
      svgEl(doc, 'image', { href: headImage(doc, pat, l, h, k), width: size, height: size, x: 0, y: 0 }, g);
      const frame = svgEl(doc, 'rect', {
        class: 'attnlab-av-thumb-frame', x: -0.5, y: -0.5, width: size + 1, height: size + 1, fill: 'none'
      }, g);
      const tip = svgEl(doc, 'title', {}, g);
      tip.textContent = `L${l}H${h}: largest weight ${pat.headMax(l, h).toFixed(3)}; click to enlarge`;
      const hl = svgEl(doc, 'g', { class: 'attnlab-av-hl', 'data-export': 'skip' }, g);
      g.addEventListener('click', () => {
        v.model.set('selected', [l, h]);
        v.model.save_changes();
      });
      v.thumbs.push({ g, size, cell, hl, frame, layer: l, head: h });
    }
  }
  markSelected(v);
  highlightThumbs(v);
}

/** The enlarged head's thumbnail framed (`data-selected="true"`). */
function markSelected(v: View): void {
  const [sl, sh] = selectedHead(v);
  for (const t of v.thumbs) {
    const on = t.layer === sl && t.head === sh;
    t.frame.setAttribute('stroke', on ? '#d95f02' : '#bbb');
    t.frame.setAttribute('stroke-width', on ? '2.5' : '0.5');
    t.g.setAttribute('data-selected', on ? 'true' : 'false');
  }
}

/** The focused token's row and column outlined in every thumbnail. */
function highlightThumbs(v: View): void {
  const doc = v.root.ownerDocument;
  for (const t of v.thumbs) {
    t.hl.replaceChildren();
    if (v.focus < 0) {
      continue;
    }
    const at = v.focus * t.cell;
    svgEl(doc, 'rect', { x: 0, y: at, width: t.size, height: Math.max(1, t.cell), fill: 'none', stroke: '#d95f02', 'stroke-width': 0.75 }, t.hl);
    svgEl(doc, 'rect', { x: at, y: 0, width: Math.max(1, t.cell), height: t.size, fill: 'none', stroke: '#1b9e77', 'stroke-width': 0.75 }, t.hl);
  }
}

/** The enlarged head: every weight as a cell, tokens on both axes, its colour bar and export buttons. */
function drawHead(v: View): void {
  const doc = v.root.ownerDocument;
  const { pat, meta } = v;
  const [layer, head] = selectedHead(v);
  const n = pat.n;
  const scaleMode: string = v.model.get('scale') ?? 'unit';
  const rest = pat.restMax(layer, head);
  const hi = scaleMode === 'max' && rest > 0 ? rest : 1;
  v.headPanel.replaceChildren();
  v.headPanel.setAttribute('data-layer', String(layer));
  v.headPanel.setAttribute('data-head', String(head));
  const bar = htmlEl(doc, 'div', 'attnlab-av-toolbar', v.headPanel);
  htmlEl(doc, 'span', 'attnlab-title', bar, `L${layer}H${head} · ${meta.model}`);
  const lab = htmlEl(doc, 'label', '', bar, 'colours ');
  const sel = doc.createElement('select');
  sel.className = 'attnlab-av-scale';
  for (const [value, text] of [['unit', '0 to 1'], ['max', '0 to the largest weight off token 0']]) {
    const o = doc.createElement('option');
    o.value = value;
    o.textContent = text;
    sel.appendChild(o);
  }
  sel.value = scaleMode;
  sel.addEventListener('change', () => {
    v.model.set('scale', sel.value);
    v.model.save_changes();
    drawHead(v); // at once, whether or not the model echoes the change
  });
  lab.appendChild(sel);
  lab.setAttribute('data-export', 'skip');
  exportButtons(bar, () => v.headPanel, () => `attention-L${layer}H${head}`);
  htmlEl(doc, 'div', 'attnlab-subtitle', v.headPanel, `query (row) attends to key (column); weights of each row sum to 1`);

  const row = htmlEl(doc, 'div', 'attnlab-av-main', v.headPanel);
  const matrixBox = htmlEl(doc, 'div', 'attnlab-av-matrixbox', row); // scrolls when a long text makes it wide
  const cell = Math.max(10, Math.min(22, Math.floor(480 / Math.max(n, 1))));
  const shown = meta.tokens.map(t => axisToken(t));
  const longest = shown.reduce((m, s) => Math.max(m, s.length), 1);
  const labelW = 12 + Math.ceil(longest * 6.8); // 11px monospace, ~6.6px a character
  const left = labelW + 34; // room for the position numbers too
  const top = labelW + 6;
  const width = left + n * cell + 6;
  const height = top + n * cell + 6;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-av-matrix', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `attention pattern of L${layer}H${head}: query rows, key columns`
  }, matrixBox);
  const mono = 'var(--jp-code-font-family, monospace)';
  for (let q = 0; q < n; q++) {
    for (let k = 0; k < n; k++) {
      const w = pat.get(layer, head, q, k);
      if (k > q && w === 0) {
        continue; // causal: a query never sees later keys
      }
      const r = svgEl(doc, 'rect', {
        class: 'attnlab-av-cell', x: left + k * cell, y: top + q * cell, width: cell, height: cell,
        fill: attentionColor(w / hi), 'data-q': q, 'data-k': k, 'data-weight': w.toFixed(6)
      }, svg);
      const tip = svgEl(doc, 'title', {}, r);
      tip.textContent = `${q} ${JSON.stringify(meta.tokens[q])} → ${k} ${JSON.stringify(meta.tokens[k])}: ${w.toFixed(4)}`;
    }
  }
  svgEl(doc, 'rect', { x: left, y: top, width: n * cell, height: n * cell, fill: 'none', stroke: '#999', 'stroke-width': 0.5 }, svg);
  const fs = Math.min(11, Math.max(8, cell - 2));
  shown.forEach((s, i) => {
    const y = svgEl(doc, 'text', {
      x: left - 4, y: top + (i + 0.5) * cell, 'text-anchor': 'end', 'dominant-baseline': 'central',
      'font-family': mono, 'font-size': fs, fill: '#222', class: 'attnlab-av-qlabel', 'data-pos': i
    }, svg);
    y.textContent = s;
    const yt = svgEl(doc, 'title', {}, y);
    yt.textContent = `query ${i}: ${JSON.stringify(meta.tokens[i])}`;
    y.addEventListener('mouseenter', () => setFocus(v, i));
    const num = svgEl(doc, 'text', {
      x: 4, y: top + (i + 0.5) * cell, 'dominant-baseline': 'central', 'font-size': 9, fill: '#888'
    }, svg);
    num.textContent = String(i);
    const x = svgEl(doc, 'text', {
      transform: `translate(${left + (i + 0.5) * cell}, ${top - 4}) rotate(-90)`, 'dominant-baseline': 'central',
      'font-family': mono, 'font-size': fs, fill: '#222', class: 'attnlab-av-klabel', 'data-pos': i
    }, svg);
    x.textContent = s;
    const xt = svgEl(doc, 'title', {}, x);
    xt.textContent = `key ${i}: ${JSON.stringify(meta.tokens[i])}`;
    x.addEventListener('mouseenter', () => setFocus(v, i));
  });
  if (v.focus >= 0) {
    const g = svgEl(doc, 'g', { class: 'attnlab-av-hl', 'data-export': 'skip' }, svg);
    svgEl(doc, 'rect', { x: left, y: top + v.focus * cell, width: n * cell, height: cell, fill: 'none', stroke: '#d95f02', 'stroke-width': 2 }, g);
    svgEl(doc, 'rect', { x: left + v.focus * cell, y: top, width: cell, height: n * cell, fill: 'none', stroke: '#1b9e77', 'stroke-width': 2 }, g);
  }
  const caption = hi < 1 ? `attention weight, 0 to ${hi.toFixed(3)} (max off token 0)` : 'attention weight (0 to 1)';
  colorbar(doc, row, hi, Math.max(Math.min(height, 300), 260), caption, hi < 1);
}

/** The focused token's row (where it attends) and column (what attends to it) in the enlarged head, as weighted tokens. */
function drawLists(v: View): void {
  const doc = v.root.ownerDocument;
  const { pat, meta } = v;
  v.lists.replaceChildren();
  if (v.focus < 0) {
    htmlEl(doc, 'div', 'attnlab-av-list-label', v.lists,
      'Hover a token above to see where it attends (its row) and what attends to it (its column) in the enlarged head.');
    return;
  }
  const [layer, head] = selectedHead(v);
  const i = v.focus;
  const name = JSON.stringify(meta.tokens[i]);
  const list = (cls: string, label: string, weight: (j: number) => number | null) => {
    const row = htmlEl(doc, 'div', `attnlab-av-list ${cls}`, v.lists);
    row.setAttribute('data-layer', String(layer));
    row.setAttribute('data-head', String(head));
    row.setAttribute('data-focus', String(i));
    htmlEl(doc, 'span', 'attnlab-av-list-label', row, label);
    meta.tokens.forEach((t, j) => {
      const w = weight(j);
      const span = htmlEl(doc, 'span', 'attnlab-av-weight', row);
      span.setAttribute('data-pos', String(j));
      htmlEl(doc, 'span', 'attnlab-av-wtok', span, showToken(t));
      if (w === null) {
        span.classList.add('attnlab-av-none');
        span.setAttribute('data-weight', 'null');
        htmlEl(doc, 'span', 'attnlab-av-wnum', span, '–');
        span.title = `${JSON.stringify(t)} (position ${j}): causal, no attention`;
        return;
      }
      span.setAttribute('data-weight', w.toFixed(6));
      span.style.backgroundColor = attentionColor(w);
      span.style.color = w > 0.55 ? '#fff' : '#222';
      htmlEl(doc, 'span', 'attnlab-av-wnum', span, w.toFixed(2)).style.color = w > 0.55 ? '#fff' : '#333';
      span.title = `${JSON.stringify(t)} (position ${j}): ${w.toFixed(4)}`;
    });
  };
  list('attnlab-av-row', `L${layer}H${head}: ${name} (position ${i}) attends to`, j => (j <= i ? pat.get(layer, head, i, j) : null));
  list('attnlab-av-col', `L${layer}H${head}: attending to ${name}`, j => (j >= i ? pat.get(layer, head, j, i) : null));
}

function setFocus(v: View, i: number): void {
  if (v.focus === i) {
    return;
  }
  v.focus = i;
  v.root.setAttribute('data-focus', String(i));
  v.tokensBox.querySelectorAll('.attnlab-av-token').forEach(el => {
    el.classList.toggle('attnlab-av-focus', Number(el.getAttribute('data-pos')) === i);
  });
  highlightThumbs(v);
  drawHead(v);
  drawLists(v);
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-av', el);
  const meta = model.get('meta') as AttentionMeta;
  let pat: Patterns;
  try {
    pat = decodePatterns(meta, model.get('weights'));
  } catch (e) {
    htmlEl(doc, 'div', 'attnlab-error-text', root, e instanceof Error ? e.message : String(e));
    return () => undefined;
  }
  htmlEl(doc, 'div', 'attnlab-title', root, `Attention patterns · ${meta.model}`);
  htmlEl(doc, 'div', 'attnlab-subtitle', root,
    `${meta.n_layers} layers × ${meta.n_heads} heads on ${meta.n_tokens} tokens. Hover a token: its row (where it attends, orange) ` +
      'and its column (what attends to it, green); click a thumbnail to enlarge that head.');
  const tokensBox = htmlEl(doc, 'div', 'attnlab-av-text', root);
  const lists = htmlEl(doc, 'div', 'attnlab-av-lists', root);
  const main = htmlEl(doc, 'div', 'attnlab-av-main', root);
  const gridPanel = htmlEl(doc, 'div', 'attnlab-av-panel attnlab-av-grid-panel', main);
  const headPanel = htmlEl(doc, 'div', 'attnlab-av-panel attnlab-av-head', main);
  const v: View = { model, meta, pat, root, tokensBox, lists, gridPanel, headPanel, focus: -1, thumbs: [] };
  meta.tokens.forEach((t, i) => {
    const span = htmlEl(doc, 'span', 'attnlab-av-token', tokensBox, showToken(t));
    span.setAttribute('data-pos', String(i));
    span.title = `${JSON.stringify(t)} · position ${i}`;
    span.addEventListener('mouseenter', () => setFocus(v, i));
  });
  drawGrid(v);
  drawHead(v);
  drawLists(v);
  const onSelected = () => {
    markSelected(v);
    drawHead(v);
    drawLists(v);
  };
  const onScale = () => drawHead(v);
  model.on('change:selected', onSelected);
  model.on('change:scale', onScale);
  return () => {
    model.off('change:selected', onSelected);
    model.off('change:scale', onScale);
  };
}

export default { render };
