/**
 * DOM helpers shared by attnlab's renderers. Text always goes in through `textContent`: payload strings (tokens,
 * labels, model names) are data, never markup.
 */

export const SVG_NS = 'http://www.w3.org/2000/svg';

export type Attrs = Record<string, string | number>;

/** Create an SVG element with the given attributes, appended to `parent` if given. */
export function svgEl<K extends keyof SVGElementTagNameMap>(
  doc: Document,
  tag: K,
  attrs: Attrs,
  parent?: Element
): SVGElementTagNameMap[K] {
  const el = doc.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    el.setAttribute(k, String(v));
  }
  if (parent) {
    parent.appendChild(el);
  }
  return el;
}

/** Create an HTML element with a class and optional text (set as text, never parsed), appended to `parent`. */
export function htmlEl(doc: Document, tag: string, className: string, parent: Element, text?: string): HTMLElement {
  const el = doc.createElement(tag);
  el.className = className;
  if (text !== undefined) {
    el.textContent = text;
  }
  parent.appendChild(el);
  return el;
}
