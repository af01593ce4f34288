/**
 * Figure export for every attnlab view: one self-contained SVG (or a PNG drawn from it) holding what the view shows:
 * its title and subtitle, and every SVG it draws (matrix, axes, colour bar, curves, graph), placed where they are
 * on screen.
 *
 * A view is HTML (title, subtitle, scroll boxes) around one or more SVGs. `figureSvg(root)` composes them into one
 * SVG, each piece at its offset from `root` as on screen: the texts of `root`'s `.attnlab-title` and
 * `.attnlab-subtitle` elements (and any element marked `data-export-text`, bold when its value is `"title"`) become
 * `<text>` lines wrapped to their width, each top-level SVG inside `root` is cloned full size even where a scroll box
 * clips it on screen, and HTML strips marked `data-export-boxes` (tokens shaded by attention) become rectangles with
 * their text. `url(#id)` references (gradients, hatching) stay local to the file. Computed styles (fills, strokes, fonts) are
 * written inline on the clone, so the file looks like the view without the page's stylesheet. Elements marked
 * `data-export="skip"` (buttons, tooltips) are left out.
 *
 * `exportButtons(...)` adds the "SVG" and "PNG" buttons (`button.attnlab-export-svg`, `button.attnlab-export-png`)
 * a view puts in its toolbar; each click downloads `<name>.svg` / `<name>.png` through a temporary link. The PNG is
 * drawn at twice the view's size (for print).
 */

import { SVG_NS } from './dom';

/** Presentation properties copied from the computed style onto each cloned SVG element. */
const STYLE_PROPS = [
  'fill',
  'fill-opacity',
  'stroke',
  'stroke-width',
  'stroke-opacity',
  'stroke-dasharray',
  'opacity',
  'font-family',
  'font-size',
  'font-weight',
  'font-style',
  'text-anchor',
  'dominant-baseline',
  'visibility',
  'display'
];

const TITLE_FONT = 14;
const SUBTITLE_FONT = 12;
const MARGIN = 8;

/** The SVGs inside `root` that are not inside another SVG and are rendered (non-zero size, not skipped). */
function topLevelSvgs(root: HTMLElement): SVGSVGElement[] {
  const out: SVGSVGElement[] = [];
  root.querySelectorAll('svg').forEach(svg => {
    const s = svg as SVGSVGElement;
    if (s.parentElement?.closest('svg') || s.closest('[data-export="skip"]')) {
      return;
    }
    const r = s.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) {
      out.push(s);
    }
  });
  return out;
}

/**
 * A computed `url(...)` reference as a local one: browsers resolve `fill="url(#id)"` against the page
 * (`url("http://host/lab/tree/x.ipynb#id")`), which a standalone file or a PNG drawn from a data URL cannot follow;
 * the referenced gradient or pattern travels inside the figure, so `url(#id)` is what the file needs.
 */
export function localUrl(value: string): string {
  return value.replace(/url\(\s*(["']?)[^"')#]*#([^"')]+)\1\s*\)/g, 'url(#$2)');
}

/** Copy computed presentation styles from `src` (in the page) to `dst` (its clone), element by element. */
function inlineStyles(src: Element, dst: Element): void {
  const view = src.ownerDocument.defaultView;
  if (view) {
    const cs = view.getComputedStyle(src);
    const decl: string[] = [];
    for (const p of STYLE_PROPS) {
      const v = cs.getPropertyValue(p);
      if (v) {
        decl.push(`${p}:${localUrl(v)}`);
      }
    }
    const own = dst.getAttribute('style');
    dst.setAttribute('style', decl.join(';') + (own ? `;${own}` : ''));
  }
  const a = src.children;
  const b = dst.children;
  for (let i = 0; i < a.length && i < b.length; i++) {
    inlineStyles(a[i], b[i]);
  }
}

/** Lines of text of at most `maxChars` characters, broken at spaces. */
function wrap(text: string, maxChars: number): string[] {
  const words = text.split(/\s+/).filter(w => w.length > 0);
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > maxChars) {
      lines.push(line);
      line = w;
    } else {
      line = line ? `${line} ${w}` : w;
    }
  }
  if (line) {
    lines.push(line);
  }
  return lines;
}

/** One piece of a figure: an SVG, a block of text, or an HTML strip of boxes, at its offset from the view's root. */
type Piece =
  | { kind: 'svg'; el: SVGSVGElement; x: number; y: number; w: number; h: number }
  | { kind: 'text'; lines: string[]; size: number; bold: boolean; color: string; x: number; y: number; w: number; h: number }
  | { kind: 'boxes'; el: HTMLElement; x: number; y: number; w: number; h: number };

/** Average advance of a character in em, generous for sans-serif text (wrapping uses it). */
const CHAR_EM = 0.56;

/**
 * The text blocks of a view: its `.attnlab-title`, `.attnlab-subtitle` and `[data-export-text]` elements (not
 * inside an SVG or a skipped element), at their places, wrapped to their on-screen width. A title is bold.
 */
function textPieces(root: HTMLElement, base: DOMRect): Piece[] {
  const out: Piece[] = [];
  const view = root.ownerDocument.defaultView;
  root.querySelectorAll('.attnlab-title, .attnlab-subtitle, [data-export-text]').forEach(node => {
    const el = node as HTMLElement;
    if (el.closest('[data-export="skip"]') || el.closest('svg') || el.parentElement?.closest('[data-export-text]')) {
      return;
    }
    const text = ownText(el).replace(/\s+/g, ' ').trim();
    const r = el.getBoundingClientRect();
    if (!text || r.width === 0) {
      return;
    }
    const cs = view?.getComputedStyle(el);
    const size = parseFloat(cs?.fontSize ?? '') || SUBTITLE_FONT;
    const weight = cs?.fontWeight ?? '';
    const bold = el.classList.contains('attnlab-title') || el.getAttribute('data-export-text') === 'title' || Number(weight) >= 600 || weight === 'bold';
    const maxChars = Math.max(24, Math.floor(r.width / (size * CHAR_EM)));
    const lines = wrap(text, maxChars);
    const w = Math.max(r.width, ...lines.map(l => l.length * size * CHAR_EM));
    out.push({ kind: 'text', lines, size, bold, color: cs?.color || '#222222', x: r.left - base.left, y: r.top - base.top, w, h: lines.length * size * 1.35 });
  });
  return out;
}

/** The text of `el` without what its `data-export="skip"` descendants (buttons, menus) say. */
function ownText(el: HTMLElement): string {
  if (!el.querySelector('[data-export="skip"], select, button')) {
    return el.textContent ?? '';
  }
  const copy = el.cloneNode(true) as HTMLElement;
  copy.querySelectorAll('[data-export="skip"], select, button').forEach(n => n.remove());
  return copy.textContent ?? '';
}

/** HTML strips marked `data-export-boxes` (e.g. tokens shaded by attention): each child becomes a box with its text. */
function boxPieces(root: HTMLElement, base: DOMRect): Piece[] {
  const out: Piece[] = [];
  root.querySelectorAll('[data-export-boxes]').forEach(node => {
    const el = node as HTMLElement;
    if (el.closest('[data-export="skip"]')) {
      return;
    }
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) {
      out.push({ kind: 'boxes', el, x: r.left - base.left, y: r.top - base.top, w: r.width, h: r.height });
    }
  });
  return out;
}

/** Draw the children of an HTML strip as SVG rectangles (background, border) with their text, at their places. */
function drawBoxes(doc: Document, out: SVGSVGElement, strip: HTMLElement, dx: number, dy: number): void {
  const view = doc.defaultView;
  const base = strip.getBoundingClientRect();
  const g = doc.createElementNS(SVG_NS, 'g');
  g.setAttribute('class', 'attnlab-export-boxes');
  g.setAttribute('transform', `translate(${dx}, ${dy})`);
  Array.from(strip.children).forEach(child => {
    const c = child as HTMLElement;
    const r = c.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) {
      return;
    }
    const cs = view?.getComputedStyle(c);
    const rect = doc.createElementNS(SVG_NS, 'rect');
    rect.setAttribute('x', String(r.left - base.left));
    rect.setAttribute('y', String(r.top - base.top));
    rect.setAttribute('width', String(r.width));
    rect.setAttribute('height', String(r.height));
    rect.setAttribute('fill', cs?.backgroundColor || 'none');
    const border = !cs ? '#dddddd' : cs.borderTopStyle !== 'none' ? cs.borderTopColor
      : cs.borderBottomStyle !== 'none' ? cs.borderBottomColor : 'none';
    rect.setAttribute('stroke', border);
    rect.setAttribute('stroke-width', '1');
    if (cs && parseFloat(cs.opacity) < 1) {
      rect.setAttribute('opacity', cs.opacity);
    }
    g.appendChild(rect);
    const t = doc.createElementNS(SVG_NS, 'text');
    t.setAttribute('x', String(r.left - base.left + r.width / 2));
    t.setAttribute('y', String(r.top - base.top + r.height / 2));
    t.setAttribute('text-anchor', 'middle');
    t.setAttribute('dominant-baseline', 'central');
    t.setAttribute('font-size', cs?.fontSize || '12px');
    t.setAttribute('font-family', cs?.fontFamily || 'monospace');
    t.setAttribute('fill', cs?.color || '#111111');
    t.setAttribute('xml:space', 'preserve');
    if (cs && parseFloat(cs.opacity) < 1) {
      t.setAttribute('opacity', cs.opacity);
    }
    t.textContent = c.textContent ?? '';
    g.appendChild(t);
  });
  out.appendChild(g);
}

/**
 * Compose the view under `root` into one standalone SVG element (not attached to the page).
 *
 * Args: `root`, the view's outer element; `title`, an optional first line (e.g. the model and task) put above the
 * view. Returns an `<svg>` with a white background and, each at its offset from `root` as on screen: the view's
 * title, subtitle and `data-export-text` texts (wrapped to their width), its SVGs (whole, even where a scroll box
 * clips them) and its `data-export-boxes` strips. Throws `Error` if the view draws neither an SVG nor a strip.
 */
export function figureSvg(root: HTMLElement, title?: string): SVGSVGElement {
  const doc = root.ownerDocument;
  const svgs = topLevelSvgs(root);
  if (svgs.length === 0 && !root.querySelector('[data-export-boxes]')) {
    throw new Error('attnlab: this view has nothing drawn to export yet');
  }
  // Scroll boxes are reset while measuring, so a clipped SVG is placed (and exported) whole.
  const scrolled: [Element, number, number][] = [];
  root.querySelectorAll('*').forEach(el => {
    if (el.scrollLeft || el.scrollTop) {
      scrolled.push([el, el.scrollLeft, el.scrollTop]);
      el.scrollLeft = 0;
      el.scrollTop = 0;
    }
  });
  try {
    const base = root.getBoundingClientRect();
    const pieces: Piece[] = svgs.map(s => {
      const r = s.getBoundingClientRect();
      // the size drawn on screen (an SVG scaled by CSS keeps its viewBox), else its own attributes
      const scaled = s.hasAttribute('viewBox');
      const w = (scaled && r.width) || Number(s.getAttribute('width')) || r.width;
      const h = (scaled && r.height) || Number(s.getAttribute('height')) || r.height;
      return { kind: 'svg' as const, el: s, x: r.left - base.left, y: r.top - base.top, w, h };
    });
    pieces.push(...textPieces(root, base), ...boxPieces(root, base));
    const minX = Math.min(...pieces.map(p => p.x));
    const minY = Math.min(...pieces.map(p => p.y));
    const contentW = Math.max(...pieces.map(p => p.x - minX + p.w));
    const contentH = Math.max(...pieces.map(p => p.y - minY + p.h));

    const top: string[] = title ? wrap(title, Math.max(40, Math.floor(contentW / (TITLE_FONT * CHAR_EM)))) : [];
    const headerH = top.length ? MARGIN + top.length * TITLE_FONT * 1.35 : 0;
    const width = Math.ceil(contentW + 2 * MARGIN);
    const height = Math.ceil(headerH + MARGIN + contentH + MARGIN);
    const out = doc.createElementNS(SVG_NS, 'svg') as SVGSVGElement;
    out.setAttribute('xmlns', SVG_NS);
    out.setAttribute('width', String(width));
    out.setAttribute('height', String(height));
    out.setAttribute('viewBox', `0 0 ${width} ${height}`);
    out.setAttribute('font-family', 'sans-serif');
    const bg = doc.createElementNS(SVG_NS, 'rect');
    bg.setAttribute('width', '100%');
    bg.setAttribute('height', '100%');
    bg.setAttribute('fill', '#ffffff');
    out.appendChild(bg);
    const textEl = (text: string, x: number, y: number, size: number, bold: boolean, color: string, cls: string) => {
      const t = doc.createElementNS(SVG_NS, 'text');
      t.setAttribute('x', String(x));
      t.setAttribute('y', String(y));
      t.setAttribute('font-size', String(size));
      t.setAttribute('fill', color);
      if (bold) {
        t.setAttribute('font-weight', 'bold');
      }
      t.setAttribute('class', cls);
      t.textContent = text;
      out.appendChild(t);
    };
    top.forEach((line, i) => textEl(line, MARGIN, MARGIN + (i + 1) * TITLE_FONT * 1.35 - 4, TITLE_FONT, true, '#222222', 'attnlab-export-title'));
    const ox = MARGIN - minX;
    const oy = headerH + MARGIN - minY;
    for (const p of pieces) {
      if (p.kind === 'text') {
        p.lines.forEach((line, i) =>
          textEl(line, ox + p.x, oy + p.y + (i + 1) * p.size * 1.35 - p.size * 0.3, p.size, p.bold, p.color,
            p.bold ? 'attnlab-export-title' : 'attnlab-export-subtitle'));
      } else if (p.kind === 'boxes') {
        drawBoxes(doc, out, p.el, ox + p.x, oy + p.y);
      } else {
        const clone = p.el.cloneNode(true) as SVGSVGElement;
        inlineStyles(p.el, clone);
        clone.querySelectorAll('[data-export="skip"]').forEach(el => el.remove());
        clone.setAttribute('x', String(ox + p.x));
        clone.setAttribute('y', String(oy + p.y));
        clone.setAttribute('width', String(p.w));
        clone.setAttribute('height', String(p.h));
        clone.style.removeProperty('display');
        out.appendChild(clone);
      }
    }
    return out;
  } finally {
    for (const [el, left, top] of scrolled) {
      el.scrollLeft = left;
      el.scrollTop = top;
    }
  }
}

/** The figure of `root` as SVG text (UTF-8, with an XML declaration). */
export function figureSvgText(root: HTMLElement, title?: string): string {
  const svg = figureSvg(root, title);
  return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(svg);
}

/** The figure of `root` as a PNG blob, drawn at `scale` times its size. Rejects if the browser cannot draw it. */
export function figurePng(root: HTMLElement, title?: string, scale = 2): Promise<Blob> {
  const svg = figureSvg(root, title);
  const width = Number(svg.getAttribute('width'));
  const height = Number(svg.getAttribute('height'));
  const text = new XMLSerializer().serializeToString(svg);
  const doc = root.ownerDocument;
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = doc.createElement('canvas');
      canvas.width = Math.ceil(width * scale);
      canvas.height = Math.ceil(height * scale);
      const ctx = canvas.getContext('2d');
      if (!ctx) {
        reject(new Error('attnlab: this browser has no 2D canvas to draw the PNG'));
        return;
      }
      ctx.scale(scale, scale);
      ctx.drawImage(img, 0, 0, width, height);
      canvas.toBlob(b => (b ? resolve(b) : reject(new Error('attnlab: the PNG could not be encoded'))), 'image/png');
    };
    img.onerror = () => reject(new Error('attnlab: the browser could not draw the figure as an image'));
    img.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(text);
  });
}

/** Download `blob` as `filename` through a temporary link. */
export function download(doc: Document, blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = doc.createElement('a');
  a.href = url;
  a.download = filename;
  a.style.display = 'none';
  (doc.body ?? doc.documentElement).appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A file name from a title: letters, digits, '-' and '_' only, at most 60 characters. */
export function fileStem(title: string): string {
  const stem = title
    .replace(/[^A-Za-z0-9_-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60);
  return stem || 'attnlab-figure';
}

/**
 * Add "SVG" and "PNG" export buttons to `parent` (a view's toolbar or header).
 *
 * Args: `target()` returns the element whose figure is exported (called at click time, so a view that redraws is
 * exported as it is then); `name()` the file stem; `title()` an optional first line for the figure. The buttons are
 * marked `data-export="skip"` (they never appear in a figure). A failure is shown in the buttons' title attribute
 * and logged, never thrown into the page.
 */
export function exportButtons(
  parent: HTMLElement,
  target: () => HTMLElement,
  name: () => string,
  title?: () => string | undefined
): HTMLElement {
  const doc = parent.ownerDocument;
  const box = doc.createElement('span');
  box.className = 'attnlab-export';
  box.setAttribute('data-export', 'skip');
  const mk = (label: string, cls: string, hint: string): HTMLButtonElement => {
    const b = doc.createElement('button');
    b.type = 'button';
    b.className = `attnlab-export-btn ${cls}`;
    b.textContent = label;
    b.title = hint;
    box.appendChild(b);
    return b;
  };
  const svgBtn = mk('SVG', 'attnlab-export-svg', 'download this figure as SVG (vector; title, axes and colour bar included)');
  const pngBtn = mk('PNG', 'attnlab-export-png', 'download this figure as PNG (2x resolution)');
  const fail = (b: HTMLButtonElement, e: unknown): void => {
    b.title = `export failed: ${e instanceof Error ? e.message : String(e)}`;
    console.error(e);
  };
  svgBtn.addEventListener('click', () => {
    try {
      const text = figureSvgText(target(), title?.());
      download(doc, new Blob([text], { type: 'image/svg+xml' }), `${fileStem(name())}.svg`);
    } catch (e) {
      fail(svgBtn, e);
    }
  });
  pngBtn.addEventListener('click', () => {
    let p: Promise<Blob>;
    try {
      p = figurePng(target(), title?.());
    } catch (e) {
      fail(pngBtn, e);
      return;
    }
    p.then(blob => download(doc, blob, `${fileStem(name())}.png`)).catch(e => fail(pngBtn, e));
  });
  parent.appendChild(box);
  return box;
}
