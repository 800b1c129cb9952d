// The /v1 API, with the signed-in key. URLs are relative to the page, so
// the dashboard works behind a proxy's path prefix: the page is served at
// <prefix>/ui/ and the API at <prefix>/v1/.

const keyName = 'rdev.apiKey';

// The API root, one level above the page's directory.
export const root = new URL('../', document.baseURI);

export function apiURL(path) {
  return new URL(path.replace(/^\//, ''), root);
}

// session holds the key for this tab only (sessionStorage): it is never
// put in a URL or a cookie.
export const session = {
  get key() { return sessionStorage.getItem(keyName) ?? ''; },
  set key(v) { v ? sessionStorage.setItem(keyName, v) : sessionStorage.removeItem(keyName); },
  admin: false,
  projects: [],
  scopes: [],
  keyID: '',
  // can says whether the key may act in role (read, submit) on project,
  // as the API decides it from the scopes.
  can(project, role) {
    return this.scopes.includes('admin') || (role === 'read' && this.scopes.includes('read')) ||
      this.scopes.includes(`project:${project}:${role}`);
  },
};

// APIError is a refusal with the API's code.
export class APIError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// request calls the API and returns the decoded JSON (null for 204).
export async function request(method, path, body, { key = session.key, signal } = {}) {
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(apiURL(path), { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!resp.ok) {
    const e = data?.error ?? {};
    if (resp.status === 401 && key === session.key) window.dispatchEvent(new Event('rdev:signed-out'));
    throw new APIError(resp.status, e.code ?? '', e.message ?? text);
  }
  return data;
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body, opts);
export const patch = (path, body, opts) => request('PATCH', path, body, opts);
export const del = (path, opts) => request('DELETE', path, undefined, opts);

// query builds a query string from the set values of params.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;
