import { StyleSheet, Text, View } from 'react-native';
import { useLiveState } from '../core/hooks';
import { colors } from './theme';

const LABEL = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', offline: 'Offline' } as const;
const COLOR = { live: colors.ok, connecting: colors.muted, reconnecting: colors.warn, offline: colors.error } as const;

/** Whether live counts are flowing. */
export function ConnectionBadge() {
  const state = useLiveState();
  return (
    <View style={styles.badge} accessibilityRole="text" accessibilityLabel={`Live counts: ${LABEL[state]}`} testID="live-state">
      <View style={[styles.dot, { backgroundColor: COLOR[state] }]} />
      <Text style={styles.text}>{LABEL[state]}</Text>
    </View>
  );
}

const styles = StyleSheet.create({
  badge: { flexDirection: 'row', alignItems: 'center', gap: 6, paddingHorizontal: 12 },
  dot: { width: 8, height: 8, borderRadius: 4 },
  text: { fontSize: 13, color: colors.muted },
});
