// The signed-in session and the services built on it (API client, like
// store, live connection), for every screen. A token the server refuses
// (signed out, expired, user gone) signs the app out, and the layout
// returns to the sign-in screen.

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { Api, type User } from '../api/client';
import { describe } from '../api/errors';
import { LikeStore } from '../likes/store';
import { LiveClient } from '../live/live';
import * as storage from '../storage';
import { defaultServerUrl } from '../server';

const SERVER_KEY = 'tally.server';
const TOKEN_KEY = 'tally.token';
const USER_KEY = 'tally.user';

export interface Notice {
  id: number;
  text: string;
  kind: 'info' | 'error';
}

export interface AppContextValue {
  ready: boolean;
  serverUrl: string;
  user: User | null;
  token: string | null;
  api: Api;
  likes: LikeStore;
  live: LiveClient;
  /** Why the app returned to sign-in (a refused token), once. */
  signedOutBecause: string | null;
  signIn(serverUrl: string, token: string, user: User): Promise<void>;
  signOut(): Promise<void>;
  notices: Notice[];
  notify(text: string, kind?: Notice['kind']): void;
  /** Bumped when this user posts: the feed reloads from the top. */
  postsChanged: number;
  posted(): void;
}

/** Exported for component tests, which provide their own value. */
export const AppContext = createContext<AppContextValue | null>(null);
const Ctx = AppContext;
let lastNotice = 0;

export function useApp(): AppContextValue {
  const v = useContext(Ctx);
  if (!v) throw new Error('useApp outside AppProvider');
  return v;
}

export function AppProvider({ children }: { children: ReactNode }) {
  const [ready, setReady] = useState(false);
  const [serverUrl, setServerUrl] = useState(defaultServerUrl());
  const [token, setToken] = useState<string | null>(null);
  const [user, setUser] = useState<User | null>(null);
  const [signedOutBecause, setSignedOutBecause] = useState<string | null>(null);
  const [notices, setNotices] = useState<Notice[]>([]);
  const [postsChanged, setPostsChanged] = useState(0);
  const posted = useCallback(() => setPostsChanged((n) => n + 1), []);

  const notify = useCallback((text: string, kind: Notice['kind'] = 'info') => {
    const id = ++lastNotice;
    setNotices((n) => [...n.slice(-2), { id, text, kind }]);
    setTimeout(() => setNotices((n) => n.filter((x) => x.id !== id)), 4000);
  }, []);

  const forget = useCallback(async (why: string | null) => {
    setToken(null);
    setUser(null);
    setSignedOutBecause(why);
    await storage.save(TOKEN_KEY, null);
    await storage.save(USER_KEY, null);
  }, []);

  const api = useMemo(
    () =>
      new Api({
        baseUrl: serverUrl,
        token,
        onUnauthorized: (err) => void forget(describe(err)),
      }),
    [serverUrl, token, forget],
  );

  const [likes] = useState(
    () =>
      new LikeStore(api, (_id, err, wanted) => {
        notify(`Couldn’t ${wanted ? 'like' : 'unlike'} that post. ${describe(err)}`, 'error');
      }),
  );
  // A new server or user: nothing known about any post holds.
  useEffect(() => likes.reset(api), [api, likes]);

  const live = useMemo(() => new LiveClient(serverUrl), [serverUrl]);
  useEffect(() => {
    live.start();
    const off = live.onCount((c) => likes.push(c.postId, c.likeCount, c.version));
    return () => {
      off();
      live.stop();
    };
  }, [live, likes]);

  useEffect(() => {
    void (async () => {
      const [s, t, u] = await Promise.all([storage.load(SERVER_KEY), storage.load(TOKEN_KEY), storage.load(USER_KEY)]);
      if (s) setServerUrl(s);
      if (t && u) {
        try {
          setUser(JSON.parse(u) as User);
          setToken(t);
        } catch {
          // A damaged entry: sign in again.
        }
      }
      setReady(true);
    })();
  }, []);

  const signIn = useCallback(async (url: string, t: string, u: User) => {
    setServerUrl(url);
    setToken(t);
    setUser(u);
    setSignedOutBecause(null);
    await storage.save(SERVER_KEY, url);
    await storage.save(TOKEN_KEY, t);
    await storage.save(USER_KEY, JSON.stringify(u));
  }, []);

  const signOut = useCallback(async () => {
    try {
      await api.signOut();
    } catch {
      // Signed out here anyway; the token expires by itself.
    }
    await forget(null);
  }, [api, forget]);

  // On start with a stored token: is it still good? (A 401 signs out.)
  useEffect(() => {
    if (!ready || !token) return;
    const ctl = new AbortController();
    api.me(ctl.signal).catch(() => {});
    return () => ctl.abort();
  }, [ready, token, api]);

  const value = useMemo<AppContextValue>(
    () => ({ ready, serverUrl, user, token, api, likes, live, signedOutBecause, signIn, signOut, notices, notify, postsChanged, posted }),
    [ready, serverUrl, user, token, api, likes, live, signedOutBecause, signIn, signOut, notices, notify, postsChanged, posted],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
