/**
 * Front end of `attnlab.RecallReasoningWorkbench`, an anywidget module (ES module with a default `{ render }` export).
 *
 * esbuild bundles this file with the dissociation view and the stylesheets into
 * `attnlab/dissociation/static/workbench.js`; the Python widget sends that text as its `_esm` trait. State arrives
 * through synced traits (see `attnlab/dissociation/widget.py`); clicks go back as custom messages
 * (`{type: 'select', name}` ...), and the kernel answers by updating `selected_name` and `detail_payload`. Every
 * string from the kernel (prompts, tokens, family names, component names) is set as text, never as HTML.
 *
 * The detail panel (`div.attnlab-wb-detail[data-name]`): the component's drops; its attention from END on a recall
 * and on a reasoning item (`div.attnlab-wb-pattern[data-kind][data-row]`, tokens `span.attnlab-token[data-attn]`;
 * heads only); and a table of per-item effects (`tr.attnlab-wb-item[data-row]`, numbers in
 * `td[data-field][data-value]` at full precision, shown to 3 decimals, with a bar of the drop). Clicking an item's
 * row shows the attention pattern on that item.
 */

import explorerCss from '../style/explorer.css';
import disCss from '../style/index.css';
import wbCss from '../style/workbench.css';
import type { DissociationPayload } from './contract';
import { COMPONENT_CLICK_EVENT, type DissociationHandle, fmt, fmtInterval, renderDissociation } from './dissociation';
import { htmlEl, svgEl } from './dom';

// ---- The slice of anywidget's model API used here.
interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  send(content: unknown): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string, cb?: (...args: any[]) => void): void;
}

interface Option {
  value: string;
  label: string;
  description?: string;
}

const STYLE_ID = 'attnlab-workbench-css';

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = [disCss, explorerCss, wbCss].join('\n'); // the Explorer's controls and token strips too
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}


/** A token as shown in a strip: spaces visible, newlines as ↵. */
const showToken = (t: string): string => t.replace(/\n/g, '↵').replace(/ /g, '·');

// ---- DOM ----------------------------------------------------------------------------------------------------

interface Inputs {
  recall: HTMLElement;
  reasoning: HTMLElement;
  granularity: HTMLSelectElement;
  ablation: HTMLSelectElement;
  n_per_family: HTMLInputElement;
  seed: HTMLInputElement;
  layers: HTMLInputElement;
  criterion: HTMLSelectElement;
}

interface WorkbenchDom {
  root: HTMLElement;
  title: HTMLElement;
  inputs: Inputs;
  runBtn: HTMLButtonElement;
  cancelBtn: HTMLButtonElement;
  bar: HTMLProgressElement;
  statusText: HTMLElement;
  counts: HTMLElement;
  plot: HTMLElement;
  panel: HTMLElement;
}

interface WorkbenchView {
  model: WidgetModel;
  dom: WorkbenchDom;
  handle: DissociationHandle | null;
  lastMessage: string;
}

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

function mkInput(doc: Document, name: string, type: string): HTMLInputElement {
  const i = doc.createElement('input');
  i.type = type;
  i.name = name;
  if (type === 'number') {
    i.step = '1';
  }
  return i;
}

function setOptions(sel: HTMLSelectElement, items: Option[], value: string): void {
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

function buildDom(doc: Document, el: HTMLElement): WorkbenchDom {
  const root = htmlEl(doc, 'div', 'attnlab-workbench', el);
  const title = htmlEl(doc, 'div', 'attnlab-wb-title', root);
  const fams = htmlEl(doc, 'div', 'attnlab-wb-families', root);
  const group = (label: string, kind: string) => {
    const fs = htmlEl(doc, 'fieldset', 'attnlab-wb-family-group', fams);
    fs.setAttribute('data-kind', kind);
    htmlEl(doc, 'legend', '', fs, label);
    return htmlEl(doc, 'div', 'attnlab-wb-family-list', fs);
  };
  const recall = group('recall families', 'recall');
  const reasoning = group('reasoning families', 'reasoning');
  const form = htmlEl(doc, 'div', 'attnlab-controls attnlab-wb-controls', root);
  const inputs: Inputs = {
    recall,
    reasoning,
    granularity: field(form, 'granularity', mkSelect(doc, 'granularity')),
    ablation: field(form, 'ablation', mkSelect(doc, 'ablation')),
    n_per_family: field(form, 'items per family', mkInput(doc, 'n_per_family', 'number')),
    seed: field(form, 'seed', mkInput(doc, 'seed', 'number')),
    layers: field(form, 'layers', mkInput(doc, 'layers', 'text')),
    criterion: field(form, 'keep items', mkSelect(doc, 'criterion'))
  };
  inputs.n_per_family.min = '2';
  inputs.seed.min = '0';
  inputs.layers.placeholder = 'all, 20-29, 3, 5';
  inputs.layers.size = 12;
  const runBtn = htmlEl(doc, 'button', 'attnlab-run', form, 'Run') as HTMLButtonElement;
  const cancelBtn = htmlEl(doc, 'button', 'attnlab-cancel', form, 'Cancel') as HTMLButtonElement;
  const statusRow = htmlEl(doc, 'div', 'attnlab-status', root);
  const bar = doc.createElement('progress');
  bar.className = 'attnlab-progress';
  statusRow.appendChild(bar);
  const statusText = htmlEl(doc, 'span', 'attnlab-status-text', statusRow);
  const counts = htmlEl(doc, 'div', 'attnlab-wb-counts', root);
  const plot = htmlEl(doc, 'div', 'attnlab-wb-plot', root);
  const panel = htmlEl(doc, 'div', 'attnlab-wb-detail', root);
  return { root, title, inputs, runBtn, cancelBtn, bar, statusText, counts, plot, panel };
}

// ---- Trait renderers ----------------------------------------------------------------------------------------

function checkedFamilies(inputs: Inputs): string[] {
  const boxes = [inputs.recall, inputs.reasoning].flatMap(g =>
    Array.from(g.querySelectorAll('input[type=checkbox]')) as HTMLInputElement[]
  );
  return boxes.filter(b => b.checked).map(b => b.value);
}

function formValues(inputs: Inputs): Record<string, unknown> {
  return {
    families: checkedFamilies(inputs),
    granularity: inputs.granularity.value,
    ablation: inputs.ablation.value,
    n_per_family: Number(inputs.n_per_family.value),
    seed: Number(inputs.seed.value),
    layers: inputs.layers.value,
    criterion: inputs.criterion.value
  };
}

function renderFamilies(list: HTMLElement, options: Option[], chosen: string[], onChange: () => void): void {
  const doc = list.ownerDocument;
  list.replaceChildren();
  for (const o of options) {
    const l = htmlEl(doc, 'label', 'attnlab-wb-family', list);
    const box = doc.createElement('input');
    box.type = 'checkbox';
    box.name = 'families';
    box.value = o.value;
    box.checked = chosen.includes(o.value);
    box.addEventListener('change', onChange);
    l.appendChild(box);
    htmlEl(doc, 'span', '', l, o.label);
    if (o.description) {
      l.title = o.description;
    }
  }
}

function renderControls(view: WorkbenchView): void {
  const { model, dom } = view;
  const c = model.get('controls') ?? {};
  const opts = model.get('options') ?? {};
  const { inputs } = dom;
  dom.title.textContent = `attnlab recall-versus-reasoning workbench · ${model.get('model_name')}`;
  const send = () => model.send({ type: 'controls', controls: formValues(inputs) });
  const chosen: string[] = c.families ?? [];
  renderFamilies(inputs.recall, opts.families?.recall ?? [], chosen, send);
  renderFamilies(inputs.reasoning, opts.families?.reasoning ?? [], chosen, send);
  setOptions(inputs.granularity, opts.granularities ?? [], c.granularity);
  setOptions(inputs.ablation, opts.ablations ?? [], c.ablation);
  setOptions(inputs.criterion, opts.criteria ?? [], c.criterion);
  inputs.n_per_family.max = String(opts.max_per_family ?? 500);
  inputs.n_per_family.value = String(c.n_per_family);
  inputs.seed.value = String(c.seed);
  const layers: number[] | null = c.layers;
  inputs.layers.value = layers && layers.length ? compactLayers(layers) : 'all';
}

/** `[20, 21, 22, 25]` as `"20-22, 25"`. */
function compactLayers(layers: number[]): string {
  const out: string[] = [];
  let i = 0;
  while (i < layers.length) {
    let j = i;
    while (j + 1 < layers.length && layers[j + 1] === layers[j] + 1) {
      j++;
    }
    out.push(j > i ? `${layers[i]}-${layers[j]}` : String(layers[i]));
    i = j + 1;
  }
  return out.join(', ');
}

function renderStatus(view: WorkbenchView): void {
  const { model, dom } = view;
  const status: string = model.get('status');
  const [done, total] = model.get('progress') ?? [0, 0];
  dom.root.setAttribute('data-status', status);
  const running = status === 'running';
  dom.runBtn.disabled = running;
  dom.cancelBtn.disabled = !running;
  if (running && total > 0) {
    dom.bar.max = total;
    dom.bar.value = done;
  } else if (running) {
    dom.bar.removeAttribute('value'); // indeterminate while the items are built and filtered
  } else {
    dom.bar.max = 1;
    dom.bar.value = status === 'done' ? 1 : 0;
  }
  const msg: string = model.get('message') ?? '';
  dom.statusText.textContent = `${status}${running && total ? ` · pass ${done}/${total}` : ''}${msg ? ' · ' + msg : ''}`;
  dom.statusText.classList.toggle('attnlab-error-text', status === 'error');
  if (msg && msg !== view.lastMessage) {
    dom.panel.removeAttribute('data-pending'); // e.g. a rejected selection: nothing more will arrive
  }
  view.lastMessage = msg;
}

function renderCounts({ model, dom }: WorkbenchView): void {
  const counts: Record<string, Record<string, number>> = model.get('counts') ?? {};
  const names = Object.keys(counts);
  if (names.length === 0) {
    dom.counts.textContent = 'no run yet: choose the families and settings and press Run';
    return;
  }
  const parts = names.map(f => {
    const c = counts[f];
    return `${f} ${c.kept ?? '?'}/${c.built ?? '?'}`;
  });
  dom.counts.textContent = `items kept per family (kept/built): ${parts.join(' · ')}`;
}

function renderPlot(view: WorkbenchView): void {
  const { model, dom } = view;
  const doc = dom.plot.ownerDocument;
  const payload = model.get('payload') as DissociationPayload;
  if (!payload || !payload.components) {
    dom.plot.replaceChildren();
    htmlEl(doc, 'div', 'attnlab-note', dom.plot, 'The dissociation view appears here after a run.');
    view.handle = null;
    return;
  }
  const host = doc.createElement('div');
  dom.plot.replaceChildren(host);
  view.handle = renderDissociation(host, payload);
  htmlEl(doc, 'div', 'attnlab-note', dom.plot, 'click a point or a cell to open that component below');
  renderSelection(view);
}

function renderSelection(view: WorkbenchView): void {
  const name: string = view.model.get('selected_name') ?? '';
  view.handle?.select(name || null);
  view.dom.root.setAttribute('data-selected', name);
}

// ---- The detail panel ---------------------------------------------------------------------------------------

function section(parent: HTMLElement, title: string, cls: string): HTMLElement {
  const doc = parent.ownerDocument;
  const s = htmlEl(doc, 'section', `attnlab-detail-section ${cls}`, parent);
  htmlEl(doc, 'h4', 'attnlab-detail-heading', s, title);
  return s;
}

function patternStrip(parent: HTMLElement, kind: string, pat: any): void {
  const doc = parent.ownerDocument;
  const box = htmlEl(doc, 'div', 'attnlab-wb-pattern', parent);
  box.setAttribute('data-kind', kind);
  if (!pat) {
    htmlEl(doc, 'div', 'attnlab-note', box, `${kind}: no attention pattern (not a single head)`);
    return;
  }
  box.setAttribute('data-row', String(pat.row));
  htmlEl(doc, 'div', 'attnlab-pattern-caption', box, `${kind} item ${pat.row}: ${pat.prompt ?? ''}`);
  const strip = htmlEl(doc, 'div', 'attnlab-pattern', box);
  const row: number[] = pat.end_row ?? [];
  const max = Math.max(1e-9, ...row.filter(v => typeof v === 'number'));
  const tokens: string[] = pat.tokens ?? [];
  tokens.forEach((tok, i) => {
    const a = row[i];
    const span = htmlEl(doc, 'span', 'attnlab-token', strip, showToken(String(tok)));
    span.setAttribute('data-pos', String(i));
    span.setAttribute('data-attn', typeof a === 'number' ? String(a) : 'null');
    span.title = `${JSON.stringify(tok)} · position ${i} · attention from END ${fmt(a, 4)}`;
    if (typeof a === 'number') {
      span.style.backgroundColor = `rgba(178, 24, 43, ${(0.85 * a) / max})`;
      if (a / max > 0.55) {
        span.classList.add('attnlab-token-strong');
      }
    }
    if (i === tokens.length - 1) {
      span.classList.add('attnlab-token-dest');
    }
  });
}

/** A small horizontal bar of `v` on a scale of ±`lim`, zero in the middle. */
function dropBar(parent: HTMLElement, v: number | null, lim: number): void {
  const doc = parent.ownerDocument;
  const W = 120;
  const H = 12;
  const svg = svgEl(doc, 'svg', { class: 'attnlab-wb-bar', width: W, height: H, viewBox: `0 0 ${W} ${H}` }, parent);
  svgEl(doc, 'line', { x1: W / 2, x2: W / 2, y1: 0, y2: H, class: 'attnlab-zero' }, svg);
  if (v === null || !Number.isFinite(v)) {
    return;
  }
  const w = (Math.max(-lim, Math.min(lim, v)) / lim) * (W / 2 - 2);
  svgEl(doc, 'rect', {
    x: Math.min(W / 2, W / 2 + w), y: 2, width: Math.max(1, Math.abs(w)), height: H - 4,
    class: v >= 0 ? 'attnlab-bar attnlab-bar-pos' : 'attnlab-bar attnlab-bar-neg'
  }, svg);
}

function perItemTable(parent: HTMLElement, detail: any, onRow: (row: number) => void): void {
  const doc = parent.ownerDocument;
  const items: any[] = detail.per_item ?? [];
  const shownRows = new Set(
    Object.values(detail.patterns ?? {}).filter(Boolean).map((p: any) => p.row as number)
  );
  let lim = 1e-9;
  for (const it of items) {
    if (typeof it.drop === 'number') {
      lim = Math.max(lim, Math.abs(it.drop));
    }
  }
  const scroll = htmlEl(doc, 'div', 'attnlab-wb-items-scroll', parent);
  const table = htmlEl(doc, 'table', 'attnlab-wb-items', scroll);
  const hr = htmlEl(doc, 'tr', '', htmlEl(doc, 'thead', '', table));
  for (const h of ['#', 'kind', 'family', 'prompt', 'clean', 'ablated', 'drop', '']) {
    htmlEl(doc, 'th', '', hr, h);
  }
  const body = htmlEl(doc, 'tbody', '', table);
  for (const it of items) {
    const tr = htmlEl(doc, 'tr', 'attnlab-wb-item', body);
    tr.setAttribute('data-row', String(it.row));
    tr.setAttribute('data-kind', String(it.kind));
    if (shownRows.has(it.row)) {
      tr.classList.add('attnlab-wb-item-shown');
    }
    tr.title = 'click to show the attention pattern on this item';
    htmlEl(doc, 'td', 'attnlab-dis-num', tr, String(it.row));
    htmlEl(doc, 'td', 'attnlab-wb-nowrap', tr, String(it.kind));
    htmlEl(doc, 'td', 'attnlab-wb-nowrap', tr, String(it.family));
    htmlEl(doc, 'td', 'attnlab-wb-prompt', tr, String(it.prompt ?? ''));
    for (const key of ['clean', 'ablated', 'drop']) {
      const td = htmlEl(doc, 'td', 'attnlab-dis-num', tr, fmt(it[key]));
      td.setAttribute('data-field', key);
      td.setAttribute('data-value', typeof it[key] === 'number' ? String(it[key]) : 'null');
    }
    dropBar(htmlEl(doc, 'td', '', tr), typeof it.drop === 'number' ? it.drop : null, lim);
    tr.addEventListener('click', () => onRow(Number(it.row)));
  }
}

/** Mean clean, ablated and drop per kind, from the per-item rows (what the table's bars add up to). */
function kindMeans(detail: any): string {
  const parts: string[] = [];
  for (const kind of ['recall', 'reasoning']) {
    const rows = (detail.per_item ?? []).filter((it: any) => it.kind === kind && typeof it.drop === 'number');
    if (rows.length) {
      const mean = (k: string) => rows.reduce((s: number, it: any) => s + it[k], 0) / rows.length;
      parts.push(`${kind}: clean ${fmt(mean('clean'))}, ablated ${fmt(mean('ablated'))}, drop ${fmt(mean('drop'))} ` +
        `(mean of ${rows.length})`);
    }
  }
  return parts.join(' · ');
}

function renderDetail(view: WorkbenchView): void {
  const { model, dom } = view;
  const { panel } = dom;
  const doc = panel.ownerDocument;
  const detail = model.get('detail_payload') ?? {};
  panel.replaceChildren();
  panel.removeAttribute('data-pending');
  if (!detail.component) {
    panel.removeAttribute('data-name');
    htmlEl(doc, 'div', 'attnlab-note', panel, 'Click a point of the scatter or a cell of the matrices to see that ' +
      "component's attention and its effect on every item here.");
    return;
  }
  panel.setAttribute('data-name', detail.component);
  const s = detail.summary ?? {};
  const head = htmlEl(doc, 'div', 'attnlab-detail-title', panel, detail.component);
  htmlEl(doc, 'span', 'attnlab-detail-sub', head,
    ` · recall drop ${fmtInterval(s.recall)} · reasoning drop ${fmtInterval(s.reasoning)} · selectivity ` +
      `${fmtInterval(s.selectivity)}${s.significant ? ' · significant' : ''}`);
  const label = String(detail.metric_label ?? detail.metric ?? 'metric');
  const cols = htmlEl(doc, 'div', 'attnlab-wb-detail-cols', panel);
  const pats = detail.patterns ?? {};
  if (pats.recall || pats.reasoning) {
    const att = section(cols, 'Attention from END', 'attnlab-wb-attention');
    patternStrip(att, 'recall', pats.recall);
    patternStrip(att, 'reasoning', pats.reasoning);
    htmlEl(doc, 'div', 'attnlab-note', att, 'shade: attention probability from the last token (outlined); ' +
      'click an item in the table to look at it');
  }
  const eff = section(cols, `Effect on every item (${label})`, 'attnlab-wb-effects');
  htmlEl(doc, 'div', 'attnlab-note attnlab-wb-means', eff, kindMeans(detail));
  perItemTable(eff, detail, row => {
    panel.setAttribute('data-pending', 'true');
    model.send({ type: 'pattern_item', row });
  });
  htmlEl(doc, 'div', 'attnlab-bar-caption', eff, `drop = clean − ablated, in ${label} (bar: red lost, blue gained)`);
}

// ---- Wiring -------------------------------------------------------------------------------------------------

function bind(view: WorkbenchView): void {
  const { model, dom } = view;
  const { inputs } = dom;
  for (const input of [inputs.granularity, inputs.ablation, inputs.n_per_family, inputs.seed, inputs.layers,
    inputs.criterion]) {
    input.addEventListener('change', () => model.send({ type: 'controls', controls: formValues(inputs) }));
  }
  dom.runBtn.addEventListener('click', () => model.send({ type: 'run', controls: formValues(inputs) }));
  dom.cancelBtn.addEventListener('click', () => model.send({ type: 'cancel' }));
  dom.plot.addEventListener(COMPONENT_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    if (d.name !== model.get('selected_name')) {
      dom.panel.setAttribute('data-pending', 'true'); // dimmed until the kernel's answer arrives
    }
    model.send({ type: 'select', name: d.name });
  });
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const view: WorkbenchView = { model, dom: buildDom(doc, el), handle: null, lastMessage: '' };
  bind(view);
  const run = (fn: (v: WorkbenchView) => void) => () => fn(view);
  const handlers: [string, () => void][] = [
    ['change:controls', run(renderControls)],
    ['change:options', run(renderControls)],
    ['change:status', run(renderStatus)],
    ['change:message', run(renderStatus)],
    ['change:progress', run(renderStatus)],
    ['change:counts', run(renderCounts)],
    ['change:payload', run(renderPlot)],
    ['change:selected_name', run(renderSelection)],
    ['change:detail_payload', run(renderDetail)]
  ];
  for (const [ev, fn] of handlers) {
    model.on(ev, fn);
  }
  for (const fn of [renderControls, renderStatus, renderCounts, renderPlot, renderDetail]) {
    fn(view);
  }
  return () => {
    for (const [ev, fn] of handlers) {
      model.off(ev, fn);
    }
  };
}

export default { render };
