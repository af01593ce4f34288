/**
 * Figure export for every attnlab view: one self-contained SVG (or a PNG drawn from it) holding what the view shows:
 * its title and subtitle, and every SVG it draws (matrix, axes, colour bar, curves, graph), placed where they are
 * on screen.
 *
 * A view is HTML (title, subtitle, scroll boxes) around one or more SVGs. `figureSvg(root)` composes them into one
 * SVG: the texts of `root`'s `.attnlab-title` and `.attnlab-subtitle` elements (and any element marked
 * `data-export-text`) become `<text>` lines at the top, and each top-level SVG inside `root` is cloned at its offset
 * from `root`, full size even where a scroll box clips it on screen. Computed styles (fills, strokes, fonts) are
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

/** Copy computed presentation styles from `src` (in the page) to `dst` (its clone), element by element. */
function inlineStyles(src: Element, dst: Element): void {
  const view = src.ownerDocument.defaultView;
  if (view) {
    const cs = view.getComputedStyle(src);
    const decl: string[] = [];
    for (const p of STYLE_PROPS) {
      const v = cs.getPropertyValue(p);
      if (v) {
        decl.push(`${p}:${v}`);
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

/** The header texts of a view: [text, font size, bold] for its title, subtitle and `data-export-text` elements. */
function headerTexts(root: HTMLElement): [string, number, boolean][] {
  const out: [string, number, boolean][] = [];
  root.querySelectorAll('.attnlab-title, .attnlab-subtitle, [data-export-text]').forEach(el => {
    if (el.closest('[data-export="skip"]') || el.closest('svg')) {
      return;
    }
    const text = (el.textContent ?? '').trim();
    if (text) {
      const title = el.classList.contains('attnlab-title');
      out.push([text, title ? TITLE_FONT : SUBTITLE_FONT, title]);
    }
  });
  return out;
}

/**
 * Compose the view under `root` into one standalone SVG element (not attached to the page).
 *
 * Args: `root`, the view's outer element; `title`, an optional first line (e.g. the model and task) put above the
 * view's own title. Returns an `<svg>` with a white background, the header lines, then each of the view's SVGs at
 * its offset from `root`. Throws `Error` if the view draws no SVG (nothing to export).
 */
export function figureSvg(root: HTMLElement, title?: string): SVGSVGElement {
  const doc = root.ownerDocument;
  const svgs = topLevelSvgs(root);
  if (svgs.length === 0) {
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
    const placed = svgs.map(s => {
      const r = s.getBoundingClientRect();
      const w = Number(s.getAttribute('width')) || r.width;
      const h = Number(s.getAttribute('height')) || r.height;
      return { s, x: r.left - base.left, y: r.top - base.top, w, h };
    });
    const minX = Math.min(...placed.map(p => p.x));
    const minY = Math.min(...placed.map(p => p.y));
    const contentW = Math.max(...placed.map(p => p.x - minX + p.w));
    const contentH = Math.max(...placed.map(p => p.y - minY + p.h));

    const lines: [string, number, boolean][] = [];
    const maxChars = Math.max(40, Math.floor(contentW / (SUBTITLE_FONT * 0.6)));
    const texts = headerTexts(root);
    if (title) {
      texts.unshift([title, TITLE_FONT, true]);
    }
    for (const [text, size, bold] of texts) {
      for (const line of wrap(text, bold ? Math.floor((maxChars * SUBTITLE_FONT) / TITLE_FONT) : maxChars)) {
        lines.push([line, size, bold]);
      }
    }
    let headerH = MARGIN;
    const lineYs: number[] = [];
    for (const [, size] of lines) {
      headerH += size * 1.35;
      lineYs.push(headerH);
    }
    headerH += lines.length ? MARGIN : 0;

    const width = Math.ceil(contentW + 2 * MARGIN);
    const height = Math.ceil(headerH + contentH + MARGIN);
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
    lines.forEach(([text, size, bold], i) => {
      const t = doc.createElementNS(SVG_NS, 'text');
      t.setAttribute('x', String(MARGIN));
      t.setAttribute('y', String(lineYs[i]));
      t.setAttribute('font-size', String(size));
      t.setAttribute('fill', '#222222');
      if (bold) {
        t.setAttribute('font-weight', 'bold');
      }
      t.setAttribute('class', bold ? 'attnlab-export-title' : 'attnlab-export-subtitle');
      t.textContent = text;
      out.appendChild(t);
    });
    for (const p of placed) {
      const clone = p.s.cloneNode(true) as SVGSVGElement;
      inlineStyles(p.s, clone);
      clone.querySelectorAll('[data-export="skip"]').forEach(el => el.remove());
      clone.setAttribute('x', String(MARGIN + p.x - minX));
      clone.setAttribute('y', String(headerH + p.y - minY));
      clone.setAttribute('width', String(p.w));
      clone.setAttribute('height', String(p.h));
      clone.style.removeProperty('display');
      out.appendChild(clone);
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
