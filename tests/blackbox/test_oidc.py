"""OIDC login (issue 12, item 1) against a test-only provider
(oidc_provider.py: discovery, JWKS, an authorization endpoint that logs a
preset user in at once, a token endpoint that checks PKCE) on loopback, and
a real daemon on TCP with TLS. The full flow gives a session of the OIDC
user whose group claim makes it a member of a local group holding a role;
spoiled ID tokens, a replayed or foreign state and a wrong PKCE verifier are
refused, and every outcome is in the audit log. No guest boots."""

import http.client
import json
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
