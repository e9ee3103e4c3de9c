import { useRouter } from 'expo-router';
import { useEffect, useState } from 'react';
import { ActivityIndicator, KeyboardAvoidingView, Platform, Pressable, ScrollView, StyleSheet, Text, TextInput, View } from 'react-native';
import { Api, normalizeBaseUrl } from '../src/api/client';
import { describe } from '../src/api/errors';
import { useApp } from '../src/core/context';
import { colors } from '../src/components/theme';

/** Server address, then sign in or sign up. The address is remembered. */
export default function SignIn() {
  const app = useApp();
  // The stored server address is known once the app is ready.
  return app.ready ? <Form /> : null;
}

function Form() {
  const app = useApp();
  const router = useRouter();
  const [server, setServer] = useState(app.serverUrl);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (app.ready && app.token) router.replace('/');
  }, [app.ready, app.token, router]);

  async function go(create: boolean) {
    setError(null);
    if (!username.trim() || !password) {
      setError('Enter a username and a password.');
      return;
    }
    setBusy(true);
    const url = normalizeBaseUrl(server);
    const api = new Api({ baseUrl: url });
    try {
      if (create) await api.signUp(username.trim(), password);
      const session = await api.signIn(username.trim(), password);
      await app.signIn(url, session.token, session.user);
      router.replace('/');
    } catch (err) {
      setError(describe(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <KeyboardAvoidingView behavior={Platform.OS === 'ios' ? 'padding' : undefined} style={styles.flex}>
      <ScrollView contentContainerStyle={styles.form} keyboardShouldPersistTaps="handled">
        <Text style={styles.title} accessibilityRole="header">
          Tally
        </Text>
        {app.signedOutBecause ? <Text style={styles.error} accessibilityRole="alert">{app.signedOutBecause}</Text> : null}
        <Text style={styles.label} nativeID="server-label">Server</Text>
        <TextInput
          value={server}
          onChangeText={setServer}
          autoCapitalize="none"
          autoCorrect={false}
          keyboardType="url"
          placeholder="http://192.168.1.20:8080"
          style={styles.input}
          accessibilityLabel="Server address"
          testID="server"
        />
        <Text style={styles.label}>Username</Text>
        <TextInput
          value={username}
          onChangeText={setUsername}
          autoCapitalize="none"
          autoCorrect={false}
          autoComplete="username"
          style={styles.input}
          accessibilityLabel="Username"
          testID="username"
        />
        <Text style={styles.label}>Password</Text>
        <TextInput
          value={password}
          onChangeText={setPassword}
          secureTextEntry
          autoComplete="password"
          style={styles.input}
          accessibilityLabel="Password"
          testID="password"
          onSubmitEditing={() => void go(false)}
        />
        {error ? <Text style={styles.error} accessibilityRole="alert" testID="sign-in-error">{error}</Text> : null}
        <View style={styles.buttons}>
          <Pressable style={[styles.button, styles.primary]} onPress={() => void go(false)} disabled={busy} accessibilityRole="button" testID="sign-in">
            <Text style={styles.primaryText}>Sign in</Text>
          </Pressable>
          <Pressable style={styles.button} onPress={() => void go(true)} disabled={busy} accessibilityRole="button" testID="sign-up">
            <Text style={styles.buttonText}>Create account</Text>
          </Pressable>
        </View>
        {busy ? <ActivityIndicator accessibilityLabel="Signing in" /> : null}
      </ScrollView>
    </KeyboardAvoidingView>
  );
}

const styles = StyleSheet.create({
  flex: { flex: 1, backgroundColor: colors.bg },
  form: { padding: 20, gap: 8, maxWidth: 480, width: '100%', alignSelf: 'center' },
  title: { fontSize: 34, fontWeight: '700', marginVertical: 16, color: colors.text },
  label: { fontSize: 15, color: colors.muted, marginTop: 8 },
  input: { borderWidth: 1, borderColor: colors.border, borderRadius: 8, padding: 12, fontSize: 17, backgroundColor: colors.card, color: colors.text },
  error: { color: colors.error, fontSize: 15 },
  buttons: { flexDirection: 'row', gap: 12, marginTop: 16, flexWrap: 'wrap' },
  button: { paddingVertical: 12, paddingHorizontal: 18, borderRadius: 8, borderWidth: 1, borderColor: colors.accent, minHeight: 44 },
  primary: { backgroundColor: colors.accent },
  primaryText: { color: '#fff', fontWeight: '600', fontSize: 16 },
  buttonText: { color: colors.accent, fontWeight: '600', fontSize: 16 },
});
