// The session and every API call. The access token lives only in this module's memory; the
// refresh token is an httpOnly cookie the page cannot read (api_gateway/console_session.py).

let session = null; // {access_token, expires_at, user_id, username, role, csrf_token}
let refreshing = null;
const endListeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

export function current() {
  return session;
}

export function onSessionEnd(fn) {
  endListeners.add(fn);
}

function csrfToken() {
  if (session?.csrf_token) return session.csrf_token;
  const m = document.cookie.match(/(?:^|;\s*)dante_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function errorFrom(resp) {
  let code = "http_error";
  let detail = resp.statusText;
  try {
    const body = await resp.json();
    code = body.error || code;
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    /* not JSON */
  }
  return new ApiError(resp.status, code, detail);
}

async function post(path, body, headers = {}) {
  return fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

export async function signIn(username, password) {
  const resp = await post("/console/session", { username, password });
  if (!resp.ok) throw await errorFrom(resp);
  session = await resp.json();
  return session;
}

export async function register(username, email, password, role) {
  const resp = await post("/api/v1/auth/register", { username, email, password, role });
  if (!resp.ok) throw await errorFrom(resp);
  return resp.json();
}

// Silent refresh: one request at a time, whoever asks first.
export function resume() {
  if (!refreshing) {
    refreshing = (async () => {
      // no CSRF cookie means no session cookie either: nothing to resume, no request
      if (!csrfToken()) {
        session = null;
        return null;
      }
      const resp = await post("/console/session/refresh", undefined, {
        "x-csrf-token": csrfToken(),
      });
      if (!resp.ok) {
        session = null;
        return null;
      }
      session = await resp.json();
      return session;
    })().finally(() => (refreshing = null));
  }
  return refreshing;
}

function end(reason) {
  session = null;
  for (const fn of endListeners) fn(reason);
}

export async function signOut() {
  const headers = { "x-csrf-token": csrfToken() };
  if (session) headers.authorization = `Bearer ${session.access_token}`;
  try {
    await post("/console/session/logout", undefined, headers);
  } finally {
    end("signed-out");
  }
}

function expiresSoon() {
  return session && new Date(session.expires_at).getTime() - Date.now() < 30_000;
}

// One API call with the bearer token; a 401 gets one silent refresh and one retry, and a
// refused refresh (revoked, disabled, expired) ends the session: the page shows sign-in.
export async function api(path, { method = "GET", body, headers = {}, raw = false, signal } = {}) {
  if (!session || expiresSoon()) await resume();
  if (!session) {
    end("expired");
    throw new ApiError(401, "no_session", "You are signed out");
  }
  for (let attempt = 0; ; attempt++) {
    const init = { method, signal, headers: { ...headers, authorization: `Bearer ${session.access_token}` } };
    if (body instanceof Blob || body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["content-type"] = "application/json";
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      // The token was refused (revoked, or the account disabled): one silent refresh; if the
      // auth service refuses that too, the session is over.
      if (attempt === 0 && (await resume())) continue;
      end("revoked");
      throw await errorFrom(resp);
    }
    if (!resp.ok) throw await errorFrom(resp);
    if (raw) return resp;
    return resp.status === 204 ? null : resp.json();
  }
}

export function bearer() {
  return session ? `Bearer ${session.access_token}` : "";
}
