// create.js - the create wizard: basics, boot, review. Talks only to
// POST /api/v1/vms (and start, when asked).
import { h, replace, toast, fmtMiB, field } from '../dom.js';
import { api, vmPath } from '../api.js';

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/;
const isIPv4 = (s) => /^\d{1,3}(\.\d{1,3}){3}$/.test(s) && s.split('.').every((o) => Number(o) <= 255);

export function createPage(main, params = []) {
  const wantTemplate = params[0] ? decodeURIComponent(params[0]) : '';
  const f = {
    name: h('input', { type: 'text', required: true, maxlength: 64, pattern: NAME_RE.source, autocomplete: 'off', spellcheck: 'false' }),
    vcpus: h('input', { type: 'number', min: 1, max: 255, value: 1, required: true }),
    maxVcpus: h('input', { type: 'number', min: 1, max: 255, placeholder: 'same as vCPUs' }),
    memory: h('input', { type: 'number', min: 16, max: 16777216, value: 512, required: true }),
    hugepages: h('input', { type: 'checkbox' }),
    kernel: h('input', { type: 'text', placeholder: '/path/to/vmlinuz', spellcheck: 'false' }),
    initrd: h('input', { type: 'text', placeholder: '/path/to/initrd.img', spellcheck: 'false' }),
    cmdline: h('input', { type: 'text', value: 'console=ttyS0', spellcheck: 'false' }),
    disk: h('input', { type: 'text', placeholder: '/path/to/disk.qcow2', spellcheck: 'false' }),
    format: h('select', {}, h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw')),
    graphics: h('select', {}, h('option', { value: 'none' }, 'none (serial console only)'), h('option', { value: 'vnc' }, 'VNC display')),
    description: h('input', { type: 'text', maxlength: 1024 }),
    start: h('input', { type: 'checkbox', checked: true }),
    volume: h('select', {}, h('option', { value: '' }, 'none')),
    network: h('select', {}, h('option', { value: '' }, 'none (no network card)')),
    nicIp: h('input', { type: 'text', placeholder: 'dynamic (from DHCP)', spellcheck: 'false' }),
    template: h('select', {}, h('option', { value: '' }, 'none: define the VM in the next step')),
    cloneNet: h('select', {}, h('option', { value: '__tpl' }, 'the template\'s (same networks and security groups, new MACs)'),
      h('option', { value: '' }, 'none (no network card)')),
  };
  const cloneLinked = h('input', { type: 'radio', name: 'clone', id: 'clone-linked', value: 'linked', checked: true });
  const cloneFull = h('input', { type: 'radio', name: 'clone', id: 'clone-full', value: 'full' });
  const cloneBox = h('div', { class: 'radios', role: 'radiogroup', 'aria-label': 'Clone' },
    h('label', {}, cloneLinked, ' Linked clone (qcow2 overlay, instant)'), h('label', {}, cloneFull, ' Full copy'));
  // the template picker shows only when the daemon has templates
  const cloneNetBox = field('clone-network', 'Network cards', f.cloneNet,
    'A clone gets the template\'s whole spec (boot, limits, NICs with new MACs); vCPUs, memory and description above replace the template\'s. Pick a network to give it one NIC there instead.');
  const templateBox = h('div', { class: 'sub', hidden: true }, field('vm-template', 'From template', f.template), cloneBox, cloneNetBox);
  const fromTemplate = () => !!f.template.value;
  const tpls = new Map();
  f.template.addEventListener('change', () => {
    cloneBox.hidden = !fromTemplate();
    cloneNetBox.hidden = !fromTemplate();
    specBox.hidden = fromTemplate();
    const t = tpls.get(f.template.value); // start from the template's size
    if (t) { f.vcpus.value = t.vcpus; f.memory.value = t.memory_mib; }
  });
  // Volumes from the storage pools and the networks, for the pickers.
  (async () => {
    try {
      const { templates } = await api('GET', '/api/v1/templates');
      for (const t of templates || []) tpls.set(t.name, t);
      for (const t of templates || []) f.template.append(h('option', { value: t.name }, `${t.name} (${t.vcpus} vCPU, ${fmtMiB(t.memory_mib)})`));
      templateBox.hidden = !(templates || []).length;
      if (wantTemplate && tpls.has(wantTemplate)) {
        f.template.value = wantTemplate;
        f.template.dispatchEvent(new Event('change'));
      }
      cloneBox.hidden = !fromTemplate();
    } catch { /* no templates */ }
    try {
      const { pools } = await api('GET', '/api/v1/pools');
      for (const p of pools || []) {
        const { volumes } = await api('GET', `/api/v1/pools/${encodeURIComponent(p.name)}/volumes`);
        for (const v of volumes || []) f.volume.append(h('option', { value: `${p.name}/${v.name}` }, `${p.name}/${v.name}`));
      }
    } catch { /* no storage pools on this daemon */ }
    try {
      const { networks } = await api('GET', '/api/v1/networks');
      for (const n of networks || []) f.network.append(h('option', { value: n.name }, `${n.name}${n.type ? ` (${n.type})` : ''}`));
      for (const n of networks || []) f.cloneNet.append(h('option', { value: n.name }, `one NIC on ${n.name}`));
    } catch { /* no networks on this daemon */ }
  })();
  // spec-only fields (a clone from a template takes the template's)
  const specBox = h('div', { class: 'sub' },
    field('vm-max-vcpus', 'Max vCPUs (optional, for hot-plug)', f.maxVcpus, 'q35: vCPUs can be added while it runs, up to this many.'),
    h('div', { class: 'field' }, h('label', { class: 'check', for: 'vm-hugepages' }, f.hugepages, ' Guest RAM from 2 MiB huge pages'),
      h('p', { class: 'muted small', id: 'vm-hugepages-help' }, 'The host must have enough free huge pages at start (409 otherwise); memory must be even.')));
  f.hugepages.id = 'vm-hugepages';
  f.hugepages.setAttribute('aria-describedby', 'vm-hugepages-help');
  const ipBox = field('nic-ip', 'Reserved IP on that network (optional)', f.nicIp, 'A static DHCP reservation (nat and isolated networks).');
  const syncNet = () => { ipBox.hidden = !f.network.value; };
  f.network.addEventListener('change', syncNet);
  syncNet();
  const bootKernel = h('input', { type: 'radio', name: 'bootmode', id: 'boot-kernel', value: 'kernel', checked: true });
  const bootDisk = h('input', { type: 'radio', name: 'bootmode', id: 'boot-disk', value: 'disk' });
  const kernelBox = h('div', { class: 'sub' },
    field('kernel', 'Kernel (absolute path on the host)', f.kernel),
    field('initrd', 'Initrd (optional)', f.initrd),
    field('cmdline', 'Kernel command line', f.cmdline));
  const err = h('p', { class: 'error', role: 'alert', id: 'wizard-error', hidden: true });
  const review = h('dl', { class: 'kv', id: 'review' });

  const steps = [
    h('fieldset', { class: 'step' }, h('legend', {}, '1. Basics'),
      field('vm-name', 'Name', f.name, 'Letters, digits, - _ . ; up to 64; not starting with . or -'),
      field('vm-vcpus', 'vCPUs', f.vcpus),
      field('vm-memory', 'Memory (MiB)', f.memory),
      specBox,
      field('vm-desc', 'Description (optional)', f.description),
      templateBox),
    h('fieldset', { class: 'step' }, h('legend', {}, '2. Boot and disk'),
      h('div', { class: 'radios', role: 'radiogroup', 'aria-label': 'Boot from' },
        h('label', {}, bootKernel, ' Linux kernel'), h('label', {}, bootDisk, ' Disk image')),
      kernelBox,
      field('volume', 'Disk from a storage pool', f.volume),
      field('disk-path', 'Or a disk image (absolute path; optional with a kernel)', f.disk),
      field('disk-format', 'Disk format', f.format),
      field('network', 'Network', f.network),
      ipBox,
      field('graphics', 'Graphics', f.graphics)),
    h('fieldset', { class: 'step' }, h('legend', {}, '3. Review'),
      review,
      h('label', { class: 'check' }, f.start, ' Start the VM after creating it')),
  ];
  let step = 0;
  const back = h('button', { type: 'button', class: 'btn' }, 'Back');
  const next = h('button', { type: 'submit', class: 'btn primary', id: 'wizard-next' }, 'Next');
  const progress = h('ol', { class: 'wizard-steps', 'aria-label': 'Steps' },
    ['Basics', 'Boot', 'Review'].map((s, i) => h('li', { dataset: { i } }, s)));
  const form = h('form', { class: 'card form wizard', 'aria-labelledby': 'create-title', novalidate: true },
    h('h1', { id: 'create-title', class: 'page-title' }, 'Create a VM'), progress, ...steps, err,
    h('div', { class: 'buttons' }, back, next));

  const syncBoot = () => { kernelBox.hidden = !bootKernel.checked; };
  bootKernel.addEventListener('change', syncBoot);
  bootDisk.addEventListener('change', syncBoot);

  function spec() {
    if (fromTemplate()) {
      const t = { name: f.name.value.trim(), from_template: f.template.value, clone: cloneFull.checked ? 'full' : 'linked',
        vcpus: Number(f.vcpus.value), memory_mib: Number(f.memory.value) };
      if (f.description.value) t.description = f.description.value;
      if (f.cloneNet.value !== '__tpl') t.nics = f.cloneNet.value ? [{ network: f.cloneNet.value }] : [];
      return t;
    }
    const s = { name: f.name.value.trim(), vcpus: Number(f.vcpus.value), memory_mib: Number(f.memory.value), graphics: f.graphics.value };
    if (f.maxVcpus.value !== '') s.max_vcpus = Number(f.maxVcpus.value);
    if (f.hugepages.checked) s.hugepages = true;
    if (f.description.value) s.description = f.description.value;
    if (bootKernel.checked) {
      s.boot = { kernel: f.kernel.value.trim() };
      if (f.initrd.value.trim()) s.boot.initrd = f.initrd.value.trim();
      if (f.cmdline.value.trim()) s.boot.cmdline = f.cmdline.value.trim();
    }
    const disks = [];
    if (f.volume.value) disks.push({ volume: f.volume.value });
    if (f.disk.value.trim()) disks.push({ path: f.disk.value.trim(), format: f.format.value });
    if (disks.length) s.disks = disks;
    if (f.network.value) {
      s.nics = [{ network: f.network.value }];
      if (f.nicIp.value.trim()) s.nics[0].ip = f.nicIp.value.trim();
    }
    return s;
  }

  function check() {
    const bad = (input, msg) => { input.setAttribute('aria-invalid', 'true'); input.focus(); return msg; };
    for (const i of Object.values(f)) i.removeAttribute('aria-invalid');
    if (step === 0) {
      if (!NAME_RE.test(f.name.value.trim())) return bad(f.name, 'The name must be 1-64 letters, digits, - _ . and not start with . or -.');
      const v = Number(f.vcpus.value);
      if (!Number.isInteger(v) || v < 1 || v > 255) return bad(f.vcpus, 'vCPUs must be 1 to 255.');
      const m = Number(f.memory.value);
      if (!Number.isInteger(m) || m < 16) return bad(f.memory, 'Memory must be at least 16 MiB.');
      if (!fromTemplate() && f.maxVcpus.value !== '') {
        const mv = Number(f.maxVcpus.value);
        if (!Number.isInteger(mv) || mv < v || mv > 255) return bad(f.maxVcpus, `Max vCPUs must be from the vCPUs (${v}) to 255.`);
      }
      if (!fromTemplate() && f.hugepages.checked && m % 2) return bad(f.memory, 'Huge pages need an even memory size (2 MiB pages).');
    } else if (step === 1) {
      if (bootKernel.checked && !f.kernel.value.trim().startsWith('/')) return bad(f.kernel, 'The kernel must be an absolute path.');
      if (f.initrd.value.trim() && !f.initrd.value.trim().startsWith('/')) return bad(f.initrd, 'The initrd must be an absolute path.');
      if (bootDisk.checked && !f.disk.value.trim() && !f.volume.value) return bad(f.volume, 'Booting from a disk needs a volume or a disk image.');
      if (f.disk.value.trim() && !f.disk.value.trim().startsWith('/')) return bad(f.disk, 'The disk must be an absolute path.');
      if (f.network.value && f.nicIp.value.trim() && !isIPv4(f.nicIp.value.trim())) return bad(f.nicIp, 'The reserved IP must be an IPv4 address such as 10.10.0.5.');
    }
    return null;
  }

  function show() {
    steps.forEach((s, i) => { s.hidden = i !== step; });
    for (const li of progress.children) li.setAttribute('aria-current', Number(li.dataset.i) === step ? 'step' : 'false');
    back.disabled = step === 0;
    next.textContent = step === steps.length - 1 ? 'Create' : 'Next';
    if (step === 2 && fromTemplate()) {
      const s = spec();
      replace(review, h('dt', {}, 'Name'), h('dd', {}, s.name),
        h('dt', {}, 'CPU / memory'), h('dd', {}, `${s.vcpus} vCPU, ${fmtMiB(s.memory_mib)}`),
        h('dt', {}, 'From template'), h('dd', {}, `${s.from_template} (${s.clone === 'full' ? 'full copy' : 'linked clone'})`));
    } else if (step === 2) {
      const s = spec();
      replace(review,
        h('dt', {}, 'Name'), h('dd', {}, s.name),
        h('dt', {}, 'CPU / memory'), h('dd', {}, `${s.vcpus} vCPU${s.max_vcpus > s.vcpus ? ` (hot-plug up to ${s.max_vcpus})` : ''}, ${fmtMiB(s.memory_mib)}${s.hugepages ? ', huge pages' : ''}`),
        h('dt', {}, 'Boot'), h('dd', {}, s.boot ? h('code', {}, `${s.boot.kernel}${s.boot.initrd ? ` + ${s.boot.initrd}` : ''}`) : 'first disk'),
        s.boot && s.boot.cmdline ? [h('dt', {}, 'Command line'), h('dd', {}, h('code', {}, s.boot.cmdline))] : null,
        h('dt', {}, 'Disks'), h('dd', {}, s.disks ? s.disks.map((d) => h('div', {}, h('code', {}, d.volume ? `volume ${d.volume}` : `${d.path} (${d.format})`))) : 'none'),
        h('dt', {}, 'Network'), h('dd', {}, s.nics ? `${s.nics[0].network}${s.nics[0].ip ? `, reserved IP ${s.nics[0].ip}` : ''}` : 'none'),
        h('dt', {}, 'Graphics'), h('dd', {}, s.graphics));
    }
    const first = steps[step].querySelector('input:not([type=radio]), select');
    if (first && step < 2) first.focus();
  }

  back.addEventListener('click', () => { if (step > 0) { step = step === 2 && fromTemplate() ? 0 : step - 1; err.hidden = true; show(); } });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    err.hidden = true;
    const problem = check();
    if (problem) { err.textContent = problem; err.hidden = false; return; }
    if (step < steps.length - 1) { step = step === 0 && fromTemplate() ? 2 : step + 1; show(); return; }
    next.disabled = true;
    const s = spec();
    try {
      let r = await api('POST', '/api/v1/vms', s);
      // a full clone is a task (qemu-img convert): wait for it before starting
      while (r && r.state === 'running' && r.id && !r.name) {
        next.textContent = `Copying… ${r.progress != null ? `${Math.round(r.progress)} %` : ''}`;
        await new Promise((res) => setTimeout(res, 1000));
        r = await api('GET', `/api/v1/tasks/${encodeURIComponent(r.id)}`);
      }
      if (r && r.state === 'failed') throw new Error((r.error && r.error.message) || 'the clone failed');
      toast(`Created ${s.name}`, 'ok');
      location.hash = `#/vms/${encodeURIComponent(s.name)}/${f.start.checked ? 'console' : 'summary'}`;
      if (f.start.checked) {
        api('POST', vmPath(s.name, '/start'), { wait: 60 })
          .then(() => toast(`Started ${s.name}`, 'ok'))
          .catch((ex) => toast(`Start ${s.name}: ${ex.message}`, 'error'));
      }
    } catch (ex) {
      err.textContent = ex.message;
      err.hidden = false;
      next.disabled = false;
    }
  });
  replace(main, form);
  syncBoot();
  show();
}
