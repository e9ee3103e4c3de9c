// Like state per post, shared by every view that shows the post, and the
// like button. A tap changes the *desired* state and the count at once
// (optimistic); at most one request per post is in flight, and when it
// returns at most one follow-up is sent if the user changed their mind
// meanwhile. Only PUT and DELETE are used: idempotent, safe to repeat,
// never a blind toggle.
//
// Counts are state, ordered by version (docs/LIVE.md, "Versions"): a
// count from a like answer, a live push, a snapshot or a post read is shown
// only if its version is not older than the one shown, so a late answer or
// a stale snapshot never takes a newer count back. While a request is in
// flight a live push is shown too but leaves the pressed state alone.

import { api, session, ApiError, describe } from './api.js';
import * as live from './live.js';
import { h, toast } from './dom.js';

/** id → {id, count, version, liked, desired, inflight, optimistic, views:Set<fn>} */
const posts = new Map();
const settledListeners = new Set();

/**
 * Takes `count` at `version` if it is not older than what `s` shows; true
 * if taken. Version 0 is "unknown" (a count read from PostgreSQL): older
 * than any other.
 */
function newer(s, count, version = 0) {
  if (s.version !== undefined && version < s.version) return false;
  s.count = count;
  s.version = version;
  return true;
}

live.onCount((id, count, version) => {
  const s = posts.get(id);
  if (!s || !newer(s, count, version)) return;
  s.optimistic = 0;
  render(s);
});

/** Records what a fresh read said about a post (ignored while a like is in flight). */
export function track(post) {
  let s = posts.get(post.id);
  if (!s) {
    s = { id: post.id, views: new Set(), inflight: false, optimistic: 0 };
    posts.set(post.id, s);
  }
  if (!s.inflight) {
    newer(s, post.likeCount, post.likeVersion);
    s.liked = post.likedByMe;
    s.desired = post.likedByMe;
    s.optimistic = 0;
    render(s);
  }
  return s;
}

/** Forgets every post's state (the signed-in user changed). */
export function reset() {
  posts.clear();
}

/** `fn(postId)` after a like request of ours was answered. */
export function onSettled(fn) {
  settledListeners.add(fn);
  return () => settledListeners.delete(fn);
}

function render(s) {
  for (const fn of s.views) fn(s);
}

/** Adds `d` to the shown count, remembering it so a failure can undo it. */
function bump(s, d) {
  const next = Math.max(0, s.count + d);
  s.optimistic += next - s.count;
  s.count = next;
}

function tap(s) {
  if (!session.token) {
    toast('Sign in to like posts.');
    location.hash = '#/signin';
    return;
  }
  s.desired = !s.desired;
  bump(s, s.desired ? 1 : -1);
  render(s);
  if (!s.inflight) send(s);
}

async function send(s) {
  s.inflight = true;
  const want = s.desired;
  let answer;
  try {
    answer = await api.like(s.id, want);
  } catch (err) {
    s.inflight = false;
    fail(s, err);
    return;
  }
  s.inflight = false;
  s.liked = answer.liked;
  // A push newer than the answer may have come first: it stays.
  s.count -= s.optimistic;
  newer(s, answer.likeCount, answer.version);
  s.optimistic = 0;
  if (s.desired !== s.liked) {
    bump(s, s.desired ? 1 : -1);
    send(s);
  }
  render(s);
  for (const fn of settledListeners) fn(s.id);
}

/** Rolls the optimistic change back and says why. */
function fail(s, err) {
  s.count = Math.max(0, s.count - s.optimistic);
  s.optimistic = 0;
  s.desired = s.liked;
  render(s);
  if (err instanceof ApiError && err.code === 'unauthorized') return; // main.js handles it
  const what = s.liked ? 'unlike' : 'like';
  toast(`Couldn’t ${what} that post. ${describe(err)}`, 'error');
  // 503 and network errors leave the outcome unknown: read the truth back.
  if (err instanceof ApiError && (err.code === 'unavailable' || err.code === 'network' || err.status >= 500)) {
    api.post(s.id).then(track, () => {});
  }
}

/**
 * A like button bound to the post's shared state. It stops updating when
 * `signal` aborts (the view went away).
 */
export function likeButton(post, signal) {
  const s = track(post);
  const count = h('span', { class: 'like-count' });
  const button = h('button', { type: 'button', class: 'like', on: { click: () => tap(s) } },
    h('svg:svg', { class: 'heart', viewBox: '0 0 24 24', 'aria-hidden': 'true', focusable: 'false' },
      h('svg:path', { d: 'M12 21s-7.5-4.6-9.6-9.2C.9 8.4 3 4.5 6.6 4.5c2.1 0 3.6 1.2 5.4 3.2 1.8-2 3.3-3.2 5.4-3.2 3.6 0 5.7 3.9 4.2 7.3C19.5 16.4 12 21 12 21z' })),
    count);
  const update = () => {
    button.setAttribute('aria-pressed', String(s.desired));
    button.setAttribute('aria-label', s.desired ? `Unlike (${s.count})` : `Like (${s.count})`);
    button.dataset.count = String(s.count);
    count.textContent = s.count.toLocaleString();
  };
  s.views.add(update);
  signal.addEventListener('abort', () => s.views.delete(update));
  update();
  return button;
}
