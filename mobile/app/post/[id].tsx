import { Stack, useLocalSearchParams } from 'expo-router';
import { useCallback, useEffect, useMemo, useState } from 'react';
import { ActivityIndicator, FlatList, Image, StyleSheet, Text, View } from 'react-native';
import type { Liker, Post } from '../../src/api/client';
import { describe } from '../../src/api/errors';
import { useApp } from '../../src/core/context';
import { useLike, useWatch } from '../../src/core/hooks';
import { LikeButton } from '../../src/components/LikeButton';
import { colors } from '../../src/components/theme';
import { Pager, type PagerState } from '../../src/feed/pager';

/** One post: the full image, its like button, and who liked it (pages). */
export default function PostScreen() {
  const { id } = useLocalSearchParams<{ id: string }>();
  const postId = Number(id);
  const { api, likes } = useApp();
  const [post, setPost] = useState<Post | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    const ctl = new AbortController();
    api
      .post(postId, ctl.signal)
      .then((p) => {
        likes.track(p);
        setPost(p);
      })
      .catch((err) => {
        if (!ctl.signal.aborted) setError(err);
      });
    return () => ctl.abort();
  }, [api, likes, postId]);
  useWatch(Number.isFinite(postId) ? [postId] : []);

  if (error) return <Text style={styles.error} accessibilityRole="alert">{describe(error)}</Text>;
  if (!post) return <ActivityIndicator style={styles.spinner} accessibilityLabel="Loading the post" />;
  return <Loaded post={post} />;
}

function Loaded({ post }: { post: Post }) {
  const { api } = useApp();
  const like = useLike(post);
  const load = useCallback((cursor: string | null) => api.likers(post.id, cursor), [api, post.id]);
  const pager = useMemo(() => new Pager<Liker>(load), [load]);
  const [likers, setLikers] = useState<PagerState<Liker>>(pager.current);
  useEffect(() => {
    const off = pager.subscribe(setLikers);
    void pager.refresh();
    return off;
  }, [pager]);
  // Who liked follows the count (our likes and others', live): the list
  // comes from the durable store and trails counts by the write-behind's
  // delay, so it is read again shortly after a change and once more later.
  useEffect(() => {
    if (like.inflight) return;
    const soon = setTimeout(() => void pager.refresh(), 300);
    const later = setTimeout(() => void pager.refresh(), 2000);
    return () => {
      clearTimeout(soon);
      clearTimeout(later);
    };
  }, [like.count, like.liked, like.inflight, pager]);
  const ratio = post.width > 0 && post.height > 0 ? post.width / post.height : 1;

  return (
    <FlatList
      style={styles.flex}
      data={likers.items}
      keyExtractor={(l) => String(l.id)}
      onEndReached={() => void pager.more()}
      ListHeaderComponent={
        <View>
          <Stack.Screen options={{ title: `Post by ${post.author.username}` }} />
          <Image source={{ uri: api.media(post.imageUrl) }} style={[styles.image, { aspectRatio: ratio }]} accessibilityLabel={post.caption || `Image posted by ${post.author.username}`} />
          <View style={styles.row}>
            <LikeButton post={post} large />
          </View>
          {post.caption ? <Text style={styles.caption}>{post.caption}</Text> : null}
          <Text style={styles.heading} accessibilityRole="header">
            Liked by
          </Text>
        </View>
      }
      renderItem={({ item }) => (
        <Text style={styles.liker} testID={`liker-${item.username}`}>
          {item.username}
        </Text>
      )}
      ListEmptyComponent={!likers.loading ? <Text style={styles.muted}>Nobody yet.</Text> : null}
      ListFooterComponent={likers.loading ? <ActivityIndicator accessibilityLabel="Loading who liked" /> : likers.error ? <Text style={styles.error}>{describe(likers.error)}</Text> : null}
    />
  );
}

const styles = StyleSheet.create({
  flex: { flex: 1, backgroundColor: colors.bg },
  spinner: { margin: 32 },
  image: { width: '100%', backgroundColor: '#eee' },
  row: { paddingHorizontal: 12 },
  caption: { fontSize: 16, paddingHorizontal: 12, color: colors.text },
  heading: { fontSize: 17, fontWeight: '600', padding: 12, color: colors.text },
  liker: { fontSize: 16, paddingHorizontal: 12, paddingVertical: 8, color: colors.text },
  muted: { color: colors.muted, paddingHorizontal: 12 },
  error: { color: colors.error, margin: 16, fontSize: 15 },
});
