// The web client in a real browser: Debian's Chromium driven by
// playwright-core against real `tally serve` processes (embedded backend).
// Sign-up to like, live counts across browsers, reconnects after a cut,
// the load panel, error paths, and screenshots for docs/CLIENT.md.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { tempDir, seed, serve, stopAll, createPost, like, png, eventually, launchChromium } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SHOTS = resolve(ROOT, process.env.SCREENSHOT_DIR || 'target/screenshots');
const PHONE = { width: 375, height: 812 };
const DESKTOP = { width: 1280, height: 800 };
const T = { timeout: 60_000 };

let browser;
let main; // { base, users } shared by the functional tests

before(async () => {
  const dir = tempDir();
  const users = seed(dir, [], 10);
  const [{ base }, b] = await Promise.all([
    serve(dir, []),
    launchChromium(chromium),
  ]);
  browser = b;
  main = { base, users };
});

after(async () => {
  await browser?.close();
  stopAll();
});

// ---------- helpers ----------

const mix = (a, b, t) => a.map((v, i) => Math.round(v + (b[i] - v) * Math.min(1, Math.max(0, t))));

/** A few scenes, so the feed screenshot looks like a feed. */
const SCENES = {
  sunset: [480, 360, (x, y) => {
    const hz = 230;
    if (Math.hypot(x - 300, y - hz) < 55 && y < hz) return [255, 214, 102];
    if (y < hz) return mix([72, 52, 140], [255, 134, 89], y / hz);
    const ripple = Math.sin(y * 0.9 + Math.sin(x * 0.05) * 3) > 0.6 && Math.abs(x - 300) < 90 - (y - hz) * 0.3;
    return ripple ? [255, 190, 110] : mix([45, 60, 120], [20, 28, 60], (y - hz) / 130);
  }],
  mountains: [480, 600, (x, y) => {
    const peak1 = 250 + Math.abs(x - 150) * 0.9;
    const peak2 = 300 + Math.abs(x - 360) * 0.7;
    if (y > 470 + Math.sin(x / 40) * 10) return mix([76, 140, 74], [40, 90, 45], (y - 460) / 140);
    if (y > peak1 || y > peak2) {
      const top = Math.min(peak1 > y ? 9999 : peak1, peak2 > y ? 9999 : peak2);
      return y - top < 40 ? [240, 244, 248] : mix([110, 118, 138], [80, 88, 104], (y - 250) / 220);
    }
    return mix([120, 180, 235], [214, 236, 250], y / 300);
  }],
  city: [480, 480, (x, y) => {
    const col = Math.floor(x / 48);
    const top = 180 + ((col * 73) % 170);
    if (y > top) {
      const lit = (x % 48) > 8 && (x % 48) < 40 && (x % 12) < 6 && (y % 18) < 9 && ((col * 31 + Math.floor(y / 18) * 7 + Math.floor(x / 12)) % 5) < 2;
      return lit ? [255, 221, 120] : mix([34, 38, 58], [20, 22, 36], (y - top) / 200);
    }
    if (Math.hypot(x - 380, y - 80) < 26) return [245, 240, 220];
    return mix([14, 18, 48], [58, 50, 110], y / 300);
  }],
  meadow: [480, 320, (x, y) => {
    const hill = 170 + Math.sin(x / 60) * 25;
    if (y > hill) {
      const flower = (x * 7 + y * 13) % 97 === 0;
      return flower ? [250, 90, 120] : mix([120, 190, 80], [60, 130, 50], (y - hill) / 150);
    }
    return mix([160, 210, 250], [230, 245, 255], y / hill);
  }],
  rings: [480, 480, (x, y) => {
    const d = Math.hypot(x - 240, y - 240);
    return Math.floor(d / 24) % 2 ? [255, 122, 102] : mix([32, 178, 170], [18, 110, 130], d / 340);
  }],
};
const scene = (name) => png(...SCENES[name]);

/** A new account over the API; returns { token, user }. */
async function account(base, username, password = 'correct horse battery') {
  const post = (path) => fetch(`${base}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  const created = await post('/v1/users');
  assert.equal(created.status, 201, `sign-up ${username}`);
  const s = await (await post('/v1/sessions')).json();
  return { token: s.token, user: s.user };
}

/**
 * A browser context already signed in as `acct` (its token in localStorage,
 * as after sign-in; a seeded user has no `user`: the client asks /v1/me).
 */
function contextFor(base, acct, viewport = PHONE) {
  const localStorage = [];
  if (acct) localStorage.push({ name: 'tally.token', value: acct.token });
  if (acct?.user) localStorage.push({ name: 'tally.user', value: JSON.stringify(acct.user) });
  return browser.newContext({
    viewport,
    reducedMotion: 'reduce',
    storageState: { cookies: [], origins: [{ origin: base, localStorage }] },
  });
}

async function openPage(ctx, url) {
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.errors = errors;
  await page.goto(url);
  return page;
}

async function uploadOver(base, token, image, caption) {
  const form = new FormData();
  form.append('image', new Blob([image], { type: 'image/png' }), 'p.png');
  form.append('caption', caption);
  const r = await fetch(`${base}/v1/posts`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
  assert.equal(r.status, 201, await r.clone().text());
  return r.json();
}

const card = (page, id) => page.locator(`article.card[data-post-id="${id}"]`);
const likeButton = (page, id) => card(page, id).locator('button.like');
const liveState = (page) => page.locator('#live-status').getAttribute('data-state');

/** Asserts what a like button shows: pressed state, count and accessible name. */
async function expectLike(button, pressed, count) {
  await eventually(async () => {
    assert.equal(await button.getAttribute('aria-pressed'), String(pressed), 'aria-pressed');
    assert.equal((await button.innerText()).trim(), String(count), 'shown count');
    assert.equal(await button.getAttribute('aria-label'), `${pressed ? 'Unlike' : 'Like'} (${count})`);
  });
}

async function serverPost(base, id, token) {
  const r = await fetch(`${base}/v1/posts/${id}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return r.json();
}

/** Waits until every image in the viewport has loaded (lazy ones below it never will). */
function imagesInView(page) {
  return page.waitForFunction(() => [...document.images]
    .filter((i) => { const r = i.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0; })
    .every((i) => i.complete && i.naturalWidth > 0), null, { timeout: 5000 });
}

function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  return page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

// ---------- tests ----------

test('sign up, sign out, sign in, upload, see it in the feed, like it, reload', T, async () => {
  const { base } = main;
  const ctx = await contextFor(base, null);
  const page = await openPage(ctx, `${base}/#/signup`);

  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Sign up' }).click();
  await eventually(async () => assert.equal(await page.locator('#who').innerText(), '@alice'));

  await page.getByRole('button', { name: 'Sign out' }).click();
  await eventually(async () => assert.equal(await page.locator('#who').innerText(), ''));
  assert.equal(await page.evaluate(() => localStorage.getItem('tally.token')), null);

  await page.getByRole('link', { name: 'Sign in' }).click();
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('wrong password!');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await eventually(async () => assert.match(await page.locator('.form-error').innerText(), /Wrong username or password/));
  await page.getByLabel('Password').fill('correct horse battery');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await eventually(async () => assert.equal(await page.locator('#who').innerText(), '@alice'));
  assert.ok(await page.evaluate(() => localStorage.getItem('tally.token')));

  await page.getByRole('link', { name: 'Upload' }).click();
  // A phone offers its camera: any image type, rear camera.
  assert.equal(await page.getByLabel('Photo').getAttribute('accept'), 'image/*');
  assert.equal(await page.getByLabel('Photo').getAttribute('capture'), 'environment');
  await page.getByLabel('Photo').setInputFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: png(64, 48, (x, y) => [x * 4, y * 5, 160]) });
  await eventually(async () => assert.ok(await page.locator('img.preview').isVisible(), 'preview shown'));
  assert.match(await page.locator('img.preview').getAttribute('src'), /^blob:/);
  await page.getByLabel('Caption').fill('Sunset over the bay');
  // Record the progress bar's values while the upload runs.
  await page.evaluate(() => {
    window.__progress = [];
    const bar = document.querySelector('progress');
    new MutationObserver(() => window.__progress.push(bar.value)).observe(bar, { attributes: true });
  });
  await page.getByRole('button', { name: 'Post' }).click();

  await eventually(async () => assert.equal(new URL(page.url()).hash, '#/'));
  const first = page.locator('article.card').first();
  await eventually(async () => assert.match(await first.innerText(), /Sunset over the bay/), 5000);
  assert.ok((await page.evaluate(() => window.__progress)).includes(100), 'the progress bar reached 100');
  const img = first.locator('img');
  assert.equal(await img.getAttribute('alt'), 'Photo by alice: Sunset over the bay');
  assert.equal(await img.getAttribute('width'), '64');
  assert.equal(await img.getAttribute('height'), '48');
  // The first cards are on screen at once: eager, the first with high priority.
  assert.equal(await img.getAttribute('loading'), 'eager');
  assert.equal(await img.getAttribute('fetchpriority'), 'high');
  const id = Number(await first.getAttribute('data-post-id'));

  const button = likeButton(page, id);
  await expectLike(button, false, 0);
  await button.click();
  await expectLike(button, true, 1);
  const token = await page.evaluate(() => localStorage.getItem('tally.token'));
  await eventually(async () => {
    const p = await serverPost(base, id, token);
    assert.equal(p.likeCount, 1);
    assert.equal(p.likedByMe, true);
  });

  await page.reload();
  await expectLike(likeButton(page, id), true, 1);
  assert.deepEqual(page.errors, []);
  await ctx.close();
});

test('double taps send at most one follow-up and never double count', T, async () => {
  const { base, users } = main;
  const acct = users[5];
  const id = await createPost(base, users[0].token);
  const ctx = await contextFor(base, acct);
  const page = await openPage(ctx, `${base}/#/post/${id}`);
  const button = page.locator('article.post button.like');
  await expectLike(button, false, 0);

  // Hold each like request until released, recording the verbs.
  const verbs = [];
  let release;
  await page.route('**/v1/posts/*/like', async (route) => {
    verbs.push(route.request().method());
    await new Promise((r) => { release = r; });
    await route.continue();
  });

  // Three taps while the PUT is held: wanted liked, unliked, liked.
  await button.click();
  await eventually(() => assert.equal(verbs.length, 1));
  await button.click();
  await button.click();
  await expectLike(button, true, 1);
  release();
  await eventually(async () => assert.equal((await serverPost(base, id, acct.token)).likeCount, 1));
  await page.waitForTimeout(200);
  assert.deepEqual(verbs, ['PUT'], 'the user ended where the first request went: no follow-up');
  await expectLike(button, true, 1);

  // Two taps while a DELETE is held: wanted unliked, then liked again → one follow-up PUT.
  await button.click();
  await eventually(() => assert.equal(verbs.length, 2));
  await button.click();
  await expectLike(button, true, 1);
  release();
  await eventually(() => assert.equal(verbs.length, 3));
  release();
  await eventually(async () => assert.equal((await serverPost(base, id, acct.token)).likeCount, 1));
  assert.deepEqual(verbs, ['PUT', 'DELETE', 'PUT']);
  await expectLike(button, true, 1);
  // The likers list shows the user (its name from /v1/me) after the like settles.
  const me = (await page.locator('#who').innerText()).slice(1);
  assert.ok(me.length >= 3, `signed in as ${me}`);
  await eventually(async () => assert.match(await page.locator('.likers').innerText(), new RegExp(me)));
  await ctx.close();
});

test('a second browser sees counts change live, from the UI and from the API', T, async () => {
  const { base, users } = main;
  const id = await createPost(base, users[0].token);
  const [bob, carol] = [users[6], users[7]];
  const bobCtx = await contextFor(base, bob);
  const carolCtx = await contextFor(base, carol, DESKTOP);
  const bobPage = await openPage(bobCtx, `${base}/`);
  const carolPage = await openPage(carolCtx, `${base}/`);
  await eventually(async () => assert.equal(await liveState(bobPage), 'live'));
  await expectLike(likeButton(bobPage, id), false, 0);
  await bobPage.evaluate(() => { window.__sameDocument = true; });

  await likeButton(carolPage, id).click();
  await expectLike(likeButton(carolPage, id), true, 1);
  await expectLike(likeButton(bobPage, id), false, 1);

  await like(base, users[1].token, id);
  await like(base, users[2].token, id);
  await expectLike(likeButton(bobPage, id), false, 3);
  await like(base, users[1].token, id, 'DELETE');
  await expectLike(likeButton(bobPage, id), false, 2);
  await expectLike(likeButton(carolPage, id), true, 2);

  // Bob's own like mixes with the pushes and ends on the server's count.
  await likeButton(bobPage, id).click();
  await expectLike(likeButton(bobPage, id), true, 3);
  await expectLike(likeButton(carolPage, id), true, 3);
  assert.equal(await bobPage.evaluate(() => window.__sameDocument), true, 'no reload happened');
  assert.deepEqual([...bobPage.errors, ...carolPage.errors], []);
  await Promise.all([bobCtx.close(), carolCtx.close()]);
});

test('the live socket is cut and restored: reconnecting, then live with the right count', T, async () => {
  const { base, users } = main;
  const id = await createPost(base, users[0].token);
  const ctx = await contextFor(base, null);
  const page = await ctx.newPage();
  let allow = true;
  const sockets = [];
  await page.routeWebSocket('**/v1/live', (ws) => {
    if (!allow) {
      ws.close({ code: 1011, reason: 'refused by the test' });
      return;
    }
    ws.connectToServer();
    sockets.push(ws);
  });
  await page.goto(`${base}/`);
  await eventually(async () => assert.equal(await liveState(page), 'live'));
  await expectLike(likeButton(page, id), false, 0);
  await like(base, users[1].token, id);
  await expectLike(likeButton(page, id), false, 1);

  // Cut: close the open socket and refuse new ones.
  allow = false;
  for (const ws of sockets.splice(0)) await ws.close({ code: 1006 });
  await eventually(async () => assert.equal(await liveState(page), 'reconnecting'));
  assert.equal(await page.locator('#live-status').innerText(), 'reconnecting');
  await like(base, users[2].token, id);
  await like(base, users[3].token, id);
  await page.waitForTimeout(300);
  await expectLike(likeButton(page, id), false, 1); // really cut: no pushes arrive
  assert.equal(await liveState(page), 'reconnecting');

  // Restore: the backoff retries, resubscribes, and the snapshot is the truth.
  allow = true;
  await eventually(async () => assert.equal(await liveState(page), 'live'), 12_000);
  await expectLike(likeButton(page, id), false, 3);

  // Offline and back: the browser's own events drive the indicator.
  await ctx.setOffline(true);
  await eventually(async () => assert.equal(await liveState(page), 'reconnecting'));
  await like(base, users[4].token, id);
  await ctx.setOffline(false);
  await eventually(async () => assert.equal(await liveState(page), 'live'), 12_000);
  await expectLike(likeButton(page, id), false, 4);
  await ctx.close();
});

test('the web client keeps the newest count by version, and a silent socket stops showing live', T, async () => {
  const { base, users } = main;
  const other = await createPost(base, users[0].token);
  const id = await createPost(base, users[0].token);
  const ctx = await contextFor(base, null);
  const page = await ctx.newPage();
  // Fake timers that still flow: the heartbeat's 25 s pass in one jump.
  await page.clock.install();
  let silent = false;
  let toPage = null;
  await page.routeWebSocket('**/v1/live', (ws) => {
    const server = ws.connectToServer();
    toPage = ws;
    ws.onMessage((m) => { if (!silent) server.send(m); });
    server.onMessage((m) => { if (!silent) ws.send(m); });
  });
  await page.goto(`${base}/`);
  await eventually(async () => assert.equal(await liveState(page), 'live'));
  await expectLike(likeButton(page, id), false, 0);
  const answer = await like(base, users[1].token, id);
  await expectLike(likeButton(page, id), false, 1);

  // Every count the button shows from now on.
  await page.evaluate((id) => {
    window.__counts = [];
    const b = document.querySelector(`article.card[data-post-id="${id}"] button.like`);
    new MutationObserver(() => window.__counts.push(Number(b.dataset.count)))
      .observe(b, { attributes: true, attributeFilter: ['data-count'] });
  }, id);
  const push = (likeCount, version) => toPage.send(JSON.stringify({ type: 'likeCount', postId: id, likeCount, version }));
  push(7, answer.version - 1); // older than what is shown: ignored
  push(5, answer.version + 1); // newer: shown
  push(7, answer.version); // older again: ignored
  push(6, answer.version + 2);
  await expectLike(likeButton(page, id), false, 6);
  assert.deepEqual(await page.evaluate(() => window.__counts), [5, 6], 'stale counts never shown');

  // The socket goes silent (no pong, no push) without closing: after the
  // heartbeat's deadline the client stops claiming 'live' and reconnects.
  silent = true;
  await page.clock.fastForward(30_000);
  await eventually(async () => assert.equal(await liveState(page), 'reconnecting'));
  silent = false;
  await eventually(async () => assert.equal(await liveState(page), 'live'), 12_000);
  // Pushes flow again (on another post: the fakes above claimed versions
  // the server has not reached yet, so the post keeps showing 6).
  await expectLike(likeButton(page, other), false, 0);
  await like(base, users[2].token, other);
  await expectLike(likeButton(page, other), false, 1);
  assert.deepEqual(page.errors ?? [], []);
  await ctx.close();
});

test('the feed scrolls in pages by cursor, likers page with Load more, off-screen cards are unwatched', T, async () => {
  const dir = tempDir();
  const users = seed(dir, [], 30);
  const { base } = await serve(dir, []);
  const ids = [];
  for (let i = 0; i < 25; i++) ids.push(await createPost(base, users[i % 5].token));
  // 25 likers on the oldest post, which is on the feed's second page.
  await Promise.all(users.slice(0, 25).map((u) => like(base, u.token, ids[0])));

  const ctx = await contextFor(base, users[29]);
  const page = await ctx.newPage();
  // Every message the client sends on the live socket.
  const sent = [];
  page.on('websocket', (ws) => ws.on('framesent', (f) => sent.push(JSON.parse(f.payload))));
  await page.goto(`${base}/#/`);
  const cards = page.locator('article.card');
  await eventually(async () => assert.equal(await cards.count(), 20), 10000);
  await eventually(async () => assert.ok(sent.some((m) => m.type === 'subscribe' && m.postIds.includes(ids[24]))));

  // Scrolling to the end fetches the next page by cursor: 25 posts, no repeats, newest first.
  await eventually(async () => {
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    assert.equal(await cards.count(), 25);
  }, 10000);
  const shown = (await cards.evaluateAll((els) => els.map((e) => Number(e.dataset.postId))));
  assert.deepEqual(shown, [...ids].reverse());
  // Thumbnails past the first two load lazily.
  assert.deepEqual(await page.locator('article.card img').evaluateAll((els) => els.slice(0, 4).map((e) => e.loading)),
    ['eager', 'eager', 'lazy', 'lazy']);
  // The newest card is far above the viewport now: it was unwatched.
  await eventually(async () => assert.ok(sent.some((m) => m.type === 'unsubscribe' && m.postIds.includes(ids[24]))));
  await eventually(async () => assert.equal(await likeButton(page, ids[0]).getAttribute('data-count'), '25'));

  // The post page lists likers 20 at a time; "Load more" fetches the rest.
  await page.goto(`${base}/#/post/${ids[0]}`);
  const likers = page.locator('.likers li');
  await eventually(async () => assert.equal(await likers.count(), 20));
  await page.getByRole('button', { name: 'Load more' }).click();
  await eventually(async () => assert.equal(await likers.count(), 25));
  assert.equal(await page.getByRole('button', { name: 'Load more' }).isVisible(), false);
  await ctx.close();
});

test('the Trending tab ranks posts by likes gained, with a 1h / 24h switch', T, async () => {
  const dir = tempDir();
  const users = seed(dir, [], 3);
  const { base } = await serve(dir, []);
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push(await createPost(base, users[0].token));
  // ids[2]: 3 likes, ids[0]: 2, ids[3]: 1, ids[1]: none (not trending).
  for (const [post, n] of [[ids[2], 3], [ids[0], 2], [ids[3], 1]]) {
    for (const u of users.slice(0, n)) await like(base, u.token, post);
  }
  const ctx = await contextFor(base, users[0]);
  const page = await openPage(ctx, `${base}/#/`);
  await page.getByRole('link', { name: 'Trending', exact: true }).click();
  const cards = page.locator('article.card');
  const shown = () => cards.evaluateAll((els) => els.map((e) => Number(e.dataset.postId)));
  await eventually(async () => assert.deepEqual(await shown(), [ids[2], ids[0], ids[3]]));
  assert.deepEqual(await page.locator('article.card .score').allInnerTexts(), ['+3', '+2', '+1']);
  assert.equal(await page.getByRole('link', { name: 'Trending', exact: true }).getAttribute('aria-current'), 'page');
  await expectLike(likeButton(page, ids[2]), true, 3);

  await page.getByRole('link', { name: 'Trending in the last 24 hours' }).click();
  await eventually(async () => assert.equal(new URL(page.url()).hash, '#/trending/24h'));
  await eventually(async () => assert.equal(
    await page.getByRole('link', { name: 'Trending in the last 24 hours' }).getAttribute('aria-current'), 'page'));
  await eventually(async () => assert.deepEqual(await shown(), [ids[2], ids[0], ids[3]]));
  assert.deepEqual(page.errors, []);
  await ctx.close();
});

test('errors: non-image and oversized files, a rejected like, an invalid stored token', T, async () => {
  const { base, users } = main;
  const acct = users[8];
  const ctx = await contextFor(base, acct);
  const page = await openPage(ctx, `${base}/#/upload`);
  const posts = [];
  page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/v1/posts')) posts.push(r); });
  const error = page.locator('#upload-error');
  const photo = page.getByLabel('Photo');

  // Refused in the browser: nothing is sent.
  await photo.setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
  await eventually(async () => assert.match(await error.innerText(), /“notes\.txt” isn’t an image/));
  await page.getByRole('button', { name: 'Post' }).click();
  assert.match(await error.innerText(), /isn’t an image/);
  const huge = join(tempDir(), 'huge.jpg'); // a path: the browser reads it, nothing crosses the CDP pipe
  writeFileSync(huge, Buffer.alloc(21 * 1024 * 1024, 0xff));
  await photo.setInputFiles(huge);
  await eventually(async () => assert.match(await error.innerText(), /too large \(21\.0 MB\)\. The limit is 20 MB/));
  await page.getByRole('button', { name: 'Post' }).click();
  assert.match(await error.innerText(), /too large/);
  assert.equal(posts.length, 0, 'no upload was sent');

  // Refused by the server: says image, is not (415); is a PNG, is broken (422).
  await photo.setInputFiles({ name: 'fake.png', mimeType: 'image/png', buffer: Buffer.from('definitely not a png') });
  await eventually(async () => assert.match(await error.innerText(), /can’t be read as an image/)); // the preview failed
  await page.getByRole('button', { name: 'Post' }).click();
  await eventually(async () => assert.match(await error.innerText(), /isn’t an image Tally can take/));
  const broken = png(64, 48, () => [1, 2, 3]).subarray(0, 60);
  await photo.setInputFiles({ name: 'broken.png', mimeType: 'image/png', buffer: broken });
  await page.waitForFunction(() => document.querySelector('img.preview').complete); // decoded or failed
  await page.getByRole('button', { name: 'Post' }).click();
  await eventually(async () => assert.match(await error.innerText(), /damaged/));
  assert.equal(posts.length, 2);

  // A like the server cannot acknowledge: optimistic first, then rolled back with a message.
  const id = await createPost(base, users[0].token);
  await page.goto(`${base}/#/`);
  const button = likeButton(page, id);
  await expectLike(button, false, 0);
  let release;
  await page.route('**/v1/posts/*/like', async (route) => {
    await new Promise((r) => { release = r; });
    await route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ error: { code: 'unavailable', message: 'store busy' } }) });
  });
  await button.click();
  await expectLike(button, true, 1);
  await eventually(() => assert.ok(release));
  release();
  await expectLike(button, false, 0);
  await eventually(async () => assert.match(await page.locator('#toasts').innerText(), /Couldn’t like that post/));
  assert.equal((await serverPost(base, id)).likeCount, 0);
  await ctx.close();

  // A token the server does not accept: cleared, and the sign-in page says why.
  const bad = await contextFor(base, { token: 'not.a.token', user: { id: 1, username: 'ghost' } });
  const badPage = await openPage(bad, `${base}/`);
  await eventually(async () => assert.equal(new URL(badPage.url()).hash, '#/signin'));
  await eventually(async () => assert.match(await badPage.locator('.form-error').innerText(), /session has expired/));
  assert.equal(await badPage.evaluate(() => localStorage.getItem('tally.token')), null);
  assert.equal(await badPage.locator('#who').innerText(), '');
  await bad.close();
});

test('load panel: a small run draws charts and proves the counts exact', T, async () => {
  const { base } = await serve(tempDir(), ['--load-panel']);
  const acct = await account(base, 'operator');
  const ctx = await contextFor(base, acct, DESKTOP);
  const page = await openPage(ctx, `${base}/`);
  const tab = page.getByRole('link', { name: 'Load', exact: true });
  await eventually(async () => assert.ok(await tab.isVisible(), 'Load tab shown for loadPanel: true'));
  await tab.click();

  const field = (label) => page.getByLabel(label, { exact: false });
  assert.equal(await field('Users').inputValue(), '1000');
  assert.equal(await field('Users').getAttribute('max'), '100000');
  assert.equal(await field('Rate').getAttribute('max'), '5000');
  const starts = [];
  page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/v1/admin/load-runs')) starts.push(r); });
  await field('Users').fill('0');
  await page.getByRole('button', { name: 'Start run' }).click();
  assert.match(await page.locator('.load-form .form-error').innerText(), /Users must be a whole number from 1 to 100,000/);
  assert.equal(starts.length, 0, 'out-of-bounds values are not sent');

  await field('Users').fill('50');
  await field('Rate').fill('50');
  await field('Duration').fill('3');
  await field('Posts').fill('5');
  await page.getByRole('button', { name: 'Start run' }).click();
  const run = page.locator('section.run');
  await eventually(async () => assert.match(await run.getAttribute('data-state') ?? '', /seeding|running/));
  assert.equal(starts.length, 1);
  assert.equal(await page.getByRole('button', { name: 'Run in progress…' }).isDisabled(), true);

  // Opening the panel while the run is in progress picks it up.
  await page.reload();
  await eventually(async () => assert.match(await run.getAttribute('data-state') ?? '', /seeding|running|proving/));
  assert.equal(await field('Users').inputValue(), '50', 'the form starts from the shown run');
  await eventually(async () => {
    assert.ok(await page.locator('.chart polyline, .chart circle').count() >= 1, 'a series is drawn');
  }, 10_000);
  const verdict = page.locator('.verdict');
  await eventually(async () => assert.equal(await verdict.getAttribute('data-verdict'), 'exact'), 30_000);
  assert.equal(await run.getAttribute('data-state'), 'done');
  assert.match(await verdict.innerText(), /exact/i);
  assert.equal(await page.locator('.chart').count(), 3);
  assert.ok(await page.locator('.chart polyline').count() >= 3, 'lines in the charts');
  assert.match(await page.locator('.totals').innerText(), /Requests\s+\d/);
  assert.equal(await page.getByRole('button', { name: 'Start run' }).isEnabled(), true);

  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'load-1280');
  await page.setViewportSize(PHONE);
  await page.evaluate(() => document.querySelector('section.run').scrollIntoView({ block: 'start' }));
  await shot(page, 'load-375');

  assert.deepEqual(page.errors, []);
  await ctx.close();
});

test('the API docs page renders under its Content-Security-Policy, with no violation', T, async () => {
  const ctx = await browser.newContext({ viewport: DESKTOP });
  try {
    const page = await ctx.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(m.text()); });
    page.on('pageerror', (e) => violations.push(e.message));
    const response = await page.goto(`${main.base}/docs/`);
    assert.match(response.headers()['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(response.headers()['referrer-policy'], 'no-referrer');
    await eventually(async () => assert.match(await page.locator('.swagger-ui .info .title').innerText(), /Tally/));
    await eventually(async () => assert.ok(await page.locator('.opblock').count() > 5, 'the operations are listed'));
    assert.deepEqual(violations, []);
  } finally {
    await ctx.close();
  }
});

test('screenshots of the feed and a post page at 375 and 1280 px', T, async () => {
  const dir = tempDir();
  const likers = seed(dir, [], 12);
  const { base } = await serve(dir, []);
  const [maya, jonas, aiko, sam] = await Promise.all(['maya', 'jonas', 'aiko', 'sam'].map((n) => account(base, n)));
  const made = [];
  for (const [who, name, caption] of [
    [jonas, 'rings', 'Playing with concentric circles for a poster.'],
    [aiko, 'meadow', 'Spring meadow behind the station 🌼'],
    [sam, 'city', 'Night shift view from the 14th floor.'],
    [maya, 'mountains', 'First snow on the ridge this morning.'],
    [jonas, 'sunset', 'Golden hour at the harbour. Worth the wait!'],
  ]) made.push(await uploadOver(base, who.token, scene(name), caption));
  const counts = [3, 7, 1, 12, 5];
  await Promise.all(made.map((p, i) => Promise.all(likers.slice(0, counts[i]).map((u) => like(base, u.token, p.id)))));
  await like(base, maya.token, made[4].id);

  for (const viewport of [PHONE, DESKTOP]) {
    const ctx = await contextFor(base, maya, viewport);
    const page = await openPage(ctx, `${base}/`);
    await eventually(async () => assert.equal(await liveState(page), 'live'));
    await expectLike(likeButton(page, made[4].id), true, 6);
    await imagesInView(page);
    await shot(page, `feed-${viewport.width}`);

    await page.goto(`${base}/#/post/${made[3].id}`);
    await eventually(async () => assert.equal(await page.locator('.likers li').count(), 12));
    await imagesInView(page);
    await shot(page, `post-${viewport.width}`);
    assert.deepEqual(page.errors, []);
    await ctx.close();
  }
});
