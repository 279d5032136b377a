// sso.mjs - the login page's single sign-on in a real browser (Debian's
// Chromium via playwright-core): kvmhostd ($KH_DAEMON, else
// build/src/daemon/kvmhostd) with OIDC login at the test-only provider the
// black-box tests use (tests/blackbox/oidc_provider.py, run as a child; it
// logs a preset user in at once, as a provider whose session is already
// open does). Checks: the page shows "Sign in with <name>"; clicking it goes
// through the provider and lands on the dashboard logged in as the OIDC
// user; a failed callback (an ID token for another audience, and the
// provider's own refusal) shows a readable page with the reason and a way
// back, not the JSON error. No guest, no network namespace (no networks
// are made). Prints "ok"/"not ok" lines and a "N passed, M failed" summary.
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, rmSync, chmodSync, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const daemonBin = process.env.KH_DAEMON || join(process.env.KH_BUILD_DIR || join(root, 'build'), 'src/daemon/kvmhostd');
const chromiumBin = process.env.KH_CHROMIUM || '/usr/bin/chromium';
const logs = process.env.KH_TEST_LOGS || join(root, 'test-logs');
const webDir = join(root, 'web/dist');

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

// The provider as a child: its first line is {"issuer"}; each JSON line
// written to it sets knobs (user, tamper) and is answered {"ok": true}.
function startProvider() {
  const p = spawn('/usr/bin/python3', [join(root, 'tests/blackbox/oidc_provider.py')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: p.stdout });
  const waiting = [];
  lines.on('line', (l) => { const w = waiting.shift(); if (w) w(JSON.parse(l)); });
  const next = () => new Promise((r) => waiting.push(r));
  return {
    proc: p,
    first: next(),
    set: async (knobs) => { const r = next(); p.stdin.write(`${JSON.stringify(knobs)}\n`); return r; },
    close: () => { p.stdin.end(); },
  };
}

async function main() {
  for (const f of [daemonBin, chromiumBin, join(webDir, 'index.html')]) {
    if (!existsSync(f)) throw new Error(`missing ${f}`);
  }
  mkdirSync(logs, { recursive: true });
  const base = mkdtempSync(join(tmpdir(), 'kh-sso-'));
  chmodSync(base, 0o755); // QEMU's uid must reach the run dir (the daemon checks at start)
  const state = join(base, 'state');
  mkdirSync(state);
  const provider = startProvider();
  const { issuer } = await provider.first;
  const port = await freePort();
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'; // the daemon's self-signed certificate, this test only
  const url = `https://127.0.0.1:${port}`;
  const daemonLog = join(logs, 'sso-daemon.log');
  const daemonErr = join(logs, 'sso-daemon-stderr.log');
  const errFd = openSync(daemonErr, 'w');
  const env = { ...process.env };
  env.ASAN_OPTIONS = [env.ASAN_OPTIONS, `abort_on_error=0:detect_leaks=${process.env.KH_TEST_LEAKS === '0' ? 0 : 1}`].filter(Boolean).join(':');
  env.UBSAN_OPTIONS = [env.UBSAN_OPTIONS, 'print_stacktrace=1:halt_on_error=1'].filter(Boolean).join(':');
  const daemon = spawn(daemonBin, ['--state-dir', state, '--socket', join(base, 'api.sock'),
    '--listen', `127.0.0.1:${port}`, '--web-dir', webDir, '--log-file', daemonLog, '--log-level', 'debug',
    '--oidc-issuer', issuer, '--oidc-client-id', 'kvmhost', '--oidc-name', 'Example ID'],
  { stdio: ['ignore', errFd, errFd], env });
  closeSync(errFd);
  let daemonExit = null;
  daemon.on('exit', (code, sig) => { daemonExit = sig || code; });
  let ctx = null;
  try {
    await waitFor(async () => {
      if (daemonExit !== null) throw new Error(`kvmhostd exited (${daemonExit}); see ${daemonLog}`);
      return (await fetch(`${url}/api/v1/session`)).ok;
    }, 30000, 'kvmhostd to answer');
    const token = readFileSync(join(state, 'api-token'), 'utf8').trim();
    const bearer = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };
    // group ops holds Auditor on /: the OIDC user sees the host's pages
    let r = await fetch(`${url}/api/v1/groups`, { method: 'POST', headers: bearer, body: JSON.stringify({ name: 'ops' }) });
    ok(r.status === 201, `a local group for the OIDC user (${r.status})`);
    r = await fetch(`${url}/api/v1/acl`, { method: 'PUT', headers: bearer, body: JSON.stringify({ path: '/', subject: '@ops', role: 'Auditor' }) });
    ok(r.status < 300, `the group holds Auditor on / (${r.status})`);
    await provider.set({ user: { sub: 'carol', groups: ['ops'] } });

    const profile = mkdtempSync(join(tmpdir(), 'kh-sso-chromium-'));
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumBin, headless: true, ignoreHTTPSErrors: true,
      viewport: { width: 1280, height: 800 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = ctx.pages()[0] || await ctx.newPage();
    page.setDefaultTimeout(20000);
    const errors = [];
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));

    // 1. the button names the provider; clicking it logs in through it
    await page.goto(url + '/');
    const sso = page.getByRole('link', { name: 'Sign in with Example ID' });
    await sso.waitFor();
    ok(await sso.isVisible(), 'the login page shows "Sign in with Example ID"');
    const seen = [];
    page.on('request', (q) => { if (q.isNavigationRequest()) seen.push(q.url()); });
    await sso.click();
    await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
    ok(seen.some((u) => u.startsWith(`${issuer}/authorize?`)) && seen.some((u) => u.includes('/api/v1/oidc/callback?')),
      `the click went through the provider and back to the callback (${seen.length} navigations)`);
    const who = await page.evaluate(async () => (await (await fetch('/api/v1/session')).json()));
    ok(who.authenticated && who.via === 'session' && who.principal === 'oidc.carol',
      `logged in as the OIDC user by a session (${JSON.stringify({ via: who.via, principal: who.principal })})`);
    const cookies = await ctx.cookies(url);
    ok(cookies.some((c) => c.name === 'kh_session' && c.httpOnly) && !cookies.some((c) => c.name === 'kh_oidc_state' && c.value),
      'an HttpOnly session cookie, the state cookie cleared');
    await page.screenshot({ path: join(logs, 'sso-logged-in.png') });
    await page.getByRole('button', { name: 'Log out' }).click();
    await sso.waitFor();

    // 2. a failed login: a readable page, not the JSON error
    await provider.set({ tamper: 'aud' });
    await sso.click();
    const heading = page.getByRole('heading', { name: 'Sign-in failed' });
    await heading.waitFor();
    const text = await page.locator('#oidc-error').textContent();
    const body = await page.evaluate(() => document.body.innerText);
    ok(/not for this client \(aud\)/.test(text) && !body.trim().startsWith('{') && !body.includes('"error"'),
      `a refused ID token shows a page with the reason (${text})`);
    await page.screenshot({ path: join(logs, 'sso-failed.png') });
    await page.getByRole('link', { name: 'Back to the login page' }).click();
    await sso.waitFor();
    ok(await page.getByLabel('API token').isVisible(), 'the error page leads back to the login page');
    ok((await page.evaluate(async () => (await (await fetch('/api/v1/session')).json()).authenticated)) === false,
      'no session after the failed login');
    await provider.set({ tamper: null });
    await page.goto(`${url}/api/v1/oidc/callback?error=access_denied&state=x`);
    await heading.waitFor();
    ok((await page.locator('#oidc-error').textContent()).includes('access_denied'),
      "the provider's own refusal (?error=) shows the page too");
    ok(errors.length === 0, `no page errors (${errors.join('; ')})`);
  } catch (e) {
    ok(false, `sso test: ${e.message}`);
    const p = ctx && ctx.pages()[0];
    if (p) await p.screenshot({ path: join(logs, 'sso-failure.png') }).catch(() => {});
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    provider.close();
    if (daemonExit === null) {
      daemon.kill('SIGTERM');
      await waitFor(async () => daemonExit !== null, 15000, 'kvmhostd to exit').catch(() => daemon.kill('SIGKILL'));
    }
    ok(daemonExit === 0, `kvmhostd exited 0 after SIGTERM (${daemonExit})`);
    const errText = existsSync(daemonErr) ? readFileSync(daemonErr, 'utf8') : '';
    const san = errText.search(/runtime error:|AddressSanitizer|LeakSanitizer/);
    ok(san < 0, `no sanitizer report in kvmhostd's stderr (${daemonErr})${san < 0 ? '' : ':\n' + errText.slice(errText.lastIndexOf('\n', san) + 1).slice(0, 4000)}`);
    rmSync(base, { recursive: true, force: true });
  }
}

await main();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
