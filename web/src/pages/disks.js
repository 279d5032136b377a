// disks.js - the VM detail's Disks tab: the VM's disks, attach a volume
// from a pool and detach a disk (POST/DELETE /api/v1/vms/{name}/disks).
// On a stopped VM that edits the spec; on a running one the daemon
// hot-plugs (and the guest must release a disk for a hot-unplug).
import { h, replace, toast, field, errorLine, confirmDialog, fmtBytes } from '../dom.js';
import { api, vmPath } from '../api.js';
import { store } from '../store.js';

const UP = ['running', 'paused'];
let lastPool = null; // the pool picked last, picked again on the next VM's tab
const poolPath = (p, rest = '') => `/api/v1/pools/${encodeURIComponent(p)}${rest}`;

// "Refused (409): vm web1 already has ..." - the status tells a refusal
// (nothing changed) from a failure.
function why(what, ex) {
  if (!ex.status) return `${what}: ${ex.message}`;
  if (ex.status === 504) return `${what}: the guest did not release the disk in time (504), so it stays attached; try again once the guest has let it go. ${ex.message}`;
  return `${what} ${ex.status < 500 ? 'refused' : 'failed'} (${ex.status}): ${ex.message}`;
}

export function disksPanel(vm) {
  const name = vm.name;
  let cur = vm;
  let busy = false;
  const err = errorLine('disk-error');
  const list = h('div', { id: 'disk-list', 'aria-live': 'polite' });
  const note = h('p', { class: 'muted small', id: 'disk-note' });
  const pool = h('select', {});
  const vol = h('select', { required: true });
  const ro = h('input', { type: 'checkbox', id: 'disk-readonly' });
  const attach = h('button', { type: 'submit', class: 'btn primary' }, 'Attach disk');
  const status = h('span', { class: 'muted small', id: 'disk-status', role: 'status' });
  let pools = [];

  async function loadVolumes() {
    const p = pool.value;
    if (!p) { replace(vol, h('option', { value: '' }, 'no pools')); return; }
    try {
      const vols = (await api('GET', poolPath(p, '/volumes'))).volumes || [];
      if (pool.value !== p) return;
      const keep = vol.value;
      replace(vol, vols.length ? vols.map((v) => {
        const users = (v.used_by || []).map((u) => u.vm);
        const extra = [v.format, fmtBytes(v.capacity), v.readonly ? 'template base, read-only' : null,
          users.length ? `used by ${users.join(', ')}` : null].filter(Boolean).join(', ');
        return h('option', { value: `${p}/${v.name}` }, `${v.name} (${extra})`);
      }) : h('option', { value: '' }, 'no volumes in this pool'));
      if (vols.some((v) => `${p}/${v.name}` === keep)) vol.value = keep;
    } catch (ex) {
      replace(vol, h('option', { value: '' }, 'cannot list volumes'));
      err.set(`Cannot list the volumes of ${p}: ${ex.message}`);
    }
  }

  async function loadPools() {
    try {
      pools = (await api('GET', '/api/v1/pools')).pools || [];
    } catch (ex) {
      err.set(`Cannot list pools: ${ex.message}`);
      return;
    }
    const keep = pool.value || lastPool;
    replace(pool, pools.map((p) => h('option', { value: p.name }, p.name)));
    if (pools.some((p) => p.name === keep)) pool.value = keep;
    await loadVolumes();
  }
  pool.addEventListener('change', () => { lastPool = pool.value; err.set(''); loadVolumes(); });

  // A disk the running QEMU started with ("hotplugged": false, runtime
  // only) sits on a slot without hot-unplug: the daemon answers 409.
  const atStart = (d) => UP.includes(cur.state) && d.hotplugged === false;
  const AT_START = 'Attached at start: this disk cannot be hot-unplugged; stop the VM to detach it';

  function setBusy(on, text) {
    busy = on;
    attach.disabled = on || !!cur.template;
    for (const b of list.querySelectorAll('button')) b.disabled = on || !!cur.template || b.dataset.atStart === 'true';
    status.textContent = text || '';
  }

  async function detach(i, d) {
    const live = UP.includes(cur.state);
    const src = d.volume || d.path;
    if (!await confirmDialog('Detach disk', live
      ? `Detach disk${i} (${src}) from the running ${name}? The guest must release it (unmount it first); its data stays in the volume.`
      : `Detach disk${i} (${src}) from ${name}? Its data stays in the volume.`, 'Detach')) return;
    err.set('');
    setBusy(true, live ? `detaching disk${i}: waiting for the guest to release it…` : `detaching disk${i}…`);
    try {
      const updated = await api('DELETE', vmPath(name, `/disks/${i}`));
      store.vms.set(name, updated);
      toast(`Detached ${src} from ${name}`, 'ok');
      refresh(updated);
    } catch (ex) {
      err.set(why(`Detach of disk${i}`, ex));
    } finally {
      setBusy(false);
    }
    loadVolumes();
  }

  function renderList() {
    const disks = cur.disks || [];
    replace(list, disks.length ? h('table', { class: 'mini', id: 'disk-table', 'aria-label': `Disks of ${name}` },
      h('thead', {}, h('tr', {}, ['Disk', 'Source', 'Format', 'Access', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'sr-only' }, 'Actions'))))),
      h('tbody', {}, disks.map((d, i) => h('tr', { dataset: { disk: String(i), vol: d.volume || '' } },
        h('th', { scope: 'row' }, `disk${i}`),
        h('td', {}, d.volume ? ['volume ', h('a', { href: '#/storage' }, h('code', {}, d.volume))] : h('code', {}, d.path)),
        h('td', {}, d.format || (d.volume ? 'from the volume' : '–')),
        h('td', {}, d.readonly ? 'read-only' : 'read-write'),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Detach disk${i}`,
            disabled: busy || !!cur.template || atStart(d), title: atStart(d) ? AT_START : null,
            dataset: { atStart: String(atStart(d)) }, onclick: () => detach(i, d) }, 'Detach')))))))
      : h('p', { class: 'muted' }, 'No disks.'));
  }

  function refresh(v) {
    cur = v;
    const live = UP.includes(v.state);
    note.textContent = v.template ? 'A template\'s disks do not change.'
      : live ? `${name} runs: an attached volume is hot-plugged (the guest sees a new virtio disk, e.g. /dev/vdb); a detach asks the guest to release the disk. Disks attached at start cannot be hot-unplugged.`
        : `${name} is stopped: attach and detach change its spec; the next start uses them.`;
    attach.disabled = busy || !!v.template;
    renderList();
  }

  const form = h('form', { class: 'form inline', 'aria-label': `Attach a volume to ${name}`, novalidate: true },
    h('div', { class: 'row' },
      field('disk-pool', 'Pool', pool),
      field('disk-volume', 'Volume', vol),
      h('div', { class: 'field end' }, h('label', { class: 'check', for: 'disk-readonly' }, ro, ' Read-only')),
      h('div', { class: 'field end' }, attach)),
    status);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    if (!vol.value) { vol.focus(); err.set('Pick a volume (create one on the Storage page).'); return; }
    const live = UP.includes(cur.state);
    const ref = vol.value;
    setBusy(true, live ? `hot-plugging ${ref}…` : `attaching ${ref}…`);
    try {
      const updated = await api('POST', vmPath(name, '/disks'), { volume: ref, readonly: ro.checked });
      store.vms.set(name, updated);
      toast(`${live ? 'Hot-plugged' : 'Attached'} ${ref} to ${name}`, 'ok');
      refresh(updated);
    } catch (ex) {
      err.set(why(`Attach of ${ref}`, ex));
    } finally {
      setBusy(false);
    }
    loadVolumes();
  });

  refresh(vm);
  loadPools();
  const el = h('section', { class: 'card wide', 'aria-labelledby': 'disks-title' },
    h('h2', { id: 'disks-title' }, 'Disks'), note, list, h('h3', {}, 'Attach a volume'), form, err);
  el.refresh = (v) => { if (!busy) refresh(v); else cur = v; };
  return el;
}
