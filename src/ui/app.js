// The ymesh status page: polls the node's feed (ui/state, documented in
// docs/operations.md) every two seconds and draws it. Plain DOM and SVG, no library.
// Every value from the node is set as text (room names are anyone's input).
'use strict';

const FEED = 'ui/state';
const EVERY_MS = 2000;
const TOKEN_KEY = 'ymesh-token';
const SVG = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const openPeers = new Set();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

function ago(ms, now) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + ' d ' + h + ' h';
  if (h) return h + ' h ' + m + ' min';
  if (m) return m + ' min ' + (s % 60) + ' s';
  return s + ' s';
}

function short(id) {
  if (!id) return '?';
  return id.length > 16 ? id.slice(0, 8) + '…' + id.slice(-6) : id;
}

// A link state's colour class in the charts.
function stateClass(state) {
  switch (state) {
    case 'connected': return 'connected';
    case 'pending': return 'pending';
    case 'connecting': case 'handshaking': case 'backing_off': return 'trying';
    case 'refused': case 'incompatible': case 'is_self': return 'refused';
    default: return 'none';
  }
}

// A progress bar's filled part (set through CSSOM: the page's CSP allows no style attribute).
function bar(pct) {
  const d = document.createElement('div');
  d.style.width = pct + '%';
  return d;
}

function chip(text, kind) {
  return el('span', { class: 'chip ' + (kind || ''), text });
}

// Rooms synced out of shared, as GET /peers counts them.
function progressOf(peer) {
  const rooms = peer.rooms || [];
  const shared = rooms.filter((r) => r.status !== 'not_shared');
  const synced = shared.filter((r) => r.status === 'synced').length;
  return { synced, shared: shared.length };
}

function renderNode(data) {
  const n = data.node;
  const facts = [
    ['Node id', el('span', { class: 'mono', text: n.node_id })],
    ['Version', n.version],
    ['Uptime', duration(n.uptime_s)],
    ['Addresses', (n.addresses || []).join(', ') || '–'],
    ['Store', n.stored ? 'durable (on disk)' : 'memory only (nothing is saved)'],
    ['Rooms in memory', n.rooms],
    ['Client connections', n.connections],
    ['Discovery', (n.discovery || []).join(', ') || 'off'],
  ];
  const dl = $('node-facts');
  dl.replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', {}, v)]));
}

function lineChart(container, points, label) {
  const W = 600, H = 90, P = 4;
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label });
  const max = Math.max(1, ...points.map((p) => p.y));
  if (points.length > 1) {
    const t0 = points[0].x, t1 = points[points.length - 1].x, span = Math.max(1, t1 - t0);
    const xy = points.map((p) => [
      P + (W - 2 * P) * (p.x - t0) / span,
      H - P - (H - 2 * P - 14) * p.y / max,
    ]);
    const line = xy.map(([x, y]) => x.toFixed(1) + ',' + y.toFixed(1)).join(' ');
    s.append(svg('polygon', { points: `${xy[0][0]},${H - P} ${line} ${xy[xy.length - 1][0]},${H - P}`, fill: '#3b6fd822' }));
    s.append(svg('polyline', { points: line, fill: 'none', stroke: '#3b6fd8', 'stroke-width': 2, 'vector-effect': 'non-scaling-stroke' }));
  }
  const scale = el('div', { class: 'scale muted', text: 'max ' + (Math.round(max * 10) / 10) });
  container.replaceChildren(scale, s);
}

function renderCharts(data) {
  const samples = (data.history && data.history.samples) || [];
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t_ms - samples[i - 1].t_ms) / 1000;
    if (dt <= 0) continue;
    rates.push({ x: samples[i].t_ms, y: Math.max(0, samples[i].updates - samples[i - 1].updates) / dt });
  }
  lineChart($('chart-updates'), rates, 'updates per second');
  $('rate-now').textContent = rates.length ? '(now ' + rates[rates.length - 1].y.toFixed(1) + '/s)' : '';
  lineChart($('chart-connections'), samples.map((s) => ({ x: s.t_ms, y: s.connections })), 'client connections');
  $('conn-now').textContent = '(now ' + data.node.connections + ')';

  // One row per peer, one cell per sample, coloured by the link state then. A peer is
  // labelled by its address until its node id is known: such samples join its node id's row.
  const alias = {};
  for (const p of data.peers || []) if (p.node_id) alias[p.address] = p.node_id;
  const rowOf = (label) => alias[label] || label;
  const peers = new Set();
  for (const s of samples) for (const p of Object.keys(s.peers || {})) peers.add(rowOf(p));
  const names = [...peers].sort();
  // Drawn at the container's own pixel width, so labels keep their size on any screen.
  const W = Math.max(240, $('chart-links').clientWidth || 600), ROW = 18, LABEL = 110;
  const s = svg('svg', { viewBox: `0 0 ${W} ${Math.max(1, names.length) * ROW + 4}`, class: 'links', role: 'img', 'aria-label': 'peer link states' });
  if (!names.length) {
    const t = svg('text', { x: 4, y: 13, 'font-size': 12, fill: '#6b7280' });
    t.textContent = 'no peers';
    s.append(t);
  }
  const cell = samples.length ? (W - LABEL) / samples.length : 0;
  names.forEach((name, row) => {
    const y = 2 + row * ROW;
    const t = svg('text', { x: 2, y: y + 11, 'font-size': 11, fill: '#1d2430' });
    t.textContent = short(name);
    s.append(t);
    samples.forEach((smp, i) => {
      let st;
      for (const [label, state] of Object.entries(smp.peers || {})) {
        if (rowOf(label) === name && (st === undefined || state === 'connected')) st = state;
      }
      s.append(svg('rect', { x: LABEL + i * cell, y, width: Math.max(cell, 0.5) + 0.3, height: ROW - 4, class: stateClass(st) }));
    });
  });
  $('chart-links').replaceChildren(s);
}

function renderPeers(data) {
  const now = data.now_ms;
  const list = $('peer-list');
  const peers = data.peers || [];
  if (!peers.length) {
    list.replaceChildren(el('p', { class: 'muted', text: 'No peers. Add one with --peer URL or [[peers]] in mesh.toml.' }));
    return;
  }
  list.replaceChildren(...peers.map((p) => {
    const key = p.node_id || p.address;
    const { synced, shared } = progressOf(p);
    const done = shared > 0 && synced === shared;
    const pct = shared ? Math.floor(100 * synced / shared) : 100;
    const stateKind = p.state === 'connected' ? 'ok' : (p.state === 'pending' || p.state === 'connecting' || p.state === 'handshaking' ? 'warn' : 'bad');
    const lastExchange = Math.max(0, ...(p.rooms || []).map((r) => r.last_exchange_ms || 0));
    const syncLabel = shared === 0 ? 'no shared rooms' : (done ? 'Up to Date' : pct + '% (' + synced + ' / ' + shared + ' rooms)');
    const sent = p.sent ? Object.values(p.sent).reduce((a, c) => a + (c.messages || 0), 0) : 0;
    const received = p.received ? Object.values(p.received).reduce((a, c) => a + (c.messages || 0), 0) : 0;
    const details = el('details', {},
      el('summary', { text: 'Rooms (' + synced + ' synced of ' + shared + ' shared)' }),
      el('ul', {}, ...(p.rooms || []).map((r) => el('li', { 'data-room': r.name },
        el('span', { class: 'mono', text: r.name }), ' ',
        chip(r.status.replace('_', ' '), r.status === 'synced' ? 'ok' : (r.status === 'pending' ? 'warn' : '')),
        r.unacked ? ' ' + r.unacked + ' unacknowledged' : '',
        r.pending_since_ms ? ' since ' + ago(r.pending_since_ms, now) : '',
      ))));
    details.open = openPeers.has(key);
    details.addEventListener('toggle', () => { if (details.open) openPeers.add(key); else openPeers.delete(key); });
    return el('div', { class: 'peer', 'data-peer': key, 'data-state': p.state, 'data-synced': String(done) },
      el('div', { class: 'peer-head' },
        el('span', { class: 'peer-id mono', title: key, text: short(p.node_id || p.address) }),
        chip(p.state.replace('_', ' '), stateKind),
        el('span', { class: 'sync-label', text: syncLabel })),
      el('div', { class: 'progress' + (done ? '' : ' pending') }, bar(pct)),
      el('div', { class: 'peer-meta' },
        el('span', { text: p.address }),
        el('span', { text: 'found by ' + (p.found_by || p.source) }),
        el('span', { text: 'transport ' + (p.transport || 'ws') + (p.relayed ? ' (relayed)' : '') }),
        el('span', { text: 'since ' + ago(p.since_ms, now) }),
        el('span', { text: 'last sync traffic ' + ago(lastExchange, now) }),
        el('span', { text: sent + ' sent / ' + received + ' received' }),
        p.last_error ? el('span', { class: 'bad', text: 'last error: ' + p.last_error }) : null),
      details);
  }));
}

function renderRooms(data) {
  const rows = data.rooms || [];
  const body = $('room-rows');
  if (!rows.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No rooms yet.' })));
    return;
  }
  body.replaceChildren(...rows.map((r) => {
    const where = r.loaded ? (r.stored ? 'stored, loaded' : (data.node.stored ? 'loaded (saving)' : 'memory only')) : 'stored';
    const status = r.store_error
      ? el('span', { class: 'chip bad', title: r.store_error.error || '', text: 'not saved: ' + (r.store_error.error || 'store error') })
      : chip('ok', 'ok');
    return el('tr', { 'data-room': r.name },
      el('td', { class: 'name mono', text: r.name }),
      el('td', { text: r.connections }),
      el('td', { text: bytes(r.bytes) }),
      el('td', { text: where + (r.pinned ? ', pinned' : '') }),
      el('td', {}, status));
  }));
}

function renderCommands(data) {
  const rows = data.commands || [];
  const body = $('command-rows');
  if (!rows.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: 'No commands issued here.' })));
    return;
  }
  body.replaceChildren(...rows.map((c) => el('tr', {},
    el('td', { text: c.kind }),
    el('td', { class: 'name mono', text: c.room === null || c.room === undefined ? 'all rooms' : c.room }),
    el('td', { text: ago(c.issued_ms, data.now_ms) }),
    el('td', { text: Object.entries(c.counts || {}).map(([k, v]) => k + ' ' + v).join(', ') || '–' }),
    el('td', {}, chip(c.done ? 'done' : 'waiting', c.done ? 'ok' : 'warn')))));
}

function renderSummary(data) {
  const peers = data.peers || [];
  // A device that dialed in and went away (a laptop asleep) is offline, not down.
  const offline = peers.filter((p) => p.state === 'offline').length;
  const down = peers.filter((p) => !['connected', 'is_self', 'offline'].includes(p.state)).length;
  const behind = peers.filter((p) => { const g = progressOf(p); return g.synced < g.shared; }).length;
  const s = $('summary');
  if (!peers.length) { s.className = 'chip ok'; s.textContent = 'single node, ' + data.node.rooms + ' rooms'; }
  else if (down) { s.className = 'chip bad'; s.textContent = down + ' of ' + peers.length + ' peers down'; }
  else if (offline) { s.className = 'chip warn'; s.textContent = offline + ' of ' + peers.length + (peers.length === 1 ? ' peer' : ' peers') + ' offline'; }
  else if (behind) { s.className = 'chip warn'; s.textContent = 'syncing with ' + behind + (behind === 1 ? ' peer' : ' peers'); }
  else { s.className = 'chip ok'; s.textContent = 'Up to Date with ' + peers.length + (peers.length === 1 ? ' peer' : ' peers'); }
}

function render(data) {
  renderSummary(data);
  renderNode(data);
  renderCharts(data);
  renderPeers(data);
  renderRooms(data);
  renderCommands(data);
  document.body.dataset.updated = String(data.now_ms);
}

function showLogin(message) {
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('summary').textContent = 'sign in';
}

let timer = null;

async function poll() {
  clearTimeout(timer);
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  try {
    const res = await fetch(FEED, { headers, cache: 'no-store' });
    if (res.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      showLogin(token ? 'That token was not accepted.' : '');
      $('live').className = 'live off';
      return; // Polling resumes once a token is entered.
    }
    const body = await res.json();
    if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
    $('login').hidden = true;
    $('main').hidden = false;
    render(body.data);
    $('live').className = 'live on';
    $('live').title = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('live').className = 'live off';
    $('live').title = 'feed unavailable: ' + e.message;
  }
  timer = setTimeout(poll, EVERY_MS);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value);
    $('token').value = '';
    poll();
  });
  poll();
});
