/* metrics.h - what the host, its VMs and the daemon cost: Prometheus
 * exposition, in-memory history, and the sampler that feeds both.
 *
 * Cheap facts (cgroup counters, /proc) are read when /metrics is asked.
 * Facts that need QEMU (query-blockstats, query-cpus-fast) are asked
 * asynchronously by the sampler, a uv timer (every 10 s by default), and
 * kept per VM, so rendering never waits for a QEMU. The sampler also pushes
 * one row per running VM and one for the host into ring buffers that hold
 * the last hour (util/series.h), served as JSON for charts and `vm top`.
 *
 * Everything runs on the loop thread.
 */
#ifndef KH_VM_METRICS_H
#define KH_VM_METRICS_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

#include "host/cgroup.h"
#include "storage/storage.h"
#include "util/err.h"
#include "instance/alert.h"
#include "instance/manager.h"
#include "instance/task.h"

typedef struct kh_metrics kh_metrics;

/* interval_ms: sampling period (0 = 10000); the history keeps an hour's
 * worth of samples (at most 3600 rows). The first sample is taken at once. */
kh_metrics *kh_metrics_new(uv_loop_t *loop, kh_manager *mgr, kh_tasks *tasks,
                           const kh_cgroups *cg, unsigned interval_ms);
/* Stop sampling and free (later, once QMP replies in flight have come back:
 * the loop must run). NULL is fine. */
void kh_metrics_free(kh_metrics *m);
/* Feed every sampling round to these alert rules (borrowed; NULL: none). */
void kh_metrics_set_alerts(kh_metrics *m, kh_alerts *alerts);
/* The host's "disk" for the history and disk alerts is the filesystem of
 * state_dir (copied); storage (borrowed, NULL: none) gives the pool paths
 * whose filesystems /metrics reports too. */
void kh_metrics_set_host(kh_metrics *m, const char *state_dir, kh_storage *storage);
/* The accelerator VMs run under ("kvm", "tcg", "probing"); copied. */
void kh_metrics_set_accel(kh_metrics *m, const char *accel);
/* One finished API request (the HTTP server's hook). route is the route
 * pattern (static) or NULL when none matched. */
void kh_metrics_observe_request(kh_metrics *m, const char *method, const char *route,
                                unsigned status, double seconds);
/* The Prometheus text (0.0.4). The caller frees it. */
char *kh_metrics_render(kh_metrics *m, size_t *len);
/* History as {"interval_seconds", "fields": [...], "samples": [[t, ...], ...]},
 * the samples of the last range seconds. KH_E_NOTFOUND for an unknown VM. */
json_t *kh_metrics_vm_history(kh_metrics *m, const char *name, double range, kh_err *err);
/* Host history, plus "vms": {name: {"state", field: latest value ...}}. */
json_t *kh_metrics_host_history(kh_metrics *m, double range);

#endif
