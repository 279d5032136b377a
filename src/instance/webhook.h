/* webhook.h - POST alert events as JSON to one admin-set URL.
 *
 * The POST runs on the libuv thread pool (libcurl easy handle, one per
 * request), never on the loop thread. At most WEBHOOK_INFLIGHT requests run
 * at once and at most WEBHOOK_QUEUE wait; a post beyond that is dropped and
 * counted. A failure (transport error, timeout, non-2xx status) is logged and
 * counted, and not retried. Redirects are not followed.
 */
#ifndef KH_VM_WEBHOOK_H
#define KH_VM_WEBHOOK_H

#include <jansson.h>
#include <uv.h>

#include "util/err.h"

typedef struct kh_webhook kh_webhook;

kh_webhook *kh_webhook_new(uv_loop_t *loop);
/* Frees now, or after the last request in flight has come back (the loop
 * must run). NULL is fine. */
void kh_webhook_free(kh_webhook *w);
/* KH_E_INVALID unless url is an absolute http or https URL with a host,
 * at most 2048 characters. */
int kh_webhook_check_url(const char *url, kh_err *err);
/* Validate {"url", "timeout_seconds" (1..60, default 5)}; json null turns
 * the webhook off. Nothing changes on error. */
int kh_webhook_check(const json_t *conf, kh_err *err);
/* Apply a configuration that kh_webhook_check accepted. */
void kh_webhook_set(kh_webhook *w, const json_t *conf);
/* Queue one POST of body (borrowed, serialised now). No-op when off. */
void kh_webhook_post(kh_webhook *w, const json_t *body);
/* {"url", "timeout_seconds", "sent", "failed", "dropped"}, or null when
 * off (the counters survive reconfiguration). */
json_t *kh_webhook_json(const kh_webhook *w);
/* Counters since start: posts answered 2xx, failed, dropped (queue full). */
void kh_webhook_counts(const kh_webhook *w, unsigned long long *sent,
                       unsigned long long *failed, unsigned long long *dropped);

#endif
