// events.js - one event as a list row.
import { h } from '../dom.js';

function describe(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case 'vm.state': return `${d.previous || '?'} → ${d.state}${d.reason ? ` (${d.reason})` : ''}`;
    case 'task.updated': return `${d.kind || 'task'} ${d.state}${d.message ? `: ${d.message}` : ''}${d.error ? `: ${d.error.message}` : ''}`;
    case 'host.accelerator': return `accelerator ${d.accelerator || ''}`;
    case 'vm.created': return 'created';
    case 'vm.updated': return 'settings changed';
    case 'vm.deleted': return 'deleted';
    case 'vm.reset': return 'reset';
    case 'vm.limits_failed': return `limits not applied${d.message ? `: ${d.message}` : ''}`;
    case 'alert.firing': return `${d.rule}: ${d.metric} ${d.op} ${d.threshold} (now ${typeof d.value === 'number' ? d.value.toFixed(1) : '?'})`;
    case 'alert.resolved': return `${d.rule} resolved`;
    default: return '';
  }
}

export function eventRow(ev, withVm) {
  const t = ev.time ? new Date(ev.time) : null;
  return h('li', { class: `event ev-${ev.type.replace('.', '-')}` },
    h('time', { datetime: ev.time || '' }, t && !isNaN(t) ? t.toLocaleTimeString() : ''),
    h('span', { class: 'ev-type' }, ev.type),
    withVm && ev.vm ? h('a', { href: `#/vms/${encodeURIComponent(ev.vm)}` }, ev.vm) : null,
    h('span', { class: 'ev-desc' }, describe(ev)));
}
