// Pages of a list by cursor (docs/API.md, "Pagination"): the next page
// continues from the previous page's `nextCursor` and `null` ends the list.
// One load at a time; a refresh starts again from the top and drops a
// stale load that returns late. Items already shown are never shown twice
// (a post can move between pages of a ranking while it is read).

export interface Page<T> {
  items: T[];
  nextCursor?: string | null;
}

export interface PagerState<T> {
  items: T[];
  loading: boolean;
  refreshing: boolean;
  done: boolean;
  error: unknown;
}

export class Pager<T extends { id: number }> {
  private cursor: string | null = null;
  private generation = 0;
  private state: PagerState<T> = { items: [], loading: false, refreshing: false, done: false, error: null };
  private readonly listeners = new Set<(s: PagerState<T>) => void>();

  constructor(private readonly fetchPage: (cursor: string | null) => Promise<Page<T>>) {}

  get current(): PagerState<T> {
    return this.state;
  }

  subscribe(fn: (s: PagerState<T>) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private set(patch: Partial<PagerState<T>>) {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn(this.state);
  }

  /** The next page, unless one is loading or the list has ended. */
  async more(): Promise<void> {
    if (this.state.loading || this.state.done) return;
    const generation = this.generation;
    this.set({ loading: true, error: null });
    try {
      const page = await this.fetchPage(this.cursor);
      if (generation !== this.generation) return;
      const seen = new Set(this.state.items.map((i) => i.id));
      this.cursor = page.nextCursor ?? null;
      this.set({
        items: [...this.state.items, ...page.items.filter((i) => !seen.has(i.id))],
        loading: false,
        refreshing: false,
        done: !page.nextCursor,
      });
    } catch (error) {
      if (generation !== this.generation) return;
      this.set({ loading: false, refreshing: false, error });
    }
  }

  /** From the top again (pull to refresh). */
  async refresh(): Promise<void> {
    this.generation += 1;
    this.cursor = null;
    this.set({ loading: false, refreshing: true, done: false, error: null });
    const generation = this.generation;
    this.set({ loading: true });
    try {
      const page = await this.fetchPage(null);
      if (generation !== this.generation) return;
      this.cursor = page.nextCursor ?? null;
      this.set({ items: page.items, loading: false, refreshing: false, done: !page.nextCursor });
    } catch (error) {
      if (generation !== this.generation) return;
      this.set({ loading: false, refreshing: false, error });
    }
  }
}
