/**
 * A pure, dependency-free DOM renderer for attnlab circuit payloads (`application/vnd.attnlab.circuit.v1+json`).
 *
 * Layout: a header (title, subtitle), a control bar, a legend, the graph and an info panel.
 *
 * - The graph (`svg.attnlab-circuit-graph`) is layered top to bottom: `input` as a bar across the top, one row per
 *   layer that holds a node of the payload (layers without one are skipped, so a 30-layer model with a sparse
 *   circuit stays compact; the row label gives the layer), `logits` as a bar across the bottom. Within a row, query
 *   heads sit in fixed columns by head index (a head keeps its column in every layer), then key/value heads of a
 *   grouped-query model, then the MLP. Nodes are `g.attnlab-circuit-node[data-node][data-layer][data-kind]`.
 * - Edges are `path.attnlab-circuit-edge[data-rank][data-input][data-score]`, cubic curves from the sender's bottom
 *   to the receiver's top, width proportional to |score|, red for positive and blue for negative scores (the
 *   heatmap's palette). A head's inputs are told apart by where the edge lands (query left, key centre, value right)
 *   and by dash pattern (query solid, key dashed, value dotted); an MLP's input from a head of its own layer arcs
 *   under the row. Each edge's `<title>` reads `sender → receiver.input: score`.
 * - The slider (`input.attnlab-circuit-slider`, type range) chooses how many edges are shown, in score order (the
 *   top-n edges by |score|, as `circuit_from_scores(n_edges=n)` would keep): a count, not a |score| threshold,
 *   because faithfulness curves are computed at edge counts. It re-filters the edges live (hidden edges and nodes
 *   left without an edge get `display="none"`; positions stay put), updates the counts
 *   (`.attnlab-circuit-counts`) and, when the payload has a curve, shows the faithfulness at the computed size
 *   nearest to the count with its 95% interval (`.attnlab-circuit-faith`).
 * - Clicking a node (or Enter/Space on a focused node) selects it, highlights its shown edges, fills the info panel
 *   (`.attnlab-circuit-info`: name, kind and layer, incoming and outgoing edges with scores) and dispatches a
 *   bubbling `CustomEvent('attnlab-node-click', {detail: {node, layer, head}})` on the host. Escape clears it.
 *
 * Nothing touches the network, and every payload string reaches the page through `textContent` / SVG text nodes,
 * never as HTML.
 */

import type { CircuitEdge, CircuitNode, CircuitNodeClickDetail, CircuitPayload } from './contract';
import { Attrs, htmlEl, svgEl } from './dom';
import { divergingColor } from './heatmap';

/** Name of the bubbling CustomEvent dispatched on the host element when a node is selected. */
export const NODE_CLICK_EVENT = 'attnlab-node-click';

const FONT = 'var(--jp-ui-font-family, system-ui, sans-serif)';

// Geometry (px).
const NODE_W = 38;
const NODE_H = 20;
const COL_W = 46;
const ROW_H = 44;
const BLOCK_GAP = 18;
const LEFT = 46;
const RIGHT = 16;
const TOP = 8;
const BAR_H = 18;
const MAX_WIDTH = 6;
const MIN_WIDTH = 0.8;

/** Where an edge lands on its receiver (offset from the node's centre) and its dash pattern. */
const INPUTS: Record<string, { dx: number; dash: string; label: string }> = {
  q: { dx: -12, dash: '', label: 'query' },
  k: { dx: 0, dash: '5 3', label: 'key' },
  v: { dx: 12, dash: '1.5 2.5', label: 'value' },
  mlp: { dx: 0, dash: '', label: 'MLP input' },
  logits: { dx: 0, dash: '', label: 'logits' }
};

/** Where a node sits: its centre and width (px, in the graph's coordinates). */
interface NodePos {
  node: CircuitNode;
  x: number;
  y: number;
  w: number;
}

/** A node as drawn. */
interface Placed extends NodePos {
  el: SVGGElement;
}

/** Columns and rows of the graph, computed from the nodes alone. */
export interface CircuitLayout {
  /** Query-head indices with a column, in order. */
  headCols: number[];
  /** Key/value-head indices with a column, in order. */
  kvCols: number[];
  /** Left edge of the key/value block and of the MLP column. */
  kvX0: number;
  mlpX0: number;
  /** Right end of the rows and bars. */
  innerRight: number;
  width: number;
  height: number;
  /** Layers that hold a node, in order, and the y of each one's row. */
  layers: number[];
  rowY: Map<number, number>;
  /** Top of the logits bar. */
  logitsY: number;
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
  controls: CircuitControls;
  panel: HTMLElement;
  state: CircuitState;
}

/** The control bar's live elements. */
interface CircuitControls {
  slider: HTMLInputElement;
  counts: HTMLElement;
  faith: HTMLElement;
}

/** What the user changes: how many edges are shown and which node is selected. */
interface CircuitState {
  shown: number;
  selected: string | null;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function signed(v: number, digits = 4): string {
  return `${v >= 0 ? '+' : ''}${v.toFixed(digits)}`;
}

/** `receiver.input` for a head input, the receiver alone for an MLP or the logits. */
function target(edge: CircuitEdge): string {
  return edge.input === 'q' || edge.input === 'k' || edge.input === 'v' ? `${edge.receiver}.${edge.input}` : edge.receiver;
}

/** The tooltip of an edge: `sender → receiver.input: score`. */
export function edgeTooltip(edge: CircuitEdge): string {
  return `${edge.sender} → ${target(edge)}: ${signed(edge.score)}`;
}

/** Stroke colour: the heatmap's diverging scale, never paler than 40% so that weak edges stay visible. */
function edgeColor(score: number, top: number): string {
  const t = top > 0 ? Math.min(1, Math.abs(score) / top) : 0;
  return divergingColor((score >= 0 ? 1 : -1) * (0.4 + 0.6 * t), 1);
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

/** One legend entry: a short sample line and its text (flowed as HTML, so entries never overlap). */
function legendItem(doc: Document, parent: Element, text: string, line: Attrs): void {
  const item = htmlEl(doc, 'span', 'attnlab-circuit-legend-item', parent);
  const svg = svgEl(doc, 'svg', { width: 26, height: 10, viewBox: '0 0 26 10', 'aria-hidden': 'true' }, item);
  svgEl(doc, 'line', { x1: 1, x2: 25, y1: 5, y2: 5, 'stroke-linecap': 'round', ...line }, svg);
  item.appendChild(doc.createTextNode(text));
}

function drawLegend(doc: Document, parent: Element, hasKV: boolean): void {
  const legend = htmlEl(doc, 'div', 'attnlab-circuit-legend', parent);
  for (const key of ['q', 'k', 'v']) {
    const spec = INPUTS[key];
    const where = key === 'q' ? 'left' : key === 'k' ? 'centre' : 'right';
    const text = `${spec.label} input (lands ${where})${hasKV && key !== 'q' ? ', shared KV head' : ''}`;
    legendItem(doc, legend, text, { stroke: '#444', 'stroke-width': 2, 'stroke-dasharray': spec.dash });
  }
  legendItem(doc, legend, 'positive score', { stroke: divergingColor(1, 1), 'stroke-width': 4 });
  legendItem(doc, legend, 'negative score', { stroke: divergingColor(-1, 1), 'stroke-width': 4 });
  htmlEl(doc, 'span', 'attnlab-circuit-legend-item', legend, 'width ∝ |score|');
}


// ---- Layout (pure) ------------------------------------------------------------------------------------------

function sortedUnique(xs: number[]): number[] {
  return Array.from(new Set(xs)).sort((a, b) => a - b);
}

/** Columns (query heads by index, then key/value heads, then the MLP) and one row per layer that holds a node. */
export function circuitLayout(nodes: CircuitNode[]): CircuitLayout {
  const headCols = sortedUnique(nodes.filter(n => n.kind === 'head').map(n => n.head ?? 0));
  const kvCols = sortedUnique(nodes.filter(n => n.kind === 'kv').map(n => n.group ?? 0));
  const hasMlp = nodes.some(n => n.kind === 'mlp');
  const kvX0 = LEFT + headCols.length * COL_W + (kvCols.length && headCols.length ? BLOCK_GAP : 0);
  const mlpX0 = kvX0 + kvCols.length * COL_W + (hasMlp && headCols.length + kvCols.length ? BLOCK_GAP : 0);
  const innerRight = Math.max(mlpX0 + (hasMlp ? COL_W : 0), LEFT + 160);
  const width = innerRight + RIGHT;
  const layers = sortedUnique(nodes.filter(n => n.kind !== 'input' && n.kind !== 'logits').map(n => n.layer));
  const rowY = new Map<number, number>();
  let y = TOP + BAR_H + ROW_H * 0.75;
  for (const l of layers) {
    rowY.set(l, y);
    y += ROW_H;
  }
  const logitsY = y - ROW_H + ROW_H * 0.75 + (layers.length ? 0 : ROW_H * 0.25);
  const height = logitsY + BAR_H + TOP;
  return { headCols, kvCols, kvX0, mlpX0, innerRight, width, height, layers, rowY, logitsY };
}

function isBar(n: CircuitNode): boolean {
  return n.kind === 'input' || n.kind === 'logits';
}

/** Row of a node: 0 for input, 1.. for the layers drawn, then logits. */
function rowOf(n: CircuitNode, layout: CircuitLayout): number {
  return n.kind === 'input' ? 0 : n.kind === 'logits' ? layout.layers.length + 1 : layout.layers.indexOf(n.layer) + 1;
}

/** Centre and width of a node; input and logits are bars across the whole graph. */
function nodePosition(n: CircuitNode, layout: CircuitLayout): NodePos {
  const { headCols, kvCols, kvX0, mlpX0, innerRight, rowY, logitsY } = layout;
  if (isBar(n)) {
    const y = n.kind === 'input' ? TOP + BAR_H / 2 : logitsY + BAR_H / 2;
    return { node: n, x: (LEFT + innerRight) / 2, y, w: innerRight - LEFT };
  }
  let x: number;
  if (n.kind === 'head') {
    x = LEFT + headCols.indexOf(n.head ?? 0) * COL_W + COL_W / 2;
  } else if (n.kind === 'kv') {
    x = kvX0 + kvCols.indexOf(n.group ?? 0) * COL_W + COL_W / 2;
  } else {
    x = mlpX0 + COL_W / 2;
  }
  return { node: n, x, y: rowY.get(n.layer) as number, w: NODE_W };
}

/** `x` kept inside a bar's ends (6px in). */
function clampX(p: NodePos, x: number): number {
  return Math.max(p.x - p.w / 2 + 6, Math.min(p.x + p.w / 2 - 6, x));
}

/** The `d` of an edge from the bottom of `s` to the top of `r` (to the bottom of `r` when both share a row). */
export function edgePath(s: NodePos, r: NodePos, input: string, layout: CircuitLayout): string {
  const spec = INPUTS[input] ?? INPUTS.mlp;
  const sh = s.node.kind === 'input' ? BAR_H : NODE_H;
  const rh = r.node.kind === 'logits' ? BAR_H : NODE_H;
  const y1 = s.y + sh / 2;
  const y2 = r.y - rh / 2;
  const span = rowOf(r.node, layout) - rowOf(s.node, layout);
  // A bar (input, logits) sends from / receives at the other end's column, so those edges run straight down.
  let x1 = s.node.kind === 'input' ? clampX(s, r.x + spec.dx) : s.x;
  let x2 = r.node.kind === 'logits' ? clampX(r, x1) : r.x + spec.dx;
  if (span === 0) {
    // Same row (a head into its own layer's MLP): arc under the row, into the MLP's bottom.
    const dip = 13;
    return `M ${x1} ${y1} C ${x1} ${y1 + dip} ${x2} ${y1 + dip} ${x2} ${y1}`;
  }
  if (span >= 2 && Math.abs(x2 - x1) < COL_W / 2) {
    // A near-vertical edge over skipped rows would run behind the nodes of its column and read as a chain
    // through them: route it down the gutter right of the column instead.
    const xg = (s.node.kind === 'input' ? r.x : s.x) + COL_W / 2;
    if (s.node.kind === 'input') {
      x1 = clampX(s, xg);
    }
    if (r.node.kind === 'logits') {
      x2 = clampX(r, xg);
    }
    const a = s.node.kind === 'input' ? y1 : y1 + 16;
    const b = r.node.kind === 'logits' ? y2 : y2 - 16;
    return (
      `M ${x1} ${y1} C ${x1} ${y1 + 10} ${xg} ${a - 8} ${xg} ${a} L ${xg} ${b} ` +
      `C ${xg} ${b + 8} ${x2} ${y2 - 10} ${x2} ${y2}`
    );
  }
  const c = Math.max(10, (y2 - y1) * 0.45);
  return `M ${x1} ${y1} C ${x1} ${y1 + c} ${x2} ${y2 - c} ${x2} ${y2}`;
}

/** Stroke width: proportional to |score|, from MIN_WIDTH to MAX_WIDTH. */
function edgeWidth(score: number, top: number): number {
  return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * (top > 0 ? Math.abs(score) / top : 0);
}

/** The faithfulness line for `shown` edges and the computed size it reports, or null without a curve. */
export function faithfulnessText(
  curve: CircuitPayload['curve'],
  shown: number
): { text: string; size: number } | null {
  if (!curve || !Array.isArray(curve.sizes) || curve.sizes.length === 0) {
    return null;
  }
  const i = nearestSize(curve.sizes, shown);
  const f = num(curve.faithfulness[i]);
  const ci = curve.ci95?.[i];
  const lo = num(ci?.[0]);
  const hi = num(ci?.[1]);
  const ciText = lo !== null && hi !== null ? ` (95% CI ${lo.toFixed(3)} to ${hi.toFixed(3)})` : '';
  const at = curve.sizes[i] === shown ? '' : `, nearest computed size ${curve.sizes[i]} edges`;
  return { text: `faithfulness ${f === null ? 'n/a' : f.toFixed(3)}${ciText}${at}`, size: curve.sizes[i] };
}

// ---- DOM builders -------------------------------------------------------------------------------------------

function drawHeader(doc: Document, root: Element, payload: CircuitPayload): void {
  const header = htmlEl(doc, 'div', 'attnlab-circuit-header', root);
  htmlEl(doc, 'div', 'attnlab-title', header, String(payload.title ?? ''));
  htmlEl(doc, 'div', 'attnlab-subtitle', header, String(payload.subtitle ?? ''));
}

/** The control bar: the edge-count slider (all `nEdges` shown at first), the counts and the faithfulness. */
function drawControls(doc: Document, root: Element, nEdges: number): CircuitControls {
  const controls = htmlEl(doc, 'div', 'attnlab-circuit-controls', root);
  const sliderLabel = htmlEl(doc, 'label', 'attnlab-circuit-slider-label', controls, 'edges shown ');
  const slider = doc.createElement('input');
  slider.type = 'range';
  slider.className = 'attnlab-circuit-slider';
  slider.min = '1';
  slider.max = String(nEdges);
  slider.step = '1';
  slider.value = String(nEdges);
  slider.setAttribute('aria-label', 'number of edges shown, in order of |score|');
  // Arrow keys move the slider, not JupyterLab's notebook cursor (Lumino skips shortcuts under this attribute).
  slider.setAttribute('data-lm-suppress-shortcuts', 'true');
  sliderLabel.appendChild(slider);
  const counts = htmlEl(doc, 'span', 'attnlab-circuit-counts', controls);
  const faith = htmlEl(doc, 'span', 'attnlab-circuit-faith', controls);
  return { slider, counts, faith };
}

function drawGraphSvg(doc: Document, parent: Element, layout: CircuitLayout): SVGSVGElement {
  const { width, height } = layout;
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-circuit-graph',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'group',
    'aria-label': 'circuit graph: input at the top, logits at the bottom',
    // Enter and Space select a focused node rather than run notebook commands.
    'data-lm-suppress-shortcuts': 'true'
  });
  parent.appendChild(svg);
  return svg;
}

/** One labelled line per layer drawn, with a `⋮` where layers were skipped. */
function drawRows(doc: Document, parent: Element, layout: CircuitLayout): void {
  let prev: number | null = null;
  for (const l of layout.layers) {
    const ry = layout.rowY.get(l) as number;
    svgText(doc, parent, `L${l}`, {
      x: LEFT - 10,
      y: ry,
      'text-anchor': 'end',
      'dominant-baseline': 'central',
      class: 'attnlab-circuit-layer-label'
    });
    const line = { x1: LEFT - 6, x2: layout.innerRight, y1: ry, y2: ry, class: 'attnlab-circuit-row-line' };
    svgEl(doc, 'line', line, parent);
    if (prev !== null && l > prev + 1) {
      svgText(doc, parent, '⋮', {
        x: LEFT - 20,
        y: ry - ROW_H / 2,
        'text-anchor': 'middle',
        'dominant-baseline': 'central',
        class: 'attnlab-circuit-skip'
      });
    }
    prev = l;
  }
}

/** A node: a focusable `g` with its box, label and title. */
function drawNode(doc: Document, parent: Element, pos: NodePos): Placed {
  const { node: n, x, y, w } = pos;
  const h = isBar(n) ? BAR_H : NODE_H;
  const g = svgEl(
    doc,
    'g',
    {
      class: `attnlab-circuit-node attnlab-circuit-node-${n.kind}`,
      'data-node': n.name,
      'data-layer': n.layer,
      'data-kind': n.kind,
      tabindex: 0,
      role: 'button',
      'aria-label': n.name,
      transform: `translate(${x}, ${y})`
    },
    parent
  );
  svgEl(doc, 'rect', { x: -w / 2, y: -h / 2, width: w, height: h, rx: n.kind === 'mlp' ? 2 : 5 }, g);
  svgText(doc, g, String(n.label ?? n.name), {
    'text-anchor': 'middle',
    'dominant-baseline': 'central',
    'font-size': isBar(n) ? 11 : 10,
    class: 'attnlab-circuit-node-label'
  });
  const title = svgEl(doc, 'title', {}, g);
  title.textContent = n.kind === 'head' || n.kind === 'kv' || n.kind === 'mlp' ? `${n.name} (${n.kind})` : n.name;
  return { ...pos, el: g };
}

/** One edge path, with its width, colour, dash pattern, data attributes and title. */
function drawEdge(
  doc: Document,
  parent: Element,
  e: CircuitEdge,
  rank: number,
  d: string,
  top: number
): SVGPathElement {
  const spec = INPUTS[e.input] ?? INPUTS.mlp;
  const path = svgEl(
    doc,
    'path',
    {
      class: 'attnlab-circuit-edge',
      d,
      fill: 'none',
      stroke: edgeColor(e.score, top),
      'stroke-width': edgeWidth(e.score, top).toFixed(2),
      'data-rank': rank,
      'data-input': e.input,
      'data-sender': e.sender,
      'data-receiver': e.receiver,
      'data-score': e.score
    },
    parent
  );
  if (spec.dash) {
    path.setAttribute('stroke-dasharray', spec.dash);
  }
  const title = svgEl(doc, 'title', {}, path);
  title.textContent = edgeTooltip(e);
  return path;
}

/** All edges, weakest first so that strong edges are drawn on top; returns the paths by rank. */
function drawEdges(
  doc: Document,
  parent: Element,
  edges: CircuitEdge[],
  placed: Map<string, Placed>,
  layout: CircuitLayout,
  top: number
): SVGPathElement[] {
  const paths: SVGPathElement[] = new Array(edges.length);
  for (let rank = edges.length - 1; rank >= 0; rank--) {
    const e = edges[rank];
    const s = placed.get(e.sender);
    const r = placed.get(e.receiver);
    if (!s || !r) {
      continue;
    }
    paths[rank] = drawEdge(doc, parent, e, rank, edgePath(s, r, e.input, layout), top);
  }
  return paths;
}

/** The graph: row lines and labels, then edges, then nodes (so nodes sit on top). */
function drawGraph(
  doc: Document,
  svg: SVGSVGElement,
  payload: CircuitPayload,
  edges: CircuitEdge[],
  layout: CircuitLayout,
  top: number
): { placed: Map<string, Placed>; paths: SVGPathElement[] } {
  const rowLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-rows' }, svg);
  const edgeLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-edges' }, svg);
  const nodeLayer = svgEl(doc, 'g', { class: 'attnlab-circuit-nodes' }, svg);
  drawRows(doc, rowLayer, layout);
  const placed = new Map<string, Placed>();
  for (const n of payload.nodes) {
    placed.set(n.name, drawNode(doc, nodeLayer, nodePosition(n, layout)));
  }
  const paths = drawEdges(doc, edgeLayer, edges, placed, layout, top);
  return { placed, paths };
}

function drawProvenance(doc: Document, root: Element, provenance: string[][]): void {
  if (!Array.isArray(provenance) || provenance.length === 0) {
    return;
  }
  const details = htmlEl(doc, 'details', 'attnlab-circuit-provenance', root);
  htmlEl(doc, 'summary', '', details, 'provenance');
  const table = htmlEl(doc, 'table', '', details);
  for (const pair of provenance) {
    const tr = htmlEl(doc, 'tr', '', table);
    htmlEl(doc, 'th', '', tr, String(pair[0] ?? ''));
    htmlEl(doc, 'td', '', tr, String(pair[1] ?? ''));
  }
}

// ---- State updates ------------------------------------------------------------------------------------------

/** A heading and a list of edges in the info panel, each with a colour swatch and its score. */
function edgeList(
  view: CircuitView,
  heading: string,
  items: CircuitEdge[],
  text: (e: CircuitEdge) => string,
  cls: string
): void {
  const doc = view.panel.ownerDocument;
  htmlEl(doc, 'div', 'attnlab-circuit-info-heading', view.panel, `${heading} (${items.length})`);
  const ul = htmlEl(doc, 'ul', `attnlab-circuit-info-list ${cls}`, view.panel);
  for (const e of items) {
    const li = htmlEl(doc, 'li', 'attnlab-circuit-info-edge', ul);
    const sw = htmlEl(doc, 'span', 'attnlab-circuit-swatch', li);
    sw.style.background = edgeColor(e.score, view.top);
    li.appendChild(doc.createTextNode(`${text(e)}: ${signed(e.score)}`));
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

/** Bring the graph, the counts and the faithfulness in line with the state. */
function paint(view: CircuitView): void {
  const { payload, state, controls } = view;
  const heads = paintNodes(view, paintEdges(view));
  const nEdges = view.edges.length;
  view.root.setAttribute('data-shown', String(state.shown));
  const more = payload.n_edges_total > nEdges ? ` (top ${nEdges} of ${payload.n_edges_total} drawn)` : '';
  controls.counts.textContent = `${state.shown} of ${nEdges} edges · ${heads} heads${more}`;
  const faith = faithfulnessText(payload.curve, state.shown);
  if (faith) {
    controls.faith.textContent = faith.text;
    controls.faith.setAttribute('data-size', String(faith.size));
  } else {
    controls.faith.textContent = 'no faithfulness curve';
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

/** The slider re-filters the edges; a click, or Enter/Space, on a node selects it; Escape clears the selection. */
function bindEvents(view: CircuitView, svg: SVGSVGElement): void {
  const { slider } = view.controls;
  const nEdges = view.edges.length;
  slider.addEventListener('input', () => {
    view.state.shown = Math.max(1, Math.min(nEdges, Math.round(Number(slider.value)) || nEdges));
    paint(view);
    renderInfo(view);
  });
  svg.addEventListener('click', ev => {
    const g = nodeOf(ev.target);
    if (g) {
      select(view, g.getAttribute('data-node'), true);
    }
  });
  svg.addEventListener('keydown', ev => {
    const g = nodeOf(ev.target);
    if (g && (ev.key === 'Enter' || ev.key === ' ')) {
      ev.preventDefault();
      select(view, g.getAttribute('data-node'), true);
    } else if (ev.key === 'Escape' && view.state.selected !== null) {
      select(view, null, false);
    }
  });
}

/**
 * Draw `payload` into `host`, replacing whatever `host` held. See the module comment for the DOM it produces.
 */
export function renderCircuit(host: HTMLElement, payload: CircuitPayload): void {
  const doc = host.ownerDocument;
  host.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-circuit', host);
  if (!payload || !Array.isArray(payload.nodes) || !Array.isArray(payload.edges)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed circuit payload.');
    return;
  }
  drawHeader(doc, root, payload);
  const edges = payload.edges.filter(e => num(e.score) !== null);
  if (edges.length === 0) {
    htmlEl(doc, 'div', 'attnlab-empty', root, 'this circuit has no edges.');
    return;
  }
  const top = edges.reduce((m, e) => Math.max(m, Math.abs(e.score)), 0);
  const controls = drawControls(doc, root, edges.length);
  drawLegend(doc, root, payload.nodes.some(n => n.kind === 'kv'));
  const body = htmlEl(doc, 'div', 'attnlab-circuit-body', root);
  const scroll = htmlEl(doc, 'div', 'attnlab-circuit-scroll', body);
  const panel = htmlEl(doc, 'div', 'attnlab-circuit-info', body);

  const byName = new Map<string, CircuitNode>();
  for (const n of payload.nodes) {
    byName.set(n.name, n);
  }
  const layout = circuitLayout(payload.nodes);
  const svg = drawGraphSvg(doc, scroll, layout);
  const { placed, paths } = drawGraph(doc, svg, payload, edges, layout, top);
  const state: CircuitState = { shown: edges.length, selected: null };
  const view: CircuitView = { host, root, payload, edges, top, byName, placed, paths, controls, panel, state };
  bindEvents(view, svg);
  drawProvenance(doc, root, payload.provenance);
  paint(view);
  renderInfo(view);
}
