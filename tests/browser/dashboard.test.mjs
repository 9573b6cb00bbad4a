// The dashboard in a real browser: starts `haca demo --serve` (coordinator, two providers, a
// verifier, a workload) on a scratch database and free ports, opens the dashboard in Debian's
// chromium (driven by playwright-core, no browser download), checks that a wrong token shows
// an error, then that every number the page shows equals the API's once the run is quiet,
// looks a job up, and saves a screenshot under the build folder. Exit code 0 = pass.
//
// Run: ctest --test-dir build -R browser --output-on-failure
//  or: HACA_BINARY=build/haca node tests/browser/dashboard.test.mjs
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const build = process.env.HACA_BUILD_DIR || path.join(root, 'build');
const haca = process.env.HACA_BINARY || path.join(build, 'haca');
const chromium_path = process.env.HACA_CHROMIUM || '/usr/bin/chromium';
const out_dir = path.join(build, 'browser');
const jobs = Number(process.env.HACA_BROWSER_JOBS || 200);

function fail(why) {
  console.error('FAIL: ' + why);
  process.exitCode = 1;
  throw new Error(why);
}
const log = (...a) => console.log('[browser]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- preconditions: missing tools fail the test, they do not skip it ----
if (!fs.existsSync(chromium_path))
  fail(`${chromium_path} is missing: apt-get install chromium (deploy/setup.sh installs it)`);
if (!fs.existsSync(haca))
  fail(`${haca} is missing: build it (cmake --build build --target haca)`);
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  fail(`playwright-core is not installed: (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci), ` +
       `which deploy/setup.sh does (${e.message})`);
}

function free_port() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// A scratch database of this run, migrated like the real ones (deploy/migrate.sh).
const db_name = `haca_browser_${process.pid}`;
const db_url = `postgresql:///${db_name}`;
function psql(sql, db = 'postgres') {
  return execFileSync('psql', ['-qAtX', '-v', 'ON_ERROR_STOP=1', '-d', db, '-c', sql], { stdio: 'pipe' }).toString();
}

// ---- the run ----
const format_int = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'));
// The page's formatting (web/dashboard.js), so page text and API values compare exactly.
function format(v, how) {
  if (v === null || v === undefined) return '–';
  switch (how) {
    case 'fixed1': return Number(v).toFixed(1);
    case 'ms': return Number(v).toFixed(2) + ' ms';
    case 'seconds': return Number(v).toFixed(1) + ' s';
    case 'text': return String(v);
    default: return format_int(v);
  }
}
const dig = (o, p) => p.split('.').reduce((x, k) => (x === null || x === undefined ? x : x[k]), o);

let demo = null, demo_output = '', browser = null;
const cleanup = async () => {
  if (browser) await browser.close().catch(() => {});
  if (demo && demo.exitCode === null) {
    demo.kill('SIGINT');
    for (let i = 0; i < 100 && demo.exitCode === null; ++i) await sleep(200);
    if (demo.exitCode === null) { log('demo did not stop on SIGINT; SIGKILL'); demo.kill('SIGKILL'); }
  }
  try { psql(`drop database if exists ${db_name} with (force)`); } catch (e) { log('drop database:', e.message); }
};

try {
  fs.mkdirSync(out_dir, { recursive: true });
  psql(`drop database if exists ${db_name} with (force)`);
  psql(`create database ${db_name}`);
  execFileSync(path.join(root, 'deploy/migrate.sh'), [db_url], { stdio: 'pipe' });

  const [client_port, node_port, http_port] = [await free_port(), await free_port(), await free_port()];
  const work_dir = path.join(out_dir, 'demo');
  fs.rmSync(work_dir, { recursive: true, force: true });
  const args = ['demo', '--serve', '--jobs', String(jobs), '--db', db_url, '--client-port', String(client_port),
                '--node-port', String(node_port), '--http-port', String(http_port), '--work-dir', work_dir,
                '--settle-timeout', '90'];
  log('starting', haca, args.join(' '));
  demo = spawn(haca, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  demo.stdout.on('data', (d) => { demo_output += d; });
  demo.stderr.on('data', (d) => { demo_output += d; });

  // The demo prints this line after its summary: the workload is done and settled.
  const url = await new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error('no "serving the dashboard" line after 180 s')), 180000);
    const look = () => {
      const m = /serving the dashboard until Ctrl-C: (\S+)/.exec(demo_output);
      if (m) { clearTimeout(deadline); resolve(m[1]); }
    };
    demo.stdout.on('data', look);
    demo.on('exit', (code) => { clearTimeout(deadline); reject(new Error(`the demo exited (${code}) before serving`)); });
  }).catch((e) => fail(`${e.message}; its output:\n${demo_output}`));
  const base = new URL(url);
  const token = /#token=([0-9a-f]+)/.exec(url)?.[1] ?? fail(`no token in the dashboard URL ${url}`);
  log('dashboard at', base.origin);

  const api = async (p) => {
    const res = await fetch(base.origin + p, { headers: { Authorization: 'Bearer ' + token } });
    const body = await res.json();
    if (!res.ok) fail(`${p}: HTTP ${res.status} ${JSON.stringify(body)}`);
    return body;
  };

  browser = await chromium.launch({
    executablePath: chromium_path,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const console_errors = [];
  page.on('pageerror', (e) => console_errors.push(e.message));

  // 1. A wrong token: the page must say so visibly (the element this test watches works).
  await page.goto(`${base.origin}/#token=not-the-token-0123456789`);
  await page.waitForSelector('#error:not([hidden])', { timeout: 15000 })
    .catch(() => fail('a wrong token showed no error on the page'));
  const wrong = await page.textContent('#error');
  if (!/401|token/.test(wrong)) fail(`the error for a wrong token does not say why: ${wrong}`);
  log('wrong token shows:', wrong.split('\n')[0]);

  // 2. No token: the page asks for it, and reads with the one typed in.
  const asking = await browser.newPage(); // a new tab: its sessionStorage is empty
  await asking.goto(base.origin + '/');
  await asking.waitForSelector('#token-form', { state: 'visible', timeout: 10000 })
    .catch(() => fail('without a token the page does not ask for one'));
  await asking.fill('#token-input', token);
  await asking.click('#token-form button');
  await asking.waitForFunction(() => Number(document.body.dataset.polls || 0) >= 1, null, { timeout: 15000 });
  if (!(await asking.locator('#error').isHidden())) fail(`a typed token: ${await asking.textContent('#error')}`);
  await asking.close();

  // 3. The right token (the URL the demo printed): used, and gone from the address bar.
  await page.goto(url);
  await page.waitForFunction(() => Number(document.body.dataset.polls || 0) >= 1, null, { timeout: 15000 });
  if (page.url().includes('token=')) fail(`the token stays in the address bar: ${page.url()}`);
  await page.selectOption('#interval', '1000');
  const polls = () => page.evaluate(() => Number(document.body.dataset.polls || 0));

  // What the page shows, as text, by what it shows.
  const read_page = () => page.evaluate(() => {
    const fields = {};
    for (const el of document.querySelectorAll('[data-field]:not([data-volatile])'))
      fields[el.dataset.field] = { text: el.textContent, format: el.dataset.format || '' };
    const states = {};
    for (const el of document.querySelectorAll('#states [data-state]')) states[el.dataset.state] = el.textContent;
    const now = {};
    for (const el of document.querySelectorAll('#states [data-now]')) now[el.dataset.now] = el.textContent;
    const ledger = {};
    for (const tr of document.querySelectorAll('#ledger tbody tr'))
      ledger[tr.dataset.kind] = { accounts: tr.querySelector('[data-col=accounts]').textContent,
                                  balance: tr.querySelector('[data-col=balance]').textContent };
    const providers = {};
    for (const tr of document.querySelectorAll('#providers tbody tr, #verifiers tbody tr')) {
      const row = {};
      for (const td of tr.querySelectorAll('[data-col]')) row[td.dataset.col] = td.textContent;
      providers[tr.dataset.key] = row;
    }
    const error = document.querySelector('#error');
    return { fields, states, now, ledger, providers, error: error.hidden ? '' : error.textContent };
  });

  // The differences between the page and the API's answers (stable parts only).
  function differences(shown, summary, providers) {
    const d = [];
    const want = (what, got, expected) => { if (got !== expected) d.push(`${what}: page '${got}', API '${expected}'`); };
    if (Object.keys(shown.fields).length < 20) d.push(`only ${Object.keys(shown.fields).length} fields on the page`);
    for (const [field, { text, format: how }] of Object.entries(shown.fields))
      want(field, text, format(dig(summary, field), how));
    want('states shown', Object.keys(shown.states).join(','), Object.keys(summary.jobs_entered).join(','));
    for (const [state, n] of Object.entries(summary.jobs_entered)) want(`jobs entered ${state}`, shown.states[state], format_int(n));
    for (const [state, n] of Object.entries(summary.jobs_now)) want(`jobs now ${state}`, shown.now[state], format_int(n));
    want('ledger kinds', Object.keys(shown.ledger).sort().join(','), Object.keys(summary.ledger).sort().join(','));
    for (const [kind, v] of Object.entries(summary.ledger)) {
      want(`ledger ${kind} balance`, shown.ledger[kind]?.balance, format_int(v.balance));
      want(`ledger ${kind} accounts`, shown.ledger[kind]?.accounts, format_int(v.accounts));
    }
    const rows = providers.items;
    want('node rows', Object.keys(shown.providers).length, rows.length);
    for (const p of rows) {
      const s = shown.providers[p.key];
      if (!s) { d.push(`provider ${p.key} not on the page`); continue; }
      want(`provider ${p.name} name`, s.name, p.name);
      if (p.role === 'provider') want(`provider ${p.name} price`, s.price, format_int(p.price));
      want(`provider ${p.name} connected`, s.connected, p.live.connected ? 'yes' : 'no');
      for (const k of p.role === 'provider' ? ['credit', 'load', 'done', 'reputation'] : ['credit', 'load', 'done'])
        want(`${p.role} ${p.name} ${k}`, s[k], format_int(p.live[k]));
      want(`provider ${p.name} orders`, s.orders, [p.banned ? 'banned' : '', p.drained ? 'drained' : ''].filter(Boolean).join(', ') || '–');
      for (const k of ['stake', 'balance']) want(`provider ${p.name} ${k}`, s[k], format_int(p[k]));
      // Liveness changes every second: shown, and recent (heartbeats keep it small).
      if (!(Number(s.silent_s) >= 0 && Number(s.silent_s) < 10)) d.push(`provider ${p.name} silent_s '${s.silent_s}'`);
    }
    return d;
  }
  // The parts of the API's answers that must not change while the run is quiet.
  const stable = (s, p) => JSON.stringify([{ ...s, at_us: 0, settlement: { ...s.settlement, head_age_s: 0 } },
                                           p.items.map((x) => ({ ...x, live: x.live && { ...x.live, silent_s: 0 } }))]);

  // 4. Once quiet (the same API answers before and after a full poll of the page), page == API.
  let last = [];
  let summary = null, providers = null;
  for (let attempt = 1; attempt <= 40; ++attempt) {
    const s1 = await api('/api/summary'), p1 = await api('/api/providers?limit=100');
    const n = await polls();
    await page.waitForFunction((k) => Number(document.body.dataset.polls) >= k, n + 2, { timeout: 15000 });
    const shown = await read_page();
    const s2 = await api('/api/summary'), p2 = await api('/api/providers?limit=100');
    if (shown.error) fail(`the page shows an error: ${shown.error}`);
    if (stable(s1, p1) !== stable(s2, p2)) { last = ['the API answers still change']; await sleep(500); continue; }
    last = differences(shown, s2, p2);
    if (last.length === 0) { summary = s2; providers = p2; log(`page equals the API (attempt ${attempt})`); break; }
    await sleep(500);
  }
  if (!summary) fail('the page does not show what the API says:\n  ' + last.join('\n  '));

  // 5. The API's numbers mean what the run did (so equal-but-wrong fails too).
  const rows = providers.items.filter((p) => p.role === 'provider');
  const check = (ok, what) => { if (!ok) fail(what); };
  check(summary.settlement.settled === jobs, `settled ${summary.settlement.settled}, not the ${jobs} jobs run`);
  // Jobs by state on the page, as SQL on the demo's database counts them.
  const in_sql = Object.fromEntries(psql('select state, count(*) from jobs group by state', db_url).trim().split('\n')
    .filter(Boolean).map((line) => line.split('|')).map(([state, n]) => [state, Number(n)]));
  const page_now = (await read_page()).now;
  for (const state of Object.keys(page_now))
    check(page_now[state] === format_int(in_sql[state] ?? 0), `jobs ${state}: the page shows ${page_now[state]}, SQL counts ${in_sql[state] ?? 0}`);
  check(in_sql.SETTLED === jobs, `SQL counts ${in_sql.SETTLED} SETTLED jobs, not ${jobs}`);
  check(summary.jobs_entered.EXECUTED === jobs, `EXECUTED entered ${summary.jobs_entered.EXECUTED}, not ${jobs}`);
  check(rows.length === 2 && rows.every((p) => p.live && p.live.connected), 'two connected providers expected');
  check(rows.reduce((a, p) => a + p.live.done, 0) === jobs, `the providers' done sum to ${rows.map((p) => p.live.done)}, not ${jobs}`);
  check(rows.every((p) => p.live.load === 0), 'a quiet run holds no jobs');
  const verifiers = providers.items.filter((p) => p.role === 'verifier');
  check(verifiers.length === 1 && verifiers[0].live.connected && verifiers[0].live.load === 0,
        `one connected, idle verifier expected: ${JSON.stringify(verifiers)}`);
  check(verifiers[0].live.done === summary.verification.sampled,
        `the verifier gave ${verifiers[0].live.done} verdicts, ${summary.verification.sampled} jobs were judged by one`);
  check(summary.queue.waiting === 0, 'a quiet run has no queue');
  check(summary.verification.verified + summary.verification.disputed === jobs,
        `verification: ${JSON.stringify(summary.verification)} (sample rate 1: every job judged)`);
  check(summary.settlement.blocks >= 1 && summary.settlement.head && summary.settlement.head.hash.length === 64,
        `settlement: ${JSON.stringify(summary.settlement)}`);
  const blocks = await api('/api/blocks?limit=1');
  check(blocks.items[0].height === summary.settlement.head.height && blocks.items[0].hash === summary.settlement.head.hash,
        'the head in /api/summary is not the newest of /api/blocks');
  check(Object.values(summary.ledger).reduce((a, v) => a + v.balance, 0) === 0,
        `the ledger's kinds do not sum to zero: ${JSON.stringify(summary.ledger)}`);
  const metrics = await (await fetch(base.origin + '/metrics', { headers: { Authorization: 'Bearer ' + token } })).text();
  for (const [kind, v] of Object.entries(summary.ledger))
    check(metrics.includes(`haca_ledger_balance_micros{kind="${kind}"} ${v.balance}\n`), `/metrics lacks the ledger total of ${kind}`);

  // 6. A job looked up by id shows its fields and its timeline as the API has them.
  const job_id = (await api('/api/jobs?limit=1')).items[0].id;
  const job = await api(`/api/jobs/${job_id}`);
  await page.fill('#lookup-id', String(job_id));
  await page.click('#lookup-form button');
  await page.waitForSelector('#job:not([hidden])', { timeout: 10000 }).catch(() => fail('the job lookup showed nothing'));
  const shown_job = await page.evaluate(() => ({
    id: document.querySelector('[data-job=id]').textContent,
    state: document.querySelector('[data-job=state]').textContent,
    timeline: [...document.querySelectorAll('#timeline [data-col=state]')].map((e) => e.textContent),
  }));
  check(shown_job.id === String(job_id) && shown_job.state === job.state,
        `job lookup shows ${JSON.stringify(shown_job)}, the API ${job.id} ${job.state}`);
  check(JSON.stringify(shown_job.timeline) === JSON.stringify(job.timeline.map((e) => e.state)),
        `timeline on the page ${shown_job.timeline}, in the API ${job.timeline.map((e) => e.state)}`);
  check(job.timeline.length >= 4, `job ${job_id} has a short timeline: ${JSON.stringify(job.timeline)}`);
  // A job that does not exist: the page says so.
  await page.fill('#lookup-id', '999999999');
  await page.click('#lookup-form button');
  await page.waitForFunction(() => /no job 999999999/.test(document.querySelector('#error').textContent), null, { timeout: 10000 })
    .catch(() => fail('looking up a missing job showed no error'));
  await page.fill('#lookup-id', String(job_id));
  await page.click('#lookup-form button');
  await page.waitForSelector('#error[hidden]', { state: 'attached', timeout: 10000 })
    .catch(async () => fail(`the error stayed after a good lookup: ${await page.textContent('#error')}`));

  // 7. An operator drains a provider with the admin token (from the demo's token file): the page
  // shows the standing order, and the audit trail says who gave it.
  const admin_token = /"demo:([0-9a-f]+)"/.exec(fs.readFileSync(path.join(work_dir, 'coordinator.toml'), 'utf8'))?.[1]
    ?? fail('no admin token in the demo\'s coordinator.toml');
  const drained = (await api('/api/providers?limit=100')).items.find((p) => p.role === 'provider');
  const as_reader = await fetch(`${base.origin}/api/nodes/${drained.key}/drain`, { method: 'POST', body: '{}',
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' } });
  check(as_reader.status === 403, `the read token drained a node: HTTP ${as_reader.status}`);
  const order = await fetch(`${base.origin}/api/nodes/${drained.key}/drain`, { method: 'POST', body: '{}',
    headers: { Authorization: 'Bearer ' + admin_token, 'Content-Type': 'application/json' } });
  check(order.status === 200, `drain: HTTP ${order.status} ${await order.text()}`);
  await page.waitForFunction((key) => document.querySelector(`#providers tr[data-key="${key}"] [data-col=orders]`)
    ?.textContent === 'drained', drained.key, { timeout: 15000 })
    .catch(() => fail(`the page does not show provider ${drained.name} drained`));
  const trail = await api('/api/actions?limit=5');
  check(trail.items[0]?.action === 'drain' && trail.items[0]?.who === 'demo' && trail.items[0]?.target === drained.key,
        `the audit trail does not show the drain by 'demo': ${JSON.stringify(trail.items[0])}`);
  await page.waitForFunction(() => {
    const row = document.querySelector('#actions tbody tr');
    return row?.querySelector('[data-col=action]')?.textContent === 'drain' && row?.querySelector('[data-col=who]')?.textContent === 'demo';
  }, null, { timeout: 15000 }).catch(() => fail('the page\'s operators\' actions do not show the drain by demo'));
  log('drained', drained.name, 'shown on the page and in the audit trail');

  const shot = path.join(out_dir, 'dashboard.png');

  await page.screenshot({ path: shot, fullPage: true });
  log('screenshot:', shot);
  check(console_errors.length === 0, `script errors on the page: ${console_errors.join('; ')}`);
  const final = await read_page();
  check(final.error === '', `the page shows an error at the end: ${final.error}`);

  // 8. Ctrl-C stops the demo cleanly; its summary passed (exit 0).
  await browser.close();
  browser = null;
  demo.kill('SIGINT');
  const code = await new Promise((r) => (demo.exitCode !== null ? r(demo.exitCode) : demo.on('exit', (c) => r(c))));
  check(code === 0, `the demo exited ${code} after SIGINT; its output:\n${demo_output}`);
  log('PASS');
} catch (e) {
  if (process.exitCode !== 1) { console.error('FAIL:', e.stack || e.message); process.exitCode = 1; }
} finally {
  await cleanup();
}
