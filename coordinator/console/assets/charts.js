// Small live line charts drawn as SVG: a time window (growing in steps of
// 30 s from 30 s to its longest as the data comes), up to a few series, a
// y axis scaled to the data, and a legend with each series' latest value
// (the legend is the accessible text; the drawing is decoration).

const SVG = 'http://www.w3.org/2000/svg';
const W = 260;
const H = 110;
const PAD = { left: 46, right: 6, top: 8, bottom: 18 };

function svgEl(name, attrs = {}, parent) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
export function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  const f = v / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

export class LineChart {
  // series: [{ key, label }]; format(value) writes a value with its unit.
  constructor(parent, { id, title, series, format, windowSeconds = 120 }) {
    this.series = series;
    this.format = format;
    this.maxMs = windowSeconds * 1000;

    const fig = document.createElement('figure');
    fig.className = 'chart';
    fig.id = id;
    const cap = document.createElement('figcaption');
    const h = document.createElement('h4');
    h.textContent = title;
    this.legend = document.createElement('ul');
    this.legend.className = 'legend';
    this.values = series.map((s, i) => {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = `swatch s${i}`;
      sw.setAttribute('aria-hidden', 'true');
      const name = document.createElement('span');
      name.textContent = `${s.label} `;
      const val = document.createElement('strong');
      val.textContent = '–';
      li.append(sw, name, val);
      this.legend.appendChild(li);
      return val;
    });
    cap.append(h, this.legend);

    this.svg = svgEl('svg', { viewBox: `0 0 ${W} ${H}`, 'aria-hidden': 'true', focusable: 'false' });
    this.grid = svgEl('g', { class: 'grid' }, this.svg);
    this.lines = series.map((_, i) => svgEl('path', { class: `line s${i}` }, this.svg));
    this.since = svgEl('text', { x: PAD.left, y: H - 4, class: 'axis' }, this.svg);
    const xr = svgEl('text', { x: W - PAD.right, y: H - 4, class: 'axis end' }, this.svg);
    xr.textContent = 'now';

    fig.append(cap, this.svg);
    parent.appendChild(fig);
  }

  // update redraws from points [{ t (ms), values: { key: number or null } }],
  // oldest first; a null value is a gap.
  update(points, now = Date.now()) {
    const step = 30 * 1000;
    const span = points.length ? now - points[0].t : 0;
    const windowMs = Math.min(this.maxMs, Math.max(step, Math.ceil(span / step) * step));
    const label = windowMs >= 120 * 1000 ? `${windowMs / 60000} min ago` : `${windowMs / 1000} s ago`;
    if (this.since.textContent !== label) this.since.textContent = label;
    const from = now - windowMs;
    const shown = points.filter((p) => p.t >= from);
    let max = 0;
    for (const p of shown) {
      for (const s of this.series) {
        const v = p.values[s.key];
        if (v != null && Number.isFinite(v)) max = Math.max(max, v);
      }
    }
    const top = niceCeil(max * 1.1);
    const x = (t) => PAD.left + ((t - from) / windowMs) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);

    this.grid.replaceChildren();
    for (const v of [0, top / 2, top]) {
      svgEl('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }, this.grid);
      const label = svgEl('text', { x: PAD.left - 4, y: y(v) + 3, class: 'axis end' }, this.grid);
      label.textContent = this.format(v, true);
    }

    this.series.forEach((s, i) => {
      let d = '';
      let pen = false;
      for (const p of shown) {
        const v = p.values[s.key];
        if (v == null || !Number.isFinite(v)) {
          pen = false;
          continue;
        }
        d += `${pen ? 'L' : 'M'}${x(p.t).toFixed(1)} ${y(v).toFixed(1)}`;
        pen = true;
      }
      this.lines[i].setAttribute('d', d);
      // The latest known value, for the legend.
      let last = null;
      for (let j = shown.length - 1; j >= 0 && last == null; j--) last = shown[j].values[s.key] ?? null;
      this.values[i].textContent = last == null ? '–' : this.format(last);
    });
  }
}
