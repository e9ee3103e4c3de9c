import { useCallback, useEffect, useMemo, useState } from 'react';
import { ActivityIndicator, FlatList, RefreshControl, StyleSheet, Text, View, type ViewToken } from 'react-native';
import type { Post } from '../api/client';
import { describe } from '../api/errors';
import { useApp } from '../core/context';
import { useWatch } from '../core/hooks';
import { Pager, type Page, type PagerState } from '../feed/pager';
import { PostCard } from './PostCard';
import { colors } from './theme';

type Item = Post & { score?: number };

/**
 * An endless list of posts: pages by cursor, pull to refresh, live counts
 * for the cards on screen (and a few around them).
 */
export function PostList({ load, empty, listKey }: { load: (cursor: string | null) => Promise<Page<Item>>; empty: string; listKey: string }) {
  const { likes } = useApp();
  const pager = useMemo(() => new Pager<Item>(load), [load]);
  const [state, setState] = useState<PagerState<Item>>(pager.current);
  const [visible, setVisible] = useState<number[]>([]);

  useEffect(() => {
    const off = pager.subscribe((s) => {
      for (const p of s.items) likes.track(p);
      setState(s);
    });
    void pager.refresh();
    return off;
  }, [pager, likes]);

  useWatch(visible);
  // FlatList refuses a new callback after the first render: a stable one.
  const onViewable = useCallback(({ viewableItems }: { viewableItems: ViewToken<Item>[] }) => {
    setVisible(viewableItems.map((v) => v.item.id).sort((a, b) => a - b));
  }, []);

  const footer = useCallback(() => {
    if (state.error) {
      return (
        <Text style={styles.error} accessibilityRole="alert" onPress={() => void pager.more()}>
          {describe(state.error)} Tap to retry.
        </Text>
      );
    }
    if (state.loading && !state.refreshing) return <ActivityIndicator style={styles.spinner} accessibilityLabel="Loading more posts" />;
    if (state.done && state.items.length > 0) return <Text style={styles.end}>That’s all.</Text>;
    return null;
  }, [state, pager]);

  return (
    <FlatList
      key={listKey}
      testID={`list-${listKey}`}
      data={state.items}
      keyExtractor={(p) => String(p.id)}
      renderItem={({ item }) => <PostCard post={item} score={item.score} />}
      onEndReached={() => void pager.more()}
      onEndReachedThreshold={0.6}
      onViewableItemsChanged={onViewable}
      viewabilityConfig={{ itemVisiblePercentThreshold: 10 }}
      refreshControl={<RefreshControl refreshing={state.refreshing} onRefresh={() => void pager.refresh()} />}
      ListEmptyComponent={!state.loading && !state.error ? <View style={styles.emptyWrap}><Text style={styles.empty}>{empty}</Text></View> : null}
      ListFooterComponent={footer}
      style={styles.list}
    />
  );
}

const styles = StyleSheet.create({
  list: { flex: 1, backgroundColor: colors.bg },
  spinner: { margin: 16 },
  end: { textAlign: 'center', color: colors.muted, margin: 16 },
  error: { textAlign: 'center', color: colors.error, margin: 16, fontSize: 15 },
  emptyWrap: { padding: 32 },
  empty: { textAlign: 'center', color: colors.muted, fontSize: 16 },
});
