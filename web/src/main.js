// main.js - the kvmhost web console: session check, routing (#/...),
// the live event stream. Everything goes through the public REST API.
import { sessionInfo, logout, setUnauthorizedHandler } from './api.js';
import { h, replace, toast } from './dom.js';
import { store, subscribe, startEvents, stopEvents, loadVms, loadHost } from './store.js';
import { loginPage } from './pages/login.js';
import { dashboardPage } from './pages/dashboard.js';
import { vmListPage } from './pages/vmlist.js';
import { vmDetailPage } from './pages/vmdetail.js';
import { createPage } from './pages/create.js';
import { topologyPage } from './pages/topology.js';
import { networksPage } from './pages/networks.js';
import { securityGroupsPage } from './pages/secgroups.js';
import { storagePage } from './pages/storage.js';
import { alertsPage } from './pages/alerts.js';
import { tasksPage } from './pages/tasks.js';
import { hostsPage } from './pages/hosts.js';
import { auditPage } from './pages/audit.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
const live = document.getElementById('live-status');
let authed = false;
let current = null; // { re, page, cleanup, update }

const ROUTES = [
  { re: /^#?\/?$/, nav: 'dashboard', page: dashboardPage, title: 'Dashboard' },
  { re: /^#\/vms\/?$/, nav: 'vms', page: vmListPage, title: 'Virtual machines' },
  { re: /^#\/vms\/([^/]+)(?:\/([a-z]+))?$/, nav: 'vms', page: vmDetailPage, title: null },
  { re: /^#\/create(?:\?template=([^&]*))?$/, nav: 'create', page: createPage, title: 'Create VM' },
  { re: /^#\/topology$/, nav: 'topology', page: topologyPage, title: 'Topology' },
  { re: /^#\/networks\/?$/, nav: 'networks', page: networksPage, title: 'Networks' },
  { re: /^#\/networks\/([^/]+)$/, nav: 'networks', page: networksPage, title: null },
  { re: /^#\/security-groups\/?$/, nav: 'networks', page: securityGroupsPage, title: 'Security groups' },
  { re: /^#\/storage\/?$/, nav: 'storage', page: storagePage, title: 'Storage' },
  { re: /^#\/alerts\/?$/, nav: 'alerts', page: alertsPage, title: 'Alerts' },
  { re: /^#\/tasks\/?$/, nav: 'dashboard', page: tasksPage, title: 'Tasks' },
  { re: /^#\/hosts\/?$/, nav: 'hosts', page: hostsPage, title: 'Hosts' },
  { re: /^#\/audit\/?$/, nav: 'audit', page: auditPage, title: 'Audit log' },
];

function teardown() {
  if (!current) return;
  const c = current.cleanup;
  if (typeof c === 'function') c();
  else if (c && c.cleanup) c.cleanup();
  current = null;
}

function route() {
  if (!authed) {
    teardown();
    top.hidden = true;
    document.title = 'Log in · kvmhost';
    loginPage(main, [], { onLogin });
    return;
  }
  top.hidden = false;
  const hash = location.hash || '#/';
  const r = ROUTES.find((x) => x.re.test(hash));
  if (!r) {
    teardown();
    replace(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the dashboard')));
    return;
  }
  const params = hash.match(r.re).slice(1);
  for (const a of top.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${r.title || decodeURIComponent(params[0] || '')} · kvmhost`;
  // Same page with other parameters (a VM's tabs): let it update itself.
  if (current && current.route === r && current.cleanup && current.cleanup.update &&
      current.cleanup.update(params)) return;
  teardown();
  current = { route: r, cleanup: r.page(main, params, { onLogin }) };
  main.focus({ preventScroll: true });
}

async function onLogin() {
  authed = true;
  startEvents();
  await Promise.all([loadVms(), loadHost()]).catch((e) => toast(e.message, 'error'));
  if (!location.hash || location.hash === '#/login') location.hash = '#/';
  route();
}

function loggedOut() {
  if (!authed) return;
  authed = false;
  stopEvents();
  store.vms.clear();
  store.host = null;
  route();
}

setUnauthorizedHandler(() => {
  toast('The session ended: log in again.', 'error');
  loggedOut();
});

document.getElementById('logout').addEventListener('click', async () => {
  try { await logout(); } catch { /* gone anyway */ }
  loggedOut();
});

subscribe((kind) => {
  if (kind !== 'connection') return;
  live.classList.toggle('on', store.connected);
  live.title = store.connected ? 'Live: event stream connected' : 'Event stream disconnected';
  live.setAttribute('aria-label', live.title);
});

// The event stream gave up: logged out (e.g. the daemon restarted), or
// the daemon is away for now; check, then log in again or retry.
subscribe(async (kind) => {
  if (kind !== 'stream-closed' || !authed) return;
  try {
    const s = await sessionInfo();
    if (!s.authenticated) {
      toast('The session ended: log in again.', 'error');
      loggedOut();
      return;
    }
  } catch { /* the daemon is away: retry below */ }
  setTimeout(() => { if (authed) startEvents(); }, 3000);
});

window.addEventListener('hashchange', route);

(async () => {
  try {
    const s = await sessionInfo();
    if (s.authenticated) {
      await onLogin();
      return;
    }
  } catch (e) {
    toast(e.message, 'error');
  }
  route();
})();
