// dom.js - a tiny element builder: text is always set as text, never parsed
// as HTML, so names and messages from the API cannot inject markup.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let toastSeq = 0;
// A short message in the polite live region (screen readers hear it).
export function toast(msg, kind = 'info') {
  const box = document.getElementById('toasts');
  const t = h('div', { class: `toast ${kind}`, id: `toast-${++toastSeq}` }, msg);
  box.append(t);
  while (box.children.length > 4) box.firstElementChild.remove(); // the newest few only
  setTimeout(() => t.remove(), kind === 'error' || kind === 'warn' ? 9000 : 4000);
}

export function fmtMiB(mib) {
  if (mib === undefined || mib === null) return '–';
  return mib >= 1024 ? `${(mib / 1024).toFixed(mib % 1024 ? 1 : 0)} GiB` : `${mib} MiB`;
}

export function fmtDuration(s) {
  if (s === undefined || s === null) return '–';
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

export function fmtTime(t) {
  if (!t) return '–';
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

// A labelled form field: <div class="field"><label for=id>…</label> input [help]</div>.
export function field(id, label, input, help) {
  input.id = id;
  if (help) input.setAttribute('aria-describedby', `${id}-help`);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input,
    help ? h('p', { class: 'muted small', id: `${id}-help` }, help) : null);
}

export function fmtBytes(b) {
  if (b === undefined || b === null || !isFinite(b)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${i ? b.toFixed(b >= 100 ? 0 : 1) : Math.round(b)} ${u[i]}`;
}

// An error line for a form (role=alert); set('') hides it.
export function errorLine(id) {
  const el = h('p', { class: 'error', role: 'alert', id, hidden: true });
  el.set = (m) => { el.textContent = m || ''; el.hidden = !m; };
  return el;
}

// A modal yes/no; resolves true when the user confirms.
export function confirmDialog(title, text, yes) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'cfm-title', 'aria-describedby': 'cfm-desc' },
      h('h2', { id: 'cfm-title' }, title), h('p', { id: 'cfm-desc' }, text),
      h('form', { method: 'dialog', class: 'dialog-buttons' },
        h('button', { class: 'btn', value: 'cancel', autofocus: true }, 'Cancel'),
        h('button', { class: 'btn danger', value: 'yes' }, yes)));
    dlg.addEventListener('close', () => { const y = dlg.returnValue === 'yes'; dlg.remove(); resolve(y); });
    document.body.append(dlg);
    dlg.showModal();
  });
}
