// One process of live subscribers for bench/live.py: opens WebSocket
// connections to /v1/live (from several loopback source addresses, to get
// past the ephemeral port limit of one address), subscribes each to posts,
// counts the pushes, and optionally probes like-to-push latency.
//
// argv: <ws url> <connections> <first source octet> <posts csv> [probe: <http base> <token> <post>]
// Environment:
//   LIVE_LEAN=1        subscribers on bare sockets (the handshake and frame
//                      headers by hand) instead of `ws` objects: a few KB per
//                      subscriber on the client, for the million-subscriber run.
//   LIVE_INFLIGHT=n    lean mode: handshakes in flight at once (default 200).
// Prints JSON lines on stdout: {"connected": n, ...} once the connections are
// open (or stopped by SIGUSR1), then every second {"messages": total, ...},
// and {"latencies": [ms...]} when asked (SIGUSR2). While connecting, every
// second {"progress": n}.
import net from 'node:net';
import WebSocket from '../tests/js/node_modules/ws/index.js';

const [url, countArg, octetArg, postsArg, probeBase, probeToken, probePostArg] = process.argv.slice(2);
const count = Number(countArg);
const posts = postsArg.split(',').map(Number);
const PER_ADDRESS = 20000;
const LEAN = process.env.LIVE_LEAN === '1';
const INFLIGHT = Number(process.env.LIVE_INFLIGHT || 200);
const rss0 = process.memoryUsage().rss;
let connected = 0;
let subscribed = 0; // lean: the subscription's first count arrived
let messages = 0;
let errors = 0;
let closed = 0;
let stopping = false;
const sockets = [];
const source = (i) => `127.0.0.${Number(octetArg) + Math.floor(i / PER_ADDRESS)}`;
process.on('SIGUSR1', () => { stopping = true; });

function open(i) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress: source(i), perMessageDeflate: false });
    ws.on('open', () => {
      connected++;
      ws.send(JSON.stringify({ type: 'subscribe', postIds: [posts[i % posts.length]] }));
      resolve();
    });
    ws.on('message', () => { messages++; });
    ws.on('error', (e) => { errors++; console.error(`connection ${i}: ${e.message}`); resolve(); });
    ws.on('close', () => { closed++; });
    sockets.push(ws);
  });
}

// ---- lean subscribers: net.Socket + a few numbers of state each ----------
const target = new URL(url);
const REQUEST = `GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
  + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
// A masked text frame (mask key 0: the payload is sent as is).
function frame(text) {
  const payload = Buffer.from(text);
  if (payload.length > 125) throw new Error('subscribe message too long');
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
}
const subscribeFrames = new Map();
let leanDone = null; // resolves a slot of the in-flight window

// Per socket: s.hs (handshake bytes so far, until the 101), s.rem (payload
// bytes of the current frame still to skip), s.hp (a partial frame header).
function onLeanData(chunk) {
  const s = this;
  if (s.hs !== null) {
    s.hs += chunk.toString('latin1');
    const end = s.hs.indexOf('\r\n\r\n');
    if (end < 0) return;
    if (!s.hs.startsWith('HTTP/1.1 101')) {
      errors++;
      if (errors <= 5) console.error(`handshake: ${s.hs.split('\r\n')[0]}`);
      s.hs = null;
      s.failed = true;
      s.destroy();
      return;
    }
    const rest = Buffer.from(s.hs.slice(end + 4), 'latin1');
    s.hs = null;
    connected++;
    s.write(subscribeFrames.get(s.post));
    s.post = undefined;
    s.done();
    s.done = undefined;
    if (!rest.length) return;
    chunk = rest;
  }
  if (s.hp) { chunk = Buffer.concat([s.hp, chunk]); s.hp = null; }
  let i = 0;
  while (i < chunk.length) {
    if (s.rem > 0) {
      const k = Math.min(s.rem, chunk.length - i);
      s.rem -= k; i += k;
      continue;
    }
    const left = chunk.length - i;
    if (left < 2) { s.hp = Buffer.from(chunk.subarray(i)); return; }
    const op = chunk[i] & 0x0f;
    let len = chunk[i + 1] & 0x7f;
    let head = 2;
    if (len === 126) { head = 4; if (left < 4) { s.hp = Buffer.from(chunk.subarray(i)); return; } len = chunk.readUInt16BE(i + 2); }
    else if (len === 127) { head = 10; if (left < 10) { s.hp = Buffer.from(chunk.subarray(i)); return; } len = Number(chunk.readBigUInt64BE(i + 2)); }
    if (op === 1) { messages++; if (s.fresh) { s.fresh = false; subscribed++; } }
    else if (op === 8) { s.end(); return; }
    i += head;
    s.rem = len;
  }
}
function onLeanError(e) {
  if (this.done && !this.failed) { errors++; this.failed = true; if (errors <= 5) console.error(`connection: ${e.message}`); }
}
function onLeanClose() {
  if (this.done) {
    if (!this.failed) errors++; // closed before the handshake completed
    this.done(); this.done = undefined;
  } else closed++;
}

function openLean(i) {
  return new Promise((resolve) => {
    const post = posts[i % posts.length];
    if (!subscribeFrames.has(post)) subscribeFrames.set(post, frame(JSON.stringify({ type: 'subscribe', postIds: [post] })));
    const s = net.connect({ host: target.hostname, port: Number(target.port), localAddress: source(i) });
    s.hs = '';
    s.rem = 0;
    s.hp = null;
    s.fresh = true;
    s.post = post;
    s.done = resolve;
    s.on('connect', () => s.write(REQUEST));
    s.on('data', onLeanData);
    s.on('error', onLeanError);
    s.on('close', onLeanClose);
    sockets.push(s);
  });
}

const started = performance.now();
const progress = setInterval(() => console.log(JSON.stringify({ progress: connected, errors })), 1000);
if (LEAN) {
  // A window of handshakes in flight: the next starts when one completes.
  let next = 0;
  const lane = async () => {
    while (next < count && !stopping) await openLean(next++);
  };
  await Promise.all(Array.from({ length: Math.min(INFLIGHT, count) }, lane));
} else {
  // Open in waves so the server's accept queue is not flooded.
  for (let i = 0; i < count && !stopping; i += 500) {
    await Promise.all(Array.from({ length: Math.min(500, count - i) }, (_, k) => open(i + k)));
  }
}
clearInterval(progress);
const seconds = (performance.now() - started) / 1000;
console.log(JSON.stringify({ connected, errors, seconds, rss0, rss: process.memoryUsage().rss, stopped: stopping }));
setInterval(() => console.log(JSON.stringify({ messages, subscribed, closed })), 1000);

// Like-to-push latency: like/unlike a quiet post and time the push.
if (probeBase) {
  const post = Number(probePostArg);
  const latencies = [];
  let missed = 0; // no push within 2 s
  const probe = new WebSocket(url);
  let waiting = null;
  probe.on('message', (data) => {
    const m = JSON.parse(data);
    if (waiting && m.postId === post && m.likeCount === waiting.count) {
      latencies.push(performance.now() - waiting.sent);
      waiting.done();
    }
  });
  await new Promise((r) => probe.on('open', r));
  probe.send(JSON.stringify({ type: 'subscribe', postIds: [post] }));
  await new Promise((r) => setTimeout(r, 300));
  let liked = false;
  const loop = async () => {
    for (;;) {
      liked = !liked;
      const sent = performance.now();
      const arrived = new Promise((done) => { waiting = { count: liked ? 1 : 0, sent, done }; });
      try {
        await fetch(`${probeBase}/v1/posts/${post}/like`, { method: liked ? 'PUT' : 'DELETE', headers: { authorization: `Bearer ${probeToken}` } });
      } catch (e) {
        console.error(`probe like: ${e.message}`);
      }
      const got = await Promise.race([arrived.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]);
      if (!got) missed++;
      waiting = null;
      await new Promise((r) => setTimeout(r, 150)); // stay a quiet post: past the 100 ms interval
    }
  };
  loop();
  process.on('SIGUSR2', () => console.log(JSON.stringify({ latencies, missed })));
}
