/* metrics_routes.c - GET /metrics (Prometheus) and the history endpoints. */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "api/api.h"
#include "backup/backup.h"
#include "instance/metrics.h"
#include "util/mem.h"

void kh_metrics_routes_prometheus(kh_http_req *req, void *app)
{
    kh_api *api = app;
    size_t len;
    char *text = kh_metrics_render(api->metrics, &len);
    size_t blen;
    char *bk = kh_bkmetrics_render(api->backups, &blen);
    char *all = xmalloc(len + blen + 1);
    memcpy(all, text, len);
    memcpy(all + len, bk, blen);
    all[len + blen] = 0;
    kh_http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", all, len + blen);
    free(text);
    free(bk);
    free(all);
}

/* ?range=SECONDS: 1..3600, default 3600. */
static int parse_range(kh_http_req *req, double *out, kh_err *err)
{
    const char *r = kh_http_req_query(req, "range");
    *out = 3600;
    if (!r)
        return 0;
    char *end;
    long v = strtol(r, &end, 10);
    if (!*r || *end || v < 1 || v > 3600) {
        kh_err_set(err, KH_E_INVALID, "range: must be a number of seconds from 1 to 3600");
        return -1;
    }
    *out = (double)v;
    return 0;
}

void kh_metrics_routes_vm(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    double range;
    json_t *j = NULL;
    if (parse_range(req, &range, &err) == 0)
        j = kh_metrics_vm_history(api->metrics, kh_http_req_param(req, "name"), range, &err);
    if (!j) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, j);
}

void kh_metrics_routes_host(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    double range;
    if (parse_range(req, &range, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, kh_metrics_host_history(api->metrics, range));
}

void kh_metrics_routes_alerts(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_http_reply_json(req, 200, kh_alerts_json(api->alerts));
}

/* The webhook URL's host by the outbound policy (auth: no loopback,
 * link-local or metadata addresses unless the daemon allows them). */
static int webhook_policy(const kh_http_req *req, const char *url, kh_err *err)
{
    CURLU *u = curl_url();
    char *host = NULL;
    int rc = 0;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host)
        rc = kh_auth_webhook_host(req, host, err);
    curl_free(host);
    curl_url_cleanup(u);
    return rc; /* an unparsable URL: kh_alerts_configure says why */
}

void kh_metrics_routes_alert_rules(kh_http_req *req, void *app)
{
    kh_api *api = app;
    kh_err err = KH_ERR_INIT;
    json_t *body = kh_http_req_json(req, &err);
    const char *url = body ? json_string_value(json_object_get(
                                 json_object_get(body, "webhook"), "url")) : NULL;
    if (url && webhook_policy(req, url, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    if (!body || kh_alerts_configure(api->alerts, body, &err) < 0) {
        kh_http_reply_error(req, &err);
        return;
    }
    kh_http_reply_json(req, 200, kh_alerts_json(api->alerts));
}
