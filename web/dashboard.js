// The haca dashboard: polls the coordinator's admin API (GET /api/summary, /api/providers,
// /api/jobs/ID) with the read token and shows it. No framework, no build step. Values from
// the API are written as text (textContent), never as HTML.
'use strict';

const $ = (sel) => document.querySelector(sel);
const history_points = 120; // points per chart

// The read token: from the URL fragment (#token=...), kept for this tab in sessionStorage and
// removed from the address bar; else asked for.
function take_token() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('haca-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem('haca-token');
}

const errors = new Map(); // what failed -> its message; shown until it succeeds again

function show_errors() {
  const el = $('#error');
  el.textContent = [...errors.values()].join('\n');
  el.hidden = errors.size === 0;
}

async function api(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
  } catch (e) {
    throw new Error(`${path}: the coordinator cannot be reached (${e.message})`);
  }
  let body = null;
  try { body = await res.json(); } catch (_) { /* reported below */ }
  if (!res.ok) {
    const why = body && body.error ? `${body.error.code}: ${body.error.reason}` : `HTTP ${res.status}`;
    throw new Error(`${path}: ${why}` + (res.status === 401 ? ' (a wrong or missing read token: reload with #token=...)' : ''));
  }
  if (body === null)
    throw new Error(`${path}: the answer is not JSON`);
  return body;
}

// One step of polling: a failure is shown under its name and cleared by the next success.
async function guarded(name, f) {
  try {
    await f();
    errors.delete(name);
  } catch (e) {
    errors.set(name, e.message);
  }
  show_errors();
}

// ---- formatting (the browser test parses these back) ----
function fmt_int(v) { return v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'); }
function format(v, how) {
  if (v === null || v === undefined) return '–';
  switch (how) {
    case 'fixed1': return Number(v).toFixed(1);
    case 'ms': return Number(v).toFixed(2) + ' ms';
    case 'seconds': return Number(v).toFixed(1) + ' s';
    case 'text': return String(v);
    default: return fmt_int(v);
  }
}
function dig(obj, path) { return path.split('.').reduce((o, k) => (o === null || o === undefined ? o : o[k]), obj); }
function short(key) { return typeof key === 'string' && key.length > 16 ? key.slice(0, 16) + '…' : String(key ?? '–'); }

function cell(row, text, attrs = {}) {
  const td = document.createElement('td');
  td.textContent = text;
  for (const [k, v] of Object.entries(attrs)) td.setAttribute(k, v);
  row.appendChild(td);
  return td;
}

function fill(tbody, rows, make) {
  tbody.replaceChildren(...rows.map((r) => { const tr = document.createElement('tr'); make(tr, r); return tr; }));
}

// ---- charts ----
const charts = {};
function make_charts() {
  if (typeof Chart === 'undefined') {
    errors.set('chart.js', '/web/chart.js did not load: no charts (install Debian\'s libjs-chart.js)');
    show_errors();
    return;
  }
  const line = (id, sets) => new Chart($(id), {
    type: 'line',
    data: { labels: [], datasets: sets.map(([label, color]) => ({ label, data: [], borderColor: color, backgroundColor: color, pointRadius: 0, borderWidth: 2, tension: 0.2 })) },
    options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } }, plugins: { legend: { display: sets.length > 1 } } },
  });
  charts.queue = line('#chart-queue', [['waiting', '#3b6fd8']]);
  charts.rate = line('#chart-rate', [['jobs/s', '#137333']]);
  charts.latency = line('#chart-latency', [['p50', '#3b6fd8'], ['p99', '#d93025']]);
}
function plot(chart, label, values) {
  if (!chart) return;
  chart.data.labels.push(label);
  values.forEach((v, i) => chart.data.datasets[i].data.push(v));
  if (chart.data.labels.length > history_points) {
    chart.data.labels.shift();
    chart.data.datasets.forEach((d) => d.data.shift());
  }
  chart.update('none');
}

// ---- the views ----
function show_summary(s) {
  for (const el of document.querySelectorAll('[data-field]'))
    el.textContent = format(dig(s, el.dataset.field), el.dataset.format);

  const states = $('#states');
  const head = document.createElement('tr');
  for (const title of ['state', 'now', 'entered']) {
    const th = document.createElement('th');
    th.textContent = title;
    head.appendChild(th);
  }
  states.replaceChildren(head, ...Object.entries(s.jobs_now).map(([state, n]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = state;
    tr.appendChild(th);
    cell(tr, fmt_int(n), { 'data-now': state });
    cell(tr, fmt_int(s.jobs_entered[state]), { 'data-state': state });
    return tr;
  }));
  fill($('#ledger tbody'), Object.entries(s.ledger), (tr, [kind, v]) => {
    tr.dataset.kind = kind;
    cell(tr, kind);
    cell(tr, fmt_int(v.accounts), { 'data-col': 'accounts' });
    cell(tr, fmt_int(v.balance), { 'data-col': 'balance' });
  });
  fill($('#queues tbody'), s.queue.by_client, (tr, q) => {
    cell(tr, short(q.client), { class: 'key', title: q.client });
    cell(tr, fmt_int(q.waiting));
  });
  if (s.queue.by_client.length === 0) {
    const tr = document.createElement('tr');
    cell(tr, 'no client is waiting', { colspan: '2', class: 'note' });
    $('#queues tbody').appendChild(tr);
  }
  const t = new Date(s.at_us / 1000).toLocaleTimeString();
  plot(charts.queue, t, [s.queue.waiting]);
  plot(charts.rate, t, [s.recent.jobs_per_s]);
  plot(charts.latency, t, [s.recent.p50_ms, s.recent.p99_ms]);
}

// The operators' standing orders on a node (admin actions): banned, drained, or none.
function orders_of(p) {
  return [p.banned ? 'banned' : '', p.drained ? 'drained' : ''].filter(Boolean).join(', ') || '–';
}

function show_providers(page) {
  const rows = page.items.filter((p) => p.role === 'provider');
  fill($('#providers tbody'), rows, (tr, p) => {
    const live = p.live || {};
    tr.dataset.key = p.key;
    cell(tr, p.name ?? '–', { 'data-col': 'name' });
    cell(tr, short(p.key), { class: 'key', title: p.key });
    cell(tr, p.device ?? '–');
    cell(tr, fmt_int(p.price), { 'data-col': 'price' });
    cell(tr, live.connected ? 'yes' : 'no', { 'data-col': 'connected', class: live.connected ? 'yes' : 'no' });
    cell(tr, format(live.silent_s, 'fixed1'), { 'data-col': 'silent_s' });
    cell(tr, fmt_int(live.credit), { 'data-col': 'credit' });
    cell(tr, fmt_int(live.load), { 'data-col': 'load' });
    cell(tr, fmt_int(live.done), { 'data-col': 'done' });
    cell(tr, fmt_int(live.reputation), { 'data-col': 'reputation',
                                         title: `${live.verified ?? 0} verified, ${live.disputes_lost ?? 0} disputes lost` });
    cell(tr, orders_of(p), { 'data-col': 'orders' });
    cell(tr, fmt_int(p.stake), { 'data-col': 'stake' });
    cell(tr, fmt_int(p.balance), { 'data-col': 'balance' });
  });
  $('#providers-more').hidden = page.next === null;
  fill($('#verifiers tbody'), page.items.filter((p) => p.role === 'verifier'), (tr, v) => {
    const live = v.live || {};
    tr.dataset.key = v.key;
    cell(tr, v.name ?? '–', { 'data-col': 'name' });
    cell(tr, short(v.key), { class: 'key', title: v.key });
    cell(tr, live.connected ? 'yes' : 'no', { 'data-col': 'connected', class: live.connected ? 'yes' : 'no' });
    cell(tr, format(live.silent_s, 'fixed1'), { 'data-col': 'silent_s' });
    cell(tr, fmt_int(live.credit), { 'data-col': 'credit' });
    cell(tr, fmt_int(live.load), { 'data-col': 'load' });
    cell(tr, fmt_int(live.done), { 'data-col': 'done' });
    cell(tr, orders_of(v), { 'data-col': 'orders' });
    cell(tr, fmt_int(v.stake), { 'data-col': 'stake' });
    cell(tr, fmt_int(v.balance), { 'data-col': 'balance' });
  });
}

// The operators' last actions (the audit trail): who did what, newest first.
function show_actions(page) {
  fill($('#actions tbody'), page.items, (tr, a) => {
    cell(tr, a.taken_at ?? '–');
    cell(tr, a.who, { 'data-col': 'who' });
    cell(tr, a.action, { 'data-col': 'action' });
    cell(tr, a.target ? short(a.target) : '–', { 'data-col': 'target', title: a.target });
    cell(tr, fmt_int(a.value), { 'data-col': 'value' });
  });
}

async function look_up(id) {
  await guarded('lookup', async () => {
    if (!/^[0-9]{1,18}$/.test(id)) throw new Error(`job lookup: '${id}' is not a job id (digits only)`);
    const j = await api('/api/jobs/' + id);
    const fields = ['id', 'state', 'attempt', 'client', 'provider', 'price', 'max_price', 'tier', 'submitted_at', 'updated_at'];
    fill($('#job-fields'), fields, (tr, k) => {
      const th = document.createElement('th');
      th.textContent = k;
      tr.appendChild(th);
      cell(tr, j[k] === null || j[k] === undefined ? '–' : String(j[k]), { 'data-job': k });
    });
    fill($('#timeline tbody'), j.timeline, (tr, e) => {
      cell(tr, String(e.seq));
      cell(tr, e.state, { 'data-col': 'state' });
      cell(tr, String(e.attempt));
      cell(tr, e.at ?? '–');
      cell(tr, e.detail ?? '');
    });
    $('#job').hidden = false;
  });
}

let token = null;
let timer = null;
let polls = 0;
let generation = 0; // a new interval starts a new loop; the old one stops at its next turn

async function poll(gen = generation) {
  await Promise.all([
    guarded('summary', async () => show_summary(await api('/api/summary'))),
    guarded('providers', async () => show_providers(await api('/api/providers?limit=100'))),
    guarded('actions', async () => show_actions(await api('/api/actions?limit=10'))),
  ]);
  document.body.dataset.polls = String(++polls); // the browser test waits on this
  $('#status').textContent = errors.size ? 'errors' : 'updated ' + new Date().toLocaleTimeString();
  if (gen === generation) timer = setTimeout(() => poll(gen), Number($('#interval').value));
}

function start() {
  $('#token-form').hidden = true;
  $('#main').hidden = false;
  make_charts();
  poll();
}

document.addEventListener('DOMContentLoaded', () => {
  token = take_token();
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    token = $('#token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem('haca-token', token);
    start();
  });
  $('#lookup-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    look_up($('#lookup-id').value.trim());
  });
  $('#interval').addEventListener('change', () => { clearTimeout(timer); poll(++generation); });
  // A new #token=... on this page (a link pasted into the same tab) replaces the old token.
  window.addEventListener('hashchange', () => {
    const t = take_token();
    if (!t || t === token) return;
    token = t;
    errors.clear();
    show_errors();
    if ($('#main').hidden) start();
    else { clearTimeout(timer); poll(++generation); }
  });
  if (token) start();
  else { $('#token-form').hidden = false; $('#status').textContent = 'needs the read token'; }
});
