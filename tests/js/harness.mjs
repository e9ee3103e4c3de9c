// Starts real `tally` processes for the JavaScript tests and talks to them
// over HTTP. Each test gets fresh data dirs, databases and key prefixes.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { deflateSync } from 'node:zlib';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = process.env.TALLY_BIN || join(process.env.CARGO_TARGET_DIR || join(root, 'target'), 'debug/tally');
const REDIS = process.env.TALLY_TEST_REDIS_URL || 'redis://127.0.0.1:6379';
const ADMIN_DB = process.env.TALLY_TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';

const nodes = [];

const baseEnv = {
  ...process.env,
  TALLY_RATE_LIMITS__USER_WRITES_PER_SEC: '0',
  TALLY_RATE_LIMITS__AUTH_PER_MIN_PER_IP: '0',
  TALLY_RECONCILE_INTERVAL_SECS: '0',
  RUST_LOG: 'warn',
};

/** Backend flags: none (embedded) or a fresh Redis prefix + PostgreSQL database. */
export function backend(kind) {
  if (kind === 'embedded') return [];
  const name = `tally_t_${randomBytes(8).toString('hex')}`;
  execFileSync('psql', [ADMIN_DB, '-qc', `CREATE DATABASE ${name}`]);
  const db = ADMIN_DB.replace(/\/[^/]*$/, `/${name}`);
  return ['--redis-url', REDIS, '--database-url', db, '--key-prefix', name];
}

export function tempDir() {
  return mkdtempSync(join(tmpdir(), 'tally-js-'));
}

/** Seeds users with `tally users seed`; returns [{id, token}]. */
export function seed(dataDir, args, count) {
  const file = join(dataDir, 'tokens.txt');
  execFileSync(BIN, ['users', 'seed', '--count', String(count), '--data-dir', dataDir, '--tokens-out', file, ...args], {
    env: baseEnv,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return readFileSync(file, 'utf8').trim().split('\n').map((line) => {
    const [id, token] = line.split(' ');
    return { id: Number(id), token };
  });
}

/** Starts `tally serve`; resolves with its base URL once it listens. */
export async function serve(dataDir, args, env = {}) {
  const child = spawn(BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args], {
    env: { ...baseEnv, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  nodes.push(child);
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const m = line.match(/^tally listening on (.*)$/);
    if (m) return { base: m[1], child };
  }
  throw new Error('tally serve exited before listening');
}

export function stopAll() {
  for (const child of nodes.splice(0)) child.kill('SIGKILL');
}

// A 1×1 PNG.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);

export async function createPost(base, token) {
  const form = new FormData();
  form.append('image', new Blob([PNG], { type: 'image/png' }), 'p.png');
  form.append('caption', 'live');
  const r = await fetch(`${base}/v1/posts`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form });
  if (r.status !== 201) throw new Error(`upload: ${r.status} ${await r.text()}`);
  return (await r.json()).id;
}

export async function like(base, token, post, method = 'PUT') {
  const r = await fetch(`${base}/v1/posts/${post}/like`, { method, headers: { authorization: `Bearer ${token}` } });
  if (r.status !== 200) throw new Error(`like: ${r.status} ${await r.text()}`);
  return r.json();
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool(items, limit, fn) {
  const out = [];
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  }));
  return out;
}

/** Retries `fn` (which asserts) until it passes or `ms` run out; rethrows its last failure. */
export async function eventually(fn, ms = 5000, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, every));
    }
  }
}

/** Debian's Chromium, headless, reaching nothing but what a test points it at. */
export function launchChromium(chromium) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** Resolves with the first event matching `pred`, or rejects after `ms`. */
export function waitFor(socket, event, pred, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.off(event, on); reject(new Error(`no matching ${event} in ${ms} ms`)); }, ms);
    const on = (msg) => { if (pred(msg)) { clearTimeout(timer); socket.off(event, on); resolve(msg); } };
    socket.on(event, on);
  });
}

// PNG encoding, for pictures made up by the tests and the client benchmark.
const CRC = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** An RGB PNG of w×h; `pixel(x, y)` returns [r, g, b]. */
export function png(w, h, pixel) {
  const raw = Buffer.alloc((w * 3 + 1) * h);
  let o = 0;
  for (let y = 0; y < h; y++) {
    raw[o++] = 0;
    for (let x = 0; x < w; x++) {
      const [r, g, b] = pixel(x, y);
      raw[o++] = r;
      raw[o++] = g;
      raw[o++] = b;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0)),
  ]);
}
