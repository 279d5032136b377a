"""OIDC login (issue 12, item 1) against a test-only provider
(oidc_provider.py: discovery, JWKS, an authorization endpoint that logs a
preset user in at once, a token endpoint that checks PKCE) on loopback, and
a real daemon on TCP with TLS. The full flow gives a session of the OIDC
user whose group claim makes it a member of a local group holding a role;
spoiled ID tokens, a replayed or foreign state and a wrong PKCE verifier are
refused, and every outcome is in the audit log. The CLI login (`kvmhost
login --oidc`): its loopback listener gets a one-time grant it trades for a
stored token used by later commands; a replayed grant, a grant without the
CLI's verifier and an expired token are refused; logout revokes. A failed
callback is a page for a browser. No guest boots."""

import http.client
import json
import os
import stat
import subprocess
import time
import urllib.parse

import pytest

import khlib

import oidc_provider  # noqa: E402 (needs python3-cryptography: scripts/install-deps.sh)


@pytest.fixture
def provider():
    p = oidc_provider.Provider()
    yield p
    p.close()


@pytest.fixture
def site(daemons, provider, fake_boot):
    """A daemon with OIDC login at provider; group ops holds Operator on /;
    a stopped VM v1."""
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port,
                extra_args=["--oidc-issuer", provider.issuer, "--oidc-client-id", "kvmhost"])
    root = d.api
    assert root.post("/api/v1/groups", {"name": "ops"}).status == 201
    assert root.request("PUT", "/api/v1/acl",
                        {"path": "/", "subject": "@ops", "role": "Operator"}).status in (200, 201, 204)
    r = root.post("/api/v1/vms", {"name": "v1", "vcpus": 1, "memory_mib": 64,
                                  "boot": fake_boot})
    assert r.status == 201, r
    return d, port, root


def _get(d, port, path, headers=None, method="GET", body=None):
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=d.ssl_context())
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    cookies = r.headers.get_all("Set-Cookie") or []
    res = (r.status, r.getheader("Location"), cookies, json.loads(raw) if raw else None)
    c.close()
    return res


def _cookie(cookies, name):
    for c in cookies:
        k, _, rest = c.partition("=")
        if k == name:
            return rest.split(";")[0]
    return None


def _begin(d, port, provider):
    """/oidc/login, then the provider's authorization endpoint: the callback
    path (with code and state) and the state cookie."""
    st, loc, cookies, _ = _get(d, port, "/api/v1/oidc/login")
    assert st == 302 and loc.startswith(provider.issuer + "/authorize?"), (st, loc)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43, q
    assert q["redirect_uri"] == "https://127.0.0.1:%d/api/v1/oidc/callback" % port, q
    state = _cookie(cookies, "kh_oidc_state")
    assert state == q["state"], cookies
    pc = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=10)
    u = urllib.parse.urlsplit(loc)
    pc.request("GET", u.path + "?" + u.query)
    r = pc.getresponse()
    r.read()
    assert r.status == 302, r.status
    back = urllib.parse.urlsplit(r.getheader("Location"))
    pc.close()
    return back.path + "?" + back.query, state


def _login(d, port, provider):
    cb, state = _begin(d, port, provider)
    return _get(d, port, cb, headers={"Cookie": "kh_oidc_state=" + state}) + (cb, state)


def _audit(root):
    return root.get("/api/v1/audit?path=/api/v1/oidc/").json["entries"]


def test_oidc_login_gives_a_session_with_group_roles(site, provider):
    d, port, root = site
    st, _, _, j = _get(d, port, "/api/v1/session")
    assert st == 200 and j["oidc"] is True and not j["authenticated"], j
    provider.user = {"sub": "alice", "groups": ["ops", "nonexistent"]}
    st, loc, cookies, j, _, _ = _login(d, port, provider)
    assert st == 302 and loc == "/", (st, loc, j)
    sid = _cookie(cookies, "kh_session")
    assert sid, cookies
    ck = {"Cookie": "kh_session=" + sid}
    st, _, _, j = _get(d, port, "/api/v1/session", headers=ck)
    assert j["authenticated"] and j["via"] == "session" and j["principal"] == "oidc.alice", j
    csrf = j["csrf_token"]
    # the user was made (no password), a member of ops only (no group is created)
    u = root.get("/api/v1/users/oidc.alice").json
    assert u["groups"] == ["ops"] and not u["has_password"], u
    assert [g["name"] for g in root.get("/api/v1/groups").json["groups"]] == ["ops"]
    # @ops is Operator on /: power yes (a stopped VM: 409 from the handler), delete no
    w = dict(ck, **{"X-CSRF-Token": csrf})
    st, _, _, j = _get(d, port, "/api/v1/vms/v1/stop", headers=w, method="POST", body={})
    assert st == 409, (st, j)
    st, _, _, j = _get(d, port, "/api/v1/vms/v1", headers=w, method="DELETE")
    assert st == 403 and "VM.Allocate" in j["error"]["message"], (st, j)
    st, _, _, j = _get(d, port, "/api/v1/vms/v1", headers=ck)
    assert st == 200 and j["name"] == "v1", j
    # the next login without the group claim takes the membership away
    provider.user = {"sub": "alice", "groups": []}
    st, loc, cookies, j, _, _ = _login(d, port, provider)
    assert st == 302, j
    assert root.get("/api/v1/users/oidc.alice").json["groups"] == []
    ck2 = {"Cookie": "kh_session=" + _cookie(cookies, "kh_session")}
    st, _, _, j = _get(d, port, "/api/v1/vms/v1", headers=ck2)
    assert st in (403, 404), (st, j)
    log = _audit(root)
    ok = [e for e in log if e["status"] == 302 and e["path"] == "/api/v1/oidc/callback"]
    assert len(ok) == 2 and all(e["principal"] == "oidc.alice" for e in ok), log
    assert "ops" in ok[-1]["detail"], ok


def test_oidc_es256_token_and_user_claim(daemons, provider):
    """An ES256 ID token; the user named by preferred_username in a realm."""
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port,
                extra_args=["--oidc-issuer", provider.issuer + "/", "--oidc-client-id", "kvmhost",
                            "--oidc-user-claim", "preferred_username", "--oidc-realm", "corp"])
    provider.alg = "ES256"
    provider.user = {"sub": "0f1e2d", "preferred_username": "bob", "groups": []}
    st, loc, cookies, j, _, _ = _login(d, port, provider)
    assert st == 302 and _cookie(cookies, "kh_session"), (st, j)
    st, _, _, j = _get(d, port, "/api/v1/session",
                       headers={"Cookie": "kh_session=" + _cookie(cookies, "kh_session")})
    assert j["principal"] == "corp.bob", j
    # a claim that makes no valid user name is refused
    provider.user = {"sub": "x", "preferred_username": "bob smith"}
    st, _, cookies, j, _, _ = _login(d, port, provider)
    assert st == 401 and "valid user name" in j["error"]["message"], (st, j)


@pytest.mark.parametrize("tamper,why", [
    ("signature", "bad signature"),
    ("other-key", "bad signature"),
    ("alg-none", "RS256"),
    ("aud", "aud"),
    ("expired", "exp"),
    ("nonce", "nonce"),
    ("iss", "iss"),
])
def test_oidc_spoiled_id_token_is_refused(site, provider, tamper, why):
    d, port, root = site
    provider.tamper = tamper
    st, loc, cookies, j, _, _ = _login(d, port, provider)
    assert st == 401 and why in j["error"]["message"], (st, j)
    assert _cookie(cookies, "kh_session") is None, cookies
    assert root.get("/api/v1/users/oidc.alice").status == 404
    log = _audit(root)
    assert log[0]["status"] == 401 and why in log[0]["detail"] and log[0]["principal"] is None, log


def test_oidc_replayed_or_foreign_state_and_pkce(site, provider):
    d, port, root = site
    st, _, cookies, j, cb, state = _login(d, port, provider)
    assert st == 302, j
    # the same callback again (state used; the code too)
    st, _, cookies, j = _get(d, port, cb, headers={"Cookie": "kh_oidc_state=" + state})
    assert st == 400 and "already used" in j["error"]["message"], (st, j)
    assert _cookie(cookies, "kh_session") is None
    # a callback whose state is not this browser's (login CSRF)
    cb2, state2 = _begin(d, port, provider)
    st, _, _, j = _get(d, port, cb2, headers={"Cookie": "kh_oidc_state=" + state})
    assert st == 400 and "this browser" in j["error"]["message"], (st, j)
    st, _, _, j = _get(d, port, cb2)
    assert st == 400, (st, j)
    # a wrong PKCE verifier: the provider refuses the code
    provider.verifier_override = "x" * 43
    st, _, cookies, j, _, _ = _login(d, port, provider)
    assert st == 401 and "PKCE" in j["error"]["message"], (st, j)
    assert provider.token_requests[-1] == (400, "invalid_grant")
    assert _cookie(cookies, "kh_session") is None
    # the provider's own refusal (?error=) is a failed login too
    st, _, _, j = _get(d, port, "/api/v1/oidc/callback?error=access_denied&state=x")
    assert st == 401 and "access_denied" in j["error"]["message"], (st, j)
    fails = [(e["status"], e["detail"]) for e in _audit(root) if e["status"] != 302]
    assert [s for s, _ in fails] == [401, 401, 400, 400, 400], fails
    assert all(dt.startswith("oidc login failed") for _, dt in fails), fails


def test_oidc_not_configured(daemons):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port)
    st, _, _, j = _get(d, port, "/api/v1/oidc/login")
    assert st == 404 and "not configured" in j["error"]["message"], (st, j)
    st, _, _, j = _get(d, port, "/api/v1/session")
    assert j["oidc"] is False, j


# ---- CLI login (kvmhost login --oidc): loopback redirect, one-time grant ----

def _cli_env(home):
    env = khlib.sanitizer_env(dict(os.environ, HOME=home))
    for k in ("KVMHOST_SOCKET", "KVMHOST_TOKEN", "KVMHOST_CACERT", "XDG_CONFIG_HOME"):
        env.pop(k, None)
    return env


def _cli(home, *args, timeout=30):
    p = subprocess.run([khlib.CLI_BIN] + list(args), capture_output=True, text=True,
                       timeout=timeout, env=_cli_env(home), stdin=subprocess.DEVNULL)
    khlib.check_sanitizer(p.stderr, "kvmhost %s" % " ".join(args))
    return p


class CliLogin:
    """`kvmhost login --oidc` running; its login URL read from stderr."""

    def __init__(self, d, port, home, timeout=60):
        self.url = "https://127.0.0.1:%d" % port
        self.p = subprocess.Popen([khlib.CLI_BIN, "--cacert", d.tls_cert, "login", "--oidc",
                                   "--host", self.url, "--timeout", str(timeout)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=_cli_env(home), stdin=subprocess.DEVNULL)
        self.err = ""
        self.login_url = None
        deadline = time.time() + 20
        while time.time() < deadline and self.login_url is None:
            line = self.p.stderr.readline()
            if not line:
                break
            self.err += line
            if "/api/v1/oidc/login?" in line:
                self.login_url = line.strip()
        assert self.login_url, self.err

    def finish(self):
        out, err = self.p.communicate(timeout=30)
        self.err += err
        khlib.check_sanitizer(self.err, "kvmhost login")
        return self.p.returncode, out, self.err


def _cli_browser(d, port, provider, login_url):
    """What the browser does for the CLI: the daemon's login URL, the
    provider, the daemon's callback. The loopback URL it is sent to."""
    u = urllib.parse.urlsplit(login_url)
    st, loc, cookies, _ = _get(d, port, u.path + "?" + u.query)
    assert st == 302 and loc.startswith(provider.issuer + "/authorize?"), (st, loc)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    # the provider sees the daemon's own callback, never the loopback
    assert q["redirect_uri"] == "https://127.0.0.1:%d/api/v1/oidc/callback" % port, q
    pc = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=10)
    pu = urllib.parse.urlsplit(loc)
    pc.request("GET", pu.path + "?" + pu.query)
    r = pc.getresponse()
    r.read()
    back = urllib.parse.urlsplit(r.getheader("Location"))
    pc.close()
    st, loc, cookies, j = _get(d, port, back.path + "?" + back.query,
                               headers={"Cookie": "kh_oidc_state=" + _cookie(cookies, "kh_oidc_state")})
    assert st == 302, (st, j)
    assert _cookie(cookies, "kh_session") is None, cookies  # no browser session for the CLI
    return loc


def _loopback(loc):
    """The browser arriving at the CLI's listener: (status, body)."""
    u = urllib.parse.urlsplit(loc)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", u.path + "?" + u.query, headers={"Accept": "text/html"})
    r = c.getresponse()
    res = (r.status, r.read().decode())
    c.close()
    return res


def _grant_post(d, port, grant, verifier):
    return _get(d, port, "/api/v1/oidc/grant", method="POST",
                body={"grant": grant, "verifier": verifier})


def test_oidc_cli_login_stores_a_token_and_logout_revokes_it(site, provider, tmp_path):
    d, port, root = site
    home = str(tmp_path)
    provider.user = {"sub": "alice", "groups": ["ops"]}
    cl = CliLogin(d, port, home)
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(cl.login_url).query))
    assert int(q["cli_port"]) >= 1024 and len(q["cli_challenge"]) == 43, q
    loc = _cli_browser(d, port, provider, cl.login_url)
    lu = urllib.parse.urlsplit(loc)
    assert lu.scheme == "http" and lu.hostname == "127.0.0.1" and lu.port == int(q["cli_port"]), loc
    back = dict(urllib.parse.parse_qsl(lu.query))
    assert back["state"] == q["cli_state"] and len(back["grant"]) == 43, back
    st, body = _loopback(loc)
    assert st == 200 and "logged in" in body, (st, body)
    rc, out, err = cl.finish()
    assert rc == 0 and "as oidc.alice!oidc-cli-" in out, (rc, out, err)
    # stored 0600 in a 0700 folder
    cfg = os.path.join(home, ".config", "kvmhost")
    f = os.path.join(cfg, "login.json")
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    saved = json.load(open(f))
    assert saved["url"] == cl.url and saved["principal"].startswith("oidc.alice!oidc-cli-"), saved
    # later commands use it: no --socket, no token (Operator through @ops)
    p = _cli(home, "--json", "vm", "list")
    assert p.returncode == 0, (p.stdout, p.stderr)
    vms = json.loads(p.stdout)
    assert [v["name"] for v in vms.get("vms", vms)] == ["v1"], vms
    p = _cli(home, "--url", cl.url, "vm", "show", "v1")
    assert p.returncode == 0 and "v1" in p.stdout, p.stderr
    # ...with the user's rights, not more: Operator may not delete
    p = _cli(home, "vm", "delete", "v1")
    assert p.returncode != 0 and "VM.Allocate" in p.stderr, (p.stdout, p.stderr)
    # the grant was single use: replayed, it is refused (with any verifier)
    st, _, _, j = _grant_post(d, port, back["grant"], "v" * 43)
    assert st == 401 and "already used" in j["error"]["message"], (st, j)
    toks = root.get("/api/v1/users/oidc.alice/tokens").json
    names = [t["name"] for t in toks["tokens"]] if isinstance(toks, dict) else [t["name"] for t in toks]
    assert len(names) == 1 and names[0].startswith("oidc-cli-"), toks
    assert any("cli grant" in (e["detail"] or "") for e in _audit(root)), _audit(root)
    # logout revokes the token at the daemon and forgets it here
    p = _cli(home, "logout")
    assert p.returncode == 0 and "revoked" in p.stdout, (p.stdout, p.stderr)
    assert not os.path.exists(f)
    st, _, _, j = _get(d, port, "/api/v1/vms",
                       headers={"Authorization": "Bearer " + saved["token"]})
    assert st == 401, (st, j)
    toks = root.get("/api/v1/users/oidc.alice/tokens").json
    assert not (toks["tokens"] if isinstance(toks, dict) else toks), toks


def test_oidc_cli_grant_needs_the_cli_verifier(site, provider, tmp_path):
    """A grant stolen on its way to the loopback is useless without the
    CLI's verifier, and the try burns it: the CLI's own trade then fails."""
    d, port, root = site
    cl = CliLogin(d, port, str(tmp_path))
    loc = _cli_browser(d, port, provider, cl.login_url)
    grant = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))["grant"]
    st, _, _, j = _grant_post(d, port, grant, "w" * 43)
    assert st == 401 and "verifier" in j["error"]["message"], (st, j)
    _loopback(loc)
    rc, out, err = cl.finish()
    assert rc != 0 and "already used" in err, (rc, out, err)
    assert not os.path.exists(os.path.join(str(tmp_path), ".config", "kvmhost", "login.json"))
    # a login URL with a port the CLI cannot own, or no challenge, is refused
    st, _, _, j = _get(d, port, "/api/v1/oidc/login?cli_port=80&cli_challenge=" + "a" * 43 +
                       "&cli_state=s")
    assert st == 400 and "cli_port" in j["error"]["message"], (st, j)
    st, _, _, j = _get(d, port, "/api/v1/oidc/login?cli_port=40000&cli_state=s")
    assert st == 400 and "cli_challenge" in j["error"]["message"], (st, j)


def test_oidc_cli_failed_login_reaches_the_cli(site, provider, tmp_path):
    d, port, root = site
    provider.tamper = "aud"
    cl = CliLogin(d, port, str(tmp_path))
    loc = _cli_browser(d, port, provider, cl.login_url)
    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    assert "grant" not in back and "aud" in back["error"], back
    st, body = _loopback(loc)
    assert st == 400, (st, body)
    rc, out, err = cl.finish()
    assert rc != 0 and "the login failed" in err and "aud" in err, (rc, out, err)


def test_oidc_cli_token_expires(daemons, provider, tmp_path):
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port,
                extra_args=["--oidc-issuer", provider.issuer, "--oidc-client-id", "kvmhost",
                            "--oidc-cli-ttl", "3"])
    home = str(tmp_path)
    cl = CliLogin(d, port, home)
    _loopback(_cli_browser(d, port, provider, cl.login_url))
    rc, out, err = cl.finish()
    assert rc == 0, (out, err)
    token = json.load(open(os.path.join(home, ".config", "kvmhost", "login.json")))["token"]
    p = _cli(home, "--json", "permissions")
    assert p.returncode == 0, p.stderr
    time.sleep(3.5)
    # the daemon refuses the token (not only the CLI's own check)
    st, _, _, j = _get(d, port, "/api/v1/permissions", headers={"Authorization": "Bearer " + token})
    assert st == 401 and "expired" in j["error"]["message"], (st, j)
    p = _cli(home, "vm", "list")
    assert p.returncode != 0 and "expired" in p.stderr and "kvmhost login --oidc" in p.stderr, p.stderr
    p = _cli(home, "logout")
    assert p.returncode == 0 and "no longer valid" in p.stdout, (p.stdout, p.stderr)


def test_oidc_failed_callback_is_a_page_for_a_browser(site, provider):
    """A browser (Accept: text/html) gets a readable page, escaped; an API
    client still gets the JSON error."""
    d, port, root = site
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=d.ssl_context())
    c.request("GET", "/api/v1/oidc/callback?error=%3Cscript%3Ex&state=x",
              headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    assert r.status == 401 and r.getheader("Content-Type").startswith("text/html"), (r.status, body)
    assert "Sign-in failed" in body and "&lt;script&gt;x" in body and "<script>" not in body, body
    assert "default-src 'none'" in r.getheader("Content-Security-Policy"), r.getheaders()
    assert not body.lstrip().startswith("{"), body
    st, _, _, j = _get(d, port, "/api/v1/oidc/callback?error=access_denied&state=x")
    assert st == 401 and "access_denied" in j["error"]["message"], (st, j)
