// The shell: checks the stored token with /v1/me, keeps the header (who is
// signed in, live indicator, Load tab) in step with the session, and routes
// hash URLs (#/, #/trending, #/trending/24h, #/post/12, #/upload, #/signin,
// #/signup, #/load) to views.
// Each view gets a fresh <main> body and an AbortSignal that fires when the
// route changes, so it can cancel fetches and unwatch its live posts.

import { api, session, setSession, onSession, onUnauthorized, ApiError } from './api.js';
import * as live from './live.js';
import { reset as resetLikes } from './like.js';
import { h, toast } from './dom.js';
import { feedView, trendingView } from './feed.js';
import { postView } from './post.js';
import { uploadView } from './upload.js';
import { signInView, signUpView } from './auth.js';
import { loadView } from './load.js';

const main = document.getElementById('main');
let current = null; // AbortController of the mounted view
let flash = null; // message for the next sign-in view
let started = false;
let firstRender = true;

/**
 * Navigates; `message` is shown on the sign-in page. pushState fires no
 * hashchange, so the route renders exactly once (and the flash survives).
 */
function go(hash, message = null) {
  if (message) flash = message;
  if (location.hash !== hash) history.pushState(null, '', hash);
  if (started) route();
}

// name: the view (main's data-view, for layout); tab: the nav entry it belongs to.
const routes = [
  { re: /^#\/?$/, name: 'feed', tab: 'feed', title: 'Feed', view: (signal) => feedView(main, signal) },
  { re: /^#\/trending(?:\/(1h|24h))?$/, name: 'trending', tab: 'trending', title: 'Trending', view: (signal, w) => trendingView(main, signal, w || '1h') },
  { re: /^#\/post\/(\d+)$/, name: 'post', tab: 'feed', title: 'Post', view: (signal, id) => postView(main, signal, Number(id)) },
  { re: /^#\/upload$/, name: 'upload', tab: 'upload', title: 'New post', view: (signal) => uploadView(main, signal, go) },
  {
    re: /^#\/signin$/, name: 'signin', tab: 'signin', title: 'Sign in',
    view: (signal) => {
      const message = flash;
      flash = null;
      signInView(main, signal, { flash: message, done: afterSignIn });
    },
  },
  { re: /^#\/signup$/, name: 'signup', tab: 'signin', title: 'Sign up', view: (signal) => signUpView(main, signal, { done: afterSignIn }) },
  { re: /^#\/load$/, name: 'load', tab: 'load', title: 'Load test', view: (signal) => loadView(main, signal) },
];

const notFound = {
  name: 'none', tab: '', title: 'Not found',
  view: () => main.append(h('h1', { tabindex: '-1', text: 'Not found' }), h('p', {}, h('a', { href: '#/', text: 'Go to the feed' }))),
};

function route() {
  if (current) current.abort();
  current = new AbortController();
  const hash = location.hash || '#/';
  main.replaceChildren();
  const r = routes.find((x) => x.re.test(hash)) || notFound;
  const args = r.re ? hash.match(r.re).slice(1) : [];
  document.title = `${r.title} · Tally`;
  main.dataset.view = r.name;
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.route === r.tab) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  r.view(current.signal, ...args);
  // Move focus to the new view's heading, as a page load would, except on
  // the first load (the browser starts at the top anyway).
  if (!firstRender) {
    window.scrollTo(0, 0);
    queueMicrotask(() => (main.querySelector('h1') || main).focus({ preventScroll: true }));
  }
  firstRender = false;
}

function renderSession() {
  const who = document.getElementById('who');
  who.textContent = session.user ? `@${session.user.username}` : '';
  document.getElementById('signout-tab').hidden = !session.token;
  document.getElementById('signin-tab').hidden = !!session.token;
  document.getElementById('load-tab').hidden = !session.loadPanel;
  document.body.dataset.signedIn = String(!!session.token);
}

/** Asks the server who the token belongs to and whether the load panel is on. */
async function refreshMe() {
  if (!session.token) return;
  try {
    const me = await api.me();
    setSession(session.token, { id: me.id, username: me.username }, !!me.loadPanel);
  } catch (err) {
    // 401 is handled by onUnauthorized; a server without /v1/me (404) or a
    // network error leaves the stored session as it is.
    if (!(err instanceof ApiError)) throw err;
  }
}

async function afterSignIn() {
  await refreshMe();
  if (!session.user) return; // the new token was refused at once: back on sign-in
  toast(`Signed in as ${session.user.username}.`);
  go('#/');
}

function signOut() {
  setSession(null, null);
  toast('Signed out.');
  go('#/');
}

function startIndicator() {
  const el = document.getElementById('live-status');
  const text = el.querySelector('.live-text');
  live.onState((state) => {
    el.dataset.state = state;
    text.textContent = state;
    el.title = {
      live: 'Like counts update live',
      connecting: 'Connecting to live updates',
      reconnecting: 'Live updates paused; reconnecting',
    }[state];
  });
}

async function boot() {
  onSession(() => {
    resetLikes();
    renderSession();
  });
  onUnauthorized(() => go('#/signin', 'Your session has expired or is no longer valid. Please sign in again.'));
  document.getElementById('signout').addEventListener('click', signOut);
  // The skip link targets <main> without touching the hash (the router owns it).
  document.querySelector('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    main.focus();
  });
  renderSession();
  startIndicator();
  live.start();
  await refreshMe();
  addEventListener('hashchange', route);
  started = true;
  route();
}

boot();
