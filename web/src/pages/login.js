// login.js - log in with a local user's name and password, or with the API
// token (STATE_DIR/api-token) when the user field is empty. The secret is
// sent once and not kept; the daemon sets a session cookie. When the daemon
// has OIDC login (GET /api/v1/session says "oidc": true), a "Sign in with
// NAME" link (NAME: "oidc_name", the provider's) goes to /api/v1/oidc/login;
// the provider sends the browser back to the daemon, which sets the session
// cookie and redirects here (a failed login shows the daemon's error page).
import { login, sessionInfo } from '../api.js';
import { h, replace } from '../dom.js';

export function loginPage(main, _params, { onLogin }) {
  const err = h('p', { class: 'error', id: 'login-error', role: 'alert', hidden: true });
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'current-password',
    spellcheck: 'false', 'aria-describedby': 'token-help login-error',
  });
  const user = h('input', {
    id: 'user', name: 'user', type: 'text', autocomplete: 'username', spellcheck: 'false',
    'aria-describedby': 'token-help',
  });
  const button = h('button', { type: 'submit', class: 'btn primary' }, 'Log in');
  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'kvmhost'),
    h('label', { for: 'user' }, 'User (leave empty to log in with the token)'),
    user,
    h('label', { for: 'token' }, 'Password or API token'),
    input,
    h('p', { id: 'token-help', class: 'muted small' },
      'The token is in STATE_DIR/api-token on the host (default /var/lib/kvmhost/api-token). ',
      'It is exchanged for a session cookie and not stored in the browser.'),
    err, button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    err.hidden = true;
    try {
      await login(input.value.trim(), user.value.trim());
      input.value = '';
      onLogin();
    } catch (ex) {
      err.textContent = ex.status === 401 ? (user.value.trim() ? 'Wrong user name or password.' : 'Wrong token.') : ex.message;
      err.hidden = false;
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  const sso = h('p', { id: 'sso', hidden: true },
    h('a', { class: 'btn', href: '/api/v1/oidc/login', id: 'sso-login' }, 'Sign in with SSO'));
  form.append(sso);
  sessionInfo().then((s) => {
    if (!s || !s.oidc) return;
    sso.firstChild.textContent = `Sign in with ${s.oidc_name || 'SSO'}`;
    sso.hidden = false;
  }).catch(() => {});
  replace(main, h('div', { class: 'center' }, form));
  user.focus();
}
