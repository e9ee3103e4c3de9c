import { useState } from 'react';
import { StyleSheet, Text, View } from 'react-native';
import Svg, { Line, Polyline } from 'react-native-svg';
import { colors } from './theme';

export interface Series {
  label: string;
  color: string;
  values: number[];
}

/** A small line chart of per-second values; the label says the latest of each series. */
export function LineChart({ title, unit, series, height = 120 }: { title: string; unit: string; series: Series[]; height?: number }) {
  const [width, setWidth] = useState(300);
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i: number) => (i / (n - 1)) * (width - 8) + 4;
  const y = (v: number) => height - 4 - (v / max) * (height - 8);
  const latest = series.map((s) => `${s.label} ${fmt(s.values[s.values.length - 1] ?? 0)}${unit}`).join(' · ');
  return (
    <View style={styles.box} onLayout={(e) => setWidth(Math.max(100, e.nativeEvent.layout.width - 16))} accessibilityLabel={`${title}: ${latest}`} testID={`chart-${title}`}>
      <Text style={styles.title}>{title}</Text>
      <Text style={styles.latest}>{latest}</Text>
      <Svg width={width} height={height}>
        <Line x1={0} y1={height - 4} x2={width} y2={height - 4} stroke={colors.border} strokeWidth={1} />
        {series.map((s) =>
          s.values.length > 1 ? (
            <Polyline key={s.label} points={s.values.map((v, i) => `${x(i)},${y(v)}`).join(' ')} fill="none" stroke={s.color} strokeWidth={2} />
          ) : null,
        )}
      </Svg>
      <Text style={styles.axis}>max {fmt(max)}{unit}</Text>
    </View>
  );
}

function fmt(v: number): string {
  return v >= 100 ? Math.round(v).toLocaleString() : v.toFixed(v >= 10 ? 1 : 2).replace(/\.?0+$/, '') || '0';
}

const styles = StyleSheet.create({
  box: { backgroundColor: colors.card, borderRadius: 8, padding: 8, borderWidth: StyleSheet.hairlineWidth, borderColor: colors.border },
  title: { fontSize: 15, fontWeight: '600', color: colors.text },
  latest: { fontSize: 13, color: colors.muted, marginBottom: 4 },
  axis: { fontSize: 12, color: colors.muted, textAlign: 'right' },
});
