// The REST API (/api/v1) from the browser: JSON in and out, errors as ApiError with the
// server's own {error:{code,message}} words, and the creator's session in localStorage.

const API = '/api/v1';
const TIMEOUT_MS = 10_000;
const TOKEN_KEY = 'skylark.access_token';

/** A failed request: `status` (0 = no answer), `code` and a message meant for people. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/** Reads an error response's `{error:{code,message}}` (or its text) into an ApiError. */
export async function errorFrom(res, what) {
  const text = await res.text().catch(() => '');
  let code = `http_${res.status}`;
  let message = text.trim().slice(0, 300) || res.statusText || 'no details';
  try {
    const j = JSON.parse(text);
    if (j?.error) {
      code = j.error.code ?? code;
      message = j.error.message ?? message;
    }
  } catch {
    /* not JSON: keep the text */
  }
  return new ApiError(res.status, code, `${what}: ${message} (${res.status} ${code})`);
}

/** fetch with a timeout; a network failure becomes ApiError(0, 'network', …). */
export async function request(url, init = {}, what = url) {
  try {
    return await fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(init.timeoutMs ?? TIMEOUT_MS) });
  } catch (e) {
    const why = e?.name === 'TimeoutError' ? `no answer within ${(init.timeoutMs ?? TIMEOUT_MS) / 1000} s` : 'the server could not be reached';
    throw new ApiError(0, 'network', `${what}: ${why}`);
  }
}

/**
 * Calls the API: api('POST', '/rooms', {token, body}) → parsed JSON (null for 204).
 * Throws ApiError with the server's message on any non-2xx status.
 */
export async function api(method, path, { token, body, what } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const label = what ?? `${method} ${path}`;
  const res = await request(`${API}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }, label);
  if (!res.ok) throw await errorFrom(res, label);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

let memoryToken = null;

/** The creator's access token (studio), kept across reloads in localStorage. */
export const session = {
  get token() {
    try {
      return localStorage.getItem(TOKEN_KEY) ?? memoryToken;
    } catch {
      return memoryToken;
    }
  },
  set token(t) {
    memoryToken = t || null;
    try {
      if (t) localStorage.setItem(TOKEN_KEY, t);
      else localStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage disabled: the session lasts as long as the page */
    }
  },
};
