// Weft console: the pages over weftd's /api (see crates/control/README.md for the shapes). Plain
// JavaScript, no build step; the graph is Cytoscape.js, the charts uPlot, both served by weftd.
'use strict';

const $ = (sel) => document.querySelector(sel);
const POLL_MS = 5000;

// What the pages last drew; the browser test reads it (window.weftConsole).
const state = { graph: null, cy: null, charts: {}, metrics: null, trace: null, timers: [] };
window.weftConsole = state;

async function api(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmt = {
  rps: (v) => (v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)),
  pct: (v) => `${(100 * v).toFixed(v > 0 && v < 0.01 ? 2 : 1)}%`,
  ms: (v) => (v == null ? '-' : v >= 100 ? `${v.toFixed(0)}ms` : `${v.toFixed(1)}ms`),
  us: (us) => (us >= 1e6 ? `${(us / 1e6).toFixed(2)}s` : `${(us / 1000).toFixed(us < 10000 ? 2 : 1)}ms`),
  bytes: (b) => (b >= 1e6 ? `${(b / 1e6).toFixed(1)}MB/s` : b >= 1e3 ? `${(b / 1e3).toFixed(1)}kB/s` : `${b.toFixed(0)}B/s`),
};

// ---- tabs -----------------------------------------------------------------------------------------

function route() {
  const [tab, arg] = (location.hash.slice(1) || 'graph').split('/');
  for (const t of ['graph', 'metrics', 'traces', 'config']) {
    $(`#tab-${t}`).hidden = t !== tab;
    document.querySelector(`nav a[data-tab=${t}]`).classList.toggle('active', t === tab);
  }
  state.timers.forEach(clearInterval);
  state.timers = [];
  const every = (f) => { f(); state.timers.push(setInterval(f, POLL_MS)); };
  if (tab === 'graph') every(loadGraph);
  else if (tab === 'metrics') { pickFromHash(arg); every(loadMetrics); }
  else if (tab === 'traces') { if (arg) openTrace(arg); else searchTraces(); }
  else if (tab === 'config') every(loadConfig);
}

async function loadStatus() {
  try {
    const s = await api('/api/status');
    const latest = s.window && s.window.latest_scrape_ms;
    const age = latest ? `, last scrape ${Math.max(0, Math.round((Date.now() - latest) / 1000))}s ago` : '';
    $('#status').textContent = `metrics: ${s.metrics}${age} · traces: ${s.traces}`;
  } catch (e) {
    $('#status').textContent = `weftd unreachable: ${e.message}`;
  }
}

// ---- graph ----------------------------------------------------------------------------------------

function health(ratio) {
  return ratio > 0.1 ? 'bad' : ratio > 0 ? 'warn' : 'ok';
}

function edgeLabel(e) {
  if (e.protocol === 'tcp') return fmt.bytes(e.bytes);
  const parts = [`${fmt.rps(e.rps)} rps`];
  if (e.error_ratio > 0) parts.push(`${fmt.pct(e.error_ratio)} err`);
  if (e.p99_ms != null) parts.push(`p99 ${fmt.ms(e.p99_ms)}`);
  return parts.join(' · ');
}

function graphElements(g) {
  const els = [];
  const apps = new Set();
  for (const n of g.nodes) {
    const data = { ...n, health: health(n.error_ratio) };
    if (n.kind === 'workload') {
      const app = `app:${n.namespace}/${n.app || n.workload}`;
      if (!apps.has(app)) {
        apps.add(app);
        els.push({ data: { id: app, kind: 'app', label: n.app || n.workload } });
      }
      data.parent = app;
      data.label = n.version && n.version !== 'unknown' ? n.version : n.workload;
    } else if (n.kind === 'service') {
      data.label = n.app;
    } else {
      data.label = 'unknown';
    }
    els.push({ data });
  }
  for (const e of g.edges) {
    els.push({
      data: { ...e, id: `${e.source}>${e.target}>${e.protocol}`, label: edgeLabel(e), health: health(e.error_ratio) },
    });
  }
  return els;
}

function makeGraph() {
  const cy = cytoscape({
    container: $('#graph'),
    wheelSensitivity: 0.3,
    style: [
      { selector: 'node', style: {
        label: 'data(label)', 'font-size': 11, 'text-valign': 'bottom', 'text-margin-y': 4,
        'background-color': '#fff', 'border-width': 2, 'border-color': '#3e8635', width: 28, height: 28 } },
      { selector: 'node[kind = "service"]', style: { shape: 'triangle', 'border-color': '#8a8d90' } },
      { selector: 'node[kind = "unknown"]', style: { shape: 'diamond', 'border-color': '#8a8d90' } },
      { selector: 'node[health = "warn"]', style: { 'border-color': '#f0ab00', 'border-width': 3 } },
      { selector: 'node[health = "bad"]', style: { 'border-color': '#c9190b', 'border-width': 4, 'background-color': '#fde2e0' } },
      { selector: ':parent', style: {
        label: 'data(label)', 'text-valign': 'top', 'font-weight': 'bold', 'background-color': '#f2f5fa',
        'border-color': '#b8bbbe', 'border-width': 1, shape: 'round-rectangle', padding: 12 } },
      { selector: 'edge', style: {
        width: 1.5, 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'line-color': '#3e8635',
        'target-arrow-color': '#3e8635', label: 'data(label)', 'font-size': 9, 'text-background-color': '#fff',
        'text-background-opacity': 0.85, 'text-rotation': 'autorotate' } },
      { selector: 'edge[protocol = "tcp"]', style: { 'line-style': 'dashed', 'line-color': '#0066cc', 'target-arrow-color': '#0066cc' } },
      { selector: 'edge[health = "warn"]', style: { 'line-color': '#f0ab00', 'target-arrow-color': '#f0ab00' } },
      { selector: 'edge[health = "bad"]', style: { 'line-color': '#c9190b', 'target-arrow-color': '#c9190b', width: 2.5 } },
      { selector: 'edge.no-label', style: { label: '' } },
    ],
  });
  cy.on('tap', 'node', (ev) => {
    const d = ev.target.data();
    if (d.kind === 'workload') location.hash = `#metrics/workload:${d.namespace}:${d.workload}`;
    else if (d.kind === 'service') location.hash = `#metrics/service:${d.namespace}:${d.app}`;
  });
  return cy;
}

async function loadGraph() {
  loadStatus();
  let g;
  try {
    g = await api(`/api/graph?window=${$('#graph-window').value}`);
  } catch (e) {
    $('#graph-summary').textContent = e.message;
    return;
  }
  state.graph = g;
  const cy = state.cy || (state.cy = makeGraph());
  const els = graphElements(g);
  const ids = els.map((e) => e.data.id).sort().join('|');
  if (ids !== state.graphIds) {
    // The shape changed: draw it again and lay it out, callers on the left, callees to the right.
    cy.elements().remove();
    cy.add(els);
    const roots = cy.nodes().filter((n) => !n.isParent() && n.incomers('edge').length === 0);
    cy.layout({ name: 'breadthfirst', directed: true, roots, spacingFactor: 1.1, padding: 30, animate: false,
      transform: (node, pos) => ({ x: pos.y, y: pos.x }) }).run();
    state.graphIds = ids;
  } else {
    for (const e of els) cy.getElementById(e.data.id).data(e.data);
  }
  cy.edges().toggleClass('no-label', !$('#graph-labels').checked);
  const rps = g.edges.filter((e) => e.source === 'unknown' || !g.edges.some((x) => x.target === e.source))
    .reduce((s, e) => s + e.rps, 0);
  $('#graph-summary').textContent =
    `${g.nodes.filter((n) => n.kind === 'workload').length} workloads, ${g.edges.length} edges, ` +
    `${fmt.rps(rps)} req/s in · ${new Date(g.timestamp_ms).toLocaleTimeString()}`;
  $('#graph-empty').hidden = g.nodes.length > 0;
}

// ---- metrics --------------------------------------------------------------------------------------

function pickFromHash(arg) {
  // #metrics/<kind>:<namespace>:<name>
  if (arg) {
    const [kind, ns, name] = decodeURIComponent(arg).split(':');
    $('#m-kind').value = kind;
    state.metricsPick = { kind, namespace: ns, name };
  }
}

function fillNames() {
  const kind = $('#m-kind').value;
  const g = state.graph;
  const names = new Map();
  for (const n of (g && g.nodes) || []) {
    if (n.kind !== kind) continue;
    const name = kind === 'workload' ? n.workload : n.app;
    names.set(`${n.namespace}:${name}`, `${name}.${n.namespace}`);
  }
  const pick = state.metricsPick;
  if (pick && pick.kind === kind) names.set(`${pick.namespace}:${pick.name}`, `${pick.name}.${pick.namespace}`);
  const sel = $('#m-name');
  const current = sel.value || (pick && `${pick.namespace}:${pick.name}`);
  const keys = [...names.keys()].sort();
  if (keys.join('|') !== [...sel.options].map((o) => o.value).join('|')) {
    sel.replaceChildren(...keys.map((k) => el('option', { value: k }, names.get(k))));
  }
  if (current && keys.includes(current)) sel.value = current;
}

function chart(id, series, data) {
  const box = $(`#${id}`);
  const opts = {
    width: Math.max(300, box.clientWidth || 480), height: 220,
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false,
      points: { show: true, size: 3, fill: stroke } }))],
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
  };
  const old = state.charts[id];
  if (old && old.series.length === opts.series.length) {
    old.setData(data);
  } else {
    if (old) old.destroy();
    box.replaceChildren();
    state.charts[id] = new uPlot(opts, data, box);
  }
}

async function loadMetrics() {
  loadStatus();
  if (!state.graph) {
    try { state.graph = await api('/api/graph?window=1h'); } catch (e) { /* names come later */ }
  }
  fillNames();
  const v = $('#m-name').value;
  if (!v) return;
  const [namespace, name] = v.split(':');
  const q = new URLSearchParams({ kind: $('#m-kind').value, name, namespace,
    direction: $('#m-direction').value, range: $('#m-range').value });
  let m;
  try {
    m = await api(`/api/metrics?${q}`);
  } catch (e) {
    $('#status').textContent = e.message;
    return;
  }
  state.metrics = m;
  chart('chart-rps', [['req/s', '#0066cc']], [m.t, m.rps]);
  chart('chart-success', [['success %', '#3e8635']], [m.t, m.success_rate.map((x) => (x == null ? null : 100 * x))]);
  chart('chart-latency', [['P50', '#73bcf7'], ['P90', '#f0ab00'], ['P99', '#c9190b']], [m.t, m.p50_ms, m.p90_ms, m.p99_ms]);
}

// ---- traces ---------------------------------------------------------------------------------------

async function fillTraceServices() {
  try {
    const { services } = await api('/api/trace-services');
    const sel = $('#t-service');
    const cur = sel.value;
    sel.replaceChildren(el('option', { value: '' }, '(any)'), ...services.map((s) => el('option', { value: s }, s)));
    sel.value = cur;
  } catch (e) { /* the search reports the source's failure */ }
}

async function searchTraces(ev) {
  if (ev) ev.preventDefault();
  $('#waterfall').hidden = true;
  $('#trace-list').hidden = false;
  fillTraceServices();
  const q = new URLSearchParams({ limit: $('#t-limit').value || '20', minDurationMs: $('#t-min').value || '0' });
  if ($('#t-service').value) q.set('service', $('#t-service').value);
  if ($('#t-errors').checked) q.set('errorsOnly', 'true');
  const body = $('#trace-list tbody');
  try {
    const r = await api(`/api/traces?${q}`);
    $('#t-source').textContent = `from ${r.source}`;
    body.replaceChildren(...r.traces.map((t) => el('tr', { class: t.error ? 'error' : '', 'data-trace': t.trace_id,
      onclick: () => { location.hash = `#traces/${t.trace_id}`; } },
      el('td', {}, new Date(t.start_us / 1000).toLocaleTimeString()),
      el('td', {}, `${t.root_service}: ${t.root_name}`),
      el('td', {}, fmt.us(t.duration_us)),
      el('td', {}, t.spans),
      el('td', {}, t.services.join(', ')))));
    $('#trace-empty').hidden = r.traces.length > 0;
  } catch (e) {
    $('#t-source').textContent = e.message;
  }
}

async function openTrace(id) {
  $('#trace-list').hidden = true;
  $('#trace-empty').hidden = true;
  $('#waterfall').hidden = false;
  let t;
  try {
    t = await api(`/api/traces/${encodeURIComponent(id)}`);
  } catch (e) {
    $('#wf-title').textContent = e.message;
    $('#wf-rows').replaceChildren();
    return;
  }
  state.trace = t;
  const spans = t.spans;
  const start = Math.min(...spans.map((s) => s.timestamp || Infinity));
  const end = Math.max(...spans.map((s) => (s.timestamp || start) + (s.duration || 0)));
  const total = Math.max(1, end - start);
  // Depth-first from the roots (spans whose parent is not in the trace), children by start time.
  const byParent = new Map();
  const ids = new Set(spans.map((s) => s.id));
  for (const s of spans) {
    const p = s.parentId && ids.has(s.parentId) ? s.parentId : null;
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(s);
  }
  for (const list of byParent.values()) list.sort((a, b) => (a.timestamp || 0) - (b.timestamp || 0));
  const rows = [];
  const walk = (parent, depth) => {
    for (const s of byParent.get(parent) || []) {
      if (rows.length > 5000) return;
      rows.push([s, depth]);
      if (s.id !== parent) walk(s.id, depth + 1);
    }
  };
  walk(null, 0);
  $('#wf-title').textContent = `Trace ${t.trace_id}: ${spans.length} spans, ${fmt.us(total)}`;
  $('#wf-rows').replaceChildren(...rows.map(([s, depth]) => {
    const failed = s.tags && (s.tags.error !== undefined || Number(s.tags['http.status_code']) >= 500);
    const left = (100 * ((s.timestamp || start) - start)) / total;
    const width = (100 * (s.duration || 0)) / total;
    const tags = el('table', { class: 'tags', hidden: '' },
      ...Object.entries({ kind: s.kind, id: s.id, parentId: s.parentId, ...(s.tags || {}) })
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v))));
    const row = el('div', { class: `span${failed ? ' failed' : ''}`, 'data-span': s.id },
      el('div', { class: 'name', style: `padding-left:${depth * 1.2}em`,
        title: s.name }, `${(s.localEndpoint && s.localEndpoint.serviceName) || '?'} ${s.name || ''}`),
      el('div', { class: 'track' },
        el('div', { class: 'bar', style: `left:${left}%;width:${width}%` }),
        el('span', { class: 'dur', style: `left:${Math.min(left + width, 90)}%;margin-left:4px` }, fmt.us(s.duration || 0))),
      tags);
    row.addEventListener('click', () => { tags.hidden = !tags.hidden; });
    return row;
  }));
}

// ---- config ---------------------------------------------------------------------------------------

async function loadConfig() {
  loadStatus();
  let c;
  try { c = await api('/api/config'); } catch (e) { $('#status').textContent = e.message; return; }
  $('#proxies tbody').replaceChildren(...c.proxies.map((p) => el('tr', {},
    el('td', {}, p.node_id), el('td', {}, `${p.identity.workload}.${p.identity.namespace}`),
    ...['CDS', 'LDS', 'EDS', 'RDS'].map((t) => {
      const s = p.types[t] || {};
      return el('td', { class: (s.status || '').replace(' ', '-'), title: s.nack || '' }, s.status || '-');
    }),
    el('td', {}, p.identity.stats_address || '-'))));
  $('#findings').replaceChildren(...(c.findings.length ? c.findings.map((f) => el('li', { class: f.severity }, f.message))
    : [el('li', { class: 'muted' }, 'No problems found.')]));
  $('#generation').textContent = `(generation ${c.generation})`;
  $('#resources tbody').replaceChildren(...c.resources.map((r) => el('tr', {},
    el('td', {}, r.kind), el('td', {}, r.metadata.namespace || ''),
    el('td', {}, el('details', {}, el('summary', {}, r.metadata.name), el('pre', {}, JSON.stringify(r.spec, null, 2)))),
    el('td', { class: 'muted' }, `${r.file}:${r.line}`))));
}

// ---- wiring ---------------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
$('#graph-window').addEventListener('change', loadGraph);
$('#graph-labels').addEventListener('change', () => state.cy && state.cy.edges().toggleClass('no-label', !$('#graph-labels').checked));
$('#m-kind').addEventListener('change', () => { state.metricsPick = null; $('#m-name').replaceChildren(); loadMetrics(); });
for (const id of ['#m-name', '#m-direction', '#m-range']) $(id).addEventListener('change', loadMetrics);
$('#trace-search').addEventListener('submit', searchTraces);
route();
