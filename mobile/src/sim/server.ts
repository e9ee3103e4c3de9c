// The simulator's server mode: a bounded load run on the server (the load
// panel API, docs/API.md "Load runs"), polled once a second until its
// proof is in.

import type { Api, LoadRequest, LoadRun } from '../api/client';

export const SERVER_LIMITS = {
  users: [1, 100_000],
  rate: [1, 5000],
  durationSecs: [1, 120],
  posts: [1, 1000],
} as const;

export function finished(run: LoadRun | null): boolean {
  return run?.state === 'done' || run?.state === 'failed';
}

/** Starts a run and reports it every second until it is done; returns the stop function. */
export function follow(api: Api, config: LoadRequest, onRun: (r: LoadRun) => void, onError: (e: unknown) => void): () => void {
  let stopped = false;
  void (async () => {
    try {
      let run = await api.startLoadRun(config);
      onRun(run);
      while (!stopped && !finished(run)) {
        await new Promise((r) => setTimeout(r, 1000));
        if (stopped) return;
        run = await api.currentLoadRun();
        onRun(run);
      }
    } catch (err) {
      if (!stopped) onError(err);
    }
  })();
  return () => {
    stopped = true;
  };
}
