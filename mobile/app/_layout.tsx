import { Stack } from 'expo-router';
import { StatusBar } from 'expo-status-bar';
import { SafeAreaProvider } from 'react-native-safe-area-context';
import { AppProvider } from '../src/core/context';
import { Notices } from '../src/components/Notices';

export default function RootLayout() {
  return (
    <SafeAreaProvider>
      <AppProvider>
        <StatusBar style="auto" />
        <Stack>
          <Stack.Screen name="(tabs)" options={{ headerShown: false }} />
          <Stack.Screen name="sign-in" options={{ title: 'Sign in', headerBackVisible: false }} />
          <Stack.Screen name="post/[id]" options={{ title: 'Post' }} />
        </Stack>
        <Notices />
      </AppProvider>
    </SafeAreaProvider>
  );
}
