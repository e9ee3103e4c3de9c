// Live counts with the official socket.io-client (v4), unchanged, against
// real `tally serve` processes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { backend, tempDir, seed, serve, stopAll, createPost, like, pool, waitFor } from './harness.mjs';

after(stopAll);

function connect(base) {
  return io(base, { transports: ['websocket'], reconnection: true, reconnectionDelay: 100 });
}

test('subscribe, like over HTTP, receive the new count', async () => {
  const dir = tempDir();
  const users = seed(dir, [], 3);
  const { base } = await serve(dir, []);
  const post = await createPost(base, users[0].token);
  await like(base, users[1].token, post);

  const socket = connect(base);
  try {
    const snapshot = waitFor(socket, 'likeCount', (m) => m.postId === post);
    socket.emit('subscribe', [post]);
    const first = await snapshot;
    assert.deepEqual({ ...first, version: undefined }, { postId: post, likeCount: 1, version: undefined },
      'current count on subscribe');
    assert.ok(Number.isSafeInteger(first.version) && first.version > 0, `a version: ${first.version}`);

    const pushed = waitFor(socket, 'likeCount', (m) => m.postId === post && m.likeCount === 2);
    const answer = await like(base, users[2].token, post);
    assert.equal(answer.likeCount, 2);
    // The push carries the answer's version, newer than the snapshot's.
    assert.equal((await pushed).version, answer.version);
    assert.ok(answer.version > first.version, `${answer.version} after ${first.version}`);

    socket.emit('unsubscribe', [post]);
    await new Promise((r) => setTimeout(r, 200));
    let after = 0;
    socket.on('likeCount', () => after++);
    await like(base, users[2].token, post, 'DELETE');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(after, 0, 'no pushes after unsubscribe');
  } finally {
    socket.close();
  }
});

test('a like on node A reaches a subscriber on node B through Redis', async () => {
  const args = backend('redis_pg');
  const dirA = tempDir();
  const users = seed(dirA, args, 2);
  const a = await serve(dirA, args);
  const b = await serve(tempDir(), args);
  const post = await createPost(a.base, users[0].token);

  const socket = connect(b.base);
  try {
    const snapshot = waitFor(socket, 'likeCount', (m) => m.postId === post);
    socket.emit('subscribe', { postIds: [post] });
    assert.equal((await snapshot).likeCount, 0);
    const pushed = waitFor(socket, 'likeCount', (m) => m.postId === post && m.likeCount === 1);
    const answer = await like(a.base, users[1].token, post);
    // Through Redis too, with the version node A answered.
    assert.equal((await pushed).version, answer.version);
  } finally {
    socket.close();
  }
});

test('a burst of 5,000 likes sends few messages, the last one the final count', async () => {
  const dir = tempDir();
  const users = seed(dir, [], 5000);
  const { base } = await serve(dir, []);
  const post = await createPost(base, users[0].token);

  const socket = connect(base);
  try {
    const seen = [];
    socket.on('likeCount', (m) => { if (m.postId === post) seen.push(m.likeCount); });
    const snapshot = waitFor(socket, 'likeCount', (m) => m.postId === post);
    socket.emit('subscribe', [post]);
    await snapshot;
    const started = Date.now();
    await pool(users, 64, (u) => like(base, u.token, post));
    const seconds = (Date.now() - started) / 1000;
    // Within one interval (100 ms) of the last like, the last push arrives.
    await waitFor(socket, 'likeCount', (m) => m.postId === post && m.likeCount === 5000, 2000)
      .catch(() => assert.equal(seen.at(-1), 5000, 'final count pushed'));
    const bound = Math.ceil(seconds * 10) + 3; // 10 per second, plus the snapshot and edges
    assert.ok(seen.length <= bound, `${seen.length} messages for ${seconds.toFixed(1)} s of likes (bound ${bound})`);
    assert.ok(seen.length < 200, `coalesced: ${seen.length} messages for 5,000 likes`);
    assert.equal(seen.at(-1), 5000);
  } finally {
    socket.close();
  }
});

test('after a reconnect, subscribing again gives the current count', async () => {
  const dir = tempDir();
  const users = seed(dir, [], 3);
  const { base } = await serve(dir, []);
  const post = await createPost(base, users[0].token);
  const socket = connect(base);
  try {
    socket.on('connect', () => socket.emit('subscribe', [post]));
    await waitFor(socket, 'likeCount', (m) => m.postId === post && m.likeCount === 0);
    socket.io.engine.close(); // the network drops; the client reconnects by itself
    await like(base, users[1].token, post);
    await like(base, users[2].token, post);
    await waitFor(socket, 'likeCount', (m) => m.postId === post && m.likeCount === 2);
  } finally {
    socket.close();
  }
});

test('a malformed subscribe answers an error event with invalid_request; the socket stays usable', async () => {
  const dir = tempDir();
  const users = seed(dir, [], 1);
  const { base } = await serve(dir, []);
  const post = await createPost(base, users[0].token);
  const socket = connect(base);
  try {
    await new Promise((resolve) => socket.on('connect', resolve));
    for (const bad of ['nope', { postIds: 'x' }, [true]]) {
      const error = waitFor(socket, 'error', () => true);
      socket.emit('subscribe', bad);
      assert.equal((await error).code, 'invalid_request', JSON.stringify(bad));
    }
    const snapshot = waitFor(socket, 'likeCount', (m) => m.postId === post);
    socket.emit('subscribe', [post]);
    assert.equal((await snapshot).likeCount, 0);
  } finally {
    socket.close();
  }
});

test('a message over 64 KiB closes the socket.io connection', async () => {
  const dir = tempDir();
  const { base } = await serve(dir, []);
  const socket = io(base, { transports: ['websocket'], reconnection: false });
  try {
    await new Promise((resolve) => socket.on('connect', resolve));
    const closed = new Promise((resolve) => socket.on('disconnect', resolve));
    socket.emit('subscribe', Array.from({ length: 20000 }, (_, i) => 1000000 + i));
    const reason = await closed;
    assert.match(reason, /transport (close|error)/);
  } finally {
    socket.close();
  }
});
