/**
 * A pure, dependency-free DOM renderer for recall-versus-reasoning dissociation payloads
 * (`application/vnd.attnlab.dissociation.v1+json`, built by `DissociationResult.payload()` in the kernel).
 *
 * Layout (`div.attnlab-dissociation`):
 * - a header: title and one line of provenance (items per task, clean baselines, interval level, resamples,
 *   multiple-comparison correction);
 * - the double-dissociation statement (`div.attnlab-dis-statement`) and the significant components of each side;
 * - a scatter (`svg.attnlab-dis-scatter`) of recall drop (x) against reasoning drop (y), one point per component
 *   (`.attnlab-dis-point[data-name][data-index]`), with its bootstrap interval as error bars both ways, the diagonal
 *   y = x, both zero lines, points coloured by layer (a colour bar on the right) and shaped by kind (circle: head,
 *   square: attention block, diamond: MLP, triangle: group). A black ring marks a component whose selectivity
 *   interval excludes zero after the correction. Both axes share one scale, so the diagonal is at 45 degrees;
 * - the drops as matrices side by side (`svg.attnlab-dis-matrices`, cells `rect.attnlab-dis-cell[data-name]
 *   [data-side]`): layer x head for granularity `"heads"`, a layer strip (ATTN, MLP columns) for `"attn"`, `"mlp"`
 *   and `"blocks"`, one row per component otherwise; one symmetric colour range fixed by the largest |drop| of both
 *   tasks, white 0, red = metric lost, blue = metric gained;
 * - the control rows as a table (`table.attnlab-dis-controls`).
 *
 * Hovering (or focusing) a point or a cell shows a tooltip (`div.attnlab-tooltip`, see {@link formatComponentTooltip}).
 * Clicking selects the component (ring on the point, outline on both cells) and dispatches a bubbling
 * `CustomEvent('attnlab-component-click', {detail: {index, name, layer, head}})` on the host. Every payload string
 * (names, statement, control components) reaches the page through `textContent` / SVG text nodes, never as HTML, and
 * nothing touches the network.
 */

import type {
  DissociationClickDetail,
  DissociationComponent,
  DissociationControl,
  DissociationPayload,
  Interval
} from './contract';
import { Attrs, htmlEl, svgEl } from './dom';
import { divergingColor, tooltipPosition } from './heatmap';

/** Name of the bubbling CustomEvent dispatched on the host element when a component is clicked. */
export const COMPONENT_CLICK_EVENT = 'attnlab-component-click';

/** What {@link renderDissociation} returns: select a component from code (no click event is dispatched). */
export interface DissociationHandle {
  select(name: string | null): void;
}

const NO_HANDLE: DissociationHandle = { select: () => undefined };

// Font sizes (px) and a generous estimate of a character's advance (em), for layout only.
const FONT = 12;
const SMALL = 11;
const EM = 0.62;

let instances = 0;
/** The resize observer of the view drawn in each host, disconnected when the host is drawn again. */
const observers = new WeakMap<HTMLElement, ResizeObserver>();

// ---- Numbers and text (pure) --------------------------------------------------------------------------------

/** A finite number, or null. */
function num(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
}

/** `x.toFixed(digits)` ("0.000", not "-0.000", for a tiny negative number), or an en dash for a missing number. */
export function fmt(x: unknown, digits = 3): string {
  const v = num(x);
  if (v === null) {
    return '–';
  }
  const s = v.toFixed(digits);
  return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
}

/** `"0.120 [0.050, 0.200]"`: an estimate with its interval. */
export function fmtInterval(iv: Interval | null | undefined, digits = 3): string {
  const [v, lo, hi] = iv ?? [null, null, null];
  return num(v) === null ? 'not computed' : `${fmt(v, digits)} [${fmt(lo, digits)}, ${fmt(hi, digits)}]`;
}

/** A p-value: 3 significant digits, `< 0.001` below that. */
function fmtP(p: unknown): string {
  const v = num(p);
  if (v === null) {
    return '–';
  }
  return v < 0.001 ? '< 0.001' : String(Number(v.toPrecision(3)));
}

export function correctionName(c: string): string {
  return c === 'bh' ? 'Benjamini-Hochberg' : c === 'holm' ? 'Holm' : c;
}

/**
 * The exact tooltip text of component `index`, lines joined with "\n":
 *
 *     L3H2 · layer 3, head 2
 *     recall drop 0.120 [0.050, 0.200]
 *     reasoning drop 0.010 [-0.030, 0.040]
 *     selectivity 0.110 [0.030, 0.190] · adjusted p 0.01 · significant
 */
export function formatComponentTooltip(payload: DissociationPayload, index: number): string {
  const c = payload.components[index];
  const where = c.head === null || c.head === undefined ? `layer ${c.layer}` : `layer ${c.layer}, head ${c.head}`;
  return [
    `${c.name} · ${where}`,
    `recall drop ${fmtInterval(c.recall)}`,
    `reasoning drop ${fmtInterval(c.reasoning)}`,
    `selectivity ${fmtInterval(c.selectivity)} · adjusted p ${fmtP(c.p_adjusted)}` +
      (c.significant ? ' · significant' : '')
  ].join('\n');
}

function textWidth(text: string, px: number): number {
  return Math.ceil(text.length * EM * px);
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, x));
}

/** A "nice" step (1, 2 or 5 times a power of ten) near `raw`. */
function niceStep(raw: number): number {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

/** The shared axis domain: every finite interval end and 0, widened to whole tick steps. */
export function scatterDomain(components: DissociationComponent[]): { lo: number; hi: number; ticks: number[] } {
  let lo = 0;
  let hi = 0;
  for (const c of components) {
    for (const v of [...(c.recall ?? []), ...(c.reasoning ?? [])]) {
      const x = num(v);
      if (x !== null) {
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
      }
    }
  }
  if (hi - lo < 1e-9) {
    hi = lo + 0.1;
  }
  const step = niceStep((hi - lo) / 5);
  lo = Math.floor(lo / step - 1e-9) * step;
  hi = Math.ceil(hi / step + 1e-9) * step;
  const ticks: number[] = [];
  for (let t = lo; t <= hi + step / 2; t += step) {
    ticks.push(Math.abs(t) < step * 1e-6 ? 0 : Number(t.toPrecision(6)));
  }
  return { lo, hi, ticks };
}

function tickLabel(v: number): string {
  return v === 0 ? '0' : String(Number(v.toPrecision(3)));
}

/** Layer colours: viridis from dark purple to green-yellow (the last, very light tenth is left out). */
const LAYER_STOPS: ReadonlyArray<readonly [number, number, number]> = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [194, 223, 35]
];

/** Colour of `layer` on the scale from layer `lo` (dark purple) to layer `hi` (green-yellow). */
export function layerColor(layer: number, lo: number, hi: number): string {
  const t = hi > lo ? clamp((layer - lo) / (hi - lo), 0, 1) : 0.5;
  const x = t * (LAYER_STOPS.length - 1);
  const i = Math.min(LAYER_STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const c = [0, 1, 2].map(k => Math.round(LAYER_STOPS[i][k] + (LAYER_STOPS[i + 1][k] - LAYER_STOPS[i][k]) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** The layers the colour scale spans: those of the sweep's components (a sweep of some layers uses every colour). */
export function layerRange(components: DissociationComponent[]): [number, number] {
  const layers = components.map(c => c.layer).filter(l => typeof l === 'number' && Number.isFinite(l));
  return layers.length ? [Math.min(...layers), Math.max(...layers)] : [0, 0];
}

/** The kind of a component, from its name: a head, an attention block, an MLP, or a group. */
export function componentKind(c: DissociationComponent): 'head' | 'attn' | 'mlp' | 'group' {
  if (c.name.includes('+')) {
    return 'group';
  }
  if (c.head !== null && c.head !== undefined) {
    return 'head';
  }
  return /^MLP/.test(c.name) ? 'mlp' : /^ATTN/.test(c.name) ? 'attn' : 'group';
}

const KIND_LABEL = { head: 'head', attn: 'attention block', mlp: 'MLP', group: 'group of components' };

// ---- The matrices' grid (pure) ------------------------------------------------------------------------------

/** Rows, columns and where each component sits in the matrices. */
export interface DissociationGrid {
  rowLabels: string[];
  colLabels: string[];
  rowTitle: string;
  colTitle: string;
  /** `[component index] -> [row, col]`, absent for a component not drawn in the matrices. */
  cells: Map<number, [number, number]>;
}

/**
 * The matrices' grid: layers x heads when every component is a head; layers x (ATTN, MLP) when every component is
 * an attention or MLP block; one row per component otherwise (groups). Only the layers that hold a component of the
 * sweep get a row.
 */
export function dissociationGrid(payload: DissociationPayload): DissociationGrid {
  const comps = payload.components;
  const cells = new Map<number, [number, number]>();
  // The grid follows the components themselves, so a sweep of some heads given by name is still a layer x head grid.
  const kinds = new Set(comps.map(componentKind));
  const heads = kinds.size === 1 && kinds.has('head');
  const blocks = !kinds.has('head') && !kinds.has('group');
  if (!heads && !blocks) {
    comps.forEach((_, i) => cells.set(i, [i, 0]));
    return { rowLabels: comps.map(c => c.name), colLabels: ['drop'], rowTitle: 'component', colTitle: '', cells };
  }
  const layers = Array.from(new Set(comps.map(c => c.layer))).sort((a, b) => a - b);
  const rowOf = new Map(layers.map((l, i) => [l, i] as [number, number]));
  let colLabels: string[];
  let colOf: (c: DissociationComponent) => number;
  if (heads) {
    const nHeads = Math.max(payload.n_heads || 0, ...comps.map(c => (c.head ?? -1) + 1));
    colLabels = Array.from({ length: nHeads }, (_, h) => String(h)); // the column title says "head"
    colOf = c => c.head as number;
  } else {
    colLabels = ['ATTN', 'MLP'].filter(k => kinds.has(k === 'ATTN' ? 'attn' : 'mlp'));
    colOf = c => colLabels.indexOf(componentKind(c) === 'attn' ? 'ATTN' : 'MLP');
  }
  comps.forEach((c, i) => {
    const col = colOf(c);
    if (col >= 0) {
      cells.set(i, [rowOf.get(c.layer) ?? 0, col]);
    }
  });
  return {
    rowLabels: layers.map(l => `L${l}`),
    colLabels,
    rowTitle: 'layer',
    colTitle: heads ? 'head' : 'block',
    cells
  };
}

/** The colour range of the matrices: the largest |drop| of either task (1 when nothing is finite or all is 0). */
export function matrixZmax(payload: DissociationPayload): number {
  let z = 0;
  for (const c of payload.components) {
    for (const v of [c.recall?.[0], c.reasoning?.[0]]) {
      const x = num(v);
      if (x !== null) {
        z = Math.max(z, Math.abs(x));
      }
    }
  }
  return z > 0 ? z : 1;
}

// ---- DOM helpers --------------------------------------------------------------------------------------------

function svgText(doc: Document, parent: Element, text: string, attrs: Attrs): SVGTextElement {
  const el = svgEl(doc, 'text', attrs, parent);
  el.textContent = text;
  return el;
}

/** Text shortened to about `maxPx` pixels (the full text goes into an SVG `<title>`). */
function fitText(doc: Document, parent: Element, text: string, maxPx: number, px: number, attrs: Attrs): void {
  const maxChars = Math.max(4, Math.floor(maxPx / (EM * px)));
  const shown = text.length > maxChars ? `${text.slice(0, maxChars - 1)}…` : text;
  const t = svgText(doc, parent, shown, attrs);
  if (shown !== text) {
    svgEl(doc, 'title', {}, t).textContent = text;
  }
}

/** A point's marker: circle (head), square (attention block), diamond (MLP) or triangle (group). */
function marker(doc: Document, parent: Element, kind: string, x: number, y: number, r: number, attrs: Attrs): SVGElement {
  if (kind === 'head') {
    return svgEl(doc, 'circle', { cx: x, cy: y, r, ...attrs }, parent);
  }
  let d: string;
  if (kind === 'attn') {
    const s = r * 0.9;
    d = `M${x - s},${y - s}H${x + s}V${y + s}H${x - s}Z`;
  } else if (kind === 'mlp') {
    const s = r * 1.25;
    d = `M${x},${y - s}L${x + s},${y}L${x},${y + s}L${x - s},${y}Z`;
  } else {
    const s = r * 1.25;
    d = `M${x},${y - s}L${x + s},${y + s * 0.75}L${x - s},${y + s * 0.75}Z`;
  }
  return svgEl(doc, 'path', { d, ...attrs }, parent);
}

function hatch(doc: Document, defs: Element, id: string): void {
  const p = svgEl(doc, 'pattern', { id, patternUnits: 'userSpaceOnUse', width: 6, height: 6, patternTransform: 'rotate(45)' }, defs);
  svgEl(doc, 'rect', { width: 6, height: 6, class: 'attnlab-hatch-bg' }, p);
  svgEl(doc, 'line', { x1: 0, y1: 0, x2: 0, y2: 6, class: 'attnlab-hatch-line' }, p);
}

// ---- The view's state ---------------------------------------------------------------------------------------

interface DissociationView {
  host: HTMLElement;
  root: HTMLElement;
  payload: DissociationPayload;
  tooltip: HTMLElement;
  /** Screen-space positions of the drawn points (viewBox units), by component index. */
  points: Map<number, { x: number; y: number; el: SVGElement }>;
  scatter: SVGSVGElement | null;
  /** Ring and name label of the selected point, hover ring. */
  selRing: SVGCircleElement | null;
  selLabel: SVGTextElement | null;
  hoverRing: SVGCircleElement | null;
  /** Selection outlines of the two matrices, and where each component's cell is. */
  cellOutlines: { box: SVGRectElement; x0: number; y0: number }[];
  grid: DissociationGrid | null;
  cw: number;
  ch: number;
  selected: number | null;
  /** Side of the scatter's plot area (px). */
  plot: number;
}

// ---- Header and text ----------------------------------------------------------------------------------------

function subtitle(p: DissociationPayload): string {
  const n = p.n_items ?? {};
  const b = p.baselines ?? {};
  const parts = [
    ...(p.ablation ? [`${p.ablation} ablation`] : []),
    `${n.recall ?? '?'} recall and ${n.reasoning ?? '?'} reasoning items`,
    `clean ${p.metric_label || p.metric}: recall ${fmt(b.recall, 2)}, reasoning ${fmt(b.reasoning, 2)}`,
    `${Math.round((p.level ?? 0.95) * 100)}% paired bootstrap intervals (${p.n_bootstrap} resamples)`,
    `${correctionName(p.correction)} correction, α = ${p.alpha}`
  ];
  let s = parts.join(' · ');
  if (p.complete === false) {
    s += ' · INCOMPLETE (cancelled): components not run are hatched and not plotted';
  }
  return s;
}

const MAX_LISTED = 12;

function nameList(names: string[]): string {
  if (names.length === 0) {
    return 'none';
  }
  const shown = names.slice(0, MAX_LISTED).join(', ');
  return names.length > MAX_LISTED ? `${shown} … and ${names.length - MAX_LISTED} more` : shown;
}

function drawFindings(doc: Document, root: HTMLElement, p: DissociationPayload): void {
  const box = htmlEl(doc, 'div', 'attnlab-dis-findings', root);
  const dd = p.double_dissociation;
  const st = htmlEl(doc, 'div', 'attnlab-dis-statement', box);
  st.setAttribute('data-found', dd ? 'true' : 'false');
  const head = dd ? 'Double dissociation: ' : p.statement ? '' : 'No double dissociation: ';
  if (head) {
    htmlEl(doc, 'span', 'attnlab-dis-statement-head', st, head);
  }
  htmlEl(doc, 'span', 'attnlab-dis-statement-text', st,
    dd ? String(dd.statement ?? '') :
      String(p.statement || 'no pair of components hurts one task and spares the other with intervals that exclude zero.'));
  if (dd) {
    htmlEl(doc, 'div', 'attnlab-dis-interaction', box,
      `${dd.recall_component} (recall) × ${dd.reasoning_component} (reasoning): crossover interaction ` +
        `${fmtInterval([dd.interaction, dd.interaction_lo, dd.interaction_hi])}`);
  }
  const sig = (side: number) =>
    p.components.filter(c => c.significant && (num(c.selectivity?.[0]) ?? 0) * side > 0).map(c => c.name);
  const corr = `${correctionName(p.correction)}, α = ${p.alpha}`;
  htmlEl(doc, 'div', 'attnlab-dis-selective', box, `recall-selective (${corr}): ${nameList(sig(1))}`)
    .setAttribute('data-side', 'recall');
  htmlEl(doc, 'div', 'attnlab-dis-selective', box, `reasoning-selective (${corr}): ${nameList(sig(-1))}`)
    .setAttribute('data-side', 'reasoning');
}

function controlLabel(c: DissociationControl): string {
  if (c.kind === 'selected') {
    return `selected (${c.side}-selective)`;
  }
  return c.kind === 'random' ? `random draw (as many as ${c.side}-selective)` : `${c.kind} (${c.side})`;
}

function drawControls(doc: Document, root: HTMLElement, p: DissociationPayload): void {
  const rows = Array.isArray(p.controls) ? p.controls : [];
  const box = htmlEl(doc, 'div', 'attnlab-dis-controls-box', root);
  htmlEl(doc, 'div', 'attnlab-dis-section-title', box, 'Controls: the components ablated together');
  if (rows.length === 0) {
    htmlEl(doc, 'div', 'attnlab-dis-note', box, 'no control rows (no selective component, or controls not run)');
    return;
  }
  const table = htmlEl(doc, 'table', 'attnlab-dis-controls', box);
  const hr = htmlEl(doc, 'tr', '', htmlEl(doc, 'thead', '', table));
  for (const h of ['control', 'components', 'recall drop [CI]', 'reasoning drop [CI]']) {
    htmlEl(doc, 'th', '', hr, h);
  }
  const body = htmlEl(doc, 'tbody', '', table);
  for (const c of rows) {
    const tr = htmlEl(doc, 'tr', '', body);
    tr.setAttribute('data-kind', String(c.kind));
    htmlEl(doc, 'td', '', tr, controlLabel(c));
    const names = Array.isArray(c.components) ? c.components.map(String) : [];
    const td = htmlEl(doc, 'td', 'attnlab-dis-control-names', tr, `${names.length}: ${nameList(names)}`);
    td.title = names.join(', ');
    htmlEl(doc, 'td', 'attnlab-dis-num', tr, fmtInterval(c.recall_drop));
    htmlEl(doc, 'td', 'attnlab-dis-num', tr, fmtInterval(c.reasoning_drop));
  }
}

// ---- The scatter --------------------------------------------------------------------------------------------

/** Margins of the scatter around its square plot area (px); the plot's side is chosen from the width available. */
const SC = { left: 84, top: 14, bottom: 62, right: 78 };
/** Side of the scatter's plot area: at least MIN_PLOT, at most MAX_PLOT (px). */
const MIN_PLOT = 300;
const MAX_PLOT = 460;
const PLOTS_GAP = 28;

/**
 * The scatter's plot side for a container `available` px wide next to matrices `matrixW` px wide: beside them when
 * both fit with a plot of at least MIN_PLOT, else on its own line; DEFAULT when the width is not known yet.
 */
export function scatterPlotSize(available: number, matrixW: number): number {
  if (!(available > 0)) {
    return 420;
  }
  const margins = SC.left + SC.right + 8;
  const beside = available - matrixW - PLOTS_GAP - margins;
  const alone = available - margins;
  return Math.floor(clamp(beside >= MIN_PLOT ? beside : alone, MIN_PLOT, MAX_PLOT));
}

function drawScatter(doc: Document, box: HTMLElement, view: DissociationView, uid: string, plot: number): void {
  const p = view.payload;
  const comps = p.components;
  const { left, top, bottom, right } = SC;
  view.plot = plot;
  view.points.clear();
  box.replaceChildren();
  const W = left + plot + right;
  const H = top + plot + bottom;
  htmlEl(doc, 'div', 'attnlab-dis-section-title', box, 'Recall drop against reasoning drop, per component');
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-dis-scatter', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'group',
    'aria-label': 'scatter of recall drop against reasoning drop'
  });
  box.appendChild(svg);
  view.scatter = svg;
  const dom = scatterDomain(comps);
  const sx = (v: number) => left + ((v - dom.lo) / (dom.hi - dom.lo)) * plot;
  const sy = (v: number) => top + plot - ((v - dom.lo) / (dom.hi - dom.lo)) * plot;
  const defs = svgEl(doc, 'defs', {}, svg);
  const clip = svgEl(doc, 'clipPath', { id: `${uid}-clip` }, defs);
  svgEl(doc, 'rect', { x: left, y: top, width: plot, height: plot }, clip);

  svgEl(doc, 'rect', { x: left, y: top, width: plot, height: plot, class: 'attnlab-dis-plot-bg' }, svg);
  const axes = svgEl(doc, 'g', { class: 'attnlab-dis-axes' }, svg);
  for (const t of dom.ticks) {
    const cls = t === 0 ? 'attnlab-dis-zero' : 'attnlab-dis-grid';
    svgEl(doc, 'line', { x1: sx(t), x2: sx(t), y1: top, y2: top + plot, class: cls }, axes);
    svgEl(doc, 'line', { x1: left, x2: left + plot, y1: sy(t), y2: sy(t), class: cls }, axes);
    svgText(doc, axes, tickLabel(t), { x: sx(t), y: top + plot + 14, 'text-anchor': 'middle', class: 'attnlab-dis-tick' });
    svgText(doc, axes, tickLabel(t), {
      x: left - 6, y: sy(t), 'text-anchor': 'end', 'dominant-baseline': 'central', class: 'attnlab-dis-tick'
    });
  }
  // The diagonal: the same normalised drop on both tasks.
  svgEl(doc, 'line', { x1: sx(dom.lo), y1: sy(dom.lo), x2: sx(dom.hi), y2: sy(dom.hi), class: 'attnlab-dis-diagonal' }, axes);
  svgText(doc, axes, 'y = x', {
    transform: `translate(${sx(dom.hi) - 24}, ${sy(dom.hi) + 38}) rotate(-45)`, 'text-anchor': 'middle',
    class: 'attnlab-dis-diagonal-label'
  });
  svgText(doc, axes, 'hurts recall, spares reasoning →', {
    x: left + plot - 6, y: top + plot - 8, 'text-anchor': 'end', class: 'attnlab-dis-region'
  });
  svgText(doc, axes, '↑ hurts reasoning, spares recall', { x: left + 6, y: top + 14, class: 'attnlab-dis-region' });
  svgEl(doc, 'rect', { x: left, y: top, width: plot, height: plot, class: 'attnlab-dis-frame' }, svg);

  // Axis titles: the task in bold, the unit under it (both fit the plot's side).
  const label = `normalised ${p.metric_label || p.metric || 'metric'}`;
  svgText(doc, svg, 'recall drop', { x: left + plot / 2, y: top + plot + 34, 'text-anchor': 'middle',
    class: 'attnlab-dis-axis-title' });
  fitText(doc, svg, label, plot, SMALL, { x: left + plot / 2, y: top + plot + 50, 'text-anchor': 'middle',
    class: 'attnlab-dis-axis-unit' });
  const yTitle = svgEl(doc, 'g', { transform: `translate(${left - 62}, ${top + plot / 2}) rotate(-90)` }, svg);
  svgText(doc, yTitle, 'reasoning drop', { x: 0, y: -10, 'text-anchor': 'middle', 'dominant-baseline': 'central',
    class: 'attnlab-dis-axis-title' });
  fitText(doc, yTitle, label, plot, SMALL, { x: 0, y: 6, 'text-anchor': 'middle', 'dominant-baseline': 'central',
    class: 'attnlab-dis-axis-unit' });

  const [lo, hi] = layerRange(comps);
  drawLayerBar(doc, svg, uid, lo, hi, left + plot + 26, top + 22, Math.min(220, plot - 40));

  // Error bars, then points; the largest effects last, so they are on top.
  const order = comps
    .map((c, i) => ({ c, i, m: Math.hypot(num(c.recall?.[0]) ?? 0, num(c.reasoning?.[0]) ?? 0) }))
    .filter(({ c }) => num(c.recall?.[0]) !== null && num(c.reasoning?.[0]) !== null)
    .sort((a, b) => a.m - b.m);
  const bars = svgEl(doc, 'g', { class: 'attnlab-dis-errbars', 'clip-path': `url(#${uid}-clip)` }, svg);
  const pts = svgEl(doc, 'g', { class: 'attnlab-dis-points' }, svg);
  order.forEach(({ c, i }, k) => {
    const x = sx(c.recall[0] as number);
    const y = sy(c.reasoning[0] as number);
    const colour = layerColor(c.layer, lo, hi);
    const g = svgEl(doc, 'g', { class: 'attnlab-dis-errbar', 'data-index': i, stroke: colour }, bars);
    const [, rlo, rhi] = c.recall;
    const [, qlo, qhi] = c.reasoning;
    if (num(rlo) !== null && num(rhi) !== null) {
      svgEl(doc, 'line', { x1: sx(rlo as number), x2: sx(rhi as number), y1: y, y2: y }, g);
    }
    if (num(qlo) !== null && num(qhi) !== null) {
      svgEl(doc, 'line', { x1: x, x2: x, y1: sy(qlo as number), y2: sy(qhi as number) }, g);
    }
    const el = marker(doc, pts, componentKind(c), x, y, 4.5, {
      class: c.significant ? 'attnlab-dis-point attnlab-dis-point-significant' : 'attnlab-dis-point',
      fill: colour,
      'data-index': i,
      'data-name': c.name,
      'data-recall': String(c.recall[0]),
      'data-reasoning': String(c.reasoning[0]),
      tabindex: k === order.length - 1 ? 0 : -1,
      role: 'button',
      'aria-label': c.name
    });
    view.points.set(i, { x, y, el });
  });
  view.hoverRing = svgEl(doc, 'circle', { r: 8, class: 'attnlab-dis-hover-ring', visibility: 'hidden' }, svg);
  view.selRing = svgEl(doc, 'circle', { r: 9, class: 'attnlab-dis-selected-ring', visibility: 'hidden' }, svg);
  view.selLabel = svgText(doc, svg, '', { class: 'attnlab-dis-selected-label', visibility: 'hidden' });
  if (order.length < comps.length) {
    htmlEl(doc, 'div', 'attnlab-dis-note', box, `${comps.length - order.length} component(s) not computed are not plotted`);
  }
  drawScatterLegend(doc, box, p);
  box.style.maxWidth = `${W}px`; // the legend and notes wrap within the plot's width
  bindScatter(view, svg, order.map(o => o.i));
}

/** The vertical layer colour bar (layers `lo` to `hi`) with its ticks and title. */
function drawLayerBar(doc: Document, svg: Element, uid: string, lo: number, hi: number, x: number, y: number,
  h: number): void {
  const defs = svgEl(doc, 'defs', {}, svg);
  const grad = svgEl(doc, 'linearGradient', { id: `${uid}-layers`, x1: 0, x2: 0, y1: 1, y2: 0 }, defs);
  for (let k = 0; k <= 8; k++) {
    svgEl(doc, 'stop', { offset: `${(k / 8) * 100}%`, 'stop-color': layerColor(lo + (k / 8) * (hi - lo), lo, hi) }, grad);
  }
  svgText(doc, svg, 'layer', { x: x + 6, y: y - 8, 'text-anchor': 'middle', class: 'attnlab-dis-axis-title' });
  svgEl(doc, 'rect', { x, y, width: 12, height: h, fill: `url(#${uid}-layers)`, class: 'attnlab-dis-layerbar' }, svg);
  const ticks = hi === lo ? [lo] : Array.from(new Set([lo, Math.round((lo + hi) / 2), hi]));
  for (const t of ticks) {
    const ty = hi === lo ? y + h / 2 : y + h - ((t - lo) / (hi - lo)) * h;
    svgEl(doc, 'line', { x1: x + 12, x2: x + 16, y1: ty, y2: ty, class: 'attnlab-dis-tickline' }, svg);
    svgText(doc, svg, String(t), { x: x + 19, y: ty, 'dominant-baseline': 'central', class: 'attnlab-dis-tick' });
  }
}

/** Marker shapes present, the significance ring, the diagonal and the error bars, as an HTML legend (it wraps). */
function drawScatterLegend(doc: Document, box: HTMLElement, p: DissociationPayload): void {
  const legend = htmlEl(doc, 'div', 'attnlab-dis-legend', box);
  const kinds = Array.from(new Set(p.components.map(componentKind)));
  const item = (draw: (svg: SVGSVGElement) => void, text: string) => {
    const it = htmlEl(doc, 'span', 'attnlab-dis-legend-item', legend);
    const s = svgEl(doc, 'svg', { width: 18, height: 14, viewBox: '0 0 18 14' }, it);
    draw(s);
    htmlEl(doc, 'span', '', it, text);
  };
  for (const k of kinds) {
    item(s => marker(doc, s, k, 9, 7, 4.5, { class: 'attnlab-dis-legend-marker', fill: 'rgb(120, 120, 120)' }), KIND_LABEL[k]);
  }
  item(s => {
    const cls = 'attnlab-dis-legend-marker attnlab-dis-legend-marker-significant';
    marker(doc, s, 'head', 9, 7, 4.5, { class: cls, fill: 'rgb(120, 120, 120)' });
  }, `black ring: selectivity interval excludes 0 (${correctionName(p.correction)})`);
  item(s => svgEl(doc, 'line', { x1: 1, x2: 17, y1: 13, y2: 1, class: 'attnlab-dis-diagonal' }, s), 'y = x');
  item(s => svgEl(doc, 'line', { x1: 1, x2: 17, y1: 7, y2: 7, class: 'attnlab-dis-legend-errbar' }, s),
    `${Math.round((p.level ?? 0.95) * 100)}% interval`);
  htmlEl(doc, 'span', 'attnlab-dis-legend-item', legend, 'a drop of 1: all of the clean value lost; 0: no effect');
}

// ---- The matrices -------------------------------------------------------------------------------------------

/** Draw the matrices into a new box in `parent`; returns the box's width (px). */
function drawMatrices(doc: Document, parent: HTMLElement, view: DissociationView, uid: string): number {
  const p = view.payload;
  const grid = dissociationGrid(p);
  view.grid = grid;
  const nR = grid.rowLabels.length;
  const nC = grid.colLabels.length;
  const box = htmlEl(doc, 'div', 'attnlab-dis-matrix-box', parent);
  const what = grid.colTitle === 'head' ? 'layer × head' : grid.rowTitle === 'layer' ? 'layer strip' : 'per component';
  htmlEl(doc, 'div', 'attnlab-dis-section-title', box, `Drops by component (${what})`);
  if (nR === 0 || nC === 0) {
    htmlEl(doc, 'div', 'attnlab-dis-note', box, 'no components');
    return 0;
  }
  const zmax = matrixZmax(p);
  drawDropLegend(doc, box, uid, zmax, p.metric_label || p.metric);

  const titles = ['recall drop', 'reasoning drop'];
  const titleW = textWidth(titles[1], FONT);
  const cw = clamp(Math.max(18, Math.ceil((titleW + 10) / nC)), 18, 60);
  const ch = nR <= 40 ? clamp(Math.floor(420 / nR), 13, 20) : clamp(Math.floor(1200 / nR), 4, 12);
  const stride = ch >= 13 ? 1 : Math.ceil(13 / ch);
  const rowLabelW = Math.min(160, textWidth(grid.rowLabels.reduce((m, s) => (s.length > m.length ? s : m), ''), SMALL));
  const colLabelW = textWidth(grid.colLabels.reduce((m, s) => (s.length > m.length ? s : m), ''), SMALL);
  const rotate = colLabelW > cw - 4;
  const colLabelsH = rotate ? colLabelW + 8 : SMALL + 8;
  const rowTitleW = FONT + 8;
  const gx0 = 6 + rowTitleW + rowLabelW + 8;
  const gap = 22;
  const gy = 6 + FONT + 8;
  const gW = nC * cw;
  const gH = nR * ch;
  const W = gx0 + 2 * gW + gap + 10;
  const colTitleH = grid.colTitle ? FONT + 10 : 0;
  const H = gy + gH + 4 + colLabelsH + colTitleH + 6;
  const scroll = htmlEl(doc, 'div', 'attnlab-dis-matrix-scroll', box);
  const svg = svgEl(doc, 'svg', {
    class: 'attnlab-dis-matrices', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'group',
    'aria-label': 'recall and reasoning drops per component'
  });
  scroll.appendChild(svg);
  const defs = svgEl(doc, 'defs', {}, svg);
  hatch(doc, defs, `${uid}-hatch`);
  view.cw = cw;
  view.ch = ch;

  // Row labels (left of the first matrix only; both matrices share the rows) and the rotated row title.
  for (let r = 0; r < nR; r += stride) {
    fitText(doc, svg, grid.rowLabels[r], rowLabelW + 4, SMALL, {
      x: gx0 - 5, y: gy + (r + 0.5) * ch, 'text-anchor': 'end', 'dominant-baseline': 'central', class: 'attnlab-dis-label'
    });
  }
  svgText(doc, svg, grid.rowTitle, {
    transform: `translate(${6 + FONT / 2 + 1}, ${gy + Math.min(gH, 420) / 2}) rotate(-90)`,
    'text-anchor': 'middle', 'dominant-baseline': 'central', class: 'attnlab-dis-axis-title'
  });

  const sides: ('recall' | 'reasoning')[] = ['recall', 'reasoning'];
  view.cellOutlines = [];
  sides.forEach((side, m) => {
    const x0 = gx0 + m * (gW + gap);
    svgText(doc, svg, titles[m], { x: x0 + gW / 2, y: 6 + FONT / 2 + 1, 'text-anchor': 'middle',
      'dominant-baseline': 'central', class: 'attnlab-dis-matrix-title' });
    const g = svgEl(doc, 'g', { class: 'attnlab-dis-cells', 'data-side': side }, svg);
    // Cells not in the sweep: hatched background under the grid.
    svgEl(doc, 'rect', { x: x0, y: gy, width: gW, height: gH, fill: `url(#${uid}-hatch)`, class: 'attnlab-dis-cell-bg' }, g);
    let first = true;
    for (const [i, [r, c]] of grid.cells) {
      const v = num(p.components[i][side]?.[0]);
      svgEl(doc, 'rect', {
        x: x0 + c * cw, y: gy + r * ch, width: cw, height: ch,
        class: v === null ? 'attnlab-dis-cell attnlab-dis-cell-missing' : 'attnlab-dis-cell',
        fill: v === null ? `url(#${uid}-hatch)` : divergingColor(v, zmax),
        'data-index': i, 'data-name': p.components[i].name, 'data-side': side,
        'data-value': v === null ? 'null' : String(v),
        tabindex: first && m === 0 ? 0 : -1
      }, g);
      first = false;
    }
    svgEl(doc, 'rect', { x: x0, y: gy, width: gW, height: gH, class: 'attnlab-grid-border' }, svg);
    grid.colLabels.forEach((text, c) => {
      const x = x0 + (c + 0.5) * cw;
      const top = gy + gH + 4;
      if (rotate) {
        svgText(doc, svg, text, { transform: `translate(${x}, ${top + 2}) rotate(-90)`, 'text-anchor': 'end',
          'dominant-baseline': 'central', class: 'attnlab-dis-label' });
      } else {
        svgText(doc, svg, text, { x, y: top + colLabelsH / 2, 'text-anchor': 'middle', 'dominant-baseline': 'central',
          class: 'attnlab-dis-label' });
      }
    });
    if (grid.colTitle) {
      svgText(doc, svg, grid.colTitle, { x: x0 + gW / 2, y: gy + gH + 4 + colLabelsH + colTitleH / 2,
        'text-anchor': 'middle', 'dominant-baseline': 'central', class: 'attnlab-dis-axis-title' });
    }
    const boxEl = svgEl(doc, 'rect', { width: cw, height: ch, class: 'attnlab-selected-outline', visibility: 'hidden' }, svg);
    view.cellOutlines.push({ box: boxEl, x0, y0: gy });
  });
  const hover = svgEl(doc, 'rect', { width: cw, height: ch, class: 'attnlab-hover-outline', visibility: 'hidden' }, svg);
  bindMatrices(view, svg, hover);
  const boxW = Math.max(W, 250); // the notes wrap within the matrices' width, so the box is no wider than they are
  box.style.maxWidth = `${boxW}px`;
  return boxW;
}

/** The matrices' shared colour bar: -zmax blue, 0 white, +zmax red, with what a number means. */
function drawDropLegend(doc: Document, box: HTMLElement, uid: string, zmax: number, label: string): void {
  const barW = 200;
  const x0 = 12;
  const W = x0 + barW + 24;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-dis-droplegend', width: W, height: 34, viewBox: `0 0 ${W} 34`,
    role: 'img', 'aria-label': `colour scale from ${tickLabel(-zmax)} (blue) through 0 (white) to ${tickLabel(zmax)} (red)` });
  box.appendChild(svg);
  const defs = svgEl(doc, 'defs', {}, svg);
  const grad = svgEl(doc, 'linearGradient', { id: `${uid}-drop`, x1: 0, x2: 1, y1: 0, y2: 0 }, defs);
  for (let k = 0; k <= 8; k++) {
    const t = -1 + (2 * k) / 8;
    svgEl(doc, 'stop', { offset: `${(k / 8) * 100}%`, 'stop-color': divergingColor(t * zmax, zmax) }, grad);
  }
  svgEl(doc, 'rect', { x: x0, y: 3, width: barW, height: 12, fill: `url(#${uid}-drop)`, class: 'attnlab-legend-bar' }, svg);
  for (const f of [-1, -0.5, 0, 0.5, 1]) {
    const x = x0 + ((f + 1) / 2) * barW;
    svgEl(doc, 'line', { x1: x, x2: x, y1: 15, y2: 19, class: 'attnlab-dis-tickline' }, svg);
    svgText(doc, svg, f === 0 ? '0' : tickLabel(f * zmax), { x, y: 29, 'text-anchor': 'middle', class: 'attnlab-dis-tick' });
  }
  htmlEl(doc, 'div', 'attnlab-dis-note', box,
    `colour: normalised drop of the ${label} (1 = all of the clean value lost; red: lost, blue: gained), ` +
      'one fixed scale for both matrices; hatched: not run');
}

// ---- Interaction --------------------------------------------------------------------------------------------

function showTooltip(view: DissociationView, index: number, clientX: number, clientY: number): void {
  const { tooltip, root } = view;
  tooltip.textContent = formatComponentTooltip(view.payload, index);
  tooltip.hidden = false;
  const rect = root.getBoundingClientRect();
  const pos = tooltipPosition(clientX, clientY, rect, root.clientWidth, root.clientHeight, tooltip.offsetWidth, tooltip.offsetHeight);
  tooltip.style.left = `${pos.left}px`;
  tooltip.style.top = `${pos.top}px`;
}

function hideTooltip(view: DissociationView): void {
  view.tooltip.hidden = true;
  view.hoverRing?.setAttribute('visibility', 'hidden');
}

/** Mark component `index` (null clears) on the scatter and on both matrices; dispatches nothing. */
function mark(view: DissociationView, index: number | null): void {
  view.selected = index;
  view.root.setAttribute('data-selected', index === null ? '' : view.payload.components[index]?.name ?? '');
  view.scatter?.querySelectorAll('.attnlab-dis-selected').forEach(el => el.classList.remove('attnlab-dis-selected'));
  const pt = index === null ? undefined : view.points.get(index);
  if (view.selRing && view.selLabel) {
    if (pt) {
      view.selRing.setAttribute('cx', String(pt.x));
      view.selRing.setAttribute('cy', String(pt.y));
      view.selRing.setAttribute('visibility', 'visible');
      pt.el.classList.add('attnlab-dis-selected');
      view.scatter?.querySelector(`.attnlab-dis-errbar[data-index="${index}"]`)?.classList.add('attnlab-dis-selected');
      const name = view.payload.components[index as number].name;
      const right = pt.x + 12 + textWidth(name, FONT) < SC.left + view.plot;
      view.selLabel.textContent = name;
      view.selLabel.setAttribute('x', String(right ? pt.x + 12 : pt.x - 12));
      view.selLabel.setAttribute('y', String(pt.y < SC.top + 16 ? pt.y + 16 : pt.y - 8));
      view.selLabel.setAttribute('text-anchor', right ? 'start' : 'end');
      view.selLabel.setAttribute('visibility', 'visible');
    } else {
      view.selRing.setAttribute('visibility', 'hidden');
      view.selLabel.setAttribute('visibility', 'hidden');
    }
  }
  const cell = index === null ? undefined : view.grid?.cells.get(index);
  for (const o of view.cellOutlines) {
    if (cell) {
      o.box.setAttribute('x', String(o.x0 + cell[1] * view.cw));
      o.box.setAttribute('y', String(o.y0 + cell[0] * view.ch));
      o.box.setAttribute('visibility', 'visible');
    } else {
      o.box.setAttribute('visibility', 'hidden');
    }
  }
}

function select(view: DissociationView, index: number): void {
  const c = view.payload.components[index];
  if (!c) {
    return;
  }
  mark(view, index);
  const detail: DissociationClickDetail = { index, name: c.name, layer: c.layer, head: c.head ?? null };
  view.host.dispatchEvent(new CustomEvent(COMPONENT_CLICK_EVENT, { detail, bubbles: true, composed: true }));
}

function indexOf(target: EventTarget | null, selector: string): number | null {
  const el = target as Element | null;
  const hit = el && typeof el.closest === 'function' ? el.closest(selector) : null;
  return hit ? Number(hit.getAttribute('data-index')) : null;
}

/** The point under the pointer or, failing that, the nearest one within 12 px (small points are easy to miss). */
function pointAt(view: DissociationView, svg: SVGSVGElement, ev: MouseEvent): number | null {
  const direct = indexOf(ev.target, '.attnlab-dis-point');
  if (direct !== null) {
    return direct;
  }
  const rect = svg.getBoundingClientRect();
  const scale = rect.width > 0 ? Number(svg.getAttribute('width')) / rect.width : 1;
  const x = (ev.clientX - rect.left) * scale;
  const y = (ev.clientY - rect.top) * scale;
  let best: number | null = null;
  let bestD = 12 * scale;
  for (const [i, pt] of view.points) {
    const d = Math.hypot(pt.x - x, pt.y - y);
    if (d < bestD) {
      best = i;
      bestD = d;
    }
  }
  return best;
}

function bindScatter(view: DissociationView, svg: SVGSVGElement, order: number[]): void {
  const hover = (i: number | null, x: number, y: number) => {
    const pt = i === null ? undefined : view.points.get(i);
    if (i === null || !pt) {
      hideTooltip(view);
      return;
    }
    view.hoverRing?.setAttribute('cx', String(pt.x));
    view.hoverRing?.setAttribute('cy', String(pt.y));
    view.hoverRing?.setAttribute('visibility', 'visible');
    showTooltip(view, i, x, y);
  };
  svg.addEventListener('mousemove', ev => hover(pointAt(view, svg, ev), ev.clientX, ev.clientY));
  svg.addEventListener('mouseleave', () => hideTooltip(view));
  svg.addEventListener('click', ev => {
    const i = pointAt(view, svg, ev);
    if (i !== null) {
      select(view, i);
    }
  });
  svg.addEventListener('focusin', ev => {
    const i = indexOf(ev.target, '.attnlab-dis-point');
    const pt = i === null ? undefined : view.points.get(i);
    if (i !== null && pt) {
      const r = pt.el.getBoundingClientRect();
      hover(i, r.right, r.bottom);
    }
  });
  svg.addEventListener('focusout', () => hideTooltip(view));
  // Keyboard: arrows step through the points from the weakest to the strongest effect; Enter/Space select.
  svg.addEventListener('keydown', ev => {
    const i = indexOf(ev.target, '.attnlab-dis-point');
    if (i === null) {
      return;
    }
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      select(view, i);
      return;
    }
    const step = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1 }[ev.key];
    if (step !== undefined) {
      ev.preventDefault();
      const k = clamp(order.indexOf(i) + step, 0, order.length - 1);
      const next = view.points.get(order[k]);
      view.points.get(i)?.el.setAttribute('tabindex', '-1');
      next?.el.setAttribute('tabindex', '0');
      (next?.el as SVGElement | undefined)?.focus();
    }
  });
}

function bindMatrices(view: DissociationView, svg: SVGSVGElement, hover: SVGRectElement): void {
  const cellOf = (t: EventTarget | null) => {
    const el = t as Element | null;
    return (el && typeof el.closest === 'function' ? el.closest('.attnlab-dis-cell') : null) as SVGRectElement | null;
  };
  const hide = () => {
    hideTooltip(view);
    hover.setAttribute('visibility', 'hidden');
  };
  const show = (cell: SVGRectElement, x: number, y: number) => {
    hover.setAttribute('x', cell.getAttribute('x') ?? '0');
    hover.setAttribute('y', cell.getAttribute('y') ?? '0');
    hover.setAttribute('visibility', 'visible');
    showTooltip(view, Number(cell.getAttribute('data-index')), x, y);
  };
  svg.addEventListener('mousemove', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      show(cell, ev.clientX, ev.clientY);
    } else {
      hide();
    }
  });
  svg.addEventListener('mouseleave', hide);
  svg.addEventListener('click', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      select(view, Number(cell.getAttribute('data-index')));
    }
  });
  svg.addEventListener('focusin', ev => {
    const cell = cellOf(ev.target);
    if (cell) {
      const r = cell.getBoundingClientRect();
      show(cell, r.right, r.bottom);
    }
  });
  svg.addEventListener('focusout', hide);
  // Keyboard: Enter/Space select the focused cell; arrow keys move to the next cell of the same matrix.
  const moves: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1],
    ArrowRight: [0, 1] };
  svg.addEventListener('keydown', ev => {
    const cell = cellOf(ev.target);
    if (!cell) {
      return;
    }
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      select(view, Number(cell.getAttribute('data-index')));
    } else if (ev.key in moves && view.grid) {
      ev.preventDefault();
      const [r, c] = view.grid.cells.get(Number(cell.getAttribute('data-index'))) ?? [0, 0];
      const [dr, dc] = moves[ev.key];
      const target = [...view.grid.cells].find(([, [r2, c2]]) => r2 === r + dr && c2 === c + dc);
      const side = cell.getAttribute('data-side');
      const next = target && svg.querySelector(`rect.attnlab-dis-cell[data-index="${target[0]}"][data-side="${side}"]`);
      if (next) {
        cell.setAttribute('tabindex', '-1');
        next.setAttribute('tabindex', '0');
        (next as SVGElement).focus();
      }
    }
  });
}

// ---- Entry point --------------------------------------------------------------------------------------------

/** Width of `el`'s content box (its clientWidth less its padding); 0 when it is not laid out. */
function contentWidth(el: HTMLElement): number {
  const view = el.ownerDocument.defaultView;
  if (!view || el.clientWidth === 0) {
    return 0;
  }
  const cs = view.getComputedStyle(el);
  return el.clientWidth - (parseFloat(cs.paddingLeft) || 0) - (parseFloat(cs.paddingRight) || 0);
}

/**
 * Draw `payload` into `host`, replacing whatever `host` held (see the module comment for the layout and events).
 *
 * Returns a handle whose `select(name)` marks a component as selected from code (e.g. a selection made in the kernel)
 * without dispatching the click event; `select(null)` clears the selection.
 */
export function renderDissociation(host: HTMLElement, payload: DissociationPayload): DissociationHandle {
  const doc = host.ownerDocument;
  const uid = `attnlab-dis-${++instances}`;
  observers.get(host)?.disconnect(); // the view drawn here before
  observers.delete(host);
  host.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-dissociation', host);
  if (!payload || !Array.isArray(payload.components)) {
    htmlEl(doc, 'div', 'attnlab-error', root, 'attnlab: malformed dissociation payload (no "components" list).');
    return NO_HANDLE;
  }
  const header = htmlEl(doc, 'div', 'attnlab-dis-header', root);
  htmlEl(doc, 'div', 'attnlab-title', header, String(payload.title ?? ''));
  htmlEl(doc, 'div', 'attnlab-subtitle', header, subtitle(payload));
  drawFindings(doc, root, payload);
  if (payload.components.length === 0) {
    htmlEl(doc, 'div', 'attnlab-empty', root, 'no components');
    return NO_HANDLE;
  }
  const tooltip = htmlEl(doc, 'div', 'attnlab-tooltip', root);
  tooltip.setAttribute('role', 'tooltip');
  tooltip.hidden = true;
  const view: DissociationView = {
    host, root, payload, tooltip, points: new Map(), scatter: null, selRing: null, selLabel: null, hoverRing: null,
    cellOutlines: [], grid: null, cw: 0, ch: 0, selected: null, plot: 0
  };
  const plots = htmlEl(doc, 'div', 'attnlab-dis-plots', root);
  const scatterBox = htmlEl(doc, 'div', 'attnlab-dis-scatter-box', plots);
  const matrixW = drawMatrices(doc, plots, view, uid);
  drawScatter(doc, scatterBox, view, uid, scatterPlotSize(contentWidth(plots), matrixW));
  // Redraw the scatter (not scale it: text stays at its size) when the width available changes: the notebook's
  // width, a side panel opened, or the first layout after the output was attached.
  if (typeof ResizeObserver !== 'undefined') {
    const observer = new ResizeObserver(() => {
      const size = scatterPlotSize(contentWidth(plots), matrixW);
      if (Math.abs(size - view.plot) >= 8) {
        drawScatter(doc, scatterBox, view, uid, size);
        mark(view, view.selected);
      }
    });
    observer.observe(plots);
    observers.set(host, observer);
  }
  drawControls(doc, root, payload);
  root.appendChild(tooltip); // last, so it paints over everything
  return {
    select: name => {
      const i = name === null ? -1 : payload.components.findIndex(c => c.name === name);
      mark(view, i >= 0 ? i : null);
    }
  };
}
