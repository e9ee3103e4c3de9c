#!/usr/bin/env node
// The web client as a person on a phone meets it, in Debian's Chromium:
//
//   node bench/client.mjs           -> bench/results/client.json
//   node bench/client.mjs --smoke   -> target/bench-smoke/client.json (CI)
//
// 1. First visit and revisit: time from navigation to the first feed image
//    loaded, and bytes over the wire for the app (page, modules, API; gzip,
//    then ETag revalidation on the revisit) and for images (lazy-loaded,
//    cached for good once fetched), over fresh browser contexts.
// 2. Like to screen: another user likes or unlikes a post over the API; the
//    time from sending that request to the count changing in the page
//    (HTTP like + live push over /v1/live + render), one every 150 ms so the
//    server's coalescing never delays a push.
// 3. Tap: the button flipping (optimistic, before any answer) and the
//    answer arriving, timed inside the page.
// The server is the release binary on the embedded backend with 20 posts of
// 1200x900 photos-like PNGs. Times are medians and percentiles of one run.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from '../tests/js/node_modules/playwright-core/index.mjs';
import { png } from '../tests/js/harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SMOKE = process.argv.includes('--smoke');
const N = SMOKE ? { visits: 2, likes: 10, taps: 6 } : { visits: 15, likes: 200, taps: 60 };
const OUT = SMOKE ? join(ROOT, 'target/bench-smoke') : join(ROOT, 'bench/results');
const BIN = process.env.TALLY_BIN || join(process.env.CARGO_TARGET_DIR || join(ROOT, 'target'), 'release/tally');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const log = (m) => console.error(`[client] ${m}`);

// A PNG with a gradient and noise, so that it compresses like a photo would
// (not to a few bytes).
function photo(w, h, seed) {
  let x = seed * 2654435761 >>> 0;
  return png(w, h, (i, y) => {
    x = (x * 1103515245 + 12345) >>> 0;
    const n = (x >>> 24) & 31;
    return [(i * 255 / w + seed * 40 + n) & 255, (y * 255 / h + n) & 255, (seed * 70 + (i + y) / 8 + n) & 255];
  });
}

async function serve(dataDir) {
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], {
    env: { ...process.env, TALLY_RATE_LIMITS__USER_WRITES_PER_SEC: '0', TALLY_RATE_LIMITS__AUTH_PER_MIN_PER_IP: '0', TALLY_DRAIN_GRACE_MS: '0', RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  for await (const line of createInterface({ input: child.stdout })) {
    const m = line.match(/^tally listening on (.*)$/);
    if (m) return { base: m[1], child };
  }
  throw new Error('tally serve exited before listening');
}

async function json(base, path, init = {}) {
  const r = await fetch(base + path, init);
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function user(base, name) {
  const body = JSON.stringify({ username: name, password: 'password123' });
  const headers = { 'content-type': 'application/json' };
  await json(base, '/v1/users', { method: 'POST', headers, body });
  const s = await json(base, '/v1/sessions', { method: 'POST', headers, body });
  return { token: s.token, user: s.user };
}

function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? Math.round(s[Math.min(s.length - 1, Math.floor(s.length * p))] * 100) / 100 : null;
}
const visits = (vs) => ({
  first_image_ms: summary(vs.map((v) => v.firstImageMs)),
  // Median over visits; transfer sizes as the browser reports them (headers included).
  app_kilobytes: pct(vs.map((v) => v.appBytes / 1024), 0.5),
  media_kilobytes: pct(vs.map((v) => v.mediaBytes / 1024), 0.5),
  images_fetched_or_cached: pct(vs.map((v) => v.images), 0.5),
  requests: pct(vs.map((v) => v.requests), 0.5),
});
const summary = (xs) => ({ n: xs.length, p50: pct(xs, 0.5), p90: pct(xs, 0.9), p99: pct(xs, 0.99), max: pct(xs, 1) });

async function signedInPage(browser, base, who, viewport) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(([token, u]) => {
    localStorage.setItem('tally.token', token);
    localStorage.setItem('tally.user', JSON.stringify(u));
  }, [who.token, who.user]);
  const page = await context.newPage();
  return { context, page };
}

/** Navigation start to the first feed image decoded, and bytes transferred. */
async function visit(page, base, reload = false) {
  if (reload) await page.reload();
  else await page.goto(`${base}/#/`);
  await page.waitForFunction(() => {
    const img = document.querySelector('article.card img');
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 30000 });
  // Bytes: everything the first screen pulls, lazy images near it included.
  await page.waitForLoadState('networkidle');
  return page.evaluate(() => {
    const img = document.querySelector('article.card img');
    const entry = performance.getEntriesByType('resource').find((e) => e.name === img.currentSrc);
    const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
    const bytes = (es) => es.reduce((n, e) => n + (e.transferSize || 0), 0);
    const media = all.filter((e) => e.name.includes('/media/'));
    return {
      firstImageMs: entry ? entry.responseEnd : performance.now(),
      appBytes: bytes(all) - bytes(media),
      mediaBytes: bytes(media),
      images: media.length,
      requests: all.length,
    };
  });
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  if (!process.env.TALLY_BIN) execFileSync('cargo', ['build', '--release', '--quiet'], { cwd: ROOT, stdio: 'inherit' });
  const { base, child } = await serve(mkdtempSync(join(tmpdir(), 'tally-client-bench-')));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const author = await user(base, 'author');
    const viewer = await user(base, 'viewer');
    const likers = await Promise.all(Array.from({ length: 4 }, (_, i) => user(base, `liker${i}`)));
    log('uploading 20 posts');
    let post;
    for (let i = 0; i < 20; i++) {
      const form = new FormData();
      form.append('image', new Blob([photo(1200, 900, i)], { type: 'image/png' }), `p${i}.png`);
      form.append('caption', `photo ${i}`);
      post = await json(base, '/v1/posts', { method: 'POST', headers: { authorization: `Bearer ${author.token}` }, body: form });
    }
    const phone = { width: 375, height: 812 };

    log(`first visits and revisits x${N.visits}`);
    const first = [];
    const again = [];
    for (let i = 0; i < N.visits; i++) {
      const { context, page } = await signedInPage(browser, base, viewer, phone);
      first.push(await visit(page, base));
      again.push(await visit(page, base, true));
      await context.close();
    }

    log(`like to screen x${N.likes}`);
    const { context, page } = await signedInPage(browser, base, viewer, phone);
    await page.goto(`${base}/#/`);
    const button = `article.card[data-post-id="${post.id}"] button.like`;
    await page.waitForSelector(button);
    await page.waitForSelector('#live-status[data-state="live"]');
    await page.evaluate((sel) => {
      window.__changes = [];
      const b = document.querySelector(sel);
      new MutationObserver(() => window.__changes.push({ at: performance.timeOrigin + performance.now(), count: Number(b.dataset.count) }))
        .observe(b, { attributes: true, attributeFilter: ['data-count'] });
    }, button);
    const toScreen = [];
    let expected = 0;
    for (let i = 0; i < N.likes; i++) {
      const liker = likers[i % likers.length];
      const like = Math.floor(i / likers.length) % 2 === 0;
      expected += like ? 1 : -1;
      const sent = performance.timeOrigin + performance.now();
      await json(base, `/v1/posts/${post.id}/like`, { method: like ? 'PUT' : 'DELETE', headers: { authorization: `Bearer ${liker.token}` } });
      const seen = await page.waitForFunction((want) => window.__changes.find((c) => c.count === want && !c.used), expected, { timeout: 10000 })
        .then((h) => h.jsonValue());
      await page.evaluate((at) => { for (const c of window.__changes) if (c.at <= at) c.used = true; }, seen.at);
      toScreen.push(seen.at - sent);
      await new Promise((r) => setTimeout(r, 150));
    }

    log(`taps x${N.taps}`);
    const taps = await page.evaluate(async ([sel, n]) => {
      const b = document.querySelector(sel);
      const flip = [];
      const answer = [];
      for (let i = 0; i < n; i++) {
        const before = b.getAttribute('aria-pressed');
        const t0 = performance.now();
        b.click();
        if (b.getAttribute('aria-pressed') !== before) flip.push(performance.now() - t0);
        await new Promise((resolve) => {
          const po = new PerformanceObserver((list) => {
            const e = list.getEntries().find((x) => x.name.endsWith('/like') && x.startTime >= t0);
            if (e) { answer.push(e.responseEnd - t0); po.disconnect(); resolve(); }
          });
          po.observe({ type: 'resource' });
        });
        await new Promise((r) => setTimeout(r, 200));
      }
      return { flip, answer };
    }, [button, N.taps]);
    await context.close();

    const result = {
      command: `node bench/client.mjs${SMOKE ? ' --smoke' : ''}`,
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, chromium: browser.version() },
      server: 'release binary, embedded backend, 20 posts of 1200x900 PNG (thumbnails 640 px JPEG)',
      viewport: phone,
      first_visit: visits(first),
      revisit: visits(again),
      like_to_screen_ms: summary(toScreen),
      tap_to_pressed_ms: summary(taps.flip),
      tap_to_answer_ms: summary(taps.answer),
    };
    const file = join(OUT, 'client.json');
    writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
    log(`wrote ${file}`);
    console.log(JSON.stringify(result, null, 2));
    if (taps.flip.length !== N.taps) throw new Error(`only ${taps.flip.length} of ${N.taps} taps flipped the button at once`);
  } finally {
    await browser.close();
    child.kill('SIGTERM');
    const exited = new Promise((r) => child.once('exit', r));
    if (child.exitCode === null && !(await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(r, 10000, false))]))) {
      child.kill('SIGKILL');
    }
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
