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
import { CELL_CLICK_EVENT, type HeatmapHandle, renderHeatmap } from './heatmap';

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

function headDetail(panel: HTMLElement, detail: any, ctx: { dest: number | null; setDest: (d: number) => void; prompts: string[]; prompt: number; onPrompt: (i: number) => void }): void {
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

function render({ model, el }: { model: WidgetModel; el: HTMLElement }): () => void {
  const doc = el.ownerDocument;
  injectCss(doc);
  el.replaceChildren();
  const root = htmlEl(doc, 'div', 'attnlab-explorer', el);
  const title = htmlEl(doc, 'div', 'attnlab-explorer-title', root);

  // Controls.
  const form = htmlEl(doc, 'div', 'attnlab-controls', root);
  const field = (label: string, input: HTMLElement) => {
    const l = htmlEl(doc, 'label', 'attnlab-control', form, label + ' ');
    l.appendChild(input);
    return input;
  };
  const mkSelect = (name: string) => {
    const s = doc.createElement('select');
    s.name = name;
    return s;
  };
  const mkNumber = (name: string, min: number) => {
    const i = doc.createElement('input');
    i.type = 'number';
    i.name = name;
    i.min = String(min);
    i.step = '1';
    return i;
  };
  const inputs = {
    task: field('task', mkSelect('task')) as HTMLSelectElement,
    n_prompts: field('prompts', mkNumber('n_prompts', 1)) as HTMLInputElement,
    seed: field('seed', mkNumber('seed', 0)) as HTMLInputElement,
    corruption: field('corruption', mkSelect('corruption')) as HTMLSelectElement,
    component: field('component', mkSelect('component')) as HTMLSelectElement,
    direction: field('direction', mkSelect('direction')) as HTMLSelectElement,
    metric: field('metric', mkSelect('metric')) as HTMLSelectElement
  };
  const runBtn = htmlEl(doc, 'button', 'attnlab-run', form, 'Run') as HTMLButtonElement;
  const cancelBtn = htmlEl(doc, 'button', 'attnlab-cancel', form, 'Cancel') as HTMLButtonElement;

  const statusRow = htmlEl(doc, 'div', 'attnlab-status', root);
  const bar = doc.createElement('progress');
  bar.className = 'attnlab-progress';
  statusRow.appendChild(bar);
  const statusText = htmlEl(doc, 'span', 'attnlab-status-text', statusRow);
  const baselines = htmlEl(doc, 'div', 'attnlab-baselines', root);

  const historyRow = htmlEl(doc, 'div', 'attnlab-history', root);
  htmlEl(doc, 'span', '', historyRow, 'runs ');
  const historySel = doc.createElement('select');
  historySel.className = 'attnlab-history-select';
  historyRow.appendChild(historySel);
  const showBtn = htmlEl(doc, 'button', 'attnlab-show-run', historyRow, 'Show') as HTMLButtonElement;
  const exportBtn = htmlEl(doc, 'button', 'attnlab-export-run', historyRow, 'Export JSON') as HTMLButtonElement;

  const main = htmlEl(doc, 'div', 'attnlab-explorer-main', root);
  const plot = htmlEl(doc, 'div', 'attnlab-explorer-plot', main);
  const panel = htmlEl(doc, 'div', 'attnlab-explorer-detail', main);
  const circuitBox = htmlEl(doc, 'div', 'attnlab-explorer-circuit', root);

  const options = (sel: HTMLSelectElement, items: { value: string; label: string }[], value: string) => {
    sel.replaceChildren();
    for (const it of items) {
      const o = doc.createElement('option');
      o.value = it.value;
      o.textContent = it.label;
      sel.appendChild(o);
    }
    sel.value = value;
  };

  const renderControls = () => {
    const c = model.get('controls') ?? {};
    const opts = model.get('options') ?? {};
    title.textContent = `attnlab Explorer · ${model.get('model_name')}`;
    options(inputs.task, opts.tasks ?? [], c.task);
    options(inputs.corruption, ((opts.corruptions ?? {})[c.task] ?? []).map((v: string) => ({ value: v, label: v })), c.corruption);
    options(inputs.component, opts.components ?? [], c.component);
    options(inputs.direction, (opts.directions ?? []).map((v: string) => ({ value: v, label: v })), c.direction);
    options(inputs.metric, opts.metrics ?? [], c.metric);
    inputs.n_prompts.max = String(opts.max_prompts ?? 512);
    inputs.n_prompts.value = String(c.n_prompts);
    inputs.seed.value = String(c.seed);
  };
  const formValues = () => ({
    task: inputs.task.value,
    n_prompts: Number(inputs.n_prompts.value),
    seed: Number(inputs.seed.value),
    corruption: inputs.corruption.value,
    component: inputs.component.value,
    direction: inputs.direction.value,
    metric: inputs.metric.value
  });
  for (const input of Object.values(inputs)) {
    input.addEventListener('change', () => model.send({ type: 'controls', controls: formValues() }));
  }
  runBtn.addEventListener('click', () => model.send({ type: 'run', controls: formValues() }));
  cancelBtn.addEventListener('click', () => model.send({ type: 'cancel' }));

  let lastMessage = '';
  const renderStatus = () => {
    const status: string = model.get('status');
    const [done, total] = model.get('progress') ?? [0, 0];
    root.setAttribute('data-status', status);
    const running = status === 'running';
    runBtn.disabled = running;
    cancelBtn.disabled = !running;
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
    statusText.textContent = `${status}${running && total ? ` · pass ${done}/${total}` : ''}${msg ? ' · ' + msg : ''}`;
    statusText.classList.toggle('attnlab-error-text', status === 'error');
    if (msg && msg !== lastMessage) {
      panel.removeAttribute('data-pending'); // e.g. a rejected selection: nothing more will arrive
    }
    lastMessage = msg;
  };

  const renderBaselines = () => {
    const b = model.get('baselines') ?? {};
    baselines.textContent =
      b.clean === undefined
        ? 'no run yet: choose the settings and press Run'
        : `clean ${b.label ?? 'logit difference (logits)'} ${fmt(b.clean)} · corrupted ${fmt(b.corrupted)} (mean over prompts)`;
  };

  const renderHistory = () => {
    const runs: { index: number; label: string }[] = model.get('run_history') ?? [];
    options(historySel, runs.map(r => ({ value: String(r.index), label: `#${r.index} · ${r.label}` })), String(model.get('current_run')));
    showBtn.disabled = exportBtn.disabled = runs.length === 0;
  };
  showBtn.addEventListener('click', () => model.send({ type: 'show_run', index: Number(historySel.value) }));
  exportBtn.addEventListener('click', () => model.send({ type: 'export', index: Number(historySel.value) }));

  let handle: HeatmapHandle | null = null;
  const renderPlot = () => {
    const payload = model.get('heatmap') as HeatmapPayload;
    if (!payload || !payload.values) {
      plot.replaceChildren();
      htmlEl(doc, 'div', 'attnlab-note', plot, 'The result heatmap appears here after a run.');
      handle = null;
      return;
    }
    handle = renderHeatmap(plot, payload);
    const hint = COMPONENT_HINT[(model.get('controls') ?? {}).component] ?? '';
    htmlEl(doc, 'div', 'attnlab-note', plot, hint);
    renderSelection();
  };
  plot.addEventListener(CELL_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    const cur: number[] = model.get('selected_cell') ?? [];
    if (cur[0] !== d.row || cur[1] !== d.col) {
      panel.setAttribute('data-pending', 'true'); // dimmed until the kernel's answer arrives
    }
    model.send({ type: 'select', row: d.row, col: d.col });
  });

  const renderSelection = () => {
    const cell: number[] = model.get('selected_cell') ?? [];
    handle?.select(cell.length === 2 ? cell[0] : null, cell[1]);
    root.setAttribute('data-selected', model.get('selected_name') ?? '');
  };

  let dest: number | null = null;
  let destFor = '';
  const renderDetail = () => {
    const detail = model.get('detail_payload') ?? {};
    panel.replaceChildren();
    panel.removeAttribute('data-pending');
    if (!detail.kind) {
      panel.setAttribute('data-kind', 'none');
      panel.removeAttribute('data-name');
      htmlEl(doc, 'div', 'attnlab-note', panel, 'Select a cell of the heatmap (click, or arrow keys and Enter) to see its detail here.');
      return;
    }
    panel.setAttribute('data-kind', detail.kind);
    panel.setAttribute('data-name', detail.name);
    const key = `${detail.name}|${detail.prompt?.index}`;
    if (key !== destFor) {
      dest = null; // a new head or prompt looks from END again
      destFor = key;
    }
    if (detail.kind === 'head') {
      headDetail(panel, detail, {
        dest,
        setDest: d => {
          dest = d;
          renderDetail();
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
  };

  const renderCircuitView = () => {
    const payload = model.get('circuit') as CircuitPayload;
    circuitBox.replaceChildren();
    if (payload && (payload as any).kind) {
      htmlEl(doc, 'div', 'attnlab-note', circuitBox, 'click a head of the circuit to open its detail panel above');
      const host = htmlEl(doc, 'div', '', circuitBox);
      renderCircuit(host, payload);
    }
  };
  circuitBox.addEventListener(NODE_CLICK_EVENT, (ev: Event) => {
    const d = (ev as CustomEvent).detail;
    if (d && typeof d.head === 'number' && typeof d.layer === 'number') {
      panel.setAttribute('data-pending', 'true');
      model.send({ type: 'select_head', layer: d.layer, head: d.head });
    }
  });

  const onCustom = (msg: any) => {
    if (msg && msg.type === 'export') {
      const blob = new Blob([msg.content], { type: 'application/json' });
      const a = doc.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = msg.filename;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }
  };

  const handlers: [string, () => void][] = [
    ['change:controls', renderControls],
    ['change:options', renderControls],
    ['change:status', renderStatus],
    ['change:message', renderStatus],
    ['change:progress', renderStatus],
    ['change:baselines', renderBaselines],
    ['change:run_history', renderHistory],
    ['change:current_run', renderHistory],
    ['change:heatmap', renderPlot],
    ['change:selected_cell', renderSelection],
    ['change:selected_name', renderSelection],
    ['change:detail_payload', renderDetail],
    ['change:prompts', renderDetail],
    ['change:circuit', renderCircuitView]
  ];
  for (const [ev, fn] of handlers) {
    model.on(ev, fn);
  }
  model.on('msg:custom', onCustom);
  renderControls();
  renderStatus();
  renderBaselines();
  renderHistory();
  renderPlot();
  renderDetail();
  renderCircuitView();

  return () => {
    for (const [ev, fn] of handlers) {
      model.off(ev, fn);
    }
    model.off('msg:custom', onCustom);
  };
}

export default { render };
