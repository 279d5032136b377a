// vmdetail.js - one VM: summary, consoles, disks, snapshots, backups, settings, events (tabs).
import { h, replace, fmtMiB, fmtTime, toast, confirmDialog } from '../dom.js';
import { api, vmPath } from '../api.js';
import { store, subscribe, loadVms } from '../store.js';
import { actionButtons, stateBadge } from '../actions.js';
import { eventRow } from './events.js';
import { snapshotsPanel } from './snapshots.js';
import { backupsPanel } from './backups.js';
import { disksPanel } from './disks.js';
import { nicsEditor, liveNics } from './nics.js';
import { lineChart, pollMetrics, column, chartsGrid } from '../chart.js';

const RANGE = 300; // seconds of history in the charts
const MiB = 1048576;
const UP = ['running', 'paused', 'stopping'];

// The VM's CPU use and memory over the last minutes; the card is kept
// across re-renders of the summary and polls only while it shows a VM
// that runs (stopped VMs have no history).
function vmCharts(name, active) {
  const cpu = lineChart({ id: 'vm-cpu-chart', title: `${name} CPU`, unit: '%' });
  const mem = lineChart({ id: 'vm-mem-chart', title: `${name} memory`, unit: 'MiB', fmt: (v) => `${Math.round(v)} MiB` });
  const card = h('section', { class: 'card wide', 'aria-labelledby': 'vm-charts-title' },
    h('h2', { id: 'vm-charts-title' }, 'Usage, the last minutes'),
    h('p', { class: 'muted small' }, 'CPU in percent of one host CPU (200 % = two CPUs busy); memory used by the VM\'s QEMU.'),
    chartsGrid(cpu, mem));
  const poll = pollMetrics(vmPath(name, '/metrics'), RANGE, (d) => {
    const vm = store.vms.get(name);
    const cap = vm && vm.vcpus ? 100 * vm.vcpus : 100;
    const pts = column(d, 'cpu_percent');
    cpu.set(pts, { range: RANGE, yMax: Math.max(100, Math.min(cap, Math.ceil(Math.max(0, ...pts.map((p) => p[1] || 0)) / 100) * 100)) });
    mem.set(column(d, 'memory_bytes', MiB, 'rss_bytes'), { range: RANGE });
  }, active);
  const notRunning = () => { for (const c of [cpu, mem]) c.empty('not running: charts show while the VM runs'); };
  return { card, stop: poll.stop, refresh: poll.now, notRunning };
}

const TABS = [
  { id: 'summary', label: 'Summary' },
  { id: 'console', label: 'Console' },
  { id: 'display', label: 'Display' },
  { id: 'disks', label: 'Disks' },
  { id: 'snapshots', label: 'Snapshots' },
  { id: 'backups', label: 'Backups' },
  { id: 'settings', label: 'Settings' },
  { id: 'events', label: 'Events' },
];

function kv(label, value) {
  return [h('dt', {}, label), h('dd', {}, value ?? '–')];
}

function summary(vm, charts) {
  const disks = vm.disks || [];
  return h('div', { class: 'grid' },
    h('section', { class: 'card', 'aria-labelledby': 'sum-title' },
      h('h2', { id: 'sum-title' }, 'Summary'),
      h('dl', { class: 'kv' },
        kv('State', [stateBadge(vm), vm.state_reason ? h('span', { class: 'muted small' }, ` ${vm.state_reason}`) : null]),
        kv('vCPUs', `${vm.vcpus}${vm.max_vcpus && vm.max_vcpus > vm.vcpus ? ` (hot-plug up to ${vm.max_vcpus})` : ''}`),
        vm.hugepages ? kv('Huge pages', 'guest RAM from 2 MiB pages') : null,
        kv('Memory', fmtMiB(vm.memory_mib)),
        kv('Machine', vm.machine),
        kv('CPU model', vm.cpu_model || 'default'),
        kv('Accelerator', vm.accelerator),
        kv('PID', vm.pid ? String(vm.pid) : null),
        kv('Started', vm.started_at ? fmtTime(vm.started_at) : null),
        kv('Graphics', vm.graphics),
        // what the guest agent said last (the VM view's "guest", while it runs)
        vm.guest ? [
          kv('Guest OS', (vm.guest.os && (vm.guest.os.name || vm.guest.os.id)) || null),
          kv('Guest hostname', vm.guest.hostname || null),
          kv('Guest addresses', (vm.guest.addresses || []).length
            ? h('ul', { class: 'plain', 'aria-label': 'Guest addresses' }, vm.guest.addresses.map((a) =>
              h('li', {}, h('code', {}, `${a.ip}/${a.prefix}`), a.interface ? ` ${a.interface}` : '')))
            : null),
        ] : null,
        kv('Description', vm.description || null),
        kv('ID', h('code', {}, vm.id)))),
    h('section', { class: 'card', 'aria-labelledby': 'boot-title' },
      h('h2', { id: 'boot-title' }, 'Boot and disks'),
      h('dl', { class: 'kv' },
        vm.boot && vm.boot.kernel ? [
          kv('Kernel', h('code', {}, vm.boot.kernel)),
          kv('Initrd', vm.boot.initrd ? h('code', {}, vm.boot.initrd) : null),
          kv('Command line', vm.boot.cmdline ? h('code', {}, vm.boot.cmdline) : null),
        ] : kv('Boot', 'first disk')),
      disks.length ? h('ul', { class: 'disks' }, disks.map((d, i) => h('li', {},
        h('span', { class: 'badge' }, `disk${i}`), ' ', d.volume ? ['volume ', h('code', {}, d.volume)] : h('code', {}, d.path),
        `${d.format ? ` ${d.format}` : ''}${d.readonly ? ', read-only' : ''}`)))
        : h('p', { class: 'muted' }, 'No disks.'),
      (vm.nics || []).length ? h('ul', { class: 'disks', 'aria-label': 'Network interfaces' }, vm.nics.map((n, i) => h('li', {},
        h('span', { class: 'badge' }, `nic${i}`), ' network ', h('a', { href: `#/networks/${encodeURIComponent(n.network)}` }, n.network),
        n.mac ? [' ', h('code', {}, n.mac)] : null, n.ip ? ` ${n.ip}` : '', n.link === 'down' ? ' (link down)' : '',
        (n.security_groups || []).length ? h('span', { class: 'muted small' }, ` security groups: ${n.security_groups.join(', ')}`) : null)))
        : null),
    charts.card);
}

// "0,2-3" -> [0, 2, 3]; '' -> null; a bad list -> undefined.
function parseCpuList(text) {
  const t = text.trim();
  if (!t) return null;
  const out = [];
  for (const part of t.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) return undefined;
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (b < a || b - a > 4096) return undefined;
    for (let i = a; i <= b; i++) if (!out.includes(i)) out.push(i);
  }
  return out;
}
const fmtCpuList = (l) => (Array.isArray(l) ? l.join(',') : '');

// "Refused (409): ..." for a live vCPU change; 504: the guest kept them.
function vcpuWhy(ex) {
  if (ex.status === 504) return `Changing the vCPUs: the guest did not release them in time (504); the VM keeps what QEMU really has. ${ex.message}`;
  return `Changing the vCPUs ${ex.status && ex.status < 500 ? 'refused' : 'failed'}${ex.status ? ` (${ex.status})` : ''}: ${ex.message}`;
}

function settingsForm(vm) {
  const stopped = vm.state === 'stopped';
  const up = UP.includes(vm.state) && vm.state !== 'stopping';
  const q35 = (vm.machine || 'q35') === 'q35';
  const liveCpus = up && q35 && !vm.template;
  const err = h('p', { class: 'error', role: 'alert', id: 'settings-error', hidden: true });
  const status = h('span', { class: 'muted small', id: 'settings-status', role: 'status' });
  const vcpus = h('input', { id: 'set-vcpus', type: 'number', min: 1, max: 255, required: true, value: vm.vcpus, disabled: !stopped && !liveCpus,
    'aria-describedby': 'set-vcpus-help' });
  const maxv = h('input', { id: 'set-max-vcpus', type: 'number', min: 1, max: 255, value: vm.max_vcpus ?? '', placeholder: 'same as vCPUs', disabled: !stopped || !q35 });
  const mem = h('input', { id: 'set-memory', type: 'number', min: 16, max: 16777216, step: 1, required: true, value: vm.memory_mib, disabled: !stopped });
  const huge = h('input', { id: 'set-hugepages', type: 'checkbox', checked: !!vm.hugepages, disabled: !stopped });
  const cpuModel = h('input', { id: 'set-cpu-model', type: 'text', maxlength: 127, value: vm.cpu_model || '', disabled: !stopped,
    placeholder: 'default', 'aria-describedby': 'set-cpu-model-help' });
  const desc = h('input', { id: 'set-desc', type: 'text', maxlength: 1024, value: vm.description || '' });
  const graphics = h('select', { id: 'set-graphics', disabled: !stopped },
    h('option', { value: 'none' }, 'none (serial console only)'), h('option', { value: 'vnc' }, 'VNC display'));
  graphics.value = vm.graphics || 'none';
  // limits apply live on a running VM too (PATCH merges them key by key;
  // an emptied field sends null, which removes that limit)
  const lim = vm.limits || {};
  const LIMITS = [
    ['cpu_max_percent', 'CPU cap (% of one host CPU)', 1, 100 * (vm.vcpus || 1)],
    ['cpu_weight', 'CPU weight (relative share)', 1, 10000],
    ['memory_max_mib', 'Memory hard limit (MiB)', vm.memory_mib || 16, 16777216],
  ].map(([key, label, min, max]) => ({ key, label,
    input: h('input', { id: `lim-${key}`, type: 'number', min, max, step: 1, value: lim[key] ?? '', placeholder: 'none' }) }));
  const LISTS = [
    ['cpu_affinity', 'vCPU threads on host CPUs'],
    ['emulator_cpus', 'QEMU\'s other threads on host CPUs'],
    ['iothread_cpus', 'Disk iothreads on host CPUs'],
    ['numa_nodes', 'Guest memory from host NUMA nodes'],
  ].map(([key, label]) => ({ key, label,
    input: h('input', { id: `lim-${key}`, type: 'text', value: fmtCpuList(lim[key]), placeholder: 'any, e.g. 0,2-3', spellcheck: 'false', size: 12 }) }));
  // per-NIC bandwidth (limits.nic, replaced as a whole); bursts kept as they were
  const nicLim = new Map((lim.nic || []).map((e) => [e.index, e]));
  const NICLIM = (vm.nics || []).map((n, i) => {
    const e = nicLim.get(i) || {};
    const mk = (k, label) => h('input', { id: `lim-nic${i}-${k}`, type: 'number', min: 1000, max: 125e9, step: 1, value: e[`${k}_bps`] ?? '', placeholder: 'none', 'aria-label': label });
    return { i, e, inb: mk('inbound', `nic${i} inbound bytes/s`), outb: mk('outbound', `nic${i} outbound bytes/s`) };
  });
  let form;
  const onNicsChanged = (fresh, focusId) => {
    store.vms.set(fresh.name, fresh);
    const f = settingsForm(fresh);
    form.replaceWith(f);
    if (focusId) document.getElementById(focusId)?.focus();
  };
  const nics = up && !vm.template ? liveNics(vm, onNicsChanged) : nicsEditor(vm, stopped && !vm.template);
  form = h('form', { class: 'card form', 'aria-labelledby': 'set-title', id: 'settings-form' },
    h('h2', { id: 'set-title' }, 'Settings'),
    stopped ? null : h('p', { class: 'note' }, liveCpus
      ? 'While the VM runs: vCPUs (hot-plug up to the maximum), description, limits and NICs change now; memory, graphics and the rest once it is stopped.'
      : 'CPU, memory and graphics can be changed while the VM is stopped; description and limits now.'),
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'set-vcpus' }, 'vCPUs'), vcpus),
      h('div', { class: 'field' }, h('label', { for: 'set-max-vcpus' }, 'Max vCPUs (hot-plug)'), maxv)),
    h('p', { class: 'muted small', id: 'set-vcpus-help' }, q35
      ? `Up to ${vm.max_vcpus || vm.vcpus} while it runs (the maximum changes only while stopped). A guest without udev onlines new vCPUs itself; removing vCPUs needs the guest to release them.`
      : 'A microvm has no vCPU hot-plug.'),
    h('div', { class: 'field' }, h('label', { for: 'set-memory' }, 'Memory (MiB)'), mem),
    h('div', { class: 'field' }, h('label', { class: 'check', for: 'set-hugepages' }, huge, ' Guest RAM from 2 MiB huge pages (at the next start; memory must be even)')),
    h('div', { class: 'field' }, h('label', { for: 'set-cpu-model' }, 'CPU model'), cpuModel,
      h('p', { class: 'muted small', id: 'set-cpu-model-help' }, "QEMU's -cpu: a model and +/- features (Nehalem, Skylake-Client-v4,-hle). Empty: the host's CPU under KVM, x86-64-v2-AES under TCG. A named model lets the VM move between hosts of different CPUs.")),
    h('div', { class: 'field' }, h('label', { for: 'set-graphics' }, 'Graphics'), graphics),
    h('div', { class: 'field' }, h('label', { for: 'set-desc' }, 'Description'), desc),
    h('fieldset', { class: 'limits' }, h('legend', {}, 'Limits (applied live; empty = none)'),
      LIMITS.map((l) => h('div', { class: 'field' }, h('label', { for: l.input.id }, l.label), l.input)),
      h('div', { class: 'row' }, LISTS.map((l) => h('div', { class: 'field' }, h('label', { for: l.input.id }, l.label), l.input))),
      NICLIM.length ? h('div', { class: 'table-wrap flat' }, h('table', { class: 'mini', id: 'nic-limits', 'aria-label': 'NIC bandwidth limits, bytes per second' },
        h('caption', { class: 'muted small' }, 'NIC bandwidth, bytes per second as the guest sees it (1000 or more; empty = none)'),
        h('thead', {}, h('tr', {}, ['NIC', 'Inbound (guest receives)', 'Outbound (guest sends)'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, NICLIM.map((x) => h('tr', { dataset: { nic: String(x.i) } },
          h('th', { scope: 'row' }, `nic${x.i}`), h('td', {}, x.inb), h('td', {}, x.outb)))))) : null),
    nics.el,
    err,
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn primary', id: 'settings-save' }, 'Save'), status,
      vm.template ? h('span', { class: 'badge' }, 'template')
        : h('button', { type: 'button', class: 'btn', disabled: !stopped, id: 'make-template',
          title: stopped ? 'Its volumes turn read-only; it can no longer start' : 'Stop the VM first',
          onclick: async () => {
            if (!await confirmDialog('Make a template', `Make ${vm.name} a template? Its volumes turn read-only and it can no longer start; new VMs clone it. Clones keep its machine-id and SSH host keys: to reset them first, use kvmhost template create ${vm.name} --reset-identity.`, 'Make template')) return;
            try {
              const updated = await api('POST', vmPath(vm.name, '/template'));
              store.vms.set(vm.name, updated);
              toast(`${vm.name} is now a template`, 'ok');
            } catch (ex) {
              err.textContent = ex.message;
              err.hidden = false;
            }
          } }, 'Make template')));
  const fail = (msg, input) => {
    err.textContent = msg;
    err.hidden = false;
    if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.hidden = true;
    for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
    const patch = {};
    let liveVcpus = null;
    const nv = Number(vcpus.value);
    if (!Number.isInteger(nv) || nv < 1 || nv > 255) return fail('vCPUs must be 1 to 255.', vcpus);
    if (nv !== vm.vcpus) { if (stopped) patch.vcpus = nv; else if (liveCpus) liveVcpus = nv; }
    if (stopped && q35) {
      const mv = maxv.value === '' ? null : Number(maxv.value);
      if (mv !== null && (!Number.isInteger(mv) || mv < 1 || mv > 255)) return fail('Max vCPUs must be 1 to 255.', maxv);
      if (mv !== null && mv < nv) return fail(`Max vCPUs must be at least the vCPUs (${nv}).`, maxv);
      // cleared: the same as vCPUs (no hot-plug)
      if (mv !== (vm.max_vcpus ?? null)) patch.max_vcpus = mv ?? nv;
    }
    if (stopped && Number(mem.value) !== vm.memory_mib) patch.memory_mib = Number(mem.value);
    if (stopped && huge.checked !== !!vm.hugepages) {
      if (huge.checked && Number(mem.value) % 2) return fail('Huge pages need an even memory size (2 MiB pages).', mem);
      patch.hugepages = huge.checked;
    }
    if (stopped && cpuModel.value.trim() !== (vm.cpu_model || '')) {
      const c = cpuModel.value.trim();
      if (c && !/^[A-Za-z0-9][A-Za-z0-9_.,+-]{0,126}$/.test(c)) return fail('CPU model: a model and +/- features (letters, digits and _.,+-).', cpuModel);
      patch.cpu_model = c || null;
    }
    if (stopped && graphics.value !== (vm.graphics || 'none')) patch.graphics = graphics.value;
    if (desc.value !== (vm.description || '')) patch.description = desc.value;
    for (const l of LIMITS) {
      const v = l.input.value === '' ? null : Number(l.input.value);
      if (v !== (lim[l.key] ?? null)) (patch.limits ||= {})[l.key] = v;
    }
    for (const l of LISTS) {
      const v = parseCpuList(l.input.value);
      if (v === undefined) return fail(`${l.label}: a list of numbers such as 0,2-3.`, l.input);
      if (JSON.stringify(v) !== JSON.stringify(lim[l.key] ?? null)) (patch.limits ||= {})[l.key] = v && v.length ? v : null;
    }
    const nicOut = [];
    for (const x of NICLIM) {
      const entry = { index: x.i };
      for (const [k, input] of [['inbound', x.inb], ['outbound', x.outb]]) {
        if (input.value === '') continue;
        const v = Number(input.value);
        if (!Number.isInteger(v) || v < 1000 || v > 125e9) return fail(`nic${x.i} ${k}: 1000 to 125000000000 bytes per second, or empty.`, input);
        entry[`${k}_bps`] = v;
        if (x.e[`${k}_burst`] !== undefined) entry[`${k}_burst`] = x.e[`${k}_burst`];
      }
      if (Object.keys(entry).length > 1) nicOut.push(entry);
    }
    const nicSame = (a, b) => JSON.stringify(a.map((x) => [x.index, x.inbound_bps ?? null, x.outbound_bps ?? null]))
      === JSON.stringify(b.map((x) => [x.index, x.inbound_bps ?? null, x.outbound_bps ?? null]));
    if (NICLIM.length && !nicSame(nicOut, (lim.nic || []).filter((x) => x.index < NICLIM.length))) (patch.limits ||= {}).nic = nicOut.length ? nicOut : null;
    if (nics.changed()) patch.nics = nics.value();
    if (!Object.keys(patch).length && liveVcpus === null) { toast('Nothing changed'); return; }
    let updated = vm;
    const save = form.querySelector('#settings-save');
    save.disabled = true;
    try {
      // a live vCPU change goes alone (the daemon refuses other keys beside it)
      if (liveVcpus !== null) {
        status.textContent = `${liveVcpus > vm.vcpus ? 'Plugging' : 'Unplugging'} vCPUs…`;
        try {
          updated = await api('PATCH', vmPath(vm.name), { vcpus: liveVcpus });
        } catch (ex) {
          status.textContent = '';
          return fail(vcpuWhy(ex), vcpus);
        }
      }
      if (Object.keys(patch).length) {
        status.textContent = 'Saving…';
        try {
          updated = await api('PATCH', vmPath(vm.name), patch);
        } catch (ex) {
          status.textContent = '';
          if (updated !== vm) { store.vms.set(vm.name, updated); vm = updated; vcpus.value = updated.vcpus; }
          return fail(ex.message);
        }
      }
      store.vms.set(vm.name, updated);
      toast(`Saved ${vm.name}${liveVcpus !== null ? `: ${updated.vcpus} vCPUs` : ''}`, 'ok');
      const f = settingsForm(updated);
      form.replaceWith(f);
      f.querySelector('#settings-save')?.focus();
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

export function vmDetailPage(main, params) {
  const name = decodeURIComponent(params[0]);
  let tab = TABS.some((t) => t.id === params[1]) ? params[1] : 'summary';
  const head = h('div', { class: 'page-head' });
  const tablist = h('div', { class: 'tabs', role: 'tablist', 'aria-label': `${name} views` });
  const panel = h('div', { class: 'tabpanel', role: 'tabpanel', id: 'vm-panel', tabindex: 0 });
  let term = null; // the mounted console, kept while its tab shows
  let termBox = null;
  let consoleStatus = h('span', { class: 'muted small', id: 'console-status', role: 'status' });
  let lastState = null;
  const charts = vmCharts(name, () => {
    const vm = store.vms.get(name);
    return tab === 'summary' && !!vm && UP.includes(vm.state);
  });

  const tabButtons = TABS.map((t) => h('button', {
    type: 'button', role: 'tab', id: `tab-${t.id}`, 'aria-controls': 'vm-panel',
    onclick: () => { location.hash = `#/vms/${encodeURIComponent(name)}/${t.id}`; },
  }, t.label));
  tablist.append(...tabButtons);
  tablist.addEventListener('keydown', (e) => {
    const i = TABS.findIndex((t) => t.id === tab);
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % TABS.length;
    else if (e.key === 'ArrowLeft') j = (i + TABS.length - 1) % TABS.length;
    if (j === null) return;
    e.preventDefault();
    location.hash = `#/vms/${encodeURIComponent(name)}/${TABS[j].id}`;
  });

  function renderHead(vm) {
    replace(head,
      h('h1', { class: 'page-title' }, h('a', { href: '#/vms', class: 'crumb' }, 'VMs'), ' / ', name, ' ', stateBadge(vm)),
      actionButtons(vm, { onDeleted: () => { location.hash = '#/vms'; } }));
  }

  function setTabs() {
    for (const b of tabButtons) {
      const on = b.id === `tab-${tab}`;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.tabIndex = on ? 0 : -1;
    }
    panel.setAttribute('aria-labelledby', `tab-${tab}`);
  }

  async function showConsole(vm) {
    if (!termBox) {
      termBox = h('div', { class: 'terminal', id: 'terminal' });
      consoleStatus = h('span', { class: 'muted small', id: 'console-status', role: 'status' });
      replace(panel, h('div', { class: 'console-head' }, h('h2', {}, 'Serial console'), consoleStatus,
        h('a', { href: vmPath(name, '/console/log'), download: `${name}-console.log`, class: 'btn small', id: 'console-log' }, 'Download log')), termBox);
      consoleStatus.textContent = 'loading…';
      const mod = await import('../console.js');
      if (!termBox.isConnected) return;
      term = mod.mountConsole(termBox, name, (s) => {
        consoleStatus.textContent = s;
        consoleStatus.dataset.status = s;
      });
    }
    if (vm.state === 'running' || vm.state === 'paused') term.connect();
    else {
      consoleStatus.textContent = 'not running: start the VM to use its console';
      consoleStatus.dataset.status = 'stopped';
    }
  }

  function dropConsole() {
    if (term) term.dispose();
    term = null;
    termBox = null;
  }

  let screen = null; // the mounted display, kept while its tab shows
  let screenBox = null;
  let displayStatus = null;
  async function showDisplay(vm) {
    if (vm.graphics !== 'vnc') {
      dropDisplay();
      replace(panel, h('section', { class: 'card' }, h('h2', {}, 'Display'),
        h('p', {}, 'This VM has no display (graphics "none"). Set Graphics to VNC in Settings while it is stopped.')));
      return;
    }
    if (!screenBox) {
      screenBox = h('div', { class: 'screen', id: 'screen', role: 'application', 'aria-label': `Display of ${name}` });
      displayStatus = h('span', { class: 'muted small', id: 'display-status', role: 'status' }, 'loading…');
      const cad = h('button', { type: 'button', class: 'btn small', onclick: () => screen && screen.ctrlAltDel() }, 'Send Ctrl-Alt-Del');
      replace(panel, h('div', { class: 'console-head' }, h('h2', {}, 'Display'), displayStatus, cad), screenBox);
      const mod = await import('../display.js');
      if (!screenBox || !screenBox.isConnected) return;
      screen = mod.mountDisplay(screenBox, name, (st) => {
        displayStatus.textContent = st;
        displayStatus.dataset.status = st;
      });
    }
    if (vm.state === 'running' || vm.state === 'paused') screen.connect();
    else {
      displayStatus.textContent = 'not running: start the VM to see its display';
      displayStatus.dataset.status = 'stopped';
    }
  }

  function dropDisplay() {
    if (screen) screen.dispose();
    screen = null;
    screenBox = null;
  }

  let snaps = null; // the snapshots panel, kept across state changes
  let disksP = null; // the disks panel: its form is kept across updates
  let chartsFor = null; // the VM state the charts were last refreshed for, on the summary tab
  function renderPanel(vm) {
    if (tab !== 'summary') chartsFor = null;
    if (tab !== 'console') dropConsole();
    if (tab !== 'display') dropDisplay();
    if (tab !== 'snapshots') snaps = null;
    if (tab !== 'disks') disksP = null;
    if (tab === 'summary') {
      if (!UP.includes(vm.state)) charts.notRunning();
      else if (chartsFor !== vm.state) charts.refresh(); // the tab shows, or the VM came up
      chartsFor = vm.state;
      replace(panel, summary(vm, charts));
    } else if (tab === 'settings') replace(panel, settingsForm(vm));
    else if (tab === 'snapshots') replace(panel, snaps = snapshotsPanel(vm));
    else if (tab === 'backups') replace(panel, backupsPanel(vm));
    else if (tab === 'disks') replace(panel, disksP = disksPanel(vm));
    else if (tab === 'events') {
      const evs = store.events.filter((e) => e.vm === name);
      replace(panel, h('section', { class: 'card' }, h('h2', {}, 'Events'),
        evs.length ? h('ol', { class: 'events', id: 'vm-events' }, evs.map((e) => eventRow(e, false)))
          : h('p', { class: 'muted' }, 'No events since this page opened.')));
    } else if (tab === 'console') showConsole(vm);
    else if (tab === 'display') showDisplay(vm);
  }

  function render(full) {
    const vm = store.vms.get(name);
    if (!vm) {
      replace(head, h('h1', { class: 'page-title' }, name));
      replace(panel, h('p', {}, store.vms.size ? `No VM named ${name}.` : 'Loading…'));
      return;
    }
    renderHead(vm);
    const stateChanged = lastState !== vm.state;
    lastState = vm.state;
    // Settings and console keep their state across live updates; the
    // console reconnects when the VM comes up.
    if (full || tab === 'summary' || tab === 'events' || (tab === 'settings' && stateChanged)) renderPanel(vm);
    else if (tab === 'snapshots' && stateChanged && snaps) snaps.refresh(vm);
    else if (tab === 'disks' && disksP) disksP.refresh(vm);
    else if (tab === 'console' && stateChanged) showConsole(vm);
    else if (tab === 'display' && stateChanged) showDisplay(vm);
  }

  replace(main, head, tablist, panel);
  setTabs();
  render(true);
  if (!store.vms.has(name)) loadVms().then(() => render(true)).catch(() => {});
  const unsub = subscribe((kind, detail) => {
    if (kind === 'vms' || (kind === 'vm' && detail === name) || (kind === 'event' && tab === 'events' && detail.vm === name)) render(false);
  });
  return {
    // same page, another tab: keep the page, switch the panel
    update(newParams) {
      if (decodeURIComponent(newParams[0]) !== name) return false;
      tab = TABS.some((t) => t.id === newParams[1]) ? newParams[1] : 'summary';
      setTabs();
      const vm = store.vms.get(name);
      if (vm) renderPanel(vm);
      document.getElementById(`tab-${tab}`)?.focus();
      return true;
    },
    cleanup() { unsub(); charts.stop(); dropConsole(); dropDisplay(); },
  };
}
