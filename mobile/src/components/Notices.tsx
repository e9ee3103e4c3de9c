import { StyleSheet, Text, View } from 'react-native';
import { useApp } from '../core/context';
import { colors } from './theme';

/** Short messages at the bottom of the screen (failed likes, uploads done). */
export function Notices() {
  const { notices } = useApp();
  if (notices.length === 0) return null;
  return (
    <View style={styles.wrap} pointerEvents="none">
      {notices.map((n) => (
        <Text
          key={n.id}
          style={[styles.notice, n.kind === 'error' && styles.error]}
          accessibilityLiveRegion="assertive"
          accessibilityRole="alert"
        >
          {n.text}
        </Text>
      ))}
    </View>
  );
}

const styles = StyleSheet.create({
  wrap: { position: 'absolute', left: 12, right: 12, bottom: 72, gap: 6 },
  notice: { backgroundColor: '#333', color: '#fff', padding: 10, borderRadius: 8, fontSize: 14 },
  error: { backgroundColor: colors.error },
});
