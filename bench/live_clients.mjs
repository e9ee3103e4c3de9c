// One process of live subscribers for bench/live.py: opens plain WebSocket
// connections to /v1/live (from several loopback source addresses, to get
// past the ephemeral port limit of one address), subscribes each to posts,
// counts the pushes, and optionally probes like-to-push latency.
//
// argv: <ws url> <connections> <first source octet> <posts csv> [probe: <http base> <token> <post>]
// Prints JSON lines on stdout: {"connected": n}, then every second
// {"messages": total}, and {"latencies": [ms...]} when asked (SIGUSR2).
import WebSocket from '../tests/js/node_modules/ws/index.js';

const [url, countArg, octetArg, postsArg, probeBase, probeToken, probePostArg] = process.argv.slice(2);
const count = Number(countArg);
const posts = postsArg.split(',').map(Number);
const PER_ADDRESS = 20000;
let connected = 0;
let messages = 0;
const sockets = [];

function open(i) {
  return new Promise((resolve) => {
    const localAddress = `127.0.0.${Number(octetArg) + Math.floor(i / PER_ADDRESS)}`;
    const ws = new WebSocket(url, { localAddress, perMessageDeflate: false });
    ws.on('open', () => {
      connected++;
      ws.send(JSON.stringify({ type: 'subscribe', postIds: [posts[i % posts.length]] }));
      resolve();
    });
    ws.on('message', () => { messages++; });
    ws.on('error', (e) => { console.error(`connection ${i}: ${e.message}`); resolve(); });
    sockets.push(ws);
  });
}

// Open in waves so the server's accept queue is not flooded.
for (let i = 0; i < count; i += 500) {
  await Promise.all(Array.from({ length: Math.min(500, count - i) }, (_, k) => open(i + k)));
}
console.log(JSON.stringify({ connected }));
setInterval(() => console.log(JSON.stringify({ messages })), 1000);

// Like-to-push latency: like/unlike a quiet post and time the push.
if (probeBase) {
  const post = Number(probePostArg);
  const latencies = [];
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
      await fetch(`${probeBase}/v1/posts/${post}/like`, { method: liked ? 'PUT' : 'DELETE', headers: { authorization: `Bearer ${probeToken}` } });
      await Promise.race([arrived, new Promise((r) => setTimeout(r, 2000))]);
      waiting = null;
      await new Promise((r) => setTimeout(r, 150)); // stay a quiet post: past the 100 ms interval
    }
  };
  loop();
  process.on('SIGUSR2', () => console.log(JSON.stringify({ latencies })));
}
