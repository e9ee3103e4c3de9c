import type { io } from 'socket.io-client';
import { LiveClient, type LiveCount, type LiveState } from '../src/live/live';
import { flush } from '../testing/fixtures';

/**
 * A stand-in for socket.io-client's Socket, driven by the test: it records
 * what the client emits and lets the test connect, drop and push. (The
 * end-to-end test runs the real client against a real server.)
 */
class FakeSocket {
  connected = false;
  emitted: [string, unknown][] = [];
  private handlers = new Map<string, ((...a: unknown[]) => void)[]>();
  on(event: string, fn: (...a: unknown[]) => void) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), fn]);
    return this;
  }
  emit(event: string, payload: unknown) {
    this.emitted.push([event, payload]);
    return this;
  }
  fire(event: string, ...args: unknown[]) {
    for (const fn of this.handlers.get(event) ?? []) fn(...args);
  }
  connect() {
    this.connected = true;
    this.fire('connect');
  }
  drop() {
    this.connected = false;
    this.fire('disconnect', 'transport close');
  }
  disconnect() {
    this.connected = false;
    this.fire('disconnect', 'io client disconnect');
  }
  removeAllListeners() {
    this.handlers.clear();
  }
}

function setup() {
  const socket = new FakeSocket();
  let options: Record<string, unknown> = {};
  const connect = ((_url: string, opts: Record<string, unknown>) => {
    options = opts;
    return socket;
  }) as unknown as typeof io;
  const client = new LiveClient('http://127.0.0.1:8080', { connect });
  const states: LiveState[] = [];
  client.onState((s) => states.push(s));
  const counts: LiveCount[] = [];
  client.onCount((c) => counts.push(c));
  client.start();
  return { socket, client, states, counts, options: () => options };
}

describe('live counts over Socket.io', () => {
  test('subscribes what screens watch, once per post, and lets go when they leave', async () => {
    const { socket, client } = setup();
    socket.connect();
    const a = client.watch([1, 2]);
    const b = client.watch([2, 3]);
    await flush();
    expect(socket.emitted).toEqual([['subscribe', [1, 2, 3]]]);
    a();
    await flush();
    expect(socket.emitted[1]).toEqual(['unsubscribe', [1]]); // 2 is still on screen
    b();
    await flush();
    expect(socket.emitted[2]).toEqual(['unsubscribe', [2, 3]]);
    expect(client.watching()).toEqual([]);
  });

  test('after a reconnect it subscribes again to everything watched (a fresh snapshot)', async () => {
    const { socket, client, states, options } = setup();
    expect(options()).toMatchObject({ reconnection: true, randomizationFactor: 0.5 });
    client.watch([7, 8]);
    await flush();
    expect(socket.emitted).toEqual([]); // not connected yet: sent on connect
    socket.connect();
    expect(socket.emitted).toEqual([['subscribe', [7, 8]]]);
    socket.drop();
    expect(client.state).toBe('reconnecting');
    client.watch([9]);
    await flush();
    socket.connect();
    expect(socket.emitted.at(-1)).toEqual(['subscribe', [7, 8, 9]]);
    expect(states).toEqual(['offline', 'connecting', 'live', 'reconnecting', 'live']);
    expect(client.connects).toBe(2);
  });

  test('pushes reach listeners; malformed ones are dropped', () => {
    const { socket, counts } = setup();
    socket.connect();
    socket.fire('likeCount', { postId: 7, likeCount: 3, version: 99 });
    socket.fire('likeCount', { postId: 'x' });
    socket.fire('likeCount', null);
    expect(counts).toEqual([{ postId: 7, likeCount: 3, version: 99 }]);
  });

  test('stop is offline for good', () => {
    const { socket, client } = setup();
    socket.connect();
    client.stop();
    expect(client.state).toBe('offline');
  });
});
