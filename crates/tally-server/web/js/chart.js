// Tiny SVG line charts for the load panel: a y axis from zero to a round
// number, a few grid lines, one polyline per series. No library; redrawn
// from scratch on each poll (a few dozen points).

import { h, fill } from './dom.js';

const W = 320;
const H = 150;
const PAD = { left: 34, right: 10, top: 8, bottom: 22 };

/** A round step (1, 2, 2.5 or 5 × 10ⁿ) at or above `v`. */
function niceStep(v) {
  if (!(v > 0)) return 0.25;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)}k`;
  return String(Number(v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)));
}

/**
 * A chart figure. Call `update(xMax, series)` with
 * series = [{label, cls, points: [[x, y], …]}]; y in `unit`.
 */
export function lineChart(title, unit) {
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img' });
  const legend = h('p', { class: 'legend' });
  const figure = h('figure', { class: 'chart' },
    h('figcaption', {}, h('span', { class: 'chart-title', text: `${title} (${unit})` }), legend), svg);

  function update(xMax, series) {
    const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
    const top = Math.max(0, ...ys);
    const yStep = niceStep(Math.max(top, 1) / 4); // an empty chart still gets 0–1
    const yMax = Math.ceil(Math.max(top, 1) / yStep) * yStep;
    const xm = Math.max(1, xMax);
    const xStep = Math.max(1, niceStep(xm / 4));
    const x = (v) => PAD.left + (v / xm) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
    const parts = [];
    for (let v = 0; v <= yMax + yStep / 2; v += yStep) {
      parts.push(h('svg:line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      parts.push(h('svg:text', { class: 'tick', x: PAD.left - 5, y: y(v) + 3.5, 'text-anchor': 'end', text: fmt(v) }));
    }
    for (let v = 0; v <= xm; v += xStep) {
      parts.push(h('svg:text', { class: 'tick', x: x(v), y: H - 6, 'text-anchor': 'middle', text: `${v}s` }));
    }
    const labels = [];
    for (const s of series) {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      if (pts.length) {
        parts.push(h('svg:polyline', { class: `line ${s.cls}`, points: pts.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ') }));
        if (pts.length === 1) parts.push(h('svg:circle', { class: `dot ${s.cls}`, cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5 }));
      }
      const last = pts.length ? pts[pts.length - 1][1] : null;
      labels.push(h('span', { class: `key ${s.cls}` }, `${s.label} `, h('b', { text: last === null ? '–' : fmt(last) })));
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
