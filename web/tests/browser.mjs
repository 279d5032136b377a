// browser.mjs - the web console in a real browser (Debian's Chromium via
// playwright-core) against a real kvmhostd and the real test guest.
//
// Starts kvmhostd ($KH_DAEMON, else build/src/daemon/kvmhostd) in a temp
// dir on a free loopback port with --web-dir web/dist, then: log in with
// the token, create a VM in the wizard, start it, see the guest's marker on
// the serial console, type a command and see its output, stop it and see
// the state change without a reload, delete it; no console errors. Saves
// screenshots under $KH_TEST_LOGS (default test-logs/) as web-*.png.
// Prints TAP-like "ok"/"not ok" lines and a "N passed, M failed" summary.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, rmSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const daemonBin = process.env.KH_DAEMON || join(process.env.KH_BUILD_DIR || join(root, 'build'), 'src/daemon/kvmhostd');
const chromiumBin = process.env.KH_CHROMIUM || '/usr/bin/chromium';
const logs = process.env.KH_TEST_LOGS || join(root, 'test-logs');
const webDir = join(root, 'web/dist');
const guest = join(root, 'tests/guest/out');
const VM = 'webvm1';

let passed = 0, failed = 0;
function ok(cond, what) {
  if (cond) { passed++; console.log(`ok - ${what}`); } else { failed++; console.log(`not ok - ${what}`); }
  return cond;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await sleep(200);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
}

async function main() {
  for (const f of [daemonBin, chromiumBin, join(webDir, 'index.html'), join(guest, 'vmlinuz'), join(guest, 'initrd.img')]) {
    if (!existsSync(f)) throw new Error(`missing ${f}`);
  }
  mkdirSync(logs, { recursive: true });
  const base = mkdtempSync(join(tmpdir(), 'kh-web-'));
  chmodSync(base, 0o755); // QEMU runs as its own user and needs to reach its run dir
  const state = join(base, 'state');
  mkdirSync(state);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const daemonLog = join(logs, 'web-daemon.log');
  const daemon = spawn(daemonBin, ['--state-dir', state, '--socket', join(base, 'api.sock'),
    '--listen', `127.0.0.1:${port}`, '--web-dir', webDir, '--log-file', daemonLog,
    '--log-level', 'debug', '--sample-interval-ms', '1000'], { stdio: ['ignore', 'inherit', 'inherit'] });
  let daemonExit = null;
  daemon.on('exit', (code, sig) => { daemonExit = sig || code; });
  let ctx = null;
  let token = null;
  try {
    await waitFor(async () => {
      if (daemonExit !== null) throw new Error(`kvmhostd exited (${daemonExit}); see ${daemonLog}`);
      const r = await fetch(`${url}/api/v1/session`);
      return r.ok;
    }, 30000, 'kvmhostd to answer');
    token = readFileSync(join(state, 'api-token'), 'utf8').trim();

    const profile = mkdtempSync(join(tmpdir(), 'kh-web-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumBin,
      headless: true,
      viewport: { width: 1366, height: 850 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(20000);
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
    page.on('requestfailed', (r) => {
      // a console WebSocket or the event stream closed by the test itself is not a failure
      if (!/\/events|\/console$/.test(r.url())) errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
    });

    // 1. login: a wrong token is refused, the right one opens the dashboard
    await page.goto(url + '/');
    await page.getByLabel('API token').fill('wrong-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#login-error').filter({ hasText: 'Wrong token' }).waitFor();
    ok(true, 'a wrong token is refused with a message');
    errors.length = 0; // the 401 of the wrong token is expected
    await page.getByLabel('API token').fill(token);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#accel').waitFor();
    ok(await page.getByRole('heading', { name: 'Dashboard' }).isVisible(), 'logged in: the dashboard shows');
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
    ok(!stored.includes(token), 'the token is in neither localStorage, sessionStorage nor a script-visible cookie');
    const cookies = await ctx.cookies(url);
    const sess = cookies.find((c) => c.name === 'kh_session');
    ok(sess && sess.httpOnly && sess.sameSite === 'Strict', 'the session cookie is HttpOnly and SameSite=Strict');
    await waitFor(async () => /kvm|tcg/.test(await page.locator('#accel').textContent()), 20000, 'the accelerator probe');
    ok(true, `dashboard shows the accelerator: ${await page.locator('#accel').textContent()}`);

    // a storage pool with a volume, for the wizard's disk picker
    const poolDir = join(base, 'pool');
    mkdirSync(poolDir, { mode: 0o755 });
    const bearer = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
    let r = await fetch(`${url}/api/v1/pools`, { method: 'POST', headers: bearer, body: JSON.stringify({ name: 'webpool', path: poolDir }) });
    ok(r.status === 201, `a storage pool for the test (${r.status})`);
    r = await fetch(`${url}/api/v1/pools/webpool/volumes`, { method: 'POST', headers: bearer, body: JSON.stringify({ name: 'data1', format: 'qcow2', size: 16777216 }) });
    ok(r.status === 201, `a volume in it (${r.status})`);

    // 2. the create wizard
    await page.getByRole('link', { name: 'Create VM' }).first().click();
    await page.getByLabel('Name').fill(VM);
    await page.getByLabel('vCPUs').fill('1');
    await page.getByLabel('Memory (MiB)').fill('256');
    await page.getByRole('button', { name: 'Next' }).click();
    await page.getByLabel('Kernel (absolute path on the host)').fill(join(guest, 'vmlinuz'));
    await page.getByLabel('Initrd (optional)').fill(join(guest, 'initrd.img'));
    await page.getByLabel('Kernel command line').fill('console=ttyS0 quiet panic=-1');
    await page.getByLabel('Graphics').selectOption('vnc');
    await page.getByLabel('Disk from a storage pool').selectOption('webpool/data1');
    await page.getByRole('button', { name: 'Next' }).click();
    ok(await page.locator('#review').textContent().then((t) => t.includes(VM) && t.includes('vmlinuz') && t.includes('volume webpool/data1')), 'the review step shows the spec, with the volume');
    const loadsBefore = await page.evaluate(() => performance.getEntriesByType('navigation').length);
    await page.evaluate(() => { window.__noReload = 1; });
    await page.getByRole('button', { name: 'Create' }).click();

    // 3. it starts; the serial console shows the guest's marker
    await page.waitForURL(new RegExp(`#/vms/${VM}/console$`));
    const rows = page.locator('#terminal .xterm-rows');
    const termText = () => rows.evaluate((el) => [...el.children].map((r) => r.textContent.replace(/\u00a0/g, ' ').trimEnd()));
    await waitFor(async () => (await termText()).some((l) => l.includes('KVMHOST-GUEST-READY')), 120000, 'KVMHOST-GUEST-READY on the console');
    ok(true, 'the serial console shows KVMHOST-GUEST-READY');
    ok(await page.locator('#console-status').textContent() === 'connected', 'the console WebSocket is connected');
    await page.locator('#terminal').click();
    await sleep(300);
    await page.keyboard.type('echo hi-web\n', { delay: 20 });
    await waitFor(async () => (await termText()).some((l) => l.trim() === 'hi-web'), 30000, 'hi-web echoed back');
    ok(true, 'typing "echo hi-web" in the console prints hi-web');
    await page.screenshot({ path: join(logs, 'web-vm-console.png') });

    // the graphical console: noVNC through the daemon's VNC relay
    await page.getByRole('tab', { name: 'Display' }).click();
    await page.locator('#display-status[data-status="connected"]').waitFor({ timeout: 30000 });
    const canvas = await page.locator('#screen canvas').boundingBox();
    ok(canvas && canvas.width > 100 && canvas.height > 100, `the display tab shows the VM's screen over VNC (${canvas ? `${Math.round(canvas.width)}x${Math.round(canvas.height)}` : 'none'})`);
    await page.screenshot({ path: join(logs, 'web-vm-display.png') });

    await page.getByRole('tab', { name: 'Summary' }).click();
    await page.locator('.tabpanel .state-running').waitFor();
    ok(true, 'the summary tab shows the VM running');
    ok((await page.locator('.tabpanel .disks').first().textContent()).includes('webpool/data1'), 'the summary lists the volume disk');
    // the VM's CPU chart, from the metrics history (sampled every second here)
    const vmChart = page.locator('figure#vm-cpu-chart');
    const chartState = () => vmChart.evaluate((f) => ({
      n: Number(f.dataset.points), latest: f.dataset.latest,
      drawn: (f.querySelector('polyline.chart-line')?.getAttribute('points') || '').trim().split(/\s+/).filter(Boolean).length,
      label: f.querySelector('svg')?.getAttribute('aria-label') || '',
      caption: f.querySelector('figcaption')?.textContent || '',
    }));
    const c1 = await waitFor(async () => { const c = await chartState(); return c.n >= 2 && c; }, 20000, 'the VM CPU chart to have 2 points');
    ok(c1.drawn >= 2 && /CPU/.test(c1.caption) && /% now/.test(c1.label),
      `the VM CPU chart shows ${c1.n} points, captioned, labelled "${c1.label}"`);
    const c2 = await waitFor(async () => { const c = await chartState(); return (c.n > c1.n || c.latest !== c1.latest) && c; }, 15000, 'the VM CPU chart to update');
    ok(true, `the VM CPU chart updates by itself (${c1.n} -> ${c2.n} points, latest ${Number(c1.latest).toFixed(1)} -> ${Number(c2.latest).toFixed(1)} %)`);
    ok(Number(await page.locator('figure#vm-mem-chart').getAttribute('data-points')) >= 1, 'the VM memory chart has points');
    await page.screenshot({ path: join(logs, 'web-vm-summary.png'), fullPage: true });
    // the tabs work from the keyboard
    await page.getByRole('tab', { name: 'Summary' }).focus();
    await page.keyboard.press('ArrowRight');
    await page.waitForURL(new RegExp(`#/vms/${VM}/console$`));
    await page.locator('#tab-console[aria-selected="true"]').waitFor({ timeout: 5000 }).catch(() => {});
    ok(await page.getByRole('tab', { name: 'Console' }).getAttribute('aria-selected') === 'true', 'arrow keys move between the VM tabs');

    // snapshots of the running VM (its disk is a qcow2 pool volume): take one
    // with memory, see it listed, a duplicate name shows the API's error,
    // delete it behind a confirmation
    await page.getByRole('tab', { name: 'Snapshots' }).click();
    await page.locator('#snap-list').filter({ hasText: 'No snapshots.' }).waitFor();
    await page.getByLabel('Snapshot name').fill('snap1');
    await page.getByRole('button', { name: 'Take snapshot (with memory)' }).click();
    const snapRow = page.locator('#snap-table tr[data-snap="snap1"]');
    await snapRow.waitFor({ timeout: 120000 });
    ok((await snapRow.textContent()).includes('memory'), 'the snapshots tab takes a memory snapshot of the running VM and lists it');
    await page.screenshot({ path: join(logs, 'web-vm-snapshots.png') });
    const errsBefore = errors.length;
    await page.getByLabel('Snapshot name').fill('snap1');
    await page.getByRole('button', { name: 'Take snapshot (with memory)' }).click();
    await page.locator('#snap-error:not([hidden])').waitFor();
    ok((await page.locator('#snap-error').textContent()).includes('already has a snapshot named snap1'), 'a refused snapshot shows the API\'s message');
    errors.splice(errsBefore, errors.length - errsBefore, ...errors.slice(errsBefore).filter((e) => !/status of 409/.test(e)));
    await page.getByRole('button', { name: 'Delete snapshot snap1' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    ok(await snapRow.count() === 1, 'cancel keeps the snapshot');
    await page.getByRole('button', { name: 'Delete snapshot snap1' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.locator('#snap-list').filter({ hasText: 'No snapshots.' }).waitFor({ timeout: 60000 });
    const snapsLeft = await (await fetch(`${url}/api/v1/vms/${VM}/snapshots`, { headers: { Authorization: `Bearer ${token}` } })).json();
    ok(snapsLeft.snapshots && snapsLeft.snapshots.length === 0, 'confirm deletes the snapshot');

    // limits, applied live to the running VM (PATCH {"limits": {...}})
    await page.getByRole('tab', { name: 'Settings' }).click();
    await page.getByLabel('CPU cap (% of one host CPU)').fill('50');
    await page.screenshot({ path: join(logs, 'web-vm-settings-limits.png'), fullPage: true });
    await page.getByRole('button', { name: 'Save' }).click();
    const lim = await waitFor(async () => {
      const v = await (await fetch(`${url}/api/v1/vms/${VM}`, { headers: { Authorization: `Bearer ${token}` } })).json();
      return v.limits && v.limits.cpu_max_percent === 50 && v;
    }, 10000, 'limits.cpu_max_percent 50');
    ok(lim.state === 'running', `settings set cpu_max_percent on the running VM (limits ${JSON.stringify(lim.limits)})`);

    // 4. the dashboard counts it, live
    await page.getByRole('link', { name: 'Dashboard' }).click();
    await page.locator('#state-counts [data-state="running"] .count').waitFor();
    ok(await page.locator('#state-counts [data-state="running"] .count').textContent() === '1', 'the dashboard counts one running VM');
    ok(await page.locator('#recent-events li').count() > 0, 'the dashboard lists recent events');
    ok(await page.locator('#active-vms tbody tr').filter({ hasText: VM }).count() === 1, 'the dashboard lists the running VM with its uptime');
    const hostChart = await waitFor(async () => {
      const n = Number(await page.locator('figure#host-cpu-chart').getAttribute('data-points'));
      return n >= 2 && n;
    }, 15000, 'the host CPU chart');
    ok((await page.locator('figure#host-cpu-chart polyline.chart-line').count()) === 1 &&
      Number(await page.locator('figure#host-mem-chart').getAttribute('data-points')) >= 2,
      `the dashboard draws the host CPU (${hostChart} points) and memory charts`);
    await page.screenshot({ path: join(logs, 'web-dashboard.png'), fullPage: true });

    // topology: the host, the VM, its kernel
    await page.getByRole('link', { name: 'Topology' }).click();
    await page.locator(`svg.topo a[href="#/vms/${VM}"]`).waitFor();
    ok((await page.locator('svg.topo .topo-kernel').count()) === 1, 'the topology shows the VM and its kernel');
    await page.screenshot({ path: join(logs, 'web-topology.png') });

    // 5. stop from the list; the state changes without a reload
    await page.getByRole('link', { name: 'Virtual machines' }).first().click();
    const row = page.locator(`tr[data-vm="${VM}"]`);
    await row.locator('.state-running').waitFor();
    await row.getByRole('button', { name: `Stop ${VM}` }).click();
    await row.locator('.state-stopping, .state-stopped').waitFor({ timeout: 20000 });
    ok(true, 'the list shows the stop under way');
    await row.locator('.state-stopped').waitFor({ timeout: 120000 });
    ok(true, 'the list shows the VM stopped');
    const noReload = await page.evaluate(() => window.__noReload === 1 && performance.getEntriesByType('navigation').length);
    ok(noReload === loadsBefore, 'no page reload happened since the wizard');
    await page.screenshot({ path: join(logs, 'web-vm-list.png') });
    // a small laptop screen: nothing sticks out sideways
    await page.setViewportSize({ width: 1024, height: 640 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    ok(overflow <= 0, `the VM list fits a 1024 px wide screen (overflow ${overflow} px)`);
    await page.screenshot({ path: join(logs, 'web-vm-list-1024.png') });
    await page.setViewportSize({ width: 1366, height: 850 });

    // 6. settings: edit memory while stopped (PATCH)
    await row.getByRole('link', { name: VM }).click();
    await page.getByRole('tab', { name: 'Settings' }).click();
    await page.getByLabel('Memory (MiB)').fill('320');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('tab', { name: 'Summary' }).click();
    await waitFor(async () => (await page.locator('.tabpanel').textContent()).includes('320 MiB'), 10000, 'memory 320 MiB');
    ok(true, 'settings change the memory (PATCH), shown live');

    // 7. delete with confirmation: cancel keeps it, confirm removes it
    await page.getByRole('button', { name: `Delete ${VM}` }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
    ok((await (await fetch(`${url}/api/v1/vms/${VM}`, { headers: { Authorization: `Bearer ${token}` } })).status) === 200, 'cancel keeps the VM');
    await page.getByRole('button', { name: `Delete ${VM}` }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/#\/vms$/);
    await waitFor(async () => (await page.locator(`tr[data-vm="${VM}"]`).count()) === 0, 10000, 'the row to go');
    ok((await (await fetch(`${url}/api/v1/vms/${VM}`, { headers: { Authorization: `Bearer ${token}` } })).status) === 404, 'confirm deletes the VM');

    // the wizard creates a linked clone of a template (a stopped VM whose
    // disks are all volumes, made a template through the API)
    r = await fetch(`${url}/api/v1/pools/webpool/volumes`, { method: 'POST', headers: bearer, body: JSON.stringify({ name: 'tpl0', format: 'qcow2', size: 16777216 }) });
    r = await fetch(`${url}/api/v1/vms`, { method: 'POST', headers: bearer, body: JSON.stringify({ name: 'tplsrc', vcpus: 1, memory_mib: 64, disks: [{ volume: 'webpool/tpl0' }] }) });
    r = await fetch(`${url}/api/v1/vms/tplsrc/template`, { method: 'POST', headers: bearer });
    ok(r.status === 200, `a template for the wizard (${r.status})`);
    await page.getByRole('link', { name: 'Create VM' }).first().click();
    await page.getByLabel('Name').fill('clone1');
    await page.locator('#vm-template option[value="tplsrc"]').waitFor({ state: 'attached' });
    await page.getByLabel('From template').selectOption('tplsrc');
    await page.getByLabel('Linked clone').check();
    ok(await page.getByLabel('Memory (MiB)').inputValue() === '64', 'picking a template fills in its memory');
    await page.screenshot({ path: join(logs, 'web-create-template.png'), fullPage: true });
    await page.getByRole('button', { name: 'Next' }).click();
    ok((await page.locator('#review').textContent()).includes('tplsrc (linked clone)'), 'the wizard goes from basics to review with a template');
    await page.getByLabel('Start the VM after creating it').uncheck();
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/#\/vms\/clone1\/summary$/);
    const clone = await (await fetch(`${url}/api/v1/vms/clone1`, { headers: { Authorization: `Bearer ${token}` } })).json();
    ok(clone.disks && clone.disks[0] && clone.disks[0].volume === 'webpool/clone1-disk0', `the wizard made a linked clone of the template (${JSON.stringify(clone.disks)})`);

    ok(errors.length === 0, `no console errors${errors.length ? ':\n  ' + errors.join('\n  ') : ''}`);

    // a write from the page without the CSRF token is refused (what a
    // forged request would look like); with it, it passes
    const csrfCheck = await page.evaluate(async () => {
      const body = JSON.stringify({ name: 'csrf-probe', vcpus: 1, memory_mib: 64 });
      const bad = await fetch('/api/v1/vms', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
      const s = await (await fetch('/api/v1/session')).json();
      return { bad: bad.status, via: s.via, hasCsrf: typeof s.csrf_token === 'string' };
    });
    ok(csrfCheck.bad === 403 && csrfCheck.via === 'session' && csrfCheck.hasCsrf, `a cookie write without X-CSRF-Token gets 403 (${JSON.stringify(csrfCheck)})`);

    // 8. log out: the cookie no longer works
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByLabel('API token').waitFor();
    const cookie = `kh_session=${sess ? sess.value : ''}`;
    ok((await fetch(`${url}/api/v1/vms`, { headers: { Cookie: cookie } })).status === 401, 'after logout the old cookie is refused');
  } catch (e) {
    ok(false, `browser test: ${e.message}`);
    try {
      const tail = readFileSync(daemonLog, 'utf8').split('\n').filter((l) => /level=(warn|error)/.test(l)).slice(-10);
      console.log(`# kvmhostd warnings (${daemonLog}):\n# ${tail.join('\n# ')}`);
    } catch { /* no log */ }
    const p = ctx && ctx.pages()[0];
    if (p) await p.screenshot({ path: join(logs, 'web-failure.png') }).catch(() => {});
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    if (daemonExit === null) {
      // a VM left running by a failed run would outlive the daemon
      if (token) {
        await fetch(`${url}/api/v1/vms/${VM}/kill`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
      }
      daemon.kill('SIGTERM');
      await waitFor(async () => daemonExit !== null, 15000, 'kvmhostd to exit').catch(() => daemon.kill('SIGKILL'));
    }
    ok(daemonExit === 0 || daemonExit === 'SIGTERM', `kvmhostd exited cleanly (${daemonExit})`);
    // Leftover QEMU (a failed run): kill by the pid files in our own state dir only.
    rmSync(base, { recursive: true, force: true });
  }
}

await main();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
