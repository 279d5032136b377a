/* alert.h - threshold alerts over the sampler's values, as events.
 *
 * A rule: {"name", "scope": "host"|"vm", "metric", "op": ">"|">="|"<"|"<=",
 * "threshold", "for_seconds"}. The sampler feeds every round's values (host
 * once, each running VM once); a rule whose condition has held for
 * for_seconds fires: an "alert.firing" event (vm set for a VM alert) with
 * {rule, metric, value, threshold, op}; when the condition stops holding, or
 * the VM stops being sampled, "alert.resolved" follows. Metrics a rule can
 * name are the history fields (metrics.h) plus the derived ones:
 *   host: memory_used_percent;  vm: cpu_saturation_percent (cpu_percent over
 *   the VM's capacity: vCPUs, or its CPU cap when lower).
 *   host: memory_used_percent, disk_used_percent (of the state dir's
 *   filesystem).
 * A trend rule adds "predict_seconds" (and "window_seconds", default 3600):
 * it also holds when the least-squares line through the metric's values of
 * the last window_seconds (at least 5 samples spanning half the window)
 * crosses the threshold within predict_seconds; its events add predicted
 * (the line's value at the horizon) and eta_seconds.
 * The defaults: host memory_used_percent > 90 for 60 s ("host_memory_high"),
 * host disk_used_percent > 90 for 60 s ("host_disk_high"), host
 * disk_used_percent >= 100 within 24 h at the last hour's rate, for 600 s
 * ("host_disk_full_soon"), VM cpu_saturation_percent >= 95 for 60 s
 * ("vm_cpu_saturated").
 */
#ifndef KH_VM_ALERT_H
#define KH_VM_ALERT_H

#include <jansson.h>
#include <stddef.h>

#include "util/err.h"
#include "instance/event.h"
#include "instance/webhook.h"

typedef struct kh_alerts kh_alerts;

/* With the default rules. events is borrowed. */
kh_alerts *kh_alerts_new(kh_events *events);
void kh_alerts_free(kh_alerts *a);
/* Replace the rules with a JSON array of rule objects (validated as a
 * whole; on error nothing changes). A rule given again unchanged (same
 * name and definition) keeps its alerts and trend; the alerts of the other
 * old rules resolve. */
int kh_alerts_set_rules(kh_alerts *a, const json_t *rules, kh_err *err);
/* POST every firing and resolved alert to this webhook too (borrowed;
 * NULL: none). Its URL is set with kh_alerts_configure. */
void kh_alerts_set_webhook(kh_alerts *a, kh_webhook *w);
/* The webhook set above (NULL: none). */
const kh_webhook *kh_alerts_webhook(const kh_alerts *a);
/* {"rules": [...], "webhook": {...} | null}: rules are required, webhook
 * optional (absent: unchanged, null: off). All validated first; on error
 * nothing changes. A new webhook URL is POSTed the alerts firing now, once
 * (no event, no state change). */
int kh_alerts_configure(kh_alerts *a, const json_t *conf, kh_err *err);
/* The same from a JSON file. */
int kh_alerts_load_file(kh_alerts *a, const char *path, kh_err *err);
/* At start, after kh_alerts_set_webhook: keep the rules and webhook in
 * store (the alert_config table) from now on - every kh_alerts_configure
 * saves them before it applies them, and fails (nothing changes) when they
 * cannot be saved - and load what applies now:
 *  - file (--alert-rules) given, new or changed since it was last applied:
 *    the file's rules (and webhook), which are saved; an error in it fails;
 *  - otherwise what was saved last (set through the API, or the same file
 *    at an earlier start); a saved config that no longer validates is
 *    logged and the defaults stay;
 *  - nothing saved and no file: the defaults.
 * So the newest of "the file changed" and "the API changed them" wins. */
typedef struct kh_store kh_store;
int kh_alerts_open(kh_alerts *a, kh_store *store, const char *file, kh_err *err);
/* One round: begin, feed each subject's values, end (resolves what was not
 * fed). vm NULL = the host. */
void kh_alerts_begin(kh_alerts *a);
void kh_alerts_feed(kh_alerts *a, const char *vm, const char *const *fields,
                    const double *values, size_t n, double now);
void kh_alerts_end(kh_alerts *a, double now);
/* {"rules": [...], "active": [{"rule", "vm", "state": "pending"|"firing",
 * "since", "value" (trend: "predicted", "eta_seconds")}], "webhook":
 * kh_webhook_json} */
json_t *kh_alerts_json(const kh_alerts *a);

#endif
