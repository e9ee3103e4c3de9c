import { Link } from 'expo-router';
import { Image, Pressable, StyleSheet, Text, View } from 'react-native';
import type { Post } from '../api/client';
import { useApp } from '../core/context';
import { LikeButton } from './LikeButton';
import { colors } from './theme';

/** A feed card: thumbnail first (the full image is on the post screen), caption, like button. */
export function PostCard({ post, score }: { post: Post; score?: number }) {
  const { api } = useApp();
  const ratio = post.width > 0 && post.height > 0 ? post.width / post.height : 1;
  return (
    <View style={styles.card} testID={`post-${post.id}`}>
      <Text style={styles.author} accessibilityRole="header">
        {post.author.username}
      </Text>
      <Link href={`/post/${post.id}`} asChild>
        <Pressable accessibilityRole="link" accessibilityLabel={`Open post by ${post.author.username}`}>
          <Image
            source={{ uri: api.media(post.thumbnailUrl) }}
            style={[styles.image, { aspectRatio: Math.max(0.5, Math.min(2, ratio)) }]}
            accessibilityIgnoresInvertColors
            accessible={false}
          />
        </Pressable>
      </Link>
      <View style={styles.row}>
        <LikeButton post={post} />
        {score !== undefined && <Text style={styles.score}>+{score} in window</Text>}
      </View>
      {post.caption ? <Text style={styles.caption}>{post.caption}</Text> : null}
    </View>
  );
}

const styles = StyleSheet.create({
  card: { backgroundColor: colors.card, borderBottomWidth: StyleSheet.hairlineWidth, borderColor: colors.border, paddingBottom: 8 },
  author: { fontWeight: '600', fontSize: 15, color: colors.text, paddingHorizontal: 12, paddingVertical: 8 },
  image: { width: '100%', backgroundColor: '#eee' },
  row: { flexDirection: 'row', alignItems: 'center', paddingHorizontal: 12, gap: 12 },
  score: { color: colors.muted, fontSize: 14 },
  caption: { color: colors.text, fontSize: 15, paddingHorizontal: 12 },
});
