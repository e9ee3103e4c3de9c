// The shell: checks the stored token with /v1/me, keeps the header (who is
// signed in, live indicator, Load tab) in step with the session, and routes
// hash URLs (#/, #/post/12, #/upload, #/signin, #/signup, #/load) to views.
// Each view gets a fresh <main> body and an AbortSignal that fires when the
// route changes, so it can cancel fetches and unwatch its live posts.

import { api, session, setSession, onSession, onUnauthorized, ApiError } from './api.js';
import * as live from './live.js';
import { reset as resetLikes } from './like.js';
import { h, toast } from './dom.js';
import { feedView } from './feed.js';
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

const routes = [
  [/^#\/?$/, 'feed', 'Feed', (signal) => feedView(main, signal)],
  [/^#\/post\/(\d+)$/, 'feed', 'Post', (signal, id) => postView(main, signal, Number(id))],
  [/^#\/upload$/, 'upload', 'New post', (signal) => uploadView(main, signal, go)],
  [/^#\/signin$/, 'signin', 'Sign in', (signal) => {
    const message = flash;
    flash = null;
    signInView(main, signal, { flash: message, done: afterSignIn });
  }],
  [/^#\/signup$/, 'signin', 'Sign up', (signal) => signUpView(main, signal, { done: afterSignIn })],
  [/^#\/load$/, 'load', 'Load test', (signal) => loadView(main, signal)],
];

function route() {
  if (current) current.abort();
  current = new AbortController();
  const hash = location.hash || '#/';
  main.replaceChildren();
  let found = routes.find(([re]) => re.test(hash));
  if (!found) {
    main.append(h('h1', { tabindex: '-1', text: 'Not found' }), h('p', {}, h('a', { href: '#/', text: 'Go to the feed' })));
    found = [null, '', 'Not found', () => {}];
  }
  const [re, tab, title, view] = found;
  const args = re ? hash.match(re).slice(1) : [];
  document.title = `${title} · Tally`;
  main.dataset.view = tab || 'none';
  for (const a of document.querySelectorAll('.tabs a')) {
    if (a.dataset.route === tab) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  view(current.signal, ...args);
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
    el.title = state === 'live' ? 'Like counts update live' : 'Live updates paused; reconnecting';
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
