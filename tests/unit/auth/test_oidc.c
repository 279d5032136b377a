/* auth/oidc.c without a provider: its configuration checks, the local user
 * a token's claims map to, the provisioning of that user and its group
 * memberships in a real SQLite store, and the refusals that need no network
 * (unknown state, a token that is no JWS or uses alg "none"), the CLI
 * login's URL parameters, loopback redirect and one-time grants. The flow
 * against a provider is tests/blackbox/test_oidc.py. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kh_test.h"

#include "auth/auth.h"
#include "auth/oidc.h"
#include "util/fs.h"
#include "util/mem.h"

static char dir[] = "/tmp/kh-oidc-XXXXXX";

static void test_config(void)
{
    kh_err err = KH_ERR_INIT;
    kh_oidc_config c = { .issuer = "ftp://idp", .client_id = "x" };
    CHECK(kh_oidc_new(&c, &err) == NULL && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    c.issuer = "https://idp.example/";
    c.client_id = "";
    CHECK(kh_oidc_new(&c, &err) == NULL && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    c.client_id = "kvmhost";
    c.realm = "bad realm";
    CHECK(kh_oidc_new(&c, &err) == NULL && err.code == KH_E_INVALID);
    kh_err_clear(&err);
    c.realm = NULL;
    kh_oidc *o = kh_oidc_new(&c, &err);
    CHECK(o != NULL);
    CHECK(strcmp(kh_oidc_name(o), "idp.example") == 0 && kh_oidc_cli_ttl(o) == 43200);
    kh_oidc_free(o);
    kh_oidc_free(NULL);
    c.name = "Corp SSO";
    c.cli_ttl_s = 60;
    o = kh_oidc_new(&c, &err);
    CHECK(o && strcmp(kh_oidc_name(o), "Corp SSO") == 0 && kh_oidc_cli_ttl(o) == 60);
    kh_oidc_free(o);
}

/* The CLI parameters of a login URL: only a loopback port of the CLI's,
 * a S256 challenge and a short state; the redirect is always to 127.0.0.1. */
static void test_cli_parse(void)
{
    kh_err err = KH_ERR_INIT;
    kh_oidc_cli cli;
    const char *ch = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    CHECK(kh_oidc_cli_parse(NULL, NULL, NULL, &cli, &err) == 0 && cli.port == 0);
    static const char *const bad[][3] = {
        { "80", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "s" },
        { "65536", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "s" },
        { "8080x", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "s" },
        { "08080", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "s" },
        { "8080", "short", "s" },
        { "8080", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "" },
        { "8080", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "a&b=c" },
        { "8080", NULL, "s" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(kh_oidc_cli_parse(bad[i][0], bad[i][1], bad[i][2], &cli, &err) == -1 &&
              err.code == KH_E_INVALID);
        kh_err_clear(&err);
    }
    CHECK(kh_oidc_cli_parse("40123", ch, "st-1", &cli, &err) == 0 && cli.port == 40123);
    char *u = kh_oidc_cli_redirect(&cli, "GRANT", NULL);
    CHECK(strcmp(u, "http://127.0.0.1:40123/callback?state=st-1&grant=GRANT") == 0);
    free(u);
    u = kh_oidc_cli_redirect(&cli, NULL, "no & go");
    CHECK(strcmp(u, "http://127.0.0.1:40123/callback?state=st-1&error=no%20%26%20go") == 0);
    free(u);
}

/* One-time grants: single use, expiry, bound to the verifier's challenge. */
static void test_grants(void)
{
    kh_err err = KH_ERR_INIT;
    kh_oidc_config c = { .issuer = "https://idp.example", .client_id = "kvmhost" };
    kh_oidc *o = kh_oidc_new(&c, &err);
    kh_oidc_cli cli;
    /* a verifier and its S256 challenge (base64url of SHA-256, by Python) */
    const char *ver = "dBjftJeZ4CVP-mJ92K9nWmFVXp0w1dpY9RV6QT0bnYE";
    CHECK(kh_oidc_cli_parse("40123", "qrFon0nDzxoP2I8UN6XY-1HQ52bRvwVQGPerZELXL24", "s", &cli,
                            &err) == 0);
    char g[48], user[80];
    CHECK(kh_oidc_grant_new(o, "oidc.alice", &cli, 1000, g, &err) == 0 && strlen(g) == 43);
    CHECK(kh_oidc_grant_take(o, g, ver, 1000 + KH_OIDC_GRANT_TTL_MS - 1, user, sizeof(user),
                             &err) == 0 && strcmp(user, "oidc.alice") == 0);
    /* replayed */
    CHECK(kh_oidc_grant_take(o, g, ver, 1001, user, sizeof(user), &err) == -1 &&
          err.code == KH_E_UNAUTHORIZED && strstr(err.msg, "already used"));
    kh_err_clear(&err);
    /* expired */
    CHECK(kh_oidc_grant_new(o, "oidc.alice", &cli, 1000, g, &err) == 0);
    CHECK(kh_oidc_grant_take(o, g, ver, 1000 + KH_OIDC_GRANT_TTL_MS, user, sizeof(user),
                             &err) == -1 && err.code == KH_E_UNAUTHORIZED);
    kh_err_clear(&err);
    /* a wrong verifier burns the grant */
    CHECK(kh_oidc_grant_new(o, "oidc.alice", &cli, 1000, g, &err) == 0);
    CHECK(kh_oidc_grant_take(o, g, "x234567890123456789012345678901234567890123", 1001, user,
                             sizeof(user), &err) == -1 && strstr(err.msg, "verifier"));
    kh_err_clear(&err);
    CHECK(kh_oidc_grant_take(o, g, ver, 1002, user, sizeof(user), &err) == -1 &&
          strstr(err.msg, "already used"));
    kh_err_clear(&err);
    /* garbage */
    CHECK(kh_oidc_grant_take(o, "nope", ver, 1002, user, sizeof(user), &err) == -1);
    kh_err_clear(&err);
    kh_oidc_free(o);
}

static void test_user_and_refusals(kh_store *st)
{
    kh_err err = KH_ERR_INIT;
    kh_oidc_config c = { .issuer = "http://127.0.0.1:1", .client_id = "kvmhost" };
    kh_oidc *o = kh_oidc_new(&c, &err);
    CHECK(o != NULL);
    if (!o)
        return;
    char user[KH_AUTH_NAME_MAX + 1];
    json_t *cl = json_pack("{s:s,s:[s,s]}", "sub", "alice", "groups", "ops", "ghosts");
    CHECK(kh_oidc_user(o, cl, user, sizeof(user), &err) == 0);
    CHECK_STR(user, "oidc.alice");
    json_t *bad = json_pack("{s:s}", "sub", "a b");
    CHECK(kh_oidc_user(o, bad, user, sizeof(user), &err) < 0 && err.code == KH_E_UNAUTHORIZED);
    kh_err_clear(&err);
    json_decref(bad);

    /* provisioning: the user is made once, joins existing groups only, and
     * leaves groups the claim no longer names */
    CHECK(kh_users_group_add(st, "ops", &err) == 0);
    CHECK(kh_users_group_add(st, "dev", &err) == 0);
    json_t *joined = kh_oidc_provision(o, st, "oidc.alice", cl, &err);
    CHECK(joined && json_array_size(joined) == 1 &&
          strcmp(json_string_value(json_array_get(joined, 0)), "ops") == 0);
    json_decref(joined);
    json_t *u = kh_users_json(st, "oidc.alice", &err);
    CHECK(u && !json_is_true(json_object_get(u, "has_password")));
    json_decref(u);
    json_t *cl2 = json_pack("{s:s,s:[s]}", "sub", "alice", "groups", "dev");
    joined = kh_oidc_provision(o, st, "oidc.alice", cl2, &err);
    CHECK(joined && json_array_size(joined) == 1);
    json_decref(joined);
    u = kh_users_json(st, "oidc.alice", &err);
    json_t *g = json_object_get(u, "groups");
    CHECK(json_array_size(g) == 1 && strcmp(json_string_value(json_array_get(g, 0)), "dev") == 0);
    json_decref(u);
    CHECK(kh_users_update(st, "oidc.alice", NULL, NULL, 0, &err) == 0);
    CHECK(kh_oidc_provision(o, st, "oidc.alice", cl2, &err) == NULL &&
          err.code == KH_E_FORBIDDEN);
    kh_err_clear(&err);
    json_decref(cl2);
    json_decref(cl);

    /* refusals before any network call */
    CHECK(kh_oidc_finish(o, "no-such-state", "code", 1000, NULL, &err) == NULL &&
          err.code == KH_E_INVALID);
    kh_err_clear(&err);
    CHECK(kh_oidc_verify(o, "not.a-token", "n", 1.0, &err) == NULL &&
          err.code == KH_E_UNAUTHORIZED);
    kh_err_clear(&err);
    /* {"alg":"none"}.{"sub":"x"}. */
    CHECK(kh_oidc_verify(o, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "n", 1.0, &err) == NULL &&
          err.code == KH_E_UNAUTHORIZED && strstr(err.msg, "RS256"));
    kh_err_clear(&err);
    /* begin before discovery */
    char state[48];
    CHECK(kh_oidc_begin(o, "https://h/cb", NULL, 1000, state, &err) == NULL &&
          err.code == KH_E_UNAVAILABLE);
    kh_oidc_free(o);
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
    RUN(test_config);
    RUN(test_cli_parse);
    RUN(test_grants);
    if (st) {
        test_user_and_refusals(st);
        kh_store_close(st);
    }
    free(path);
    kh_fs_rm_rf(dir, NULL);
    TEST_DONE();
}
