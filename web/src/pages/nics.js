// nics.js - the VM Settings tab's network interfaces: network, reserved IP
// and security groups per NIC (PATCH {"nics"} while the VM is stopped).
import { h, replace, field, errorLine, toast, confirmDialog } from '../dom.js';
import { api } from '../api.js';

const MAX_NICS = 8;
const sameNics = (a, b) => JSON.stringify(a || []) === JSON.stringify(b || []);

// nicsEditor(vm, editable) -> {el, value(), changed()}
export function nicsEditor(vm, editable) {
  let nics = (vm.nics || []).map((n) => ({ ...n, security_groups: [...(n.security_groups || [])] }));
  let networks = [], groups = [];
  let rows = [];
  const body = h('div', { id: 'nic-rows' });
  const add = h('button', { type: 'button', class: 'btn small', id: 'nic-add', disabled: !editable }, 'Add network interface');
  const box = h('fieldset', { class: 'limits nics' }, h('legend', {}, 'Network interfaces'), body, add,
    editable ? null : h('p', { class: 'muted small' }, 'Stop the VM to change its network interfaces.'));

  function row(n, i) {
    const id = (k) => `nic${i}-${k}`;
    const net = h('select', { id: id('network'), disabled: !editable },
      [...new Set([...networks.map((x) => x.name), n.network].filter(Boolean))].map((x) => h('option', { value: x }, x)));
    net.value = n.network || '';
    const ip = h('input', { id: id('ip'), type: 'text', value: n.ip || '', placeholder: 'dynamic', spellcheck: 'false', disabled: !editable, size: 15 });
    const names = [...new Set([...groups.map((g) => g.name), ...(n.security_groups || [])])];
    const checks = names.map((g) => h('input', { type: 'checkbox', id: id(`sg-${g}`), value: g, disabled: !editable,
      checked: (n.security_groups || []).includes(g) }));
    const el = h('div', { class: 'nic', dataset: { nic: String(i) }, role: 'group', 'aria-label': `nic${i}` },
      h('div', { class: 'row' },
        h('div', { class: 'field' }, h('label', { for: id('network') }, `nic${i} network`), net),
        h('div', { class: 'field' }, h('label', { for: id('ip') }, `nic${i} reserved IP`), ip),
        h('div', { class: 'field' }, h('span', { class: 'label' }, 'MAC'), h('code', {}, n.mac || 'generated at save')),
        h('div', { class: 'field end' }, h('button', { type: 'button', class: 'btn small danger', disabled: !editable,
          'aria-label': `Remove nic${i}`, onclick: () => { nics = rows.map((r) => r.value()); nics.splice(i, 1); draw(); } }, 'Remove'))),
      names.length ? h('div', { class: 'sg-checks', role: 'group', 'aria-label': `nic${i} security groups` },
        h('span', { class: 'label' }, 'Security groups'),
        checks.map((c) => h('label', { class: 'check', for: c.id }, c, ` ${c.value}`)))
        : h('p', { class: 'muted small' }, 'No security groups (', h('a', { href: '#/security-groups' }, 'create one'), ').'));
    return {
      el,
      value() {
        const v = { network: net.value };
        if (n.mac) v.mac = n.mac;
        if (ip.value.trim()) v.ip = ip.value.trim();
        const sg = checks.filter((c) => c.checked).map((c) => c.value);
        if (sg.length) v.security_groups = sg;
        return v;
      },
    };
  }
  function draw() {
    rows = nics.map(row);
    replace(body, rows.length ? rows.map((r) => r.el) : h('p', { class: 'muted' }, 'No network interfaces.'));
    add.disabled = !editable || !networks.length || nics.length >= MAX_NICS;
    add.title = networks.length ? '' : 'Create a network first';
  }
  add.addEventListener('click', () => {
    nics = rows.map((r) => r.value());
    nics.push({ network: networks[0].name });
    draw();
    document.getElementById(`nic${nics.length - 1}-network`)?.focus();
  });
  draw();
  Promise.all([
    api('GET', '/api/v1/networks').then((r) => { networks = r.networks || []; }).catch(() => {}),
    api('GET', '/api/v1/security-groups').then((r) => { groups = r.security_groups || []; }).catch(() => {}),
  ]).then(() => { nics = rows.map((r) => r.value()); draw(); });
  const original = (vm.nics || []).map((n) => {
    const v = { network: n.network };
    if (n.mac) v.mac = n.mac;
    if (n.ip) v.ip = n.ip;
    if ((n.security_groups || []).length) v.security_groups = n.security_groups;
    return v;
  });
  return {
    el: box,
    value: () => rows.map((r) => r.value()),
    changed: () => editable && !sameNics(rows.map((r) => r.value()), original),
  };
}

// A NIC change is a task (POST/DELETE/PATCH .../nics): the request waits up
// to ?wait= seconds; a 202 means it still runs, so follow the task.
export async function nicTask(method, path, body) {
  let t = await api(method, `${path}${path.includes('?') ? '&' : '?'}wait=60`, body);
  while (t && t.state === 'running' && t.id) {
    await new Promise((res) => setTimeout(res, 1000));
    t = await api('GET', `/api/v1/tasks/${encodeURIComponent(t.id)}`);
  }
  if (t && t.state === 'failed') {
    const e = new Error((t.error && t.error.message) || 'the NIC change failed');
    e.status = 500;
    throw e;
  }
  return t;
}

// "Refused (409): ..." - the status tells a refusal (nothing changed) from a failure.
function why(what, ex) {
  if (!ex.status) return `${what}: ${ex.message}`;
  if (ex.status === 504) return `${what}: the guest did not release the NIC in time (504), so it stays; try again once the guest lets go. ${ex.message}`;
  return `${what} ${ex.status < 500 ? 'refused' : 'failed'} (${ex.status}): ${ex.message}`;
}

// liveNics(vm, onChanged) -> {el, value(), changed()}: the NICs of a running
// (or paused) VM: hot-plug one (POST .../nics), unplug a hot-plugged one
// (DELETE .../nics/{index}; a NIC the VM started with answers 409) and set
// a link up or down (PATCH .../nics/{index}). onChanged(vm, focusId) gets
// the VM as it is afterwards.
export function liveNics(vm, onChanged) {
  const base = `/api/v1/vms/${encodeURIComponent(vm.name)}/nics`;
  const nics = vm.nics || [];
  const err = errorLine('nic-live-error');
  const status = h('span', { class: 'muted small', id: 'nic-live-status', role: 'status' });
  const net = h('select', { id: 'nic-new-network' }, h('option', { value: '' }, 'loading…'));
  const ip = h('input', { id: 'nic-new-ip', type: 'text', placeholder: 'dynamic', spellcheck: 'false', size: 15 });
  const down = h('input', { id: 'nic-new-down', type: 'checkbox' });
  const plug = h('button', { type: 'button', class: 'btn small primary', id: 'nic-hotplug', disabled: true }, 'Hot-plug NIC');
  const microvm = vm.machine === 'microvm';
  let busy = false;

  async function run(what, method, path, body, focusId) {
    if (busy) return;
    busy = true;
    err.set('');
    status.textContent = `${what}…`;
    for (const b of box.querySelectorAll('button')) b.disabled = true;
    try {
      await nicTask(method, path, body);
      toast(`${what}: done`, 'ok');
      const fresh = await api('GET', `/api/v1/vms/${encodeURIComponent(vm.name)}`);
      onChanged(fresh, focusId);
    } catch (ex) {
      err.set(why(what, ex));
      status.textContent = '';
      busy = false;
      for (const b of box.querySelectorAll('button')) b.disabled = microvm || b.dataset.atStart === 'true';
      plug.disabled = !net.value;
    }
  }

  const rows = nics.map((n, i) => {
    const isDown = n.link === 'down';
    // "hotplugged": false (runtime only): on the root bus since the start, 409 on unplug
    const atStart = n.hotplugged === false;
    return h('tr', { dataset: { nic: String(i), link: isDown ? 'down' : 'up' } },
      h('th', { scope: 'row' }, `nic${i}`),
      h('td', {}, h('a', { href: `#/networks/${encodeURIComponent(n.network)}` }, n.network)),
      h('td', {}, h('code', {}, n.mac || '–'), n.ip ? h('div', { class: 'muted small' }, n.ip) : null),
      h('td', {}, h('span', { class: `badge ${isDown ? 'state-stopped' : 'state-running'}`, id: `nic${i}-link` }, isDown ? 'link down' : 'link up')),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'btn small', disabled: microvm,
          onclick: () => run(`Link ${isDown ? 'up' : 'down'} nic${i}`, 'PATCH', `${base}/${i}`, { link: isDown ? 'up' : 'down' }, `nic${i}-link`) },
        isDown ? `Link up nic${i}` : `Link down nic${i}`),
        ' ',
        h('button', { type: 'button', class: 'btn small danger', disabled: microvm || atStart,
          title: atStart ? 'There since the VM started: this NIC cannot be unplugged while it runs; stop the VM to remove it' : null,
          dataset: { atStart: String(atStart) }, onclick: async () => {
          if (!await confirmDialog('Unplug NIC', `Unplug nic${i} (${n.mac || n.network}) from the running ${vm.name}? The guest must release it. A NIC the VM started with cannot be unplugged while it runs.`, 'Unplug')) return;
          run(`Unplug nic${i}`, 'DELETE', `${base}/${i}`, undefined, 'nic-hotplug');
        } }, `Unplug nic${i}`)));
  });
  ip.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); plug.click(); } });
  plug.addEventListener('click', () => {
    const b = { network: net.value };
    const a = ip.value.trim();
    if (a) {
      if (!(/^\d{1,3}(\.\d{1,3}){3}$/.test(a) && a.split('.').every((o) => Number(o) <= 255))) {
        err.set('The reserved IP must be an IPv4 address such as 10.10.0.5.');
        ip.setAttribute('aria-invalid', 'true');
        ip.focus();
        return;
      }
      b.ip = a;
    }
    ip.removeAttribute('aria-invalid');
    if (down.checked) b.link = 'down';
    run(`Hot-plug a NIC on ${b.network}`, 'POST', base, b, 'nic-hotplug');
  });
  const box = h('fieldset', { class: 'limits nics wide', id: 'nic-live' }, h('legend', {}, 'Network interfaces (live)'),
    microvm ? h('p', { class: 'muted small' }, 'A microvm cannot hot-plug NICs; stop it to change them.')
      : h('p', { class: 'muted small' }, 'The VM runs: NICs are hot-plugged and unplugged now (at most four at a time). Stop it to change a NIC\'s network, IP or security groups.'),
    nics.length ? h('div', { class: 'table-wrap flat' }, h('table', { class: 'mini', id: 'nic-live-table', 'aria-label': 'Network interfaces' },
      h('thead', {}, h('tr', {}, ['NIC', 'Network', 'MAC / IP', 'Link', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'sr-only' }, 'Actions'))))),
      h('tbody', {}, rows))) : h('p', { class: 'muted' }, 'No network interfaces.'),
    microvm ? null : h('div', { class: 'row' },
      field('nic-new-network', 'Network for the new NIC', net),
      field('nic-new-ip', 'Its reserved IP (optional)', ip),
      h('div', { class: 'field' }, h('label', { class: 'check', for: 'nic-new-down' }, down, ' Link down at first')),
      h('div', { class: 'field end' }, plug)),
    err, status);
  api('GET', '/api/v1/networks').then((r) => {
    const ns = r.networks || [];
    replace(net, ns.length ? ns.map((x) => h('option', { value: x.name }, x.name)) : h('option', { value: '' }, 'no networks'));
    plug.disabled = busy || !ns.length || nics.length >= MAX_NICS;
  }).catch(() => replace(net, h('option', { value: '' }, 'cannot list networks')));
  return { el: box, value: () => nics, changed: () => false };
}
