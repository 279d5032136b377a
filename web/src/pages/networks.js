// networks.js - networks: list, create, delete (#/networks), and one
// network (#/networks/NAME): its NICs and DHCP reservations, the DHCP
// leases from dnsmasq, and its port forwards (add, remove).
import { h, replace, toast, field, errorLine, confirmDialog, fmtTime } from '../dom.js';
import { api } from '../api.js';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const netPath = (name, rest = '') => `/api/v1/networks/${encodeURIComponent(name)}${rest}`;
const vmLink = (vm) => h('a', { href: `#/vms/${encodeURIComponent(vm)}` }, vm);

function th(...cols) {
  return h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, c))));
}

function createForm(onCreated) {
  const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const type = h('select', {}, h('option', { value: 'nat' }, 'nat: DHCP, DNS and masquerade'),
    h('option', { value: 'isolated' }, 'isolated: DHCP, no way out'),
    h('option', { value: 'bridged' }, 'bridged: join an existing bridge'));
  const subnet = h('input', { type: 'text', placeholder: 'picked when empty, e.g. 10.10.0.0/24', spellcheck: 'false' });
  const bridge = h('input', { type: 'text', placeholder: 'br0', spellcheck: 'false' });
  const ipv6 = h('input', { type: 'text', placeholder: 'none, e.g. fd00:10::/64', spellcheck: 'false' });
  const subnetBox = field('net-subnet', 'Subnet (optional)', subnet);
  const ipv6Box = field('net-ipv6', 'IPv6 prefix (optional)', ipv6, 'A /64 (unique-local or global): guests configure themselves by SLAAC. It cannot change later.');
  const bridgeBox = field('net-bridge', 'Bridge', bridge, 'An existing bridge on the host.');
  const err = errorLine('net-error');
  const sync = () => { subnetBox.hidden = ipv6Box.hidden = type.value === 'bridged'; bridgeBox.hidden = type.value !== 'bridged'; };
  type.addEventListener('change', sync);
  const form = h('form', { class: 'card form', 'aria-labelledby': 'net-new-title', novalidate: true },
    h('h2', { id: 'net-new-title' }, 'New network'),
    field('net-name', 'Network name', name),
    field('net-type', 'Type', type),
    subnetBox, ipv6Box, bridgeBox, err,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn primary' }, 'Create network')));
  sync();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    name.removeAttribute('aria-invalid');
    const n = name.value.trim();
    if (!NAME_RE.test(n)) {
      name.setAttribute('aria-invalid', 'true');
      name.focus();
      err.set('The name must be 1-64 letters, digits, - _ . and not start with . or -.');
      return;
    }
    const body = { name: n, type: type.value };
    if (type.value === 'bridged') body.bridge = bridge.value.trim();
    else {
      if (subnet.value.trim()) body.subnet = subnet.value.trim();
      const p6 = ipv6.value.trim();
      ipv6.removeAttribute('aria-invalid');
      if (p6) {
        if (!/^[0-9A-Fa-f:]+:[0-9A-Fa-f:]*\/64$/.test(p6)) {
          ipv6.setAttribute('aria-invalid', 'true');
          ipv6.focus();
          err.set('The IPv6 prefix must be a /64 such as fd00:10::/64.');
          return;
        }
        body.ipv6 = p6;
      }
    }
    try {
      await api('POST', '/api/v1/networks', body);
      toast(`Created network ${n}`, 'ok');
      name.value = ''; subnet.value = ''; ipv6.value = '';
      onCreated();
    } catch (ex) {
      err.set(ex.message);
    }
  });
  return form;
}

function listPage(main) {
  const box = h('div', { class: 'table-wrap', id: 'net-list' }, h('p', { class: 'muted pad' }, 'Loading…'));
  async function load() {
    let nets;
    try {
      nets = (await api('GET', '/api/v1/networks')).networks || [];
    } catch (e) {
      replace(box, h('p', { class: 'muted pad' }, `Cannot list networks: ${e.message}`));
      return;
    }
    if (!nets.length) { replace(box, h('p', { class: 'muted pad' }, 'No networks yet.')); return; }
    replace(box, h('table', { class: 'vms', 'aria-label': 'Networks' },
      th('Name', 'Type', 'Subnets', 'Bridge', 'NICs', 'Forwards', h('span', { class: 'sr-only' }, 'Actions')),
      h('tbody', {}, nets.map((n) => h('tr', { dataset: { net: n.name } },
        h('th', { scope: 'row' }, h('a', { href: `#/networks/${encodeURIComponent(n.name)}` }, n.name)),
        h('td', {}, n.type),
        h('td', {}, n.subnet ? h('code', {}, n.subnet) : '–', n.ipv6 ? [h('br'), h('code', { class: 'net-ipv6' }, n.ipv6)] : null),
        h('td', {}, n.bridge ? h('code', {}, n.bridge) : '–'),
        h('td', { class: 'num' }, String((n.nics || []).length)),
        h('td', { class: 'num' }, String((n.forwards || []).length)),
        h('td', {}, h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Delete network ${n.name}`,
          onclick: () => del(n.name, load) }, 'Delete')))))));
  }
  replace(main, h('div', { class: 'page-head' }, h('h1', { class: 'page-title' }, 'Networks'),
    h('a', { class: 'btn', href: '#/security-groups' }, 'Security groups')),
  box, h('div', { class: 'grid top-gap' }, createForm(load)));
  load();
}

async function del(name, after) {
  if (!await confirmDialog('Delete network', `Delete the network ${name}? Its bridge, DHCP server and rules go.`, 'Delete')) return;
  try {
    await api('DELETE', netPath(name));
    toast(`Deleted network ${name}`, 'ok');
    after();
  } catch (e) {
    toast(`Delete ${name}: ${e.message}`, 'error');
  }
}

function forwardForm(net, reload) {
  const proto = h('select', {}, h('option', { value: 'tcp' }, 'tcp'), h('option', { value: 'udp' }, 'udp'));
  const hostPort = h('input', { type: 'number', min: 1, max: 65535, required: true });
  const vms = [...new Set((net.nics || []).map((n) => n.vm))].sort();
  const vm = h('select', {}, vms.map((v) => h('option', { value: v }, v)));
  const vmPort = h('input', { type: 'number', min: 1, max: 65535, required: true });
  const err = errorLine('fwd-error');
  const form = h('form', { class: 'form inline', 'aria-labelledby': 'fwd-new-title', novalidate: true },
    h('h3', { id: 'fwd-new-title' }, 'Add a port forward'),
    h('div', { class: 'row' },
      field('fwd-proto', 'Protocol', proto),
      field('fwd-host-port', 'Host port', hostPort),
      field('fwd-vm', 'VM', vm),
      field('fwd-vm-port', 'VM port', vmPort)),
    err,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn primary', disabled: !vms.length }, 'Add forward')),
    vms.length ? null : h('p', { class: 'muted small' }, 'No VM has a NIC on this network yet.'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    const hp = Number(hostPort.value), vp = Number(vmPort.value);
    if (!Number.isInteger(hp) || hp < 1 || hp > 65535) { hostPort.focus(); err.set('The host port must be 1 to 65535.'); return; }
    if (!Number.isInteger(vp) || vp < 1 || vp > 65535) { vmPort.focus(); err.set('The VM port must be 1 to 65535.'); return; }
    try {
      await api('POST', netPath(net.name, '/forwards'), { proto: proto.value, host_port: hp, vm: vm.value, vm_port: vp });
      toast(`Forwarding ${proto.value} port ${hp} to ${vm.value}:${vp}`, 'ok');
      reload();
    } catch (ex) {
      err.set(ex.message);
    }
  });
  return form;
}

function detailPage(main, name) {
  const body = h('div', { id: 'net-detail' }, h('p', { class: 'muted' }, 'Loading…'));
  const leases = h('div', { id: 'net-leases', 'aria-live': 'polite' });
  async function loadLeases() {
    try {
      const ls = (await api('GET', netPath(name, '/leases'))).leases || [];
      replace(leases, ls.length ? h('table', { class: 'mini', 'aria-label': 'DHCP leases' },
        th('IP', 'MAC', 'Host name', 'VM', 'Expires'),
        h('tbody', {}, ls.map((l) => h('tr', {},
          h('td', {}, h('code', {}, l.ip)), h('td', {}, h('code', {}, l.mac)), h('td', {}, l.hostname || '–'),
          h('td', {}, l.vm ? vmLink(l.vm) : '–'), h('td', {}, fmtTime(typeof l.expires === 'number' ? l.expires * 1000 : l.expires))))))
        : h('p', { class: 'muted' }, 'No leases.'));
    } catch (e) {
      replace(leases, h('p', { class: 'muted' }, `No leases: ${e.message}`));
    }
  }
  async function load() {
    let net;
    try {
      net = await api('GET', netPath(name));
    } catch (e) {
      replace(body, h('p', {}, e.status === 404 ? `No network named ${name}.` : e.message));
      return;
    }
    const nics = net.nics || [];
    const fwds = net.forwards || [];
    const dhcp = net.type !== 'bridged';
    replace(body, h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'net-facts-title' },
        h('h2', { id: 'net-facts-title' }, 'Network'),
        h('dl', { class: 'kv' },
          h('dt', {}, 'Type'), h('dd', {}, net.type),
          h('dt', {}, 'Subnet'), h('dd', {}, net.subnet ? h('code', {}, net.subnet) : '–'),
          h('dt', {}, 'Gateway'), h('dd', {}, net.gateway ? h('code', {}, net.gateway) : '–'),
          h('dt', {}, 'IPv6 prefix'), h('dd', { id: 'net-ipv6-prefix' }, net.ipv6 ? h('code', {}, net.ipv6) : 'none'),
          net.gateway6 ? [h('dt', {}, 'IPv6 gateway'), h('dd', {}, h('code', {}, net.gateway6))] : null,
          h('dt', {}, 'DHCP range'), h('dd', {}, net.dhcp ? h('code', {}, `${net.dhcp.first} – ${net.dhcp.last}`) : '–'),
          h('dt', {}, 'Bridge'), h('dd', {}, net.bridge ? h('code', {}, net.bridge) : '–'),
          h('dt', {}, 'dnsmasq'), h('dd', {}, net.dnsmasq_pid ? `pid ${net.dnsmasq_pid}` : '–')),
        h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'btn danger', 'aria-label': `Delete network ${name}`,
          onclick: () => del(name, () => { location.hash = '#/networks'; }) }, 'Delete network'))),
      h('section', { class: 'card', 'aria-labelledby': 'net-nics-title' },
        h('h2', { id: 'net-nics-title' }, 'NICs and DHCP reservations'),
        nics.length ? h('table', { class: 'mini', id: 'net-nics', 'aria-label': 'NICs on this network' },
          th('VM', 'MAC', 'Reserved IP'),
          h('tbody', {}, nics.map((n) => h('tr', { dataset: { vm: n.vm } },
            h('td', {}, vmLink(n.vm)), h('td', {}, h('code', {}, n.mac || '–')),
            h('td', {}, n.ip ? h('code', {}, n.ip) : h('span', { class: 'muted' }, 'none (dynamic)'))))))
          : h('p', { class: 'muted' }, 'No VM has a NIC on this network.'),
        h('p', { class: 'muted small' }, 'A reservation is the IP of a VM\'s NIC: set it in the VM\'s Settings tab while the VM is stopped.')),
      dhcp ? h('section', { class: 'card', 'aria-labelledby': 'net-leases-title' },
        h('h2', { id: 'net-leases-title' }, 'DHCP leases ',
          h('button', { type: 'button', class: 'btn small', onclick: loadLeases }, 'Refresh')),
        leases) : null,
      net.type === 'nat' ? h('section', { class: 'card', 'aria-labelledby': 'net-fwd-title' },
        h('h2', { id: 'net-fwd-title' }, 'Port forwards'),
        fwds.length ? h('table', { class: 'mini', id: 'net-forwards', 'aria-label': 'Port forwards' },
          th('Protocol', 'Host port', 'To', h('span', { class: 'sr-only' }, 'Actions')),
          h('tbody', {}, fwds.map((f) => h('tr', { dataset: { fwd: `${f.proto}/${f.host_port}` } },
            h('td', {}, f.proto), h('td', { class: 'num' }, String(f.host_port)),
            h('td', {}, vmLink(f.vm), ` port ${f.vm_port}`, f.ip ? h('span', { class: 'muted small' }, ` (${f.ip})`) : null),
            h('td', {}, h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Remove forward ${f.proto} ${f.host_port}`,
              onclick: async () => {
                try {
                  await api('DELETE', netPath(name, `/forwards/${f.proto}/${f.host_port}`));
                  toast(`Removed the forward of ${f.proto} port ${f.host_port}`, 'ok');
                } catch (e) { toast(e.message, 'error'); }
                load();
              } }, 'Remove'))))))
          : h('p', { class: 'muted', id: 'net-forwards-none' }, 'No port forwards.'),
        forwardForm(net, load)) : null));
    if (dhcp) loadLeases();
  }
  replace(main, h('h1', { class: 'page-title' }, h('a', { href: '#/networks', class: 'crumb' }, 'Networks'), ' / ', name), body);
  load();
}

export function networksPage(main, params) {
  if (params[0]) detailPage(main, decodeURIComponent(params[0]));
  else listPage(main);
}
