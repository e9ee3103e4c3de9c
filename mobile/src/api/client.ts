// The only module that talks HTTP to Tally. Types come from the server's
// OpenAPI document (schema.d.ts, generated), so an API change that breaks
// the app fails its typecheck. Uploads go through XMLHttpRequest: fetch
// cannot report upload progress.

import type { components } from './schema';
import { ApiError, errorFrom } from './errors';

type Schemas = components['schemas'];
export type Post = Schemas['PostView'];
export type TrendingPost = Schemas['TrendingPost'];
export type PostPage = Schemas['PostPage'];
export type TrendingPage = Schemas['TrendingPage'];
export type LikeAnswer = Schemas['LikeView'];
export type Liker = Schemas['LikerView'];
export type LikerPage = Schemas['LikerPage'];
export type Session = Schemas['Session'];
export type Me = Schemas['Me'];
export type User = Schemas['UserView'];
export type LoadRequest = Schemas['LoadRequest'];
export type LoadRun = Schemas['LoadRun'];
export type Sample = Schemas['Sample'];
export type Verdict = Schemas['Verdict'];
export type TrendWindow = '1h' | '24h';

/** Upload limit of the server (`max_upload_bytes`, 20 MiB). */
export const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
/** Page size the app asks for (the server allows 1–100). */
export const PAGE = 20;

/** A picked image: a URI (native: file://, web: blob: or data:) or a web File. */
export interface Upload {
  uri: string;
  name: string;
  type: string;
  file?: Blob;
}

export interface ApiOptions {
  /** Server root, e.g. http://192.168.1.20:8080 (no trailing slash needed). */
  baseUrl: string;
  token?: string | null;
  /** Called when the server refuses the token we sent (signed out, expired, user gone). */
  onUnauthorized?: (err: ApiError) => void;
  /** Per-request timeout in ms (default 15 s). */
  timeoutMs?: number;
}

export function normalizeBaseUrl(raw: string): string {
  let url = raw.trim();
  if (!/^https?:\/\//i.test(url)) url = `http://${url}`;
  return url.replace(/\/+$/, '');
}

export class Api {
  readonly baseUrl: string;
  readonly token: string | null;
  private readonly onUnauthorized: (err: ApiError) => void;
  private readonly timeoutMs: number;

  constructor(opts: ApiOptions) {
    this.baseUrl = normalizeBaseUrl(opts.baseUrl);
    this.token = opts.token ?? null;
    this.onUnauthorized = opts.onUnauthorized ?? (() => {});
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  /** The same server, as another user (the simulator's users). */
  as(token: string | null): Api {
    return new Api({ baseUrl: this.baseUrl, token, timeoutMs: this.timeoutMs });
  }

  /** A media path from the server (`/media/...`) as an absolute URL. */
  media(path: string): string {
    return /^https?:/i.test(path) ? path : `${this.baseUrl}${path}`;
  }

  private refused(err: ApiError) {
    if (err.status === 401 && err.code === 'unauthorized' && this.token) this.onUnauthorized(err);
  }

  /** JSON request: the parsed body, or an ApiError. */
  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.timeoutMs);
    const abort = () => timeout.abort();
    signal?.addEventListener('abort', abort);
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: timeout.signal,
      });
      text = await res.text();
    } catch (e) {
      if (signal?.aborted) throw e;
      const why = timeout.signal.aborted ? 'no answer in time' : (e as Error).message;
      throw new ApiError(0, 'network', why);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abort);
    }
    if (!res.ok) {
      const err = errorFrom(res.status, res.headers.get('retry-after'), text);
      this.refused(err);
      throw err;
    }
    if (!text) return null as T;
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      // A captive portal's or a proxy's page: as good as unreachable.
      throw new ApiError(res.status, 'network', `unexpected answer: ${(e as Error).message}`);
    }
  }

  signUp(username: string, password: string): Promise<User> {
    return this.request('POST', '/v1/users', { username, password });
  }
  signIn(username: string, password: string): Promise<Session> {
    return this.request('POST', '/v1/sessions', { username, password });
  }
  signOut(): Promise<null> {
    return this.request('DELETE', '/v1/sessions/current');
  }
  me(signal?: AbortSignal): Promise<Me> {
    return this.request('GET', '/v1/me', undefined, signal);
  }
  posts(cursor?: string | null, signal?: AbortSignal): Promise<PostPage> {
    return this.request('GET', page('/v1/posts', cursor), undefined, signal);
  }
  trending(window: TrendWindow, cursor?: string | null, signal?: AbortSignal): Promise<TrendingPage> {
    return this.request('GET', page('/v1/posts/trending', cursor, { window }), undefined, signal);
  }
  post(id: number, signal?: AbortSignal): Promise<Post> {
    return this.request('GET', `/v1/posts/${id}`, undefined, signal);
  }
  /** PUT or DELETE: idempotent, safe to repeat (never a blind toggle). */
  like(id: number, on: boolean): Promise<LikeAnswer> {
    return this.request(on ? 'PUT' : 'DELETE', `/v1/posts/${id}/like`);
  }
  likers(id: number, cursor?: string | null, signal?: AbortSignal): Promise<LikerPage> {
    return this.request('GET', page(`/v1/posts/${id}/likers`, cursor), undefined, signal);
  }
  startLoadRun(config: LoadRequest): Promise<LoadRun> {
    return this.request('POST', '/v1/admin/load-runs', config);
  }
  currentLoadRun(signal?: AbortSignal): Promise<LoadRun> {
    return this.request('GET', '/v1/admin/load-runs/current', undefined, signal);
  }

  /** Uploads a post; `onProgress(fraction)` follows the bytes sent. */
  upload(image: Upload, caption: string, onProgress: (f: number) => void): { done: Promise<Post>; abort: () => void } {
    const xhr = new XMLHttpRequest();
    const done = new Promise<Post>((resolve, reject) => {
      xhr.open('POST', `${this.baseUrl}/v1/posts`);
      xhr.setRequestHeader('accept', 'application/json');
      if (this.token) xhr.setRequestHeader('authorization', `Bearer ${this.token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
      };
      xhr.onload = () => {
        if (xhr.status === 201) {
          onProgress(1);
          try {
            resolve(JSON.parse(xhr.responseText) as Post);
          } catch (e) {
            reject(new ApiError(xhr.status, 'network', `unexpected answer: ${(e as Error).message}`));
          }
          return;
        }
        const err = errorFrom(xhr.status, xhr.getResponseHeader('retry-after'), xhr.responseText);
        this.refused(err);
        reject(err);
      };
      xhr.onerror = () => reject(new ApiError(0, 'network', 'upload failed'));
      xhr.onabort = () => reject(new ApiError(0, 'aborted', 'upload cancelled'));
      const form = new FormData();
      if (image.file) {
        form.append('image', image.file, image.name);
      } else {
        // React Native's FormData takes {uri, name, type} for a file.
        form.append('image', { uri: image.uri, name: image.name, type: image.type } as unknown as Blob);
      }
      form.append('caption', caption);
      xhr.send(form);
    });
    return { done, abort: () => xhr.abort() };
  }
}

function page(path: string, cursor?: string | null, extra: Record<string, string> = {}): string {
  const q = new URLSearchParams({ ...extra, limit: String(PAGE) });
  if (cursor) q.set('cursor', cursor);
  return `${path}?${q.toString()}`;
}
