// tasks.js - recent tasks (#/tasks): starts, stops, snapshots, clones...
// with their state, progress and error, live from task.updated events.
import { h, replace, fmtTime } from '../dom.js';
import { api } from '../api.js';
import { subscribe } from '../store.js';

const STATE_CLASS = { running: 'state-starting', succeeded: 'state-running', failed: 'state-paused' };

export function tasksPage(main) {
  const box = h('div', { class: 'table-wrap', id: 'tasks' }, h('p', { class: 'muted pad' }, 'Loading…'));
  let tasks = new Map();
  const draw = () => {
    const list = [...tasks.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    if (!list.length) { replace(box, h('p', { class: 'muted pad' }, 'No tasks yet.')); return; }
    replace(box, h('table', { class: 'vms', 'aria-label': 'Recent tasks' },
      h('thead', {}, h('tr', {}, ['Started', 'Task', 'VM', 'State', 'Progress', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, list.slice(0, 200).map((t) => h('tr', { dataset: { task: t.id, kind: t.kind } },
        h('td', {}, fmtTime(t.created_at)),
        h('td', {}, h('code', {}, t.kind)),
        h('td', {}, t.vm ? h('a', { href: `#/vms/${encodeURIComponent(t.vm)}` }, t.vm) : '–'),
        h('td', {}, h('span', { class: `badge ${STATE_CLASS[t.state] || ''}` }, t.state)),
        h('td', { class: 'num' }, t.state === 'running'
          ? h('progress', { max: 100, value: t.progress || 0, 'aria-label': `${t.kind} ${t.progress || 0}%` }) : `${t.progress ?? 0} %`),
        h('td', {}, t.error ? h('span', { class: 'error' }, t.error.message) : (t.message || '')))))));
  };
  async function load() {
    try {
      const r = await api('GET', '/api/v1/tasks');
      tasks = new Map((r.tasks || []).map((t) => [t.id, t]));
      draw();
    } catch (e) {
      replace(box, h('p', { class: 'muted pad' }, `Cannot list tasks: ${e.message}`));
    }
  }
  replace(main, h('h1', { class: 'page-title' }, 'Tasks'),
    h('p', { class: 'muted small' }, 'Long operations (start, stop, snapshots, full clones, ...) and how they ended; live.'), box);
  load();
  return subscribe((kind, ev) => {
    if (kind !== 'event' || ev.type !== 'task.updated' || !ev.data || !ev.data.id) return;
    tasks.set(ev.data.id, ev.data);
    draw();
  });
}
