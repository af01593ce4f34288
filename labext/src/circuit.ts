/**
 * A pure, dependency-free DOM renderer for attnlab circuit payloads (`application/vnd.attnlab.circuit.v1+json`).
 *
 * Layout: a header (title, subtitle, SVG/PNG export buttons), a control bar, a legend with the edge colour bar, the
 * graph and an info panel, then the faithfulness curve when the payload has one.
 *
 * - The graph (`svg.attnlab-circuit-graph`) fills the width it is given (it is laid out again when that width
 *   changes) and is layered top to bottom: `input` as a bar across the top, then per layer that holds a node of the
 *   payload (layers without one are skipped; the row label gives the layer) a row of heads and, under it, the
 *   layer's MLP as a thin bar across the head columns; `logits` as a bar across the bottom. Query heads sit in fixed
 *   columns by head index (a head keeps its column in every layer), then key/value heads of a grouped-query model.
 *   Nodes are `g.attnlab-circuit-node[data-node][data-layer][data-kind]`.
 * - Every edge of the payload is drawn: `path.attnlab-circuit-edge[data-rank][data-input][data-score]`, width and
 *   opacity growing with |score| (weak edges stay faint, so a 1,000-edge circuit reads by its strong edges), colour
 *   by sign on the heatmap's diverging scale (the colour bar gives the scores). An edge to or from a bar (input, an
 *   MLP, logits) runs straight down at the head's column, so MLP edges never converge on one point; edges between
 *   two bars (input -> MLP, MLP -> MLP, MLP -> logits) run as arcs in a lane right of the graph, their bulge growing
 *   with the distance they span. A head's inputs are told apart by where the edge lands (query left, key centre,
 *   value right) and by dash pattern (query solid, key dashed, value dotted). Each edge's `<title>` reads
 *   `sender → receiver.input: score`.
 * - The slider (`input.attnlab-circuit-slider`, type range) chooses how many edges are shown, in score order (the
 *   top-n edges by |score|, as `circuit_from_scores(n_edges=n)` keeps). With a faithfulness curve, "computed sizes
 *   only" (on by default) makes the slider step through the sizes the curve holds; `.attnlab-circuit-faith` shows
 *   the curve's number for exactly the size shown, or says that size was not computed: never a neighbour's value.
 * - The faithfulness curve (`svg.attnlab-circuit-curve`, edges on a log axis, faithfulness with 95% intervals)
 *   marks the size shown; it has its own export buttons.
 * - Clicking a node (or Enter/Space on a focused node) selects it, highlights its shown edges, fills the info panel
 *   (`.attnlab-circuit-info`: name, kind and layer, incoming and outgoing edges with scores) and dispatches a
 *   bubbling `CustomEvent('attnlab-node-click', {detail: {node, layer, head}})` on the host. Escape clears it.
 *
 * `renderCircuit` returns a handle (`setShown`, `setCurve`, `shown`) so that a widget can drive the view: the
 * circuit-search widget lets the slider step through the sizes its kernel evaluated and hears each move through
 * `onShown`.
 *
 * Nothing touches the network, and every payload string reaches the page through `textContent` / SVG text nodes,
 * never as HTML.
 */

import type { CircuitCurve, CircuitEdge, CircuitNode, CircuitNodeClickDetail, CircuitPayload } from './contract';
import { Attrs, htmlEl, svgEl } from './dom';
import { exportButtons } from './export';
import { divergingColor } from './heatmap';

/** Name of the bubbling CustomEvent dispatched on the host element when a node is selected. */
export const NODE_CLICK_EVENT = 'attnlab-node-click';

const FONT = 'var(--jp-ui-font-family, system-ui, sans-serif)';

// Geometry (px).
const NODE_W = 38;
const NODE_H = 20;
const MIN_COL_W = 42;
const MAX_COL_W = 110;
const ROW_H = 46;
const MLP_DY = 24; // head row centre to the MLP bar's centre
const MLP_H = 10;
const BLOCK_GAP = 18;
const LEFT = 52;
const RIGHT = 12;
const TOP = 8;
const BAR_H = 18;
const LANE_MIN = 40;
const MAX_WIDTH = 6;
const MIN_WIDTH = 0.8;
const INFO_W = 300;
const DEFAULT_WIDTH = 900;

/** Where an edge lands on its receiver (offset from the node's centre) and its dash pattern. */
const INPUTS: Record<string, { dx: number; dash: string; label: string }> = {
  q: { dx: -12, dash: '', label: 'query' },
  k: { dx: 0, dash: '5 3', label: 'key' },
  v: { dx: 12, dash: '1.5 2.5', label: 'value' },
  mlp: { dx: 0, dash: '', label: 'MLP input' },
  logits: { dx: 0, dash: '', label: 'logits' }
};

/** Where a node sits: its centre, width and height (px, in the graph's coordinates). */
interface NodePos {
  node: CircuitNode;
  x: number;
  y: number;
  w: number;
  h: number;
}

/** A node as drawn. */
interface Placed extends NodePos {
  el: SVGGElement;
}

/** Columns and rows of the graph, computed from the nodes and the width available. */
export interface CircuitLayout {
  /** Query-head indices with a column, in order. */
  headCols: number[];
  /** Key/value-head indices with a column, in order. */
  kvCols: number[];
  /** Column width (px). */
  colW: number;
  /** Left edge of the key/value block. */
  kvX0: number;
  /** Right end of the head columns (and of the MLP bars). */
  colsRight: number;
  /** The lane of bar-to-bar arcs: its left edge and width. */
  laneX0: number;
  laneW: number;
  /** Right end of the input and logits bars. */
  innerRight: number;
  width: number;
  height: number;
  /** Layers that hold a node, in order, the y of each one's head row and of its MLP bar (if it has one). */
  layers: number[];
  rowY: Map<number, number>;
  mlpY: Map<number, number>;
  /** Top of the logits bar. */
  logitsY: number;
}

/** Options of {@link renderCircuit} for a widget that drives the view. */
export interface CircuitOptions {
  /** The sizes the slider steps through (edge counts); default: every count, or the curve's sizes. */
  sizes?: number[];
  /** Called with the number of edges shown after each slider move (not after `setShown`). */
  onShown?: (n: number) => void;
  /** The size shown at first (default: the largest). */
  shown?: number;
}

/** What {@link renderCircuit} returns: the view's controls for a widget. */
export interface CircuitHandle {
  root: HTMLElement;
  /** Show the top `n` edges (snapped into range), as a slider move would, without calling `onShown`. */
  setShown(n: number): void;
  /** Replace the faithfulness curve (and the slider's sizes, when given). */
  setCurve(curve: CircuitCurve | null, sizes?: number[]): void;
  /** The number of edges shown. */
  shown(): number;
}

/** The drawn graph and the panel it fills, shared by the state updates and the event handlers. */
interface CircuitView {
  host: HTMLElement;
  root: HTMLElement;
  payload: CircuitPayload;
  /** The payload's edges with a finite score, in score order (rank = index). */
  edges: CircuitEdge[];
  /** Largest |score|. */
  top: number;
  byName: Map<string, CircuitNode>;
  placed: Map<string, Placed>;
  /** Edge paths by rank (a hole where an endpoint is missing). */
  paths: SVGPathElement[];
  svg: SVGSVGElement;
  scroll: HTMLElement;
  layoutWidth: number;
  controls: CircuitControls;
  panel: HTMLElement;
  curveBox: HTMLElement;
  state: CircuitState;
  options: CircuitOptions;
  /** Whether the user unticked "computed sizes only" (a new curve then keeps every count). */
  snapChosen: boolean;
}

/** The control bar's live elements. */
interface CircuitControls {
  slider: HTMLInputElement;
  snap: HTMLInputElement;
  snapLabel: HTMLElement;
  counts: HTMLElement;
  faith: HTMLElement;
}

/** What the user changes: how many edges are shown, which node is selected, the curve and the slider's sizes. */
interface CircuitState {
  shown: number;
  selected: string | null;
  curve: CircuitCurve | null;
  /** Sizes the slider steps through when snapping (increasing, within [1, edges]). */
  sizes: number[];
  snap: boolean;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function signed(v: number, digits = 4): string {
  return `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`;
}

/** A count with thousands separators (1,000). */
function count(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** `receiver.input` for a head input, the receiver alone for an MLP or the logits. */
function target(edge: CircuitEdge): string {
  return edge.input === 'q' || edge.input === 'k' || edge.input === 'v' ? `${edge.receiver}.${edge.input}` : edge.receiver;
}

/** The tooltip of an edge: `sender → receiver.input: score`. */
export function edgeTooltip(edge: CircuitEdge): string {
  return `${edge.sender} → ${target(edge)}: ${signed(edge.score)}`;
}

/** Stroke colour: the heatmap's diverging scale, never paler than 40% so that weak edges keep their sign's hue. */
function edgeColor(score: number, top: number): string {
  const t = top > 0 ? Math.min(1, Math.abs(score) / top) : 0;
  return divergingColor((score >= 0 ? 1 : -1) * (0.4 + 0.6 * t), 1);
}

/** Stroke opacity: from 0.15 (weakest) to 1 (strongest), so that many weak edges do not hide the strong ones. */
function edgeOpacity(score: number, top: number): number {
  const t = top > 0 ? Math.min(1, Math.abs(score) / top) : 0;
  return 0.15 + 0.85 * Math.sqrt(t);
}

/** Index into `sizes` of the size nearest to `n` (the smaller one on a tie). */
export function nearestSize(sizes: number[], n: number): number {
  let best = -1;
  sizes.forEach((s, i) => {
    if (best < 0 || Math.abs(s - n) < Math.abs(sizes[best] - n)) {
      best = i;
    }
  });
  return best;
}

function svgText(doc: Document, parent: Element, text: string, attrs: Attrs): SVGTextElement {
  const el = svgEl(doc, 'text', { 'font-size': 11, 'font-family': FONT, fill: 'currentColor', ...attrs }, parent);
  el.textContent = text;
  return el;
}

// ---- Legend (an SVG, so that an exported figure carries it) ----------------------------------------------------

/** Approximate text width at 11px (for laying out the legend without measuring). */
const textW = (s: string): number => s.length * 6.2;

/**
 * The legend: the three input kinds, the bar kinds, and the edge colour bar from -top to +top with its label
 * (`payload.value_label`). Laid out in rows that fit `width`.
 */
function drawLegend(doc: Document, parent: Element, payload: CircuitPayload, top: number, width: number): void {
  const hasKV = payload.nodes.some(n => n.kind === 'kv');
  const items: { text: string; line: Attrs }[] = [];
  for (const key of ['q', 'k', 'v']) {
    const spec = INPUTS[key];
    const where = key === 'q' ? 'left' : key === 'k' ? 'centre' : 'right';
    items.push({
      text: `${spec.label} input (lands ${where})${hasKV && key !== 'q' ? ', shared KV head' : ''}`,
      line: { stroke: '#444', 'stroke-width': 2, 'stroke-dasharray': spec.dash }
    });
  }
  items.push({ text: 'MLP: the bar under its layer', line: { stroke: '#999', 'stroke-width': 6 } });
  const W = Math.max(320, width);
  const svg = svgEl(doc, 'svg', { class: 'attnlab-circuit-legend', width: W, height: 10, role: 'img' }, parent);
  svg.setAttribute('aria-label', 'legend');
  let x = 4;
  let y = 10;
  for (const it of items) {
    const w = 30 + textW(it.text) + 16;
    if (x + w > W && x > 4) {
      x = 4;
      y += 18;
    }
    svgEl(doc, 'line', { x1: x, x2: x + 24, y1: y, y2: y, 'stroke-linecap': 'round', ...it.line }, svg);
    svgText(doc, svg, it.text, { x: x + 30, y, 'dominant-baseline': 'central', class: 'attnlab-circuit-legend-text' });
    x += w;
  }
  // The colour bar: edge score from -top to +top; width and opacity also grow with |score|.
  y += 22;
  const label = `${payload.value_label || 'edge score'}; width and opacity grow with |score|`;
  svgText(doc, svg, label, { x: 4, y, 'dominant-baseline': 'central', class: 'attnlab-circuit-colorbar-label' });
  y += 14;
  const barW = Math.min(260, W - 60);
  const x0 = 30;
  const grad = `attnlab-circuit-grad-${Math.random().toString(36).slice(2, 9)}`;
  const defs = svgEl(doc, 'defs', {}, svg);
  const lg = svgEl(doc, 'linearGradient', { id: grad, x1: 0, x2: 1, y1: 0, y2: 0 }, defs);
  for (let i = 0; i <= 10; i++) {
    const v = -1 + (2 * i) / 10;
    svgEl(doc, 'stop', { offset: `${i * 10}%`, 'stop-color': v === 0 ? '#f7f7f7' : edgeColor(v * top, top) }, lg);
  }
  svgEl(doc, 'rect', { x: x0, y, width: barW, height: 10, fill: `url(#${grad})`, stroke: '#999', 'stroke-width': 0.5,
    class: 'attnlab-circuit-colorbar' }, svg);
  const ticks: [number, string][] = [[0, signed(-top, 3)], [0.5, '0'], [1, signed(top, 3)]];
  for (const [f, t] of ticks) {
    const tx = x0 + f * barW;
    svgEl(doc, 'line', { x1: tx, x2: tx, y1: y + 10, y2: y + 14, stroke: '#666' }, svg);
    svgText(doc, svg, t, { x: tx, y: y + 22, 'text-anchor': 'middle', 'dominant-baseline': 'central',
      class: 'attnlab-circuit-colorbar-tick' });
  }
  const height = y + 32;
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${W} ${height}`);
}

// ---- Layout (pure) ------------------------------------------------------------------------------------------

function sortedUnique(xs: number[]): number[] {
  return Array.from(new Set(xs)).sort((a, b) => a - b);
}

/**
 * Columns (query heads by index, then key/value heads), the bar-to-bar lane, and one row per layer that holds a
 * node (with an MLP bar under the heads where the layer's MLP is in the circuit), spread over `width` px; the lane
 * takes a larger part of the width when `barShare` (the fraction of edges between two bars) is large.
 */
export function circuitLayout(nodes: CircuitNode[], width: number = DEFAULT_WIDTH, barShare = 0): CircuitLayout {
  const headCols = sortedUnique(nodes.filter(n => n.kind === 'head').map(n => n.head ?? 0));
  const kvCols = sortedUnique(nodes.filter(n => n.kind === 'kv').map(n => n.group ?? 0));
  const nCols = Math.max(1, headCols.length + kvCols.length);
  const gap = kvCols.length && headCols.length ? BLOCK_GAP : 0;
  // The lane of bar-to-bar arcs grows with their share of the edges (EAP circuits are often mostly MLP edges).
  const laneFree = Math.max(LANE_MIN, Math.min(320, width * (0.1 + 0.35 * barShare)));
  const colW = Math.max(MIN_COL_W, Math.min(MAX_COL_W, (width - LEFT - RIGHT - gap - laneFree) / nCols));
  const kvX0 = LEFT + headCols.length * colW + gap;
  const colsRight = Math.max(kvX0 + kvCols.length * colW, LEFT + colW);
  const laneX0 = colsRight + 6;
  const laneW = Math.max(LANE_MIN, width - RIGHT - laneX0);
  const innerRight = laneX0 + laneW;
  const layers = sortedUnique(nodes.filter(n => n.kind !== 'input' && n.kind !== 'logits').map(n => n.layer));
  const withMlp = new Set(nodes.filter(n => n.kind === 'mlp').map(n => n.layer));
  const rowY = new Map<number, number>();
  const mlpY = new Map<number, number>();
  let y = TOP + BAR_H + ROW_H * 0.7;
  for (const l of layers) {
    rowY.set(l, y);
    if (withMlp.has(l)) {
      mlpY.set(l, y + MLP_DY);
      y += MLP_DY;
    }
    y += ROW_H;
  }
  const logitsY = y - ROW_H * 0.3 + (layers.length ? 0 : ROW_H * 0.25);
  const height = logitsY + BAR_H + TOP;
  return { headCols, kvCols, colW, kvX0, colsRight, laneX0, laneW, innerRight, width: innerRight + RIGHT, height,
    layers, rowY, mlpY, logitsY };
}

/** Input, logits and MLPs are bars: edges attach to them at the other end's column. */
function isBar(n: CircuitNode): boolean {
  return n.kind === 'input' || n.kind === 'logits' || n.kind === 'mlp';
}

/** Centre and size of a node; input and logits are bars across the whole graph, an MLP a bar across the columns. */
function nodePosition(n: CircuitNode, layout: CircuitLayout): NodePos {
  const { headCols, kvCols, kvX0, colW, colsRight, innerRight, rowY, mlpY, logitsY } = layout;
  if (n.kind === 'input' || n.kind === 'logits') {
    const y = n.kind === 'input' ? TOP + BAR_H / 2 : logitsY + BAR_H / 2;
    return { node: n, x: (LEFT + innerRight) / 2, y, w: innerRight - LEFT, h: BAR_H };
  }
  if (n.kind === 'mlp') {
    const y = mlpY.get(n.layer) ?? (rowY.get(n.layer) as number);
    return { node: n, x: (LEFT + colsRight) / 2, y, w: colsRight - LEFT, h: MLP_H };
  }
  const x = n.kind === 'head'
    ? LEFT + headCols.indexOf(n.head ?? 0) * colW + colW / 2
    : kvX0 + kvCols.indexOf(n.group ?? 0) * colW + colW / 2;
  return { node: n, x, y: rowY.get(n.layer) as number, w: Math.min(NODE_W + 8, colW - 6), h: NODE_H };
}

/** `x` kept inside a bar's ends (4px in). */
function clampX(p: NodePos, x: number): number {
  return Math.max(p.x - p.w / 2 + 4, Math.min(p.x + p.w / 2 - 4, x));
}

/** The `d` of an edge from the bottom of `s` to the top of `r`. */
export function edgePath(s: NodePos, r: NodePos, input: string, layout: CircuitLayout): string {
  const spec = INPUTS[input] ?? INPUTS.mlp;
  const y1 = s.y + s.h / 2;
  const y2 = r.y - r.h / 2;
  if (isBar(s.node) && isBar(r.node)) {
    // input -> MLP, MLP -> MLP, MLP -> logits, input -> logits: an arc in the lane right of the columns, its bulge
    // growing with the height it spans, so that arcs between different bars are told apart.
    const x = layout.laneX0;
    const span = Math.max(0, y2 - y1) / Math.max(1, layout.height);
    const bulge = 8 + (layout.laneW - 12) * Math.min(1, span * 1.4);
    return `M ${x} ${y1 - s.h / 2} C ${x + bulge} ${y1} ${x + bulge} ${y2} ${x} ${y2 + r.h / 2}`;
  }
  // A bar sends from / receives at the other end's column, so those edges run straight down.
  let x1 = isBar(s.node) ? clampX(s, r.x + spec.dx) : s.x;
  let x2 = isBar(r.node) ? clampX(r, x1) : r.x + spec.dx;
  const between = layout.layers.some(l => {
    const ry = layout.rowY.get(l) as number;
    return ry - NODE_H / 2 > y1 + 1 && ry + NODE_H / 2 < y2 - 1;
  });
  if (between && Math.abs(x2 - x1) < layout.colW / 2) {
    // A near-vertical edge over other head rows would run behind the heads of its column and read as a chain
    // through them: route it down the gutter right of the column instead.
    const xg = (isBar(s.node) ? r.x : s.x) + layout.colW / 2;
    if (isBar(s.node)) {
      x1 = clampX(s, xg);
    }
    if (isBar(r.node)) {
      x2 = clampX(r, xg);
    }
    const a = isBar(s.node) ? y1 : y1 + 14;
    const b = isBar(r.node) ? y2 : y2 - 14;
    return (
      `M ${x1} ${y1} C ${x1} ${y1 + 8} ${xg} ${a - 6} ${xg} ${a} L ${xg} ${b} ` +
      `C ${xg} ${b + 6} ${x2} ${y2 - 8} ${x2} ${y2}`
    );
  }
  const c = Math.max(6, (y2 - y1) * 0.45);
  return `M ${x1} ${y1} C ${x1} ${y1 + c} ${x2} ${y2 - c} ${x2} ${y2}`;
}

/** Stroke width: proportional to |score|, from MIN_WIDTH to MAX_WIDTH. */
function edgeWidth(score: number, top: number): number {
  return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * (top > 0 ? Math.abs(score) / top : 0);
}

/**
 * The faithfulness line for `shown` edges: the curve's number for exactly that size, or a statement that it was not
 * computed (never a neighbouring size's value). Null without a curve.
 */
export function faithfulnessText(
  curve: CircuitPayload['curve'],
  shown: number
): { text: string; size: number | null; value: number | null } | null {
  if (!curve || !Array.isArray(curve.sizes) || curve.sizes.length === 0) {
    return null;
  }
  const i = curve.sizes.indexOf(shown);
  if (i < 0) {
    const list = curve.sizes.map(count).join(', ');
    return { text: `faithfulness at ${count(shown)} edges: not computed (the curve has ${list} edges)`, size: null,
      value: null };
  }
  const f = num(curve.faithfulness[i]);
  const ci = curve.ci95?.[i];
  const lo = num(ci?.[0]);
  const hi = num(ci?.[1]);
  const ciText = lo !== null && hi !== null ? ` (95% CI ${lo.toFixed(3)} to ${hi.toFixed(3)})` : '';
  return { text: `faithfulness ${f === null ? 'n/a' : f.toFixed(3)} at ${count(shown)} edges${ciText}`, size: shown,
    value: f };
}

// ---- DOM builders -------------------------------------------------------------------------------------------

function drawHeader(doc: Document, root: HTMLElement, payload: CircuitPayload): void {
  const header = htmlEl(doc, 'div', 'attnlab-circuit-header', root);
  const titleRow = htmlEl(doc, 'div', 'attnlab-circuit-title-row', header);
  htmlEl(doc, 'div', 'attnlab-title', titleRow, String(payload.title ?? ''));
  exportButtons(titleRow, () => root, () => String(payload.title ?? 'circuit'));
  htmlEl(doc, 'div', 'attnlab-subtitle', header, String(payload.subtitle ?? ''));
}

/** The control bar: the edge-count slider, "computed sizes only", the counts and the faithfulness. */
function drawControls(doc: Document, root: Element): CircuitControls {
  const controls = htmlEl(doc, 'div', 'attnlab-circuit-controls', root);
  controls.setAttribute('data-export', 'skip');
  const sliderLabel = htmlEl(doc, 'label', 'attnlab-circuit-slider-label', controls, 'edges shown ');
  const slider = doc.createElement('input');
  slider.type = 'range';
  slider.className = 'attnlab-circuit-slider';
  slider.step = '1';
  slider.setAttribute('aria-label', 'number of edges shown, in order of |score|');
  // Arrow keys move the slider, not JupyterLab's notebook cursor (Lumino skips shortcuts under this attribute).
  slider.setAttribute('data-lm-suppress-shortcuts', 'true');
  sliderLabel.appendChild(slider);
  const snapLabel = htmlEl(doc, 'label', 'attnlab-circuit-snap', controls);
  const snap = doc.createElement('input');
  snap.type = 'checkbox';
  snap.className = 'attnlab-circuit-snap-box';
  snapLabel.appendChild(snap);
  snapLabel.appendChild(doc.createTextNode(' computed sizes only'));
  const counts = htmlEl(doc, 'span', 'attnlab-circuit-counts', controls);
  const faith = htmlEl(doc, 'span', 'attnlab-circuit-faith', controls);
  return { slider, snap, snapLabel, counts, faith };
}

/** One labelled line per layer drawn (an `MLP` label by its bar), with a `⋮` where layers were skipped. */
function drawRows(doc: Document, parent: Element, layout: CircuitLayout): void {
  let prev: number | null = null;
  for (const l of layout.layers) {
    const ry = layout.rowY.get(l) as number;
    svgText(doc, parent, `L${l}`, { x: LEFT - 12, y: ry, 'text-anchor': 'end', 'dominant-baseline': 'central',
      class: 'attnlab-circuit-layer-label' });
    svgEl(doc, 'line', { x1: LEFT - 6, x2: layout.colsRight, y1: ry, y2: ry, class: 'attnlab-circuit-row-line' },
      parent);
    const my = layout.mlpY.get(l);
    if (my !== undefined) {
      svgText(doc, parent, 'MLP', { x: LEFT - 12, y: my, 'text-anchor': 'end', 'dominant-baseline': 'central',
        'font-size': 9, class: 'attnlab-circuit-mlp-label' });
    }
    if (prev !== null && l > prev + 1) {
      svgText(doc, parent, '⋮', { x: LEFT - 30, y: ry - ROW_H / 2, 'text-anchor': 'middle',
        'dominant-baseline': 'central', class: 'attnlab-circuit-skip' });
    }
    prev = l;
  }
}

/** A node: a focusable `g` with its box, label and title. */
function drawNode(doc: Document, parent: Element, pos: NodePos): Placed {
  const { node: n, x, y, w, h } = pos;
  const g = svgEl(doc, 'g', {
    class: `attnlab-circuit-node attnlab-circuit-node-${n.kind}`,
    'data-node': n.name,
    'data-layer': n.layer,
    'data-kind': n.kind,
    tabindex: 0,
    role: 'button',
    'aria-label': n.name,
    transform: `translate(${x}, ${y})`
  }, parent);
  svgEl(doc, 'rect', { x: -w / 2, y: -h / 2, width: w, height: h, rx: n.kind === 'mlp' ? 2 : 5 }, g);
  if (n.kind !== 'mlp') {
    svgText(doc, g, String(n.label ?? n.name), { 'text-anchor': 'middle', 'dominant-baseline': 'central',
      'font-size': isBar(n) ? 11 : 10, class: 'attnlab-circuit-node-label' });
  }
  const title = svgEl(doc, 'title', {}, g);
  title.textContent = n.kind === 'head' || n.kind === 'kv' || n.kind === 'mlp' ? `${n.name} (${n.kind})` : n.name;
  return { ...pos, el: g };
}

/** One edge path, with its width, colour, opacity, dash pattern, data attributes and title. */
function drawEdge(doc: Document, parent: Element, e: CircuitEdge, rank: number, d: string, top: number): SVGPathElement {
  const spec = INPUTS[e.input] ?? INPUTS.mlp;
  const path = svgEl(doc, 'path', {
    class: 'attnlab-circuit-edge',
    d,
    fill: 'none',
    stroke: edgeColor(e.score, top),
    'stroke-width': edgeWidth(e.score, top).toFixed(2),
    'stroke-opacity': edgeOpacity(e.score, top).toFixed(3),
    'data-rank': rank,
    'data-input': e.input,
    'data-sender': e.sender,
    'data-receiver': e.receiver,
    'data-score': e.score
  }, parent);
  if (spec.dash) {
    path.setAttribute('stroke-dasharray', spec.dash);
  }
  const title = svgEl(doc, 'title', {}, path);
  title.textContent = edgeTooltip(e);
  return path;
}

/** The graph, laid out for the view's current width: row lines and labels, edges (weakest first), nodes on top. */
function drawGraph(view: CircuitView): void {
  const doc = view.svg.ownerDocument;
  const { svg, payload, edges, top } = view;
  const bar = (name: string) => {
    const n = view.byName.get(name);
    return n !== undefined && isBar(n);
  };
  const barShare = edges.filter(e => bar(e.sender) && bar(e.receiver)).length / Math.max(1, edges.length);
  const layout = circuitLayout(payload.nodes, view.layoutWidth, barShare);
  svg.replaceChildren();
  svg.setAttribute('width', String(layout.width));
  svg.setAttribute('height', String(layout.height));
  svg.setAttribute('viewBox', `0 0 ${layout.width} ${layout.height}`);
  const rowLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-rows' }, svg);
  const edgeLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-edges' }, svg);
  const nodeLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-nodes' }, svg);
  drawRows(doc, rowLayer, layout);
  view.placed = new Map<string, Placed>();
  // Bars first, so that heads sit on top of the lines that cross the MLP bars.
  const ordered = [...payload.nodes].sort((a, b) => Number(!isBar(a)) - Number(!isBar(b)));
  for (const n of ordered) {
    view.placed.set(n.name, drawNode(doc, nodeLayer, nodePosition(n, layout)));
  }
  view.paths = new Array(edges.length);
  for (let rank = edges.length - 1; rank >= 0; rank--) {
    const e = edges[rank];
    const s = view.placed.get(e.sender);
    const r = view.placed.get(e.receiver);
    if (s && r) {
      view.paths[rank] = drawEdge(doc, edgeLayer, e, rank, edgePath(s, r, e.input, layout), top);
    }
  }
}

function drawProvenance(doc: Document, root: Element, provenance: string[][]): void {
  if (!Array.isArray(provenance) || provenance.length === 0) {
    return;
  }
  const details = htmlEl(doc, 'details', 'attnlab-circuit-provenance', root);
  details.setAttribute('data-export', 'skip');
  htmlEl(doc, 'summary', '', details, 'provenance');
  const table = htmlEl(doc, 'table', '', details);
  for (const pair of provenance) {
    const tr = htmlEl(doc, 'tr', '', table);
    htmlEl(doc, 'th', '', tr, String(pair[0] ?? ''));
    htmlEl(doc, 'td', '', tr, String(pair[1] ?? ''));
  }
}

// ---- The faithfulness curve (an SVG chart) ----------------------------------------------------------------------

/** A round tick step (1, 2, 2.5 or 5 times a power of ten) of at least `raw`. */
function niceStep(raw: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * p >= raw) {
      return m * p;
    }
  }
  return 10 * p;
}

/**
 * Faithfulness against the number of edges (log axis), points with their 95% intervals, the size shown marked.
 * Points carry `data-size` and `data-faithfulness`.
 */
export function drawCurve(host: HTMLElement, curve: CircuitCurve, shown: number, title: string): void {
  const doc = host.ownerDocument;
  host.replaceChildren();
  // The title and caption are SVG text, so that they stay with the chart in any exported figure (the circuit's, or
  // the curve's own from these buttons).
  const head = htmlEl(doc, 'div', 'attnlab-circuit-title-row', host);
  exportButtons(head, () => host, () => `${title}-faithfulness`);
  const W = 520;
  const H = 266;
  const L = 56;
  const R = 16;
  const T = 48;
  const B = 44;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-circuit-curve', width: W, height: H, viewBox: `0 0 ${W} ${H}` }, host);
  svgText(doc, svg, 'Faithfulness of the top-n-edge circuits', { x: 4, y: 12, 'font-size': 13, 'font-weight': 600,
    class: 'attnlab-curve-title' });
  svgText(doc, svg, title, { x: 4, y: 27, class: 'attnlab-curve-caption' });
  svgText(doc, svg, 'bars: 95% bootstrap intervals over prompts (arrow: beyond the axis)',
    { x: 4, y: 40, class: 'attnlab-curve-caption' });
  const sizes = curve.sizes;
  const vals = curve.faithfulness.map(v => num(v));
  const lows = sizes.map((_, i) => num(curve.ci95?.[i]?.[0]));
  const highs = sizes.map((_, i) => num(curve.ci95?.[i]?.[1]));
  // The axis spans 0..1 and every point; an interval reaching further is clipped at the axis (an arrow head marks
  // it), so that one wide interval of a few prompts cannot flatten the curve.
  const finite = vals.filter((v): v is number => v !== null);
  const lo0 = Math.min(0, ...finite);
  const hi0 = Math.max(1, ...finite);
  const pad = 0.08 * (hi0 - lo0);
  const yLo = lo0 - pad;
  const yHi = hi0 + pad;
  const clip = (v: number) => Math.max(yLo, Math.min(yHi, v));
  const xMax = Math.max(2, ...sizes, shown);
  const lx = (n: number) => L + ((W - L - R) * Math.log(Math.max(1, n))) / Math.log(xMax);
  const ly = (v: number) => T + ((H - T - B) * (yHi - v)) / (yHi - yLo);
  // axes, with ticks that never collide: powers of ten on x, a few round values on y
  svgEl(doc, 'line', { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: '#666' }, svg);
  svgEl(doc, 'line', { x1: L, x2: L, y1: T, y2: H - B, stroke: '#666' }, svg);
  for (let p = 1; p <= xMax; p *= 10) {
    svgEl(doc, 'line', { x1: lx(p), x2: lx(p), y1: H - B, y2: H - B + 4, stroke: '#666' }, svg);
    svgText(doc, svg, count(p), { x: lx(p), y: H - B + 14, 'text-anchor': 'middle', class: 'attnlab-curve-tick' });
  }
  const step = niceStep((yHi - yLo) / 5);
  const p10 = Math.floor(Math.log10(step) + 1e-9);
  const digits = Math.max(0, -p10 + (Math.abs(step / Math.pow(10, p10) - 2.5) < 1e-9 ? 1 : 0));  // 0.25: 2
  for (let k = Math.ceil(yLo / step); k * step <= yHi + 1e-9; k++) {
    const v = k * step;
    const grid = Math.abs(v) < 1e-9 || Math.abs(v - 1) < 1e-9 ? '#bbb' : '#eee';
    svgEl(doc, 'line', { x1: L - 4, x2: W - R, y1: ly(v), y2: ly(v), stroke: grid }, svg);
    svgText(doc, svg, v.toFixed(digits), { x: L - 6, y: ly(v), 'text-anchor': 'end', 'dominant-baseline': 'central',
      class: 'attnlab-curve-tick attnlab-curve-ytick' });
  }
  svgText(doc, svg, 'edges in the circuit (top-n by |score|, log scale)', { x: (L + W - R) / 2, y: H - 8,
    'text-anchor': 'middle', class: 'attnlab-curve-axis-label' });
  svgText(doc, svg, 'faithfulness', { x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle',
    transform: `rotate(-90 14 ${(T + H - B) / 2})`, class: 'attnlab-curve-axis-label' });
  // the line, the intervals, the points
  const pts = sizes.map((s, i) => [s, vals[i]] as [number, number | null]).filter(p => p[1] !== null) as [number, number][];
  if (pts.length > 1) {
    svgEl(doc, 'path', { d: pts.map(([s, v], i) => `${i ? 'L' : 'M'} ${lx(s)} ${ly(v)}`).join(' '), fill: 'none',
      stroke: '#555', 'stroke-width': 1.5 }, svg);
  }
  sizes.forEach((s, i) => {
    const lo = lows[i];
    const hi = highs[i];
    if (lo === null || hi === null) {
      return;
    }
    svgEl(doc, 'line', { x1: lx(s), x2: lx(s), y1: ly(clip(lo)), y2: ly(clip(hi)), stroke: '#888',
      'stroke-width': 1.2, class: 'attnlab-curve-ci' }, svg);
    for (const [v, dir] of [[lo, 1], [hi, -1]] as [number, number][]) {
      if (v !== clip(v)) {
        const y = ly(clip(v));
        svgEl(doc, 'path', { d: `M ${lx(s) - 4} ${y + dir * 6} L ${lx(s)} ${y} L ${lx(s) + 4} ${y + dir * 6}`,
          fill: 'none', stroke: '#888', 'stroke-width': 1.2, class: 'attnlab-curve-ci-clipped' }, svg);
      }
    }
  });
  const marker = svgEl(doc, 'line', { x1: lx(shown), x2: lx(shown), y1: T, y2: H - B, class: 'attnlab-curve-marker',
    stroke: '#1976d2', 'stroke-width': 1.5, 'stroke-dasharray': '4 3' }, svg);
  marker.setAttribute('data-size', String(shown));
  sizes.forEach((s, i) => {
    const v = vals[i];
    if (v === null) {
      return;
    }
    const on = s === shown;
    const c = svgEl(doc, 'circle', { cx: lx(s), cy: ly(v), r: on ? 5 : 3.2, fill: on ? '#1976d2' : '#333',
      class: on ? 'attnlab-curve-point attnlab-curve-point-current' : 'attnlab-curve-point',
      'data-size': s, 'data-faithfulness': v }, svg);
    const t = svgEl(doc, 'title', {}, c);
    t.textContent = `${count(s)} edges: faithfulness ${v.toFixed(3)}`;
  });
}

// ---- State updates ------------------------------------------------------------------------------------------

/** A heading and a list of edges in the info panel, each with a colour swatch and its score. */
function edgeList(view: CircuitView, heading: string, items: CircuitEdge[], text: (e: CircuitEdge) => string,
  cls: string): void {
  const doc = view.panel.ownerDocument;
  htmlEl(doc, 'div', 'attnlab-circuit-info-heading', view.panel, `${heading} (${items.length})`);
  const ul = htmlEl(doc, 'ul', `attnlab-circuit-info-list ${cls}`, view.panel);
  for (const e of items.slice(0, 200)) {
    const li = htmlEl(doc, 'li', 'attnlab-circuit-info-edge', ul);
    const sw = htmlEl(doc, 'span', 'attnlab-circuit-swatch', li);
    sw.style.background = edgeColor(e.score, view.top);
    li.appendChild(doc.createTextNode(`${text(e)}: ${signed(e.score)}`));
  }
  if (items.length > 200) {
    htmlEl(doc, 'li', 'attnlab-circuit-info-more', ul, `… and ${items.length - 200} weaker edges`);
  }
}

/** Fill the info panel: a hint, or the selected node with its shown incoming and outgoing edges. */
function renderInfo(view: CircuitView): void {
  const { panel, state } = view;
  const doc = panel.ownerDocument;
  panel.replaceChildren();
  if (state.selected === null) {
    htmlEl(doc, 'div', 'attnlab-circuit-hint', panel, 'click a node to list its edges');
    return;
  }
  const n = view.byName.get(state.selected);
  if (!n) {
    return;
  }
  htmlEl(doc, 'div', 'attnlab-circuit-info-title', panel, n.name);
  const where = n.kind === 'input' ? 'embeddings' : n.kind === 'logits' ? 'unembedding input' : `layer ${n.layer}`;
  htmlEl(doc, 'div', 'attnlab-circuit-info-kind', panel, `${n.kind} · ${where}`);
  const shown = view.edges.slice(0, state.shown);
  const incoming = shown.filter(e => e.receiver === n.name);
  const outgoing = shown.filter(e => e.sender === n.name);
  edgeList(view, 'incoming', incoming, e => `${e.sender} → ${target(e)}`, 'attnlab-circuit-in');
  edgeList(view, 'outgoing', outgoing, e => `→ ${target(e)}`, 'attnlab-circuit-out');
}

/** Show the top `shown` edges (highlighting the selected node's), and return the names of their endpoints. */
function paintEdges(view: CircuitView): Set<string> {
  const { shown, selected } = view.state;
  const live = new Set<string>();
  view.paths.forEach((p, rank) => {
    if (!p) {
      return;
    }
    const on = rank < shown;
    const e = view.edges[rank];
    if (on) {
      p.removeAttribute('display');
      live.add(e.sender);
      live.add(e.receiver);
    } else {
      p.setAttribute('display', 'none');
    }
    const touches = selected !== null && (e.sender === selected || e.receiver === selected);
    p.classList.toggle('attnlab-circuit-edge-highlight', on && touches);
    p.classList.toggle('attnlab-circuit-edge-faded', on && selected !== null && !touches);
  });
  return live;
}

/** Show the nodes named in `live`, mark the selected one, and return how many heads are shown. */
function paintNodes(view: CircuitView, live: Set<string>): number {
  const { selected } = view.state;
  let heads = 0;
  for (const [name, p] of view.placed) {
    const on = live.has(name);
    if (on) {
      p.el.removeAttribute('display');
      heads += p.node.kind === 'head' ? 1 : 0;
    } else {
      p.el.setAttribute('display', 'none');
    }
    p.el.classList.toggle('attnlab-circuit-node-selected', name === selected);
    p.el.setAttribute('aria-pressed', name === selected ? 'true' : 'false');
  }
  return heads;
}

/** The sizes the slider offers now: the snapping list, or every count from 1 to the edges drawn. */
function sliderSizes(view: CircuitView): number[] | null {
  return view.state.snap && view.state.sizes.length > 0 ? view.state.sizes : null;
}

/** Bring the slider, the graph, the counts, the faithfulness and the curve in line with the state. */
function paint(view: CircuitView): void {
  const { payload, state, controls } = view;
  const nEdges = view.edges.length;
  const sizes = sliderSizes(view);
  if (sizes) {
    controls.slider.min = '0';
    controls.slider.max = String(sizes.length - 1);
    controls.slider.value = String(Math.max(0, nearestSize(sizes, state.shown)));
  } else {
    controls.slider.min = '1';
    controls.slider.max = String(nEdges);
    controls.slider.value = String(state.shown);
  }
  controls.slider.setAttribute('data-edges', String(state.shown));
  const heads = paintNodes(view, paintEdges(view));
  view.root.setAttribute('data-shown', String(state.shown));
  const total = payload.n_edges_total;
  const drawn = total > nEdges ? ` (the top ${count(nEdges)} of the circuit's ${count(total)} edges are drawn)` : '';
  controls.counts.textContent = `${count(state.shown)} of ${count(nEdges)} edges · ${heads} heads${drawn}`;
  const faith = faithfulnessText(state.curve, state.shown);
  controls.faith.textContent = faith
    ? faith.text
    : 'faithfulness: no curve was given to this view (display circuit_mime_bundle(circuit, ' +
      'curve=faithfulness_curve(...)) to read it here)';
  controls.faith.setAttribute('data-size', faith?.size === null || !faith ? '' : String(faith.size));
  controls.faith.setAttribute('data-value', faith?.value === null || !faith ? '' : String(faith.value));
  controls.snapLabel.style.display = state.sizes.length > 0 ? '' : 'none';
  controls.snap.checked = state.snap;
  if (state.curve && state.curve.sizes.length > 0) {
    view.curveBox.style.display = '';
    drawCurve(view.curveBox, state.curve, state.shown, String(payload.title ?? ''));
  } else {
    view.curveBox.style.display = 'none';
    view.curveBox.replaceChildren();
  }
}

/** Select `name` (null clears the selection); with `notify`, dispatch the node-click event on the host. */
function select(view: CircuitView, name: string | null, notify: boolean): void {
  view.state.selected = name;
  paint(view);
  renderInfo(view);
  if (notify && name !== null) {
    const n = view.byName.get(name);
    if (n) {
      const detail: CircuitNodeClickDetail = { node: n.name, layer: n.layer, head: n.kind === 'head' ? n.head : null };
      view.host.dispatchEvent(new CustomEvent(NODE_CLICK_EVENT, { detail, bubbles: true, composed: true }));
    }
  }
}

// ---- Interaction --------------------------------------------------------------------------------------------

function nodeOf(t: EventTarget | null): Element | null {
  const el = t as Element | null;
  return el && typeof el.closest === 'function' ? el.closest('.attnlab-circuit-node') : null;
}

function clampShown(view: CircuitView, n: number): number {
  return Math.max(1, Math.min(view.edges.length, Math.round(n) || view.edges.length));
}

/** The slider re-filters the edges; a click, or Enter/Space, on a node selects it; Escape clears the selection. */
function bindEvents(view: CircuitView): void {
  const { slider, snap } = view.controls;
  slider.addEventListener('input', () => {
    const sizes = sliderSizes(view);
    const v = Number(slider.value);
    view.state.shown = clampShown(view, sizes ? sizes[Math.max(0, Math.min(sizes.length - 1, Math.round(v)))] : v);
    paint(view);
    renderInfo(view);
    view.options.onShown?.(view.state.shown);
  });
  snap.addEventListener('change', () => {
    view.state.snap = snap.checked;
    view.snapChosen = !snap.checked;
    const sizes = sliderSizes(view);
    if (sizes && !sizes.includes(view.state.shown)) {
      view.state.shown = sizes[nearestSize(sizes, view.state.shown)];
      view.options.onShown?.(view.state.shown);
    }
    paint(view);
    renderInfo(view);
  });
  view.svg.addEventListener('click', ev => {
    const g = nodeOf(ev.target);
    if (g) {
      select(view, g.getAttribute('data-node'), true);
    }
  });
  view.svg.addEventListener('keydown', ev => {
    const g = nodeOf(ev.target);
    if (g && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      select(view, g.getAttribute('data-node'), true);
    } else if (ev.key === 'Escape' && view.state.selected !== null) {
      select(view, null, false);
    }
  });
}

/** The width the graph may take: the view's width, less the info panel when both fit side by side. */
function graphWidth(root: HTMLElement): number {
  const w = root.clientWidth || root.getBoundingClientRect().width || 0;
  if (w <= 0) {
    return DEFAULT_WIDTH;
  }
  const inner = w - 18;
  return inner >= 820 ? inner - INFO_W - 18 : Math.max(360, inner);
}

/** Lay the graph out again when the view's width changes (the notebook resized, the view attached). */
function watchWidth(view: CircuitView): void {
  const Observer = (view.root.ownerDocument.defaultView as any)?.ResizeObserver;
  if (!Observer) {
    return;
  }
  let pending = false;
  const observer = new Observer(() => {
    if (pending) {
      return;
    }
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      if (!view.root.isConnected) {
        observer.disconnect();
        return;
      }
      const w = graphWidth(view.root);
      if (Math.abs(w - view.layoutWidth) > 24) {
        view.layoutWidth = w;
        drawGraph(view);
        paint(view);
      }
    });
  });
  observer.observe(view.root);
}

/** The slider's stops for a curve: its sizes within [1, nEdges], and the whole circuit (`nEdges`), whose
 * faithfulness then reads "not computed" unless the curve has it. None without a curve. */
function curveSizes(curve: CircuitCurve | null, nEdges: number): number[] {
  const s = (curve?.sizes ?? []).filter(n => n >= 1 && n <= nEdges);
  return s.length ? sortedUnique([...s, nEdges]) : [];
}

/**
 * Draw `payload` into `host`, replacing whatever `host` held, and return a handle to drive it. See the module
 * comment for the DOM it produces.
 */
export function renderCircuit(host: HTMLElement, payload: CircuitPayload, options: CircuitOptions = {}): CircuitHandle {
  const doc = host.ownerDocument;
  host.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-circuit', host);
  const inert: CircuitHandle = { root, setShown: () => undefined, setCurve: () => undefined, shown: () => 0 };
  if (!payload || !Array.isArray(payload.nodes) || !Array.isArray(payload.edges)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed circuit payload.');
    return inert;
  }
  drawHeader(doc, root, payload);
  const edges = payload.edges.filter(e => num(e.score) !== null);
  if (edges.length === 0) {
    htmlEl(doc, 'div', 'attnlab-empty', root, 'this circuit has no edges.');
    return inert;
  }
  const top = edges.reduce((m, e) => Math.max(m, Math.abs(e.score)), 0);
  const controls = drawControls(doc, root);
  const legendBox = htmlEl(doc, 'div', 'attnlab-circuit-legend-box', root);
  const body = htmlEl(doc, 'div', 'attnlab-circuit-body', root);
  const scroll = htmlEl(doc, 'div', 'attnlab-circuit-scroll', body);
  const panel = htmlEl(doc, 'div', 'attnlab-circuit-info', body);
  panel.setAttribute('data-export', 'skip');
  const curveBox = htmlEl(doc, 'div', 'attnlab-circuit-curve-box', root);

  const byName = new Map<string, CircuitNode>();
  for (const n of payload.nodes) {
    byName.set(n.name, n);
  }
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-circuit-graph',
    role: 'group',
    'aria-label': 'circuit graph: input at the top, logits at the bottom',
    // Enter and Space select a focused node rather than run notebook commands.
    'data-lm-suppress-shortcuts': 'true'
  }, scroll);
  const curve = payload.curve ?? null;
  const sizes = options.sizes ? sortedUnique(options.sizes.filter(n => n >= 1 && n <= edges.length))
    : curveSizes(curve, edges.length);
  const state: CircuitState = {
    shown: clampShown({ edges } as CircuitView, options.shown ?? edges.length), selected: null, curve, sizes,
    snap: sizes.length > 0 && (options.sizes !== undefined || curve !== null)
  };
  if (state.snap && !sizes.includes(state.shown)) {
    state.shown = sizes[nearestSize(sizes, state.shown)];
  }
  controls.snap.checked = state.snap;
  const view: CircuitView = {
    host, root, payload, edges, top, byName, placed: new Map(), paths: [], svg, scroll,
    layoutWidth: graphWidth(root), controls, panel, curveBox, state, options, snapChosen: false
  };
  drawLegend(doc, legendBox, payload, top, Math.min(view.layoutWidth, 760));
  drawGraph(view);
  bindEvents(view);
  drawProvenance(doc, root, payload.provenance);
  paint(view);
  renderInfo(view);
  watchWidth(view);
  return {
    root,
    setShown(n: number): void {
      view.state.shown = clampShown(view, n);
      paint(view);
      renderInfo(view);
    },
    setCurve(c: CircuitCurve | null, s?: number[]): void {
      view.state.curve = c;
      view.state.sizes = s ? sortedUnique(s.filter(n => n >= 1 && n <= edges.length)) : curveSizes(c, edges.length);
      // Snap to the sizes computed unless the user chose every count.
      view.state.snap = view.state.sizes.length > 0 && !view.snapChosen;
      paint(view);
    },
    shown: () => view.state.shown
  };
}
