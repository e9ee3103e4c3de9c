import { ApiError, describe as say, errorFrom, outcomeUnknown } from '../src/api/errors';
import { checkUpload, uploadName } from '../src/upload/check';

const ok = { uri: 'file:///p.jpg', fileName: 'p.jpg', mimeType: 'image/jpeg', fileSize: 1_000_000, width: 4000, height: 3000 };

describe('upload errors', () => {
  test('files the server would refuse are stopped before the bytes go', () => {
    expect(checkUpload(ok, 'hi')).toBeNull();
    expect(checkUpload({ ...ok, fileSize: 21 * 1024 * 1024 }, '')).toMatch(/limit is 20 MB/);
    expect(checkUpload({ ...ok, mimeType: 'image/heic' }, '')).toMatch(/JPEG, PNG, WebP or GIF/);
    expect(checkUpload({ ...ok, width: 8000, height: 6000 }, '')).toMatch(/48 megapixels: the limit is 40/);
    expect(checkUpload(ok, 'x'.repeat(2201))).toMatch(/2200 characters/);
    // Characters, not UTF-16 units: 2,200 emoji are fine.
    expect(checkUpload(ok, '😀'.repeat(2200))).toBeNull();
  });

  test("the server's error codes become sentences a person can act on", () => {
    const cases: [number, string, RegExp][] = [
      [413, 'payload_too_large', /too large: the limit is 20 MB and 40 megapixels/],
      [415, 'unsupported_media_type', /JPEG, PNG, WebP or GIF/],
      [422, 'invalid_image', /damaged/],
      [400, 'invalid_text', /characters Tally doesn’t take/],
      [401, 'unauthorized', /sign in again/],
    ];
    for (const [status, code, msg] of cases) {
      const err = errorFrom(status, null, JSON.stringify({ error: { code, message: 'server words' } }));
      expect(err).toMatchObject({ status, code });
      expect(say(err)).toMatch(msg);
    }
    const limited = errorFrom(429, '3', JSON.stringify({ error: { code: 'rate_limited', message: 'x' } }));
    expect(say(limited)).toBe('Too fast. Try again in 3 s.');
    // A proxy's HTML page: a generic error with the status, never a crash.
    const proxy = errorFrom(502, null, '<html>Bad gateway</html>');
    expect(proxy.code).toBe('http_502');
    expect(outcomeUnknown(proxy)).toBe(true);
    expect(outcomeUnknown(new ApiError(409, 'username_taken', ''))).toBe(false);
  });

  test('an upload name carries an extension that matches its type', () => {
    expect(uploadName({ ...ok, fileName: null, mimeType: 'image/png' })).toBe('photo.png');
    expect(uploadName({ ...ok, fileName: null, mimeType: 'image/jpeg' })).toBe('photo.jpg');
    expect(uploadName(ok)).toBe('p.jpg');
  });
});
