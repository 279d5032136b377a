/* ctx.c - what handlers share: the client made from the global options,
 * and the output helpers for a request's answer (cli_show, cli_delete,
 * cli_show_kv, cli_print_free).
 */
#include "cli/nouns.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/output.h"
#include "kh_config.h"
#include "util/fs.h"
#include "util/mem.h"

/* ---- the client for the global options ---- */

/* The stored login (login.c) as the client, when it is still valid. */
static cli_client *client_of_login(const json_t *l, kh_err *err)
{
    const char *url = json_string_value(json_object_get(l, "url"));
    double exp = json_number_value(json_object_get(l, "expires_at"));
    struct timespec now; /* to the fraction, as the daemon's expiry (time() ran late) */
    clock_gettime(CLOCK_REALTIME, &now);
    if (exp > 0 && exp <= (double)now.tv_sec + (double)now.tv_nsec / 1e9) {
        kh_err_set(err, KH_E_UNAUTHORIZED, "your login to %s has expired: run `kvmhost login "
                   "--oidc --host %s` again (or `kvmhost logout`)", url, url);
        return NULL;
    }
    cli_client *c = cli_client_new(NULL, url, json_string_value(json_object_get(l, "token")));
    const char *ca = json_string_value(json_object_get(l, "cacert"));
    if (ca && *ca)
        cli_client_set_cacert(c, ca);
    return c;
}

/* Is the stored login one of the daemon at url? */
static bool login_is_for(const json_t *l, const char *url)
{
    const char *lu = json_string_value(json_object_get(l, "url"));
    size_t n = strlen(url);
    while (n > 8 && url[n - 1] == '/')
        n--;
    return lu && strlen(lu) == n && strncmp(lu, url, n) == 0;
}

cli_client *cli_ctx_client(cli_ctx *ctx, kh_err *err)
{
    if (ctx->client)
        return ctx->client;
    if (ctx->url) {
        if (ctx->socket_opt) {
            cli_usage_error(ctx, NULL, err, "--socket and --url exclude each other");
            return NULL;
        }
        if (strncmp(ctx->url, "http://", 7) != 0 && strncmp(ctx->url, "https://", 8) != 0) {
            cli_usage_error(ctx, NULL, err, "--url needs http://HOST:PORT or https://HOST:PORT, "
                            "not '%s'", ctx->url);
            return NULL;
        }
        char *token = NULL;
        const char *env_token;
        if (ctx->token_file) {
            kh_err ferr = KH_ERR_INIT;
            token = kh_fs_read(ctx->token_file, 4096, NULL, &ferr);
            if (!token) {
                kh_err_set(err, KH_E_INVALID, "reading the token file: %s", ferr.msg);
                return NULL;
            }
        } else if ((env_token = getenv("KVMHOST_TOKEN")) && *env_token) {
            token = xstrdup(env_token);
        } else {
            json_t *l = cli_login_load(err);
            if (l && login_is_for(l, ctx->url))
                ctx->client = client_of_login(l, err);
            json_decref(l);
            if (ctx->client || err->code)
                return ctx->client;
            cli_usage_error(ctx, NULL, err, "--url needs the API token: --token-file FILE, "
                            "KVMHOST_TOKEN or `kvmhost login --oidc`");
            return NULL;
        }
        /* Trim the newline a file usually ends with. */
        size_t n = strlen(token);
        while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' ' ||
                         token[n - 1] == '\t'))
            token[--n] = '\0';
        if (!n || strpbrk(token, "\r\n")) {
            kh_err_set(err, KH_E_INVALID, "the API token is empty or spans several lines");
            free(token);
            return NULL;
        }
        ctx->client = cli_client_new(NULL, ctx->url, token);
        const char *ca = ctx->cacert ? ctx->cacert : getenv("KVMHOST_CACERT");
        if (ca && *ca)
            cli_client_set_cacert(ctx->client, ca);
        explicit_bzero(token, n);
        free(token);
        return ctx->client;
    }
    const char *sock = ctx->socket_opt;
    if (!sock || !*sock)
        sock = getenv("KVMHOST_SOCKET");
    if (!sock || !*sock) { /* no socket named: the daemon of `kvmhost login`, if any */
        json_t *l = cli_login_load(err);
        if (l)
            ctx->client = client_of_login(l, err);
        json_decref(l);
        if (ctx->client || err->code)
            return ctx->client;
        sock = KH_DEFAULT_SOCKET;
    }
    ctx->client = cli_client_new(sock, NULL, NULL);
    return ctx->client;
}

int cli_show(cli_ctx *ctx, const char *method, const char *path, const json_t *body,
             void (*human)(const json_t *), kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    if (!c || cli_client_json(c, method, path, body, &resp, NULL, err) < 0)
        return -1;
    if (ctx->json)
        cli_print_json(stdout, resp);
    else
        human(resp);
    json_decref(resp);
    return 0;
}

int cli_show_one(cli_ctx *ctx, const char *collection, const char *name,
                 void (*human)(const json_t *), kh_err *err)
{
    char *path = cli_api_path(collection, name, NULL);
    int rc = cli_show(ctx, "GET", path, NULL, human, err);
    free(path);
    return rc;
}

int cli_delete(cli_ctx *ctx, char *path, const char *what, const char *name, kh_err *err)
{
    cli_client *c = cli_ctx_client(ctx, err);
    json_t *resp = NULL;
    int rc = c ? cli_client_json(c, "DELETE", path, NULL, &resp, NULL, err) : -1;
    free(path);
    json_decref(resp);
    if (rc < 0)
        return -1;
    if (!ctx->json)
        printf("%s %s deleted\n", what, name);
    return 0;
}

void cli_show_kv(const json_t *o)
{
    cli_kv *kv = cli_kv_new();
    cli_kv_add_json(kv, NULL, o, NULL);
    cli_print_free(cli_kv_render(kv));
    cli_kv_free(kv);
}

void cli_print_free(char *s)
{
    fputs(s, stdout);
    free(s);
}

/* The error just set is about how the command was called. */
void cli_mark_usage(cli_ctx *ctx, const cli_args *a)
{
    ctx->usage_error = true;
    ctx->usage_cmd = a->cmd;
}

/* Print s on stdout, or the JSON. */
void cli_print_kv(cli_kv *kv)
{
    cli_print_free(cli_kv_render(kv));
}

void cli_print_table(cli_table *t)
{
    char *s = cli_table_render(t);
    fputs(s, stdout);
    free(s);
}

/* Set o[key] to the string v (nothing when v is NULL); -1 with err when v is
 * not UTF-8. */
int cli_set_str(json_t *o, const char *key, const char *v, kh_err *err)
{
    json_t *s = v ? json_string(v) : NULL;
    if (v && !s) {
        kh_err_set(err, KH_E_INVALID, "--%s: must be UTF-8 text", key);
        return -1;
    }
    if (s)
        json_object_set_new(o, key, s);
    return 0;
}
