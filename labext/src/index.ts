/**
 * JupyterLab 4 MIME renderer extension for attnlab heatmaps (`application/vnd.attnlab.heatmap.v1+json`), head
 * galleries (`application/vnd.attnlab.headgallery.v1+json`), circuits (`application/vnd.attnlab.circuit.v1+json`),
 * recall-versus-reasoning dissociations (`application/vnd.attnlab.dissociation.v1+json`) and composition between heads
 * (`application/vnd.attnlab.composition.v1+json`).
 */

import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { renderCircuit } from './circuit';
import { renderComposition } from './composition';
import {
  CIRCUIT_MIME,
  COMPOSITION_MIME,
  DISSOCIATION_MIME,
  HEADGALLERY_MIME,
  HEATMAP_MIME,
  type CircuitPayload,
  type CompositionPayload,
  type DissociationPayload,
  type HeadGalleryPayload,
  type HeatmapPayload
} from './contract';
import { renderDissociation } from './dissociation';
import { renderGallery } from './gallery';
import { renderHeatmap } from './heatmap';

export { CIRCUIT_MIME, COMPOSITION_MIME, DISSOCIATION_MIME, HEADGALLERY_MIME, HEATMAP_MIME } from './contract';
export type { CompositionPairClickDetail, CompositionPayload } from './contract';
export { PAIR_CLICK_EVENT, compositionColor, compositionLayout, renderComposition } from './composition';
export type { CircuitNodeClickDetail, CircuitPayload } from './contract';
export { NODE_CLICK_EVENT, edgeTooltip, nearestSize, renderCircuit } from './circuit';
export type { DissociationClickDetail, DissociationPayload } from './contract';
export { COMPONENT_CLICK_EVENT, formatComponentTooltip, renderDissociation } from './dissociation';
export type { HeadGalleryClickDetail, HeadGalleryPayload } from './contract';
export { HEAD_CLICK_EVENT, kindRange, renderGallery } from './gallery';
export type { HeatmapCellClickDetail, HeatmapPayload } from './contract';
export { CELL_CLICK_EVENT, formatTooltip, renderHeatmap } from './heatmap';

/** Class added to the renderer's widget node. */
const WIDGET_CLASS = 'jp-RenderedAttnlabHeatmap';

/** A widget that draws one heatmap payload. */
export class HeatmapRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.node.dataset.mimeType = options.mimeType; // as JupyterLab's own renderers do
    this.addClass(WIDGET_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = model.data[this._mimeType] as unknown as HeatmapPayload;
    renderHeatmap(this.node, payload);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/**
 * Renderer factory. `safe: true`: the renderer never interprets payload strings as HTML and runs no payload code,
 * so it may render outputs of untrusted notebooks. Rank 0 (lower wins) puts it ahead of text/html (50), so the
 * interactive view wins over the static HTML fallback carried in the same bundle.
 */
export const rendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [HEATMAP_MIME],
  defaultRank: 0,
  createRenderer: options => new HeatmapRenderer(options)
};

const extension: IRenderMime.IExtension = {
  id: 'attnlab:heatmap',
  description: 'Renders attnlab activation-patching heatmaps.',
  rendererFactory,
  rank: 0,
  dataType: 'json'
};

/** Class added to the gallery renderer's widget node. */
const GALLERY_CLASS = 'jp-RenderedAttnlabHeadGallery';

/** A widget that draws one head-gallery payload. */
export class GalleryRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.node.dataset.mimeType = options.mimeType;
    this.addClass(GALLERY_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = model.data[this._mimeType] as unknown as HeadGalleryPayload;
    renderGallery(this.node, payload);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Gallery renderer factory: safe (payload strings are never HTML), ranked ahead of the text/html fallback. */
export const galleryRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [HEADGALLERY_MIME],
  defaultRank: 0,
  createRenderer: options => new GalleryRenderer(options)
};

const galleryExtension: IRenderMime.IExtension = {
  id: 'attnlab:headgallery',
  description: 'Renders attnlab head galleries (previous-token, duplicate-token and induction scores).',
  rendererFactory: galleryRendererFactory,
  rank: 0,
  dataType: 'json'
};

/** Class added to the circuit renderer's widget node. */
const CIRCUIT_CLASS = 'jp-RenderedAttnlabCircuit';

/** A widget that draws one circuit payload. */
export class CircuitRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.node.dataset.mimeType = options.mimeType;
    this.addClass(CIRCUIT_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = model.data[this._mimeType] as unknown as CircuitPayload;
    renderCircuit(this.node, payload);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Circuit renderer factory: safe (payload strings are never HTML), ranked ahead of the text/html fallback. */
export const circuitRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [CIRCUIT_MIME],
  defaultRank: 0,
  createRenderer: options => new CircuitRenderer(options)
};

const circuitExtension: IRenderMime.IExtension = {
  id: 'attnlab:circuit',
  description: 'Renders attnlab circuits as layered graphs with an edge-count slider.',
  rendererFactory: circuitRendererFactory,
  rank: 0,
  dataType: 'json'
};

/** Class added to the dissociation renderer's widget node. */
const DISSOCIATION_CLASS = 'jp-RenderedAttnlabDissociation';

/** A widget that draws one recall-versus-reasoning dissociation payload. */
export class DissociationRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.node.dataset.mimeType = options.mimeType;
    this.addClass(DISSOCIATION_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = model.data[this._mimeType] as unknown as DissociationPayload;
    renderDissociation(this.node, payload);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Dissociation renderer factory: safe (payload strings are never HTML), ranked ahead of the text/html fallback. */
export const dissociationRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [DISSOCIATION_MIME],
  defaultRank: 0,
  createRenderer: options => new DissociationRenderer(options)
};

const dissociationExtension: IRenderMime.IExtension = {
  id: 'attnlab:dissociation',
  description: 'Renders attnlab recall-versus-reasoning dissociation sweeps (scatter, drop matrices, controls).',
  rendererFactory: dissociationRendererFactory,
  rank: 0,
  dataType: 'json'
};

/** Class added to the composition renderer's widget node. */
const COMPOSITION_CLASS = 'jp-RenderedAttnlabComposition';

/** A widget that draws one composition payload. */
export class CompositionRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.node.dataset.mimeType = options.mimeType;
    this.addClass(COMPOSITION_CLASS);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const payload = model.data[this._mimeType] as unknown as CompositionPayload;
    renderComposition(this.node, payload);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Composition renderer factory: safe (payload strings are never HTML), ranked ahead of the text/html fallback. */
export const compositionRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [COMPOSITION_MIME],
  defaultRank: 0,
  createRenderer: options => new CompositionRenderer(options)
};

const compositionExtension: IRenderMime.IExtension = {
  id: 'attnlab:composition',
  description: 'Renders attnlab composition scores between heads (sender x receiver matrix, singular values, path patching).',
  rendererFactory: compositionRendererFactory,
  rank: 0,
  dataType: 'json'
};

export default [extension, galleryExtension, circuitExtension, dissociationExtension, compositionExtension];
