// The default server address: this host's port 8080. On the web, the host
// that served the app; in Expo Go, the host running the dev server (the
// phone reached it, so it reaches Tally there too).

import Constants from 'expo-constants';
import { Platform } from 'react-native';

export function defaultServerUrl(): string {
  if (Platform.OS === 'web' && typeof location !== 'undefined' && location.hostname) {
    return `${location.protocol}//${location.hostname}:8080`;
  }
  const hostUri = Constants.expoConfig?.hostUri; // "192.168.1.20:8081"
  const host = hostUri?.split(':')[0];
  return `http://${host || '127.0.0.1'}:8080`;
}
