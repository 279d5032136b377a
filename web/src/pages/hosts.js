// hosts.js - the hosts of the cluster (#/hosts, GET /api/v1/hosts): state,
// address, CPUs, memory, free memory, VMs; a single host lists itself.
// Refreshed every 5 s while the page is open.
import { h, replace, fmtMiB } from '../dom.js';
import { api } from '../api.js';

const STATE_CLASS = { online: 'state-running', offline: 'state-stopped', unknown: 'state-paused' };

export function hostsPage(main) {
  const box = h('div', { class: 'table-wrap', id: 'hosts' }, h('p', { class: 'muted pad' }, 'Loading…'));
  const draw = (hosts) => {
    replace(box, h('table', { class: 'vms', 'aria-label': 'Hosts' },
      h('thead', {}, h('tr', {}, ['Name', 'State', 'Address', 'CPUs', 'Memory', 'Free', 'VMs', 'Version']
        .map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, hosts.map((x) => h('tr', { dataset: { host: x.name || '' } },
        h('th', { scope: 'row' }, x.name || '–', x.self ? h('span', { class: 'muted small' }, ' (this host)') : null),
        h('td', {}, h('span', { class: `badge ${STATE_CLASS[x.state] || ''}` }, x.state)),
        h('td', {}, x.address || '–'),
        h('td', { class: 'num' }, x.capacity ? String(x.capacity.cpus) : '–'),
        h('td', { class: 'num' }, x.capacity ? fmtMiB(x.capacity.memory_mib) : '–'),
        h('td', { class: 'num' }, x.memory_free_mib != null ? fmtMiB(x.memory_free_mib) : '–'),
        h('td', { class: 'num' }, h('a', { href: '#/vms' }, String(x.vms ?? 0))),
        h('td', {}, x.version || '–'))))));
  };
  async function load() {
    try {
      const r = await api('GET', '/api/v1/hosts');
      draw(r.hosts || []);
    } catch (e) {
      replace(box, h('p', { class: 'muted pad' }, `Cannot list hosts: ${e.message}`));
    }
  }
  replace(main, h('h1', { class: 'page-title' }, 'Hosts'),
    h('p', { class: 'muted small' }, 'The hosts of the cluster (a single host lists itself); online while its lease is alive.'), box);
  load();
  const timer = setInterval(load, 5000);
  return () => clearInterval(timer);
}
