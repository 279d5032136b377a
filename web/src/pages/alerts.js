// alerts.js - alert rules and the alerts pending or firing now (#/alerts):
// GET /api/v1/alerts; the rules are edited as a table and replaced whole
// (PUT /api/v1/alerts/rules, until the daemon restarts).
import { h, replace, toast, errorLine, fmtTime, fmtDuration, field } from '../dom.js';
import { api } from '../api.js';
import { subscribe } from '../store.js';

const OPS = ['>', '>=', '<', '<='];
const METRICS = {
  host: ['cpu_percent', 'memory_used_percent', 'memory_used_bytes', 'load1', 'vms_running'],
  vm: ['cpu_percent', 'cpu_saturation_percent', 'memory_bytes', 'rss_bytes'],
};

function ruleRow(i, r, onRemove) {
  const id = (k) => `rule-${i}-${k}`;
  const n = i + 1;
  const name = h('input', { id: id('name'), type: 'text', value: r.name || '', size: 16, spellcheck: 'false', required: true });
  const scope = h('select', { id: id('scope') }, h('option', { value: 'host' }, 'host'), h('option', { value: 'vm' }, 'each VM'));
  scope.value = r.scope || 'host';
  const metric = h('input', { id: id('metric'), type: 'text', value: r.metric || '', size: 20, spellcheck: 'false', list: 'alert-metrics', required: true });
  const op = h('select', { id: id('op') }, OPS.map((o) => h('option', { value: o }, o)));
  op.value = r.op || '>';
  const threshold = h('input', { id: id('threshold'), type: 'number', step: 'any', value: r.threshold ?? '', size: 8, required: true });
  const forS = h('input', { id: id('for'), type: 'number', min: 0, step: 'any', value: r.for_seconds ?? 60, size: 6 });
  // a trend rule: predict_seconds (and its regression window); empty = a threshold rule
  const predict = h('input', { id: id('predict'), type: 'number', min: 1, max: 2592000, step: 'any', value: r.predict_seconds ?? '', size: 8, placeholder: 'none' });
  const windowS = h('input', { id: id('window'), type: 'number', min: 1, max: 3600, step: 'any', value: r.predict_seconds ? (r.window_seconds ?? '') : '', size: 6, placeholder: r.predict_seconds ? '3600' : '' });
  predict.addEventListener('input', () => { windowS.placeholder = predict.value ? '3600' : ''; });
  const cell = (input, label) => h('td', {}, h('label', { class: 'sr-only', for: input.id }, `Rule ${n} ${label}`), input);
  const el = h('tr', { dataset: { rule: r.name || '' } },
    cell(name, 'name'),
    cell(scope, 'scope'), cell(metric, 'metric'), cell(op, 'comparison'), cell(threshold, 'threshold'),
    cell(forS, 'for seconds'), cell(predict, 'predict seconds'), cell(windowS, 'window seconds'),
    h('td', {}, h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Remove rule ${n}`, onclick: onRemove }, 'Remove')));
  return {
    el,
    // keys this table does not edit (e.g. a trend rule's predict_seconds)
    // go back as they came
    value() {
      const v = { ...r, name: name.value.trim(), scope: scope.value, metric: metric.value.trim(), op: op.value,
        threshold: threshold.value === '' ? NaN : Number(threshold.value), for_seconds: forS.value === '' ? 0 : Number(forS.value) };
      delete v.predict_seconds;
      delete v.window_seconds;
      if (predict.value !== '') {
        v.predict_seconds = Number(predict.value);
        if (windowS.value !== '') v.window_seconds = Number(windowS.value);
      }
      return v;
    },
    check() {
      if (!name.value.trim()) { name.focus(); return `Rule ${n} needs a name.`; }
      if (!metric.value.trim()) { metric.focus(); return `Rule ${n} needs a metric.`; }
      if (threshold.value === '' || !isFinite(Number(threshold.value))) { threshold.focus(); return `Rule ${n} needs a numeric threshold.`; }
      if (!(Number(forS.value) >= 0)) { forS.focus(); return `Rule ${n}: "for" must be 0 or more seconds.`; }
      if (predict.value !== '' && !(Number(predict.value) >= 1 && Number(predict.value) <= 2592000)) { predict.focus(); return `Rule ${n}: "predict" must be 1 to 2592000 seconds (30 days), or empty.`; }
      if (windowS.value !== '' && predict.value === '') { windowS.focus(); return `Rule ${n}: a window needs "predict" (it is for trend rules).`; }
      if (windowS.value !== '' && !(Number(windowS.value) >= 1 && Number(windowS.value) <= 3600)) { windowS.focus(); return `Rule ${n}: the window must be 1 to 3600 seconds, or empty.`; }
      return null;
    },
  };
}

export function alertsPage(main) {
  const active = h('div', { id: 'alerts-active', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Loading…'));
  const tbody = h('tbody', { id: 'rule-rows' });
  const err = errorLine('rules-error');
  let rules = [];
  let rows = [];
  const draw = () => {
    rows = rules.map((r, i) => ruleRow(i, r, () => { rules = rows.map((x) => x.value()); rules.splice(i, 1); draw(); }));
    replace(tbody, rows.length ? rows.map((r) => r.el) : h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No rules: nothing alerts.')));
  };
  async function load(withRules) {
    let a;
    try {
      a = await api('GET', '/api/v1/alerts');
    } catch (e) {
      replace(active, h('p', { class: 'muted' }, `Cannot load alerts: ${e.message}`));
      return;
    }
    const act = a.active || [];
    replace(active, act.length ? h('table', { class: 'mini', 'aria-label': 'Active alerts' },
      h('thead', {}, h('tr', {}, ['Rule', 'State', 'VM', 'Value', 'Since'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, act.map((x) => h('tr', {},
        h('td', {}, x.rule || x.name || '–'),
        h('td', {}, h('span', { class: `badge ${x.state === 'firing' ? 'state-paused' : ''}` }, x.state || 'firing')),
        h('td', {}, x.vm ? h('a', { href: `#/vms/${encodeURIComponent(x.vm)}` }, x.vm) : '–'),
        h('td', { class: 'num' }, typeof x.value === 'number' ? x.value.toFixed(1) : '–',
          typeof x.predicted === 'number' ? h('div', { class: 'muted small' }, `predicted ${x.predicted.toFixed(1)}${typeof x.eta_seconds === 'number' ? ` in ${fmtDuration(x.eta_seconds)}` : ''}`) : null),
        h('td', {}, fmtTime(typeof x.since === 'number' ? x.since * 1000 : x.since))))))
      : h('p', { class: 'muted' }, 'No alert is pending or firing.'));
    saved = a.rules || [];
    showHook(a.webhook, withRules);
    if (withRules) { rules = a.rules || []; draw(); }
  }
  // the webhook: POSTs of alert.firing / alert.resolved, with its counters
  const hookUrl = h('input', { type: 'url', size: 40, maxlength: 2048, spellcheck: 'false', placeholder: 'none, e.g. https://hooks.example/kvmhost' });
  const hookTimeout = h('input', { type: 'number', min: 1, max: 60, step: 1, placeholder: '5', size: 4 });
  const hookErr = errorLine('hook-error');
  const hookState = h('div', { id: 'hook-state', 'aria-live': 'polite' });
  let saved = [];
  function showHook(w, fill) {
    if (fill) { hookUrl.value = w ? w.url : ''; hookTimeout.value = w ? w.timeout_seconds : ''; }
    replace(hookState, w ? h('dl', { class: 'kv' },
      h('dt', {}, 'Posting to'), h('dd', {}, h('code', {}, w.url), ` (timeout ${w.timeout_seconds} s)`),
      h('dt', {}, 'Sent'), h('dd', { id: 'hook-sent' }, String(w.sent)),
      h('dt', {}, 'Failed'), h('dd', { id: 'hook-failed' }, String(w.failed)),
      h('dt', {}, 'Dropped'), h('dd', { id: 'hook-dropped' }, String(w.dropped)))
      : h('p', { class: 'muted', id: 'hook-none' }, 'No webhook: alerts go only to the event stream.'));
  }
  async function putHook(webhook) {
    hookErr.set('');
    try {
      // the rules as saved (the table's unsaved edits stay in the table)
      await api('PUT', '/api/v1/alerts/rules', { rules: saved, webhook });
      toast(webhook ? 'Saved the webhook' : 'Turned the webhook off', 'ok');
      const a = await api('GET', '/api/v1/alerts');
      saved = a.rules || [];
      showHook(a.webhook, true);
    } catch (ex) { hookErr.set(ex.message); }
  }
  const hookForm = h('form', { class: 'card form wide', 'aria-labelledby': 'hook-title', novalidate: true },
    h('h2', { id: 'hook-title' }, 'Webhook'),
    h('p', { class: 'muted small' }, 'kvmhostd POSTs every alert.firing and alert.resolved as JSON to this URL (never retried; failures are counted). Until the daemon restarts.'),
    h('div', { class: 'row' },
      field('hook-url', 'Webhook URL (http or https)', hookUrl),
      field('hook-timeout', 'Timeout (s, 1-60)', hookTimeout)),
    hookErr,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', class: 'btn primary' }, 'Save webhook'),
      h('button', { type: 'button', class: 'btn', id: 'hook-off', onclick: () => putHook(null) }, 'Turn off')),
    hookState);
  hookForm.addEventListener('submit', (e) => {
    e.preventDefault();
    hookErr.set('');
    hookUrl.removeAttribute('aria-invalid');
    hookTimeout.removeAttribute('aria-invalid');
    const u = hookUrl.value.trim();
    if (!u) { putHook(null); return; }
    if (!/^https?:\/\/[^\s/?#]+/i.test(u)) {
      hookUrl.setAttribute('aria-invalid', 'true'); hookUrl.focus();
      hookErr.set('The URL must be absolute, http:// or https:// with a host.');
      return;
    }
    const w = { url: u };
    if (hookTimeout.value !== '') {
      const t = Number(hookTimeout.value);
      if (!Number.isInteger(t) || t < 1 || t > 60) {
        hookTimeout.setAttribute('aria-invalid', 'true'); hookTimeout.focus();
        hookErr.set('The timeout must be 1 to 60 seconds.');
        return;
      }
      w.timeout_seconds = t;
    }
    putHook(w);
  });
  const form = h('form', { class: 'card form wide', 'aria-labelledby': 'rules-title', novalidate: true },
    h('h2', { id: 'rules-title' }, 'Rules'),
    h('p', { class: 'muted small' }, 'A rule fires when its condition has held for "for" seconds; it is checked at every sampling round. Saved rules last until the daemon restarts (kvmhostd --alert-rules FILE makes them permanent).'),
    h('p', { class: 'muted small' }, 'A trend rule has "predict": it also holds when the line fitted through the last "window" seconds of the metric (default 3600) crosses the threshold within that many seconds (86400 = "full within a day").'),
    h('datalist', { id: 'alert-metrics' }, [...new Set([...METRICS.host, ...METRICS.vm])].map((m) => h('option', { value: m }))),
    h('div', { class: 'table-wrap flat' }, h('table', { class: 'mini rules', 'aria-label': 'Alert rules' },
      h('thead', {}, h('tr', {}, ['Name', 'Scope', 'Metric', 'Is', 'Threshold', 'For (s)', 'Predict (s)', 'Window (s)', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'sr-only' }, 'Actions'))))),
      tbody)),
    err,
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'btn', onclick: () => {
        rules = rows.map((x) => x.value()); rules.push({ scope: 'host', op: '>', for_seconds: 60 }); draw();
        tbody.querySelector('tr:last-child input')?.focus();
      } }, 'Add rule'),
      h('button', { type: 'submit', class: 'btn primary' }, 'Save rules')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    for (const r of rows) { const m = r.check(); if (m) { err.set(m); return; } }
    try {
      // the webhook is left out: it stays as it is
      await api('PUT', '/api/v1/alerts/rules', { rules: rows.map((r) => r.value()) });
      toast('Saved the alert rules', 'ok');
      load(true);
    } catch (ex) { err.set(ex.message); }
  });
  replace(main, h('h1', { class: 'page-title' }, 'Alerts'),
    h('div', { class: 'grid' },
      h('section', { class: 'card wide', 'aria-labelledby': 'active-title' }, h('h2', { id: 'active-title' }, 'Pending and firing'), active),
      form, hookForm));
  draw();
  load(true);
  const unsub = subscribe((kind, ev) => { if (kind === 'event' && ev.type.startsWith('alert.')) load(false); });
  const timer = setInterval(() => load(false), 10000);
  return () => { unsub(); clearInterval(timer); };
}
