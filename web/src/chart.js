// chart.js - small dependency-free SVG line charts fed by the daemon's
// metrics history (GET /api/v1/host/metrics, /api/v1/vms/{name}/metrics).
// A chart is a <figure> with a <figcaption> (title and latest value) and an
// <svg role="img"> whose aria-label summarizes the latest value.
import { h, replace } from './dom.js';
import { api } from './api.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 480, H = 150, L = 68, R = 8, T = 8, B = 22; // viewBox and margins

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// The smallest 1, 2 or 5 times a power of ten that is >= x.
export function niceCeil(x) {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

function ago(sec) {
  return sec >= 120 ? `-${Math.round(sec / 60)} min` : `-${Math.round(sec)} s`;
}

// lineChart({id, title, unit, fmt, tick}) -> {el, set(points, opts), empty(msg)}
// fmt formats the latest value, tick the y-axis labels.
// points: [[unixSeconds, value], ...] (null values are skipped);
// opts: {range: seconds at most on the x axis (at least a minute shows, more
// as the history grows), yMax: fixed top of the scale (else from the data)}.
export function lineChart({ id, title, unit, fmt = (v) => `${v.toFixed(1)} ${unit}`,
  tick = (v) => `${Math.round(v)} ${unit}` }) {
  const now = h('span', { class: 'chart-now' }, '–');
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart-svg', 'aria-label': `${title}: no data yet` });
  const el = h('figure', { class: 'chart', id, dataset: { points: '0' } },
    h('figcaption', {}, h('span', { class: 'chart-title' }, `${title} (${unit})`), now),
    svg);

  function empty(msg) {
    el.dataset.points = '0';
    delete el.dataset.latest;
    now.textContent = '–';
    svg.setAttribute('aria-label', `${title}: ${msg}`);
    svg.replaceChildren(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-msg' }, msg));
  }

  // lines: [[t, v], ...] for one line, or [{name, points}, ...] for
  // several (a legend in the caption, one colour each).
  function set(lines, { range = 300, yMax } = {}) {
    const multi = lines.length > 0 && !Array.isArray(lines[0]);
    const series = (multi ? lines : [{ name: '', points: lines }])
      .map((l) => ({ name: l.name, pts: l.points.filter((p) => typeof p[1] === 'number' && isFinite(p[1])) }));
    const pts = series[0].pts;
    const all = series.flatMap((x) => x.pts);
    if (!all.length) { empty('no samples yet'); return; }
    const tFirst = Math.min(...all.map((p) => p[0])), tLast = Math.max(...all.map((p) => p[0]));
    range = Math.min(range, Math.max(60, Math.ceil((tLast - tFirst) / 60) * 60));
    const t1 = tLast, t0 = t1 - range;
    const top = yMax || niceCeil(Math.max(...all.map((p) => p[1])) * 1.1);
    const x = (t) => L + ((t - t0) / range) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
    const kids = [];
    for (const f of [0, 0.5, 1]) {
      const yy = y(top * f).toFixed(1);
      kids.push(s('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: f ? 'chart-grid' : 'chart-axis' }));
      kids.push(s('text', { x: L - 6, y: yy, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'chart-tick' }, tick(top * f)));
    }
    kids.push(s('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'chart-axis' }));
    kids.push(s('text', { x: L, y: H - 6, class: 'chart-tick' }, ago(range)));
    kids.push(s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', class: 'chart-tick' }, 'now'));
    series.forEach((ser, i) => {
      if (!ser.pts.length) return;
      const line = ser.pts.filter((p) => p[0] >= t0).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
      kids.push(s('polyline', { points: line, class: `chart-line chart-s${i}` }));
      const [lt, lv] = ser.pts[ser.pts.length - 1];
      kids.push(s('circle', { cx: x(lt).toFixed(1), cy: y(lv).toFixed(1), r: 3, class: `chart-dot chart-s${i}` }));
    });
    svg.replaceChildren(...kids);
    const latest = series.map((ser) => (ser.pts.length ? ser.pts[ser.pts.length - 1][1] : null));
    const text = series.map((ser, i) => (latest[i] === null ? null : `${ser.name ? `${ser.name} ` : ''}${fmt(latest[i])}`)).filter(Boolean).join(', ');
    el.dataset.points = String(pts.length);
    el.dataset.series = String(series.length);
    if (latest[0] !== null) el.dataset.latest = String(latest[0]); else delete el.dataset.latest;
    if (multi) {
      replace(now, series.map((ser, i) => h('span', { class: 'chart-key' }, h('span', { class: `chart-swatch chart-s${i}`, 'aria-hidden': 'true' }),
        `${ser.name} ${latest[i] === null ? '–' : fmt(latest[i])}`)));
    } else now.textContent = text;
    const n = all.length;
    svg.setAttribute('aria-label', `${title}: ${text} now; ${n} sample${n === 1 ? '' : 's'} over the last ${ago(range).slice(1)}`);
  }

  empty('loading…');
  return { el, set, empty };
}

// Fetch a metrics history now and then again on the sampler's cadence
// (at least every 2 s, at most every 5 s), only while the page is visible.
// onData(json) draws it; when(): false skips the fetch (e.g. a stopped VM).
// Returns {stop(), now()}: now() fetches at once (e.g. when a tab shows).
export function pollMetrics(path, range, onData, when = () => true) {
  let timer = null, stopped = false, busy = false;
  let every = 5000;
  async function tick() {
    timer = null;
    if (stopped) return;
    if (document.visibilityState === 'visible' && !busy && when()) {
      busy = true;
      try {
        const data = await api('GET', `${path}?range=${range}`);
        if (!stopped) {
          every = Math.min(5, Math.max(2, data.interval_seconds || 5)) * 1000;
          onData(data);
        }
      } catch { /* the daemon is away, or the VM went: try again later */ }
      busy = false;
    }
    if (!stopped) timer = setTimeout(tick, every);
  }
  const now = () => {
    if (document.visibilityState === 'visible' && timer !== null) { clearTimeout(timer); tick(); }
  };
  document.addEventListener('visibilitychange', now);
  tick();
  return {
    now,
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      document.removeEventListener('visibilitychange', now);
    },
  };
}

// The [[time, value], ...] pairs of one field of a history answer;
// fallback: a second field used where the first is null.
export function column(data, field, scale = 1, fallback) {
  const f = data.fields || [];
  const i = f.indexOf(field), j = fallback ? f.indexOf(fallback) : -1;
  if (i < 0) return [];
  return (data.samples || []).map((r) => {
    const v = r[i] ?? (j >= 0 ? r[j] : null);
    return [r[0], typeof v === 'number' ? v / scale : null];
  });
}

export function chartsGrid(...charts) {
  return replace(h('div', { class: 'charts' }), charts.map((c) => c.el));
}
