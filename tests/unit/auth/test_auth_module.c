/* The auth module against a real SQLite store: privilege names and roles,
 * name/path/subject syntax, ACL chains and effective rights (groups,
 * propagation, projects, tokens never above their user), API tokens
 * (expiry, revocation), passwords, the append-only audit log, host-path
 * confinement (symlinks, ..) and the internal-address policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kh_test.h"
#include <sqlite3.h>

#include "auth/auth.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-auth-XXXXXX";

static void test_privs(void)
{
    CHECK(kh_privs_parse("VM.PowerMgmt") == KH_PRIV_VM_POWERMGMT);
    CHECK(kh_privs_parse("VM.Nope") == 0);
    CHECK_STR(kh_privs_name(KH_PRIV_SYS_HOSTPATH), "Sys.HostPath");
    CHECK(kh_privs_name(KH_PRIV_SYS_AUDIT | KH_PRIV_VM_AUDIT) == NULL);
    for (unsigned i = 0; i < KH_PRIV_COUNT; i++)
        CHECK(kh_privs_parse(kh_privs_name(1u << i)) == (1u << i));
    kh_privs p = 0;
    CHECK(kh_privs_builtin("Administrator", &p) && p == KH_PRIV_ALL);
    CHECK(kh_privs_builtin("Operator", &p) && (p & KH_PRIV_VM_POWERMGMT) &&
          (p & KH_PRIV_VM_CONSOLE) && !(p & KH_PRIV_VM_ALLOCATE) && !(p & KH_PRIV_SYS_HOSTPATH));
    CHECK(kh_privs_builtin("Auditor", &p) && (p & KH_PRIV_SYS_AUDIT) &&
          !(p & (KH_PRIV_VM_POWERMGMT | KH_PRIV_VM_ALLOCATE | KH_PRIV_PERMISSIONS_MODIFY)));
    CHECK(!kh_privs_builtin("administrator", &p));
    json_t *a = json_pack("[s,s]", "VM.Audit", "Sys.Audit");
    kh_err err = KH_ERR_INIT;
    CHECK(kh_privs_from_json(a, &p, &err) == 0 && p == (KH_PRIV_VM_AUDIT | KH_PRIV_SYS_AUDIT));
    json_array_append_new(a, json_string("Root.Everything"));
    kh_err_clear(&err);
    CHECK(kh_privs_from_json(a, &p, &err) < 0 && err.code == KH_E_INVALID);
    json_decref(a);
    CHECK(kh_privs_name_ok("alice") && kh_privs_name_ok("team_x.1-b"));
    CHECK(!kh_privs_name_ok("") && !kh_privs_name_ok(".x") && !kh_privs_name_ok("a b") &&
          !kh_privs_name_ok("a!b") && !kh_privs_name_ok("a@b") && !kh_privs_name_ok("a/b"));
    CHECK(kh_privs_path_ok("/") && kh_privs_path_ok("/vms/web1") &&
          kh_privs_path_ok("/pools/p/volumes/v"));
    CHECK(!kh_privs_path_ok("") && !kh_privs_path_ok("vms") && !kh_privs_path_ok("/vms/") &&
          !kh_privs_path_ok("/vms/../x") && !kh_privs_path_ok("//x"));
    CHECK(kh_privs_subject_ok("alice") && kh_privs_subject_ok("@ops") &&
          kh_privs_subject_ok("alice!ci"));
    CHECK(!kh_privs_subject_ok("@") && !kh_privs_subject_ok("!ci") &&
          !kh_privs_subject_ok("alice!") && !kh_privs_subject_ok("a!b!c"));
}

static kh_privs eff(kh_store *st, const char *who, const char *path)
{
    kh_privs p = 0xdead;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_acl_effective_path(st, who, path, &p, &err) == 0);
    return p;
}

static void test_acl(kh_store *st)
{
    kh_err err = KH_ERR_INIT;
    CHECK(kh_projects_add(st, "x", NULL, &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_projects_add(st, "x", NULL, &err) < 0 && err.code == KH_E_CONFLICT);
    CHECK(kh_users_add(st, "alice", "a password", "x", &err) == 0);
    CHECK(kh_users_add(st, "bob", NULL, NULL, &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_users_add(st, "root", NULL, NULL, &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_users_add(st, "carol", NULL, "nope", &err) < 0 && err.code == KH_E_INVALID);
    CHECK(kh_users_group_add(st, "ops", &err) == 0);
    CHECK(kh_users_group_member(st, "ops", "bob", true, &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_users_group_member(st, "ops", "ghost", true, &err) < 0);
    kh_err_clear(&err);
    /* objects: va in x, vd unrecorded (default) */
    CHECK(kh_projects_object_set(st, "vm", "va", "x", &err) == 0);
    CHECK(kh_projects_object_set(st, "volume", "p/v1", "x", &err) == 0);
    kh_acl_chain c;
    CHECK(kh_acl_chain_make(st, "/vms/va", &c, &err) == 0);
    CHECK(c.n == 3 && strcmp(c.path[1], "/projects/x") == 0 && strcmp(c.path[2], "/") == 0 &&
          strcmp(c.project, "x") == 0);
    kh_acl_chain_clear(&c);
    CHECK(kh_acl_chain_make(st, "/pools/p/volumes/v1", &c, &err) == 0);
    CHECK(c.n == 3 && strcmp(c.path[1], "/projects/x") == 0);
    kh_acl_chain_clear(&c);
    CHECK(kh_acl_chain_make(st, "/hosts/h1", &c, &err) == 0);
    CHECK(c.n == 3 && strcmp(c.path[1], "/hosts") == 0 && strcmp(c.path[2], "/") == 0 &&
          !c.project);
    kh_acl_chain_clear(&c);

    CHECK(eff(st, "alice", "/vms/va") == 0);
    CHECK(kh_acl_set(st, "/projects/x", "alice", "Operator", true, &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_acl_set(st, "/projects/x", "alice", "NoSuchRole", true, &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_acl_set(st, "/projects/x/../", "alice", "Operator", true, &err) < 0);
    kh_privs op = 0;
    kh_privs_builtin("Operator", &op);
    CHECK(eff(st, "alice", "/vms/va") == op);
    CHECK(eff(st, "alice", "/vms/vd") == 0); /* default project */
    CHECK(eff(st, "alice", "/pools/p/volumes/v1") == op);
    CHECK(eff(st, KH_AUTH_ROOT, "/vms/vd") == KH_PRIV_ALL);
    CHECK(eff(st, NULL, "/vms/va") == 0);
    /* without propagate, an entry on /projects/x covers only that path */
    CHECK(kh_acl_set(st, "/projects/x", "@ops", "Auditor", false, &err) == 0);
    CHECK(eff(st, "bob", "/vms/va") == 0);
    CHECK(eff(st, "bob", "/projects/x") != 0);
    CHECK(kh_acl_set(st, "/", "@ops", "Auditor", true, &err) == 0);
    kh_privs aud = 0;
    kh_privs_builtin("Auditor", &aud);
    CHECK(eff(st, "bob", "/vms/vd") == aud);
    /* custom roles */
    CHECK(kh_acl_role_put(st, "Snapper", KH_PRIV_VM_SNAPSHOT, &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_acl_role_put(st, "Operator", 0, &err) < 0 && err.code == KH_E_CONFLICT);
    CHECK(kh_acl_set(st, "/vms/va", "bob", "Snapper", true, &err) == 0);
    CHECK(eff(st, "bob", "/vms/va") == (aud | KH_PRIV_VM_SNAPSHOT));
    kh_err_clear(&err);
    CHECK(kh_acl_role_delete(st, "Snapper", &err) < 0 && err.code == KH_E_CONFLICT);
    /* tokens: the intersection with the user's rights */
    char secret[256];
    CHECK(kh_tokens_create(st, "alice", "ci", 0, NULL, secret, sizeof(secret), &err) == 0);
    CHECK(strncmp(secret, "alice!ci:", 9) == 0 && strlen(secret) == 9 + 64);
    CHECK(eff(st, "alice!ci", "/vms/va") == 0);
    CHECK(kh_acl_set(st, "/", "alice!ci", "Administrator", true, &err) == 0);
    CHECK(eff(st, "alice!ci", "/vms/va") == op);
    CHECK(eff(st, "alice!ci", "/vms/vd") == 0);
    CHECK(kh_acl_set(st, "/vms/va", "alice!ci", "Auditor", true, &err) == 0);
    CHECK(kh_acl_delete(st, "/", "alice!ci", "Administrator", &err) == 0);
    CHECK(eff(st, "alice!ci", "/vms/va") == (op & aud));
    char who[160];
    const char *why = NULL;
    CHECK(kh_tokens_verify(st, secret, 100, who, sizeof(who), &why) && strcmp(who, "alice!ci") == 0);
    secret[strlen(secret) - 1] ^= 1;
    CHECK(!kh_tokens_verify(st, secret, 100, who, sizeof(who), &why));
    CHECK(!kh_tokens_verify(st, "alice!ci", 100, who, sizeof(who), &why));
    CHECK(!kh_tokens_verify(st, "alice!ci:", 100, who, sizeof(who), &why));
    CHECK(!kh_tokens_verify(st, "!:x", 100, who, sizeof(who), &why));
    char s2[256];
    CHECK(kh_tokens_create(st, "alice", "short", 50, NULL, s2, sizeof(s2), &err) == 0);
    CHECK(kh_tokens_verify(st, s2, 49, who, sizeof(who), &why));
    CHECK(!kh_tokens_verify(st, s2, 51, who, sizeof(who), &why) && strstr(why, "expired"));
    kh_err_clear(&err);
    CHECK(kh_tokens_create(st, "alice", "short", 0, NULL, s2, sizeof(s2), &err) < 0 &&
          err.code == KH_E_CONFLICT);
    kh_err_clear(&err);
    CHECK(kh_tokens_create(st, "ghost", "t", 0, NULL, s2, sizeof(s2), &err) < 0);
    CHECK(kh_tokens_delete(st, "alice", "short", &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_tokens_delete(st, "alice", "short", &err) < 0 && err.code == KH_E_NOTFOUND);
    /* passwords; disabled users hold nothing */
    CHECK(kh_users_verify(st, "alice", "a password"));
    CHECK(!kh_users_verify(st, "alice", "A password"));
    CHECK(!kh_users_verify(st, "bob", "a password")); /* no password */
    CHECK(!kh_users_verify(st, "ghost", "a password"));
    CHECK(kh_users_update(st, "alice", NULL, NULL, 0, &err) == 0);
    CHECK(!kh_users_verify(st, "alice", "a password"));
    CHECK(eff(st, "alice", "/vms/va") == 0);
    CHECK(kh_users_update(st, "alice", "new password", NULL, 1, &err) == 0);
    CHECK(kh_users_verify(st, "alice", "new password"));
    kh_err_clear(&err);
    CHECK(kh_users_update(st, "alice", "short", NULL, -1, &err) < 0);
    /* deleting a user takes their tokens and entries */
    CHECK(kh_users_delete(st, "alice", &err) == 0);
    CHECK(!kh_tokens_verify(st, secret, 100, who, sizeof(who), &why));
    json_t *acl = kh_acl_json(st, &err);
    size_t i;
    json_t *e;
    json_array_foreach(acl, i, e)
        CHECK(strncmp(json_string_value(json_object_get(e, "subject")), "alice", 5) != 0);
    json_decref(acl);
    /* projects */
    kh_err_clear(&err);
    CHECK(kh_projects_delete(st, "x", &err) < 0 && err.code == KH_E_CONFLICT);
    kh_err_clear(&err);
    CHECK(kh_projects_delete(st, "default", &err) < 0);
    CHECK(kh_projects_object_forget(st, "vm", "va", &err) == 0);
    CHECK(kh_projects_object_forget(st, "volume", "p/v1", &err) == 0);
    CHECK(kh_projects_delete(st, "x", &err) == 0);
    kh_err_clear(&err);
}

static void test_audit(kh_store *st, const char *path)
{
    kh_err err = KH_ERR_INIT;
    for (int i = 0; i < 5; i++) {
        kh_audit_entry e = { .principal = i % 2 ? "alice" : NULL, .address = "127.0.0.1",
                             .method = "POST", .path = "/api/v1/vms", .object = "vm a",
                             .status = 200 + (unsigned)i };
        CHECK(kh_audit_add(st, &e, 1000 + i, &err) == 0);
    }
    kh_audit_filter f = { .principal = "alice" };
    json_t *r = kh_audit_query(st, &f, &err);
    CHECK(r && json_array_size(json_object_get(r, "entries")) == 2);
    json_decref(r);
    kh_audit_filter g = { .limit = 2 };
    r = kh_audit_query(st, &g, &err);
    json_int_t next = json_integer_value(json_object_get(r, "next_before"));
    CHECK(json_array_size(json_object_get(r, "entries")) == 2 && next > 0);
    json_decref(r);
    g.before_id = next;
    g.limit = 10;
    r = kh_audit_query(st, &g, &err);
    CHECK(json_array_size(json_object_get(r, "entries")) == 3 &&
          json_is_null(json_object_get(r, "next_before")));
    json_decref(r);
    /* append-only: another connection cannot change or remove entries */
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char *msg = NULL;
    CHECK(sqlite3_exec(db, "UPDATE auth_audit SET status = 0", NULL, NULL, &msg) != SQLITE_OK &&
          msg && strstr(msg, "append-only"));
    sqlite3_free(msg);
    msg = NULL;
    CHECK(sqlite3_exec(db, "DELETE FROM auth_audit", NULL, NULL, &msg) != SQLITE_OK);
    sqlite3_free(msg);
    sqlite3_close(db);
}

/* The KH-Forwarded header: made by the forwarding host, read by the owner
 * for its audit; a hostile value names nobody. */
static void test_forwarded(void)
{
    char who[300];
    char *h = kh_audit_forwarded_header("h1", "alice@local!ci");
    CHECK(strcmp(h, "KH-Forwarded: for=alice@local!ci; host=h1") == 0);
    CHECK(kh_audit_forwarded_for(h + strlen("KH-Forwarded: "), who, sizeof(who)) &&
          strcmp(who, "alice@local!ci via h1") == 0);
    free(h);
    h = kh_audit_forwarded_header("h1", "eve\r\nX-Evil: 1");
    CHECK(strcmp(h, "KH-Forwarded: host=h1") == 0);
    CHECK(!kh_audit_forwarded_for("host=h1", who, sizeof(who)));
    free(h);
    h = kh_audit_forwarded_header("bad host", NULL);
    CHECK(strcmp(h, "KH-Forwarded: host=?") == 0);
    free(h);
    CHECK(!kh_audit_forwarded_for("1", who, sizeof(who)));
    CHECK(!kh_audit_forwarded_for(NULL, who, sizeof(who)));
    CHECK(!kh_audit_forwarded_for("for=a b; host=h1", who, sizeof(who)));
    CHECK(kh_audit_forwarded_for("host=h2;for=bob", who, sizeof(who)) &&
          strcmp(who, "bob via h2") == 0);
    CHECK(kh_audit_forwarded_for("for=bob; host=<h>", who, sizeof(who)) &&
          strcmp(who, "bob via ?") == 0);
}

static void test_hostpath(void)
{
    kh_err err = KH_ERR_INIT;
    char *allowed = xasprintf("%s/ok", dir);
    CHECK(mkdir(allowed, 0755) == 0);
    const char *dirs[] = { allowed, "/var/lib/kvmhost/images" };
    char *in = xasprintf("%s/disk.raw", allowed);
    char *deep = xasprintf("%s/new/sub/disk.raw", allowed);
    char *climb = xasprintf("%s/../ok2/x", allowed);
    char *climb2 = xasprintf("%s/new/../../x", allowed);
    char *link = xasprintf("%s/shadow", allowed);
    char *sibling = xasprintf("%s/ok-not", dir);
    CHECK(symlink("/etc/shadow", link) == 0);
    CHECK(kh_hostpath_check(dirs, 2, in, "disk", &err) == 0);
    CHECK(kh_hostpath_check(dirs, 2, deep, "disk", &err) == 0);
    CHECK(kh_hostpath_check(dirs, 2, allowed, "pool", &err) == 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, "/etc/shadow", "disk", &err) < 0 &&
          err.code == KH_E_FORBIDDEN && strstr(err.msg, "/etc/shadow"));
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, "/", "pool", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, "/etc", "pool", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, link, "disk", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, climb, "disk", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, climb2, "disk", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 2, sibling, "disk", &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_check(dirs, 0, in, "disk", &err) < 0);
    free(in);
    free(deep);
    free(climb);
    free(climb2);
    free(link);
    free(sibling);
    free(allowed);

    CHECK(kh_hostpath_addr_internal("169.254.169.254") && kh_hostpath_addr_internal("127.0.0.1") &&
          kh_hostpath_addr_internal("0.0.0.0") && kh_hostpath_addr_internal("::1") &&
          kh_hostpath_addr_internal("fe80::1") && kh_hostpath_addr_internal("::ffff:127.0.0.1") &&
          kh_hostpath_addr_internal("fd00:ec2::254"));
    CHECK(!kh_hostpath_addr_internal("192.0.2.1") && !kh_hostpath_addr_internal("10.0.0.1") &&
          !kh_hostpath_addr_internal("2001:db8::1") && !kh_hostpath_addr_internal("example"));
    kh_err_clear(&err);
    CHECK(kh_hostpath_url_check("169.254.169.254", false, &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_url_check("[::1]", false, &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_url_check("LOCALHOST", false, &err) < 0);
    kh_err_clear(&err);
    CHECK(kh_hostpath_url_check("a.localhost", false, &err) < 0);
    CHECK(kh_hostpath_url_check("169.254.169.254", true, &err) == 0);
    CHECK(kh_hostpath_url_check("192.0.2.7", false, &err) == 0);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    kh_err err = KH_ERR_INIT;
    CHECK(kh_users_init(&err) == 0);
    char *path = xasprintf("%s/db", dir);
    kh_store *st = kh_store_open(path, &err);
    CHECK(st != NULL);
    RUN(test_privs);
    if (st) {
        test_acl(st);
        test_audit(st, path);
        test_forwarded();
        kh_store_close(st);
    }
    RUN(test_hostpath);
    free(path);
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
