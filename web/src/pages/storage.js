// storage.js - storage pools and their volumes (#/storage): add and forget
// pools; create, resize, upload, download and delete volumes; the templates.
import { h, replace, toast, field, errorLine, confirmDialog, fmtBytes, fmtMiB } from '../dom.js';
import { api, upload } from '../api.js';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const SIZE_RE = /^\d+(\.\d+)?\s*[KMGTP]?i?B?$/i;
const poolPath = (p, rest = '') => `/api/v1/pools/${encodeURIComponent(p)}${rest}`;
const volPath = (p, v, rest = '') => poolPath(p, `/volumes/${encodeURIComponent(v)}${rest}`);

const sizeArg = (s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/\s+/g, '').replace(/i?B$/i, ''));

function poolForm(reload) {
  const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const path = h('input', { type: 'text', required: true, placeholder: '/srv/images', spellcheck: 'false' });
  const err = errorLine('pool-error');
  const form = h('form', { class: 'card form', 'aria-labelledby': 'pool-new-title', novalidate: true },
    h('h2', { id: 'pool-new-title' }, 'Add a pool'),
    field('pool-name', 'Pool name', name),
    field('pool-path', 'Directory (absolute path, must exist)', path),
    err, h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'btn primary' }, 'Add pool')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    const n = name.value.trim(), p = path.value.trim();
    if (!NAME_RE.test(n)) { name.focus(); err.set('The name must be 1-64 letters, digits, - _ . and not start with . or -.'); return; }
    if (!p.startsWith('/')) { path.focus(); err.set('The directory must be an absolute path.'); return; }
    try {
      await api('POST', '/api/v1/pools', { name: n, type: 'dir', path: p });
      toast(`Added pool ${n}`, 'ok');
      name.value = ''; path.value = '';
      reload();
    } catch (ex) { err.set(ex.message); }
  });
  return form;
}

// allVols: every volume's ref (pool/name), for a linked clone's backing.
function volumeForm(pool, allVols, reload) {
  const id = (k) => `vol-${pool}-${k}`;
  const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const source = h('select', {}, h('option', { value: 'empty' }, 'empty'),
    h('option', { value: 'clone', disabled: !allVols.length }, 'linked clone of a volume'),
    h('option', { value: 'import' }, 'copy of a host image'));
  const size = h('input', { type: 'text', required: true, placeholder: '10G', size: 8, spellcheck: 'false' });
  const format = h('select', {}, h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw'));
  const backing = h('select', {}, allVols.map((r) => h('option', { value: r }, r)));
  const path = h('input', { type: 'text', placeholder: '/path/to/image.qcow2', spellcheck: 'false', size: 28 });
  const encrypt = h('input', { type: 'checkbox', id: id('encrypt') });
  const boxes = {
    size: field(id('size'), 'Size', size),
    format: field(id('format'), 'Format', format),
    backing: field(id('backing'), 'Based on', backing),
    path: field(id('import'), 'Host image (absolute path)', path),
    encrypt: h('div', { class: 'field end' }, h('label', { class: 'check', for: id('encrypt') }, encrypt, ' Encrypt (LUKS)')),
  };
  const sync = () => {
    const src = source.value;
    boxes.size.hidden = src === 'import';
    size.placeholder = src === 'clone' ? 'as the base' : '10G';
    boxes.format.hidden = src === 'clone';
    boxes.backing.hidden = src !== 'clone';
    boxes.path.hidden = src !== 'import';
    boxes.encrypt.hidden = src !== 'empty' || format.value !== 'qcow2';
  };
  source.addEventListener('change', sync);
  format.addEventListener('change', sync);
  const err = errorLine(id('error'));
  const form = h('form', { class: 'form inline', 'aria-label': `New volume in ${pool}`, novalidate: true },
    h('div', { class: 'row' },
      field(id('name'), 'Volume name', name),
      field(id('source'), 'Source', source),
      boxes.size, boxes.format, boxes.backing, boxes.path, boxes.encrypt,
      h('div', { class: 'field end' }, h('button', { type: 'submit', class: 'btn primary', 'aria-label': `Create volume in ${pool}` }, 'Create volume'))),
    err);
  sync();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    const n = name.value.trim(), sz = size.value.trim(), src = source.value;
    if (!NAME_RE.test(n)) { name.focus(); err.set('The name must be 1-64 letters, digits, - _ . and not start with . or -.'); return; }
    const body = { name: n };
    if (src !== 'import' && (sz || src === 'empty')) {
      if (!SIZE_RE.test(sz)) { size.focus(); err.set('The size is bytes or a number with K, M, G or T (e.g. 10G).'); return; }
      body.size = sizeArg(sz);
    }
    if (src === 'clone') body.backing = backing.value;
    else body.format = format.value;
    if (src === 'import') {
      if (!path.value.trim().startsWith('/')) { path.focus(); err.set('The host image must be an absolute path.'); return; }
      body.import = path.value.trim();
    }
    if (src === 'empty' && format.value === 'qcow2' && encrypt.checked) body.encrypt = true;
    try {
      await api('POST', poolPath(pool, '/volumes'), body);
      toast(`Created volume ${pool}/${n}`, 'ok');
      reload();
    } catch (ex) { err.set(ex.message); }
  });
  return form;
}

// Grow a volume: a small dialog asking for the new size.
function resizeDialog(pool, v, reload) {
  const size = h('input', { id: 'resize-size', type: 'text', required: true, spellcheck: 'false', value: fmtBytes(v.capacity).replace(/ |iB/g, '') });
  const err = errorLine('resize-error');
  const ok = h('button', { type: 'submit', class: 'btn primary' }, 'Resize');
  const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'resize-title' },
    h('h2', { id: 'resize-title' }, `Resize ${pool}/${v.name}`),
    h('form', { class: 'form', novalidate: true },
      field('resize-size', 'New size (grow only, e.g. 2G)', size, `Now ${fmtBytes(v.capacity)}. A running VM sees the new size at once.`),
      err,
      h('div', { class: 'dialog-buttons' },
        h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Cancel'), ok)));
  dlg.querySelector('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const s = size.value.trim();
    if (!SIZE_RE.test(s)) { err.set('The size is bytes or a number with K, M, G or T (e.g. 10G).'); size.focus(); return; }
    ok.disabled = true;
    try {
      await api('POST', volPath(pool, v.name, '/resize'), { size: sizeArg(s) });
      toast(`Resized ${pool}/${v.name}`, 'ok');
      dlg.close();
      reload();
    } catch (ex) {
      err.set(ex.message);
      ok.disabled = false;
    }
  });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  size.select();
}

// Upload an image file as a new volume: a dialog with the name, the
// declared format and the file; the file is streamed (PUT .../data) with a
// progress bar, and the daemon checks it is an image of that format.
function uploadDialog(pool, reload) {
  const name = h('input', { type: 'text', required: true, maxlength: 64, autocomplete: 'off', spellcheck: 'false' });
  const format = h('select', {}, h('option', { value: 'raw' }, 'raw'), h('option', { value: 'qcow2' }, 'qcow2'));
  const file = h('input', { type: 'file' });
  const bar = h('progress', { id: 'upload-progress', max: 100, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const status = h('span', { class: 'muted small', id: 'upload-status', role: 'status' });
  const err = errorLine('upload-error');
  const ok = h('button', { type: 'submit', class: 'btn primary' }, 'Upload');
  const cancel = h('button', { type: 'button', class: 'btn', onclick: () => dlg.close() }, 'Cancel');
  let busy = false;
  const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'upload-title' },
    h('h2', { id: 'upload-title' }, `Upload an image to ${pool}`),
    h('form', { class: 'form', novalidate: true },
      field('upload-file', 'Image file', file, 'A raw or qcow2 image; it is sent as it is, not converted.'),
      field('upload-name', 'Name of the new volume', name),
      field('upload-format', 'The file\'s format', format, 'The daemon refuses a file that is not an image of this format.'),
      h('div', { class: 'field' }, bar, status),
      err,
      h('div', { class: 'dialog-buttons' }, cancel, ok)));
  file.addEventListener('change', () => {
    const f = file.files[0];
    if (!f) return;
    if (!name.value) name.value = f.name.replace(/\.(img|raw|qcow2|ext4|bin)$/i, '').replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[.-]+/, '').slice(0, 64);
    if (/\.qcow2$/i.test(f.name)) format.value = 'qcow2';
    else if (/\.(img|raw|ext4|bin)$/i.test(f.name)) format.value = 'raw';
  });
  dlg.querySelector('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    err.set('');
    const f = file.files[0], n = name.value.trim();
    if (!f) { file.focus(); err.set('Pick an image file.'); return; }
    if (!NAME_RE.test(n)) { name.focus(); err.set('The name must be 1-64 letters, digits, - _ . and not start with . or -.'); return; }
    busy = true;
    ok.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `sending ${fmtBytes(f.size)}…`;
    try {
      await upload('PUT', `${volPath(pool, n, '/data')}?format=${encodeURIComponent(format.value)}`, f, (done, total) => {
        bar.value = total ? Math.round((done / total) * 100) : 0;
        status.textContent = done >= total ? 'checking the image…' : `${fmtBytes(done)} of ${fmtBytes(total)}`;
      });
      busy = false;
      toast(`Uploaded ${pool}/${n}`, 'ok');
      dlg.close();
      reload();
    } catch (ex) {
      busy = false;
      bar.hidden = true;
      status.textContent = '';
      err.set(ex.message);
      ok.disabled = false;
    }
  });
  dlg.addEventListener('cancel', (e) => { if (busy) e.preventDefault(); });
  dlg.addEventListener('close', () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  file.focus();
}

// A running VM that writes to the volume: the daemon refuses a download (409).
const writtenBy = (v) => (v.used_by || []).find((u) => u.running && !u.readonly);

function poolCard(p, vols, allVols, reload) {
  const used = p.capacity ? Math.round(((p.capacity - (p.free ?? 0)) / p.capacity) * 100) : null;
  return h('section', { class: 'card wide', dataset: { pool: p.name }, 'aria-labelledby': `pool-${p.name}-title` },
    h('h2', { id: `pool-${p.name}-title` }, `Pool ${p.name}`, p.default ? h('span', { class: 'badge' }, 'default') : null,
      p.available === false ? h('span', { class: 'badge state-paused' }, 'unavailable') : null),
    h('p', { class: 'muted small' }, h('code', {}, p.path), ` · ${fmtBytes(p.free)} free of ${fmtBytes(p.capacity)}`,
      used !== null ? h('meter', { min: 0, max: 100, value: used, class: 'meter', 'aria-label': `pool ${p.name} ${used}% used` }) : null),
    vols.length ? h('div', { class: 'table-wrap flat' }, h('table', { class: 'mini', 'aria-label': `Volumes in ${p.name}` },
      h('thead', {}, h('tr', {}, ['Volume', 'Format', 'Size', 'On disk', 'Based on', 'Used by', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'sr-only' }, 'Actions'))))),
      h('tbody', {}, vols.map((v) => h('tr', { dataset: { vol: v.name } },
        h('th', { scope: 'row' }, h('code', {}, v.name), v.readonly ? h('span', { class: 'badge', title: 'a template base' }, 'read-only') : null,
          v.encrypted ? h('span', { class: 'badge' }, 'encrypted') : null),
        h('td', {}, v.format),
        h('td', { class: 'num vol-size' }, fmtBytes(v.capacity)),
        h('td', { class: 'num' }, fmtBytes(v.allocation)),
        h('td', {}, v.backing ? h('code', {}, typeof v.backing === 'string' ? v.backing : v.backing.ref || '') : '–'),
        h('td', {}, (v.used_by || []).length ? v.used_by.map((u, i) => [i ? ', ' : '', h('a', { href: `#/vms/${encodeURIComponent(u.vm)}` }, u.vm)]) : '–'),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn small', 'aria-label': `Resize ${p.name}/${v.name}`, onclick: () => resizeDialog(p.name, v, reload) }, 'Resize'),
          writtenBy(v)
            ? h('a', { class: 'btn small', role: 'link', 'aria-disabled': 'true', tabindex: 0, 'aria-label': `Download ${p.name}/${v.name}`,
              title: `The running VM ${writtenBy(v).vm} writes to it: stop it to download a consistent image` }, 'Download')
            : h('a', { class: 'btn small', href: volPath(p.name, v.name, '/data'), download: `${v.name}.${v.format === 'qcow2' ? 'qcow2' : 'img'}`,
              'aria-label': `Download ${p.name}/${v.name}`, title: `The ${v.format} image as it is (${fmtBytes(v.allocation)} on disk)` }, 'Download'),
          h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Delete volume ${p.name}/${v.name}`,
            onclick: async () => {
              if (!await confirmDialog('Delete volume', `Delete the volume ${p.name}/${v.name} and its data?`, 'Delete')) return;
              try {
                await api('DELETE', volPath(p.name, v.name));
                toast(`Deleted ${p.name}/${v.name}`, 'ok');
              } catch (e) { toast(`Delete ${p.name}/${v.name}: ${e.message}`, 'error'); }
              reload();
            } }, 'Delete'))))))))
      : h('p', { class: 'muted' }, 'No volumes.'),
    volumeForm(p.name, allVols, reload),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'btn small', 'aria-label': `Upload an image to ${p.name}`, onclick: () => uploadDialog(p.name, reload) }, 'Upload an image…'),
      p.default ? null : h('button', { type: 'button', class: 'btn small danger', 'aria-label': `Forget pool ${p.name}`,
      onclick: async () => {
        if (!await confirmDialog('Forget pool', `Forget the pool ${p.name}? Its directory stays on the host.`, 'Forget')) return;
        try {
          await api('DELETE', poolPath(p.name));
          toast(`Forgot pool ${p.name}`, 'ok');
        } catch (e) { toast(`Forget ${p.name}: ${e.message}`, 'error'); }
        reload();
      } }, 'Forget pool')));
}

function templatesCard(tpls) {
  return h('section', { class: 'card wide', 'aria-labelledby': 'tpl-title' },
    h('h2', { id: 'tpl-title' }, 'Templates'),
    tpls.length ? h('table', { class: 'mini', id: 'templates', 'aria-label': 'Templates' },
      h('thead', {}, h('tr', {}, ['Template', 'CPU / memory', 'Volumes', ''].map((c) => h('th', { scope: 'col' }, c || h('span', { class: 'sr-only' }, 'Actions'))))),
      h('tbody', {}, tpls.map((t) => h('tr', { dataset: { tpl: t.name } },
        h('th', { scope: 'row' }, h('a', { href: `#/vms/${encodeURIComponent(t.name)}` }, t.name)),
        h('td', {}, `${t.vcpus} vCPU, ${fmtMiB(t.memory_mib)}`),
        h('td', {}, (t.disks || []).map((d) => d.volume || d.path).join(', ') || '–'),
        h('td', {}, h('a', { class: 'btn small', href: `#/create?template=${encodeURIComponent(t.name)}` }, 'New VM from it'))))))
      : h('p', { class: 'muted' }, 'No templates. A stopped VM whose disks are all volumes becomes one from its Settings tab.'));
}

export function storagePage(main) {
  const box = h('div', { class: 'grid', id: 'pools' }, h('p', { class: 'muted' }, 'Loading…'));
  const tplBox = h('div', {});
  async function load() {
    try {
      const pools = (await api('GET', '/api/v1/pools')).pools || [];
      const vols = await Promise.all(pools.map((p) => api('GET', poolPath(p.name, '/volumes')).then((r) => r.volumes || []).catch(() => [])));
      const allVols = pools.flatMap((p, i) => vols[i].map((v) => `${p.name}/${v.name}`));
      replace(box, pools.map((p, i) => poolCard(p, vols[i], allVols, load)), poolForm(load));
    } catch (e) {
      replace(box, h('p', { class: 'muted' }, `Cannot list pools: ${e.message}`));
    }
    try {
      replace(tplBox, templatesCard((await api('GET', '/api/v1/templates')).templates || []));
    } catch { replace(tplBox); }
  }
  replace(main, h('h1', { class: 'page-title' }, 'Storage'), box, h('div', { class: 'grid top-gap' }, tplBox));
  load();
}
