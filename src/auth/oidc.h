/* oidc.h - OpenID Connect login (authorization code flow with PKCE) against
 * one admin-configured provider: discovery, the pending logins (state,
 * nonce, PKCE verifier; server-side, single use, 10 minutes), the code
 * exchange at the token endpoint, and the ID token check with libcjose
 * (RS256/ES256 signature against the provider's JWKS, iss, aud, exp, nonce).
 * Then the mapping to a local user: REALM.<claim> (created without a
 * password at first login) whose memberships follow the groups claim at
 * every login, for the local groups that exist.
 *
 * A CLI login (`kvmhost login --oidc`, RFC 8252 style) is the same browser
 * flow with three more parameters on the login URL: the port of the CLI's
 * loopback listener, the S256 challenge of a verifier only the CLI knows,
 * and the CLI's own state. The callback then does not start a session: it
 * makes a one-time grant (single use, 60 s, bound to that challenge) and
 * sends the browser to http://127.0.0.1:PORT/callback?grant=G&state=S - a
 * loopback address the daemon builds itself, never one from the request.
 * The CLI trades grant + verifier for an API token (POST /api/v1/oidc/grant).
 *
 * Thread-safety: every function may be called from a worker thread (the
 * network calls block); the object keeps its own lock. The issuer is set
 * by the administrator on the command line, so it may be on loopback or a
 * private address: the webhook URL policy does not apply to it.
 */
#ifndef KH_AUTH_OIDC_H
#define KH_AUTH_OIDC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/err.h"

typedef struct kh_oidc_config {
    const char *issuer;        /* https://idp.example/realms/x (required) */
    const char *client_id;     /* required */
    const char *client_secret; /* NULL: a public client (PKCE only) */
    const char *groups_claim;  /* NULL: "groups" */
    const char *user_claim;    /* NULL: "sub" */
    const char *realm;         /* user name prefix; NULL: "oidc" */
    const char *redirect_url;  /* NULL: from the request's Host */
    const char *scopes;        /* NULL: "openid profile email" */
    const char *ca_file;       /* NULL: the system CAs */
    const char *name;          /* shown as "Sign in with NAME"; NULL: the issuer's host */
    unsigned cli_ttl_s;        /* lifetime of a CLI login's token; 0: 12 h */
} kh_oidc_config;

#define KH_OIDC_GRANT_TTL_MS (60 * 1000)
/* The API tokens CLI logins get: user!oidc-cli-<12 hex> (kvmhost logout
 * revokes its own with DELETE /api/v1/session). */
#define KH_OIDC_CLI_TOKEN_PREFIX "oidc-cli-"

/* The CLI's part of a login (port 0: a browser login). */
typedef struct kh_oidc_cli {
    unsigned port;      /* the CLI's loopback listener on 127.0.0.1 */
    char challenge[48]; /* base64url SHA-256 of the CLI's verifier (43 characters) */
    char state[72];     /* the CLI's own state, echoed back to it (1-64 characters) */
} kh_oidc_cli;

typedef struct kh_oidc kh_oidc;

/* Copies cfg; no network. NULL with KH_E_INVALID on a bad issuer or id. */
kh_oidc *kh_oidc_new(const kh_oidc_config *cfg, kh_err *err);
void kh_oidc_free(kh_oidc *o);

/* Fetch ISSUER/.well-known/openid-configuration once (blocking; cached on
 * success); a provider failure is KH_E_UNAVAILABLE. */
int kh_oidc_discover(kh_oidc *o, kh_err *err);

/* The display name of the provider ("Sign in with NAME"). */
const char *kh_oidc_name(const kh_oidc *o);
/* Seconds a CLI login's token lives. */
unsigned kh_oidc_cli_ttl(const kh_oidc *o);

/* Start a login (after kh_oidc_discover): a new pending login, its state
 * (43 characters, into state) and the provider URL to send the browser to
 * (owned). redirect_default: the callback URL when none is configured.
 * cli: NULL (or port 0) for a browser login, else kept with the login. */
char *kh_oidc_begin(kh_oidc *o, const char *redirect_default, const kh_oidc_cli *cli,
                    uint64_t now_ms, char state[48], kh_err *err);

/* Finish a login (blocking): take the pending login of state (400 when
 * unknown, expired or used), exchange code at the token endpoint with its
 * verifier, check the ID token. The token's claims (new reference), or
 * NULL with err: KH_E_INVALID (state), KH_E_UNAUTHORIZED (token refused:
 * signature, iss, aud, exp, nonce), KH_E_UNAVAILABLE (provider down). */
json_t *kh_oidc_finish(kh_oidc *o, const char *state, const char *code, uint64_t now_ms,
                       kh_oidc_cli *cli, kh_err *err);
/* cli (may be NULL) gets the CLI part of the login of state whenever that
 * login was found, even when the rest fails (port 0 otherwise). */

/* The CLI parameters of a login URL (?cli_port, cli_challenge, cli_state;
 * all NULL: none, out->port = 0): port 1024-65535, a 43-character
 * base64url challenge, a 1-64 character base64url state. -1 with
 * KH_E_INVALID otherwise. */
int kh_oidc_cli_parse(const char *port, const char *challenge, const char *state,
                      kh_oidc_cli *out, kh_err *err);
/* The loopback URL the browser goes back to (owned):
 * http://127.0.0.1:PORT/callback?state=S and grant=G or error=E. */
char *kh_oidc_cli_redirect(const kh_oidc_cli *cli, const char *grant, const char *error);

/* A one-time grant for user at the end of a CLI login (43 characters into
 * grant; only its SHA-256 is kept), bound to cli->challenge, for
 * KH_OIDC_GRANT_TTL_MS. The table is bounded (the oldest is dropped). */
int kh_oidc_grant_new(kh_oidc *o, const char *user, const kh_oidc_cli *cli, uint64_t now_ms,
                      char grant[48], kh_err *err);
/* Take a grant: it is gone after this call whatever the outcome (a wrong
 * verifier burns it). The user into user; -1 with KH_E_UNAUTHORIZED when
 * unknown, used, expired or the verifier does not match its challenge. */
int kh_oidc_grant_take(kh_oidc *o, const char *grant, const char *verifier, uint64_t now_ms,
                       char *user, size_t usersz, kh_err *err);

/* Check a compact ID token (signature against the JWKS, fetched when its
 * key is unknown; iss, aud, exp, nonce): its claims or NULL with err. */
json_t *kh_oidc_verify(kh_oidc *o, const char *id_token, const char *nonce, double now,
                       kh_err *err);

/* The local user of claims: "REALM.<user claim>" into out; -1 with
 * KH_E_UNAUTHORIZED when the claim is missing or not a valid name. */
int kh_oidc_user(const kh_oidc *o, const json_t *claims, char *out, size_t outsz, kh_err *err);

/* Create user (no password) if new; refuse a disabled one (403); make
 * its group memberships those of the groups claim that exist locally.
 * The groups joined, as a JSON array (new reference) or NULL with err. */
json_t *kh_oidc_provision(const kh_oidc *o, kh_store *st, const char *user,
                          const json_t *claims, kh_err *err);

#endif
