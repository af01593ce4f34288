/**
 * Front end of `attnlab.Explorer`, an anywidget module (ES module with a default `{ render }` export).
 *
 * esbuild bundles this file with the heatmap renderer and the stylesheets into `attnlab/explorer/static/explorer.js`;
 * the Python widget sends that text as its `_esm` trait. State arrives through synced traits (see
 * `attnlab/explorer/widget.py`); clicks go back as custom messages (`{type: 'select', row, col}` ...), and the kernel
 * answers by updating `detail_payload`. Every string from the kernel (prompts, tokens, names) is set as text.
 */

import explorerCss from '../style/explorer.css';
import heatmapCss from '../style/index.css';
import type { HeatmapPayload } from './contract';
import { htmlEl, svgEl } from './dom';
import { NODE_CLICK_EVENT, renderCircuit } from './circuit';
import type { CircuitPayload } from './contract';
import { CELL_CLICK_EVENT, type HeatmapHandle, payloadScale, renderHeatmap, scaleControl, scaleLimit } from './heatmap';
import type { ScaleChoice } from './heatmap';
import { exportButtons, fileStem } from './export';

// ---- The slice of anywidget's model API used here.
interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  send(content: unknown): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string, cb?: (...args: any[]) => void): void;
}

interface Stat {
  mean: number;
  sem: number;
  per_prompt: number[];
}

const STYLE_ID = 'attnlab-explorer-css';

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = heatmapCss + '\n' + explorerCss;
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}

const fmt = (x: number | null | undefined, digits = 3): string =>
  typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–';

const pm = (s: Stat | null | undefined, digits = 2): string =>
  s ? `${fmt(s.mean, digits)} ± ${fmt(s.sem, digits)}` : '–';

/** A token as shown in a strip: spaces visible, newlines as ↵. */
const showToken = (t: string): string => t.replace(/\n/g, '↵').replace(/ /g, '·');

// ---- Small charts (SVG), all text set through textContent.

/**
 * Horizontal bars with standard-error whiskers around a zero line, one per item. The scale fits the data unless
 * `fixedLim` is given (attention probabilities use 1, so a small value looks small).
 */
function barChart(parent: HTMLElement, items: { label: string; stat: Stat }[], unit: string, fixedLim?: number, digits = 2): void {
  const doc = parent.ownerDocument;
  const W = 360;
  const labelW = 120;
  const rowH = 22;
  const H = items.length * rowH + 6;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-bars', width: W, height: H, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'xMinYMin meet' }, parent);
  let lim = fixedLim ?? 1e-6;
  for (const { stat } of fixedLim ? [] : items) {
    lim = Math.max(lim, Math.abs(stat.mean) + stat.sem);
    for (const v of stat.per_prompt ?? []) {
      lim = Math.max(lim, Math.abs(v));
    }
  }
  // a fixed scale is for non-negative quantities (probabilities): zero at the left; otherwise zero in the middle
  const span = W - labelW - 60;
  const x0 = fixedLim ? labelW + 4 : labelW + span / 2;
  const scale = fixedLim ? (span - 4) / lim : span / 2 / lim;
  svgEl(doc, 'line', { x1: x0, x2: x0, y1: 2, y2: H - 2, class: 'attnlab-zero' }, svg);
  items.forEach(({ label, stat }, i) => {
    const y = 4 + i * rowH;
    const t = svgEl(doc, 'text', { x: labelW - 6, y: y + rowH / 2 - 2, 'text-anchor': 'end', 'dominant-baseline': 'central', class: 'attnlab-bar-label' }, svg);
    t.textContent = label;
    const w = stat.mean * scale;
    svgEl(doc, 'rect', {
      x: Math.min(x0, x0 + w), y: y + 3, width: Math.max(1, Math.abs(w)), height: rowH - 10,
      class: stat.mean >= 0 ? 'attnlab-bar attnlab-bar-pos' : 'attnlab-bar attnlab-bar-neg'
    }, svg);
    for (const v of stat.per_prompt ?? []) {
      svgEl(doc, 'circle', { cx: x0 + v * scale, cy: y + rowH / 2 - 2, r: 2, class: 'attnlab-dot' }, svg);
    }
    const e0 = x0 + (stat.mean - stat.sem) * scale;
    const e1 = x0 + (stat.mean + stat.sem) * scale;
    svgEl(doc, 'line', { x1: e0, x2: e1, y1: y + rowH / 2 - 2, y2: y + rowH / 2 - 2, class: 'attnlab-whisker' }, svg);
    const v = svgEl(doc, 'text', { x: W - 4, y: y + rowH / 2 - 2, 'text-anchor': 'end', 'dominant-baseline': 'central', class: 'attnlab-bar-value' }, svg);
    v.textContent = fmt(stat.mean, digits);
  });
  htmlEl(doc, 'div', 'attnlab-bar-caption', parent, `${unit} (bar: mean; line: ± s.e.m.; dots: prompts)`);
}

// ---- Detail panels.

function section(parent: HTMLElement, title: string, cls: string): HTMLElement {
  const doc = parent.ownerDocument;
  const s = htmlEl(doc, 'section', `attnlab-detail-section ${cls}`, parent);
  htmlEl(doc, 'h4', 'attnlab-detail-heading', s, title);
  return s;
}

/** Tokens shaded by attention from one destination; clicking a token makes it the destination. */
function patternView(parent: HTMLElement, detail: any, dest: number, onDest: (d: number) => void): void {
  const doc = parent.ownerDocument;
  const prompt = detail.prompt;
  const row: number[] = detail.pattern[dest] ?? [];
  const max = Math.max(1e-9, ...row);
  const labels: string[] = prompt.position_labels ?? [];
  const cap = htmlEl(doc, 'div', 'attnlab-pattern-caption', parent);
  cap.textContent =
    `attention from ${JSON.stringify(prompt.tokens[dest] ?? '')} (position ${dest}${labels[dest] ? ', ' + labels[dest] : ''})` +
    ' · click a token to look from it';
  const strip = htmlEl(doc, 'div', 'attnlab-pattern', parent);
  strip.setAttribute('data-dest', String(dest));
  prompt.tokens.forEach((tok: string, i: number) => {
    const a = i <= dest ? row[i] ?? 0 : null;
    const span = htmlEl(doc, 'span', 'attnlab-token', strip, showToken(tok));
    span.setAttribute('data-pos', String(i));
    span.setAttribute('data-attn', a === null ? 'null' : String(a));
    span.title = `${JSON.stringify(tok)} · ${labels[i] ?? i}` + (a === null ? ' · after the destination' : ` · attention ${fmt(a, 4)}`);
    if (a !== null) {
      span.style.backgroundColor = `rgba(178, 24, 43, ${(0.85 * a) / max})`;
      if (a / max > 0.55) {
        span.classList.add('attnlab-token-strong');
      }
    } else {
      span.classList.add('attnlab-token-future');
    }
    if (i === dest) {
      span.classList.add('attnlab-token-dest');
    }
    span.addEventListener('click', () => onDest(i));
  });
}

/** Shown where a panel needs the model's weights and the backend keeps them elsewhere (a remote model). */
const WEIGHTS_NOTE = "needs the model's weights, which a remote model keeps on the server: run on a local copy";

/** A metric's axis label from the kernel ({name, label}); the logit difference for older payloads. */
function metricLabel(metric: { label?: string } | undefined): string {
  return metric?.label ?? 'logit difference (logits)';
}

export function headDetail(panel: HTMLElement, detail: any, ctx: { dest: number | null; setDest: (d: number) => void; prompts: string[]; prompt: number; onPrompt: (i: number) => void }): void {
  const doc = panel.ownerDocument;
  const head = htmlEl(doc, 'div', 'attnlab-detail-title', panel, detail.name);
  if (detail.patching) {
    htmlEl(doc, 'span', 'attnlab-detail-sub', head,
      ` · patching score ${fmt(detail.patching.value)} (${detail.patching.direction}, normalised ${metricLabel(detail.patching.metric)})`);
  }

  const att = section(panel, 'Attention pattern', 'attnlab-attention');
  const choose = htmlEl(doc, 'label', 'attnlab-inline', att, 'prompt ');
  const sel = doc.createElement('select');
  sel.className = 'attnlab-prompt-select';
  ctx.prompts.forEach((p, i) => {
    const o = doc.createElement('option');
    o.value = String(i);
    o.textContent = `${i}: ${p}`;
    sel.appendChild(o);
  });
  sel.value = String(ctx.prompt);
  sel.addEventListener('change', () => ctx.onPrompt(Number(sel.value)));
  choose.appendChild(sel);
  const dest = ctx.dest ?? detail.prompt.end;
  patternView(att, detail, dest, ctx.setDest);
  const bars = htmlEl(doc, 'div', 'attnlab-end-attention', att);
  htmlEl(doc, 'div', 'attnlab-chart-title', bars, 'average attention from END, across the prompts');
  barChart(bars, detail.end_attention.map((e: any) => ({ label: `END → ${e.position}`, stat: e })),
    'attention probability, axis 0 to 1', 1, 3);

  const dla = section(panel, 'Direct logit attribution', 'attnlab-dla');
  if (detail.dla) {
    const [a, d] = detail.dla.answer_names;
    barChart(dla, [
      { label: `to ${a}`, stat: detail.dla.answer },
      { label: `to ${d}`, stat: detail.dla.distractor },
      { label: `${a} − ${d}`, stat: detail.dla.difference }
    ], 'logits written directly at END');
  } else {
    htmlEl(doc, 'div', 'attnlab-note', dla, WEIGHTS_NOTE);
  }

  const abl = section(panel, 'Ablation', 'attnlab-ablation');
  const label = metricLabel(detail.ablation.metric);
  const clean = detail.clean_metric ?? detail.clean_logit_diff;
  htmlEl(doc, 'div', 'attnlab-note', abl,
    `clean ${label}: ${pm(clean)}; change when the head's output is replaced (mean: ${detail.ablation.reference}; zero: 0)`);
  barChart(abl, [
    { label: 'mean ablation', stat: detail.ablation.mean.change },
    { label: 'zero ablation', stat: detail.ablation.zero.change }
  ], `change of the ${label}`);
}

function cellDetail(panel: HTMLElement, detail: any): void {
  const doc = panel.ownerDocument;
  const head = htmlEl(doc, 'div', 'attnlab-detail-title', panel, detail.name);
  htmlEl(doc, 'span', 'attnlab-detail-sub', head, ` · ${detail.component} · patching score ${fmt(detail.value)}`);
  const eff = section(panel, 'Effect per prompt', 'attnlab-effect');
  if (detail.effect) {
    barChart(eff, [{ label: 'patched', stat: detail.effect }], `patched ${metricLabel(detail.metric)}`);
  }
  const lens = section(panel, `Logit lens at ${detail.lens_at}, position ${detail.position} (${detail.position_label ?? ''})`, 'attnlab-lens');
  if (!detail.logit_lens) {
    htmlEl(doc, 'div', 'attnlab-note', lens, WEIGHTS_NOTE);
    return;
  }
  htmlEl(doc, 'div', 'attnlab-note', lens, `prompt ${detail.prompt.index}: ${detail.prompt.text}`);
  const table = htmlEl(doc, 'table', 'attnlab-lens-table', lens);
  const hr = htmlEl(doc, 'tr', '', table);
  for (const h of ['token', 'logit', 'probability']) {
    htmlEl(doc, 'th', '', hr, h);
  }
  for (const row of detail.logit_lens.top) {
    const tr = htmlEl(doc, 'tr', '', table);
    htmlEl(doc, 'td', 'attnlab-mono', tr, JSON.stringify(row.token));
    htmlEl(doc, 'td', '', tr, fmt(row.logit, 2));
    htmlEl(doc, 'td', '', tr, fmt(row.prob, 3));
  }
  htmlEl(doc, 'div', 'attnlab-note', lens,
    `logit lens at END, all prompts: logit difference ${pm(detail.logit_lens.end_logit_diff)} logits`);
}

// ---- The widget.

const COMPONENT_HINT: Record<string, string> = {
  heads: 'click a head to see what it does',
  heads_by_pos: 'click a cell to see that head (the position is marked)',
  resid_pre: 'click a cell for its per-prompt effect and the logit lens',
  attn_out: 'click a cell for its per-prompt effect and the logit lens',
  mlp_out: 'click a cell for its per-prompt effect and the logit lens'
};

/** The run settings' inputs, named as the `controls` trait's keys. */
interface ControlInputs {
  task: HTMLSelectElement;
  n_prompts: HTMLInputElement;
  seed: HTMLInputElement;
  corruption: HTMLSelectElement;
  component: HTMLSelectElement;
  direction: HTMLSelectElement;
  metric: HTMLSelectElement;
}

/** The widget's elements that the trait renderers update. */
interface ExplorerDom {
  root: HTMLElement;
  title: HTMLElement;
  inputs: ControlInputs;
  runBtn: HTMLButtonElement;
  cancelBtn: HTMLButtonElement;
  bar: HTMLProgressElement;
  statusText: HTMLElement;
  baselines: HTMLElement;
  historySel: HTMLSelectElement;
  showBtn: HTMLButtonElement;
  exportBtn: HTMLButtonElement;
  plot: HTMLElement;
  panel: HTMLElement;
  circuitBox: HTMLElement;
}

/** Front-end state kept between trait changes. */
interface ExplorerState {
  /** The status message last shown (a new one clears the panel's pending mark). */
  lastMessage: string;
  /** The heatmap drawn, to mark the kernel's selection on it. */
  handle: HeatmapHandle | null;
  /** The attention pattern's destination position (null: END), and the head and prompt it was chosen for. */
  dest: number | null;
  destFor: string;
}

interface ExplorerView {
  model: WidgetModel;
  dom: ExplorerDom;
  state: ExplorerState;
  /** The run comparison's controls and view (see `buildCompare`). */
  cmp?: CompareDom;
}

/** A labelled control appended to `form`. */
function field<T extends HTMLElement>(form: HTMLElement, label: string, input: T): T {
  const l = htmlEl(form.ownerDocument, 'label', 'attnlab-control', form, label + ' ');
  l.appendChild(input);
  return input;
}

function mkSelect(doc: Document, name: string): HTMLSelectElement {
  const s = doc.createElement('select');
  s.name = name;
  return s;
}

function mkNumber(doc: Document, name: string, min: number): HTMLInputElement {
  const i = doc.createElement('input');
  i.type = 'number';
  i.name = name;
  i.min = String(min);
  i.step = '1';
  return i;
}

/** Replace the options of `sel` (labels set as text) and choose `value`. */
function setOptions(sel: HTMLSelectElement, items: { value: string; label: string }[], value: string): void {
  const doc = sel.ownerDocument;
  sel.replaceChildren();
  for (const it of items) {
    const o = doc.createElement('option');
    o.value = it.value;
    o.textContent = it.label;
    sel.appendChild(o);
  }
  sel.value = value;
}

/** The control bar: one input per run setting, then Run and Cancel. */
function buildControls(doc: Document, root: HTMLElement): Pick<ExplorerDom, 'inputs' | 'runBtn' | 'cancelBtn'> {
  const form = htmlEl(doc, 'div', 'attnlab-controls', root);
  const inputs: ControlInputs = {
    task: field(form, 'task', mkSelect(doc, 'task')),
    n_prompts: field(form, 'prompts', mkNumber(doc, 'n_prompts', 1)),
    seed: field(form, 'seed', mkNumber(doc, 'seed', 0)),
    corruption: field(form, 'corruption', mkSelect(doc, 'corruption')),
    component: field(form, 'component', mkSelect(doc, 'component')),
    direction: field(form, 'direction', mkSelect(doc, 'direction')),
    metric: field(form, 'metric', mkSelect(doc, 'metric'))
  };
  const runBtn = htmlEl(doc, 'button', 'attnlab-run', form, 'Run') as HTMLButtonElement;
  const cancelBtn = htmlEl(doc, 'button', 'attnlab-cancel', form, 'Cancel') as HTMLButtonElement;
  return { inputs, runBtn, cancelBtn };
}

/** The progress bar and status line, then the baselines line. */
function buildStatus(doc: Document, root: HTMLElement): Pick<ExplorerDom, 'bar' | 'statusText' | 'baselines'> {
  const statusRow = htmlEl(doc, 'div', 'attnlab-status', root);
  const bar = doc.createElement('progress');
  bar.className = 'attnlab-progress';
  statusRow.appendChild(bar);
  const statusText = htmlEl(doc, 'span', 'attnlab-status-text', statusRow);
  const baselines = htmlEl(doc, 'div', 'attnlab-baselines', root);
  return { bar, statusText, baselines };
}

/** The run-history chooser with its Show and Export buttons. */
function buildHistory(doc: Document, root: HTMLElement): Pick<ExplorerDom, 'historySel' | 'showBtn' | 'exportBtn'> {
  const historyRow = htmlEl(doc, 'div', 'attnlab-history', root);
  htmlEl(doc, 'span', '', historyRow, 'runs ');
  const historySel = doc.createElement('select');
  historySel.className = 'attnlab-history-select';
  historyRow.appendChild(historySel);
  const showBtn = htmlEl(doc, 'button', 'attnlab-show-run', historyRow, 'Show') as HTMLButtonElement;
  const exportBtn = htmlEl(doc, 'button', 'attnlab-export-run', historyRow, 'Export JSON') as HTMLButtonElement;
  return { historySel, showBtn, exportBtn };
}

/** The whole widget, empty: the trait renderers fill it. */
function buildDom(doc: Document, el: HTMLElement): ExplorerDom {
  const root = htmlEl(doc, 'div', 'attnlab-explorer', el);
  const title = htmlEl(doc, 'div', 'attnlab-explorer-title', root);
  const controls = buildControls(doc, root);
  const status = buildStatus(doc, root);
  const history = buildHistory(doc, root);
  const main = htmlEl(doc, 'div', 'attnlab-explorer-main', root);
  const plot = htmlEl(doc, 'div', 'attnlab-explorer-plot', main);
  const panel = htmlEl(doc, 'div', 'attnlab-explorer-detail', main);
  const circuitBox = htmlEl(doc, 'div', 'attnlab-explorer-circuit', root);
  return { root, title, ...controls, ...status, ...history, plot, panel, circuitBox };
}

/** The settings as chosen in the form, as the kernel's `controls` message expects them. */
function formValues(inputs: ControlInputs): Record<string, string | number> {
  return {
    task: inputs.task.value,
    n_prompts: Number(inputs.n_prompts.value),
    seed: Number(inputs.seed.value),
    corruption: inputs.corruption.value,
    component: inputs.component.value,
    direction: inputs.direction.value,
    metric: inputs.metric.value
  };
}

/** Plain options from a list of strings (value = label). */
const plain = (xs: string[]): { value: string; label: string }[] => xs.map(v => ({ value: v, label: v }));

// ---- Trait renderers: each reads the traits it shows and updates its part of the widget.

function renderControls({ model, dom }: ExplorerView): void {
  const c = model.get('controls') ?? {};
  const opts = model.get('options') ?? {};
  const { inputs } = dom;
  dom.title.textContent = `attnlab Explorer · ${model.get('model_name')}`;
  setOptions(inputs.task, opts.tasks ?? [], c.task);
  setOptions(inputs.corruption, plain((opts.corruptions ?? {})[c.task] ?? []), c.corruption);
  setOptions(inputs.component, opts.components ?? [], c.component);
  setOptions(inputs.direction, plain(opts.directions ?? []), c.direction);
  setOptions(inputs.metric, opts.metrics ?? [], c.metric);
  inputs.n_prompts.max = String(opts.max_prompts ?? 512);
  inputs.n_prompts.value = String(c.n_prompts);
  inputs.seed.value = String(c.seed);
}

/** Timing of the run a view is watching: when it saw the run start and when (at which pass count) the passes did. */
interface RunTiming {
  started: number; // ms (performance.now) when this view first saw status 'running'
  stale: string; // the progress value left from the previous run, ignored until it changes
  passStart: number | null; // ms at the reference point of the pass rate
  passBase: number; // passes done at that point
}

/** One timing record per view (keyed by its root element), kept out of the view's own state. */
const runTimings = new WeakMap<HTMLElement, RunTiming>();

/** Seconds as `42 s`, `3:07` or `1:02:05`. */
function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s} s`;
  }
  const two = (n: number) => String(n).padStart(2, '0');
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/**
 * Elapsed and remaining seconds of a running sweep. Remaining comes from the pass rate this view measured (passes
 * since its reference point over the time since), so it appears from the second pass the view sees on.
 */
function runClock(t: RunTiming, done: number, total: number, now: number): { elapsed: number; remaining: number | null } {
  const elapsed = (now - t.started) / 1000;
  if (t.passStart === null || total <= 0 || done <= t.passBase) {
    return { elapsed, remaining: null };
  }
  const rate = (done - t.passBase) / ((now - t.passStart) / 1000); // passes per second
  return { elapsed, remaining: rate > 0 ? (total - done) / rate : null };
}

/**
 * The status line: `status`, then (while running) the pass count, the time elapsed and the time left at the current
 * pass rate, then the message.
 */
function statusLine(status: string, done: number, total: number, msg: string,
                    clockText?: { elapsed: number; remaining: number | null }): string {
  const running = status === 'running';
  let line = status;
  if (running && total) {
    line += ` · pass ${done}/${total}`;
  }
  if (running && clockText) {
    line += ` · ${clock(clockText.elapsed)} elapsed`;
    if (clockText.remaining !== null && done < total) {
      line += ` · about ${clock(clockText.remaining)} left`;
    }
  }
  return line + (msg ? ' · ' + msg : '');
}

/** The timing record of a view for this render: a new one when a run starts, null when no run is going on. */
function trackRun(root: HTMLElement, running: boolean, done: number, total: number): RunTiming | null {
  const key = `${done}/${total}`;
  const now = performance.now();
  let t = runTimings.get(root) ?? null;
  if (!running) {
    runTimings.delete(root);
    return null;
  }
  if (t === null) {
    // the previous run's count stays in `progress` until this run's first pass: ignore it until it changes
    t = { started: now, stale: key, passStart: null, passBase: 0 };
    runTimings.set(root, t);
  } else if (t.stale !== '' && key !== t.stale) {
    t.stale = '';
  }
  if (t.stale === '' && total > 0 && t.passStart === null) {
    t.passStart = now; // the first pass count of this run this view sees: the rate is measured from here
    t.passBase = done;
  }
  return t;
}

function renderStatus({ model, dom, state }: ExplorerView): void {
  const status: string = model.get('status');
  const [rawDone, rawTotal] = model.get('progress') ?? [0, 0];
  const { bar, statusText } = dom;
  dom.root.setAttribute('data-status', status);
  const running = status === 'running';
  dom.runBtn.disabled = running;
  dom.cancelBtn.disabled = !running;
  const timing = trackRun(dom.root, running, rawDone, rawTotal);
  const fresh = timing === null || timing.stale === '';
  const [done, total] = fresh ? [rawDone, rawTotal] : [0, 0];
  if (running && total > 0) {
    bar.max = total;
    bar.value = done;
  } else if (running) {
    bar.removeAttribute('value'); // indeterminate while the dataset and baselines are prepared
  } else {
    bar.max = 1;
    bar.value = status === 'done' ? 1 : 0;
  }
  const msg: string = model.get('message') ?? '';
  const clockText = timing === null ? undefined : runClock(timing, done, total, performance.now());
  statusText.textContent = statusLine(status, done, total, msg, clockText);
  statusText.classList.toggle('attnlab-error-text', status === 'error');
  if (msg && msg !== state.lastMessage) {
    dom.panel.removeAttribute('data-pending'); // e.g. a rejected selection: nothing more will arrive
  }
  state.lastMessage = msg;
  scheduleClockTick(dom.root, () => renderStatus({ model, dom, state }), running);
}

/** While a run goes on, redraw the status line every second, so the elapsed time moves between passes. */
const clockTimers = new WeakMap<HTMLElement, number>();
function scheduleClockTick(root: HTMLElement, redraw: () => void, running: boolean): void {
  const win = root.ownerDocument.defaultView;
  const pending = clockTimers.get(root);
  if (pending !== undefined) {
    win?.clearTimeout(pending);
    clockTimers.delete(root);
  }
  if (running && win && root.isConnected) {
    clockTimers.set(root, win.setTimeout(redraw, 1000));
  }
}

/** The baselines line, or a prompt to run when there is no run yet. */
function baselinesLine(b: { clean?: number; corrupted?: number; label?: string }): string {
  return b.clean === undefined
    ? 'no run yet: choose the settings and press Run'
    : `clean ${b.label ?? 'logit difference (logits)'} ${fmt(b.clean)} · corrupted ${fmt(b.corrupted)}` +
        ' (mean over prompts)';
}

function renderBaselines({ model, dom }: ExplorerView): void {
  const b = model.get('baselines') ?? {};
  dom.baselines.textContent = baselinesLine(b);
  // Baselines too close for normalised scores to mean much (attnlab.results.baseline_check): said right here.
  for (const w of Array.isArray(b.warnings) ? b.warnings : []) {
    htmlEl(dom.baselines.ownerDocument, 'div', 'attnlab-warning attnlab-baseline-warning', dom.baselines, `⚠ ${String(w)}`);
  }
}

function renderHistory({ model, dom }: ExplorerView): void {
  const runs: { index: number; label: string }[] = model.get('run_history') ?? [];
  const items = runs.map(r => ({ value: String(r.index), label: `#${r.index} · ${r.label}` }));
  setOptions(dom.historySel, items, String(model.get('current_run')));
  dom.showBtn.disabled = dom.exportBtn.disabled = runs.length === 0;
}

function renderPlot(view: ExplorerView): void {
  const { model, dom, state } = view;
  const doc = dom.plot.ownerDocument;
  const payload = model.get('heatmap') as HeatmapPayload;
  if (!payload || !payload.values) {
    dom.plot.replaceChildren();
    htmlEl(doc, 'div', 'attnlab-note', dom.plot, 'The result heatmap appears here after a run.');
    state.handle = null;
    return;
  }
  state.handle = renderHeatmap(dom.plot, payload);
  const hint = COMPONENT_HINT[(model.get('controls') ?? {}).component] ?? '';
  htmlEl(doc, 'div', 'attnlab-note', dom.plot, hint);
  renderSelection(view);
}

function renderSelection({ model, dom, state }: ExplorerView): void {
  const cell: number[] = model.get('selected_cell') ?? [];
  state.handle?.select(cell.length === 2 ? cell[0] : null, cell[1]);
  dom.root.setAttribute('data-selected', model.get('selected_name') ?? '');
}

function renderDetail(view: ExplorerView): void {
  const { model, dom, state } = view;
  const { panel } = dom;
  const doc = panel.ownerDocument;
  const detail = model.get('detail_payload') ?? {};
  panel.replaceChildren();
  panel.removeAttribute('data-pending');
  if (!detail.kind) {
    panel.setAttribute('data-kind', 'none');
    panel.removeAttribute('data-name');
    const note = 'Select a cell of the heatmap (click, or arrow keys and Enter) to see its detail here.';
    htmlEl(doc, 'div', 'attnlab-note', panel, note);
    return;
  }
  panel.setAttribute('data-kind', detail.kind);
  panel.setAttribute('data-name', detail.name);
  const key = `${detail.name}|${detail.prompt?.index}`;
  if (key !== state.destFor) {
    state.dest = null; // a new head or prompt looks from END again
    state.destFor = key;
  }
  if (detail.kind === 'head') {
    headDetail(panel, detail, {
      dest: state.dest,
      setDest: d => {
        state.dest = d;
        renderDetail(view);
      },
      prompts: model.get('prompts') ?? [],
      prompt: model.get('detail_prompt') ?? 0,
      onPrompt: i => model.send({ type: 'prompt', index: i })
    });
  } else if (detail.kind === 'cell') {
    cellDetail(panel, detail);
  } else {
    htmlEl(doc, 'div', 'attnlab-note', panel, `${detail.name}: ${detail.message ?? ''}`);
  }
  decorateDetail(view, detail);
}

function renderCircuitView({ model, dom }: ExplorerView): void {
  const { circuitBox } = dom;
  const doc = circuitBox.ownerDocument;
  const payload = model.get('circuit') as CircuitPayload;
  circuitBox.replaceChildren();
  if (payload && (payload as any).kind) {
    htmlEl(doc, 'div', 'attnlab-note', circuitBox, 'click a head of the circuit to open its detail panel above');
    const host = htmlEl(doc, 'div', '', circuitBox);
    renderCircuit(host, payload);
  }
}

// ---- User input: each becomes a custom message to the kernel.

function bindControls({ model, dom }: ExplorerView): void {
  const { inputs, historySel } = dom;
  for (const input of Object.values(inputs) as HTMLElement[]) {
    input.addEventListener('change', () => model.send({ type: 'controls', controls: formValues(inputs) }));
  }
  dom.runBtn.addEventListener('click', () => model.send({ type: 'run', controls: formValues(inputs) }));
  dom.cancelBtn.addEventListener('click', () => model.send({ type: 'cancel' }));
  dom.showBtn.addEventListener('click', () => model.send({ type: 'show_run', index: Number(historySel.value) }));
  dom.exportBtn.addEventListener('click', () => model.send({ type: 'export', index: Number(historySel.value) }));
}

/** A heatmap cell or a circuit head selects; the detail panel is dimmed until the kernel's answer arrives. */
function bindSelection({ model, dom }: ExplorerView): void {
  dom.plot.addEventListener(CELL_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    const cur: number[] = model.get('selected_cell') ?? [];
    if (cur[0] !== d.row || cur[1] !== d.col) {
      dom.panel.setAttribute('data-pending', 'true'); // dimmed until the kernel's answer arrives
    }
    model.send({ type: 'select', row: d.row, col: d.col });
  });
  dom.circuitBox.addEventListener(NODE_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    if (d && typeof d.head === 'number' && typeof d.layer === 'number') {
      dom.panel.setAttribute('data-pending', 'true');
      model.send({ type: 'select_head', layer: d.layer, head: d.head });
    }
  });
}

/** The kernel's answer to Export JSON: download its content as a file. */
function onCustomMessage(doc: Document, msg: any): void {
  if (msg && msg.type === 'export') {
    const blob = new Blob([msg.content], { type: 'application/json' });
    const a = doc.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = msg.filename;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }
}

/** Which renderer each trait change runs. */
function traitHandlers(view: ExplorerView): [string, () => void][] {
  const run = (fn: (v: ExplorerView) => void) => () => fn(view);
  const controls = run(renderControls);
  const status = run(renderStatus);
  const history = run(renderHistory);
  const selection = run(renderSelection);
  const detail = run(renderDetail);
  return [
    ['change:controls', controls],
    ['change:options', controls],
    ['change:status', status],
    ['change:message', status],
    ['change:progress', status],
    ['change:baselines', run(renderBaselines)],
    ['change:run_history', history],
    ['change:current_run', history],
    ['change:heatmap', run(renderPlot)],
    ['change:selected_cell', selection],
    ['change:selected_name', selection],
    ['change:detail_payload', detail],
    ['change:prompts', detail],
    ['change:circuit', run(renderCircuitView)],
    ['change:comparison', run(renderComparison)],
    ['change:run_history', run(renderCompareChoices)]
  ];
}

// ---- Runs compared, detail-panel figures (self-contained: new functions only).

/** The comparison's controls (two runs, the scores) and the view under the heatmap. */
interface CompareDom {
  a: HTMLSelectElement;
  b: HTMLSelectElement;
  scores: HTMLSelectElement;
  button: HTMLButtonElement;
  box: HTMLElement;
}

/**
 * "compare run A with run B" controls after the history row, and the comparison view's box after the main area.
 * Compare sends `{type: 'compare', a, b, scores}`; the kernel answers with the `comparison` trait.
 */
function buildCompare(doc: Document, view: ExplorerView): CompareDom {
  const { dom, model } = view;
  const row = doc.createElement('div');
  row.className = 'attnlab-compare-controls';
  dom.root.insertBefore(row, dom.plot.parentElement);
  htmlEl(doc, 'span', '', row, 'compare run ');
  const a = doc.createElement('select');
  a.className = 'attnlab-compare-a';
  row.appendChild(a);
  htmlEl(doc, 'span', '', row, ' with ');
  const b = doc.createElement('select');
  b.className = 'attnlab-compare-b';
  row.appendChild(b);
  const scores = doc.createElement('select');
  scores.className = 'attnlab-compare-scores';
  setOptions(scores, [
    { value: 'normalised', label: 'normalised scores (A − B, fractions of each gap)' },
    { value: 'raw', label: 'raw patched metric (A − B, metric units)' }
  ], 'normalised');
  row.appendChild(scores);
  const button = htmlEl(doc, 'button', 'attnlab-compare-run', row, 'Compare') as HTMLButtonElement;
  button.addEventListener('click', () =>
    model.send({ type: 'compare', a: Number(a.value), b: Number(b.value), scores: scores.value }));
  const box = doc.createElement('div');
  box.className = 'attnlab-explorer-compare';
  box.hidden = true;
  dom.root.insertBefore(box, dom.circuitBox);
  return { a, b, scores, button, box };
}

/** The run menus of the comparison: A defaults to the run shown, B to the run before it. */
function renderCompareChoices(view: ExplorerView): void {
  const cmp = view.cmp;
  if (!cmp) {
    return;
  }
  const runs: { index: number; label: string }[] = view.model.get('run_history') ?? [];
  const items = runs.map(r => ({ value: String(r.index), label: `#${r.index} · ${r.label}` }));
  const keep = (sel: HTMLSelectElement, fallback: number): string =>
    runs.some(r => String(r.index) === sel.value) ? sel.value : String(Math.max(0, fallback));
  const n = runs.length;
  const av = keep(cmp.a, n - 1);
  const bv = keep(cmp.b, n - 2);
  setOptions(cmp.a, items, av);
  setOptions(cmp.b, items, bv);
  cmp.button.disabled = n < 2;
}

/** Runs A and B side by side on one colour scale, and their difference; or why they cannot be compared. */
function renderComparison(view: ExplorerView): void {
  const cmp = view.cmp;
  if (!cmp) {
    return;
  }
  const { box } = cmp;
  const doc = box.ownerDocument;
  const c = view.model.get('comparison') ?? {};
  box.replaceChildren();
  box.removeAttribute('data-scores');
  if (!c.a && !c.error) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const head = htmlEl(doc, 'div', 'attnlab-compare-header', box);
  htmlEl(doc, 'div', 'attnlab-title', head, `Runs compared: #${c.a_index} (A) and #${c.b_index} (B)`);
  const close = htmlEl(doc, 'button', 'attnlab-compare-close', head, 'Close') as HTMLButtonElement;
  close.setAttribute('data-export', 'skip');
  close.addEventListener('click', () => view.model.send({ type: 'close_compare' }));
  if (c.error) {
    box.setAttribute('data-error', 'true');
    htmlEl(doc, 'div', 'attnlab-error-text attnlab-compare-error', box, `cannot compare: ${String(c.error)}`);
    return;
  }
  box.removeAttribute('data-error');
  box.setAttribute('data-scores', String(c.scores));
  const names: string[] = c.names ?? [];
  const sub = htmlEl(doc, 'div', 'attnlab-subtitle', box,
    `A = ${names[0] ?? ''} · B = ${names[1] ?? ''} · ` +
      (c.scores === 'raw' ? 'raw patched metric, in its units' : 'normalised scores (each run against its own gap)') +
      '; the difference is A − B on the cells both runs computed; one colour scale for all three');
  sub.setAttribute('data-export-text', '');
  for (const note of c.notes ?? []) {
    htmlEl(doc, 'div', 'attnlab-note attnlab-compare-note', box, String(note)).setAttribute('data-export-text', '');
  }
  const toolbar = htmlEl(doc, 'div', 'attnlab-heatmap-toolbar', box);
  toolbar.setAttribute('data-export', 'skip');
  const grid = htmlEl(doc, 'div', 'attnlab-compare-grid', box);
  const payloads = [c.a, c.b, c.diff] as HeatmapPayload[];
  const values = payloads.map(p => p.values);
  let choice: ScaleChoice = payloadScale(c.diff);
  let zmax = scaleLimit(values, choice);
  const handles = (['a', 'b', 'diff'] as const).map((key, i) => {
    const panel = htmlEl(doc, 'div', 'attnlab-compare-panel', grid);
    panel.setAttribute('data-panel', key);
    return renderHeatmap(panel, payloads[i], { scale: choice, scaleValues: values, scaleControl: false });
  });
  scaleControl(toolbar, () => ({ choice, zmax }), next => {
    choice = next;
    zmax = scaleLimit(values, choice);
    handles.forEach(h => h.setScale(next));
  });
  exportButtons(toolbar, () => box, () => fileStem(`attnlab-compare-${c.a_index}-${c.b_index}`));
}

/** The attention strip's colour bar: shading from 0 to this row's largest weight, as `patternView` draws it. */
function patternColourBar(section: HTMLElement, strip: HTMLElement): void {
  const doc = section.ownerDocument;
  const weights = Array.from(strip.querySelectorAll('[data-attn]'))
    .map(el => Number(el.getAttribute('data-attn')))
    .filter(v => Number.isFinite(v));
  const max = Math.max(1e-9, ...weights);
  const W = 420;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-legend attnlab-pattern-legend', width: W, height: 34, viewBox: `0 0 ${W} 34`, role: 'img',
    'aria-label': `shading: attention probability from 0 (white) to ${fmt(max, 3)} (darkest), this row's largest weight` });
  const id = `attnlab-pattern-grad-${Math.random().toString(36).slice(2)}`;
  const grad = svgEl(doc, 'linearGradient', { id, x1: 0, x2: 1, y1: 0, y2: 0 }, svgEl(doc, 'defs', {}, svg));
  svgEl(doc, 'stop', { offset: '0%', 'stop-color': 'rgb(255, 255, 255)' }, grad);
  svgEl(doc, 'stop', { offset: '100%', 'stop-color': 'rgb(178, 24, 43)', 'stop-opacity': 0.85 }, grad);
  svgEl(doc, 'rect', { x: 10, y: 3, width: 160, height: 10, fill: `url(#${id})`, class: 'attnlab-legend-bar' }, svg);
  for (const [f, text] of [[0, '0'], [1, fmt(max, 3)]] as [number, string][]) {
    svgEl(doc, 'line', { x1: 10 + 160 * f, x2: 10 + 160 * f, y1: 13, y2: 17, class: 'attnlab-tick' }, svg);
    const t = svgEl(doc, 'text', { x: 10 + 160 * f, y: 27, 'text-anchor': 'middle', class: 'attnlab-legend-tick' }, svg);
    t.textContent = text;
  }
  const lab = svgEl(doc, 'text', { x: 200, y: 8, 'dominant-baseline': 'central', class: 'attnlab-legend-label' }, svg);
  lab.textContent = 'attention probability';
  const lab2 = svgEl(doc, 'text', { x: 200, y: 23, 'dominant-baseline': 'central', class: 'attnlab-legend-tick' }, svg);
  lab2.textContent = "(darkest = this row's largest weight)";
  strip.insertAdjacentElement('afterend', svg);
}

/**
 * After a detail panel is drawn: each section gets SVG/PNG export buttons in its heading (the figure holds the
 * heading, its captions and charts), and the attention strip gets a colour bar and is exported as boxes.
 */
function decorateDetail(view: ExplorerView, detail: any): void {
  const panel = view.dom.panel;
  const name = String(detail?.name ?? 'detail');
  const modelName = String(view.model.get('model_name') ?? '');
  const prompts: string[] = view.model.get('prompts') ?? [];
  panel.querySelectorAll('.attnlab-detail-title').forEach(el => el.setAttribute('data-export-text', 'title'));
  panel.querySelectorAll('section.attnlab-detail-section').forEach(node => {
    const sec = node as HTMLElement;
    const heading = sec.querySelector('.attnlab-detail-heading') as HTMLElement | null;
    if (!heading || sec.querySelector('.attnlab-export')) {
      return;
    }
    heading.setAttribute('data-export-text', 'title');
    sec.querySelectorAll('.attnlab-pattern-caption, .attnlab-chart-title, .attnlab-bar-caption, .attnlab-note').forEach(el =>
      el.setAttribute('data-export-text', ''));
    sec.querySelectorAll('table tr').forEach(tr => tr.setAttribute('data-export-boxes', '')); // the logit lens
    const strip = sec.querySelector('.attnlab-pattern') as HTMLElement | null;
    if (strip) {
      strip.setAttribute('data-export-boxes', '');
      patternColourBar(sec, strip);
    }
    const what = heading.textContent ?? '';
    const p = detail?.prompt?.index;
    exportButtons(heading, () => sec, () => fileStem(`${name}-${what}`), () =>
      `${modelName} · ${name}` + (strip && typeof p === 'number' ? ` · prompt ${p}` + (prompts[p] ? `: ${prompts[p]}` : '') : ''));
  });
}

// ---- Your own prompts: a form that sends clean/corrupted pairs to the kernel, which checks them.

const CUSTOM_STYLE_ID = 'attnlab-explorer-custom-css';
const CUSTOM_CSS = `
.attnlab-custom { margin: 6px 0; border: 1px solid #ddd; border-radius: 4px; padding: 4px 8px; }
.attnlab-custom > summary { cursor: pointer; font-weight: 600; }
.attnlab-custom-grid { display: grid; grid-template-columns: max-content 1fr; gap: 4px 8px; align-items: center; margin-top: 6px; }
.attnlab-custom-grid input { width: 100%; box-sizing: border-box; font-family: var(--jp-code-font-family, monospace); }
.attnlab-custom-words { display: flex; gap: 12px; flex-wrap: wrap; }
.attnlab-custom-words input { width: 12em; }
.attnlab-custom textarea { width: 100%; box-sizing: border-box; min-height: 4.5em; font-family: var(--jp-code-font-family, monospace); }
.attnlab-custom-hint { color: #555; font-size: 12px; margin: 4px 0; }
.attnlab-custom-error { white-space: pre-wrap; color: #b2182b; font-family: var(--jp-code-font-family, monospace); font-size: 12px; margin: 4px 0; }
.attnlab-custom-info { font-size: 12px; margin: 4px 0; }
.attnlab-custom-strip { margin: 2px 0; line-height: 1.9; }
.attnlab-custom-strip .attnlab-token { display: inline-block; border: 1px solid #ccc; border-radius: 3px; padding: 0 2px; margin: 0 1px; font-family: var(--jp-code-font-family, monospace); }
.attnlab-custom-strip .attnlab-token-changed { background: #fddbc7; border-color: #b2182b; }
`;

/** A token strip of the preview: one span per token, the changed positions marked. */
function customStrip(parent: HTMLElement, label: string, tokens: string[], changed: Set<number>): void {
  const doc = parent.ownerDocument;
  const row = htmlEl(doc, 'div', 'attnlab-custom-strip', parent);
  htmlEl(doc, 'span', 'attnlab-custom-label', row, `${label}: `);
  tokens.forEach((t, i) => {
    const span = htmlEl(doc, 'span', 'attnlab-token', row, showToken(t));
    span.setAttribute('data-pos', String(i));
    span.title = `${JSON.stringify(t)} · position ${i}`;
    if (changed.has(i)) {
      span.classList.add('attnlab-token-changed');
    }
  });
}

/**
 * The "Your own prompts" form, under the controls: a clean prompt, a corrupted prompt, the answer and the distractor
 * (words: the kernel puts the leading space before them; a word in double quotes is taken exactly), or pasted pairs
 * one a line. "Use these prompts" sends them (`{type: 'custom_prompts', ...}`); the kernel answers through the
 * `custom_prompts` trait with the refusal's explanation (`.attnlab-custom-error`, as text) or a preview of the first
 * pair's tokens, and selects the "your own prompts" task. Returns the function that detaches its listeners.
 */
function attachCustomPrompts({ model, dom }: ExplorerView): () => void {
  const doc = dom.root.ownerDocument;
  if (!doc.getElementById(CUSTOM_STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = CUSTOM_STYLE_ID;
    style.textContent = CUSTOM_CSS;
    (doc.head ?? doc.documentElement).appendChild(style);
  }
  const box = doc.createElement('details');
  box.className = 'attnlab-custom';
  const controls = dom.root.querySelector('.attnlab-controls');
  if (controls) {
    controls.insertAdjacentElement('afterend', box);
  } else {
    dom.root.appendChild(box);
  }
  htmlEl(doc, 'summary', '', box, 'Your own prompts');
  const grid = htmlEl(doc, 'div', 'attnlab-custom-grid', box);
  const input = (label: string, name: string, parent: HTMLElement, placeholder: string): HTMLInputElement => {
    const l = htmlEl(doc, 'label', 'attnlab-custom-field', parent, label + ' ');
    const i = doc.createElement('input');
    i.type = 'text';
    i.name = name;
    i.placeholder = placeholder;
    i.spellcheck = false;
    if (parent === grid) {
      parent.appendChild(i);
    } else {
      l.appendChild(i);
    }
    return i;
  };
  const clean = input('clean prompt', 'custom_clean', grid, 'When Mary and John went to the store, John gave a drink to');
  const corrupted = input('corrupted prompt', 'custom_corrupted', grid, 'When Mary and John went to the store, Mary gave a drink to');
  const words = htmlEl(doc, 'div', 'attnlab-custom-words', box);
  const answer = input('answer', 'custom_answer', words, 'Mary');
  const distractor = input('distractor', 'custom_distractor', words, 'John');
  htmlEl(doc, 'div', 'attnlab-custom-hint', box,
    'Answers are words: the model\'s next token is the word with its leading space (Mary means " Mary"); ' +
      'put a word in double quotes to use its exact text. Or paste pairs, one a line (tab-separated works too):');
  const lines = doc.createElement('textarea');
  lines.name = 'custom_lines';
  lines.placeholder = 'clean prompt | corrupted prompt | answer | distractor';
  lines.spellcheck = false;
  box.appendChild(lines);
  const useBtn = htmlEl(doc, 'button', 'attnlab-custom-use', box, 'Use these prompts') as HTMLButtonElement;
  const error = htmlEl(doc, 'div', 'attnlab-custom-error', box);
  const info = htmlEl(doc, 'div', 'attnlab-custom-info', box);

  const renderForm = (): void => {
    const state = model.get('custom_prompts') ?? {};
    box.removeAttribute('data-pending');
    error.textContent = state.error ?? '';
    info.replaceChildren();
    box.setAttribute('data-state', state.error ? 'error' : state.pairs ? 'ok' : 'empty');
    if (state.error) {
      box.open = true;
    } else if (state.pairs) {
      const n = state.pairs;
      htmlEl(doc, 'div', '', info,
        `${n} pair${n === 1 ? '' : 's'} of ${state.n_pos} tokens each, checked: task "your own prompts" selected; press Run. ` +
          `Pair 0 (changed tokens marked), answer ${JSON.stringify(state.answers?.[0] ?? '')} vs distractor ${JSON.stringify(state.answers?.[1] ?? '')}:`);
      const changed = new Set<number>(state.changed ?? []);
      customStrip(info, 'clean', state.clean ?? [], changed);
      customStrip(info, 'corrupted', state.corrupted ?? [], changed);
    }
  };
  const onControls = (): void => {
    if ((model.get('controls') ?? {}).task === 'custom' && !box.open) {
      box.open = true;
    }
  };
  useBtn.addEventListener('click', () => {
    box.setAttribute('data-pending', 'true');
    model.send({
      type: 'custom_prompts',
      clean: clean.value,
      corrupted: corrupted.value,
      answer: answer.value,
      distractor: distractor.value,
      lines: lines.value
    });
  });
  model.on('change:custom_prompts', renderForm);
  model.on('change:controls', onControls);
  renderForm();
  onControls();
  return () => {
    model.off('change:custom_prompts', renderForm);
    model.off('change:controls', onControls);
  };
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const view: ExplorerView = {
    model,
    dom: buildDom(doc, el),
    state: { lastMessage: '', handle: null, dest: null, destFor: '' }
  };
  view.cmp = buildCompare(doc, view);
  bindControls(view);
  bindSelection(view);
  const detachCustom = attachCustomPrompts(view);
  const handlers = traitHandlers(view);
  const onCustom = (msg: any) => onCustomMessage(doc, msg);
  for (const [ev, fn] of handlers) {
    model.on(ev, fn);
  }
  model.on('msg:custom', onCustom);
  const initial = [renderControls, renderStatus, renderBaselines, renderHistory, renderPlot, renderDetail, renderCircuitView,
    renderCompareChoices, renderComparison];
  for (const fn of initial) {
    fn(view);
  }

  return () => {
    for (const [ev, fn] of handlers) {
      model.off(ev, fn);
    }
    model.off('msg:custom', onCustom);
    detachCustom();
  };
}

export default { render };
