// secgroups.js - security groups (#/security-groups): list, create, edit
// the inbound rules (PUT replaces the whole group; every NIC that names it
// changes at once), delete. NICs name groups in the VM's Settings tab.
import { h, replace, toast, field, errorLine, confirmDialog } from '../dom.js';
import { api } from '../api.js';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const sgPath = (name) => `/api/v1/security-groups/${encodeURIComponent(name)}`;
const PROTOS = ['tcp', 'udp', 'icmp', 'any'];

// One editable rule row; returns {el, value()}.
function ruleRow(group, i, rule, onRemove) {
  const id = (k) => `sg-${group}-${i}-${k}`;
  const proto = h('select', { id: id('proto') }, PROTOS.map((p) => h('option', { value: p }, p)));
  proto.value = rule.proto || 'tcp';
  const ports = h('input', { id: id('ports'), type: 'text', value: rule.ports || '', placeholder: 'all', size: 11, spellcheck: 'false' });
  const cidr = h('input', { id: id('cidr'), type: 'text', value: rule.cidr || '', placeholder: 'anywhere (IPv4 and IPv6)', size: 24, spellcheck: 'false' });
  const syncPorts = () => { ports.disabled = proto.value === 'icmp' || proto.value === 'any'; };
  proto.addEventListener('change', syncPorts);
  syncPorts();
  const n = i + 1;
  const el = h('tr', { dataset: { rule: String(i) } },
    h('td', {}, h('label', { class: 'sr-only', for: id('proto') }, `Rule ${n} protocol`), proto),
    h('td', {}, h('label', { class: 'sr-only', for: id('ports') }, `Rule ${n} ports`), ports),
    h('td', {}, h('label', { class: 'sr-only', for: id('cidr') }, `Rule ${n} source CIDR`), cidr),
    h('td', {}, h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Remove rule ${n}`, onclick: onRemove }, 'Remove')));
  return {
    el,
    value() {
      const r = { direction: 'in', proto: proto.value };
      if (!ports.disabled && ports.value.trim()) r.ports = ports.value.trim();
      if (cidr.value.trim()) r.cidr = cidr.value.trim();
      return r;
    },
  };
}

// A group's card: its rules as an editable table, Save (PUT) and Delete.
function groupCard(g, reload) {
  let rules = (g.rules || []).map((r) => ({ ...r }));
  let rows = [];
  const tbody = h('tbody', {});
  const err = errorLine(`sg-${g.name}-error`);
  const draw = () => {
    rows = rules.map((r, i) => ruleRow(g.name, i, r, () => { rules = rows.map((x) => x.value()); rules.splice(i, 1); draw(); }));
    replace(tbody, rows.length ? rows.map((r) => r.el)
      : h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No rules: NICs in this group accept no new inbound connections (IPv4 or IPv6).')));
  };
  draw();
  const form = h('form', { class: 'card form sg', dataset: { sg: g.name }, 'aria-labelledby': `sg-${g.name}-title`, novalidate: true },
    h('h2', { id: `sg-${g.name}-title` }, g.name),
    h('table', { class: 'mini rules', 'aria-label': `Inbound rules of ${g.name}` },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Protocol'), h('th', { scope: 'col' }, 'Ports'),
        h('th', { scope: 'col' }, 'Source (CIDR)'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      tbody),
    err,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'btn', 'aria-label': `Add a rule to ${g.name}`,
        onclick: () => { rules = rows.map((x) => x.value()); rules.push({ proto: 'tcp' }); draw(); tbody.querySelector('tr:last-child select')?.focus(); } }, 'Add rule'),
      h('button', { type: 'submit', class: 'btn primary', 'aria-label': `Save ${g.name}` }, 'Save'),
      h('button', { type: 'button', class: 'btn danger', 'aria-label': `Delete security group ${g.name}`,
        onclick: async () => {
          if (!await confirmDialog('Delete security group', `Delete the security group ${g.name}?`, 'Delete')) return;
          try {
            await api('DELETE', sgPath(g.name));
            toast(`Deleted security group ${g.name}`, 'ok');
            reload();
          } catch (e) { err.set(e.message); }
        } }, 'Delete')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    try {
      await api('PUT', sgPath(g.name), { rules: rows.map((r) => r.value()) });
      toast(`Saved security group ${g.name}`, 'ok');
      reload();
    } catch (ex) {
      err.set(ex.message);
    }
  });
  return form;
}

export function securityGroupsPage(main) {
  const list = h('div', { class: 'grid', id: 'sg-list' }, h('p', { class: 'muted' }, 'Loading…'));
  async function load() {
    try {
      const gs = (await api('GET', '/api/v1/security-groups')).security_groups || [];
      replace(list, gs.length ? gs.map((g) => groupCard(g, load)) : h('p', { class: 'muted' }, 'No security groups yet.'));
    } catch (e) {
      replace(list, h('p', { class: 'muted' }, `Cannot list security groups: ${e.message}`));
    }
  }
  const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const err = errorLine('sg-new-error');
  const form = h('form', { class: 'card form', 'aria-labelledby': 'sg-new-title', novalidate: true },
    h('h2', { id: 'sg-new-title' }, 'New security group'),
    field('sg-new-name', 'Group name', name, 'Starts with one rule: tcp port 22 from anywhere; edit it below.'),
    err,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn primary' }, 'Create group')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    const n = name.value.trim();
    if (!NAME_RE.test(n)) { name.focus(); err.set('The name must be 1-64 letters, digits, - _ . and not start with . or -.'); return; }
    try { // PUT would replace a group of that name: refuse here instead
      const gs = (await api('GET', '/api/v1/security-groups')).security_groups || [];
      if (gs.some((g) => g.name === n)) { err.set(`A security group named ${n} exists already.`); return; }
    } catch (ex) { err.set(ex.message); return; }
    try {
      await api('PUT', sgPath(n), { rules: [{ direction: 'in', proto: 'tcp', ports: '22' }] });
      toast(`Created security group ${n}`, 'ok');
      name.value = '';
      load();
    } catch (ex) {
      err.set(ex.message);
    }
  });
  replace(main, h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Security groups'),
    h('a', { class: 'btn', href: '#/networks' }, 'Networks')),
  h('p', { class: 'muted small' }, 'Inbound rules (IPv4 and IPv6) for the NICs that name a group (a NIC names groups in its VM\'s Settings tab). Outbound is always allowed; a NIC without groups is not filtered.'),
  form, list);
  load();
}
