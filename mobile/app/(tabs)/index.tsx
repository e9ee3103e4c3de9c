import { useCallback } from 'react';
import { useApp } from '../../src/core/context';
import { PostList } from '../../src/components/PostList';

export default function Feed() {
  const { api, postsChanged } = useApp();
  // A new post of ours: a new pager, which loads from the top.
  const load = useCallback((cursor: string | null) => api.posts(cursor), [api, postsChanged]); // eslint-disable-line react-hooks/exhaustive-deps
  return <PostList load={load} listKey="feed" empty="No posts yet. Be the first: tap Post." />;
}
