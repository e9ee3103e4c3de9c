// Live counts over Socket.io (docs/LIVE.md), with the official client.
//
// Screens watch the posts they show and let go when they leave; the client
// subscribes each post once however many screens show it (a count per
// post), batches what changed within a tick into one `subscribe` or
// `unsubscribe`, and after every (re)connect subscribes again to all it
// watches: the server answers with the current counts first, so a client
// that was away catches up without adding pushes up. socket.io-client
// reconnects by itself with exponential backoff and jitter.

import { io, type Socket } from 'socket.io-client';

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'offline';

export interface LiveCount {
  postId: number;
  likeCount: number;
  version: number;
}

export interface LiveOptions {
  /** For tests: the Socket.io client's factory. */
  connect?: typeof io;
  /** Reconnection backoff, ms (defaults: 500 doubling to 10 s, ±50 %). */
  reconnectionDelay?: number;
  reconnectionDelayMax?: number;
}

type CountListener = (c: LiveCount) => void;
type StateListener = (s: LiveState) => void;

export class LiveClient {
  private socket: Socket | null = null;
  private readonly watched = new Map<number, number>();
  private pendingSub = new Set<number>();
  private pendingUnsub = new Set<number>();
  private flushQueued = false;
  private readonly counts = new Set<CountListener>();
  private readonly states = new Set<StateListener>();
  private current: LiveState = 'offline';
  /** Connections made (the first included): for the UI and tests. */
  connects = 0;

  constructor(
    readonly baseUrl: string,
    private readonly opts: LiveOptions = {},
  ) {}

  get state(): LiveState {
    return this.current;
  }

  private setState(s: LiveState) {
    if (s === this.current) return;
    this.current = s;
    for (const fn of this.states) fn(s);
  }

  onCount(fn: CountListener): () => void {
    this.counts.add(fn);
    return () => this.counts.delete(fn);
  }

  onState(fn: StateListener): () => void {
    this.states.add(fn);
    fn(this.current);
    return () => this.states.delete(fn);
  }

  start() {
    if (this.socket) return;
    const connect = this.opts.connect ?? io;
    const socket = connect(this.baseUrl, {
      transports: ['websocket', 'polling'],
      reconnection: true,
      reconnectionDelay: this.opts.reconnectionDelay ?? 500,
      reconnectionDelayMax: this.opts.reconnectionDelayMax ?? 10_000,
      randomizationFactor: 0.5,
      timeout: 10_000,
    });
    this.socket = socket;
    this.setState('connecting');
    socket.on('connect', () => {
      this.connects += 1;
      this.setState('live');
      // A fresh connection knows nothing: everything watched, again.
      this.pendingUnsub.clear();
      this.pendingSub = new Set(this.watched.keys());
      this.flush();
    });
    socket.on('disconnect', (reason) => {
      // 'io client disconnect' is ours (stop); anything else reconnects.
      this.setState(reason === 'io client disconnect' ? 'offline' : 'reconnecting');
    });
    socket.on('connect_error', () => {
      if (this.current !== 'offline') this.setState(this.connects === 0 ? 'connecting' : 'reconnecting');
    });
    socket.on('likeCount', (c: LiveCount) => {
      if (typeof c?.postId !== 'number' || typeof c.likeCount !== 'number') return;
      for (const fn of this.counts) fn({ postId: c.postId, likeCount: c.likeCount, version: c.version ?? 0 });
    });
    socket.on('error', (e: { code?: string; message?: string }) => {
      console.warn('live:', e?.code, e?.message);
    });
  }

  stop() {
    this.socket?.disconnect();
    this.socket?.removeAllListeners();
    this.socket = null;
    this.setState('offline');
  }

  /** Watch `ids` until the returned function is called. */
  watch(ids: number[]): () => void {
    for (const id of ids) {
      const n = this.watched.get(id) ?? 0;
      this.watched.set(id, n + 1);
      if (n === 0) {
        if (!this.pendingUnsub.delete(id)) this.pendingSub.add(id);
      }
    }
    this.queueFlush();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const id of ids) {
        const n = this.watched.get(id) ?? 0;
        if (n <= 1) {
          this.watched.delete(id);
          if (!this.pendingSub.delete(id)) this.pendingUnsub.add(id);
        } else {
          this.watched.set(id, n - 1);
        }
      }
      this.queueFlush();
    };
  }

  /** Posts watched now. */
  watching(): number[] {
    return [...this.watched.keys()];
  }

  private queueFlush() {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setTimeout(() => {
      this.flushQueued = false;
      this.flush();
    }, 0);
  }

  private flush() {
    const socket = this.socket;
    if (!socket?.connected) return; // sent on connect
    if (this.pendingUnsub.size) socket.emit('unsubscribe', [...this.pendingUnsub]);
    // The server caps a connection at 500 watched posts; screens show far fewer.
    if (this.pendingSub.size) socket.emit('subscribe', [...this.pendingSub]);
    this.pendingSub.clear();
    this.pendingUnsub.clear();
  }
}
