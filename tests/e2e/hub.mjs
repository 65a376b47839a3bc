// Helpers for the end-to-end tests: build and start a hub, mint tokens, seed a tenant, open
// Debian's Chromium through playwright-core.
import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SHOTS = path.join(ROOT, 'target', 'e2e');
// `cargo build` puts the binary under CARGO_TARGET_DIR when that is set.
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
const BIN = path.join(TARGET, 'debug', 'switchboard');
const SECRET = 'e2e-secret-not-for-production-0123456789';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** `scripts/build-debug.sh`: the hub, built as `cargo test --workspace` builds it (bounded: 10 minutes). */
export function buildHub() {
  const r = spawnSync('bash', ['scripts/build-debug.sh'], { cwd: ROOT, stdio: 'inherit', timeout: 600_000 });
  if (r.status !== 0) throw new Error(`cargo build failed (${r.status ?? r.signal ?? r.error})`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function env(extra = {}) {
  return { ...process.env, SWITCHBOARD__AUTH__HS256_SECRET: SECRET, RUST_LOG: process.env.RUST_LOG || 'warn', ...extra };
}

/** The hub's built-in development secret (config/default.toml). */
export const DEV_SECRET = 'switchboard-dev-secret';

/**
 * Starts `switchboard serve` on a free loopback port with a fresh data directory
 * (`secret`: another HS256 secret, e.g. DEV_SECRET; `port` and `dataDir`: start it again where
 * a stopped hub was). It runs in its data directory, away from static/: the page it serves is
 * the one built into the binary.
 */
export async function startHub({ secret, port, dataDir } = {}) {
  port ??= await freePort();
  const ownData = !dataDir;
  dataDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-e2e-'));
  const child = spawn(BIN, ['serve'], {
    cwd: dataDir,
    env: env({
      SWITCHBOARD__SERVER__BIND: `127.0.0.1:${port}`,
      SWITCHBOARD__STORAGE__PATH: dataDir,
      ...(secret ? { SWITCHBOARD__AUTH__HS256_SECRET: secret } : {}),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise((resolve) => {
    child.once('exit', (code, sig) => resolve(`${code ?? sig}`));
    child.once('error', (e) => resolve(`failed to start (${e.message})`));
  });
  // Ready when /healthz answers; bounded to 30 s, and fails at once if the process exits.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await Promise.race([
      fetch(`${url}/healthz`).then((r) => r.status, () => 0),
      exited.then((c) => `exited ${c}`),
    ]);
    if (status === 200) break;
    if (typeof status === 'string') throw new Error(`the hub ${status}:\n${log}`);
    if (Date.now() > deadline) throw new Error(`the hub did not answer /healthz in 30 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    port,
    dataDir,
    log: () => log,
    /** Stops it (SIGTERM); `keepData` leaves its data for a restart with `startHub({port, dataDir})`. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(t);
      }
      if (!keepData && ownData) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Mints a token with `switchboard token` and the hub's secret. */
export function token({ sub, tenant, roles = 'user', locations = '', name }) {
  const args = ['token', '--sub', sub, '--tenant', tenant, '--roles', roles, '--ttl', '2h'];
  if (locations) args.push('--locations', locations);
  if (name) args.push('--name', name);
  const r = spawnSync(BIN, args, { cwd: ROOT, env: env(), encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`switchboard token failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** A JSON call to the hub's API; throws on a non-2xx answer. */
export async function api(hub, tok, method, p, body) {
  const r = await fetch(`${hub.url}/api/v1${p}`, {
    method,
    headers: { Authorization: `Bearer ${tok}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export const SMS = '+15550001111';

/**
 * A fresh tenant (one per test keeps counts independent): location L1, users sam (sales),
 * olivia (service), una (neither); folder F1 lists +1 555 123 4567; F2 and F3 both list
 * +1 555 222 3333, so that number is never assigned automatically; F4 (Sam's) lists
 * +1 555 888 9999.
 */
export async function seedTenant(hub, tenant) {
  const svc = token({ sub: 'ingest', tenant, roles: 'service' });
  await api(hub, svc, 'PUT', '/locations/L1', { name: 'Downtown', sms_numbers: [SMS] });
  for (const [id, name] of [['sam', 'Sam Sales'], ['olivia', 'Olivia Service'], ['una', 'Una Operator']]) {
    await api(hub, svc, 'PUT', `/users/${id}`, { name });
  }
  const folder = (id, name, phones, sales, service) =>
    api(hub, svc, 'PUT', `/folders/${id}`, {
      name,
      location_id: 'L1',
      phone_numbers: phones,
      sales_resource_id: sales,
      service_resource_id: service,
    });
  await folder('F1', 'Smith kitchen', ['555-123-4567'], 'sam', 'olivia');
  await folder('F2', 'Jones bathroom', ['(555) 222-3333'], 'sam', null);
  await folder('F3', 'Jones garage', ['555.222.3333'], 'sam', null);
  await folder('F4', 'Lee porch', ['555-888-9999'], 'sam', null);
  const user = (sub, name) => token({ sub, tenant, roles: 'user', locations: 'L1', name });
  let n = 0;
  return {
    svc,
    sam: user('sam', 'Sam Sales'),
    olivia: user('olivia', 'Olivia Service'),
    una: user('una', 'Una Operator'),
    /** Posts an inbound SMS as the ingestion service. */
    inbound(from, body, attachments = []) {
      n += 1;
      return api(hub, svc, 'POST', '/messages/inbound', {
        external_id: `${tenant}-SM${n}`,
        from,
        to: SMS,
        body,
        attachments,
      });
    },
  };
}

export function launch() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 30_000 });
}

/**
 * Makes every Content-Security-Policy violation on `page` an entry of `errors`: the
 * `securitypolicyviolation` events of each document, and Chromium's console reports (which
 * also cover what no document sees, such as a refused frame). The emitter returned emits
 * 'violation' for each.
 */
export async function watchPolicy(page, errors) {
  const watcher = new EventEmitter();
  const report = (e) => {
    errors.push(e);
    watcher.emit('violation', e);
  };
  await page.exposeFunction('__reportPolicyViolation', (v) => report(new Error(`CSP violation: ${v}`)));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__reportPolicyViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} in ${e.documentURI}`));
  });
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) report(new Error(`CSP console error: ${m.text()}`));
  });
  return watcher;
}

/**
 * A page signed in with `tok` (pasted into the sign-in form, as a person would): in a new
 * browser context (`viewport`, default 1360x820), or as another tab of `context`.
 */
export async function signedInPage(browser, hub, tok, { screenshot, viewport, context } = {}) {
  if (!context) {
    context = await browser.newContext({ viewport: viewport || { width: 1360, height: 820 } });
    context.setDefaultTimeout(10_000);
  }
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // What the console reports as errors (a missing favicon's 404, a failed request).
  page.consoleErrors = [];
  page.on('console', (m) => m.type() === 'error' && page.consoleErrors.push(`${m.text()} ${m.location()?.url ?? ''}`));
  await watchPolicy(page, errors);
  page.errors = errors;
  await page.goto(hub.url);
  await page.locator('#token-input').fill(tok);
  if (screenshot) await shot(page, screenshot);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#connection[data-state="open"]').waitFor();
  await page.locator('#thread-list').waitFor();
  return page;
}

/** Waits until everything the hub committed so far has reached the page (the ping barrier). */
export function barrier(page) {
  return page.evaluate(() => window.__switchboard.client.ping());
}

export async function shot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  // Let the pictures on screen finish loading first (bounded).
  await page.waitForFunction(() => [...document.images].every((i) => i.loading === 'lazy' && !i.checkVisibility() ? true : i.complete), null, { timeout: 5_000 }).catch(() => {});
  await page.screenshot({ path: file });
  return file;
}

export function row(page, threadId) {
  return page.locator(`#thread-rows tr[data-thread-id="${threadId}"]`);
}

/**
 * A stand-in for the MMS store: any /photos/N.jpg answers a small picture (an SVG), so the
 * image windows and thumbnails have something to show.
 */
export async function startPhotoServer() {
  const colors = ['#4a90d9', '#d9824a', '#5cb85c', '#9b59b6', '#e0b040'];
  const server = http.createServer((req, res) => {
    const n = Number((/(\d+)/.exec(req.url) || [0, 0])[1]);
    const c = colors[n % colors.length];
    res.writeHead(200, { 'Content-Type': 'image/svg+xml', 'Cache-Control': 'no-store' });
    res.end(`<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">
<rect width="320" height="240" fill="${c}"/><circle cx="250" cy="60" r="28" fill="#fff" opacity="0.8"/>
<path d="M0 240 L110 110 L180 190 L230 140 L320 240 Z" fill="#fff" opacity="0.55"/>
<text x="16" y="36" font-family="sans-serif" font-size="22" fill="#fff">photo ${n}</text></svg>`);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: (n) => `http://127.0.0.1:${server.address().port}/photos/${n}.jpg`,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
