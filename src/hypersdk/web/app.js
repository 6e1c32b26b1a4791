// The hypersdk dashboard: jobs with live progress, details with a throughput chart, cancel,
// schedules, webhooks and status. Live through /ws, reconnecting with backoff. With auth on,
// the token is asked once and kept in this browser (localStorage).
'use strict';

const state = { jobs: new Map(), samples: new Map(), selected: null, socket: null, retry: 1000 };
const $ = (selector) => document.querySelector(selector);
const text = (value) => (value === null || value === undefined ? '' : String(value));

function token() { return localStorage.getItem('hypersdk-token') || ''; }

async function api(method, path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 401) { askToken('This daemon needs an API token.'); throw new Error('unauthorized'); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function askToken(message) {
  $('#login').hidden = false;
  $('#app').hidden = true;
  $('#login-error').textContent = message;
}

$('#login').addEventListener('submit', (event) => {
  event.preventDefault();
  localStorage.setItem('hypersdk-token', $('#token').value.trim());
  $('#login').hidden = true;
  $('#app').hidden = false;
  start();
});

function size(bytes) {
  let n = bytes || 0;
  for (const unit of ['B', 'KiB', 'MiB', 'GiB', 'TiB']) {
    if (n < 1024 || unit === 'TiB') return unit === 'B' ? `${n} B` : `${n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return `${n}`;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : text(child));
  return node;
}

// -- jobs ------------------------------------------------------------------------------

function remember(job) {
  state.jobs.set(job.id, job);
  const p = job.progress;
  if (p.stage === 'conversion' && p.current_bytes > 0) {
    const samples = state.samples.get(job.id) || [];
    const at = Date.parse(job.updated_at) / 1000;
    if (!samples.length || samples[samples.length - 1].bytes !== p.current_bytes) samples.push({ at, bytes: p.current_bytes });
    state.samples.set(job.id, samples);
  }
}

function renderJobs() {
  const rows = [...state.jobs.values()].sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, 100);
  $('#jobs tbody').replaceChildren(...rows.map((job) => {
    const p = job.progress;
    const fill = el('div');
    fill.style.width = `${p.percent_complete}%`;  // a property, not a style attribute: the page's CSP forbids those
    const bar = el('div', { class: `bar ${job.status}`, role: 'progressbar', 'aria-valuenow': p.percent_complete.toFixed(1) },
      fill);
    const active = job.status === 'pending' || job.status === 'running';
    const cancel = active ? el('button', { class: 'cancel', onclick: (e) => { e.stopPropagation(); cancelJob(job.id); } }, 'Cancel') : '';
    const cutover = job.status === 'running' && p.stage === 'precopy'  // a warm job: cut over now
      ? el('button', { class: 'cutover', onclick: (e) => { e.stopPropagation(); cutoverJob(job.id); } }, 'Cut over') : '';
    return el('tr', { class: 'job', 'data-id': job.id, onclick: () => { state.selected = job.id; renderDetail(); } },
      el('td', {}, job.definition.name || job.definition.vm_path),
      el('td', { class: `status-${job.status}` }, job.status),
      el('td', {}, p.stage),
      el('td', {}, bar, ` ${p.percent_complete.toFixed(1)}%`),
      el('td', {}, p.rate_bytes_per_second ? `${size(p.rate_bytes_per_second)}/s` : ''),
      el('td', {}, cutover, cancel));
  }));
  renderDetail();
}

async function cancelJob(id) {
  try {
    const answer = await api('POST', '/jobs/cancel', { job_ids: [id] });
    if (answer.errors[id]) alert(`${id}: ${answer.errors[id]}`);
  } catch (error) { alert(error.message); }
}

async function cutoverJob(id) {
  if (!confirm('Shut the source down now, copy its last changes and start the target?')) return;
  try {
    await api('POST', `/jobs/${encodeURIComponent(id)}/cutover`);
  } catch (error) { alert(error.message); }
}

async function discardJob(id) {
  if (!confirm('Remove what this job kept? It can no longer be resumed.')) return;
  try {
    await api('POST', `/jobs/${encodeURIComponent(id)}/discard`);
    state.jobs.set(id, await api('GET', `/jobs/${encodeURIComponent(id)}`));
    renderJobs();
  } catch (error) { alert(error.message); }
}

// A bar per disk being copied (they go at once), or the one disk of the older progress shape.
function diskBars(p) {
  const disks = (p.disks && p.disks.length) ? p.disks : (p.disk_count ? [{
    index: p.disk_index, label: `${p.disk_index + 1} of ${p.disk_count}`, current_bytes: p.disk_current_bytes,
    total_bytes: p.disk_total_bytes }] : []);
  if (!disks.length) return '-';
  return el('div', {}, ...disks.map((d) => {
    const fill = el('div');
    fill.style.width = `${d.total_bytes ? (100 * d.current_bytes) / d.total_bytes : 0}%`;
    return el('div', { class: 'disk' }, el('div', { class: 'bar' }, fill),
      ` ${d.label}: ${size(d.current_bytes)} of ${size(d.total_bytes)}`);
  }), p.resumed_at_bytes ? el('div', {}, `resumed at ${size(p.resumed_at_bytes)}`) : '');
}

function renderDetail() {
  const job = state.jobs.get(state.selected);
  $('#detail').hidden = !job;
  if (!job) return;
  $('#detail-id').textContent = job.id;
  const fields = [['VM', job.definition.vm_path], ['Status', job.status], ['Stage', job.progress.stage],
    ['Now', job.progress.message || '-'],
    ['Copied', `${size(job.progress.current_bytes)} of ${size(job.progress.total_bytes)}`],
    ['Disks', diskBars(job.progress)],
    ...(job.progress.passes && job.progress.passes.length ? [['Warm passes', el('div', {},
      ...job.progress.passes.map((w) => el('div', {}, `${w.number}${w.full ? ' (full)' : ''}: ${size(w.changed_bytes)}`
        + ` changed, ${size(w.read_bytes)} read in ${w.seconds.toFixed(1)} s`)),
      job.progress.next_pass_at ? el('div', {}, `next pass at ${job.progress.next_pass_at}`) : '')]] : []),
    ['Created', job.created_at], ['Started', job.started_at], ['Ended', job.completed_at]];
  if (job.error) fields.push(['Error', el('pre', {}, job.error)]);  // a boot check's error ends with console lines
  const kept = (job.result && job.result.kept) || [];
  if (kept.length && (job.status === 'failed' || job.status === 'cancelled')) {  // a partial copy, a domain that did not boot
    fields.push(['Kept', el('div', {}, ...kept.map((k) => el('div', {}, `${k.kind} ${k.path || k.name}`)),
      el('button', { class: 'discard', onclick: () => discardJob(job.id) }, 'Discard'))]);
  }
  if (job.result) fields.push(['Result', el('pre', {}, JSON.stringify(job.result, null, 2))]);
  $('#detail-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  drawThroughput(state.samples.get(job.id) || []);
}

// Bytes per second between successive progress samples, over the time of the copy.
function drawThroughput(samples) {
  const canvas = $('#throughput');
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = '#6b7280';
  g.font = '12px system-ui';
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].at - samples[i - 1].at;
    if (dt > 0) rates.push({ at: samples[i].at, rate: (samples[i].bytes - samples[i - 1].bytes) / dt });
  }
  if (!rates.length) { g.fillText('throughput: waiting for the copy', 10, 20); return; }
  const t0 = samples[0].at, span = Math.max(1, rates[rates.length - 1].at - t0);
  const top = Math.max(...rates.map((r) => r.rate)) * 1.1 || 1;
  g.fillText(`${size(top / 1.1)}/s peak`, 10, 14);
  g.strokeStyle = '#3b82f6';
  g.lineWidth = 2;
  g.beginPath();
  rates.forEach((r, i) => {
    const x = 10 + ((r.at - t0) / span) * (canvas.width - 20);
    const y = canvas.height - 10 - (r.rate / top) * (canvas.height - 30);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}

// -- schedules, webhooks, status --------------------------------------------------------

async function loadSchedules() {
  const { schedules } = await api('GET', '/schedules');
  $('#schedules tbody').replaceChildren(...schedules.map((s) => el('tr', {},
    el('td', {}, s.id), el('td', {}, s.schedule), el('td', {}, s.timezone), el('td', {}, s.next_run || '(disabled)'),
    el('td', {}, s.run_count),
    el('td', {}, el('button', { onclick: () => toggleSchedule(s) }, s.enabled ? 'Disable' : 'Enable')))));
}

async function toggleSchedule(s) {
  try { await api('POST', `/schedules/${encodeURIComponent(s.id)}/${s.enabled ? 'disable' : 'enable'}`); } catch (error) { alert(error.message); }
  loadSchedules();
}

async function loadWebhooks() {
  const { webhooks } = await api('GET', '/webhooks');
  const rows = await Promise.all(webhooks.map(async (w, i) => {
    const { deliveries } = await api('GET', `/webhooks/${i}/deliveries`);
    const recent = deliveries.slice(0, 5).map((d) => `${d.event} ${d.state}`).join(', ');
    const counts = Object.entries(w.deliveries || {}).map(([k, v]) => `${k} ${v}`).join(', ');
    return el('tr', {}, el('td', {}, i), el('td', {}, w.url), el('td', {}, w.events.join(', ') || 'all'),
      el('td', {}, counts), el('td', {}, recent));
  }));
  $('#webhooks tbody').replaceChildren(...rows);
}

function showStatus(s) {
  $('#status').textContent = `${s.running_jobs} running · ${s.pending_jobs} pending · ${s.completed_jobs} completed · `
    + `${s.failed_jobs} failed · workers ${s.active_workers}/${s.worker_count} · v${s.version}`;
}

// -- live --------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = token() ? `?token=${encodeURIComponent(token())}` : '';
  const socket = new WebSocket(`${scheme}://${location.host}/ws${query}`);
  state.socket = socket;
  socket.onopen = () => { state.retry = 1000; $('#live').className = 'on'; $('#live').textContent = 'live'; };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === 'status') showStatus(message.data);
    else if (message.type === 'jobs') { message.data.jobs.forEach(remember); renderJobs(); }
    else if (message.type === 'job_update') { remember(message.data); renderJobs(); }
    else if (message.type === 'schedule_event') loadSchedules();
  };
  socket.onclose = () => {
    $('#live').className = 'off';
    $('#live').textContent = `offline, retrying in ${Math.round(state.retry / 1000)} s`;
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 30000);  // backoff: 1, 2, 4, ... 30 s
  };
}

async function start() {
  try {
    showStatus(await api('GET', '/status'));
    (await api('POST', '/jobs/query', { limit: 100 })).jobs.forEach(remember);
    renderJobs();
    await Promise.all([loadSchedules(), loadWebhooks()]);
  } catch (error) {
    if (error.message !== 'unauthorized') $('#status').textContent = error.message;
    return;
  }
  if (!state.socket) {
    connect();
    setInterval(() => loadWebhooks().catch(() => {}), 10000);
  }
}

start();
