/**
 * Front end of `attnlab.HeadGalleryWidget`, an anywidget module (ES module with a default `{ render }` export).
 *
 * esbuild bundles this file with the gallery view (`./gallery`) and the stylesheets into
 * `attnlab/gallery_widget/static/gallery.js`; the Python widget sends that text as its `_esm` trait. State arrives
 * through synced traits (see `attnlab/gallery_widget/widget.py`); actions go back as custom messages
 * (`{type: 'run', controls}`, `{type: 'cancel'}`, `{type: 'select', head: [layer, head]}`), and the kernel answers a
 * click by updating `selected_head` and `detail_payload`.
 *
 * DOM: `div.attnlab-gallery-widget[data-status]` holds the title, the controls (`input[name=seq_len]`,
 * `input[name=n_sequences]`, `input[name=seed]`, `button.attnlab-run`, `button.attnlab-cancel`), the status row
 * (`progress.attnlab-progress`, `span.attnlab-status-text`, `span.attnlab-eta`), and the gallery
 * (`div.attnlab-gallery-widget-view`, drawn by `renderGallery`). The detail panel of the gallery
 * (`div.attnlab-gallery-detail`) gets `data-layer` / `data-head` once the kernel's answer for that head is drawn, and
 * `data-pending` while it is awaited. Every string from the kernel is set as text, never as HTML.
 */

import explorerCss from '../style/explorer.css';
import indexCss from '../style/index.css';
import type { HeadGalleryHead, HeadGalleryPayload } from './contract';
import { htmlEl } from './dom';
import { type GalleryHandle, HEAD_CLICK_EVENT, renderGallery } from './gallery';

// ---- The slice of anywidget's model API used here.
interface WidgetModel {
  get(name: string): any;
  send(content: unknown): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string, cb?: (...args: any[]) => void): void;
}

const STYLE_ID = 'attnlab-gallery-widget-css';
const CONTROLS = ['seq_len', 'n_sequences', 'seed'] as const;
const LABELS: Record<(typeof CONTROLS)[number], string> = {
  seq_len: 'tokens per repeat',
  n_sequences: 'sequences',
  seed: 'seed'
};

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = [indexCss, explorerCss].join('\n'); // the Explorer's controls and status row
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}

interface GalleryWidgetDom {
  root: HTMLElement;
  title: HTMLElement;
  inputs: Record<(typeof CONTROLS)[number], HTMLInputElement>;
  runBtn: HTMLButtonElement;
  cancelBtn: HTMLButtonElement;
  bar: HTMLProgressElement;
  statusText: HTMLElement;
  eta: HTMLElement;
  view: HTMLElement;
}

interface GalleryWidgetView {
  model: WidgetModel;
  dom: GalleryWidgetDom;
  handle: GalleryHandle | null;
  /** The payload drawn (its heads get the kernel's details as they arrive). */
  payload: HeadGalleryPayload | null;
}

function buildDom(doc: Document, el: HTMLElement): GalleryWidgetDom {
  const root = htmlEl(doc, 'div', 'attnlab-gallery-widget', el);
  root.style.fontFamily = 'var(--jp-ui-font-family, system-ui, sans-serif)';
  root.style.fontSize = '12px';
  const title = htmlEl(doc, 'div', 'attnlab-explorer-title', root);
  const form = htmlEl(doc, 'div', 'attnlab-controls', root);
  const inputs = {} as Record<(typeof CONTROLS)[number], HTMLInputElement>;
  for (const name of CONTROLS) {
    const l = htmlEl(doc, 'label', 'attnlab-control', form, `${LABELS[name]} `);
    const i = doc.createElement('input');
    i.type = 'number';
    i.step = '1';
    i.name = name;
    l.appendChild(i);
    inputs[name] = i;
  }
  const runBtn = htmlEl(doc, 'button', 'attnlab-run', form, 'Run') as HTMLButtonElement;
  runBtn.type = 'button';
  const cancelBtn = htmlEl(doc, 'button', 'attnlab-cancel', form, 'Cancel') as HTMLButtonElement;
  cancelBtn.type = 'button';
  cancelBtn.title = 'stop after the current pass; the blocks already scored are kept';
  const statusRow = htmlEl(doc, 'div', 'attnlab-status', root);
  const bar = doc.createElement('progress');
  bar.className = 'attnlab-progress';
  statusRow.appendChild(bar);
  const statusText = htmlEl(doc, 'span', 'attnlab-status-text', statusRow);
  const eta = htmlEl(doc, 'span', 'attnlab-eta', statusRow);
  eta.style.color = 'var(--jp-ui-font-color2, #555)';
  const view = htmlEl(doc, 'div', 'attnlab-gallery-widget-view', root);
  return { root, title, inputs, runBtn, cancelBtn, bar, statusText, eta, view };
}

function formValues(dom: GalleryWidgetDom): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of CONTROLS) {
    out[name] = Number(dom.inputs[name].value);
  }
  return out;
}

/** Seconds as `"12 s"` or `"3 min 20 s"`. */
export function formatSeconds(s: number): string {
  const t = Math.max(0, Math.round(s));
  return t < 60 ? `${t} s` : `${Math.floor(t / 60)} min ${t % 60} s`;
}

function renderControls({ model, dom }: GalleryWidgetView): void {
  const c = model.get('controls') ?? {};
  const limits = model.get('limits') ?? {};
  dom.title.textContent = `attnlab head gallery · ${model.get('model_name')}`;
  for (const name of CONTROLS) {
    const [lo, hi] = limits[name] ?? [null, null];
    if (lo !== null && lo !== undefined) {
      dom.inputs[name].min = String(lo);
    }
    if (hi !== null && hi !== undefined) {
      dom.inputs[name].max = String(hi);
    }
    dom.inputs[name].value = String(c[name] ?? '');
  }
}

function renderStatus({ model, dom }: GalleryWidgetView): void {
  const status: string = model.get('status');
  const [done, total] = model.get('progress') ?? [0, 0];
  dom.root.setAttribute('data-status', status);
  const running = status === 'running';
  dom.runBtn.disabled = running;
  dom.cancelBtn.disabled = !running;
  for (const name of CONTROLS) {
    dom.inputs[name].disabled = running;
  }
  if (running && total > 0) {
    dom.bar.max = total;
    dom.bar.value = done;
  } else if (running) {
    dom.bar.removeAttribute('value'); // indeterminate while the sequences are drawn
  } else {
    dom.bar.max = 1;
    dom.bar.value = status === 'done' ? 1 : 0;
  }
  dom.bar.setAttribute('data-done', String(done));
  dom.bar.setAttribute('data-total', String(total));
  const msg: string = model.get('message') ?? '';
  dom.statusText.textContent = `${status}${running && total ? ` · pass ${done}/${total}` : ''}${msg ? ' · ' + msg : ''}`;
  dom.statusText.classList.toggle('attnlab-error-text', status === 'error');
  const eta: number = model.get('eta') ?? -1;
  const elapsed: number = model.get('elapsed') ?? 0;
  if (running) {
    dom.eta.textContent = eta >= 0 ? `· about ${formatSeconds(eta)} left (${formatSeconds(elapsed)} so far)` : '· estimating the time…';
  } else {
    dom.eta.textContent = elapsed > 0 ? `· took ${formatSeconds(elapsed)}` : '';
  }
}

function renderPayload(view: GalleryWidgetView): void {
  const { model, dom } = view;
  const doc = dom.view.ownerDocument;
  const payload = model.get('payload') as HeadGalleryPayload;
  if (!payload || !Array.isArray(payload.scores)) {
    dom.view.replaceChildren();
    htmlEl(doc, 'div', 'attnlab-note', dom.view, 'The gallery appears here: choose the sequences and press Run.');
    view.handle = null;
    view.payload = null;
    return;
  }
  // A redraw (the next block scored, a new run) keeps the kind the user is looking at and the selected head.
  const before = view.handle?.state();
  const sel: number[] = model.get('selected_head') ?? [];
  const copy: HeadGalleryPayload = JSON.parse(JSON.stringify(payload));
  const host = doc.createElement('div');
  dom.view.replaceChildren(host);
  view.payload = copy;
  view.handle = renderGallery(host, copy, {
    kind: before?.kind,
    selected: sel.length === 2 ? [sel[0], sel[1]] : before?.selected ?? null
  });
  renderDetailAnswer(view);
}

/** Put the kernel's answer for the selected head into the payload and redraw the gallery's detail panel. */
function renderDetailAnswer(view: GalleryWidgetView): void {
  const { model, handle, payload } = view;
  if (!handle || !payload) {
    return;
  }
  const panel = handle.panel;
  const d = model.get('detail_payload') ?? {};
  if (typeof d.layer !== 'number' || typeof d.head !== 'number') {
    panel.removeAttribute('data-pending');
    return;
  }
  const nHeads = payload.head_labels.length;
  const index = d.layer * nHeads + d.head;
  const info: HeadGalleryHead = {
    ...(payload.heads[index] ?? { layer: d.layer, head: d.head, prefix: null, prefix_class: null, copying: null }),
    pattern: d.pattern ?? null,
    ablation: d.ablation ?? {}
  };
  payload.heads[index] = info;
  payload.ablation_label = String(d.ablation_label ?? payload.ablation_label ?? '');
  payload.clean_loss = d.clean_loss ?? payload.clean_loss;
  if (Array.isArray(d.tokens)) {
    payload.tokens = d.tokens.map(String);
  }
  handle.select(d.layer, d.head); // outlines the head and redraws the panel from the updated payload
  if (!d.computed) {
    const doc = panel.ownerDocument;
    const note = htmlEl(doc, 'div', 'attnlab-note attnlab-gallery-not-computed', panel, 'this head’s block was not ' +
      'scored (the run stopped before it): its scores and pattern are not computed; the ablation above was ' +
      'measured for this click');
    note.style.maxWidth = '420px';
  }
  panel.setAttribute('data-layer', String(d.layer));
  panel.setAttribute('data-head', String(d.head));
  panel.removeAttribute('data-pending');
  panel.style.opacity = '';
}

function bind(view: GalleryWidgetView): void {
  const { model, dom } = view;
  for (const name of CONTROLS) {
    dom.inputs[name].addEventListener('change', () => model.send({ type: 'controls', controls: formValues(dom) }));
  }
  dom.runBtn.addEventListener('click', () => model.send({ type: 'run', controls: formValues(dom) }));
  dom.cancelBtn.addEventListener('click', () => model.send({ type: 'cancel' }));
  dom.view.addEventListener(HEAD_CLICK_EVENT, (ev: Event) => {
    const { layer, head } = (ev as CustomEvent).detail;
    const panel = view.handle?.panel;
    if (panel) {
      panel.setAttribute('data-pending', 'true'); // dimmed until the kernel's answer arrives
      panel.style.opacity = '0.55';
    }
    model.send({ type: 'select', head: [layer, head] });
  });
}

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const view: GalleryWidgetView = { model, dom: buildDom(doc, el), handle: null, payload: null };
  bind(view);
  const run = (fn: (v: GalleryWidgetView) => void) => () => fn(view);
  const handlers: [string, () => void][] = [
    ['change:controls', run(renderControls)],
    ['change:limits', run(renderControls)],
    ['change:status', run(renderStatus)],
    ['change:message', run(renderStatus)],
    ['change:progress', run(renderStatus)],
    ['change:eta', run(renderStatus)],
    ['change:payload', run(renderPayload)],
    ['change:detail_payload', run(renderDetailAnswer)]
  ];
  for (const [ev, fn] of handlers) {
    model.on(ev, fn);
  }
  for (const fn of [renderControls, renderStatus, renderPayload]) {
    fn(view);
  }
  return () => {
    for (const [ev, fn] of handlers) {
      model.off(ev, fn);
    }
  };
}

export default { render };
