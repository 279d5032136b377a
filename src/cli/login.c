/* login.c - `kvmhost login --oidc` and `kvmhost logout`: the CLI side of an
 * OIDC login (RFC 8252, a native app with a loopback redirect), and the
 * stored credential later commands use (cli_login_load, called by
 * cli_ctx_client).
 *
 * The CLI listens on 127.0.0.1:random, prints the daemon's login URL with
 * that port, the S256 challenge of a verifier only it knows and a state of
 * its own; the person opens it; the daemon sends the browser to the
 * provider and, after the provider's callback, back to the loopback with a
 * one-time grant. The CLI trades grant + verifier for an API token (POST
 * /api/v1/oidc/grant) and keeps it in $XDG_CONFIG_HOME/kvmhost/login.json
 * (default ~/.config/kvmhost; the file 0600, the folder 0700). `logout`
 * revokes the token (DELETE /api/v1/session) and removes the file.
 */
#include "cli/nouns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/client.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/mem.h"

#define WAIT_DEFAULT_S 300

/* ---- the stored login ---- */

/* $XDG_CONFIG_HOME/kvmhost (or ~/.config/kvmhost), owned; NULL without HOME. */
static char *config_dir(void)
{
    const char *x = getenv("XDG_CONFIG_HOME");
    if (x && x[0] == '/')
        return xasprintf("%s/kvmhost", x);
    const char *home = getenv("HOME");
    if (!home || home[0] != '/')
        return NULL;
    return xasprintf("%s/.config/kvmhost", home);
}

static char *login_path(void)
{
    char *d = config_dir();
    if (!d)
        return NULL;
    char *p = xasprintf("%s/login.json", d);
    free(d);
    return p;
}

json_t *cli_login_load(kh_err *err)
{
    char *path = login_path();
    if (!path)
        return NULL;
    struct stat st;
    json_t *j = NULL;
    if (lstat(path, &st) == 0) {
        json_error_t je;
        if (!S_ISREG(st.st_mode) || (st.st_mode & 077) || st.st_uid != geteuid()) {
            kh_err_set(err, KH_E_INVALID, "%s must be a file of yours with mode 0600; "
                       "run `kvmhost logout` and log in again", path);
        } else if (!(j = json_load_file(path, 0, &je)) ||
                   !json_is_string(json_object_get(j, "url")) ||
                   !json_is_string(json_object_get(j, "token"))) {
            json_decref(j);
            j = NULL;
            kh_err_set(err, KH_E_INVALID, "%s is not a kvmhost login (remove it)", path);
        }
    }
    free(path);
    return j;
}

/* Write o to the login file: a temp file 0600 in a 0700 folder, renamed. */
static int login_save(const json_t *o, kh_err *err)
{
    char *d = config_dir();
    if (!d) {
        kh_err_set(err, KH_E_INVALID, "no HOME: nowhere to keep the login");
        return -1;
    }
    char *parent = xstrndup(d, (size_t)(strrchr(d, '/') - d));
    (void)mkdir(parent, 0700);
    free(parent);
    if (mkdir(d, 0700) < 0 && errno != EEXIST) {
        kh_err_set(err, KH_E_INTERNAL, "mkdir %s: %s", d, strerror(errno));
        free(d);
        return -1;
    }
    char *tmp = xasprintf("%s/.login.json.tmp", d);
    char *path = xasprintf("%s/login.json", d);
    free(d);
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    char *text = json_dumps(o, JSON_INDENT(2));
    int rc = -1;
    if (fd < 0) {
        kh_err_set(err, KH_E_INTERNAL, "creating %s: %s", tmp, strerror(errno));
    } else if (fchmod(fd, 0600) < 0 || !text ||
               write(fd, text, strlen(text)) != (ssize_t)strlen(text) || fsync(fd) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "writing %s: %s", tmp, strerror(errno));
    } else if (rename(tmp, path) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "renaming to %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        (void)unlink(tmp);
    if (text) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    free(tmp);
    free(path);
    return rc;
}

/* ---- PKCE and the loopback listener ---- */

/* n random bytes as base64url without padding into out. */
static void b64url(const unsigned char *in, size_t n, char *out)
{
    unsigned char b64[128];
    int len = EVP_EncodeBlock(b64, in, (int)n);
    int j = 0;
    for (int i = 0; i < len && b64[i] != '='; i++)
        out[j++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
    out[j] = '\0';
}

static int random_b64(char *out, size_t n, kh_err *err)
{
    unsigned char r[32];
    if (n > sizeof(r) || RAND_bytes(r, (int)n) != 1) {
        kh_err_set(err, KH_E_INTERNAL, "no random bytes");
        return -1;
    }
    b64url(r, n, out);
    OPENSSL_cleanse(r, sizeof(r));
    return 0;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
           c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The percent-decoded value of key in the query q (up to a space), owned. */
static char *query_get(const char *q, const char *key)
{
    size_t kl = strlen(key);
    while (q && *q && *q != ' ') {
        size_t n = strcspn(q, "& ");
        if (n > kl && strncmp(q, key, kl) == 0 && q[kl] == '=') {
            kh_buf b = { 0 };
            for (size_t i = kl + 1; i < n; i++) {
                char c = q[i];
                if (c == '%' && i + 2 < n + 1 && hexval(q[i + 1]) >= 0 &&
                    hexval(q[i + 2]) >= 0) {
                    c = (char)(hexval(q[i + 1]) * 16 + hexval(q[i + 2]));
                    i += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                kh_buf_add(&b, &c, 1);
            }
            kh_buf_add(&b, "", 1);
            return b.p;
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return NULL;
}

static void reply(int fd, int status, const char *text)
{
    char *page = xasprintf("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                           "<title>kvmhost login</title></head><body><p>%s</p></body></html>\n",
                           text);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                     "Content-Security-Policy: default-src 'none'\r\nConnection: close\r\n\r\n",
                     status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request",
                     strlen(page));
    if (write(fd, head, (size_t)n) == n)
        (void)!write(fd, page, strlen(page));
    free(page);
}

/* Read one request head from fd (a few seconds at most) into buf. */
static bool read_head(int fd, char *buf, size_t size)
{
    size_t len = 0;
    while (len + 1 < size) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 5000) <= 0)
            return false;
        ssize_t r = read(fd, buf + len, size - 1 - len);
        if (r <= 0)
            return false;
        len += (size_t)r;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n"))
            return true;
    }
    return false;
}

/* Wait for the browser's GET /callback on lfd; the grant (owned) or NULL
 * with err (the daemon's error, a wrong state, the time is up). */
static char *wait_grant(int lfd, const char *state, int timeout_s, kh_err *err)
{
    time_t end = time(NULL) + timeout_s;
    for (;;) {
        int left = (int)(end - time(NULL));
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        int pr = left > 0 ? poll(&p, 1, left * 1000) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            kh_err_set(err, KH_E_TIMEOUT, "no login came back within %d s", timeout_s);
            return NULL;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        char buf[8192];
        if (!read_head(fd, buf, sizeof(buf)) || strncmp(buf, "GET /callback?", 14) != 0) {
            reply(fd, 404, "Not found.");
            close(fd);
            continue;
        }
        const char *q = buf + 14;
        char *st = query_get(q, "state");
        char *grant = query_get(q, "grant");
        char *error = query_get(q, "error");
        bool state_ok = st && strlen(st) == strlen(state) &&
                        CRYPTO_memcmp(st, state, strlen(state)) == 0;
        free(st);
        if (!state_ok) { /* not this login's: ignore it, keep waiting */
            reply(fd, 400, "This is not the login kvmhost is waiting for.");
            close(fd);
            free(grant);
            free(error);
            continue;
        }
        if (error || !grant) {
            reply(fd, 400, "The login failed; see the terminal.");
            close(fd);
            kh_err_set(err, KH_E_UNAUTHORIZED, "the login failed: %.300s",
                       error ? error : "no grant");
            free(grant);
            free(error);
            return NULL;
        }
        reply(fd, 200, "kvmhost: logged in. You can close this window and go back to the "
              "terminal.");
        close(fd);
        free(error);
        return grant;
    }
}

static int listen_loopback(unsigned *port, kh_err *err)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 8) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        kh_err_set(err, KH_E_INTERNAL, "cannot listen on 127.0.0.1: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- the commands ---- */

static char *daemon_url(const cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    const char *h = cli_arg(a, "host");
    if (!h)
        h = ctx->url;
    if (!h || !h[0]) {
        kh_err_set(err, KH_E_INVALID, "login needs the daemon: --host https://HOST:PORT");
        return NULL;
    }
    char *u = strstr(h, "://") ? xstrdup(h) : xasprintf("https://%s", h);
    size_t n = strlen(u);
    while (n > 8 && u[n - 1] == '/')
        u[--n] = '\0';
    if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) {
        kh_err_set(err, KH_E_INVALID, "--host needs https://HOST:PORT, not '%s'", h);
        free(u);
        return NULL;
    }
    return u;
}

static int cli_do_login(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    if (!cli_flag(a, "oidc")) {
        cli_mark_usage(ctx, a);
        kh_err_set(err, KH_E_INVALID, "only --oidc login is supported (a token needs no "
                   "login: --token-file or KVMHOST_TOKEN)");
        return -1;
    }
    int timeout_s = WAIT_DEFAULT_S;
    const char *t = cli_arg(a, "timeout");
    if (t && (timeout_s = atoi(t)) <= 0) {
        cli_mark_usage(ctx, a);
        kh_err_set(err, KH_E_INVALID, "--timeout must be a number of seconds");
        return -1;
    }
    char *url = daemon_url(ctx, a, err);
    if (!url)
        return -1;
    const char *ca = ctx->cacert ? ctx->cacert : getenv("KVMHOST_CACERT");
    cli_client *c = cli_client_new(NULL, url, NULL);
    if (ca && *ca)
        cli_client_set_cacert(c, ca);
    json_t *sess = NULL, *tok = NULL;
    char *grant = NULL;
    int lfd = -1, rc = -1;
    unsigned port = 0;
    char verifier[48], challenge[48], state[32];
    if (cli_client_json(c, "GET", "/api/v1/session", NULL, &sess, NULL, err) < 0)
        goto out;
    if (!json_is_true(json_object_get(sess, "oidc"))) {
        kh_err_set(err, KH_E_UNSUPPORTED, "%s has no OIDC login (kvmhostd --oidc-issuer)", url);
        goto out;
    }
    if (random_b64(verifier, 32, err) < 0 || random_b64(state, 16, err) < 0)
        goto out;
    unsigned char dig[32];
    unsigned int dn = 0;
    EVP_Digest(verifier, strlen(verifier), dig, &dn, EVP_sha256(), NULL);
    b64url(dig, sizeof(dig), challenge);
    if ((lfd = listen_loopback(&port, err)) < 0)
        goto out;
    fprintf(stderr, "Open this address in a browser to log in with %s:\n\n  %s/api/v1/oidc/login"
            "?cli_port=%u&cli_challenge=%s&cli_state=%s\n\nWaiting for the login (%d s)...\n",
            json_string_value(json_object_get(sess, "oidc_name"))
                ? json_string_value(json_object_get(sess, "oidc_name")) : "SSO",
            url, port, challenge, state, timeout_s);
    fflush(stderr);
    if (!(grant = wait_grant(lfd, state, timeout_s, err)))
        goto out;
    json_t *body = json_pack("{s:s,s:s}", "grant", grant, "verifier", verifier);
    int r = cli_client_json(c, "POST", "/api/v1/oidc/grant", body, &tok, NULL, err);
    json_decref(body);
    if (r < 0)
        goto out;
    json_t *saved = json_pack("{s:s,s:O,s:O,s:O}", "url", url, "token",
                              json_object_get(tok, "token"), "principal",
                              json_object_get(tok, "principal"), "expires_at",
                              json_object_get(tok, "expires_at"));
    if (ca && *ca) {
        char *abs = ca[0] == '/' ? xstrdup(ca) : realpath(ca, NULL);
        json_object_set_new(saved, "cacert", json_string(abs ? abs : ca));
        free(abs);
    }
    rc = login_save(saved, err);
    json_decref(saved);
    if (rc == 0) {
        time_t exp = (time_t)json_number_value(json_object_get(tok, "expires_at"));
        char when[64];
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&exp));
        if (ctx->json)
            cli_print_json(stdout, json_pack("{s:s,s:O,s:O}", "url", url, "principal",
                                             json_object_get(tok, "principal"), "expires_at",
                                             json_object_get(tok, "expires_at")));
        else
            printf("logged in to %s as %s (until %s)\n", url,
                   json_string_value(json_object_get(tok, "principal")), when);
    }
out:
    json_decref(tok);
    json_decref(sess);
    if (grant) {
        OPENSSL_cleanse(grant, strlen(grant));
        free(grant);
    }
    OPENSSL_cleanse(verifier, sizeof(verifier));
    if (lfd >= 0)
        close(lfd);
    cli_client_free(c);
    free(url);
    return rc;
}

static int cli_do_logout(cli_ctx *ctx, const cli_args *a, kh_err *err)
{
    (void)a;
    kh_err lerr = KH_ERR_INIT;
    json_t *l = cli_login_load(&lerr);
    char *path = login_path();
    if (!l) {
        /* an unusable file (wrong mode, not JSON) is removed all the same */
        bool removed = lerr.code && path && unlink(path) == 0;
        free(path);
        if (!ctx->json)
            printf(removed ? "removed an unusable login file (nothing revoked)\n"
                           : "not logged in\n");
        return 0;
    }
    const char *url = json_string_value(json_object_get(l, "url"));
    cli_client *c = cli_client_new(NULL, url, json_string_value(json_object_get(l, "token")));
    const char *ca = json_string_value(json_object_get(l, "cacert"));
    if (ca)
        cli_client_set_cacert(c, ca);
    kh_err e2 = KH_ERR_INIT;
    json_t *resp = NULL;
    int r = cli_client_json(c, "DELETE", "/api/v1/session", NULL, &resp, NULL, &e2);
    json_decref(resp);
    cli_client_free(c);
    /* a token the daemon no longer knows (expired, revoked) is logged out too */
    if (r < 0 && e2.code != KH_E_UNAUTHORIZED) {
        *err = e2;
        json_decref(l);
        free(path);
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        kh_err_set(err, KH_E_INTERNAL, "removing %s: %s", path, strerror(errno));
        json_decref(l);
        free(path);
        return -1;
    }
    if (!ctx->json)
        printf("logged out of %s (%s %s)\n", url,
               json_string_value(json_object_get(l, "principal")),
               r < 0 ? "was no longer valid" : "revoked");
    json_decref(l);
    free(path);
    return 0;
}

static const cli_opt opts_login[] = {
    { "oidc", NULL, 0,
      "Log in through the daemon's OpenID Connect provider in a browser." },
    { "host", "URL", CLI_OPT_ARG,
      "The daemon: https://HOST:PORT (kvmhostd --listen). Default: the global --url." },
    { "timeout", "SECONDS", CLI_OPT_ARG, "How long to wait for the browser (default 300)." },
    { NULL, NULL, 0, NULL },
};

const cli_cmd cli_login_cmds[] = {
    {
        "login", NULL, NULL, "log in to a daemon with OIDC (single sign-on)",
        "Log in through the OpenID Connect provider kvmhostd is set up with (kvmhostd "
        "--oidc-issuer), as a native app does (RFC 8252): kvmhost listens on 127.0.0.1 at a "
        "random port and prints the daemon's login address; open it in a browser on this "
        "machine and sign in at the provider. The browser comes back to kvmhost's listener "
        "with a one-time grant (single use, valid 60 s, bound to a secret only this kvmhost "
        "knows), which kvmhost trades for an API token of your user (user!oidc-cli-...).\n\n"
        "The token is kept in $XDG_CONFIG_HOME/kvmhost/login.json (default "
        "~/.config/kvmhost/login.json, mode 0600) with the daemon's address and --cacert. "
        "Later commands without --socket, --url or $KVMHOST_SOCKET talk to that daemon with "
        "it; with --url of that daemon it is the token when no other is given. It expires "
        "after 12 hours (kvmhostd --oidc-cli-ttl); 'kvmhost logout' revokes it.",
        opts_login,
        "$ kvmhost --cacert host1-cert.pem login --oidc --host https://host1:8443\n"
        "$ kvmhost vm list",
        cli_do_login,
    },
    {
        "logout", NULL, NULL, "revoke the stored OIDC login",
        "Revoke the token of 'kvmhost login' at its daemon and remove the stored login. A "
        "token the daemon no longer accepts (expired) is removed all the same.",
        NULL,
        "$ kvmhost logout",
        cli_do_logout,
    },
    { NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};
