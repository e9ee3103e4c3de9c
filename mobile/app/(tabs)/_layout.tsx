import { Redirect, Tabs } from 'expo-router';
import { Pressable, Text } from 'react-native';
import { useApp } from '../../src/core/context';
import { ConnectionBadge } from '../../src/components/ConnectionBadge';
import { colors } from '../../src/components/theme';

export default function TabsLayout() {
  const app = useApp();
  if (!app.ready) return null;
  if (!app.token) return <Redirect href="/sign-in" />;
  const signOut = () => (
    <Pressable onPress={() => void app.signOut()} accessibilityRole="button" accessibilityLabel={`Sign out ${app.user?.username ?? ''}`} style={{ paddingHorizontal: 12 }} testID="sign-out">
      <Text style={{ color: colors.accent, fontSize: 15 }}>Sign out</Text>
    </Pressable>
  );
  return (
    <Tabs
      screenOptions={{
        headerLeft: () => <ConnectionBadge />,
        headerRight: signOut,
        tabBarActiveTintColor: colors.accent,
        tabBarIcon: () => null,
        tabBarLabelStyle: { fontSize: 14 },
        tabBarIconStyle: { display: 'none' },
      }}
    >
      <Tabs.Screen name="index" options={{ title: 'Feed', tabBarAccessibilityLabel: 'Feed' }} />
      <Tabs.Screen name="trending" options={{ title: 'Trending', tabBarAccessibilityLabel: 'Trending' }} />
      <Tabs.Screen name="upload" options={{ title: 'Post', tabBarAccessibilityLabel: 'New post' }} />
      <Tabs.Screen name="simulator" options={{ title: 'Simulator', tabBarAccessibilityLabel: 'Traffic simulator' }} />
    </Tabs>
  );
}
