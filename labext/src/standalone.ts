/**
 * Standalone bundle for offline HTML reports: esbuild turns this file into one classic script
 * (`attnlab/render/static/attnlab-render.js`) that defines `window.attnlabRender`. It carries its own CSS and
 * injects it once per document on the first render; no network, no module loader.
 *
 *     attnlabRender.renderHeatmap(document.getElementById('plot'), payload);
 *     attnlabRender.renderCircuit(document.getElementById('graph'), circuitPayload);
 *     attnlabRender.renderDissociation(document.getElementById('scatter'), dissociationPayload);
 *     attnlabRender.renderComposition(document.getElementById('composition'), compositionPayload);
 *     attnlabRender.renderGallery(document.getElementById('heads'), galleryPayload);
 */

import css from '../style/index.css';
import { NODE_CLICK_EVENT, renderCircuit as drawCircuit } from './circuit';
import { PAIR_CLICK_EVENT, renderComposition as drawComposition } from './composition';
import type {
  CircuitPayload,
  CompositionPayload,
  DissociationPayload,
  HeadGalleryPayload,
  HeatmapPayload
} from './contract';
import { CIRCUIT_MIME, COMPOSITION_MIME, DISSOCIATION_MIME, HEADGALLERY_MIME, HEATMAP_MIME } from './contract';
import { COMPONENT_CLICK_EVENT, renderDissociation as drawDissociation } from './dissociation';
import { HEAD_CLICK_EVENT, renderGallery as drawGallery } from './gallery';
import { CELL_CLICK_EVENT, formatTooltip, renderHeatmap as render } from './heatmap';

const STYLE_ID = 'attnlab-render-css';

function injectCss(doc: Document): void {
  if (!doc.getElementById(STYLE_ID)) {
    const style = doc.createElement('style');
    style.id = STYLE_ID;
    style.textContent = css;
    (doc.head ?? doc.documentElement).appendChild(style);
  }
}

function renderHeatmap(host: HTMLElement, payload: HeatmapPayload): void {
  injectCss(host.ownerDocument);
  render(host, payload);
}

function renderCircuit(host: HTMLElement, payload: CircuitPayload): void {
  injectCss(host.ownerDocument);
  drawCircuit(host, payload);
}

function renderDissociation(host: HTMLElement, payload: DissociationPayload) {
  injectCss(host.ownerDocument);
  return drawDissociation(host, payload);
}

function renderComposition(host: HTMLElement, payload: CompositionPayload): void {
  injectCss(host.ownerDocument);
  drawComposition(host, payload);
}

function renderGallery(host: HTMLElement, payload: HeadGalleryPayload): void {
  injectCss(host.ownerDocument);
  drawGallery(host, payload);
}

const api = {
  renderHeatmap,
  renderCircuit,
  renderDissociation,
  renderComposition,
  renderGallery,
  formatTooltip,
  css,
  mimeType: HEATMAP_MIME,
  circuitMimeType: CIRCUIT_MIME,
  dissociationMimeType: DISSOCIATION_MIME,
  compositionMimeType: COMPOSITION_MIME,
  galleryMimeType: HEADGALLERY_MIME,
  pairClickEvent: PAIR_CLICK_EVENT,
  headClickEvent: HEAD_CLICK_EVENT,
  componentClickEvent: COMPONENT_CLICK_EVENT,
  cellClickEvent: CELL_CLICK_EVENT,
  nodeClickEvent: NODE_CLICK_EVENT
};

declare global {
  interface Window {
    attnlabRender: typeof api;
  }
}

window.attnlabRender = api;
