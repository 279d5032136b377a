// bench.mjs - the web console's performance figures, in headless Chromium
// against a real kvmhostd (temp state dir, free loopback port):
//   - first load of the dashboard: compressed JavaScript bytes, and time to
//     interactive (navigation start to the host facts shown), median of 5;
//   - the VM list with 200 VMs: time from navigation to 200 rows, median of 5.
// Targets (issue 6): <= 300 KB, <= 1 s, <= 200 ms. Exit 1 if one is missed.
// Used by bench/web.sh. Env: KH_DAEMON, KH_CHROMIUM, KH_BENCH_VMS (200).
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const daemonBin = process.env.KH_DAEMON || join(root, 'build/src/daemon/kvmhostd');
const chromiumBin = process.env.KH_CHROMIUM || '/usr/bin/chromium';
const NVMS = Number(process.env.KH_BENCH_VMS || 200);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };

const port = await new Promise((res) => { const s = createServer(); s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); }); });
const base = mkdtempSync(join(tmpdir(), 'kh-webbench-'));
chmodSync(base, 0o755);
mkdirSync(join(base, 'state'));
const url = `http://127.0.0.1:${port}`;
const daemon = spawn(daemonBin, ['--state-dir', join(base, 'state'), '--socket', join(base, 'api.sock'),
  '--listen', `127.0.0.1:${port}`, '--web-dir', join(root, 'web/dist'), '--log-file', join(base, 'daemon.log')],
{ stdio: 'inherit' });
let ctx;
let failed = false;
try {
  for (let i = 0; ; i++) {
    try { if ((await fetch(`${url}/api/v1/session`)).ok) break; } catch { /* not yet */ }
    if (i > 150) throw new Error('kvmhostd did not start');
    await sleep(200);
  }
  const token = readFileSync(join(base, 'state/api-token'), 'utf8').trim();
  const auth = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
  const kernel = join(base, 'vmlinuz');
  writeFileSync(kernel, Buffer.alloc(4096));
  chmodSync(kernel, 0o644);
  for (let i = 0; i < NVMS; i++) {
    const r = await fetch(`${url}/api/v1/vms`, { method: 'POST', headers: auth,
      body: JSON.stringify({ name: `bench-${String(i).padStart(3, '0')}`, vcpus: 1, memory_mib: 64, boot: { kernel } }) });
    if (r.status !== 201) throw new Error(`create: HTTP ${r.status} ${await r.text()}`);
  }

  ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'kh-webbench-chromium-')), {
    executablePath: chromiumBin, headless: true, viewport: { width: 1366, height: 850 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  await page.goto(url + '/');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#accel').waitFor();

  // first load, logged in (the session cookie), cache disabled by no-cache revalidation
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
  const ttis = [];
  let jsBytes = 0, jsFiles = [];
  for (let i = 0; i < 5; i++) {
    await page.goto('about:blank');
    await page.goto(url + '/#/');
    await page.locator('#accel').waitFor();
    const m = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const js = performance.getEntriesByType('resource').filter((e) => e.name.endsWith('.js'));
      const trace = performance.getEntriesByType('resource').map((e) => `${e.name.split('/').pop()} ${Math.round(e.startTime)}-${Math.round(e.responseEnd)}`).join(', ') + ` dcl=${Math.round(nav.domContentLoadedEventEnd)} resp=${Math.round(nav.responseEnd)}`;
      return { trace, tti: performance.now() - nav.startTime, js: js.map((e) => [e.name.split('/').pop(), e.encodedBodySize]) };
    });
    ttis.push(m.tti);
    if (process.env.KH_TRACE) console.log(`load ${i}: ${Math.round(m.tti)} ms: ${m.trace}`);
    jsFiles = m.js;
    jsBytes = m.js.reduce((a, [, n]) => a + n, 0);
  }
  // the VM list with NVMS VMs
  const lists = [];
  for (let i = 0; i < 5; i++) {
    await page.goto('about:blank');
    await page.goto(url + '/#/');
    await page.locator('#accel').waitFor();
    const t = await page.evaluate((n) => new Promise((res) => {
      const t0 = performance.now();
      location.hash = '#/vms';
      const tick = () => {
        if (document.querySelectorAll('#vm-rows tr').length >= n) res(performance.now() - t0);
        else requestAnimationFrame(tick);
      };
      tick();
    }), NVMS);
    lists.push(t);
  }
  const rows = [
    ['first-load JavaScript (compressed)', `${(jsBytes / 1024).toFixed(1)} KiB`, '<= 300 KB', jsBytes <= 300000],
    ['dashboard time to interactive (median of 5)', `${median(ttis).toFixed(0)} ms`, '<= 1000 ms', median(ttis) <= 1000],
    [`VM list with ${NVMS} VMs rendered (median of 5)`, `${median(lists).toFixed(0)} ms`, '<= 200 ms', median(lists) <= 200],
  ];
  console.log(`first-load scripts: ${jsFiles.map(([n, b]) => `${n} ${b} B`).join(', ')}`);
  console.log('metric | value | target | ok?');
  for (const [m, v, t, good] of rows) {
    console.log(`${m} | ${v} | ${t} | ${good ? 'ok' : 'MISSED'}`);
    if (!good) failed = true;
  }
} catch (e) {
  console.log(`web bench: ${e.message}`);
  failed = true;
} finally {
  if (ctx) await ctx.close().catch(() => {});
  daemon.kill('SIGTERM');
  await new Promise((r) => daemon.once('exit', r));
  rmSync(base, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
