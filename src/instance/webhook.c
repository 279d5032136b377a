/* webhook.c - alert webhook POSTs from the thread pool (webhook.h). */
#include "instance/webhook.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "schema/schema.h"
#include "util/log.h"
#include "util/mem.h"

#define WEBHOOK_INFLIGHT 2 /* leave the rest of the shared thread pool alone */
#define WEBHOOK_QUEUE 64
#define URL_MAX 2048

typedef struct job {
    uv_work_t work;
    kh_webhook *w;
    char *url;
    char *body;
    long timeout_ms;
    /* results, written by the worker */
    CURLcode rc;
    long status;
    char errbuf[CURL_ERROR_SIZE];
    struct job *next;
} job;

struct kh_webhook {
    uv_loop_t *loop;
    char *url;              /* NULL = off */
    double timeout_s;
    job *queue, *queue_tail;
    size_t queued, inflight;
    unsigned long long sent, failed, dropped;
    bool dead;
};

/* libcurl's global set-up (OpenSSL, libssh2, ...) touches about 2 MiB
 * of library pages: done on the loop thread before the first POST goes
 * to the thread pool, not at start-up, so a daemon without webhooks does
 * not carry it. */
static void curl_ready(void)
{
    static bool ready;
    if (!ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        ready = true;
    }
}

kh_webhook *kh_webhook_new(uv_loop_t *loop)
{
    kh_webhook *w = xcalloc(1, sizeof(*w));
    w->loop = loop;
    w->timeout_s = 5;
    return w;
}

static void job_free(job *j)
{
    free(j->url);
    free(j->body);
    free(j);
}

static void webhook_destroy(kh_webhook *w)
{
    while (w->queue) {
        job *j = w->queue;
        w->queue = j->next;
        job_free(j);
    }
    free(w->url);
    free(w);
}

void kh_webhook_free(kh_webhook *w)
{
    if (!w)
        return;
    w->dead = true;
    if (w->inflight == 0)
        webhook_destroy(w);
}

int kh_webhook_check_url(const char *url, kh_err *err)
{
    if (!url || !*url || strlen(url) > URL_MAX) {
        kh_err_set(err, KH_E_INVALID, "webhook.url: must be an http or https URL of at most %d "
                   "characters", URL_MAX);
        return -1;
    }
    for (const char *p = url; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            kh_err_set(err, KH_E_INVALID, "webhook.url: must not hold spaces or control "
                       "characters");
            return -1;
        }
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        kh_err_set(err, KH_E_INVALID, "webhook.url: not an absolute URL with a host");
    } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        kh_err_set(err, KH_E_INVALID, "webhook.url: the scheme must be http or https");
    } else {
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

int kh_webhook_check(const json_t *conf, kh_err *err)
{
    if (json_is_null(conf))
        return 0;
    if (!json_is_object(conf)) {
        kh_err_set(err, KH_E_INVALID, "webhook: must be an object {\"url\", \"timeout_seconds\"} "
                   "or null");
        return -1;
    }
    if (kh_schema_check("Webhook", conf, "webhook", err) < 0)
        return -1;
    const json_t *url = json_object_get(conf, "url");
    if (!json_is_string(url)) {
        kh_err_set(err, KH_E_INVALID, "webhook.url is required (a string)");
        return -1;
    }
    if (kh_webhook_check_url(json_string_value(url), err) < 0)
        return -1;
    const json_t *t = json_object_get(conf, "timeout_seconds");
    if (t && (!json_is_number(t) || json_number_value(t) < 1 || json_number_value(t) > 60)) {
        kh_err_set(err, KH_E_INVALID, "webhook.timeout_seconds: must be from 1 to 60");
        return -1;
    }
    return 0;
}

void kh_webhook_set(kh_webhook *w, const json_t *conf)
{
    free(w->url);
    w->url = NULL;
    w->timeout_s = 5;
    if (!json_is_object(conf))
        return;
    w->url = xstrdup(json_string_value(json_object_get(conf, "url")));
    const json_t *t = json_object_get(conf, "timeout_seconds");
    if (json_is_number(t))
        w->timeout_s = json_number_value(t);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    (void)ptr;
    (void)opaque;
    return size * nmemb;
}

/* On a pool thread: touches only the job. */
static void do_post(uv_work_t *req)
{
    job *j = req->data;
    CURL *c = curl_easy_init();
    if (!c) {
        j->rc = CURLE_FAILED_INIT;
        return;
    }
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, j->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, j->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "kvmhostd");
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, j->errbuf);
    j->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &j->status);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(c);
}

static void dispatch(kh_webhook *w);

static void post_done(uv_work_t *req, int status)
{
    job *j = req->data;
    kh_webhook *w = j->w;
    w->inflight--;
    if (status == 0 && j->rc == CURLE_OK && j->status >= 200 && j->status < 300) {
        w->sent++;
    } else {
        w->failed++;
        /* Not the URL: webhook URLs often carry a secret. */
        kh_log(KH_LOG_WARN, "alert.webhook_failed", "status=%ld error=%s", j->status,
               status != 0           ? uv_strerror(status)
               : j->rc != CURLE_OK   ? (j->errbuf[0] ? j->errbuf : curl_easy_strerror(j->rc))
                                     : "HTTP status not 2xx");
    }
    job_free(j);
    if (w->dead) {
        if (w->inflight == 0)
            webhook_destroy(w);
        return;
    }
    dispatch(w);
}

static void dispatch(kh_webhook *w)
{
    if (w->queue)
        curl_ready();
    while (w->queue && w->inflight < WEBHOOK_INFLIGHT) {
        job *j = w->queue;
        w->queue = j->next;
        if (!w->queue)
            w->queue_tail = NULL;
        w->queued--;
        j->next = NULL;
        j->work.data = j;
        if (uv_queue_work(w->loop, &j->work, do_post, post_done) < 0) {
            w->failed++;
            job_free(j);
            continue;
        }
        w->inflight++;
    }
}

void kh_webhook_post(kh_webhook *w, const json_t *body)
{
    if (!w || !w->url || w->dead)
        return;
    if (w->queued >= WEBHOOK_QUEUE) {
        w->dropped++;
        kh_log(KH_LOG_WARN, "alert.webhook_dropped", "queued=%zu", w->queued);
        return;
    }
    job *j = xcalloc(1, sizeof(*j));
    j->w = w;
    j->url = xstrdup(w->url);
    j->body = json_dumps(body, JSON_COMPACT);
    if (!j->body)
        j->body = xstrdup("{}");
    j->timeout_ms = (long)(w->timeout_s * 1000);
    if (w->queue_tail)
        w->queue_tail->next = j;
    else
        w->queue = j;
    w->queue_tail = j;
    w->queued++;
    dispatch(w);
}

json_t *kh_webhook_json(const kh_webhook *w)
{
    if (!w || !w->url)
        return json_null();
    return json_pack("{s:s, s:f, s:I, s:I, s:I}", "url", w->url, "timeout_seconds",
                     w->timeout_s, "sent", (json_int_t)w->sent, "failed",
                     (json_int_t)w->failed, "dropped", (json_int_t)w->dropped);
}

void kh_webhook_counts(const kh_webhook *w, unsigned long long *sent,
                       unsigned long long *failed, unsigned long long *dropped)
{
    *sent = w ? w->sent : 0;
    *failed = w ? w->failed : 0;
    *dropped = w ? w->dropped : 0;
}
