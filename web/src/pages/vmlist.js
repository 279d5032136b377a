// vmlist.js - the VMs (in a cluster every host's, with a Host column), state
// live from the event stream (this host's VMs), with actions.
import { h, replace, fmtMiB } from '../dom.js';
import { store, subscribe, loadVms } from '../store.js';
import { actionButtons, stateBadge } from '../actions.js';

function row(vm) {
  return h('tr', { dataset: { vm: vm.name } },
    h('th', { scope: 'row' }, h('a', { href: `#/vms/${encodeURIComponent(vm.name)}` }, vm.name)),
    h('td', { class: 'state' }, stateBadge(vm), vm.state_reason ? h('span', { class: 'muted small reason' }, vm.state_reason) : null),
    h('td', { class: 'num' }, String(vm.vcpus)),
    h('td', { class: 'num' }, fmtMiB(vm.memory_mib)),
    h('td', {}, vm.boot && vm.boot.kernel ? 'kernel' : (vm.disks && vm.disks.length ? 'disk' : '–')),
    h('td', { class: 'host' }, vm.host || '–'),
    h('td', {}, actionButtons(vm, { compact: true })));
}

export function vmListPage(main) {
  const tbody = h('tbody', { id: 'vm-rows' });
  const empty = h('p', { class: 'muted', hidden: true }, 'No VMs yet. ', h('a', { href: '#/create' }, 'Create one'), '.');
  const filter = h('input', { id: 'vm-filter', type: 'search', placeholder: 'Filter by name', 'aria-label': 'Filter VMs by name' });
  const rows = new Map();
  const visible = (vm) => !filter.value || vm.name.toLowerCase().includes(filter.value.toLowerCase());
  const renderAll = () => {
    rows.clear();
    const frag = document.createDocumentFragment();
    const names = [...store.vms.keys()].sort();
    for (const n of names) {
      const vm = store.vms.get(n);
      if (!visible(vm)) continue;
      const r = row(vm);
      rows.set(n, r);
      frag.append(r);
    }
    replace(tbody, frag);
    empty.hidden = store.vms.size !== 0;
  };
  const renderOne = (name) => {
    const vm = store.vms.get(name);
    const old = rows.get(name);
    if (!vm || !old) return renderAll(); // added or removed: order changes
    const r = row(vm);
    // keep keyboard focus on the same button across the update
    const focused = old.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    old.replaceWith(r);
    rows.set(name, r);
    if (focused) {
      const b = r.querySelector(`[data-action="${focused}"]`);
      if (b && !b.disabled) b.focus();
    }
  };
  filter.addEventListener('input', renderAll);
  replace(main,
    h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Virtual machines'), filter,
      h('a', { class: 'btn primary', href: '#/create' }, 'Create VM')),
    h('div', { class: 'table-wrap' },
      h('table', { class: 'vms', 'aria-label': 'Virtual machines' },
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'State'),
          h('th', { scope: 'col', class: 'num' }, 'vCPUs'), h('th', { scope: 'col', class: 'num' }, 'Memory'),
          h('th', { scope: 'col' }, 'Boot'), h('th', { scope: 'col' }, 'Host'), h('th', { scope: 'col' }, 'Actions'))),
        tbody)),
    empty);
  renderAll();
  loadVms().catch(() => {});
  return subscribe((kind, name) => {
    if (kind === 'vms') renderAll();
    else if (kind === 'vm') renderOne(name);
  });
}
