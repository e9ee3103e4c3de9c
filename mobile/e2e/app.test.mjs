// The mobile app end to end: its web build (`npx expo export --platform
// web`, in dist/) served from its own origin, driven in Debian's Chromium at
// a phone's viewport against a real `tally serve` on another origin (so
// CORS is exercised), on the embedded backend and on Redis + PostgreSQL.
// Sign up, upload, like, see the count move when another client likes,
// run a load from the simulator (on the server, and from the phone) and
// see `exact`. Screenshots go to SCREENSHOT_DIR (docs/mobile when the docs
// are refreshed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { backend, eventually as retry, launchChromium, like, png, seed, serve, stopAll, tempDir } from '../../tests/js/harness.mjs';

const eventually = (fn, ms = 10_000) => retry(fn, ms, 100);

const HERE = dirname(fileURLToPath(import.meta.url));
const DIST = resolve(HERE, '../dist');
const ROOT = resolve(HERE, '../..');
const SHOTS = resolve(ROOT, process.env.SCREENSHOT_DIR || 'target/screenshots/mobile');
const BACKENDS = (process.env.MOBILE_E2E_BACKENDS || 'embedded,redis_pg').split(',');
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const T = { timeout: 180_000 };

let browser;
let web; // { origin, close }

/** Serves dist/ as a single-page app: unknown paths get index.html. */
function serveDist() {
  if (!existsSync(join(DIST, 'index.html'))) {
    throw new Error(`${DIST}/index.html is missing: run \`npm run export:web\` in mobile/ first`);
  }
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.json': 'application/json', '.ttf': 'font/ttf', '.ico': 'image/x-icon' };
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = resolve(DIST, `.${path}`);
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) file = join(DIST, 'index.html');
    res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() })));
}

before(async () => {
  web = await serveDist();
  browser = await launchChromium(chromium);
});

after(async () => {
  await browser?.close();
  web?.close();
  stopAll();
});

async function shot(page, name, kind) {
  if (kind !== 'embedded') return; // one set of pictures is enough
  mkdirSync(SHOTS, { recursive: true });
  await page.waitForTimeout(300); // let images and fonts settle
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

/** A picture worth looking at in the feed. */
function scene() {
  return png(480, 360, (x, y) => {
    const sky = y < 220;
    const sun = (x - 360) ** 2 + (y - 80) ** 2 < 40 ** 2;
    if (sun) return [255, 200, 60];
    if (sky) return [90 + y / 4, 150 + y / 6, 230];
    return [40 + ((x * 7 + y * 3) % 40), 120 + (y % 30), 60];
  });
}

function sunset() {
  return png(480, 320, (x, y) => {
    const sun = (x - 240) ** 2 + (y - 200) ** 2 < 60 ** 2;
    if (y > 220) return [20, 40 + (y - 220) / 2, 90 + ((x + y) % 20)];
    if (sun) return [255, 170, 60];
    return [250 - y / 3, 120 + y / 4, 90 + y / 5];
  });
}

async function upload(base, token, bytes, caption) {
  const form = new FormData();
  form.append('image', new Blob([bytes], { type: 'image/png' }), 'p.png');
  form.append('caption', caption);
  const r = await fetch(`${base}/v1/posts`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
  assert.equal(r.status, 201, await r.clone().text());
  return (await r.json()).id;
}

for (const kind of BACKENDS) {
  test(`mobile app on the ${kind} backend: sign up, upload, like, live count, simulator`, T, async () => {
    const dir = tempDir();
    const args = backend(kind);
    const others = seed(dir, args, 2);
    const { base } = await serve(dir, [...args, '--load-panel', '--cors-origin', web.origin]);
    const context = await browser.newContext(PHONE);
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    // A post by someone else first, so the feed is not empty.
    const first = await upload(base, others[0].token, sunset(), 'First light');

    // Sign up through the app, pointing it at the server.
    await page.goto(`${web.origin}/`);
    await page.getByTestId('server').fill(base);
    await page.getByTestId('username').fill(`mia_${kind}`);
    await page.getByTestId('password').fill('correct horse battery');
    await shot(page, '1-sign-in', kind);
    await page.getByTestId('sign-up').click();
    await page.getByTestId(`post-${first}`).waitFor();
    await eventually(async () => assert.equal(await page.getByTestId('live-state').getAttribute('aria-label'), 'Live counts: Live'));

    // Upload a picture with a caption.
    await page.getByRole('tab', { name: 'New post' }).click();
    // A file the server refuses (not an image, whatever its name says): told in words.
    const fake = join(dir, 'notes.png');
    writeFileSync(fake, 'these are not pixels');
    const refused = page.waitForEvent('filechooser');
    await page.getByTestId('pick').click();
    await (await refused).setFiles(fake);
    await page.getByTestId('share').click();
    await eventually(async () => assert.match(await page.getByTestId('upload-error').textContent(), /isn’t an image Tally can take/));
    const chooser = page.waitForEvent('filechooser');
    await page.getByTestId('pick').click();
    const picture = join(dir, 'lake.png');
    writeFileSync(picture, scene());
    await (await chooser).setFiles(picture);
    await page.getByTestId('preview').waitFor();
    await page.getByTestId('caption').fill('Evening at the lake');
    await shot(page, '3-upload', kind);
    await page.getByTestId('share').click();
    await page.waitForURL(/\/post\/\d+$/);
    const mine = Number(page.url().match(/\/post\/(\d+)$/)[1]);
    await page.getByText('Nobody yet.').waitFor();

    // Like it: optimistic, then the server's count.
    await page.getByRole('button', { name: 'Like, 0 likes' }).click();
    await page.getByRole('button', { name: 'Unlike, 1 likes' }).waitFor();
    await page.getByTestId(`liker-mia_${kind}`).waitFor();

    // Another client likes it: the count moves live, without a reload.
    await like(base, others[0].token, mine);
    await page.getByRole('button', { name: 'Unlike, 2 likes' }).waitFor({ timeout: 10_000 });
    await shot(page, '4-post', kind);

    // The feed shows both posts with their counts; a like there too.
    await page.goBack();
    await page.getByRole('tab', { name: 'Feed' }).click();
    await page.getByTestId(`post-${mine}`).waitFor();
    await page.getByTestId(`like-${first}`).click();
    await eventually(async () => assert.equal(await page.getByTestId(`like-count-${first}`).textContent(), '1'));
    await like(base, others[1].token, first);
    await eventually(async () => assert.equal(await page.getByTestId(`like-count-${first}`).textContent(), '2'));
    if (kind === 'embedded') {
      await page.getByTestId(`post-${mine}`).scrollIntoViewIfNeeded();
      await page.getByText('Posted.').waitFor({ state: 'detached', timeout: 10_000 });
    }
    await shot(page, '2-feed', kind);

    // The simulator on the server: a small bounded run, proved exact.
    await page.getByRole('tab', { name: 'Traffic simulator' }).click();
    await page.getByTestId('server-users').fill('50');
    await page.getByTestId('server-rate').fill('50');
    await page.getByTestId('server-duration').fill('3');
    await page.getByTestId('server-posts').fill('5');
    await page.getByTestId('server-start').click();
    await eventually(async () => assert.equal(await page.getByTestId('verdict').textContent(), 'exact'), 90_000);
    await page.getByTestId('chart-Latency').scrollIntoViewIfNeeded();
    await shot(page, '5-simulator-server', kind);

    // And from the phone: a few simulated users, proved exact too.
    await page.getByTestId('mode-local').click();
    await page.getByTestId('local-users').fill('4');
    await page.getByTestId('local-rate').fill('10');
    await page.getByTestId('local-duration').fill('3');
    await page.getByTestId('local-posts').fill('2');
    await page.getByTestId('local-start').click();
    await eventually(async () => assert.equal(await page.getByTestId('verdict').textContent(), 'exact'), 60_000);
    assert.match(await page.getByTestId('local-state').textContent(), /^done: [1-9]\d* answered, 0 errors$/);
    await page.getByTestId('chart-Latency').scrollIntoViewIfNeeded();
    await shot(page, '6-simulator-phone', kind);

    // A token that dies (signed out elsewhere) returns the app to sign-in, saying why.
    const token = await page.evaluate(() => localStorage.getItem('tally.token'));
    const out = await fetch(`${base}/v1/sessions/current`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    assert.equal(out.status, 204);
    await page.reload();
    await page.getByText('Your session has expired. Please sign in again.').waitFor();
    // The server address was remembered; signing in again, then out with the button.
    assert.equal(await page.getByTestId('server').inputValue(), base);
    await page.getByTestId('username').fill(`mia_${kind}`);
    await page.getByTestId('password').fill('correct horse battery');
    await page.getByTestId('sign-in').click();
    await page.getByTestId('sign-out').click();
    await page.getByTestId('sign-in').waitFor();
    assert.deepEqual(errors, []);
    await context.close();
  });
}
