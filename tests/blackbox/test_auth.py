"""Users, roles, projects, API tokens and the audit log (issue 12, security
cases 4-12 of the design notes), against a real daemon on TCP: two teams on
one host each see only their own project; an Operator cannot delete; an
Auditor reads everything and changes nothing; a token never does more than
its user; expired and revoked tokens are 401; a cookie write without CSRF is
403; host paths are an Administrator privilege confined to allowed
directories; webhooks to metadata/loopback addresses are refused; every
change is in the append-only audit log. No guest boots (VMs are created,
never started), so the whole file runs in well under a minute."""

import http.client
import json
import os
import sqlite3
import time

import pytest

import khlib


def _tcp_daemon(daemons, **kw):
    # plain HTTP: these tests are about who may do what (TLS: test_http_limits.py)
    kw.setdefault("tls", False)
    port = khlib.free_port()
    d = daemons(listen="127.0.0.1:%d" % port, **kw)
    return d, port


def _api(port, token):
    return khlib.Api(host="127.0.0.1", port=port, token=token)


def _ok(r, *codes):
    assert r.status in (codes or (200, 201, 204)), r
    return r


def _user(root, name, project, role, password=None):
    body = {"name": name, "project": project}
    if password:
        body["password"] = password
    _ok(root.post("/api/v1/users", body), 201)
    if role:
        _ok(root.request("PUT", "/api/v1/acl",
                         {"path": "/projects/" + project, "subject": name, "role": role}))


def _token(root, user, name, acl, expires=None):
    body = {"name": name, "acl": [{"path": p, "role": r} for p, r in acl]}
    if expires:
        body["expires_in_seconds"] = expires
    r = _ok(root.post("/api/v1/users/%s/tokens" % user, body), 201)
    assert r.json["id"] == "%s!%s" % (user, name), r
    return r.json["secret"]


def _vm(api, name, fake_boot, project=None):
    path = "/api/v1/vms" + ("?project=" + project if project else "")
    return api.post(path, {"name": name, "vcpus": 1, "memory_mib": 64, "boot": fake_boot})


@pytest.fixture
def teams(daemons, workdir, fake_boot):
    """Projects x and y; alice (Administrator of x) and bob (Administrator
    of y), each with a token that carries Administrator on / (so it holds
    exactly its user's rights); a VM and a volume per team; a pool shared."""
    d, port = _tcp_daemon(daemons)
    root = d.api
    for p in ("x", "y"):
        _ok(root.post("/api/v1/projects", {"name": p}), 201)
    _user(root, "alice", "x", "Administrator")
    _user(root, "bob", "y", "Administrator")
    pool = os.path.join(workdir, "pool")
    os.mkdir(pool)
    _ok(root.post("/api/v1/pools", {"name": "p", "path": pool}), 201)
    a = _api(port, _token(root, "alice", "cli", [("/", "Administrator")]))
    b = _api(port, _token(root, "bob", "cli", [("/", "Administrator")]))
    _ok(_vm(a, "va", fake_boot), 201)
    _ok(_vm(b, "vb", fake_boot), 201)
    _ok(a.post("/api/v1/pools/p/volumes", {"name": "vola", "size": "1M"}), 201)
    _ok(b.post("/api/v1/pools/p/volumes", {"name": "volb", "size": "1M"}), 201)
    return d, port, root, a, b


def test_two_projects_see_only_their_own(teams, fake_boot):
    d, port, root, a, b = teams
    assert sorted(v["name"] for v in root.get("/api/v1/vms").json["vms"]) == ["va", "vb"]
    assert [v["name"] for v in a.get("/api/v1/vms").json["vms"]] == ["va"]
    assert [v["name"] for v in b.get("/api/v1/vms").json["vms"]] == ["vb"]
    assert [v["name"] for v in a.get("/api/v1/pools/p/volumes").json["volumes"]] == ["vola"]
    # the other team's objects do not exist for alice: 404, never 403
    for method, path, body in [
        ("GET", "/api/v1/vms/vb", None),
        ("PATCH", "/api/v1/vms/vb", {"description": "mine"}),
        ("DELETE", "/api/v1/vms/vb", None),
        ("POST", "/api/v1/vms/vb/start", {}),
        ("GET", "/api/v1/vms/vb/console/log", None),
        ("GET", "/api/v1/vms/vb/snapshots", None),
        ("POST", "/api/v1/vms/vb/template", {}),
        ("GET", "/api/v1/pools/p/volumes/volb", None),
        ("DELETE", "/api/v1/pools/p/volumes/volb", None),
        ("GET", "/api/v1/pools/p/volumes/volb/data", None),
    ]:
        r = a.request(method, path, body)
        assert r.status == 404, (method, path, r)
    # copies of the other team's objects: a linked clone, a VM clone, an attach
    r = a.post("/api/v1/pools/p/volumes", {"name": "stolen", "backing": "p/volb"})
    assert r.status == 404, r
    r = a.post("/api/v1/vms", {"name": "c1", "from_template": "vb"})
    assert r.status == 404, r
    r = a.post("/api/v1/vms/va/disks", {"volume": "p/volb"})
    assert r.status == 404, r
    r = a.post("/api/v1/vms", {"name": "c2", "vcpus": 1, "memory_mib": 64, "boot": fake_boot,
                               "disks": [{"volume": "p/volb"}]})
    assert r.status == 404, r
    # the console WebSocket too (the check runs before the upgrade)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/api/v1/vms/vb/console", headers={
        "Authorization": "Bearer " + a.token, "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert c.getresponse().status == 404
    c.close()
    # taking bob's name fails and leaves his VM in his project
    assert _vm(a, "vb", fake_boot).status == 409
    assert a.get("/api/v1/vms/vb").status == 404 and b.get("/api/v1/vms/vb").status == 200
    # nothing of bob's changed
    assert root.get("/api/v1/vms/vb").json.get("description", "") == ""
    assert root.get("/api/v1/pools/p/volumes/volb").status == 200
    # and alice still manages her own
    _ok(a.request("PATCH", "/api/v1/vms/va", {"description": "mine"}), 200)
    _ok(a.delete("/api/v1/vms/va"), 204)


def test_operator_cannot_delete_auditor_changes_nothing(teams, fake_boot):
    d, port, root, a, b = teams
    _user(root, "olga", "x", "Operator")
    op = _api(port, _token(root, "olga", "t", [("/", "Administrator")]))
    assert [v["name"] for v in op.get("/api/v1/vms").json["vms"]] == ["va"]
    r = op.delete("/api/v1/vms/va")
    assert r.status == 403, r
    msg = r.json["error"]["message"]
    assert "VM.Allocate" in msg and "/vms/va" in msg, msg
    r = op.request("PATCH", "/api/v1/vms/va", {"description": "x"})
    assert r.status == 403 and "VM.Config" in r.json["error"]["message"], r
    r = _vm(op, "new", fake_boot)
    assert r.status == 403 and "VM.Allocate on /projects/x" in r.json["error"]["message"], r
    # an Auditor on /: reads every project and the audit log, changes nothing
    _ok(root.post("/api/v1/users", {"name": "aud"}), 201)
    _ok(root.request("PUT", "/api/v1/acl", {"path": "/", "subject": "aud", "role": "Auditor"}))
    au = _api(port, _token(root, "aud", "t", [("/", "Administrator")]))
    assert sorted(v["name"] for v in au.get("/api/v1/vms").json["vms"]) == ["va", "vb"]
    _ok(au.get("/api/v1/vms/vb"), 200)
    _ok(au.get("/api/v1/pools/p/volumes/volb"), 200)
    _ok(au.get("/api/v1/audit"), 200)
    for method, path, body in [
        ("DELETE", "/api/v1/vms/vb", None),
        ("POST", "/api/v1/vms/va/start", {}),
        ("PATCH", "/api/v1/vms/va", {"description": "x"}),
        ("POST", "/api/v1/pools/p/volumes", {"name": "v9", "size": "1M"}),
        ("POST", "/api/v1/users", {"name": "eve"}),
        ("PUT", "/api/v1/acl", {"path": "/", "subject": "aud", "role": "Administrator"}),
    ]:
        r = au.request(method, path, body)
        assert r.status == 403, (method, path, r)
        assert "needed" in r.json["error"]["message"], r
    assert sorted(v["name"] for v in root.get("/api/v1/vms").json["vms"]) == ["va", "vb"]
    # what the caller may do
    p = op.get("/api/v1/permissions?path=/vms/va").json
    assert "VM.PowerMgmt" in p["privileges"] and "VM.Allocate" not in p["privileges"], p
    p = op.get("/api/v1/permissions").json
    assert p["principal"] == "olga!t" and "VM.Console" in p["paths"]["/projects/x"], p


def test_token_never_more_than_its_user(teams, fake_boot):
    d, port, root, a, b = teams
    # a token with less than alice: Auditor on her project
    ro = _api(port, _token(root, "alice", "ro", [("/projects/x", "Auditor")]))
    _ok(ro.get("/api/v1/vms/va"), 200)
    r = ro.delete("/api/v1/vms/va")
    assert r.status == 403 and "VM.Allocate" in r.json["error"]["message"], r
    # a token asking more than its user (Administrator on /) gets only the user's rights
    _user(root, "olga", "x", "Operator")
    big = _api(port, _token(root, "olga", "big", [("/", "Administrator")]))
    assert big.delete("/api/v1/vms/va").status == 403
    assert big.get("/api/v1/vms/vb").status == 404
    assert big.post("/api/v1/users", {"name": "eve"}).status == 403
    # a token without ACL entries can do nothing
    none = _api(port, _token(root, "alice", "none", []))
    assert none.get("/api/v1/vms").json["vms"] == []
    assert none.get("/api/v1/vms/va").status == 404
    # users cannot raise their own token over themselves either
    r = ro.post("/api/v1/users/alice/tokens", {"name": "t2"})
    assert r.status == 403, r  # a token does not make tokens


def test_expired_and_revoked_tokens_are_401(teams):
    d, port, root, a, b = teams
    short = _api(port, _token(root, "alice", "short", [("/", "Administrator")], expires=1))
    _ok(short.get("/api/v1/vms"), 200)
    time.sleep(1.6)
    r = short.get("/api/v1/vms")
    assert r.status == 401 and "expired" in r.json["error"]["message"], r
    _ok(root.delete("/api/v1/users/alice/tokens/cli"), 204)
    assert a.get("/api/v1/vms").status == 401
    toks = root.get("/api/v1/users/alice/tokens").json["tokens"]
    assert [t["name"] for t in toks] == ["short"] and toks[0]["expired"], toks
    assert all("secret" not in t for t in toks)
    # a wrong secret for a live token, and a deleted user's token
    live = _token(root, "bob", "two", [("/", "Administrator")])
    assert _api(port, live[:-1] + ("0" if live[-1] != "0" else "1")).get("/api/v1/vms").status == 401
    _ok(root.delete("/api/v1/users/bob"), 204)
    assert _api(port, live).get("/api/v1/vms").status == 401
    assert b.get("/api/v1/vms").status == 401


def _req(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, r.getheader("Set-Cookie"), (json.loads(raw) if raw else None)


def test_password_login_session_and_csrf(teams, fake_boot):
    d, port, root, a, b = teams
    _ok(root.request("PATCH", "/api/v1/users/alice", {"password": "correct horse"}), 200)
    st, cookie, j = _req(port, "POST", "/api/v1/session", {"user": "alice", "password": "wrong one"})
    assert st == 401 and cookie is None, j
    st, cookie, j = _req(port, "POST", "/api/v1/session", {"user": "nobody", "password": "wrong one"})
    assert st == 401 and cookie is None, j
    st, cookie, j = _req(port, "POST", "/api/v1/session",
                         {"user": "alice", "password": "correct horse"})
    assert st == 201 and j["principal"] == "alice", j
    ck = {"Cookie": cookie.split(";")[0]}
    csrf = j["csrf_token"]
    st, _, j = _req(port, "GET", "/api/v1/session", headers=ck)
    assert j["principal"] == "alice" and j["via"] == "session", j
    st, _, j = _req(port, "GET", "/api/v1/vms", headers=ck)
    assert st == 200 and [v["name"] for v in j["vms"]] == ["va"], j
    spec = {"name": "w1", "vcpus": 1, "memory_mib": 64, "boot": fake_boot}
    st, _, j = _req(port, "POST", "/api/v1/vms", spec, headers=ck)
    assert st == 403 and "CSRF" in j["error"]["message"], j
    st, _, j = _req(port, "POST", "/api/v1/vms", spec, headers=dict(ck, **{"X-CSRF-Token": csrf}))
    assert st == 201, j
    st, _, j = _req(port, "GET", "/api/v1/vms/vb", headers=ck)
    assert st == 404, j
    # a user may change their own password, not their project
    st, _, j = _req(port, "PATCH", "/api/v1/users/alice", {"project": "y"},
                    headers=dict(ck, **{"X-CSRF-Token": csrf}))
    assert st == 403, j
    # disabling the user ends the session
    _ok(root.request("PATCH", "/api/v1/users/alice", {"enabled": False}), 200)
    st, _, j = _req(port, "GET", "/api/v1/vms", headers=ck)
    assert st == 401, j
    # logins are audited, failures included
    log = root.get("/api/v1/audit?path=/api/v1/session").json["entries"]
    got = [(e["status"], e["detail"]) for e in log]
    assert (401, "login user alice") in got and (401, "login user nobody") in got, got
    assert (201, "login user alice") in got, got
    ok = [e for e in log if e["status"] == 201][0]
    assert ok["principal"] == "alice" and ok["address"] == "127.0.0.1", ok


def test_host_paths_confined(daemons, workdir, fake_boot):
    d, port = _tcp_daemon(daemons, open_policy=False)
    root = d.api
    spec = {"name": "s1", "vcpus": 1, "memory_mib": 64, "boot": fake_boot,
            "disks": [{"path": "/etc/shadow", "format": "raw"}]}
    r = root.post("/api/v1/vms", spec)
    assert r.status == 403 and "/etc/shadow" in r.json["error"]["message"], r
    # a symlink from an allowed place to /etc/shadow is resolved
    link = os.path.join(d.state_dir, "shadow-link")
    os.symlink("/etc/shadow", link)
    spec["disks"] = [{"path": link, "format": "raw"}]
    assert root.post("/api/v1/vms", spec).status == 403
    spec["disks"] = [{"path": d.state_dir + "/../../../etc/shadow", "format": "raw"}]
    assert root.post("/api/v1/vms", spec).status == 403
    for path in ("/", "/etc", "/etc/"):
        r = root.post("/api/v1/pools", {"name": "bad", "path": path})
        assert r.status == 403, (path, r)
    assert [p["name"] for p in root.get("/api/v1/pools").json["pools"]] != ["bad"]
    inside = os.path.join(d.state_dir, "images")
    os.mkdir(inside)
    _ok(root.post("/api/v1/pools", {"name": "ok", "path": inside}), 201)
    r = root.post("/api/v1/pools/ok/volumes", {"name": "v", "import": "/etc/shadow",
                                               "format": "raw"})
    assert r.status == 403, r
    # inside the allowed directories, root may name a host disk
    disk = os.path.join(d.state_dir, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    spec["disks"] = [{"path": disk, "format": "raw"}]
    _ok(root.post("/api/v1/vms", spec), 201)
    # an Administrator of a project has no Sys.HostPath: refused even inside
    _ok(root.post("/api/v1/projects", {"name": "x"}), 201)
    _user(root, "alice", "x", "Administrator")
    a = _api(port, _token(root, "alice", "t", [("/", "Administrator")]))
    spec["name"] = "s2"
    r = a.post("/api/v1/vms", spec)
    assert r.status == 403 and "Sys.HostPath" in r.json["error"]["message"], r
    inside2 = os.path.join(d.state_dir, "images2")
    os.mkdir(inside2)
    assert a.post("/api/v1/pools", {"name": "p2", "path": inside2}).status == 403


def test_webhook_policy(daemons):
    d, port = _tcp_daemon(daemons, open_policy=False)
    for url in ("http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:9/x",
                "http://[::1]/x", "http://localhost/x", "http://[fe80::1]/x",
                "http://0.0.0.0/x"):
        r = d.api.request("PUT", "/api/v1/alerts/rules",
                          {"rules": [], "webhook": {"url": url}})
        assert r.status == 400 and "webhook" in r.json["error"]["message"], (url, r)
    assert d.api.get("/api/v1/alerts").json["webhook"] is None
    r = d.api.request("PUT", "/api/v1/alerts/rules",
                      {"rules": [], "webhook": {"url": "http://192.0.2.10:8080/hook"}})
    assert r.status == 200, r


def test_quota_and_audit_log(teams, fake_boot):
    d, port, root, a, b = teams
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"vms": 2, "memory_mib": 1000}}),
        200)
    _ok(_vm(a, "va2", fake_boot), 201)
    r = _vm(a, "va3", fake_boot)
    assert r.status == 403 and "quota of project x" in r.json["error"]["message"], r
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"memory_mib": 150}}), 200)
    r = a.post("/api/v1/vms", {"name": "big", "vcpus": 1, "memory_mib": 64, "boot": fake_boot})
    assert r.status == 403 and "MiB" in r.json["error"]["message"], r
    assert root.delete("/api/v1/projects/x").status == 409  # objects belong to it
    # disk: the capacities of the project's volumes (vola has 1 MiB)
    _ok(root.request("PATCH", "/api/v1/projects/x", {"quota": {"disk_bytes": 3 << 20}}), 200)
    _ok(a.post("/api/v1/pools/p/volumes", {"name": "vola2", "size": "1M"}), 201)
    r = a.post("/api/v1/pools/p/volumes", {"name": "vola3", "size": "2M"})
    assert r.status == 403 and "bytes of disk" in r.json["error"]["message"], r
    _ok(b.post("/api/v1/pools/p/volumes", {"name": "volb2", "size": "2M"}), 201)  # y: no quota
    r = a.post("/api/v1/pools/p/volumes/vola/resize", {"size": "4M"})
    assert r.status == 403 and "quota of project x" in r.json["error"]["message"], r
    _ok(a.post("/api/v1/pools/p/volumes/vola/resize", {"size": "2M"}), 200)
    # every change is in the audit log, with who, from where, what and the result
    log = root.get("/api/v1/audit?limit=1000").json["entries"]
    assert all(e["method"] != "GET" for e in log)
    def has(principal, method, path, status):
        return any(e["principal"] == principal and e["method"] == method and
                   e["path"] == path and e["status"] == status for e in log)
    assert has("root@local", "POST", "/api/v1/projects", 201)
    assert has("alice!cli", "POST", "/api/v1/vms", 201)
    assert has("bob!cli", "POST", "/api/v1/pools/p/volumes", 201)
    assert has("alice!cli", "POST", "/api/v1/vms", 403)
    made = [e for e in log if e["principal"] == "alice!cli" and e["status"] == 201
            and e["path"] == "/api/v1/vms"]
    assert {e["object"] for e in made} == {"vm va", "vm va2"}, made
    assert all(e["address"] == "127.0.0.1" for e in made)
    # filters and paging
    page = root.get("/api/v1/audit?principal=alice!cli&limit=2").json
    assert len(page["entries"]) == 2 and page["next_before"], page
    more = root.get("/api/v1/audit?principal=alice!cli&before=%d" % page["next_before"]).json
    assert more["entries"] and all(e["id"] < page["next_before"] for e in more["entries"])
    # a team member cannot read it; the CLI shows it
    assert a.get("/api/v1/audit").status == 403
    out = khlib.cli(d, "audit", "--principal", "alice!cli").stdout
    assert "alice!cli" in out and "/api/v1/vms" in out, out
    # append-only: the database refuses to change or remove entries
    db = sqlite3.connect(os.path.join(d.state_dir, "kvmhost.db"), timeout=10)
    for sql in ("UPDATE auth_audit SET status = 200", "DELETE FROM auth_audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    db.close()


def test_cli_users_and_tokens(daemons):
    d, port = _tcp_daemon(daemons)
    p = khlib.cli(d, "project", "add", "x", "--vms", "3")
    assert p.returncode == 0, p.stderr
    p = khlib.cli(d, "user", "add", "carol", "--password-stdin", "--project", "x",
                  input="a long password\n")
    assert p.returncode == 0, p.stderr
    p = khlib.cli(d, "acl", "set", "/projects/x", "--subject", "carol", "--role", "Operator")
    assert p.returncode == 0, p.stderr
    p = khlib.cli(d, "token", "add", "carol", "ci", "--acl", "/=Administrator", json_out=True)
    assert p.returncode == 0, p.stderr
    secret = json.loads(p.stdout)["secret"]
    assert "carol" in khlib.cli(d, "user", "list").stdout
    out = khlib.cli(d, "acl", "list").stdout
    assert "carol!ci" in out and "Operator" in out, out
    r = _api(port, secret).get("/api/v1/permissions")
    assert r.json["principal"] == "carol!ci", r
    p = khlib.cli(d, "token", "delete", "carol", "ci")
    assert p.returncode == 0, p.stderr
    assert _api(port, secret).get("/api/v1/vms").status == 401


def test_events_and_security_groups_per_project(teams, fake_boot):
    d, port, root, a, b = teams
    ev_a = khlib.SSE(("127.0.0.1", port), headers={"Authorization": "Bearer " + a.token})
    ev_root = khlib.SSE(d.socket)
    try:
        assert ev_a.status == 200 and ev_root.status == 200
        _ok(_vm(b, "vb2", fake_boot), 201)
        _ok(_vm(a, "va2", fake_boot), 201)
        # root sees both; alice only her project's VM, in order
        assert ev_root.read_until(lambda e: e["data"].get("vm") == "va2", timeout=10)
        seen = []
        got = ev_a.read_until(lambda e: seen.append(e["data"].get("vm")) or
                              e["data"].get("vm") == "va2", timeout=10)
        assert got, seen
        assert "vb2" not in seen and "vb" not in seen, seen
    finally:
        ev_a.close()
        ev_root.close()
    # security groups: a PUT of a new group creates it in the caller's project
    sg = {"name": "sga", "rules": [{"direction": "in", "proto": "tcp", "ports": "22"}]}
    r = a.request("PUT", "/api/v1/security-groups/sga", sg)
    assert r.status in (200, 201), r
    assert b.get("/api/v1/security-groups/sga").status == 404
    assert b.request("PUT", "/api/v1/security-groups/sga", dict(sg, rules=[])).status == 404
    assert b.delete("/api/v1/security-groups/sga").status == 404
    assert [g["name"] for g in b.get("/api/v1/security-groups").json["security_groups"]] == []
    assert [g["name"] for g in a.get("/api/v1/security-groups").json["security_groups"]] == ["sga"]
    assert len(root.get("/api/v1/security-groups/sga").json["rules"]) == 1


def test_names_paths_and_mass_assignment_refused(teams, fake_boot):
    """Security cases 4 and 11: names and ACL paths with ../ or other
    characters are 400 and change nothing; a PATCH or create cannot set an
    owner or project, a user cannot PATCH their name or groups."""
    d, port, root, a, b = teams
    for path, body in [
        ("/api/v1/users", {"name": "../x"}),
        ("/api/v1/users", {"name": "root"}),
        ("/api/v1/users", {"name": "a!b"}),
        ("/api/v1/users", {"name": "x", "project": "../y"}),
        ("/api/v1/groups", {"name": "../g"}),
        ("/api/v1/projects", {"name": "x/../y"}),
        ("/api/v1/users/alice/tokens", {"name": "../t"}),
        ("/api/v1/users/alice/tokens", {"name": "t", "acl": [{"path": "/../", "role": "Auditor"}]}),
        ("/api/v1/users/alice/tokens", {"name": "t2", "acl": [{"path": "/", "role": "God"}]}),
    ]:
        r = root.post(path, body)
        assert r.status == 400, (path, body, r)
    for body in [{"path": "/vms/../etc", "subject": "alice", "role": "Auditor"},
                 {"path": "/", "subject": "../alice", "role": "Auditor"},
                 {"path": "/", "subject": "alice", "role": "../Administrator"},
                 {"path": "/", "subject": "alice", "role": "Auditor", "owner": "bob"}]:
        r = root.request("PUT", "/api/v1/acl", body)
        assert r.status == 400, (body, r)
    r = root.request("PUT", "/api/v1/roles/..", {"privileges": ["VM.Audit"]})
    assert r.status in (400, 404), r
    r = root.request("PUT", "/api/v1/roles/evil", {"privileges": ["Root.All"]})
    assert r.status == 400, r
    assert [u["name"] for u in root.get("/api/v1/users").json["users"]] == ["alice", "bob"]
    assert len(root.get("/api/v1/acl").json["acl"]) == 4  # the fixture's entries only
    assert [t["name"] for t in root.get("/api/v1/users/alice/tokens").json["tokens"]] == ["cli"]
    # mass assignment: owner, project, raw arguments are not fields
    for body in [{"project": "y"}, {"owner": "bob"}, {"qemu_args": ["-S"]}]:
        r = a.request("PATCH", "/api/v1/vms/va", body)
        assert r.status == 400, (body, r)
    r = a.post("/api/v1/vms", {"name": "m1", "vcpus": 1, "memory_mib": 64, "boot": fake_boot,
                               "project": "y"})
    assert r.status == 400, r
    for body in [{"name": "bob"}, {"groups": ["admins"]}, {"role": "Administrator"}]:
        r = root.request("PATCH", "/api/v1/users/alice", body)
        assert r.status == 400, (body, r)
    assert [v["name"] for v in b.get("/api/v1/vms").json["vms"]] == ["vb"]
