export const colors = {
  bg: '#fafafa',
  card: '#ffffff',
  text: '#1a1a1a',
  muted: '#6b6b6b',
  border: '#e3e3e3',
  like: '#e0245e',
  accent: '#2f6fdf',
  error: '#b3261e',
  ok: '#1e7a3c',
  warn: '#a15c00',
};
