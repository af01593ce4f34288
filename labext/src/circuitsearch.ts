/**
 * Front end of `attnlab.CircuitSearch`, an anywidget module (ES module with a default `{ render }` export).
 *
 * esbuild bundles this file with labext's circuit view, the Explorer's head panel and the stylesheets into
 * `attnlab/circuit_search/static/circuitsearch.js`; the Python widget sends that text as its `_esm` trait. State
 * arrives through synced traits (see `attnlab/circuit_search/widget.py`); clicks go back as custom messages
 * (`{type: 'run', controls}`, `{type: 'size', n}`, `{type: 'select_head', layer, head}` ...). The faithfulness shown
 * for a size is the `curve` trait's number for that size, which the kernel computed: the view never computes one.
 * Every string from the kernel (prompts, tokens, names, messages) is set as text.
 */

import explorerCss from '../style/explorer.css';
import indexCss from '../style/index.css';
import { type CircuitHandle, NODE_CLICK_EVENT, renderCircuit } from './circuit';
import type { CircuitCurve, CircuitPayload } from './contract';
import { htmlEl } from './dom';
import { headDetail } from './explorer';

// ---- The slice of anywidget's model API used here.
interface WidgetModel {
  get(name: string): any;
  send(content: unknown): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string, cb?: (...args: any[]) => void): void;
}

const STYLE_ID = 'attnlab-circuitsearch-css';

const OWN_CSS = `
.attnlab-circuitsearch .attnlab-circuitsearch-box { margin-top: 8px; }
.attnlab-circuitsearch .attnlab-circuitsearch-lower { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; margin-top: 8px; }
.attnlab-circuitsearch .attnlab-explorer-detail { position: static; }
.attnlab-circuitsearch .attnlab-compare { flex: 1 1 300px; max-width: 520px; border-left: 3px solid var(--jp-border-color1, #bbb); padding: 4px 10px; }
.attnlab-circuitsearch .attnlab-compare-numbers { font-variant-numeric: tabular-nums; margin: 4px 0; }
.attnlab-circuitsearch .attnlab-compare-list { font-family: var(--jp-code-font-family, monospace); font-size: 12px; overflow-wrap: anywhere; }
.attnlab-circuitsearch .attnlab-evaluate { display: inline-flex; align-items: center; gap: 6px; margin: 4px 0; }
.attnlab-circuitsearch .attnlab-evaluate input { width: 6em; }
.attnlab-circuitsearch .attnlab-hidden { display: none; }
`;

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = indexCss + '\n' + explorerCss + '\n' + OWN_CSS;
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}

const fmt = (x: number | null | undefined, digits = 3): string =>
  typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '–';

// ---- DOM ------------------------------------------------------------------------------------------------------

interface Inputs {
  task: HTMLSelectElement;
  corruption: HTMLSelectElement;
  n_prompts: HTMLInputElement;
  seed: HTMLInputElement;
  method: HTMLSelectElement;
  steps: HTMLInputElement;
  threshold: HTMLInputElement;
  max_edges: HTMLInputElement;
  metric: HTMLSelectElement;
}

interface Dom {
  root: HTMLElement;
  title: HTMLElement;
  inputs: Inputs;
  stepsLabel: HTMLElement;
  thresholdLabel: HTMLElement;
  runBtn: HTMLButtonElement;
  cancelBtn: HTMLButtonElement;
  bar: HTMLProgressElement;
  statusText: HTMLElement;
  historySel: HTMLSelectElement;
  showBtn: HTMLButtonElement;
  circuitBox: HTMLElement;
  evalInput: HTMLInputElement;
  evalBtn: HTMLButtonElement;
  panel: HTMLElement;
  compareSel: HTMLSelectElement;
  compareBtn: HTMLButtonElement;
  compareOut: HTMLElement;
}

interface State {
  handle: CircuitHandle | null;
  dest: number | null;
  destFor: string;
}

interface View {
  model: WidgetModel;
  dom: Dom;
  state: State;
}

function labelled<T extends HTMLElement>(form: HTMLElement, label: string, input: T): [T, HTMLElement] {
  const l = htmlEl(form.ownerDocument, 'label', 'attnlab-control', form, label + ' ');
  l.appendChild(input);
  return [input, l];
}

function mkSelect(doc: Document, name: string): HTMLSelectElement {
  const s = doc.createElement('select');
  s.name = name;
  return s;
}

function mkNumber(doc: Document, name: string, min: number, step = '1'): HTMLInputElement {
  const i = doc.createElement('input');
  i.type = 'number';
  i.name = name;
  i.min = String(min);
  i.step = step;
  return i;
}

function mkButton(doc: Document, parent: HTMLElement, cls: string, text: string): HTMLButtonElement {
  const b = htmlEl(doc, 'button', cls, parent, text) as HTMLButtonElement;
  b.type = 'button';
  return b;
}

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

function buildDom(doc: Document, el: HTMLElement): Dom {
  const root = htmlEl(doc, 'div', 'attnlab-explorer attnlab-circuitsearch', el);
  const title = htmlEl(doc, 'div', 'attnlab-explorer-title', root);
  const form = htmlEl(doc, 'div', 'attnlab-controls', root);
  const [task] = labelled(form, 'task', mkSelect(doc, 'task'));
  const [corruption] = labelled(form, 'corruption', mkSelect(doc, 'corruption'));
  const [n_prompts] = labelled(form, 'prompts', mkNumber(doc, 'n_prompts', 1));
  const [seed] = labelled(form, 'seed', mkNumber(doc, 'seed', 0));
  const [method] = labelled(form, 'method', mkSelect(doc, 'method'));
  const [steps, stepsLabel] = labelled(form, 'steps', mkNumber(doc, 'steps', 1));
  const [threshold, thresholdLabel] = labelled(form, 'threshold τ', mkNumber(doc, 'threshold', 0, 'any'));
  const [max_edges] = labelled(form, 'largest circuit (edges)', mkNumber(doc, 'max_edges', 1));
  const [metric] = labelled(form, 'metric', mkSelect(doc, 'metric'));
  const runBtn = mkButton(doc, form, 'attnlab-run', 'Run');
  const cancelBtn = mkButton(doc, form, 'attnlab-cancel', 'Cancel');
  const statusRow = htmlEl(doc, 'div', 'attnlab-status', root);
  const bar = doc.createElement('progress');
  bar.className = 'attnlab-progress';
  statusRow.appendChild(bar);
  const statusText = htmlEl(doc, 'span', 'attnlab-status-text', statusRow);
  const history = htmlEl(doc, 'div', 'attnlab-history', root);
  htmlEl(doc, 'span', '', history, 'runs ');
  const historySel = doc.createElement('select');
  historySel.className = 'attnlab-history-select';
  history.appendChild(historySel);
  const showBtn = mkButton(doc, history, 'attnlab-show-run', 'Show');
  const circuitBox = htmlEl(doc, 'div', 'attnlab-circuitsearch-box attnlab-circuitsearch-circuit', root);
  const evalRow = htmlEl(doc, 'div', 'attnlab-evaluate', root);
  htmlEl(doc, 'span', '', evalRow, 'evaluate another size:');
  const evalInput = mkNumber(doc, 'evaluate_size', 1);
  evalRow.appendChild(evalInput);
  htmlEl(doc, 'span', '', evalRow, 'edges');
  const evalBtn = mkButton(doc, evalRow, 'attnlab-evaluate-btn', 'Evaluate');
  const lower = htmlEl(doc, 'div', 'attnlab-circuitsearch-lower', root);
  const panel = htmlEl(doc, 'div', 'attnlab-explorer-detail', lower);
  const compare = htmlEl(doc, 'div', 'attnlab-compare', lower);
  htmlEl(doc, 'div', 'attnlab-detail-title', compare, 'Compare with another task');
  const crow = htmlEl(doc, 'div', 'attnlab-controls', compare);
  const [compareSel] = labelled(crow, 'task', mkSelect(doc, 'compare_task'));
  const compareBtn = mkButton(doc, crow, 'attnlab-compare-btn', 'Run and compare');
  const compareOut = htmlEl(doc, 'div', 'attnlab-compare-out', compare);
  return {
    root, title, inputs: { task, corruption, n_prompts, seed, method, steps, threshold, max_edges, metric },
    stepsLabel, thresholdLabel, runBtn, cancelBtn, bar, statusText, historySel, showBtn, circuitBox, evalInput,
    evalBtn, panel, compareSel, compareBtn, compareOut
  };
}

function formValues(inputs: Inputs): Record<string, string | number> {
  return {
    task: inputs.task.value,
    corruption: inputs.corruption.value,
    n_prompts: Number(inputs.n_prompts.value),
    seed: Number(inputs.seed.value),
    method: inputs.method.value,
    steps: Number(inputs.steps.value),
    threshold: Number(inputs.threshold.value),
    max_edges: Number(inputs.max_edges.value),
    metric: inputs.metric.value
  };
}

const plain = (xs: string[]): { value: string; label: string }[] => xs.map(v => ({ value: v, label: v }));

// ---- Trait renderers ------------------------------------------------------------------------------------------

function renderControls({ model, dom }: View): void {
  const c = model.get('controls') ?? {};
  const o = model.get('options') ?? {};
  const { inputs } = dom;
  dom.title.textContent = `attnlab circuit search · ${model.get('model_name')} · ${o.n_graph_edges ?? '?'} edges in ` +
    `the graph · faithfulness with ${o.source ?? 'mean'} ablation`;
  setOptions(inputs.task, o.tasks ?? [], c.task);
  setOptions(inputs.corruption, plain((o.corruptions ?? {})[c.task] ?? []), c.corruption);
  setOptions(inputs.method, o.methods ?? [], c.method);
  setOptions(inputs.metric, o.metrics ?? [], c.metric);
  inputs.n_prompts.max = String(o.max_prompts ?? 512);
  inputs.n_prompts.value = String(c.n_prompts);
  inputs.seed.value = String(c.seed);
  inputs.steps.value = String(c.steps);
  inputs.threshold.value = String(c.threshold);
  inputs.max_edges.value = String(c.max_edges);
  dom.stepsLabel.classList.toggle('attnlab-hidden', c.method !== 'eap-ig');
  dom.thresholdLabel.classList.toggle('attnlab-hidden', c.method !== 'acdc');
  const others = (o.tasks ?? []).filter((t: any) => t.value !== c.task);
  const keep = dom.compareSel.value;
  setOptions(dom.compareSel, others, others.some((t: any) => t.value === keep) ? keep : others[0]?.value ?? '');
}

/** Seconds as "12 s" or "3 min 5 s". */
function duration(s: number): string {
  if (s < 60) {
    return `${Math.max(1, Math.round(s))} s`;
  }
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function renderStatus({ model, dom }: View): void {
  const status: string = model.get('status');
  const [done, total] = model.get('progress') ?? [0, 0];
  const eta: number | null = model.get('eta');
  const msg: string = model.get('message') ?? '';
  const running = status === 'running';
  dom.root.setAttribute('data-status', status);
  dom.runBtn.disabled = dom.compareBtn.disabled = dom.evalBtn.disabled = running;
  dom.cancelBtn.disabled = !running;
  if (running && total > 0) {
    dom.bar.max = total;
    dom.bar.value = done;
  } else if (running) {
    dom.bar.removeAttribute('value');
  } else {
    dom.bar.max = 1;
    dom.bar.value = status === 'done' ? 1 : 0;
  }
  const step = running && total > 0 ? ` · ${Math.floor(done)}/${total}` : '';
  const left = running && eta !== null && eta !== undefined ? ` · about ${duration(eta)} left` : '';
  dom.statusText.textContent = `${status}${step}${left}${msg ? ' · ' + msg : ''}`;
  dom.statusText.classList.toggle('attnlab-error-text', status === 'error');
}

function renderHistory({ model, dom }: View): void {
  const runs: { index: number; label: string }[] = model.get('run_history') ?? [];
  setOptions(dom.historySel, runs.map(r => ({ value: String(r.index), label: `#${r.index} · ${r.label}` })),
    String(model.get('current_run')));
  dom.showBtn.disabled = runs.length === 0;
}

/** The curve trait as the circuit view's curve, and the sizes the slider offers. */
function curveOf(model: WidgetModel): { curve: CircuitCurve | null; sizes: number[] } {
  const c = model.get('curve') ?? {};
  if (!Array.isArray(c.sizes)) {
    return { curve: null, sizes: [] };
  }
  return {
    curve: { sizes: c.sizes, faithfulness: c.faithfulness, ci95: c.ci95 ?? null, n_heads: c.n_heads ?? null },
    sizes: Array.isArray(c.offered) ? c.offered : c.sizes
  };
}

function renderCircuitBox(view: View): void {
  const { model, dom, state } = view;
  const doc = dom.circuitBox.ownerDocument;
  const payload = model.get('circuit') as CircuitPayload;
  dom.circuitBox.replaceChildren();
  state.handle = null;
  if (!payload || !(payload as any).kind) {
    htmlEl(doc, 'div', 'attnlab-note', dom.circuitBox,
      'The circuit appears here after a run: choose the task and the method, then press Run.');
    return;
  }
  htmlEl(doc, 'div', 'attnlab-note', dom.circuitBox,
    'slide through the circuit sizes (the faithfulness is the kernel\'s, computed for exactly that size); ' +
    'click a head for its panel below');
  const host = htmlEl(doc, 'div', '', dom.circuitBox);
  const { curve, sizes } = curveOf(model);
  state.handle = renderCircuit(host, { ...payload, curve }, {
    sizes,
    shown: model.get('shown_size') || undefined,
    onShown: n => model.send({ type: 'size', n })
  });
}

function renderCurve(view: View): void {
  const { curve, sizes } = curveOf(view.model);
  view.state.handle?.setCurve(curve, sizes);
}

function renderSize(view: View): void {
  const n = view.model.get('shown_size');
  if (n > 0 && view.state.handle && view.state.handle.shown() !== n) {
    view.state.handle.setShown(n);
  }
  view.dom.root.setAttribute('data-size', String(n));
}

function renderDetail(view: View): void {
  const { model, dom, state } = view;
  const { panel } = dom;
  const doc = panel.ownerDocument;
  const detail = model.get('detail_payload') ?? {};
  panel.replaceChildren();
  panel.removeAttribute('data-pending');
  if (!detail.kind) {
    panel.setAttribute('data-kind', 'none');
    panel.removeAttribute('data-name');
    htmlEl(doc, 'div', 'attnlab-note', panel, 'Click a head (H) node of the circuit to see what it does here.');
    return;
  }
  panel.setAttribute('data-kind', detail.kind);
  panel.setAttribute('data-name', detail.name);
  const key = `${detail.name}|${detail.prompt?.index}`;
  if (key !== state.destFor) {
    state.dest = null;
    state.destFor = key;
  }
  const c = detail.circuit;
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
  if (c) {  // the head's place in the circuit shown, under the panel's title
    const note = doc.createElement('div');
    note.className = 'attnlab-note attnlab-head-circuit';
    note.textContent = `in the ${c.n_edges}-edge circuit: ${c.incoming} incoming edges (Σ|score| ` +
      `${fmt(c.sum_abs_in)}), ${c.outgoing} outgoing (Σ|score| ${fmt(c.sum_abs_out)})`;
    const title = panel.querySelector('.attnlab-detail-title');
    panel.insertBefore(note, title ? title.nextSibling : panel.firstChild);
  }
}

function renderComparison({ model, dom }: View): void {
  const out = dom.compareOut;
  const doc = out.ownerDocument;
  const s = model.get('comparison_summary') ?? {};
  out.replaceChildren();
  if (!Array.isArray(s.names)) {
    htmlEl(doc, 'div', 'attnlab-note', out,
      'Runs the same search on the other task and compares the heads of the two circuits at the size shown ' +
      '(Merullo et al. 2023).');
    return;
  }
  const [a, b] = s.names;
  out.setAttribute('data-shared', String(s.n_shared));
  htmlEl(doc, 'div', 'attnlab-compare-numbers', out,
    `${a} vs ${b}, top ${s.n_edges} edges each: ${s.n_a} and ${s.n_b} heads, ${s.n_shared} shared · ` +
    `Jaccard ${fmt(s.jaccard)} · ${a} heads in ${b}: ${fmt(s.overlap_a_in_b)} · ${b} heads in ${a}: ` +
    `${fmt(s.overlap_b_in_a)}`);
  const lists: [string, string[]][] = [['shared', s.shared ?? []], [`only ${a}`, s.only_a ?? []],
    [`only ${b}`, s.only_b ?? []]];
  for (const [name, heads] of lists) {
    const row = htmlEl(doc, 'div', 'attnlab-compare-list', out);
    row.textContent = `${name} (${heads.length}): ${heads.join(' ') || '–'}`;
  }
}

// ---- Input ----------------------------------------------------------------------------------------------------

function bind({ model, dom }: View): void {
  for (const input of Object.values(dom.inputs) as HTMLElement[]) {
    input.addEventListener('change', () => model.send({ type: 'controls', controls: formValues(dom.inputs) }));
  }
  dom.runBtn.addEventListener('click', () => model.send({ type: 'run', controls: formValues(dom.inputs) }));
  dom.cancelBtn.addEventListener('click', () => model.send({ type: 'cancel' }));
  dom.showBtn.addEventListener('click', () => model.send({ type: 'show_run', index: Number(dom.historySel.value) }));
  dom.evalBtn.addEventListener('click', () => {
    const n = Math.round(Number(dom.evalInput.value));
    if (n >= 1) {
      model.send({ type: 'size', n });
    }
  });
  dom.compareBtn.addEventListener('click', () => model.send({ type: 'compare', task: dom.compareSel.value }));
  dom.circuitBox.addEventListener(NODE_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    if (d && typeof d.head === 'number' && typeof d.layer === 'number') {
      dom.panel.setAttribute('data-pending', 'true');
      model.send({ type: 'select_head', layer: d.layer, head: d.head });
    }
  });
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const view: View = { model, dom: buildDom(doc, el), state: { handle: null, dest: null, destFor: '' } };
  bind(view);
  const run = (fn: (v: View) => void) => () => fn(view);
  const handlers: [string, () => void][] = [
    ['change:controls', run(renderControls)],
    ['change:options', run(renderControls)],
    ['change:status', run(renderStatus)],
    ['change:message', run(renderStatus)],
    ['change:progress', run(renderStatus)],
    ['change:eta', run(renderStatus)],
    ['change:run_history', run(renderHistory)],
    ['change:current_run', run(renderHistory)],
    ['change:circuit', run(renderCircuitBox)],
    ['change:curve', run(renderCurve)],
    ['change:shown_size', run(renderSize)],
    ['change:detail_payload', run(renderDetail)],
    ['change:prompts', run(renderDetail)],
    ['change:comparison_summary', run(renderComparison)]
  ];
  for (const [ev, fn] of handlers) {
    model.on(ev, fn);
  }
  for (const fn of [renderControls, renderStatus, renderHistory, renderCircuitBox, renderSize, renderDetail,
    renderComparison]) {
    fn(view);
  }
  return () => {
    for (const [ev, fn] of handlers) {
      model.off(ev, fn);
    }
  };
}

export default { render };
