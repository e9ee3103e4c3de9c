// The simulator's local mode: the phone itself drives N simulated users
// against the server, then proves the counts it saw.
//
// Each simulated user is a real account (signed up for the run) and never
// has two likes in flight, so the last answer per (user, post) says what
// the server holds. A like whose outcome is unknown (no answer, a 503) is
// read back, never guessed. The proof: for every post, the server's
// likers among the run's users equal what the answers said, and the count
// moved by exactly the run's net likes (which holds while nobody else
// likes those posts during the run; the report says so when it fails).

import type { Api, Post } from '../api/client';
import { outcomeUnknown, describe } from '../api/errors';

export interface LocalConfig {
  users: number;
  rate: number;
  durationSecs: number;
  posts: number;
}

export const LOCAL_LIMITS = {
  users: [1, 50],
  rate: [1, 100],
  durationSecs: [1, 120],
  posts: [1, 20],
} as const satisfies Record<keyof LocalConfig, readonly [number, number]>;

export interface LocalSample {
  second: number;
  ops: number;
  errors: number;
  p50Ms: number;
  p99Ms: number;
}

export interface LocalVerdict {
  verdict: 'exact' | 'drift';
  pairs: number;
  likesExpected: number;
  postsChecked: number;
  unknownReadBack: number;
  differences: string[];
}

export type LocalState = 'preparing' | 'running' | 'proving' | 'done' | 'failed';

export interface LocalRunView {
  state: LocalState;
  config: LocalConfig;
  samples: LocalSample[];
  total: number;
  errors: number;
  consistency: LocalVerdict | null;
  error: string | null;
}

interface Pair {
  liked: boolean;
  unknown: boolean;
}

/** Checks a config against the bounds; a sentence when it is out of them. */
export function checkLocal(c: LocalConfig): string | null {
  for (const [k, [lo, hi]] of Object.entries(LOCAL_LIMITS) as [keyof LocalConfig, readonly [number, number]][]) {
    const v = c[k];
    if (!Number.isInteger(v) || v < lo || v > hi) return `${k} must be a whole number from ${lo} to ${hi}.`;
  }
  return null;
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class LocalRun {
  private view: LocalRunView;
  private stopped = false;

  constructor(
    private readonly api: Api,
    config: LocalConfig,
    private readonly onChange: (v: LocalRunView) => void,
    /** For names that cannot collide between runs. */
    private readonly runId: string = Math.random().toString(36).slice(2, 8),
  ) {
    this.view = { state: 'preparing', config, samples: [], total: 0, errors: 0, consistency: null, error: null };
  }

  get current(): LocalRunView {
    return this.view;
  }

  stop() {
    this.stopped = true;
  }

  private set(patch: Partial<LocalRunView>) {
    this.view = { ...this.view, ...patch };
    this.onChange(this.view);
  }

  async run(): Promise<LocalRunView> {
    try {
      const posts = await this.pickPosts();
      const users = await this.signUpUsers();
      const baseline = new Map<number, number>();
      for (const p of posts) baseline.set(p.id, (await this.api.post(p.id)).likeCount);
      const ledger = await this.drive(users, posts);
      this.set({ state: 'proving' });
      const consistency = await this.prove(users, posts, baseline, ledger);
      this.set({ state: 'done', consistency });
    } catch (err) {
      this.set({ state: 'failed', error: describe(err) === 'Something went wrong. Please try again.' ? String(err) : describe(err) });
    }
    return this.view;
  }

  private async pickPosts(): Promise<Post[]> {
    const { config } = this.view;
    const posts: Post[] = [];
    let cursor: string | null | undefined = null;
    do {
      const page = await this.api.posts(cursor);
      posts.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor && posts.length < config.posts);
    if (posts.length === 0) throw new Error('There are no posts to like yet: post one first.');
    return posts.slice(0, config.posts);
  }

  private async signUpUsers(): Promise<Api[]> {
    const out: Api[] = [];
    const password = `sim-${this.runId}-${Math.random().toString(36).slice(2)}`;
    for (let i = 0; i < this.view.config.users; i++) {
      const name = `sim_${this.runId}_${i}`;
      await this.api.signUp(name, password);
      const s = await this.api.signIn(name, password);
      out.push(this.api.as(s.token));
    }
    return out;
  }

  /** Open loop: one like or unlike every 1/rate s, by an idle user, on a random post. */
  private async drive(users: Api[], posts: Post[]): Promise<Map<string, Pair>> {
    const { rate, durationSecs } = this.view.config;
    const ledger = new Map<string, Pair>();
    const busy = new Set<number>();
    const inflight = new Set<Promise<void>>();
    const start = Date.now();
    let second = 0;
    let latencies: number[] = [];
    let ops = 0;
    let errs = 0;
    const flushSecond = () => {
      latencies.sort((a, b) => a - b);
      const sample = { second, ops, errors: errs, p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99) };
      this.set({ samples: [...this.view.samples, sample], total: this.view.total + ops, errors: this.view.errors + errs });
      second += 1;
      latencies = [];
      ops = 0;
      errs = 0;
    };
    this.set({ state: 'running' });
    const interval = 1000 / rate;
    for (let i = 0; !this.stopped; i++) {
      const due = start + i * interval;
      if (due >= start + durationSecs * 1000) break;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      while (Date.now() - start >= (second + 1) * 1000) flushSecond();
      const idle = users.map((_, u) => u).filter((u) => !busy.has(u));
      if (idle.length === 0) continue; // every user waits for an answer: this tick is skipped
      const u = idle[Math.floor(Math.random() * idle.length)] ?? 0;
      const post = posts[Math.floor(Math.random() * posts.length)];
      if (!post) continue;
      const key = `${u}:${post.id}`;
      const pair = ledger.get(key) ?? { liked: false, unknown: false };
      const want = pair.unknown ? true : !pair.liked;
      busy.add(u);
      const t0 = Date.now();
      const job = users[u]!
        .like(post.id, want)
        .then((answer) => {
          ledger.set(key, { liked: answer.liked, unknown: false });
          latencies.push(Date.now() - t0);
          ops += 1;
        })
        .catch((err) => {
          errs += 1;
          if (outcomeUnknown(err)) ledger.set(key, { ...pair, unknown: true });
        })
        .finally(() => {
          busy.delete(u);
          inflight.delete(job);
        });
      inflight.add(job);
    }
    await Promise.all(inflight);
    flushSecond();
    // Unknown outcomes: read back what the server holds.
    for (const [key, pair] of ledger) {
      if (!pair.unknown) continue;
      const [u, p] = key.split(':').map(Number) as [number, number];
      const seen = await users[u]!.post(p);
      ledger.set(key, { liked: seen.likedByMe, unknown: true });
    }
    return ledger;
  }

  private async prove(users: Api[], posts: Post[], baseline: Map<number, number>, ledger: Map<string, Pair>): Promise<LocalVerdict> {
    const names = new Set(users.map((_, i) => `sim_${this.runId}_${i}`));
    const expected = new Map<number, Set<string>>(posts.map((p) => [p.id, new Set<string>()]));
    for (const [key, pair] of ledger) {
      const [u, p] = key.split(':').map(Number) as [number, number];
      if (pair.liked) expected.get(p)?.add(`sim_${this.runId}_${u}`);
    }
    const likesExpected = [...expected.values()].reduce((n, s) => n + s.size, 0);
    const unknownReadBack = [...ledger.values()].filter((p) => p.unknown).length;
    // The likers list trails counts by the write-behind's delay: retry a while.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const differences: string[] = [];
      for (const post of posts) {
        const want = expected.get(post.id) ?? new Set<string>();
        const seen = await this.api.post(post.id);
        const moved = seen.likeCount - (baseline.get(post.id) ?? 0);
        if (moved !== want.size) differences.push(`post ${post.id}: count moved by ${moved}, the run's answers say ${want.size}`);
        const likers = new Set<string>();
        let cursor: string | null | undefined = null;
        do {
          const page = await this.api.likers(post.id, cursor);
          for (const l of page.items) if (names.has(l.username)) likers.add(l.username);
          cursor = page.nextCursor;
        } while (cursor);
        const extra = [...likers].filter((n) => !want.has(n)).length;
        const missing = [...want].filter((n) => !likers.has(n)).length;
        if (extra || missing) differences.push(`post ${post.id}: likers has ${extra} the answers lack and lacks ${missing}`);
      }
      if (differences.length === 0 || Date.now() > deadline) {
        return { verdict: differences.length ? 'drift' : 'exact', pairs: ledger.size, likesExpected, postsChecked: posts.length, unknownReadBack, differences };
      }
      await sleep(500);
    }
  }
}
