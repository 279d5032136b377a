// actions.js - VM actions (start, stop, ...) and delete with confirmation.
import { api, vmPath } from './api.js';
import { h, toast } from './dom.js';

export const ACTIONS = [
  { id: 'start', label: 'Start', when: ['stopped'] },
  { id: 'stop', label: 'Stop', when: ['running', 'paused'], title: 'ACPI power-down, killed after 30 s' },
  { id: 'reboot', label: 'Reboot', when: ['running'] },
  { id: 'pause', label: 'Pause', when: ['running'] },
  { id: 'resume', label: 'Resume', when: ['paused'] },
  { id: 'kill', label: 'Kill', when: ['running', 'paused', 'starting', 'stopping'], danger: true,
    title: 'Kill QEMU at once' },
];

export async function runAction(name, id) {
  const a = ACTIONS.find((x) => x.id === id);
  toast(`${a.label}: ${name}…`);
  try {
    const body = id === 'stop' ? { timeout: 30, wait: 60 } : { wait: 60 };
    const task = await api('POST', vmPath(name, `/${id}`), body);
    if (task && task.state === 'running') toast(`${a.label} ${name}: still running (task ${task.id})`);
    // a stop that had to kill the guest says so (task message "forced: ...")
    else if (task && /^forced/.test(task.message || '')) toast(`${a.label} ${name}: ${task.message}`, 'warn');
    else toast(`${a.label} ${name}: done`, 'ok');
  } catch (e) {
    toast(`${a.label} ${name}: ${e.message}`, 'error');
  }
}

export function actionButtons(vm, { compact = false, onDeleted } = {}) {
  const row = h('div', { class: 'actions', role: 'group', 'aria-label': `Actions for ${vm.name}` });
  for (const a of ACTIONS) {
    const enabled = a.when.includes(vm.state);
    row.append(h('button', {
      type: 'button',
      class: `btn ${compact ? 'small' : ''} ${a.danger ? 'danger' : ''}`,
      disabled: !enabled,
      title: a.title,
      'aria-label': `${a.label} ${vm.name}`,
      dataset: { action: a.id },
      onclick: (e) => { e.currentTarget.disabled = true; runAction(vm.name, a.id); },
    }, a.label));
  }
  row.append(h('button', {
    type: 'button', class: `btn ${compact ? 'small' : ''} danger`,
    disabled: vm.state !== 'stopped',
    title: vm.state === 'stopped' ? 'Delete this VM' : 'Stop the VM to delete it',
    'aria-label': `Delete ${vm.name}`,
    dataset: { action: 'delete' },
    onclick: () => confirmDelete(vm.name, onDeleted, [...new Set((vm.disks || []).filter((d) => d.volume).map((d) => d.volume))]),
  }, 'Delete'));
  return row;
}

// volumes: the pool volumes its disks refer to (offered for deletion too;
// the daemon refuses, deleting nothing, when another VM or a clone needs one)
export function confirmDelete(name, onDeleted, volumes = []) {
  const msg = h('p', { id: 'del-desc' }, 'Delete the VM ', h('strong', {}, name),
    '? Its definition is removed; disk images you gave it by path are left as they are.');
  const withVols = h('input', { type: 'checkbox', id: 'del-volumes' });
  const volBox = volumes.length
    ? h('p', {}, h('label', { class: 'check', for: 'del-volumes' }, withVols,
      ` also delete its volumes: ${volumes.join(', ')}`))
    : null;
  const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': 'del-title', 'aria-describedby': 'del-desc' },
    h('h2', { id: 'del-title' }, 'Delete VM'), msg, ...(volBox ? [volBox] : []),
    h('form', { method: 'dialog', class: 'dialog-buttons' },
      h('button', { class: 'btn', value: 'cancel', autofocus: true }, 'Cancel'),
      h('button', { class: 'btn danger', value: 'delete' }, 'Delete')));
  dlg.addEventListener('close', async () => {
    const ok = dlg.returnValue === 'delete';
    dlg.remove();
    if (!ok) return;
    try {
      await api('DELETE', vmPath(name) + (withVols.checked ? '?volumes=true' : ''));
      toast(`Deleted ${name}`, 'ok');
      if (onDeleted) onDeleted();
    } catch (e) {
      toast(`Delete ${name}: ${e.message}`, 'error');
    }
  });
  document.body.append(dlg);
  dlg.showModal();
}

export function stateBadge(vm) {
  return h('span', { class: `badge state-${vm.state}`, title: vm.state_reason || '' }, vm.state);
}
