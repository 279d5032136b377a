/* forward.c - sending an API request on to the host that owns its VM: one
 * libcurl call over mutual TLS (this host's certificate, the cluster CA
 * only), run on the loop's thread pool so the loop never waits for the
 * other host; the callback gets the answer on the loop. The caller gives
 * the KH-Forwarded header (auth/audit.c) that marks it as forwarded. Also the files of
 * this host's certificate for the console relay (api/forward.c).
 */
#include "cluster/cluster_int.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/etcd_int.h"
#include "util/mem.h"

#define FORWARD_TIMEOUT_MS 120000

typedef struct fwd {
    uv_work_t work;
    char *url, *method, *content_type, *forwarded, *body, *ca, *cert, *key;
    size_t len;
    kh_forward_cb cb;
    void *opaque;
    /* the answer */
    long status;
    char *reply_type;
    kh_buf reply;
    kh_err err;
} fwd;

static void run(uv_work_t *w)
{
    fwd *f = w->data;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char *ct = f->content_type ? xasprintf("Content-Type: %s", f->content_type) : NULL;
    if (ct)
        hdr = curl_slist_append(hdr, ct);
    hdr = curl_slist_append(hdr, f->forwarded);
    hdr = curl_slist_append(hdr, "Expect:");
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, f->url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, f->method);
    if (f->len || strcmp(f->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, f->body ? f->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)f->len);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_CAINFO, f->ca);
    curl_easy_setopt(h, CURLOPT_SSLCERT, f->cert);
    curl_easy_setopt(h, CURLOPT_SSLKEY, f->key);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)FORWARD_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &f->reply);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        kh_err_set(&f->err, KH_E_UNAVAILABLE, "cannot reach the owner at %s: %s", f->url,
                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &f->status);
        char *t = NULL;
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &t);
        f->reply_type = t ? xstrdup(t) : NULL;
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdr);
    free(ct);
}

static void fwd_free(fwd *f)
{
    kh_buf_release(&f->reply);
    free(f->reply_type);
    free(f->url);
    free(f->method);
    free(f->content_type);
    free(f->forwarded);
    free(f->body);
    free(f->ca);
    free(f->cert);
    free(f->key);
    free(f);
}

static void done(uv_work_t *w, int status)
{
    fwd *f = w->data;
    if (status == UV_ECANCELED && f->err.code == KH_OK)
        kh_err_set(&f->err, KH_E_UNAVAILABLE, "forwarding was cancelled");
    f->cb(f->opaque, f->err.code == KH_OK ? (int)f->status : 0, f->reply_type,
          f->reply.p ? f->reply.p : "", f->reply.len, f->err.code == KH_OK ? NULL : &f->err);
    fwd_free(f);
}

int kh_cluster_forward(kh_cluster *c, const char *url, const char *method, const char *target,
                       const char *content_type, const char *forwarded, const char *body,
                       size_t len, kh_forward_cb cb, void *opaque, kh_err *err)
{
    if (!c->fingerprint) {
        kh_err_set(err, KH_E_UNAVAILABLE, "this host has no cluster certificate: it cannot "
                   "call other hosts");
        return -1;
    }
    fwd *f = xcalloc(1, sizeof(*f));
    f->work.data = f;
    f->url = xasprintf("%s%s", url, target);
    f->method = xstrdup(method);
    f->content_type = content_type ? xstrdup(content_type) : NULL;
    f->forwarded = xstrdup(forwarded);
    if (len) {
        f->body = xmalloc(len);
        memcpy(f->body, body, len);
    }
    f->len = len;
    f->ca = kh_cluster_tls_path(c, "ca.pem");
    f->cert = kh_cluster_tls_path(c, "host.pem");
    f->key = kh_cluster_tls_path(c, "host.key");
    f->cb = cb;
    f->opaque = opaque;
    if (uv_queue_work(c->loop, &f->work, run, done) != 0) {
        kh_err_set(err, KH_E_INTERNAL, "cannot queue the forwarded request");
        fwd_free(f);
        return -1;
    }
    return 0;
}

int kh_cluster_peer_tls(kh_cluster *c, char **ca, char **cert, char **key, kh_err *err)
{
    *ca = *cert = *key = NULL;
    if (!c->fingerprint) {
        kh_err_set(err, KH_E_UNAVAILABLE, "this host has no cluster certificate: it cannot "
                   "call other hosts");
        return -1;
    }
    *ca = kh_cluster_tls_path(c, "ca.pem");
    *cert = kh_cluster_tls_path(c, "host.pem");
    *key = kh_cluster_tls_path(c, "host.key");
    return 0;
}
