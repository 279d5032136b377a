/* oidc.h - OpenID Connect login (authorization code flow with PKCE) against
 * one admin-configured provider: discovery, the pending logins (state,
 * nonce, PKCE verifier; server-side, single use, 10 minutes), the code
 * exchange at the token endpoint, and the ID token check with libcjose
 * (RS256/ES256 signature against the provider's JWKS, iss, aud, exp, nonce).
 * Then the mapping to a local user: REALM.<claim> (created without a
 * password at first login) whose memberships follow the groups claim at
 * every login, for the local groups that exist.
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
} kh_oidc_config;

typedef struct kh_oidc kh_oidc;

/* Copies cfg; no network. NULL with KH_E_INVALID on a bad issuer or id. */
kh_oidc *kh_oidc_new(const kh_oidc_config *cfg, kh_err *err);
void kh_oidc_free(kh_oidc *o);

/* Fetch ISSUER/.well-known/openid-configuration once (blocking; cached on
 * success); a provider failure is KH_E_UNAVAILABLE. */
int kh_oidc_discover(kh_oidc *o, kh_err *err);

/* Start a login (after kh_oidc_discover): a new pending login, its state
 * (43 characters, into state) and the provider URL to send the browser to
 * (owned). redirect_default: the callback URL when none is configured. */
char *kh_oidc_begin(kh_oidc *o, const char *redirect_default, uint64_t now_ms,
                    char state[48], kh_err *err);

/* Finish a login (blocking): take the pending login of state (400 when
 * unknown, expired or used), exchange code at the token endpoint with its
 * verifier, check the ID token. The token's claims (new reference), or
 * NULL with err: KH_E_INVALID (state), KH_E_UNAUTHORIZED (token refused:
 * signature, iss, aud, exp, nonce), KH_E_UNAVAILABLE (provider down). */
json_t *kh_oidc_finish(kh_oidc *o, const char *state, const char *code, uint64_t now_ms,
                       kh_err *err);

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
