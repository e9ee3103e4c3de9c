import { ApiError } from '../src/api/errors';
import { LikeStore, type LikeState } from '../src/likes/store';
import { flush, post, Scripted } from '../testing/fixtures';

function setup(count = 5, liked = false) {
  const t = new Scripted();
  const errors: unknown[] = [];
  const store = new LikeStore(t, (_id, err) => errors.push(err));
  store.track(post(1, count, liked, 100));
  const seen: LikeState[] = [];
  store.subscribe(1, (s) => seen.push(s));
  return { t, store, errors, seen, state: () => store.get(1)! };
}

describe('the like state machine', () => {
  test('a tap is optimistic and the server answer (the exact count) wins', async () => {
    const { t, store, state } = setup(5);
    const done = store.tap(1);
    expect(state()).toMatchObject({ count: 6, desired: true, inflight: true });
    expect(t.calls).toHaveLength(1);
    expect(t.calls[0]).toMatchObject({ id: 1, on: true });
    // Someone else liked meanwhile: the server says 8.
    t.answer({ likeCount: 8, version: 120 });
    await done;
    expect(state()).toMatchObject({ count: 8, liked: true, desired: true, inflight: false, optimistic: 0, version: 120 });
  });

  test('never double counted: taps while in flight send one follow-up at most, never a toggle', async () => {
    const { t, store, state } = setup(5);
    const first = store.tap(1); // like
    void store.tap(1); // unlike
    void store.tap(1); // like again
    expect(t.calls).toHaveLength(1);
    expect(state().count).toBe(6);
    t.answer({ likeCount: 6, version: 110 });
    await first;
    expect(t.calls).toHaveLength(0); // the user ended where the answer is
    expect(state()).toMatchObject({ count: 6, liked: true });

    const second = store.tap(1); // unlike
    void store.tap(1); // like
    void store.tap(1); // unlike
    t.answer({ likeCount: 5, version: 130 });
    await second;
    expect(state()).toMatchObject({ count: 5, liked: false, desired: false });
    expect(t.calls).toHaveLength(0);
  });

  test('a change of mind while in flight sends one follow-up with the other verb', async () => {
    const { t, store, state } = setup(5);
    const done = store.tap(1);
    void store.tap(1); // unlike while the like is in flight
    t.answer({ likeCount: 6, version: 110 });
    await flush();
    expect(t.calls).toHaveLength(1);
    expect(t.calls[0]!.on).toBe(false);
    expect(state()).toMatchObject({ count: 5, desired: false, inflight: true });
    t.answer({ likeCount: 5, version: 111 });
    await done;
    expect(state()).toMatchObject({ count: 5, liked: false, inflight: false });
  });

  test('a refused like rolls back and says why', async () => {
    const { t, store, state, errors } = setup(5);
    const done = store.tap(1);
    t.fail(new ApiError(429, 'rate_limited', 'slow down', 2));
    await done;
    expect(state()).toMatchObject({ count: 5, liked: false, desired: false, optimistic: 0 });
    expect(errors).toHaveLength(1);
    expect(t.reads).toHaveLength(0); // the outcome is known: nothing landed
  });

  test('an unknown outcome (503, no answer) is read back, not guessed', async () => {
    const { t, store, state } = setup(5);
    const done = store.tap(1);
    t.readAnswer = post(1, 6, true, 140); // it did land
    t.fail(new ApiError(503, 'unavailable', 'may still land'));
    await done;
    expect(t.reads).toEqual([1]);
    expect(state()).toMatchObject({ count: 6, liked: true, desired: true, version: 140 });
  });

  test('a live push with an older version is ignored, a newer one shown', () => {
    const { store, state } = setup(5);
    store.push(1, 3, 90);
    expect(state().count).toBe(5);
    store.push(1, 9, 150);
    expect(state()).toMatchObject({ count: 9, version: 150 });
    store.push(1, 9, 150); // equal versions carry the same count
    expect(state().count).toBe(9);
  });

  test('a push newer than our answer stays; a late answer does not take it back', async () => {
    const { t, store, state } = setup(5);
    const done = store.tap(1);
    store.push(1, 10, 200); // others liked; pushed before our answer arrived
    expect(state()).toMatchObject({ count: 10, desired: true, inflight: true });
    t.answer({ likeCount: 6, version: 110 });
    await done;
    expect(state()).toMatchObject({ count: 10, liked: true, version: 200 });
  });

  test('a post read while a like is in flight does not reset the button', () => {
    const { store, state } = setup(5);
    void store.tap(1);
    store.track(post(1, 5, false, 100));
    expect(state()).toMatchObject({ desired: true, count: 6, inflight: true });
  });

  test('PostgreSQL-read counts (version 0) never beat a newer one', () => {
    const { store, state } = setup(5);
    store.track(post(1, 2, false, 0));
    expect(state().count).toBe(5);
  });
});
