// store.js - what the pages show: host facts, the VMs, recent events. The
// event stream (GET /api/v1/events, Server-Sent Events, authenticated by the
// session cookie) keeps it live; pages subscribe and re-render.
import { api, vmPath } from './api.js';

export const store = { host: null, vms: new Map(), events: [], connected: false };
const listeners = new Set();
const MAX_EVENTS = 300;
const EVENT_TYPES = ['vm.created', 'vm.updated', 'vm.deleted', 'vm.state', 'vm.reset',
  'task.updated', 'host.accelerator', 'vm.limits_failed', 'alert.firing', 'alert.resolved'];
let source = null;
const refetchTimers = new Map();

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify(kind, detail) {
  for (const fn of [...listeners]) {
    try { fn(kind, detail); } catch (e) { console.warn('kvmhost: view update failed', e); }
  }
}

export async function loadHost() {
  store.host = await api('GET', '/api/v1/host');
  notify('host');
  return store.host;
}

export async function loadVms() {
  const r = await api('GET', '/api/v1/vms');
  store.vms = new Map(r.vms.map((v) => [v.name, v]));
  notify('vms');
}

// After a state change, fetch the VM again for its runtime fields (pid,
// accelerator, started_at); coalesced per VM.
function refetchVm(name) {
  clearTimeout(refetchTimers.get(name));
  refetchTimers.set(name, setTimeout(async () => {
    refetchTimers.delete(name);
    if (!store.vms.has(name)) return;
    try {
      const vm = await api('GET', vmPath(name));
      if (store.vms.has(name)) {
        store.vms.set(name, vm);
        notify('vm', name);
      }
    } catch { /* deleted meanwhile: the vm.deleted event says so */ }
  }, 250));
}

function handle(type, msg) {
  let ev;
  try { ev = JSON.parse(msg.data); } catch { return; }
  ev.type = ev.type || type;
  store.events.unshift(ev);
  if (store.events.length > MAX_EVENTS) store.events.length = MAX_EVENTS;
  const name = ev.vm;
  const data = ev.data || {};
  switch (type) {
    case 'vm.created':
    case 'vm.updated':
      if (data.name) store.vms.set(data.name, data);
      break;
    case 'vm.deleted':
      store.vms.delete(name);
      break;
    case 'vm.state': {
      const vm = store.vms.get(name);
      if (vm) {
        vm.state = data.state;
        vm.state_reason = data.reason;
        refetchVm(name);
      }
      break;
    }
    case 'host.accelerator':
      loadHost().catch(() => {});
      break;
    default:
      break;
  }
  if (type.startsWith('vm.')) notify('vm', name);
  notify('event', ev);
}

export function startEvents() {
  if (source) return;
  // since=0: replay what the daemon still buffers, for "recent events".
  source = new EventSource('/api/v1/events?since=0');
  source.onopen = () => { store.connected = true; notify('connection'); };
  source.onerror = () => {
    store.connected = false;
    notify('connection');
    // The browser retries by itself unless the answer was not a stream
    // (a 401 after the daemon restarted and forgot the session).
    if (source && source.readyState === EventSource.CLOSED) {
      source = null;
      notify('stream-closed');
    }
  };
  for (const t of EVENT_TYPES) source.addEventListener(t, (m) => handle(t, m));
}

export function stopEvents() {
  if (source) source.close();
  source = null;
  store.connected = false;
  store.events = [];
  notify('connection');
}
