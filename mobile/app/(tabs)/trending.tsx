import { useCallback, useEffect, useState } from 'react';
import { Pressable, StyleSheet, Text, View } from 'react-native';
import type { TrendWindow } from '../../src/api/client';
import { ApiError } from '../../src/api/errors';
import { useApp } from '../../src/core/context';
import { PostList } from '../../src/components/PostList';
import { colors } from '../../src/components/theme';

/** Posts that gained the most likes in the last hour or day, when the server has trending. */
export default function Trending() {
  const { api } = useApp();
  const [window, setWindow] = useState<TrendWindow>('1h');
  const [missing, setMissing] = useState(false);
  useEffect(() => {
    api.trending('1h').catch((err) => setMissing(err instanceof ApiError && err.status === 404));
  }, [api]);
  const load = useCallback((cursor: string | null) => api.trending(window, cursor), [api, window]);
  if (missing) return <Text style={styles.missing}>This server has no trending ranking.</Text>;
  return (
    <View style={styles.flex}>
      <View style={styles.tabs} accessibilityRole="tablist">
        {(['1h', '24h'] as const).map((w) => (
          <Pressable
            key={w}
            onPress={() => setWindow(w)}
            accessibilityRole="tab"
            accessibilityState={{ selected: w === window }}
            style={[styles.tab, w === window && styles.selected]}
            testID={`window-${w}`}
          >
            <Text style={[styles.tabText, w === window && styles.selectedText]}>{w === '1h' ? 'Last hour' : 'Last day'}</Text>
          </Pressable>
        ))}
      </View>
      <PostList load={load} listKey={`trending-${window}`} empty="Nothing has been liked in this window yet." />
    </View>
  );
}

const styles = StyleSheet.create({
  flex: { flex: 1 },
  tabs: { flexDirection: 'row', gap: 8, padding: 8, backgroundColor: colors.card },
  tab: { paddingVertical: 8, paddingHorizontal: 14, borderRadius: 16, borderWidth: 1, borderColor: colors.border, minHeight: 40 },
  selected: { backgroundColor: colors.accent, borderColor: colors.accent },
  tabText: { color: colors.text, fontSize: 15 },
  selectedText: { color: '#fff' },
  missing: { padding: 32, textAlign: 'center', color: colors.muted, fontSize: 16 },
});
