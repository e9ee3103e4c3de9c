import { Pressable, StyleSheet, Text } from 'react-native';
import Svg, { Path } from 'react-native-svg';
import type { Post } from '../api/client';
import { useApp } from '../core/context';
import { useLike } from '../core/hooks';
import { colors } from './theme';

const HEART =
  'M12 21s-7.5-4.6-9.6-9.2C.9 8.4 3 4.5 6.6 4.5c2.1 0 3.6 1.2 5.4 3.2 1.8-2 3.3-3.2 5.4-3.2 3.6 0 5.7 3.9 4.2 7.3C19.5 16.4 12 21 12 21z';

/** The like button: pressed state and count from the shared store; a tap is optimistic. */
export function LikeButton({ post, large = false }: { post: Post; large?: boolean }) {
  const { likes } = useApp();
  const s = useLike(post);
  const label = s.desired ? `Unlike, ${s.count} likes` : `Like, ${s.count} likes`;
  const size = large ? 30 : 24;
  return (
    <Pressable
      onPress={() => void likes.tap(post.id)}
      accessibilityRole="button"
      accessibilityLabel={label}
      accessibilityState={{ selected: s.desired }}
      accessibilityHint={s.desired ? 'Removes your like' : 'Likes this post'}
      testID={`like-${post.id}`}
      hitSlop={8}
      style={({ pressed }) => [styles.button, pressed && styles.pressed]}
    >
      <Svg width={size} height={size} viewBox="0 0 24 24" aria-hidden>
        <Path
          d={HEART}
          fill={s.desired ? colors.like : 'none'}
          stroke={s.desired ? colors.like : colors.text}
          strokeWidth={2}
        />
      </Svg>
      <Text style={[styles.count, large && styles.countLarge]} testID={`like-count-${post.id}`} accessibilityLiveRegion="polite">
        {s.count.toLocaleString()}
      </Text>
    </Pressable>
  );
}

const styles = StyleSheet.create({
  button: { flexDirection: 'row', alignItems: 'center', gap: 6, paddingVertical: 6, paddingRight: 10, minHeight: 44 },
  pressed: { opacity: 0.6 },
  count: { fontSize: 16, fontWeight: '600', color: colors.text, fontVariant: ['tabular-nums'] },
  countLarge: { fontSize: 20 },
});
