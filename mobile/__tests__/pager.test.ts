import { Pager, type Page } from '../src/feed/pager';

type Item = { id: number };

function server(total: number, size = 3) {
  const calls: (string | null)[] = [];
  const fetch = async (cursor: string | null): Promise<Page<Item>> => {
    calls.push(cursor);
    const start = cursor ? Number(cursor) : 0;
    const items = Array.from({ length: Math.min(size, total - start) }, (_, i) => ({ id: total - (start + i) }));
    const next = start + size < total ? String(start + size) : null;
    return { items, nextCursor: next };
  };
  return { fetch, calls };
}

describe('feed paging', () => {
  test('pages follow nextCursor to the end, one load at a time', async () => {
    const s = server(7);
    const pager = new Pager<Item>(s.fetch);
    await pager.refresh();
    expect(pager.current.items.map((i) => i.id)).toEqual([7, 6, 5]);
    await Promise.all([pager.more(), pager.more()]); // a second call while loading is dropped
    expect(s.calls).toEqual([null, '3']);
    await pager.more();
    expect(pager.current.items.map((i) => i.id)).toEqual([7, 6, 5, 4, 3, 2, 1]);
    expect(pager.current.done).toBe(true);
    await pager.more();
    expect(s.calls).toHaveLength(3); // nothing after the end
  });

  test('pull to refresh starts from the top and drops a late page of the old list', async () => {
    let release: (p: Page<Item>) => void = () => {};
    const calls: (string | null)[] = [];
    const pager = new Pager<Item>((cursor) => {
      calls.push(cursor);
      if (cursor === 'late') return new Promise((r) => (release = r));
      return Promise.resolve({ items: [{ id: 9 }, { id: 8 }], nextCursor: 'late' });
    });
    await pager.refresh();
    const stale = pager.more();
    await pager.refresh();
    release({ items: [{ id: 1 }], nextCursor: null });
    await stale;
    expect(pager.current.items.map((i) => i.id)).toEqual([9, 8]);
    expect(pager.current.done).toBe(false);
  });

  test('an item seen on an earlier page is not shown twice', async () => {
    const pages: Page<Item>[] = [
      { items: [{ id: 3 }, { id: 2 }], nextCursor: 'a' },
      { items: [{ id: 2 }, { id: 1 }], nextCursor: null },
    ];
    const pager = new Pager<Item>(async () => pages.shift()!);
    await pager.refresh();
    await pager.more();
    expect(pager.current.items.map((i) => i.id)).toEqual([3, 2, 1]);
  });

  test('a failed page keeps what was shown and can be retried', async () => {
    let fail = true;
    const pager = new Pager<Item>(async (cursor) => {
      if (cursor && fail) throw new Error('offline');
      return cursor ? { items: [{ id: 1 }], nextCursor: null } : { items: [{ id: 2 }], nextCursor: 'x' };
    });
    await pager.refresh();
    await pager.more();
    expect(pager.current.error).toBeInstanceOf(Error);
    expect(pager.current.items).toHaveLength(1);
    fail = false;
    await pager.more();
    expect(pager.current.items.map((i) => i.id)).toEqual([2, 1]);
    expect(pager.current.error).toBeNull();
  });
});
