// nics.js - the VM Settings tab's network interfaces: network, reserved IP
// and security groups per NIC (PATCH {"nics"} while the VM is stopped).
import { h, replace } from '../dom.js';
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
