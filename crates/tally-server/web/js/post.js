// One post: the full image, its caption and like button (shared state with
// the feed, watched live while the page is open), and who liked it, a page
// at a time ("Load more").

import { api, describe } from './api.js';
import { h, fill, heading, timeAgo } from './dom.js';
import { likeButton, onSettled } from './like.js';
import { altText } from './feed.js';
import * as live from './live.js';

export async function postView(main, signal, id) {
  const status = h('p', { class: 'feed-status', role: 'status', text: 'Loading…' });
  main.append(status);
  let post;
  try {
    post = await api.post(id, { signal });
  } catch (err) {
    if (signal.aborted) return;
    fill(main, heading('Post not available'), h('p', { class: 'notice', text: describe(err) }),
      h('p', {}, h('a', { href: '#/', text: 'Back to the feed' })));
    return;
  }
  if (signal.aborted) return;

  live.watch(post.id);
  signal.addEventListener('abort', () => live.unwatch(post.id));

  const likers = h('ol', { class: 'likers' });
  const likersStatus = h('p', { class: 'likers-status', role: 'status' });
  const moreButton = h('button', { type: 'button', class: 'secondary', hidden: true, text: 'Load more' });
  let cursor = null;
  let latest = 0; // only the newest likers request may change the list

  async function loadLikers(reset = false) {
    const mine = ++latest;
    moreButton.disabled = true;
    try {
      const page = await api.likers(post.id, reset ? null : cursor, { signal });
      // A refresh of page 1 and a "Load more" can cross: the older one is dropped.
      if (mine !== latest) return;
      if (reset) likers.replaceChildren();
      for (const l of page.items) {
        likers.append(h('li', {}, h('span', { class: 'liker', text: l.username }), ' ', timeAgo(l.likedAt)));
      }
      cursor = page.nextCursor;
      moreButton.hidden = !cursor;
      likersStatus.textContent = likers.children.length ? '' : 'No likes yet.';
    } catch (err) {
      if (!signal.aborted) likersStatus.textContent = describe(err);
    } finally {
      if (mine === latest) moreButton.disabled = false;
    }
  }
  moreButton.addEventListener('click', () => loadLikers());
  // After our own like lands, the first page changes: show it again.
  const off = onSettled((postId) => { if (postId === post.id) loadLikers(true); });
  signal.addEventListener('abort', off);

  const long = post.caption.length > 80;
  const title = heading(post.caption ? (long ? `${post.caption.slice(0, 80)}…` : post.caption) : `Photo by ${post.author.username}`, 'post-title');
  fill(main,
    h('article', { class: 'post', dataset: { postId: post.id } },
      h('header', { class: 'post-head' },
        title,
        h('p', { class: 'byline' }, 'by ', h('span', { class: 'author', text: post.author.username }), ' · ', timeAgo(post.createdAt))),
      h('a', { class: 'post-media', href: post.imageUrl, title: 'Open the original image' },
        h('img', { src: post.imageUrl, width: post.width, height: post.height, alt: altText(post) })),
      h('div', { class: 'post-actions' },
        h('div', { class: 'card-actions' },
          likeButton(post, signal),
          h('span', { class: 'dims', text: `${post.width} × ${post.height}` })),
        long ? h('p', { class: 'caption full', text: post.caption }) : null),
      h('section', { class: 'likers-box', 'aria-labelledby': 'likers-h' },
        h('h2', { id: 'likers-h', text: 'Liked by' }),
        likers, likersStatus, moreButton)),
    h('p', { class: 'back' }, h('a', { href: '#/', text: '← Back to the feed' })));
  // The view rendered after the router moved focus: give it to the heading.
  if (document.activeElement === main) title.focus({ preventScroll: true });
  loadLikers(true);
}
