// Hooks that bind screens to the shared like store and live connection.

import { useEffect, useState } from 'react';
import type { Post } from '../api/client';
import type { LikeState } from '../likes/store';
import type { LiveState } from '../live/live';
import { useApp } from './context';

/** The post's like state, following every change (answers, pushes, reads). */
export function useLike(post: Post): LikeState {
  const { likes } = useApp();
  const [state, setState] = useState<LikeState>(() => likes.get(post.id) ?? likes.track(post));
  useEffect(() => {
    const off = likes.subscribe(post.id, setState);
    likes.track(post); // tells the subscription what this read said
    return off;
  }, [likes, post]);
  return state;
}

/** Watches `ids` live while the screen shows them. */
export function useWatch(ids: number[]) {
  const { live } = useApp();
  const key = ids.join(',');
  useEffect(() => {
    if (!key) return;
    return live.watch(key.split(',').map(Number));
  }, [live, key]);
}

export function useLiveState(): LiveState {
  const { live } = useApp();
  const [state, setState] = useState<LiveState>(live.state);
  useEffect(() => live.onState(setState), [live]);
  return state;
}
