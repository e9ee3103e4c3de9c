// What went wrong, as the server said it: every error answer is
// `{"error": {"code", "message"}}` (docs/API.md, "Errors"); programs branch
// on `code`, people read `describe()`.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const MESSAGES: Record<string, string> = {
  network: 'Can’t reach the server. Check the address and your connection.',
  payload_too_large: 'That image is too large: the limit is 20 MB and 40 megapixels.',
  unsupported_media_type: 'That file isn’t an image Tally can take. Use a JPEG, PNG, WebP or GIF.',
  invalid_image: 'That image seems damaged and can’t be read. Try another one.',
  invalid_text: 'That text has characters Tally doesn’t take (control or invisible characters).',
  unavailable: 'Tally is busy right now. Please try again.',
  overloaded: 'Tally is busy right now. Please try again.',
  internal: 'Something went wrong on the server. Please try again.',
  invalid_credentials: 'Wrong username or password.',
  username_taken: 'That username is taken. Pick another one.',
  unauthorized: 'Your session has expired. Please sign in again.',
  not_found: 'That could not be found.',
  forbidden: 'You may not do that here.',
  load_run_active: 'A load run is already in progress on this server.',
};

/** A sentence for a person. */
export function describe(err: unknown): string {
  if (!(err instanceof ApiError)) return 'Something went wrong. Please try again.';
  if (err.code === 'rate_limited') {
    return err.retryAfter
      ? `Too fast. Try again in ${err.retryAfter} s.`
      : 'Too fast. Try again in a moment.';
  }
  if (err.code === 'invalid_request' && err.message) return err.message;
  return MESSAGES[err.code] ?? (err.message || `Request failed (${err.status}).`);
}

/**
 * Whether a write may have landed although it failed: no answer, a 503, a
 * timeout. Its outcome is read back, never guessed.
 */
export function outcomeUnknown(err: unknown): boolean {
  return (
    err instanceof ApiError &&
    (err.code === 'network' || err.code === 'unavailable' || err.status >= 500)
  );
}

/** Builds the error from an error answer's status, headers and body. */
export function errorFrom(status: number, retryAfterHeader: string | null, text: string): ApiError {
  let code = `http_${status}`;
  let message = `Request failed (${status}).`;
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    if (body?.error?.code) {
      code = body.error.code;
      message = body.error.message ?? message;
    }
  } catch {
    // Not our JSON (a proxy's error page): keep the generic message.
  }
  const retry = Number(retryAfterHeader);
  return new ApiError(status, code, message, Number.isFinite(retry) && retry > 0 ? retry : null);
}
