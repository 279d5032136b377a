// audit.js - the audit log (#/audit): every write and every login with who,
// from where, what and the result, newest first; filters and "older" paging.
import { h, replace, fmtTime } from '../dom.js';
import { api } from '../api.js';

export function auditPage(main) {
  const box = h('div', { class: 'table-wrap', id: 'audit' }, h('p', { class: 'muted pad' }, 'Loading…'));
  const who = h('input', { id: 'audit-principal', type: 'text', spellcheck: 'false', placeholder: 'alice, alice!ci, root@local' });
  const path = h('input', { id: 'audit-path', type: 'text', spellcheck: 'false', placeholder: '/api/v1/vms' });
  const more = h('button', { type: 'button', class: 'btn', id: 'audit-older', hidden: true }, 'Older entries');
  let rows = [];
  let next = null;
  const draw = () => {
    if (!rows.length) { replace(box, h('p', { class: 'muted pad' }, 'No entries.')); return; }
    replace(box, h('table', { class: 'vms', 'aria-label': 'Audit log' },
      h('thead', {}, h('tr', {}, ['Time', 'Who', 'From', 'Request', 'Object', 'Status'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((e) => h('tr', { dataset: { audit: String(e.id) } },
        h('td', {}, fmtTime(e.at * 1000)),
        h('td', {}, e.principal || h('span', { class: 'muted' }, 'anonymous')),
        h('td', {}, e.address || ''),
        h('td', {}, h('code', {}, `${e.method} ${e.path}`)),
        h('td', {}, e.object || e.detail || ''),
        h('td', { class: 'num' }, h('span', { class: `badge ${e.status < 400 ? 'state-running' : 'state-paused'}` }, String(e.status))))))));
  };
  async function load(append) {
    const q = new URLSearchParams({ limit: '100' });
    if (who.value.trim()) q.set('principal', who.value.trim());
    if (path.value.trim()) q.set('path', path.value.trim());
    if (append && next) q.set('before', String(next));
    try {
      const r = await api('GET', `/api/v1/audit?${q}`);
      rows = append ? rows.concat(r.entries) : r.entries;
      next = r.next_before;
      more.hidden = !next;
      draw();
    } catch (e) {
      replace(box, h('p', { class: 'muted pad' }, `Cannot read the audit log: ${e.message}`));
    }
  }
  const form = h('form', { class: 'toolbar', 'aria-label': 'Filter the audit log' },
    h('label', { for: 'audit-principal' }, 'Who '), who,
    h('label', { for: 'audit-path' }, ' Path starts with '), path,
    h('button', { type: 'submit', class: 'btn' }, 'Filter'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(false); });
  more.addEventListener('click', () => load(true));
  replace(main, h('h1', { class: 'page-title' }, 'Audit log'),
    h('p', { class: 'muted small' }, 'Every change and every login (failed ones too), append-only. Needs Sys.Audit on /.'),
    form, box, more);
  load(false);
  return () => {};
}
