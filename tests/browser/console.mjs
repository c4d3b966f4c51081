// Drives weftd's console in Debian's headless Chromium with Playwright, as a user would, while the
// demo mesh serves traffic; writes a screenshot of each page into OUT_DIR and one JSON line of what it
// saw on stdout. Run by tests/console.rs:
//
//   node tests/browser/console.mjs http://127.30.0.1:20001 OUT_DIR [--require-trace]
//
// Exit 0 when every check passed; 1 with the reason on stderr otherwise.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, outDir, ...flags] = process.argv.slice(2);
if (!url || !outDir) {
  console.error('usage: console.mjs CONSOLE_URL OUT_DIR [--require-trace]');
  process.exit(2);
}
const requireTrace = flags.includes('--require-trace');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 60_000;

// The six Bookinfo workloads and the calls between them, through their services.
const WORKLOADS = ['productpage-v1', 'details-v1', 'reviews-v1', 'reviews-v2', 'reviews-v3', 'ratings-v1'];
const CALLS = [
  ['productpage-v1', 'details', 'details-v1'],
  ['productpage-v1', 'reviews', 'reviews-v1'],
  ['productpage-v1', 'reviews', 'reviews-v2'],
  ['productpage-v1', 'reviews', 'reviews-v3'],
  ['reviews-v2', 'ratings', 'ratings-v1'],
  ['reviews-v3', 'ratings', 'ratings-v1'],
];

mkdirSync(outDir, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'weft-chromium-'));
const started = Date.now();
const seen = { screenshots: [] };
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const shot = async (name) => {
    const path = join(outDir, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    seen.screenshots.push(path);
  };

  // 1. The graph: six workloads, the six calls, each edge with a rate.
  await page.goto(`${url}/#graph`);
  const graph = await page.waitForFunction(([workloads, calls]) => {
    const cy = window.weftConsole && window.weftConsole.cy;
    if (!cy) return false;
    const nodes = cy.nodes().map((n) => n.data());
    const have = new Set(nodes.filter((n) => n.kind === 'workload').map((n) => n.workload));
    if (!workloads.every((w) => have.has(w))) return false;
    const edge = (s, t) => cy.edges().map((e) => e.data()).find((e) => e.source === s && e.target === t);
    const missing = calls.filter(([from, svc, to]) => {
      const s = `service:${svc}.default.svc.cluster.local`;
      const a = edge(`workload:default/${from}`, s);
      const b = edge(s, `workload:default/${to}`);
      return !(a && b && a.rps > 0 && b.rps > 0);
    });
    if (missing.length) return false;
    return { workloads: [...have].sort(), edges: cy.edges().length,
      labels: cy.edges().map((e) => `${e.data('source')} -> ${e.data('target')}: ${e.data('label')}`) };
  }, [WORKLOADS, CALLS], { timeout: WAIT_MS, polling: 500 });
  seen.graph = await graph.jsonValue();
  await page.waitForTimeout(300); // let the layout's last frame paint before the picture
  await shot('graph');

  // 2. Golden metrics: productpage's inbound request rate has a point above zero, drawn by uPlot.
  await page.goto(`${url}/#metrics/workload:default:productpage-v1`);
  const metrics = await page.waitForFunction(() => {
    const m = window.weftConsole.metrics;
    const drawn = document.querySelectorAll('#tab-metrics canvas').length;
    if (!m || drawn < 3) return false;
    const rps = m.rps.filter((v) => v > 0);
    const p99 = m.p99_ms.filter((v) => v != null);
    return rps.length && p99.length ? { points: m.t.length, with_traffic: rps.length, last_rps: rps[rps.length - 1], last_p99_ms: p99[p99.length - 1] } : false;
  }, null, { timeout: WAIT_MS, polling: 500 });
  seen.metrics = await metrics.jsonValue();
  await shot('metrics');

  // 3. Traces: the list, then one trace's waterfall (when the proxies have reported spans).
  await page.goto(`${url}/#traces`);
  // The newest trace may still be missing the spans of sidecars that have not flushed yet, so the
  // test opens the first listed trace that already has more than one span.
  let rows = 0;
  let pick = -1;
  const deadline = Date.now() + (requireTrace ? WAIT_MS : 5_000);
  while (Date.now() < deadline) {
    // Rows and their span counts from one read: two reads can straddle a refresh of the list.
    const counts = await page.locator('#trace-list tbody tr td:nth-child(4)').allTextContents();
    rows = counts.length;
    pick = counts.findIndex((c) => Number(c) >= 2);
    if (pick >= 0 || (rows > 0 && !requireTrace)) break;
    // Search again, then give the list a second to come back: counted right after a click, the
    // table is always the empty one the search hides while it fetches.
    await page.click('#trace-search button');
    await page.waitForTimeout(1000);
  }
  seen.traces = { listed: rows };
  await shot('traces');
  if (rows > 0) {
    await page.locator('#trace-list tbody tr').nth(Math.max(pick, 0)).click();
    await page.waitForSelector('#wf-rows .span', { timeout: WAIT_MS });
    const spans = await page.locator('#wf-rows .span').count();
    await page.locator('#wf-rows .span').first().click();
    const tags = await page.locator('#wf-rows table.tags:not([hidden]) tr').count();
    seen.traces.opened = { spans, tags_of_first: tags };
    await shot('trace');
  } else if (requireTrace) {
    throw new Error('no trace listed');
  }

  // 4. Config: the six proxies in sync.
  await page.goto(`${url}/#config`);
  await page.waitForFunction(() => document.querySelectorAll('#proxies tbody tr').length >= 6 &&
    document.querySelectorAll('#proxies td.SYNCED').length >= 24, null, { timeout: WAIT_MS, polling: 500 });
  seen.config = { proxies: await page.locator('#proxies tbody tr').count(),
    resources: await page.locator('#resources tbody tr').count() };
  await shot('config');

  if (errors.length) throw new Error(`errors in the page: ${errors.join('; ')}`);
  seen.seconds = (Date.now() - started) / 1000;
  console.log(JSON.stringify(seen));
} catch (e) {
  seen.error = String(e && e.stack || e);
  console.log(JSON.stringify(seen));
  console.error(seen.error);
  process.exitCode = 1;
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
