// Tiny SVG line charts for the load panel: a y axis from zero to a round
// number, a few grid lines, one polyline per series. No library; redrawn
// from scratch on each poll (a few dozen points).

import { h, fill } from './dom.js';

const W = 320;
const H = 150;
const PAD = { left: 40, right: 8, top: 10, bottom: 22 };

/** The smallest 1/2/5 × 10ⁿ at or above `v`. */
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k`;
  if (v >= 10 || v === 0) return String(Math.round(v));
  return v.toFixed(1);
}

/**
 * A chart figure. Call `update(xMax, series)` with
 * series = [{label, cls, points: [[x, y], …]}]; y in `unit`.
 */
export function lineChart(title, unit) {
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img' });
  const legend = h('p', { class: 'legend' });
  const figure = h('figure', { class: 'chart' },
    h('figcaption', {}, h('span', { class: 'chart-title', text: title }), legend), svg);

  function update(xMax, series) {
    const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const yMax = niceMax(Math.max(0, ...ys));
    const xm = Math.max(1, xMax);
    const x = (v) => PAD.left + (v / xm) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (yMax * i) / 4;
      parts.push(h('svg:line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      parts.push(h('svg:text', { class: 'tick', x: PAD.left - 5, y: y(v) + 3.5, 'text-anchor': 'end', text: fmt(v) }));
    }
    for (const v of [0, Math.round(xm / 2), xm]) {
      parts.push(h('svg:text', { class: 'tick', x: x(v), y: H - 6, 'text-anchor': 'middle', text: `${v}s` }));
    }
    parts.push(h('svg:text', { class: 'tick unit', x: 4, y: PAD.top + 2, text: unit }));
    const labels = [];
    for (const s of series) {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      if (pts.length) {
        parts.push(h('svg:polyline', { class: `line ${s.cls}`, points: pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ') }));
        if (pts.length === 1) parts.push(h('svg:circle', { class: `dot ${s.cls}`, cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5 }));
      }
      const last = pts.length ? pts[pts.length - 1][1] : null;
      labels.push(h('span', { class: `key ${s.cls}` }, `${s.label} `, h('b', { text: last === null ? '–' : `${fmt(last)} ${unit}` })));
    }
    fill(svg, ...parts);
    fill(legend, ...labels);
    const summary = series.map((s) => {
      const v = s.points.length ? s.points[s.points.length - 1][1] : null;
      return `${s.label} ${v === null ? 'no data' : `${fmt(v)} ${unit}`}`;
    }).join(', ');
    const seconds = Math.max(0, ...series.map((x) => x.points.length));
    svg.setAttribute('aria-label', `${title} over ${seconds} s; latest: ${summary}`);
  }

  return { el: figure, update };
}
