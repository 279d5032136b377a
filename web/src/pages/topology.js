// topology.js - the host, its VMs and their disks as a simple graph (SVG),
// with the same facts as a list for screen readers. Networks and storage
// pools join the picture when the API has them.
import { h, replace } from '../dom.js';
import { store, subscribe, loadVms } from '../store.js';
import { api } from '../api.js';

let networks = []; // GET /api/v1/networks, when the daemon has networks

const NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const k of kids) el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return el;
}

const COLORS = { running: '#2f9e57', paused: '#c08a00', starting: '#2b6fd6', stopping: '#2b6fd6', stopped: '#8a95a3' };
const base = (p) => String(p || '').split('/').pop();
const diskLabel = (d) => (d.volume ? d.volume : base(d.path));
const diskTitle = (d) => (d.volume ? `volume ${d.volume}` : `${d.format || ''}: ${d.path}`);

function graph() {
  const vms = [...store.vms.values()].sort((a, b) => a.name.localeCompare(b.name));
  const colW = 150;
  const netY = networks.length ? 130 : 0, vmY = networks.length ? 230 : 150, diskY = vmY + 110;
  const width = Math.max(720, vms.length * colW + 40);
  const maxDisks = Math.max(1, ...vms.map((v) => (v.disks || []).length + (v.boot && v.boot.kernel ? 1 : 0)));
  const height = diskY + maxDisks * 46 + 20;
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, width, height, class: 'topo', 'aria-hidden': 'true' });
  const hx = width / 2;
  svg.append(s('rect', { x: hx - 90, y: 20, width: 180, height: 50, rx: 10, class: 'topo-host' }),
    s('text', { x: hx, y: 50, 'text-anchor': 'middle', class: 'topo-label' }, `host ${store.host ? store.host.hostname : ''}`));
  const netX = new Map();
  networks.forEach((n, i) => {
    const x = width / 2 + (i - (networks.length - 1) / 2) * 170;
    netX.set(n.name, x);
    svg.append(s('line', { x1: hx, y1: 70, x2: x, y2: netY - 16, class: 'topo-edge' }),
      s('rect', { x: x - 70, y: netY - 16, width: 140, height: 32, rx: 16, class: 'topo-net' }),
      s('text', { x, y: netY + 5, 'text-anchor': 'middle', class: 'topo-small' }, `${n.name}${n.type ? ` (${n.type})` : ''}`),
      s('title', {}, `network ${n.name}${n.subnet ? ` ${n.subnet}` : ''}`));
  });
  vms.forEach((vm, i) => {
    const x = 20 + i * colW + colW / 2;
    const nets = (vm.nics || []).map((n) => n.network).filter((n) => netX.has(n));
    if (nets.length) {
      for (const n of nets) svg.append(s('line', { x1: netX.get(n), y1: netY + 16, x2: x, y2: vmY - 22, class: 'topo-edge topo-nic' }));
    } else {
      svg.append(s('line', { x1: hx, y1: 70, x2: x, y2: vmY - 22, class: 'topo-edge' }));
    }
    const a = s('a', { href: `#/vms/${encodeURIComponent(vm.name)}` },
      s('rect', { x: x - 62, y: vmY - 22, width: 124, height: 44, rx: 8, class: 'topo-vm', stroke: COLORS[vm.state] || '#888' }),
      s('circle', { cx: x - 48, cy: vmY, r: 5, fill: COLORS[vm.state] || '#888' }),
      s('text', { x: x + 6, y: vmY + 5, 'text-anchor': 'middle', class: 'topo-label' }, vm.name.length > 14 ? `${vm.name.slice(0, 13)}…` : vm.name),
      s('title', {}, `${vm.name}: ${vm.state}`));
    svg.append(a);
    const items = [];
    if (vm.boot && vm.boot.kernel) items.push({ label: base(vm.boot.kernel), kind: 'kernel', title: vm.boot.kernel });
    for (const d of vm.disks || []) items.push({ label: diskLabel(d), kind: d.volume ? 'volume' : d.format, title: diskTitle(d) });
    items.forEach((it, j) => {
      const y = diskY + j * 46;
      // each item hangs from the one above it, so no edge crosses a box
      svg.append(s('line', { x1: x, y1: j === 0 ? vmY + 22 : y - 46 + 16, x2: x, y2: y - 14, class: 'topo-edge' }),
        s('rect', { x: x - 62, y: y - 14, width: 124, height: 30, rx: 4, class: `topo-disk topo-${it.kind === 'kernel' ? 'kernel' : 'disk'}` }),
        s('text', { x, y: y + 5, 'text-anchor': 'middle', class: 'topo-small' }, it.label.length > 18 ? `${it.label.slice(0, 17)}…` : it.label),
        s('title', {}, it.kind === 'kernel' ? `kernel: ${it.title}` : it.title));
    });
  });
  return svg;
}

function list() {
  const vms = [...store.vms.values()].sort((a, b) => a.name.localeCompare(b.name));
  return h('ul', { class: 'topo-list', 'aria-label': 'Host, VMs, their disks and networks' },
    vms.map((vm) => h('li', {}, h('a', { href: `#/vms/${encodeURIComponent(vm.name)}` }, vm.name), ` (${vm.state})`,
      h('ul', {},
        vm.boot && vm.boot.kernel ? h('li', {}, 'kernel ', h('code', {}, vm.boot.kernel)) : null,
        (vm.disks || []).map((d) => h('li', {}, d.volume ? 'volume ' : `disk (${d.format}) `, h('code', {}, d.volume || d.path))),
        (vm.nics || []).map((n) => h('li', {}, `network ${n.network}`, n.ip ? ` (${n.ip})` : ''))))));
}

export function topologyPage(main) {
  const box = h('div', { class: 'card topo-card' });
  const details = h('details', { class: 'card' }, h('summary', {}, 'As a list'));
  const render = () => {
    replace(box, store.vms.size ? graph() : h('p', { class: 'muted' }, 'No VMs yet.'));
    replace(details, h('summary', {}, 'As a list'), list());
  };
  replace(main, h('h1', { class: 'page-title' }, 'Topology'),
    h('p', { class: 'muted small' }, 'The host, its networks, its VMs (border: state) and the kernels and volumes they boot from. Select a VM to open it.'),
    box, details);
  render();
  loadVms().catch(() => {});
  // networks arrived with the network feature; an older daemon has none
  api('GET', '/api/v1/networks').then((r) => { networks = r.networks || []; render(); }).catch(() => { networks = []; });
  return subscribe((kind) => { if (kind === 'vms' || kind === 'vm') render(); });
}
