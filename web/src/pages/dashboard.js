// dashboard.js - host facts, VMs by state, recent events (live).
import { h, replace, fmtMiB, fmtDuration, fmtBytes } from '../dom.js';
import { store, subscribe, loadHost } from '../store.js';
import { api } from '../api.js';
import { stateBadge } from '../actions.js';
import { eventRow } from './events.js';
import { lineChart, pollMetrics, column, chartsGrid } from '../chart.js';

const RANGE = 300; // seconds of history in the charts
const MiB = 1048576;

const STATES = ['running', 'paused', 'starting', 'stopping', 'stopped'];

function fact(label, value, extra) {
  return h('div', { class: 'fact' }, h('dt', {}, label), h('dd', {}, value, extra || null));
}

// The latest value of a history field, null when absent.
function latest(d, field) {
  const i = d && d.fields ? d.fields.indexOf(field) : -1;
  const rows = (d && d.samples) || [];
  for (let j = rows.length - 1; i >= 0 && j >= 0; j--) if (typeof rows[j][i] === 'number') return rows[j][i];
  return null;
}

const rate = (v) => (v === null ? '–' : `${fmtBytes(v)}/s`);

function hostCard(host, m) {
  if (!host) return h('section', { class: 'card' }, h('p', {}, 'Loading host facts…'));
  // used = total - available (MemAvailable): the same measure as the chart
  const mem = host.memory_mib, free = host.memory_available_mib ?? host.memory_free_mib;
  const used = mem && free !== undefined ? mem - free : null;
  const pct = used !== null ? Math.round((used / mem) * 100) : null;
  const load = Array.isArray(host.load_average) ? host.load_average.map((x) => x.toFixed(2)).join('  ') : '–';
  return h('section', { class: 'card', 'aria-labelledby': 'host-title' },
    h('h2', { id: 'host-title' }, `Host ${host.hostname || ''}`),
    h('dl', { class: 'facts' },
      fact('Accelerator', h('span', { class: `badge accel-${host.accelerator}`, id: 'accel' }, host.accelerator || '–')),
      host.accelerator_reason ? fact('Why', h('span', { class: 'small' }, host.accelerator_reason)) : null,
      fact('CPUs', String(host.cpus ?? '–'), h('span', { class: 'muted small' }, `  load ${load}`)),
      fact('Memory', `${fmtMiB(used)} used of ${fmtMiB(mem)}`,
        pct !== null ? h('meter', { min: 0, max: 100, value: pct, 'aria-label': `memory used ${pct}%`, class: 'meter' }) : null),
      diskFact(m),
      fact('Disk I/O', h('span', { id: 'host-disk-io' }, `read ${rate(latest(m, 'disk_read_bytes_per_second'))}, write ${rate(latest(m, 'disk_write_bytes_per_second'))}`)),
      fact('Network', h('span', { id: 'host-net-io' }, `in ${rate(latest(m, 'net_rx_bytes_per_second'))}, out ${rate(latest(m, 'net_tx_bytes_per_second'))}`)),
      fact('QEMU', host.qemu ? `${host.qemu.version || ''}` : '–'),
      fact('cgroup', host.cgroup || '–'),
      fact('kvmhostd', `${host.version || ''}, up ${fmtDuration(host.uptime_seconds)}`)));
}

// The filesystem holding the state dir (where the default pool lives).
function diskFact(m) {
  const used = latest(m, 'disk_used_bytes'), total = latest(m, 'disk_total_bytes');
  if (used === null || !total) return fact('Disk', h('span', { id: 'host-disk', class: 'muted' }, '–'));
  const pct = Math.round((used / total) * 100);
  return fact('Disk', h('span', { id: 'host-disk', dataset: { used, total } }, `${fmtBytes(used)} used of ${fmtBytes(total)}`),
    h('meter', { min: 0, max: 100, value: pct, low: 80, high: 90, optimum: 0, 'aria-label': `disk used ${pct}%`, class: 'meter', id: 'host-disk-meter' }));
}

function vmsCard() {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const vm of store.vms.values()) counts[vm.state] = (counts[vm.state] || 0) + 1;
  const total = store.vms.size;
  return h('section', { class: 'card', 'aria-labelledby': 'vms-title' },
    h('h2', { id: 'vms-title' }, h('a', { href: '#/vms' }, `Virtual machines (${total})`)),
    h('ul', { class: 'state-counts', id: 'state-counts' },
      STATES.map((s) => h('li', { dataset: { state: s } }, stateBadge({ state: s }), h('span', { class: 'count' }, String(counts[s]))))),
    total === 0 ? h('p', {}, 'No VMs yet. ', h('a', { href: '#/create' }, 'Create one')) : null,
    activeList());
}

// The VMs that are up, with how long (from started_at).
function activeList() {
  const up = [...store.vms.values()].filter((v) => v.state !== 'stopped').sort((a, b) => a.name.localeCompare(b.name));
  if (!up.length) return null;
  const now = Date.now();
  return h('table', { class: 'mini', id: 'active-vms', 'aria-label': 'VMs that are up' },
    up.length > 8 ? h('caption', { class: 'muted small' }, `the first 8 of ${up.length}`) : null,
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'VM'), h('th', { scope: 'col' }, 'State'),
      h('th', { scope: 'col' }, 'CPU / memory'), h('th', { scope: 'col' }, 'Up'))),
    h('tbody', {}, up.slice(0, 8).map((v) => {
      const t = v.started_at ? Date.parse(v.started_at) : NaN;
      return h('tr', {},
        h('th', { scope: 'row' }, h('a', { href: `#/vms/${encodeURIComponent(v.name)}` }, v.name)),
        h('td', {}, stateBadge(v)),
        h('td', {}, `${v.vcpus} vCPU, ${fmtMiB(v.memory_mib)}`),
        h('td', {}, isNaN(t) ? '–' : fmtDuration((now - t) / 1000)));
    })));
}

// Alerts pending or firing now (GET /api/v1/alerts), null before the first answer.
function alertsCard(alerts) {
  const act = alerts ? alerts.active || [] : null;
  const firing = act ? act.filter((a) => a.state === 'firing').length : 0;
  return h('section', { class: 'card', 'aria-labelledby': 'alerts-title' },
    h('h2', { id: 'alerts-title' }, h('a', { href: '#/alerts' }, 'Alerts'),
      act ? h('span', { class: `badge ${firing ? 'state-paused' : 'state-running'}`, id: 'alerts-firing' }, `${firing} firing`) : null),
    !act ? h('p', { class: 'muted' }, 'Loading…')
      : act.length ? h('ul', { class: 'alerts-list', id: 'dash-alerts' }, act.slice(0, 8).map((a) => h('li', {},
        h('span', { class: `badge ${a.state === 'firing' ? 'state-paused' : ''}` }, a.state), ' ', h('strong', {}, a.rule),
        a.vm ? [' on ', h('a', { href: `#/vms/${encodeURIComponent(a.vm)}` }, a.vm)] : ' (host)',
        typeof a.value === 'number' ? h('span', { class: 'muted small' }, ` now ${a.value.toFixed(1)}`) : null)))
        : h('p', { class: 'muted' }, 'No alert is pending or firing.'),
    alerts ? h('p', { class: 'muted small' }, `${(alerts.rules || []).length} rules`) : null);
}

function eventsCard() {
  const list = store.events.slice(0, 12);
  return h('section', { class: 'card wide', 'aria-labelledby': 'ev-title' },
    h('h2', { id: 'ev-title' }, 'Recent events ', h('span', { class: `live-dot ${store.connected ? 'on' : ''}`, title: store.connected ? 'live' : 'disconnected' }),
      h('a', { href: '#/tasks', class: 'btn small', id: 'tasks-link' }, 'All tasks')),
    list.length ? h('ol', { class: 'events', id: 'recent-events' }, list.map((ev) => eventRow(ev, true)))
      : h('p', { class: 'muted' }, 'No events yet.'));
}

// Host CPU, memory, disk and network I/O over the last minutes (kept
// across re-renders); onData gets each history answer too.
function hostCharts(onData) {
  const cpu = lineChart({ id: 'host-cpu-chart', title: 'Host CPU', unit: '%' });
  const mem = lineChart({ id: 'host-mem-chart', title: 'Host memory used', unit: 'MiB', fmt: (v) => `${Math.round(v)} MiB` });
  const bytes = { fmt: (v) => `${fmtBytes(v)}/s`, tick: (v) => `${fmtBytes(v)}/s` };
  const disk = lineChart({ id: 'host-disk-chart', title: 'Host disk I/O', unit: 'bytes/s', ...bytes });
  const net = lineChart({ id: 'host-net-chart', title: 'Host network', unit: 'bytes/s', ...bytes });
  const card = h('section', { class: 'card wide', 'aria-labelledby': 'host-charts-title' },
    h('h2', { id: 'host-charts-title' }, 'Host usage, the last minutes'),
    chartsGrid(cpu, mem, disk, net),
    h('p', { class: 'muted small' }, 'Disk I/O summed over the whole disks; network over every interface but lo.'));
  const { stop } = pollMetrics('/api/v1/host/metrics', RANGE, (d) => {
    cpu.set(column(d, 'cpu_percent'), { range: RANGE, yMax: 100 });
    const total = column(d, 'memory_total_bytes', MiB).pop();
    mem.set(column(d, 'memory_used_bytes', MiB), { range: RANGE, yMax: total && total[1] ? total[1] : undefined });
    disk.set([{ name: 'read', points: column(d, 'disk_read_bytes_per_second') },
      { name: 'write', points: column(d, 'disk_write_bytes_per_second') }], { range: RANGE });
    net.set([{ name: 'in', points: column(d, 'net_rx_bytes_per_second') },
      { name: 'out', points: column(d, 'net_tx_bytes_per_second') }], { range: RANGE });
    onData(d);
  });
  return { card, stop };
}

export function dashboardPage(main) {
  const root = h('div', { class: 'grid' });
  let metrics = null, alerts = null;
  const render = () => replace(root, hostCard(store.host, metrics), vmsCard(), alertsCard(alerts), charts.card, eventsCard());
  const loadAlerts = () => api('GET', '/api/v1/alerts').then((a) => { alerts = a; render(); }).catch(() => {});
  const charts = hostCharts((d) => { metrics = d; render(); });
  replace(main, h('h1', { class: 'page-title' }, 'Dashboard'), root);
  render();
  loadHost().catch(() => {});
  loadAlerts();
  const timer = setInterval(() => { loadHost().catch(() => {}); loadAlerts(); }, 5000);
  const unsub = subscribe((kind, ev) => {
    if (kind === 'event' && ev.type.startsWith('alert.')) loadAlerts();
    render();
  });
  return () => { clearInterval(timer); unsub(); charts.stop(); };
}
