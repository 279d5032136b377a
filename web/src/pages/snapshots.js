// snapshots.js - the VM detail's Snapshots tab: the snapshot tree (each
// snapshot under its parent, the current one marked), take, revert, delete.
import { h, replace, fmtTime, toast, confirmDialog } from '../dom.js';
import { api, vmPath } from '../api.js';

const when = (t) => fmtTime(typeof t === 'number' ? t * 1000 : t);

// The snapshots in tree order (depth first, each parent before its
// children, siblings oldest first), each with its depth. A snapshot whose
// parent is not listed is a root.
export function snapshotTree(snaps) {
  const names = new Set(snaps.map((s) => s.name));
  const kids = new Map();
  const roots = [];
  for (const s of snaps) {
    if (s.parent && names.has(s.parent) && s.parent !== s.name) {
      if (!kids.has(s.parent)) kids.set(s.parent, []);
      kids.get(s.parent).push(s);
    } else roots.push(s);
  }
  const out = [];
  const seen = new Set();
  const walk = (s, depth) => {
    if (seen.has(s.name)) return; // a cycle would be a daemon bug; never loop
    seen.add(s.name);
    const children = kids.get(s.name) || [];
    out.push({ ...s, depth, children: children.map((c) => c.name) });
    for (const c of children) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  for (const s of snaps) walk(s, 0); // anything left (a cycle): flat
  return out;
}

export function snapshotsPanel(vm) {
  const name = vm.name;
  let running = false;
  let seq = 0; // only the latest listing is shown
  const err = h('p', { class: 'error', role: 'alert', id: 'snap-error', hidden: true });
  const list = h('div', { id: 'snap-list', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
  const input = h('input', { id: 'snap-name', type: 'text', required: true, maxlength: 64,
    pattern: '[A-Za-z0-9_][A-Za-z0-9_.\\-]*', autocomplete: 'off' });
  const take = h('button', { type: 'submit', class: 'btn primary' });
  const note = h('p', { class: 'muted small' });
  const showErr = (m) => { err.textContent = m; err.hidden = !m; };

  async function run(label, method, path, body) {
    showErr('');
    try {
      const t = await api(method, vmPath(name, path), body);
      if (t && t.state === 'running') toast(`${label}: still running (task ${t.id})`);
      else toast(`${label}: done`, 'ok');
    } catch (e) {
      showErr(`${label}: ${e.message}`);
    }
    await load();
  }

  async function load() {
    let snaps, current;
    const my = ++seq;
    try {
      const r = await api('GET', vmPath(name, '/snapshots'));
      snaps = r.snapshots || [];
      current = r.current ?? (snaps.find((s) => s.current) || {}).name ?? null;
    } catch (e) {
      if (my === seq) replace(list, h('p', { class: 'muted' }, `Cannot list snapshots: ${e.message}`));
      return;
    }
    if (my !== seq) return;
    if (!snaps.length) { replace(list, h('p', { class: 'muted' }, 'No snapshots.')); return; }
    const tree = snapshotTree(snaps);
    replace(list, h('table', { class: 'mini snap-tree', id: 'snap-table' },
      h('caption', { class: 'muted small' }, 'Each snapshot is listed under its parent (the snapshot that was current when it was taken). ',
        current ? ['The VM derives from ', h('code', {}, current), ' (current): a new snapshot becomes its child.'] : 'No snapshot is current: a new one starts a new tree.'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Parent'), h('th', { scope: 'col' }, 'Kind'),
        h('th', { scope: 'col' }, 'Taken'), h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')))),
      h('tbody', {}, tree.map((s) => h('tr', { dataset: { snap: s.name, depth: String(s.depth), parent: s.parent || '' }, class: s.name === current ? 'current' : null },
        h('td', { class: 'snap-name' },
          h('span', { class: 'snap-indent', style: `padding-left: ${Math.min(s.depth, 12) * 1.25}em` },
            s.depth ? h('span', { class: 'snap-branch', 'aria-hidden': 'true' }, '└ ') : null,
            h('code', {}, s.name)),
          s.name === current ? h('span', { class: 'badge current-badge', title: 'the VM derives from this snapshot' }, 'current') : null,
          s.children.length ? h('span', { class: 'muted small' }, ` ${s.children.length} ${s.children.length === 1 ? 'child' : 'children'}`) : null),
        h('td', {}, s.parent ? h('code', {}, s.parent) : h('span', { class: 'muted' }, '– (root)')),
        h('td', {}, s.memory ? 'memory' : 'disk-only'),
        h('td', {}, when(s.created_at)),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn small', 'aria-label': `Revert to ${s.name}`,
            title: s.memory ? 'The VM must be running' : 'The VM must be stopped',
            onclick: async () => {
              if (await confirmDialog('Revert to snapshot', `Revert ${name} to ${s.name}? Changes since then are lost.`, 'Revert')) {
                run(`Revert to ${s.name}`, 'POST', `/snapshots/${encodeURIComponent(s.name)}/revert`, { wait: 120 });
              }
            } }, 'Revert'),
          h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Delete snapshot ${s.name}`,
            onclick: async () => {
              if (await confirmDialog('Delete snapshot', `Delete the snapshot ${s.name} of ${name}?${s.children.length
                ? ` Its children (${s.children.join(', ')}) move up to ${s.parent || 'the top'}; their data is kept.` : ''}`, 'Delete')) {
                run(`Delete ${s.name}`, 'DELETE', `/snapshots/${encodeURIComponent(s.name)}?wait=120`);
              }
            } }, 'Delete'))))))));
  }

  const form = h('form', { class: 'form', 'aria-label': 'Take a snapshot' },
    h('div', { class: 'field' }, h('label', { for: 'snap-name' }, 'Snapshot name'), input),
    note,
    h('div', { class: 'buttons' }, take));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    take.disabled = true;
    await run(`Snapshot ${input.value}`, 'POST', '/snapshots', { name: input.value, wait: 120 });
    take.disabled = false;
    if (err.hidden) input.value = '';
  });
  // the VM's state changed: the kind of snapshot it takes, and the list
  function refresh(v) {
    running = v.state === 'running' || v.state === 'paused';
    take.textContent = running ? 'Take snapshot (with memory)' : 'Take snapshot (disk-only)';
    note.textContent = `${running
      ? 'The VM runs: a snapshot includes its memory; reverting to a memory snapshot needs the VM running.'
      : 'The VM is stopped: a snapshot is disk-only; reverting to a disk-only snapshot needs the VM stopped.'} Every writable disk must be a qcow2 volume.`;
    load();
  }
  refresh(vm);
  const el = h('section', { class: 'card wide', 'aria-labelledby': 'snap-title' },
    h('h2', { id: 'snap-title' }, 'Snapshots'), form, err, list);
  el.refresh = refresh;
  return el;
}
