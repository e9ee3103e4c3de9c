// The feed: newest posts first as image cards, more pages fetched by cursor
// when a sentinel below the last card comes near the viewport. Cards that
// are on screen are watched on the live socket; cards that scroll away (and
// all of them when the view goes) are unwatched. The Trending tab is the
// same list over another endpoint, with a 1h / 24h switch and each card's
// score.

import { api, describe } from './api.js';
import { h, heading, timeAgo, toast } from './dom.js';
import { likeButton } from './like.js';
import * as live from './live.js';

export function altText(post) {
  const by = `Photo by ${post.author.username}`;
  return post.caption ? `${by}: ${post.caption}` : by;
}

/**
 * The first cards of the feed are on screen at once: their thumbnails load
 * eagerly (lazy loading waits for layout before it starts a fetch, ~100 ms
 * that the first paint would spend waiting; bench/client.mjs), the rest
 * lazily.
 */
const EAGER_CARDS = 2;

function card(post, signal, eager = false, badge = null) {
  const href = `#/post/${post.id}`;
  return h('article', { class: 'card', dataset: { postId: post.id }, 'aria-label': `Post by ${post.author.username}` },
    h('header', { class: 'card-head' },
      h('span', { class: 'author', text: post.author.username }),
      badge,
      timeAgo(post.createdAt)),
    h('a', { class: 'card-media', href, 'aria-label': `Open post by ${post.author.username}` },
      // `loading` before `src`: an image starts fetching as soon as it has
      // a src, so set the other way round the thumbnail loads eagerly.
      h('img', {
        loading: eager ? 'eager' : 'lazy',
        fetchpriority: eager ? 'high' : null,
        decoding: 'async',
        width: post.width,
        height: post.height,
        alt: altText(post),
        src: post.thumbnailUrl,
      })),
    h('div', { class: 'card-actions' },
      likeButton(post, signal),
      h('a', { class: 'more', href, 'aria-label': `Details: post by ${post.author.username}`, text: 'Details' })),
    post.caption ? h('p', { class: 'caption' }, h('b', { text: post.author.username }), ' ', post.caption) : null);
}

export function feedView(main, signal) {
  main.append(heading('Latest posts', 'visually-hidden'));
  postList(main, signal, {
    fetchPage: (cursor) => api.posts(cursor, { signal }),
    empty: 'No posts yet. Be the first to upload one!',
  });
}

const WINDOWS = { '1h': 'last hour', '24h': 'last 24 hours' };

/** Trending: posts ranked by likes gained in the window ('1h' or '24h'). */
export function trendingView(main, signal, window = '1h') {
  main.append(
    heading('Trending'),
    h('nav', { class: 'switch', 'aria-label': 'Trending window' },
      ...Object.entries(WINDOWS).map(([w, label]) => h('a', {
        href: w === '1h' ? '#/trending' : `#/trending/${w}`,
        'aria-current': w === window ? 'page' : null,
        'aria-label': `Trending in the ${label}`,
        text: w,
      }))));
  postList(main, signal, {
    fetchPage: (cursor) => api.trending(window, cursor, { signal }),
    empty: `No likes in the ${WINDOWS[window]} yet.`,
    badge: (post) => h('span', { class: 'score', text: `+${post.score}`, title: `${post.score} likes gained in the ${WINDOWS[window]}` }),
  });
}

/**
 * Cards of a paginated list of posts, appended to `main`: `fetchPage(cursor)`
 * returns `{items, nextCursor}`; `badge(post)` adds a note to a card's head.
 */
function postList(main, signal, { fetchPage, empty, badge = () => null }) {
  const list = h('div', { class: 'feed', role: 'feed', 'aria-busy': 'true' });
  const status = h('p', { class: 'feed-status', role: 'status' });
  const sentinel = h('div', { class: 'sentinel', 'aria-hidden': 'true' });
  main.append(list, status, sentinel);

  const seen = new Set();
  const watched = new Set();
  let cursor = null;
  let done = false;
  let loading = false;

  // Watch what is (nearly) on screen; unwatch what left.
  const visible = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = Number(e.target.dataset.postId);
      if (e.isIntersecting && !watched.has(id)) {
        watched.add(id);
        live.watch(id);
      } else if (!e.isIntersecting && watched.has(id)) {
        watched.delete(id);
        live.unwatch(id);
      }
    }
  }, { rootMargin: '100px 0px' });

  const more = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadPage();
  }, { rootMargin: '800px 0px' });

  signal.addEventListener('abort', () => {
    visible.disconnect();
    more.disconnect();
    for (const id of watched) live.unwatch(id);
    watched.clear();
  });

  async function loadPage() {
    if (loading || done) return;
    loading = true;
    list.setAttribute('aria-busy', 'true');
    status.textContent = 'Loading…';
    try {
      const page = await fetchPage(cursor);
      if (signal.aborted) return;
      for (const post of page.items) {
        if (seen.has(post.id)) continue;
        seen.add(post.id);
        const el = card(post, signal, seen.size <= EAGER_CARDS, badge(post));
        list.append(el);
        visible.observe(el);
      }
      cursor = page.nextCursor;
      done = !cursor;
      status.textContent = done ? (seen.size ? 'You’re all caught up.' : empty) : '';
    } catch (err) {
      if (signal.aborted) return;
      status.replaceChildren(describe(err), ' ',
        h('button', { type: 'button', class: 'secondary', text: 'Retry', on: { click: () => loadPage() } }));
      if (err.code !== 'unauthorized') toast(describe(err), 'error');
      loading = false;
      return;
    } finally {
      list.setAttribute('aria-busy', 'false');
    }
    loading = false;
    // The sentinel may still be in view after a short page: observe again.
    if (!done) {
      more.unobserve(sentinel);
      more.observe(sentinel);
    }
  }

  more.observe(sentinel);
  loadPage();
}
