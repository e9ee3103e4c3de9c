import { useEffect, useRef, useState } from 'react';
import { Pressable, ScrollView, StyleSheet, Text, TextInput, View } from 'react-native';
import type { LoadRun } from '../../src/api/client';
import { ApiError, describe } from '../../src/api/errors';
import { useApp } from '../../src/core/context';
import { LineChart } from '../../src/components/LineChart';
import { colors } from '../../src/components/theme';
import { checkLocal, LocalRun, LOCAL_LIMITS, type LocalConfig, type LocalRunView } from '../../src/sim/local';
import { finished, follow, SERVER_LIMITS } from '../../src/sim/server';

type Mode = 'server' | 'local';

/**
 * Traffic simulator. Server mode starts a bounded load run on the server
 * (it needs the load panel on and this user allowed); local mode drives
 * simulated users from this phone. Both chart throughput, latency, errors
 * (and the write-behind's lag on the server) and end with the count check.
 */
export default function Simulator() {
  const [mode, setMode] = useState<Mode>('server');
  return (
    <ScrollView contentContainerStyle={styles.page}>
      <View style={styles.tabs} accessibilityRole="tablist">
        {(['server', 'local'] as const).map((m) => (
          <Pressable key={m} onPress={() => setMode(m)} accessibilityRole="tab" accessibilityState={{ selected: m === mode }} style={[styles.tab, m === mode && styles.selected]} testID={`mode-${m}`}>
            <Text style={[styles.tabText, m === mode && styles.selectedText]}>{m === 'server' ? 'On the server' : 'From this phone'}</Text>
          </Pressable>
        ))}
      </View>
      {mode === 'server' ? <ServerMode /> : <LocalMode />}
    </ScrollView>
  );
}

function NumberField({ label, value, onChange, testID }: { label: string; value: number; onChange: (v: number) => void; testID: string }) {
  return (
    <View style={styles.field}>
      <Text style={styles.label}>{label}</Text>
      <TextInput value={String(value)} onChangeText={(t) => onChange(Number(t.replace(/[^0-9.]/g, '')) || 0)} keyboardType="numeric" style={styles.input} accessibilityLabel={label} testID={testID} />
    </View>
  );
}

function ServerMode() {
  const { api } = useApp();
  const [config, setConfig] = useState({ users: 1000, rate: 200, durationSecs: 10, posts: 50, zipf: 1.0 });
  const [run, setRun] = useState<LoadRun | null>(null);
  const [error, setError] = useState<string | null>(null);
  const stop = useRef<(() => void) | null>(null);
  useEffect(() => () => stop.current?.(), []);
  // A run started elsewhere (the web panel, another phone) shows too.
  useEffect(() => {
    api.currentLoadRun().then(setRun, () => {});
  }, [api]);

  function start() {
    for (const [k, [lo, hi]] of Object.entries(SERVER_LIMITS)) {
      const v = config[k as keyof typeof SERVER_LIMITS];
      if (!Number.isInteger(v) || v < lo || v > hi) {
        setError(`${k} must be a whole number from ${lo} to ${hi}.`);
        return;
      }
    }
    setError(null);
    stop.current?.();
    stop.current = follow(api, config, setRun, (err) => {
      setError(err instanceof ApiError && err.code === 'forbidden' ? 'The load panel is off on this server, or you are not one of its operators (tally serve --load-panel).' : describe(err));
    });
  }

  const running = run !== null && !finished(run);
  const samples = run?.samples ?? [];
  return (
    <View style={styles.section}>
      <View style={styles.form}>
        <NumberField label="Users" value={config.users} onChange={(users) => setConfig({ ...config, users })} testID="server-users" />
        <NumberField label="Requests/s" value={config.rate} onChange={(rate) => setConfig({ ...config, rate })} testID="server-rate" />
        <NumberField label="Seconds" value={config.durationSecs} onChange={(durationSecs) => setConfig({ ...config, durationSecs })} testID="server-duration" />
        <NumberField label="Posts" value={config.posts} onChange={(posts) => setConfig({ ...config, posts })} testID="server-posts" />
      </View>
      <Pressable style={[styles.button, running && styles.disabled]} onPress={start} disabled={running} accessibilityRole="button" accessibilityState={{ disabled: running }} testID="server-start">
        <Text style={styles.buttonText}>{running ? `Running (${run?.state})…` : 'Start load run'}</Text>
      </Pressable>
      {error ? <Text style={styles.error} accessibilityRole="alert" testID="server-error">{error}</Text> : null}
      {run ? (
        <>
          <Text style={styles.status} testID="server-state">
            Run {run.id}: {run.state}, {Math.round(run.elapsedSecs)} s
          </Text>
          {run.error ? <Text style={styles.error}>{run.error}</Text> : null}
          {run.consistency ? <VerdictView verdict={run.consistency.verdict} detail={`${run.consistency.likesExpected} likes over ${run.consistency.postsChecked} posts, ${run.consistency.pairs} pairs`} differences={run.consistency.differences} /> : null}
          <Charts
            ops={samples.map((s) => s.ops)}
            errors={samples.map((s) => s.errors)}
            p50={samples.map((s) => s.p50Ms)}
            p99={samples.map((s) => s.p99Ms)}
            lag={samples.map((s) => s.syncLagMs)}
          />
        </>
      ) : null}
    </View>
  );
}

function LocalMode() {
  const { api } = useApp();
  const [config, setConfig] = useState<LocalConfig>({ users: 10, rate: 20, durationSecs: 10, posts: 5 });
  const [view, setView] = useState<LocalRunView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const current = useRef<LocalRun | null>(null);
  useEffect(() => () => current.current?.stop(), []);

  function start() {
    const problem = checkLocal(config);
    if (problem) {
      setError(problem);
      return;
    }
    setError(null);
    const run = new LocalRun(api, config, setView);
    current.current = run;
    setView(run.current);
    void run.run();
  }

  const running = view !== null && view.state !== 'done' && view.state !== 'failed';
  const samples = view?.samples ?? [];
  return (
    <View style={styles.section}>
      <Text style={styles.muted}>
        Signs up {LOCAL_LIMITS.users[1]} users at most for the run, then likes and unlikes the newest posts from this phone.
      </Text>
      <View style={styles.form}>
        <NumberField label="Users" value={config.users} onChange={(users) => setConfig({ ...config, users })} testID="local-users" />
        <NumberField label="Requests/s" value={config.rate} onChange={(rate) => setConfig({ ...config, rate })} testID="local-rate" />
        <NumberField label="Seconds" value={config.durationSecs} onChange={(durationSecs) => setConfig({ ...config, durationSecs })} testID="local-duration" />
        <NumberField label="Posts" value={config.posts} onChange={(posts) => setConfig({ ...config, posts })} testID="local-posts" />
      </View>
      <View style={styles.row}>
        <Pressable style={[styles.button, running && styles.disabled]} onPress={start} disabled={running} accessibilityRole="button" testID="local-start">
          <Text style={styles.buttonText}>{running ? `Running (${view?.state})…` : 'Start from this phone'}</Text>
        </Pressable>
        {running ? (
          <Pressable style={styles.secondary} onPress={() => current.current?.stop()} accessibilityRole="button">
            <Text style={styles.secondaryText}>Stop</Text>
          </Pressable>
        ) : null}
      </View>
      {error ? <Text style={styles.error} accessibilityRole="alert">{error}</Text> : null}
      {view ? (
        <>
          <Text style={styles.status} testID="local-state">
            {view.state}: {view.total} answered, {view.errors} errors
          </Text>
          {view.error ? <Text style={styles.error} accessibilityRole="alert">{view.error}</Text> : null}
          {view.consistency ? (
            <VerdictView
              verdict={view.consistency.verdict}
              detail={`${view.consistency.likesExpected} likes over ${view.consistency.postsChecked} posts, ${view.consistency.pairs} pairs, ${view.consistency.unknownReadBack} unknown outcomes read back`}
              differences={view.consistency.differences}
            />
          ) : null}
          <Charts ops={samples.map((s) => s.ops)} errors={samples.map((s) => s.errors)} p50={samples.map((s) => s.p50Ms)} p99={samples.map((s) => s.p99Ms)} />
        </>
      ) : null}
    </View>
  );
}

function Charts({ ops, errors, p50, p99, lag }: { ops: number[]; errors: number[]; p50: number[]; p99: number[]; lag?: number[] }) {
  return (
    <View style={styles.charts}>
      <LineChart title="Throughput" unit="/s" series={[{ label: 'ok', color: colors.accent, values: ops }, { label: 'errors', color: colors.error, values: errors }]} />
      <LineChart title="Latency" unit=" ms" series={[{ label: 'p50', color: colors.ok, values: p50 }, { label: 'p99', color: colors.warn, values: p99 }]} />
      {lag ? <LineChart title="Write-behind lag" unit=" ms" series={[{ label: 'lag', color: colors.muted, values: lag }]} /> : null}
    </View>
  );
}

function VerdictView({ verdict, detail, differences }: { verdict: string; detail: string; differences: string[] }) {
  const exact = verdict === 'exact';
  return (
    <View style={[styles.verdict, { borderColor: exact ? colors.ok : colors.error }]} accessibilityRole="summary" accessibilityLiveRegion="polite">
      <Text style={[styles.verdictText, { color: exact ? colors.ok : colors.error }]} testID="verdict">
        {verdict}
      </Text>
      <Text style={styles.muted}>{detail}</Text>
      {differences.slice(0, 10).map((d) => (
        <Text key={d} style={styles.error}>
          {d}
        </Text>
      ))}
    </View>
  );
}

const styles = StyleSheet.create({
  page: { padding: 12, gap: 12, backgroundColor: colors.bg, flexGrow: 1 },
  section: { gap: 12 },
  tabs: { flexDirection: 'row', gap: 8 },
  tab: { paddingVertical: 8, paddingHorizontal: 14, borderRadius: 16, borderWidth: 1, borderColor: colors.border, minHeight: 40 },
  selected: { backgroundColor: colors.accent, borderColor: colors.accent },
  tabText: { color: colors.text, fontSize: 15 },
  selectedText: { color: '#fff' },
  form: { flexDirection: 'row', flexWrap: 'wrap', gap: 8 },
  field: { width: '47%' },
  label: { fontSize: 14, color: colors.muted },
  input: { borderWidth: 1, borderColor: colors.border, borderRadius: 8, padding: 10, fontSize: 16, backgroundColor: colors.card, color: colors.text },
  row: { flexDirection: 'row', gap: 12 },
  button: { backgroundColor: colors.accent, padding: 12, borderRadius: 8, alignItems: 'center', minHeight: 44, flexGrow: 1 },
  buttonText: { color: '#fff', fontWeight: '600', fontSize: 16 },
  secondary: { padding: 12, borderRadius: 8, borderWidth: 1, borderColor: colors.accent, minHeight: 44 },
  secondaryText: { color: colors.accent, fontSize: 16 },
  disabled: { opacity: 0.5 },
  error: { color: colors.error, fontSize: 15 },
  status: { fontSize: 15, color: colors.text },
  muted: { color: colors.muted, fontSize: 14 },
  charts: { gap: 8 },
  verdict: { borderWidth: 2, borderRadius: 8, padding: 12, gap: 4 },
  verdictText: { fontSize: 24, fontWeight: '700' },
});
