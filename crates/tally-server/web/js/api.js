// The only module that talks HTTP: the bearer token and its storage, the
// error shape turned into ApiError with a message a person can read, and
// uploads through XMLHttpRequest (fetch cannot report upload progress).

const TOKEN_KEY = 'tally.token';
const USER_KEY = 'tally.user';

/** Upload limit of the server (`max_upload_bytes`, 20 MiB). */
export const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;

/** Who is signed in. `loadPanel` comes from `GET /v1/me`. */
export const session = {
  token: localStorage.getItem(TOKEN_KEY),
  user: readUser(),
  loadPanel: false,
};

function readUser() {
  try {
    return JSON.parse(localStorage.getItem(USER_KEY) || 'null');
  } catch {
    return null;
  }
}

const sessionListeners = new Set();
/** Calls `fn()` whenever the session changes (sign-in, sign-out, expiry). */
export function onSession(fn) {
  sessionListeners.add(fn);
}

export function setSession(token, user, loadPanel = false) {
  Object.assign(session, { token, user, loadPanel });
  if (token) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
  } else {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
  }
  for (const fn of sessionListeners) fn(session);
}

let unauthorized = () => {};
/** What to do when the server says the token is no longer good (main.js: go to sign-in). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** What to tell a person. */
  get friendly() {
    return describe(this);
  }
}

const MESSAGES = {
  network: 'Can’t reach Tally. Check your connection and try again.',
  payload_too_large: 'That image is too large: the limit is 20 MB and 40 megapixels.',
  unsupported_media_type: 'That file isn’t an image Tally can take. Use a JPEG, PNG, WebP or GIF.',
  invalid_image: 'That image seems damaged and can’t be read. Try another one.',
  unavailable: 'Tally is busy right now. Please try again.',
  internal: 'Something went wrong on the server. Please try again.',
  invalid_credentials: 'Wrong username or password.',
  username_taken: 'That username is taken. Pick another one.',
  unauthorized: 'Your session has expired. Please sign in again.',
  not_found: 'That could not be found.',
};

export function describe(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong. Please try again.';
  if (err.code === 'rate_limited') {
    return err.retryAfter ? `Too fast. Try again in ${err.retryAfter} s.` : 'Too fast. Try again in a moment.';
  }
  return MESSAGES[err.code] || err.message || `Request failed (${err.status}).`;
}

async function errorFrom(status, headers, text) {
  let code = `http_${status}`;
  let message = `Request failed (${status}).`;
  try {
    const body = JSON.parse(text);
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // Not our JSON (a proxy's error page): keep the generic message.
  }
  const retry = Number(headers.get('retry-after'));
  return new ApiError(status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}

function authHeaders() {
  return session.token ? { authorization: `Bearer ${session.token}` } : {};
}

/** A 401 `unauthorized` while we sent a token: the token is dead. */
function checkUnauthorized(err, sentToken) {
  if (err.status === 401 && err.code === 'unauthorized' && sentToken && sentToken === session.token) {
    setSession(null, null);
    unauthorized(err);
  }
}

/** JSON request. Resolves with the parsed body, rejects with ApiError. */
export async function request(method, path, { body, signal } = {}) {
  const sentToken = session.token;
  const headers = { accept: 'application/json', ...authHeaders() };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', e.message);
  }
  let text;
  try {
    text = await res.text();
  } catch (e) {
    // The connection dropped after the headers: the outcome is unknown.
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', e.message);
  }
  if (!res.ok) {
    const err = await errorFrom(res.status, res.headers, text);
    checkUnauthorized(err, sentToken);
    throw err;
  }
  try {
    return text ? JSON.parse(text) : null;
  } catch (e) {
    // Not our JSON (a proxy's or a captive portal's page): treat as unreachable.
    throw new ApiError(res.status, 'network', `unexpected answer: ${e.message}`);
  }
}

const page = (path, cursor, limit, extra = {}) => {
  const q = new URLSearchParams({ ...extra, limit: String(limit) });
  if (cursor) q.set('cursor', cursor);
  return `${path}?${q}`;
};

export const api = {
  signUp: (username, password) => request('POST', '/v1/users', { body: { username, password } }),
  signIn: (username, password) => request('POST', '/v1/sessions', { body: { username, password } }),
  me: (opts) => request('GET', '/v1/me', opts),
  posts: (cursor, opts) => request('GET', page('/v1/posts', cursor, 20), opts),
  /** `window`: '1h' or '24h'. Items are posts with a `score` (likes gained in the window). */
  trending: (window, cursor, opts) => request('GET', page('/v1/posts/trending', cursor, 20, { window }), opts),
  post: (id, opts) => request('GET', `/v1/posts/${id}`, opts),
  like: (id, on) => request(on ? 'PUT' : 'DELETE', `/v1/posts/${id}/like`),
  likers: (id, cursor, opts) => request('GET', page(`/v1/posts/${id}/likers`, cursor, 20), opts),
  startLoadRun: (config) => request('POST', '/v1/admin/load-runs', { body: config }),
  currentLoadRun: (opts) => request('GET', '/v1/admin/load-runs/current', opts),
};

/**
 * Uploads a post. `onProgress(fraction)` follows the bytes sent.
 * Returns `{done: Promise<post>, abort()}`.
 */
export function upload(file, caption, onProgress) {
  const xhr = new XMLHttpRequest();
  const sentToken = session.token;
  const done = new Promise((resolve, reject) => {
    xhr.open('POST', '/v1/posts');
    xhr.setRequestHeader('accept', 'application/json');
    if (sentToken) xhr.setRequestHeader('authorization', `Bearer ${sentToken}`);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = async () => {
      if (xhr.status === 201) {
        onProgress(1);
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (e) {
          reject(new ApiError(xhr.status, 'network', `unexpected answer: ${e.message}`));
        }
        return;
      }
      const headers = { get: (name) => xhr.getResponseHeader(name) };
      const err = await errorFrom(xhr.status, headers, xhr.responseText);
      checkUnauthorized(err, sentToken);
      reject(err);
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'upload failed'));
    xhr.onabort = () => reject(new DOMException('upload cancelled', 'AbortError'));
    const form = new FormData();
    form.append('image', file, file.name || 'image');
    form.append('caption', caption);
    xhr.send(form);
  });
  return { done, abort: () => xhr.abort() };
}
