import { act, fireEvent, render, screen } from '@testing-library/react-native';
import { Api } from '../src/api/client';
import { AppContext, type AppContextValue } from '../src/core/context';
import { LikeButton } from '../src/components/LikeButton';
import { LikeStore } from '../src/likes/store';
import { LiveClient } from '../src/live/live';
import { post, Scripted } from '../testing/fixtures';

function renderButton(transport: Scripted) {
  const likes = new LikeStore(transport);
  const value = {
    ready: true,
    serverUrl: 'http://127.0.0.1:8080',
    user: { id: 2, username: 'bo' },
    token: 't',
    api: new Api({ baseUrl: 'http://127.0.0.1:8080' }),
    likes,
    live: new LiveClient('http://127.0.0.1:8080'),
    signedOutBecause: null,
    signIn: async () => {},
    signOut: async () => {},
    notices: [],
    notify: () => {},
    postsChanged: 0,
    posted: () => {},
  } satisfies AppContextValue;
  render(
    <AppContext.Provider value={value}>
      <LikeButton post={post(1, 41, false, 100)} />
    </AppContext.Provider>,
  );
  return likes;
}

describe('the like button', () => {
  test('its label carries the count and the like state is announced', async () => {
    const t = new Scripted();
    const likes = renderButton(t);
    const button = screen.getByRole('button', { name: 'Like, 41 likes' });
    expect(button.props.accessibilityState).toMatchObject({ selected: false });
    fireEvent.press(button);
    // Optimistic: pressed and counted at once.
    expect(screen.getByRole('button', { name: 'Unlike, 42 likes' }).props.accessibilityState).toMatchObject({ selected: true });
    await act(async () => t.answer({ likeCount: 45, version: 120 }));
    expect(screen.getByRole('button', { name: 'Unlike, 45 likes' })).toBeTruthy();
    expect(screen.getByText('45')).toBeTruthy();
    await act(async () => likes.push(1, 50, 130));
    expect(screen.getByRole('button', { name: 'Unlike, 50 likes' })).toBeTruthy();
  });
});
