// One WebSocket to /v1/live for the whole app. Views say which posts they
// show (watch/unwatch, reference-counted, so a post on two views is one
// subscription); this module keeps the server's subscription set equal to
// that, reconnects with backoff and resubscribes everything, since pushes
// are at-most-once and the snapshot sent on subscribe is the truth.
//
// Every count carries its version (docs/LIVE.md, "Versions"); listeners
// get it and keep the newest (like.js). Heartbeat: the client pings every
// PING_EVERY_MS and the server answers `pong`; a socket that brought no
// frame at all for DEAD_AFTER_MS is dead even if the browser has not
// noticed (a sleeping laptop, a dropped NAT entry): it is closed, the state
// leaves 'live', and the usual reconnect follows.

const MAX_SUBSCRIPTIONS = 500;
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
/** A connection must stay up this long before the backoff starts over. */
const STABLE_MS = 3000;
const PING_EVERY_MS = 10_000;
const DEAD_AFTER_MS = 25_000;

const wanted = new Map(); // postId → number of watchers
let subscribed = new Set(); // what the server has for this connection
let socket = null;
let state = 'connecting';
let delay = FIRST_DELAY_MS;
let retryTimer = null;
let stableTimer = null;
let flushQueued = false;
let pingTimer = null;
let deadTimer = null;
const countListeners = new Set();
const stateListeners = new Set();

/** `fn(postId, likeCount, version)` for every count the server sends. */
export function onCount(fn) {
  countListeners.add(fn);
}

/** `fn(state)`: 'connecting' | 'live' | 'reconnecting'. */
export function onState(fn) {
  stateListeners.add(fn);
  fn(state);
}

function setState(next) {
  if (next === state) return;
  state = next;
  for (const fn of stateListeners) fn(state);
}

export function watch(id) {
  wanted.set(id, (wanted.get(id) || 0) + 1);
  queueFlush();
}

export function unwatch(id) {
  const n = (wanted.get(id) || 0) - 1;
  if (n > 0) wanted.set(id, n);
  else wanted.delete(id);
  queueFlush();
}

const isOpen = () => socket && socket.readyState === WebSocket.OPEN;

function send(msg) {
  socket.send(JSON.stringify(msg));
}

function queueFlush() {
  if (flushQueued) return;
  flushQueued = true;
  queueMicrotask(() => {
    flushQueued = false;
    flush();
  });
}

/** Brings the server's set in line with `wanted`, in one message each way. */
function flush() {
  if (!isOpen()) return;
  const drop = [...subscribed].filter((id) => !wanted.has(id));
  const room = MAX_SUBSCRIPTIONS - (subscribed.size - drop.length);
  const add = [...wanted.keys()].filter((id) => !subscribed.has(id)).slice(0, Math.max(0, room));
  if (drop.length) {
    send({ type: 'unsubscribe', postIds: drop });
    for (const id of drop) subscribed.delete(id);
  }
  if (add.length) {
    send({ type: 'subscribe', postIds: add });
    for (const id of add) subscribed.add(id);
  }
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/live`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => {
    if (socket !== ws) return;
    subscribed = new Set();
    setState('live');
    flush();
    stableTimer = setTimeout(() => { delay = FIRST_DELAY_MS; }, STABLE_MS);
    alive(ws);
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (socket === ws && isOpen()) send({ type: 'ping' });
    }, PING_EVERY_MS);
  };
  ws.onmessage = (event) => {
    if (socket !== ws) return;
    alive(ws);
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (msg.type === 'likeCount') {
      for (const fn of countListeners) fn(msg.postId, msg.likeCount, msg.version ?? 0);
    } else if (msg.type === 'pong') {
      // alive() above is all a pong is for.
    } else if (msg.type === 'error') {
      console.warn('live:', msg.code, msg.message);
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    socket = null;
    scheduleReconnect();
  };
  // An error is always followed by close; nothing to do here.
  ws.onerror = () => {};
}

/** `ws` just showed it is alive: it has DEAD_AFTER_MS until the next sign. */
function alive(ws) {
  clearTimeout(deadTimer);
  deadTimer = setTimeout(() => {
    if (socket !== ws) return;
    console.warn(`live: no frame for ${DEAD_AFTER_MS / 1000} s; reconnecting`);
    socket = null;
    ws.close();
    scheduleReconnect();
  }, DEAD_AFTER_MS);
}

function scheduleReconnect() {
  clearTimeout(stableTimer);
  clearTimeout(deadTimer);
  clearInterval(pingTimer);
  setState('reconnecting');
  if (retryTimer) return;
  // Jitter: somewhere between half and all of the current delay, so a
  // restarted server is not hit by every client in the same instant.
  const wait = delay * (0.5 + Math.random() * 0.5);
  delay = Math.min(delay * 2, MAX_DELAY_MS);
  retryTimer = setTimeout(connect, wait);
}

/** Drops the current socket (if any) and connects again now. */
function reconnectNow() {
  if (isOpen()) return;
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  delay = FIRST_DELAY_MS;
  connect();
}

export function start() {
  connect();
  // The browser knows before the socket does: skip the backoff when the
  // network comes back or the tab is shown again, close early when it goes.
  addEventListener('online', reconnectNow);
  addEventListener('offline', () => {
    if (!socket) return;
    const old = socket;
    socket = null;
    old.close();
    scheduleReconnect();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !socket) reconnectNow();
  });
}
