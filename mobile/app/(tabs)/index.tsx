import { useCallback } from 'react';
import { useApp } from '../../src/core/context';
import { PostList } from '../../src/components/PostList';

export default function Feed() {
  const { api } = useApp();
  const load = useCallback((cursor: string | null) => api.posts(cursor), [api]);
  return <PostList load={load} listKey="feed" empty="No posts yet. Be the first: tap Post." />;
}
