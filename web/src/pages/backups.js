// backups.js - the VM detail's Backups tab: the VM's backups (newest
// first), back up now (into a chosen store), verify one, restore one to a
// new VM (optionally live: it starts at once while the data streams in).
import { h, replace, fmtTime, fmtBytes, toast } from '../dom.js';
import { api, vmPath } from '../api.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A task answered by a request with "wait": poll it until it ends.
async function finished(t) {
  while (t && t.state === 'running') {
    await sleep(500);
    t = await api('GET', `/api/v1/tasks/${encodeURIComponent(t.id)}`);
  }
  if (t && t.state === 'failed') throw new Error((t.error && t.error.message) || 'the task failed');
  return t ? t.result : null;
}

export function backupsPanel(vm) {
  const name = vm.name;
  let seq = 0;
  const err = h('p', { class: 'error', role: 'alert', id: 'backup-error', hidden: true });
  const status = h('p', { class: 'muted', id: 'backup-status', 'aria-live': 'polite' });
  const list = h('div', { id: 'backup-list', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
  const store = h('select', { id: 'backup-store' });
  const create = h('button', { type: 'submit', class: 'btn primary' }, 'Back up now');
  const showErr = (m) => { err.textContent = m; err.hidden = !m; };

  async function run(label, fn) {
    showErr('');
    status.textContent = `${label}…`;
    try {
      const msg = await fn();
      status.textContent = msg;
      toast(msg, 'ok');
    } catch (e) {
      status.textContent = '';
      showErr(`${label}: ${e.message}`);
    }
    await load();
  }

  async function loadStores() {
    try {
      const r = await api('GET', '/api/v1/backup-stores');
      const stores = r.stores || [];
      replace(store, stores.map((s) => h('option', { value: s.name }, s.name + (s.encrypted ? ' (encrypted)' : ''))));
      create.disabled = !stores.length;
      if (!stores.length) status.textContent = 'No backup store: add one first (kvmhost backup-store add NAME --path DIR).';
    } catch (e) {
      showErr(`Cannot list the backup stores: ${e.message}`);
    }
  }

  function row(b) {
    const as = h('input', { type: 'text', id: `restore-as-${b.id}`, maxlength: 64, autocomplete: 'off',
      pattern: '[A-Za-z0-9_][A-Za-z0-9_.\\-]*', placeholder: 'new VM name', 'aria-label': `New VM name for backup ${b.id}` });
    const live = h('input', { type: 'checkbox', id: `restore-live-${b.id}` });
    return h('tr', { dataset: { backup: b.id } },
      h('td', {}, fmtTime(b.created_at)),
      h('td', {}, b.kind),
      h('td', {}, h('code', {}, b.store)),
      h('td', {}, fmtBytes(b.size)),
      h('td', { title: `written ${fmtBytes(b.bytes_written)}, deduplicated ${fmtBytes(b.bytes_dedup)}` }, fmtBytes(b.bytes_read)),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn small', 'aria-label': `Verify backup ${b.id}`,
          onclick: () => run('Verify', async () => {
            const r = await finished(await api('POST', `/api/v1/backups/${encodeURIComponent(b.id)}/verify`, { wait: 60 }));
            const bad = (r && r.damaged) || [];
            return bad.length ? `Backup damaged: ${bad.join(', ')}` : 'Backup verified: every chunk is intact';
          }) }, 'Verify'),
        as,
        h('label', { class: 'small', for: `restore-live-${b.id}`, title: 'start the VM at once; the data streams in behind it' }, live, ' live'),
        h('button', { type: 'button', class: 'btn small', 'aria-label': `Restore backup ${b.id}`,
          onclick: () => {
            if (!as.value || !as.checkValidity()) { showErr('Restore: give the new VM a name (letters, digits, _ . -)'); return; }
            const target = as.value;
            run(`Restore to ${target}`, async () => {
              const body = { as: target, wait: 60 };
              if (live.checked) body.live = true;
              await finished(await api('POST', `/api/v1/backups/${encodeURIComponent(b.id)}/restore`, body));
              return `Restored to the new VM ${target}`;
            });
          } }, 'Restore'))));
  }

  async function load() {
    const my = ++seq;
    let backups;
    try {
      backups = (await api('GET', `/api/v1/backups?vm=${encodeURIComponent(name)}`)).backups || [];
    } catch (e) {
      if (my === seq) replace(list, h('p', { class: 'muted' }, `Cannot list backups: ${e.message}`));
      return;
    }
    if (my !== seq) return;
    if (!backups.length) { replace(list, h('p', { class: 'muted' }, 'No backups.')); return; }
    replace(list, h('div', { class: 'table-wrap flat' }, h('table', { class: 'mini', id: 'backup-table' },
      h('thead', {}, h('tr', {}, ['Taken', 'Kind', 'Store', 'Size', 'Read'].map((t) => h('th', { scope: 'col' }, t)),
        h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, backups.map(row)))));
  }

  const form = h('form', { class: 'form', 'aria-label': 'Back up the VM' },
    h('div', { class: 'field' }, h('label', { for: 'backup-store' }, 'Store'), store),
    h('p', { class: 'muted small' }, 'The first backup into a store is full; later ones read only what changed (persistent dirty bitmaps). Every disk must be a volume.'),
    h('div', { class: 'buttons' }, create));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    create.disabled = true;
    await run('Backup', async () => {
      const r = await finished(await api('POST', vmPath(name, '/backups'), { store: store.value, wait: 60 }));
      return `Backup done (${r.kind}, ${fmtBytes(r.bytes_read)} read)`;
    });
    create.disabled = false;
  });
  loadStores();
  load();
  const el = h('section', { class: 'card wide', 'aria-labelledby': 'backup-title' },
    h('h2', { id: 'backup-title' }, 'Backups'), form, status, err, list);
  el.refresh = () => load();
  return el;
}
