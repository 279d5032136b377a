// api.js - the REST API client. The browser logs in once with the API token
// (POST /api/v1/session): the daemon answers with an HttpOnly session cookie
// and a CSRF token. The token itself is never stored; the CSRF token lives
// in memory only (after a reload, GET /api/v1/session gives it again).
let csrf = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach kvmhostd: ${e.message}`);
  }
  const type = r.headers.get('Content-Type') || '';
  const data = r.status === 204 ? null : type.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = data && data.error ? data.error : { code: 'http', message: `HTTP ${r.status}` };
    if (r.status === 401 && path !== '/api/v1/session') onUnauthorized();
    throw new ApiError(r.status, err.code, err.message);
  }
  return data;
}

export async function sessionInfo() {
  const s = await api('GET', '/api/v1/session');
  csrf = s.csrf_token || null;
  return s;
}

// With a user name: a local user's password login; else the API token.
export async function login(token, user) {
  const s = await api('POST', '/api/v1/session', user ? { user, password: token } : { token });
  csrf = s.csrf_token;
  return s;
}

export async function logout() {
  try { await api('DELETE', '/api/v1/session'); } finally { csrf = null; }
}

export const vmPath = (name, rest = '') => `/api/v1/vms/${encodeURIComponent(name)}${rest}`;

// Streams a File (or Blob) as the body of a request, with progress
// (XMLHttpRequest: fetch reports no upload progress). The browser reads the
// file as it sends it; nothing is collected in memory. Resolves with the
// JSON answer; rejects with an ApiError as api() does.
export function upload(method, path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, path);
    x.setRequestHeader('Accept', 'application/json');
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    if (csrf) x.setRequestHeader('X-CSRF-Token', csrf);
    if (onProgress) x.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    x.onerror = () => reject(new ApiError(0, 'network', 'cannot reach kvmhostd (the upload broke off)'));
    x.onload = () => {
      let data = null;
      try { data = x.responseText ? JSON.parse(x.responseText) : null; } catch { /* not JSON */ }
      if (x.status >= 200 && x.status < 300) { resolve(data); return; }
      const err = data && data.error ? data.error : { code: 'http', message: `HTTP ${x.status}` };
      if (x.status === 401) onUnauthorized();
      reject(new ApiError(x.status, err.code, err.message));
    };
    x.send(file);
  });
}
