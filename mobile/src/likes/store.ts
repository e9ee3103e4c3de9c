// Like state per post, shared by every screen that shows the post.
//
// A tap changes the *desired* state and the count at once (optimistic). At
// most one request per post is in flight; when it returns, at most one
// follow-up is sent if the user changed their mind meanwhile. Only PUT and
// DELETE are sent: idempotent, safe to repeat, never a blind toggle, so a
// like is never counted twice.
//
// Counts are state ordered by version (docs/LIVE.md, "Versions"): a count
// from a like answer, a live push, a snapshot or a post read is shown only
// if its version is not older than the one shown, so a late answer or a
// stale snapshot never takes a newer count back. The server's answer (the
// exact count after our like) replaces the optimistic guess. A failure
// rolls the guess back; a failure whose outcome is unknown (no answer, a
// 503) is resolved by reading the post back, as the web client does.

import type { LikeAnswer, Post } from '../api/client';
import { outcomeUnknown } from '../api/errors';

export interface LikeState {
  id: number;
  /** The count shown (the optimistic guess included). */
  count: number;
  /** Version of the last count taken from the server (undefined: none yet). */
  version: number | undefined;
  /** What the server last said about our like. */
  liked: boolean;
  /** What the user wants (what the button shows). */
  desired: boolean;
  inflight: boolean;
  /** How much of `count` is our guess, undone on failure. */
  optimistic: number;
}

export interface LikeTransport {
  like(id: number, on: boolean): Promise<LikeAnswer>;
  post(id: number): Promise<Post>;
}

type Listener = (s: LikeState) => void;

export class LikeStore {
  private readonly states = new Map<number, LikeState>();
  private readonly listeners = new Map<number, Set<Listener>>();

  constructor(
    private transport: LikeTransport,
    /** Told about a failed like (with the error), after the rollback. */
    private readonly onError: (id: number, err: unknown, wanted: boolean) => void = () => {},
  ) {}

  /** A new server or user: forget every post. */
  reset(transport: LikeTransport) {
    this.transport = transport;
    this.states.clear();
  }

  get(id: number): LikeState | undefined {
    return this.states.get(id);
  }

  /** Calls `fn` whenever the post's state changes; returns the unsubscribe. */
  subscribe(id: number, fn: Listener): () => void {
    let set = this.listeners.get(id);
    if (!set) {
      set = new Set();
      this.listeners.set(id, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (set.size === 0) this.listeners.delete(id);
    };
  }

  private emit(s: LikeState) {
    const snapshot = { ...s };
    for (const fn of this.listeners.get(s.id) ?? []) fn(snapshot);
  }

  /** Takes `count` at `version` if it is not older than what `s` shows. */
  private static newer(s: LikeState, count: number, version: number): boolean {
    if (s.version !== undefined && version < s.version) return false;
    s.count = count;
    s.version = version;
    return true;
  }

  /** What a fresh read of the post said (ignored for the like state while a like is in flight). */
  track(post: Post): LikeState {
    let s = this.states.get(post.id);
    if (!s) {
      s = {
        id: post.id,
        count: post.likeCount,
        version: undefined,
        liked: post.likedByMe,
        desired: post.likedByMe,
        inflight: false,
        optimistic: 0,
      };
      this.states.set(post.id, s);
    }
    if (!s.inflight) {
      LikeStore.newer(s, post.likeCount, post.likeVersion);
      s.liked = post.likedByMe;
      s.desired = post.likedByMe;
      s.optimistic = 0;
      this.emit(s);
    }
    return { ...s };
  }

  /** A live count (push or snapshot). While a like is in flight it shows too, but leaves the button alone. */
  push(id: number, count: number, version: number) {
    const s = this.states.get(id);
    if (!s || !LikeStore.newer(s, count, version)) return;
    s.optimistic = 0;
    this.emit(s);
  }

  /** The user tapped the button. */
  tap(id: number): Promise<void> {
    const s = this.states.get(id);
    if (!s) return Promise.resolve();
    s.desired = !s.desired;
    this.bump(s, s.desired ? 1 : -1);
    this.emit(s);
    return s.inflight ? Promise.resolve() : this.send(s);
  }

  private bump(s: LikeState, d: number) {
    const next = Math.max(0, s.count + d);
    s.optimistic += next - s.count;
    s.count = next;
  }

  private async send(s: LikeState): Promise<void> {
    s.inflight = true;
    const want = s.desired;
    let answer: LikeAnswer;
    try {
      answer = await this.transport.like(s.id, want);
    } catch (err) {
      s.inflight = false;
      await this.fail(s, err, want);
      return;
    }
    s.inflight = false;
    s.liked = answer.liked;
    // The answer is the exact count after our like: it replaces the guess,
    // unless a newer push came first (then that stays).
    s.count -= s.optimistic;
    s.optimistic = 0;
    LikeStore.newer(s, answer.likeCount, answer.version);
    if (s.desired !== s.liked) {
      this.bump(s, s.desired ? 1 : -1);
      this.emit(s);
      return this.send(s);
    }
    this.emit(s);
  }

  /** Rolls the guess back; an unknown outcome is read back. */
  private async fail(s: LikeState, err: unknown, wanted: boolean) {
    s.count = Math.max(0, s.count - s.optimistic);
    s.optimistic = 0;
    s.desired = s.liked;
    this.emit(s);
    this.onError(s.id, err, wanted);
    if (outcomeUnknown(err)) {
      try {
        this.track(await this.transport.post(s.id));
      } catch {
        // Still unreachable: the next read of the post settles it.
      }
    }
  }
}
