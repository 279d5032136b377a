/* migrate_peer.c - owns the source's calls to the target's host-to-host
 * routes (/api/v1/migrations/{vm-id}/prepare, status, commit, abort):
 * HTTP over the peers' mutual TLS with libcurl, blocking with short
 * timeouts (as cluster/join.c), one handle per migration. */
#include <stdio.h>
#include <stdlib.h>

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "instance/migrate_int.h"
#include "util/buf.h"
#include "util/mem.h"

#define HTTP_TIMEOUT_MS 15000

/* POST (body non-NULL) or GET url; *out (may be NULL) the JSON reply.
 * One handle per migration: its connection (and TLS session) stays open
 * from prepare to commit, so the commit in the guest's downtime makes no
 * TCP or TLS handshake. */
int kh_migrate_peer_call(kh_migration *m, const char *path, const json_t *body, json_t **out,
                         kh_err *err)
{
    char *url = xasprintf("%s/api/v1/migrations/%s/%s", m->peer.api_url, m->id, path);
    char *auth = xasprintf("Authorization: KH-Peer %s", m->token);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    kh_buf reply = { 0 };
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;
    int rc = -1;
    if (!m->curl)
        m->curl = curl_easy_init();
    else
        curl_easy_reset(m->curl); /* the options go, the connection stays */
    CURL *h = m->curl;
    if (!h) {
        kh_err_set(err, KH_E_INTERNAL, "libcurl is not available");
        goto out;
    }
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, auth);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    if (m->peer.tls_ca[0]) { /* the peer's host-to-host listener: mutual TLS */
        curl_easy_setopt(h, CURLOPT_CAINFO, m->peer.tls_ca);
        curl_easy_setopt(h, CURLOPT_SSLCERT, m->peer.tls_cert);
        curl_easy_setopt(h, CURLOPT_SSLKEY, m->peer.tls_key);
    }
    if (text)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, kh_buf_curl_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdr);
    if (cc != CURLE_OK) {
        kh_err_set(err, KH_E_UNAVAILABLE, "%s: %s", url,
                   errbuf[0] ? errbuf : curl_easy_strerror(cc));
        goto out;
    }
    json_t *j = reply.len ? json_loadb(reply.p, reply.len, 0, NULL) : NULL;
    if (status < 200 || status >= 300) {
        const char *msg = json_string_value(
            json_object_get(json_object_get(j, "error"), "message"));
        kh_err_set(err, status == 404 ? KH_E_NOTFOUND : KH_E_CONFLICT, "%s %s: %ld %s",
                   m->peer.name, path, status, msg ? msg : "");
        json_decref(j);
        goto out;
    }
    if (out)
        *out = j;
    else
        json_decref(j);
    rc = 0;
out:
    free(url);
    free(auth);
    free(text);
    kh_buf_release(&reply);
    return rc;
}

void kh_migrate_peer_close(kh_migration *m)
{
    if (m->curl)
        curl_easy_cleanup(m->curl);
    m->curl = NULL;
}
