// The web interface in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core; no browser download). Starts its own `tidings serve` on 127.0.0.1 with a
// temp data dir, then: sign in; create a topic and publish with curl; see the item appear
// in the inbox without a reload; ack it; add a destination; on the sources page create a
// topic, subscribe to a feed this script serves and preview it with a filter; create an API token; hostile
// input (every document of ../shared/corpus/feedparser/wellformed/sanitize/, its markup
// published as a message) with a dialog trap and a DOM check for injected elements and
// event-handler attributes; sign out.
//
// Usage: node ui.mjs <path to the tidings binary>
// Env: SCREENSHOTS_DIR=<dir> also saves screenshots of the main pages there (the
// README's images: `SCREENSHOTS_DIR=docs/screenshots`); CHROMIUM (default
// /usr/bin/chromium); SANITIZE_CORPUS (default ../shared/corpus/... of the repo).
import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../../..');
const bin = process.argv[2] || path.join(repo, 'target/debug/tidings');
const shots = process.env.SCREENSHOTS_DIR ? path.resolve(repo, process.env.SCREENSHOTS_DIR) : null;
const corpus = process.env.SANITIZE_CORPUS ||
  path.resolve(repo, '../shared/corpus/feedparser/wellformed/sanitize');

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exitCode = 1;
  throw new Error(msg);
}
function check(cond, msg) { if (!cond) fail(msg); }
function step(msg) { console.log('==> ' + msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (!fs.existsSync(bin)) fail(`no tidings binary at ${bin} (build it first: cargo build)`);
if (!fs.existsSync(corpus)) fail(`the sanitize corpus is missing: ${corpus}`);

// --- the server -----------------------------------------------------------------------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tidings-browser-'));
const dataDir = path.join(tmp, 'data');
const log = fs.openSync(path.join(tmp, 'server.log'), 'w');
const server = spawn(bin, ['serve', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0'], {
  env: {
    ...process.env,
    TIDINGS_LOG: 'info',
    TIDINGS_HTTP_RATE_LIMIT_PER_SECOND: '100000',
    TIDINGS_HTTP_RATE_LIMIT_BURST: '100000',
    TIDINGS_DELIVERY_ALLOW_PRIVATE_NETWORKS: 'true',
    TIDINGS_SOURCES_ALLOW_PRIVATE_NETWORKS: 'true',
  },
  stdio: ['ignore', log, log],
});
let serverExited = false;
server.on('exit', () => { serverExited = true; });

let browser;
// A feed for the sources page, served on 127.0.0.1.
const RSS = `<?xml version="1.0"?><rss version="2.0"><channel><title>Project news</title>
<item><guid>1</guid><title>Release 2.4.1</title><description>Bug fixes for the web interface.</description></item>
<item><guid>2</guid><title>Community call notes</title><description>Minutes of the monthly call.</description></item>
<item><guid>3</guid><title>Release 2.4.0</title><description>Sources page, previews.</description></item>
<item><guid>4</guid><title>Conference talk recording</title><description>Video of the talk.</description></item>
</channel></rss>`;
const feedServer = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/rss+xml' });
  res.end(RSS);
});

async function cleanup() {
  feedServer.close();
  if (browser) await browser.close().catch(() => {});
  if (!serverExited) server.kill('SIGTERM');
  if (process.exitCode) {
    console.error('--- server log ---\n' + fs.readFileSync(path.join(tmp, 'server.log'), 'utf8').slice(-4000));
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

async function main() {
  let url;
  for (let i = 0; i < 300 && !url; i++) {
    check(!serverExited, 'tidings exited at start');
    try { url = JSON.parse(fs.readFileSync(path.join(dataDir, 'server.json'), 'utf8')).url; } catch { await sleep(50); }
  }
  check(url, 'the server did not start within 15 s');
  const admin = fs.readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  step(`server at ${url}`);

  async function api(method, p, token, body) {
    const r = await fetch(url + p, {
      method,
      headers: { Authorization: 'Bearer ' + token, ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : null };
  }

  const password = 'a long browser password';
  const created = await api('POST', '/api/v1/admin/users', admin, { name: 'alice', password });
  check(created.status === 201, 'create user: ' + created.status);
  const token = created.json.token;

  // --- the browser --------------------------------------------------------------------
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const context = await browser.newContext({ viewport: { width: 1100, height: 820 } });
  const dialogs = [];
  const pageErrors = [];
  const page = await context.newPage();
  page.on('dialog', async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Any CSP violation means something tried to run or load what the page did not serve.
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
    });
  });

  step('sign in');
  const first = await page.goto(url + '/');
  check(page.url().endsWith('/login'), 'not signed in: / leads to /login, got ' + page.url());
  check(first.status() === 200, '/login answers 200');
  const csp = (await first.allHeaders())['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("default-src 'none'"), 'CSP header: ' + csp);
  if (shots) {
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, 'login.png') });
  }
  await page.getByLabel('User name').fill('alice');
  await page.getByLabel('Password').fill('wrong password here');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'Wrong user name or password' }).waitFor();
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Inbox', level: 1 }).waitFor();
  check(new URL(page.url()).pathname === '/', 'signed in: on the inbox');
  // The live stream is open before anything is published.
  await page.waitForSelector('body[data-live="open"]', { timeout: 10000 });

  step('create a topic, publish with curl, see it arrive without a reload');
  const sub = await api('POST', '/api/v1/subscriptions', token, { source: { kind: 'topic', topic: 'deploys' } });
  check(sub.status === 201, 'subscribe to topic deploys: ' + sub.status + ' ' + JSON.stringify(sub.json));
  await page.evaluate(() => { window.__noReload = 'still here'; });
  const curl = (args) => execFileSync('curl', ['-sS', '--fail-with-body', '-H', 'Authorization: Bearer ' + token, ...args], { encoding: 'utf8' });
  curl(['-H', 'Title: Deploy finished', '-H', 'Priority: high', '-H', 'Tags: rocket,prod',
    '-H', 'Click: https://ci.example.org/runs/4711', '-d', 'web-1 and web-2 run 2.4.1', url + '/deploys']);
  const item = page.locator('#inbox li.item', { hasText: 'Deploy finished' });
  await item.waitFor({ timeout: 10000 });
  check(await page.evaluate(() => window.__noReload) === 'still here', 'the page was reloaded');
  check(await page.locator('#inbox li.item').first().textContent().then((t) => t.includes('Deploy finished')),
    'the new item is at the top');
  check(await item.locator('.prio').textContent() === 'high', 'priority badge');
  check(await item.locator('time').getAttribute('datetime').then((d) => /^\d{4}-\d\d-\d\dT/.test(d)), 'time element');
  check(await item.locator('a.click').getAttribute('href') === 'https://ci.example.org/runs/4711', 'click link');

  step('ack it (no reload)');
  await item.getByRole('button', { name: /Acknowledge/ }).click();
  await item.locator('.acked-label').waitFor({ timeout: 10000 });
  check(await page.evaluate(() => window.__noReload) === 'still here', 'ack reloaded the page');
  const hist = await api('GET', '/api/v1/notifications?topic=deploys', token);
  check(hist.json.notifications[0].acked === true, 'the ack reached the server');

  // A few more, for a representative inbox (and its screenshot).
  curl(['-H', 'Title: Disk almost full', '-H', 'Priority: urgent', '-d', '/var on db-1 is 97% full', url + '/alerts']);
  curl(['-H', 'Title: Nightly backup', '-d', 'Backup finished in 4 min 12 s (3.1 GB)', url + '/backups']);
  curl(['-H', 'Priority: low', '-d', 'Certificate for example.org renews in 20 days', url + '/certs']);
  await page.locator('#inbox li.item', { hasText: 'Certificate for example.org' }).waitFor({ timeout: 10000 });
  check(await page.locator('#inbox li.item').count() === 4, 'four items live');
  if (shots) {
    await page.reload();
    await page.waitForSelector('body[data-live="open"]');
    await page.screenshot({ path: path.join(shots, 'inbox.png'), fullPage: true });
    const phone = await browser.newPage({ viewport: { width: 390, height: 760 }, storageState: await context.storageState() });
    await phone.goto(url + '/');
    await phone.screenshot({ path: path.join(shots, 'inbox-phone.png'), fullPage: true });
    await phone.close();
  }

  step('add a destination');
  await page.getByRole('link', { name: 'Destinations' }).click();
  await page.getByRole('heading', { name: 'Destinations', level: 1 }).waitFor();
  await page.getByLabel('Name').fill('ops webhook');
  await page.getByLabel('URL').fill('json://127.0.0.1:9/hooks/tidings');
  await page.getByRole('button', { name: 'Add destination' }).click();
  await page.getByText('Added ops webhook').waitFor();
  const dests = await api('GET', '/api/v1/destinations', token);
  check(dests.json.destinations.length === 1 && dests.json.destinations[0].name === 'ops webhook', 'destination saved');
  await page.getByLabel('Name').fill('mail');
  await page.getByLabel('URL').fill('bogus://nothing');
  await page.getByRole('button', { name: 'Add destination' }).click();
  await page.getByRole('alert').waitFor();
  if (shots) await page.screenshot({ path: path.join(shots, 'destinations.png'), fullPage: true });

  step('sources: create a topic, subscribe to a feed, preview it with a filter');
  await new Promise((r) => feedServer.listen(0, '127.0.0.1', r));
  const feedUrl = `http://127.0.0.1:${feedServer.address().port}/news.xml`;
  await page.getByRole('link', { name: 'Sources' }).click();
  await page.getByRole('heading', { name: 'Sources', level: 1 }).waitFor();
  await page.getByLabel('New topic').fill('releases');
  await page.getByRole('button', { name: 'Create topic' }).click();
  const curlLine = (await page.locator('pre.curl', { hasText: '/releases' }).textContent()).trim();
  check(curlLine === `curl -H "Authorization: Bearer <your token>" -d "message" ${url}/releases`, 'curl line: ' + curlLine);
  check(!(await page.content()).includes(token), 'no token on the page');
  await page.getByLabel('URL', { exact: true }).fill(feedUrl);
  await page.getByLabel('Only items with').fill('release');
  await page.getByRole('button', { name: 'Subscribe' }).click();
  await page.getByText('Subscribed to').waitFor();
  const subs = await api('GET', '/api/v1/subscriptions', token);
  check(subs.json.subscriptions.some((x) => x.source.url === feedUrl && x.filter.include[0] === 'release'), 'feed subscription saved');
  for (let i = 0; i < 100; i++) {
    await page.goto(url + '/app/sources');
    if (await page.locator('.health', { hasText: 'Status: ok' }).count()) break;
    await sleep(100);
  }
  check(await page.locator('.health', { hasText: 'Status: ok' }).count() === 1, 'the feed\'s health is shown');
  await page.getByLabel('URL', { exact: true }).fill(feedUrl);
  await page.getByLabel('Only items with').fill('release');
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.locator('#preview').waitFor();
  check(await page.locator('#preview li.match').count() === 2, 'two items would match');
  check(await page.locator('#preview li.nomatch').count() === 2, 'two are filtered out');
  if (shots) await page.screenshot({ path: path.join(shots, 'sources.png'), fullPage: true });

  step('create an API token (shown once)');
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel('Name').fill('laptop');
  await page.getByRole('button', { name: 'Create token' }).click();
  const secret = (await page.locator('#new-token').textContent()).trim();
  check(secret.startsWith('tk_'), 'the new token is shown');
  check((await api('GET', '/api/v1/account', secret)).status === 200, 'the new token works');
  if (shots) await page.screenshot({ path: path.join(shots, 'settings.png'), fullPage: true });

  step('hostile input: the feedparser sanitize corpus');
  await page.getByRole('link', { name: 'Inbox' }).click();
  await page.waitForSelector('body[data-live="open"]');
  const files = fs.readdirSync(corpus).filter((f) => f.endsWith('.xml')).sort();
  const decode = (s) => s.replace(/<!\[CDATA\[([\s\S]*?)\]\]>/g, '$1')
    .replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
  const hostile = files.map((f) => {
    const text = fs.readFileSync(path.join(corpus, f), 'utf8');
    // The markup a feed reader would get out of the document (the escaped HTML of its
    // content, summary, title...), else the whole document.
    const parts = [...text.matchAll(/<((?:\w+:)?(?:content|description|summary|title|subtitle|tagline|info|copyright|rights|encoded))\b[^>]*>([\s\S]*?)<\/\1>/g)]
      .map((m) => decode(m[2])).filter((s) => s.trim());
    return { file: f, message: (parts.length ? parts.join('\n') : text).slice(0, 16000) };
  });
  const scan = () => page.evaluate(() => {
      const bad = [];
      for (const el of document.querySelectorAll('*')) {
        for (const a of el.attributes) {
          if (/^on/i.test(a.name)) bad.push(`${el.tagName} ${a.name}`);
        }
      }
      const inbox = document.getElementById('inbox');
      const foreign = inbox ? [...inbox.querySelectorAll('*')]
        .filter((e) => !['LI', 'DIV', 'SPAN', 'TIME', 'H2', 'P', 'A', 'FORM', 'INPUT', 'BUTTON'].includes(e.tagName))
        .map((e) => e.tagName) : ['no inbox'];
      const scripts = [...document.scripts].map((s) => s.getAttribute('src'));
      return { bad, foreign, scripts, violations: window.__violations || [] };
  });
  const liveCheck = async (label) => {
    const found = await scan();
    check(found.bad.length === 0, `${label}: elements with event handlers: ${found.bad.slice(0, 5)}`);
    check(found.foreign.length === 0, `${label}: injected elements in the inbox: ${[...new Set(found.foreign)]}`);
    check(found.scripts.length === 1 && /^\/static\/app\.js/.test(found.scripts[0]), `${label}: scripts: ${found.scripts}`);
    check(found.violations.length === 0, `${label}: CSP violations: ${found.violations.slice(0, 5)}`);
    check(dialogs.length === 0, `${label}: a dialog opened: ${dialogs}`);
  };
  const withMarkup = hostile.filter((h) => /<\w/.test(h.message)).length;
  check(withMarkup > hostile.length / 2, `only ${withMarkup} documents carry markup: is the extraction broken?`);
  // The traps themselves work: a dialog and an injected handler are seen.
  await page.evaluate(() => alert('probe'));
  check(dialogs.length === 1, 'the dialog trap does not see dialogs');
  dialogs.length = 0;
  await page.evaluate(() => {
    const s = document.createElement('span');
    s.setAttribute('onmouseover', 'x()');
    document.getElementById('inbox').appendChild(document.createElement('img')).appendChild(s);
  });
  const probe = await scan();
  check(probe.bad.length === 1 && probe.foreign.includes('IMG'), 'the DOM check does not see injected elements');
  await page.reload();
  await page.waitForSelector('body[data-live="open"]');
  const BATCH = 50;
  for (let i = 0; i < hostile.length; i += BATCH) {
    const batch = hostile.slice(i, i + BATCH);
    for (const h of batch) {
      const r = await fetch(url + '/hostile', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token, Title: h.file },
        body: h.message,
      });
      check(r.ok, `publish ${h.file}: ${r.status} ${await r.text()}`);
    }
    // Inserted live by the script...
    const last = batch[batch.length - 1].file;
    await page.locator('#inbox li.item', { hasText: last }).first().waitFor({ timeout: 15000 });
    await liveCheck(`live, after ${i + batch.length}`);
    // ...and rendered by the server.
    await page.reload();
    await page.waitForSelector('body[data-live="open"]');
    await page.locator('#inbox li.item', { hasText: last }).first().waitFor({ timeout: 5000 });
    await liveCheck(`server-rendered, after ${i + batch.length}`);
  }
  // The text arrived as text: a document's markup is visible, not interpreted.
  const sample = hostile[hostile.length - 1];
  const shown = await page.locator('#inbox li.item').first().locator('.msg').textContent();
  check(shown === sample.message.trim() || shown.includes(sample.message.trim().slice(0, 40)), 'markup is shown as text');
  await sleep(500);
  check(dialogs.length === 0, 'a dialog opened: ' + dialogs);
  check(pageErrors.length === 0, 'page errors: ' + pageErrors);
  console.log(`    ${hostile.length} hostile documents published (${withMarkup} with markup); no script ran`);

  step('sign out');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to tidings' }).waitFor();
  await page.goto(url + '/');
  check(page.url().endsWith('/login'), 'signed out: / leads to /login again');
  console.log('PASS: browser test');
}

try {
  await main();
} catch (e) {
  if (!process.exitCode) { console.error(e); process.exitCode = 1; }
} finally {
  await cleanup();
}
